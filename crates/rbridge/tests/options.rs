//! Each config option of ours, on the kernel; results identical to upstream bridge's but for MACs
//! and veth names.

mod common;

use cni_testkit::json::addr_of;
use cni_testkit::{ping, Netns};
use common::*;
use serde_json::{json, Value};

/// A result with MACs and host veth names replaced, for comparing ours with upstream's.
fn normalized(result: &Value) -> Value {
    let mut r = result.clone();
    if let Some(ifaces) = r["interfaces"].as_array_mut() {
        for i in ifaces {
            if i.get("mac").is_some() {
                i["mac"] = json!("MAC");
            }
            if i["name"].as_str().is_some_and(|n| n.starts_with("veth")) {
                i["name"] = json!("VETH");
            }
            if i["sandbox"].is_string() {
                i["sandbox"] = json!("SANDBOX");
            }
        }
    }
    r
}

/// Whether this kernel has bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING).
fn vlan_filtering_supported() -> bool {
    let ns = Netns::new("probe");
    ns.exec(
        "ip",
        &[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ],
    )
    .status
    .success()
}

#[test]
fn results_match_upstream_bridge() {
    let mut variants: Vec<(&str, Family, Value)> = vec![
        (
            "default gateway",
            Family::V4,
            json!({"isDefaultGateway": true}),
        ),
        ("gateway only", Family::Dual, json!({"isGateway": true})),
        (
            "v6 default gateway",
            Family::V6,
            json!({"isDefaultGateway": true}),
        ),
        ("no gateway", Family::Dual, json!({})),
        ("L2 only", Family::V4, json!({"ipam": {}})),
        (
            "config dns and ipam routes",
            Family::Dual,
            json!({"isDefaultGateway": true, "dns": {"nameservers": ["10.22.0.10"], "search": ["svc"]}}),
        ),
    ];
    if vlan_filtering_supported() {
        variants.push((
            "vlan gateway",
            Family::V4,
            json!({"isGateway": true, "vlan": 100}),
        ));
    }
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0"] {
        for (what, family, extra) in &variants {
            if *what == "L2 only" && version == "0.2.0" {
                continue; // Neither can write a 0.2.0 result without an address.
            }
            let mut results = Vec::new();
            for bridge in [Bridge::Upstream, Bridge::Ours] {
                let w = World::new(bridge, Ipam::HostLocal);
                let mut conf = w.conf(version, *family, extra.clone());
                if what.contains("routes") {
                    conf["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16"}, {"dst": "fd99::/64"}]);
                }
                let pod = Netns::new("pod");
                let cid = "parity";
                let r = w.add(&pod, cid, &conf).ok().clone();
                w.del(Some(&pod), cid, &conf).assert_ok();
                results.push(normalized(&r));
            }
            assert_eq!(
                results[0], results[1],
                "{what} {version}: upstream, then ours"
            );
        }
    }
}

#[test]
fn mtu_and_bridge_name() {
    let w = World::ours();
    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"bridge": "br-pods", "mtu": 1400}),
    );
    let pod = Netns::new("pod");
    let r = w.add(&pod, "c1", &conf).ok().clone();
    assert_eq!(r["interfaces"][0]["name"], "br-pods");
    let host = r["interfaces"][1]["name"].as_str().unwrap();
    assert_eq!(w.node.link("br-pods").unwrap()["mtu"], 1400);
    assert_eq!(w.node.link(host).unwrap()["mtu"], 1400);
    assert_eq!(pod.link("eth0").unwrap()["mtu"], 1400);
    assert!(w.node.link("cni0").is_none());
    w.del(Some(&pod), "c1", &conf).assert_ok();

    for (bad, key) in [
        (json!({"mtu": 20}), "mtu"),
        (json!({"bridge": "a-name-longer-than-15"}), "bridge"),
        (json!({"vlan": 5000}), "vlan"),
        (json!({"vlan": 10, "vlanTrunk": [{"id": 11}]}), "vlanTrunk"),
        (json!({"vlanTrunk": [{"minID": 10}]}), "maxID"),
        (json!({"ipMasqBackend": "pf"}), "ipMasqBackend"),
        (json!({"isGateway": "perhaps"}), "isGateway"),
    ] {
        let run = w.add(&pod, "c2", &w.conf("1.0.0", Family::V4, bad.clone()));
        assert_eq!(run.err_code(), Some(7), "{bad}: {}", run.stdout);
        assert!(run.stdout.contains(key), "{bad}: {}", run.stdout);
    }
    // A link of another kind under the bridge's name.
    w.node.ip(&[
        "link", "add", "notabr", "type", "veth", "peer", "name", "notabr1",
    ]);
    let run = w.add(
        &pod,
        "c3",
        &w.conf("1.0.0", Family::V4, json!({"bridge": "notabr"})),
    );
    assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
    assert!(run.stdout.contains("not a bridge"), "{}", run.stdout);
    assert!(w.allocations().is_empty());
    assert!(pod.link("eth0").is_none());
}

