//! Every shipped conflist through the real libcni (ADD, CHECK, cached result, DEL, DEL again) in
//! cniVersion 0.3.1, 0.4.0 and 1.0.0, inside a node namespace, with pods in namespaces of their
//! own. After DEL nothing may be left: no link, no address, no allocation.

use std::path::Path;

use cni_testkit::json::cidrs;
use cni_testkit::{allocations, temp_dir, Netns, TempDir, UPSTREAM_VERSIONS};
use rcni_integration::{shipped_conflist, Libcni};
use serde_json::{json, Value};

/// The shipped conflist at `version`, with every piece of on-disk state moved under `state`.
fn patched(mut list: Value, version: &str, state: &Path) -> Value {
    list["cniVersion"] = json!(version);
    list.as_object_mut().unwrap().remove("cniVersions");
    for plugin in list["plugins"].as_array_mut().unwrap() {
        let ty = plugin["type"].as_str().unwrap().to_string();
        if let Some(ipam) = plugin.get_mut("ipam") {
            ipam["dataDir"] = json!(state.join("networks"));
        }
        if ty.starts_with('r') {
            plugin["logFile"] = json!(state.join("rcni.log"));
        }
        if ty == "rmasq" {
            plugin["stateDir"] = json!(state.join("rmasq"));
        }
        if ty == "rbridge" && plugin.get("ipMasq").is_some() {
            plugin["ipMasqStateDir"] = json!(state.join("rmasq"));
        }
    }
    list
}

fn exercise(conflist: &str, check_connectivity: bool) {
    exercise_list(conflist, shipped_conflist(conflist), check_connectivity)
}

fn exercise_list(conflist: &str, original: Value, check_connectivity: bool) {
    cni_testkit::require_root();
    for version in UPSTREAM_VERSIONS {
        let state: TempDir = temp_dir("e2e-libcni");
        let list = patched(original.clone(), version, state.path());
        let network = list["name"].as_str().unwrap().to_string();
        let file = state.path().join(conflist);
        std::fs::write(&file, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        let node = Netns::new("node");
        let pods = [Netns::new("pod"), Netns::new("pod")];
        let cni = Libcni {
            node: &node,
            conflist: file.clone(),
            cache: state.path().join("cache"),
            path: cni_testkit::cni_path_with_upstream(),
        };
        let bandwidth = r#""bandwidth":{"ingressRate":100000000,"ingressBurst":100000000,"egressRate":100000000,"egressBurst":100000000}"#;
        let caps = format!(
            r#"{{"portMappings":[{{"hostPort":18080,"containerPort":80,"protocol":"tcp"}}],{bandwidth}}}"#
        );
        // Upstream portmap 1.1.1 fails CHECK with mappings on an IPv4-only network and upstream
        // bandwidth's CHECK crashes without its runtimeConfig (both upstream bugs): CHECK gets
        // the bandwidth limits only.
        let check_caps = format!("{{{bandwidth}}}");
        let mut results = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let id = format!("ctr-{version}-{i}");
            let res = cni
                .call("add", &id, Some(pod), "eth0", &["-cap", &caps])
                .expect_ok(&format!("{conflist} {version} ADD"));
            assert_eq!(res["cniVersion"], version, "{res}");
            let addrs = cidrs(&res);
            assert!(
                !addrs.is_empty(),
                "{conflist} {version}: no address in {res}"
            );
            let inside = pod.addrs("eth0");
            for a in &addrs {
                assert!(
                    inside.contains(a),
                    "{conflist} {version}: {a} not on eth0 ({inside:?})"
                );
            }
            let eth0 = res["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "eth0")
                .expect("eth0 in result");
            assert_eq!(eth0["sandbox"], pod.path().display().to_string());
            if version != "0.3.1" {
                cni.call("check", &id, Some(pod), "eth0", &["-cap", &check_caps])
                    .expect_ok(&format!("{conflist} {version} CHECK"));
            }
            let cached = cni
                .call("cached", &id, Some(pod), "eth0", &[])
                .expect_ok("cached result");
            assert_eq!(cached, res, "{conflist} {version}: cached result differs");
            results.push((id, res));
        }
        // One allocation file per address (two per pod on a dual-stack network).
        let addresses: usize = results.iter().map(|(_, r)| cidrs(r).len()).sum();
        assert_eq!(
            allocations(&state.join("networks").join(&network)).len(),
            addresses
        );
        if check_connectivity {
            // pod -> gateway and pod -> pod on the bridge.
            let gw = results[0].1["ips"][0]["gateway"]
                .as_str()
                .unwrap()
                .to_string();
            pods[0].sh(&format!("ping -c1 -W2 {gw}"));
            let other = cidrs(&results[1].1)[0]
                .split('/')
                .next()
                .unwrap()
                .to_string();
            pods[0].sh(&format!("ping -c1 -W2 {other}"));
        }
        for (i, pod) in pods.iter().enumerate() {
            let id = &results[i].0;
            cni.call("del", id, Some(pod), "eth0", &["-cap", &caps])
                .expect_ok(&format!("{conflist} {version} DEL"));
            cni.call("del", id, Some(pod), "eth0", &["-cap", &caps])
                .expect_ok(&format!("{conflist} {version} second DEL"));
            assert!(
                pod.link("eth0").is_none(),
                "{conflist} {version}: eth0 left in pod"
            );
        }
        assert_eq!(
            node.veths(),
            Vec::<String>::new(),
            "{conflist} {version}: veths left"
        );
        assert_eq!(
            allocations(&state.join("networks").join(&network)),
            Vec::<String>::new(),
            "{conflist} {version}: allocations left"
        );
    }
}

#[test]
fn rcni_chain() {
    exercise("10-rcni.conflist", true);
}

#[test]
fn rcni_with_upstream_portmap_tuning_bandwidth() {
    exercise("20-rcni-portmap-tuning-bandwidth.conflist", true);
}

#[test]
fn upstream_bridge_with_rcni() {
    exercise("30-bridge-rcni.conflist", true);
}

#[test]
fn rbridge_with_upstream_host_local() {
    exercise("40-rbridge-host-local.conflist", true);
}

/// The harness itself, on upstream plugins only: if this fails, the fault is in the test.
#[test]
fn control_upstream_only() {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "upstream",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    exercise_list("control.conflist", list, true);
}
