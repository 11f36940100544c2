//! A class's first pod and its last without iptables processes, where the node's iptables is
//! iptables-nft: the rules `iptables-restore` would write (or delete) go to nf_tables as one
//! transaction over our own netlink socket, encoded as iptables-nft encodes them, so
//! `iptables-save`, `iptables -D` and kube-proxy's tools read them as their own.
//!
//! Buys, on any kernel: the `iptables-restore` process (fork, exec, dynamic link, reading its
//! cache) on a class's first ADD, and on its last DEL the `iptables-save` and `iptables-restore`
//! processes and one RCU grace period: iptables-nft commits nat and filter as two
//! transactions and waits for one grace period after each at exit, this is one transaction
//! across both. Measured here (docs/performance.md): a first ADD with rmasq chained 6.2 → 5.7
//! ms, a node's last DEL 50.2 → 43.7 ms.
//!
//! Only the plain cases, where what is there is fully known: a first ADD where nothing of ours
//! is in nf_tables (`untouched`), a last DEL whose classes' rules are the only ones in our
//! chains. The ruleset generation read first guards the transaction: anything written in
//! between (a firewall reload, kube-proxy) makes the kernel refuse it, and the caller falls back
//! to `iptables-save` and `iptables-restore`, as it does for every other case, for legacy
//! iptables and for any failure here. Addresses are matched as iptables-nft 1.8.0 and later all
//! read them back: a full-length load, masked unless the prefix is the whole address.

use std::io;

use cni_netlink::netfilter::{BaseChain, Change, Expr, Family, Netfilter, Rule, RuleExpr, Verdict};
use ipnet::IpNet;

use super::forward::accept_tag;
use super::forward::FORWARD_CHAIN;
use super::iptables::{jump_tag, nat_chain};
use super::octets;
use super::untouched;
use super::xtables::{cmd, find_in_path, legacy_tables};
use crate::class::Class;

/// What became of a change offered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written: nothing is left for the tools.
    Done,
    /// Not for this node (legacy iptables, no usable netlink): the tools write it, on what the
    /// caller knows.
    NotHere,
    /// Refused (by the kernel, because the ruleset moved on since it was read, or because the
    /// case is not a plain one): nothing changed, and the tools write it on a fresh reading.
    Refused,
}

/// xt_comment_info: a NUL-terminated comment of at most 255 bytes in 256.
const COMMENT_LEN: usize = 256;
/// NF_INET_FORWARD, NF_INET_POST_ROUTING; NF_IP_PRI_NAT_SRC (NF_IP6_PRI_NAT_SRC alike).
const HOOK_FORWARD: u32 = 2;
const HOOK_POSTROUTING: u32 = 4;
const PRIORITY_NAT_SRC: i32 = 100;

/// A socket of the calling thread's netns and the generation read on it, where rules of family
/// `v4` may be written here: `iptables-restore` is iptables-nft, and no legacy nat or filter
/// table is loaded (their rules only legacy tools see).
struct View<'a> {
    nl: &'a mut Netfilter,
    family: Family,
    generation: u32,
}

impl View<'_> {
    fn open(v4: bool, nl: &mut Option<Netfilter>) -> Option<View<'_>> {
        let restore = find_in_path(&format!("{}-restore", cmd(v4)))?;
        let tool = std::fs::canonicalize(restore).ok()?;
        if tool.file_name()? != "xtables-nft-multi" {
            return None;
        }
        if legacy_tables(v4)
            .lines()
            .any(|l| matches!(l.trim(), "nat" | "filter"))
        {
            return None;
        }
        let nl = super::socket(nl)?;
        let generation = nl.generation().ok()?;
        let family = if v4 { Family::Ipv4 } else { Family::Ipv6 };
        Some(View {
            nl,
            family,
            generation,
        })
    }

    fn exists(&mut self, table: &str, chain: &str) -> io::Result<bool> {
        self.nl.has_chain(self.family, table, chain)
    }

    /// The rules of `chain`, None if it (or its table) does not exist.
    fn chain(&mut self, table: &str, chain: &str) -> io::Result<Option<Vec<Rule>>> {
        if !self.nl.has_chain(self.family, table, chain)? {
            return Ok(None);
        }
        let rules = self.nl.rules(self.family, table, Some(chain))?;
        Ok(Some(
            rules.into_iter().filter(|r| r.chain == chain).collect(),
        ))
    }

    fn commit(self, changes: &[Change]) -> Outcome {
        let done = changes.is_empty()
            || (self.nl)
                .commit(self.family, Some(self.generation), changes)
                .is_ok();
        if done {
            Outcome::Done
        } else {
            Outcome::Refused
        }
    }
}

