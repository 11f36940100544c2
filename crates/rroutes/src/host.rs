//! hostRoutes: routes in the node's own netns (main table), marked with rroutes' protocol so
//! `rroutes sync` can tell the routes it installed from everyone else's without a state file.

use std::path::Path;

use cni_netlink::{Netlink, RouteFilter, RouteSpec, RT_TABLE_MAIN};
use cni_types::error::{CHECK_MISMATCH, INVALID_NETWORK_CONFIG, IO_FAILURE, NETLINK_FAILURE};
use cni_types::{CniError, NetConfList, Result};

use crate::conf::{describe, Conf, HostRoute};

/// What ensuring (and pruning) did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub added: Vec<RouteSpec>,
    /// (old, new): one of ours whose gateway changed.
    pub replaced: Vec<(RouteSpec, RouteSpec)>,
    pub removed: Vec<RouteSpec>,
    pub kept: usize,
}

/// What `rroutes sync` prints: a line per change, then the counts.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.added {
            writeln!(f, "added {}", describe(r, ""))?;
        }
        for (old, new) in &self.replaced {
            writeln!(
                f,
                "replaced {} with {}",
                describe(old, ""),
                describe(new, "")
            )?;
        }
        for r in &self.removed {
            writeln!(f, "removed {}", describe(r, ""))?;
        }
        writeln!(
            f,
            "rroutes sync: {} added, {} replaced, {} removed, {} already present",
            self.added.len(),
            self.replaced.len(),
            self.removed.len(),
            self.kept
        )
    }
}

/// Unicast routes of the main table, of the families asked for: all of them, or only those of
/// `protocol` (rroutes' own, which the kernel then filters out of the node's routes for us).
async fn main_routes(
    nl: &Netlink,
    (v4, v6): (bool, bool),
    protocol: Option<u8>,
) -> Result<Vec<RouteSpec>> {
    let filter = RouteFilter {
        table: RT_TABLE_MAIN as u8,
        protocol,
    };
    let mut all = Vec::new();
    if v4 {
        all.extend(nl.routes_matching(false, filter).await?);
    }
    if v6 {
        all.extend(nl.routes_matching(true, filter).await?);
    }
    Ok(all)
}

fn family(route: &HostRoute) -> (bool, bool) {
    let v4 = route.dst.addr().is_ipv4();
    (v4, !v4)
}

fn families(routes: &[HostRoute]) -> (bool, bool) {
    (
        routes.iter().any(|r| r.dst.addr().is_ipv4()),
        routes.iter().any(|r| r.dst.addr().is_ipv6()),
    )
}

fn at(i: usize, e: CniError) -> CniError {
    CniError {
        msg: format!("hostRoutes[{i}] in the node netns: {}", e.msg),
        ..e
    }
}

/// Makes every route of `routes` present, idempotently: an identical route (whoever installed it)
/// is left alone, one of ours with another gateway is replaced, anyone else's route with the
/// same destination and metric is an error rather than silently taken over.
pub async fn ensure(
    nl: &Netlink,
    routes: &[HostRoute],
    protocol: u8,
    report: &mut Report,
) -> Result<()> {
    if routes.is_empty() {
        return Ok(());
    }
    // Ours are read first, filtered by the kernel; everyone else's only if a route of ours is
    // missing and cannot simply be added.
    let ours = main_routes(nl, families(routes), Some(protocol)).await?;
    for (i, h) in routes.iter().enumerate() {
        let want = h.spec(Some(protocol));
        if ours.iter().any(|k| want.same_route(k)) {
            report.kept += 1;
        } else if let Some(k) = ours.iter().find(|k| want.same_key(k)) {
            nl.replace_route(&want).await.map_err(|e| at(i, e))?;
            report.replaced.push((k.clone(), want));
        } else if nl.add_route(&want).await.map_err(|e| at(i, e))? {
            report.added.push(want);
        } else {
            // The destination is taken: by an identical route (someone else's, or another
            // ADD's that won the race), which is fine, or by a conflicting one.
            let now = main_routes(nl, family(h), None).await?;
            if !now.iter().any(|k| want.same_route(k)) {
                return Err(at(i, taken(h, now.iter().find(|k| want.same_key(k)))));
            }
            report.kept += 1;
        }
    }
    Ok(())
}

