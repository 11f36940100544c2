//! ADD, CHECK, DEL per family and spec version, for ours with either IPAM and for upstream bridge
//! with rhost-local; DEL twice and without a netns; CHECK noticing drift; rollback of a failed
//! ADD; racing ADDs on one bridge; pod-to-pod and pod-to-gateway traffic.

mod common;

use cni_testkit::json::{addr_of, cidrs, with_prev};
use cni_testkit::{container_id, eventually, ping, Netns};
use common::*;
use serde_json::{json, Value};

/// The kernel state a successful ADD of `family` leaves, and its result, checked together.
fn assert_attached(w: &World, pod: &Netns, family: Family, version: &str, result: &Value) {
    let ifaces = result["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3, "{result}");
    assert_eq!(ifaces[0]["name"], "cni0");
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(
        ifaces[2]["sandbox"],
        pod.path().display().to_string(),
        "{result}"
    );
    let host = ifaces[1]["name"].as_str().unwrap();
    assert_eq!(w.node.master_of(host).as_deref(), Some("cni0"));
    for i in ifaces {
        assert!(i["mac"].as_str().is_some_and(|m| m.len() == 17), "{result}");
    }
    let pod_mac = pod.link("eth0").unwrap()["address"].clone();
    assert_eq!(ifaces[2]["mac"], pod_mac, "{result}");
    assert_eq!(
        ifaces[0]["mac"],
        w.node.link("cni0").unwrap()["address"],
        "{result}"
    );
    assert_eq!(ifaces[1]["mac"], w.node.link(host).unwrap()["address"]);

    let ips = result["ips"].as_array().unwrap();
    assert_eq!(
        ips.len(),
        usize::from(family.has_v4()) + usize::from(family.has_v6())
    );
    let pod_addrs = pod.addrs("eth0");
    let bridge_addrs = w.node.addrs("cni0");
    for ip in ips {
        assert_eq!(ip["interface"], 2, "{result}");
        let addr = ip["address"].as_str().unwrap();
        assert!(
            pod_addrs.iter().any(|a| a == addr),
            "{addr} not in {pod_addrs:?}"
        );
        let v4 = !addr.contains(':');
        let gw = if v4 { "10.22.0.1" } else { "fd00:22::1" };
        assert_eq!(ip["gateway"], gw, "{result}");
        let prefix = addr.split('/').nth(1).unwrap();
        assert!(
            bridge_addrs.contains(&format!("{gw}/{prefix}")),
            "{gw}/{prefix} not on cni0: {bridge_addrs:?}"
        );
        if matches!(version, "0.3.0" | "0.3.1" | "0.4.0") {
            assert_eq!(ip["version"], if v4 { "4" } else { "6" });
        } else {
            assert!(ip.get("version").is_none(), "{result}");
        }
    }
    // isDefaultGateway: a default route per family, in the result and in the pod.
    for (fam, any, gw) in [(4u8, "0.0.0.0/0", "10.22.0.1"), (6, "::/0", "fd00:22::1")] {
        let wanted = if fam == 4 {
            family.has_v4()
        } else {
            family.has_v6()
        };
        let in_result = result["routes"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["dst"] == any && r["gw"] == gw));
        assert_eq!(in_result, wanted, "{result}");
        let in_pod = pod
            .routes(fam)
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == gw);
        assert_eq!(in_pod, wanted, "{:?}", pod.routes(fam));
    }
    assert_eq!(result["cniVersion"], version);
}

fn assert_detached(w: &World, pod: Option<&Netns>) {
    assert!(w.node.veths().is_empty(), "{:?}", w.node.veths());
    if let Some(pod) = pod {
        assert!(pod.link("eth0").is_none());
    }
    assert!(w.allocations().is_empty(), "{:?}", w.allocations());
}

