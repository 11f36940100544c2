//! What the kernel says, over netlink (cni-netlink): the node's links and bridge ports, its
//! routes, whether a pod's netns is alive, and the pod's routes through its interface.

use std::path::Path;

use cni_netlink::{Link, Netlink, RouteSpec, RTN_UNICAST, RT_TABLE_MAIN};
use cni_plugin::netns::NetNs;
use tokio::runtime::Runtime;

/// The node's netns (the one rcni runs in, as the runtime runs the plugins there).
pub struct Node {
    rt: Runtime,
    links: Vec<Link>,
    routes: Vec<RouteSpec>,
}

impl Node {
    pub fn read() -> anyhow::Result<Node> {
        let rt = cni_netlink::runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (links, routes) = rt
            .block_on(async {
                let nl = Netlink::open(None)?;
                let links = nl.links().await?;
                let mut routes = nl.routes(false).await?;
                routes.extend(nl.routes(true).await?);
                Ok::<_, cni_types::CniError>((links, routes))
            })
            .map_err(|e| anyhow::anyhow!("reading the node's links and routes: {e}"))?;
        Ok(Node { rt, links, routes })
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The veth ports of bridge `name`, sorted; None when there is no such bridge.
    pub fn veth_ports(&self, name: &str) -> Option<Vec<String>> {
        let bridge = self
            .link(name)
            .filter(|l| l.kind.as_deref() == Some("bridge"))?;
        let mut ports: Vec<String> = self
            .links
            .iter()
            .filter(|l| l.master == Some(bridge.index) && l.kind.as_deref() == Some("veth"))
            .map(|l| l.name.clone())
            .collect();
        ports.sort();
        Some(ports)
    }

    /// A route to `dst` via `gw` in the main table.
    pub fn has_route(&self, dst: ipnet::IpNet, gw: std::net::IpAddr) -> bool {
        self.routes
            .iter()
            .any(|r| r.dst == dst.trunc() && r.gw == Some(gw) && r.table_or_main() == RT_TABLE_MAIN)
    }

    /// The routes through `ifname` in the netns at `path`, as `ip route` would list them
    /// (`default via 10.244.0.1`, `10.244.0.0/24`); None when it cannot be read.
    pub fn pod_routes(&self, path: &str, ifname: &str) -> Option<Vec<String>> {
        let ns = NetNs::open(Path::new(path)).ok()?;
        self.rt
            .block_on(async {
                let nl = Netlink::open(Some(&ns))?;
                let Some(link) = nl.link_by_name(ifname).await? else {
                    return Ok(None);
                };
                let mut routes = nl.routes(false).await?;
                routes.extend(nl.routes(true).await?);
                let mut out: Vec<String> = routes
                    .iter()
                    .filter(|r| r.oif == Some(link.index) && r.kind == Some(RTN_UNICAST))
                    // The kernel's own link-local route, on every interface.
                    .filter(|r| r.dst.to_string() != "fe80::/64")
                    .map(describe)
                    .collect();
                out.sort();
                Ok::<_, cni_types::CniError>(Some(out))
            })
            .ok()
            .flatten()
    }
}

/// Whether `path` is a network namespace that still exists.
pub fn netns_alive(path: &str) -> bool {
    NetNs::open(Path::new(path)).is_ok()
}

fn describe(r: &RouteSpec) -> String {
    let mut s = if r.dst.prefix_len() == 0 {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    if let Some(gw) = r.gw {
        s += &format!(" via {gw}");
    }
    if let Some(t) = r.table.filter(|t| *t != RT_TABLE_MAIN) {
        s += &format!(" table {t}");
    }
    s
}
