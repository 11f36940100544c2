use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType, RouteVia,
};
use rtnetlink::packet_route::AddressFamily;

use cni_types::Result;

use crate::error::{is_exists, is_not_found, nl_err};
use crate::session::Netlink;

pub const RT_TABLE_MAIN: u32 = 254;
/// The metric of IPv6 routes added without one (IP6_RT_PRIO_USER).
pub const IP6_RT_PRIO_USER: u32 = 1024;
/// rtm_type of ordinary routes.
pub const RTN_UNICAST: u8 = 1;

/// One route, exactly as the kernel holds it (not a lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination, host bits cleared.
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Routing table; main when None.
    pub table: Option<u32>,
    /// Metric.
    pub priority: Option<u32>,
    /// rtm_scope; derived as `ip route` does when None (link for routes without a gateway).
    pub scope: Option<u8>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// rtm_protocol (kernel, boot, static, ...): read back, and written when set (boot when None),
    /// so a plugin can mark the routes it installs and find them again.
    pub protocol: Option<u8>,
    /// rtm_type when read back: 1 unicast, 2 local, 3 broadcast, ...
    pub kind: Option<u8>,
    /// The nexthop object the route goes through (RTA_NH_ID; see [`crate::nexthop`]), instead
    /// of `gw` and `oif`.
    pub nh_id: Option<u32>,
}

impl RouteSpec {
    pub fn new(dst: IpNet, gw: Option<IpAddr>, oif: Option<u32>) -> RouteSpec {
        RouteSpec {
            dst: dst.trunc(),
            gw,
            oif,
            table: None,
            priority: None,
            scope: None,
            mtu: None,
            advmss: None,
            protocol: None,
            kind: None,
            nh_id: None,
        }
    }

    pub fn table_or_main(&self) -> u32 {
        self.table.unwrap_or(RT_TABLE_MAIN)
    }

    /// The same route as far as the kernel's identity of a route goes: table, destination,
    /// metric (when given), and gateway and device where the caller specified them.
    pub fn matches(&self, kernel: &RouteSpec) -> bool {
        self.table_or_main() == kernel.table_or_main()
            && self.dst.trunc() == kernel.dst
            && self.gw.is_none_or(|g| kernel.gw == Some(g))
            && self.oif.is_none_or(|o| kernel.oif == Some(o))
            && self.priority.is_none_or(|p| {
                kernel.priority.unwrap_or(0) == p || (p == 0 && kernel.priority.is_none())
            })
            && self.mtu.is_none_or(|m| kernel.mtu == Some(m))
            && self.advmss.is_none_or(|m| kernel.advmss == Some(m))
            && self.scope.is_none_or(|s| kernel.scope == Some(s))
    }

    /// The metric the kernel gives a route added without one: 0 for IPv4, 1024 for IPv6.
    pub fn effective_priority(&self) -> u32 {
        self.priority.unwrap_or(if self.dst.addr().is_ipv4() {
            0
        } else {
            IP6_RT_PRIO_USER
        })
    }

    /// rtm_scope as written when unspecified: link for IPv4 routes without a gateway, else
    /// universe (IPv6 routes always read back as universe).
    pub fn effective_scope(&self) -> u8 {
        let derived = if self.gw.is_none() && self.dst.addr().is_ipv4() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        self.scope.unwrap_or(u8::from(derived))
    }

    /// Same kernel identity: table, destination and metric. The kernel refuses (EEXIST) to add a
    /// second route with the same identity, whatever its gateway.
    pub fn same_key(&self, other: &RouteSpec) -> bool {
        self.table_or_main() == other.table_or_main()
            && self.dst.trunc() == other.dst.trunc()
            && self.effective_priority() == other.effective_priority()
    }

    /// The route exactly as `self` would install it, unspecified fields taken as the kernel's
    /// defaults: identity, gateway (absent is absent), mtu, advmss and, for IPv4, scope. The
    /// device is compared only when `self` names one. Protocol is not compared. Unlike
    /// [`RouteSpec::matches`], a kernel route with extra attributes does not qualify.
    pub fn same_route(&self, kernel: &RouteSpec) -> bool {
        self.same_key(kernel)
            && self.gw == kernel.gw
            && self.oif.is_none_or(|o| kernel.oif == Some(o))
            && self.mtu == kernel.mtu
            && self.advmss == kernel.advmss
            && (self.dst.addr().is_ipv6() || self.effective_scope() == kernel.effective_scope())
    }

