//! A bounded soak of garbage collection through containerd, outside scripts/test (`scripts/soak
//! [ROUNDS]` runs it): randomised rounds of live pods coming and going and of leaks made the
//! ways nodes make them (a reboot, containerd killed -9 during RunPodSandbox with the sandbox
//! then forgotten or still known, a sandbox removed from the runtime without teardown), each
//! round ending with one GC (sometimes racing RunPodSandbox calls). At the end: how many leaked
//! attachments were reclaimed, how many leaked on, and how many live ones lost anything (the
//! goal: all, 0, 0).

mod gcnode;

use std::time::{Duration, Instant};

use cni_testkit::Rng;
use gcnode::{forget, kill_during_run_pod_sandbox, ping, Node, Pod, NOTHING};
use rcni_integration::cri::{pod_config, sandbox_netns};

const GRACE: Duration = Duration::from_secs(1);
const MAX_LIVE: usize = 8;

#[derive(Default, Debug)]
struct Tally {
    reclaimed: usize,
    leaked: usize,
    wrongly_removed: usize,
    pods: usize,
    racing: usize,
}

/// The soak's node and what it knows of its pods.
struct Soak {
    node: Node,
    rng: Rng,
    live: Vec<Pod>,
    t: Tally,
    names: usize,
}

/// What a round left to check: the leaks it made, and a sandbox killed during RunPodSandbox
/// that the runtime still knows.
struct Made {
    leaks: Vec<String>,
    known: Option<Pod>,
}

impl Soak {
    fn name(&mut self) -> String {
        self.names += 1;
        format!("soak-{}", self.names)
    }

    fn start_pod(&mut self) {
        let name = self.name();
        self.live.push(self.node.run(&name));
        self.t.pods += 1;
    }

    fn take_live(&mut self) -> Pod {
        let i = self.rng.below(self.live.len() as u64) as usize;
        self.live.remove(i)
    }

    /// Pods come; then a leak of some kind, or a pod deleted as kubelet deletes it.
    fn make(&mut self) -> Made {
        for _ in 0..=self.rng.below(2) {
            if self.live.len() < MAX_LIVE {
                self.start_pod();
            }
        }
        let mut made = Made {
            leaks: Vec::new(),
            known: None,
        };
        match self.rng.below(10) {
            0 => {
                // A reboot: every pod leaks, with the kernel's bridge and rules.
                made.leaks.extend(self.live.drain(..).map(|p| p.id));
                let node = &mut self.node;
                node.h.reboot();
                node.h.node().ip(&["link", "del", "cni0"]);
                node.h.node().sh("nft flush ruleset");
                node.h.restart();
            }
            1 | 2 => {
                let node = &mut self.node;
                let [kept, killed] = kill_during_run_pod_sandbox(node);
                node.h.restart();
                forget(node, &killed.id, false);
                node.h.restart();
                made.leaks.push(killed.id);
                made.known = Some(kept);
            }
            3..=5 if !self.live.is_empty() => {
                let p = self.take_live();
                forget(&self.node, &p.id, true);
                self.node.h.restart();
                made.leaks.push(p.id);
            }
            _ if !self.live.is_empty() => {
                let p = self.take_live();
                self.node.kubelet_delete(&p.id);
            }
            _ => {}
        }
        if self.live.is_empty() {
            // A node always runs some pod (the DaemonSet's own, at least): a runtime listing
            // none is not trusted.
            self.start_pod();
        }
        made
    }