/// `-s net` (`source`) or `-d net`, as iptables-nft matches it.
fn address(net: &IpNet, source: bool) -> Vec<RuleExpr> {
    let offset = match (net, source) {
        (IpNet::V4(_), true) => 12,
        (IpNet::V4(_), false) => 16,
        (IpNet::V6(_), true) => 8,
        (IpNet::V6(_), false) => 24,
    };
    let bytes = octets(net.network());
    if net.prefix_len() == 0 {
        return Vec::new();
    }
    let mut exprs = vec![RuleExpr::LoadNetwork {
        offset,
        len: bytes.len() as u32,
    }];
    if net.prefix_len() < net.max_prefix_len() {
        exprs.push(RuleExpr::Mask(octets(net.netmask())));
    }
    exprs.push(RuleExpr::Equals(bytes));
    exprs
}

/// `-m comment --comment text`; None if iptables would refuse it as too long.
fn comment(text: &str) -> Option<RuleExpr> {
    if text.len() >= COMMENT_LEN {
        return None;
    }
    let mut info = text.as_bytes().to_vec();
    info.resize(COMMENT_LEN, 0);
    Some(RuleExpr::XtMatch {
        name: "comment",
        rev: 0,
        info,
    })
}

/// `-j MASQUERADE` (revision 0, no port range): nf_nat_ipv4_multi_range_compat with one range
/// (padded to 8 bytes as xtables aligns it), or nf_nat_range for IPv6.
fn masquerade(v4: bool) -> RuleExpr {
    let info = if v4 {
        let mut info = 1u32.to_ne_bytes().to_vec();
        info.resize(24, 0);
        info
    } else {
        vec![0; 40]
    };
    RuleExpr::XtTarget {
        name: "MASQUERADE",
        rev: 0,
        info,
    }
}

fn ends(mut exprs: Vec<RuleExpr>, verdict: RuleExpr) -> Vec<RuleExpr> {
    exprs.push(RuleExpr::Counter);
    exprs.push(verdict);
    exprs
}

fn add_rule(table: &str, chain: &str, exprs: Vec<RuleExpr>, first: bool) -> Change {
    Change::AddRule {
        table: table.into(),
        chain: chain.into(),
        exprs,
        first,
    }
}

/// The table, `ours` declared in it, and, unless `present`, the built-in chain `chain`, in the
/// order `iptables-restore` makes them (declared chains first).
fn tables_and_chains(table: &str, ours: &[String], chain: &str, present: bool) -> Vec<Change> {
    let mut out = vec![Change::AddTable {
        table: table.into(),
    }];
    for c in ours {
        declare(table, c, &mut out);
    }
    if !present {
        let base = match chain {
            "POSTROUTING" => BaseChain {
                kind: "nat",
                hook: HOOK_POSTROUTING,
                priority: PRIORITY_NAT_SRC,
            },
            _ => BaseChain {
                kind: "filter",
                hook: HOOK_FORWARD,
                priority: 0,
            },
        };
        out.push(Change::AddChain {
            table: table.into(),
            chain: chain.into(),
            base: Some(base),
        });
    }
    out
}

/// A chain of ours, created if absent and emptied: what `:CHAIN - [0:0]` does.
fn declare(table: &str, chain: &str, out: &mut Vec<Change>) {
    out.push(Change::AddChain {
        table: table.into(),
        chain: chain.into(),
        base: None,
    });
    out.push(Change::FlushChain {
        table: table.into(),
        chain: chain.into(),
    });
}

/// The nat rules of class `c` (see the iptables module's table).
fn nat_rules(c: &Class, out: &mut Vec<Change>) -> Option<()> {
    let chain = nat_chain(c);
    for skip in &c.skip {
        let rule = ends(address(skip, false), RuleExpr::Verdict(Verdict::Return));
        out.push(add_rule("nat", &chain, rule, false));
    }
    let masq = vec![RuleExpr::Counter, masquerade(c.is_v4())];
    out.push(add_rule("nat", &chain, masq, false));
    let mut jump = address(&c.source, true);
    jump.push(comment(&jump_tag(c))?);
    let jump = ends(jump, RuleExpr::Verdict(Verdict::Jump(chain)));
    out.push(add_rule("nat", "POSTROUTING", jump, false));
    Some(())
}

/// The two forward accepts of class `c`.
fn forward_rules(c: &Class, out: &mut Vec<Change>) -> Option<()> {
    for source in [true, false] {
        let mut rule = address(&c.source, source);
        rule.push(comment(&accept_tag(c))?);
        let rule = ends(rule, RuleExpr::Verdict(Verdict::Accept));
        out.push(add_rule("filter", FORWARD_CHAIN, rule, false));
    }
    Some(())
}

/// Writes what `iptables-restore` would for the first ADD of `nat` (classes of the iptables
/// backend) and `forward` (classes with `allowForward`) of family `v4` in `tables`, where
/// nothing of ours is in these tables (`untouched`, read after the generation: anything written
/// since makes the kernel refuse the transaction). Refused where something of ours is there.
pub(crate) fn create(
    v4: bool,
    tables: &[&str],
    nat: &[&Class],
    forward: &[&Class],
    nl: &mut Option<Netfilter>,
) -> Outcome {
    let Some(mut view) = View::open(v4, nl) else {
        return Outcome::NotHere;
    };
    if !untouched::chains_clear(view.nl, v4, tables) {
        return Outcome::Refused;
    }
    match creation(&mut view, nat, forward) {
        Ok(Some(changes)) => view.commit(&changes),
        _ => Outcome::Refused,
    }
}

