//! rmasq in conflists with upstream plugins: after bridge (host-local IPAM), and before or after
//! portmap, driven as libcni drives a conflist (`cni_testkit::Chain`).

mod common;

use std::net::SocketAddr;

use cni_testkit::json::addresses;
use cni_testkit::{source_seen, source_seen_via, temp_dir, Chain, Netns};
use common::*;
use serde_json::{json, Value};

fn chain_test(order: &[&str], backend: &str) {
    let w = World::new();
    let ipam_dir = temp_dir("rmasq-ipam");
    let pod = Netns::new("pod");
    let bridge = json!({
        "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
        "ipam": {
            "type": "host-local", "dataDir": ipam_dir.display().to_string(),
            "ranges": [[{"subnet": "10.88.0.0/24"}], [{"subnet": "fd88::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        }
    });
    let rmasq = json!({"type": "rmasq", "backend": backend,
        "stateDir": w.state.display().to_string()});
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let plugins: Vec<Value> = order
        .iter()
        .map(|p| match *p {
            "bridge" => bridge.clone(),
            "rmasq" => rmasq.clone(),
            "portmap" => portmap.clone(),
            other => panic!("unknown plugin {other}"),
        })
        .collect();
    let list = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": plugins});
    // Upstream portmap's CHECK fails on any dual-stack result (it looks for the IPv4 DNAT rule
    // with ip6tables), so it is left out; every other plugin is checked.
    let d = Chain::new(&w.node, &list, "c1", &pod, "eth0")
        .capability_args(
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
        )
        .skip_check("portmap");
    let result = d.add();
    let addrs = addresses(&result);
    assert_eq!(addrs.len(), 2, "{result}");
    pod.wait_link_up("eth0");
    // IPv6 routes via the bridge need its address; give the kernel a moment for DAD there.
    w.node.sh("for i in $(seq 50); do ip -6 addr show dev cni0 tentative | grep -q inet6 || break; sleep 0.1; done");
    if let Err(call) = d.check(&result) {
        panic!("{call}");
    }

    let what = format!("{order:?} {backend}");
    assert_eq!(
        source_seen(&pod, &w.out, OUT4, 7200),
        Some(ip(NODE_OUT4)),
        "{what}\n{}",
        w.node.firewall()
    );
    assert_eq!(
        source_seen(&pod, &w.out, OUT6, 7201),
        Some(ip(NODE_OUT6)),
        "{what}"
    );
    assert_eq!(
        source_seen(&pod, &w.node, "10.88.0.1", 7202),
        Some(ip(&addrs[0])),
        "{what}"
    );
    if order.contains(&"portmap") {
        // The outside reaches the pod through the node's port 8080 and is seen as itself.
        let seen = source_seen_via(
            &w.out,
            &pod,
            SocketAddr::new(ip(&addrs[0]), 80),
            SocketAddr::new(ip(NODE_OUT4), 8080),
        );
        assert_eq!(
            seen,
            Some(ip(OUT4)),
            "{what}: port mapping\n{}",
            w.node.firewall()
        );
    }

    d.del(&result);
    assert_eq!(source_seen(&pod, &w.out, OUT4, 7203), None, "{what}");
    let fw = w.node.firewall();
    assert!(
        !fw.contains("rmasq") && !fw.contains("RMASQ"),
        "{what}: rmasq rules left:\n{fw}"
    );
    assert_eq!(
        std::fs::read_dir(w.state.join("attachments/chain"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn after_upstream_bridge() {
    chain_test(&["bridge", "rmasq"], "nftables");
    chain_test(&["bridge", "rmasq"], "iptables");
}

#[test]
fn after_upstream_portmap() {
    chain_test(&["bridge", "portmap", "rmasq"], "nftables");
    chain_test(&["bridge", "portmap", "rmasq"], "iptables");
}

#[test]
fn before_upstream_portmap() {
    chain_test(&["bridge", "rmasq", "portmap"], "nftables");
    chain_test(&["bridge", "rmasq", "portmap"], "iptables");
}
