//! ADD in the pod: each option, their order, IPv4 and IPv6, args.cni, versions, errors. The plugin
//! runs in a node netns; the pod is another netns; the result must equal the kernel's routes.

mod common;

use cni_testkit::VERSIONS;
use common::{assert_result_is_kernel, kroutes, KRoute, World, GW4, GW6};
use serde_json::{json, Value};

fn has(routes: &[KRoute], dst: &str, gw: Option<&str>, table: u32) -> bool {
    routes
        .iter()
        .any(|k| k.dst == dst && k.gw.as_deref() == gw && k.table == table)
}

fn dsts(result: &Value) -> Vec<String> {
    let mut v: Vec<String> = result["routes"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| r["dst"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn baseline_world_result_matches_kernel_and_no_op_config_changes_nothing() {
    let w = World::new();
    let before = kroutes(&w.pod, "eth0");
    for v in VERSIONS {
        let out = w.run("ADD", &w.conf(v, json!({}))).ok().clone();
        assert_eq!(out["cniVersion"], v);
        assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);
        // Passed on unchanged (in its version).
        assert_eq!(out["routes"], w.prev(v)["routes"]);
        assert_eq!(out["ips"], w.prev(v)["ips"]);
    }
    assert_eq!(kroutes(&w.pod, "eth0"), before);
}

#[test]
fn flush_routes_keeps_only_link_scope_routes_of_ifname() {
    for v in ["0.4.0", "1.1.0"] {
        let w = World::new();
        let eth1 = w.eth1();
        let out = w
            .run("ADD", &w.conf(v, json!({"flushRoutes": true})))
            .ok()
            .clone();
        let k = kroutes(&w.pod, "eth0");
        assert!(k.iter().all(KRoute::link_scope), "{k:#?}");
        // Kernel prefix routes (both families), the device route and fe80::/64 stay.
        assert!(has(&k, "10.22.0.0/24", None, 254));
        assert!(has(&k, "10.8.0.0/16", None, 254));
        assert!(has(&k, "fd00:22::/64", None, 254));
        assert!(has(&k, "fe80::/64", None, 254));
        // Gateway routes of every table are gone, including table 100.
        assert!(!k.iter().any(|r| r.table == 100));
        assert_eq!(w.eth1(), eth1, "eth1 untouched");
        assert!(dsts(&out).is_empty(), "{out}");
        assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);
        // Addresses keep their gateway: only flushGateway drops it.
        assert_eq!(out["ips"][0]["gateway"], GW4);
    }
}

#[test]
fn flush_gateway_removes_default_routes_and_result_gateways() {
    for v in VERSIONS {
        let w = World::new();
        let eth1 = w.eth1();
        let out = w
            .run("ADD", &w.conf(v, json!({"flushGateway": true})))
            .ok()
            .clone();
        let k = kroutes(&w.pod, "eth0");
        assert!(!has(&k, "0.0.0.0/0", Some(GW4), 254), "{k:#?}");
        assert!(!has(&k, "::/0", Some(GW6), 254), "{k:#?}");
        assert!(has(&k, "10.9.0.0/16", Some(GW4), 254));
        assert!(has(&k, "fd00:9::/64", Some(GW6), 254));
        assert_eq!(w.eth1(), eth1, "eth1's default routes untouched");
        assert!(!dsts(&out).iter().any(|d| d == "0.0.0.0/0" || d == "::/0"));
        for ip in out["ips"].as_array().unwrap() {
            assert!(ip.get("gateway").is_none(), "gateway left in {ip}");
        }
        assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);
    }
}

#[test]
fn del_routes_deletes_exact_prefixes_only() {
    let w = World::new();
    let eth1 = w.eth1();
    let conf = w.conf(
        "1.0.0",
        json!({"delRoutes": [
            {"dst": "10.9.0.0/16"},
            {"dst": "fd00:9::/64"},
            {"dst": "10.123.0.0/16"}
        ]}),
    );
    let out = w.run("ADD", &conf).ok().clone();
    let k = kroutes(&w.pod, "eth0");
    assert!(!has(&k, "10.9.0.0/16", Some(GW4), 254));
    assert!(!has(&k, "fd00:9::/64", Some(GW6), 254));
    // Not a covering match: the /24 stays, as do the defaults.
    assert!(has(&k, "10.9.0.0/24", Some(GW4), 254));
    assert!(has(&k, "0.0.0.0/0", Some(GW4), 254));
    // eth1's 10.9.0.0/16 is another interface's.
    assert_eq!(w.eth1(), eth1);
    assert_eq!(dsts(&out), ["0.0.0.0/0", "10.9.0.0/24", "::/0"]);
    assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);
}