/// Why `h` could not be added: the node's route `k` with its destination and metric, which
/// rroutes did not install, or (none found) one that appeared meanwhile.
fn taken(h: &HostRoute, k: Option<&RouteSpec>) -> CniError {
    let msg = match k {
        Some(k) => format!(
            "route {} via {} conflicts with the node's route {} (proto {}), which rroutes did not install: remove that route or this entry",
            h.dst,
            h.gw,
            describe(k, ""),
            k.protocol.unwrap_or(0)
        ),
        None => format!(
            "route {} via {}: another route with this destination appeared meanwhile",
            h.dst, h.gw
        ),
    };
    CniError::new(NETLINK_FAILURE, msg)
}

/// Removes the routes marked with `protocol` in the main table that `routes` does not list.
pub async fn prune(
    nl: &Netlink,
    routes: &[HostRoute],
    protocol: u8,
    report: &mut Report,
) -> Result<()> {
    let wanted: Vec<RouteSpec> = routes.iter().map(|h| h.spec(None)).collect();
    for k in main_routes(nl, (true, true), Some(protocol)).await? {
        if !wanted.iter().any(|w| w.same_route(&k)) {
            nl.del_route(&k).await.map_err(|e| CniError {
                msg: format!("removing a route no longer listed in hostRoutes: {}", e.msg),
                ..e
            })?;
            report.removed.push(k);
        }
    }
    Ok(())
}

/// CHECK: every hostRoute is in the node netns exactly.
pub async fn check(nl: &Netlink, routes: &[HostRoute]) -> Result<()> {
    if routes.is_empty() {
        return Ok(());
    }
    let existing = main_routes(nl, families(routes), None).await?;
    for (i, h) in routes.iter().enumerate() {
        let want = h.spec(None);
        if existing.iter().any(|k| want.same_route(k)) {
            continue;
        }
        let msg = match existing.iter().find(|k| want.same_key(k)) {
            Some(k) => format!(
                "hostRoutes[{i}]: node route {} via {} has changed: the node has {}",
                h.dst,
                h.gw,
                describe(k, "")
            ),
            None => format!(
                "hostRoutes[{i}]: node route {} via {} is missing",
                h.dst, h.gw
            ),
        };
        return Err(CniError::new(CHECK_MISMATCH, msg));
    }
    Ok(())
}

/// `rroutes sync --conflist FILE`: ensures the hostRoutes of the conflist's rroutes entries in
/// the current netns and removes the routes with their protocol that the file no longer lists.
pub fn sync(conflist: &Path) -> Result<Report> {
    let bytes = std::fs::read(conflist).map_err(|e| {
        CniError::new(
            IO_FAILURE,
            format!("cannot read conflist {}: {e}", conflist.display()),
        )
    })?;
    let list = NetConfList::from_slice(&bytes).map_err(|e| CniError {
        msg: format!("{}: {}", conflist.display(), e.msg),
        ..e
    })?;
    // Entries grouped by protocol: each protocol's routes are pruned against all its entries.
    let mut groups: Vec<(u8, Vec<HostRoute>)> = Vec::new();
    for (i, plugin) in list.plugins.iter().enumerate() {
        if plugin.get("type").and_then(|t| t.as_str()) != Some("rroutes") {
            continue;
        }
        let conf = Conf::from_value(&list.plugin_config(i)?).map_err(|e| CniError {
            msg: format!("{} plugins[{i}]: {}", conflist.display(), e.msg),
            ..e
        })?;
        match groups.iter_mut().find(|(p, _)| *p == conf.protocol) {
            Some((_, routes)) => routes.extend(conf.host_routes),
            None => groups.push((conf.protocol, conf.host_routes)),
        }
    }
    if groups.is_empty() {
        return Err(CniError::new(
            INVALID_NETWORK_CONFIG,
            format!(
                "conflist {} has no plugin of type \"rroutes\"",
                conflist.display()
            ),
        ));
    }
    let rt = cni_netlink::runtime()?;
    rt.block_on(async {
        let nl = Netlink::open(None)?;
        let mut report = Report::default();
        for (protocol, routes) in &groups {
            ensure(&nl, routes, *protocol, &mut report).await?;
            prune(&nl, routes, *protocol, &mut report).await?;
        }
        Ok(report)
    })
}
