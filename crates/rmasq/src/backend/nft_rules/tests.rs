use super::*;
use crate::class::{BackendKind, Options};
use ipnet::IpNet;
use std::net::IpAddr;

fn class(addr: &str) -> Class {
    let a: IpNet = addr.parse().unwrap();
    Class::new(BackendKind::Nftables, "pods", a, &[a], &Options::default())
}

fn v4(s: &str) -> Vec<u8> {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec()
}

fn v6(s: &str) -> Vec<u8> {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec()
}

fn n(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Element dumps as the kernel gives them for what `script` writes (seen with
/// `nft --debug=netlink list table inet rmasq`, nftables 1.0.6): a start key per range, an
/// interval-end key after it, a leading end at 0, and no end for a range that reaches the
/// top of the address space.
#[test]
fn skip_set_elements_read_back_as_the_class_ranges() {
    let c = class("10.1.0.5/24");
    let start = |k: Vec<u8>| (k, false, None);
    let end = |k: Vec<u8>| (k, true, None);
    let dump = vec![
        end(v4("240.0.0.0")),
        start(v4("224.0.0.0")),
        end(v4("169.255.0.0")),
        start(v4("169.254.0.0")),
        end(v4("10.1.1.0")),
        start(v4("10.1.0.0")),
        end(v4("0.0.0.0")),
    ];
    assert_eq!(element_ranges(true, &dump), skip_ranges(&c));
    // Any element missing (or the set flushed) differs.
    for i in 0..dump.len() - 1 {
        let mut less = dump.clone();
        less.remove(i);
        assert_ne!(element_ranges(true, &less), skip_ranges(&c), "without {i}");
    }
    assert_ne!(element_ranges(true, &[]), skip_ranges(&c));
    let mut more = dump.clone();
    more.push(start(v4("8.8.8.8")));
    more.push(end(v4("8.8.8.9")));
    assert_ne!(element_ranges(true, &more), skip_ranges(&c));

    let c6 = class("fd00:1::5/64");
    let dump6 = vec![
        start(v6("ff00::")),
        end(v6("fec0::")),
        start(v6("fe80::")),
        end(v6("fd00:1:0:1::")),
        start(v6("fd00:1::")),
        end(v6("::")),
    ];
    assert_eq!(element_ranges(false, &dump6), skip_ranges(&c6));
    // A set holding its ranges as start and closing key (pipapo) reads the same.
    let pipapo: Vec<_> = c6
        .skip
        .iter()
        .map(|net| {
            let ipnet::IpNet::V6(net) = net else { panic!() };
            (
                net.network().octets().to_vec(),
                false,
                Some(net.broadcast().octets().to_vec()),
            )
        })
        .collect();
    assert_eq!(element_ranges(false, &pipapo), skip_ranges(&c6));
}

#[test]
fn adjacent_and_host_ranges_compare_by_coverage() {
    // `{ 11.0.0.0/8, 12.0.0.0/8, 10.0.0.1/32, 255.0.0.0/8 }` as the kernel dumps it.
    let dump = vec![
        (v4("255.0.0.0"), false, None),
        (v4("13.0.0.0"), true, None),
        (v4("12.0.0.0"), false, None),
        (v4("12.0.0.0"), true, None),
        (v4("11.0.0.0"), false, None),
        (v4("10.0.0.2"), true, None),
        (v4("10.0.0.1"), false, None),
        (v4("0.0.0.0"), true, None),
    ];
    let a = |s: &str| n(s.parse().unwrap());
    assert_eq!(
        element_ranges(true, &dump),
        vec![
            (a("10.0.0.1"), a("10.0.0.1")),
            (a("11.0.0.0"), a("12.255.255.255")),
            (a("255.0.0.0"), a("255.255.255.255")),
        ]
    );
}

/// The rules `script` writes for `c`, as a rule dump decodes them (see the listing in
/// `nft --debug=netlink list table inet rmasq`).
fn good_rules(c: &Class) -> Vec<Rule> {
    let ch = chain(c);
    let guard = |fam: u8| {
        vec![
            Expr::Meta {
                key: NFT_META_NFPROTO,
            },
            Expr::Cmp {
                op: 0,
                data: vec![fam],
            },
        ]
    };
    let fam = u8::from(if c.is_v4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    });
    let (saddr, daddr, len) = if c.is_v4() { (12, 16, 4) } else { (8, 24, 16) };
    let rule = |chain: &str, tail: Vec<Expr>| Rule {
        chain: chain.to_string(),
        handle: 0,
        exprs: [guard(fam), tail].concat(),
    };
    let lookup = |set: String| Expr::Lookup {
        set,
        inverted: false,
        map: false,
    };
    let payload = |offset| Expr::Payload {
        base: 1,
        offset,
        len,
    };
    vec![
        rule(
            "postrouting",
            vec![
                payload(saddr),
                lookup(format!("{ch}_pods")),
                Expr::Verdict {
                    code: NFT_JUMP,
                    chain: Some(ch.clone()),
                },
            ],
        ),
        rule(
            &ch,
            vec![
                payload(daddr),
                lookup(format!("{ch}_skip")),
                Expr::Verdict {
                    code: NFT_RETURN,
                    chain: None,
                },
            ],
        ),
        Rule {
            chain: ch.clone(),
            handle: 0,
            exprs: vec![Expr::Masq],
        },
    ]
}

#[test]
fn rule_check_accepts_what_script_writes_and_nothing_else() {
    let c4 = class("10.1.0.5/24");
    let c6 = class("fd00:1::5/64");
    let live = [c4.clone(), c6.clone()];
    let good: Vec<Rule> = [good_rules(&c4), good_rules(&c6)].concat();
    check_rules(&good, &live).unwrap();
    // Without the nfproto guard (an `ip` table, or another nft) it is the same rule.
    let mut unguarded = good.clone();
    unguarded[0].exprs.drain(..2);
    check_rules(&unguarded, &live).unwrap();

    for (what, damage) in damages(&c4) {
        let mut rules = good.clone();
        damage(&mut rules);
        assert!(check_rules(&rules, &live).is_err(), "{what} went unnoticed");
    }
    // A class the state knows but the table lacks.
    let c3 = class("10.3.0.5/24");
    assert!(check_rules(&good, &[c4, c6, c3]).is_err());
}

type Damage<'a> = Box<dyn Fn(&mut Vec<Rule>) + 'a>;

/// Damage to the good rules of `c4` and the class after it that the check must notice.
fn damages(c4: &Class) -> Vec<(&'static str, Damage<'_>)> {
    vec![
        ("jump deleted", Box::new(|r| drop(r.remove(0)))),
        (
            "chain flushed",
            Box::new(|r| r.retain(|x| x.chain != chain(c4))),
        ),
        ("masquerade deleted", Box::new(|r| drop(r.remove(2)))),
        (
            "extra rule in postrouting",
            Box::new(|r| {
                let mut x = r[0].clone();
                x.exprs = vec![Expr::Other("counter".into())];
                r.push(x)
            }),
        ),
        (
            "extra rule in the class chain",
            Box::new(|r| {
                let mut x = r[2].clone();
                x.exprs = vec![Expr::Verdict {
                    code: 1,
                    chain: None,
                }];
                r.insert(1, x)
            }),
        ),
        (
            "lookup inverted",
            Box::new(|r| {
                if let Expr::Lookup { inverted, .. } = &mut r[1].exprs[3] {
                    *inverted = true;
                }
            }),
        ),
        (
            "return became accept",
            Box::new(|r| {
                r[1].exprs[4] = Expr::Verdict {
                    code: 1,
                    chain: None,
                };
            }),
        ),
        (
            "saddr instead of daddr",
            Box::new(|r| {
                if let Expr::Payload { offset, .. } = &mut r[1].exprs[2] {
                    *offset = 12;
                }
            }),
        ),
        (
            "jump to another chain",
            Box::new(|r| {
                r[0].exprs[4] = Expr::Verdict {
                    code: NFT_JUMP,
                    chain: Some("elsewhere".into()),
                };
            }),
        ),
        (
            "guard of the other family",
            Box::new(|r| {
                r[1].exprs[1] = Expr::Cmp {
                    op: 0,
                    data: vec![u8::from(Family::Ipv6)],
                };
            }),
        ),
        (
            "condition added",
            Box::new(|r| {
                r[1].exprs.insert(2, Expr::Other("ct".into()));
            }),
        ),
    ]
}
