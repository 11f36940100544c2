//! The hot path: once a class exists, ADD and DEL of its pods run no process (set elements over
//! netlink, iptables rules looked at through a fingerprint), and anything changed by hand in the
//! class's rules sends the next ADD through the full path, which repairs it. `nft`, `iptables`
//! and `ip6tables` are wrapped to log every run.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cni_testkit::{plugin_bin, run_plugin, temp_dir, Invocation, PluginRun, TempDir};
use common::*;
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
            ("iptables-save", "iptables-save"),
            ("ip6tables-save", "ip6tables-save"),
            ("iptables-restore", "iptables-restore"),
            ("ip6tables-restore", "ip6tables-restore"),
        ])
    }

    /// iptables and ip6tables are the legacy (x_tables) ones.
    fn legacy() -> Tools {
        Tools::with(&[
            ("nft", "nft"),
            ("iptables", "iptables-legacy"),
            ("ip6tables", "ip6tables-legacy"),
            ("iptables-save", "iptables-legacy-save"),
            ("ip6tables-save", "ip6tables-legacy-save"),
            ("iptables-restore", "iptables-legacy-restore"),
            ("ip6tables-restore", "ip6tables-legacy-restore"),
        ])
    }

    /// As `new`, but `iptables-restore` and `ip6tables-restore` are links to the real ones, as
    /// on a node (so rmasq sees iptables-nft behind them), and so not logged.
    fn nft_links() -> Tools {
        let t = Tools::with(&[
            ("nft", "nft"),
            ("iptables", "iptables"),
            ("ip6tables", "ip6tables"),
            ("iptables-save", "iptables-save"),
            ("ip6tables-save", "ip6tables-save"),
        ]);
        for tool in ["iptables-restore", "ip6tables-restore"] {
            std::os::unix::fs::symlink(real(tool), t.dir.join(tool)).unwrap();
        }
        t
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

/// The tools a call ran, by name, sorted: `["ip6tables-restore", "ip6tables-save", ...]`.
fn tool_names(runs: Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = runs
        .iter()
        .filter_map(|r| r.split(' ').next().map(String::from))
        .collect();
    names.sort();
    names
}

#[test]
fn a_class_comes_and_goes_in_one_restore_per_family() {
    // On a node without rules of ours the first ADD needs no iptables-save.
    let add = ["ip6tables-restore", "iptables-restore"];
    let per_family = [
        "ip6tables-restore",
        "ip6tables-save",
        "iptables-restore",
        "iptables-save",
    ];
    for (backend, expected_add, expected) in [
        ("iptables", add.to_vec(), per_family.to_vec()),
        (
            "nftables",
            [&add[..], &["nft"]].concat(),
            [&per_family[..], &["nft"]].concat(),
        ),
    ] {
        let w = World::new();
        let tools = Tools::new();
        let conf = pod(&w, backend, 0);
        call(&w, &tools, "ADD", "c0", &conf).assert_ok();
        assert_eq!(
            tool_names(tools.take()),
            expected_add,
            "{backend}: the first pod's ADD"
        );
        assert!(w.rule_count() > 0, "{backend}:\n{}", w.node.firewall());
        w.rmasq("CHECK", "c0", &conf).assert_ok();
        tools.take();
        call(&w, &tools, "DEL", "c0", &conf).assert_ok();
        assert_eq!(
            tool_names(tools.take()),
            expected,
            "{backend}: the last pod's DEL"
        );
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
    }
}

/// The ruleset generation of the node: every nf_tables transaction bumps it.
fn generation(w: &World) -> u32 {
    w.node.within(|| {
        cni_netlink::netfilter::Netfilter::open()
            .and_then(|mut nl| nl.generation())
            .unwrap()
    })
}

/// Where iptables is iptables-nft, a class's first ADD and last DEL run no iptables tool: one
/// nf_tables transaction per family writes or removes the nat rules and forward accepts
/// together (iptables-restore would make one per table).
#[test]
fn on_iptables_nft_a_class_comes_and_goes_in_one_transaction_per_family() {
    for (backend, tools_run) in [("iptables", vec![]), ("nftables", vec!["nft".to_string()])] {
        let w = World::new();
        let tools = Tools::nft_links();
        let conf = pod(&w, backend, 0);
        let before = generation(&w);
        call(&w, &tools, "ADD", "c0", &conf).assert_ok();
        assert_eq!(tool_names(tools.take()), tools_run, "{backend}: first ADD");
        if backend == "iptables" {
            assert_eq!(generation(&w) - before, 2, "{backend}: one per family");
        }
        let saved = w.node.sh("iptables-save; ip6tables-save");
        assert!(saved.contains("-j RMASQ-FORWARD"), "{saved}");
        assert_eq!(
            saved.contains("-j MASQUERADE"),
            backend == "iptables",
            "{saved}"
        );
        w.rmasq("CHECK", "c0", &conf).assert_ok();
        tools.take();
        let before = generation(&w);
        call(&w, &tools, "DEL", "c0", &conf).assert_ok();
        assert_eq!(tool_names(tools.take()), tools_run, "{backend}: last DEL");
        if backend == "iptables" {
            assert_eq!(generation(&w) - before, 2, "{backend}: one per family");
        }
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
    }
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
        assert_eq!(w.rule_count(), 0, "{backend}:\n{}", w.node.firewall());
    }
}

