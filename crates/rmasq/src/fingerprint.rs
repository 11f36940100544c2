//! Repairs without a process per pod: after the iptables rules of a class (its nat rules with
//! the iptables backend, its forward accepts with `allowForward`) were written or checked, the
//! state dir keeps a [`fingerprint`] of the chains they live in (rule handles of iptables-nft's
//! nf_tables chains, which the kernel never reuses, and the entry count and size of legacy
//! tables, read over netlink and getsockopt). An ADD of an existing class execs `iptables` to
//! check and repair the rules only when that fingerprint changed, i.e. when something (a person,
//! a firewall reload) touched those chains since.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use cni_netlink::netfilter::{Family, Netfilter};

use crate::backend::iptables_chains as chains;
use crate::class::{BackendKind, Class};

/// What the chains holding `c`'s iptables rules look like now, cheaply and without a process:
/// any rule added to, deleted from or replaced in them, or a table replaced, changes it.
///
/// - iptables-nft keeps them in nf_tables tables `ip`/`ip6` `nat` and `filter`: the table's
///   handle and the handles of the chains' rules (the kernel gives every new rule a new handle
///   and never reuses one within a table, nor a table handle within a netns);
/// - iptables-legacy tables (those in `/proc/net/ip{,6}_tables_names`): entry count, size and
///   hook offsets from `IPT_SO_GET_INFO` (a rule replaced by one of the same size goes
///   unnoticed there; legacy has no generation counter);
/// - the boot and the netns, so a fingerprint never outlives either;
/// - for classes of the iptables backend, nf_tables' ruleset generation (a `gen` line), read
///   before the chains, so that [`unchanged`] can tell without reading them again that no
///   nf_tables chain changed since.
///   (The nftables backend's pods move the generation themselves, so it tells nothing there.)
///
/// None if it cannot be read: then the rules are always checked.
pub(crate) fn fingerprint(nl: &mut Netfilter, c: &Class) -> Option<String> {
    let mut fp = whereabouts()?;
    if c.backend == BackendKind::Iptables {
        let _ = writeln!(fp, "gen {}", nl.generation().ok()?);
    }
    let family = if c.is_v4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    };
    let tables = nl.tables(family).ok()?;
    for (table, chain) in &chains(c) {
        let handle = tables.iter().find(|t| t.name == *table).map(|t| t.handle);
        let _ = write!(fp, "nft {table}");
        match handle {
            Some(h) => {
                let _ = write!(fp, "#{h} {chain}:");
                let rules = nl.rules(family, table, Some(chain)).ok()?;
                for r in rules.iter().filter(|r| r.chain == *chain) {
                    let _ = write!(fp, " {}", r.handle);
                }
                fp.push('\n');
            }
            None => fp.push_str(" none\n"),
        }
    }
    fp.push_str(&legacy_fingerprint(c)?);
    Some(fp)
}

/// Whether `stored` (a [`fingerprint`] of `c`'s chains) still holds: None when the chains
/// changed or cannot be read. For an iptables-backend class, where nf_tables' generation has
/// not moved since the fingerprint was taken (no nf_tables transaction at all), only the boot,
/// netns and legacy lines are compared and no chain is read; where it moved but the chains are
/// the same, the fresh fingerprint comes back (`Some(Some(_))`) to be stored, so the next
/// check is quick again. Other classes' fingerprints carry no generation: their chains are
/// always read.
pub(crate) fn unchanged(nl: &mut Netfilter, c: &Class, stored: &str) -> Option<Option<String>> {
    let quick = c.backend == BackendKind::Iptables;
    if quick {
        let gen = nl.generation().ok()?;
        let legacy = |fp: &str| -> Vec<String> {
            fp.lines()
                .filter(|l| l.starts_with("legacy "))
                .map(str::to_string)
                .collect()
        };
        let head = format!("{}gen {gen}\n", whereabouts()?);
        if stored.starts_with(&head) && legacy(stored) == legacy(&legacy_fingerprint(c)?) {
            return Some(None);
        }
    }
    let without_gen = |fp: &str| -> Vec<String> {
        fp.lines()
            .filter(|l| !l.starts_with("gen "))
            .map(str::to_string)
            .collect()
    };
    let fresh = fingerprint(nl, c)?;
    (without_gen(&fresh) == without_gen(stored)).then_some(quick.then_some(fresh))
}

/// The boot and the netns of the calling thread, as the first line of a fingerprint.
fn whereabouts() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // thread-self: a library caller may have moved only this thread into the netns.
    let ns = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    Some(format!(
        "boot {} netns {}:{}\n",
        boot.trim(),
        ns.dev(),
        ns.ino()
    ))
}

/// The `legacy` lines of a fingerprint: one per loaded iptables-legacy table holding `c`'s rules.
fn legacy_fingerprint(c: &Class) -> Option<String> {
    let v4 = c.is_v4();
    let loaded = crate::backend::legacy_tables(v4);
    let mut fp = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for (table, _) in &chains(c) {
        if seen.contains(table) {
            continue;
        }
        seen.push(table);
        if loaded.lines().any(|l| l.trim() == *table) {
            let _ = writeln!(fp, "legacy {table} {}", legacy_info(v4, table)?);
        }
    }
    Some(fp)
}

/// `IPT_SO_GET_INFO` (`IP6T_SO_GET_INFO`) of a loaded legacy table: everything after the name
/// (valid hooks, hook entries, underflows, entry count, size) as numbers.
fn legacy_info(v4: bool, table: &str) -> Option<String> {
    const SO_GET_INFO: libc::c_int = 64; // IPT_BASE_CTL, IP6T_BASE_CTL
    const NAME_LEN: usize = 32; // XT_TABLE_MAXNAMELEN
    const INFO_LEN: usize = NAME_LEN + 4 + 5 * 4 + 5 * 4 + 4 + 4;
    if table.len() >= NAME_LEN {
        return None;
    }
    let (domain, level) = if v4 {
        (libc::AF_INET, libc::IPPROTO_IP)
    } else {
        (libc::AF_INET6, libc::IPPROTO_IPV6)
    };
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `fd`.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut info = [0u8; INFO_LEN];
    info[..table.len()].copy_from_slice(table.as_bytes());
    let mut len = INFO_LEN as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes, as struct ipt_getinfo.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            SO_GET_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 || len as usize != INFO_LEN {
        return None;
    }
    Some(
        info[NAME_LEN..]
            .chunks(4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()).to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )
}
