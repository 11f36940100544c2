//! The helpers against a real kernel, inside namespaces of the test's own.

use cni_netlink::{BridgeSpec, Netlink, RouteSpec, VethSpec};
use cni_plugin::netns::NetNs;
use cni_testkit::Netns;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn bridge_veth_into_pod_addresses_and_routes() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let node_ns = NetNs::open(&node.path()).unwrap();
    let pod_ns = NetNs::open(&pod.path()).unwrap();
    rt().block_on(async {
        let host = Netlink::open(Some(&node_ns)).unwrap();
        let spec = BridgeSpec {
            name: "cni0",
            mtu: Some(1400),
            ..Default::default()
        };
        let (br, _) = host.ensure_bridge_with(&spec).await.unwrap();
        // A second ensure finds the same bridge.
        assert_eq!(
            host.ensure_bridge_with(&spec).await.unwrap().0.index,
            br.index
        );
        host.add_address(br.index, "10.22.0.1/24".parse().unwrap(), false)
            .await
            .unwrap();
        assert!(!host
            .add_address(br.index, "10.22.0.1/24".parse().unwrap(), false)
            .await
            .unwrap());
        let spec = VethSpec {
            host_name: "vethtest0",
            host_master: Some(br.index),
            host_up: true,
            host_mac: None,
            peer_name: "eth0",
            peer_ns: &pod_ns,
            peer_mac: Some([0x0a, 0x58, 0x0a, 0x16, 0, 5]),
            mtu: Some(1400),
        };
        host.create_veth(&spec).await.unwrap();
        // CNI_IFNAME already present in the pod: the request fails, nothing is created.
        let again = VethSpec {
            host_name: "vethtest1",
            ..spec
        };
        let e = host.create_veth(&again).await.unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert!(host.link_by_name("vethtest1").await.unwrap().is_none());

        let hv = host.link_by_name("vethtest0").await.unwrap().unwrap();
        assert_eq!(hv.master, Some(br.index));
        assert_eq!(hv.mtu, 1400);

        let inside = Netlink::open(Some(&pod_ns)).unwrap();
        let eth0 = inside.link_by_name("eth0").await.unwrap().unwrap();
        assert_eq!(eth0.mac_string(), "0a:58:0a:16:00:05");
        assert!(!eth0.up);
        // One queue each way on both ends, what a veth has in effect by default.
        for (ns, dev) in [(&node, "vethtest0"), (&pod, "eth0")] {
            let l = &ns.ip_json(&["-d", "link", "show", dev])[0];
            let queues = (l["num_tx_queues"].as_u64(), l["num_rx_queues"].as_u64());
            assert_eq!(queues, (Some(1), Some(1)), "{l}");
        }
        inside.set_up(eth0.index).await.unwrap();
        inside
            .add_address(eth0.index, "10.22.0.5/24".parse().unwrap(), false)
            .await
            .unwrap();
        inside
            .add_address(eth0.index, "fd00:22::5/64".parse().unwrap(), false)
            .await
            .unwrap();
        let default = RouteSpec::new(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.22.0.1".parse().unwrap()),
            Some(eth0.index),
        );
        assert!(inside.add_route(&default).await.unwrap());
        assert!(!inside.add_route(&default).await.unwrap());
        let mut v6 = RouteSpec::new(
            "fd00:99::/64".parse().unwrap(),
            Some("fd00:22::1".parse().unwrap()),
            Some(eth0.index),
        );
        v6.mtu = Some(1300);
        inside.add_route(&v6).await.unwrap();

        let routes = inside.routes(false).await.unwrap();
        assert!(routes.iter().any(|r| default.matches(r)), "{routes:?}");
        let routes6 = inside.routes(true).await.unwrap();
        assert!(routes6.iter().any(|r| v6.matches(r)), "{routes6:?}");
        let addrs = inside.addresses(Some(eth0.index)).await.unwrap();
        assert!(addrs.iter().any(|a| a.net.to_string() == "10.22.0.5/24"));

        inside.del_route(&default).await.unwrap();
        inside.del_route(&default).await.unwrap();
        assert!(!inside
            .routes(false)
            .await
            .unwrap()
            .iter()
            .any(|r| default.matches(r)));
        inside
            .del_address(eth0.index, "10.22.0.5/24".parse().unwrap())
            .await
            .unwrap();
        inside
            .del_address(eth0.index, "10.22.0.5/24".parse().unwrap())
            .await
            .unwrap();

        host.delete_link(hv.index).await.unwrap();
        host.delete_link(hv.index).await.unwrap();
        assert!(inside.link_by_name("eth0").await.unwrap().is_none());
    });
    // Kernel state seen from outside agrees; the root namespace never saw the bridge.
    assert!(node.link("cni0").is_some());
    assert!(pod.link("eth0").is_none());
}

