//! `rcni status` on a node (a namespace of the test's own) with pods of our chain, after leaks
//! made the ways nodes make them: a pod's netns deleted without DEL, an allocation lost, a cache
//! entry of a network since removed. The JSON must show every attachment and exactly those
//! anomalies.

use std::path::PathBuf;
use std::process::Output;

use cni_testkit::{container_id, eventually, temp_dir, Chain, Netns, TempDir};
use rcni_gc::fake_cri::FakeCri;
use serde_json::{json, Value};

const SUBNET: &str = "10.77.0.0/24";
const GATEWAY: &str = "10.77.0.1";

/// A node namespace, its conf dir, and the dirs where the chain keeps state.
struct Node {
    ns: Netns,
    dir: TempDir,
}

impl Node {
    fn new() -> Node {
        cni_testkit::require_root();
        let node = Node {
            ns: Netns::new("node"),
            dir: temp_dir("rcni-status"),
        };
        std::fs::create_dir_all(node.conf_dir()).unwrap();
        std::fs::create_dir_all(node.cache_dir().join("results")).unwrap();
        std::fs::write(
            node.conf_dir().join("10-pods.conflist"),
            node.conflist().to_string(),
        )
        .unwrap();
        node
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    fn masq_dir(&self) -> PathBuf {
        self.dir.join("masq")
    }

    /// rbridge with rhost-local, rmasq (nftables), rroutes with a route to another node.
    fn conflist(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [
                {"type": "rbridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                 "ipam": {"type": "rhost-local", "dataDir": self.data_dir(), "ranges": [[{"subnet": SUBNET}]]}},
                {"type": "rmasq", "backend": "nftables", "stateDir": self.masq_dir(),
                 "nonMasqueradeCIDRs": ["10.77.0.0/16"]},
                {"type": "rroutes", "hostRoutes": [{"dst": "10.77.1.0/24", "gw": "10.77.0.254"}]}
            ]
        })
    }

    /// ADD of a new pod through the chain, and its cache entry as libcni 1.1 writes it (the
    /// netns only in the result's interfaces).
    fn add_pod(&self) -> Pod {
        self.add_pod_to(&self.conflist(), false)
    }

    /// ADD of a new pod through `list`, and its cache entry as libcni writes it: the netns
    /// only in the result's interfaces (libcni 1.1), or also in the entry (`netns_key`, 1.2+).
    fn add_pod_to(&self, list: &Value, netns_key: bool) -> Pod {
        let ns = Netns::new("pod");
        let cid = container_id();
        let result = Chain::new(&self.ns, list, &cid, &ns, "eth0").add();
        let network = list["name"].as_str().unwrap();
        let mut entry = json!({
            "kind": "cniCacheV1", "containerId": cid, "config": "", "ifName": "eth0",
            "networkName": network, "result": result,
        });
        if netns_key {
            entry["netns"] = json!(ns.path());
        }
        self.write_cache(network, &cid, &entry);
        let ip = cni_testkit::json::addresses(&result)[0].clone();
        Pod {
            ns: Some(ns),
            cid,
            ip,
            result,
        }
    }

    fn write_cache(&self, network: &str, cid: &str, entry: &Value) {
        let path = self
            .cache_dir()
            .join("results")
            .join(format!("{network}-{cid}-eth0"));
        std::fs::write(path, entry.to_string()).unwrap();
    }

