//! The node agent's garbage collection, against a fake CRI server: pods attached through the
//! conflist the agent installed; the one the runtime no longer lists is reclaimed by the
//! periodic GC (address, veth, masquerade, cache entry) and counted in /metrics, the listed one
//! is untouched; after a reboot (another boot id) the first GC runs at once.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cni_testkit::{container_id, plugin_bin, require_root, upstream_dir, Chain, Netns};
use common::daemon::*;
use common::*;
use rcni_gc::fake_cri::FakeCri;
use serde_json::{json, Value};

struct Pod {
    _netns: Netns,
    id: String,
    result: Value,
}

/// A node whose agent has the real plugins to install, its plugin state and libcni's cache in
/// the test's dirs, and a fake CRI.
struct World {
    node: Node,
    _lan: Netns,
    api: cni_testkit::FakeApi,
    cri: FakeCri,
}

impl World {
    fn new() -> World {
        let node = Node::new();
        let lan = lan(&node);
        for p in ["rbridge", "rhost-local", "rmasq"] {
            fs::copy(plugin_bin(p), node.src.join(p)).unwrap();
        }
        let api = api(&node);
        api.put_nodes(vec![worker(1), worker(2)]);
        let cri = FakeCri::start(&node.aux.join("cri.sock"));
        World {
            node,
            _lan: lan,
            api,
            cri,
        }
    }

    fn plugin_state(&self) -> PathBuf {
        self.node.aux.join("cni")
    }

    fn cache(&self) -> PathBuf {
        self.node.aux.join("cni-cache")
    }

    fn start(&self, extra: &[&str]) -> Daemon<'_> {
        let upstream = upstream_dir();
        let mut args = vec![
            "--upstream-dir",
            upstream.to_str().unwrap(),
            "--plugin-state-dir",
            self.plugin_state().to_str().unwrap(),
            "--cni-cache-dir",
            self.cache().to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.push("--cri-endpoint".into());
        args.push(self.cri.endpoint());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start(&self.node, &self.api, &refs)
    }

    /// A pod through the installed conflist, with libcni's cache entry.
    fn add(&self) -> Pod {
        let list: Value =
            serde_json::from_str(&fs::read_to_string(self.node.conflist()).unwrap()).unwrap();
        let netns = Netns::new("pod");
        let id = container_id();
        let result = Chain::new(&self.node.ns, &list, &id, &netns, "eth0")
            .cni_path(self.node.bin.display().to_string())
            .add();
        let entry = json!({"kind": "cniCacheV1", "containerId": id, "ifName": "eth0",
            "networkName": list["name"], "netns": netns.path(), "result": result});
        let file = self.cache_file(&id);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, entry.to_string()).unwrap();
        Pod {
            _netns: netns,
            id,
            result,
        }
    }

    fn cache_file(&self, id: &str) -> PathBuf {
        self.cache().join(format!("results/rcni-{id}-eth0"))
    }

    /// The pod's reservations, masquerade record and cache entry; whether its veth exists.
    fn holds(&self, pod: &Pod) -> (Vec<PathBuf>, bool) {
        let mut files: Vec<PathBuf> = fs::read_dir(self.plugin_state().join("networks/rcni"))
            .unwrap()
            .flatten()
            .filter(|e| {
                fs::read_to_string(e.path())
                    .is_ok_and(|s| s.split("\r\n").next() == Some(pod.id.as_str()))
            })
            .map(|e| e.path())
            .collect();
        let record = self
            .plugin_state()
            .join(format!("rmasq/attachments/rcni/{}:eth0", pod.id));
        files.extend(
            [record, self.cache_file(&pod.id)]
                .into_iter()
                .filter(|p| p.exists()),
        );
        let veth = pod.result["interfaces"][1]["name"].as_str().unwrap();
        (files, self.node.ns.link(veth).is_some())
    }
}

/// Every file of the pod set to an hour ago: leaked long before the grace period.
fn backdate(files: &[PathBuf]) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    for f in files {
        fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

fn reclaimed(d: &Daemon, kind: &str) -> f64 {
    d.metrics()
        .value("rcni_gc_reclaimed_total", &[("kind", kind)])
}

#[test]
fn periodic_gc_reclaims_what_the_runtime_forgot() {
    require_root();
    let w = World::new();
    let d = w.start(&["--gc-interval", "1s", "--gc-grace", "30s"]);
    d.wait_ready(20);
    let live = w.add();
    let leaked = w.add();
    w.cri.set_sandboxes(&[&live.id, "host-network-pod"]);
    let (files, veth) = w.holds(&leaked);
    assert_eq!(files.len(), 3, "address, masquerade, cache: {files:?}");
    assert!(veth);
    backdate(&files);

    assert!(
        wait_for(20, || w.holds(&leaked) == (vec![], false)),
        "not reclaimed: {:?}\n{}",
        w.holds(&leaked),
        d.log()
    );
    assert!(
        wait_for(10, || reclaimed(&d, "attachment") == 1.0),
        "{}",
        d.log()
    );
    assert_eq!(reclaimed(&d, "address"), 1.0);
    assert_eq!(reclaimed(&d, "veth"), 1.0);
    assert_eq!(reclaimed(&d, "masquerade_member"), 1.0);
    assert_eq!(reclaimed(&d, "cache_entry"), 1.0);
    assert!(d.metrics().value("rcni_gc_runs_total", &[]) >= 1.0);
    let log = d.log();
    assert!(
        log.contains("reclaimed")
            && log.contains(&leaked.id)
            && log.contains("not known to the runtime"),
        "{log}"
    );
    let (files, veth) = w.holds(&live);
    assert_eq!(files.len(), 3, "the live pod lost state: {files:?}");
    assert!(veth);

    // The runtime down: nothing is reclaimed, the failure is counted, the agent stays up.
    w.cri.set_failing(true);
    let errors = |d: &Daemon| d.metrics().value("rcni_errors_total", &[("op", "gc")]);
    assert!(wait_for(10, || errors(&d) >= 1.0), "{}", d.log());
    assert_eq!(w.holds(&live).0.len(), 3);
    d.assert_running();
}

#[test]
fn after_a_reboot_the_first_gc_runs_at_once() {
    require_root();
    let w = World::new();
    // The agent last ran in another boot.
    fs::create_dir_all(&w.node.state).unwrap();
    fs::write(w.node.state.join("gc-boot-id"), "another-boot\n").unwrap();
    w.cri.set_sandboxes(&["host-network-pod"]);
    let d = w.start(&["--gc-interval", "1h"]);
    d.wait_ready(20);
    assert!(
        wait_for(20, || d.metrics().value("rcni_gc_runs_total", &[]) == 1.0),
        "{}",
        d.log()
    );
    assert_eq!(w.cri.calls(), 1);
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(
        fs::read_to_string(w.node.state.join("gc-boot-id")).unwrap(),
        boot
    );
    assert!(d.log().contains("since the node booted"), "{}", d.log());
    assert!(d.stop().success());
    // Uninstalled, the agent leaves no boot id behind.
    let d = w.start(&["--uninstall"]);
    d.wait_ready(20);
    assert!(!Path::new(&w.node.state).join("gc-boot-id").exists());
}
