//! nftables backend: one table `inet rmasq`; per class a set of pod addresses, an interval set of
//! destinations to skip, a two-rule chain, and one jump rule in the postrouting base chain:
//!
//! ```text
//! table inet rmasq {
//!   set c_<id>_pods { type ipv4_addr; elements = { 10.1.0.5, ... } }   # one element per pod
//!   set c_<id>_skip { type ipv4_addr; flags interval; elements = { 10.1.0.0/24, 169.254.0.0/16, 224.0.0.0/4 } }
//!   chain c_<id> { ip daddr @c_<id>_skip return; masquerade }
//!   chain postrouting { type nat hook postrouting priority srcnat; ip saddr @c_<id>_pods jump c_<id> }
//! }
//! ```
//!
//! A pod is one set element; each call is one `nft -f -` transaction whose size depends on the
//! number of classes, not pods. Every call rewrites the per-class rules (atomically, so traffic
//! never sees a gap), which keeps them idempotent and repairs rules deleted by hand. Set elements
//! are added with `add` (a no-op if present) and removed with `add` then `delete`, which succeeds
//! whether or not the element was there.
//!
//! Exec rather than netlink: the maintained netlink crates are GPL-3.0 (rustables) or need
//! libnftnl at build time (nftnl); one `nft` run costs a few milliseconds, independent of pods.
//! Forwarding accepts go to iptables (see [`crate::iptables`]): an nftables `accept` in our
//! table cannot override a DROP policy in another table, which is where nodes have it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use cni_types::error::{CniError, Result, CHECK_MISMATCH, FIREWALL_FAILURE, PLUGIN_NOT_AVAILABLE};

use crate::backend::{Backend, Plan};
use crate::class::{BackendKind, Class};
use crate::iptables;

pub const TABLE: &str = "rmasq";

pub struct Nftables;

fn chain(c: &Class) -> String {
    format!("c_{}", c.id)
}

fn types(c: &Class) -> (&'static str, &'static str) {
    if c.is_v4() {
        ("ip", "ipv4_addr")
    } else {
        ("ip6", "ipv6_addr")
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The transaction for `plan`.
pub fn script(plan: &Plan) -> String {
    let t = format!("inet {TABLE}");
    let mut s = String::new();
    let dropped = |c: &Class| plan.drop.iter().any(|d| d.id == c.id);
    if plan.live.is_empty() {
        // The last class is gone: the table goes with everything in it.
        let _ = writeln!(s, "add table {t}\ndelete table {t}");
        return s;
    }
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain {t} postrouting");
    for c in &plan.live {
        let (fam, ty) = types(c);
        let ch = chain(c);
        let _ = writeln!(s, "add set {t} {ch}_pods {{ type {ty}; }}");
        let _ = writeln!(s, "add set {t} {ch}_skip {{ type {ty}; flags interval; }}");
        let _ = writeln!(s, "flush set {t} {ch}_skip");
        if !c.skip.is_empty() {
            let _ = writeln!(s, "add element {t} {ch}_skip {{ {} }}", join(&c.skip));
        }
        let _ = writeln!(s, "add chain {t} {ch}");
        let _ = writeln!(s, "flush chain {t} {ch}");
        let _ = writeln!(s, "add rule {t} {ch} {fam} daddr @{ch}_skip return");
        let _ = writeln!(s, "add rule {t} {ch} masquerade");
        let _ = writeln!(
            s,
            "add rule {t} postrouting {fam} saddr @{ch}_pods jump {ch} comment \"{}\"",
            c.network
        );
    }
    for (c, addr) in &plan.add {
        let _ = writeln!(s, "add element {t} {}_pods {{ {addr} }}", chain(c));
    }
    for (c, addr) in plan.remove.iter().filter(|(c, _)| !dropped(c)) {
        let (_, ty) = types(c);
        let ch = chain(c);
        let _ = writeln!(s, "add set {t} {ch}_pods {{ type {ty}; }}");
        let _ = writeln!(s, "add element {t} {ch}_pods {{ {addr} }}");
        let _ = writeln!(s, "delete element {t} {ch}_pods {{ {addr} }}");
    }
    for c in &plan.drop {
        let (_, ty) = types(c);
        let ch = chain(c);
        // `add` first so the delete succeeds even if it was already gone.
        let _ = writeln!(s, "add chain {t} {ch}\ndelete chain {t} {ch}");
        let _ = writeln!(
            s,
            "add set {t} {ch}_pods {{ type {ty}; }}\ndelete set {t} {ch}_pods"
        );
        let _ = writeln!(
            s,
            "add set {t} {ch}_skip {{ type {ty}; flags interval; }}\ndelete set {t} {ch}_skip"
        );
    }
    s
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                FIREWALL_FAILURE,
                format!("cannot run nft (install nftables or set \"backend\": \"iptables\"): {e}"),
            )
        })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // nft reads the whole script before acting; a write error shows up as its failure.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(FIREWALL_FAILURE, format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CniError::new(
            FIREWALL_FAILURE,
            format!(
                "nft {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// The lines of the block that starts with `header` (e.g. `chain c_x {`) in `nft list` output.
fn block<'a>(listing: &'a str, header: &str) -> Option<Vec<&'a str>> {
    let mut lines = listing.lines().skip_while(|l| l.trim() != header);
    lines.next()?;
    Some(lines.take_while(|l| l.trim() != "}").collect())
}

