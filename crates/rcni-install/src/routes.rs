//! Routes to other nodes: static ones (a host set up from flags) are rroutes' `hostRoutes`,
//! synced by running `rroutes sync`; the node agent's follow the API one event at a time through
//! netlink ([`NodeRoutes`]). Both mark their routes with the same protocol, so one `rroutes
//! sync` with no hostRoutes removes either.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use cni_netlink::{Netlink, RouteFilter, RouteSpec, RT_TABLE_MAIN};
use ipnet::IpNet;

use crate::agent::table::RouteOp;
use crate::hops::Hops;

/// `rroutes sync --conflist FILE`: ensures the file's hostRoutes and removes the routes rroutes
/// installed that it no longer lists.
pub fn sync(rroutes: &Path, conflist: &Path) -> Result<()> {
    let out = Command::new(rroutes)
        .arg("sync")
        .arg("--conflist")
        .arg(conflist)
        .output()
        .with_context(|| format!("running {}", rroutes.display()))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        bail!(
            "{} sync --conflist {} failed ({}): {msg}",
            rroutes.display(),
            conflist.display(),
            out.status
        );
    }
    Ok(())
}

/// rtm_protocol of the routes to other nodes: rroutes' default, so `ip route` shows one
/// "proto 114" for what rcni installed and `rroutes sync` (which `down` runs) removes the agent's
/// routes too.
pub const PROTOCOL: u8 = 114;

/// The node agent's routes to other nodes' podCIDRs, changed one at a time as the API reports
/// nodes, and reconciled with the kernel (one filtered dump) after each full list. Each goes
/// through its gateway's nexthop object where the kernel has them ([`Hops`]).
pub struct NodeRoutes {
    nl: Netlink,
    /// What is in the kernel with our protocol, as of the last reconcile and the changes since.
    installed: BTreeMap<IpNet, IpAddr>,
    hops: Option<Hops>,
}

/// What a reconcile changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub added: usize,
    pub replaced: usize,
    pub removed: usize,
}

fn nl_err(e: cni_types::CniError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.msg)
}

/// The route to `dst`: through nexthop `nh` when given, else via `gw`.
fn spec(dst: IpNet, gw: IpAddr, nh: Option<u32>) -> RouteSpec {
    let mut s = match nh {
        Some(id) => {
            let mut s = RouteSpec::new(dst, None, None);
            s.nh_id = Some(id);
            s.scope = Some(0); // universe, as with a gateway
            s
        }
        None => RouteSpec::new(dst, Some(gw), None),
    };
    s.protocol = Some(PROTOCOL);
    s
}

impl NodeRoutes {
    /// On the current network namespace (the node's: the agent runs with hostNetwork). Inside a
    /// tokio runtime.
    pub fn open() -> Result<NodeRoutes> {
        Ok(NodeRoutes {
            nl: Netlink::open(None).map_err(nl_err)?,
            installed: BTreeMap::new(),
            hops: Hops::open()?,
        })
    }

    pub fn count(&self) -> usize {
        self.installed.len()
    }

