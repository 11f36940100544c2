//! rroutes' own keys: from the plugin config, merged with `args.cni` (per pod).
//!
//! Keys are matched without regard to case, as Go's JSON decoding does, so route-override's
//! spellings (`flushroutes`, `addroutes`, `skipcheck`, ...) work unchanged.
//!
//! How config and `args.cni` combine: the booleans in `args.cni` override the config's (either
//! way); `delRoutes` and `addRoutes` in `args.cni` extend the config's lists (config entries
//! first). `hostRoutes` and `routeProtocol` are node settings and refused under `args.cni`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use cni_netlink::RouteSpec;
use cni_types::config::{decode_config, lookup_ci, Flag};
use cni_types::{CniError, Result, Route};

/// rtm_protocol of the routes rroutes installs (`ip route` shows `proto 114`). Not in iproute2's
/// rt_protos nor used by the CNI/routing daemons we know of (Calico 80, BIRD 12, zebra 11, ...).
/// `rroutes sync` removes node routes with this protocol that its conflist no longer lists.
pub const DEFAULT_PROTOCOL: u8 = 114;

/// Node-wide keys, config only (a pod's `args.cni` may set the others).
const NODE_KEYS: [&str; 2] = ["hostRoutes", "routeProtocol"];

/// A route to add in the pod, as a CNI 1.1.0 route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRoute {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub advmss: Option<u32>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub table: Option<u32>,
    #[serde(default)]
    pub scope: Option<u8>,
}

/// A route to delete in the pod: exactly `dst` (a covering or covered prefix is another route),
/// in `table` (main by default); `gw` and `priority`, when given, narrow the match.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelRoute {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
    #[serde(default)]
    pub table: Option<u32>,
    #[serde(default)]
    pub priority: Option<u32>,
}

/// A route in the node's netns (main table), e.g. another node's podCIDR via its address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRoute {
    pub dst: IpNet,
    pub gw: IpAddr,
}

/// What rroutes does, config and args merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Conf {
    pub flush_routes: bool,
    pub flush_gateway: bool,
    pub del_routes: Vec<DelRoute>,
    pub add_routes: Vec<AddRoute>,
    pub host_routes: Vec<HostRoute>,
    pub protocol: u8,
    pub skip_check: bool,
}

#[derive(Debug, Default, Deserialize)]
struct Keys {
    #[serde(rename = "flushRoutes", default)]
    flush_routes: Option<Flag>,
    #[serde(rename = "flushGateway", default)]
    flush_gateway: Option<Flag>,
    #[serde(rename = "delRoutes", default)]
    del_routes: Option<Vec<DelRoute>>,
    #[serde(rename = "addRoutes", default)]
    add_routes: Option<Vec<AddRoute>>,
    #[serde(rename = "hostRoutes", default)]
    host_routes: Option<Vec<HostRoute>>,
    #[serde(rename = "routeProtocol", default)]
    route_protocol: Option<u8>,
    #[serde(rename = "skipCheck", default)]
    skip_check: Option<Flag>,
}

#[derive(Deserialize)]
struct ArgsWrap {
    args: CniWrap,
}

#[derive(Deserialize)]
struct CniWrap {
    cni: Keys,
}

impl Conf {
    /// Decodes a plugin config (the whole stdin, or a conflist entry); errors are code 7 naming
    /// the key, e.g. `addRoutes[0].dst` or `args.cni.delRoutes[1].table`.
    pub fn from_value(raw: &Value) -> Result<Conf> {
        let Some(obj) = raw.as_object() else {
            return Err(CniError::invalid_config(
                "the network config must be a JSON object",
            ));
        };
        // decode_config matches keys as route-override (Go) does, ignoring case.
        let base: Keys = decode_config(raw.clone())?;
        let cni = lookup_ci(obj, "args")
            .and_then(Value::as_object)
            .and_then(|a| lookup_ci(a, "cni"))
            .and_then(Value::as_object);
        let args = match cni {
            None => Keys::default(),
            Some(cni) => {
                if let Some(k) = NODE_KEYS.iter().find(|k| lookup_ci(cni, k).is_some()) {
                    return Err(CniError::invalid_config(format!(
                        "args.cni.{k} is not accepted: it is a node setting, put it in the rroutes entry of the conflist"
                    )));
                }
                let wrapped = serde_json::json!({"args": {"cni": cni}});
                decode_config::<ArgsWrap>(wrapped)?.args.cni
            }
        };
        let flag = |arg: Option<Flag>, conf: Option<Flag>| arg.or(conf).is_some_and(|f| f.0);
        let conf = Conf {
            flush_routes: flag(args.flush_routes, base.flush_routes),
            flush_gateway: flag(args.flush_gateway, base.flush_gateway),
            skip_check: flag(args.skip_check, base.skip_check),
            del_routes: base
                .del_routes
                .unwrap_or_default()
                .into_iter()
                .chain(args.del_routes.unwrap_or_default())
                .collect(),
            add_routes: base
                .add_routes
                .unwrap_or_default()
                .into_iter()
                .chain(args.add_routes.unwrap_or_default())
                .collect(),
            host_routes: base.host_routes.unwrap_or_default(),
            protocol: base.route_protocol.unwrap_or(DEFAULT_PROTOCOL),
        };
        conf.validated()
    }

