//! The kernel's floor: the same kernel work as one pod's ADD and DEL, from this process.

use std::net::IpAddr;
use std::time::Instant;

use cni_netlink::netfilter::{ElemOp, Family, Netfilter};
use cni_netlink::{BridgeSpec, Netlink, RouteSpec, VethSpec};
use cni_plugin::netns::NetNs;
use cni_testkit::Netns;

use crate::measure::settle;
use crate::stats::ms;

/// The kernel work of one pod's ADD and DEL from this running process, no exec: veth pair with
/// the peer created in the pod, on the bridge, up (IPv6 off, as rbridge); address, link up and
/// default route in the pod; the pod's address into the masquerade rule's set (as rmasq does);
/// then the address out of the set and the host veth deleted. With `existing` pods on the node
/// first (not timed) and the node quiet, as the scale runs measure. Each timed pod's netns is
/// deleted right after its DEL, as the runtime does in the plugin runs: the kernel tears a netns
/// down in the background with RCU waits of its own, which lengthen the next veth deletion's
pub fn floor(runs: usize, existing: usize) -> (Vec<f64>, Vec<f64>) {
    let node = Netns::new("bfloor");
    let node_ns = NetNs::open(&node.path()).unwrap();
    // The masquerade rule (set up once, as for a node's first pod): pods' sources in a set.
    let nft = std::process::Command::new("ip")
        .args(["netns", "exec", node.name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                b"table ip bfloor {\n set pods { type ipv4_addr; }\n chain post { type nat hook postrouting priority 100; ip saddr @pods masquerade; }\n}\n",
            )?;
            c.wait()
        })
        .expect("running nft");
    assert!(nft.success(), "nft could not create the floor's rule");
    let mut pods: Vec<Option<Netns>> = (0..existing + runs)
        .map(|_| Some(Netns::new("bpod")))
        .collect();
    // On a thread inside the node, as a plugin runs.
    let out = node_ns.run(|| floor_in_node(&mut pods, existing)).unwrap();
    drop(pods);
    out
}

fn floor_in_node(pods: &mut [Option<Netns>], existing: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nfnl = Netfilter::open().expect("netfilter socket");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let host = Netlink::open(None).unwrap();
        // As rbridge makes it (IPv6 DAD off, fixed MAC), so the floor does the same kernel work.
        let spec = BridgeSpec {
            name: "cni0",
            mac: Some([0x02, 0, 0, 0, 0, 0x01]),
            no_dad: true,
            ..Default::default()
        };
        let (br, _) = host.ensure_bridge_with(&spec).await.unwrap();
        host.add_address(br.index, "10.128.0.1/16".parse().unwrap(), false)
            .await
            .unwrap();
        // The pods already on the node, as the scale runs have them.
        for (i, pod) in pods.iter().enumerate().take(existing) {
            floor_add(&host, br.index, pod.as_ref().unwrap(), i, &mut nfnl).await;
        }
        if existing > 0 {
            settle();
        }
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for (i, pod) in pods.iter_mut().enumerate().skip(existing) {
            let started = Instant::now();
            let (name, key) = floor_add(&host, br.index, pod.as_ref().unwrap(), i, &mut nfnl).await;
            adds.push(ms(started.elapsed()));
            let started = Instant::now();
            nfnl.change_elements(Family::Ipv4, "bfloor", &[(ElemOp::Delete, "pods", &key)])
                .unwrap();
            let hv = host.link_by_name(&name).await.unwrap().unwrap();
            host.delete_link(hv.index).await.unwrap();
            dels.push(ms(started.elapsed()));
            // As the runtime after DEL (see above).
            *pod = None;
        }
        (adds, dels)
    })
}

/// One pod's ADD at the floor: veth into the pod, on the bridge; address, up, route; set element.
async fn floor_add(
    host: &Netlink,
    bridge: u32,
    pod: &Netns,
    i: usize,
    nfnl: &mut Netfilter,
) -> (String, [u8; 4]) {
    let pod_ns = NetNs::open(&pod.path()).unwrap();
    let addr: IpAddr = format!("10.128.{}.{}", 1 + i / 250, 2 + i % 250)
        .parse()
        .unwrap();
    let key = match addr {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    nfnl.change_elements(Family::Ipv4, "bfloor", &[(ElemOp::Add, "pods", &key)])
        .unwrap();
    let name = format!("vethf{i}");
    host.create_veth(&VethSpec {
        host_name: &name,
        host_master: Some(bridge),
        host_up: false,
        host_mac: None,
        peer_name: "eth0",
        peer_ns: &pod_ns,
        peer_mac: Some([0x0a, 0x58, 0, 0, (i >> 8) as u8, i as u8]),
        mtu: None,
    })
    .await
    .unwrap();
    // As rbridge: the port up without IPv6 of its own.
    host.set_port_up(name.as_str()).await.unwrap();
    let inside = Netlink::open(Some(&pod_ns)).unwrap();
    let eth0 = inside.link_by_name("eth0").await.unwrap().unwrap();
    inside
        .add_address(eth0.index, ipnet::IpNet::new(addr, 16).unwrap(), false)
        .await
        .unwrap();
    inside.set_up(eth0.index).await.unwrap();
    inside
        .add_route(&RouteSpec::new(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.128.0.1".parse().unwrap()),
            Some(eth0.index),
        ))
        .await
        .unwrap();
    (name, key)
}
