//! hostRoutes in the node netns: idempotent across many ADDs (also concurrent ones), untouched by
//! DEL, checked by CHECK, reconciled by `rroutes sync --conflist FILE`.

mod common;

use cni_testkit::{plugin_bin, temp_dir, Netns};
use common::World;
use serde_json::{json, Value};

/// The world plus another node the node reaches at 192.168.50.0/24 and fd00:50::/64.
fn with_peer() -> (World, Netns) {
    let w = World::new();
    let peer = Netns::new("peer");
    w.node
        .veth_to(&peer, "n0", "n1", "192.168.50.1/24", "192.168.50.2/24");
    w.node
        .ip(&["addr", "add", "fd00:50::1/64", "dev", "n0", "nodad"]);
    (w, peer)
}

fn host_routes() -> Value {
    json!([
        {"dst": "10.244.1.0/24", "gw": "192.168.50.2"},
        {"dst": "10.244.2.0/24", "gw": "192.168.50.3"},
        {"dst": "fd00:244:1::/64", "gw": "fd00:50::2"}
    ])
}

/// Node routes to `dst` as (gateway, protocol).
fn node_routes(node: &Netns, dst: &str) -> Vec<(String, String)> {
    let family = if dst.contains(':') { 6 } else { 4 };
    node.routes(family)
        .into_iter()
        .filter(|r| r["dst"] == dst)
        .map(|r| {
            (
                r["gateway"].as_str().unwrap_or("").to_string(),
                r["protocol"].as_str().unwrap_or("3").to_string(),
            )
        })
        .collect()
}

fn assert_installed(node: &Netns) {
    for (dst, gw) in [
        ("10.244.1.0/24", "192.168.50.2"),
        ("10.244.2.0/24", "192.168.50.3"),
        ("fd00:244:1::/64", "fd00:50::2"),
    ] {
        assert_eq!(
            node_routes(node, dst),
            [(gw.to_string(), "114".to_string())],
            "{dst}"
        );
    }
}

#[test]
fn host_routes_are_idempotent_across_100_adds_and_survive_del() {
    let (w, _peer) = with_peer();
    let conf = w.conf("1.1.0", json!({"hostRoutes": host_routes()}));
    let before = common::kroutes(&w.pod, "eth0");
    let mut first = None;
    for _ in 0..100 {
        let out = w.run("ADD", &conf).ok().clone();
        // The pod and the result are left as they were.
        first.get_or_insert(out.clone());
        assert_eq!(Some(&out), first.as_ref());
    }
    assert_installed(&w.node);
    assert_eq!(common::kroutes(&w.pod, "eth0"), before);
    // Routes from the node to the pods of the other node really go through it.
    let got = w.node.ip(&["route", "get", "10.244.1.7"]);
    assert!(got.contains("via 192.168.50.2 dev n0"), "{got}");
    w.run("DEL", &conf).assert_ok();
    assert_installed(&w.node);
}

#[test]
fn concurrent_adds_install_each_route_once() {
    let (w, _peer) = with_peer();
    let conf = w.conf("1.0.0", json!({"hostRoutes": host_routes()}));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| w.run("ADD", &conf).assert_ok().code);
        }
    });
    assert_installed(&w.node);
}

#[test]
fn check_sees_a_missing_host_route_and_add_restores_it() {
    let (w, _peer) = with_peer();
    let conf = w.conf("1.0.0", json!({"hostRoutes": host_routes()}));
    let out = w.run("ADD", &conf).ok().clone();
    let mut check = conf.clone();
    check["prevResult"] = out;
    w.run("CHECK", &check).assert_ok();
    w.node.ip(&["route", "del", "10.244.2.0/24"]);
    let run = w.run("CHECK", &check);
    assert_eq!(run.err_code(), Some(102), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("hostRoutes[1]: node route 10.244.2.0/24 via 192.168.50.3 is missing"),
        "{}",
        run.stdout
    );
    w.run("ADD", &conf).assert_ok();
    w.run("CHECK", &check).assert_ok();
}

#[test]
fn a_changed_gateway_replaces_our_route_but_never_someone_elses() {
    let (w, _peer) = with_peer();
    let conf = |gw: &str| {
        w.conf(
            "1.0.0",
            json!({"flushGateway": true, "hostRoutes": [{"dst": "10.244.1.0/24", "gw": gw}]}),
        )
    };
    w.run("ADD", &conf("192.168.50.2")).assert_ok();
    w.run("ADD", &conf("192.168.50.4")).assert_ok();
    assert_eq!(
        node_routes(&w.node, "10.244.1.0/24"),
        [("192.168.50.4".to_string(), "114".to_string())]
    );

    // Someone else's route to the same destination: refused, untouched, pod untouched (its
    // default route, which the ADDs above flushed, is back to show it).
    w.pod.ip(&["route", "add", "default", "via", common::GW4]);
    w.node.ip(&[
        "route",
        "add",
        "10.244.9.0/24",
        "via",
        "192.168.50.9",
        "proto",
        "static",
    ]);
    let foreign = w.conf(
        "1.0.0",
        json!({"flushGateway": true, "hostRoutes": [{"dst": "10.244.9.0/24", "gw": "192.168.50.2"}]}),
    );
    let run = w.run("ADD", &foreign);
    assert_eq!(run.err_code(), Some(103), "{}", run.stdout);
    assert!(
        run.stdout.contains("10.244.9.0/24 via 192.168.50.9") && run.stdout.contains("proto 4"),
        "{}",
        run.stdout
    );
    assert_eq!(
        node_routes(&w.node, "10.244.9.0/24"),
        [("192.168.50.9".to_string(), "4".to_string())]
    );
    // flushGateway did not run: the node step failed first.
    assert!(common::kroutes(&w.pod, "eth0")
        .iter()
        .any(|k| k.dst == "0.0.0.0/0"));

    // The same route installed by someone else is fine, and stays theirs.
    let same = w.conf(
        "1.0.0",
        json!({"hostRoutes": [{"dst": "10.244.9.0/24", "gw": "192.168.50.9"}]}),
    );
    w.run("ADD", &same).assert_ok();
    assert_eq!(
        node_routes(&w.node, "10.244.9.0/24"),
        [("192.168.50.9".to_string(), "4".to_string())]
    );

    // An unreachable gateway is a kernel error naming the entry.
    let bad = w.conf(
        "1.0.0",
        json!({"hostRoutes": [{"dst": "10.244.5.0/24", "gw": "10.1.2.3"}]}),
    );
    let run = w.run("ADD", &bad);
    assert_eq!(run.err_code(), Some(103), "{}", run.stdout);
    assert!(
        run.stdout.contains("hostRoutes[0] in the node netns") && run.stdout.contains("10.1.2.3"),
        "{}",
        run.stdout
    );
}