    fn to_message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        let v4 = self.dst.addr().is_ipv4();
        m.header.address_family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = self.dst.prefix_len();
        let table = self.table_or_main();
        m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(table));
        m.header.protocol = self
            .protocol
            .map_or(RouteProtocol::Boot, RouteProtocol::from);
        m.header.kind = RouteType::Unicast;
        m.header.scope = match self.scope {
            Some(s) => RouteScope::from(s),
            None if self.gw.is_none() && v4 => RouteScope::Link,
            None => RouteScope::Universe,
        };
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                self.dst.trunc().addr(),
            )));
        // A route through a nexthop object names neither gateway nor device (the kernel
        // refuses both, EINVAL); a dumped one reports them, from its nexthop.
        let (gw, oif) = match self.nh_id {
            Some(_) => (None, None),
            None => (self.gw, self.oif),
        };
        if let Some(gw) = gw {
            match (v4, gw) {
                (true, IpAddr::V6(g)) => m.attributes.push(RouteAttribute::Via(RouteVia::Inet6(g))),
                _ => m
                    .attributes
                    .push(RouteAttribute::Gateway(RouteAddress::from(gw))),
            }
        }
        if let Some(oif) = oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(id) = self.nh_id {
            m.attributes.push(RouteAttribute::NhId(id));
        }
        if let Some(p) = self.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        let mut metrics = Vec::new();
        if let Some(mtu) = self.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = self.advmss {
            metrics.push(RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            m.attributes.push(RouteAttribute::Metrics(metrics));
        }
        m
    }

    fn from_message(m: &RouteMessage) -> Option<RouteSpec> {
        let mut dst = None;
        let mut r = RouteSpec::new(
            match m.header.address_family {
                AddressFamily::Inet => "0.0.0.0/0".parse().ok()?,
                AddressFamily::Inet6 => "::/0".parse().ok()?,
                _ => return None,
            },
            None,
            None,
        );
        r.table = Some(u32::from(m.header.table));
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => r.gw = Some(IpAddr::V4(*ip)),
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => r.gw = Some(IpAddr::V6(*ip)),
                RouteAttribute::Via(RouteVia::Inet6(ip)) => r.gw = Some(IpAddr::V6(*ip)),
                RouteAttribute::Via(RouteVia::Inet(ip)) => r.gw = Some(IpAddr::V4(*ip)),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::NhId(i) => r.nh_id = Some(*i),
                RouteAttribute::Table(t) => r.table = Some(*t),
                RouteAttribute::Priority(p) => r.priority = Some(*p),
                RouteAttribute::Metrics(ms) => {
                    for metric in ms {
                        match metric {
                            RouteMetric::Mtu(v) => r.mtu = Some(*v),
                            RouteMetric::Advmss(v) => r.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(ip) = dst {
            r.dst = IpNet::new(ip, m.header.destination_prefix_length)
                .ok()?
                .trunc();
        }
        r.scope = Some(u8::from(m.header.scope));
        r.protocol = Some(u8::from(m.header.protocol));
        r.kind = Some(u8::from(m.header.kind));
        Some(r)
    }
}

/// Which unicast routes of one table a dump returns: all of them, or those of one protocol.
#[derive(Debug, Clone, Copy)]
pub struct RouteFilter {
    /// A table below 256 (the main table is [`RT_TABLE_MAIN`]).
    pub table: u8,
    pub protocol: Option<u8>,
}

impl Netlink {
    /// Every route of one family in every table (`v6` selects IPv6), cached entries excluded.
    pub async fn routes(&self, v6: bool) -> Result<Vec<RouteSpec>> {
        self.dump_routes(v6, None).await
    }

    /// The unicast routes of one family that `filter` selects. The kernel filters the dump
    /// (strict checking, Linux 4.20 on), so a node's thousands of routes of other tables and
    /// protocols (a pod's kernel link-local routes, say) are never sent; they are filtered here
    /// too, for older kernels.
    pub async fn routes_matching(&self, v6: bool, filter: RouteFilter) -> Result<Vec<RouteSpec>> {
        let mut routes = self.dump_routes(v6, Some(filter)).await?;
        routes.retain(|r| {
            r.table_or_main() == u32::from(filter.table)
                && r.kind == Some(RTN_UNICAST)
                && filter.protocol.is_none_or(|p| r.protocol == Some(p))
        });
        Ok(routes)
    }

    async fn dump_routes(&self, v6: bool, filter: Option<RouteFilter>) -> Result<Vec<RouteSpec>> {
        let mut query = RouteMessage::default();
        query.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if let Some(f) = filter {
            query.header.table = f.table;
            query.header.kind = RouteType::Unicast;
            if let Some(p) = f.protocol {
                query.header.protocol = RouteProtocol::from(p);
            }
        }
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing routes", e))?;
        Ok(msgs
            .iter()
            .filter(|m| !m.header.flags.contains(RouteFlags::Cloned))
            .filter_map(RouteSpec::from_message)
            .collect())
    }

    /// Adds a route; returns false if an identical one already exists.
    pub async fn add_route(&self, r: &RouteSpec) -> Result<bool> {
        match self.handle.route().add(r.to_message()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(nl_err(format!("adding route {}", describe(r)), e)),
        }
    }

    /// Adds or replaces the route with this destination, table and metric.
    pub async fn replace_route(&self, r: &RouteSpec) -> Result<()> {
        self.handle
            .route()
            .add(r.to_message())
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err(format!("replacing route {}", describe(r)), e))
    }

    /// Deletes a route; absent is success.
    pub async fn del_route(&self, r: &RouteSpec) -> Result<()> {
        let mut m = r.to_message();
        // Deletion matches on what is given; let the kernel ignore scope and protocol.
        m.header.scope = RouteScope::NoWhere;
        m.header.protocol = RouteProtocol::Unspec;
        match self.handle.route().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(nl_err(format!("deleting route {}", describe(r)), e)),
        }
    }
}

