//! iptables backend: per family and call, one `iptables-save` to see what is there and one
//! atomic `iptables-restore --noflush --wait` (queued on the xtables lock) for every change
//! (`xtables`). Rules are keyed on the class's pod subnet, not on pod addresses,
//! so they exist once per class; the state dir counts the attachments of each class, and only
//! the first ADD and the last DEL of a class touch the rules:
//!
//! ```text
//! -t nat -A POSTROUTING -s 10.1.0.0/24 -m comment --comment rmasq:<network> -j RMASQ-<id>
//! -t nat -A RMASQ-<id> -d 10.1.0.0/24 -j RETURN          # one per destination to skip
//! -t nat -A RMASQ-<id> -j MASQUERADE
//! -t filter -I FORWARD -j RMASQ-FORWARD                  # allowForward, shared by all classes
//! -t filter -A RMASQ-FORWARD -s 10.1.0.0/24 -m comment --comment rmasq:<id> -j ACCEPT
//! -t filter -A RMASQ-FORWARD -d 10.1.0.0/24 -m comment --comment rmasq:<id> -j ACCEPT
//! ```
//!
//! Subnet keys rather than ipset: no extra package or kernel module, and a pod's ADD or DEL runs
//! no `iptables` at all once its class exists. Sources in the subnet that belong to no pod are
//! masqueraded too, which is harmless. The forward part also serves the nftables backend: a DROP
//! policy lives in iptables' FORWARD.
//!
//! The forward accepts are in `forward`, the tools in `xtables`; how an ADD of an
//! existing class avoids running `iptables` is in the fingerprint module, and how a class's
//! first ADD and last DEL avoid it on iptables-nft nodes in `native`.

use std::net::IpAddr;

use cni_netlink::netfilter::Netfilter;
use cni_types::error::{CniError, Result, PLUGIN_NOT_AVAILABLE};

use super::forward::{applies as forward_applies, check_forward, plan_forward, FORWARD_CHAIN};
use super::native::{self, Outcome};
use super::plan::{Backend, Plan};
use super::untouched;
use super::xtables::{cmd, in_path, missing, same_words, Batch, Saved};
use crate::class::{BackendKind, Class};

pub(crate) struct Iptables;

pub(super) fn nat_chain(c: &Class) -> String {
    format!("RMASQ-{}", c.id)
}

/// The comment of the POSTROUTING jump to `c`'s chain.
pub(super) fn jump_tag(c: &Class) -> String {
    format!("rmasq:{}", c.network)
}

fn jump_rule(c: &Class) -> String {
    format!(
        "-s {} -m comment --comment {} -j {}",
        c.source,
        jump_tag(c),
        nat_chain(c)
    )
}

fn class_rules(c: &Class) -> Vec<String> {
    let mut rules: Vec<String> = c.skip.iter().map(|n| format!("-d {n} -j RETURN")).collect();
    rules.push("-j MASQUERADE".into());
    rules
}

/// Adds to `batch` what makes `c`'s nat chain hold exactly its rules, jumped to from
/// POSTROUTING; nothing if it does already (a firewall reload, or a person, may have changed it).
fn ensure_class(c: &Class, saved: &Saved, batch: &mut Batch) {
    let chain = nat_chain(c);
    let jump = jump_rule(c);
    let rules = class_rules(c);
    let have: Vec<&str> = saved.rules("nat", &chain).collect();
    let exact = have.len() == rules.len() && have.iter().zip(&rules).all(|(h, r)| same_words(h, r));
    if !exact {
        // Declared, the chain is created, or flushed if it exists.
        batch.push("nat", format!(":{chain} - [0:0]"));
        for rule in rules {
            batch.push("nat", format!("-A {chain} {rule}"));
        }
    }
    if !saved.has_rule("nat", "POSTROUTING", &jump) {
        batch.push("nat", format!("-A POSTROUTING {jump}"));
    }
}

/// Adds to `batch` the removal of `c`'s jumps and nat chain, where they exist.
fn drop_class(c: &Class, saved: &Saved, batch: &mut Batch) {
    let chain = nat_chain(c);
    let jump = jump_rule(c);
    for _ in saved
        .rules("nat", "POSTROUTING")
        .filter(|r| same_words(r, &jump))
    {
        batch.push("nat", format!("-D POSTROUTING {jump}"));
    }
    if saved.has_chain("nat", &chain) {
        batch.push("nat", format!("-F {chain}"));
        batch.push("nat", format!("-X {chain}"));
    }
}

/// The iptables tables of family `v4` to read and write: nat for classes of the iptables
/// backend, filter for forward accepts (where iptables is installed).
fn tables(v4: bool, nat: bool, forward: bool) -> Vec<&'static str> {
    let mut t = Vec::new();
    if nat {
        t.push("nat");
    }
    if forward && forward_applies(v4) {
        t.push("filter");
    }
    t
}

