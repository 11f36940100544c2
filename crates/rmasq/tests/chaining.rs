//! rmasq in conflists with upstream plugins: after bridge (host-local IPAM), and before or after
//! portmap. A small driver calls the plugins in order and threads prevResult as libcni does.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use cni_testkit::{
    cni_path_with_upstream, plugin_bin, run_plugin, temp_dir, upstream_bin, Invocation, Netns,
};
use cni_types::NetConfList;
use common::*;
use serde_json::{json, Value};

fn binary(ty: &str) -> PathBuf {
    if ty.starts_with('r') {
        plugin_bin(ty)
    } else {
        upstream_bin(ty)
    }
}

/// libcni's way through a conflist: ADD in order, each plugin getting the previous result;
/// CHECK in order and DEL in reverse, each with the final ADD result. `runtime` is offered to
/// plugins as `runtimeConfig`, restricted to the capabilities each declares.
struct Driver<'a> {
    node: &'a Netns,
    list: NetConfList,
    runtime: Value,
}

impl Driver<'_> {
    fn config(&self, i: usize, prev: Option<&Value>) -> Value {
        let mut conf = self.list.plugin_config(i).unwrap();
        if let Some(caps) = conf.get("capabilities").and_then(Value::as_object).cloned() {
            let rc: serde_json::Map<String, Value> = caps
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| Some((k.clone(), self.runtime.get(k)?.clone())))
                .collect();
            conf["runtimeConfig"] = Value::Object(rc);
        }
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    fn call(&self, verb: &str, i: usize, cid: &str, pod: &Netns, prev: Option<&Value>) -> Value {
        let conf = self.config(i, prev);
        let netns = pod.path().display().to_string();
        let inv =
            Invocation::new(verb, cid, Some(&netns), "eth0").with_path(cni_path_with_upstream());
        let ty = conf["type"].as_str().unwrap().to_string();
        let out = run_plugin(Some(self.node), &binary(&ty), &inv, &conf.to_string());
        if out.code != 0 {
            panic!(
                "{verb} {ty} failed: {}\nconfig: {conf}\nstderr: {}",
                out.stdout, out.stderr
            );
        }
        out.json.unwrap_or(Value::Null)
    }

    fn add(&self, cid: &str, pod: &Netns) -> Value {
        let mut prev: Option<Value> = None;
        for i in 0..self.list.plugins.len() {
            prev = Some(self.call("ADD", i, cid, pod, prev.as_ref()));
        }
        prev.unwrap()
    }

    /// Upstream portmap's CHECK fails on any dual-stack result (it looks for the IPv4 DNAT rule
    /// with ip6tables), so it is left out; every other plugin is checked.
    fn check(&self, cid: &str, pod: &Netns, result: &Value) {
        for i in 0..self.list.plugins.len() {
            if self.list.plugins[i]["type"] != "portmap" {
                self.call("CHECK", i, cid, pod, Some(result));
            }
        }
    }

    fn del(&self, cid: &str, pod: &Netns, result: &Value) {
        for i in (0..self.list.plugins.len()).rev() {
            self.call("DEL", i, cid, pod, Some(result));
        }
    }
}

fn chain_test(order: &[&str], backend: &str) {
    let w = World::new();
    let ipam_dir = temp_dir("rmasq-ipam");
    let pod = Netns::new("pod");
    let bridge = json!({
        "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
        "ipam": {
            "type": "host-local", "dataDir": ipam_dir.display().to_string(),
            "ranges": [[{"subnet": "10.88.0.0/24"}], [{"subnet": "fd88::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        }
    });
    let rmasq = json!({"type": "rmasq", "backend": backend,
        "stateDir": w.state.display().to_string()});
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let plugins: Vec<Value> = order
        .iter()
        .map(|p| match *p {
            "bridge" => bridge.clone(),
            "rmasq" => rmasq.clone(),
            "portmap" => portmap.clone(),
            other => panic!("unknown plugin {other}"),
        })
        .collect();
    let list = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": plugins});
    let d = Driver {
        node: &w.node,
        list: NetConfList::from_slice(list.to_string().as_bytes()).unwrap(),
        runtime: json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
    };
    let result = d.add("c1", &pod);
    let addrs: Vec<String> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(addrs.len(), 2, "{result}");
    pod.wait_link_up("eth0");
    // IPv6 routes via the bridge need its address; give the kernel a moment for DAD there.
    w.node.sh("for i in $(seq 50); do ip -6 addr show dev cni0 tentative | grep -q inet6 || break; sleep 0.1; done");
    d.check("c1", &pod, &result);

    let what = format!("{order:?} {backend}");
    assert_eq!(
        source_seen(&pod, &w.out, OUT4, 7200),
        Some(ip(NODE_OUT4)),
        "{what}\n{}",
        w.firewall()
    );
    assert_eq!(
        source_seen(&pod, &w.out, OUT6, 7201),
        Some(ip(NODE_OUT6)),
        "{what}"
    );
    assert_eq!(
        source_seen(&pod, &w.node, "10.88.0.1", 7202),
        Some(ip(&addrs[0])),
        "{what}"
    );
    if order.contains(&"portmap") {
        // The outside reaches the pod through the node's port 8080 and is seen as itself.
        let seen = source_seen_via(
            &w.out,
            &pod,
            SocketAddr::new(ip(&addrs[0]), 80),
            SocketAddr::new(ip(NODE_OUT4), 8080),
        );
        assert_eq!(
            seen,
            Some(ip(OUT4)),
            "{what}: port mapping\n{}",
            w.firewall()
        );
    }

    d.del("c1", &pod, &result);
    assert_eq!(source_seen(&pod, &w.out, OUT4, 7203), None, "{what}");
    let fw = w.firewall();
    assert!(
        !fw.contains("rmasq") && !fw.contains("RMASQ"),
        "{what}: rmasq rules left:\n{fw}"
    );
    assert_eq!(
        std::fs::read_dir(w.state.join("attachments/chain"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn after_upstream_bridge() {
    chain_test(&["bridge", "rmasq"], "nftables");
    chain_test(&["bridge", "rmasq"], "iptables");
}

#[test]
fn after_upstream_portmap() {
    chain_test(&["bridge", "portmap", "rmasq"], "nftables");
    chain_test(&["bridge", "portmap", "rmasq"], "iptables");
}

#[test]
fn before_upstream_portmap() {
    chain_test(&["bridge", "rmasq", "portmap"], "nftables");
    chain_test(&["bridge", "rmasq", "portmap"], "iptables");
}
