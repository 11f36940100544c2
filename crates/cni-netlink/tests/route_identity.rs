//! Route identity against a real kernel: what `same_route`/`same_key` decide must agree with what
//! the kernel reads back, and a protocol set on a route comes back as set.

use cni_netlink::{Netlink, RouteFilter, RouteSpec};
use cni_plugin::netns::NetNs;
use cni_testkit::Netns;

/// A node netns linked to a peer (10.30.0.1/24 and fd00:30::1/64 on its v0, the peer .2).
fn node_with_peer() -> (Netns, Netns) {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let peer = Netns::new("peer");
    node.veth_to(&peer, "v0", "v1", "10.30.0.1/24", "10.30.0.2/24");
    node.ip(&["addr", "add", "fd00:30::1/64", "dev", "v0", "nodad"]);
    (node, peer)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn read_back_routes_are_the_same_route_and_keep_their_protocol() {
    let (node, _peer) = node_with_peer();
    let ns = NetNs::open(&node.path()).unwrap();
    runtime().block_on(async {
        let nl = Netlink::open(Some(&ns)).unwrap();
        let v0 = nl.link_by_name("v0").await.unwrap().unwrap().index;
        let mut marked = RouteSpec::new(
            "10.31.0.0/16".parse().unwrap(),
            Some("10.30.0.2".parse().unwrap()),
            None,
        );
        marked.protocol = Some(114);
        let link = RouteSpec::new("10.32.0.0/16".parse().unwrap(), None, Some(v0));
        let mut v6 = RouteSpec::new(
            "fd00:31::/64".parse().unwrap(),
            Some("fd00:30::2".parse().unwrap()),
            None,
        );
        v6.mtu = Some(1300);
        v6.protocol = Some(114);
        for r in [&marked, &link, &v6] {
            assert!(nl.add_route(r).await.unwrap());
        }
        let mut all = nl.routes(false).await.unwrap();
        all.extend(nl.routes(true).await.unwrap());
        for want in [&marked, &link, &v6] {
            let found: Vec<_> = all.iter().filter(|k| want.same_route(k)).collect();
            assert_eq!(found.len(), 1, "{want:?} in {all:?}");
            assert_eq!(found[0].protocol, Some(want.protocol.unwrap_or(3)));
            assert!(all.iter().filter(|k| want.same_key(k)).count() == 1);
        }
        // Same key, another gateway: the kernel refuses it, and it is not the same route.
        let mut other = marked.clone();
        other.gw = Some("10.30.0.3".parse().unwrap());
        assert!(!nl.add_route(&other).await.unwrap());
        assert!(!all.iter().any(|k| other.same_route(k)));
        // Replacing converges the route to the new gateway under the same key.
        nl.replace_route(&other).await.unwrap();
        let now = nl.routes(false).await.unwrap();
        assert!(now.iter().any(|k| other.same_route(k)));
        assert!(!now.iter().any(|k| marked.same_route(k)));
    });
    assert!(node
        .ip(&["-4", "route", "show", "10.31.0.0/16"])
        .contains("proto 114"));
}

#[test]
fn a_filtered_dump_returns_only_the_tables_unicast_routes_of_the_protocol() {
    let (node, _peer) = node_with_peer();
    for r in [
        "route add 10.41.0.0/16 via 10.30.0.2 proto 114",
        "route add 10.42.0.0/16 via 10.30.0.2 proto 114 table 100",
        "route add 10.43.0.0/16 via 10.30.0.2",
        "route add blackhole 10.44.0.0/16 proto 114",
        "-6 route add fd00:41::/64 via fd00:30::2 proto 114",
    ] {
        node.ip(&r.split(' ').collect::<Vec<_>>());
    }
    let ns = NetNs::open(&node.path()).unwrap();
    runtime().block_on(async {
        let nl = Netlink::open(Some(&ns)).unwrap();
        let dsts = |routes: Vec<RouteSpec>| -> Vec<String> {
            let mut d: Vec<String> = routes.iter().map(|r| r.dst.to_string()).collect();
            d.sort();
            d
        };
        let ours = RouteFilter {
            table: 254,
            protocol: Some(114),
        };
        assert_eq!(
            dsts(nl.routes_matching(false, ours).await.unwrap()),
            ["10.41.0.0/16"]
        );
        assert_eq!(
            dsts(nl.routes_matching(true, ours).await.unwrap()),
            ["fd00:41::/64"]
        );
        let main = RouteFilter {
            table: 254,
            protocol: None,
        };
        assert_eq!(
            dsts(nl.routes_matching(false, main).await.unwrap()),
            ["10.30.0.0/24", "10.41.0.0/16", "10.43.0.0/16"]
        );
        let other = RouteFilter {
            table: 100,
            protocol: Some(114),
        };
        assert_eq!(
            dsts(nl.routes_matching(false, other).await.unwrap()),
            ["10.42.0.0/16"]
        );
    });
}
