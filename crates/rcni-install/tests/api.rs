//! The in-cluster path against a local API server (127.0.0.1 only) serving recorded answers:
//! nodes joining and leaving between polls, pagination, auth and errors, shutdown on SIGTERM.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use cni_testkit::assert_same_tree;
use common::*;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.test-token";

fn token_file(node: &Node) -> String {
    let p = node.aux.join("token");
    // As kubelet mounts it: no trailing newline is promised, a stray one must not matter.
    fs::write(&p, format!("{TOKEN}\n")).unwrap();
    p.display().to_string()
}

fn daemon_args(node: &Node, server: &ApiServer, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--api-server".into(),
        server.url(),
        "--token-file".into(),
        token_file(node),
        // Never read for http://; pointing at nothing proves it.
        "--ca-file".into(),
        node.aux.join("no-ca.crt").display().to_string(),
        "--cluster-cidr".into(),
        "10.244.0.0/16".into(),
    ];
    if !extra.contains(&"--node-name") {
        args.extend(["--node-name".into(), "worker-2".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_daemon(node: &Node, server: &ApiServer, extra: &[&str]) -> std::process::Output {
    let args = daemon_args(node, server, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    node.run("daemon", &refs)
}

#[test]
fn nodes_joining_and_leaving_between_polls() {
    let node = Node::new();
    let before = node.snapshot();
    let server = ApiServer::start(
        vec![
            Reply::Nodes(fixture_text("nodes-single.json")),
            Reply::Nodes(fixture_text("nodes-joined.json")),
            Reply::Nodes(fixture_text("nodes-left.json")),
        ],
        TOKEN,
        2,
    );
    let out = run_daemon(&node, &server, &["--rounds", "3", "--interval", "50ms"]);
    assert_ok(&out);

    // Each poll's view reached the file and rroutes, in order.
    let syncs = node.syncs();
    let expected = ["single", "joined", "left"]
        .map(|f| fixture_text(&format!("expected/{f}-worker-2.conflist")));
    assert_eq!(syncs.len(), 3, "{syncs:?}");
    for (i, (path, content)) in syncs.iter().enumerate() {
        assert_eq!(path, &node.conflist().display().to_string());
        assert_eq!(content, &expected[i], "poll {}", i + 1);
    }
    assert_eq!(fs::read_to_string(node.conflist()).unwrap(), expected[2]);
    for p in PLUGINS {
        assert_eq!(
            fs::read(node.bin.join(p)).unwrap(),
            fs::read(node.src.join(p)).unwrap()
        );
    }
    // worker-4 without a podCIDR is reported once, not once per poll.
    assert_eq!(
        stderr(&out).matches("worker-4: no podCIDR yet").count(),
        1,
        "{}",
        stderr(&out)
    );

    // 3 nodes, then 5, then 4, in pages of 2: 2 + 3 + 2 requests, all authenticated.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 7, "{reqs:?}");
    for r in &reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(
            r.target.starts_with("/api/v1/nodes?limit=500"),
            "{}",
            r.target
        );
    }
    assert_eq!(
        reqs.iter()
            .filter(|r| r.target.contains("continue="))
            .count(),
        4
    );

    // The daemon's install is undone by down like any other.
    assert_ok(&node.run("down", &[]));
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn unchanged_nodes_rewrite_nothing_but_routes_are_resynced() {
    let node = Node::new();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-single.json"))],
        TOKEN,
        500,
    );
    let out = run_daemon(&node, &server, &["--rounds", "3", "--interval", "20ms"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(
        text.matches(&format!("install {}", node.conflist().display()))
            .count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("up to date").count(), 1, "{text}");
    assert_eq!(
        node.syncs().len(),
        3,
        "a route deleted by hand comes back on the next poll"
    );
}

#[test]
fn api_errors_are_retried_on_the_next_poll() {
    let node = Node::new();
    let server = ApiServer::start(
        vec![
            Reply::Status(403, "nodes is forbidden: User \"system:serviceaccount:kube-system:rcni\" cannot list resource \"nodes\"".into()),
            Reply::Nodes(fixture_text("nodes-single.json")),
        ],
        TOKEN,
        500,
    );
    let out = run_daemon(&node, &server, &["--rounds", "2", "--interval", "20ms"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("403") && err.contains("cannot list resource") && err.contains("ClusterRole"),
        "{err}"
    );
    assert!(stdout(&out).contains("recovered"), "{}", stdout(&out));
    assert_eq!(
        fs::read_to_string(node.conflist()).unwrap(),
        fixture_text("expected/single-worker-2.conflist")
    );
}

#[test]
fn rejected_token_installs_nothing_and_fails() {
    let node = Node::new();
    let before = node.snapshot();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-single.json"))],
        "another-token",
        500,
    );
    let out = run_daemon(&node, &server, &["--rounds", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn own_node_without_pod_cidr_waits() {
    let node = Node::new();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-joined.json"))],
        TOKEN,
        500,
    );
    let args = daemon_args(
        &node,
        &server,
        &["--rounds", "1", "--node-name", "worker-4"],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = node.run("daemon", &refs);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("worker-4 has no podCIDR yet"),
        "{}",
        stderr(&out)
    );
    assert!(!node.conflist().exists());
}

#[test]
fn up_once_from_the_api() {
    let node = Node::new();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-dual.json"))],
        TOKEN,
        500,
    );
    let out = node.run(
        "up",
        &[
            "--kube",
            "--api-server",
            &server.url(),
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

/// HTTPS as in a cluster: the server's certificate checked against the configured CA only.
#[test]
fn https_with_the_service_account_ca() {
    let node = Node::new();
    let server = ApiServer::start_tls(vec![Reply::Nodes(fixture_text("nodes-single.json"))], TOKEN);
    let render = |ca: &str| {
        installer()
            .args([
                "render",
                "--kube",
                "--token-file",
                &token_file(&node),
                "--ca-file",
            ])
            .arg(fixture(ca))
            .args(["--api-server", &server.https_url()])
            .args(["--node-name", "worker-2", "--cluster-cidr", "10.244.0.0/16"])
            .output()
            .unwrap()
    };
    let out = render("tls/ca.pem");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        fixture_text("expected/single-worker-2.conflist")
    );
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
        server.requests().len(),
        1,
        "only the trusted connection got as far as a request"
    );
}

#[test]
fn https_needs_a_readable_ca() {
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
    let node = Node::new();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-single.json"))],
        TOKEN,
        500,
    );
    // Without --api-server the address comes from the service environment, as https.
    let out = installer()
        .args([
            "render",
            "--kube",
            "--token-file",
            &token_file(&node),
            "--ca-file",
        ])
        .arg(node.aux.join("missing-ca.crt"))
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", server.addr.port().to_string())
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
    let out = installer()
        .args(["render", "--kube", "--token-file", &token_file(&node)])
        .env("RCNI_API_SERVER", server.url())
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

#[test]
fn sigterm_stops_the_daemon_promptly() {
    let node = Node::new();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-single.json"))],
        TOKEN,
        500,
    );
    let args = daemon_args(&node, &server, &["--interval", "10m"]);
    let mut all = vec!["daemon".to_string()];
    all.extend(node.layout_args());
    all.extend(["--src-dir".to_string(), node.src.display().to_string()]);
    all.extend(args);
    let mut child = installer().args(&all).spawn().unwrap();
    let start = Instant::now();
    while node.syncs().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "first round never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopped = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "still running 5s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn uninstall_mode_removes_everything() {
    let node = Node::new();
    let before = node.snapshot();
    let server = ApiServer::start(
        vec![Reply::Nodes(fixture_text("nodes-single.json"))],
        TOKEN,
        500,
    );
    assert_ok(&run_daemon(&node, &server, &["--rounds", "1"]));
    assert!(node.conflist().exists());
    let args = daemon_args(&node, &server, &["--rounds", "2", "--interval", "10ms"]);
    let mut all = vec!["daemon".to_string()];
    all.extend(node.layout_args());
    all.extend(args);
    let out = installer()
        .args(&all)
        .env("RCNI_UNINSTALL", "true")
        .output()
        .unwrap();
    assert_ok(&out);
    assert_same_tree(&before, &node.snapshot());
    // It only removed once, then idled.
    assert_eq!(
        stdout(&out).matches("installed.json").count(),
        1,
        "{}",
        stdout(&out)
    );
    assert_eq!(
        server.requests().len(),
        1,
        "uninstall does not read the API"
    );
}
