//! Shared test support: a node netns where the plugin runs, a pod netns wired to it as a previous
//! plugin would leave it, and kernel read-back of routes. Chains are driven by
//! `cni_testkit::Chain`.
#![allow(dead_code)]

use cni_testkit::json::merge;
use cni_testkit::{plugin_bin, run_plugin, Invocation, Netns, PluginRun};
use serde_json::{json, Value};

/// A route as the kernel holds it, read back with `ip -j -N`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KRoute {
    pub dst: String,
    pub gw: Option<String>,
    pub dev: String,
    pub table: u32,
    pub metric: u32,
    pub scope: u32,
    pub proto: u32,
    pub mtu: Option<u64>,
    pub advmss: Option<u64>,
}

impl KRoute {
    pub fn v4(&self) -> bool {
        self.dst.contains('.')
    }

    /// What flushRoutes keeps: IPv4 link/host scope, IPv6 without gateway.
    pub fn link_scope(&self) -> bool {
        if self.v4() {
            self.scope == 253 || self.scope == 254
        } else {
            self.gw.is_none()
        }
    }
}

/// Unicast routes through `dev` in every table, both families.
pub fn kroutes(ns: &Netns, dev: &str) -> Vec<KRoute> {
    let mut out = Vec::new();
    for family in [4u8, 6] {
        for r in ns.routes_table(family, "all") {
            if r.get("type").is_some() || r["dev"] != dev {
                continue;
            }
            let num = |k: &str, default: u32| {
                r.get(k)
                    .map(|v| match v {
                        Value::String(s) => s.parse().unwrap(),
                        v => v.as_u64().unwrap() as u32,
                    })
                    .unwrap_or(default)
            };
            let metric = |name: &str| {
                r.get("metrics")?
                    .as_array()?
                    .iter()
                    .find_map(|m| m.get(name)?.as_u64())
            };
            let dst = r["dst"].as_str().unwrap();
            let dst = match (dst, family) {
                ("default", 4) => "0.0.0.0/0".to_string(),
                ("default", _) => "::/0".to_string(),
                (d, 4) if !d.contains('/') => format!("{d}/32"),
                (d, _) if !d.contains('/') => format!("{d}/128"),
                (d, _) => d.to_string(),
            };
            out.push(KRoute {
                dst,
                gw: r.get("gateway").and_then(Value::as_str).map(String::from),
                dev: dev.to_string(),
                table: num("table", 254),
                metric: num("metric", 0),
                scope: num("scope", 0),
                proto: num("protocol", 3),
                mtu: metric("mtu"),
                advmss: metric("advmss"),
            });
        }
    }
    out.sort();
    out
}

/// `dst via gw` (plus ` table N` outside main) of the routes through `dev` that flushRoutes
/// would remove: the ones a result must list.
pub fn gw_routes(ns: &Netns, dev: &str, with_table: bool) -> Vec<String> {
    let mut v: Vec<String> = kroutes(ns, dev)
        .into_iter()
        .filter(|k| !k.link_scope() && (with_table || k.table == 254))
        .map(|k| key(&k.dst, k.gw.as_deref(), k.table))
        .collect();
    v.sort();
    v
}

fn key(dst: &str, gw: Option<&str>, table: u32) -> String {
    let mut s = dst.to_string();
    if let Some(g) = gw {
        s.push_str(&format!(" via {g}"));
    }
    if table != 254 {
        s.push_str(&format!(" table {table}"));
    }
    s
}

/// The result's routes in the same form; a route without `gw` stands for one via the gateway
/// the previous plugin used for its family (`gw4`/`gw6`).
pub fn result_routes(result: &Value, gw4: &str, gw6: &str) -> Vec<String> {
    let mut v: Vec<String> = result["routes"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let dst = r["dst"].as_str().unwrap();
            let gw = r["gw"]
                .as_str()
                .unwrap_or(if dst.contains(':') { gw6 } else { gw4 });
            let table = r.get("table").and_then(Value::as_u64).unwrap_or(254) as u32;
            key(dst, Some(gw), table)
        })
        .collect();
    v.sort();
    v
}

/// The result lists exactly the gateway routes the pod has through `dev`.
pub fn assert_result_is_kernel(result: &Value, ns: &Netns, dev: &str, gw4: &str, gw6: &str) {
    assert_result_is_kernel_but(result, ns, dev, gw4, gw6, &[]);
}

