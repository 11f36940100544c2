//! Garbage collection from containerd's truth (CRI ListPodSandbox), with our chain in a
//! containerd of the test's own: leaks made the ways nodes make them are reclaimed in one
//! `rcni gc --cri-endpoint` round — a reboot (netns gone, containerd's state wiped, the CNI
//! state on disk kept), containerd killed -9 during RunPodSandbox, a sandbox removed from the
//! runtime while its network was never torn down — and every live pod keeps its address and
//! connectivity; GC rounds racing RunPodSandbox never take what it is setting up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcni_integration::cri::{pod_config, sandbox_netns, Containerd};
use rcni_integration::shipped_conflist;
use serde_json::json;

const NETWORK: &str = "rcnigc";

/// Passes prevResult on; for each `<dir>/stall-N` there is, one ADD removes it, writes
/// "pid containerID netns" to `<dir>/stalled-N` and hangs there instead, as a plugin still
/// running when containerd is killed.
const STALL: &str = r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
ADD)
    conf=$(cat)
    for f in "$STALL_DIR"/stall-*; do
        if rm "$f" 2>/dev/null; then
            n=${f##*-}
            echo "$$ $CNI_CONTAINERID $CNI_NETNS" > "$STALL_DIR/stalled.$n.tmp"
            mv "$STALL_DIR/stalled.$n.tmp" "$STALL_DIR/stalled-$n"
            exec sleep 120
        fi
    done
    printf '%s' "$conf" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))' ;;
*) cat >/dev/null ;;
esac
"#;

struct Node {
    h: Containerd,
    state: PathBuf,
}

/// A pod: sandbox ID, its netns, its addresses.
#[derive(Debug, Clone)]
struct Pod {
    id: String,
    netns: PathBuf,
    ips: Vec<IpAddr>,
}

impl Node {
    /// containerd with the shipped chain (state in the test's dir, its own subnets), with
    /// `stall` after it if asked.
    fn start(n: u8, stall: bool) -> Node {
        let mut h = Containerd::prepare();
        let state = h.dir().join("cni");
        let mut list = shipped_conflist("10-rcni.conflist");
        list["name"] = json!(NETWORK);
        let plugins = list["plugins"].as_array_mut().unwrap();
        plugins[0]["ipam"]["dataDir"] = json!(state.join("networks"));
        plugins[0]["ipam"]["ranges"] = json!([
            [{"subnet": format!("10.248.{n}.0/24")}],
            [{"subnet": format!("fd00:10:248:{n}::/64")}]
        ]);
        plugins[1]["stateDir"] = json!(state.join("rmasq"));
        plugins[1]["nonMasqueradeCIDRs"] = json!(["10.248.0.0/16", "fd00:10:248::/48"]);
        if stall {
            plugins.push(json!({"type": "stall"}));
            let bin = h.cni_bin_dir();
            std::fs::create_dir_all(&bin).unwrap();
            let script = STALL.replace("$STALL_DIR", &h.dir().display().to_string());
            std::fs::write(bin.join("stall"), script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join("stall"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        h.start(&list);
        Node { h, state }
    }

    fn run(&self, name: &str) -> Pod {
        let config = pod_config(name, &format!("uid-{name}"));
        let (r, _) = self.h.cri().run_pod_sandboxes(&[config]).remove(0);
        let id = r.unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"));
        let st = self.h.cri().pod_sandbox_status(&id).unwrap();
        let net = st.status.as_ref().unwrap().network.clone().unwrap();
        let ips = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|p| p.ip))
            .map(|s| s.parse().unwrap())
            .collect();
        Pod {
            netns: sandbox_netns(&st).expect("netns path"),
            id,
            ips,
        }
    }

    fn cache_entry(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("/var/lib/cni/results/{NETWORK}-{id}-eth0"))
    }

