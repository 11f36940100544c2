//! The routes of CNI_IFNAME inside the pod: applying the config in order, and checking it.

use cni_netlink::{Netlink, RouteSpec, RTN_UNICAST};
use cni_types::error::{CHECK_MISMATCH, INVALID_NETWORK_CONFIG, NETLINK_FAILURE};
use cni_types::{CniError, CniResult, Result, Route};

use crate::conf::{describe, Conf};

/// CNI_IFNAME in the pod, reached through a netlink session in the pod's netns.
pub struct Pod<'a> {
    nl: Netlink,
    ifname: &'a str,
    index: u32,
    /// CNI_NETNS, for messages.
    netns: String,
}

/// IPv4 routes of link or host scope, and IPv6 routes without a gateway (IPv6 has no route
/// scopes; on-link routes are its equivalent): what flushRoutes keeps.
fn is_link_scope(k: &RouteSpec) -> bool {
    if k.dst.addr().is_ipv4() {
        matches!(k.scope, Some(253 | 254))
    } else {
        k.gw.is_none()
    }
}

/// Whether result route `r` stands for kernel route `k`. Results often leave the gateway out
/// (the plugin used the address's gateway) and carry no metric before 1.1.0, so those match any.
fn declares(r: &Route, k: &RouteSpec) -> bool {
    r.dst.trunc() == k.dst
        && r.table.unwrap_or(cni_netlink::RT_TABLE_MAIN) == k.table_or_main()
        && r.gw.is_none_or(|g| k.gw == Some(g))
        && r.priority.is_none_or(|p| k.effective_priority() == p)
}

impl<'a> Pod<'a> {
    pub async fn open(nl: Netlink, ifname: &'a str, netns: String) -> Result<Pod<'a>> {
        let link = nl.link_by_name(ifname).await?.ok_or_else(|| {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!(
                    "interface CNI_IFNAME={ifname} does not exist in the pod netns {netns}: rroutes is a chained plugin and must come after the plugin that creates it"
                ),
            )
        })?;
        Ok(Pod {
            nl,
            ifname,
            index: link.index,
            netns,
        })
    }

    /// Unicast routes through CNI_IFNAME, both families, every table.
    async fn routes(&self) -> Result<Vec<RouteSpec>> {
        let mut all = self.nl.routes(false).await?;
        all.extend(self.nl.routes(true).await?);
        all.retain(|k| k.oif == Some(self.index) && k.kind == Some(RTN_UNICAST));
        Ok(all)
    }

    fn fail(&self, step: &str, e: CniError) -> CniError {
        let msg = e.msg.replace(
            &format!("dev #{}", self.index),
            &format!("dev {}", self.ifname),
        );
        CniError {
            msg: format!("{step} in pod netns {}: {msg}", self.netns),
            ..e
        }
    }

    async fn delete(&self, step: &str, k: &RouteSpec) -> Result<()> {
        self.nl.del_route(k).await.map_err(|e| self.fail(step, e))
    }

    /// Applies flushRoutes, flushGateway, delRoutes, addRoutes in this order, to the kernel and
    /// to `result` alike, and returns the result to pass on.
    pub async fn apply(&self, conf: &Conf, mut result: CniResult) -> Result<CniResult> {
        if conf.flush_routes {
            for k in self.routes().await? {
                if !is_link_scope(&k) {
                    self.delete("flushRoutes", &k).await?;
                }
            }
            let left = self.routes().await?;
            result
                .routes
                .retain(|r| left.iter().any(|k| declares(r, k)));
        }
        if conf.flush_gateway {
            for k in self.routes().await? {
                if k.dst.prefix_len() == 0 {
                    self.delete("flushGateway", &k).await?;
                }
            }
            result.routes.retain(|r| r.dst.prefix_len() != 0);
            let own = result
                .interfaces
                .iter()
                .position(|i| i.name == self.ifname && !i.sandbox.is_empty());
            for ip in &mut result.ips {
                // Addresses of CNI_IFNAME, or of no interface in particular.
                if own.is_none() || ip.interface.is_none() || ip.interface == own {
                    ip.gateway = None;
                }
            }
        }
        for (i, d) in conf.del_routes.iter().enumerate() {
            for k in self.routes().await? {
                if d.matches_kernel(&k) {
                    self.delete(&format!("delRoutes[{i}]"), &k).await?;
                }
            }
            result.routes.retain(|r| !d.matches_result(r));
        }
        if !conf.add_routes.is_empty() {
            self.add_routes(conf, &mut result).await?;
        }
        Ok(result)
    }