/// Like [`assert_result_is_kernel`], minus `implicit` kernel routes (`dst via gw`) that the
/// interface's plugin installs without listing them (ptp's subnet routes).
pub fn assert_result_is_kernel_but(
    result: &Value,
    ns: &Netns,
    dev: &str,
    gw4: &str,
    gw6: &str,
    implicit: &[&str],
) {
    let with_table = result["cniVersion"] == "1.1.0";
    let mut kernel = gw_routes(ns, dev, with_table);
    kernel.retain(|k| !implicit.contains(&k.as_str()));
    assert_eq!(
        result_routes(result, gw4, gw6),
        kernel,
        "result routes (left) differ from the kernel's (right); result: {result}\nkernel: {:#?}",
        kroutes(ns, dev)
    );
}

/// A node netns, and a pod netns whose eth0 a previous plugin set up: addresses, default routes
/// and more routes through eth0, plus another interface (eth1) rroutes must never touch.
pub struct World {
    pub node: Netns,
    pub pod: Netns,
    pub pod_path: String,
}

pub const GW4: &str = "10.22.0.1";
pub const GW6: &str = "fd00:22::1";

impl World {
    pub fn new() -> World {
        cni_testkit::require_root();
        let node = Netns::new("node");
        let pod = Netns::new("pod");
        node.veth_to(&pod, "veth0", "eth0", "10.22.0.1/24", "10.22.0.5/24");
        node.veth_to(&pod, "veth1", "eth1", "10.50.0.1/24", "10.50.0.5/24");
        node.ip(&["addr", "add", "fd00:22::1/64", "dev", "veth0", "nodad"]);
        pod.ip(&["addr", "add", "fd00:22::5/64", "dev", "eth0", "nodad"]);
        for r in [
            "route add default via 10.22.0.1 dev eth0",
            "route add 10.9.0.0/16 via 10.22.0.1 dev eth0",
            "route add 10.9.0.0/24 via 10.22.0.1 dev eth0",
            "route add 10.7.0.0/16 via 10.22.0.1 dev eth0 table 100",
            "route add 10.8.0.0/16 dev eth0",
            "-6 route add default via fd00:22::1 dev eth0",
            "-6 route add fd00:9::/64 via fd00:22::1 dev eth0",
            // eth1: same destinations, other device; never touched.
            "route add 10.9.0.0/16 via 10.50.0.1 dev eth1 metric 5",
            "route add default via 10.50.0.1 dev eth1 metric 50",
            "route add default via 10.50.0.1 dev eth1 table 200",
        ] {
            pod.ip(&r.split(' ').collect::<Vec<_>>());
        }
        let pod_path = pod.path().display().to_string();
        World {
            node,
            pod,
            pod_path,
        }
    }

    /// The result the previous plugin returned, in `version`.
    pub fn prev(&self, version: &str) -> Value {
        let mut ips = vec![
            json!({"interface": 1, "address": "10.22.0.5/24", "gateway": GW4}),
            json!({"interface": 1, "address": "fd00:22::5/64", "gateway": GW6}),
        ];
        if matches!(version, "0.3.0" | "0.3.1" | "0.4.0") {
            ips[0]["version"] = json!("4");
            ips[1]["version"] = json!("6");
        }
        let mut routes = vec![
            json!({"dst": "0.0.0.0/0"}),
            json!({"dst": "10.9.0.0/16", "gw": GW4}),
            json!({"dst": "10.9.0.0/24"}),
            json!({"dst": "::/0", "gw": GW6}),
            json!({"dst": "fd00:9::/64"}),
        ];
        if version == "1.1.0" {
            routes.push(json!({"dst": "10.7.0.0/16", "gw": GW4, "table": 100}));
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "veth0", "mac": "0a:58:0a:16:00:01"},
                {"name": "eth0", "mac": "0a:58:0a:16:00:05", "sandbox": self.pod_path},
            ],
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }

    /// rroutes' config: `keys` plus name, type, version and prevResult.
    pub fn conf(&self, version: &str, keys: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "net1",
            "type": "rroutes",
            "prevResult": self.prev(version),
        });
        merge(&mut c, keys);
        c
    }

    pub fn run(&self, command: &str, conf: &Value) -> PluginRun {
        self.run_if(command, "eth0", conf)
    }

    pub fn run_if(&self, command: &str, ifname: &str, conf: &Value) -> PluginRun {
        run_plugin(
            Some(&self.node),
            &plugin_bin("rroutes"),
            &Invocation::new(command, "cid-1", Some(&self.pod_path), ifname),
            &conf.to_string(),
        )
    }

    /// eth1's routes, to show they are untouched.
    pub fn eth1(&self) -> Vec<KRoute> {
        kroutes(&self.pod, "eth1")
    }
}
