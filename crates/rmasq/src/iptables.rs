//! iptables backend (through the `iptables` crate, which passes `--wait` so concurrent callers
//! queue on the xtables lock). Rules are keyed on the class's pod subnet, not on pod addresses,
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
//! at most two `iptables -C` (a cheap check that repairs a flushed table) instead of an ipset
//! call. Sources in the subnet that belong to no pod are masqueraded too, which is harmless.
//! The forward part also serves the nftables backend: a DROP policy lives in iptables' FORWARD.

use std::net::IpAddr;

use cni_types::error::{CniError, Result, CHECK_MISMATCH, FIREWALL_FAILURE, PLUGIN_NOT_AVAILABLE};
use iptables::IPTables;

use crate::backend::{in_path, Backend, Plan};
use crate::class::{BackendKind, Class};

pub const FORWARD_CHAIN: &str = "RMASQ-FORWARD";
const FORWARD_JUMP: &str = "-j RMASQ-FORWARD";

pub struct Iptables;

fn cmd(v4: bool) -> &'static str {
    if v4 {
        "iptables"
    } else {
        "ip6tables"
    }
}

/// Built directly rather than with `iptables::new`, which runs `iptables --version` on every
/// call; `-C` and `--wait` exist since 1.4.20 (2013). Not `is_numeric`: the crate then passes
/// `-n` to `-S`, which iptables refuses. We never use `-L`, the one listing that resolves names.
fn ipt(v4: bool) -> IPTables {
    IPTables {
        cmd: cmd(v4),
        has_check: true,
        has_wait: true,
        is_numeric: false,
    }
}

/// The `-S` listing of `chain`, or None if the chain does not exist.
fn list_chain(t: &IPTables, table: &str, chain: &str) -> Result<Option<Vec<String>>> {
    let out = run(t.execute(table, &format!("-S {chain}")), || {
        format!("{} -t {table} -S {chain}", t.cmd)
    })?;
    if !out.status.success() {
        return Ok(None);
    }
    // -S quotes comments ("rmasq:x"); ours hold no spaces, so unquoting is exact.
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.replace('"', ""))
            .collect(),
    ))
}

pub fn nat_chain(c: &Class) -> String {
    format!("RMASQ-{}", c.id)
}

pub fn jump_rule(c: &Class) -> String {
    format!(
        "-s {} -m comment --comment rmasq:{} -j {}",
        c.source,
        c.network,
        nat_chain(c)
    )
}

pub fn class_rules(c: &Class) -> Vec<String> {
    let mut rules: Vec<String> = c.skip.iter().map(|n| format!("-d {n} -j RETURN")).collect();
    rules.push("-j MASQUERADE".into());
    rules
}

pub fn forward_rules(c: &Class) -> [String; 2] {
    let tag = format!("-m comment --comment rmasq:{} -j ACCEPT", c.id);
    [
        format!("-s {} {tag}", c.source),
        format!("-d {} {tag}", c.source),
    ]
}

fn fail(what: String) -> impl FnOnce(Box<dyn std::error::Error>) -> CniError {
    move |e| {
        CniError::new(
            FIREWALL_FAILURE,
            format!("{what}: {}", e.to_string().trim()),
        )
    }
}

fn run<T>(
    r: std::result::Result<T, Box<dyn std::error::Error>>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    r.map_err(|e| fail(what())(e))
}

fn ensure_chain(t: &IPTables, table: &str, chain: &str) -> Result<()> {
    if list_chain(t, table, chain)?.is_none() {
        run(t.new_chain(table, chain), || {
            format!("{} -t {table} -N {chain}", t.cmd)
        })?;
    }
    Ok(())
}

/// True if `chain` holds exactly `rules`, in order.
fn has_exactly(t: &IPTables, table: &str, chain: &str, rules: &[String]) -> Result<bool> {
    let Some(lines) = list_chain(t, table, chain)? else {
        return Ok(false);
    };
    let have: Vec<&String> = lines.iter().filter(|l| l.starts_with("-A ")).collect();
    Ok(have.len() == rules.len()
        && have
            .iter()
            .zip(rules)
            .all(|(h, r)| **h == format!("-A {chain} {r}")))
}

