//! Routes at cluster scale: the node agent (`rcni-install daemon`, the release build) watching
//! the fake API server that holds N nodes with a kubelet's bulk, in a node namespace whose
//! routing table really gets the N - 1 routes. Measured: the initial sync (start to ready with
//! every route in), the lag from a node's creation at the API server to its route in the kernel
//! (seen by `ip monitor route`, which prints each change as it happens), the agent's CPU time
//! per event (schedstat, in ns) and its peak RSS. `RCNI_BENCH_PROFILE=PREFIX` records the
//! joins with `perf record -g` into PREFIX-N.perf.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cni_testkit::{FakeApi, FakeNode, Netns};

use crate::stats::{ms, percentile};
use crate::table::Row;

const TOKEN: &str = "bench-token";
const METRICS: &str = "127.0.0.1:9465";
/// Nodes that join one by one after the initial sync, each timed.
const JOINS: usize = 100;

pub struct Scale {
    pub nodes: usize,
    pub sync_ms: f64,
    pub lag_med_ms: f64,
    pub lag_p99_ms: f64,
    pub cpu_per_event_us: f64,
    pub peak_rss_mib: f64,
    /// The kernel's share: one route added from a running process with as many routes there
    /// (median, us).
    pub floor_us: f64,
}

/// Node `i`: podCIDR 10.(128 + i / 256).(i % 256).0/24, address 10.100.(j / 256).(j % 256)
/// with j = i + 2 (so never .0, and the peer and this node keep 10.100.0.1 and 10.100.255.254).
fn node(i: usize) -> FakeNode {
    let j = i + 2;
    FakeNode::new(
        &format!("node-{i:05}"),
        &[&format!("10.{}.{}.0/24", 128 + i / 256, i % 256)],
        &[&format!("10.100.{}.{}", j / 256, j % 256)],
    )
}

struct World {
    ns: Netns,
    _lan: Netns,
    dir: cni_testkit::TempDir,
    api: FakeApi,
}

fn world(n: usize) -> World {
    let ns = Netns::new("bnode");
    let lan = Netns::new("blan");
    ns.veth_to(&lan, "eth0", "p0", "10.100.255.254/16", "10.100.0.1/16");
    let api = FakeApi::start_in(&ns, "127.0.0.1:0".parse().unwrap(), TOKEN);
    // This node is node-00000 (its own podCIDR needs no route); the others have bulk, as a
    // kubelet's Node has.
    api.put_nodes((0..n).map(node).collect());
    let dir = cni_testkit::temp_dir("rcni-bench-cluster");
    for d in ["bin", "conf", "state"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    World {
        ns,
        _lan: lan,
        dir,
        api,
    }
}

fn agent(w: &World) -> Child {
    let bin = cni_testkit::bin_dir();
    let dir = &w.dir;
    w.ns.command(bin.join("rcni-install"))
        .arg("daemon")
        .args(["--bin-dir", dir.join("bin").to_str().unwrap()])
        .args(["--conf-dir", dir.join("conf").to_str().unwrap()])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--src-dir", bin.to_str().unwrap()])
        .args(["--api-server", &w.api.url()])
        .args(["--token-file", dir.join("token").to_str().unwrap()])
        .args(["--node-name", "node-00000", "--cluster-cidr", "10.0.0.0/8"])
        .args(["--mtu", "1450", "--metrics-addr", METRICS])
        .env("RCNI_LOG", "warn")
        // Routes only: no runtime to collect from here.
        .env("RCNI_GC_INTERVAL", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rcni-install daemon (scripts/build-release builds it)")
}

/// Route additions in `ns` as `ip monitor` prints them: (when, destination).
fn monitor(ns: &Netns) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut child = ns
        .command("ip")
        .args(["-4", "monitor", "route"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip monitor");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let at = Instant::now();
            if let Some(dst) = line.split_whitespace().next() {
                if tx.send((at, dst.to_string())).is_err() {
                    return;
                }
            }
        }
    });
    (child, rx)
}

fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "not done within {secs} s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn measure(n: usize) -> Scale {
    let w = world(n);
    let addr: SocketAddr = METRICS.parse().unwrap();
    let route_count = |ns: &Netns| {
        ns.ip(&["-4", "route", "show", "proto", "114"])
            .lines()
            .count()
    };
    let started = Instant::now();
    let mut child = agent(&w);
    let pid = child.id();
    wait_until(300, || {
        w.ns.http_get(addr, "/readyz").is_ok_and(|(s, _)| s == 200)
    });
    let sync_ms = ms(started.elapsed());
    assert_eq!(route_count(&w.ns), n - 1, "routes after the initial sync");

    let (mut mon, rx) = monitor(&w.ns);
    std::thread::sleep(Duration::from_millis(200));
    // RCNI_BENCH_PROFILE=PREFIX: the joins profiled into PREFIX-N.perf (perf record -g).
    let perf = std::env::var("RCNI_BENCH_PROFILE").ok().map(|prefix| {
        Command::new("perf")
            .args(["record", "-q", "-g", "-p", &pid.to_string(), "-o"])
            .arg(format!("{prefix}-{n}.perf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf record")
    });
    std::thread::sleep(Duration::from_millis(if perf.is_some() { 500 } else { 0 }));
    let cpu_before = cpu_ns(pid);
    let mut lags = Vec::new();
    for k in 0..JOINS {
        let i = n + k;
        let want = format!("10.{}.{}.0/24", 128 + i / 256, i % 256);
        let put = Instant::now();
        w.api.put_node(node(i));
        let seen = loop {
            let (at, dst) = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no route to {want} within 10 s"));
            if dst == want {
                break at;
            }
        };
        lags.push(ms(seen.saturating_duration_since(put)));
    }
    let cpu = cpu_ns(pid) - cpu_before;
    let peak = peak_rss_kib(pid);
    if let Some(mut p) = perf {
        // SAFETY: plain kill(2) of our own child; SIGINT makes perf write its file.
        unsafe { nix::libc::kill(p.id() as i32, nix::libc::SIGINT) };
        let _ = p.wait();
    }
    let _ = mon.kill();
    let _ = mon.wait();
    // SAFETY: plain kill(2) of our own child.
    unsafe { nix::libc::kill(pid as i32, nix::libc::SIGTERM) };
    let _ = child.wait();
    let floor_us = w.ns.within(|| floor(n + JOINS));
    Scale {
        nodes: n,
        sync_ms,
        lag_med_ms: percentile(&mut lags.clone(), 0.5),
        lag_p99_ms: percentile(&mut lags, 0.99),
        cpu_per_event_us: cpu as f64 / JOINS as f64 / 1e3,
        peak_rss_mib: peak as f64 / 1024.0,
        floor_us,
    }
}

/// Median time of what the agent asks of the kernel when a node joins, with the table as the
/// agent left it (nodes from `from` on get theirs): a nexthop object for the new gateway, then a
/// route through it. What the kernel itself costs per node at this size.
fn floor(from: usize) -> f64 {
    use cni_netlink::nexthop::{Nexthop, Nexthops};
    use cni_netlink::{Netlink, RouteSpec};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nl = Netlink::open(None).expect("netlink");
        let mut nhs = Nexthops::open().expect("nexthop socket");
        let mut times = Vec::new();
        for i in from..from + JOINS {
            let j = i + 2;
            let dst = format!("10.{}.{}.0/24", 128 + i / 256, i % 256);
            let gw = format!("10.100.{}.{}", j / 256, j % 256).parse().unwrap();
            // Ids above the agent's (it counts up from 0x7263_0000).
            let id = 0x7263_f000 + i as u32;
            let t = Instant::now();
            let oif = nhs
                .onlink_oif(gw)
                .expect("route lookup")
                .expect("gw on link");
            let nh = Nexthop {
                id,
                gw,
                oif,
                protocol: 114,
            };
            nhs.add(&nh).expect("nexthop add");
            let mut r = RouteSpec::new(dst.parse().unwrap(), None, None);
            r.nh_id = Some(id);
            r.protocol = Some(114);
            assert!(nl.add_route(&r).await.expect("route add"), "{dst} exists");
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        percentile(&mut times, 0.5)
    })
}

fn row(metric: String, value: String, target: String) -> Row {
    (metric, value, String::new(), String::new(), target)
}

pub fn rows(points: &[Scale]) -> Vec<Row> {
    use crate::table::verdict;
    let mut rows = Vec::new();
    for s in points {
        let n = s.nodes;
        rows.push(row(
            format!("agent, {n} nodes: initial sync (ms)"),
            format!("{:.0}", s.sync_ms),
            String::new(),
        ));
        let lag_ok = n < 5000 || s.lag_p99_ms <= 1000.0;
        rows.push(row(
            format!("agent, {n} nodes: node joins -> its route, median / p99 (ms)"),
            format!("{:.2} / {:.2}", s.lag_med_ms, s.lag_p99_ms),
            if n >= 5000 {
                format!("<= 1000: {}", verdict(lag_ok))
            } else {
                String::new()
            },
        ));
        rows.push(row(
            format!("agent, {n} nodes: CPU per node event (us)"),
            format!("{:.0}", s.cpu_per_event_us),
            String::new(),
        ));
        rows.push(row(
            format!("kernel floor, {n} nodes: nexthop + route add (us)"),
            format!("{:.0}", s.floor_us),
            String::new(),
        ));
        rows.push(row(
            format!("agent, {n} nodes: peak RSS (MiB)"),
            format!("{:.1}", s.peak_rss_mib),
            if n >= 5000 {
                format!("<= 40: {}", verdict(s.peak_rss_mib <= 40.0))
            } else {
                String::new()
            },
        ));
    }
    if let (Some(a), Some(b)) = (points.first(), points.last()) {
        if b.nodes > a.nodes {
            let g = b.cpu_per_event_us / a.cpu_per_event_us;
            rows.push(row(
                format!("agent: event cost at {} / at {} nodes", b.nodes, a.nodes),
                format!("{g:.2}"),
                format!("<= 1.5: {}", verdict(g <= 1.5)),
            ));
            rows.push(row(
                format!(
                    "kernel floor: nexthop + route add at {} / at {} nodes",
                    b.nodes, a.nodes
                ),
                format!("{:.2}", b.floor_us / a.floor_us),
                String::new(),
            ));
        }
    }
    rows
}
