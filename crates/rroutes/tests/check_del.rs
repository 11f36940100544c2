//! CHECK compares exact routes and catches drift; DEL undoes nothing and always succeeds; GC and
//! STATUS succeed.

mod common;

use cni_testkit::{plugin_bin, run_plugin, Invocation};
use common::{kroutes, World, GW4, GW6};
use serde_json::{json, Value};

fn keys() -> Value {
    json!({
        "flushGateway": true,
        "delRoutes": [{"dst": "10.9.0.0/16"}, {"dst": "fd00:9::/64"}],
        "addRoutes": [
            {"dst": "10.10.0.0/16", "gw": GW4, "mtu": 1400},
            {"dst": "10.11.0.0/16", "gw": GW4, "table": 100, "priority": 7},
            {"dst": "fd00:10::/64", "gw": GW6}
        ]
    })
}

/// ADD, then CHECK with the ADD result as the cached prevResult, as libcni does.
fn added(w: &World, v: &str) -> Value {
    let out = w.run("ADD", &w.conf(v, keys())).ok().clone();
    let mut check = w.conf(v, keys());
    check["prevResult"] = out;
    w.run("CHECK", &check).assert_ok();
    check
}

fn check_fails(w: &World, check: &Value, needle: &str) {
    let run = w.run("CHECK", check);
    assert_eq!(run.err_code(), Some(102), "{}", run.stdout);
    let msg = run.json.as_ref().unwrap()["msg"].as_str().unwrap();
    assert!(msg.contains(needle), "{needle:?} not in {msg}");
}

#[test]
fn check_passes_after_add_in_every_version_with_check() {
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let w = World::new();
        added(&w, v);
    }
}

#[test]
fn check_catches_a_changed_gateway() {
    let w = World::new();
    let check = added(&w, "1.0.0");
    w.pod.ip(&[
        "route",
        "replace",
        "10.10.0.0/16",
        "via",
        "10.22.0.9",
        "mtu",
        "1400",
    ]);
    check_fails(&w, &check, "10.10.0.0/16 via 10.22.0.1");
}

#[test]
fn check_catches_a_changed_mtu_and_metric() {
    let w = World::new();
    let check = added(&w, "1.1.0");
    w.pod.ip(&[
        "route",
        "replace",
        "10.10.0.0/16",
        "via",
        GW4,
        "mtu",
        "1300",
    ]);
    check_fails(&w, &check, "addRoutes[0]");
    w.pod.ip(&[
        "route",
        "replace",
        "10.10.0.0/16",
        "via",
        GW4,
        "mtu",
        "1400",
    ]);
    w.run("CHECK", &check).assert_ok();
    w.pod.ip(&["-6", "route", "del", "fd00:10::/64"]);
    w.pod.ip(&[
        "-6",
        "route",
        "add",
        "fd00:10::/64",
        "via",
        GW6,
        "metric",
        "99",
    ]);
    check_fails(
        &w,
        &check,
        "fd00:10::/64 via fd00:22::1 dev eth0 is missing",
    );
}

#[test]
fn check_does_not_accept_a_covering_route() {
    let w = World::new();
    let check = added(&w, "1.0.0");
    w.pod.ip(&["route", "del", "10.10.0.0/16"]);
    w.pod
        .ip(&["route", "add", "10.0.0.0/8", "via", GW4, "mtu", "1400"]);
    check_fails(
        &w,
        &check,
        "10.10.0.0/16 via 10.22.0.1 dev eth0 mtu 1400 is missing",
    );
}

#[test]
fn check_catches_a_route_in_the_wrong_table() {
    let w = World::new();
    let check = added(&w, "1.1.0");
    w.pod.ip(&["route", "del", "10.11.0.0/16", "table", "100"]);
    w.pod
        .ip(&["route", "add", "10.11.0.0/16", "via", GW4, "metric", "7"]);
    check_fails(
        &w,
        &check,
        "10.11.0.0/16 via 10.22.0.1 dev eth0 table 100 metric 7",
    );
}

#[test]
fn check_catches_deleted_routes_coming_back() {
    let w = World::new();
    let check = added(&w, "1.0.0");
    w.pod.ip(&["route", "add", "10.9.0.0/16", "via", GW4]);
    check_fails(&w, &check, "delRoutes[0]: route 10.9.0.0/16");
    w.pod.ip(&["route", "del", "10.9.0.0/16", "via", GW4]);
    w.pod.ip(&["route", "add", "default", "via", GW4]);
    check_fails(&w, &check, "flushGateway: default route 0.0.0.0/0");
}

#[test]
fn check_flush_routes_accepts_what_the_result_declares_only() {
    let w = World::new();
    let keys = json!({"flushRoutes": true, "addRoutes": [{"dst": "10.10.0.0/16", "gw": GW4}]});
    let out = w.run("ADD", &w.conf("1.0.0", keys.clone())).ok().clone();
    let mut check = w.conf("1.0.0", keys);
    check["prevResult"] = out.clone();
    w.run("CHECK", &check).assert_ok();
    // A later plugin of the chain added a route and listed it: fine.
    w.pod.ip(&["route", "add", "10.20.0.0/16", "via", GW4]);
    check["prevResult"]["routes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"dst": "10.20.0.0/16", "gw": GW4}));
    w.run("CHECK", &check).assert_ok();
    // Someone else's route: not.
    w.pod.ip(&["route", "add", "10.21.0.0/16", "via", GW4]);
    check_fails(&w, &check, "flushRoutes: route 10.21.0.0/16 via 10.22.0.1");
}

#[test]
fn check_needs_prev_result_and_skip_check_skips() {
    let w = World::new();
    let mut check = added(&w, "1.0.0");
    w.pod.ip(&["route", "add", "10.9.0.0/16", "via", GW4]);
    check["skipCheck"] = json!(true);
    w.run("CHECK", &check).assert_ok();
    let mut bare = w.conf("1.0.0", keys());
    bare.as_object_mut().unwrap().remove("prevResult");
    let run = w.run("CHECK", &bare);
    assert_eq!(run.err_code(), Some(7), "{}", run.stdout);
}

#[test]
fn del_undoes_nothing_and_always_succeeds() {
    let w = World::new();
    let check = added(&w, "1.1.0");
    let routes = kroutes(&w.pod, "eth0");
    w.run("DEL", &check).assert_ok();
    w.run("DEL", &check).assert_ok();
    assert_eq!(kroutes(&w.pod, "eth0"), routes);
    let bin = plugin_bin("rroutes");
    // No CNI_NETNS, a netns that is gone, no prevResult: all fine.
    let mut bare = check.clone();
    bare.as_object_mut().unwrap().remove("prevResult");
    for (netns, conf) in [
        (None, &check),
        (Some("/run/netns/rcni-t-gone-0-0"), &check),
        (None, &bare),
    ] {
        run_plugin(
            Some(&w.node),
            &bin,
            &Invocation::new("DEL", "cid-1", netns, "eth0"),
            &conf.to_string(),
        )
        .assert_ok();
    }
}

#[test]
fn gc_and_status_succeed() {
    let w = World::new();
    let bin = plugin_bin("rroutes");
    let mut conf = w.conf("1.1.0", keys());
    conf.as_object_mut().unwrap().remove("prevResult");
    conf["cni.dev/valid-attachments"] = json!([]);
    for verb in ["GC", "STATUS"] {
        run_plugin(
            Some(&w.node),
            &bin,
            &Invocation::new(verb, "", None, ""),
            &conf.to_string(),
        )
        .assert_ok();
    }
}