    /// (addresses reserved, host veth, masquerade record, cache entry) of sandbox `id`.
    fn holds(&self, id: &str) -> (Vec<IpAddr>, bool, bool, bool) {
        let store = self.state.join("networks").join(NETWORK);
        let mut ips: Vec<IpAddr> = cni_testkit::reservations(&store)
            .into_iter()
            .filter(|(_, owner)| owner.split("\r\n").next() == Some(id))
            .map(|(ip, _)| ip)
            .collect();
        ips.sort();
        let veth = self
            .h
            .node()
            .link(&rbridge::host_veth(id, "eth0"))
            .is_some();
        let record = self
            .state
            .join(format!("rmasq/attachments/{NETWORK}/{id}:eth0"));
        (ips, veth, record.exists(), self.cache_entry(id).exists())
    }

    /// Masquerade owner entries (rmasq members) naming sandbox `id`.
    fn masquerade_members(&self, id: &str) -> usize {
        let owner = format!("{NETWORK}:{id}:eth0");
        let members = self.state.join("rmasq/members");
        let mut n = 0;
        for class in std::fs::read_dir(members).into_iter().flatten().flatten() {
            for addr in std::fs::read_dir(class.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                n += usize::from(addr.path().join(&owner).exists());
            }
        }
        n
    }

    fn rcni_gc(&self, grace: &str) -> String {
        let bin = cni_testkit::bin_dir().join("rcni");
        assert!(bin.is_file(), "{} not built", bin.display());
        let out = self
            .h
            .node()
            .command(bin)
            .args(["gc", "--cri-endpoint"])
            .arg(format!("unix://{}", self.h.socket().display()))
            .arg("--conf-dir")
            .arg(self.h.cni_conf_dir())
            .arg("--bin-dir")
            .arg(self.h.cni_bin_dir())
            .args(["--cache-dir", "/var/lib/cni", "--grace", grace])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rcni gc failed:\n{text}");
        text
    }
}

fn in_netns(netns: &Path, cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(cmd)
        .output()
        .unwrap()
}

