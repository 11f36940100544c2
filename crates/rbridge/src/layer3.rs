//! Layer 3 in the pod: its IPv6 settings (only for a pod that gets IPv6 addresses), then its
//! addresses and routes from IPAM's result.

use cni_netlink::{sysctl, Link, Netlink, RouteSpec};
use cni_plugin::netns::NetNs;
use cni_types::{CniError, CniResult, Result};
use futures::future::join_all;

use crate::config::BridgeConf;
use crate::gateway::CONTAINER_INDEX;
use crate::step::prefix;

/// For a pod that gets IPv6 addresses, before they are added: IPv6 on where the pod's netns has
/// it off (as upstream, on lo and the interface), and DAD as upstream sets it (off unless
/// `enableDad`), so the addresses are usable at once. An IPv4-only pod needs none of it, and
/// skipping it spares every ADD two /proc/sys lookups, which cost O(netns on the node) each
/// (about 1 ms per lookup with 1,000 pods). DAD failures are ignored as upstream does.
pub async fn pod_ipv6_sysctls(
    pod: &Netlink,
    pod_ns: &NetNs,
    cont: &Link,
    enable_dad: bool,
) -> Result<()> {
    let lo_disabled = match pod.link_by_name("lo").await? {
        Some(lo) => lo.conf.ipv6_disabled == Some(true),
        None => false,
    };
    let enable: Vec<String> = [
        (lo_disabled, "lo"),
        (cont.conf.ipv6_disabled == Some(true), cont.name.as_str()),
    ]
    .into_iter()
    .filter(|(off, _)| *off)
    .map(|(_, dev)| dev.to_string())
    .collect();
    let ifname = cont.name.clone();
    pod_ns.run(move || {
        for dev in &enable {
            sysctl::set(&sysctl::iface_key("ipv6", dev, "disable_ipv6"), "0")?;
        }
        let v6 = |leaf: &str, value: &str| {
            let _ = sysctl::set(&sysctl::iface_key("ipv6", &ifname, leaf), value);
        };
        if enable_dad {
            v6("enhanced_dad", "1");
            v6("accept_dad", "1");
        } else {
            v6("accept_dad", "0");
        }
        Ok::<(), CniError>(())
    })?
}

/// Addresses and routes in the pod: sent together, in order (addresses before the routes that
/// need them), so they cost one round trip. Routes without a gateway go via the first gateway of
/// their family, as upstream's ConfigureIface.
pub async fn configure_pod(
    pod: &Netlink,
    result: &CniResult,
    conf: &BridgeConf,
    index: u32,
    ifname: &str,
) -> Result<()> {
    let mine: Vec<_> = result.ips_of(CONTAINER_INDEX).collect();
    let gw_of = |v4: bool| {
        mine.iter()
            .filter_map(|ip| ip.gateway)
            .find(|g| g.is_ipv4() == v4)
    };
    let routes: Vec<RouteSpec> = result
        .routes
        .iter()
        .map(|r| {
            let mut spec = RouteSpec::new(
                r.dst,
                r.gw.or_else(|| gw_of(r.dst.addr().is_ipv4())),
                Some(index),
            );
            spec.table = r.table;
            spec.priority = r.priority;
            spec.mtu = r.mtu;
            spec.advmss = r.advmss;
            spec.scope = r.scope;
            spec
        })
        .collect();
    let addresses = join_all(
        mine.iter()
            .map(|ip| pod.add_address(index, ip.address, conf.enable_dad)),
    );
    let route_adds = join_all(routes.iter().map(|r| pod.add_route(r)));
    let (addresses, route_adds) = futures::join!(addresses, route_adds);
    for r in addresses {
        r.map_err(|e| prefix(e, &format!("configuring {ifname} in the pod")))?;
    }
    for r in route_adds {
        r.map_err(|e| prefix(e, &format!("configuring {ifname} in the pod")))?;
    }
    Ok(())
}
