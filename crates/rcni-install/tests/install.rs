//! Installing into temporary directories and `down` putting them back as they were.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cni_testkit::{assert_same_tree, temp_dir};
use common::*;
use rcni_install::install::write_atomic;

const SINGLE: [&str; 8] = [
    "--pod-cidr",
    "10.244.2.0/24",
    "--cluster-cidr",
    "10.244.0.0/16",
    "--host-route",
    "10.244.0.0/24=192.168.56.10",
    "--host-route",
    "10.244.1.0/24=192.168.56.11",
];

/// What a node may already have: another plugin, another add-on's conflist, an older copy of one
/// of ours (as a file and as a symlink).
fn foreign_files(node: &Node) {
    write_exec(
        &node.bin.join("bridge"),
        "#!/bin/sh\necho upstream bridge\n",
    );
    fs::write(
        node.conf.join("99-other.conflist"),
        "{\"name\":\"other\",\"plugins\":[]}\n",
    )
    .unwrap();
    fs::write(
        node.bin.join("rbridge"),
        "old rbridge from a manual install\n",
    )
    .unwrap();
    fs::set_permissions(node.bin.join("rbridge"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("bridge", node.bin.join("rmasq")).unwrap();
}

fn no_temp_files(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".rcni-install-"),
            "temporary file left: {name}"
        );
    }
}