fn ping(from: &Pod, to: IpAddr) {
    for _ in 0..3 {
        if in_netns(&from.netns, &["ping", "-c1", "-W2", &to.to_string()])
            .status
            .success()
        {
            return;
        }
    }
    panic!("{} cannot reach {to}", from.id);
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leaks_made_the_ways_nodes_make_them_go_in_one_round() {
    let mut node = Node::start(1, true);

    // A reboot: the pods die with their netns, the runtime's state is wiped, and the kernel's
    // bridge and rules go too; the plugins' state and libcni's cache on disk survive.
    let rebooted: Vec<Pod> = (0..2)
        .map(|i| node.run(&format!("before-reboot-{i}")))
        .collect();
    node.h.reboot();
    node.h.node().ip(&["link", "del", "cni0"]);
    node.h.node().sh("nft flush ruleset");
    node.h.restart();
    let mut live: Vec<Pod> = (0..2).map(|i| node.run(&format!("live-{i}"))).collect();

    // containerd killed -9 during two RunPodSandbox: the chain's ADD ran (rbridge, rmasq), its
    // last plugin still running; nothing was cached. containerd 1.6 records a sandbox before
    // its network, so it still knows both (not ready) when restarted; runtimes that record it
    // after the network forget it: as if, one of them is deleted from containerd's records.
    let [kept, killed] = kill_during_run_pod_sandbox(&mut node);
    node.h.restart();

    // A sandbox removed from the runtime with its network never torn down.
    let forgotten = node.run("forgotten");
    let _ = node
        .h
        .ctr(&["task", "kill", "-s", "SIGKILL", &forgotten.id]);
    wait_for("the forgotten sandbox's task to go", 20, || {
        let _ = node.h.ctr(&["task", "delete", &forgotten.id]);
        !String::from_utf8_lossy(&node.h.ctr(&["task", "ls", "-q"]).stdout).contains(&forgotten.id)
    });
    for id in [&forgotten.id, &killed.id] {
        let out = node.h.ctr(&["containers", "delete", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    node.h.restart();
    live.push(node.run("live-2"));

    let listed = node.h.cri().list_pod_sandboxes().unwrap();
    for p in live.iter().chain([&kept]) {
        assert!(listed.contains(&p.id));
    }
    let state = node
        .h
        .cri()
        .pod_sandbox_status(&kept.id)
        .unwrap()
        .status
        .unwrap()
        .state;
    assert_ne!(state, k8s_cri::v1::PodSandboxState::SandboxReady as i32);
    for p in rebooted.iter().chain([&killed, &forgotten]) {
        assert!(!listed.contains(&p.id), "{} still known", p.id);
    }
    // What leaked: (addresses, veth, masquerade, cache entry).
    for p in &rebooted {
        let (ips, veth, masq, cache) = node.holds(&p.id);
        assert!(
            ips.len() == 2 && !veth && masq && cache,
            "{ips:?} {veth} {masq} {cache}"
        );
    }
    let kept_holds = node.holds(&kept.id);
    let (ips, veth, masq, cache) = node.holds(&killed.id);
    assert!(
        ips.len() == 2 && veth && masq && !cache,
        "{ips:?} {veth} {masq} {cache}"
    );
    assert!(
        kept_holds.0.len() == 2 && kept_holds.1 && kept_holds.2 && !kept_holds.3,
        "{kept_holds:?}"
    );
    let (ips, veth, masq, cache) = node.holds(&forgotten.id);
    assert!(
        ips.len() == 2 && veth && masq && cache,
        "{ips:?} {veth} {masq} {cache}"
    );
    for p in [&killed, &forgotten] {
        let routes = in_netns(&p.netns, &["ip", "route", "show", "default"]);
        assert!(!routes.stdout.is_empty(), "{} has no routes yet", p.id);
    }

    // The leaks must be older than the grace period (1 s here, minutes on a node).
    std::thread::sleep(Duration::from_millis(1500));
    let out = node.rcni_gc("1s");
    assert!(
        out.contains(
            "reclaimed: 4 attachments, 8 addresses, 2 veths, 8 masquerade members, 3 cache entries"
        ),
        "{out}"
    );
    assert!(
        out.contains("GC skipped portmap") && out.contains("GC skipped stall"),
        "{out}"
    );
    for p in rebooted.iter().chain([&killed, &forgotten]) {
        assert_eq!(
            node.holds(&p.id),
            (vec![], false, false, false),
            "{} left:\n{out}",
            p.id
        );
        assert_eq!(node.masquerade_members(&p.id), 0, "{}", p.id);
        assert!(out.contains(&format!("reclaimed {}/eth0", p.id)), "{out}");
    }
    // Their routes went with their interface.
    for p in [&killed, &forgotten] {
        let routes = in_netns(&p.netns, &["ip", "-o", "route", "show"]);
        assert!(
            routes.stdout.is_empty(),
            "{}: {}",
            p.id,
            String::from_utf8_lossy(&routes.stdout)
        );
    }
    // The live pods keep everything, and reach each other.
    for (i, p) in live.iter().enumerate() {
        let (mut ips, veth, masq, cache) = node.holds(&p.id);
        let mut want = p.ips.clone();
        ips.sort();
        want.sort();
        assert_eq!(ips, want, "{}", p.id);
        assert!(
            veth && masq && cache,
            "{} lost: {veth} {masq} {cache}",
            p.id
        );
        assert_eq!(node.masquerade_members(&p.id), 2);
        for ip in &live[(i + 1) % live.len()].ips {
            ping(p, *ip);
        }
    }
    // The sandbox the runtime still knows (not ready) is kept whole; kubelet's Stop and
    // Remove take it down, without a cached result.
    assert_eq!(node.holds(&kept.id), kept_holds, "{out}");
    assert!(!out.contains(&kept.id), "{out}");
    for (r, _) in node
        .h
        .cri()
        .stop_pod_sandboxes(std::slice::from_ref(&kept.id))
    {
        r.unwrap();
    }
    for (r, _) in node
        .h
        .cri()
        .remove_pod_sandboxes(std::slice::from_ref(&kept.id))
    {
        r.unwrap();
    }
    assert_eq!(node.holds(&kept.id), (vec![], false, false, false));
    let again = node.rcni_gc("1s");
    assert!(again.contains("reclaimed: 0 attachments"), "{again}");
}

/// Two RunPodSandbox at once, their ADDs stalled in the last plugin, containerd killed -9; the
/// stalled plugins are killed too. Returns the two sandboxes (ID and netns from the plugin).
fn kill_during_run_pod_sandbox(node: &mut Node) -> [Pod; 2] {
    let dir = node.h.dir().to_path_buf();
    for n in 1..=2 {
        std::fs::write(dir.join(format!("stall-{n}")), "").unwrap();
    }
    let cri = node.h.connect();
    let call = std::thread::spawn(move || {
        let configs = [
            pod_config("killed-1", "uid-killed-1"),
            pod_config("killed-2", "uid-killed-2"),
        ];
        cri.run_pod_sandboxes(&configs)
    });
    let stalled = |n: u8| dir.join(format!("stalled-{n}"));
    wait_for("the stalled ADDs", 60, || {
        stalled(1).exists() && stalled(2).exists()
    });
    node.h.kill();
    for (r, _) in call.join().unwrap() {
        assert!(r.is_err(), "RunPodSandbox survived its containerd");
    }
    [1, 2].map(|n| {
        let text = std::fs::read_to_string(stalled(n)).unwrap();
        let f: Vec<&str> = text.split_whitespace().collect();
        let pid = nix::unistd::Pid::from_raw(f[0].parse().unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        Pod {
            id: f[1].to_string(),
            netns: PathBuf::from(f[2]),
            ips: Vec::new(),
        }
    })
}

#[test]
fn gc_racing_run_pod_sandbox_never_takes_it() {
    const PODS: usize = 8;
    let node = Node::start(2, false);
    let first = node.run("first");
    let opts = rcni_gc::Options {
        conf_dir: node.h.cni_conf_dir(),
        bin_dirs: vec![node.h.cni_bin_dir()],
        cache_dir: "/var/lib/cni".into(),
        grace: Duration::from_secs(30),
        ..rcni_gc::Options::default()
    };
    let endpoint = format!("unix://{}", node.h.socket().display());
    let mut rounds = 0;
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let adding = s.spawn(|| {
            let cri = node.h.connect();
            let mut ids = Vec::new();
            for i in 0..PODS / 2 {
                let configs: Vec<_> = (0..2)
                    .map(|j| pod_config(&format!("racing-{i}-{j}"), &format!("uid-racing-{i}-{j}")))
                    .collect();
                for (r, _) in cri.run_pod_sandboxes(&configs) {
                    ids.push(r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}")));
                }
            }
            ids
        });
        while !adding.is_finished() {
            let listing = rcni_gc::Listing::from_cri(&endpoint, Duration::from_secs(10)).unwrap();
            let report = node
                .h
                .node()
                .within(|| rcni_gc::collect(&opts, &listing))
                .unwrap();
            let taken: Vec<_> = report.networks.iter().flat_map(|n| &n.reclaims).collect();
            assert!(
                taken.is_empty(),
                "reclaimed while RunPodSandbox ran:\n{report}"
            );
            assert!(report.errors().is_empty(), "{report}");
            rounds += 1;
        }
        let ids = adding.join().unwrap();
        ids.iter()
            .map(|id| {
                let st = node.h.cri().pod_sandbox_status(id).unwrap();
                let net = st.status.as_ref().unwrap().network.clone().unwrap();
                Pod {
                    netns: sandbox_netns(&st).unwrap(),
                    id: id.clone(),
                    ips: vec![net.ip.parse().unwrap()],
                }
            })
            .collect()
    });
    assert!(rounds >= 3, "only {rounds} GC rounds raced the pods");
    for p in &pods {
        let (ips, veth, masq, cache) = node.holds(&p.id);
        assert!(
            ips.len() == 2 && veth && masq && cache,
            "{}: {ips:?} {veth} {masq} {cache}",
            p.id
        );
        ping(p, first.ips[0]);
    }
    eprintln!("gc race through containerd: {rounds} rounds while {PODS} sandboxes started");
}