    /// Normalises prefixes (host bits cleared, as Go's ParseCIDR does) and refuses what the
    /// kernel would refuse less clearly.
    fn validated(mut self) -> Result<Conf> {
        if self.protocol <= 4 {
            return Err(CniError::invalid_config(format!(
                "routeProtocol {}: 0-4 are the kernel's own (unspec, redirect, kernel, boot, static); pick an unused number above 4 (default {DEFAULT_PROTOCOL})",
                self.protocol
            )));
        }
        for (i, r) in self.add_routes.iter_mut().enumerate() {
            r.dst = r.dst.trunc();
            let at = format!("addRoutes[{i}]");
            same_family(&at, r.dst, r.gw)?;
            table_ok(&at, r.table)?;
        }
        for (i, r) in self.del_routes.iter_mut().enumerate() {
            r.dst = r.dst.trunc();
            let at = format!("delRoutes[{i}]");
            same_family(&at, r.dst, r.gw)?;
            table_ok(&at, r.table)?;
        }
        for (i, r) in self.host_routes.iter_mut().enumerate() {
            r.dst = r.dst.trunc();
            same_family(&format!("hostRoutes[{i}]"), r.dst, Some(r.gw))?;
        }
        // The same route twice (config and args) is one route; the same kernel identity with
        // different attributes could never be installed, so say so now.
        let mut unique: Vec<AddRoute> = Vec::new();
        for r in std::mem::take(&mut self.add_routes) {
            if unique.contains(&r) {
                continue;
            }
            let spec = r.spec(None, None);
            if let Some(other) = unique.iter().find(|u| u.spec(None, None).same_key(&spec)) {
                return Err(CniError::invalid_config(format!(
                    "addRoutes: {} and {} are the same route (destination, table and metric) with different attributes; give one of them another priority or table",
                    other.describe(""),
                    r.describe("")
                )));
            }
            unique.push(r);
        }
        self.add_routes = unique;
        let mut seen: Vec<&HostRoute> = Vec::new();
        for r in &self.host_routes {
            if let Some(other) = seen.iter().find(|s| s.dst == r.dst) {
                if other.gw != r.gw {
                    return Err(CniError::invalid_config(format!(
                        "hostRoutes lists {} twice (via {} and via {}): a destination has one gateway",
                        r.dst, other.gw, r.gw
                    )));
                }
            }
            seen.push(r);
        }
        self.host_routes.dedup();
        Ok(self)
    }
}

fn same_family(at: &str, dst: IpNet, gw: Option<IpAddr>) -> Result<()> {
    match gw {
        Some(gw) if gw.is_ipv4() != dst.addr().is_ipv4() => Err(CniError::invalid_config(format!(
            "{at}.gw {gw} and {at}.dst {dst} are of different IP families"
        ))),
        _ => Ok(()),
    }
}

fn table_ok(at: &str, table: Option<u32>) -> Result<()> {
    if table == Some(0) {
        return Err(CniError::invalid_config(format!(
            "{at}.table 0 is not a routing table: omit it for the main table (254)"
        )));
    }
    Ok(())
}

impl AddRoute {
    /// The kernel route on link `oif`, marked with `protocol`.
    pub fn spec(&self, oif: Option<u32>, protocol: Option<u8>) -> RouteSpec {
        let mut s = RouteSpec::new(self.dst, self.gw, oif);
        s.mtu = self.mtu;
        s.advmss = self.advmss;
        s.priority = self.priority;
        s.table = self.table;
        s.scope = self.scope;
        s.protocol = protocol;
        s
    }

