//! Helpers for the tests that run rhost-local and upstream host-local as a runtime would. IPAM
//! needs no namespace: every call gets a temporary dataDir, never /var/lib/cni.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cni_testkit::{plugin_bin, run_plugin, upstream_bin, Invocation, PluginRun};
use serde_json::{json, Value};

pub const NET: &str = "testnet";

pub fn ours() -> PathBuf {
    plugin_bin("rhost-local")
}

pub fn upstream() -> PathBuf {
    upstream_bin("host-local")
}

/// The newest version upstream host-local (1.1.x) speaks.
pub fn upstream_version(v: &str) -> &str {
    if v == "1.1.0" {
        "1.0.0"
    } else {
        v
    }
}

/// A network config with `ipam` keys merged over a dataDir in `data`.
pub fn conf(data: &Path, version: &str, ipam: Value) -> Value {
    let mut base = json!({"type": "host-local", "dataDir": data});
    for (k, v) in ipam.as_object().unwrap() {
        base[k] = v.clone();
    }
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

/// The addresses of an ADD result in any version.
pub fn addresses(result: &Value) -> Vec<String> {
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        return ips
            .iter()
            .map(|i| {
                i["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result.get(*k))
        .map(|b| {
            b["ip"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

pub fn net_dir(data: &Path) -> PathBuf {
    data.join(NET)
}

/// Reservation files: address -> content.
pub fn reservations(data: &Path) -> BTreeMap<IpAddr, String> {
    let Ok(dir) = fs::read_dir(net_dir(data)) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
            Some((ip, fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// Every file below `root` with its content (directories as "<dir>/").
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                stack.push(e.path());
            } else {
                out.insert(rel, fs::read(e.path()).unwrap_or_default());
            }
        }
    }
    out
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

/// xorshift64*, seeded from the clock unless RHOST_LOCAL_TEST_SEED is set; prints the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(test: &str) -> Rng {
        let seed = std::env::var("RHOST_LOCAL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: RHOST_LOCAL_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
