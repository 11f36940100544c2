//! The one-shot commands (`render --kube`, `up --kube`) against the fake API server: the
//! cluster config (token, in-cluster environment, HTTPS with the service account's CA), a
//! paged list, and what a refusal says.

mod common;

use std::fs;

use cni_testkit::{assert_same_tree, require_root, FakeApi, Netns};
use common::daemon::TOKEN;
use common::tls::TlsFront;
use common::*;

fn token_file(node: &Node) -> String {
    let p = node.aux.join("token");
    fs::write(&p, format!("{TOKEN}\n")).unwrap();
    p.display().to_string()
}

/// The API server with a recorded cluster, on loopback (for the TLS front) or in `ns`.
fn cluster(fixture: &str, ns: Option<&Netns>) -> FakeApi {
    let api = match ns {
        Some(ns) => FakeApi::start_in(ns, "127.0.0.1:0".parse().unwrap(), TOKEN),
        None => FakeApi::start(TOKEN),
    };
    api.put_nodes(fake_nodes(fixture));
    api
}

fn render_kube(node: &Node, api_url: &str, name: &str) -> std::process::Output {
    installer_in(&node.ns)
        .args(["render", "--kube", "--api-server", api_url])
        .args(["--token-file", &token_file(node)])
        .args(["--node-name", name, "--cluster-cidr", "10.244.0.0/16"])
        .output()
        .unwrap()
}

#[test]
fn render_from_the_api_lists_every_page() {
    require_root();
    let node = Node::new();
    let api = cluster("nodes-joined.json", Some(&node.ns));
    // More nodes than one page of the client (500): the list must follow `continue`.
    let many: Vec<_> = (0..700)
        .map(|i| cni_testkit::FakeNode::new(&format!("zz-{i:03}"), &[], &[]).lean())
        .collect();
    api.put_nodes(many);
    let out = render_kube(&node, &api.url(), "worker-2");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        fixture_text("expected/joined-worker-2.conflist")
    );
    let lists: Vec<_> = api.requests().into_iter().filter(|r| !r.watch).collect();
    assert!(lists.len() >= 2, "one page only: {lists:?}");
    assert!(lists.iter().all(|r| r.status == 200), "{lists:?}");
}

#[test]
fn up_once_from_the_api() {
    require_root();
    let node = Node::new();
    let api = cluster("nodes-dual.json", Some(&node.ns));
    let out = node.run(
        "up",
        &[
            "--kube",
            "--api-server",
            &api.url(),
            "--token-file",
            &token_file(&node),
            "--node-name",
            "worker-1",
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--mtu",
            "1450",
        ],
    );
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(node.conflist()).unwrap(),
        fixture_text("expected/dual-worker-1.conflist")
    );
}

#[test]
fn rejected_token_installs_nothing_and_says_why() {
    require_root();
    let node = Node::new();
    let before = node.snapshot();
    let api = FakeApi::start_in(&node.ns, "127.0.0.1:0".parse().unwrap(), "another-token");
    api.put_nodes(fake_nodes("nodes-single.json"));
    let out = node.run(
        "up",
        &[
            "--kube",
            "--api-server",
            &api.url(),
            "--token-file",
            &token_file(&node),
            "--node-name",
            "worker-2",
            "--cluster-cidr",
            "10.244.0.0/16",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("401") && err.contains("token"), "{err}");
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn own_node_without_pod_cidr_is_an_error_for_render() {
    require_root();
    let node = Node::new();
    let api = cluster("nodes-joined.json", Some(&node.ns));
    let out = render_kube(&node, &api.url(), "worker-4");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("worker-4 has no podCIDR yet"),
        "{}",
        stderr(&out)
    );
}

/// HTTPS as in a cluster: the server's certificate checked against the configured CA only.
#[test]
fn https_with_the_service_account_ca() {
    require_root();
    let node = Node::new();
    // The TLS front listens on the test's loopback; the client runs there too.
    let api = cluster("nodes-single.json", None);
    let front = TlsFront::start(api.addr());
    let render = |ca: &str| {
        installer()
            .args(["render", "--kube", "--token-file", &token_file(&node)])
            .arg("--ca-file")
            .arg(fixture(ca))
            .args(["--api-server", &front.url()])
            .args(["--node-name", "worker-2", "--cluster-cidr", "10.244.0.0/16"])
            .args(["--mtu", "1450"])
            .output()
            .unwrap()
    };
    let out = render("tls/ca.pem");
    assert_ok(&out);
    let want = fixture_text("expected/single-worker-2.conflist").replace(
        "\"hairpinMode\": true,\n",
        "\"hairpinMode\": true,\n      \"mtu\": 1450,\n",
    );
    assert_eq!(stdout(&out), want);
    let out = render("tls/other-ca.pem");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UnknownIssuer"), "{}", stderr(&out));
    // A file with no certificate in it is refused before any connection.
    let out = render("nodes-single.json");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no certificate in it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        front.handshakes(),
        1,
        "only the trusted CA got through the handshake"
    );
}

#[test]
fn https_needs_a_readable_ca() {
    require_root();
    let node = Node::new();
    let out = node.run(
        "up",
        &[
            "--kube",
            "--api-server",
            "https://127.0.0.1:1",
            "--token-file",
            &token_file(&node),
            "--ca-file",
            &node.aux.join("missing-ca.crt").display().to_string(),
            "--node-name",
            "worker-1",
            "--cluster-cidr",
            "10.244.0.0/16",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("reading the API server CA"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn in_cluster_environment_is_used_by_default() {
    require_root();
    let node = Node::new();
    let api = cluster("nodes-single.json", Some(&node.ns));
    // Without --api-server the address comes from the service environment, as https.
    let out = installer_in(&node.ns)
        .args(["render", "--kube", "--token-file", &token_file(&node)])
        .arg("--ca-file")
        .arg(node.aux.join("missing-ca.crt"))
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", api.addr().port().to_string())
        .env("NODE_NAME", "worker-2")
        .env("RCNI_CLUSTER_CIDRS", "10.244.0.0/16")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("reading the API server CA"),
        "{}",
        stderr(&out)
    );
    // And the override reaches the same server over http.
    let out = installer_in(&node.ns)
        .args(["render", "--kube", "--token-file", &token_file(&node)])
        .env("RCNI_API_SERVER", api.url())
        .env("NODE_NAME", "worker-2")
        .env("RCNI_CLUSTER_CIDRS", "10.244.0.0/16")
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        fixture_text("expected/single-worker-2.conflist")
    );
}