#[test]
fn add_check_del_per_family_and_version() {
    for combo in COMBOS {
        for family in FAMILIES {
            let w = World::new(combo.0, combo.1);
            for &version in versions(combo) {
                let what = format!("{combo:?} {family:?} {version}");
                let conf = w.conf(version, family, json!({"isDefaultGateway": true}));
                let pod = Netns::new("pod");
                let cid = container_id();
                let result = w.add(&pod, &cid, &conf).ok().clone();
                assert_attached(&w, &pod, family, version, &result);
                if version != "0.3.1" {
                    w.check(&pod, &cid, &conf, &result).assert_ok();
                }
                assert!(
                    ping(
                        &pod,
                        if family.has_v4() {
                            "10.22.0.1"
                        } else {
                            "fd00:22::1"
                        }
                    ),
                    "{what}"
                );
                let conf_del = with_prev(&conf, &result);
                w.del(Some(&pod), &cid, &conf_del).assert_ok();
                assert_detached(&w, Some(&pod));
                // DEL is idempotent.
                w.del(Some(&pod), &cid, &conf_del).assert_ok();
                w.del(None, &cid, &conf).assert_ok();
            }
        }
    }
}

#[test]
fn legacy_020_add_and_del() {
    for combo in COMBOS {
        let w = World::new(combo.0, combo.1);
        for family in FAMILIES {
            let conf = w.conf("0.2.0", family, json!({"isGateway": true}));
            let pod = Netns::new("pod");
            let cid = container_id();
            let result = w.add(&pod, &cid, &conf).ok().clone();
            assert_eq!(result["cniVersion"], "0.2.0");
            assert!(result.get("interfaces").is_none(), "{result}");
            assert_eq!(result["ip4"].is_object(), family.has_v4(), "{result}");
            assert_eq!(result["ip6"].is_object(), family.has_v6(), "{result}");
            if family.has_v4() {
                assert_eq!(result["ip4"]["gateway"], "10.22.0.1");
                let a = result["ip4"]["ip"].as_str().unwrap();
                assert!(pod.addrs("eth0").contains(&a.to_string()));
            }
            w.del(Some(&pod), &cid, &conf).assert_ok();
            w.del(Some(&pod), &cid, &conf).assert_ok();
            assert_detached(&w, Some(&pod));
        }
    }
}

#[test]
fn del_without_netns_releases_everything() {
    for combo in COMBOS {
        let w = World::new(combo.0, combo.1);
        let conf = w.conf("1.0.0", Family::Dual, json!({"isGateway": true}));

        // The pod's netns is gone: CNI_NETNS empty, and CNI_NETNS naming a deleted path.
        for with_path in [false, true] {
            let pod = Netns::new("pod");
            let path = pod.path().display().to_string();
            let cid = container_id();
            let result = w.add(&pod, &cid, &conf).ok().clone();
            drop(pod);
            let netns = with_path.then_some(path.as_str());
            w.run("DEL", &cid, netns, "eth0", "", &with_prev(&conf, &result))
                .assert_ok();
            assert!(w.allocations().is_empty(), "{:?}", w.allocations());
            // A deleted netns takes its veths with it, in the kernel's own time.
            assert!(
                eventually(|| w.node.veths().is_empty()),
                "{:?}",
                w.node.veths()
            );
        }

        // The pod is alive but DEL comes without CNI_NETNS: ours still removes the pair, by
        // its host end; upstream leaves the link (only IPAM is released).
        let pod = Netns::new("pod");
        let cid = container_id();
        w.add(&pod, &cid, &conf).ok();
        w.del(None, &cid, &conf).assert_ok();
        assert!(w.allocations().is_empty());
        if combo.0 == Bridge::Ours {
            assert_detached(&w, Some(&pod));
        }
    }
}

