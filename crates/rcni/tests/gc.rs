//! `rcni gc` and the GC engine in a node namespace with pods of the shipped chain: leaked
//! attachments (netns deleted without DEL, netns left behind, runtime killed during ADD) are
//! reclaimed whole (address, veth, masquerade, cache entry) and nothing of the live pods is
//! touched; `--dry-run` changes nothing; a runtime's later DEL still succeeds; GC racing ADDs
//! never takes what they are setting up.

mod gcnode;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use cni_testkit::ping;
use gcnode::{has_token, valid_file, Node, Pod};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn gc_with_a_valid_attachments_file_reclaims_exactly_the_leaked_pods() {
    let node = Node::new(61);
    let live: Vec<Pod> = (0..3).map(|_| node.add()).collect();
    // Its netns deleted without DEL (the kernel takes the veth with it).
    let mut deleted = node.add();
    // Its netns still there, the runtime forgot the sandbox.
    let forgotten = node.add();
    // The runtime was killed during the ADD: the plugins ran, nothing was cached.
    let killed = node.add_uncached();
    assert!(node.holds(&forgotten).veth && node.holds(&killed).veth);
    let gone = deleted.host_veth();
    drop(deleted.netns.take());
    // The kernel removes the pod's veth pair with its netns, a moment later.
    assert!(
        cni_testkit::eventually(|| node.ns.link(&gone).is_none()),
        "veth {gone} outlived its netns"
    );
    let file = valid_file(&node.dir, &live.iter().collect::<Vec<_>>());
    let file = file.to_str().unwrap();
    let leaks = [&deleted, &forgotten, &killed];

    dry_run_only_prints(&node, file, &leaks);

    let out = node.rcni_gc(&["--valid-attachments", file]);
    let done = text(&out);
    assert!(out.status.success(), "{done}");
    let want =
        "reclaimed: 3 attachments, 6 addresses, 2 veths, 6 masquerade members, 2 cache entries";
    assert!(done.contains(want), "{done}");
    let rules = node.ns.firewall();
    for p in leaks {
        let h = node.holds(p);
        assert!(h.nothing(), "{} still holds {h:?}\n{done}", p.id);
        assert!(done.contains(&format!("reclaimed {}/eth0", p.id)), "{done}");
        for ip in p.ips() {
            assert!(!has_token(&rules, &ip), "firewall still has {ip}:\n{rules}");
        }
    }
    // The live pods: everything in place (their class's masquerade rules too), and they
    // still reach each other.
    assert!(
        rules.contains("10.61.0.0/24"),
        "masquerade rules gone:\n{rules}"
    );
    untouched_and_connected(&node, &live);
    // The runtime's DEL for a reclaimed attachment, when it finally comes, succeeds.
    for p in leaks {
        node.runtime_del(p).unwrap();
    }
    let again = text(&node.rcni_gc(&["--valid-attachments", file]));
    assert!(again.contains("reclaimed: 0 attachments"), "{again}");
}

/// `--dry-run` names every leak with its addresses and changes nothing on the node.
fn dry_run_only_prints(node: &Node, file: &str, leaks: &[&Pod]) {
    let before = node.state();
    let out = node.rcni_gc(&["--valid-attachments", file, "--dry-run"]);
    let dry = text(&out);
    assert!(out.status.success(), "{dry}");
    for p in leaks {
        assert!(
            dry.contains(&format!("would reclaim {}/eth0", p.id)),
            "{dry}"
        );
        for ip in p.ips() {
            assert!(has_token(&dry, &ip), "{ip} missing:\n{dry}");
        }
    }
    assert!(
        dry.contains("would reclaim: 3 attachments, 6 addresses"),
        "{dry}"
    );
    assert!(dry.contains("GC skipped portmap"), "{dry}");
    let after = node.state();
    assert_eq!(after.0, before.0, "--dry-run changed files:\n{dry}");
    assert_eq!(after.1, before.1, "--dry-run changed veths:\n{dry}");
    assert_eq!(after.2, before.2, "--dry-run changed the firewall:\n{dry}");
}

/// Each live pod holds all it had, and reaches the next one.
fn untouched_and_connected(node: &Node, live: &[Pod]) {
    for (i, p) in live.iter().enumerate() {
        let h = node.holds(p);
        assert_eq!(h.addresses.len(), 2, "{h:?}");
        assert!(
            h.veth && h.masquerade && h.cache_entry,
            "{} lost: {h:?}",
            p.id
        );
        let next = &live[(i + 1) % live.len()];
        for ip in next.ips() {
            let netns = p.netns.as_ref().unwrap();
            // A few tries: upstream bridge's IPv6 needs a moment after ADD (DAD).
            let reached = (0..3).any(|_| ping(netns, &ip));
            assert!(reached, "{} cannot reach {ip}", p.id);
        }
    }
}