/// The changes of [`create`]; None if iptables would refuse them.
fn creation(
    view: &mut View,
    nat: &[&Class],
    forward: &[&Class],
) -> io::Result<Option<Vec<Change>>> {
    let mut out = Vec::new();
    if !nat.is_empty() {
        let present = view.exists("nat", "POSTROUTING")?;
        let ours: Vec<String> = nat.iter().map(|c| nat_chain(c)).collect();
        out.extend(tables_and_chains("nat", &ours, "POSTROUTING", present));
        for c in nat {
            if nat_rules(c, &mut out).is_none() {
                return Ok(None);
            }
        }
    }
    if !forward.is_empty() {
        let present = view.exists("filter", "FORWARD")?;
        let ours = [FORWARD_CHAIN.to_string()];
        out.extend(tables_and_chains("filter", &ours, "FORWARD", present));
        for c in forward {
            if forward_rules(c, &mut out).is_none() {
                return Ok(None);
            }
        }
        let jump = RuleExpr::Verdict(Verdict::Jump(FORWARD_CHAIN.into()));
        out.push(add_rule("filter", "FORWARD", ends(Vec::new(), jump), true));
    }
    Ok(Some(out))
}

fn jumps_to(rule: &Rule, chain: &str) -> bool {
    rule.exprs
        .iter()
        .any(|e| matches!(e, Expr::Verdict { chain: Some(c), .. } if c == chain))
}

/// Whether `rule` compares an address with `net`'s (either form iptables-nft writes: the whole
/// address, or only the prefix's bytes).
fn mentions(rule: &Rule, net: &IpNet) -> bool {
    let bytes = octets(net.network());
    let prefix = usize::from(net.prefix_len()).div_ceil(8);
    rule.exprs.iter().any(|e| match e {
        Expr::Cmp { data, .. } => {
            data.len() >= prefix && data.len() <= bytes.len() && *data == bytes[..data.len()]
        }
        _ => false,
    })
}

/// The removal of every rule of `rules` (in `chain`) that jumps to `target`.
fn unjump(table: &str, chain: &str, rules: &[Rule], target: &str, out: &mut Vec<Change>) {
    for r in rules.iter().filter(|r| jumps_to(r, target)) {
        out.push(Change::DeleteRule {
            table: table.into(),
            chain: chain.into(),
            handle: r.handle,
        });
    }
}

/// The removal of chain `chain` with its rules, if it exists.
fn undeclare(table: &str, chain: &str, exists: bool, out: &mut Vec<Change>) {
    if exists {
        out.push(Change::FlushChain {
            table: table.into(),
            chain: chain.into(),
        });
        out.push(Change::DeleteChain {
            table: table.into(),
            chain: chain.into(),
        });
    }
}

/// Removes what `iptables-restore` would on the last DEL of `nat` and `forward` classes of
/// family `v4`, where no other class keeps forward accepts (`forward_kept` false) and our
/// shared forward chain holds no more than the leaving classes' accepts.
pub(crate) fn remove(
    v4: bool,
    nat: &[&Class],
    forward: &[&Class],
    forward_kept: bool,
    nl: &mut Option<Netfilter>,
) -> Outcome {
    if !forward.is_empty() && forward_kept {
        return Outcome::Refused;
    }
    let Some(mut view) = View::open(v4, nl) else {
        return Outcome::NotHere;
    };
    match removal(&mut view, nat, forward) {
        Ok(Some(changes)) => view.commit(&changes),
        _ => Outcome::Refused,
    }
}

/// The changes of [`remove`]; None if they would take more than the leaving classes' rules.
fn removal(view: &mut View, nat: &[&Class], forward: &[&Class]) -> io::Result<Option<Vec<Change>>> {
    let mut out = Vec::new();
    if !nat.is_empty() {
        let postrouting = view.chain("nat", "POSTROUTING")?.unwrap_or_default();
        for c in nat {
            let chain = nat_chain(c);
            unjump("nat", "POSTROUTING", &postrouting, &chain, &mut out);
            let exists = view.exists("nat", &chain)?;
            undeclare("nat", &chain, exists, &mut out);
        }
    }
    if !forward.is_empty() {
        let shared = view.chain("filter", FORWARD_CHAIN)?;
        let leaving = |r: &Rule| forward.iter().any(|c| mentions(r, &c.source));
        if !shared.as_deref().unwrap_or_default().iter().all(leaving) {
            return Ok(None);
        }
        let top = view.chain("filter", "FORWARD")?.unwrap_or_default();
        unjump("filter", "FORWARD", &top, FORWARD_CHAIN, &mut out);
        undeclare("filter", FORWARD_CHAIN, shared.is_some(), &mut out);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