/// Applies the iptables part of a call for each family: one read, one atomic write. The nat
/// rules go only for classes of the iptables backend; the forward accepts for any with
/// `allowForward`.
///
/// A first ADD or a last DEL goes to nf_tables directly where it can (`native`); `forward_kept`
/// says whether a class of the family keeps forward accepts after the call.
pub(crate) fn apply_family(
    v4: bool,
    ensure: &[&Class],
    drop: &[&Class],
    forward_kept: bool,
    nl: &mut Option<Netfilter>,
) -> Result<()> {
    let all = || ensure.iter().chain(drop);
    let nat = all().any(|c| c.backend == BackendKind::Iptables);
    let forward = all().any(|c| c.allow_forward);
    let tables = tables(v4, nat, forward);
    if tables.is_empty() {
        return Ok(());
    }
    let iptables = |c: &&&Class| c.backend == BackendKind::Iptables;
    let filter = tables.contains(&"filter");
    // A first pod's ADD on a node without our rules needs no process where iptables is
    // iptables-nft (`native`), and no save elsewhere (`untouched`).
    let saved = if drop.is_empty() {
        let (nat, forward) = (with_nat(ensure), with_forward_if(filter, ensure));
        match native::create(v4, &tables, &nat, &forward, nl) {
            Outcome::Done => return Ok(()),
            Outcome::NotHere if untouched::nothing_of_ours(v4, &tables, nl) => Saved::empty(),
            Outcome::NotHere | Outcome::Refused => Saved::read(v4, &tables)?,
        }
    } else if ensure.is_empty()
        && native::remove(
            v4,
            &with_nat(drop),
            &with_forward_if(filter, drop),
            forward_kept,
            nl,
        ) == Outcome::Done
    {
        return Ok(());
    } else {
        Saved::read(v4, &tables)?
    };
    let mut batch = Batch::default();
    for c in drop.iter().filter(iptables) {
        drop_class(c, &saved, &mut batch);
    }
    for c in ensure.iter().filter(iptables) {
        ensure_class(c, &saved, &mut batch);
    }
    if tables.contains(&"filter") {
        plan_forward(
            &with_forward(ensure),
            &with_forward(drop),
            &saved,
            &mut batch,
        );
    }
    batch.apply(v4)
}

fn with_nat<'a>(classes: &[&'a Class]) -> Vec<&'a Class> {
    (classes.iter().copied())
        .filter(|c| c.backend == BackendKind::Iptables)
        .collect()
}

fn with_forward_if<'a>(filter: bool, classes: &[&'a Class]) -> Vec<&'a Class> {
    if filter {
        with_forward(classes)
    } else {
        Vec::new()
    }
}

fn with_forward<'a>(classes: &[&'a Class]) -> Vec<&'a Class> {
    classes
        .iter()
        .copied()
        .filter(|c| c.allow_forward)
        .collect()
}

/// [`apply_family`] for every family of `plan`'s classes.
pub(crate) fn apply_plan(plan: &Plan, nl: &mut Option<Netfilter>) -> Result<()> {
    for v4 in [true, false] {
        let ensure: Vec<&Class> = plan
            .ensure
            .iter()
            .map(|(c, _)| c)
            .filter(|c| c.is_v4() == v4)
            .collect();
        let drop: Vec<&Class> = plan.drop.iter().filter(|c| c.is_v4() == v4).collect();
        let forward_kept = (plan.live.iter())
            .chain(plan.ensure.iter().map(|(c, _)| c))
            .any(|c| c.allow_forward && c.is_v4() == v4);
        if !ensure.is_empty() || !drop.is_empty() {
            apply_family(v4, &ensure, &drop, forward_kept, nl)?;
        }
    }
    Ok(())
}

/// Does `c` have rules in iptables? Its nat rules with the iptables backend; its forward
/// accepts with `allowForward` where iptables is installed.
pub(crate) fn has_rules(c: &Class) -> bool {
    c.backend == BackendKind::Iptables || (c.allow_forward && in_path(cmd(c.is_v4())))
}

/// Checks the iptables rules of an existing class (one `iptables-save`) and repairs what differs
/// (one `iptables-restore`),
/// as the class's first ADD would have written them.
pub(crate) fn ensure_existing(c: &Class, nl: &mut Option<Netfilter>) -> Result<()> {
    apply_family(c.is_v4(), &[c], &[], c.allow_forward, nl)
}

/// The (table, chain) pairs holding `c`'s iptables rules.
pub(crate) fn chains(c: &Class) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if c.backend == BackendKind::Iptables {
        out.push(("nat", "POSTROUTING".to_string()));
        out.push(("nat", nat_chain(c)));
    }
    if c.allow_forward {
        out.push(("filter", "FORWARD".to_string()));
        out.push(("filter", FORWARD_CHAIN.to_string()));
    }
    out
}

impl Backend for Iptables {
    fn apply(&self, plan: &Plan, nl: &mut Option<Netfilter>) -> Result<()> {
        apply_plan(plan, nl)
    }

    fn check(&self, c: &Class, _addr: IpAddr) -> Result<()> {
        check_class(c)
    }

    /// Lists nat POSTROUTING: fails if the binary, the kernel modules or the lock are unusable.
    fn status(&self) -> Result<()> {
        for v4 in [true, false] {
            let out = std::process::Command::new(cmd(v4))
                .args(["-t", "nat", "-S", "POSTROUTING", "--wait"])
                .stdin(std::process::Stdio::null())
                .output();
            let problem = match out {
                Ok(out) if out.status.success() => continue,
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            return Err(CniError::new(
                PLUGIN_NOT_AVAILABLE,
                format!("{} is not usable: {problem}", cmd(v4)),
            ));
        }
        Ok(())
    }
}

/// CHECK of `c`'s iptables rules (nat rules with the iptables backend, forward accepts with
/// `allowForward`), from one `iptables-save`.
pub(crate) fn check_class(c: &Class) -> Result<()> {
    let v4 = c.is_v4();
    let tables = tables(v4, c.backend == BackendKind::Iptables, c.allow_forward);
    if tables.is_empty() {
        return Ok(());
    }
    let saved = Saved::read(v4, &tables)?;
    if c.backend == BackendKind::Iptables {
        let chain = nat_chain(c);
        let jump = jump_rule(c);
        if !saved.has_rule("nat", "POSTROUTING", &jump) {
            return Err(missing(c, "nat", "POSTROUTING", &jump));
        }
        for rule in class_rules(c) {
            if !saved.has_rule("nat", &chain, &rule) {
                return Err(missing(c, "nat", &chain, &rule));
            }
        }
    }
    if tables.contains(&"filter") {
        check_forward(c, &saved)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
