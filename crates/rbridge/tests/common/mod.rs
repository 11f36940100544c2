//! A node namespace where the bridge plugin runs (ours or upstream's), pods as namespaces of
//! their own, IPAM state and rmasq state in temp dirs of the test.

#![allow(dead_code)]

use std::path::PathBuf;

use cni_testkit::json::{merge, with_prev};
use cni_testkit::{
    cni_path_with_upstream, plugin_bin, run_plugin, temp_dir, upstream_bin, Invocation, Netns,
    PluginRun, TempDir, UPSTREAM_VERSIONS, VERSIONS,
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
        &VERSIONS
    } else {
        &UPSTREAM_VERSIONS
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

    /// Addresses IPAM holds for network "pods".
    pub fn allocations(&self) -> Vec<String> {
        cni_testkit::allocations(&self.data_dir().join("pods"))
    }
}
