//! Bridges with fixed attributes, bridge ports, link operations by name, against a real kernel
//! inside namespaces of the test's own.

use cni_netlink::{BridgeSpec, Netlink, PortOptions, PortVlan, VethSpec};
use cni_plugin::netns::NetNs;
use cni_testkit::Netns;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn bridge_with_fixed_mac_ports_and_fdb() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let node_ns = NetNs::open(&node.path()).unwrap();
    let pod_ns = NetNs::open(&pod.path()).unwrap();
    let mac = [0x02, 0, 0, 0, 0, 0x42];
    rt().block_on(async {
        let host = Netlink::open(Some(&node_ns)).unwrap();
        let spec = BridgeSpec {
            name: "br0",
            mtu: Some(1450),
            mac: Some(mac),
            promisc: true,
            ..Default::default()
        };
        let (br, created) = host.ensure_bridge_with(&spec).await.unwrap();
        assert!(created && br.up && br.promisc);
        assert_eq!(br.mac, mac);
        assert_eq!(br.mtu, 1450);
        let (again, created) = host.ensure_bridge_with(&spec).await.unwrap();
        assert!(!created);
        assert_eq!(again.index, br.index);

        let veth = VethSpec {
            host_name: "vethp0",
            host_master: Some(br.index),
            host_up: true,
            host_mac: Some([0x02, 0, 0, 0, 0, 0x01]),
            peer_name: "eth0",
            peer_ns: &pod_ns,
            peer_mac: Some([0x02, 0, 0, 0, 0, 0x05]),
            mtu: None,
        };
        host.create_veth(&veth).await.unwrap();
        let hv = host.link_by_name("vethp0").await.unwrap().unwrap();
        assert_eq!(hv.mac_string(), "02:00:00:00:00:01");
        // The bridge keeps its set MAC although its port's is lower.
        let br_now = host.link_by_index(br.index).await.unwrap().unwrap();
        assert_eq!(br_now.mac, mac);
        host.set_mac(br.index, &mac).await.unwrap();

        let want = PortOptions {
            hairpin: Some(true),
            isolated: Some(true),
            learning: Some(false),
            locked: Some(true),
        };
        host.set_bridge_port("vethp0", &want).await.unwrap();
        let opts = host.bridge_port_options(hv.index).await.unwrap();
        assert_eq!(opts, want);

        let cont = [0x02, 0, 0, 0, 0, 0x05];
        host.add_static_fdb(hv.index, cont, None).await.unwrap();
        host.add_static_fdb(hv.index, cont, None).await.unwrap();
        let fdb = host.static_fdb(hv.index).await.unwrap();
        assert!(fdb.contains(&(cont, None)), "{fdb:?}");

        // Ports of a bridge without VLAN filtering still list the default VLAN where the
        // kernel supports filtering at all; either way the call works.
        let vlans = host.port_vlans(hv.index).await.unwrap();
        assert!(vlans.len() <= 1, "{vlans:?}");

        // The pod end: its session, and its sysctls read from inside.
        let inside = Netlink::open(Some(&pod_ns)).unwrap();
        let forwarding = pod_ns
            .run(|| cni_netlink::sysctl::get("net.ipv4.conf.all.forwarding").unwrap())
            .unwrap();
        assert_eq!(forwarding, "0");
        let eth0 = inside.link_by_name("eth0").await.unwrap().unwrap();
        assert!(!eth0.up);
        inside.set_up("eth0").await.unwrap();
        assert!(inside.link_by_name("eth0").await.unwrap().unwrap().up);
        assert_eq!(inside.link_peer(eth0.index).await.unwrap(), Some(hv.index));
        assert_eq!(host.link_peer(hv.index).await.unwrap(), Some(eth0.index));

        assert!(host.delete_link("vethp0").await.unwrap());
        assert!(!host.delete_link("vethp0").await.unwrap());
        assert!(inside.link_by_name("eth0").await.unwrap().is_none());
    });
    assert!(pod.link("eth0").is_none());
}

#[test]
fn port_vlans_where_the_kernel_filters_vlans() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let node_ns = NetNs::open(&node.path()).unwrap();
    rt().block_on(async {
        let host = Netlink::open(Some(&node_ns)).unwrap();
        let spec = BridgeSpec {
            name: "br0",
            vlan_filtering: true,
            ..Default::default()
        };
        let Ok((br, _)) = host.ensure_bridge_with(&spec).await else {
            // No CONFIG_BRIDGE_VLAN_FILTERING: the kernel refuses, and that is all to see.
            eprintln!("note: this kernel has no bridge VLAN filtering");
            return;
        };
        node.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
        node.ip(&["link", "set", "p0", "master", "br0"]);
        let p0 = host.link_by_name("p0").await.unwrap().unwrap();
        assert_eq!(p0.master, Some(br.index));
        let default = host.port_vlans(p0.index).await.unwrap();
        assert_eq!(
            default,
            [PortVlan {
                vid: 1,
                pvid: true,
                untagged: true
            }]
        );
        host.del_port_vlan(p0.index, 1).await.unwrap();
        host.add_port_vlan(
            p0.index,
            PortVlan {
                vid: 100,
                pvid: true,
                untagged: true,
            },
        )
        .await
        .unwrap();
        for vid in [200, 201] {
            host.add_port_vlan(
                p0.index,
                PortVlan {
                    vid,
                    pvid: false,
                    untagged: false,
                },
            )
            .await
            .unwrap();
        }
        let vids: Vec<u16> = host
            .port_vlans(p0.index)
            .await
            .unwrap()
            .iter()
            .map(|v| v.vid)
            .collect();
        assert_eq!(vids, [100, 200, 201]);
    });
}

/// A bridge made with `no_dad` has a usable IPv6 link-local address at once: the node can
/// resolve neighbours on it for traffic it forwards from the first moment.
#[test]
fn bridge_without_dad_has_no_tentative_address() {
    cni_testkit::require_root();
    let node = Netns::new("node");
    let node_ns = NetNs::open(&node.path()).unwrap();
    // The sysctl is per namespace of the calling thread: run the whole session inside the node.
    node_ns
        .run(|| {
            rt().block_on(async {
                let host = Netlink::open(None).unwrap();
                let spec = BridgeSpec {
                    name: "br0",
                    no_dad: true,
                    ..Default::default()
                };
                let (br, created) = host.ensure_bridge_with(&spec).await.unwrap();
                assert!(created && br.up);
            })
        })
        .unwrap();
    assert_eq!(node.sysctl("net.ipv6.conf.br0.accept_dad"), "0");
    // The bridge gets its carrier (and its link-local address) with its first working port.
    node.sh("ip link add p0 type veth peer name p1 && ip link set p0 master br0 && ip link set p0 up && ip link set p1 up");
    node.wait_link_up("br0");
    let all = node.ip(&["-6", "addr", "show", "dev", "br0"]);
    assert!(all.contains("fe80::"), "no link-local address yet: {all}");
    let tentative = node.ip(&["-6", "addr", "show", "dev", "br0", "tentative"]);
    assert!(tentative.trim().is_empty(), "tentative: {tentative}");
}
