//! CHECK, as upstream: the container interface exists with the MAC, addresses and routes of
//! prevResult, its veth peer is a port of the bridge, the bridge is as configured; IPAM (and
//! rmasq for `ipMasq`) check their own state.

use cni_netlink::{Link, Netlink, RouteSpec};
use cni_plugin::delegate;
use cni_plugin::netns::NetNs;
use cni_plugin::Call;
use cni_types::error::{CHECK_MISMATCH, INVALID_NETWORK_CONFIG};
use cni_types::{CniError, CniResult, Interface, Result, Verb};
use ipnet::IpNet;

use crate::config::BridgeConf;
use crate::masq;
use cni_netlink::runtime;

fn mismatch(msg: impl Into<String>) -> CniError {
    CniError::new(CHECK_MISMATCH, msg)
}

pub fn check(call: &Call) -> Result<()> {
    let conf = call.config::<BridgeConf>()?;
    let ipam = match &conf.ipam {
        Some(name) => Some(delegate::start(call, name, Verb::Check, &call.stdin)?),
        None => None,
    };
    let ours = check_ours(call, &conf);
    // IPAM's verdict first, as upstream checks IPAM before the links.
    if let Some(ipam) = ipam {
        ipam.finish()?;
    }
    ours
}

fn check_ours(call: &Call, conf: &BridgeConf) -> Result<()> {
    let prev = call.prev_result()?.ok_or_else(|| {
        CniError::new(
            INVALID_NETWORK_CONFIG,
            "CHECK needs prevResult: the runtime passes the cached ADD result",
        )
    })?;
    let netns = call.netns_path()?.display().to_string();
    let container = prev
        .interfaces
        .iter()
        .position(|i| i.name == call.ifname && i.sandbox == netns)
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult has no interface {} with sandbox {netns}",
                call.ifname
            ))
        })?;
    let pod_ns = NetNs::open(call.netns_path()?)?;
    runtime()?.block_on(check_links(call, conf, &prev, container, &pod_ns))?;
    if conf.ip_masq && conf.ipam.is_some() {
        let addrs: Vec<IpNet> = prev.ips_of(container).map(|ip| ip.address).collect();
        masq::check(call, conf, &addrs)?;
    }
    Ok(())
}

async fn check_links(
    call: &Call,
    conf: &BridgeConf,
    prev: &CniResult,
    container: usize,
    pod_ns: &NetNs,
) -> Result<()> {
    let node = Netlink::open(None)?;
    let bridge = check_bridge(&node, conf, prev).await?;
    let pod = Netlink::open(Some(pod_ns))?;
    let cont = check_container(&pod, call, &prev.interfaces[container]).await?;
    let peer = pod.link_peer(cont.index).await?;
    check_host_veth(&node, conf, prev, container, peer, &bridge).await?;
    check_layer3(&pod, call, prev, container, &cont).await
}

/// The bridge exists with prevResult's MAC and the configured promiscuous mode.
async fn check_bridge(node: &Netlink, conf: &BridgeConf, prev: &CniResult) -> Result<Link> {
    let bridge_if = prev
        .interfaces
        .iter()
        .find(|i| i.name == conf.bridge)
        .ok_or_else(|| mismatch(format!("prevResult has no bridge {}", conf.bridge)))?;
    let bridge = node
        .link_by_name(&conf.bridge)
        .await?
        .ok_or_else(|| mismatch(format!("bridge {} does not exist", conf.bridge)))?;
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(mismatch(format!("{} is not a bridge", conf.bridge)));
    }
    if !bridge_if.mac.is_empty() && bridge_if.mac != bridge.mac_string() {
        return Err(mismatch(format!(
            "bridge {} has MAC {}, prevResult says {}",
            conf.bridge,
            bridge.mac_string(),
            bridge_if.mac
        )));
    }
    if bridge.promisc != conf.promisc {
        return Err(mismatch(format!(
            "bridge {} promiscuous mode is {}, the config says {}",
            conf.bridge, bridge.promisc, conf.promisc
        )));
    }
    Ok(bridge)
}

/// CNI_IFNAME in the pod is a veth with prevResult's MAC.
async fn check_container(pod: &Netlink, call: &Call, cont_if: &Interface) -> Result<Link> {
    let cont = pod.link_by_name(&call.ifname).await?.ok_or_else(|| {
        mismatch(format!(
            "interface {} is missing in {}",
            call.ifname, cont_if.sandbox
        ))
    })?;
    if cont.kind.as_deref() != Some("veth") {
        return Err(mismatch(format!(
            "{} in the pod is not a veth",
            call.ifname
        )));
    }
    if !cont_if.mac.is_empty() && cont_if.mac != cont.mac_string() {
        return Err(mismatch(format!(
            "interface {} has MAC {}, prevResult says {}",
            call.ifname,
            cont.mac_string(),
            cont_if.mac
        )));
    }
    Ok(cont)
}

/// The host veth: the interface of prevResult that is the container veth's peer and a port of
/// the bridge, with prevResult's MAC.
async fn check_host_veth(
    node: &Netlink,
    conf: &BridgeConf,
    prev: &CniResult,
    container: usize,
    peer: Option<u32>,
    bridge: &Link,
) -> Result<()> {
    for (i, intf) in prev.interfaces.iter().enumerate() {
        if i == container || intf.name == conf.bridge || !intf.sandbox.is_empty() {
            continue;
        }
        let Some(link) = node.link_by_name(&intf.name).await? else {
            continue;
        };
        if link.kind.as_deref() != Some("veth")
            || Some(link.index) != peer
            || link.master != Some(bridge.index)
        {
            continue;
        }
        if !intf.mac.is_empty() && intf.mac != link.mac_string() {
            return Err(mismatch(format!(
                "host veth {} has MAC {}, prevResult says {}",
                intf.name,
                link.mac_string(),
                intf.mac
            )));
        }
        return Ok(());
    }
    Err(mismatch(format!(
        "no veth of prevResult on bridge {} is the peer of {} in the pod",
        conf.bridge, prev.interfaces[container].name
    )))
}

/// prevResult's addresses on the container interface and its routes in the pod.
async fn check_layer3(
    pod: &Netlink,
    call: &Call,
    prev: &CniResult,
    container: usize,
    cont: &Link,
) -> Result<()> {
    let have = pod.addresses(Some(cont.index)).await?;
    for ip in prev.ips_of(container) {
        if !have.iter().any(|a| a.net == ip.address) {
            return Err(mismatch(format!(
                "address {} is missing on {} in the pod",
                ip.address, call.ifname
            )));
        }
    }
    let (v4, v6) = futures::try_join!(pod.routes(false), pod.routes(true))?;
    for r in &prev.routes {
        let mut want = RouteSpec::new(r.dst, r.gw, None);
        want.table = r.table;
        let kernel = if r.dst.addr().is_ipv4() { &v4 } else { &v6 };
        if !kernel.iter().any(|k| want.matches(k)) {
            return Err(mismatch(format!(
                "route {} is missing in the pod",
                cni_netlink::describe_route(&want)
            )));
        }
    }
    Ok(())
}