#[test]
fn hairpin_promisc_and_isolation() {
    let w = World::ours();
    let pod = Netns::new("pod");
    let conf = w.conf("1.0.0", Family::V4, json!({"hairpinMode": true}));
    let r = w.add(&pod, "c1", &conf).ok().clone();
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let port = &w.node.link(&host).unwrap()["linkinfo"]["info_slave_data"];
    assert_eq!(port["hairpin"], true, "{port}");
    assert_eq!(port["isolated"], false, "{port}");
    w.del(Some(&pod), "c1", &conf).assert_ok();

    let both = w.conf(
        "1.0.0",
        Family::V4,
        json!({"hairpinMode": true, "promiscMode": true}),
    );
    let run = w.add(&pod, "c2", &both);
    assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
    assert!(run.stdout.contains("promiscMode"), "{}", run.stdout);

    let conf = w.conf("1.0.0", Family::V4, json!({"promiscMode": true}));
    let r = w.add(&pod, "c3", &conf).ok().clone();
    let flags = w.node.link("cni0").unwrap()["flags"].clone();
    assert!(
        flags.as_array().unwrap().iter().any(|f| f == "PROMISC"),
        "{flags}"
    );
    w.check(&pod, "c3", &conf, &r).assert_ok();
    // CHECK compares the bridge with the config, as upstream.
    let plain = w.conf("1.0.0", Family::V4, json!({}));
    assert_eq!(w.check(&pod, "c3", &plain, &r).err_code(), Some(102));
    w.del(Some(&pod), "c3", &conf).assert_ok();

    // Isolated ports reach the gateway, not each other.
    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"portIsolation": true, "isGateway": true}),
    );
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    let ra = w.add(&a, "ia", &conf).ok().clone();
    let rb = w.add(&b, "ib", &conf).ok().clone();
    let host = ra["interfaces"][1]["name"].as_str().unwrap();
    assert_eq!(
        w.node.link(host).unwrap()["linkinfo"]["info_slave_data"]["isolated"],
        true
    );
    assert!(ping(&a, "10.22.0.1"));
    assert!(!ping(&a, &addr_of(&rb["ips"][0]["address"])));
    w.del(Some(&a), "ia", &conf).assert_ok();
    w.del(Some(&b), "ib", &conf).assert_ok();
}

#[test]
fn mac_spoof_check_drops_foreign_source_macs() {
    let w = World::ours();
    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"macspoofchk": true, "isGateway": true}),
    );
    let pod = Netns::new("pod");
    let r = w.add(&pod, "c1", &conf).ok().clone();
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let mac = r["interfaces"][2]["mac"].as_str().unwrap().to_string();
    let port = &w.node.link(&host).unwrap()["linkinfo"]["info_slave_data"];
    assert_eq!(port["locked"], true, "{port}");
    assert_eq!(port["learning"], false, "{port}");
    let fdb = w.node.sh(&format!("bridge -j fdb show dev {host}"));
    assert!(fdb.contains(&mac) && fdb.contains("static"), "{fdb}");
    assert!(ping(&pod, "10.22.0.1"));
    // Spoofing another MAC: nothing gets through.
    pod.sh("ip neigh flush all; ip link set eth0 address 02:00:00:00:00:99");
    assert!(!ping(&pod, "10.22.0.1"));
    pod.sh(&format!("ip link set eth0 address {mac}"));
    assert!(ping(&pod, "10.22.0.1"));
    w.del(Some(&pod), "c1", &conf).assert_ok();
    // The lock and the FDB entry went with the port.
    assert!(!w.node.sh("bridge -j fdb show").contains(&mac));
}

