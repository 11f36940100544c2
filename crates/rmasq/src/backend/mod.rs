//! The backends that hold the masquerade rules, and choosing one when the config does not name
//! it. `nftables` and `iptables` are siblings that share the forward accepts (`forward`, written
//! by `iptables` for either); `xtables` reads and writes iptables rules (one `iptables-save`, one
//! `iptables-restore` per family and call); `native` writes a class's first and removes its last
//! iptables rules without them where iptables is iptables-nft; `nft_rules` is what the nftables
//! rules read back as.

mod forward;
mod iptables;
mod native;
mod nft_rules;
mod nftables;
mod plan;
mod untouched;
mod xtables;

use std::process::{Command, Stdio};

use cni_netlink::netfilter::Netfilter;
use cni_types::error::{CniError, Result, FIREWALL_FAILURE};

use crate::class::BackendKind;
use xtables::in_path;

pub(crate) use iptables::{chains as iptables_chains, ensure_existing, has_rules};
pub(crate) use nftables::update_elements;
pub(crate) use plan::{Backend, Plan};
pub(crate) use xtables::legacy_tables;

/// The backend of `kind`.
pub(crate) fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Nftables => Box::new(nftables::Nftables),
        BackendKind::Iptables => Box::new(iptables::Iptables),
    }
}

/// An address in network byte order, as nf_tables compares it and keys sets with it.
fn octets(addr: std::net::IpAddr) -> Vec<u8> {
    match addr {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The call's netfilter socket, opened on first use; None if it cannot be opened.
fn socket(nl: &mut Option<Netfilter>) -> Option<&mut Netfilter> {
    if nl.is_none() {
        *nl = Netfilter::open().ok();
    }
    nl.as_mut()
}

/// Tables that iptables-nft (and ebtables/arptables-nft) create: they mean "this node uses
/// iptables", not "this node uses nftables".
fn is_xtables_table(family: &str, name: &str) -> bool {
    matches!(family, "ip" | "ip6" | "arp" | "bridge")
        && matches!(
            name,
            "filter" | "nat" | "mangle" | "raw" | "security" | "broute"
        )
}

/// Which backend the node uses:
/// - only one of `nft` and `iptables` is installed: that one;
/// - `nft list tables` shows a table that iptables-nft did not create (ours included): nftables;
/// - otherwise (iptables rules only, legacy or nft-backed, or no rules at all): iptables, the
///   backend every Kubernetes node tool understands, as upstream's default.
pub(crate) fn detect() -> Result<BackendKind> {
    let have_ipt = in_path("iptables");
    let have_nft = in_path("nft");
    match (have_nft, have_ipt) {
        (false, false) => {
            return Err(CniError::new(
                FIREWALL_FAILURE,
                "neither nft nor iptables is installed: install nftables or iptables",
            ))
        }
        (true, false) => return Ok(BackendKind::Nftables),
        (false, true) => return Ok(BackendKind::Iptables),
        (true, true) => {}
    }
    let out = Command::new("nft")
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .output();
    let listing = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        // nf_tables unusable (old kernel, no permission): iptables may still work.
        _ => return Ok(BackendKind::Iptables),
    };
    Ok(if uses_nftables(&listing) {
        BackendKind::Nftables
    } else {
        BackendKind::Iptables
    })
}

/// `nft list tables` output names a table iptables-nft did not make.
fn uses_nftables(listing: &str) -> bool {
    listing.lines().any(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("table"), Some(family), Some(name)) => !is_xtables_table(family, name),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests;