#[test]
fn check_notices_drift() {
    for combo in COMBOS {
        let w = World::new(combo.0, combo.1);
        let conf = w.conf("1.0.0", Family::Dual, json!({"isDefaultGateway": true}));
        let drifts: [(&str, &str); 5] = [
            ("address", "ip addr del {v4} dev eth0"),
            ("v6 address", "ip addr del {v6} dev eth0"),
            ("default route", "ip route del default"),
            ("v6 default route", "ip -6 route del default"),
            ("MAC", "ip link set eth0 address 02:00:00:00:00:99"),
        ];
        for (what, script) in drifts {
            let pod = Netns::new("pod");
            let cid = container_id();
            let result = w.add(&pod, &cid, &conf).ok().clone();
            w.check(&pod, &cid, &conf, &result).assert_ok();
            let addrs = cidrs(&result);
            let script = script.replace("{v4}", &addrs[0]).replace("{v6}", &addrs[1]);
            pod.sh(&script);
            let check = w.check(&pod, &cid, &conf, &result);
            assert_ne!(check.code, 0, "{combo:?}: CHECK missed a changed {what}");
            if combo.0 == Bridge::Ours {
                assert_eq!(check.err_code(), Some(102), "{}", check.stdout);
            }
            w.del(Some(&pod), &cid, &with_prev(&conf, &result))
                .assert_ok();
        }

        // The host veth taken off the bridge.
        let pod = Netns::new("pod");
        let cid = container_id();
        let result = w.add(&pod, &cid, &conf).ok().clone();
        let host = result["interfaces"][1]["name"]
            .as_str()
            .unwrap()
            .to_string();
        w.node.ip(&["link", "set", &host, "nomaster"]);
        assert_ne!(w.check(&pod, &cid, &conf, &result).code, 0, "{combo:?}");
        w.del(Some(&pod), &cid, &conf).assert_ok();
        assert_detached(&w, Some(&pod));
    }
}

