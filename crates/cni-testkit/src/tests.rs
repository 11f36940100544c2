//! These tests need root; they only create namespaces of their own.

use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

fn netns_listed(name: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// The inode of the network namespace the command runs in, as `readlink` prints it.
fn own_netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn netns_names_are_unique_and_deleted_on_drop() {
    let a = Netns::new("pod");
    let b = Netns::new("pod");
    assert_ne!(a.name(), b.name());
    for ns in [&a, &b] {
        assert!(ns.name().starts_with("rcni-t-pod-"), "{}", ns.name());
        assert!(ns.name().len() <= 30, "{}", ns.name());
        assert!(ns.path().exists());
        assert_eq!(ns.path(), Path::new("/run/netns").join(ns.name()));
        assert!(netns_listed(ns.name()));
    }
    let (name, path) = (a.name().to_string(), a.path());
    drop(a);
    assert!(!path.exists(), "{} still exists", path.display());
    assert!(!netns_listed(&name));
    assert!(netns_listed(b.name()));
}

#[test]
fn netns_deleted_when_test_panics() {
    let mut name = String::new();
    let res = catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("pnc");
        name = ns.name().to_string();
        panic!("deliberate");
    }));
    assert!(res.is_err());
    assert!(!name.is_empty());
    assert!(!netns_listed(&name));
}

#[test]
fn exec_runs_inside_the_namespace() {
    let ns = Netns::new("pod");
    let out = ns.exec("ip", &["-j", "link"]);
    assert!(out.status.success());
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<_> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].clone())
        .collect();
    assert_eq!(names, ["lo"]);

    let lo = ns.link("lo").unwrap();
    assert!(lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(ns.links().len(), 1);
    assert!(ns.link("eth0").is_none());
    assert_eq!(ns.addrs("lo"), ["127.0.0.1/8", "::1/128"]);
    assert!(ns.addrs("eth0").is_empty());

    let inside = ns.sh("readlink /proc/self/ns/net");
    assert_ne!(inside.trim(), own_netns_id());
    assert!(ns
        .try_sh("echo oops >&2; exit 3")
        .unwrap_err()
        .contains("oops"));
    assert_eq!(ns.sh("echo hi"), "hi\n");
}

#[test]
fn veth_connects_two_namespaces() {
    let a = Netns::new("node");
    let b = Netns::new("out");
    a.veth_to(&b, "va", "vb", "10.9.0.1/24", "10.9.0.2/24");
    a.sh("ping -c1 -W1 10.9.0.2");
    b.sh("ping -c1 -W1 10.9.0.1");

    assert_eq!(a.addrs("va"), ["10.9.0.1/24"]);
    assert!(a.addrs_all("va").iter().any(|x| x.starts_with("fe80:")));
    assert_eq!(a.link("va").unwrap()["linkinfo"]["info_kind"], "veth");
    assert!(a.link("vb").is_none() && b.link("vb").is_some());
    let routes = a.routes(4);
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "10.9.0.0/24" && r["dev"] == "va"),
        "{routes:?}"
    );
    assert!(a
        .routes_table(4, "local")
        .iter()
        .any(|r| r["dst"] == "10.9.0.1"));

    // IPv6 on a second pair, usable at once thanks to nodad.
    a.veth_to(&b, "va6", "vb6", "fd00:9::1/64", "fd00:9::2/64");
    a.sh("ping -6 -c1 -W1 fd00:9::2");
    assert_eq!(b.addrs("vb6"), ["fd00:9::2/64"]);
    assert!(a.routes(6).iter().any(|r| r["dst"] == "fd00:9::/64"));

    // An address-less pair.
    a.veth_to(&b, "vn", "vm", "", "");
    assert!(a.addrs("vn").is_empty() && b.addrs("vm").is_empty());
}

