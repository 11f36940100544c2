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

    let before = node.state();
    let out = node.rcni_gc(&["--valid-attachments", file, "--dry-run"]);
    let dry = text(&out);
    assert!(out.status.success(), "{dry}");
    for p in [&deleted, &forgotten, &killed] {
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

    let out = node.rcni_gc(&["--valid-attachments", file]);
    let done = text(&out);
    assert!(out.status.success(), "{done}");
    assert!(
        done.contains(
            "reclaimed: 3 attachments, 6 addresses, 2 veths, 6 masquerade members, 2 cache entries"
        ),
        "{done}"
    );
    let rules = node.ns.firewall();
    for p in [&deleted, &forgotten, &killed] {
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
            assert!(
                ping(p.netns.as_ref().unwrap(), &ip),
                "{} cannot reach {ip}",
                p.id
            );
        }
    }
    // The runtime's DEL for a reclaimed attachment, when it finally comes, succeeds.
    for p in [&deleted, &forgotten, &killed] {
        node.runtime_del(p).unwrap();
    }
    let again = text(&node.rcni_gc(&["--valid-attachments", file]));
    assert!(again.contains("reclaimed: 0 attachments"), "{again}");
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

/// GC rounds while pods are being attached: an ADD in flight (not listed yet, or started after
/// the listing) is never reclaimed, while pods that leaked long ago are, in the same rounds.
#[test]
fn gc_racing_adds_never_takes_them() {
    // Per thread; the range (a /24) holds them all.
    const ADDS: usize = 50;
    let node = Node::new(63);
    let listed: Mutex<BTreeSet<String>> = Mutex::default();
    let leaked: Mutex<BTreeSet<String>> = Mutex::default();
    let pods: Mutex<Vec<Pod>> = Mutex::default();
    let running = AtomicUsize::new(2);
    let mut wrongly = Vec::new();
    let mut rounds = 0;
    std::thread::scope(|s| {
        for t in 0..2 {
            let (node, listed, leaked, pods, running) = (&node, &listed, &leaked, &pods, &running);
            s.spawn(move || {
                for n in 0..ADDS {
                    let pod = node.add();
                    if (n + t) % 4 == 0 {
                        // Leaked long ago: nothing of it may survive the next round.
                        node.backdate(&pod);
                        leaked.lock().unwrap().insert(pod.id.clone());
                    } else {
                        // The runtime lists a sandbox once its ADD is done.
                        listed.lock().unwrap().insert(pod.id.clone());
                    }
                    pods.lock().unwrap().push(pod);
                }
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while running.load(Ordering::SeqCst) > 0 {
            rounds += 1;
            let valid: Vec<rcni_gc::Attachment> = listed
                .lock()
                .unwrap()
                .iter()
                .map(|id| rcni_gc::Attachment {
                    container_id: id.clone(),
                    ifname: "eth0".into(),
                })
                .collect();
            let listing = rcni_gc::Listing::from_attachments("the runtime", valid);
            let report = node.collect(&listing, Duration::from_secs(30));
            let known = leaked.lock().unwrap().clone();
            for r in report.networks.iter().flat_map(|n| &n.reclaims) {
                if !known.contains(&r.attachment.container_id) {
                    wrongly.push(r.attachment.container_id.clone());
                }
            }
            assert!(report.errors().is_empty(), "{report}");
        }
    });
    // One more round for the leaks of the last moments.
    let valid = listed
        .lock()
        .unwrap()
        .iter()
        .map(|id| rcni_gc::Attachment {
            container_id: id.clone(),
            ifname: "eth0".into(),
        })
        .collect();
    node.collect(
        &rcni_gc::Listing::from_attachments("the runtime", valid),
        Duration::from_secs(30),
    );
    assert!(wrongly.is_empty(), "reclaimed while in flight: {wrongly:?}");
    let pods = pods.into_inner().unwrap();
    let leaked = leaked.into_inner().unwrap();
    assert!(rounds >= 10, "only {rounds} GC rounds raced the ADDs");
    let mut addresses = BTreeSet::new();
    for p in &pods {
        let h = node.holds(p);
        if leaked.contains(&p.id) {
            assert!(h.nothing(), "leaked {} still holds {h:?}", p.id);
        } else {
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
    }
    eprintln!(
        "gc race: {rounds} rounds, {} ADDs racing them, {} leaks reclaimed",
        pods.len(),
        leaked.len()
    );
}
