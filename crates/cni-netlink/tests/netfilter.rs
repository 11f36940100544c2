//! The nfnetlink module against the kernel, in namespaces of the test's own: set element
//! batches and the read-back (generation, tables, rules, set elements) compared with `nft`.

use cni_netlink::netfilter::{ElemOp, Expr, Family, Netfilter};
use cni_plugin::netns::NetNs;
use cni_testkit::Netns;

fn in_ns<T: Send>(node: &Netns, f: impl FnOnce(&mut Netfilter) -> T + Send) -> T {
    let ns = NetNs::open(&node.path()).unwrap();
    ns.run(|| f(&mut Netfilter::open().unwrap())).unwrap()
}

/// Acks, ENOENT for a missing set or element, and add-then-delete as one transaction whether
/// or not the element was there.
#[test]
fn set_element_batches_against_the_kernel() {
    cni_testkit::require_root();
    let node = Netns::new("nfnl");
    let key = [10u8, 1, 0, 5];
    let key6 = "fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    let change = |ops: &[(ElemOp, &str, &[u8])]| {
        in_ns(&node, |nl| nl.change_elements(Family::Inet, "t", ops))
    };
    assert_eq!(
        errno(change(&[(ElemOp::Add, "s4", &key)])),
        Some(libc::ENOENT)
    );
    node.sh("nft add table inet t; nft add set inet t s4 '{ type ipv4_addr; }'; nft add set inet t s6 '{ type ipv6_addr; }'");
    let elements = || node.sh("nft list table inet t");
    change(&[(ElemOp::Add, "s4", &key), (ElemOp::Add, "s6", &key6)]).unwrap();
    change(&[(ElemOp::Add, "s4", &key)]).unwrap();
    assert!(
        elements().contains("10.1.0.5") && elements().contains("fd00::5"),
        "{}",
        elements()
    );
    // One failing operation fails the batch, and nothing of it is applied.
    let other = [10u8, 1, 0, 6];
    assert_eq!(
        errno(change(&[
            (ElemOp::Add, "s4", &other),
            (ElemOp::Add, "missing", &key)
        ])),
        Some(libc::ENOENT)
    );
    assert!(!elements().contains("10.1.0.6"), "{}", elements());
    change(&[(ElemOp::Delete, "s4", &key)]).unwrap();
    assert!(!elements().contains("10.1.0.5"), "{}", elements());
    assert_eq!(
        errno(change(&[(ElemOp::Delete, "s4", &key)])),
        Some(libc::ENOENT)
    );
    // Add then delete: succeeds whether or not the element was there.
    for _ in 0..2 {
        change(&[(ElemOp::Add, "s6", &key6), (ElemOp::Delete, "s6", &key6)]).unwrap();
        assert!(!elements().contains("fd00::5"), "{}", elements());
    }
}

/// The handle `nft -a` prints on the line holding `what`.
fn handle(listing: &str, what: &str) -> u64 {
    let line = listing
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what} in\n{listing}"));
    line.rsplit("# handle ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn tables_rules_elements_and_generation_read_back() {
    cni_testkit::require_root();
    let node = Netns::new("nfnl");
    let gen0 = in_ns(&node, |nl| nl.generation().unwrap());
    node.sh(
        "nft -f - <<'EOF'\n\
         table ip t {\n\
           set skip { type ipv4_addr; flags interval; elements = { 10.1.0.0/24, 224.0.0.0/4 } }\n\
           chain c { ip daddr @skip return; masquerade; }\n\
           chain post { type nat hook postrouting priority srcnat; ip saddr 10.1.0.0/24 jump c; counter; }\n\
         }\n\
         EOF",
    );
    let (gen1, tables, rules, post, elems) = in_ns(&node, |nl| {
        (
            nl.generation().unwrap(),
            nl.tables(Family::Ipv4).unwrap(),
            nl.rules(Family::Ipv4, "t", None).unwrap(),
            nl.rules(Family::Ipv4, "t", Some("post")).unwrap(),
            nl.set_elements(Family::Ipv4, "t", "skip").unwrap(),
        )
    });
    assert_ne!(gen1, gen0, "a transaction moves the generation");
    let listing = node.sh("nft -a list table ip t");
    let t = tables.iter().find(|t| t.name == "t").expect("table t");
    assert_eq!(t.handle, handle(&listing, "table ip t"));
    assert!(in_ns(&node, |nl| nl.tables(Family::Ipv6).unwrap()).is_empty());

    assert_eq!(rules.len(), 4, "{rules:?}");
    assert_eq!(
        rules.iter().map(|r| r.chain.as_str()).collect::<Vec<_>>(),
        ["c", "c", "post", "post"]
    );
    assert_eq!(rules[1].exprs, [Expr::Masq]);
    assert_eq!(rules[1].handle, handle(&listing, "masquerade"));
    // ip daddr @skip return: a payload load, the lookup and the verdict.
    assert_eq!(
        rules[0].exprs,
        [
            Expr::Payload {
                base: 1,
                offset: 16,
                len: 4
            },
            Expr::Lookup {
                set: "skip".into(),
                inverted: false,
                map: false
            },
            Expr::Verdict {
                code: -5,
                chain: None
            },
        ]
    );
    assert_eq!(post, rules[2..]);
    assert!(post[0].exprs.contains(&Expr::Verdict {
        code: -3,
        chain: Some("c".into())
    }));
    assert_eq!(post[1].exprs, [Expr::Other("counter".into())]);

    // An rbtree interval set: a start key per range, an interval-end key after it.
    let key = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec();
    let starts: Vec<_> = elems.iter().filter(|e| !e.interval_end).collect();
    let ends: Vec<_> = elems.iter().filter(|e| e.interval_end).collect();
    for k in ["10.1.0.0", "224.0.0.0"] {
        assert!(starts.iter().any(|e| e.key == key(k)), "{elems:?}");
    }
    for k in ["10.1.1.0", "240.0.0.0"] {
        assert!(ends.iter().any(|e| e.key == key(k)), "{elems:?}");
    }
    let missing = in_ns(&node, |nl| nl.set_elements(Family::Ipv4, "t", "nope"));
    assert_eq!(missing.unwrap_err().raw_os_error(), Some(libc::ENOENT));
    // A rule dump filters by table: no such table, no rules.
    let gone = in_ns(&node, |nl| nl.rules(Family::Ipv4, "none", None));
    assert_eq!(gone.unwrap(), []);
}