    /// One round: pods, leaks, one GC (a quarter of them racing RunPodSandbox), the tally.
    fn round(&mut self, round: usize) {
        let made = self.make();
        std::thread::sleep(GRACE + Duration::from_millis(100));
        let known_before = made.known.as_ref().map(|k| self.node.holds(&k.id));
        let racing = self.rng.below(4) == 0;
        let mut names: Vec<String> = (0..2).map(|_| self.name()).collect();
        let raced = gc_round(&self.node, racing, &mut || names.pop().unwrap());
        self.t.racing += raced.len();
        self.t.pods += raced.len();
        self.live.extend(raced);
        for id in &made.leaks {
            let left = self.node.holds(id);
            if left == NOTHING && self.node.masquerade_members(id) == 0 {
                self.t.reclaimed += 1;
            } else {
                self.t.leaked += 1;
                eprintln!("round {round}: leaked {id} still holds {left:?}");
            }
        }
        for p in &self.live {
            if !self.node.intact(p) {
                self.t.wrongly_removed += 1;
                let holds = self.node.holds(&p.id);
                eprintln!("round {round}: live {} lost: {holds:?}", p.id);
            }
        }
        if let (Some(k), Some(before)) = (made.known, known_before) {
            if self.node.holds(&k.id) != before {
                self.t.wrongly_removed += 1;
                eprintln!("round {round}: {} (known, not ready) was touched", k.id);
            }
            // kubelet takes down a sandbox it finds not ready.
            self.node.kubelet_delete(&k.id);
        }
        if round.is_multiple_of(10) && self.live.len() >= 2 {
            let (a, b) = (&self.live[0], &self.live[self.live.len() - 1]);
            ping(a, b.ips[0]);
        }
    }
}

#[test]
#[ignore = "a soak of several minutes: scripts/soak runs it"]
fn soak() {
    let rounds: usize = std::env::var("RCNI_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut s = Soak {
        rng: Rng::new("gc soak"),
        node: Node::start(3, true),
        live: Vec::new(),
        t: Tally::default(),
        names: 0,
    };
    let start = Instant::now();
    for round in 1..=rounds {
        s.round(round);
        let (live, t) = (s.live.len(), &s.t);
        let took = start.elapsed();
        eprintln!("gc soak: round {round}/{rounds}, {live} live, {t:?}, {took:?}");
    }
    let t = &s.t;
    eprintln!(
        "gc soak: {rounds} rounds in {:?}: {} leaked attachments reclaimed, {} leaked on, {} live ones wrongly removed ({} pods started, {} while GC ran)",
        start.elapsed(),
        t.reclaimed,
        t.leaked,
        t.wrongly_removed,
        t.pods,
        t.racing
    );
    assert_eq!((t.leaked, t.wrongly_removed), (0, 0), "{t:?}");
}

/// One GC (the engine, as the agent runs it), with two RunPodSandbox racing it if `racing`;
/// returns the pods those started. Panics if GC fails.
fn gc_round(node: &Node, racing: bool, name: &mut impl FnMut() -> String) -> Vec<Pod> {
    let opts = rcni_gc::Options {
        conf_dir: node.h.cni_conf_dir(),
        bin_dirs: vec![node.h.cni_bin_dir()],
        cache_dir: "/var/lib/cni".into(),
        grace: GRACE,
        ..rcni_gc::Options::default()
    };
    let endpoint = format!("unix://{}", node.h.socket().display());
    let collect = || {
        let listing = rcni_gc::Listing::from_cri(&endpoint, Duration::from_secs(10)).unwrap();
        let report = node
            .h
            .node()
            .within(|| rcni_gc::collect(&opts, &listing))
            .unwrap();
        assert!(report.errors().is_empty(), "{report}");
    };
    if !racing {
        collect();
        return Vec::new();
    }
    let configs: Vec<_> = (0..2)
        .map(|_| {
            let n = name();
            pod_config(&n, &format!("uid-{n}"))
        })
        .collect();
    let ids = std::thread::scope(|s| {
        let cri = node.h.connect();
        let adding = s.spawn(move || cri.run_pod_sandboxes(&configs));
        collect();
        adding.join().unwrap()
    });
    ids.into_iter()
        .map(|(r, _)| {
            let id = r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
            let st = node.h.cri().pod_sandbox_status(&id).unwrap();
            let net = st.status.as_ref().unwrap().network.clone().unwrap();
            Pod {
                netns: sandbox_netns(&st).unwrap(),
                ips: std::iter::once(net.ip)
                    .chain(net.additional_ips.into_iter().map(|p| p.ip))
                    .map(|s| s.parse().unwrap())
                    .collect(),
                id,
            }
        })
        .collect()
}
