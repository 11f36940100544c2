//! The forward accepts of classes with `allowForward`, in iptables' filter table whatever the
//! backend: a DROP policy (Docker's) lives in iptables' FORWARD chain, and an nftables `accept`
//! in another table cannot override it. One shared chain, jumped to from the top of FORWARD:
//!
//! ```text
//! -t filter -I FORWARD -j RMASQ-FORWARD
//! -t filter -A RMASQ-FORWARD -s 10.1.0.0/24 -m comment --comment rmasq:<id> -j ACCEPT
//! -t filter -A RMASQ-FORWARD -d 10.1.0.0/24 -m comment --comment rmasq:<id> -j ACCEPT
//! ```

use cni_types::error::Result;

use super::iptables_cmd::{
    append_if_missing, cmd, delete_if_present, ensure_chain, in_path, ipt, list_chain, missing, run,
};
use crate::class::Class;

pub(crate) const FORWARD_CHAIN: &str = "RMASQ-FORWARD";
const FORWARD_JUMP: &str = "-j RMASQ-FORWARD";

/// The class's two accepts: from and to its subnet.
pub(crate) fn forward_rules(c: &Class) -> [String; 2] {
    let tag = format!("-m comment --comment rmasq:{} -j ACCEPT", c.id);
    [
        format!("-s {} {tag}", c.source),
        format!("-d {} {tag}", c.source),
    ]
}

/// Accepts forwarding from and to the class's subnet, at the top of FORWARD. Skipped when the
/// node has no iptables at all: then nothing can have set a DROP policy there.
pub(crate) fn ensure_forward(c: &Class, fresh: bool) -> Result<()> {
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
pub(crate) fn drop_forward(c: &Class) -> Result<()> {
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

pub(crate) fn check_forward(c: &Class) -> Result<()> {
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
