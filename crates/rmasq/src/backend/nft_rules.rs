//! The nftables backend's rules as the kernel holds them: their names, and the read-back that
//! checks over nfnetlink, without a process, that table `inet rmasq` holds exactly the rules and
//! skip sets `nftables::script` writes for the live classes.

use std::io;

use cni_netlink::netfilter::{Expr, Family, Netfilter, Rule};

use crate::class::Class;

pub(crate) const TABLE: &str = "rmasq";

/// A class's chain; its sets are `<chain>_pods` and `<chain>_skip`.
pub(crate) fn chain(c: &Class) -> String {
    format!("c_{}", c.id)
}

const NFT_META_NFPROTO: u32 = 15;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;

/// The expressions `nft` compiles `<ip|ip6> <saddr|daddr> @<set> <verdict>` into, without the
/// `meta nfproto` guard an inet table adds (see [`significant`]).
fn match_set(c: &Class, source: bool, set: String, verdict: Expr) -> Vec<Expr> {
    let (offset, len) = match (c.is_v4(), source) {
        (true, true) => (12, 4),
        (true, false) => (16, 4),
        (false, true) => (8, 16),
        (false, false) => (24, 16),
    };
    vec![
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
        },
        Expr::Lookup {
            set,
            inverted: false,
            map: false,
        },
        verdict,
    ]
}

/// A rule's expressions without a leading `meta nfproto == <the class's family>` guard.
fn significant<'a>(c: &Class, exprs: &'a [Expr]) -> &'a [Expr] {
    let fam = u8::from(if c.is_v4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    });
    match exprs {
        [Expr::Meta {
            key: NFT_META_NFPROTO,
        }, Expr::Cmp { op: 0, data }, rest @ ..]
            if data.as_slice() == [fam] =>
        {
            rest
        }
        _ => exprs,
    }
}

/// A dumped interval set element: key, interval-end flag, closing key (pipapo sets).
type Element = (Vec<u8>, bool, Option<Vec<u8>>);

/// The ranges (inclusive, merged where they touch) an interval set's dumped elements cover.
/// Elements are either start keys closed by the next interval-end key (rbtree sets), or start
/// keys with a closing key (pipapo sets).
fn element_ranges(v4: bool, elems: &[Element]) -> Vec<(u128, u128)> {
    let max = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    let num = |k: &[u8]| k.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b));
    let mut ends: Vec<u128> = elems.iter().filter(|e| e.1).map(|e| num(&e.0)).collect();
    ends.sort_unstable();
    let mut ranges: Vec<(u128, u128)> = elems
        .iter()
        .filter(|e| !e.1)
        .map(|(k, _, k_end)| {
            let start = num(k);
            let last = match k_end {
                Some(e) => num(e),
                None => ends.iter().find(|e| **e > start).map_or(max, |e| e - 1),
            };
            (start, last)
        })
        .collect();
    merge(&mut ranges);
    ranges
}

fn merge(ranges: &mut Vec<(u128, u128)>) {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges.iter() {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *ranges = out;
}

/// The ranges a class's skip set must cover.
fn skip_ranges(c: &Class) -> Vec<(u128, u128)> {
    let mut ranges: Vec<(u128, u128)> = c
        .skip
        .iter()
        .map(|n| match n {
            ipnet::IpNet::V4(n) => (
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            ),
            ipnet::IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
        })
        .collect();
    merge(&mut ranges);
    ranges
}

fn differs(what: String) -> io::Error {
    io::Error::other(what)
}

/// Checks that the rules of `rules` (every rule of table inet rmasq) are exactly those
/// `nftables::script` writes for `live`: per class `<fam> daddr @skip return; masquerade`,
/// and in postrouting one `<fam> saddr @pods jump` per class and nothing else.
fn check_rules(rules: &[Rule], live: &[Class]) -> io::Result<()> {
    let post: Vec<&Rule> = rules.iter().filter(|r| r.chain == "postrouting").collect();
    if post.len() != live.len() {
        return Err(differs(format!(
            "postrouting has {} rules for {} classes",
            post.len(),
            live.len()
        )));
    }
    for c in live {
        let ch = chain(c);
        let jump = match_set(
            c,
            true,
            format!("{ch}_pods"),
            Expr::Verdict {
                code: NFT_JUMP,
                chain: Some(ch.clone()),
            },
        );
        if !post
            .iter()
            .any(|r| significant(c, &r.exprs) == jump.as_slice())
        {
            return Err(differs(format!("no jump to {ch} in postrouting")));
        }
        let own: Vec<&Rule> = rules.iter().filter(|r| r.chain == ch).collect();
        let ret = match_set(
            c,
            false,
            format!("{ch}_skip"),
            Expr::Verdict {
                code: NFT_RETURN,
                chain: None,
            },
        );
        let ok = matches!(own.as_slice(), [skip, masq]
            if significant(c, &skip.exprs) == ret.as_slice() && masq.exprs == [Expr::Masq]);
        if !ok {
            return Err(differs(format!("chain {ch} differs")));
        }
    }
    Ok(())
}

/// Reads the rules and skip sets of `live` back from the kernel and checks them.
pub(crate) fn verify(nl: &mut Netfilter, live: &[Class]) -> io::Result<()> {
    let rules = nl.rules(Family::Inet, TABLE, None)?;
    check_rules(&rules, live)?;
    for c in live {
        let set = format!("{}_skip", chain(c));
        let elems: Vec<Element> = nl
            .set_elements(Family::Inet, TABLE, &set)?
            .into_iter()
            .map(|e| (e.key, e.interval_end, e.key_end))
            .collect();
        if element_ranges(c.is_v4(), &elems) != skip_ranges(c) {
            return Err(differs(format!("set {set} differs")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
