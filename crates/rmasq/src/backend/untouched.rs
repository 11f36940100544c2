//! A class's first pod without `iptables-save`. On an empty node every first ADD of a class
//! runs `iptables-save` to see what is there before its `iptables-restore`; where nf_tables shows
//! that nothing of ours is in the chains the restore adds to, what the save would say changes
//! nothing (our chains are declared, so created or emptied, and the rest only appended), and the
//! save is skipped. Buys one process per family on a node's first pod (about 2.5 ms of an ADD of
//! 12 here, on any kernel: it is one fork, exec and dynamic link less).
//!
//! Read over netlink: only the chains the batch appends to (nat POSTROUTING, filter FORWARD and
//! RMASQ-FORWARD). Any doubt (legacy iptables tables loaded, a read that fails, any rule jumping
//! to a chain of ours or in our shared chain) and the save runs as before. The same check
//! ([`chains_clear`]) decides whether `native` may write a first ADD without any tool.

use std::io;

use cni_netlink::netfilter::{Family, Netfilter, Rule};

use super::forward::FORWARD_CHAIN;
use super::xtables::legacy_tables;

/// True when nothing of rmasq's is in `tables` (of `nat`, `filter`) of family `v4`, so that an
/// empty `iptables-save` stands for the real one.
pub(crate) fn nothing_of_ours(v4: bool, tables: &[&str], nl: &mut Option<Netfilter>) -> bool {
    // Legacy tables are not in nf_tables: only a save can read them.
    if legacy_tables(v4)
        .lines()
        .any(|l| tables.contains(&l.trim()))
    {
        return false;
    }
    match super::socket(nl) {
        Some(nl) => chains_clear(nl, v4, tables),
        None => false,
    }
}

/// True when nf_tables holds nothing of rmasq's in the chains of `tables` a first ADD appends to
/// (legacy tables aside).
pub(crate) fn chains_clear(nl: &mut Netfilter, v4: bool, tables: &[&str]) -> bool {
    let family = if v4 { Family::Ipv4 } else { Family::Ipv6 };
    let mut read = |table: &str, chain: &str| chain_rules(nl, family, table, chain);
    let clear = |rules: io::Result<Vec<Rule>>| rules.is_ok_and(|r| !r.iter().any(jumps_to_ours));
    tables.iter().all(|table| match *table {
        "nat" => clear(read("nat", "POSTROUTING")),
        "filter" => {
            clear(read("filter", "FORWARD"))
                && read("filter", FORWARD_CHAIN).is_ok_and(|r| r.is_empty())
        }
        _ => false,
    })
}

/// The rules of `chain`; none when the table or the chain does not exist.
fn chain_rules(
    nl: &mut Netfilter,
    family: Family,
    table: &str,
    chain: &str,
) -> io::Result<Vec<Rule>> {
    match nl.rules(family, table, Some(chain)) {
        Ok(rules) => Ok(rules.into_iter().filter(|r| r.chain == chain).collect()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn jumps_to_ours(rule: &Rule) -> bool {
    use cni_netlink::netfilter::Expr;
    rule.exprs
        .iter()
        .any(|e| matches!(e, Expr::Verdict { chain: Some(c), .. } if c.starts_with("RMASQ-")))
}
