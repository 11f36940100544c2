//! The hot path: once a class exists, ADD and DEL of its pods run no process (set elements over
//! netlink, iptables rules looked at through a fingerprint), and anything changed by hand in the
//! class's rules sends the next ADD through the full path, which repairs it. `nft`, `iptables`
//! and `ip6tables` are wrapped to log every run.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cni_testkit::{plugin_bin, run_plugin, temp_dir, Invocation, PluginRun, TempDir};
use common::*;
use rmasq::{BackendKind, Class, Options};
use serde_json::{json, Value};

/// A PATH holding logging wrappers of the firewall tools.
struct Tools {
    dir: TempDir,
}

fn real(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed"))
}

impl Tools {
    fn new() -> Tools {
        Tools::with(&[
            ("nft", "nft"),
            ("iptables", "iptables"),
            ("ip6tables", "ip6tables"),
        ])
    }

    /// iptables and ip6tables are the legacy (x_tables) ones.
    fn legacy() -> Tools {
        Tools::with(&[
            ("nft", "nft"),
            ("iptables", "iptables-legacy"),
            ("ip6tables", "ip6tables-legacy"),
        ])
    }

    fn with(tools: &[(&str, &str)]) -> Tools {
        let dir = temp_dir("rmasq-tools");
        for (tool, program) in tools {
            let script = format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {log}\nexec {real} \"$@\"\n",
                log = dir.join("log").display(),
                real = real(program).display()
            );
            let path = dir.join(tool);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Tools { dir }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// The tools run since the last call.
    fn take(&self) -> Vec<String> {
        let log = self.dir.join("log");
        let runs = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        runs.lines().map(str::to_string).collect()
    }
}

fn pod(w: &World, backend: &str, n: u32) -> Value {
    w.conf(
        backend,
        &[
            &format!("10.77.0.{}/24", n + 2),
            &format!("fd77::{:x}/64", n + 2),
        ],
        json!({}),
    )
}

fn call(w: &World, tools: &Tools, verb: &str, cid: &str, conf: &Value) -> PluginRun {
    let netns = w.node.path().display().to_string();
    let netns = matches!(verb, "ADD" | "CHECK").then_some(netns.as_str());
    let inv = Invocation::new(verb, cid, netns, "eth0")
        .with_env("PATH", tools.path().display().to_string());
    run_plugin(Some(&w.node), &plugin_bin("rmasq"), &inv, &conf.to_string())
}

fn class_id(backend: &str, addr: &str) -> String {
    let kind = if backend == "nftables" {
        BackendKind::Nftables
    } else {
        BackendKind::Iptables
    };
    let a = addr.parse().unwrap();
    Class::new(kind, "pods", a, &[a], &Options::default()).id
}

#[test]
fn pods_of_an_existing_class_run_no_process() {
    for backend in ["nftables", "iptables"] {
        let w = World::new();
        let tools = Tools::new();
        call(&w, &tools, "ADD", "c0", &pod(&w, backend, 0)).ok();
        assert!(
            !tools.take().is_empty(),
            "{backend}: the first pod writes the rules"
        );
        for n in 1..4 {
            call(&w, &tools, "ADD", &format!("c{n}"), &pod(&w, backend, n)).ok();
            assert_eq!(
                tools.take(),
                Vec::<String>::new(),
                "{backend}: ADD of pod {n}"
            );
        }
        call(&w, &tools, "DEL", "c2", &pod(&w, backend, 2)).assert_ok();
        assert_eq!(tools.take(), Vec::<String>::new(), "{backend}: DEL");
        for n in [0, 1, 3] {
            w.rmasq("CHECK", &format!("c{n}"), &pod(&w, backend, n))
                .assert_ok();
        }
        if backend == "nftables" {
            let set = w.node.sh("nft list table inet rmasq");
            assert!(
                set.contains("10.77.0.3") && set.contains("fd77::5"),
                "{set}"
            );
            assert!(
                !set.contains("10.77.0.4") && !set.contains("fd77::4"),
                "{set}"
            );
        }
        // A retried ADD (same attachment) replaces its own entries without a process either.
        call(&w, &tools, "ADD", "c1", &pod(&w, backend, 1)).ok();
        assert_eq!(tools.take(), Vec::<String>::new(), "{backend}: ADD again");
        w.rmasq("CHECK", "c1", &pod(&w, backend, 1)).assert_ok();
        for n in [0, 1, 3] {
            call(&w, &tools, "DEL", &format!("c{n}"), &pod(&w, backend, n)).assert_ok();
        }
        assert!(
            !tools.take().is_empty(),
            "{backend}: the last pod removes the rules"
        );
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.firewall());
    }
}

/// Changes by hand, each followed by an ADD of a new pod of the class: it must notice, run the
/// tools and leave the first pod's CHECK passing; the ADD after that is quiet again. Commands
/// starting with `!` remove the first pod's set element too (the full path writes the class
/// and the new pod's element, not the elements of pods added before), so only the new pod is
/// checked after them.
fn damage_is_repaired(backend: &str, damage: &[String]) {
    damage_is_repaired_with(backend, Tools::new(), damage)
}

