//! rhost-local and upstream host-local on one store: at the same time, one after the other, and
//! giving the same answers.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};

use cni_testkit::json::addresses;
use cni_testkit::{snapshot, temp_dir, upstream_version};
use common::*;
use serde_json::{json, Value};

/// 200 concurrent ADDs, half through each plugin, then DELs crossing over (each plugin deleting
/// what the other allocated, plus some twice), then a GC: in each cniVersion whose result shape
/// differs.
#[test]
fn concurrent_adds_with_upstream_then_dels_then_gc() {
    for version in ["0.2.0", "0.4.0", "1.1.0"] {
        let data = temp_dir("rhl-interop");
        let ours_conf = v4_24(&data, version);
        let theirs_conf = v4_24(&data, upstream_version(version));
        let n = 200;
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (b, oc, tc) = (barrier.clone(), ours_conf.clone(), theirs_conf.clone());
                std::thread::spawn(move || {
                    let id = format!("c{i}");
                    b.wait();
                    let run = if i % 2 == 0 {
                        call(&ours(), "ADD", &id, "eth0", &oc)
                    } else {
                        call(&upstream(), "ADD", &id, "eth0", &tc)
                    };
                    (id, run)
                })
            })
            .collect();
        let mut got = Vec::new();
        for h in handles {
            let (id, run) = h.join().unwrap();
            let result = run.ok().clone();
            if id.trim_start_matches('c').parse::<usize>().unwrap() % 2 == 0 {
                assert_eq!(result["cniVersion"], version);
                match version {
                    "0.2.0" => assert!(result.get("ip4").is_some(), "{result}"),
                    "0.4.0" => assert_eq!(result["ips"][0]["version"], "4"),
                    _ => assert!(result["ips"][0].get("version").is_none()),
                }
                assert!(
                    result.get("interfaces").is_none(),
                    "IPAM results have no interfaces"
                );
            }
            let a = addresses(&result);
            assert_eq!(a.len(), 1);
            got.push((id, a[0].clone()));
        }
        let distinct: HashSet<_> = got.iter().map(|(_, a)| a.clone()).collect();
        assert_eq!(
            distinct.len(),
            n,
            "{version}: an address was handed out twice"
        );
        let files = reservations(&data);
        assert_eq!(files.len(), n);
        for (id, addr) in &got {
            assert_eq!(
                files[&addr.parse::<IpAddr>().unwrap()],
                format!("{id}\r\neth0")
            );
        }

        // DEL every third attachment, each through the other plugin than the one that made it,
        // and again for idempotency.
        let mut expect: BTreeSet<(String, String)> = got.iter().cloned().collect();
        for (i, (id, addr)) in got.iter().enumerate() {
            if i % 3 != 0 {
                continue;
            }
            let (bin, c) = if i % 2 == 0 {
                (upstream(), &theirs_conf)
            } else {
                (ours(), &ours_conf)
            };
            call(&bin, "DEL", id, "eth0", c).assert_ok();
            call(&ours(), "DEL", id, "eth0", &ours_conf).assert_ok();
            expect.remove(&(id.clone(), addr.clone()));
        }
        let now: BTreeSet<(String, String)> = reservations(&data)
            .into_iter()
            .map(|(ip, owner)| {
                (
                    owner.split("\r\n").next().unwrap().to_string(),
                    ip.to_string(),
                )
            })
            .collect();
        assert_eq!(now, expect, "{version}: DEL freed the wrong addresses");

        // GC keeping every other survivor.
        let keep: Vec<(String, String)> = expect
            .iter()
            .step_by(2)
            .map(|(id, _)| (id.clone(), "eth0".to_string()))
            .collect();
        gc(&data, &ours_conf, &keep).assert_ok();
        let kept: BTreeSet<String> = reservations(&data)
            .values()
            .map(|o| o.split("\r\n").next().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = keep.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(
            kept, want,
            "{version}: GC did not leave exactly the valid attachments"
        );
        assert_eq!(temp_files(&data), 0);
    }
}

