//! The two chains measured, each in a node namespace of its own with a supply of pods.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cni_testkit::{Netns, TempDir};
use rcni_bench::runtime::{Attachment, Exec, Runtime};
use serde_json::{json, Value};

/// Where every chain's state dir is made (`--state-dir`; the temporary dir by default), set once
/// before the first chain.
static STATE_BASE: OnceLock<PathBuf> = OnceLock::new();

pub fn set_state_base(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("--state-dir {}: {e}", dir.display()));
    STATE_BASE
        .set(dir.to_path_buf())
        .expect("the state base is set once");
}

#[derive(Clone, Copy, PartialEq)]
pub enum Which {
    /// rbridge with `ipMasq` (the rmasq library) + rhost-local.
    Ours,
    /// rbridge + rhost-local, then rmasq chained as a plugin of its own.
    OursChained,
    /// bridge with `ipMasq` + host-local.
    Upstream,
}

/// The conflist each side runs: bridge + IPAM + masquerade, same subnet, same options.
fn conflist(which: Which, state: &Path) -> Value {
    let ranges = json!([[{"subnet": "10.128.0.0/16"}]]);
    let mut list = match which {
        Which::Ours => json!({
            "cniVersion": "1.0.0", "name": "bench",
            "plugins": [{
                "type": "rbridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipMasq": true, "ipMasqStateDir": state.join("rmasq"),
                "ipam": {"type": "rhost-local", "ranges": ranges, "dataDir": state.join("ipam")}
            }]
        }),
        Which::OursChained => json!({
            "cniVersion": "1.0.0", "name": "bench",
            "plugins": [{
                "type": "rbridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipam": {"type": "rhost-local", "ranges": ranges, "dataDir": state.join("ipam")}
            }, {
                "type": "rmasq", "stateDir": state.join("rmasq")
            }]
        }),
        Which::Upstream => json!({
            "cniVersion": "1.0.0", "name": "bench",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": ranges, "dataDir": state.join("ipam")}
            }]
        }),
    };
    if let (Which::Ours | Which::OursChained, Some(log)) =
        (which, std::env::var_os("RCNI_BENCH_LOG"))
    {
        for plugin in list["plugins"].as_array_mut().unwrap() {
            plugin["logFile"] = json!(log.to_string_lossy());
            plugin["logLevel"] = json!("debug");
        }
    }
    list
}

/// A node namespace with a chain and a supply of pod namespaces.
pub struct Bench {
    _node: Netns,
    pub rt: Runtime,
    list: Value,
    _state: TempDir,
    next: usize,
}

pub struct Pod {
    ns: Netns,
    id: String,
    result: Value,
}

impl Pod {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Bench {
    pub fn new(which: Which) -> Bench {
        let state = match STATE_BASE.get() {
            Some(base) => cni_testkit::temp_dir_in(base, "bench"),
            None => cni_testkit::temp_dir("bench"),
        };
        let node = Netns::new("bnode");
        let rt = Runtime::new(&node.path(), cni_testkit::cni_path_with_upstream());
        let list = conflist(which, state.path());
        Bench {
            _node: node,
            rt,
            list,
            _state: state,
            next: 0,
        }
    }

    /// The conflist the chain runs.
    pub fn conflist(&self) -> &Value {
        &self.list
    }

    /// The node namespace the plugins run in.
    pub fn node_path(&self) -> std::path::PathBuf {
        self._node.path()
    }

    pub fn pods(&mut self, n: usize) -> Vec<(Netns, String)> {
        (0..n)
            .map(|_| {
                self.next += 1;
                (Netns::new("bpod"), format!("bench-{}", self.next))
            })
            .collect()
    }

    pub fn add(&self, ns: Netns, id: String) -> (Pod, Duration, Vec<Exec>) {
        let started = Instant::now();
        let (result, execs) = self
            .rt
            .add(
                &self.list,
                &Attachment {
                    id: &id,
                    netns: &ns.path().display().to_string(),
                    ifname: "eth0",
                },
            )
            .unwrap_or_else(|e| panic!("ADD: {e}"));
        (Pod { ns, id, result }, started.elapsed(), execs)
    }

    pub fn del(&self, pod: &Pod) -> (Duration, Vec<Exec>) {
        let started = Instant::now();
        let execs = self
            .rt
            .del(
                &self.list,
                &Attachment {
                    id: &pod.id,
                    netns: &pod.ns.path().display().to_string(),
                    ifname: "eth0",
                },
                Some(&pod.result),
            )
            .unwrap_or_else(|e| panic!("DEL: {e}"));
        (started.elapsed(), execs)
    }
}
