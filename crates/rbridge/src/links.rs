//! The links of an ADD, built while IPAM allocates: the bridge (created if missing), the veth
//! pair (created straight into the pod under its final name, host end on the bridge), the host
//! end's port settings, and the pod end up.

use cni_netlink::{sysctl, Address, BridgeSpec, Link, Netlink, PortOptions, VethSpec};
use cni_types::error::{INTERFACE_EXISTS, NETLINK_FAILURE};
use cni_types::{CniError, Interface, Result};
use futures::future::try_join_all;

use crate::config::BridgeConf;
use crate::names;
use crate::step::{prefix, Ctx, Undo};
use crate::timeline::Timeline;
use crate::vlan::{configure_port_vlans, vlan_unsupported};

/// The names and MACs of the veth pair's ends, chosen here, so nothing needs reading back.
struct Ends {
    host: String,
    host_mac: [u8; 6],
    cont_mac: [u8; 6],
}

/// The links as they are once ready.
pub struct Links {
    pub bridge: Link,
    pub bridge_created: bool,
    /// The bridge's addresses, when the gateway check needs them.
    pub bridge_addrs: Option<Vec<Address>>,
    /// A netlink session in the pod.
    pub pod: Netlink,
    /// The container interface, when layer 3 needs it.
    pub cont: Option<Link>,
    ends: Ends,
}

impl Links {
    /// The result's interfaces: bridge, host veth, container veth (see
    /// `gateway::CONTAINER_INDEX`).
    pub fn interfaces(&self, ctx: &Ctx<'_>) -> Vec<Interface> {
        vec![
            Interface {
                name: self.bridge.name.clone(),
                mac: self.bridge.mac_string(),
                ..Default::default()
            },
            Interface {
                name: self.ends.host.clone(),
                mac: cni_netlink::format_mac(&self.ends.host_mac),
                ..Default::default()
            },
            Interface {
                name: ctx.call.ifname.clone(),
                mac: cni_netlink::format_mac(&self.ends.cont_mac),
                sandbox: ctx.pod_ns.path().display().to_string(),
                ..Default::default()
            },
        ]
    }
}