/// The same script through each plugin on its own store gives the same addresses and the same
/// files: round-robin, wrap-around, several ranges per set, dual stack, requested addresses.
#[test]
fn same_answers_as_upstream() {
    let ipam = json!({
        "ranges": [
            [{"subnet": "10.5.0.0/24", "rangeStart": "10.5.0.250"}, {"subnet": "10.6.0.0/29"}],
            [{"subnet": "fd00:5::/120", "rangeEnd": "fd00:5::b"}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:5::1"}]
    });
    // (verb, container, CNI_ARGS)
    let mut script: Vec<(&str, String, &str)> = Vec::new();
    for i in 0..6 {
        script.push(("ADD", format!("a{i}"), ""));
    }
    script.push(("DEL", "a1".into(), ""));
    script.push(("DEL", "a4".into(), ""));
    for i in 0..3 {
        script.push(("ADD", format!("b{i}"), ""));
    }
    script.push(("ADD", "req".into(), "IgnoreUnknown=1;IP=10.6.0.6"));
    script.push(("DEL", "a0".into(), ""));
    script.push(("ADD", "c0".into(), ""));
    script.push(("ADD", "c1".into(), ""));
    script.push(("DEL", "nobody".into(), ""));
    script.push(("ADD", "c2".into(), ""));

    let mut outputs = Vec::new();
    let mut stores = Vec::new();
    for bin in [upstream(), ours()] {
        let data = temp_dir("rhl-parity");
        let c = conf(&data, "1.0.0", ipam.clone());
        let mut out = Vec::new();
        for (verb, id, args) in &script {
            let r = call_args(&bin, verb, id, "eth0", args, &c);
            out.push(match *verb {
                "ADD" => {
                    let v = r.ok().clone();
                    json!({"ips": v["ips"], "routes": v["routes"], "dns": v["dns"]})
                }
                _ => json!(r.code),
            });
        }
        outputs.push(out);
        let mut t = snapshot(&net_dir(&data));
        t.retain(|k, _| !k.starts_with(".rhost-local"));
        stores.push(t);
    }
    for (i, step) in script.iter().enumerate() {
        assert_eq!(
            outputs[0][i], outputs[1][i],
            "step {i} {step:?}: upstream vs ours"
        );
    }
    assert_eq!(stores[0], stores[1], "the stores differ");
}

/// A node switching from upstream to rhost-local and back keeps every allocation.
#[test]
fn switching_either_way_keeps_allocations() {
    let data = temp_dir("rhl-switch");
    let c = conf(
        &data,
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.8.0.0/24"}], [{"subnet": "fd00:8::/64"}]]}),
    );
    // Upstream first.
    let mut results = Vec::new();
    for i in 0..20 {
        let id = format!("u{i}");
        let r = call(&upstream(), "ADD", &id, "eth0", &c).ok().clone();
        results.push((id, r));
    }
    // rhost-local takes over: ADD retried, CHECK with the cached result, new ADDs, DEL.
    for (id, r) in &results {
        let again = call(&ours(), "ADD", id, "eth0", &c).ok().clone();
        assert_eq!(addresses(&again), addresses(r), "{id}");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r.clone();
        call(&ours(), "CHECK", id, "eth0", &with_prev).assert_ok();
    }
    let fresh = call(&ours(), "ADD", "r0", "eth0", &c).ok().clone();
    let taken: HashSet<String> = results.iter().flat_map(|(_, r)| addresses(r)).collect();
    assert!(addresses(&fresh).iter().all(|a| !taken.contains(a)));
    call(&ours(), "DEL", "u0", "eth0", &c).assert_ok();
    assert_eq!(reservations(&data).len(), 2 * 20);
    // And back to upstream: it sees ours, CHECKs and DELs them.
    let mut with_prev = c.clone();
    with_prev["prevResult"] = fresh.clone();
    call(&upstream(), "CHECK", "r0", "eth0", &with_prev).assert_ok();
    let err = call(&upstream(), "ADD", "r0", "eth0", &c);
    assert_ne!(
        err.code, 0,
        "upstream refuses a duplicate: it found our reservation"
    );
    let next = call(&upstream(), "ADD", "u99", "eth0", &c).ok().clone();
    assert!(addresses(&next)
        .iter()
        .all(|a| !addresses(&fresh).contains(a)));
    call(&upstream(), "DEL", "r0", "eth0", &c).assert_ok();
    for i in 1..20 {
        call(&upstream(), "DEL", &format!("u{i}"), "eth0", &c).assert_ok();
    }
    assert_eq!(reservations(&data).len(), 2, "only u99 is left");
    // Upstream's DEL walks our index directory too and must not have matched anything there.
    let meta = snapshot(&net_dir(&data).join(".rhost-local"));
    assert!(
        meta.contains_key(Path::new("index/r0@eth0")),
        "upstream deleted an index file: {:?}",
        meta.keys()
    );
    // Ours again: the stale index is noticed and rebuilt.
    let r = call(&ours(), "ADD", "u99", "eth0", &c).ok().clone();
    assert_eq!(addresses(&r), addresses(&next));
    call(&ours(), "DEL", "u99", "eth0", &c).assert_ok();
    assert!(reservations(&data).is_empty());
}

/// What runs on every verb, in every version that has it.
#[test]
fn verbs_per_version() {
    for version in ["0.1.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let data = temp_dir("rhl-verbs");
        let c = conf(
            &data,
            version,
            json!({"ranges": [[{"subnet": "10.9.0.0/28"}]], "routes": [{"dst": "10.0.0.0/8"}]}),
        );
        let r = call(&ours(), "ADD", "a", "eth0", &c).ok().clone();
        assert_eq!(r["cniVersion"], version);
        match version {
            "0.1.0" => {
                assert_eq!(r["ip4"]["ip"], "10.9.0.2/28");
                assert_eq!(r["ip4"]["gateway"], "10.9.0.1");
                assert_eq!(r["ip4"]["routes"][0]["dst"], "10.0.0.0/8");
            }
            _ => {
                assert_eq!(r["ips"][0]["address"], "10.9.0.2/28");
                assert_eq!(r["ips"][0]["gateway"], "10.9.0.1");
                assert_eq!(r["routes"][0]["dst"], "10.0.0.0/8");
                assert_eq!(r["dns"], json!({}));
            }
        }
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r.clone();
        let check = call(&ours(), "CHECK", "a", "eth0", &with_prev);
        if version >= "0.4.0" {
            check.assert_ok();
        } else {
            assert_eq!(check.err_code(), Some(1), "CHECK needs 0.4.0");
        }
        let status = call(&ours(), "STATUS", "", "", &c);
        if version == "1.1.0" {
            status.assert_ok();
        } else {
            assert_eq!(status.err_code(), Some(1), "STATUS needs 1.1.0");
        }
        call(&ours(), "DEL", "a", "eth0", &c).assert_ok();
        call(&ours(), "DEL", "a", "eth0", &c).assert_ok();
        assert!(reservations(&data).is_empty());
    }
}

/// DNS from resolvConf, and STATUS turning to 50 when a range set runs out.
#[test]
fn dns_and_status_through_the_binary() {
    let data = temp_dir("rhl-dns");
    let resolv = data.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.96.0.10\nsearch svc.cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    let c = conf(
        &data,
        "1.1.0",
        json!({"ranges": [[{"subnet": "10.10.0.0/30"}]], "resolvConf": resolv}),
    );
    let r = call(&ours(), "ADD", "a", "eth0", &c).ok().clone();
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"], "options": ["ndots:5"]})
    );
    // A /30 has one usable address besides the gateway: now exhausted.
    let s = call(&ours(), "STATUS", "", "", &c);
    assert_eq!(s.err_code(), Some(50), "{}", s.stdout);
    let e = call(&ours(), "ADD", "b", "eth0", &c);
    assert_eq!(e.err_code(), Some(104));
    let msg = e.json.as_ref().unwrap()["msg"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(NET) && msg.contains("10.10.0.1-10.10.0.2"),
        "{msg}"
    );
    call(&ours(), "DEL", "a", "eth0", &c).assert_ok();
    call(&ours(), "STATUS", "", "", &c).assert_ok();
}

/// Old-format reservations (container ID only), as written by host-local before ifname was
/// recorded, are found by both plugins alike.
#[test]
fn old_format_reservations() {
    let data = temp_dir("rhl-old");
    let c = v4_24(&data, "1.0.0");
    call(&ours(), "ADD", "x", "eth0", &c).assert_ok();
    std::fs::write(net_dir(&data).join("10.77.0.40"), "legacy").unwrap();
    let r = call(&ours(), "ADD", "legacy", "eth0", &c).ok().clone();
    assert_eq!(addresses(&r), ["10.77.0.40"]);
    call(&ours(), "DEL", "legacy", "eth0", &c).assert_ok();
    assert!(!net_dir(&data).join("10.77.0.40").exists());
    let _: Value = r;
}
