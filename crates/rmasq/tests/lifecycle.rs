//! DEL, CHECK, GC and STATUS against the node's real firewall; rule count at scale; parallel
//! calls. Pods are made up (rmasq never enters the pod netns) unless traffic is checked.

mod common;

use cni_testkit::{plugin_bin, run_plugin, source_seen, Invocation};
use common::*;
use serde_json::{json, Value};

const BACKENDS: [&str; 2] = ["nftables", "iptables"];

fn pod_conf(w: &World, backend: &str, n: u32) -> Value {
    let v4 = format!("10.77.{}.{}/16", n / 250, n % 250 + 2);
    let v6 = format!("fd77::{:x}/64", n + 2);
    w.conf(backend, &[&v4, &v6], json!({}))
}

#[test]
fn del_twice_and_without_netns_or_prev_result() {
    for backend in BACKENDS {
        let w = World::new();
        let conf = w.conf(backend, &["10.77.0.9/24"], json!({}));
        w.rmasq("ADD", "c1", &conf).ok();
        assert!(w.rule_count() > 0);
        // As a runtime sends DEL after the pod's netns is gone and without a cached result.
        let mut bare = conf.clone();
        bare.as_object_mut().unwrap().remove("prevResult");
        w.rmasq("DEL", "c1", &bare).assert_ok();
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
        w.rmasq("DEL", "c1", &bare).assert_ok();
        w.rmasq("DEL", "never-added", &conf).assert_ok();
        let check = w.rmasq("CHECK", "c1", &conf);
        assert_eq!(check.err_code(), Some(102), "{}", check.stdout);
        assert!(
            check.stdout.contains("no masquerade state"),
            "{}",
            check.stdout
        );
    }
}

#[test]
fn del_of_a_stale_pod_keeps_the_masquerade_of_the_pod_that_reused_its_address() {
    for backend in BACKENDS {
        let w = World::new();
        let p = w.pod(2);
        let conf = w.conf(backend, &[&format!("{}/24", p.v4)], json!({}));
        // "old" never got its DEL; "new" got the same address.
        w.rmasq("ADD", "old", &conf).ok();
        w.rmasq("ADD", "new", &conf).ok();
        w.rmasq("DEL", "old", &conf).assert_ok();
        w.rmasq("CHECK", "new", &conf).assert_ok();
        assert_eq!(
            source_seen(&p.ns, &w.out, OUT4, 7100),
            Some(ip(NODE_OUT4)),
            "{backend}: the new pod keeps its masquerade\n{}",
            w.node.firewall()
        );
        w.rmasq("DEL", "new", &conf).assert_ok();
        assert_eq!(source_seen(&p.ns, &w.out, OUT4, 7101), None);
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
    }
}

#[test]
fn add_again_without_del_replaces() {
    for backend in BACKENDS {
        let w = World::new();
        w.rmasq("ADD", "c1", &w.conf(backend, &["10.77.0.9/24"], json!({})))
            .ok();
        let moved = w.conf(backend, &["10.78.0.9/24"], json!({}));
        w.rmasq("ADD", "c1", &moved).ok();
        w.rmasq("CHECK", "c1", &moved).assert_ok();
        let fw = w.node.firewall();
        assert!(
            !fw.contains("10.77.0."),
            "{backend}: old address left:\n{fw}"
        );
        w.rmasq("DEL", "c1", &moved).assert_ok();
        assert_eq!(w.rule_count(), 0);
    }
}

/// A retried ADD whose own state record was torn (a disk fault, a hand edit) starts afresh
/// instead of failing until a DEL; the pod's masquerade is whole again and one DEL removes it.
#[test]
fn add_again_over_its_own_torn_record_starts_afresh() {
    for backend in BACKENDS {
        let w = World::new();
        let conf = w.conf(backend, &["10.77.0.9/24"], json!({}));
        w.rmasq("ADD", "c1", &conf).ok();
        let record = w.state.join("attachments/pods/c1:eth0");
        assert!(record.is_file(), "{}", record.display());
        std::fs::write(&record, b"{\"network\":\"pods\",\"contai").unwrap();
        w.rmasq("ADD", "c1", &conf).assert_ok();
        w.rmasq("CHECK", "c1", &conf).assert_ok();
        w.rmasq("DEL", "c1", &conf).assert_ok();
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
    }
}

