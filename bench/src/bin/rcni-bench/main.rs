//! `scripts/bench`: our chain against the upstream chain doing the same work the way a runtime
//! calls them (one process per plugin call, each chain in a node namespace of its own), plus the
//! kernel's floor (the same kernel work from one running process). Prints one table with ratios.
//!
//!   rcni-bench [--runs N] [--empty N|0] [--storm N|0] [--scale 10,250,1000|none]
//!              [--cluster 500,5000|none] [--quick] [--state-dir DIR]
//!   rcni-bench --scale-ours 10,1000   (only our scale points, for profiling)
//!   rcni-bench --empty-only N         (only the empty node's first and last pod)
//!   rcni-bench --cluster-only 500,5000  (only the node agent's routes at those cluster sizes)
//!
//! `RCNI_BENCH_LOG=FILE` makes our plugins log at debug level to FILE (rbridge's ADD and DEL
//! timelines). Method: docs/performance.md.

mod args;
mod chain;
mod cluster;
mod empty;
mod floor;
mod gc;
mod measure;
mod stats;
mod table;

use chain::Which;
use measure::{scale, single, storm, SCALE_RUNS, SINGLE_ROUNDS};
use stats::{percentile, Samples, Single};
use table::Row;

/// The floor, ours and upstream take turns, a few rounds of each, so that a slower or faster
/// spell of a shared machine weighs on all three alike (their ratios are the targets). Returns
/// the rows, our and upstream's summaries (with their peak RSS), and the floor's medians.
fn single_pod(runs: usize) -> (Vec<Row>, Single, Single, (f64, f64)) {
    let per_round = runs.div_ceil(SINGLE_ROUNDS);
    let (mut floor_adds, mut floor_dels) = (Vec::new(), Vec::new());
    let (mut o, mut u) = (Samples::default(), Samples::default());
    for round in 0..SINGLE_ROUNDS {
        eprintln!(
            "one pod, round {}/{SINGLE_ROUNDS}: floor, ours, upstream ({per_round} runs each)...",
            round + 1
        );
        let (a, d) = floor::floor(per_round, 0);
        floor_adds.extend(a);
        floor_dels.extend(d);
        o.absorb(single(Which::Ours, per_round, round == 0));
        u.absorb(single(Which::Upstream, per_round, round == 0));
    }
    let floor = (
        percentile(&mut floor_adds, 0.5),
        percentile(&mut floor_dels, 0.5),
    );
    let (o, u) = (o.summary(), u.summary());
    (table::single_rows(&o, &u, floor), o, u, floor)
}

/// One more pod at each scale point, ours and upstream's, and the floor with as many pods.
fn scale_rows(points: &[usize]) -> Vec<Row> {
    eprintln!("scale {points:?}, ours...");
    let ours = scale(Which::Ours, points);
    eprintln!("scale {points:?}, upstream...");
    let theirs = scale(Which::Upstream, points);
    eprintln!("floor at scale {points:?}...");
    let floors: Vec<(usize, f64, f64)> = points
        .iter()
        .map(|&n| {
            let (mut a, mut d) = floor::floor(SCALE_RUNS, n);
            (n, percentile(&mut a, 0.5), percentile(&mut d, 0.5))
        })
        .collect();
    table::scale_rows(&ours, &theirs, &floors)
}

fn cluster_rows(sizes: &[usize]) -> Vec<Row> {
    let points: Vec<cluster::Scale> = sizes
        .iter()
        .map(|&n| {
            eprintln!("node agent with {n} nodes...");
            cluster::measure(n)
        })
        .collect();
    cluster::rows(&points)
}

fn main() {
    cni_testkit::require_root();
    let args = args::parse_args();
    if let Some(dir) = &args.state_dir {
        chain::set_state_base(dir);
    }
    if args.scale_ours {
        for (n, add, del) in scale(Which::Ours, &args.scale) {
            println!("ours with {n} pods: ADD {add:.2} ms, DEL {del:.2} ms");
        }
        return;
    }
    if args.empty_only {
        table::print(&empty::empty_rows(args.empty));
        return;
    }
    if args.cluster_only {
        table::print(&cluster_rows(&args.cluster));
        return;
    }
    if args.gc_only {
        table::print(&gc::gc_rows(args.gc));
        return;
    }
    let (mut rows, o, u, (floor_add, floor_del)) = single_pod(args.runs);
    if args.empty > 0 {
        rows.extend(empty::empty_rows(args.empty));
    }
    if args.storm() {
        eprintln!("storm of {} pods, ours...", args.storm);
        let so = storm(Which::Ours, args.storm);
        eprintln!("storm of {} pods, upstream...", args.storm);
        let su = storm(Which::Upstream, args.storm);
        rows.extend(table::storm_rows(args.storm, &so, &su));
    }
    if !args.scale.is_empty() {
        rows.extend(scale_rows(&args.scale));
    }
    if !args.cluster.is_empty() {
        rows.extend(cluster_rows(&args.cluster));
    }
    if args.gc > 0 {
        rows.extend(gc::gc_rows(args.gc));
    }
    rows.extend(table::rss_rows("ADD", &o.add_rss, &u.add_rss));
    rows.extend(table::rss_rows("DEL", &o.del_rss, &u.del_rss));
    rows.extend(table::size_rows(
        &cni_testkit::bin_dir(),
        &cni_testkit::upstream_dir(),
    ));
    table::print(&rows);
    println!("\nfloor: ADD {floor_add:.2} ms, DEL {floor_del:.2} ms (the same netlink and nf_tables work from one running process, no exec)");
    println!("ours: rbridge (ipMasq through the rmasq library) + rhost-local; upstream: bridge (ipMasq) + host-local; cniVersion 1.0.0");
    let state = match &args.state_dir {
        Some(d) => d.display().to_string(),
        None => std::env::temp_dir().display().to_string(),
    };
    println!(
        "machine: {} CPUs, kernel {}; state on {state}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
}
