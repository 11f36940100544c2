//! iptables backend (the `iptables`/`ip6tables` commands with `--wait`, so concurrent callers
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
//! no `iptables` at all once its class exists. Sources in the subnet that belong to no pod are
//! masqueraded too, which is harmless. The forward part also serves the nftables backend: a DROP
//! policy lives in iptables' FORWARD.
//!
//! The forward accepts are in `forward`, the commands in `iptables_cmd`; how an ADD of an
//! existing class avoids running `iptables` is in the fingerprint module.

use std::net::IpAddr;

use cni_types::error::{CniError, Result, PLUGIN_NOT_AVAILABLE};

use super::forward::{check_forward, drop_forward, ensure_forward, FORWARD_CHAIN};
use super::iptables_cmd::{
    append_if_missing, cmd, delete_if_present, ensure_chain, has_exactly, in_path, ipt, list_chain,
    missing, run,
};
use super::plan::{Backend, Plan};
use crate::class::{BackendKind, Class};

pub(crate) struct Iptables;

fn nat_chain(c: &Class) -> String {
    format!("RMASQ-{}", c.id)
}

fn jump_rule(c: &Class) -> String {
    format!(
        "-s {} -m comment --comment rmasq:{} -j {}",
        c.source,
        c.network,
        nat_chain(c)
    )
}

fn class_rules(c: &Class) -> Vec<String> {
    let mut rules: Vec<String> = c.skip.iter().map(|n| format!("-d {n} -j RETURN")).collect();
    rules.push("-j MASQUERADE".into());
    rules
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

/// Does `c` have rules in iptables? Its nat rules with the iptables backend; its forward
/// accepts with `allowForward` where iptables is installed.
pub(crate) fn has_rules(c: &Class) -> bool {
    c.backend == BackendKind::Iptables || (c.allow_forward && in_path(cmd(c.is_v4())))
}

/// Checks the iptables rules of an existing class (execs `iptables`) and repairs what differs,
/// as the class's first ADD would have written them.
pub(crate) fn ensure_existing(c: &Class) -> Result<()> {
    if c.backend == BackendKind::Iptables {
        ensure_class(c, false)?;
    }
    if c.allow_forward {
        ensure_forward(c, false)?;
    }
    Ok(())
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
mod tests;
