//! GC on a full node: N attachments of our chain (rbridge with ipMasq + rhost-local), half of
//! them stale — their netns deleted without a DEL, as a crashed runtime or a reboot leaves them —
//! then one `rcni gc --valid-attachments` naming the live half, timed from start to exit. The
//! live attachments must keep their addresses and the stale ones lose theirs (checked in the
//! IPAM store). Upstream has nothing to compare with: Debian's plugins 1.1 and libcni 1.1 have
//! no GC.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use crate::chain::{Bench, Which};
use crate::stats::ms;
use crate::table::{verdict, Row};

/// The addresses in the IPAM store of network `bench` under `data_dir`.
fn reserved(data_dir: &Path) -> usize {
    let dir = data_dir.join("bench");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .count()
}

/// Milliseconds of one `rcni gc` on a node of `n` attachments, half stale.
fn gc_once(n: usize) -> f64 {
    let mut b = Bench::new(Which::Ours);
    eprintln!("GC on a full node: {n} pods...");
    let pods: Vec<_> = b
        .pods(n)
        .into_iter()
        .map(|(ns, id)| b.add(ns, id).0)
        .collect();
    let data_dir = b.conflist()["plugins"][0]["ipam"]["dataDir"]
        .as_str()
        .expect("dataDir")
        .to_string();
    assert_eq!(reserved(Path::new(&data_dir)), n);
    let (live, stale): (Vec<_>, Vec<_>) =
        pods.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let valid: Vec<Value> = live
        .iter()
        .map(|(_, p)| json!({"containerID": p.id(), "ifname": "eth0"}))
        .collect();
    // Their netns go without a DEL.
    drop(stale);
    let dir = cni_testkit::temp_dir("bench-gc");
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("10-bench.conflist"), b.conflist().to_string()).unwrap();
    std::fs::write(dir.join("valid.json"), Value::Array(valid).to_string()).unwrap();
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    let rcni = cni_testkit::plugin_bin("rcni");
    let started = Instant::now();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", b.node_path().display()))
        .arg(&rcni)
        .args(["gc", "--conf-dir"])
        .arg(&conf_dir)
        .args(["--bin-dir", &b.rt.cni_path, "--valid-attachments"])
        .arg(dir.join("valid.json"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .output()
        .expect("running rcni gc");
    let took = ms(started.elapsed());
    assert!(
        out.status.success(),
        "rcni gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = reserved(Path::new(&data_dir));
    assert_eq!(
        left,
        live.len(),
        "after GC: {left} addresses reserved, {} live pods",
        live.len()
    );
    drop(live);
    took
}

pub fn gc_rows(n: usize) -> Vec<Row> {
    let took = gc_once(n);
    let goal = if n >= 1000 {
        format!("<= 2000: {}", verdict(took <= 2000.0))
    } else {
        String::new()
    };
    vec![(
        format!(
            "GC, full node: {n} attachments, {} stale, reclaimed (ms)",
            n / 2
        ),
        format!("{took:.0}"),
        String::new(),
        String::new(),
        goal,
    )]
}