#[test]
fn sysctl_and_master_are_read_inside() {
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns = Netns::new("node");
    assert_eq!(ns.sysctl("net.ipv4.ip_forward"), "0");
    ns.sh("echo 1 > /proc/sys/net/ipv4/ip_forward");
    assert_eq!(ns.sysctl("net.ipv4.ip_forward"), "1");
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );

    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "add", "d0.5", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0.5", "master", "br0"]);
    assert_eq!(ns.master_of("d0.5").as_deref(), Some("br0"));
    assert_eq!(ns.master_of("br0"), None);
    assert_eq!(ns.master_of("missing"), None);
    assert_eq!(ns.sysctl("net/ipv4/conf/d0.5/forwarding"), "1");
}

#[test]
fn sweep_removes_only_namespaces_of_dead_processes() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = format!("rcni-t-old-{dead_pid}-0");
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(st.success());
    let live = Netns::new("live");

    let swept = sweep_stale();
    assert!(swept.contains(&stale), "{swept:?}");
    assert!(!netns_listed(&stale));
    assert!(netns_listed(live.name()));
}

#[test]
fn temp_dir_is_unique_and_removed() {
    let a = temp_dir("rcni-tk");
    let b = temp_dir("rcni-tk");
    assert_ne!(a.path(), b.path());
    assert!(a.is_dir() && std::fs::read_dir(&a).unwrap().next().is_none());
    std::fs::create_dir_all(a.join("x/y")).unwrap();
    std::fs::write(a.join("x/y/f"), "data").unwrap();
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists());
    assert!(b.exists());
}

#[test]
fn run_plugin_sets_exactly_the_cni_environment() {
    let dir = temp_dir("rcni-tk");
    let fake = write_script(
        &dir,
        "fake",
        r#"in=$(cat)
vars=$(env | cut -d= -f1 | grep -v -x -e PWD -e SHLVL -e _ | sort | tr '\n' ' ')
printf '{"vars":"%s","command":"%s","cid":"%s","netns":"%s","ifname":"%s","args":"%s","path":"%s","extra":"%s","stdin":"%s","ns":"%s"}\n' \
  "$vars" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$X_EXTRA" "$in" \
  "$(readlink /proc/self/ns/net)"
echo diagnostics >&2
"#,
    );
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let pod_path = pod.path().display().to_string();
    let inv = Invocation::new("ADD", "ctr1", Some(&pod_path), "eth0")
        .with_args("IgnoreUnknown=1")
        .with_env("X_EXTRA", "e");
    assert_eq!(inv.path, bin_dir().display().to_string());
    let run = run_plugin(Some(&node), &fake, &inv, "hello");
    let v = run.ok();
    assert_eq!(
        v["vars"],
        "CNI_ARGS CNI_COMMAND CNI_CONTAINERID CNI_IFNAME CNI_NETNS CNI_PATH PATH X_EXTRA "
    );
    assert_eq!(v["command"], "ADD");
    assert_eq!(v["cid"], "ctr1");
    assert_eq!(v["netns"], pod_path.as_str());
    assert_eq!(v["ifname"], "eth0");
    assert_eq!(v["args"], "IgnoreUnknown=1");
    assert_eq!(v["path"], inv.path.as_str());
    assert_eq!(v["extra"], "e");
    assert_eq!(v["stdin"], "hello");
    assert_eq!(v["ns"], node.sh("readlink /proc/self/ns/net").trim());
    assert_eq!(run.stderr, "diagnostics\n");
    assert_eq!(run.err_code(), None);

    // Empty values and no netns leave the variables unset; without a node it runs right here.
    let inv = Invocation {
        path: String::new(),
        ..Invocation::new("DEL", "", None, "")
    };
    let v = run_plugin(None, &fake, &inv, "").ok().clone();
    assert_eq!(v["vars"], "CNI_COMMAND PATH ");
    assert_eq!(v["ns"], own_netns_id());
}

