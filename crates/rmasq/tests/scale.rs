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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median ADD and DEL time of `rounds` extra pods with `pods` already attached.
fn measure(w: &World, backend: &str, rounds: u32) -> (Duration, Duration) {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        let c = conf(w, backend, 5000 + k);
        let t = Instant::now();
        w.rmasq("ADD", "probe", &c).ok();
        adds.push(t.elapsed());
        let t = Instant::now();
        w.rmasq("DEL", "probe", &c).assert_ok();
        dels.push(t.elapsed());
    }
    (median(adds), median(dels))
}

#[test]
#[ignore = "timing: run by hand"]
fn add_and_del_time_does_not_grow_with_pods() {
    for backend in ["nftables", "iptables"] {
        let w = World::new();
        let mut n = 0;
        let mut rows = Vec::new();
        for pods in [10, 1000] {
            while n < pods {
                w.rmasq("ADD", &format!("c{n}"), &conf(&w, backend, n)).ok();
                n += 1;
            }
            let (add, del) = measure(&w, backend, 40);
            println!("{backend}: {pods:>4} pods: ADD {add:?} DEL {del:?}");
            rows.push((add, del));
        }
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
        let (add_r, del_r) = (ratio(rows[0].0, rows[1].0), ratio(rows[0].1, rows[1].1));
        println!("{backend}: ratio 1000/10: ADD {add_r:.2} DEL {del_r:.2}");
        assert!(
            add_r <= 1.2 && del_r <= 1.2,
            "{backend}: ADD x{add_r:.2} DEL x{del_r:.2}"
        );
    }
}
