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
//! Repairs without a process per pod: after the rules of a class were written or checked, the
//! state dir keeps a [`fingerprint`] of the chains they live in (rule handles of iptables-nft's
//! nf_tables chains, which the kernel never reuses, and the entry count and size of legacy
//! tables, read over netlink and getsockopt). An ADD of an existing class execs `iptables` to
//! check and repair the rules only when that fingerprint changed, i.e. when something (a person,
//! a firewall reload) touched those chains since.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use cni_types::error::{CniError, Result, CHECK_MISMATCH, FIREWALL_FAILURE, PLUGIN_NOT_AVAILABLE};

use crate::backend::{in_path, Backend, Plan};
use crate::class::{BackendKind, Class};
use cni_netlink::netfilter::{Family, Netfilter};

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

type CmdResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The `iptables` (or `ip6tables`) command. Written here rather than taken from the `iptables`
/// crate, which splits rules with a regex engine: that alone was a tenth of every plugin that
/// links rmasq, and a plugin's binary is mapped into memory on each of its calls. Our rules hold
/// no quoted or spaced words, so splitting on whitespace is exact. `-C` and `--wait` exist since
/// iptables 1.4.20 (2013); we never use `-L`, the one listing that resolves names.
struct IPTables {
    cmd: &'static str,
}

impl IPTables {
    fn run(&self, table: &str, args: &[&str], rule: &str) -> CmdResult<std::process::Output> {
        Ok(std::process::Command::new(self.cmd)
            .args(["-t", table])
            .args(args)
            .args(rule.split_whitespace())
            .arg("--wait")
            .output()?)
    }

    fn ok(&self, table: &str, args: &[&str], rule: &str) -> CmdResult<()> {
        let out = self.run(table, args, rule)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned().into())
        }
    }

    /// Runs `command` (e.g. `-S CHAIN`) on `table`, whatever its exit.
    fn execute(&self, table: &str, command: &str) -> CmdResult<std::process::Output> {
        self.run(table, &[], command)
    }

    fn exists(&self, table: &str, chain: &str, rule: &str) -> CmdResult<bool> {
        Ok(self.run(table, &["-C", chain], rule)?.status.success())
    }

    fn append(&self, table: &str, chain: &str, rule: &str) -> CmdResult<()> {
        self.ok(table, &["-A", chain], rule)
    }

    fn insert(&self, table: &str, chain: &str, rule: &str, position: u32) -> CmdResult<()> {
        self.ok(table, &["-I", chain, &position.to_string()], rule)
    }

    fn delete(&self, table: &str, chain: &str, rule: &str) -> CmdResult<()> {
        self.ok(table, &["-D", chain], rule)
    }

    fn new_chain(&self, table: &str, chain: &str) -> CmdResult<()> {
        self.ok(table, &["-N", chain], "")
    }

    fn flush_chain(&self, table: &str, chain: &str) -> CmdResult<()> {
        self.ok(table, &["-F", chain], "")
    }

    fn delete_chain(&self, table: &str, chain: &str) -> CmdResult<()> {
        self.ok(table, &["-X", chain], "")
    }
}

fn ipt(v4: bool) -> IPTables {
    IPTables { cmd: cmd(v4) }
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

/// Does `c` have rules in iptables? Its nat rules with the iptables backend; its forward
/// accepts with `allowForward` where iptables is installed.
pub fn has_rules(c: &Class) -> bool {
    c.backend == BackendKind::Iptables || (c.allow_forward && in_path(cmd(c.is_v4())))
}

/// Checks the iptables rules of an existing class (execs `iptables`) and repairs what differs,
/// as the class's first ADD would have written them.
pub fn ensure_existing(c: &Class) -> Result<()> {
    if c.backend == BackendKind::Iptables {
        ensure_class(c, false)?;
    }
    if c.allow_forward {
        ensure_forward(c, false)?;
    }
    Ok(())
}

/// The (table, chain) pairs holding `c`'s iptables rules.
fn chains(c: &Class) -> Vec<(&'static str, String)> {
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
pub fn fingerprint(c: &Class) -> Option<String> {
    fingerprint_with(&mut Netfilter::open().ok()?, c)
}

/// [`fingerprint`] on an open socket.
pub fn fingerprint_with(nl: &mut Netfilter, c: &Class) -> Option<String> {
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
pub fn unchanged(nl: &mut Netfilter, c: &Class, stored: &str) -> Option<Option<String>> {
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
    let fresh = fingerprint_with(nl, c)?;
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
    let names = if v4 {
        "/proc/thread-self/net/ip_tables_names"
    } else {
        "/proc/thread-self/net/ip6_tables_names"
    };
    let loaded = std::fs::read_to_string(names).unwrap_or_default();
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