#[test]
fn run_plugin_reports_errors() {
    let dir = temp_dir("rcni-tk");
    let failing = write_script(
        &dir,
        "failing",
        r#"cat >/dev/null
echo '{"cniVersion":"1.1.0","code":4,"msg":"missing CNI_NETNS"}'
exit 1
"#,
    );
    let inv = Invocation::new("ADD", "c", None, "eth0");
    let run = run_plugin(None, &failing, &inv, "{}");
    assert_eq!(run.code, 1);
    assert_eq!(run.err_code(), Some(4));
    let msg = catch_unwind(|| {
        run.ok();
    })
    .unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("missing CNI_NETNS") && msg.contains("exit code: 1"),
        "{msg}"
    );

    let silent = write_script(&dir, "silent", "exit 0\n");
    let run = run_plugin(None, &silent, &inv, "a long config that is never read");
    run.assert_ok();
    assert!(run.json.is_none());
}

#[test]
fn bin_dir_is_the_profile_dir() {
    if std::env::var_os("RCNI_BIN_DIR").is_none() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(bin_dir(), exe.parent().unwrap().parent().unwrap());
    }
    assert!(cni_path_with_upstream().starts_with(&format!("{}:", bin_dir().display())));
    require_root();
}

#[test]
#[should_panic(expected = "run `cargo build --workspace --bins` first")]
fn plugin_bin_panics_when_missing() {
    plugin_bin("no-such-plugin");
}

#[test]
#[should_panic(expected = "apt-get install containernetworking-plugins")]
fn upstream_bin_panics_when_missing() {
    upstream_bin("no-such-plugin");
}

/// A script plugin `name` that logs each call as one line (verb, container, interface, netns,
/// CNI_PATH, stdin) to `log`, fails `fail` with CNI error 11, and answers ADD with a result
/// naming itself.
fn logging_plugin(dir: &Path, name: &str, log: &Path, fail: &str) {
    write_script(
        dir,
        name,
        &format!(
            r#"conf=$(cat)
printf '%s {name} %s %s %s %s %s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_NETNS" "$CNI_PATH" "$conf" >>{log}
if [ "$CNI_COMMAND" = "{fail}" ]; then
  echo '{{"cniVersion":"1.0.0","code":11,"msg":"{name} refuses {fail}"}}'
  echo "{name} stderr" >&2
  exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then echo '{{"cniVersion":"1.0.0","from":"{name}"}}'; fi
"#,
            log = log.display()
        ),
    );
}

/// The calls logged since the last take: (verb, plugin, stdin as JSON), checking the CNI
/// variables of each.
fn take_calls(log: &Path, cid: &str, netns: &str, cni_path: &str) -> Vec<(String, String, Value)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    std::fs::write(log, "").unwrap();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.splitn(7, ' ').collect();
            assert_eq!(f[2..6], [cid, "eth0", netns, cni_path], "{line}");
            (
                f[0].to_string(),
                f[1].to_string(),
                serde_json::from_str(f[6]).unwrap(),
            )
        })
        .collect()
}

