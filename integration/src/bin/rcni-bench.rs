//! `scripts/bench`: our chain against the upstream chain doing the same work the way a runtime
//! calls them (one process per plugin call, each chain in a node namespace of its own), plus the
//! kernel's floor (the same kernel work from one running process). Prints one table with ratios.
//!
//!   rcni-bench [--runs N] [--storm N|0] [--scale 10,250,1000|none] [--quick]
//!   rcni-bench --scale-ours 10,1000   (only our scale points, for profiling)
//!
//! `RCNI_BENCH_LOG=FILE` makes our plugins log at debug level to FILE (rbridge's ADD and DEL
//! timelines).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use cni_testkit::Netns;
use rcni_integration::chain::{Exec, Runtime};
use serde_json::{json, Value};

struct Args {
    /// Only our chain's scale points.
    scale_ours: bool,
    runs: usize,
    storm: usize,
    scale: Vec<usize>,
}

impl Args {
    fn storm(&self) -> bool {
        self.storm > 0
    }
}

fn parse_args() -> Args {
    let mut a = Args {
        scale_ours: false,
        runs: 40,
        storm: 110,
        scale: vec![10, 250, 1000],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let next = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--runs" => a.runs = next().parse().expect("--runs N"),
            "--storm" => a.storm = next().parse().expect("--storm N"),
            "--scale" | "--scale-ours" => {
                a.scale_ours = argv[i] == "--scale-ours";
                a.scale = next()
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(|s| s.parse().expect("--scale A,B,C or none"))
                    .collect()
            }
            "--quick" => {
                a.runs = 10;
                a.storm = 30;
                a.scale = vec![10, 100];
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}; usage: rcni-bench [--runs N] [--storm N|0] [--scale A,B|none] [--quick]"),
        }
        i += 2;
    }
    a
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Ours,
    Upstream,
}

/// The conflist each side runs: bridge + IPAM + masquerade, same subnet, same options.
fn conflist(which: Which, state: &std::path::Path) -> Value {
    let ranges = json!([[{"subnet": "10.128.0.0/16"}]]);
    let mut list = match which {
        Which::Ours => json!({
            "cniVersion": "1.0.0", "name": "bench",
            "plugins": [{
                "type": "rbridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipMasq": true, "ipMasqStateDir": state.join("rmasq"),
                "ipam": {"type": "rhost-local", "ranges": ranges, "dataDir": state.join("ipam")}
            }]
        }),
        Which::Upstream => json!({
            "cniVersion": "1.0.0", "name": "bench",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": ranges, "dataDir": state.join("ipam")}
            }]
        }),
    };
    if let (Which::Ours, Some(log)) = (which, std::env::var_os("RCNI_BENCH_LOG")) {
        let plugin = &mut list["plugins"][0];
        plugin["logFile"] = json!(log.to_string_lossy());
        plugin["logLevel"] = json!("debug");
    }
    list
}

/// A node namespace with a chain and a supply of pod namespaces.
struct Bench {
    _node: Netns,
    rt: Runtime,
    list: Value,
    _state: cni_testkit::TempDir,
    next: usize,
}

struct Pod {
    ns: Netns,
    id: String,
    result: Value,
}

impl Bench {
    fn new(which: Which) -> Bench {
        let state = cni_testkit::temp_dir("bench");
        let node = Netns::new("bnode");
        let rt = Runtime::new(&node.path(), cni_testkit::cni_path_with_upstream());
        let list = conflist(which, state.path());
        Bench {
            _node: node,
            rt,
            list,
            _state: state,
            next: 0,
        }
    }

    fn pods(&mut self, n: usize) -> Vec<(Netns, String)> {
        (0..n)
            .map(|_| {
                self.next += 1;
                (Netns::new("bpod"), format!("bench-{}", self.next))
            })
            .collect()
    }

    fn add(&self, ns: Netns, id: String) -> (Pod, Duration, Vec<Exec>) {
        let started = Instant::now();
        let (result, execs) = self
            .rt
            .add(&self.list, &id, &ns.path().display().to_string(), "eth0")
            .unwrap_or_else(|e| panic!("ADD: {e}"));
        (Pod { ns, id, result }, started.elapsed(), execs)
    }

    fn del(&self, pod: &Pod) -> (Duration, Vec<Exec>) {
        let started = Instant::now();
        let execs = self
            .rt
            .del(
                &self.list,
                &pod.id,
                &pod.ns.path().display().to_string(),
                "eth0",
                Some(&pod.result),
            )
            .unwrap_or_else(|e| panic!("DEL: {e}"));
        (started.elapsed(), execs)
    }
}