#[test]
fn vlans() {
    let w = World::ours();
    let pod = Netns::new("pod");
    if !vlan_filtering_supported() {
        // This kernel cannot filter VLANs on a bridge: ADD says so and leaves nothing.
        eprintln!("note: no CONFIG_BRIDGE_VLAN_FILTERING here; checking the refusal only");
        for extra in [json!({"vlan": 100}), json!({"vlanTrunk": [{"id": 101}]})] {
            let conf = w.conf("1.0.0", Family::V4, extra);
            let run = w.add(&pod, "c1", &conf);
            assert_ne!(run.code, 0);
            assert!(run.stdout.contains("VLAN filtering"), "{}", run.stdout);
            assert!(w.allocations().is_empty());
            assert!(pod.link("eth0").is_none());
            assert!(w.node.veths().is_empty());
        }
        return;
    }
    let vlans_of = |dev: &str| -> Vec<Value> {
        let out = w.node.sh(&format!("bridge -j vlan show dev {dev}"));
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["vlans"].as_array().cloned().unwrap_or_default()
    };
    // Access port, default VLAN kept (preserveDefaultVlan defaults to true).
    let conf = w.conf("1.0.0", Family::V4, json!({"vlan": 100}));
    let r = w.add(&pod, "c1", &conf).ok().clone();
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let vlans = vlans_of(&host);
    assert!(
        vlans.iter().any(|v| v["vlan"] == 100
            && v["flags"].to_string().contains("PVID")
            && v["flags"].to_string().contains("Untagged")),
        "{vlans:?}"
    );
    assert!(vlans.iter().any(|v| v["vlan"] == 1), "{vlans:?}");
    w.del(Some(&pod), "c1", &conf).assert_ok();

    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"vlan": 100, "preserveDefaultVlan": false, "isGateway": true}),
    );
    let r = w.add(&pod, "c2", &conf).ok().clone();
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let vlans = vlans_of(&host);
    assert_eq!(vlans.len(), 1, "{vlans:?}");
    // The gateway is on the VLAN's gateway interface, listed fourth.
    assert_eq!(r["interfaces"][3]["name"], "cni0.100", "{r}");
    assert_eq!(w.node.addrs("cni0.100"), ["10.22.0.1/24"]);
    assert!(ping(&pod, "10.22.0.1"));
    w.del(Some(&pod), "c2", &conf).assert_ok();

    // Trunk: tagged VLANs, the default VLAN as native.
    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 202}]}),
    );
    let r = w.add(&pod, "c3", &conf).ok().clone();
    let host = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let ids: Vec<Value> = vlans_of(&host).iter().map(|v| v["vlan"].clone()).collect();
    for id in [1, 101, 200, 202] {
        assert!(ids.contains(&json!(id)), "{id} not in {ids:?}");
    }
    w.del(Some(&pod), "c3", &conf).assert_ok();
}

