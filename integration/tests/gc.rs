//! Garbage collection from containerd's truth (CRI ListPodSandbox), with our chain in a
//! containerd of the test's own: leaks made the ways nodes make them are reclaimed in one
//! `rcni gc --cri-endpoint` round — a reboot (netns gone, containerd's state wiped, the CNI
//! state on disk kept), containerd killed -9 during RunPodSandbox, a sandbox removed from the
//! runtime while its network was never torn down — and every live pod keeps its address and
//! connectivity; GC rounds racing RunPodSandbox never take what it is setting up.

mod gcnode;

use std::time::Duration;

use gcnode::{forget, in_netns, kill_during_run_pod_sandbox, ping, Node, Pod, NOTHING};
use rcni_integration::cri::{pod_config, sandbox_netns};

/// The pods of the leak test: leaked three ways, one the runtime still knows, live ones.
struct Leaks {
    rebooted: Vec<Pod>,
    killed: Pod,
    forgotten: Pod,
    /// Killed during RunPodSandbox, but containerd knows it (not ready).
    kept: Pod,
    live: Vec<Pod>,
}

impl Leaks {
    fn leaked(&self) -> impl Iterator<Item = &Pod> {
        self.rebooted.iter().chain([&self.killed, &self.forgotten])
    }
}

fn make_leaks(node: &mut Node) -> Leaks {
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
    let [kept, killed] = kill_during_run_pod_sandbox(node);
    node.h.restart();

    // A sandbox removed from the runtime with its network never torn down.
    let forgotten = node.run("forgotten");
    forget(node, &forgotten.id, true);
    forget(node, &killed.id, false);
    node.h.restart();
    live.push(node.run("live-2"));
    Leaks {
        rebooted,
        killed,
        forgotten,
        kept,
        live,
    }
}

/// What the runtime knows, and what each pod holds (addresses, veth, masquerade, cache entry),
/// before GC.
fn assert_leaked(node: &Node, l: &Leaks) {
    let listed = node.h.cri().list_pod_sandboxes().unwrap();
    for p in l.live.iter().chain([&l.kept]) {
        assert!(listed.contains(&p.id));
    }
    let kept = node.h.cri().pod_sandbox_status(&l.kept.id).unwrap();
    let ready = k8s_cri::v1::PodSandboxState::SandboxReady as i32;
    assert_ne!(kept.status.unwrap().state, ready);
    for p in l.leaked() {
        assert!(!listed.contains(&p.id), "{} still known", p.id);
    }
    let holds = |p: &Pod, veth: bool, cache: bool| {
        let h = node.holds(&p.id);
        assert!(
            h.0.len() == 2 && h.1 == veth && h.2 && h.3 == cache,
            "{}: {h:?}",
            p.id
        );
    };
    for p in &l.rebooted {
        holds(p, false, true);
    }
    holds(&l.killed, true, false);
    holds(&l.kept, true, false);
    holds(&l.forgotten, true, true);
    for p in [&l.killed, &l.forgotten] {
        let routes = in_netns(&p.netns, &["ip", "route", "show", "default"]);
        assert!(!routes.stdout.is_empty(), "{} has no routes yet", p.id);
    }
}

#[test]
fn leaks_made_the_ways_nodes_make_them_go_in_one_round() {
    let mut node = Node::start(1, true);
    let l = make_leaks(&mut node);
    assert_leaked(&node, &l);
    let kept_holds = node.holds(&l.kept.id);

    // The leaks must be older than the grace period (1 s here, minutes on a node).
    std::thread::sleep(Duration::from_millis(1500));
    let out = node.rcni_gc("1s");
    let want =
        "reclaimed: 4 attachments, 8 addresses, 2 veths, 8 masquerade members, 3 cache entries";
    assert!(out.contains(want), "{out}");
    assert!(
        out.contains("GC skipped portmap") && out.contains("GC skipped stall"),
        "{out}"
    );
    for p in l.leaked() {
        assert_eq!(node.holds(&p.id), NOTHING, "{} left:\n{out}", p.id);
        assert_eq!(node.masquerade_members(&p.id), 0, "{}", p.id);
        assert!(out.contains(&format!("reclaimed {}/eth0", p.id)), "{out}");
    }
    // Their routes went with their interface.
    for p in [&l.killed, &l.forgotten] {
        let routes = in_netns(&p.netns, &["ip", "-o", "route", "show"]);
        let text = String::from_utf8_lossy(&routes.stdout);
        assert!(text.is_empty(), "{}: {text}", p.id);
    }
    // The live pods keep everything, and reach each other.
    for (i, p) in l.live.iter().enumerate() {
        assert!(node.intact(p), "{} lost: {:?}", p.id, node.holds(&p.id));
        assert_eq!(node.masquerade_members(&p.id), 2);
        for ip in &l.live[(i + 1) % l.live.len()].ips {
            ping(p, *ip);
        }
    }
    // The sandbox the runtime still knows (not ready) is kept whole; kubelet's Stop and
    // Remove take it down, without a cached result.
    assert_eq!(node.holds(&l.kept.id), kept_holds, "{out}");
    assert!(!out.contains(&l.kept.id), "{out}");
    node.kubelet_delete(&l.kept.id);
    assert_eq!(node.holds(&l.kept.id), NOTHING);
    let again = node.rcni_gc("1s");
    assert!(again.contains("reclaimed: 0 attachments"), "{again}");
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
