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
//! Forwarding accepts go to iptables (see `forward`): an nftables `accept` in our
//! table cannot override a DROP policy in another table, which is where nodes have it.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::process::{Command, Stdio};

use cni_netlink::netfilter::{ElemOp, Family, Netfilter};
use cni_types::error::{CniError, Result, CHECK_MISMATCH, FIREWALL_FAILURE, PLUGIN_NOT_AVAILABLE};

use super::iptables::{apply_plan, check_class};
use super::nft_rules::{chain, verify, TABLE};
use super::octets;
use super::plan::{Backend, Plan};
use crate::class::Class;

pub(crate) struct Nftables;

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
fn script(plan: &Plan) -> String {
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
fn check_listing(listing: &str, class: &Class, addr: IpAddr) -> Result<()> {
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

/// The hot path of a plan whose classes all exist (nothing to create or drop): checks over
/// netlink that the table holds exactly the rules and skip sets of `plan.live`, then adds
/// `plan.add` and removes `plan.remove` as set elements in one transaction. Any error (ENOENT
/// when the table or a set is missing, rules that differ, no nf_tables at all) means: run
/// [`Nftables::apply`] instead, which writes everything again; nothing was changed then.
///
/// `nl` is the call's one socket: closing a netfilter socket waits for nf_tables' deferred
/// frees, so fewer sockets mean fewer waits.
pub(crate) fn update_elements(nl: &mut Netfilter, plan: &Plan) -> io::Result<()> {
    if plan.live.is_empty() || !plan.drop.is_empty() || plan.ensure.iter().any(|(_, f)| *f) {
        return Err(io::Error::other("classes are created or removed"));
    }
    verify(nl, &plan.live)?;
    let mut ops: Vec<(ElemOp, String, Vec<u8>)> = Vec::new();
    for (c, addr) in &plan.add {
        ops.push((ElemOp::Add, format!("{}_pods", chain(c)), octets(*addr)));
    }
    for (c, addr) in &plan.remove {
        let set = format!("{}_pods", chain(c));
        ops.push((ElemOp::Add, set.clone(), octets(*addr)));
        ops.push((ElemOp::Delete, set, octets(*addr)));
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

impl Backend for Nftables {
    fn apply(&self, plan: &Plan, nl: &mut Option<Netfilter>) -> Result<()> {
        let text = script(plan);
        nft(&["-f", "-"], Some(&text)).map_err(|e| e.with_details(text))?;
        // Forward accepts: the class's first pod adds them, the last one's DEL removes them;
        // ADD re-adds them if something deleted them.
        apply_plan(plan, nl)
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
        // The forward accepts, if the class has them.
        check_class(class)
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
mod tests;
