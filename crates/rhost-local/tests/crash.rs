//! rhost-local killed (SIGKILL) in the middle of ADD and DEL: no address may end up both
//! unusable and unreclaimable. Debug builds have crash points between every two steps that
//! change the store (see src/testhook.rs).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cni_testkit::json::addresses;
use cni_testkit::{temp_dir, Rng};
use common::*;
use serde_json::Value;

const KILLED: i32 = 128 + 9;

fn owner_id(content: &str) -> String {
    content.split("\r\n").next().unwrap().trim().to_string()
}

/// Every reservation file names a known attachment; none is empty (we never write one).
fn assert_only_known(data: &Path, known: &HashSet<String>, ctx: &str) {
    for (ip, content) in reservations(data) {
        assert!(!content.trim().is_empty(), "{ctx}: empty reservation {ip}");
        assert!(
            known.contains(&owner_id(&content)),
            "{ctx}: {ip} held by unknown {content:?}"
        );
    }
}

fn holders(data: &Path) -> BTreeMap<String, Vec<IpAddr>> {
    let mut m: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (ip, content) in reservations(data) {
        m.entry(owner_id(&content)).or_default().push(ip);
    }
    m
}

/// Base state: attachments from both plugins; the index is stale when the last call was
/// upstream's, so the crashing call goes through a rebuild.
fn setup(data: &Path, conf: &Value, verb: &str, stale: bool) -> BTreeMap<String, Vec<IpAddr>> {
    let upstream_conf = {
        let mut c = conf.clone();
        c["cniVersion"] = "1.0.0".into();
        c
    };
    for id in ["u0", "u1"] {
        call(&upstream(), "ADD", id, "eth0", &upstream_conf).assert_ok();
    }
    for id in ["o0", "o1"] {
        call(&ours(), "ADD", id, "eth0", conf).assert_ok();
    }
    let before_victim = holders(data);
    if verb == "DEL" {
        call(&ours(), "ADD", "v", "eth0", conf).assert_ok();
    }
    let mut base = before_victim;
    if stale {
        call(&upstream(), "ADD", "u2", "eth0", &upstream_conf).assert_ok();
        base.insert("u2".into(), holders(data)["u2"].clone());
    } else {
        call(&ours(), "ADD", "o2", "eth0", conf).assert_ok();
        base.insert("o2".into(), holders(data)["o2"].clone());
    }
    base
}

#[test]
fn killed_at_every_step_of_add_and_del() {
    let mut covered = 0;
    for verb in ["ADD", "DEL"] {
        for stale in [false, true] {
            let mut n = 1;
            loop {
                let data = temp_dir("rhl-crash");
                let conf = conf(
                    &data,
                    "1.1.0",
                    serde_json::json!({"ranges": [[{"subnet": "10.20.0.0/28"}], [{"subnet": "fd00:20::/120"}]]}),
                );
                let base = setup(&data, &conf, verb, stale);
                let ctx = format!("{verb} stale={stale} crash point {n}");
                let mut child = spawn(
                    verb,
                    "v",
                    &conf,
                    &[("RHOST_LOCAL_TEST_CRASH_AT", n.to_string())],
                );
                let status = child.wait().unwrap();
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                if code != KILLED {
                    assert_eq!(code, 0, "{ctx}: the call failed without a kill");
                    assert!(n > 5, "{ctx}: too few crash points reached");
                    break;
                }
                covered += 1;
                let mut known: HashSet<String> = base.keys().cloned().collect();
                known.insert("v".into());
                assert_only_known(&data, &known, &ctx);
                // Reclaimable without GC: a retried ADD gets one address per range set, DEL
                // then leaves exactly the base, every base attachment keeping its addresses.
                if verb == "ADD" {
                    let r = call(&ours(), "ADD", "v", "eth0", &conf).ok().clone();
                    assert_eq!(addresses(&r).len(), 2, "{ctx}");
                    assert_eq!(
                        holders(&data)["v"].len(),
                        2,
                        "{ctx}: retry added a second set"
                    );
                }
                call(&ours(), "DEL", "v", "eth0", &conf).assert_ok();
                assert_eq!(holders(&data), base, "{ctx}: leak or loss after DEL");
                assert_eq!(temp_files(&data), 0, "{ctx}: temp files left");
                // The index is right: base attachments get their own addresses back.
                for id in ["u0", "o0"] {
                    let r = call(&ours(), "ADD", id, "eth0", &conf).ok().clone();
                    let mut got: Vec<IpAddr> =
                        addresses(&r).iter().map(|a| a.parse().unwrap()).collect();
                    got.sort();
                    assert_eq!(got, base[id], "{ctx}: {id}");
                }
                n += 1;
            }
        }
    }
    eprintln!("killed at {covered} crash points");
}