#[test]
fn sysctl_inside_a_namespace_only() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let ns = NetNs::open(&node.path()).unwrap();
    let root_before = cni_netlink::sysctl::get("net.ipv4.ip_forward").unwrap();
    ns.run(|| cni_netlink::sysctl::set("net.ipv4.ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert_eq!(node.sysctl("net.ipv4.ip_forward"), "1");
    assert_eq!(
        cni_netlink::sysctl::get("net.ipv4.ip_forward").unwrap(),
        root_before
    );
}

/// RTM_GETNETCONF reads the namespace's own forwarding switch, both ways, for both families.
#[test]
fn forwarding_read_over_netlink() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let ns = NetNs::open(&node.path()).unwrap();
    for (key, v6) in [
        ("net.ipv4.ip_forward", false),
        ("net.ipv6.conf.all.forwarding", true),
    ] {
        for value in ["1", "0"] {
            let seen = ns
                .run(|| {
                    cni_netlink::sysctl::set(key, value).unwrap();
                    cni_netlink::netconf::forwarding_all(v6)
                })
                .unwrap();
            assert_eq!(seen, Some(value == "1"), "{key}={value}");
        }
    }
}

/// A link's per-device settings come with it: what rbridge reads instead of /proc/sys.
#[test]
fn link_reports_its_devconf() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    node.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    node.sh("sysctl -qw net.ipv6.conf.v0.accept_ra=0 net.ipv6.conf.v1.disable_ipv6=1");
    let ns = NetNs::open(&node.path()).unwrap();
    rt().block_on(async {
        let nl = Netlink::open(Some(&ns)).unwrap();
        let v0 = nl.link_by_name("v0").await.unwrap().unwrap();
        assert_eq!(v0.conf.ipv6_accept_ra, Some(0));
        assert_eq!(v0.conf.ipv6_disabled, Some(false));
        assert_eq!(v0.conf.ipv4_arp_notify, Some(false));
        let v1 = nl.link_by_name("v1").await.unwrap().unwrap();
        assert_eq!(v1.conf.ipv6_disabled, Some(true));
        assert_ne!(v1.conf.ipv6_accept_ra, Some(0));
        // arp_notify set over netlink with the link brought up, as rbridge does in the pod.
        nl.set_up_arp_notify("v0", true).await.unwrap();
        let v0 = nl.link_by_name("v0").await.unwrap().unwrap();
        assert!(v0.up);
        assert_eq!(v0.conf.ipv4_arp_notify, Some(true));
    });
    assert_eq!(node.sysctl("net.ipv4.conf.v0.arp_notify"), "1");
    assert_eq!(node.sysctl("net.ipv4.conf.v1.arp_notify"), "0");
}

/// A session in another namespace is opened by the calling thread itself (setns in and out):
/// the thread is back in its own namespace afterwards, and the session acts on the other one.
#[test]
fn session_in_another_netns_leaves_the_thread_home() {
    use std::os::unix::fs::MetadataExt;
    cni_testkit::require_root();
    let pod = Netns::new("pod");
    pod.ip(&["link", "set", "lo", "down"]);
    let ns = NetNs::open(&pod.path()).unwrap();
    let here = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let before = here();
    rt().block_on(async {
        let nl = Netlink::open(Some(&ns)).unwrap();
        assert_eq!(here(), before);
        nl.set_up("lo").await.unwrap();
    });
    assert_eq!(here(), before);
    let lo = pod.link("lo").unwrap();
    assert!(lo["flags"].to_string().contains("\"UP\""), "{lo}");
}