#[test]
fn del_routes_in_another_table() {
    let w = World::new();
    let conf = w.conf(
        "1.1.0",
        json!({"delRoutes": [{"dst": "10.7.0.0/16"}, {"dst": "10.7.0.0/16", "table": 100}]}),
    );
    let out = w.run("ADD", &conf).ok().clone();
    assert!(!kroutes(&w.pod, "eth0").iter().any(|r| r.table == 100));
    assert!(!dsts(&out).contains(&"10.7.0.0/16".to_string()));
    assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);
}

fn add_routes() -> Value {
    json!({"addRoutes": [
        {"dst": "10.10.0.0/16", "gw": GW4, "mtu": 1400, "advmss": 1360, "priority": 5, "table": 100},
        {"dst": "10.11.0.0/16", "scope": 253},
        {"dst": "10.12.0.0/16", "gw": GW4},
        {"dst": "fd00:10::/64", "gw": GW6, "priority": 50, "mtu": 1300},
        // No gateway: straight through eth0, as route-override does.
        {"dst": "fd00:11::/64"}
    ]})
}

#[test]
fn add_routes_with_every_field_in_every_version() {
    for v in VERSIONS {
        let w = World::new();
        let out = w.run("ADD", &w.conf(v, add_routes())).ok().clone();
        assert_eq!(out["cniVersion"], v);
        let k = kroutes(&w.pod, "eth0");
        let find = |dst: &str| {
            k.iter()
                .find(|r| r.dst == dst)
                .unwrap_or_else(|| panic!("{dst} missing: {k:#?}"))
                .clone()
        };
        let r = find("10.10.0.0/16");
        assert_eq!(
            (r.gw.as_deref(), r.table, r.metric, r.mtu, r.advmss, r.proto),
            (Some(GW4), 100, 5, Some(1400), Some(1360), 114)
        );
        let r = find("10.11.0.0/16");
        assert_eq!((r.gw, r.scope, r.proto), (None, 253, 114));
        let r = find("fd00:11::/64");
        assert_eq!((r.gw, r.proto), (None, 114));
        let r = find("fd00:10::/64");
        assert_eq!(
            (r.gw.as_deref(), r.metric, r.mtu),
            (Some(GW6), 50, Some(1300))
        );
        let listed: Vec<&Value> = out["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dst"] == "10.10.0.0/16")
            .collect();
        assert_eq!(listed.len(), 1);
        if v == "1.1.0" {
            assert_eq!(
                *listed[0],
                json!({"dst": "10.10.0.0/16", "gw": GW4, "mtu": 1400, "advmss": 1360, "priority": 5, "table": 100})
            );
        } else {
            // The schema of older versions has no place for these fields.
            assert_eq!(*listed[0], json!({"dst": "10.10.0.0/16", "gw": GW4}));
        }
        let device = out["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == "fd00:11::/64")
            .unwrap();
        if v == "1.1.0" {
            // Said to be on-link rather than via the default gateway.
            assert_eq!(*device, json!({"dst": "fd00:11::/64", "scope": 253}));
        } else {
            assert_eq!(*device, json!({"dst": "fd00:11::/64"}));
        }
        if matches!(v, "0.3.1" | "0.4.0") {
            assert_eq!(out["ips"][0]["version"], "4");
        } else {
            assert!(out["ips"][0].get("version").is_none());
        }
        // The device route stands for itself (no gateway): compare the gateway routes. Below
        // 1.1.0 the result cannot say that 10.10.0.0/16 is in table 100, and the read-back
        // compares the main table only.
        let mut without_dev = out.clone();
        without_dev["routes"].as_array_mut().unwrap().retain(|r| {
            !["10.11.0.0/16", "fd00:11::/64"].contains(&r["dst"].as_str().unwrap())
                && (v == "1.1.0" || r["dst"] != "10.10.0.0/16")
        });
        assert_result_is_kernel(&without_dev, &w.pod, "eth0", GW4, GW6);
    }
}

