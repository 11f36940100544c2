//! Pods through containerd's CRI, as kubelet runs them: containerd of the test's own in a node
//! namespace, our conflist in its CNI conf dir; several sandboxes run at once, inspected (their IP
//! comes from the chain, they reach each other), stopped and removed; then nothing may be left in
//! the node namespace or on disk: no veth, no allocation, no masquerade state or rule, no cached
//! result, no netns mount.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cni_testkit::allocations;
use k8s_cri::v1::PodSandboxState;
use rcni_integration::cri::{mounts_under, pod_config, sandbox_netns, Containerd};
use rcni_integration::shipped_conflist;
use serde_json::{json, Value};

const PODS: usize = 3;

/// The subnets a test's pods get; each test has its own.
struct Subnets {
    v4: &'static str,
    v6: Option<&'static str>,
    /// The cluster range, for rmasq's nonMasqueradeCIDRs.
    cluster: &'static [&'static str],
}

/// `list` with its on-disk state under `state` and the test's own subnets.
fn patched(mut list: Value, state: &Path, nets: &Subnets) -> Value {
    for plugin in list["plugins"].as_array_mut().unwrap() {
        let ty = plugin["type"].as_str().unwrap().to_string();
        if let Some(ipam) = plugin.get_mut("ipam") {
            ipam["dataDir"] = json!(state.join("networks"));
            let mut ranges = vec![json!([{ "subnet": nets.v4 }])];
            if let Some(v6) = nets.v6 {
                ranges.push(json!([{ "subnet": v6 }]));
            }
            ipam["ranges"] = json!(ranges);
        }
        if ty.starts_with('r') {
            plugin["logFile"] = json!(state.join("rcni.log"));
        }
        if ty == "rmasq" {
            plugin["stateDir"] = json!(state.join("rmasq"));
            plugin["nonMasqueradeCIDRs"] = json!(nets.cluster);
        }
    }
    list
}

