//! rroutes chained after upstream bridge (with host-local) and after upstream ptp, driven as
//! libcni drives a conflist: ADD in order passing prevResult, CHECK with the final result, DEL in
//! reverse. Every plugin's CHECK (upstream's included) must accept rroutes' result.
//!
//! Debian's upstream plugins speak up to 1.0.0, so 1.1.0 is chained after rbridge only.

mod common;

use cni_testkit::{temp_dir, Chain, Netns, UPSTREAM_VERSIONS, VERSIONS};
use common::{assert_result_is_kernel_but, kroutes};
use serde_json::{json, Value};

fn run_chain(first: Value, rroutes: Value, version: &str, gw4: &str, gw6: &str, implicit: &[&str]) {
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let peer = Netns::new("peer");
    node.veth_to(&peer, "n0", "n1", "192.168.60.1/24", "192.168.60.2/24");
    let list = json!({"cniVersion": version, "name": "pods", "plugins": [first, rroutes]});
    let chain = Chain::new(&node, &list, "chain-1", &pod, "eth0");
    let result = chain.add();
    assert_result_is_kernel_but(&result, &pod, "eth0", gw4, gw6, implicit);
    let k = kroutes(&pod, "eth0");
    assert!(
        k.iter()
            .any(|r| r.dst == "10.98.0.0/16" && r.gw.as_deref() == Some(gw4)),
        "{k:#?}"
    );
    assert!(
        k.iter()
            .any(|r| r.dst == "fd00:98::/64" && r.gw.as_deref() == Some(gw6)),
        "{k:#?}"
    );
    assert!(!k.iter().any(|r| r.dst == "10.99.0.0/16"), "{k:#?}");
    let host = node.routes(4);
    assert!(
        host.iter()
            .any(|r| r["dst"] == "10.244.1.0/24" && r["protocol"] == "114"),
        "{host:?}"
    );
    if version != "0.3.1" {
        if let Err(run) = chain.check(&result) {
            panic!("CHECK of the chain failed ({version}): {run}\nresult: {result}");
        }
    }
    chain.del(&result);
    assert!(pod.link("eth0").is_none());
    // hostRoutes serve every pod: a pod's DEL leaves them.
    assert!(node.routes(4).iter().any(|r| r["dst"] == "10.244.1.0/24"));
}

fn rroutes(gw4: &str, gw6: &str) -> Value {
    json!({
        "type": "rroutes",
        "delRoutes": [{"dst": "10.99.0.0/16"}],
        "addRoutes": [
            {"dst": "10.98.0.0/16", "gw": gw4},
            {"dst": "fd00:98::/64", "gw": gw6}
        ],
        "hostRoutes": [{"dst": "10.244.1.0/24", "gw": "192.168.60.2"}]
    })
}

fn ipam(data: &std::path::Path, v4: &str, v6: &str) -> Value {
    json!({
        "type": "host-local",
        "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "10.99.0.0/16"}],
        "dataDir": data.display().to_string()
    })
}

#[test]
fn after_upstream_bridge_and_host_local() {
    for v in UPSTREAM_VERSIONS {
        let data = temp_dir("rroutes-ipam");
        let bridge = json!({
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": ipam(&data, "10.88.0.0/24", "fd00:88::/64")
        });
        run_chain(
            bridge,
            rroutes("10.88.0.1", "fd00:88::1"),
            v,
            "10.88.0.1",
            "fd00:88::1",
            &[],
        );
    }
}

#[test]
fn after_upstream_ptp() {
    for v in UPSTREAM_VERSIONS {
        let data = temp_dir("rroutes-ipam");
        let ptp = json!({
            "type": "ptp",
            "ipMasq": false,
            "ipam": ipam(&data, "10.89.0.0/24", "fd00:89::/64")
        });
        run_chain(
            ptp,
            rroutes("10.89.0.1", "fd00:89::1"),
            v,
            "10.89.0.1",
            "fd00:89::1",
            // ptp replaces the connected subnet routes with routes via the gateway, unlisted.
            &["10.89.0.0/24 via 10.89.0.1", "fd00:89::/64 via fd00:89::1"],
        );
    }
}

#[test]
fn after_rbridge_and_rhost_local() {
    for v in VERSIONS {
        let data = temp_dir("rroutes-ipam");
        let mut ipam = ipam(&data, "10.87.0.0/24", "fd00:87::/64");
        ipam["type"] = json!("rhost-local");
        let bridge = json!({
            "type": "rbridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipam": ipam
        });
        run_chain(
            bridge,
            rroutes("10.87.0.1", "fd00:87::1"),
            v,
            "10.87.0.1",
            "fd00:87::1",
            &[],
        );
    }
}
