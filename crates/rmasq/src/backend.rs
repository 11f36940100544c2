//! The backend trait, and choosing a backend when the config does not name one.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use cni_types::error::{CniError, Result, FIREWALL_FAILURE};

use crate::class::{BackendKind, Class};

/// One call's changes, applied as one unit where the backend can (one nft transaction).
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Every class of this backend alive after the change (nftables rewrites its small,
    /// per-class rules from these on every call, which also repairs hand-made damage).
    pub live: Vec<Class>,
    /// Classes the attachment being added uses, with `true` if no attachment used it before.
    pub ensure: Vec<(Class, bool)>,
    /// Addresses to add to their class.
    pub add: Vec<(Class, IpAddr)>,
    /// Addresses no attachment owns any more.
    pub remove: Vec<(Class, IpAddr)>,
    /// Classes no attachment uses any more: their rules go.
    pub drop: Vec<Class>,
}

pub trait Backend {
    fn kind(&self) -> BackendKind;
    fn apply(&self, plan: &Plan) -> Result<()>;
    /// Errors with code 102 (CHECK_MISMATCH) naming what is missing.
    fn check(&self, class: &Class, addr: IpAddr) -> Result<()>;
    /// Code 50 if the backend cannot be used on this node.
    fn status(&self) -> Result<()>;
}

pub fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Nftables => Box::new(crate::nftables::Nftables),
        BackendKind::Iptables => Box::new(crate::iptables::Iptables),
    }
}

/// True if `program` is an executable file on PATH (or a path to one).
pub fn in_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return is_exec(Path::new(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| is_exec(&d.join(program)))
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
pub fn detect() -> Result<BackendKind> {
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
pub fn uses_nftables(listing: &str) -> bool {
    listing.lines().any(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("table"), Some(family), Some(name)) => !is_xtables_table(family, name),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_ignores_iptables_nft_tables() {
        assert!(!uses_nftables(""));
        assert!(!uses_nftables(
            "table ip filter\ntable ip nat\ntable ip6 mangle\ntable arp filter\ntable bridge nat\n"
        ));
        assert!(uses_nftables("table ip nat\ntable inet firewalld\n"));
        assert!(uses_nftables("table inet rmasq\n"));
        assert!(uses_nftables("table ip kube-proxy\n"));
    }

    #[test]
    fn in_path_finds_sh() {
        assert!(in_path("sh"));
        assert!(in_path("/bin/sh"));
        assert!(!in_path("rmasq-no-such-program"));
    }
}