#[test]
fn dad_and_disabled_interface() {
    let w = World::ours();
    let pod = Netns::new("pod");
    // IPv4: arp_notify on (set over netlink); no IPv6 settings touched.
    let conf = w.conf("1.0.0", Family::V4, json!({}));
    w.add(&pod, "c0", &conf).ok();
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/arp_notify"), "1");
    w.del(Some(&pod), "c0", &conf).assert_ok();

    let conf = w.conf("1.0.0", Family::V6, json!({}));
    let r = w.add(&pod, "c1", &conf).ok().clone();
    let addr = r["ips"][0]["address"].as_str().unwrap();
    assert_eq!(pod.sysctl("net/ipv6/conf/eth0/accept_dad"), "0");
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/arp_notify"), "1");
    let show = pod.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(show.contains(addr) && show.contains("nodad"), "{show}");
    w.del(Some(&pod), "c1", &conf).assert_ok();

    let conf = w.conf("1.0.0", Family::V6, json!({"enabledad": true}));
    let r = w.add(&pod, "c2", &conf).ok().clone();
    let addr = r["ips"][0]["address"].as_str().unwrap();
    assert_eq!(pod.sysctl("net/ipv6/conf/eth0/accept_dad"), "1");
    assert_eq!(pod.sysctl("net/ipv6/conf/eth0/enhanced_dad"), "1");
    let show = pod.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(show.contains(addr) && !show.contains("nodad"), "{show}");
    w.del(Some(&pod), "c2", &conf).assert_ok();

    // The container interface left down, L2 only.
    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"disableContainerInterface": true, "ipam": {}}),
    );
    let r = w.add(&pod, "c3", &conf).ok().clone();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert!(r.get("ips").is_none(), "{r}");
    let flags = pod.link("eth0").unwrap()["flags"].to_string();
    assert!(!flags.contains("\"UP\""), "{flags}");
    w.del(Some(&pod), "c3", &conf).assert_ok();
    let with_ipam = w.conf(
        "1.0.0",
        Family::V4,
        json!({"disableContainerInterface": true}),
    );
    let run = w.add(&pod, "c4", &with_ipam);
    assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
    assert!(w.allocations().is_empty());

    // L2 only with the interface up.
    let conf = w.conf("1.0.0", Family::V4, json!({"ipam": {}}));
    w.add(&pod, "c5", &conf).ok();
    assert!(pod.link("eth0").unwrap()["flags"]
        .to_string()
        .contains("\"UP\""));
    assert!(pod.addrs("eth0").is_empty());
    w.del(Some(&pod), "c5", &conf).assert_ok();
}

#[test]
fn gateway_modes_and_forwarding() {
    let w = World::ours();
    let pod = Netns::new("pod");
    // No gateway: nothing on the bridge, no default route, forwarding untouched.
    let conf = w.conf("1.0.0", Family::V4, json!({}));
    w.add(&pod, "c1", &conf).ok();
    assert!(w.node.addrs("cni0").is_empty());
    assert!(!pod.routes(4).iter().any(|r| r["dst"] == "default"));
    assert_eq!(w.node.sysctl("net.ipv4.ip_forward"), "0");
    w.del(Some(&pod), "c1", &conf).assert_ok();

    // isGateway: the address on the bridge and forwarding on, still no default route.
    let conf = w.conf("1.0.0", Family::Dual, json!({"isGateway": true}));
    let r = w.add(&pod, "c2", &conf).ok().clone();
    assert_eq!(w.node.addrs("cni0"), ["10.22.0.1/24", "fd00:22::1/64"]);
    assert!(!pod.routes(4).iter().any(|r| r["dst"] == "default"));
    assert_eq!(w.node.sysctl("net.ipv4.ip_forward"), "1");
    assert_eq!(w.node.sysctl("net.ipv6.conf.all.forwarding"), "1");
    assert!(r["routes"].is_null(), "{r}");
    // A gateway address is usable at once (no DAD on the bridge).
    assert!(ping(&pod, "fd00:22::1"));
    w.del(Some(&pod), "c2", &conf).assert_ok();
}