/// Chains with upstream plugins: upstream bridge's veth (named at random, found through the
/// cached result when its DEL cannot reach the netns) and upstream host-local's addresses
/// (GC 1.1.0 is not for it: the DEL of each stale attachment releases them) go too.
#[test]
fn leaks_of_chains_with_upstream_plugins_go_too() {
    for (n, file) in [
        (64, "30-bridge-rcni.conflist"),
        (65, "40-rbridge-host-local.conflist"),
    ] {
        let node = Node::with(n, file);
        let live: Vec<Pod> = (0..2).map(|_| node.add()).collect();
        // Forgotten by the runtime, its netns still there.
        let forgotten = node.add();
        // Likewise, its netns no longer where the cache says.
        let moved = node.add();
        node.cache_with_netns(&moved, std::path::Path::new("/run/netns/gone"));
        for p in [&forgotten, &moved] {
            assert!(node.holds(p).veth, "{file}");
        }
        // GC keeps what changed in the last 50 ms before it started (the coarse clock).
        std::thread::sleep(Duration::from_millis(100));
        let file_path = valid_file(&node.dir, &live.iter().collect::<Vec<_>>());
        let out = node.rcni_gc(&["--valid-attachments", file_path.to_str().unwrap()]);
        let done = text(&out);
        assert!(out.status.success(), "{file}: {done}");
        let want =
            "reclaimed: 2 attachments, 4 addresses, 2 veths, 4 masquerade members, 2 cache entries";
        assert!(done.contains(want), "{file}: {done}");
        for p in [&forgotten, &moved] {
            let h = node.holds(p);
            assert!(h.nothing(), "{file}: {} still holds {h:?}\n{done}", p.id);
        }
        untouched_and_connected(&node, &live);
    }
}

#[test]
fn bad_input_says_what_to_fix_and_changes_nothing() {
    let node = Node::new(62);
    let pod = node.add();
    let bad = node.dir.join("bad.json");
    std::fs::write(&bad, r#"[{"containerID": "c1"}]"#).unwrap();
    let out = node.rcni_gc(&["--valid-attachments", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("ifname"), "{}", text(&out));
    let out = node.rcni_gc(&["--cri-endpoint", "/nonexistent/cri.sock"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is the runtime running"),
        "{}",
        text(&out)
    );
    let h = node.holds(&pod);
    assert!(h.veth && h.masquerade && h.cache_entry && h.addresses.len() == 2);
}

/// What the race's ADD threads made: pods the runtime lists once their ADD is done, and pods
/// leaked long ago (their files backdated).
#[derive(Default)]
struct Made {
    listed: BTreeSet<String>,
    leaked: BTreeSet<String>,
    pods: Vec<Pod>,
}

/// `adds` pods through the chain; every fourth leaked.
fn attach(node: &Node, made: &Mutex<Made>, adds: usize, offset: usize) {
    for n in 0..adds {
        let pod = node.add();
        let leaked = (n + offset).is_multiple_of(4);
        if leaked {
            node.backdate(&pod);
        }
        let mut m = made.lock().unwrap();
        let set = if leaked { &mut m.leaked } else { &mut m.listed };
        set.insert(pod.id.clone());
        m.pods.push(pod);
    }
}

/// One GC round with the runtime's list as it is now; the attachments reclaimed.
fn round(node: &Node, made: &Mutex<Made>) -> Vec<String> {
    let valid = made
        .lock()
        .unwrap()
        .listed
        .iter()
        .map(|id| rcni_gc::Attachment {
            container_id: id.clone(),
            ifname: "eth0".into(),
        })
        .collect();
    let listing = rcni_gc::Listing::from_attachments("the runtime", valid);
    let report = node.collect(&listing, Duration::from_secs(30));
    assert!(report.errors().is_empty(), "{report}");
    let reclaimed = report.networks.iter().flat_map(|n| &n.reclaims);
    reclaimed
        .map(|r| r.attachment.container_id.clone())
        .collect()
}

/// GC rounds while pods are being attached: an ADD in flight (not listed yet, or started after
/// the listing) is never reclaimed, while pods that leaked long ago are, in the same rounds.
#[test]
fn gc_racing_adds_never_takes_them() {
    // Per thread; the range (a /24) holds them all.
    const ADDS: usize = 50;
    let node = Node::new(63);
    let made = Mutex::new(Made::default());
    let running = AtomicUsize::new(2);
    let mut wrongly = Vec::new();
    let mut rounds = 0;
    std::thread::scope(|s| {
        for t in 0..2 {
            let (node, made, running) = (&node, &made, &running);
            s.spawn(move || {
                attach(node, made, ADDS, t);
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while running.load(Ordering::SeqCst) > 0 {
            rounds += 1;
            let reclaimed = round(&node, &made);
            let leaked = &made.lock().unwrap().leaked;
            wrongly.extend(reclaimed.into_iter().filter(|id| !leaked.contains(id)));
        }
    });
    // One more round for the leaks of the last moments.
    round(&node, &made);
    assert!(wrongly.is_empty(), "reclaimed while in flight: {wrongly:?}");
    assert!(rounds >= 10, "only {rounds} GC rounds raced the ADDs");
    let made = made.into_inner().unwrap();
    let mut addresses = BTreeSet::new();
    for p in &made.pods {
        let h = node.holds(p);
        if made.leaked.contains(&p.id) {
            assert!(h.nothing(), "leaked {} still holds {h:?}", p.id);
            continue;
        }
        assert_eq!(h.addresses.len(), 2, "{} lost its addresses: {h:?}", p.id);
        assert!(
            h.veth && h.masquerade && h.cache_entry,
            "{} lost: {h:?}",
            p.id
        );
        for a in h.addresses {
            assert!(addresses.insert(a), "{a} held twice");
        }
    }
    eprintln!(
        "gc race: {rounds} rounds, {} ADDs racing them, {} leaks reclaimed",
        made.pods.len(),
        made.leaked.len()
    );
}
