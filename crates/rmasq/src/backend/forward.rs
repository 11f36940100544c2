//! The forward accepts of classes with `allowForward`, in iptables' filter table whatever the
//! backend: a DROP policy (Docker's) lives in iptables' FORWARD chain, and an nftables `accept`
//! in another table cannot override it. One shared chain, jumped to from the top of FORWARD:
//!
//! ```text
//! -t filter -I FORWARD -j RMASQ-FORWARD
//! -t filter -A RMASQ-FORWARD -s 10.1.0.0/24 -m comment --comment rmasq:<id> -j ACCEPT
//! -t filter -A RMASQ-FORWARD -d 10.1.0.0/24 -m comment --comment rmasq:<id> -j ACCEPT
//! ```
//!
//! Nothing is done where the node has no iptables at all: then nothing can have set a DROP
//! policy there.

use cni_types::error::Result;

use super::xtables::{cmd, in_path, missing, same_words, Batch, Saved};
use crate::class::Class;

pub(crate) const FORWARD_CHAIN: &str = "RMASQ-FORWARD";
const FORWARD_JUMP: &str = "-j RMASQ-FORWARD";

/// The comment of `c`'s accepts.
pub(super) fn accept_tag(c: &Class) -> String {
    format!("rmasq:{}", c.id)
}

/// The class's two accepts: from and to its subnet.
pub(crate) fn forward_rules(c: &Class) -> [String; 2] {
    let tag = format!("-m comment --comment {} -j ACCEPT", accept_tag(c));
    [
        format!("-s {} {tag}", c.source),
        format!("-d {} {tag}", c.source),
    ]
}

/// Whether the forward accepts of family `v4` are kept at all (iptables is installed).
pub(crate) fn applies(v4: bool) -> bool {
    in_path(cmd(v4))
}

/// Adds to `batch` what makes the accepts of `ensure` present (at the top of FORWARD) and those
/// of `drop` gone, the shared chain and its jump with them once no accept is left. All classes
/// are of one family, the one `saved` was read from.
pub(crate) fn plan_forward(ensure: &[&Class], drop: &[&Class], saved: &Saved, batch: &mut Batch) {
    let add: Vec<String> = ensure.iter().flat_map(|c| forward_rules(c)).collect();
    let remove: Vec<String> = drop.iter().flat_map(|c| forward_rules(c)).collect();
    let exists = saved.has_chain("filter", FORWARD_CHAIN);
    let have: Vec<&str> = saved.rules("filter", FORWARD_CHAIN).collect();
    let gone =
        |r: &str| remove.iter().any(|x| same_words(x, r)) && !add.iter().any(|x| same_words(x, r));
    let left = have.iter().filter(|r| !gone(r)).count();
    let adding: Vec<&String> = add
        .iter()
        .filter(|r| !saved.has_rule("filter", FORWARD_CHAIN, r))
        .collect();
    if !exists && adding.is_empty() {
        return;
    }
    if !exists {
        batch.push("filter", format!(":{FORWARD_CHAIN} - [0:0]"));
    }
    for r in have.iter().filter(|r| gone(r)) {
        batch.push("filter", format!("-D {FORWARD_CHAIN} {r}"));
    }
    for r in &adding {
        batch.push("filter", format!("-A {FORWARD_CHAIN} {r}"));
    }
    let jumps = saved
        .rules("filter", "FORWARD")
        .filter(|r| same_words(r, FORWARD_JUMP))
        .count();
    if left + adding.len() == 0 {
        for _ in 0..jumps {
            batch.push("filter", format!("-D FORWARD {FORWARD_JUMP}"));
        }
        batch.push("filter", format!("-X {FORWARD_CHAIN}"));
    } else if jumps == 0 {
        batch.push("filter", format!("-I FORWARD 1 {FORWARD_JUMP}"));
    }
}

/// CHECK of the class's accepts and the jump to them, in `saved` (its family's filter table).
pub(crate) fn check_forward(c: &Class, saved: &Saved) -> Result<()> {
    if !saved.has_rule("filter", "FORWARD", FORWARD_JUMP) {
        return Err(missing(c, "filter", "FORWARD", FORWARD_JUMP));
    }
    for rule in forward_rules(c) {
        if !saved.has_rule("filter", FORWARD_CHAIN, &rule) {
            return Err(missing(c, "filter", FORWARD_CHAIN, &rule));
        }
    }
    Ok(())
}
