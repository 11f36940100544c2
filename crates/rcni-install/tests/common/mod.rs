//! Shared by the integration tests: fake plugins, directory snapshots, running the installer
//! against temporary directories and in a network namespace only; the node agent as a child
//! process ([`daemon`]) and HTTPS in front of the fake API server ([`tls`]).
#![allow(dead_code)]

pub mod daemon;
pub mod tls;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cni_testkit::{snapshot, temp_dir, FakeNode, Snapshot, TempDir};

pub const PLUGINS: [&str; 4] = ["rbridge", "rhost-local", "rmasq", "rroutes"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A node's directories, all inside one temporary directory: the real /opt/cni/bin,
/// /etc/cni/net.d and /var/lib/rcni are never used by a test.
pub struct Node {
    pub root: TempDir,
    /// The test's own files (source dir, sync log, token), outside what is compared.
    pub aux: PathBuf,
    pub src: PathBuf,
    pub bin: PathBuf,
    pub conf: PathBuf,
    pub state: PathBuf,
    /// Each `rroutes sync` call of the fake rroutes, appended.
    pub sync_log: PathBuf,
    /// Where commands run: a network namespace with no default route, so no MTU is detected
    /// from the machine's.
    pub ns: cni_testkit::Netns,
}

impl Node {
    /// Source dir with fake plugins; bin and conf dirs created empty (as a node's usually are),
    /// the state dir left for the installer to create.
    pub fn new() -> Node {
        let root = temp_dir("rcni-install-t");
        let n = Node {
            aux: root.join("t"),
            src: root.join("t/src"),
            bin: root.join("opt/cni/bin"),
            conf: root.join("etc/cni/net.d"),
            state: root.join("var/lib/rcni"),
            sync_log: root.join("t/sync.log"),
            root,
            ns: cni_testkit::Netns::new("inst"),
        };
        fs::create_dir_all(&n.src).unwrap();
        fs::create_dir_all(&n.bin).unwrap();
        fs::create_dir_all(&n.conf).unwrap();
        fs::create_dir_all(n.root.join("var/lib")).unwrap();
        for p in PLUGINS {
            let body = if p == "rroutes" {
                fake_rroutes(&n.sync_log)
            } else {
                format!("#!/bin/sh\necho fake {p}\n")
            };
            write_exec(&n.src.join(p), &body);
        }
        n
    }

    /// The layout flags: every command a test runs names the temporary directories.
    pub fn layout_args(&self) -> Vec<String> {
        vec![
            "--bin-dir".into(),
            self.bin.display().to_string(),
            "--conf-dir".into(),
            self.conf.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ]
    }

    pub fn conflist(&self) -> PathBuf {
        self.conf.join("10-rcni.conflist")
    }

    /// `rcni-install CMD <layout> ARGS...` (`--src-dir` added for up and daemon).
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        let mut all: Vec<String> = vec![cmd.into()];
        all.extend(self.layout_args());
        if cmd == "up" || cmd == "daemon" {
            all.push("--src-dir".into());
            all.push(self.src.display().to_string());
        }
        all.extend(args.iter().map(|s| s.to_string()));
        installer_in(&self.ns).args(&all).output().unwrap()
    }

    /// The calls the fake rroutes got: (conflist path, its content then).
    pub fn syncs(&self) -> Vec<(String, String)> {
        let log = fs::read_to_string(&self.sync_log).unwrap_or_default();
        log.split("=== ")
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (path, content) = s.split_once('\n').unwrap();
                (path.to_string(), content.to_string())
            })
            .collect()
    }

    /// The whole tree under the temporary root, minus the test's own files.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = snapshot(&self.root);
        s.retain(|k, _| !k.starts_with("t"));
        s
    }
}

/// The installer, with no RCNI_* or API variables inherited from whoever runs the tests.
pub fn installer() -> Command {
    clean_env(Command::new(env!("CARGO_BIN_EXE_rcni-install")))
}

/// [`installer`] inside `ns`: what it reads of the node's network (the default route's MTU)
/// is the test's, not the machine's.
pub fn installer_in(ns: &cni_testkit::Netns) -> Command {
    clean_env(ns.command(env!("CARGO_BIN_EXE_rcni-install")))
}

fn clean_env(mut c: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("RCNI_") || k.starts_with("KUBERNETES_") || k == "NODE_NAME" {
            c.env_remove(k);
        }
    }
    c
}

/// A fake rroutes that records `sync --conflist FILE` calls with the file's content, and fails
/// while `<log>.fail` exists.
fn fake_rroutes(log: &Path) -> String {
    format!(
        r#"#!/bin/sh
[ "$1" = sync ] && [ "$2" = --conflist ] && [ $# -eq 3 ] || {{ echo "fake rroutes: unexpected arguments: $*" >&2; exit 2; }}
[ -e "{log}.fail" ] && {{ echo "fake rroutes: told to fail" >&2; exit 1; }}
{{ echo "=== $3"; cat "$3"; }} >> "{log}"
"#,
        log = log.display()
    )
}

pub fn write_exec(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The nodes of a recorded NodeList fixture, to serve from the fake API server: name,
/// podCIDRs and InternalIP addresses, without the kubelet's bulk.
pub fn fake_nodes(name: &str) -> Vec<FakeNode> {
    let list: serde_json::Value = serde_json::from_str(&fixture_text(name)).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let ips: Vec<String> = n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["type"] == "InternalIP")
                .map(|a| a["address"].as_str().unwrap().to_string())
                .collect();
            let mut cidrs = strings(&n["spec"]["podCIDRs"]);
            if cidrs.is_empty() {
                cidrs = strings(&serde_json::json!([n["spec"]["podCIDR"]]));
            }
            let cidrs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
            let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
            FakeNode::new(n["metadata"]["name"].as_str().unwrap(), &cidrs, &ips).lean()
        })
        .collect()
}