#[test]
fn steps_run_in_order_flush_then_gateway_then_del_then_add() {
    let w = World::new();
    let eth1 = w.eth1();
    let conf = w.conf(
        "1.1.0",
        json!({
            // Written out of order on purpose: the order is rroutes', not the config's.
            "addRoutes": [
                {"dst": "0.0.0.0/0", "gw": "10.22.0.254"},
                {"dst": "10.9.0.0/16", "gw": "10.22.0.254"},
                {"dst": "::/0", "gw": "fd00:22::fe"}
            ],
            "delRoutes": [{"dst": "10.9.0.0/16"}, {"dst": "10.8.0.0/16"}],
            "flushGateway": true,
            "flushRoutes": true
        }),
    );
    let out = w.run("ADD", &conf).ok().clone();
    let k = kroutes(&w.pod, "eth0");
    // addRoutes ran last: the new default routes and 10.9.0.0/16 survive flushGateway, flushRoutes
    // and delRoutes.
    assert!(has(&k, "0.0.0.0/0", Some("10.22.0.254"), 254), "{k:#?}");
    assert!(has(&k, "::/0", Some("fd00:22::fe"), 254), "{k:#?}");
    assert!(has(&k, "10.9.0.0/16", Some("10.22.0.254"), 254), "{k:#?}");
    // delRoutes ran after flushRoutes: the link-scope route flushRoutes kept is gone.
    assert!(!has(&k, "10.8.0.0/16", None, 254));
    assert!(has(&k, "10.22.0.0/24", None, 254));
    let gw_routes = common::gw_routes(&w.pod, "eth0", true);
    assert_eq!(
        gw_routes,
        [
            "0.0.0.0/0 via 10.22.0.254",
            "10.9.0.0/16 via 10.22.0.254",
            "::/0 via fd00:22::fe"
        ]
    );
    assert_eq!(w.eth1(), eth1);
    assert_eq!(
        out["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "10.22.0.254"},
            {"dst": "10.9.0.0/16", "gw": "10.22.0.254"},
            {"dst": "::/0", "gw": "fd00:22::fe"}
        ])
    );
    assert!(out["ips"][0].get("gateway").is_none());
    assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);
}

#[test]
fn args_cni_overrides_flags_and_extends_lists() {
    let w = World::new();
    let conf = w.conf(
        "1.0.0",
        json!({
            "flushGateway": true,
            "addRoutes": [{"dst": "10.12.0.0/16", "gw": GW4}],
            "args": {"cni": {
                "flushGateway": false,
                // route-override's spelling.
                "delroutes": [{"dst": "10.9.0.0/16"}],
                "addRoutes": [{"dst": "fd00:12::/64", "gw": GW6}],
                "ips": ["10.22.0.5"]
            }}
        }),
    );
    let out = w.run("ADD", &conf).ok().clone();
    let k = kroutes(&w.pod, "eth0");
    assert!(
        has(&k, "0.0.0.0/0", Some(GW4), 254),
        "args turned flushGateway off"
    );
    assert!(has(&k, "10.12.0.0/16", Some(GW4), 254));
    assert!(has(&k, "fd00:12::/64", Some(GW6), 254));
    assert!(!has(&k, "10.9.0.0/16", Some(GW4), 254));
    assert_result_is_kernel(&out, &w.pod, "eth0", GW4, GW6);

    let bad = w.conf(
        "1.0.0",
        json!({"args": {"cni": {"hostRoutes": [{"dst": "10.1.0.0/24", "gw": GW4}]}}}),
    );
    let run = w.run("ADD", &bad);
    assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
    assert!(run.stdout.contains("args.cni.hostRoutes"), "{}", run.stdout);
}

#[test]
fn add_is_idempotent_when_retried() {
    let w = World::new();
    let conf = w.conf(
        "1.1.0",
        json!({"flushGateway": true, "addRoutes": add_routes()["addRoutes"]}),
    );
    let first = w.run("ADD", &conf).ok().clone();
    let kernel = kroutes(&w.pod, "eth0");
    let second = w.run("ADD", &conf).ok().clone();
    assert_eq!(first, second);
    assert_eq!(kroutes(&w.pod, "eth0"), kernel);
}