fn inode(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

#[test]
fn up_installs_and_down_restores_the_tree_byte_for_byte() {
    let node = Node::new();
    foreign_files(&node);
    let before = node.snapshot();

    let out = node.run("up", &SINGLE);
    assert_ok(&out);
    for p in PLUGINS {
        let dst = node.bin.join(p);
        assert_eq!(
            fs::read(&dst).unwrap(),
            fs::read(node.src.join(p)).unwrap(),
            "{p}"
        );
        let meta = fs::symlink_metadata(&dst).unwrap();
        assert!(meta.is_file(), "{p} is a regular file now");
        assert_eq!(meta.mode() & 0o7777, 0o755, "{p}");
    }
    assert_eq!(
        fs::read_to_string(node.conflist()).unwrap(),
        fixture_text("expected/single-worker-2.conflist")
    );
    assert_eq!(
        fs::metadata(node.conflist()).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        fs::read_to_string(node.bin.join("bridge")).unwrap(),
        "#!/bin/sh\necho upstream bridge\n"
    );
    assert!(node.conf.join("99-other.conflist").exists());
    no_temp_files(&node.bin);
    no_temp_files(&node.conf);
    // Routes synced once, on the conflist as written.
    let syncs = node.syncs();
    assert_eq!(syncs.len(), 1);
    assert_eq!(syncs[0].0, node.conflist().display().to_string());
    assert_eq!(
        syncs[0].1,
        fixture_text("expected/single-worker-2.conflist")
    );

    // The manifest: every file with its hash, the replaced ones kept.
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(node.state.join("installed.json")).unwrap())
            .unwrap();
    assert_eq!(m["files"].as_array().unwrap().len(), 5);
    assert!(
        m["files"][0]["backup"]["file"].is_object(),
        "rbridge kept: {m}"
    );
    assert_eq!(m["files"][2]["backup"]["symlink"]["target"], "bridge");
    assert_eq!(
        m["createdDirs"],
        serde_json::json!([
            node.state.display().to_string(),
            node.state.join("backup").display().to_string()
        ])
    );

    // A second up writes nothing.
    let inodes: Vec<u64> = PLUGINS.iter().map(|p| inode(&node.bin.join(p))).collect();
    let conflist_inode = inode(&node.conflist());
    let out = node.run("up", &SINGLE);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("already up to date"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("install "), "{}", stdout(&out));
    assert_eq!(
        inodes,
        PLUGINS
            .iter()
            .map(|p| inode(&node.bin.join(p)))
            .collect::<Vec<_>>()
    );
    assert_eq!(conflist_inode, inode(&node.conflist()));
    assert_eq!(node.syncs().len(), 2, "routes are re-synced on every up");

    let out = node.run("down", &[]);
    assert_ok(&out);
    assert_same_tree(&before, &node.snapshot());
    // Routes removed first, with rroutes still there: a conflist of the state dir (the node's
    // own is about to go) with no hostRoutes, removed afterwards like the rest.
    let syncs = node.syncs();
    assert_eq!(syncs.len(), 3);
    assert!(
        syncs[2].0.starts_with(node.state.to_str().unwrap()),
        "{}",
        syncs[2].0
    );
    let last: serde_json::Value = serde_json::from_str(&syncs[2].1).unwrap();
    let rroutes = last["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "rroutes");
    assert_eq!(
        rroutes.unwrap()["hostRoutes"],
        serde_json::json!([]),
        "{last}"
    );

    // Nothing left to remove.
    let out = node.run("down", &[]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("nothing to remove"),
        "{}",
        stdout(&out)
    );
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn a_changed_conflist_is_rewritten_and_still_removed() {
    let node = Node::new();
    let before = node.snapshot();
    assert_ok(&node.run("up", &SINGLE));
    let first = inode(&node.conflist());
    // A node joined: one more route.
    let mut more = SINGLE.to_vec();
    more.extend(["--host-route", "10.244.3.0/24=192.168.56.13"]);
    let out = node.run("up", &more);
    assert_ok(&out);
    assert_eq!(
        stdout(&out).matches("install ").count(),
        1,
        "only the conflist: {}",
        stdout(&out)
    );
    assert_ne!(
        first,
        inode(&node.conflist()),
        "replaced by rename, not rewritten in place"
    );
    assert!(fs::read_to_string(node.conflist())
        .unwrap()
        .contains("10.244.3.0/24"));
    let m = fs::read_to_string(node.state.join("installed.json")).unwrap();
    assert_eq!(m.matches("sha256").count(), 5);
    assert_ok(&node.run("down", &[]));
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn down_leaves_a_file_someone_changed_since() {
    let node = Node::new();
    fs::write(node.bin.join("rhost-local"), "someone's own rhost-local\n").unwrap();
    assert_ok(&node.run("up", &SINGLE));
    // Someone else replaced two files after the install.
    fs::write(node.bin.join("rbridge"), "patched by hand\n").unwrap();
    fs::write(node.bin.join("rhost-local"), "replaced again by hand\n").unwrap();
    let out = node.run("down", &[]);
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(node.bin.join("rbridge")).unwrap(),
        "patched by hand\n"
    );
    assert_eq!(
        fs::read_to_string(node.bin.join("rhost-local")).unwrap(),
        "replaced again by hand\n"
    );
    assert!(
        stderr(&out).contains("rbridge changed since rcni-install wrote it: left in place"),
        "{}",
        stderr(&out)
    );
    // The file rhost-local replaced is kept where the warning says, so nothing is lost.
    assert!(
        stderr(&out).contains("the file it replaced is kept at"),
        "{}",
        stderr(&out)
    );
    assert!(!node.bin.join("rmasq").exists());
    assert!(!node.conflist().exists());
    assert!(!node.state.join("installed.json").exists());
}

#[test]
fn dry_run_changes_nothing() {
    let node = Node::new();
    foreign_files(&node);
    let before = node.snapshot();
    let mut args = SINGLE.to_vec();
    args.push("--dry-run");
    let out = node.run("up", &args);
    assert_ok(&out);
    assert_same_tree(&before, &node.snapshot());
    assert!(node.syncs().is_empty());
    let text = stdout(&out);
    for p in PLUGINS {
        assert!(
            text.contains(&format!("would install {}", node.bin.join(p).display())),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "would keep the existing {}",
            node.bin.join("rbridge").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("would create directory {}", node.state.display())),
        "{text}"
    );
    assert!(
        text.contains("would run") && text.contains("sync --conflist"),
        "{text}"
    );
    assert!(
        text.contains(&fixture_text("expected/single-worker-2.conflist")),
        "{text}"
    );

    assert_ok(&node.run("up", &SINGLE));
    let installed = node.snapshot();
    let out = node.run("down", &["--dry-run"]);
    assert_ok(&out);
    assert_same_tree(&installed, &node.snapshot());
    assert!(
        stdout(&out).contains(&format!(
            "would remove {}",
            node.bin.join("rroutes").display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!(
            "would restore {}",
            node.bin.join("rbridge").display()
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(node.syncs().len(), 1, "dry down runs no sync");
    assert_ok(&node.run("down", &[]));
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn directories_created_are_removed_and_only_if_empty() {
    let node = Node::new();
    fs::remove_dir_all(node.root.join("opt")).unwrap();
    fs::remove_dir_all(node.root.join("etc")).unwrap();
    let before = node.snapshot();
    let out = node.run("up", &SINGLE);
    assert_ok(&out);
    assert!(stdout(&out).contains(&format!(
        "created directory {}",
        node.root.join("opt").display()
    )));
    assert!(node.conflist().exists());
    assert_ok(&node.run("down", &[]));
    assert_same_tree(&before, &node.snapshot());

    // Something else put a file in a directory we created: the directory stays.
    assert_ok(&node.run("up", &SINGLE));
    fs::write(node.conf.join("50-other.conflist"), "{}").unwrap();
    let out = node.run("down", &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("is not empty: left in place"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(node.conf.join("50-other.conflist")).unwrap(),
        "{}"
    );
    assert!(!node.bin.exists());
}

#[test]
fn failing_route_sync_is_reported_and_down_waits_for_it() {
    let node = Node::new();
    let before = node.snapshot();
    let fail = node.aux.join("sync.log.fail");
    fs::write(&fail, "").unwrap();
    let out = node.run("up", &SINGLE);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sync --conflist") && stderr(&out).contains("told to fail"),
        "{}",
        stderr(&out)
    );
    // The files are in place and recorded, whatever the routes did.
    assert!(node.conflist().exists());

    let out = node.run("down", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing else was removed"),
        "{}",
        stderr(&out)
    );
    assert!(node.bin.join("rbridge").exists());

    fs::remove_file(&fail).unwrap();
    assert_ok(&node.run("down", &[]));
    assert_same_tree(&before, &node.snapshot());
    fs::write(&fail, "").unwrap();
    assert_ok(&node.run("up", &[&SINGLE[..], &["--no-routes"]].concat()));
    assert_ok(&node.run("down", &[]));
    assert_same_tree(&before, &node.snapshot());
}

#[test]
fn skip_routes_removes_the_files_anyway() {
    let node = Node::new();
    let before = node.snapshot();
    assert_ok(&node.run("up", &SINGLE));
    fs::write(node.aux.join("sync.log.fail"), "").unwrap();
    assert_ok(&node.run("down", &["--skip-routes"]));
    assert_same_tree(&before, &node.snapshot());
}

/// Killed in the middle of a rewrite: the manifest lists the new content and the old one, a
/// temporary file may be left. Either content on disk is still ours to remove.
#[test]
fn an_interrupted_rewrite_is_still_undone() {
    for renamed in [false, true] {
        let node = Node::new();
        let before = node.snapshot();
        assert_ok(&node.run("up", &SINGLE));
        let manifest = node.state.join("installed.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
        let old = fs::read(node.conflist()).unwrap();
        let new = b"{\"name\": \"rcni\", \"plugins\": []}\n".to_vec();
        let entry = &mut m["files"][4];
        assert_eq!(entry["path"], node.conflist().display().to_string());
        entry["sha256"] = serde_json::json!([
            rcni_install::install::sha256(&new),
            rcni_install::install::sha256(&old)
        ]);
        fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        fs::write(
            node.conf.join(".10-rcni.conflist.rcni-install-99999.tmp"),
            &new[..9],
        )
        .unwrap();
        if renamed {
            fs::write(node.conflist(), &new).unwrap();
        }
        let out = node.run("down", &["--skip-routes"]);
        assert_ok(&out);
        assert_same_tree(&before, &node.snapshot());
    }
}

#[test]
fn a_conflist_sorting_first_is_reported() {
    let node = Node::new();
    fs::write(node.conf.join("05-other.conflist"), "{}").unwrap();
    fs::write(node.conf.join("99-other.conflist"), "{}").unwrap();
    let out = node.run("up", &SINGLE);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("05-other.conflist sorts before 10-rcni.conflist"),
        "{err}"
    );
    assert!(!err.contains("99-other"), "{err}");
    let out = node.run(
        "up",
        &[&SINGLE[..], &["--conflist-name", "../evil.conflist"]].concat(),
    );
    assert!(!out.status.success());
}

#[test]
fn missing_plugin_binary_installs_nothing() {
    let node = Node::new();
    fs::remove_file(node.src.join("rmasq")).unwrap();
    let before = node.snapshot();
    let out = node.run("up", &SINGLE);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rmasq") && stderr(&out).contains("cargo build --release"),
        "{}",
        stderr(&out)
    );
    assert_same_tree(&before, &node.snapshot());
}

/// A reader (the runtime) sees the old content or the new one, complete, never a part and never
/// no file, while the installer rewrites it over and over.
#[test]
fn atomic_write_never_exposes_a_partial_file() {
    let dir = temp_dir("rcni-install-atomic");
    let path = dir.join("rbridge");
    let a = vec![b'a'; 3 << 20];
    let b = vec![b'b'; 2 << 20];
    write_atomic(&path, &a, 0o755, None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop, a, b) = (path.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let got = fs::read(&path).expect("the file must always exist");
                assert!(got == a || got == b, "partial read of {} bytes", got.len());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..40 {
        write_atomic(&path, if i % 2 == 0 { &b } else { &a }, 0o755, None).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    no_temp_files(&dir);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
}