/// A retried ADD that got the same address (rbridge retried for a live pod, say) leaves the
/// pod's masquerade in place throughout: the rules are not removed and re-created (same nft
/// handles), and one DEL still removes everything.
#[test]
fn add_again_with_the_same_address_keeps_the_rules_in_place() {
    let w = World::new();
    let conf = w.conf("nftables", &["10.77.0.9/24"], json!({}));
    w.rmasq("ADD", "c1", &conf).ok();
    let before = w.node.sh("nft -a list ruleset");
    w.rmasq("ADD", "c1", &conf).ok();
    assert_eq!(w.node.sh("nft -a list ruleset"), before);
    w.rmasq("CHECK", "c1", &conf).assert_ok();
    w.rmasq("DEL", "c1", &conf).assert_ok();
    assert_eq!(w.rule_count(), 0, "{}", w.node.firewall());
}

#[test]
fn check_reports_what_was_deleted_by_hand_and_add_repairs_it() {
    let w = World::new();
    let conf = w.conf("nftables", &["10.77.0.9/24"], json!({}));
    w.rmasq("ADD", "c1", &conf).ok();
    let ch = format!("c_{}", w.class_id("nftables", "10.77.0.9/24"));
    w.node.sh(&format!(
        "nft delete element inet rmasq {ch}_pods {{ 10.77.0.9 }}"
    ));
    let out = w.rmasq("CHECK", "c1", &conf);
    assert_eq!(out.err_code(), Some(102), "{}", out.stdout);
    assert!(out.stdout.contains("element 10.77.0.9"), "{}", out.stdout);
    w.rmasq("ADD", "c1", &conf).ok();
    w.rmasq("CHECK", "c1", &conf).assert_ok();
    w.node.sh(&format!("nft flush chain inet rmasq {ch}"));
    let out = w.rmasq("CHECK", "c1", &conf);
    assert_eq!(out.err_code(), Some(102));
    assert!(
        out.stdout.contains("masquerade") || out.stdout.contains("return"),
        "{}",
        out.stdout
    );
    // Another pod's ADD rewrites the class's rules.
    w.rmasq(
        "ADD",
        "c2",
        &w.conf("nftables", &["10.77.0.10/24"], json!({})),
    )
    .ok();
    w.rmasq("CHECK", "c1", &conf).assert_ok();

    let conf = w.conf("iptables", &["10.77.0.9/24"], json!({}));
    w.rmasq("ADD", "i1", &conf).ok();
    let chain = format!("RMASQ-{}", w.class_id("iptables", "10.77.0.9/24"));
    w.node.sh(&format!(
        "iptables -w -t nat -D {chain} -d 10.77.0.0/24 -j RETURN"
    ));
    let out = w.rmasq("CHECK", "i1", &conf);
    assert_eq!(out.err_code(), Some(102), "{}", out.stdout);
    assert!(
        out.stdout.contains("-d 10.77.0.0/24 -j RETURN"),
        "{}",
        out.stdout
    );
    // Another pod's ADD finds the class's chain changed and rewrites it.
    w.rmasq(
        "ADD",
        "i2",
        &w.conf("iptables", &["10.77.0.10/24"], json!({})),
    )
    .ok();
    w.rmasq("CHECK", "i1", &conf).assert_ok();
    w.node.sh("iptables -w -F FORWARD");
    let out = w.rmasq("CHECK", "i1", &conf);
    assert_eq!(out.err_code(), Some(102), "{}", out.stdout);
    assert!(out.stdout.contains("RMASQ-FORWARD"), "{}", out.stdout);
    w.rmasq(
        "ADD",
        "i3",
        &w.conf("iptables", &["10.77.0.11/24"], json!({})),
    )
    .ok();
    w.rmasq("CHECK", "i1", &conf).assert_ok();

    // CHECK compares with prevResult and config too.
    let other = w.conf("iptables", &["10.77.0.12/24"], json!({}));
    assert_eq!(w.rmasq("CHECK", "i1", &other).err_code(), Some(102));
    let changed = w.conf(
        "iptables",
        &["10.77.0.9/24"],
        json!({"masqLinkLocal": true}),
    );
    assert_eq!(w.rmasq("CHECK", "i1", &changed).err_code(), Some(102));
}

