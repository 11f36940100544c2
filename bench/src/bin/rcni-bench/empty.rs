//! A node with no pod: its first pod after boot, and again each time it drains to zero. Every
//! ADD here creates the masquerade rules of its class and every DEL removes them, where on a warm
//! node they stay. The lifecycle is what a runtime does for one pod: netns, ADD, DEL, netns gone.

use std::time::Instant;

use crate::chain::{Bench, Which};
use crate::stats::{ms, percentile};
use crate::table::{compared, verdict, Row};

/// How many rounds the three chains take turns in.
const ROUNDS: usize = 4;

#[derive(Default)]
struct Samples {
    adds: Vec<f64>,
    dels: Vec<f64>,
    lives: Vec<f64>,
}

/// `runs` lifecycles of one pod on a node that has none; the first (which also makes the bridge)
/// is not counted.
fn lifecycles(which: Which, runs: usize, out: &mut Samples) {
    let mut b = Bench::new(which);
    let (ns, id) = b.pods(1).pop().unwrap();
    let (pod, _, _) = b.add(ns, id);
    b.del(&pod);
    drop(pod);
    for _ in 0..runs {
        let started = Instant::now();
        let (ns, id) = b.pods(1).pop().unwrap();
        let (pod, add, _) = b.add(ns, id);
        let (del, _) = b.del(&pod);
        drop(pod);
        out.lives.push(ms(started.elapsed()));
        out.adds.push(ms(add));
        out.dels.push(ms(del));
    }
}

/// Medians and p99 of (first ADD, last DEL, lifecycle).
fn summary(mut s: Samples) -> [(f64, f64); 3] {
    [&mut s.adds, &mut s.dels, &mut s.lives].map(|v| (percentile(v, 0.5), percentile(v, 0.99)))
}

/// The empty-node rows: ours (rbridge's `ipMasq`, and rmasq chained) against upstream.
pub fn empty_rows(runs: usize) -> Vec<Row> {
    let per_round = runs.div_ceil(ROUNDS);
    let mut samples: [Samples; 3] = Default::default();
    let sides = [Which::Ours, Which::OursChained, Which::Upstream];
    for round in 0..ROUNDS {
        eprintln!(
            "empty node, round {}/{ROUNDS}: ours, ours with rmasq chained, upstream ({per_round} runs each)...",
            round + 1
        );
        for (which, s) in sides.iter().zip(samples.iter_mut()) {
            lifecycles(*which, per_round, s);
        }
    }
    let [ours, chained, upstream] = samples.map(summary);
    let names = ["first pod's ADD", "last pod's DEL", "pod lifecycle"];
    let goals = [Some(0.25), None, Some(0.5)];
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (label, o) in [("ipMasq", ours[i]), ("rmasq chained", chained[i])] {
            let target = goals[i].map_or(String::new(), |g| {
                format!(
                    "<= {g:.2} of upstream: {}",
                    verdict(o.0 <= g * upstream[i].0)
                )
            });
            rows.push(compared(
                &format!("empty node, {name}, {label} (ms)"),
                (o.0, upstream[i].0),
                1,
                target,
            ));
            rows.push(compared(
                &format!("empty node, {name}, {label}, p99 (ms)"),
                (o.1, upstream[i].1),
                1,
                String::new(),
            ));
        }
    }
    rows
}