fn conflist(routes: Value, protocol: Option<u8>) -> Value {
    let mut rr = json!({"type": "rroutes", "flushGateway": true, "hostRoutes": routes});
    if let Some(p) = protocol {
        rr["routeProtocol"] = json!(p);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [{"type": "bridge", "bridge": "cni0"}, rr]
    })
}

fn sync(node: &Netns, file: &std::path::Path) -> std::process::Output {
    node.command(plugin_bin("rroutes"))
        .args(["sync", "--conflist"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn sync_adds_and_removes_only_its_own_routes() {
    let (w, _peer) = with_peer();
    let dir = temp_dir("rroutes-sync");
    let file = dir.join("10-pods.conflist");
    std::fs::write(&file, conflist(host_routes(), None).to_string()).unwrap();
    let out = sync(&w.node, &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 added, 0 replaced, 0 removed"),
        "{stdout}"
    );
    assert_installed(&w.node);

    // Someone else's routes, and ours under another protocol number, are not sync's to remove.
    w.node.ip(&[
        "route",
        "add",
        "10.244.7.0/24",
        "via",
        "192.168.50.7",
        "proto",
        "static",
    ]);
    w.node.ip(&[
        "route",
        "add",
        "10.244.8.0/24",
        "via",
        "192.168.50.8",
        "proto",
        "150",
    ]);
    let next = json!([
        {"dst": "10.244.2.0/24", "gw": "192.168.50.3"},
        {"dst": "10.244.3.0/24", "gw": "192.168.50.3"},
        {"dst": "10.244.1.0/24", "gw": "192.168.50.5"}
    ]);
    std::fs::write(&file, conflist(next, None).to_string()).unwrap();
    let out = sync(&w.node, &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("removed fd00:244:1::/64 via fd00:50::2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("added 10.244.3.0/24 via 192.168.50.3"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "replaced 10.244.1.0/24 via 192.168.50.2 with 10.244.1.0/24 via 192.168.50.5"
        ),
        "{stdout}"
    );
    assert!(node_routes(&w.node, "fd00:244:1::/64").is_empty());
    assert_eq!(
        node_routes(&w.node, "10.244.3.0/24"),
        [("192.168.50.3".to_string(), "114".to_string())]
    );
    assert_eq!(node_routes(&w.node, "10.244.7.0/24").len(), 1);
    assert_eq!(node_routes(&w.node, "10.244.8.0/24").len(), 1);

    // Again: nothing to do.
    let out = sync(&w.node, &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 added, 0 replaced, 0 removed, 3 already present"),
        "{stdout}"
    );

    // An empty list removes all of ours; a list under protocol 150 manages those instead.
    std::fs::write(&file, conflist(json!([]), None).to_string()).unwrap();
    assert!(sync(&w.node, &file).status.success());
    for dst in ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"] {
        assert!(node_routes(&w.node, dst).is_empty(), "{dst}");
    }
    assert_eq!(node_routes(&w.node, "10.244.8.0/24").len(), 1);
    std::fs::write(&file, conflist(json!([]), Some(150)).to_string()).unwrap();
    assert!(sync(&w.node, &file).status.success());
    assert!(node_routes(&w.node, "10.244.8.0/24").is_empty());
    assert_eq!(node_routes(&w.node, "10.244.7.0/24").len(), 1);
}

#[test]
fn sync_refuses_a_conflist_without_rroutes_or_with_bad_keys() {
    let w = World::new();
    let dir = temp_dir("rroutes-sync");
    let file = dir.join("bad.conflist");
    for (list, needle) in [
        (
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}),
            "no plugin of type \"rroutes\"",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "rroutes", "hostRoutes": [{"dst": "10.0.0.0/8"}]}]}),
            "plugins[0]: invalid network config: hostRoutes[0]",
        ),
    ] {
        std::fs::write(&file, list.to_string()).unwrap();
        let out = sync(&w.node, &file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr.contains(needle), "{stderr}");
    }
    let out = sync(&w.node, &dir.join("missing.conflist"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read conflist"));
}