    fn status(&self, extra: &[&str]) -> Value {
        let out: Output = self
            .ns
            .command(env!("CARGO_BIN_EXE_rcni"))
            .arg("status")
            .arg("--json")
            .arg("--conf-dir")
            .arg(self.conf_dir())
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rcni status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn text_status(&self) -> String {
        let out = self
            .ns
            .command(env!("CARGO_BIN_EXE_rcni"))
            .args(["status", "--conf-dir"])
            .arg(self.conf_dir())
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

struct Pod {
    ns: Option<Netns>,
    cid: String,
    ip: String,
    result: Value,
}

impl Pod {
    fn netns(&self) -> String {
        format!("/run/netns/{}", self.ns.as_ref().unwrap().name())
    }

    fn veth(&self) -> String {
        rbridge_veth(&self.cid)
    }
}

/// rbridge's host veth name for (cid, eth0), as the plugin derives it.
fn rbridge_veth(cid: &str) -> String {
    rbridge::host_veth(cid, "eth0")
}

fn attachment(pod: &Pod, netns: &str, alive: bool, allocated: bool, routes: Value) -> Value {
    json!({
        "containerID": pod.cid,
        "ifname": "eth0",
        "addresses": if allocated { json!([format!("{}/24", pod.ip)]) } else { json!([]) },
        "allocated": allocated,
        "hostVeth": pod.veth(),
        "hostVethPresent": alive,
        "netns": netns,
        "netnsAlive": alive,
        "masquerade": [pod.ip],
        "routes": routes,
        "cached": true,
    })
}

fn anomaly(kind: &str, network: &str, cid: &str, veth: Option<String>, detail: &str) -> Value {
    json!({
        "kind": kind, "network": network, "containerID": cid, "ifname": "eth0",
        "hostVeth": veth, "detail": detail,
    })
}

#[test]
fn attachments_and_leaks() {
    let node = Node::new();
    let live = node.add_pod();
    let mut gone = node.add_pod();
    let lost = node.add_pod();
    let live_ns = live.netns();
    let gone_ns = gone.netns();
    let lost_ns = lost.netns();

    let before = node.status(&[]);
    assert_eq!(before["anomalies"], json!([]), "{before:#}");
    assert_eq!(
        before["networks"][0]["attachments"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A sandbox deleted without DEL: its netns (and so its veth) go, the rest stays.
    drop(gone.ns.take());
    assert!(
        eventually(|| node.ns.link(&gone.veth()).is_none()),
        "the veth of a deleted netns stays"
    );
    // An allocation lost (a store restored from an old backup, say).
    std::fs::remove_file(node.data_dir().join("pods").join(&lost.ip)).unwrap();
    // The cache entry of a network no longer in the conf dir.
    let old = container_id();
    node.write_cache(
        "old",
        &old,
        &json!({"kind": "cniCacheV1", "containerId": old, "ifName": "eth0", "networkName": "old"}),
    );

    let s = node.status(&[]);
    let net = &s["networks"][0];
    assert_eq!(net["name"], "pods");
    assert_eq!(net["plugins"], json!(["rbridge", "rmasq", "rroutes"]));
    assert_eq!(net["bridge"], "cni0");
    assert_eq!(
        net["ipam"],
        json!({"type": "rhost-local", "dataDir": node.data_dir()})
    );
    assert_eq!(
        net["ranges"],
        json!([{"rangeSet": 0, "subnet": SUBNET, "start": "10.77.0.1", "end": "10.77.0.254",
                "capacity": 253, "used": 2, "free": 251}])
    );
    assert_eq!(
        net["hostRoutes"],
        json!([{"dst": "10.77.1.0/24", "gw": "10.77.0.254", "installed": true}])
    );
    let pod_routes = json!(["10.77.0.0/24", format!("default via {GATEWAY}")]);
    let cached_routes = json!([format!("default via {GATEWAY}")]);
    let mut want = vec![
        attachment(&live, &live_ns, true, true, pod_routes.clone()),
        attachment(&gone, &gone_ns, false, true, cached_routes),
        attachment(&lost, &lost_ns, true, false, pod_routes),
    ];
    want.sort_by_key(|a| a["containerID"].as_str().unwrap().to_string());
    assert_eq!(net["attachments"], json!(want), "{s:#}");

    let results = node.cache_dir().join("results");
    let want = Value::Array(vec![
        anomaly(
            "stale-allocation",
            "pods",
            &gone.cid,
            Some(gone.veth()),
            &format!("holds {}/24 but its netns {gone_ns} is gone", gone.ip),
        ),
        anomaly(
            "orphan-veth",
            "pods",
            &lost.cid,
            Some(lost.veth()),
            &format!(
                "{} is a port of bridge cni0 but belongs to no attachment holding an address",
                lost.veth()
            ),
        ),
        anomaly(
            "stale-masquerade",
            "pods",
            &lost.cid,
            Some(lost.veth()),
            &format!(
                "{} masqueraded for an attachment that holds no address",
                lost.ip
            ),
        ),
        anomaly(
            "stale-cache-entry",
            "old",
            &old,
            None,
            &format!(
                "{}: network \"old\" is not in the conf dir",
                results.join(format!("old-{old}-eth0")).display()
            ),
        ),
        anomaly(
            "stale-cache-entry",
            "pods",
            &gone.cid,
            Some(gone.veth()),
            &format!("cached result kept, but its netns {gone_ns} is gone"),
        ),
        anomaly(
            "stale-cache-entry",
            "pods",
            &lost.cid,
            Some(lost.veth()),
            "cached result kept, but the attachment holds no address",
        ),
    ]);
    assert_eq!(s["anomalies"], want, "{s:#}");

    // The runtime knows two of the pods (a sandbox whose netns went is still a sandbox).
    let cri = FakeCri::start(&node.dir.join("cri.sock"));
    cri.set_sandboxes(&[&live.cid, &gone.cid]);
    let with_cri = node.status(&["--cri-endpoint", &cri.endpoint()]);
    assert_eq!(with_cri["runtimeSandboxes"], 2);
    let known: Vec<(&str, &Value)> = with_cri["networks"][0]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["containerID"].as_str().unwrap(), &a["knownToRuntime"]))
        .collect();
    assert_eq!(
        known,
        [
            (live.cid.as_str(), &json!(true)),
            (gone.cid.as_str(), &json!(true)),
            (lost.cid.as_str(), &json!(false)),
        ]
    );
    let mut want = want.as_array().unwrap().clone();
    want.push(anomaly(
        "unknown-to-runtime",
        "pods",
        &lost.cid,
        Some(lost.veth()),
        "the runtime lists no sandbox with this container ID",
    ));
    assert_eq!(with_cri["anomalies"], json!(want), "{with_cri:#}");
    // A runtime that does not answer is an error, not a report without it.
    let out = node
        .ns
        .command(env!("CARGO_BIN_EXE_rcni"))
        .args([
            "status",
            "--cri-endpoint",
            "/nonexistent/cri.sock",
            "--conf-dir",
        ])
        .arg(node.conf_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CRI ListPodSandbox at /nonexistent/cri.sock"),
        "{err}"
    );

    // The operator's view says the same.
    let text = node.text_status();
    assert!(
        text.contains("range set 0: 10.77.0.0/24 (10.77.0.1-10.77.0.254): 2 used, 251 free"),
        "{text}"
    );
    assert!(text.contains(&format!("{gone_ns} (gone)")), "{text}");
    assert!(text.contains("anomalies (6):"), "{text}");
    assert!(text.contains("stale-allocation"), "{text}");
    drop(lost);
    drop(live);
}

/// Upstream bridge with upstream host-local: veth names are random, so they come from the
/// cache; a veth on the bridge that nobody's result names is an orphan.
#[test]
fn upstream_bridge_and_a_stray_veth() {
    let node = Node::new();
    let up = json!({
        "cniVersion": "1.0.0",
        "name": "up",
        "plugins": [{"type": "bridge", "bridge": "br-up", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": node.data_dir(), "ranges": [[{"subnet": "10.78.0.0/24"}]]}}]
    });
    std::fs::write(node.conf_dir().join("20-up.conflist"), up.to_string()).unwrap();
    let mut pod = node.add_pod_to(&up, true);
    let netns = pod.netns();
    let veth = pod.result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] != "br-up" && i.get("sandbox").is_none_or(|s| s == ""))
        .map(|i| i["name"].as_str().unwrap().to_string())
        .unwrap();
    node.ns.sh(
        "ip link add vstray type veth peer name vstray-p && ip link set vstray master br-up up",
    );

    let s = node.status(&[]);
    assert_eq!(s["networks"][0]["attachments"], json!([]), "{s:#}");
    let net = &s["networks"][1];
    assert_eq!(net["name"], "up");
    assert_eq!(net["ipam"]["type"], "host-local");
    assert_eq!(
        net["attachments"],
        json!([{
            "containerID": pod.cid, "ifname": "eth0", "addresses": [format!("{}/24", pod.ip)],
            "allocated": true, "hostVeth": veth, "hostVethPresent": true, "netns": netns,
            "netnsAlive": true, "masquerade": [], "routes": ["10.78.0.0/24"], "cached": true,
        }]),
        "{s:#}"
    );
    let stray = json!({
        "kind": "orphan-veth", "network": "up", "containerID": null, "ifname": null,
        "hostVeth": "vstray",
        "detail": "vstray is a port of bridge br-up but belongs to no attachment holding an address",
    });
    assert_eq!(s["anomalies"], json!([stray]), "{s:#}");

    // Its sandbox deleted without DEL: the netns is known from the cache entry itself.
    drop(pod.ns.take());
    assert!(
        eventually(|| node.ns.link(&veth).is_none()),
        "the veth of a deleted netns stays"
    );
    let s = node.status(&[]);
    let a = &s["networks"][1]["attachments"][0];
    assert_eq!(
        (&a["netnsAlive"], &a["hostVethPresent"]),
        (&json!(false), &json!(false)),
        "{s:#}"
    );
    let kinds: Vec<(&str, &str)> = s["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["kind"].as_str().unwrap(), a["hostVeth"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("stale-allocation", veth.as_str()),
            ("orphan-veth", "vstray"),
            ("stale-cache-entry", veth.as_str()),
        ],
        "{s:#}"
    );
}
