//! scripts/install, the single-host path, on temporary directories with fake plugins (never a
//! release build: RCNI_RELEASE_DIR points at the test's binaries).

mod common;

use std::os::unix::fs::symlink;
use std::process::Output;

use cni_testkit::assert_same_tree;
use common::*;

fn script(node: &Node, args: &[&str]) -> Output {
    let mut c = node.ns.command(repo_root().join("scripts/install"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("RCNI_") || k == "NODE_NAME" {
            c.env_remove(k);
        }
    }
    c.env("RCNI_RELEASE_DIR", &node.src);
    c.args(args).output().unwrap()
}

fn with_layout(node: &Node, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(node.layout_args());
    v
}

fn node_with_installer() -> Node {
    let node = Node::new();
    symlink(
        env!("CARGO_BIN_EXE_rcni-install"),
        node.src.join("rcni-install"),
    )
    .unwrap();
    node
}

#[test]
fn dry_run_then_up_then_down() {
    let node = node_with_installer();
    std::fs::write(node.conf.join("99-other.conflist"), "{}\n").unwrap();
    let before = node.snapshot();
    let flags = [
        "--pod-cidr",
        "10.244.2.0/24",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--host-route",
        "10.244.0.0/24=192.168.56.10",
        "--host-route",
        "10.244.1.0/24=192.168.56.11",
    ];

    let args = with_layout(&node, &[&["up", "--dry-run"], &flags[..]].concat());
    let out = script(&node, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ok(&out);
    assert_same_tree(&before, &node.snapshot());
    assert!(node.syncs().is_empty());
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "would install {}",
            node.bin.join("rbridge").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&fixture_text("expected/single-worker-2.conflist")),
        "{text}"
    );

    let args = with_layout(&node, &[&["up"], &flags[..]].concat());
    assert_ok(&script(
        &node,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(
        std::fs::read_to_string(node.conflist()).unwrap(),
        fixture_text("expected/single-worker-2.conflist")
    );
    assert_eq!(node.syncs().len(), 1);

    let installed = node.snapshot();
    let args = with_layout(&node, &["down", "--dry-run"]);
    let out = script(&node, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ok(&out);
    assert!(stdout(&out).contains("would remove"), "{}", stdout(&out));
    assert_same_tree(&installed, &node.snapshot());

    let args = with_layout(&node, &["down"]);
    assert_ok(&script(
        &node,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn usage_and_missing_binaries() {
    let node = node_with_installer();
    let out = script(&node, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("usage: scripts/install up"),
        "{}",
        stderr(&out)
    );
    let out = script(&node, &["--help"]);
    assert_ok(&out);

    std::fs::remove_file(node.src.join("rmasq")).unwrap();
    let before = node.snapshot();
    let args = with_layout(
        &node,
        &[
            "up",
            "--pod-cidr",
            "10.244.2.0/24",
            "--cluster-cidr",
            "10.244.0.0/16",
        ],
    );
    let out = script(&node, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rmasq missing in RCNI_RELEASE_DIR"),
        "{}",
        stderr(&out)
    );
    assert_same_tree(&before, &node.snapshot());
}
