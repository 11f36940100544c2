//! Helpers for the tests that run rhost-local and upstream host-local as a runtime would. IPAM
//! needs no namespace: every call gets a temporary dataDir, never /var/lib/cni.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cni_testkit::json::merge;
use cni_testkit::{plugin_bin, run_plugin, upstream_bin, Invocation, PluginRun};
use serde_json::{json, Value};

pub const NET: &str = "testnet";

pub fn ours() -> PathBuf {
    plugin_bin("rhost-local")
}

pub fn upstream() -> PathBuf {
    upstream_bin("host-local")
}

/// A network config with `ipam` keys merged over a dataDir in `data`.
pub fn conf(data: &Path, version: &str, ipam: Value) -> Value {
    let mut base = json!({"type": "host-local", "dataDir": data});
    merge(&mut base, ipam);
    json!({"cniVersion": version, "name": NET, "type": "bridge", "ipam": base})
}

pub fn v4_24(data: &Path, version: &str) -> Value {
    conf(
        data,
        version,
        json!({"ranges": [[{"subnet": "10.77.0.0/24"}]]}),
    )
}

pub fn call(bin: &Path, cmd: &str, id: &str, ifname: &str, stdin: &Value) -> PluginRun {
    call_args(bin, cmd, id, ifname, "", stdin)
}

pub fn call_args(
    bin: &Path,
    cmd: &str,
    id: &str,
    ifname: &str,
    args: &str,
    stdin: &Value,
) -> PluginRun {
    let netns = if cmd == "ADD" || cmd == "CHECK" {
        Some("/var/run/netns/unused")
    } else {
        None
    };
    let inv = Invocation::new(cmd, id, netns, ifname)
        .with_args(args)
        .with_path("/nonexistent");
    run_plugin(None, bin, &inv, &stdin.to_string())
}

pub fn net_dir(data: &Path) -> PathBuf {
    data.join(NET)
}

/// Reservation files of network [`NET`]: address -> content.
pub fn reservations(data: &Path) -> BTreeMap<IpAddr, String> {
    cni_testkit::reservations(&net_dir(data))
}

/// Temp files of ours left in the store.
pub fn temp_files(data: &Path) -> usize {
    fs::read_dir(net_dir(data).join(".rhost-local/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// GC through rhost-local (1.1.0) keeping `valid` (container ID, ifname) pairs.
pub fn gc(data: &Path, ipam: &Value, valid: &[(String, String)]) -> PluginRun {
    let mut c = ipam.clone();
    c["cniVersion"] = json!("1.1.0");
    c["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
        .collect();
    let _ = data;
    let inv = Invocation::new("GC", "", None, "").with_path("/nonexistent");
    run_plugin(None, &ours(), &inv, &c.to_string())
}

/// Starts rhost-local without waiting, for kill tests.
pub fn spawn(cmd: &str, id: &str, stdin: &Value, env: &[(&str, String)]) -> Child {
    let mut c = Command::new(ours());
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if cmd == "ADD" {
        c.env("CNI_NETNS", "/var/run/netns/unused");
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawning rhost-local");
    // The plugin reads stdin before anything else; a kill before that gives EPIPE here.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes());
    child
}
