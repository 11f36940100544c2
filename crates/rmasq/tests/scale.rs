//! ADD and DEL time with 1,000 pods on the node against 10 (the goal: within 1.2 times).
//! Timing on a shared machine is noisy, so this is opt-in:
//! `cargo test -p rmasq --test scale -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn conf(w: &World, backend: &str, n: u32) -> Value {
    let v4 = format!("10.77.{}.{}/16", n / 250, n % 250 + 2);
    let v6 = format!("fd77::{:x}/64", n + 2);
    w.conf(backend, &[&v4, &v6], json!({}))
}

/// The `q` quantile. The lower quartile estimates the cost itself best on a busy machine, where
/// other processes only ever add time.
fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q) as usize]
}

/// ADD then DEL of one extra pod; returns their durations.
fn add_del(w: &World, backend: &str, k: u32) -> (Duration, Duration) {
    let c = conf(w, backend, 5000 + k);
    let t = Instant::now();
    w.rmasq("ADD", "probe", &c).ok();
    let add = t.elapsed();
    let t = Instant::now();
    w.rmasq("DEL", "probe", &c).assert_ok();
    (add, t.elapsed())
}

#[test]
#[ignore = "timing: run by hand"]
fn add_and_del_time_does_not_grow_with_pods() {
    for backend in ["nftables", "iptables"] {
        // Two nodes measured in alternation, so the load of a shared machine hits both alike.
        let nodes: Vec<(u32, World)> = [10, 1000].map(|pods| (pods, World::new())).into();
        for (pods, w) in &nodes {
            for n in 0..*pods {
                w.rmasq("ADD", &format!("c{n}"), &conf(w, backend, n)).ok();
            }
        }
        let mut samples = vec![(Vec::new(), Vec::new()); 2];
        for k in 0..60 {
            for (i, (_, w)) in nodes.iter().enumerate() {
                let (add, del) = add_del(w, backend, k);
                samples[i].0.push(add);
                samples[i].1.push(del);
            }
        }
        let mut rows = Vec::new();
        for ((pods, _), (a, d)) in nodes.iter().zip(samples) {
            let (add, del) = (quantile(a.clone(), 0.25), quantile(d.clone(), 0.25));
            println!(
                "{backend}: {pods:>4} pods: ADD p25 {add:.1?} median {:.1?}, DEL p25 {del:.1?} median {:.1?}",
                quantile(a, 0.5),
                quantile(d, 0.5)
            );
            rows.push((add, del));
        }
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
        let (add_r, del_r) = (ratio(rows[0].0, rows[1].0), ratio(rows[0].1, rows[1].1));
        println!("{backend}: ratio 1000/10 (p25): ADD {add_r:.2} DEL {del_r:.2}");
        assert!(
            add_r <= 1.2 && del_r <= 1.2,
            "{backend}: ADD x{add_r:.2} DEL x{del_r:.2}"
        );
    }
}
