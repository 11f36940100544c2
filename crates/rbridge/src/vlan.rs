//! VLANs, as upstream's bridge: access ports (`vlan`, the PVID, untagged) and trunks
//! (`vlanTrunk`, tagged) on bridge ports, and the VLAN gateway interface `<bridge>.<vlan>`.

use cni_netlink::{Link, Netlink, PortVlan, VethSpec};
use cni_plugin::netns::NetNs;
use cni_types::error::NETLINK_FAILURE;
use cni_types::{CniError, Result};
use futures::future::try_join_all;

use crate::config::BridgeConf;
use crate::names;

/// Access port (`vlan`: PVID, untagged) or trunk (`vlanTrunk`: tagged); without
/// `preserveDefaultVlan` the bridge's default VLAN is taken off the port first.
pub async fn configure_port_vlans(
    node: &Netlink,
    index: u32,
    vlan: u16,
    trunk: &[u16],
    preserve_default: bool,
) -> Result<()> {
    if vlan == 0 && trunk.is_empty() {
        return Ok(());
    }
    if !preserve_default {
        for v in node.port_vlans(index).await? {
            node.del_port_vlan(index, v.vid).await?;
        }
    }
    if vlan != 0 {
        node.add_port_vlan(
            index,
            PortVlan {
                vid: vlan,
                pvid: true,
                untagged: true,
            },
        )
        .await?;
    }
    try_join_all(trunk.iter().map(|&vid| {
        node.add_port_vlan(
            index,
            PortVlan {
                vid,
                pvid: false,
                untagged: false,
            },
        )
    }))
    .await?;
    Ok(())
}

/// Upstream's VLAN gateway: interface `<bridge>.<vlan>`, the peer of a veth whose other end is
/// an access port of the VLAN on the bridge; the gateway address goes on it. Shared by every
/// pod of the VLAN and never removed by DEL, as upstream.
pub async fn ensure_vlan_gateway(node: &Netlink, bridge: &Link, conf: &BridgeConf) -> Result<Link> {
    let name = format!("{}.{}", bridge.name, conf.vlan);
    if let Some(l) = node.link_by_name(&name).await? {
        if !l.up {
            node.set_up(l.index).await?;
        }
        return Ok(l);
    }
    let host = names::vlan_gateway_veth(&bridge.name, conf.vlan);
    let node_ns = NetNs::current()?;
    let spec = VethSpec {
        host_name: &host,
        host_master: Some(bridge.index),
        host_up: true,
        host_mac: None,
        peer_name: &name,
        peer_ns: &node_ns,
        peer_mac: None,
        mtu: Some(bridge.mtu),
    };
    match node.create_veth(&spec).await {
        Ok(()) => {
            let index = node
                .link_by_name(&host)
                .await?
                .map(|l| l.index)
                .unwrap_or_default();
            configure_port_vlans(node, index, conf.vlan, &[], conf.preserve_default_vlan).await?;
        }
        // Another ADD created it a moment ago.
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(e.context(format!("creating VLAN gateway interface {name}"))),
    }
    node.set_up(&name).await?;
    node.link_by_name(&name).await?.ok_or_else(|| {
        CniError::new(
            NETLINK_FAILURE,
            format!("VLAN gateway interface {name} vanished right after it was created"),
        )
    })
}

/// Kernels built without CONFIG_BRIDGE_VLAN_FILTERING refuse VLAN settings with EOPNOTSUPP;
/// say so instead of the bare errno.
pub fn vlan_unsupported(mut e: CniError, conf: &BridgeConf) -> CniError {
    if conf.vlan_filtering() && e.msg.contains("os error 95") {
        e.msg = format!(
            "{}: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING), which vlan and vlanTrunk need",
            e.msg
        );
    }
    e
}
