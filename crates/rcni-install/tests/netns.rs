//! With the real rroutes, inside a temporary network namespace (never the machine's own): the
//! node's routes follow the node list, a route deleted by hand comes back, and `down` removes
//! exactly the routes that were installed. Needs root, like every netns test of the workspace.

mod common;

use std::fs;
use std::path::Path;

use cni_testkit::{assert_same_tree, plugin_bin, require_root, Netns};
use common::*;
use serde_json::Value;

/// Routes rroutes installed (protocol 114), as "dst via gw", sorted.
fn synced(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = others_and_synced(ns)
        .into_iter()
        .filter(|r| r["protocol"] == "114")
        .map(|r| {
            format!(
                "{} via {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap_or("-")
            )
        })
        .collect();
    v.sort();
    v
}

fn others_and_synced(ns: &Netns) -> Vec<Value> {
    let mut all = ns.routes(4);
    all.extend(ns.routes(6));
    all
}

fn others(ns: &Netns) -> Vec<Value> {
    others_and_synced(ns)
        .into_iter()
        .filter(|r| r["protocol"] != "114")
        .collect()
}

/// `rcni-install ARGS` with the node's layout, inside `ns`.
fn run_in(ns: &Netns, node: &Node, cmd: &str, nodes_file: Option<&Path>) -> std::process::Output {
    let mut c = installer_in(ns);
    c.arg(cmd).args(node.layout_args());
    if let Some(file) = nodes_file {
        c.args([
            "--src-dir",
            node.src.to_str().unwrap(),
            "--nodes-file",
            file.to_str().unwrap(),
        ])
        .args([
            "--node-name",
            "worker-2",
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
        ]);
    }
    c.output().unwrap()
}

#[test]
fn routes_follow_the_node_list_and_down_removes_them() {
    require_root();
    let ns = Netns::new("node");
    // The node's own network, a veth to a peer: the other nodes' addresses are on-link.
    let peer = Netns::new("peer");
    ns.veth_to(&peer, "eth0", "p0", "192.168.56.12/24", "192.168.56.1/24");
    ns.ip(&["addr", "add", "fd00:56::12/64", "dev", "eth0", "nodad"]);
    let node = Node::new();
    fs::copy(plugin_bin("rroutes"), node.src.join("rroutes")).unwrap();
    let before = node.snapshot();
    let routes_before = others(&ns);

    // Dual stack: both families of each other node.
    assert_ok(&run_in(&ns, &node, "up", Some(&fixture("nodes-dual.json"))));
    assert_eq!(
        synced(&ns),
        [
            "10.244.0.0/24 via 192.168.56.10",
            "10.244.1.0/24 via 192.168.56.11",
            "fd00:10:244:1::/64 via fd00:56::11",
            "fd00:10:244::/64 via fd00:56::10",
        ]
    );

    // worker-1 left, worker-3 and worker-4 joined, the cluster went single stack: the stale
    // routes go, the new ones come.
    assert_ok(&run_in(&ns, &node, "up", Some(&fixture("nodes-left.json"))));
    let expected = [
        "10.244.0.0/24 via 192.168.56.10",
        "10.244.3.0/24 via 192.168.56.13",
        "10.244.4.0/24 via 192.168.56.14",
    ];
    assert_eq!(synced(&ns), expected);

    // Deleted by hand: back on the next round, though the conflist did not change.
    ns.ip(&["route", "del", "10.244.3.0/24"]);
    assert_ok(&run_in(&ns, &node, "up", Some(&fixture("nodes-left.json"))));
    assert_eq!(synced(&ns), expected);

    // A route of someone else's to a podCIDR-like range is not ours to remove.
    ns.ip(&["route", "add", "10.244.9.0/24", "via", "192.168.56.19"]);
    let out = run_in(&ns, &node, "down", None);
    assert_ok(&out);
    assert!(synced(&ns).is_empty(), "{:?}", synced(&ns));
    assert!(
        others(&ns).iter().any(|r| r["dst"] == "10.244.9.0/24"),
        "a foreign route was removed"
    );
    ns.ip(&["route", "del", "10.244.9.0/24"]);
    assert_eq!(others(&ns), routes_before);
    assert_same_tree(&before, &node.snapshot());
}

/// Without --mtu the conflist takes the MTU of the default route's interface (an overlay's
/// 1400 here), says so, and --mtu overrides it.
#[test]
fn mtu_from_the_default_route() {
    require_root();
    let ns = Netns::new("node");
    let peer = Netns::new("peer");
    ns.veth_to(&peer, "eth0", "p0", "192.168.56.12/24", "192.168.56.1/24");
    ns.ip(&["link", "set", "eth0", "mtu", "1400"]);
    ns.ip(&["route", "add", "default", "via", "192.168.56.1"]);
    let render = |extra: &[&str]| {
        let out = installer_in(&ns)
            .args(["render", "--pod-cidr", "10.244.2.0/24"])
            .args(["--cluster-cidr", "10.244.0.0/16"])
            .args(extra)
            .output()
            .unwrap();
        assert_ok(&out);
        let conflist: Value = serde_json::from_slice(&out.stdout).unwrap();
        (conflist["plugins"][0]["mtu"].clone(), stderr(&out))
    };
    let (mtu, err) = render(&[]);
    assert_eq!(mtu, 1400, "{err}");
    assert!(err.contains("MTU 1400, from eth0"), "{err}");
    let (mtu, err) = render(&["--mtu", "1450"]);
    assert_eq!(mtu, 1450);
    assert!(!err.contains("MTU"), "{err}");
}