fn append_if_missing(t: &IPTables, table: &str, chain: &str, rule: &str) -> Result<()> {
    let what = || format!("{} -t {table} -A {chain} {rule}", t.cmd);
    if !run(t.exists(table, chain, rule), what)? {
        run(t.append(table, chain, rule), what)?;
    }
    Ok(())
}

fn delete_if_present(t: &IPTables, table: &str, chain: &str, rule: &str) -> Result<()> {
    let what = || format!("{} -t {table} -D {chain} {rule}", t.cmd);
    if run(t.exists(table, chain, rule), what)? {
        run(t.delete(table, chain, rule), what)?;
    }
    Ok(())
}

fn ensure_class(c: &Class, fresh: bool) -> Result<()> {
    let t = ipt(c.is_v4());
    let chain = nat_chain(c);
    let jump = jump_rule(c);
    // An existing class needs only a look (two execs): its rules are rewritten if a firewall
    // reload, or a person, changed them.
    if !fresh
        && has_exactly(&t, "nat", &chain, &class_rules(c))?
        && run(t.exists("nat", "POSTROUTING", &jump), || jump.clone())?
    {
        return Ok(());
    }
    ensure_chain(&t, "nat", &chain)?;
    run(t.flush_chain("nat", &chain), || {
        format!("{} -t nat -F {chain}", t.cmd)
    })?;
    for rule in class_rules(c) {
        run(t.append("nat", &chain, &rule), || {
            format!("{} -t nat -A {chain} {rule}", t.cmd)
        })?;
    }
    append_if_missing(&t, "nat", "POSTROUTING", &jump)
}

fn drop_class(c: &Class) -> Result<()> {
    let t = ipt(c.is_v4());
    let chain = nat_chain(c);
    delete_if_present(&t, "nat", "POSTROUTING", &jump_rule(c))?;
    if list_chain(&t, "nat", &chain)?.is_some() {
        run(t.flush_chain("nat", &chain), || {
            format!("{} -t nat -F {chain}", t.cmd)
        })?;
        run(t.delete_chain("nat", &chain), || {
            format!("{} -t nat -X {chain}", t.cmd)
        })?;
    }
    Ok(())
}

/// Accepts forwarding from and to the class's subnet, at the top of FORWARD. Skipped when the
/// node has no iptables at all: then nothing can have set a DROP policy there.
pub fn ensure_forward(c: &Class, fresh: bool) -> Result<()> {
    if !in_path(cmd(c.is_v4())) {
        return Ok(());
    }
    let t = ipt(c.is_v4());
    let rules = forward_rules(c);
    if !fresh
        && list_chain(&t, "filter", FORWARD_CHAIN)?.is_some_and(|lines| {
            rules
                .iter()
                .all(|r| lines.contains(&format!("-A {FORWARD_CHAIN} {r}")))
        })
        && run(t.exists("filter", "FORWARD", FORWARD_JUMP), || {
            FORWARD_JUMP.into()
        })?
    {
        return Ok(());
    }
    ensure_chain(&t, "filter", FORWARD_CHAIN)?;
    for rule in &rules {
        append_if_missing(&t, "filter", FORWARD_CHAIN, rule)?;
    }
    if !run(t.exists("filter", "FORWARD", FORWARD_JUMP), || {
        FORWARD_JUMP.into()
    })? {
        run(t.insert("filter", "FORWARD", FORWARD_JUMP, 1), || {
            format!("{} -t filter -I FORWARD 1 {FORWARD_JUMP}", t.cmd)
        })?;
    }
    Ok(())
}