/// Words of a block, split on nft's punctuation, to find an address or a rule's parts.
fn words<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '=')))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Checks `listing` (of `nft list table inet rmasq`) for what `class` and `addr` need.
pub fn check_listing(listing: &str, class: &Class, addr: IpAddr) -> Result<()> {
    let (fam, _) = types(class);
    let ch = chain(class);
    let missing = |what: String| {
        Err(CniError::new(
            CHECK_MISMATCH,
            format!(
                "nftables table inet {TABLE} lacks {what} (network {}, address {addr}): run DEL and ADD again",
                class.network
            ),
        ))
    };
    let Some(pods) = block(listing, &format!("set {ch}_pods {{")) else {
        return missing(format!("set {ch}_pods"));
    };
    let want = addr.to_string();
    if !words(&pods).iter().any(|w| *w == want) {
        return missing(format!("element {addr} of set {ch}_pods"));
    }
    let Some(rules) = block(listing, &format!("chain {ch} {{")) else {
        return missing(format!("chain {ch}"));
    };
    let has = |lines: &[&str], rule: &str| lines.iter().any(|l| l.trim().starts_with(rule));
    for rule in [
        format!("{fam} daddr @{ch}_skip return"),
        "masquerade".into(),
    ] {
        if !has(&rules, &rule) {
            return missing(format!("rule \"{rule}\" in chain {ch}"));
        }
    }
    let Some(skip) = block(listing, &format!("set {ch}_skip {{")) else {
        return missing(format!("set {ch}_skip"));
    };
    for net in &class.skip {
        let want = net.to_string();
        // nft prints a host prefix (/32, /128) as a bare address.
        let bare = net.addr().to_string();
        if !words(&skip)
            .iter()
            .any(|w| *w == want || (net.prefix_len() == net.max_prefix_len() && *w == bare))
        {
            return missing(format!("element {net} of set {ch}_skip"));
        }
    }
    let Some(post) = block(listing, "chain postrouting {") else {
        return missing("chain postrouting".into());
    };
    let jump = format!("{fam} saddr @{ch}_pods jump {ch}");
    if !has(&post, &jump) {
        return missing(format!("rule \"{jump}\" in chain postrouting"));
    }
    Ok(())
}

impl Backend for Nftables {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn apply(&self, plan: &Plan) -> Result<()> {
        let text = script(plan);
        nft(&["-f", "-"], Some(&text)).map_err(|e| e.with_details(text))?;
        // Forward accepts: the class's first pod adds them, the last one's DEL removes them;
        // ADD re-adds them if something deleted them.
        for c in plan.drop.iter().filter(|c| c.allow_forward) {
            iptables::drop_forward(c)?;
        }
        for (c, fresh) in plan.ensure.iter().filter(|(c, _)| c.allow_forward) {
            iptables::ensure_forward(c, *fresh)?;
        }
        Ok(())
    }

    fn check(&self, class: &Class, addr: IpAddr) -> Result<()> {
        let listing = nft(&["list", "table", "inet", TABLE], None).map_err(|e| {
            CniError::new(
                CHECK_MISMATCH,
                format!(
                    "nftables table inet {TABLE} is missing or unreadable: {}",
                    e.msg
                ),
            )
        })?;
        check_listing(&listing, class, addr)?;
        if class.allow_forward {
            iptables::check_forward(class)?;
        }
        Ok(())
    }

