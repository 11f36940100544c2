//! nftables backend: one table `inet rmasq`; per class a set of pod addresses, an interval set of
//! destinations to skip, a two-rule chain, and one jump rule in the postrouting base chain:
//!
//! ```text
//! table inet rmasq {
//!   set c_<id>_pods { type ipv4_addr; elements = { 10.1.0.5, ... } }   # one element per pod
//!   set c_<id>_skip { type ipv4_addr; flags interval; elements = { 10.1.0.0/24, 169.254.0.0/16, 224.0.0.0/4 } }
//!   chain c_<id> { ip daddr @c_<id>_skip return; masquerade }
//!   chain postrouting { type nat hook postrouting priority srcnat; ip saddr @c_<id>_pods jump c_<id> }
//! }
//! ```
//!
//! A pod is one set element. Two paths, both of a cost that depends on the number of classes,
//! not pods:
//!
//! - [`update_elements`], the hot path when every class the call touches exists already (every
//!   pod after a node's first): over nfnetlink, without a process, it checks that the table
//!   holds exactly the per-class rules and skip sets of the live classes (one rule dump and one
//!   element dump per class), then adds or removes the pod's addresses as set elements in one
//!   transaction: a few hundred microseconds instead of an `nft` run's 10 ms or more. (Closing
//!   the socket after a removal still waits for an RCU grace period, as `nft` does at exit:
//!   nf_tables frees removed elements only after one; callers close it outside their lock.)
//! - [`Nftables::apply`], when a class is created or removed, or the hot path fails (the table,
//!   a set, a rule or a skip element is missing or differs, e.g. after `nft flush ruleset`): one
//!   `nft -f -` transaction that rewrites the per-class rules of every live class (atomically, so
//!   traffic never sees a gap), which keeps them idempotent and repairs what was changed by hand.
//!
//! Set elements are added with `add` (a no-op if present) and removed with `add` then `delete`
//! in one transaction, which succeeds whether or not the element was there.
//!
//! Rules are written by `nft` rather than netlink: the maintained netlink crates that write
//! rules are GPL-3.0 (rustables) or need libnftnl at build time (nftnl), and compiling rules by
//! hand would tie us to nft's bytecode; set elements and the read-back go over nfnetlink
//! (`cni_netlink::netfilter`).
//! Forwarding accepts go to iptables (see [`crate::iptables`]): an nftables `accept` in our
//! table cannot override a DROP policy in another table, which is where nodes have it.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::process::{Command, Stdio};

use cni_types::error::{CniError, Result, CHECK_MISMATCH, FIREWALL_FAILURE, PLUGIN_NOT_AVAILABLE};

use crate::backend::{Backend, Plan};
use crate::class::{BackendKind, Class};
use crate::iptables;
use cni_netlink::netfilter::{ElemOp, Expr, Family, Netfilter, Rule};

pub const TABLE: &str = "rmasq";

pub struct Nftables;

fn chain(c: &Class) -> String {
    format!("c_{}", c.id)
}