/// Removes the class's forward accepts, and the shared chain once it is empty.
pub fn drop_forward(c: &Class) -> Result<()> {
    if !in_path(cmd(c.is_v4())) {
        return Ok(());
    }
    let t = ipt(c.is_v4());
    if list_chain(&t, "filter", FORWARD_CHAIN)?.is_none() {
        return Ok(());
    }
    for rule in forward_rules(c) {
        delete_if_present(&t, "filter", FORWARD_CHAIN, &rule)?;
    }
    let left = list_chain(&t, "filter", FORWARD_CHAIN)?.unwrap_or_default();
    if !left.iter().any(|l| l.starts_with("-A ")) {
        delete_if_present(&t, "filter", "FORWARD", FORWARD_JUMP)?;
        run(t.delete_chain("filter", FORWARD_CHAIN), || {
            format!("{} -t filter -X {FORWARD_CHAIN}", t.cmd)
        })?;
    }
    Ok(())
}

fn missing(c: &Class, table: &str, chain: &str, rule: &str) -> CniError {
    CniError::new(
        CHECK_MISMATCH,
        format!(
            "{} rule missing: -t {table} -A {chain} {rule} (network {}): run DEL and ADD again",
            cmd(c.is_v4()),
            c.network
        ),
    )
}

pub fn check_forward(c: &Class) -> Result<()> {
    if !in_path(cmd(c.is_v4())) {
        return Ok(());
    }
    let t = ipt(c.is_v4());
    if !run(t.exists("filter", "FORWARD", FORWARD_JUMP), || {
        FORWARD_JUMP.into()
    })? {
        return Err(missing(c, "filter", "FORWARD", FORWARD_JUMP));
    }
    for rule in forward_rules(c) {
        if !run(t.exists("filter", FORWARD_CHAIN, &rule), || rule.clone())? {
            return Err(missing(c, "filter", FORWARD_CHAIN, &rule));
        }
    }
    Ok(())
}

impl Backend for Iptables {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    fn apply(&self, plan: &Plan) -> Result<()> {
        for c in &plan.drop {
            drop_class(c)?;
            if c.allow_forward {
                drop_forward(c)?;
            }
        }
        for (c, fresh) in &plan.ensure {
            ensure_class(c, *fresh)?;
            if c.allow_forward {
                ensure_forward(c, *fresh)?;
            }
        }
        Ok(())
    }

    fn check(&self, c: &Class, _addr: IpAddr) -> Result<()> {
        let t = ipt(c.is_v4());
        let chain = nat_chain(c);
        let jump = jump_rule(c);
        if !run(t.exists("nat", "POSTROUTING", &jump), || jump.clone())? {
            return Err(missing(c, "nat", "POSTROUTING", &jump));
        }
        for rule in class_rules(c) {
            if !run(t.exists("nat", &chain, &rule), || rule.clone())? {
                return Err(missing(c, "nat", &chain, &rule));
            }
        }
        if c.allow_forward {
            check_forward(c)?;
        }
        Ok(())
    }

    /// Lists nat POSTROUTING: fails if the binary, the kernel modules or the lock are unusable.
    fn status(&self) -> Result<()> {
        for v4 in [true, false] {
            let t = ipt(v4);
            let problem = match t.execute("nat", "-S POSTROUTING") {
                Ok(out) if out.status.success() => continue,
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            return Err(CniError::new(
                PLUGIN_NOT_AVAILABLE,
                format!("{} is not usable: {problem}", t.cmd),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::Options;
    use ipnet::IpNet;

    #[test]
    fn rules_are_keyed_on_the_subnet() {
        let a: IpNet = "fd00:1::5/64".parse().unwrap();
        let c = Class::new(BackendKind::Iptables, "pods", a, &[a], &Options::default());
        assert_eq!(
            jump_rule(&c),
            format!(
                "-s fd00:1::/64 -m comment --comment rmasq:pods -j RMASQ-{}",
                c.id
            )
        );
        assert!(
            nat_chain(&c).len() <= 28,
            "iptables chain names are at most 28 chars"
        );
        assert_eq!(
            class_rules(&c),
            [
                "-d fd00:1::/64 -j RETURN",
                "-d fe80::/10 -j RETURN",
                "-d ff00::/8 -j RETURN",
                "-j MASQUERADE"
            ]
        );
        let [from, to] = forward_rules(&c);
        assert!(from.starts_with("-s fd00:1::/64 ") && from.ends_with("-j ACCEPT"));
        assert!(to.starts_with("-d fd00:1::/64 "));
    }
}