    /// The route as the result lists it (1.1.0 fields dropped by older versions' output). A
    /// route without gateway is installed straight through CNI_IFNAME, as route-override does;
    /// since a result route without `gw` conventionally means "via the default gateway", it is
    /// listed with scope link (253) so a 1.1.0 result says what is installed.
    pub fn result_route(&self) -> Route {
        let mut r = Route::new(self.dst, self.gw);
        r.mtu = self.mtu;
        r.advmss = self.advmss;
        r.priority = self.priority;
        r.table = self.table;
        r.scope = self.scope.or(self.gw.is_none().then_some(253));
        r
    }

    pub fn describe(&self, ifname: &str) -> String {
        describe(&self.spec(None, None), ifname)
    }
}

impl DelRoute {
    /// Whether kernel route `k` is one this entry deletes (the device is checked by the caller).
    pub fn matches_kernel(&self, k: &RouteSpec) -> bool {
        k.dst == self.dst
            && k.table_or_main() == self.table.unwrap_or(cni_netlink::RT_TABLE_MAIN)
            && self.gw.is_none_or(|g| k.gw == Some(g))
            && self.priority.is_none_or(|p| k.effective_priority() == p)
    }

    /// Whether result route `r` is one this entry deletes.
    pub fn matches_result(&self, r: &Route) -> bool {
        r.dst.trunc() == self.dst
            && r.table.unwrap_or(cni_netlink::RT_TABLE_MAIN)
                == self.table.unwrap_or(cni_netlink::RT_TABLE_MAIN)
            && self.gw.is_none_or(|g| r.gw == Some(g))
            && self.priority.is_none_or(|p| r.priority == Some(p))
    }
}

impl HostRoute {
    pub fn spec(&self, protocol: Option<u8>) -> RouteSpec {
        let mut s = RouteSpec::new(self.dst, Some(self.gw), None);
        s.protocol = protocol;
        s
    }
}