#[test]
fn chain_runs_a_conflist_as_libcni_does() {
    let dir = temp_dir("rcni-tk");
    let log = dir.join("log");
    logging_plugin(&dir, "pa", &log, "none");
    logging_plugin(&dir, "pb", &log, "none");
    logging_plugin(&dir, "pc", &log, "CHECK");
    logging_plugin(&dir, "pd", &log, "ADD");
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let netns = pod.path().display().to_string();
    let cni_path = dir.display().to_string();
    let list = |plugins: Value| json!({"cniVersion": "1.0.0", "name": "pods", "plugins": plugins});
    let pa = json!({"type": "pa", "capabilities": {"portMappings": true}});
    let pm = json!({"portMappings": [{"hostPort": 80}]});
    let chain = Chain::new(
        &node,
        &list(json!([pa, {"type": "pb", "x": 1}, {"type": "pc"}])),
        "ctr1",
        &pod,
        "eth0",
    )
    .cni_path(&*cni_path)
    .capability_args(json!({"portMappings": pm["portMappings"], "other": 1}));
    let calls = || take_calls(&log, "ctr1", &netns, &cni_path);

    // ADD in order, each plugin getting the previous result; the last one's is the result.
    let result = chain.add();
    assert_eq!(result, json!({"cniVersion": "1.0.0", "from": "pc"}));
    let adds = calls();
    let seen: Vec<(&str, &str)> = adds
        .iter()
        .map(|(v, p, _)| (v.as_str(), p.as_str()))
        .collect();
    assert_eq!(seen, [("ADD", "pa"), ("ADD", "pb"), ("ADD", "pc")]);
    assert_eq!(
        adds[0].2,
        json!({"type": "pa", "capabilities": {"portMappings": true}, "name": "pods",
               "cniVersion": "1.0.0", "runtimeConfig": pm})
    );
    assert_eq!(
        adds[1].2,
        json!({"type": "pb", "x": 1, "name": "pods", "cniVersion": "1.0.0",
               "prevResult": {"cniVersion": "1.0.0", "from": "pa"}})
    );
    assert_eq!(adds[2].2["prevResult"]["from"], "pb");

    // CHECK in order with the final result; the first failure comes back whole.
    let failed = chain.check(&result).unwrap_err();
    assert_eq!(
        (
            failed.verb.as_str(),
            failed.index,
            failed.plugin_type.as_str()
        ),
        ("CHECK", 2, "pc")
    );
    assert_eq!(failed.run.code, 1);
    assert_eq!(failed.run.err_code(), Some(11));
    assert_eq!(failed.run.stderr, "pc stderr\n");
    assert_eq!(failed.config["prevResult"], result);
    let shown = failed.to_string();
    assert!(
        shown.contains("CHECK of plugin #2 (pc) failed") && shown.contains("pc refuses CHECK"),
        "{shown}"
    );
    let checks = calls();
    assert_eq!(checks.len(), 3);
    assert!(checks
        .iter()
        .all(|(v, _, c)| v == "CHECK" && c["prevResult"] == result));

    // Skipping pc's CHECK lets the others pass.
    let chain = chain.skip_check("pc");
    chain.check(&result).unwrap();
    let seen: Vec<String> = calls().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(seen, ["pa", "pb"]);

    // DEL in reverse, each with the final result.
    chain.del(&result);
    let dels = calls();
    let seen: Vec<(&str, &str)> = dels
        .iter()
        .map(|(v, p, _)| (v.as_str(), p.as_str()))
        .collect();
    assert_eq!(seen, [("DEL", "pc"), ("DEL", "pb"), ("DEL", "pa")]);
    assert!(dels.iter().all(|(_, _, c)| c["prevResult"] == result));

    // A failing ADD stops the chain there.
    let chain = Chain::new(
        &node,
        &list(json!([{"type": "pa"}, {"type": "pd"}, {"type": "pb"}])),
        "ctr1",
        &pod,
        "eth0",
    )
    .cni_path(&*cni_path);
    let failed = chain.try_add().unwrap_err();
    assert_eq!((failed.index, failed.plugin_type.as_str()), (1, "pd"));
    assert_eq!(failed.config["prevResult"]["from"], "pa");
    assert_eq!(calls().len(), 2);
    let msg = catch_unwind(AssertUnwindSafe(|| chain.add())).unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("ADD of plugin #1 (pd) failed"), "{msg}");
    calls();

    // disableCheck: libcni runs no CHECK at all.
    let mut l = list(json!([{"type": "pc"}]));
    l["disableCheck"] = json!(true);
    let chain = Chain::new(&node, &l, "ctr1", &pod, "eth0").cni_path(&*cni_path);
    chain.check(&result).unwrap();
    assert!(calls().is_empty());
}

#[test]
#[should_panic(expected = "has no CHECK")]
fn chain_refuses_check_before_0_4_0() {
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let list = json!({"cniVersion": "0.3.1", "name": "n", "plugins": [{"type": "x"}]});
    let _ = Chain::new(&node, &list, "c", &pod, "eth0").check(&json!({}));
}