#[test]
fn failed_add_leaves_nothing() {
    for combo in COMBOS {
        let w = World::new(combo.0, combo.1);
        // Ours also undoes the masquerade, set up as soon as IPAM answered.
        let masq = combo.0 == Bridge::Ours;
        // IPAM succeeds, then the pod rejects a route whose gateway is not on its subnet.
        let mut conf = w.conf(
            "1.0.0",
            Family::Dual,
            json!({"isGateway": true, "ipMasq": masq}),
        );
        conf["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "192.168.255.1"}]);
        let pod = Netns::new("pod");
        let cid = container_id();
        let run = w.add(&pod, &cid, &conf);
        assert_ne!(run.code, 0, "{combo:?}: {}", run.stdout);
        assert!(
            w.allocations().is_empty(),
            "{combo:?}: {:?}",
            w.allocations()
        );
        if combo.0 == Bridge::Ours {
            assert!(run.stdout.contains("route"), "{}", run.stdout);
            // Upstream leaves the veth behind here; ours leaves nothing.
            assert_detached(&w, Some(&pod));
            assert!(pod.addrs("eth0").is_empty());
            assert!(
                !w.node.firewall().contains("10.22.0."),
                "{}",
                w.node.firewall()
            );
        }
        w.del(Some(&pod), &cid, &conf).assert_ok();

        // The gateway cannot go on the bridge: it already has another IPv4 address.
        // (Ours removed the bridge it created with the failed ADD above; upstream left it.)
        w.node
            .sh("ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge");
        w.node.ip(&["addr", "flush", "dev", "cni0"]);
        w.node.ip(&["addr", "add", "10.99.0.1/24", "dev", "cni0"]);
        let conf = w.conf("1.0.0", Family::V4, json!({"isGateway": true}));
        let run = w.add(&pod, &cid, &conf);
        assert_ne!(run.code, 0, "{combo:?}: {}", run.stdout);
        assert!(run.stdout.contains("10.22.0.1/24"), "{}", run.stdout);
        assert!(w.allocations().is_empty(), "{:?}", w.allocations());
        if combo.0 == Bridge::Ours {
            assert!(run.stdout.contains("forceAddress"), "{}", run.stdout);
            assert_detached(&w, Some(&pod));
        } else {
            // Upstream leaves its veth: clean it up for the next step.
            w.del(Some(&pod), &cid, &conf).assert_ok();
        }
        if combo.0 == Bridge::Upstream {
            // Upstream 1.1.1 fails forceAddress on a bridge it created itself here ("could not
            // set bridge's mac: invalid argument"); the replacement is ours to show.
            continue;
        }
        // forceAddress replaces it.
        let force = w.conf(
            "1.0.0",
            Family::V4,
            json!({"isGateway": true, "forceAddress": true, "ipMasq": true}),
        );
        let result = w.add(&pod, &cid, &force).ok().clone();
        assert_eq!(w.node.addrs("cni0"), ["10.22.0.1/24"]);
        w.del(Some(&pod), &cid, &with_prev(&force, &result))
            .assert_ok();

        // CNI_IFNAME already in the pod: refused before anything is changed for good.
        pod.ip(&["link", "add", "eth0", "type", "bridge"]);
        let run = w.add(&pod, &cid, &force);
        assert_ne!(run.code, 0, "{combo:?}: {}", run.stdout);
        assert!(w.allocations().is_empty(), "{:?}", w.allocations());
        assert!(w.node.veths().is_empty(), "{:?}", w.node.veths());
        assert!(
            !w.node.firewall().contains("10.22.0."),
            "{}",
            w.node.firewall()
        );
        assert_eq!(pod.link("eth0").unwrap()["linkinfo"]["info_kind"], "bridge");
        assert_eq!(run.err_code(), Some(101), "{}", run.stdout);
        assert!(run.stdout.contains("already exists"), "{}", run.stdout);
        // DEL after the failed ADD leaves another plugin's eth0 alone.
        w.del(Some(&pod), &cid, &force).assert_ok();
        assert!(pod.link("eth0").is_some());
    }
}

/// The first ADD on a node fails (bad IPAM config, or a route the pod rejects): the bridge it
/// created goes too, so the node is as before. A bridge that has pods stays.
#[test]
fn failed_first_add_leaves_no_bridge() {
    for ipam in [Ipam::HostLocal, Ipam::RHostLocal] {
        let w = World::new(Bridge::Ours, ipam);
        let links_before = w.node.links().len();
        let pod = Netns::new("pod");
        let cid = container_id();
        let mut bad = w.conf("1.0.0", Family::V4, json!({"isGateway": true}));
        bad["ipam"]["ranges"] = json!([[{"subnet": "10.22.0.0/33"}]]);
        let run = w.add(&pod, &cid, &bad);
        assert_ne!(run.code, 0, "{ipam:?}: {}", run.stdout);
        if ipam == Ipam::RHostLocal {
            // (Upstream host-local answers 999 here; its error is passed on as it is.)
            assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
        }
        let mut rejected = w.conf("1.0.0", Family::V4, json!({"isGateway": true}));
        rejected["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "192.168.255.1"}]);
        assert_ne!(w.add(&pod, &cid, &rejected).code, 0);
        assert_eq!(
            w.node.links().len(),
            links_before,
            "{ipam:?}: {:?}",
            w.node.links()
        );
        assert!(w.allocations().is_empty(), "{:?}", w.allocations());

        // With a pod on it, a failing ADD leaves the bridge alone.
        let good = w.conf("1.0.0", Family::V4, json!({"isGateway": true}));
        w.add(&pod, &cid, &good).ok();
        let other = Netns::new("pod");
        assert_ne!(w.add(&other, &container_id(), &rejected).code, 0);
        assert!(w.node.link("cni0").is_some());
        w.del(Some(&pod), &cid, &good).assert_ok();
    }
}

#[test]
fn racing_adds_share_one_bridge() {
    const PODS: usize = 20;
    for combo in COMBOS {
        let w = World::new(combo.0, combo.1);
        let conf = w.conf("1.0.0", Family::Dual, json!({"isDefaultGateway": true}));
        let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("pod")).collect();
        let cids: Vec<String> = (0..PODS).map(|_| container_id()).collect();
        let results: Vec<Value> = std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .zip(&cids)
                .map(|(pod, cid)| {
                    let (w, conf) = (&w, &conf);
                    s.spawn(move || w.add(pod, cid, conf))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().ok().clone())
                .collect()
        });
        let mut addrs: Vec<String> = results.iter().flat_map(cidrs).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 2 * PODS, "{combo:?}: duplicate addresses");
        let bridges: Vec<_> = w
            .node
            .links()
            .into_iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "bridge")
            .collect();
        assert_eq!(bridges.len(), 1);
        assert_eq!(w.node.addrs("cni0"), ["10.22.0.1/24", "fd00:22::1/64"]);
        assert_eq!(w.node.veths().len(), PODS);
        for (pod, result) in pods.iter().zip(&results) {
            assert_eq!(pod.addrs("eth0").len(), 2, "{result}");
        }
        // Traffic between two of them and to the gateway.
        assert!(ping(&pods[0], &addr_of(&results[1]["ips"][0]["address"])));
        assert!(ping(&pods[1], &addr_of(&results[0]["ips"][1]["address"])));
        std::thread::scope(|s| {
            for (pod, cid) in pods.iter().zip(&cids) {
                let (w, conf) = (&w, &conf);
                s.spawn(move || {
                    w.del(Some(pod), cid, conf).assert_ok();
                });
            }
        });
        assert_detached(&w, None);
    }
}

