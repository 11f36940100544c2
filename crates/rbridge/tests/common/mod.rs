//! A node namespace where the bridge plugin runs (ours or upstream's), pods as namespaces of
//! their own, IPAM state and rmasq state in temp dirs of the test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use cni_testkit::{
    cni_path_with_upstream, plugin_bin, run_plugin, temp_dir, upstream_bin, Invocation, Netns,
    PluginRun, TempDir,
};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridge {
    Ours,
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipam {
    /// Upstream host-local from /usr/lib/cni.
    HostLocal,
    RHostLocal,
}

/// The combinations the issue asks for: ours with either IPAM, upstream bridge with ours.
pub const COMBOS: [(Bridge, Ipam); 3] = [
    (Bridge::Ours, Ipam::HostLocal),
    (Bridge::Ours, Ipam::RHostLocal),
    (Bridge::Upstream, Ipam::RHostLocal),
];

/// Spec versions every party of `combo` speaks: Debian's upstream plugins (1.1.1) stop at 1.0.0.
pub fn versions(combo: (Bridge, Ipam)) -> &'static [&'static str] {
    if combo == (Bridge::Ours, Ipam::RHostLocal) {
        &["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    } else {
        &["0.3.1", "0.4.0", "1.0.0"]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    Dual,
}

pub const FAMILIES: [Family; 3] = [Family::V4, Family::V6, Family::Dual];

impl Family {
    pub fn ranges(self) -> Value {
        match self {
            Family::V4 => json!([[{"subnet": "10.22.0.0/24"}]]),
            Family::V6 => json!([[{"subnet": "fd00:22::/64"}]]),
            Family::Dual => json!([[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd00:22::/64"}]]),
        }
    }

    pub fn has_v4(self) -> bool {
        self != Family::V6
    }

    pub fn has_v6(self) -> bool {
        self != Family::V4
    }
}

static CONTAINER: AtomicU32 = AtomicU32::new(0);

/// A fresh container ID, unique in the test process.
pub fn container_id() -> String {
    format!(
        "c{}x{}",
        std::process::id(),
        CONTAINER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct World {
    pub node: Netns,
    pub dir: TempDir,
    pub bridge: Bridge,
    pub ipam: Ipam,
}

impl World {
    pub fn new(bridge: Bridge, ipam: Ipam) -> World {
        cni_testkit::require_root();
        World {
            node: Netns::new("node"),
            dir: temp_dir("rbridge-test"),
            bridge,
            ipam,
        }
    }

    pub fn ours() -> World {
        World::new(Bridge::Ours, Ipam::RHostLocal)
    }

    pub fn binary(&self) -> PathBuf {
        match self.bridge {
            Bridge::Ours => plugin_bin("rbridge"),
            Bridge::Upstream => upstream_bin("bridge"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    pub fn masq_dir(&self) -> PathBuf {
        self.dir.join("masq")
    }

    /// A config: network "pods", bridge cni0, IPAM over `family`, then `extra` keys on top.
    pub fn conf(&self, version: &str, family: Family, extra: Value) -> Value {
        let ipam_type = match self.ipam {
            Ipam::HostLocal => "host-local",
            Ipam::RHostLocal => "rhost-local",
        };
        let mut conf = json!({
            "cniVersion": version,
            "name": "pods",
            "type": match self.bridge { Bridge::Ours => "rbridge", Bridge::Upstream => "bridge" },
            "bridge": "cni0",
            "ipMasqStateDir": self.masq_dir(),
            "ipam": {
                "type": ipam_type,
                "dataDir": self.data_dir(),
                "ranges": family.ranges(),
            },
        });
        merge(&mut conf, extra);
        conf
    }

    pub fn run(
        &self,
        verb: &str,
        cid: &str,
        netns: Option<&str>,
        ifname: &str,
        args: &str,
        conf: &Value,
    ) -> PluginRun {
        let inv = Invocation::new(verb, cid, netns, ifname)
            .with_args(args)
            .with_path(cni_path_with_upstream());
        run_plugin(Some(&self.node), &self.binary(), &inv, &conf.to_string())
    }

    pub fn add(&self, pod: &Netns, cid: &str, conf: &Value) -> PluginRun {
        let path = pod.path().display().to_string();
        self.run("ADD", cid, Some(&path), "eth0", "", conf)
    }

    pub fn del(&self, pod: Option<&Netns>, cid: &str, conf: &Value) -> PluginRun {
        let path = pod.map(|p| p.path().display().to_string());
        self.run("DEL", cid, path.as_deref(), "eth0", "", conf)
    }

    pub fn check(&self, pod: &Netns, cid: &str, conf: &Value, prev: &Value) -> PluginRun {
        let path = pod.path().display().to_string();
        self.run(
            "CHECK",
            cid,
            Some(&path),
            "eth0",
            "",
            &with_prev(conf, prev),
        )
    }

    /// Addresses IPAM holds for network "pods" (files named after addresses).
    pub fn allocations(&self) -> Vec<String> {
        let dir = self.data_dir().join("pods");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        out.sort();
        out
    }

    /// veth links in the node (host ends of pods).
    pub fn host_veths(&self) -> Vec<String> {
        self.node
            .links()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "veth")
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// `nft list ruleset` and `iptables-save` of the node, for masquerade assertions.
    pub fn firewall(&self) -> String {
        let nft = self.node.exec("nft", &["list", "ruleset"]);
        let ipt = self.node.exec("iptables-save", &[]);
        let ip6t = self.node.exec("ip6tables-save", &[]);
        format!(
            "{}\n{}\n{}",
            String::from_utf8_lossy(&nft.stdout),
            String::from_utf8_lossy(&ipt.stdout),
            String::from_utf8_lossy(&ip6t.stdout)
        )
    }
}

/// `conf` with `prevResult` set, as a runtime sends CHECK and DEL.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

pub fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (k, v) in extra {
            into.insert(k, v);
        }
    }
}

/// Pings `dst` from `ns` (IPv4 or IPv6), allowing up to 3 s for the first reply.
pub fn ping(ns: &Netns, dst: &str) -> bool {
    ns.exec("ping", &["-c", "1", "-w", "3", "-q", dst])
        .status
        .success()
}

/// The address part of "10.22.0.2/24".
pub fn addr_of(cidr: &Value) -> String {
    cidr.as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The `ips[].address` of a 0.3.0+ result.
pub fn result_addrs(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .map(|ip| ip["address"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `cond` holds within 5 s: for effects the kernel completes asynchronously (a deleted
/// netns's devices), never for what the plugin must have done before returning.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