fn damage_is_repaired_with(backend: &str, tools: Tools, damage: &[String]) {
    let w = World::new();
    let first = pod(&w, backend, 0);
    call(&w, &tools, "ADD", "c0", &first).ok();
    tools.take();
    for (i, cmd) in damage.iter().enumerate() {
        let (cmd, loses_elements) = match cmd.strip_prefix('!') {
            Some(cmd) => (cmd, true),
            None => (cmd.as_str(), false),
        };
        w.node.sh(cmd);
        let n = 10 + i as u32;
        let conf = pod(&w, backend, n);
        call(&w, &tools, "ADD", &format!("c{n}"), &conf).ok();
        assert!(
            !tools.take().is_empty(),
            "{backend}: `{cmd}` went unnoticed:\n{}",
            w.firewall()
        );
        if loses_elements {
            // Put the first pod back as a runtime would: DEL and ADD again.
            call(&w, &tools, "DEL", "c0", &first).assert_ok();
            call(&w, &tools, "ADD", "c0", &first).ok();
            tools.take();
        }
        call(&w, &tools, "CHECK", "c0", &first).assert_ok();
        call(&w, &tools, "CHECK", &format!("c{n}"), &conf).assert_ok();
        tools.take();
        call(&w, &tools, "DEL", &format!("c{n}"), &conf).assert_ok();
        call(&w, &tools, "ADD", "c1", &pod(&w, backend, 1)).ok();
        call(&w, &tools, "DEL", "c1", &pod(&w, backend, 1)).assert_ok();
        assert_eq!(
            tools.take(),
            Vec::<String>::new(),
            "{backend}: after repairing `{cmd}`"
        );
    }
}

#[test]
fn nftables_changes_by_hand_are_noticed_and_repaired() {
    let ch = format!("c_{}", class_id("nftables", "10.77.0.2/24"));
    let ch6 = format!("c_{}", class_id("nftables", "fd77::2/64"));
    let t = "inet rmasq";
    damage_is_repaired(
        "nftables",
        &[
            format!("nft flush set {t} {ch}_skip"),
            format!("nft delete element {t} {ch}_skip {{ 169.254.0.0/16 }}"),
            format!("nft add element {t} {ch6}_skip {{ 2001:db8::/32 }}"),
            format!("nft flush chain {t} {ch}"),
            format!("nft insert rule {t} {ch} accept"),
            format!("nft 'delete rule {t} {ch6} handle '$(nft -a list chain {t} {ch6} | awk '/masquerade/ {{print $NF}}')"),
            format!("nft flush chain {t} postrouting"),
            format!("nft add rule {t} postrouting ip saddr 10.0.0.0/8 accept"),
            format!("!nft delete table {t}"),
            "!nft flush ruleset".to_string(),
            // The forward accepts live in iptables.
            "iptables -w -F FORWARD".to_string(),
            "ip6tables -w -F RMASQ-FORWARD".to_string(),
        ],
    );
}

#[test]
fn iptables_changes_by_hand_are_noticed_and_repaired() {
    let chain = format!("RMASQ-{}", class_id("iptables", "10.77.0.2/24"));
    let chain6 = format!("RMASQ-{}", class_id("iptables", "fd77::2/64"));
    damage_is_repaired(
        "iptables",
        &[
            format!("iptables -w -t nat -F {chain}"),
            format!("iptables -w -t nat -D {chain} -d 169.254.0.0/16 -j RETURN"),
            format!("ip6tables -w -t nat -I {chain6} -j ACCEPT"),
            "iptables -w -t nat -F POSTROUTING".to_string(),
            "ip6tables -w -t nat -F POSTROUTING".to_string(),
            "iptables -w -F FORWARD".to_string(),
            "iptables -w -F RMASQ-FORWARD".to_string(),
            "nft flush ruleset".to_string(),
        ],
    );
}

/// nf_tables' generation moves with any table's change: the iptables backend then reads the
/// class's chains again, finds them as they were and stays quiet (storing the new generation),
/// and a change made after that is still noticed.
#[test]
fn iptables_classes_stay_quiet_through_other_nf_tables_changes() {
    let w = World::new();
    let tools = Tools::new();
    let first = pod(&w, "iptables", 0);
    call(&w, &tools, "ADD", "c0", &first).ok();
    tools.take();
    let id = class_id("iptables", "10.77.0.2/24");
    let gen = || {
        let fp = std::fs::read_to_string(w.state.join("verified").join(&id)).unwrap();
        fp.lines()
            .find(|l| l.starts_with("gen "))
            .unwrap()
            .to_string()
    };
    for n in 1..4 {
        let before = gen();
        w.node.sh(&format!("nft add table inet elsewhere{n}"));
        call(&w, &tools, "ADD", &format!("c{n}"), &pod(&w, "iptables", n)).ok();
        assert_eq!(tools.take(), Vec::<String>::new(), "ADD of pod {n}");
        assert_ne!(gen(), before, "the moved generation is stored");
    }
    let chain = format!("RMASQ-{id}");
    w.node.sh(&format!(
        "iptables -w -t nat -D {chain} -d 169.254.0.0/16 -j RETURN"
    ));
    call(&w, &tools, "ADD", "c9", &pod(&w, "iptables", 9)).ok();
    assert!(!tools.take().is_empty(), "the deleted rule went unnoticed");
    call(&w, &tools, "CHECK", "c0", &first).assert_ok();
}

/// iptables-legacy keeps no rule handles: its fingerprint is the tables' entry count and size.
#[test]
fn iptables_legacy_changes_are_noticed_and_repaired() {
    let chain = format!("RMASQ-{}", class_id("iptables", "10.77.0.2/24"));
    damage_is_repaired_with(
        "iptables",
        Tools::legacy(),
        &[
            format!("iptables-legacy -w -t nat -D {chain} -d 169.254.0.0/16 -j RETURN"),
            "ip6tables-legacy -w -t nat -F POSTROUTING".to_string(),
            "iptables-legacy -w -F FORWARD".to_string(),
            "iptables-legacy -w -A RMASQ-FORWARD -j DROP".to_string(),
        ],
    );
}