    /// addRoutes: each route added unless the pod has it already, and put in the result.
    async fn add_routes(&self, conf: &Conf, result: &mut CniResult) -> Result<()> {
        let mut all = self.nl.routes(false).await?;
        all.extend(self.nl.routes(true).await?);
        for (i, a) in conf.add_routes.iter().enumerate() {
            let spec = a.spec(Some(self.index), Some(conf.protocol));
            let step = format!("addRoutes[{i}] ({})", a.describe(self.ifname));
            if !all.iter().any(|k| spec.same_route(k)) {
                if let Some(k) = all.iter().find(|k| spec.same_key(k)) {
                    return Err(self.fail(
                        &step,
                        CniError::new(
                            NETLINK_FAILURE,
                            format!(
                                "the pod already has route {} with the same destination, table and metric; remove it first (delRoutes, flushGateway or flushRoutes) or give this route another priority",
                                self.describe_kernel(k).await
                            ),
                        ),
                    ));
                }
                if !self
                    .nl
                    .add_route(&spec)
                    .await
                    .map_err(|e| self.fail(&step, e))?
                {
                    return Err(self.fail(
                        &step,
                        CniError::new(
                            NETLINK_FAILURE,
                            "a route with the same destination, table and metric appeared meanwhile",
                        ),
                    ));
                }
            }
            // The explicit route replaces any result entry standing for the same kernel route.
            result
                .routes
                .retain(|r| !(declares(r, &spec) && spec.same_key(&route_spec(r))));
            result.routes.push(a.result_route());
        }
        Ok(())
    }

    async fn describe_kernel(&self, k: &RouteSpec) -> String {
        let dev = match k.oif {
            Some(i) if i == self.index => self.ifname.to_string(),
            Some(i) => match self.nl.link_by_index(i).await {
                Ok(Some(l)) => l.name,
                _ => format!("#{i}"),
            },
            None => String::new(),
        };
        describe(k, &dev)
    }

    /// CHECK: added routes present exactly, deleted ones absent, no default route left by
    /// flushGateway and no gateway route left by flushRoutes unless declared by addRoutes or by
    /// the final result (which lists routes later plugins added). Code 102 naming the route.
    pub async fn check(&self, conf: &Conf, result: &CniResult) -> Result<()> {
        let routes = self.routes().await?;
        let added: Vec<RouteSpec> = conf
            .add_routes
            .iter()
            .map(|a| a.spec(Some(self.index), None))
            .collect();
        let mismatch = |msg: String| {
            CniError::new(
                CHECK_MISMATCH,
                format!(
                    "{msg} (pod netns {}, interface {})",
                    self.netns, self.ifname
                ),
            )
        };
        for (i, want) in added.iter().enumerate() {
            if routes.iter().any(|k| want.same_route(k)) {
                continue;
            }
            let what = describe(want, self.ifname);
            return Err(match routes.iter().find(|k| want.same_key(k)) {
                Some(k) => mismatch(format!(
                    "addRoutes[{i}]: route {what} has changed: the pod has {}",
                    describe(k, self.ifname)
                )),
                None => mismatch(format!("addRoutes[{i}]: route {what} is missing")),
            });
        }
        let is_added = |k: &RouteSpec| added.iter().any(|a| a.same_route(k));
        for (i, d) in conf.del_routes.iter().enumerate() {
            if let Some(k) = routes.iter().find(|k| d.matches_kernel(k) && !is_added(k)) {
                return Err(mismatch(format!(
                    "delRoutes[{i}]: route {} is present again",
                    describe(k, self.ifname)
                )));
            }
        }
        let declared = |k: &RouteSpec| is_added(k) || result.routes.iter().any(|r| declares(r, k));
        if conf.flush_gateway {
            if let Some(k) = routes
                .iter()
                .find(|k| k.dst.prefix_len() == 0 && !declared(k))
            {
                return Err(mismatch(format!(
                    "flushGateway: default route {} is present again",
                    describe(k, self.ifname)
                )));
            }
        }
        if conf.flush_routes {
            if let Some(k) = routes.iter().find(|k| !is_link_scope(k) && !declared(k)) {
                return Err(mismatch(format!(
                    "flushRoutes: route {} is neither in addRoutes nor in the result",
                    describe(k, self.ifname)
                )));
            }
        }
        Ok(())
    }
}

fn route_spec(r: &Route) -> RouteSpec {
    let mut s = RouteSpec::new(r.dst, r.gw, None);
    s.table = r.table;
    s.priority = r.priority;
    s
}
