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

/// The library's own cost per pod of an existing class, without process start-up: median and
/// lower quartile of `Masq::setup` and `Masq::teardown`, per backend, with and without
/// allowForward. Prints only:
/// `cargo test --release -p rmasq --test scale -- --ignored --nocapture in_process`.
#[test]
#[ignore = "timing: run by hand"]
fn in_process_setup_and_teardown_time() {
    use cni_plugin::netns::NetNs;
    use rmasq::{BackendKind, Masq, Options};

    for backend in [BackendKind::Nftables, BackendKind::Iptables] {
        for allow_forward in [true, false] {
            let w = World::new();
            let ns = NetNs::open(&w.node.path()).unwrap();
            let (setup, teardown) = ns
                .run(|| {
                    let masq = Masq::new(w.state.join("lib"));
                    let opts = Options {
                        backend: Some(backend),
                        allow_forward,
                        ..Options::default()
                    };
                    let first = ["10.77.0.2/16".parse().unwrap()];
                    masq.setup("pods", "first", "eth0", &first, &opts).unwrap();
                    let (mut setup, mut teardown) = (Vec::new(), Vec::new());
                    for k in 0..200u32 {
                        let addr = [format!("10.77.{}.{}/16", 1 + k / 250, k % 250 + 2)
                            .parse()
                            .unwrap()];
                        let t = Instant::now();
                        masq.setup("pods", "probe", "eth0", &addr, &opts).unwrap();
                        setup.push(t.elapsed());
                        let t = Instant::now();
                        masq.teardown("pods", "probe", "eth0").unwrap();
                        teardown.push(t.elapsed());
                    }
                    masq.teardown("pods", "first", "eth0").unwrap();
                    (setup, teardown)
                })
                .unwrap();
            println!(
                "{backend} allowForward={allow_forward}: setup median {:.0?} p25 {:.0?}, teardown median {:.0?} p25 {:.0?}",
                quantile(setup.clone(), 0.5),
                quantile(setup, 0.25),
                quantile(teardown.clone(), 0.5),
                quantile(teardown, 0.25)
            );
        }
    }
}
