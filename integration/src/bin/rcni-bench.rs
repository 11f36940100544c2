//! `scripts/bench`: our chain against the upstream chain doing the same work the way a runtime
//! calls them (one process per plugin call, each chain in a node namespace of its own), plus the
//! kernel's floor (the same kernel work from one running process). Prints one table with ratios.
//!
//!   rcni-bench [--runs N] [--storm N] [--scale 10,250,1000] [--quick]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cni_testkit::Netns;
use rcni_integration::chain::Runtime;
use serde_json::{json, Value};

struct Args {
    runs: usize,
    storm: usize,
    scale: Vec<usize>,
}

fn parse_args() -> Args {
    let mut a = Args {
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
            "--scale" => a.scale = next().split(',').map(|s| s.parse().expect("--scale A,B,C")).collect(),
            "--quick" => {
                a.runs = 10;
                a.storm = 30;
                a.scale = vec![10, 100];
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}; usage: rcni-bench [--runs N] [--storm N] [--scale A,B] [--quick]"),
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
    match which {
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
    }
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

    fn add(&self, ns: Netns, id: String) -> (Pod, Duration, i64) {
        let started = Instant::now();
        let (result, execs) = self
            .rt
            .add(&self.list, &id, &ns.path().display().to_string(), "eth0")
            .unwrap_or_else(|e| panic!("ADD: {e}"));
        let rss = execs.iter().map(|e| e.max_rss_kib).max().unwrap_or(0);
        (Pod { ns, id, result }, started.elapsed(), rss)
    }

    fn del(&self, pod: &Pod) -> (Duration, i64) {
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
        (
            started.elapsed(),
            execs.iter().map(|e| e.max_rss_kib).max().unwrap_or(0),
        )
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
    add_rss: i64,
    del_rss: i64,
}

fn single(which: Which, runs: usize) -> Single {
    let mut b = Bench::new(which);
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    let (mut add_rss, mut del_rss) = (0, 0);
    // One warm-up pod creates the bridge and shared rules, as on a running node.
    let warm = b.pods(1).pop().unwrap();
    let (warm_pod, _, _) = b.add(warm.0, warm.1);
    for (ns, id) in b.pods(runs) {
        let (pod, t, rss) = b.add(ns, id);
        adds.push(ms(t));
        add_rss = add_rss.max(rss);
        let (t, rss) = b.del(&pod);
        dels.push(ms(t));
        del_rss = del_rss.max(rss);
    }
    b.del(&warm_pod);
    Single {
        add_med: percentile(&mut adds, 0.5),
        add_p99: percentile(&mut adds, 0.99),
        del_med: percentile(&mut dels, 0.5),
        del_p99: percentile(&mut dels, 0.99),
        add_rss,
        del_rss,
    }
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

/// ADD and DEL of one more pod (median of a few) with `existing` pods already on the node.
fn scale(which: Which, points: &[usize]) -> Vec<(usize, f64, f64)> {
    let mut b = Bench::new(which);
    let mut existing: Vec<Pod> = Vec::new();
    let mut out = Vec::new();
    for &n in points {
        let need = n.saturating_sub(existing.len());
        for (ns, id) in b.pods(need) {
            existing.push(b.add(ns, id).0);
        }
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for (ns, id) in b.pods(7) {
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
/// the peer created in the pod, on the bridge, up; address, link up and default route in the pod;
/// then deleting the host veth. Masquerade is left out: see the README.
fn floor(runs: usize) -> (f64, f64) {
    use cni_netlink::{BridgeSpec, Netlink, RouteSpec, VethSpec};
    use cni_types::netns::NetNs;
    let node = Netns::new("bfloor");
    let node_ns = NetNs::open(&node.path()).unwrap();
    let pods: Vec<Netns> = (0..runs).map(|_| Netns::new("bpod")).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let host = Netlink::open(Some(&node_ns)).unwrap();
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
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for (i, pod) in pods.iter().enumerate() {
            let started = Instant::now();
            let pod_ns = NetNs::open(&pod.path()).unwrap();
            let name = format!("vethf{i}");
            host.create_veth(&VethSpec {
                host_name: &name,
                host_master: Some(br.index),
                host_up: true,
                host_mac: None,
                peer_name: "eth0",
                peer_ns: &pod_ns,
                peer_mac: Some([0x0a, 0x58, 0, 0, (i >> 8) as u8, i as u8]),
                mtu: None,
            })
            .await
            .unwrap();
            let inside = Netlink::open(Some(&pod_ns)).unwrap();
            let eth0 = inside.link_by_name("eth0").await.unwrap().unwrap();
            let addr: IpAddr = format!("10.128.{}.{}", 1 + i / 250, 2 + i % 250)
                .parse()
                .unwrap();
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
            adds.push(ms(started.elapsed()));
            let started = Instant::now();
            let hv = host.link_by_name(&name).await.unwrap().unwrap();
            host.delete_link(hv.index).await.unwrap();
            dels.push(ms(started.elapsed()));
        }
        (percentile(&mut adds, 0.5), percentile(&mut dels, 0.5))
    })
}

fn size_kib(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len() / 1024).unwrap_or(0)
}

fn main() {
    cni_testkit::require_root();
    let args = parse_args();
    let mut rows: Vec<(String, String, String, String, String)> = Vec::new();
    let ratio = |o: f64, u: f64| {
        if u > 0.0 {
            format!("{:.2}", o / u)
        } else {
            "-".into()
        }
    };
    let verdict = |ok: bool| {
        if ok {
            "met".to_string()
        } else {
            "MISSED".to_string()
        }
    };

    eprintln!("floor ({} runs)...", args.runs);
    let (floor_add, floor_del) = floor(args.runs);
    eprintln!("one pod, ours ({} runs)...", args.runs);
    let o = single(Which::Ours, args.runs);
    eprintln!("one pod, upstream ({} runs)...", args.runs);
    let u = single(Which::Upstream, args.runs);
    rows.push((
        "ADD median (ms)".into(),
        format!("{:.1}", o.add_med),
        format!("{:.1}", u.add_med),
        ratio(o.add_med, u.add_med),
        format!(
            "<= 0.20 of upstream: {}",
            verdict(o.add_med <= 0.2 * u.add_med)
        ),
    ));
    rows.push((
        "ADD p99 (ms)".into(),
        format!("{:.1}", o.add_p99),
        format!("{:.1}", u.add_p99),
        ratio(o.add_p99, u.add_p99),
        String::new(),
    ));
    rows.push((
        "DEL median (ms)".into(),
        format!("{:.1}", o.del_med),
        format!("{:.1}", u.del_med),
        ratio(o.del_med, u.del_med),
        format!(
            "<= 1.3x floor ({:.1}): {}",
            floor_del,
            verdict(o.del_med <= 1.3 * floor_del)
        ),
    ));
    rows.push((
        "DEL p99 (ms)".into(),
        format!("{:.1}", o.del_p99),
        format!("{:.1}", u.del_p99),
        ratio(o.del_p99, u.del_p99),
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

    eprintln!("storm of {} pods, ours...", args.storm);
    let so = storm(Which::Ours, args.storm);
    eprintln!("storm of {} pods, upstream...", args.storm);
    let su = storm(Which::Upstream, args.storm);
    rows.push((
        format!("storm {} ADD wall (ms)", args.storm),
        format!("{:.0}", so.add_wall),
        format!("{:.0}", su.add_wall),
        ratio(so.add_wall, su.add_wall),
        format!(
            "<= 0.20 of upstream: {}",
            verdict(so.add_wall <= 0.2 * su.add_wall)
        ),
    ));
    rows.push((
        format!("storm {} ADD p99 (ms)", args.storm),
        format!("{:.0}", so.add_p99),
        format!("{:.0}", su.add_p99),
        ratio(so.add_p99, su.add_p99),
        String::new(),
    ));
    rows.push((
        format!("storm {} DEL wall (ms)", args.storm),
        format!("{:.0}", so.del_wall),
        format!("{:.0}", su.del_wall),
        ratio(so.del_wall, su.del_wall),
        String::new(),
    ));
    rows.push((
        format!("storm {} DEL p99 (ms)", args.storm),
        format!("{:.0}", so.del_p99),
        format!("{:.0}", su.del_p99),
        ratio(so.del_p99, su.del_p99),
        String::new(),
    ));

    eprintln!("scale {:?}, ours...", args.scale);
    let sco = scale(Which::Ours, &args.scale);
    eprintln!("scale {:?}, upstream...", args.scale);
    let scu = scale(Which::Upstream, &args.scale);
    for ((n, oa, od), (_, ua, ud)) in sco.iter().zip(&scu) {
        rows.push((
            format!("ADD+DEL with {n} pods (ms)"),
            format!("{:.1}", oa + od),
            format!("{:.1}", ua + ud),
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
    }
    rows.push((
        "peak RSS ADD (KiB)".into(),
        o.add_rss.to_string(),
        u.add_rss.to_string(),
        ratio(o.add_rss as f64, u.add_rss as f64),
        format!(
            "<= 0.33 of upstream: {}",
            verdict((o.add_rss as f64) <= u.add_rss as f64 / 3.0)
        ),
    ));
    rows.push((
        "peak RSS DEL (KiB)".into(),
        o.del_rss.to_string(),
        u.del_rss.to_string(),
        ratio(o.del_rss as f64, u.del_rss as f64),
        String::new(),
    ));
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
    println!("\nfloor: ADD {floor_add:.2} ms, DEL {floor_del:.2} ms (netlink from one running process, no exec, no masquerade)");
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