    /// One change. The error of a route that cannot be set (a gateway not on a local network,
    /// a route of someone else's with the destination) is returned; the others go on.
    pub async fn apply(&mut self, op: &RouteOp) -> Result<Option<&'static str>> {
        match op {
            RouteOp::Set(r) => {
                let old = self.installed.get(&r.dst).copied();
                if old == Some(r.gw) {
                    return Ok(None);
                }
                let nh = self.hops.as_mut().map(|h| h.acquire(r.gw)).transpose()?;
                let want = spec(r.dst, r.gw, nh);
                let done = match old {
                    Some(_) => self.nl.replace_route(&want).await.map(|()| true),
                    None => self.nl.add_route(&want).await,
                };
                let refused = match done {
                    Ok(true) => None,
                    Ok(false) => Some(anyhow!(
                        "route {} via {}: the node already has a route to {} that rcni did not install; remove it or fix that node's podCIDR",
                        r.dst, r.gw, r.dst
                    )),
                    Err(e) => Some(nl_err(e)),
                };
                if let Some(e) = refused {
                    self.release(r.gw)?;
                    return Err(e);
                }
                self.installed.insert(r.dst, r.gw);
                match old {
                    Some(gw) => {
                        self.release(gw)?;
                        Ok(Some("replaced"))
                    }
                    None => Ok(Some("added")),
                }
            }
            RouteOp::Remove(dst) => match self.installed.remove(dst) {
                Some(gw) => {
                    // By destination and protocol alone: it may be via a gateway or a nexthop.
                    let mut s = spec(*dst, gw, None);
                    s.gw = None;
                    s.scope = Some(u8::MAX); // RT_SCOPE_NOWHERE: any scope
                    self.nl.del_route(&s).await.map_err(nl_err)?;
                    self.release(gw)?;
                    Ok(Some("removed"))
                }
                None => Ok(None),
            },
        }
    }

    fn release(&mut self, gw: IpAddr) -> Result<()> {
        match self.hops.as_mut() {
            Some(h) => h.release(gw),
            None => Ok(()),
        }
    }

    /// Makes the kernel's routes of our protocol exactly `desired`: after a full list from the
    /// API (which is then the truth about which nodes exist), and on the periodic resync that
    /// repairs routes someone removed. Routes that fail are logged by the caller from the errors.
    pub async fn reconcile(
        &mut self,
        desired: &BTreeMap<IpNet, IpAddr>,
    ) -> (Counts, Vec<anyhow::Error>) {
        let mut counts = Counts::default();
        let mut errors = Vec::new();
        let filter = RouteFilter {
            table: RT_TABLE_MAIN as u8,
            protocol: Some(PROTOCOL),
        };
        let mut kernel = BTreeMap::new();
        for v6 in [false, true] {
            match self.nl.routes_matching(v6, filter).await {
                Ok(rs) => kernel.extend(rs.into_iter().map(|r| (r.dst, r))),
                Err(e) => {
                    errors.push(nl_err(e).context("listing the node's routes"));
                    return (counts, errors);
                }
            }
        }
        self.installed = self.as_installed(kernel);
        let ops = crate::agent::table::diff(&self.installed, desired);
        for op in &ops {
            match self.apply(op).await {
                Ok(Some("added")) => counts.added += 1,
                Ok(Some("replaced")) => counts.replaced += 1,
                Ok(Some(_)) => counts.removed += 1,
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if let Some(h) = self.hops.as_mut() {
            errors.extend(h.prune());
        }
        (counts, errors)
    }

    /// Our routes in the kernel, each with its gateway, and our nexthops counted by the routes
    /// through them. A route that does not go the way this agent makes them (via a gateway
    /// where nexthops are used, through a nexthop not ours) gets the unspecified address, so
    /// that the reconcile replaces it.
    fn as_installed(&mut self, kernel: BTreeMap<IpNet, RouteSpec>) -> BTreeMap<IpNet, IpAddr> {
        let unknown = IpAddr::from([0, 0, 0, 0]);
        let Some(h) = self.hops.as_mut() else {
            return kernel
                .into_iter()
                .map(|(dst, r)| (dst, r.gw.filter(|_| r.nh_id.is_none()).unwrap_or(unknown)))
                .collect();
        };
        let gateways = h.gateways();
        h.clear_uses();
        let mut installed = BTreeMap::new();
        for (dst, r) in kernel {
            match r.nh_id.and_then(|id| gateways.get(&id)) {
                Some(gw) => {
                    h.used(*gw);
                    installed.insert(dst, *gw);
                }
                None => {
                    installed.insert(dst, unknown);
                }
            }
        }
        installed
    }
}

/// The MTU of the interface of the node's default route (IPv4 first, then IPv6; the lowest
/// metric), as flannel takes it: pods then fit the node's own network, e.g. 1450 in a VXLAN
/// cloud network or 9001 on jumbo frames. None without a default route.
pub async fn default_route_mtu() -> Result<Option<(String, u32)>> {
    let nl = Netlink::open(None).map_err(nl_err)?;
    for v6 in [false, true] {
        let filter = RouteFilter {
            table: RT_TABLE_MAIN as u8,
            protocol: None,
        };
        let mut defaults: Vec<RouteSpec> = nl
            .routes_matching(v6, filter)
            .await
            .map_err(nl_err)?
            .into_iter()
            .filter(|r| r.dst.prefix_len() == 0 && r.oif.is_some())
            .collect();
        defaults.sort_by_key(RouteSpec::effective_priority);
        if let Some(oif) = defaults.first().and_then(|r| r.oif) {
            if let Some(link) = nl.link_by_index(oif).await.map_err(nl_err)? {
                return Ok(Some((link.name, link.mtu)));
            }
        }
    }
    Ok(None)
}