#[test]
fn container_mac_sources_in_upstream_order() {
    let w = World::ours();
    let pod = Netns::new("pod");
    let cases: [(&str, Value, &str); 4] = [
        // IPAM sees CNI_ARGS too: host-local refuses unknown keys unless IgnoreUnknown.
        (
            "IgnoreUnknown=1;MAC=0a:58:0a:16:00:05",
            json!({}),
            "0a:58:0a:16:00:05",
        ),
        (
            "IgnoreUnknown=1;MAC=0a:58:0a:16:00:05",
            json!({"args": {"cni": {"mac": "0a:58:0a:16:00:06"}}}),
            "0a:58:0a:16:00:06",
        ),
        (
            "IgnoreUnknown=1;MAC=0a:58:0a:16:00:05",
            json!({"args": {"cni": {"mac": "0a:58:0a:16:00:06"}},
                   "runtimeConfig": {"mac": "0A:58:0A:16:00:07"}}),
            "0a:58:0a:16:00:07",
        ),
        ("", json!({}), ""),
    ];
    for (args, extra, want) in cases {
        let conf = w.conf("1.0.0", Family::V4, extra);
        let path = pod.path().display().to_string();
        let r = w
            .run("ADD", "c1", Some(&path), "eth0", args, &conf)
            .ok()
            .clone();
        let mac = pod.link("eth0").unwrap()["address"].clone();
        assert_eq!(r["interfaces"][2]["mac"], mac);
        if !want.is_empty() {
            assert_eq!(mac, want);
        }
        w.check(&pod, "c1", &conf, &r).assert_ok();
        w.del(Some(&pod), "c1", &conf).assert_ok();
    }
    let path = pod.path().display().to_string();
    let conf = w.conf("1.0.0", Family::V4, json!({}));
    for (args, code) in [
        ("MAC=nonsense", 4),
        ("MAC=01:00:5e:00:00:01", 4),
        ("FOO=bar", 4),
    ] {
        let run = w.run("ADD", "c1", Some(&path), "eth0", args, &conf);
        assert_eq!(run.err_code(), Some(code), "{args}: {}", run.stdout);
    }
    let bad = w.conf("1.0.0", Family::V4, json!({"runtimeConfig": {"mac": "zz"}}));
    let run = w.run("ADD", "c1", Some(&path), "eth0", "", &bad);
    assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
    assert!(run.stdout.contains("runtimeConfig.mac"), "{}", run.stdout);
    assert!(w.allocations().is_empty());
}

#[test]
fn retried_add_replaces_a_stale_attachment() {
    let w = World::ours();
    let conf = w.conf("1.0.0", Family::V4, json!({"isGateway": true}));
    // The first sandbox leaked (its netns still exists) and the runtime retries ADD for the
    // same container in a new one.
    let old = Netns::new("pod");
    w.add(&old, "c1", &conf).ok();
    let new = Netns::new("pod");
    let r = w.add(&new, "c1", &conf).ok().clone();
    assert!(old.link("eth0").is_none());
    assert!(new.link("eth0").is_some());
    assert_eq!(w.node.veths().len(), 1);
    assert!(ping(&new, "10.22.0.1"));
    // Retried in the same sandbox: the interface is there, so ADD refuses (101).
    let again = w.add(&new, "c1", &conf);
    assert_eq!(again.err_code(), Some(101), "{}", again.stdout);
    w.check(&new, "c1", &conf, &r).assert_ok();
    w.del(Some(&new), "c1", &conf).assert_ok();
    assert!(w.node.veths().is_empty());
}

#[test]
fn ip_masq_per_backend_and_del_without_netns() {
    for backend in ["nftables", "iptables"] {
        let w = World::ours();
        let conf = w.conf(
            "1.1.0",
            Family::Dual,
            json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": backend}),
        );
        let pod = Netns::new("pod");
        let r = w.add(&pod, "c1", &conf).ok().clone();
        let fw = w.node.firewall();
        assert!(masquerading(&fw), "{backend}: {fw}");
        assert!(
            fw.contains("10.22.0.") && fw.contains("fd00:22::"),
            "{backend}: {fw}"
        );
        w.check(&pod, "c1", &conf, &r).assert_ok();
        // DEL without netns, as after a node reboot: upstream leaks the rules here.
        drop(pod);
        w.del(None, "c1", &conf).assert_ok();
        assert!(
            !masquerading(&w.node.firewall()),
            "{backend}: {}",
            w.node.firewall()
        );
        assert!(w.allocations().is_empty());
    }

    // ipMasq on, but the masquerade cannot be set up: the ADD is undone.
    let w = World::ours();
    let conf = w.conf(
        "1.1.0",
        Family::V4,
        json!({"ipMasq": true, "ipMasqStateDir": "/proc/rbridge-no-such-dir"}),
    );
    let pod = Netns::new("pod");
    let run = w.add(&pod, "c1", &conf);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(w.allocations().is_empty());
    assert!(w.node.veths().is_empty());
    assert!(pod.link("eth0").is_none());
}

