//! The node agent (`rcni-install daemon`) watching the fake API server, inside a node network
//! namespace with a real routing table: nodes joining, leaving and changing move the routes
//! and the conflist as events arrive; an API outage removes nothing; a 410 relists without
//! churn; /metrics follows pods; /readyz waits for install and the first sync.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use cni_testkit::{
    assert_same_tree, container_id, plugin_bin, require_root, upstream_dir, Chain, FakeNode, Netns,
};
use common::daemon::*;
use common::*;
use serde_json::Value;

fn conflist(node: &Node) -> Value {
    serde_json::from_str(&fs::read_to_string(node.conflist()).unwrap()).unwrap()
}

fn subnet(conflist: &Value) -> String {
    conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap()
        .to_string()
}

fn changes(d: &Daemon, op: &str) -> f64 {
    d.metrics().value("rcni_route_changes_total", &[("op", op)])
}

#[test]
fn routes_and_conflist_follow_nodes_as_they_join_change_and_leave() {
    require_root();
    let node = Node::new();
    let _lan = lan(&node);
    let api = api(&node);
    api.put_nodes(vec![worker(1), worker(2), worker(3)]);
    let d = Daemon::start(&node, &api, &["--resync", "1s"]);
    d.wait_ready(20);
    let c = conflist(&node);
    assert_eq!(subnet(&c), "10.244.2.0/24");
    assert_eq!(c["plugins"][0]["mtu"], 1450);
    let types: Vec<&str> = c["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["rbridge", "rmasq", "portmap"]);
    wait_routes(
        &node.ns,
        &[
            "10.244.1.0/24 via 192.168.56.11",
            "10.244.3.0/24 via 192.168.56.13",
        ],
        &d,
    );

    api.put_node(worker(4));
    api.delete_node("worker-1");
    // worker-3 got another podCIDR, worker-4 another address.
    api.put_node(FakeNode::new("worker-3", &["10.244.5.0/24"], &["192.168.56.13"]).lean());
    api.put_node(FakeNode::new("worker-4", &["10.244.4.0/24"], &["192.168.56.24"]).lean());
    wait_routes(
        &node.ns,
        &[
            "10.244.4.0/24 via 192.168.56.24",
            "10.244.5.0/24 via 192.168.56.13",
        ],
        &d,
    );
    // Through one nexthop object per gateway in use; those of gone gateways are deleted.
    assert_eq!(agent_nexthops(&node.ns), ["192.168.56.13", "192.168.56.24"]);
    let m = d.metrics();
    assert_eq!(m.value("rcni_nodes", &[]), 3.0);
    assert_eq!(m.value("rcni_host_routes", &[]), 2.0);
    assert!(m.value("rcni_route_changes_total", &[("op", "removed")]) >= 2.0);
    assert!(m.value("rcni_route_lag_seconds_count", &[]) >= 4.0);

    // This node's own podCIDR changed: the conflist follows, the routes stay.
    let installs = m.value("rcni_installs_total", &[]);
    api.put_node(FakeNode::new("worker-2", &["10.244.6.0/24"], &["192.168.56.12"]).lean());
    assert!(
        wait_for(20, || subnet(&conflist(&node)) == "10.244.6.0/24"),
        "{}",
        d.log()
    );
    assert_eq!(
        d.metrics().value("rcni_installs_total", &[]),
        installs + 1.0
    );

    // A route removed by hand is back at the next resync, with no API call.
    let calls = api.requests().len();
    node.ns.ip(&["route", "del", "10.244.5.0/24"]);
    wait_routes(
        &node.ns,
        &[
            "10.244.4.0/24 via 192.168.56.24",
            "10.244.5.0/24 via 192.168.56.13",
        ],
        &d,
    );
    assert_eq!(api.requests().len(), calls, "resync must not call the API");

    // SIGTERM: a clean exit; what was installed stays for the pods.
    let routes = agent_routes(&node.ns);
    assert!(d.stop().success());
    assert_eq!(agent_routes(&node.ns), routes);
    assert!(node.conflist().exists());
}

/// The API unreachable for a while (a control-plane upgrade): nothing is removed, the agent
/// stays live, and once the API is back what changed meanwhile is applied.
#[test]
fn an_api_outage_removes_nothing_and_recovery_catches_up() {
    require_root();
    let outage = std::env::var("RCNI_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let node = Node::new();
    let _lan = lan(&node);
    let api = api(&node);
    api.put_nodes(vec![worker(1), worker(2), worker(3)]);
    let d = Daemon::start(&node, &api, &["--resync", "2s"]);
    d.wait_ready(20);
    let want = [
        "10.244.1.0/24 via 192.168.56.11",
        "10.244.3.0/24 via 192.168.56.13",
    ];
    wait_routes(&node.ns, &want, &d);
    let conflist_before = fs::read(node.conflist()).unwrap();

    api.set_down(true);
    // Meanwhile the cluster changes; the agent cannot know yet.
    api.delete_node("worker-1");
    api.put_node(worker(4));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(outage) {
        assert_eq!(
            agent_routes(&node.ns),
            want,
            "a route changed while the API was down"
        );
        assert_eq!(
            d.get("/healthz").0,
            200,
            "not live during the outage\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(d.metrics().value("rcni_watch_restarts_total", &[]) >= 1.0);
    assert_eq!(fs::read(node.conflist()).unwrap(), conflist_before);

    api.set_down(false);
    // kube-rs's backoff is capped at 30 s.
    let ok = wait_for(60, || {
        agent_routes(&node.ns)
            == [
                "10.244.3.0/24 via 192.168.56.13",
                "10.244.4.0/24 via 192.168.56.14",
            ]
    });
    assert!(ok, "{:?}\n{}", agent_routes(&node.ns), d.log());
    d.wait_ready(5);
}

/// A watch resumed from a version the server compacted gets 410 Gone: the agent relists, and
/// a relist that finds what it already has changes no route.
#[test]
fn gone_relists_without_route_churn() {
    require_root();
    let node = Node::new();
    let _lan = lan(&node);
    let api = api(&node);
    api.put_nodes((1..=6).map(worker).collect());
    let d = Daemon::start(&node, &api, &[]);
    d.wait_ready(20);
    wait_for(20, || agent_routes(&node.ns).len() == 5);
    let routes = agent_routes(&node.ns);
    let added = changes(&d, "added");
    let lists = |api: &cni_testkit::FakeApi| api.requests().iter().filter(|r| !r.watch).count();
    let lists_before = lists(&api);

    // The agent cut off while unrelated churn happens and is compacted away: its watch
    // resumes from a version that is gone.
    api.set_down(true);
    for _ in 0..3 {
        api.put_node(FakeNode::new("other", &[], &[]).lean());
        api.delete_node("other");
    }
    api.compact();
    api.set_down(false);
    assert!(
        wait_for(40, || lists(&api) > lists_before),
        "no relist after 410\n{}",
        d.log()
    );
    assert!(d.log().contains("410"), "{}", d.log());
    // The relist is applied: give it a moment, then nothing may have moved.
    assert!(wait_for(10, || d.get("/readyz").0 == 200));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent_routes(&node.ns), routes);
    for op in ["added", "replaced", "removed"] {
        let before = if op == "added" { added } else { 0.0 };
        assert_eq!(
            changes(&d, op),
            before,
            "route churn ({op}) on relist\n{}",
            d.log()
        );
    }
    // And the new watch delivers.
    api.put_node(worker(7));
    assert!(
        wait_for(20, || agent_routes(&node.ns).len() == 6),
        "{}",
        d.log()
    );

    // 500s and a restart: the same, retried with backoff.
    api.fail_next(3, 500);
    api.restart();
    api.put_node(worker(8));
    assert!(
        wait_for(40, || agent_routes(&node.ns).len() == 7),
        "{}",
        d.log()
    );
}

/// Ready only once the node has a podCIDR and the conflist is installed after a full list;
/// the IPAM figures follow pods as they come and go.
#[test]
fn readiness_waits_for_install_and_metrics_follow_pods() {
    require_root();
    let node = Node::new();
    let _lan = lan(&node);
    for p in ["rbridge", "rhost-local", "rmasq"] {
        fs::copy(plugin_bin(p), node.src.join(p)).unwrap();
    }
    let state = node.aux.join("cni");
    let api = api(&node);
    // worker-2 registered, its podCIDR not allocated yet.
    api.put_nodes(vec![
        worker(1),
        FakeNode::new("worker-2", &[], &["192.168.56.12"]).lean(),
    ]);
    let upstream = upstream_dir();
    let d = Daemon::start(
        &node,
        &api,
        &[
            "--upstream-dir",
            upstream.to_str().unwrap(),
            "--plugin-state-dir",
            state.to_str().unwrap(),
        ],
    );
    // Not ready, and saying why, once the list shows the node has no podCIDR.
    assert!(
        wait_for(20, || d.get("/readyz").1.contains("podCIDR")),
        "{:?}\n{}",
        d.get("/readyz"),
        d.log()
    );
    assert_eq!(d.get("/readyz").0, 503);
    assert_eq!(d.get("/healthz").0, 200);
    assert!(!node.conflist().exists());

    api.put_node(worker(2));
    d.wait_ready(20);
    assert_eq!(
        fs::read(node.bin.join("portmap")).unwrap(),
        fs::read(upstream.join("portmap")).unwrap()
    );
    let range = [("network", "rcni"), ("range", "10.244.2.0/24")];
    let m = d.metrics();
    assert_eq!(m.get("rcni_ipam_addresses_used", &range), Some(0.0));
    let free = m.get("rcni_ipam_addresses_free", &range).unwrap();
    assert_eq!(m.value("rcni_attachments", &[("network", "rcni")]), 0.0);
    assert!(m.value("rcni_last_sync_timestamp_seconds", &[]) > 1.7e9);

    // Two pods through the installed chain, as the runtime would run it.
    let list: Value = conflist(&node);
    let pods: Vec<(Netns, String)> = (0..2)
        .map(|_| (Netns::new("pod"), container_id()))
        .collect();
    let chain = |(pod, id): &(Netns, String)| {
        Chain::new(&node.ns, &list, id, pod, "eth0").cni_path(node.bin.display().to_string())
    };
    let results: Vec<Value> = pods.iter().map(|p| chain(p).add()).collect();
    let m = d.metrics();
    assert_eq!(m.get("rcni_ipam_addresses_used", &range), Some(2.0));
    assert_eq!(m.get("rcni_ipam_addresses_free", &range), Some(free - 2.0));
    assert_eq!(m.value("rcni_attachments", &[("network", "rcni")]), 2.0);
    chain(&pods[0]).del(&results[0]);
    let m = d.metrics();
    assert_eq!(m.get("rcni_ipam_addresses_used", &range), Some(1.0));
    assert_eq!(m.value("rcni_attachments", &[("network", "rcni")]), 1.0);
    chain(&pods[1]).del(&results[1]);
    assert_eq!(
        d.metrics().get("rcni_ipam_addresses_used", &range),
        Some(0.0)
    );
}

#[test]
fn a_rejected_token_keeps_it_unready_and_says_why() {
    require_root();
    let node = Node::new();
    let api = cni_testkit::FakeApi::start_in(&node.ns, "127.0.0.1:0".parse().unwrap(), "other");
    api.put_node(worker(2));
    let d = Daemon::start(&node, &api, &[]);
    assert!(wait_for(20, || d.log().contains("401")), "{}", d.log());
    assert!(d.log().contains("token"), "{}", d.log());
    let (status, _) = d.get("/readyz");
    assert_eq!(status, 503);
    assert!(!node.conflist().exists());
    d.assert_running();
}

#[test]
fn uninstall_mode_removes_what_was_installed_and_idles() {
    require_root();
    let node = Node::new();
    // The real rroutes: uninstalling removes the routes through it.
    fs::copy(plugin_bin("rroutes"), node.src.join("rroutes")).unwrap();
    let before = node.snapshot();
    let _lan = lan(&node);
    let api = api(&node);
    api.put_nodes(vec![worker(1), worker(2)]);
    let d = Daemon::start(&node, &api, &[]);
    d.wait_ready(20);
    wait_routes(&node.ns, &["10.244.1.0/24 via 192.168.56.11"], &d);
    let hops = agent_nexthops(&node.ns);
    assert!(d.stop().success());
    // Started again (an upgrade), it finds its route and nexthop as they are.
    let d = Daemon::start(&node, &api, &[]);
    d.wait_ready(20);
    for op in ["added", "replaced", "removed"] {
        assert_eq!(changes(&d, op), 0.0, "{op} after a restart\n{}", d.log());
    }
    assert_eq!(agent_nexthops(&node.ns), hops);
    assert!(d.stop().success());

    let calls = api.requests().len();
    let d = Daemon::start(&node, &api, &["--uninstall"]);
    d.wait_ready(20);
    assert_same_tree(&before, &node.snapshot());
    assert!(
        agent_routes(&node.ns).is_empty(),
        "{:?}",
        agent_routes(&node.ns)
    );
    assert!(
        agent_nexthops(&node.ns).is_empty(),
        "{:?}",
        agent_nexthops(&node.ns)
    );
    assert_eq!(
        api.requests().len(),
        calls,
        "uninstall does not read the API"
    );
    std::thread::sleep(Duration::from_millis(300));
    d.assert_running();
    assert!(d.stop().success());
}