/// Builds the links. `layer3`: IPAM gives the pod addresses (so the gateway check and the pod
/// interface's details are needed).
pub async fn create(
    ctx: &Ctx<'_>,
    layer3: bool,
    undo: &mut Undo,
    timeline: &mut Timeline,
) -> Result<Links> {
    let (call, conf, node) = (ctx.call, ctx.conf, ctx.node);
    let (bridge, bridge_created) = ensure_bridge(node, conf).await?;
    if bridge_created {
        undo.bridge_created = Some(bridge.index);
    }
    timeline.mark("bridge");
    let ends = Ends {
        host: names::host_veth(&call.container_id, &call.ifname),
        host_mac: names::random_mac(),
        cont_mac: conf.mac.unwrap_or_else(names::random_mac),
    };
    create_veth(ctx, &bridge, &ends, undo).await?;
    timeline.mark("veth");
    let pod = Netlink::open(Some(ctx.pod_ns))?;
    timeline.mark("pod-session");
    let gateway_addrs = async {
        if layer3 && conf.is_gateway && conf.vlan == 0 {
            node.addresses(Some(bridge.index)).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let ((), bridge_now, bridge_addrs, cont) = futures::try_join!(
        configure_port(node, conf, &ends.host, ends.cont_mac),
        node.link_by_index(bridge.index),
        gateway_addrs,
        pod_link_up(&pod, ctx, layer3),
    )?;
    Ok(Links {
        // The bridge's MAC as it is now that the port is on it (it follows its lowest port MAC
        // unless it was set explicitly).
        bridge: bridge_now.unwrap_or(bridge),
        bridge_created,
        bridge_addrs,
        pod,
        cont,
        ends,
    })
}

/// The bridge, created if missing, and whether this call created it.
async fn ensure_bridge(node: &Netlink, conf: &BridgeConf) -> Result<(Link, bool)> {
    let (bridge, created) = node
        .ensure_bridge_with(&BridgeSpec {
            name: &conf.bridge,
            mtu: conf.mtu,
            vlan_filtering: conf.vlan_filtering(),
            mac: Some(names::random_mac()),
            promisc: conf.promisc,
            no_dad: !conf.enable_dad,
        })
        .await
        .map_err(|e| {
            prefix(
                vlan_unsupported(e, conf),
                &format!("bridge {}", conf.bridge),
            )
        })?;
    // As upstream: the bridge's routes are ours, not a router's (no error if IPv6 is off).
    // Written only when the kernel reports another value: /proc/sys costs O(netns) per lookup.
    if bridge.conf.ipv6_accept_ra.is_some_and(|v| v != 0) {
        let _ = sysctl::set(&sysctl::iface_key("ipv6", &conf.bridge, "accept_ra"), "0");
    }
    Ok((bridge, created))
}

/// Creates the pair. EEXIST means either CNI_IFNAME exists in the pod (the call fails, nothing
/// touched) or a stale host veth of an earlier ADD of this attachment is left (removed, then the
/// pair is created again).
async fn create_veth(ctx: &Ctx<'_>, bridge: &Link, ends: &Ends, undo: &mut Undo) -> Result<()> {
    let Ctx {
        call,
        conf,
        pod_ns,
        node,
    } = *ctx;
    let (host, host_mac, cont_mac) = (ends.host.as_str(), ends.host_mac, ends.cont_mac);
    // The host end comes up later, with no IPv6 of its own (`set_port_up`): at 1,000 pods
    // every other pod's ADD then waits less for the kernel's rtnl lock (README, Benchmark), and
    // the node keeps no fe80::/64 route per pod. Bridged IPv6 is untouched.
    let spec = VethSpec {
        host_name: host,
        host_master: Some(bridge.index),
        host_up: false,
        host_mac: Some(host_mac),
        peer_name: &call.ifname,
        peer_ns: pod_ns,
        peer_mac: Some(cont_mac),
        mtu: conf.mtu,
    };
    let describe = || {
        format!(
            "creating veth {host} (on {}) with peer {} in {}",
            bridge.name,
            call.ifname,
            pod_ns.path().display()
        )
    };
    if let Err(e) = node.create_veth(&spec).await {
        if !e.is_exists() {
            return Err(e.context(describe()));
        }
        let pod = Netlink::open(Some(pod_ns))?;
        if pod.link_by_name(&call.ifname).await?.is_some() {
            undo.live_attachment = node
                .link_by_name(host)
                .await?
                .is_some_and(|l| l.master == Some(bridge.index));
            return Err(CniError::new(
                INTERFACE_EXISTS,
                format!(
                    "interface {} already exists in {}: DEL the attachment first, or choose another CNI_IFNAME",
                    call.ifname,
                    pod_ns.path().display()
                ),
            ));
        }
        call.logger
            .debug(format!("removing stale host veth {host} of an earlier ADD"));
        node.delete_link(host).await?;
        node.create_veth(&spec)
            .await
            .map_err(|e| e.context(describe()))?;
    }
    undo.host_veth = Some(host.to_string());
    node.set_port_up(host).await
}

/// Brings the container interface up (unless disabled), with `arp_notify` on as upstream sets it
/// for layer 3 (over netlink, not /proc/sys), and returns the interface when layer 3 needs it;
/// both requests go out together.
async fn pod_link_up(pod: &Netlink, ctx: &Ctx<'_>, layer3: bool) -> Result<Option<Link>> {
    let (call, conf) = (ctx.call, ctx.conf);
    let up = !conf.disable_container_interface;
    let set = async {
        if layer3 {
            pod.set_up_arp_notify(call.ifname.as_str(), up).await
        } else if up {
            pod.set_up(&call.ifname).await
        } else {
            Ok(())
        }
    };
    let link = async {
        if layer3 {
            pod.link_by_name(&call.ifname).await
        } else {
            Ok(None)
        }
    };
    let ((), link) = futures::try_join!(set, link)?;
    Ok(link)
}

/// Host-veth port settings: hairpin, isolation, VLANs, and the MAC spoof check (a locked port
/// that forwards only frames from MACs with a static FDB entry on it: the container's MAC).
async fn configure_port(
    node: &Netlink,
    conf: &BridgeConf,
    host: &str,
    cont_mac: [u8; 6],
) -> Result<()> {
    let on = |set: bool| set.then_some(true);
    let options = PortOptions {
        hairpin: on(conf.hairpin),
        isolated: on(conf.port_isolation),
        learning: conf.mac_spoof_check.then_some(false),
        locked: on(conf.mac_spoof_check),
    };
    if !options.is_empty() {
        node.set_bridge_port(host, &options).await?;
    }
    if conf.vlan == 0 && conf.vlan_trunk.is_empty() && !conf.mac_spoof_check {
        return Ok(());
    }
    let index = node
        .link_by_name(host)
        .await?
        .ok_or_else(|| {
            CniError::new(
                NETLINK_FAILURE,
                format!("host veth {host} vanished right after it was created"),
            )
        })?
        .index;
    configure_port_vlans(
        node,
        index,
        conf.vlan,
        &conf.vlan_trunk,
        conf.preserve_default_vlan,
    )
    .await
    .map_err(|e| vlan_unsupported(e, conf))?;
    if conf.mac_spoof_check {
        // One entry per VLAN the port may carry frames in, and one for a bridge that does not
        // filter VLANs.
        let mut vids: Vec<Option<u16>> = vec![None];
        vids.extend(node.port_vlans(index).await?.iter().map(|v| Some(v.vid)));
        try_join_all(
            vids.into_iter()
                .map(|vid| node.add_static_fdb(index, cont_mac, vid)),
        )
        .await?;
    }
    Ok(())
}