#[test]
fn gc_and_status_with_rhost_local() {
    let w = World::ours();
    let conf = w.conf(
        "1.1.0",
        Family::V4,
        json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": "nftables"}),
    );
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    let ra = w.add(&a, "keep", &conf).ok().clone();
    w.add(&b, "stale", &conf).ok();
    assert_eq!(w.allocations().len(), 2);
    w.run("STATUS", "", None, "", "", &conf).assert_ok();

    // GC without the list is refused: it would cut every pod off.
    assert_eq!(w.run("GC", "", None, "", "", &conf).err_code(), Some(7));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    w.run("GC", "", None, "", "", &gc).assert_ok();
    assert_eq!(
        w.allocations(),
        [addr_of(&ra["ips"][0]["address"])],
        "the stale pod's address is released"
    );
    w.check(&a, "keep", &conf, &ra).assert_ok();
    let fw = w.node.firewall();
    assert!(fw.contains(&addr_of(&ra["ips"][0]["address"])), "{fw}");
    w.del(Some(&a), "keep", &conf).assert_ok();
    w.del(Some(&b), "stale", &conf).assert_ok();
    assert!(!masquerading(&w.node.firewall()), "{}", w.node.firewall());
}

fn masquerading(firewall: &str) -> bool {
    firewall.to_lowercase().contains("masquerade")
}

#[test]
fn debug_log_shows_where_add_spent_its_time() {
    let w = World::ours();
    let log = w.dir.join("rbridge.log");
    let conf = w.conf(
        "1.0.0",
        Family::V4,
        json!({"logFile": log, "logLevel": "debug", "ipMasq": true}),
    );
    let pod = Netns::new("pod");
    w.add(&pod, "c1", &conf).ok();
    w.del(Some(&pod), "c1", &conf).assert_ok();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("ADD timeline"))
        .unwrap_or_else(|| panic!("{text}"));
    for milestone in ["ipam-started", "veth", "ipam-result", "masquerade", "done"] {
        assert!(line.contains(&format!("{milestone}=")), "{line}");
    }
    let line = text
        .lines()
        .find(|l| l.contains("DEL timeline"))
        .unwrap_or_else(|| panic!("{text}"));
    for milestone in ["ipam", "links", "masquerade"] {
        assert!(line.contains(&format!("{milestone}=")), "{line}");
    }
    assert!(
        text.contains("verb=DEL") && text.contains("outcome=ok"),
        "{text}"
    );
}

/// A pod netns with IPv6 turned off gets it turned on (lo and the interface) for an IPv6
/// address, as upstream does.
#[test]
fn ipv6_address_in_a_pod_with_ipv6_off() {
    let w = World::ours();
    let pod = Netns::new("pod");
    pod.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    let conf = w.conf("1.0.0", Family::V6, json!({}));
    let r = w.add(&pod, "c1", &conf).ok().clone();
    let addr = r["ips"][0]["address"].as_str().unwrap();
    assert_eq!(pod.sysctl("net/ipv6/conf/eth0/disable_ipv6"), "0");
    assert_eq!(pod.sysctl("net/ipv6/conf/lo/disable_ipv6"), "0");
    let show = pod.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(show.contains(addr), "{show}");
    w.del(Some(&pod), "c1", &conf).assert_ok();
}
