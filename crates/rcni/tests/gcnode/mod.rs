//! A node for the GC tests: a node network namespace with the shipped chain (rbridge +
//! rhost-local → rmasq → upstream portmap) in a conf dir of the test's own, pods attached as a
//! runtime attaches them (libcni's cache entry written after the chain's ADD, or not, as when
//! the runtime was killed during it), and what each attachment holds read back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use cni_testkit::json::addresses;
use cni_testkit::{cni_path_with_upstream, temp_dir, Chain, Netns, TempDir};
use serde_json::{json, Value};

pub const NETWORK: &str = "gcnet";

/// A pod: its namespace (None once deleted), container ID and ADD result.
pub struct Pod {
    pub netns: Option<Netns>,
    pub id: String,
    pub result: Value,
    pub netns_path: PathBuf,
}

impl Pod {
    pub fn ips(&self) -> Vec<String> {
        addresses(&self.result)
    }

    /// The host end of its veth, from the result (rbridge names it after the attachment).
    pub fn host_veth(&self) -> String {
        self.result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i.get("sandbox").is_none() && i["name"].as_str().unwrap().starts_with("veth"))
            .and_then(|i| i["name"].as_str())
            .expect("a host veth in the result")
            .to_string()
    }

    pub fn attachment(&self) -> Value {
        json!({"containerID": self.id, "ifname": "eth0"})
    }
}

/// What an attachment holds on the node.
#[derive(Debug, PartialEq, Eq)]
pub struct Holds {
    pub addresses: Vec<IpAddr>,
    pub veth: bool,
    pub masquerade: bool,
    pub cache_entry: bool,
}

impl Holds {
    pub fn nothing(&self) -> bool {
        self.addresses.is_empty() && !self.veth && !self.masquerade && !self.cache_entry
    }
}

pub struct Node {
    pub ns: Netns,
    pub dir: TempDir,
    pub list: Value,
}

impl Node {
    /// A node with the shipped chain, whose pods get 10.<n>.0.0/24 and fd00:<n>::/64.
    pub fn new(n: u8) -> Node {
        Node::with(n, "10-rcni.conflist")
    }

    /// A node with the shipped conflist `file`, its state in the test's dir and its own subnets.
    pub fn with(n: u8, file: &str) -> Node {
        cni_testkit::require_root();
        let dir = temp_dir("rcni-gc");
        let text = std::fs::read_to_string(repo().join("conflists").join(file)).unwrap();
        let mut list: Value = serde_json::from_str(&text).unwrap();
        list["name"] = json!(NETWORK);
        if list.get("cniVersions").is_some() {
            // What containerd 1.6's libcni (1.1.2) picks, and portmap's highest: 1.0.0.
            list["cniVersions"] = json!(["0.3.1", "0.4.0", "1.0.0"]);
        }
        for p in list["plugins"].as_array_mut().unwrap() {
            if let Some(ipam) = p.get_mut("ipam") {
                ipam["dataDir"] = json!(dir.join("networks"));
                ipam["ranges"] = json!([
                    [{"subnet": format!("10.{n}.0.0/24")}],
                    [{"subnet": format!("fd00:{n}::/64")}]
                ]);
            }
            match p["type"].as_str() {
                Some("rmasq") => {
                    p["stateDir"] = json!(dir.join("rmasq"));
                    p["nonMasqueradeCIDRs"] = json!([format!("10.{n}.0.0/16")]);
                }
                Some("rbridge") if p["ipMasq"] == true => {
                    p["ipMasqStateDir"] = json!(dir.join("rmasq"));
                }
                _ => {}
            }
        }
        let node = Node {
            ns: Netns::new("gcnode"),
            dir,
            list,
        };
        std::fs::create_dir_all(node.conf_dir()).unwrap();
        std::fs::write(
            node.conf_dir().join("10-gc.conflist"),
            serde_json::to_vec_pretty(&node.list).unwrap(),
        )
        .unwrap();
        node
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// libcni's cache dir, as the runtime would pass it.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cni-cache")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join("networks").join(NETWORK)
    }

    pub fn masq_dir(&self) -> PathBuf {
        self.dir.join("rmasq")
    }

    fn cache_file(&self, id: &str) -> PathBuf {
        self.cache_dir()
            .join("results")
            .join(format!("{NETWORK}-{id}-eth0"))
    }

