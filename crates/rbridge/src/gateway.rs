//! Gateways, as upstream's bridge: which addresses the pod's routes go via (calcGateways), the
//! gateway addresses on the bridge (or on its VLAN gateway interface), and forwarding on.

use std::net::IpAddr;

use cni_netlink::{sysctl, Address, Link, Netlink};
use cni_types::error::INVALID_NETWORK_CONFIG;
use cni_types::{CniError, CniResult, Result, Route};
use ipnet::IpNet;

use crate::config::BridgeConf;
use crate::step::prefix;
use crate::vlan::ensure_vlan_gateway;

/// Index of the container interface in the result: bridge, host veth, container veth.
pub const CONTAINER_INDEX: usize = 2;

/// Gateways per family, as upstream's calcGateways: every address points at the container
/// interface; with `isGateway` a missing gateway becomes the subnet's first address and the
/// gateway goes on the bridge with the pod address's prefix; with `isDefaultGateway` a default
/// route via it is added per family unless IPAM returned one with a gateway.
pub fn calc_gateways(result: &mut CniResult, conf: &BridgeConf) -> Vec<IpNet> {
    let mut gateways: Vec<IpNet> = Vec::new();
    let mut default_found = [false, false];
    for i in 0..result.ips.len() {
        let ip = &mut result.ips[i];
        ip.interface = Some(CONTAINER_INDEX);
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = first_address(&ip.address);
        }
        let (address, gateway) = (ip.address, ip.gateway);
        let family = usize::from(!address.addr().is_ipv4());
        let any: IpNet = if family == 0 {
            "0.0.0.0/0".parse().expect("constant")
        } else {
            "::/0".parse().expect("constant")
        };
        if conf.is_default_gateway && !default_found[family] {
            default_found[family] = result.routes.iter().any(|r| r.gw.is_some() && r.dst == any);
            if !default_found[family] {
                result.routes.push(Route::new(any, gateway));
                default_found[family] = true;
            }
        }
        if conf.is_gateway {
            if let Some(gw) = gateway.and_then(|g| IpNet::new(g, address.prefix_len()).ok()) {
                gateways.push(gw);
            }
        }
    }
    gateways
}

