use super::*;
use crate::class::{BackendKind, Options};
use cni_testkit::Netns;

const TABLES: &[&str] = &["nat", "filter"];

fn class(addr: &str, skip: &[&str]) -> Class {
    let a: IpNet = addr.parse().unwrap();
    let skip: Vec<IpNet> = skip.iter().map(|s| s.parse().unwrap()).collect();
    let opts = Options {
        non_masquerade_cidrs: Some(skip),
        ..Options::default()
    };
    Class::new(BackendKind::Iptables, "pods", a, &[a], &opts)
}

#[test]
fn addresses_are_matched_on_the_whole_address_masked_to_the_prefix() {
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(
        address(&net("10.1.0.0/24"), true),
        [
            RuleExpr::LoadNetwork { offset: 12, len: 4 },
            RuleExpr::Mask(vec![255, 255, 255, 0]),
            RuleExpr::Equals(vec![10, 1, 0, 0]),
        ]
    );
    assert_eq!(
        address(&net("10.1.2.3/32"), false),
        [
            RuleExpr::LoadNetwork { offset: 16, len: 4 },
            RuleExpr::Equals(vec![10, 1, 2, 3]),
        ]
    );
    let v6 = address(&net("fd00:1::/64"), false);
    assert_eq!(
        v6[0],
        RuleExpr::LoadNetwork {
            offset: 24,
            len: 16
        }
    );
    assert_eq!(address(&net("0.0.0.0/0"), true), []);
}

#[test]
fn a_comment_iptables_would_refuse_is_left_to_it() {
    assert!(comment(&"x".repeat(256)).is_none() && comment(&"x".repeat(255)).is_some());
    let Some(RuleExpr::XtMatch { info, .. }) = comment("rmasq:pods") else {
        panic!("a comment match expected");
    };
    assert_eq!(info.len(), COMMENT_LEN);
    assert!(info.starts_with(b"rmasq:pods\0"));
}

/// What `iptables-save` and `nft list ruleset` print, without their comments and handles.
fn listing(ns: &Netns) -> String {
    ns.sh("iptables-save | grep -v '^#'; nft list ruleset")
}

/// The restore input the iptables backend writes for the first ADD of `c` (its module's table).
fn restore_input(c: &Class) -> String {
    let chain = nat_chain(c);
    let mut nat = format!("*nat\n:{chain} - [0:0]\n");
    for skip in &c.skip {
        nat.push_str(&format!("-A {chain} -d {skip} -j RETURN\n"));
    }
    nat.push_str(&format!(
        "-A {chain} -j MASQUERADE\n-A POSTROUTING -s {} -m comment --comment rmasq:pods -j {chain}\nCOMMIT\n",
        c.source
    ));
    let tag = format!("-m comment --comment rmasq:{} -j ACCEPT", c.id);
    format!(
        "{nat}*filter\n:RMASQ-FORWARD - [0:0]\n-A RMASQ-FORWARD -s {src} {tag}\n\
         -A RMASQ-FORWARD -d {src} {tag}\n-I FORWARD 1 -j RMASQ-FORWARD\nCOMMIT\n",
        src = c.source
    )
}

#[test]
fn a_class_written_here_reads_back_as_iptables_restore_writes_it() {
    for (v4, c) in [
        (
            true,
            class(
                "10.1.0.5/24",
                &["10.1.0.0/24", "10.96.0.0/12", "10.2.3.4/32"],
            ),
        ),
        (
            false,
            class("fd00:1::5/64", &["fd00:1::/64", "fd00:96::/108"]),
        ),
    ] {
        let ours = Netns::new("nativew");
        let theirs = Netns::new("nativer");
        let written = ours.within(|| create(v4, TABLES, &[&c], &[&c], &mut None));
        assert_eq!(written, Outcome::Done);
        let tool = if v4 { "iptables" } else { "ip6tables" };
        let input = restore_input(&c);
        theirs.sh(&format!(
            "printf '%s' '{input}' | {tool}-restore --noflush -w"
        ));
        let save = |ns: &Netns| ns.sh(&format!("{tool}-save | grep -v '^#'; nft list ruleset"));
        assert_eq!(save(&ours), save(&theirs), "family v4={v4}");
        // iptables finds our rules as its own: -C (CHECK) and -D (the fallback path) match.
        let jump = format!(
            "-s {} -m comment --comment rmasq:pods -j {}",
            c.source,
            nat_chain(&c)
        );
        ours.sh(&format!("{tool} -t nat -C POSTROUTING {jump}"));
        let removed = ours.within(|| remove(v4, &[&c], &[&c], false, &mut None));
        assert_eq!(removed, Outcome::Done);
        theirs.sh(&format!("{tool} -t nat -D POSTROUTING {jump}"));
        theirs.sh(&format!(
            "{tool} -t nat -F {ch} && {tool} -t nat -X {ch} && {tool} -D FORWARD -j RMASQ-FORWARD \
             && {tool} -F RMASQ-FORWARD && {tool} -X RMASQ-FORWARD",
            ch = nat_chain(&c)
        ));
        assert_eq!(save(&ours), save(&theirs), "after removal, v4={v4}");
        assert!(!listing(&ours).contains("RMASQ"));
    }
}

#[test]
fn a_drop_policy_on_forward_is_kept() {
    let ns = Netns::new("nativep");
    ns.sh("iptables -P FORWARD DROP && iptables -A FORWARD -j DROP");
    let c = class("10.1.0.5/24", &["10.1.0.0/24"]);
    assert_eq!(
        ns.within(|| create(true, TABLES, &[&c], &[&c], &mut None)),
        Outcome::Done
    );
    let forward = ns.sh("iptables -S FORWARD");
    assert_eq!(
        forward.lines().collect::<Vec<_>>(),
        [
            "-P FORWARD DROP",
            "-A FORWARD -j RMASQ-FORWARD",
            "-A FORWARD -j DROP"
        ],
        "our jump goes first, the policy and the node's rule stay"
    );
    assert_eq!(
        ns.within(|| remove(true, &[&c], &[&c], false, &mut None)),
        Outcome::Done
    );
    assert_eq!(
        ns.sh("iptables -S FORWARD").lines().collect::<Vec<_>>(),
        ["-P FORWARD DROP", "-A FORWARD -j DROP"]
    );
}

#[test]
fn a_removal_that_would_take_more_than_the_leaving_classes_is_left_to_iptables() {
    let ns = Netns::new("nativek");
    let a = class("10.1.0.5/24", &["10.1.0.0/24"]);
    let b = class("10.2.0.5/24", &["10.2.0.0/24"]);
    assert_eq!(
        ns.within(|| create(true, TABLES, &[&a], &[&a, &b], &mut None)),
        Outcome::Done
    );
    let before = listing(&ns);
    // b's accepts are in the shared chain: flushing it for a alone would take them.
    assert_eq!(
        ns.within(|| remove(true, &[&a], &[&a], false, &mut None)),
        Outcome::Refused
    );
    // Another class keeps forward accepts.
    assert_eq!(
        ns.within(|| remove(true, &[&a], &[&a], true, &mut None)),
        Outcome::Refused
    );
    assert_eq!(listing(&ns), before, "nothing changed");
    assert_eq!(
        ns.within(|| remove(true, &[&a], &[&a, &b], false, &mut None)),
        Outcome::Done
    );
    assert!(!listing(&ns).contains("RMASQ"));
}