    fn status(&self) -> Result<()> {
        nft(&["list", "tables"], None).map(|_| ()).map_err(|e| {
            CniError::new(
                PLUGIN_NOT_AVAILABLE,
                format!("nftables is not usable: {}", e.msg),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::Options;
    use ipnet::IpNet;

    fn class(addr: &str) -> Class {
        let a: IpNet = addr.parse().unwrap();
        Class::new(BackendKind::Nftables, "pods", a, &[a], &Options::default())
    }

    #[test]
    fn add_script_has_fixed_rules_per_class_and_one_element_per_pod() {
        let c = class("10.1.0.5/24");
        let plan = Plan {
            live: vec![c.clone()],
            ensure: vec![(c.clone(), true)],
            add: vec![(c.clone(), "10.1.0.5".parse().unwrap())],
            ..Plan::default()
        };
        let s = script(&plan);
        let ch = format!("c_{}", c.id);
        assert!(s.contains(&format!(
            "add element inet rmasq {ch}_skip {{ 10.1.0.0/24, 169.254.0.0/16, 224.0.0.0/4 }}"
        )));
        assert!(s.contains(&format!(
            "add rule inet rmasq {ch} ip daddr @{ch}_skip return"
        )));
        assert!(s.contains(&format!("add rule inet rmasq {ch} masquerade")));
        assert!(s.contains(&format!(
            "add rule inet rmasq postrouting ip saddr @{ch}_pods jump {ch} comment \"pods\""
        )));
        assert!(s.contains(&format!("add element inet rmasq {ch}_pods {{ 10.1.0.5 }}")));
        assert_eq!(s.matches("add rule").count(), 3);
    }

    #[test]
    fn remove_is_idempotent_and_drop_removes_class() {
        let c4 = class("10.1.0.5/24");
        let c6 = class("fd00::5/64");
        let plan = Plan {
            live: vec![c4.clone()],
            remove: vec![
                (c4.clone(), "10.1.0.5".parse().unwrap()),
                (c6.clone(), "fd00::5".parse().unwrap()),
            ],
            drop: vec![c6.clone()],
            ..Plan::default()
        };
        let s = script(&plan);
        let ch4 = format!("c_{}", c4.id);
        let ch6 = format!("c_{}", c6.id);
        assert!(s.contains(&format!(
            "add element inet rmasq {ch4}_pods {{ 10.1.0.5 }}\ndelete element inet rmasq {ch4}_pods {{ 10.1.0.5 }}"
        )));
        // A dropped class's set goes whole; no element-level delete for it.
        assert!(!s.contains(&format!("delete element inet rmasq {ch6}_pods")));
        assert!(s.contains(&format!(
            "add chain inet rmasq {ch6}\ndelete chain inet rmasq {ch6}"
        )));
        assert!(s.contains(&format!("delete set inet rmasq {ch6}_skip")));
        assert!(!s.contains(&format!("jump {ch6}")));
    }

    #[test]
    fn no_live_class_removes_the_table() {
        let c = class("10.1.0.5/24");
        let s = script(&Plan {
            drop: vec![c],
            ..Plan::default()
        });
        assert_eq!(s, "add table inet rmasq\ndelete table inet rmasq\n");
    }

    #[test]
    fn check_finds_missing_pieces() {
        let c = class("10.1.0.5/24");
        let ch = format!("c_{}", c.id);
        let good = format!(
            "table inet rmasq {{\n\tset {ch}_pods {{\n\t\ttype ipv4_addr\n\t\telements = {{ 10.1.0.50, 10.1.0.5 }}\n\t}}\n\n\
             \tset {ch}_skip {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ 10.1.0.0/24, 169.254.0.0/16,\n\t\t\t     224.0.0.0/4 }}\n\t}}\n\n\
             \tchain {ch} {{\n\t\tip daddr @{ch}_skip return\n\t\tmasquerade\n\t}}\n\n\
             \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr @{ch}_pods jump {ch} comment \"pods\"\n\t}}\n}}\n"
        );
        check_listing(&good, &c, "10.1.0.5".parse().unwrap()).unwrap();
        let e = check_listing(&good, &c, "10.1.0.6".parse().unwrap()).unwrap_err();
        assert_eq!(e.code, CHECK_MISMATCH);
        assert!(e.msg.contains("element 10.1.0.6"), "{}", e.msg);
        let no_masq = good.replace("\t\tmasquerade\n", "");
        let e = check_listing(&no_masq, &c, "10.1.0.5".parse().unwrap()).unwrap_err();
        assert!(e.msg.contains("masquerade"), "{}", e.msg);
        let no_jump = good.replace(
            &format!("\t\tip saddr @{ch}_pods jump {ch} comment \"pods\"\n"),
            "",
        );
        let e = check_listing(&no_jump, &c, "10.1.0.5".parse().unwrap()).unwrap_err();
        assert!(e.msg.contains("postrouting"), "{}", e.msg);
    }
}