#[test]
fn prev_result_is_required_code_7() {
    let w = World::new();
    let before = kroutes(&w.pod, "eth0");
    for v in ["0.2.0", "0.3.1", "1.1.0"] {
        let mut conf = w.conf(v, json!({"flushGateway": true}));
        conf.as_object_mut().unwrap().remove("prevResult");
        let run = w.run("ADD", &conf);
        assert_eq!(run.err_code(), Some(7), "{v}: {}", run.stdout);
        assert!(run.stdout.contains("prevResult"), "{}", run.stdout);
        assert_eq!(run.json.as_ref().unwrap()["cniVersion"], v);
    }
    assert_eq!(kroutes(&w.pod, "eth0"), before, "nothing changed");
}

#[test]
fn legacy_0_2_0_prev_result_is_handled() {
    let w = World::new();
    let conf = json!({
        "cniVersion": "0.2.0", "name": "net1", "type": "rroutes",
        "flushGateway": true,
        "addRoutes": [{"dst": "10.12.0.0/16", "gw": GW4}, {"dst": "fd00:12::/64", "gw": GW6}],
        "prevResult": {
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.22.0.5/24", "gateway": GW4, "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": GW4}]},
            "ip6": {"ip": "fd00:22::5/64", "gateway": GW6, "routes": [{"dst": "::/0", "gw": GW6}]},
            "dns": {}
        }
    });
    let out = w.run("ADD", &conf).ok().clone();
    assert_eq!(
        out,
        json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.22.0.5/24", "routes": [{"dst": "10.9.0.0/16", "gw": GW4}, {"dst": "10.12.0.0/16", "gw": GW4}]},
            "ip6": {"ip": "fd00:22::5/64", "routes": [{"dst": "fd00:12::/64", "gw": GW6}]},
            "dns": {}
        })
    );
    let k = kroutes(&w.pod, "eth0");
    assert!(!has(&k, "0.0.0.0/0", Some(GW4), 254));
    assert!(has(&k, "fd00:12::/64", Some(GW6), 254));
}

#[test]
fn kernel_errors_fail_add_with_the_route_named() {
    let w = World::new();
    // Gateway not on any connected network.
    let conf = w.conf(
        "1.0.0",
        json!({"addRoutes": [{"dst": "10.77.0.0/16", "gw": "10.99.0.1"}]}),
    );
    let run = w.run("ADD", &conf);
    assert_eq!(run.err_code(), Some(103), "{}", run.stdout);
    let msg = run.json.as_ref().unwrap()["msg"].as_str().unwrap();
    for part in [
        "addRoutes[0]",
        "10.77.0.0/16 via 10.99.0.1 dev eth0",
        &w.pod_path,
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }

    // A different route under the same identity: refused, naming the one in the way.
    let conf = w.conf(
        "1.0.0",
        json!({"addRoutes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.254"}]}),
    );
    let run = w.run("ADD", &conf);
    assert_eq!(run.err_code(), Some(103), "{}", run.stdout);
    let msg = run.json.as_ref().unwrap()["msg"].as_str().unwrap();
    assert!(
        msg.contains("0.0.0.0/0 via 10.22.0.1 dev eth0") && msg.contains("flushGateway"),
        "{msg}"
    );
    assert!(has(&kroutes(&w.pod, "eth0"), "0.0.0.0/0", Some(GW4), 254));
}

#[test]
fn config_and_environment_errors() {
    let w = World::new();
    let run = w.run(
        "ADD",
        &w.conf("1.0.0", json!({"addRoutes": [{"dst": "nope"}]})),
    );
    assert_eq!(run.err_code(), Some(7));
    assert!(run.stdout.contains("addRoutes[0].dst"), "{}", run.stdout);

    let run = w.run_if("ADD", "eth5", &w.conf("1.0.0", json!({})));
    assert_eq!(run.err_code(), Some(7));
    assert!(run.stdout.contains("CNI_IFNAME=eth5"), "{}", run.stdout);
}