/// SIGKILL from outside at random instants: ADDs and DELs of random attachments, with upstream
/// host-local working on the same store in between, then a GC. Afterwards exactly the valid
/// attachments hold addresses and every other address can be allocated again.
#[test]
fn random_kills_leave_nothing_after_gc() {
    let started = Instant::now();
    let mut rng = Rng::new("random_kills_leave_nothing_after_gc");
    let data = temp_dir("rhl-randkill");
    let conf = conf(
        &data,
        "1.1.0",
        serde_json::json!({"ranges": [[{"subnet": "10.30.0.0/25"}]]}),
    );
    let mut upstream_conf = conf.clone();
    upstream_conf["cniVersion"] = "1.0.0".into();
    let mut valid: Vec<String> = Vec::new();
    for i in 0..5 {
        for (bin, c, p) in [(ours(), &conf, "o"), (upstream(), &upstream_conf, "u")] {
            let id = format!("{p}{i}");
            call(&bin, "ADD", &id, "eth0", c).assert_ok();
            valid.push(id);
        }
    }
    let mut victims: Vec<String> = Vec::new();
    let mut killed = 0;
    for i in 0..100 {
        let (verb, id) = if victims.is_empty() || rng.below(2) == 0 {
            let id = format!("k{i}");
            victims.push(id.clone());
            ("ADD", id)
        } else {
            (
                "DEL",
                victims[rng.below(victims.len() as u64) as usize].clone(),
            )
        };
        // Half the runs stretch the critical section so the kill lands inside it.
        let mut env = Vec::new();
        if rng.below(2) == 0 {
            env.push((
                "RHOST_LOCAL_TEST_STEP_DELAY_US",
                (50 + rng.below(250)).to_string(),
            ));
        }
        let mut child = spawn(verb, &id, &conf, &env);
        std::thread::sleep(Duration::from_micros(rng.below(4000)));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        if i % 10 == 9 {
            // Upstream takes the lock the killed process held.
            let id = format!("u{}", 100 + i);
            call(&upstream(), "ADD", &id, "eth0", &upstream_conf).assert_ok();
            valid.push(id);
        }
    }
    assert!(
        killed > 20,
        "only {killed} of 100 calls were still running when killed"
    );
    let mut known: HashSet<String> = valid.iter().cloned().collect();
    known.extend(victims.iter().cloned());
    assert_only_known(&data, &known, "after the kills");

    let h = holders(&data);
    let holding = victims.iter().filter(|v| h.contains_key(*v)).count();
    eprintln!(
        "before GC: {holding} killed or unfinished attachments hold addresses, {} temp files",
        temp_files(&data)
    );
    let before: BTreeMap<String, Vec<IpAddr>> = holders(&data)
        .into_iter()
        .filter(|(id, _)| valid.contains(id))
        .collect();
    let keep: Vec<(String, String)> = valid.iter().map(|id| (id.clone(), "eth0".into())).collect();
    gc(&data, &conf, &keep).assert_ok();
    assert_eq!(
        holders(&data),
        before,
        "GC left exactly the valid attachments"
    );
    assert_eq!(temp_files(&data), 0);

    // Every other address is usable: ADD until the /25 (125 addresses) runs out.
    let taken: HashSet<IpAddr> = before.values().flatten().copied().collect();
    let mut fresh = HashSet::new();
    for i in 0.. {
        let r = call(&ours(), "ADD", &format!("f{i}"), "eth0", &conf);
        if r.code != 0 {
            assert_eq!(r.err_code(), Some(104), "{}", r.stdout);
            break;
        }
        let ip: IpAddr = addresses(r.ok())[0].parse().unwrap();
        assert!(!taken.contains(&ip) && fresh.insert(ip));
    }
    assert_eq!(fresh.len() + taken.len(), 125, "addresses leaked");
    eprintln!(
        "{killed} of 100 calls killed mid-flight; took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