/// Changes by hand, each followed by an ADD of a new pod of the class: it must notice, run the
/// tools and leave the first pod's CHECK passing; the ADD after that is quiet again. Commands
/// starting with `!` remove the first pod's set element too (the full path writes the class
/// and the new pod's element, not the elements of pods added before), so only the new pod is
/// checked after them. `{id4}` and `{id6}` in a command stand for the ids of the first pod's
/// IPv4 and IPv6 classes, read from the state dir once they exist.
fn damage_is_repaired(backend: &str, damage: &[&str]) {
    damage_is_repaired_with(backend, Tools::new(), damage)
}

fn damage_is_repaired_with(backend: &str, tools: Tools, damage: &[&str]) {
    let w = World::new();
    let first = pod(&w, backend, 0);
    call(&w, &tools, "ADD", "c0", &first).ok();
    tools.take();
    let id4 = w.class_id(backend, "10.77.0.2/24");
    let id6 = w.class_id(backend, "fd77::2/64");
    for (i, cmd) in damage.iter().enumerate() {
        let (cmd, loses_elements) = match cmd.strip_prefix('!') {
            Some(cmd) => (cmd, true),
            None => (*cmd, false),
        };
        let cmd = cmd.replace("{id4}", &id4).replace("{id6}", &id6);
        let cmd = cmd.as_str();
        w.node.sh(cmd);
        let n = 10 + i as u32;
        let conf = pod(&w, backend, n);
        call(&w, &tools, "ADD", &format!("c{n}"), &conf).ok();
        assert!(
            !tools.take().is_empty(),
            "{backend}: `{cmd}` went unnoticed:\n{}",
            w.node.firewall()
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
    damage_is_repaired(
        "nftables",
        &[
            "nft flush set inet rmasq c_{id4}_skip",
            "nft delete element inet rmasq c_{id4}_skip { 169.254.0.0/16 }",
            "nft add element inet rmasq c_{id6}_skip { 2001:db8::/32 }",
            "nft flush chain inet rmasq c_{id4}",
            "nft insert rule inet rmasq c_{id4} accept",
            "nft 'delete rule inet rmasq c_{id6} handle '$(nft -a list chain inet rmasq c_{id6} | awk '/masquerade/ {print $NF}')",
            "nft flush chain inet rmasq postrouting",
            "nft add rule inet rmasq postrouting ip saddr 10.0.0.0/8 accept",
            "!nft delete table inet rmasq",
            "!nft flush ruleset",
            // The forward accepts live in iptables.
            "iptables -w -F FORWARD",
            "ip6tables -w -F RMASQ-FORWARD",
        ],
    );
}

#[test]
fn iptables_changes_by_hand_are_noticed_and_repaired() {
    damage_is_repaired(
        "iptables",
        &[
            "iptables -w -t nat -F RMASQ-{id4}",
            "iptables -w -t nat -D RMASQ-{id4} -d 169.254.0.0/16 -j RETURN",
            "ip6tables -w -t nat -I RMASQ-{id6} -j ACCEPT",
            "iptables -w -t nat -F POSTROUTING",
            "ip6tables -w -t nat -F POSTROUTING",
            "iptables -w -F FORWARD",
            "iptables -w -F RMASQ-FORWARD",
            "nft flush ruleset",
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
    let id = w.class_id("iptables", "10.77.0.2/24");
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
    damage_is_repaired_with(
        "iptables",
        Tools::legacy(),
        &[
            "iptables-legacy -w -t nat -D RMASQ-{id4} -d 169.254.0.0/16 -j RETURN",
            "ip6tables-legacy -w -t nat -F POSTROUTING",
            "iptables-legacy -w -F FORWARD",
            "iptables-legacy -w -A RMASQ-FORWARD -j DROP",
        ],
    );
}

/// A class's first ADD where another class's rules are there reads them first: the shared
/// forward chain keeps the other's accepts and is jumped to once.
#[test]
fn a_second_class_reads_what_is_there() {
    let w = World::new();
    let tools = Tools::new();
    let first = pod(&w, "iptables", 0);
    let mut second = w.conf("iptables", &["10.78.0.2/24", "fd78::2/64"], json!({}));
    second["name"] = json!("others");
    call(&w, &tools, "ADD", "c0", &first).assert_ok();
    tools.take();
    call(&w, &tools, "ADD", "c1", &second).assert_ok();
    let runs = tool_names(tools.take());
    assert!(runs.contains(&"iptables-save".to_string()), "{runs:?}");
    let filter = w.node.sh("iptables -S FORWARD; iptables -S RMASQ-FORWARD");
    let count = |needle: &str| filter.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("-A FORWARD -j RMASQ-FORWARD"), 1, "{filter}");
    assert_eq!(count("-s 10.77.0.0/24"), 1, "{filter}");
    assert_eq!(count("-s 10.78.0.0/24"), 1, "{filter}");
    w.rmasq("CHECK", "c0", &first).assert_ok();
    w.rmasq("CHECK", "c1", &second).assert_ok();
    call(&w, &tools, "DEL", "c0", &first).assert_ok();
    call(&w, &tools, "DEL", "c1", &second).assert_ok();
    assert_eq!(w.rule_count(), 0, "{}", w.node.firewall());
}
