//! What pods see: pod→outside leaves with the node's address, pod→pod and pod→node keep the
//! pod's address; both backends, IPv4 and IPv6; forwarding through a DROP policy.

mod common;

use cni_testkit::source_seen;
use common::*;
use serde_json::json;

fn masquerades(backend: &str) {
    let w = World::new();
    let p1 = w.pod(2);
    let p2 = w.pod(3);
    // Before rmasq: the outside cannot answer pods (no route back), so nothing connects.
    assert_eq!(source_seen(&p1.ns, &w.out, OUT4, 7001), None);

    let conf = w.conf(
        backend,
        &[&format!("{}/24", p1.v4), &format!("{}/64", p1.v6)],
        json!({}),
    );
    let out = w.rmasq("ADD", "pod1", &conf);
    let result = out.ok();
    assert_eq!(
        result["ips"], conf["prevResult"]["ips"],
        "prevResult passed on unchanged"
    );
    w.rmasq("CHECK", "pod1", &conf).assert_ok();

    for (out_addr, node_addr, peer, gw, me) in [
        (OUT4, NODE_OUT4, &p2.v4, GW4, &p1.v4),
        (OUT6, NODE_OUT6, &p2.v6, GW6, &p1.v6),
    ] {
        assert_eq!(
            source_seen(&p1.ns, &w.out, out_addr, 7002),
            Some(ip(node_addr)),
            "{backend}: pod→outside {out_addr} must leave with the node's address\n{}",
            w.node.firewall()
        );
        assert_eq!(
            source_seen(&p1.ns, &p2.ns, peer, 7003),
            Some(ip(me)),
            "{backend}: pod→pod keeps the pod's address"
        );
        assert_eq!(
            source_seen(&p1.ns, &w.node, gw, 7004),
            Some(ip(me)),
            "{backend}: pod→node keeps the pod's address"
        );
        assert_eq!(
            source_seen(&p1.ns, &w.node, node_addr, 7005),
            Some(ip(me)),
            "{backend}: pod→node (outside-facing address) keeps the pod's address"
        );
        // nftables matches pod addresses: a pod without an attachment is not masqueraded.
        // iptables matches the class's subnet (no per-pod rules), so its neighbour is.
        let p2_out = source_seen(&p2.ns, &w.out, out_addr, 7006);
        match backend {
            "nftables" => assert_eq!(p2_out, None),
            _ => assert_eq!(p2_out, Some(ip(node_addr))),
        }
    }

    w.rmasq("DEL", "pod1", &conf).assert_ok();
    assert_eq!(
        source_seen(&p1.ns, &w.out, OUT4, 7007),
        None,
        "DEL stops masquerading"
    );
    assert_eq!(source_seen(&p1.ns, &w.out, OUT6, 7008), None);
    assert_eq!(
        w.rule_count(),
        0,
        "DEL of the last pod leaves no rule:\n{}",
        w.node.firewall()
    );
}

#[test]
fn nftables_masquerades_v4_and_v6() {
    masquerades("nftables");
}

#[test]
fn iptables_masquerades_v4_and_v6() {
    masquerades("iptables");
}

/// Pods on other nodes (routed, in the cluster CIDR given as nonMasqueradeCIDRs) see pod addresses.
fn remote_pods_not_masqueraded(backend: &str) {
    let w = World::new();
    let p1 = w.pod(2);
    let remote = cni_testkit::Netns::new("remote");
    w.node
        .veth_to(&remote, "vrem", "eth0", "10.99.1.1/24", "10.99.1.2/24");
    remote.sh("ip addr add 10.77.1.1/24 dev lo && ip route add default via 10.99.1.1");
    w.node
        .ip(&["route", "add", "10.77.1.0/24", "via", "10.99.1.2"]);
    let conf = w.conf(
        backend,
        &[&format!("{}/24", p1.v4)],
        json!({"nonMasqueradeCIDRs": ["10.77.0.0/16"]}),
    );
    w.rmasq("ADD", "pod1", &conf).ok();
    assert_eq!(
        source_seen(&p1.ns, &remote, "10.77.1.1", 7010),
        Some(ip(&p1.v4))
    );
    // Outside the cluster CIDR, the remote node's own address is masqueraded.
    assert_eq!(
        source_seen(&p1.ns, &remote, "10.99.1.2", 7011),
        Some(ip("10.99.1.1"))
    );
    w.rmasq("DEL", "pod1", &conf).assert_ok();
}

#[test]
fn nftables_skips_non_masquerade_cidrs() {
    remote_pods_not_masqueraded("nftables");
}

#[test]
fn iptables_skips_non_masquerade_cidrs() {
    remote_pods_not_masqueraded("iptables");
}

/// A node whose FORWARD policy is DROP (as Docker sets it): allowForward opens it for pods.
fn forward_drop(backend: &str) {
    let w = World::new();
    let p1 = w.pod(2);
    w.node
        .sh("iptables -P FORWARD DROP && ip6tables -P FORWARD DROP");
    let addrs = [format!("{}/24", p1.v4), format!("{}/64", p1.v6)];
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();

    let closed = w.conf(backend, &addrs, json!({"allowForward": false}));
    w.rmasq("ADD", "pod1", &closed).ok();
    assert_eq!(
        source_seen(&p1.ns, &w.out, OUT4, 7020),
        None,
        "DROP policy applies"
    );
    w.rmasq("DEL", "pod1", &closed).assert_ok();

    let open = w.conf(backend, &addrs, json!({}));
    w.rmasq("ADD", "pod1", &open).ok();
    assert_eq!(source_seen(&p1.ns, &w.out, OUT4, 7021), Some(ip(NODE_OUT4)));
    assert_eq!(source_seen(&p1.ns, &w.out, OUT6, 7022), Some(ip(NODE_OUT6)));
    w.rmasq("CHECK", "pod1", &open).assert_ok();
    w.rmasq("DEL", "pod1", &open).assert_ok();
    let left = w.node.sh("iptables-save; ip6tables-save");
    assert!(
        !left.contains("RMASQ"),
        "forward rules removed with the last pod:\n{left}"
    );
    assert_eq!(source_seen(&p1.ns, &w.out, OUT4, 7023), None);
}

#[test]
fn nftables_allow_forward_through_drop_policy() {
    forward_drop("nftables");
}

#[test]
fn iptables_allow_forward_through_drop_policy() {
    forward_drop("iptables");
}