fn in_subnet(ip: IpAddr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    match (ip, net.parse::<IpAddr>().unwrap()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Every file below `dir` (empty if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `text` holds `word` as a whole token (so 10.0.0.1 does not match 10.0.0.12).
fn has_token(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':' || c == '/'))
        .any(|t| t == word || t.split('/').next() == Some(word))
}

/// Runs `cmd` inside the network namespace at `netns` (a sandbox's, mounted by containerd).
fn in_netns(netns: &Path, cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
}

/// Pings `to` from the pod namespace `netns`; a few tries, since the first packets may meet links
/// still coming up (the kernel drops them until link watch attaches the qdisc).
fn ping(netns: &Path, to: IpAddr) {
    let mut last = None;
    for _ in 0..3 {
        let out = in_netns(netns, &["ping", "-c1", "-W2", &to.to_string()]);
        if out.status.success() {
            return;
        }
        last = Some(out);
    }
    let out = last.unwrap();
    panic!(
        "ping {to} from {} failed:\n{}{}",
        netns.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks our plugins' log (`logFile`, one line per call) for the pods: every plugin of ours in
/// the chain ran ADD once and DEL at least twice (Stop, then Remove on state already gone) for
/// each, and every call succeeded.
fn check_log(label: &str, list: &Value, state: &Path, ids: &[String]) {
    let mut ours: Vec<String> = Vec::new();
    for plugin in list["plugins"].as_array().unwrap() {
        for ty in [&plugin["type"], &plugin["ipam"]["type"]] {
            if let Some(ty) = ty.as_str().filter(|t| t.starts_with('r')) {
                ours.push(ty.to_string());
            }
        }
    }
    if ours.is_empty() {
        return;
    }
    let path = state.join("rcni.log");
    let log = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("[{label}] {}: {e}", path.display()));
    let field = |line: &str, key: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    for id in ids {
        let calls: Vec<&str> = log
            .lines()
            .filter(|l| field(l, "container") == *id)
            .collect();
        for call in &calls {
            assert_eq!(
                field(call, "outcome"),
                "ok",
                "[{label}] failed call: {call}"
            );
        }
        for ty in &ours {
            let count = |verb: &str| {
                calls
                    .iter()
                    .filter(|l| l.split_whitespace().nth(2) == Some(ty.as_str()))
                    .filter(|l| field(l, "verb") == verb)
                    .count()
            };
            assert_eq!(count("ADD"), 1, "[{label}] {ty} ADD calls for {id}:\n{log}");
            assert!(
                count("DEL") >= 2,
                "[{label}] {ty} DEL calls for {id}:\n{log}"
            );
        }
    }
    // Where the time goes, per plugin and verb (the first DEL has the netns, the later none).
    let mut times: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in log.lines() {
        let plugin = line.split_whitespace().nth(2).unwrap_or_default();
        let key = format!("{plugin} {}", field(line, "verb"));
        times
            .entry(key)
            .or_default()
            .push(field(line, "duration_ms"));
    }
    for (key, ms) in times {
        eprintln!("cri [{label}] {key} ms: {}", ms.join(" "));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn each_ms<T>(results: &[(Result<T, String>, Duration)]) -> String {
    results
        .iter()
        .map(|r| ms(r.1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs [`PODS`] sandboxes at once through containerd with `list` as the node's conflist.
fn exercise(label: &str, list: Value, nets: &Subnets) {
    let mut h = Containerd::prepare();
    let state = h.dir().join("cni");
    let list = patched(list, &state, nets);
    let network = list["name"].as_str().unwrap().to_string();
    h.start(&list);
    let cri = h.cri();

    let configs: Vec<_> = (0..PODS)
        .map(|i| pod_config(&format!("{label}-{i}"), &format!("uid-{label}-{i}")))
        .collect();
    let start = Instant::now();
    let ran = cri.run_pod_sandboxes(&configs);
    let run_total = start.elapsed();
    let mut ids = Vec::new();
    for (i, (r, _)) in ran.iter().enumerate() {
        match r {
            Ok(id) => ids.push(id.clone()),
            Err(e) => panic!("[{label}] RunPodSandbox of pod {i} failed: {e}"),
        }
    }

    // Each sandbox ready, its IPs from our range, on its eth0, recorded in the IPAM store under
    // its sandbox ID.
    let mut pods = Vec::new();
    for id in &ids {
        let st = cri
            .pod_sandbox_status(id)
            .unwrap_or_else(|e| panic!("[{label}] PodSandboxStatus {id}: {e}"));
        let status = st.status.clone().expect("status in PodSandboxStatus");
        assert_eq!(
            status.state,
            PodSandboxState::SandboxReady as i32,
            "[{label}] sandbox {id} not ready: {status:?}"
        );
        let network_status = status.network.clone().expect("network status");
        let ips: Vec<IpAddr> = std::iter::once(network_status.ip.clone())
            .chain(network_status.additional_ips.iter().map(|p| p.ip.clone()))
            .map(|s| {
                s.parse().unwrap_or_else(|_| {
                    panic!("[{label}] sandbox {id}: bad IP {s:?} in {status:?}")
                })
            })
            .collect();
        let v4 = *ips
            .iter()
            .find(|ip| in_subnet(**ip, nets.v4))
            .unwrap_or_else(|| panic!("[{label}] sandbox {id}: no IP in {} ({ips:?})", nets.v4));
        let v6 = nets.v6.map(|net| {
            *ips.iter()
                .find(|ip| in_subnet(**ip, net))
                .unwrap_or_else(|| panic!("[{label}] sandbox {id}: no IP in {net} ({ips:?})"))
        });
        let netns = sandbox_netns(&st)
            .unwrap_or_else(|| panic!("[{label}] sandbox {id}: no netns path in {:?}", st.info));
        let out = in_netns(&netns, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        let eth0 = String::from_utf8_lossy(&out.stdout);
        for ip in std::iter::once(v4).chain(v6) {
            assert!(
                has_token(&eth0, &ip.to_string()),
                "[{label}] sandbox {id}: {ip} not on eth0 in {}: {eth0}",
                netns.display()
            );
            let record = state.join("networks").join(&network).join(ip.to_string());
            let owner = std::fs::read_to_string(&record)
                .unwrap_or_else(|e| panic!("[{label}] {}: {e}", record.display()));
            assert!(
                owner.starts_with(id.as_str()),
                "[{label}] {} names {owner:?}, not sandbox {id}",
                record.display()
            );
        }
        pods.push((id.clone(), v4, v6, netns));
    }
    let distinct: std::collections::BTreeSet<_> = pods.iter().map(|p| p.1).collect();
    assert_eq!(
        distinct.len(),
        PODS,
        "[{label}] pods share addresses: {distinct:?}"
    );

    // Pod to pod on the node's bridge, around the ring.
    for (i, (_, _, _, netns)) in pods.iter().enumerate() {
        let (_, v4, v6, _) = &pods[(i + 1) % PODS];
        ping(netns, *v4);
        if let Some(v6) = v6 {
            ping(netns, *v6);
        }
    }

    // Stop: containerd's first DEL; the addresses and links must go right away, as kubelet
    // reuses them for the next pods.
    let start = Instant::now();
    let stopped = cri.stop_pod_sandboxes(&ids);
    let stop_total = start.elapsed();
    for ((r, _), id) in stopped.iter().zip(&ids) {
        if let Err(e) = r {
            panic!("[{label}] StopPodSandbox {id} failed: {e}",);
        }
    }
    assert_eq!(
        h.node().veths(),
        Vec::<String>::new(),
        "[{label}] veths left after stop"
    );
    assert_eq!(
        allocations(&state.join("networks").join(&network)),
        Vec::<String>::new(),
        "[{label}] allocations left after stop"
    );

    // Remove: the second DEL, on state already gone, must succeed too.
    let start = Instant::now();
    let removed = cri.remove_pod_sandboxes(&ids);
    let remove_total = start.elapsed();
    for ((r, _), id) in removed.iter().zip(&ids) {
        if let Err(e) = r {
            panic!("[{label}] RemovePodSandbox {id} failed: {e}",);
        }
    }
    let left = cri.list_pod_sandboxes().unwrap();
    assert!(left.is_empty(), "[{label}] sandboxes left: {left:?}");

    // Nothing left behind.
    assert_eq!(
        h.node().veths(),
        Vec::<String>::new(),
        "[{label}] veths left"
    );
    assert_eq!(
        allocations(&state.join("networks").join(&network)),
        Vec::<String>::new(),
        "[{label}] allocations left"
    );
    let rmasq_left: Vec<_> = ["attachments", "members"]
        .iter()
        .flat_map(|d| files_under(&state.join("rmasq").join(d)))
        .collect();
    assert!(
        rmasq_left.is_empty(),
        "[{label}] rmasq state left: {rmasq_left:?}"
    );
    let rules = h.node().firewall();
    for (id, v4, v6, _) in &pods {
        for word in [id.clone(), v4.to_string()]
            .into_iter()
            .chain(v6.map(|v| v.to_string()))
        {
            assert!(
                !has_token(&rules, &word),
                "[{label}] firewall still mentions {word}:\n{rules}"
            );
        }
    }
    for net in std::iter::once(nets.v4).chain(nets.v6) {
        assert!(
            !has_token(&rules, net),
            "[{label}] firewall still has rules for {net}:\n{rules}"
        );
    }
    let cached: Vec<_> = files_under(Path::new("/var/lib/cni/results"))
        .into_iter()
        .filter(|p| {
            ids.iter()
                .any(|id| p.to_string_lossy().contains(id.as_str()))
        })
        .collect();
    assert!(
        cached.is_empty(),
        "[{label}] cached CNI results left: {cached:?}"
    );
    let netns_mounts = mounts_under(&h.cri_state_dir());
    assert!(
        netns_mounts.is_empty(),
        "[{label}] mounts left: {netns_mounts:?}"
    );
    check_log(label, &list, &state, &ids);
    let netns_files = files_under(&h.cri_state_dir().join("netns"));
    assert!(
        netns_files.is_empty(),
        "[{label}] netns files left: {netns_files:?}"
    );

    eprintln!(
        "cri [{label}] {PODS} pods at once: RunPodSandbox {} (each {}); StopPodSandbox {} (each {}); \
         RemovePodSandbox {} (each {})",
        ms(run_total),
        each_ms(&ran),
        ms(stop_total),
        each_ms(&stopped),
        ms(remove_total),
        each_ms(&removed),
    );
}

/// Our chain (conflists/10-rcni.conflist: rbridge + rhost-local, rmasq, upstream portmap), dual
/// stack.
#[test]
fn rcni_chain_through_containerd() {
    let nets = Subnets {
        v4: "10.246.1.0/24",
        v6: Some("fd00:10:246:1::/64"),
        cluster: &["10.246.0.0/16", "fd00:10:246::/48"],
    };
    exercise("rcni", shipped_conflist("10-rcni.conflist"), &nets);
}

/// The harness itself, on upstream plugins only: if this fails, the fault is in the test or the
/// machine, not in our plugins. What our chain does, as far as upstream can (bridge with ipMasq
/// for rmasq, dual stack), so that its timings compare.
#[test]
fn control_upstream_through_containerd() {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "upstream",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
             "hairpinMode": true, "ipMasq": true, "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let nets = Subnets {
        v4: "10.246.2.0/24",
        v6: Some("fd00:10:246:2::/64"),
        cluster: &["10.246.0.0/16", "fd00:10:246::/48"],
    };
    exercise("control", list, &nets);
}