/// `10.2.0.0/16 via 10.1.0.1 dev #3 table 42 metric 100`, for messages.
pub fn describe(r: &RouteSpec) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    if let Some(t) = r.table.filter(|t| *t != RT_TABLE_MAIN) {
        s.push_str(&format!(" table {t}"));
    }
    if let Some(p) = r.priority {
        s.push_str(&format!(" metric {p}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let mut r = RouteSpec::new(
            "10.2.3.4/16".parse().unwrap(),
            Some("10.1.0.1".parse().unwrap()),
            Some(3),
        );
        r.table = Some(1000);
        r.priority = Some(100);
        r.mtu = Some(1400);
        r.advmss = Some(1360);
        assert_eq!(r.dst.to_string(), "10.2.0.0/16");
        let back = RouteSpec::from_message(&r.to_message()).unwrap();
        assert!(r.matches(&back), "{back:?}");
        assert_eq!(back.table, Some(1000));
        assert_eq!(
            describe(&r),
            "10.2.0.0/16 via 10.1.0.1 dev #3 table 1000 metric 100"
        );
    }

    #[test]
    fn protocol_is_written_when_set() {
        let mut r = RouteSpec::new("10.2.0.0/16".parse().unwrap(), None, Some(3));
        assert_eq!(r.to_message().header.protocol, RouteProtocol::Boot);
        r.protocol = Some(114);
        let back = RouteSpec::from_message(&r.to_message()).unwrap();
        assert_eq!(back.protocol, Some(114));
    }

    #[test]
    fn same_key_and_same_route_use_kernel_defaults() {
        let gw = Some("10.1.0.1".parse().unwrap());
        let want = RouteSpec::new("10.2.0.0/16".parse().unwrap(), gw, Some(3));
        // What the kernel reports for it: main table, no metric attribute, universe scope.
        let mut kernel = RouteSpec::from_message(&want.to_message()).unwrap();
        kernel.protocol = Some(114);
        assert!(want.same_route(&kernel));
        let mut other_gw = kernel.clone();
        other_gw.gw = Some("10.1.0.2".parse().unwrap());
        assert!(want.same_key(&other_gw) && !want.same_route(&other_gw));
        let mut with_mtu = kernel.clone();
        with_mtu.mtu = Some(1400);
        assert!(!want.same_route(&with_mtu));
        let mut metric = kernel.clone();
        metric.priority = Some(5);
        assert!(!want.same_key(&metric));
        let mut table = kernel.clone();
        table.table = Some(100);
        assert!(!want.same_key(&table));
        // A covering route is another route.
        let mut wider = kernel;
        wider.dst = "10.0.0.0/8".parse().unwrap();
        assert!(!want.same_key(&wider));

        let v6 = RouteSpec::new(
            "fd00:9::/64".parse().unwrap(),
            Some("fd00::1".parse().unwrap()),
            None,
        );
        let mut k6 = v6.clone();
        k6.priority = Some(1024);
        k6.scope = Some(0);
        assert!(v6.same_route(&k6));
        k6.priority = Some(1);
        assert!(!v6.same_route(&k6));
        let link = RouteSpec::new("10.8.0.0/16".parse().unwrap(), None, Some(3));
        assert_eq!(link.effective_scope(), 253);
        let mut global = link.clone();
        global.scope = Some(0);
        assert!(!link.same_route(&global));
    }

    #[test]
    fn v6_and_scopes() {
        let r = RouteSpec::new(
            "::/0".parse().unwrap(),
            Some("fd00::1".parse().unwrap()),
            None,
        );
        let m = r.to_message();
        assert_eq!(m.header.scope, RouteScope::Universe);
        let link = RouteSpec::new("10.0.0.0/8".parse().unwrap(), None, Some(2));
        assert_eq!(link.to_message().header.scope, RouteScope::Link);
        let other = RouteSpec::new(
            "10.0.0.0/8".parse().unwrap(),
            Some("10.9.9.9".parse().unwrap()),
            None,
        );
        assert!(!other.matches(&RouteSpec::from_message(&link.to_message()).unwrap()));
    }
}