/// The subnet's first address (network address + 1), upstream's default gateway.
pub fn first_address(net: &IpNet) -> Option<IpAddr> {
    match net.trunc().addr() {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Gateway addresses on the bridge (or on its VLAN gateway interface) and forwarding on the
/// node. Returns the VLAN gateway interface when one is used.
pub async fn configure_gateways(
    node: &Netlink,
    conf: &BridgeConf,
    bridge: &Link,
    bridge_created: bool,
    bridge_addrs: Option<Vec<Address>>,
    gateways: &[IpNet],
) -> Result<Option<Link>> {
    if gateways.is_empty() {
        return Ok(None);
    }
    let (target, existing, vlan_gateway) = if conf.vlan != 0 {
        let link = ensure_vlan_gateway(node, bridge, conf).await?;
        let addrs = node.addresses(Some(link.index)).await?;
        (link.clone(), addrs, Some(link))
    } else {
        (bridge.clone(), bridge_addrs.unwrap_or_default(), None)
    };
    let mut existing = existing;
    let mut added = false;
    for gw in gateways {
        added |=
            ensure_gateway_address(node, &target, &mut existing, *gw, conf.force_address).await?;
    }
    if added && vlan_gateway.is_none() && !bridge_created {
        // Upstream sets the bridge's MAC to itself once it is a gateway, so it stops following
        // the lowest MAC of its ports; a bridge we created has a set MAC already.
        node.set_mac(bridge.index, &bridge.mac).await?;
    }
    // Forwarding on, as upstream; checked over netlink first, since the /proc/sys path costs
    // O(netns on the node) per lookup and is needed only on a node's first gateway.
    for (v6, key) in [
        (false, "net.ipv4.ip_forward"),
        (true, "net.ipv6.conf.all.forwarding"),
    ] {
        if gateways.iter().any(|g| g.addr().is_ipv6() == v6)
            && cni_netlink::netconf::forwarding_all(v6) != Some(true)
        {
            sysctl::set(key, "1")?;
        }
    }
    Ok(vlan_gateway)
}

/// Upstream's ensureAddr: the gateway address present is fine; another IPv4 address, or an IPv6
/// one overlapping it, is an error unless `forceAddress` (then it is replaced). Safe when ADDs
/// race: the loser of two identical adds gets EEXIST, which counts as present. Returns whether
/// this call added it.
async fn ensure_gateway_address(
    node: &Netlink,
    link: &Link,
    existing: &mut Vec<Address>,
    gw: IpNet,
    force: bool,
) -> Result<bool> {
    let v4 = gw.addr().is_ipv4();
    let mut conflicting = Vec::new();
    for a in existing.iter().filter(|a| a.net.addr().is_ipv4() == v4) {
        if a.net == gw {
            return Ok(false);
        }
        if v4 || a.net.contains(&gw.addr()) || gw.contains(&a.net.addr()) {
            if !force {
                return Err(CniError::new(
                    INVALID_NETWORK_CONFIG,
                    format!(
                        "{:?} already has an IP address different from {gw} ({}): set \"forceAddress\": true to replace it",
                        link.name, a.net
                    ),
                ));
            }
            conflicting.push(a.net);
        }
    }
    for old in conflicting {
        node.del_address(link.index, old).await?;
        existing.retain(|a| a.net != old);
    }
    // Without DAD: the gateway comes from IPAM, and a tentative gateway would drop the pods'
    // first packets for a second or more.
    let added = node
        .add_address(link.index, gw, false)
        .await
        .map_err(|e| prefix(e, &format!("setting gateway address on {}", link.name)))?;
    existing.push(Address {
        index: link.index,
        net: gw,
        link_scope: false,
    });
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_types::IpConfig;

    fn conf(gw: bool, default_gw: bool) -> BridgeConf {
        BridgeConf {
            network: "n".into(),
            bridge: "cni0".into(),
            is_gateway: gw || default_gw,
            is_default_gateway: default_gw,
            force_address: false,
            ip_masq: false,
            ip_masq_backend: None,
            ip_masq_state_dir: None,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            vlan_trunk: vec![],
            preserve_default_vlan: true,
            mac_spoof_check: false,
            enable_dad: false,
            disable_container_interface: false,
            port_isolation: false,
            mac: None,
            ipam: Some("host-local".into()),
        }
    }

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig::new(a.parse().unwrap(), gw.map(|g| g.parse().unwrap()))
    }

    #[test]
    fn gateways_and_default_routes_as_upstream() {
        let mut r = CniResult {
            ips: vec![
                ip("10.22.0.5/16", None),
                ip("10.23.0.5/24", Some("10.23.0.254")),
                ip("fd00:22::5/64", None),
            ],
            ..Default::default()
        };
        let gws = calc_gateways(&mut r, &conf(false, true));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(r.ips[0].gateway, Some("10.22.0.1".parse().unwrap()));
        let gws: Vec<String> = gws.iter().map(ToString::to_string).collect();
        assert_eq!(gws, ["10.22.0.1/16", "10.23.0.254/24", "fd00:22::1/64"]);
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            ["0.0.0.0/0 Some(10.22.0.1)", "::/0 Some(fd00:22::1)"]
        );
    }

    #[test]
    fn default_route_from_ipam_is_kept() {
        let mut r = CniResult {
            ips: vec![ip("10.22.0.5/16", Some("10.22.0.1"))],
            routes: vec![Route::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.22.0.99".parse().unwrap()),
            )],
            ..Default::default()
        };
        calc_gateways(&mut r, &conf(false, true));
        assert_eq!(r.routes.len(), 1);
        // Without isGateway there is no gateway to compute and nothing goes on the bridge.
        let mut r = CniResult {
            ips: vec![ip("10.22.0.5/16", None)],
            ..Default::default()
        };
        assert!(calc_gateways(&mut r, &conf(false, false)).is_empty());
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn first_addresses() {
        let f = |s: &str| first_address(&s.parse().unwrap()).unwrap().to_string();
        assert_eq!(f("10.22.3.4/16"), "10.22.0.1");
        assert_eq!(f("fd00::99/64"), "fd00::1");
    }
}
