//! The measurements: single pods, storms, one more pod at scale.

use std::time::{Duration, Instant};

use crate::chain::{Bench, Pod, Which};
use crate::stats::{ms, peaks, percentile, Samples};

pub fn single(which: Which, runs: usize, rss: bool) -> Samples {
    let mut b = Bench::new(which);
    let mut out = Samples::default();
    // One warm-up pod creates the bridge and shared rules, as on a running node.
    let warm = b.pods(1).pop().unwrap();
    let (warm_pod, _, _) = b.add(warm.0, warm.1);
    for (ns, id) in b.pods(runs) {
        let (pod, t, _) = b.add(ns, id);
        out.adds.push(ms(t));
        let (t, _) = b.del(&pod);
        out.dels.push(ms(t));
    }
    if rss {
        // Memory from separate traced calls, so that tracing costs no timing above.
        b.rt.trace_rss = true;
        for (ns, id) in b.pods(5) {
            let (pod, _, execs) = b.add(ns, id);
            peaks(&mut out.add_rss, &execs);
            peaks(&mut out.del_rss, &b.del(&pod).1);
        }
        b.rt.trace_rss = false;
    }
    b.del(&warm_pod);
    out
}

pub struct Storm {
    pub add_wall: f64,
    pub add_p99: f64,
    pub del_wall: f64,
    pub del_p99: f64,
}

/// `n` pods ADDed at once, then DELed at once: a node coming back from a reboot.
pub fn storm(which: Which, n: usize) -> Storm {
    let mut b = Bench::new(which);
    let pods = b.pods(n);
    let started = Instant::now();
    let added: Vec<(Pod, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .into_iter()
            .map(|(ns, id)| {
                let b = &b;
                s.spawn(move || {
                    let (p, t, _) = b.add(ns, id);
                    (p, t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let add_wall = ms(started.elapsed());
    let mut add_times: Vec<f64> = added.iter().map(|(_, t)| ms(*t)).collect();
    let started = Instant::now();
    let mut del_times: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = added
            .iter()
            .map(|(p, _)| s.spawn(|| ms(b.del(p).0)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let del_wall = ms(started.elapsed());
    Storm {
        add_wall,
        add_p99: percentile(&mut add_times, 0.99),
        del_wall,
        del_p99: percentile(&mut del_times, 0.99),
    }
}

/// Rounds of the single-pod measurements (floor, ours, upstream in turn).
pub const SINGLE_ROUNDS: usize = 4;

/// Pods timed at each scale point (one ADD and DEL each).
pub const SCALE_RUNS: usize = 60;

/// Waits until the node is quiet: the pods just added announce themselves over IPv6 (DAD,
/// router solicitations, MLD), which the bridge floods to every port, so right after adding
/// hundreds of pods the kernel spends a third of the CPUs in softirq for a few seconds. The
/// cost of one more pod on a node with N pods is measured on a node at rest, as a node with
/// that many pods is most of the time; without this, the faster a chain fills the node, the
/// busier the node is when its own pods are timed. Quiet: under 5% of CPU time in softirq over
/// a second (at most 60 s).
pub fn settle() {
    // (softirq, total) jiffies from /proc/stat's first line.
    let cpu = || -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").expect("reading /proc/stat");
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        (v.get(6).copied().unwrap_or(0), v.iter().sum())
    };
    let started = Instant::now();
    let mut last = cpu();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu();
        let (soft, total) = (now.0 - last.0, now.1 - last.1);
        last = now;
        if soft * 20 < total.max(1) {
            break;
        }
    }
    eprintln!(
        "  node quiet after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// ADD and DEL of one more pod (median of SCALE_RUNS) with `existing` pods already on the node,
/// once the node is quiet.
pub fn scale(which: Which, points: &[usize]) -> Vec<(usize, f64, f64)> {
    let mut b = Bench::new(which);
    let mut existing: Vec<Pod> = Vec::new();
    let mut out = Vec::new();
    for &n in points {
        let need = n.saturating_sub(existing.len());
        for (ns, id) in b.pods(need) {
            existing.push(b.add(ns, id).0);
        }
        settle();
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for (ns, id) in b.pods(SCALE_RUNS) {
            let (pod, t, _) = b.add(ns, id);
            adds.push(ms(t));
            dels.push(ms(b.del(&pod).0));
        }
        out.push((n, percentile(&mut adds, 0.5), percentile(&mut dels, 0.5)));
    }
    for p in &existing {
        b.del(p);
    }
    out
}