/// A table row: metric, ours, upstream, ours/upstream, target.
type Row = (String, String, String, String, String);

fn ratio(o: f64, u: f64) -> String {
    if u > 0.0 {
        format!("{:.2}", o / u)
    } else {
        "-".into()
    }
}

/// A row comparing a measure of ours with upstream's, shown with `decimals`.
fn compared(metric: String, (o, u): (f64, f64), decimals: usize, target: String) -> Row {
    (
        metric,
        format!("{o:.decimals$}"),
        format!("{u:.decimals$}"),
        ratio(o, u),
        target,
    )
}

/// Highest peak RSS per executable over the processes of some calls.
fn peaks(into: &mut BTreeMap<String, u64>, execs: &[Exec]) {
    for p in execs.iter().flat_map(|e| &e.procs) {
        let v = into.entry(p.name.clone()).or_default();
        *v = (*v).max(p.peak_kib);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

#[derive(Default)]
struct Single {
    add_med: f64,
    add_p99: f64,
    del_med: f64,
    del_p99: f64,
    /// Peak RSS (KiB) per executable, ADD and DEL, from traced calls.
    add_rss: BTreeMap<String, u64>,
    del_rss: BTreeMap<String, u64>,
}

/// Timings and peak memory of single-pod calls, gathered over rounds.
#[derive(Default)]
struct Samples {
    adds: Vec<f64>,
    dels: Vec<f64>,
    add_rss: BTreeMap<String, u64>,
    del_rss: BTreeMap<String, u64>,
}

impl Samples {
    fn absorb(&mut self, other: Samples) {
        self.adds.extend(other.adds);
        self.dels.extend(other.dels);
        for (into, from) in [
            (&mut self.add_rss, other.add_rss),
            (&mut self.del_rss, other.del_rss),
        ] {
            for (name, kib) in from {
                let v = into.entry(name).or_default();
                *v = (*v).max(kib);
            }
        }
    }

    fn summary(mut self) -> Single {
        Single {
            add_med: percentile(&mut self.adds, 0.5),
            add_p99: percentile(&mut self.adds, 0.99),
            del_med: percentile(&mut self.dels, 0.5),
            del_p99: percentile(&mut self.dels, 0.99),
            add_rss: self.add_rss,
            del_rss: self.del_rss,
        }
    }
}

/// `runs` pods ADDed and DELed one at a time; with `rss`, five more traced for peak memory.
fn single(which: Which, runs: usize, rss: bool) -> Samples {
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

struct Storm {
    add_wall: f64,
    add_p99: f64,
    del_wall: f64,
    del_p99: f64,
}

/// `n` pods ADDed at once, then DELed at once: a node coming back from a reboot.
fn storm(which: Which, n: usize) -> Storm {
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
const SINGLE_ROUNDS: usize = 4;

/// Pods timed at each scale point (one ADD and DEL each).
const SCALE_RUNS: usize = 60;

/// Waits until the node is quiet: the pods just added announce themselves over IPv6 (DAD,
/// router solicitations, MLD), which the bridge floods to every port, so right after adding
/// hundreds of pods the kernel spends a third of the CPUs in softirq for a few seconds. The
/// cost of one more pod on a node with N pods is measured on a node at rest, as a node with
/// that many pods is most of the time; without this, the faster a chain fills the node, the
/// busier the node is when its own pods are timed. Quiet: under 5% of CPU time in softirq over
/// a second (at most 60 s).
fn settle() {
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
fn scale(which: Which, points: &[usize]) -> Vec<(usize, f64, f64)> {
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

/// The kernel work of one pod's ADD and DEL from this running process, no exec: veth pair with
/// the peer created in the pod, on the bridge, up (IPv6 off, as rbridge); address, link up and
/// default route in the pod; the pod's address into the masquerade rule's set (as rmasq does);
/// then the address out of the set and the host veth deleted. With `existing` pods on the node
/// first (not timed) and the node quiet, as the scale runs measure. Each timed pod's netns is
/// deleted right after its DEL, as the runtime does in the plugin runs: the kernel tears a netns
/// down in the background with RCU waits of its own, which lengthen the next veth deletion's
/// (here by about half), so a floor without them would not be the same kernel work.
fn floor(runs: usize, existing: usize) -> (Vec<f64>, Vec<f64>) {
    use cni_plugin::netns::NetNs;
    let node = Netns::new("bfloor");
    let node_ns = NetNs::open(&node.path()).unwrap();
    // The masquerade rule (set up once, as for a node's first pod): pods' sources in a set.
    let nft = std::process::Command::new("ip")
        .args(["netns", "exec", node.name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                b"table ip bfloor {\n set pods { type ipv4_addr; }\n chain post { type nat hook postrouting priority 100; ip saddr @pods masquerade; }\n}\n",
            )?;
            c.wait()
        })
        .expect("running nft");
    assert!(nft.success(), "nft could not create the floor's rule");
    let mut pods: Vec<Option<Netns>> = (0..existing + runs)
        .map(|_| Some(Netns::new("bpod")))
        .collect();
    // On a thread inside the node, as a plugin runs.
    let out = node_ns.run(|| floor_in_node(&mut pods, existing)).unwrap();
    drop(pods);
    out
}

fn floor_in_node(pods: &mut [Option<Netns>], existing: usize) -> (Vec<f64>, Vec<f64>) {
    use cni_netlink::netfilter::{ElemOp, Family, Netfilter};
    use cni_netlink::{BridgeSpec, Netlink, RouteSpec, VethSpec};
    use cni_plugin::netns::NetNs;
    let mut nfnl = Netfilter::open().expect("netfilter socket");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let host = Netlink::open(None).unwrap();
        // As rbridge makes it (IPv6 DAD off, fixed MAC), so the floor does the same kernel work.
        let spec = BridgeSpec {
            name: "cni0",
            mac: Some([0x02, 0, 0, 0, 0, 0x01]),
            no_dad: true,
            ..Default::default()
        };
        let (br, _) = host.ensure_bridge_with(&spec).await.unwrap();
        host.add_address(br.index, "10.128.0.1/16".parse().unwrap(), false)
            .await
            .unwrap();
        // One pod's ADD: veth into the pod, on the bridge; address, up, route; set element.
        let add = |pod: &Netns, i: usize, nfnl: &mut Netfilter| {
            let pod_ns = NetNs::open(&pod.path()).unwrap();
            let addr: IpAddr = format!("10.128.{}.{}", 1 + i / 250, 2 + i % 250)
                .parse()
                .unwrap();
            let key = match addr {
                IpAddr::V4(a) => a.octets(),
                IpAddr::V6(_) => unreachable!(),
            };
            nfnl.change_elements(Family::Ipv4, "bfloor", &[(ElemOp::Add, "pods", &key)])
                .unwrap();
            let host = &host;
            async move {
                let name = format!("vethf{i}");
                host.create_veth(&VethSpec {
                    host_name: &name,
                    host_master: Some(br.index),
                    host_up: false,
                    host_mac: None,
                    peer_name: "eth0",
                    peer_ns: &pod_ns,
                    peer_mac: Some([0x0a, 0x58, 0, 0, (i >> 8) as u8, i as u8]),
                    mtu: None,
                })
                .await
                .unwrap();
                // As rbridge: the port up without IPv6 of its own.
                host.set_port_up(name.as_str()).await.unwrap();
                let inside = Netlink::open(Some(&pod_ns)).unwrap();
                let eth0 = inside.link_by_name("eth0").await.unwrap().unwrap();
                inside
                    .add_address(eth0.index, ipnet::IpNet::new(addr, 16).unwrap(), false)
                    .await
                    .unwrap();
                inside.set_up(eth0.index).await.unwrap();
                inside
                    .add_route(&RouteSpec::new(
                        "0.0.0.0/0".parse().unwrap(),
                        Some("10.128.0.1".parse().unwrap()),
                        Some(eth0.index),
                    ))
                    .await
                    .unwrap();
                (name, key)
            }
        };
        // The pods already on the node, as the scale runs have them.
        for (i, pod) in pods.iter().enumerate().take(existing) {
            add(pod.as_ref().unwrap(), i, &mut nfnl).await;
        }
        if existing > 0 {
            settle();
        }
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for (i, pod) in pods.iter_mut().enumerate().skip(existing) {
            let started = Instant::now();
            let (name, key) = add(pod.as_ref().unwrap(), i, &mut nfnl).await;
            adds.push(ms(started.elapsed()));
            let started = Instant::now();
            nfnl.change_elements(Family::Ipv4, "bfloor", &[(ElemOp::Delete, "pods", &key)])
                .unwrap();
            let hv = host.link_by_name(&name).await.unwrap().unwrap();
            host.delete_link(hv.index).await.unwrap();
            dels.push(ms(started.elapsed()));
            // As the runtime after DEL (see above).
            *pod = None;
        }
        (adds, dels)
    })
}

fn size_kib(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len() / 1024).unwrap_or(0)
}

fn main() {
    cni_testkit::require_root();
    let args = parse_args();
    if args.scale_ours {
        for (n, add, del) in scale(Which::Ours, &args.scale) {
            println!("ours with {n} pods: ADD {add:.2} ms, DEL {del:.2} ms");
        }
        return;
    }
    let mut rows: Vec<Row> = Vec::new();
    let verdict = |ok: bool| {
        if ok {
            "met".to_string()
        } else {
            "MISSED".to_string()
        }
    };

    // The floor, ours and upstream take turns, a few rounds of each, so that a slower or faster
    // spell of a shared machine weighs on all three alike (their ratios are the targets).
    let per_round = args.runs.div_ceil(SINGLE_ROUNDS);
    let (mut floor_adds, mut floor_dels) = (Vec::new(), Vec::new());
    let (mut o, mut u) = (Samples::default(), Samples::default());
    for round in 0..SINGLE_ROUNDS {
        eprintln!(
            "one pod, round {}/{SINGLE_ROUNDS}: floor, ours, upstream ({per_round} runs each)...",
            round + 1
        );
        let (a, d) = floor(per_round, 0);
        floor_adds.extend(a);
        floor_dels.extend(d);
        o.absorb(single(Which::Ours, per_round, round == 0));
        u.absorb(single(Which::Upstream, per_round, round == 0));
    }
    let floor_add = percentile(&mut floor_adds, 0.5);
    let floor_del = percentile(&mut floor_dels, 0.5);
    let (o, u) = (o.summary(), u.summary());
    rows.push(compared(
        "ADD median (ms)".into(),
        (o.add_med, u.add_med),
        1,
        format!(
            "<= 0.20 of upstream: {}",
            verdict(o.add_med <= 0.2 * u.add_med)
        ),
    ));
    rows.push(compared(
        "ADD p99 (ms)".into(),
        (o.add_p99, u.add_p99),
        1,
        String::new(),
    ));
    rows.push(compared(
        "DEL median (ms)".into(),
        (o.del_med, u.del_med),
        1,
        format!(
            "<= 1.3x floor ({:.1}): {}",
            floor_del,
            verdict(o.del_med <= 1.3 * floor_del)
        ),
    ));
    rows.push(compared(
        "DEL p99 (ms)".into(),
        (o.del_p99, u.del_p99),
        1,
        String::new(),
    ));
    rows.push((
        "ADD vs floor".into(),
        format!("{:.1}x", o.add_med / floor_add),
        format!("{:.1}x", u.add_med / floor_add),
        String::new(),
        format!(
            "ours <= 3x floor ({:.2} ms): {}",
            floor_add,
            verdict(o.add_med <= 3.0 * floor_add)
        ),
    ));
    rows.push((
        "DEL vs floor".into(),
        format!("{:.2}x", o.del_med / floor_del),
        format!("{:.2}x", u.del_med / floor_del),
        String::new(),
        String::new(),
    ));

    if args.storm() {
        eprintln!("storm of {} pods, ours...", args.storm);
        let so = storm(Which::Ours, args.storm);
        eprintln!("storm of {} pods, upstream...", args.storm);
        let su = storm(Which::Upstream, args.storm);
        let target = format!(
            "<= 0.20 of upstream: {}",
            verdict(so.add_wall <= 0.2 * su.add_wall)
        );
        for (what, o, u, target) in [
            ("ADD wall", so.add_wall, su.add_wall, target),
            ("ADD p99", so.add_p99, su.add_p99, String::new()),
            ("DEL wall", so.del_wall, su.del_wall, String::new()),
            ("DEL p99", so.del_p99, su.del_p99, String::new()),
        ] {
            rows.push(compared(
                format!("storm {} {what} (ms)", args.storm),
                (o, u),
                0,
                target,
            ));
        }
    }

    let (sco, scu) = if args.scale.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        eprintln!("scale {:?}, ours...", args.scale);
        let sco = scale(Which::Ours, &args.scale);
        eprintln!("scale {:?}, upstream...", args.scale);
        (sco, scale(Which::Upstream, &args.scale))
    };
    for ((n, oa, od), (_, ua, ud)) in sco.iter().zip(&scu) {
        rows.push((
            format!("ADD / DEL with {n} pods (ms)"),
            format!("{oa:.1} / {od:.1}"),
            format!("{ua:.1} / {ud:.1}"),
            ratio(oa + od, ua + ud),
            String::new(),
        ));
    }
    if let (Some(first), Some(last)) = (sco.first(), sco.last()) {
        let growth = (last.1 + last.2) / (first.1 + first.2);
        let ugrowth = (scu.last().unwrap().1 + scu.last().unwrap().2) / (scu[0].1 + scu[0].2);
        rows.push((
            format!("cost at {} / cost at {}", last.0, first.0),
            format!("{growth:.2}"),
            format!("{ugrowth:.2}"),
            String::new(),
            format!("ours <= 1.2: {}", verdict(growth <= 1.2)),
        ));
        // The kernel's own growth: the floor with as many pods already on its node.
        eprintln!("floor at scale {:?}...", args.scale);
        let floors: Vec<(f64, f64)> = args
            .scale
            .iter()
            .map(|&n| {
                let (mut a, mut d) = floor(SCALE_RUNS, n);
                (percentile(&mut a, 0.5), percentile(&mut d, 0.5))
            })
            .collect();
        for (&n, (fa, fd)) in args.scale.iter().zip(&floors) {
            rows.push((
                format!("floor ADD / DEL with {n} pods (ms)"),
                format!("{fa:.2} / {fd:.1}"),
                String::new(),
                String::new(),
                String::new(),
            ));
        }
        let (f0, f1) = (floors[0], floors[floors.len() - 1]);
        rows.push((
            format!("floor cost at {} / cost at {}", last.0, first.0),
            format!("{:.2}", (f1.0 + f1.1) / (f0.0 + f0.1)),
            String::new(),
            String::new(),
            String::new(),
        ));
    }
    // Peak RSS: each plugin process on its own, then the largest process of each chain.
    for (verb, ours, theirs) in [
        ("ADD", &o.add_rss, &u.add_rss),
        ("DEL", &o.del_rss, &u.del_rss),
    ] {
        for (on, un) in [("rbridge", "bridge"), ("rhost-local", "host-local")] {
            let (a, b) = (
                ours.get(on).copied().unwrap_or(0),
                theirs.get(un).copied().unwrap_or(0),
            );
            rows.push((
                format!("peak RSS {verb}: {on} vs {un} (KiB)"),
                a.to_string(),
                b.to_string(),
                ratio(a as f64, b as f64),
                String::new(),
            ));
        }
        let a = ours.values().copied().max().unwrap_or(0);
        let b = theirs.values().copied().max().unwrap_or(0);
        rows.push((
            format!("peak RSS {verb}: largest process (KiB)"),
            a.to_string(),
            b.to_string(),
            ratio(a as f64, b as f64),
            format!(
                "<= 0.5 of upstream: {}",
                verdict((a as f64) <= b as f64 / 2.0)
            ),
        ));
    }
    let bin = cni_testkit::bin_dir();
    let up = cni_testkit::upstream_dir();
    for (ours, theirs) in [
        ("rbridge", "bridge"),
        ("rhost-local", "host-local"),
        ("rmasq", ""),
        ("rroutes", ""),
    ] {
        let os = size_kib(&bin.join(ours));
        let us = if theirs.is_empty() {
            0
        } else {
            size_kib(&up.join(theirs))
        };
        rows.push((
            format!("binary size {ours} (KiB)"),
            os.to_string(),
            if us > 0 {
                format!("{us} ({theirs})")
            } else {
                "-".into()
            },
            if us > 0 {
                ratio(os as f64, us as f64)
            } else {
                String::new()
            },
            String::new(),
        ));
    }

    println!("| metric | ours | upstream | ours/upstream | target |");
    println!("|---|---|---|---|---|");
    for (m, o, u, r, t) in rows {
        println!("| {m} | {o} | {u} | {r} | {t} |");
    }
    println!("\nfloor: ADD {floor_add:.2} ms, DEL {floor_del:.2} ms (the same netlink and nf_tables work from one running process, no exec)");
    println!("ours: rbridge (ipMasq through the rmasq library) + rhost-local; upstream: bridge (ipMasq) + host-local; cniVersion 1.0.0");
    println!(
        "machine: {} CPUs, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
}