    fn chain<'a>(&'a self, pod: &Netns, id: &str) -> Chain<'a> {
        Chain::new(&self.ns, &self.list, id, pod, "eth0").cni_path(cni_path_with_upstream())
    }

    /// A pod attached as a runtime does it: the chain's ADD, then libcni's cache entry.
    pub fn add(&self) -> Pod {
        let pod = self.add_uncached();
        self.cache(&pod);
        pod
    }

    /// A pod whose runtime was killed during the ADD: the plugins ran, nothing was cached.
    pub fn add_uncached(&self) -> Pod {
        let netns = Netns::new("gcpod");
        let id = cni_testkit::container_id();
        let result = self.chain(&netns, &id).add();
        Pod {
            netns_path: netns.path(),
            netns: Some(netns),
            id,
            result,
        }
    }

    /// libcni's cache entry for `pod`, as `cacheAdd` writes it.
    pub fn cache(&self, pod: &Pod) {
        self.cache_with_netns(pod, &pod.netns_path);
    }

    /// The cache entry, naming `netns` as the pod's (a path no longer valid, say).
    pub fn cache_with_netns(&self, pod: &Pod, netns: &Path) {
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": pod.id,
            "config": "e30=",
            "ifName": "eth0",
            "networkName": NETWORK,
            "netns": netns,
            "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAMESPACE", "default"]],
            "result": pod.result,
        });
        let path = self.cache_file(&pod.id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, entry.to_string()).unwrap();
    }

    /// The runtime's own DEL (at StopPodSandbox), with the cached result.
    pub fn runtime_del(&self, pod: &Pod) -> Result<(), String> {
        let gone = Netns::new("gcgone");
        let chain = Chain::new(&self.ns, &self.list, &pod.id, &gone, "eth0")
            .cni_path(cni_path_with_upstream());
        chain.try_del(&pod.result).map_err(|c| c.to_string())
    }

    /// What `id`'s attachment holds.
    pub fn holds(&self, pod: &Pod) -> Holds {
        let addresses = cni_testkit::reservations(&self.store())
            .into_iter()
            .filter(|(_, owner)| owner.split("\r\n").next() == Some(pod.id.as_str()))
            .map(|(ip, _)| ip)
            .collect();
        let record = self
            .masq_dir()
            .join("attachments")
            .join(NETWORK)
            .join(format!("{}:eth0", pod.id));
        Holds {
            addresses,
            veth: self.ns.link(&pod.host_veth()).is_some(),
            masquerade: record.exists(),
            cache_entry: self.cache_file(&pod.id).exists(),
        }
    }

    /// Sets the time of every file `pod`'s attachment has to an hour ago: as old as a pod
    /// leaked before the last reboot, older than any grace period.
    pub fn backdate(&self, pod: &Pod) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        let mut files: Vec<PathBuf> = cni_testkit::reservations(&self.store())
            .into_iter()
            .filter(|(_, owner)| owner.split("\r\n").next() == Some(pod.id.as_str()))
            .map(|(ip, _)| self.store().join(ip.to_string()))
            .collect();
        files.push(
            self.masq_dir()
                .join("attachments")
                .join(NETWORK)
                .join(format!("{}:eth0", pod.id)),
        );
        files.push(self.cache_file(&pod.id));
        for f in files {
            if let Ok(file) = std::fs::File::options().write(true).open(&f) {
                file.set_modified(old).unwrap();
            }
        }
    }

    /// `rcni gc ARGS` in the node's namespace with this node's dirs.
    pub fn rcni_gc(&self, args: &[&str]) -> Output {
        let bin = cni_testkit::bin_dir().join("rcni");
        assert!(
            bin.is_file(),
            "{} not built: cargo build --workspace --bins",
            bin.display()
        );
        self.ns
            .command(bin)
            .arg("gc")
            .arg("--conf-dir")
            .arg(self.conf_dir())
            .arg("--bin-dir")
            .arg(cni_path_with_upstream())
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(args)
            .output()
            .unwrap()
    }

    /// The engine in-process, in the node's namespace.
    pub fn collect(&self, listing: &rcni_gc::Listing, grace: Duration) -> rcni_gc::Report {
        let opts = rcni_gc::Options {
            conf_dir: self.conf_dir(),
            bin_dirs: std::env::split_paths(&cni_path_with_upstream()).collect(),
            cache_dir: self.cache_dir(),
            grace,
            ..rcni_gc::Options::default()
        };
        self.ns
            .within(|| rcni_gc::collect(&opts, listing))
            .unwrap_or_else(|e| panic!("collect: {e:#}"))
    }

    /// Everything GC may change: the state dirs' files, the node's veths and its firewall.
    pub fn state(&self) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<String>, String) {
        let mut files = BTreeMap::new();
        for d in [self.dir.join("networks"), self.masq_dir(), self.cache_dir()] {
            collect_files(&d, &mut files);
        }
        let mut veths = self.ns.veths();
        veths.sort();
        (files, veths, rules_only(&self.ns.firewall()))
    }
}

/// The firewall's rules without what traffic and time change (counters, save headers).
fn rules_only(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "packets" | "bytes" => {
                    words.next();
                }
                w if w.starts_with('[') && w.ends_with(']') => {}
                w => {
                    out.push_str(w);
                    out.push(' ');
                }
            }
        }
        out.push('\n');
    }
    out
}

fn collect_files(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `text` has `word` as a whole token (10.1.0.2 is not in 10.1.0.21).
pub fn has_token(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':'))
        .any(|t| t == word)
}

/// The valid-attachments file of `pods`.
pub fn valid_file(dir: &Path, pods: &[&Pod]) -> PathBuf {
    let list: Vec<Value> = pods.iter().map(|p| p.attachment()).collect();
    let path = dir.join("valid.json");
    std::fs::write(&path, Value::Array(list).to_string()).unwrap();
    path
}