fn types(c: &Class) -> (&'static str, &'static str) {
    if c.is_v4() {
        ("ip", "ipv4_addr")
    } else {
        ("ip6", "ipv6_addr")
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The transaction for `plan`.
pub fn script(plan: &Plan) -> String {
    let t = format!("inet {TABLE}");
    let mut s = String::new();
    let dropped = |c: &Class| plan.drop.iter().any(|d| d.id == c.id);
    if plan.live.is_empty() {
        // The last class is gone: the table goes with everything in it.
        let _ = writeln!(s, "add table {t}\ndelete table {t}");
        return s;
    }
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain {t} postrouting");
    for c in &plan.live {
        let (fam, ty) = types(c);
        let ch = chain(c);
        let _ = writeln!(s, "add set {t} {ch}_pods {{ type {ty}; }}");
        let _ = writeln!(s, "add set {t} {ch}_skip {{ type {ty}; flags interval; }}");
        let _ = writeln!(s, "flush set {t} {ch}_skip");
        if !c.skip.is_empty() {
            let _ = writeln!(s, "add element {t} {ch}_skip {{ {} }}", join(&c.skip));
        }
        let _ = writeln!(s, "add chain {t} {ch}");
        let _ = writeln!(s, "flush chain {t} {ch}");
        let _ = writeln!(s, "add rule {t} {ch} {fam} daddr @{ch}_skip return");
        let _ = writeln!(s, "add rule {t} {ch} masquerade");
        let _ = writeln!(
            s,
            "add rule {t} postrouting {fam} saddr @{ch}_pods jump {ch} comment \"{}\"",
            c.network
        );
    }
    for (c, addr) in &plan.add {
        let _ = writeln!(s, "add element {t} {}_pods {{ {addr} }}", chain(c));
    }
    for (c, addr) in plan.remove.iter().filter(|(c, _)| !dropped(c)) {
        let (_, ty) = types(c);
        let ch = chain(c);
        let _ = writeln!(s, "add set {t} {ch}_pods {{ type {ty}; }}");
        let _ = writeln!(s, "add element {t} {ch}_pods {{ {addr} }}");
        let _ = writeln!(s, "delete element {t} {ch}_pods {{ {addr} }}");
    }
    for c in &plan.drop {
        let (_, ty) = types(c);
        let ch = chain(c);
        // `add` first so the delete succeeds even if it was already gone.
        let _ = writeln!(s, "add chain {t} {ch}\ndelete chain {t} {ch}");
        let _ = writeln!(
            s,
            "add set {t} {ch}_pods {{ type {ty}; }}\ndelete set {t} {ch}_pods"
        );
        let _ = writeln!(
            s,
            "add set {t} {ch}_skip {{ type {ty}; flags interval; }}\ndelete set {t} {ch}_skip"
        );
    }
    s
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                FIREWALL_FAILURE,
                format!("cannot run nft (install nftables or set \"backend\": \"iptables\"): {e}"),
            )
        })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // nft reads the whole script before acting; a write error shows up as its failure.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(FIREWALL_FAILURE, format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CniError::new(
            FIREWALL_FAILURE,
            format!(
                "nft {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// The lines of the block that starts with `header` (e.g. `chain c_x {`) in `nft list` output.
fn block<'a>(listing: &'a str, header: &str) -> Option<Vec<&'a str>> {
    let mut lines = listing.lines().skip_while(|l| l.trim() != header);
    lines.next()?;
    Some(lines.take_while(|l| l.trim() != "}").collect())
}

/// Words of a block, split on nft's punctuation, to find an address or a rule's parts.
fn words<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '=')))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Checks `listing` (of `nft list table inet rmasq`) for what `class` and `addr` need.
pub fn check_listing(listing: &str, class: &Class, addr: IpAddr) -> Result<()> {
    let (fam, _) = types(class);
    let ch = chain(class);
    let missing = |what: String| {
        Err(CniError::new(
            CHECK_MISMATCH,
            format!(
                "nftables table inet {TABLE} lacks {what} (network {}, address {addr}): run DEL and ADD again",
                class.network
            ),
        ))
    };
    let Some(pods) = block(listing, &format!("set {ch}_pods {{")) else {
        return missing(format!("set {ch}_pods"));
    };
    let want = addr.to_string();
    if !words(&pods).iter().any(|w| *w == want) {
        return missing(format!("element {addr} of set {ch}_pods"));
    }
    let Some(rules) = block(listing, &format!("chain {ch} {{")) else {
        return missing(format!("chain {ch}"));
    };
    let has = |lines: &[&str], rule: &str| lines.iter().any(|l| l.trim().starts_with(rule));
    for rule in [
        format!("{fam} daddr @{ch}_skip return"),
        "masquerade".into(),
    ] {
        if !has(&rules, &rule) {
            return missing(format!("rule \"{rule}\" in chain {ch}"));
        }
    }
    let Some(skip) = block(listing, &format!("set {ch}_skip {{")) else {
        return missing(format!("set {ch}_skip"));
    };
    for net in &class.skip {
        let want = net.to_string();
        // nft prints a host prefix (/32, /128) as a bare address.
        let bare = net.addr().to_string();
        if !words(&skip)
            .iter()
            .any(|w| *w == want || (net.prefix_len() == net.max_prefix_len() && *w == bare))
        {
            return missing(format!("element {net} of set {ch}_skip"));
        }
    }
    let Some(post) = block(listing, "chain postrouting {") else {
        return missing("chain postrouting".into());
    };
    let jump = format!("{fam} saddr @{ch}_pods jump {ch}");
    if !has(&post, &jump) {
        return missing(format!("rule \"{jump}\" in chain postrouting"));
    }
    Ok(())
}