/// `10.9.0.0/16 via 10.22.0.1 dev eth0 table 100 metric 5 mtu 1400`, as `ip route` words it.
pub fn describe(r: &RouteSpec, ifname: &str) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if !ifname.is_empty() {
        s.push_str(&format!(" dev {ifname}"));
    }
    if r.table_or_main() != cni_netlink::RT_TABLE_MAIN {
        s.push_str(&format!(" table {}", r.table_or_main()));
    }
    if let Some(p) = r.priority {
        s.push_str(&format!(" metric {p}"));
    }
    // Only a scope other than the one the kernel derives (IPv6 routes have none).
    let derived = RouteSpec {
        scope: None,
        ..r.clone()
    };
    if r.dst.addr().is_ipv4() && r.effective_scope() != derived.effective_scope() {
        s.push_str(&format!(" scope {}", r.effective_scope()));
    }
    if let Some(m) = r.mtu {
        s.push_str(&format!(" mtu {m}"));
    }
    if let Some(m) = r.advmss {
        s.push_str(&format!(" advmss {m}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<Conf> {
        Conf::from_value(&v)
    }

    #[test]
    fn defaults_are_a_no_op() {
        let c = conf(json!({"cniVersion": "1.0.0", "type": "rroutes"})).unwrap();
        assert!(!c.flush_routes && !c.flush_gateway && !c.skip_check);
        assert!(c.add_routes.is_empty() && c.del_routes.is_empty() && c.host_routes.is_empty());
        assert_eq!(c.protocol, DEFAULT_PROTOCOL);
    }

    #[test]
    fn route_override_spellings_and_string_booleans() {
        let c = conf(json!({
            "flushroutes": "true", "FLUSHGATEWAY": true, "skipcheck": true,
            "delroutes": [{"dst": "10.1.0.0/16"}],
            "addroutes": [{"dst": "10.2.3.4/16", "gw": "10.0.0.1"}],
        }))
        .unwrap();
        assert!(c.flush_routes && c.flush_gateway && c.skip_check);
        assert_eq!(c.del_routes[0].dst.to_string(), "10.1.0.0/16");
        // Host bits cleared.
        assert_eq!(c.add_routes[0].dst.to_string(), "10.2.0.0/16");
    }

    #[test]
    fn args_override_flags_and_extend_lists() {
        let c = conf(json!({
            "flushGateway": true,
            "addRoutes": [{"dst": "10.1.0.0/16", "gw": "10.0.0.1"}],
            "delRoutes": [{"dst": "10.3.0.0/16"}],
            "args": {"cni": {
                "flushGateway": false, "flushRoutes": true,
                "addRoutes": [{"dst": "10.2.0.0/16", "gw": "10.0.0.1"}, {"dst": "10.1.0.0/16", "gw": "10.0.0.1"}],
                "ips": ["10.0.0.5"]
            }}
        }))
        .unwrap();
        assert!(!c.flush_gateway && c.flush_routes);
        let dsts: Vec<String> = c.add_routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(
            dsts,
            ["10.1.0.0/16", "10.2.0.0/16"],
            "config first, duplicate merged"
        );
        assert_eq!(c.del_routes.len(), 1);
    }

    #[test]
    fn node_keys_refused_in_args() {
        let e = conf(json!({"args": {"cni": {"hostRoutes": []}}})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("args.cni.hostRoutes"), "{}", e.msg);
    }

    #[test]
    fn errors_name_the_key() {
        for (v, want) in [
            (
                json!({"addRoutes": [{"dst": "10.0.0.0/8"}, {"dst": "banana"}]}),
                "addRoutes[1].dst",
            ),
            (
                json!({"args": {"cni": {"delRoutes": [{"dst": "10.0.0.0/8", "table": "x"}]}}}),
                "args.cni.delRoutes[0].table",
            ),
            (
                json!({"addRoutes": [{"dst": "10.0.0.0/8", "gateway": "10.0.0.1"}]}),
                "addRoutes[0]",
            ),
            (
                json!({"hostRoutes": [{"dst": "10.0.0.0/8"}]}),
                "hostRoutes[0]",
            ),
            (
                json!({"addRoutes": [{"dst": "fd00::/64", "gw": "10.0.0.1"}]}),
                "addRoutes[0].gw",
            ),
            (
                json!({"delRoutes": [{"dst": "10.0.0.0/8", "table": 0}]}),
                "delRoutes[0].table",
            ),
            (json!({"routeProtocol": 4}), "routeProtocol"),
            (json!({"routeProtocol": 300}), "routeProtocol"),
            (json!({"flushRoutes": "maybe"}), "flushRoutes"),
        ] {
            let e = conf(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}");
            assert!(e.msg.contains(want), "{v}: {}", e.msg);
        }
    }

    #[test]
    fn conflicting_duplicates_refused() {
        let e = conf(json!({"addRoutes": [
            {"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
            {"dst": "0.0.0.0/0", "gw": "10.0.0.2"}
        ]}))
        .unwrap_err();
        assert!(e.msg.contains("same route"), "{}", e.msg);
        // Another metric is another route.
        conf(json!({"addRoutes": [
            {"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
            {"dst": "0.0.0.0/0", "gw": "10.0.0.2", "priority": 10}
        ]}))
        .unwrap();
        let e = conf(json!({"hostRoutes": [
            {"dst": "10.2.0.0/24", "gw": "192.168.0.2"},
            {"dst": "10.2.0.0/24", "gw": "192.168.0.3"}
        ]}))
        .unwrap_err();
        assert!(e.msg.contains("10.2.0.0/24"), "{}", e.msg);
    }

    #[test]
    fn del_route_matching_is_exact() {
        let d = DelRoute {
            dst: "10.9.0.0/16".parse().unwrap(),
            gw: None,
            table: None,
            priority: None,
        };
        let k = RouteSpec::new("10.9.0.0/16".parse().unwrap(), None, Some(2));
        assert!(d.matches_kernel(&k));
        let wider = RouteSpec::new("10.0.0.0/8".parse().unwrap(), None, Some(2));
        assert!(!d.matches_kernel(&wider));
        let mut other_table = k.clone();
        other_table.table = Some(100);
        assert!(!d.matches_kernel(&other_table));
        assert!(d.matches_result(&Route::new("10.9.0.0/16".parse().unwrap(), None)));
        assert!(!d.matches_result(&Route::new("10.9.0.0/24".parse().unwrap(), None)));
    }
}