#[test]
fn pods_reach_each_other_and_the_gateway() {
    for combo in COMBOS {
        let w = World::new(combo.0, combo.1);
        let conf = w.conf("1.0.0", Family::Dual, json!({"isDefaultGateway": true}));
        let (a, b) = (Netns::new("pod"), Netns::new("pod"));
        let (ca, cb) = (container_id(), container_id());
        let ra = w.add(&a, &ca, &conf).ok().clone();
        let rb = w.add(&b, &cb, &conf).ok().clone();
        for (from, to) in [(&a, &rb), (&b, &ra)] {
            for ip in cidrs(to) {
                let dst = ip.split('/').next().unwrap();
                assert!(ping(from, dst), "{combo:?}: no reply from {dst}");
            }
            assert!(ping(from, "10.22.0.1"));
            assert!(ping(from, "fd00:22::1"));
        }
        w.del(Some(&a), &ca, &conf).assert_ok();
        w.del(Some(&b), &cb, &conf).assert_ok();
        assert_detached(&w, None);
    }
}

/// A node switching plugins either way with pods attached: each side checks and deletes what
/// the other added, sharing host-local's store.
#[test]
fn switching_between_upstream_bridge_and_ours() {
    let w = World::new(Bridge::Ours, Ipam::HostLocal);
    let conf = w.conf("1.0.0", Family::Dual, json!({"isDefaultGateway": true}));
    let mut upstream_conf = conf.clone();
    upstream_conf["type"] = json!("bridge");
    let upstream = |verb: &str, pod: &Netns, cid: &str, conf: &Value| {
        let path = pod.path().display().to_string();
        let inv = cni_testkit::Invocation::new(verb, cid, Some(&path), "eth0")
            .with_path(cni_testkit::cni_path_with_upstream());
        cni_testkit::run_plugin(
            Some(&w.node),
            &cni_testkit::upstream_bin("bridge"),
            &inv,
            &conf.to_string(),
        )
    };

    // Added by upstream, checked and deleted by ours (its host veth has a random name).
    let pod = Netns::new("pod");
    let r = upstream("ADD", &pod, "u1", &upstream_conf).ok().clone();
    w.check(&pod, "u1", &conf, &r).assert_ok();
    w.del(Some(&pod), "u1", &with_prev(&conf, &r)).assert_ok();
    assert_detached(&w, Some(&pod));

    // Added by ours, checked and deleted by upstream.
    let r = w.add(&pod, "o1", &conf).ok().clone();
    upstream("CHECK", &pod, "o1", &with_prev(&upstream_conf, &r)).assert_ok();
    upstream("DEL", &pod, "o1", &with_prev(&upstream_conf, &r)).assert_ok();
    assert_detached(&w, Some(&pod));
}

/// The host end of a pod's veth is a bridge port only: no IPv6 of its own on the node (no
/// link-local address, no fe80::/64 route per pod, no autoconfiguration work under the
/// kernel's rtnl lock), while the pods' IPv6 across the bridge still flows.
#[test]
fn host_port_has_no_ipv6_of_its_own() {
    let w = World::ours();
    let conf = w.conf("1.0.0", Family::Dual, json!({"isGateway": true}));
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    w.add(&a, &container_id(), &conf).ok();
    let rb = w.add(&b, &container_id(), &conf).ok().clone();
    for host in w.node.veths() {
        assert_eq!(w.node.addrs_all(&host), Vec::<String>::new(), "{host}");
        let routes = w.node.exec("ip", &["-6", "route", "show", "dev", &host]);
        assert!(routes.stdout.is_empty(), "{host}: {:?}", routes);
    }
    assert!(ping(&a, &addr_of(&rb["ips"][1]["address"])));
}