/// An address as set element key: network byte order.
pub fn key(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The hot path of a plan whose classes all exist (nothing to create or drop): checks over
/// netlink that the table holds exactly the rules and skip sets of `plan.live`, then adds
/// `plan.add` and removes `plan.remove` as set elements in one transaction. Any error (ENOENT
/// when the table or a set is missing, rules that differ, no nf_tables at all) means: run
/// [`Nftables::apply`] instead, which writes everything again; nothing was changed then.
pub fn update_elements(plan: &Plan) -> io::Result<()> {
    update_elements_with(&mut Netfilter::open()?, plan)
}

/// [`update_elements`] on an open socket (one per call: closing a netfilter socket waits for
/// nf_tables' deferred frees, so fewer sockets mean fewer waits).
pub fn update_elements_with(nl: &mut Netfilter, plan: &Plan) -> io::Result<()> {
    if plan.live.is_empty() || !plan.drop.is_empty() || plan.ensure.iter().any(|(_, f)| *f) {
        return Err(io::Error::other("classes are created or removed"));
    }
    verify(nl, &plan.live)?;
    let mut ops: Vec<(ElemOp, String, Vec<u8>)> = Vec::new();
    for (c, addr) in &plan.add {
        ops.push((ElemOp::Add, format!("{}_pods", chain(c)), key(*addr)));
    }
    for (c, addr) in &plan.remove {
        let set = format!("{}_pods", chain(c));
        ops.push((ElemOp::Add, set.clone(), key(*addr)));
        ops.push((ElemOp::Delete, set, key(*addr)));
    }
    if ops.is_empty() {
        return Ok(());
    }
    let ops: Vec<(ElemOp, &str, &[u8])> = ops
        .iter()
        .map(|(op, set, k)| (*op, set.as_str(), k.as_slice()))
        .collect();
    nl.change_elements(Family::Inet, TABLE, &ops)
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
pub type Element = (Vec<u8>, bool, Option<Vec<u8>>);

/// The ranges (inclusive, merged where they touch) an interval set's dumped elements cover.
/// Elements are either start keys closed by the next interval-end key (rbtree sets), or start
/// keys with a closing key (pipapo sets).
pub fn element_ranges(v4: bool, elems: &[Element]) -> Vec<(u128, u128)> {
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
pub fn skip_ranges(c: &Class) -> Vec<(u128, u128)> {
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
/// [`script`] writes for `live`: per class `<fam> daddr @skip return; masquerade`, and in
/// postrouting one `<fam> saddr @pods jump` per class and nothing else.
pub fn check_rules(rules: &[Rule], live: &[Class]) -> io::Result<()> {
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
fn verify(nl: &mut Netfilter, live: &[Class]) -> io::Result<()> {
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

impl Backend for Nftables {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn apply(&self, plan: &Plan) -> Result<()> {
        let text = script(plan);
        nft(&["-f", "-"], Some(&text)).map_err(|e| e.with_details(text))?;
        // Forward accepts: the class's first pod adds them, the last one's DEL removes them;
        // ADD re-adds them if something deleted them.
        for c in plan.drop.iter().filter(|c| c.allow_forward) {
            iptables::drop_forward(c)?;
        }
        for (c, fresh) in plan.ensure.iter().filter(|(c, _)| c.allow_forward) {
            iptables::ensure_forward(c, *fresh)?;
        }
        Ok(())
    }

    fn check(&self, class: &Class, addr: IpAddr) -> Result<()> {
        let listing = nft(&["list", "table", "inet", TABLE], None).map_err(|e| {
            CniError::new(
                CHECK_MISMATCH,
                format!(
                    "nftables table inet {TABLE} is missing or unreadable: {}",
                    e.msg
                ),
            )
        })?;
        check_listing(&listing, class, addr)?;
        if class.allow_forward {
            iptables::check_forward(class)?;
        }
        Ok(())
    }

    fn status(&self) -> Result<()> {
        nft(&["list", "tables"], None).map(|_| ()).map_err(|e| {
            CniError::new(
                PLUGIN_NOT_AVAILABLE,
                format!("nftables is not usable: {}", e.msg),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::Options;
    use ipnet::IpNet;

    fn class(addr: &str) -> Class {
        let a: IpNet = addr.parse().unwrap();
        Class::new(BackendKind::Nftables, "pods", a, &[a], &Options::default())
    }

    #[test]
    fn add_script_has_fixed_rules_per_class_and_one_element_per_pod() {
        let c = class("10.1.0.5/24");
        let plan = Plan {
            live: vec![c.clone()],
            ensure: vec![(c.clone(), true)],
            add: vec![(c.clone(), "10.1.0.5".parse().unwrap())],
            ..Plan::default()
        };
        let s = script(&plan);
        let ch = format!("c_{}", c.id);
        assert!(s.contains(&format!(
            "add element inet rmasq {ch}_skip {{ 10.1.0.0/24, 169.254.0.0/16, 224.0.0.0/4 }}"
        )));
        assert!(s.contains(&format!(
            "add rule inet rmasq {ch} ip daddr @{ch}_skip return"
        )));
        assert!(s.contains(&format!("add rule inet rmasq {ch} masquerade")));
        assert!(s.contains(&format!(
            "add rule inet rmasq postrouting ip saddr @{ch}_pods jump {ch} comment \"pods\""
        )));
        assert!(s.contains(&format!("add element inet rmasq {ch}_pods {{ 10.1.0.5 }}")));
        assert_eq!(s.matches("add rule").count(), 3);
    }

    #[test]
    fn remove_is_idempotent_and_drop_removes_class() {
        let c4 = class("10.1.0.5/24");
        let c6 = class("fd00::5/64");
        let plan = Plan {
            live: vec![c4.clone()],
            remove: vec![
                (c4.clone(), "10.1.0.5".parse().unwrap()),
                (c6.clone(), "fd00::5".parse().unwrap()),
            ],
            drop: vec![c6.clone()],
            ..Plan::default()
        };
        let s = script(&plan);
        let ch4 = format!("c_{}", c4.id);
        let ch6 = format!("c_{}", c6.id);
        assert!(s.contains(&format!(
            "add element inet rmasq {ch4}_pods {{ 10.1.0.5 }}\ndelete element inet rmasq {ch4}_pods {{ 10.1.0.5 }}"
        )));
        // A dropped class's set goes whole; no element-level delete for it.
        assert!(!s.contains(&format!("delete element inet rmasq {ch6}_pods")));
        assert!(s.contains(&format!(
            "add chain inet rmasq {ch6}\ndelete chain inet rmasq {ch6}"
        )));
        assert!(s.contains(&format!("delete set inet rmasq {ch6}_skip")));
        assert!(!s.contains(&format!("jump {ch6}")));
    }

    #[test]
    fn no_live_class_removes_the_table() {
        let c = class("10.1.0.5/24");
        let s = script(&Plan {
            drop: vec![c],
            ..Plan::default()
        });
        assert_eq!(s, "add table inet rmasq\ndelete table inet rmasq\n");
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

        type Damage<'a> = Box<dyn Fn(&mut Vec<Rule>) + 'a>;
        let broken: Vec<(&str, Damage)> = vec![
            ("jump deleted", Box::new(|r| drop(r.remove(0)))),
            (
                "chain flushed",
                Box::new(|r| r.retain(|x| x.chain != chain(&c4))),
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
        ];
        for (what, damage) in broken {
            let mut rules = good.clone();
            damage(&mut rules);
            assert!(check_rules(&rules, &live).is_err(), "{what} went unnoticed");
        }
        // A class the state knows but the table lacks.
        let c3 = class("10.3.0.5/24");
        assert!(check_rules(&good, &[c4, c6, c3]).is_err());
    }

    #[test]
    fn check_finds_missing_pieces() {
        let c = class("10.1.0.5/24");
        let ch = format!("c_{}", c.id);
        let good = format!(
            "table inet rmasq {{\n\tset {ch}_pods {{\n\t\ttype ipv4_addr\n\t\telements = {{ 10.1.0.50, 10.1.0.5 }}\n\t}}\n\n\
             \tset {ch}_skip {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ 10.1.0.0/24, 169.254.0.0/16,\n\t\t\t     224.0.0.0/4 }}\n\t}}\n\n\
             \tchain {ch} {{\n\t\tip daddr @{ch}_skip return\n\t\tmasquerade\n\t}}\n\n\
             \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr @{ch}_pods jump {ch} comment \"pods\"\n\t}}\n}}\n"
        );
        check_listing(&good, &c, "10.1.0.5".parse().unwrap()).unwrap();
        let e = check_listing(&good, &c, "10.1.0.6".parse().unwrap()).unwrap_err();
        assert_eq!(e.code, CHECK_MISMATCH);
        assert!(e.msg.contains("element 10.1.0.6"), "{}", e.msg);
        let no_masq = good.replace("\t\tmasquerade\n", "");
        let e = check_listing(&no_masq, &c, "10.1.0.5".parse().unwrap()).unwrap_err();
        assert!(e.msg.contains("masquerade"), "{}", e.msg);
        let no_jump = good.replace(
            &format!("\t\tip saddr @{ch}_pods jump {ch} comment \"pods\"\n"),
            "",
        );
        let e = check_listing(&no_jump, &c, "10.1.0.5".parse().unwrap()).unwrap_err();
        assert!(e.msg.contains("postrouting"), "{}", e.msg);
    }
}
