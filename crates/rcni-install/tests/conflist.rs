//! Conflist generation from recorded node lists (`GET /api/v1/nodes` answers): single stack, dual
//! stack, nodes joining and leaving; and from flags.

mod common;

use cni_testkit::{require_root, Netns};
use common::{fixture, fixture_text, installer_in, stderr, stdout};
use ipnet::IpNet;
use rcni_install::conflist::{parse_cidr, HostRoute, Inputs};
use rcni_install::nodes::{inputs_for, parse_node_list, Node};

fn nodes(name: &str) -> Vec<Node> {
    parse_node_list(fixture_text(name).as_bytes())
        .unwrap()
        .items
}

fn cidrs(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| parse_cidr(s).unwrap()).collect()
}

fn render(fixture: &str, node: &str, cluster: &[&str], mtu: Option<u32>) -> (String, Vec<String>) {
    let (inputs, warnings) = inputs_for(node, &nodes(fixture), &cidrs(cluster), mtu).unwrap();
    (inputs.render(), warnings)
}

fn routes_of(conflist: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(conflist).unwrap();
    v["plugins"][2]["hostRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().into(),
                r["gw"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn single_stack() {
    let (text, warnings) = render("nodes-single.json", "worker-2", &["10.244.0.0/16"], None);
    assert_eq!(text, fixture_text("expected/single-worker-2.conflist"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        routes_of(&text),
        pairs(&[
            ("10.244.0.0/24", "192.168.56.10"),
            ("10.244.1.0/24", "192.168.56.11")
        ])
    );
}

#[test]
fn dual_stack() {
    let (text, warnings) = render(
        "nodes-dual.json",
        "worker-1",
        &["10.244.0.0/16", "fd00:10:244::/56"],
        Some(1450),
    );
    assert_eq!(text, fixture_text("expected/dual-worker-1.conflist"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["plugins"][0]["mtu"], 1450);
    assert_eq!(
        v["plugins"][0]["ipam"]["ranges"],
        serde_json::json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]])
    );
    // Each family through the peer's address of that family.
    assert_eq!(
        routes_of(&text),
        pairs(&[
            ("10.244.0.0/24", "192.168.56.10"),
            ("fd00:10:244::/64", "fd00:56::10"),
            ("10.244.2.0/24", "192.168.56.12"),
            ("fd00:10:244:2::/64", "fd00:56::12"),
        ])
    );
}

#[test]
fn node_joining_without_pod_cidr_yet_is_skipped_with_a_warning() {
    let (text, warnings) = render("nodes-joined.json", "worker-2", &["10.244.0.0/16"], None);
    assert_eq!(text, fixture_text("expected/joined-worker-2.conflist"));
    assert_eq!(
        warnings,
        vec!["node worker-4: no podCIDR yet, no route to it".to_string()]
    );
    assert!(routes_of(&text).contains(&("10.244.3.0/24".into(), "192.168.56.13".into())));
}

#[test]
fn node_leaving_drops_its_route_and_late_pod_cidr_is_picked_up() {
    let (text, warnings) = render("nodes-left.json", "worker-2", &["10.244.0.0/16"], None);
    assert_eq!(text, fixture_text("expected/left-worker-2.conflist"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let routes = routes_of(&text);
    assert!(
        !routes.iter().any(|(dst, _)| dst == "10.244.1.0/24"),
        "worker-1 left: {routes:?}"
    );
    assert!(routes.contains(&("10.244.4.0/24".into(), "192.168.56.14".into())));
}

#[test]
fn every_node_gets_its_own_range_and_routes_to_all_others() {
    let all = nodes("nodes-joined.json");
    for name in ["cp-1", "worker-1", "worker-2", "worker-3"] {
        let (inputs, _) = inputs_for(name, &all, &cidrs(&["10.244.0.0/16"]), None).unwrap();
        let own = all
            .iter()
            .find(|n| n.name() == name)
            .unwrap()
            .pod_cidrs()
            .unwrap();
        assert_eq!(inputs.pod_cidrs, own);
        // Four nodes with a podCIDR: three routes, none to itself.
        assert_eq!(inputs.host_routes.len(), 3, "{name}");
        assert!(inputs.host_routes.iter().all(|r| !own.contains(&r.dst)));
    }
}

#[test]
fn api_order_does_not_change_the_file() {
    let mut reversed = nodes("nodes-single.json");
    reversed.reverse();
    let a = inputs_for(
        "worker-2",
        &nodes("nodes-single.json"),
        &cidrs(&["10.244.0.0/16"]),
        None,
    )
    .unwrap();
    let b = inputs_for("worker-2", &reversed, &cidrs(&["10.244.0.0/16"]), None).unwrap();
    assert_eq!(a.0.render(), b.0.render());
}

#[test]
fn own_node_problems_are_errors() {
    let cluster = cidrs(&["10.244.0.0/16"]);
    let err = inputs_for("nope", &nodes("nodes-single.json"), &cluster, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("\"nope\" is not in the node list"),
        "{err:#}"
    );
    let err = inputs_for("worker-4", &nodes("nodes-joined.json"), &cluster, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("worker-4 has no podCIDR yet"),
        "{err:#}"
    );
    let err = inputs_for(
        "worker-2",
        &nodes("nodes-single.json"),
        &cidrs(&["10.96.0.0/12"]),
        None,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("not inside any cluster CIDR"),
        "{err:#}"
    );
    let err = inputs_for("worker-2", &nodes("nodes-single.json"), &[], None).unwrap_err();
    assert!(format!("{err:#}").contains("no cluster CIDR"), "{err:#}");
}

/// With the inputs of conflists/10-rcni.conflist, the generated conflist is that file: the
/// installer follows the chain the project ships.
#[test]
fn same_chain_as_the_shipped_conflist() {
    let inputs = Inputs {
        pod_cidrs: cidrs(&["10.244.0.0/24", "fd00:10:244::/64"]),
        cluster_cidrs: cidrs(&["10.244.0.0/16", "fd00:10:244::/48"]),
        host_routes: vec![],
        mtu: None,
        plugin_state_dir: None,
        portmap_versions: None,
    };
    inputs.validate().unwrap();
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("conflists/10-rcni.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(inputs.to_json(), shipped);
}

#[test]
fn flags_validation() {
    assert!("10.244.1.0/24=192.168.1.2".parse::<HostRoute>().is_ok());
    for bad in [
        "10.244.1.0/24",
        "10.244.1.0/24=fd00::1",
        "10.244.1.5/24=192.168.1.2",
        "x=1.2.3.4",
    ] {
        assert!(bad.parse::<HostRoute>().is_err(), "{bad}");
    }
    let err = parse_cidr("10.244.1.5/24").unwrap_err();
    assert!(
        format!("{err:#}").contains("did you mean 10.244.1.0/24"),
        "{err:#}"
    );
    let mut inputs = Inputs {
        pod_cidrs: cidrs(&["10.244.1.0/24", "10.244.2.0/24"]),
        cluster_cidrs: cidrs(&["10.244.0.0/16"]),
        ..Default::default()
    };
    assert!(inputs.validate().is_err(), "two IPv4 podCIDRs");
    inputs.pod_cidrs.pop();
    inputs.mtu = Some(100);
    assert!(inputs.validate().is_err(), "MTU 100");
    inputs.mtu = None;
    inputs.host_routes = vec!["10.244.1.0/25=192.168.1.2".parse().unwrap()];
    assert!(inputs.validate().is_err(), "route into own podCIDR");
}

/// The binary's `render` from a recorded list and from flags gives the same as the library.
#[test]
fn render_command() {
    require_root();
    // A namespace with no default route: no MTU is detected, whatever the machine's.
    let ns = Netns::new("render");
    let installer = || installer_in(&ns);
    let out = installer()
        .args(["render", "--nodes-file"])
        .arg(fixture("nodes-joined.json"))
        .args(["--node-name", "worker-2", "--cluster-cidr", "10.244.0.0/16"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        fixture_text("expected/joined-worker-2.conflist")
    );
    assert!(
        stderr(&out).contains("warning: node worker-4: no podCIDR yet"),
        "{}",
        stderr(&out)
    );

    let out = installer()
        .args([
            "render",
            "--pod-cidr",
            "10.244.2.0/24",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .args([
            "--host-route",
            "10.244.0.0/24=192.168.56.10",
            "--host-route",
            "10.244.1.0/24=192.168.56.11",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        fixture_text("expected/single-worker-2.conflist")
    );

    // Dual stack from the environment, as the DaemonSet passes it.
    let out = installer()
        .args(["render", "--nodes-file"])
        .arg(fixture("nodes-dual.json"))
        .env("NODE_NAME", "worker-1")
        .env("RCNI_CLUSTER_CIDRS", "10.244.0.0/16,fd00:10:244::/56")
        .env("RCNI_MTU", "1450")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        fixture_text("expected/dual-worker-1.conflist")
    );

    let out = installer()
        .args([
            "render",
            "--pod-cidr",
            "10.244.2.0/24",
            "--kube",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "--pod-cidr and --kube together must be refused"
    );
}

/// --plugin-state-dir moves both plugins' state: the IPAM store and rmasq's.
#[test]
fn plugin_state_dir_moves_the_store_and_masquerade_state() {
    let inputs = Inputs {
        pod_cidrs: cidrs(&["10.244.2.0/24"]),
        cluster_cidrs: cidrs(&["10.244.0.0/16"]),
        plugin_state_dir: Some("/run/cni".into()),
        ..Default::default()
    };
    let v = inputs.to_json();
    assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/run/cni/networks");
    assert_eq!(v["plugins"][1]["stateDir"], "/run/cni/rmasq");
}

/// The conflist offers the versions the node's portmap answers to VERSION; one that cannot be
/// run is taken to stop at 1.0.0, with a warning; none at all leaves the list whole.
#[test]
fn cni_versions_follow_the_nodes_portmap() {
    use rcni_install::conflist::portmap_versions;
    let dir = cni_testkit::temp_dir("rcni-portmap-t");
    let versions = |upstream: &[std::path::PathBuf]| {
        let mut warnings = Vec::new();
        let v = portmap_versions(&dir, upstream, &mut warnings);
        let inputs = Inputs {
            pod_cidrs: cidrs(&["10.244.2.0/24"]),
            cluster_cidrs: cidrs(&["10.244.0.0/16"]),
            portmap_versions: v,
            ..Default::default()
        };
        (inputs.to_json(), warnings)
    };
    let (c, w) = versions(&[]);
    assert_eq!(
        c["cniVersions"],
        serde_json::json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    assert!(w.is_empty(), "{w:?}");

    // In the bin dir, answering as upstream portmap 1.1.1 does.
    common::write_exec(
        &dir.join("portmap"),
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = VERSION ] || exit 1\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}'\n",
    );
    let (c, w) = versions(&[]);
    assert_eq!(
        c["cniVersions"],
        serde_json::json!(["0.3.1", "0.4.0", "1.0.0"])
    );
    assert_eq!(c["cniVersion"], "1.0.0");
    assert!(w.is_empty(), "{w:?}");

    // About to be installed from the upstream dir, and not runnable here.
    let other = dir.join("upstream");
    std::fs::create_dir_all(&other).unwrap();
    common::write_exec(&other.join("portmap"), "#!/nonexistent/interpreter\n");
    let (c, w) = versions(&[other.join("portmap")]);
    assert_eq!(
        c["cniVersions"],
        serde_json::json!(["0.3.1", "0.4.0", "1.0.0"])
    );
    assert!(w[0].contains("could not ask"), "{w:?}");
}
