//! Shared helpers for rmasq's namespace tests: a node with pods on a bridge and an outside
//! network, running rmasq as a runtime does, and seeing which source address a peer observes.
#![allow(dead_code)]

use std::net::IpAddr;

use cni_testkit::json::{merge, prev_result};
use cni_testkit::{plugin_bin, run_plugin, temp_dir, Invocation, Netns, PluginRun, TempDir};
use serde_json::{json, Value};

pub const NODE_OUT4: &str = "10.99.0.1";
pub const NODE_OUT6: &str = "fd99::1";
pub const OUT4: &str = "10.99.0.2";
pub const OUT6: &str = "fd99::2";
pub const GW4: &str = "10.77.0.1";
pub const GW6: &str = "fd77::1";

/// A node netns with a bridge `br0` (10.77.0.1/24, fd77::1/64) for pods and a link to an
/// "outside" netns (node 10.99.0.1, outside 10.99.0.2). The outside has no route back to pods,
/// so only masqueraded traffic can be answered.
pub struct World {
    pub node: Netns,
    pub out: Netns,
    pub state: TempDir,
}

pub struct Pod {
    pub ns: Netns,
    pub v4: String,
    pub v6: String,
}

impl World {
    pub fn new() -> World {
        let node = Netns::new("node");
        let out = Netns::new("out");
        node.sh(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
             && ip link add br0 type bridge && ip link set br0 up \
             && ip addr add 10.77.0.1/24 dev br0 && ip addr add fd77::1/64 dev br0 nodad",
        );
        node.veth_to(
            &out,
            "vout",
            "eth0",
            &format!("{NODE_OUT4}/24"),
            &format!("{OUT4}/24"),
        );
        node.ip(&[
            "addr",
            "add",
            &format!("{NODE_OUT6}/64"),
            "dev",
            "vout",
            "nodad",
        ]);
        out.ip(&["addr", "add", &format!("{OUT6}/64"), "dev", "eth0", "nodad"]);
        World {
            node,
            out,
            state: temp_dir("rmasq-state"),
        }
    }

    /// A pod on br0 with 10.77.0.<n>/24 and fd77::<n>/64, default routes via the bridge.
    pub fn pod(&self, n: u8) -> Pod {
        let ns = Netns::new("pod");
        let host = format!("vp{n}");
        let v4 = format!("10.77.0.{n}");
        let v6 = format!("fd77::{n}");
        self.node.ip(&[
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        self.node.ip(&["link", "set", &host, "master", "br0", "up"]);
        ns.sh(&format!(
            "ip addr add {v4}/24 dev eth0 && ip addr add {v6}/64 dev eth0 nodad && ip link set eth0 up \
             && ip route add default via {GW4} && ip -6 route add default via {GW6}"
        ));
        ns.wait_link_up("eth0");
        self.node.wait_link_up(&host);
        self.node.wait_link_up("br0");
        Pod { ns, v4, v6 }
    }

    /// rmasq's config for `backend` with `extra` keys merged in and a prevResult for `pod`.
    pub fn conf(&self, backend: &str, addrs: &[&str], extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": "pods",
            "type": "rmasq",
            "backend": backend,
            "stateDir": self.state.display().to_string(),
            "prevResult": prev_result(addrs),
        });
        merge(&mut c, extra);
        c
    }

    /// Runs rmasq in the node netns. ADD and CHECK get a netns path (rmasq never enters it).
    pub fn rmasq(&self, verb: &str, cid: &str, conf: &Value) -> PluginRun {
        let netns = self.node.path().display().to_string();
        let with_netns = matches!(verb, "ADD" | "CHECK");
        let inv = Invocation::new(verb, cid, with_netns.then_some(netns.as_str()), "eth0");
        run_plugin(
            Some(&self.node),
            &plugin_bin("rmasq"),
            &inv,
            &conf.to_string(),
        )
    }

    /// The id of the class of `backend` whose pods' subnet holds `addr` (a pod address with
    /// its prefix), as the state dir records it in `classes/<id>.json`.
    pub fn class_id(&self, backend: &str, addr: &str) -> String {
        let subnet = addr.parse::<ipnet::IpNet>().unwrap().trunc().to_string();
        let dir = self.state.join("classes");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let class: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            if class["backend"] == backend && class["source"] == subnet.as_str() {
                return class["id"].as_str().unwrap().to_string();
            }
        }
        panic!("no {backend} class of {subnet} in {}", dir.display())
    }

    /// Number of rules in the node's firewall (nft rules, iptables `-A` lines), whatever tables.
    pub fn rule_count(&self) -> usize {
        let nft = self.node.sh("nft -a list ruleset");
        let nft_rules = nft
            .lines()
            .filter(|l| l.contains("# handle") && !l.trim_start().starts_with(['t', 'c', 's', 'm']))
            .count();
        let ipt = self
            .node
            .sh("iptables-save 2>/dev/null; ip6tables-save 2>/dev/null");
        nft_rules + ipt.lines().filter(|l| l.starts_with("-A ")).count()
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