fn gc(w: &World, backend: &str, valid: &[&str]) {
    gc_with(w, backend, valid, json!({}));
}

fn gc_with(w: &World, backend: &str, valid: &[&str], extra: Value) {
    let mut conf = w.conf(backend, &["10.77.0.2/24"], extra);
    conf.as_object_mut().unwrap().remove("prevResult");
    conf["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|c| json!({"containerID": c, "ifname": "eth0"}))
        .collect();
    let inv = Invocation::new("GC", "", None, "");
    run_plugin(Some(&w.node), &plugin_bin("rmasq"), &inv, &conf.to_string()).assert_ok();
}

#[test]
fn gc_removes_attachments_not_listed() {
    for backend in BACKENDS {
        let w = World::new();
        let confs: Vec<Value> = (0..3).map(|n| pod_conf(&w, backend, n)).collect();
        for (n, conf) in confs.iter().enumerate() {
            w.rmasq("ADD", &format!("c{n}"), conf).ok();
        }
        // Another network's attachment is not this GC's business.
        let mut other = pod_conf(&w, backend, 7);
        other["name"] = json!("other");
        w.rmasq("ADD", "c9", &other).ok();
        gc(&w, backend, &["c1"]);
        w.rmasq("CHECK", "c1", &confs[1]).assert_ok();
        w.rmasq("CHECK", "c9", &other).assert_ok();
        for n in [0, 2] {
            let out = w.rmasq("CHECK", &format!("c{n}"), &confs[n]);
            assert_eq!(out.err_code(), Some(102), "{backend} c{n}: {}", out.stdout);
        }
        if backend == "nftables" {
            let fw = w.node.firewall();
            assert!(
                !fw.contains("10.77.0.2,") && !fw.contains("10.77.0.2 "),
                "{fw}"
            );
            assert!(fw.contains("10.77.0.3"), "{fw}");
        }
        gc(&w, backend, &[]);
        // The other network's rules, forward accepts included, are untouched.
        w.rmasq("CHECK", "c9", &other).assert_ok();
        w.rmasq("DEL", "c9", &other).assert_ok();
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
        let left = std::fs::read_dir(w.state.join("attachments/pods"))
            .unwrap()
            .count();
        assert_eq!(left, 0);
    }
}

/// What an ADD wrote after the runtime drew up its list (`rcni.dev/keep-created-after`) stays,
/// listed or not; what is older goes.
#[test]
fn gc_keeps_what_was_added_after_keep_after() {
    for backend in BACKENDS {
        let w = World::new();
        let confs: Vec<Value> = (0..2).map(|n| pod_conf(&w, backend, n)).collect();
        for (n, conf) in confs.iter().enumerate() {
            w.rmasq("ADD", &format!("c{n}"), conf).ok();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(w.state.join("attachments/pods/c0:eth0"))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            - 60.0;
        gc_with(
            &w,
            backend,
            &[],
            json!({"rcni.dev/keep-created-after": since}),
        );
        w.rmasq("CHECK", "c1", &confs[1]).assert_ok();
        let out = w.rmasq("CHECK", "c0", &confs[0]);
        assert_eq!(out.err_code(), Some(102), "{backend} c0: {}", out.stdout);
        w.rmasq("DEL", "c1", &confs[1]).assert_ok();
    }
}

#[test]
fn rule_count_does_not_grow_with_pods() {
    for backend in BACKENDS {
        let w = World::new();
        let mut counts = Vec::new();
        let mut n = 0;
        for target in [10, 300] {
            while n < target {
                w.rmasq("ADD", &format!("c{n}"), &pod_conf(&w, backend, n))
                    .ok();
                n += 1;
            }
            counts.push(w.rule_count());
        }
        assert!(counts[0] > 0);
        assert_eq!(counts[0], counts[1], "{backend}: rules at 10 and 300 pods");
        w.rmasq("CHECK", "c123", &pod_conf(&w, backend, 123))
            .assert_ok();
    }
}

#[test]
fn parallel_add_and_del_are_safe() {
    for backend in BACKENDS {
        let w = World::new();
        let pods: Vec<u32> = (0..48).collect();
        let run_all = |verb: &'static str| {
            std::thread::scope(|s| {
                for chunk in pods.chunks(6) {
                    let w = &w;
                    s.spawn(move || {
                        for n in chunk {
                            w.rmasq(verb, &format!("c{n}"), &pod_conf(w, backend, *n))
                                .assert_ok();
                        }
                    });
                }
            })
        };
        run_all("ADD");
        for n in &pods {
            w.rmasq("CHECK", &format!("c{n}"), &pod_conf(&w, backend, *n))
                .assert_ok();
        }
        run_all("DEL");
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
        assert!(
            !w.state.join("members").exists()
                || std::fs::read_dir(w.state.join("members")).unwrap().count() == 0
        );
    }
}

#[test]
fn status_and_default_backend() {
    let w = World::new();
    for backend in BACKENDS {
        let conf = w.conf(backend, &[], json!({}));
        let inv = Invocation::new("STATUS", "", None, "");
        run_plugin(Some(&w.node), &plugin_bin("rmasq"), &inv, &conf.to_string()).assert_ok();
        let broken = inv.clone().with_env("PATH", "/nonexistent");
        let out = run_plugin(
            Some(&w.node),
            &plugin_bin("rmasq"),
            &broken,
            &conf.to_string(),
        );
        assert_eq!(out.err_code(), Some(50), "{backend}: {}", out.stdout);
    }
    // No backend named, nothing but iptables-nft tables on the node: iptables, remembered.
    w.node.sh("iptables -t nat -S >/dev/null");
    let mut conf = w.conf("", &["10.77.0.9/24"], json!({}));
    conf.as_object_mut().unwrap().remove("backend");
    w.rmasq("ADD", "c1", &conf).ok();
    assert_eq!(
        std::fs::read_to_string(w.state.join("default-backend")).unwrap(),
        "iptables"
    );
    assert!(w.node.sh("iptables-save -t nat").contains("RMASQ-"));
    w.rmasq("DEL", "c1", &conf).assert_ok();

    // A node with nftables tables of its own: nftables.
    let w = World::new();
    w.node.sh("nft add table inet mine");
    w.rmasq("ADD", "c1", &conf_with_state(&w, &conf)).ok();
    assert_eq!(
        std::fs::read_to_string(w.state.join("default-backend")).unwrap(),
        "nftables"
    );
    assert!(w.node.sh("nft list tables").contains("inet rmasq"));
}

fn conf_with_state(w: &World, conf: &Value) -> Value {
    let mut c = conf.clone();
    c["stateDir"] = json!(w.state.display().to_string());
    c
}

#[test]
fn failed_add_leaves_nothing() {
    for backend in BACKENDS {
        let w = World::new();
        let conf = w.conf(backend, &["10.77.0.9/24"], json!({}));
        let inv = Invocation::new("ADD", "c1", Some("/proc/self/ns/net"), "eth0")
            .with_env("PATH", "/nonexistent");
        let out = run_plugin(Some(&w.node), &plugin_bin("rmasq"), &inv, &conf.to_string());
        assert_eq!(out.err_code(), Some(105), "{backend}: {}", out.stdout);
        assert!(
            out.stdout.contains(backend.trim_end_matches("tables")),
            "{}",
            out.stdout
        );
        let check = w.rmasq("CHECK", "c1", &conf);
        assert!(
            check.stdout.contains("no masquerade state"),
            "{}",
            check.stdout
        );
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
    }
}

/// A second pod of a class only looks at the iptables rules: same rule handles (iptables-nft).
#[test]
fn iptables_second_pod_does_not_rewrite_rules() {
    let w = World::new();
    w.rmasq("ADD", "c0", &pod_conf(&w, "iptables", 0)).ok();
    let snapshot = || {
        w.node
            // Stateless (-s): counters move with any packet the node sends meanwhile.
            .sh("nft -s -a list table ip nat; nft -s -a list table ip6 nat; nft -s -a list table ip filter")
    };
    let before = snapshot();
    assert!(before.contains("RMASQ-"), "{before}");
    w.rmasq("ADD", "c1", &pod_conf(&w, "iptables", 1)).ok();
    w.rmasq("DEL", "c1", &pod_conf(&w, "iptables", 1))
        .assert_ok();
    assert_eq!(before, snapshot());
}
