//! Nexthop objects against a real kernel: created, found again by a dump with their protocol,
//! routes through them read back with their id, and deleted with the routes through them.

use cni_netlink::nexthop::{Nexthop, Nexthops};
use cni_netlink::{Netlink, RouteFilter, RouteSpec};
use cni_plugin::netns::NetNs;
use cni_testkit::Netns;

#[test]
fn nexthops_carry_routes_and_take_them_along() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let peer = Netns::new("peer");
    node.veth_to(&peer, "v0", "v1", "10.30.0.1/24", "10.30.0.2/24");
    node.ip(&["addr", "add", "fd00:30::1/64", "dev", "v0", "nodad"]);
    node.ip(&["route", "add", "10.40.0.0/16", "via", "10.30.0.2"]);
    let (v4, v6, far) = ("10.30.0.2", "fd00:30::2", "10.40.0.9");
    node.within(|| {
        let mut nh = Nexthops::open().unwrap();
        let oif = nh
            .onlink_oif(v4.parse().unwrap())
            .unwrap()
            .expect("on v0's link");
        assert_eq!(nh.onlink_oif(v6.parse().unwrap()).unwrap(), Some(oif));
        // Behind a router, or unreachable: no device to make a nexthop with.
        assert_eq!(nh.onlink_oif(far.parse().unwrap()).unwrap(), None);
        assert_eq!(nh.onlink_oif("192.0.2.1".parse().unwrap()).unwrap(), None);
        for (id, gw) in [(70, v4), (71, v6)] {
            let hop = Nexthop {
                id,
                gw: gw.parse().unwrap(),
                oif,
                protocol: 114,
            };
            nh.add(&hop).unwrap();
            let again = nh.add(&hop).unwrap_err();
            assert_eq!(again.raw_os_error(), Some(libc::EEXIST));
        }
        let mut ours: Vec<(u32, String)> = nh
            .dump()
            .unwrap()
            .into_iter()
            .filter(|n| n.protocol == 114 && n.oif == oif)
            .map(|n| (n.id, n.gw.to_string()))
            .collect();
        ours.sort();
        assert_eq!(ours, [(70, v4.to_string()), (71, v6.to_string())]);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let nl = Netlink::open(None::<&NetNs>).unwrap();
            for (dst, id) in [("10.244.1.0/24", 70), ("fd00:10:244:1::/64", 71)] {
                let mut r = RouteSpec::new(dst.parse().unwrap(), None, None);
                r.nh_id = Some(id);
                r.scope = Some(0);
                r.protocol = Some(114);
                assert!(nl.add_route(&r).await.unwrap(), "{dst}");
            }
            let filter = RouteFilter {
                table: 254,
                protocol: Some(114),
            };
            let back = nl.routes_matching(false, filter).await.unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].nh_id, Some(70));
            // Deleting the route as dumped (it reports the nexthop's gateway too) works.
            nl.del_route(&back[0]).await.unwrap();
        });
        nh.del(71).unwrap();
        nh.del(70).unwrap();
    });
    assert_eq!(node.ip(&["-6", "route", "show", "proto", "114"]), "");
    assert_eq!(node.ip(&["nexthop", "show", "proto", "114"]), "");
}