/// A ruleset transaction: chains and rules as `nft` lists them, all or nothing, refused with
/// ERESTART once the generation it was read at is gone; `has_chain` before and after.
#[test]
fn ruleset_transactions_against_the_kernel() {
    use cni_netlink::netfilter::{BaseChain, Change, RuleExpr, Verdict};
    cni_testkit::require_root();
    let node = Netns::new("nfnlw");
    let table = || "t".to_string();
    let rule = |chain: &str, exprs: Vec<RuleExpr>| Change::AddRule {
        table: table(),
        chain: chain.into(),
        exprs,
        first: false,
    };
    let changes = vec![
        Change::AddTable { table: table() },
        Change::AddChain {
            table: table(),
            chain: "inner".into(),
            base: None,
        },
        Change::AddChain {
            table: table(),
            chain: "post".into(),
            base: Some(BaseChain {
                kind: "nat",
                hook: 4,
                priority: 100,
            }),
        },
        rule(
            "inner",
            vec![
                RuleExpr::LoadNetwork { offset: 16, len: 4 },
                RuleExpr::Mask(vec![255, 255, 0, 0]),
                RuleExpr::Equals(vec![10, 2, 0, 0]),
                RuleExpr::Counter,
                RuleExpr::Verdict(Verdict::Return),
            ],
        ),
        rule(
            "post",
            vec![RuleExpr::Verdict(Verdict::Jump("inner".into()))],
        ),
    ];
    let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    let (stale, absent) = in_ns(&node, |nl| {
        let g = nl.generation().unwrap();
        let absent = !nl.has_chain(Family::Ipv4, "t", "inner").unwrap();
        nl.commit(Family::Ipv4, Some(g), &changes[..1]).unwrap();
        (g, absent)
    });
    assert!(absent);
    // The table's creation bumped the generation: a batch read before it is refused whole.
    let refused = in_ns(&node, |nl| nl.commit(Family::Ipv4, Some(stale), &changes));
    assert_eq!(errno(refused), Some(libc::ERESTART));
    assert!(!node.sh("nft list table ip t").contains("chain"));
    in_ns(&node, |nl| {
        let g = nl.generation().unwrap();
        nl.commit(Family::Ipv4, Some(g), &changes).unwrap();
        assert!(nl.has_chain(Family::Ipv4, "t", "inner").unwrap());
    });
    let listing = node.sh("nft list table ip t");
    assert!(listing.contains("ip daddr 10.2.0.0/16 counter packets 0 bytes 0 return"));
    assert!(listing.contains("type nat hook postrouting priority srcnat; policy accept;"));
    assert!(listing.contains("jump inner"), "{listing}");
    // A failing change (a chain still jumped to) fails the transaction: the flush stays undone.
    let delete = [
        Change::FlushChain {
            table: table(),
            chain: "inner".into(),
        },
        Change::DeleteChain {
            table: table(),
            chain: "inner".into(),
        },
    ];
    let busy = in_ns(&node, |nl| nl.commit(Family::Ipv4, None, &delete));
    assert_eq!(errno(busy), Some(libc::EBUSY));
    assert_eq!(node.sh("nft list table ip t"), listing);
}
