//! What a collection found, did and left: per network, every reclaimed attachment with what it
//! held and why it went, the plugins GC ran or skipped, and the errors. Counts are what the agent
//! exports as metrics; the text is what `rcni gc` prints and the agent logs.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use cni_types::Attachment;

/// Things reclaimed (or, in a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub attachments: u64,
    pub addresses: u64,
    pub veths: u64,
    pub masquerade_members: u64,
    pub cache_entries: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.attachments += o.attachments;
        self.addresses += o.addresses;
        self.veths += o.veths;
        self.masquerade_members += o.masquerade_members;
        self.cache_entries += o.cache_entries;
    }

    /// (metric label, count) pairs.
    pub fn by_kind(&self) -> [(&'static str, u64); 5] {
        [
            ("attachment", self.attachments),
            ("address", self.addresses),
            ("veth", self.veths),
            ("masquerade_member", self.masquerade_members),
            ("cache_entry", self.cache_entries),
        ]
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |k: u64, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        write!(
            f,
            "{}, {}, {}, {}, {}",
            n(self.attachments, "attachment", "attachments"),
            n(self.addresses, "address", "addresses"),
            n(self.veths, "veth", "veths"),
            n(
                self.masquerade_members,
                "masquerade member",
                "masquerade members"
            ),
            n(self.cache_entries, "cache entry", "cache entries"),
        )
    }
}

/// What a stale attachment held when found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub addresses: Vec<IpAddr>,
    pub veths: Vec<String>,
    pub masquerade: Vec<IpAddr>,
    pub cache_entry: Option<PathBuf>,
}

impl Held {
    fn counts(&self) -> Counts {
        Counts {
            attachments: 1,
            addresses: self.addresses.len() as u64,
            veths: self.veths.len() as u64,
            masquerade_members: self.masquerade.len() as u64,
            cache_entries: u64::from(self.cache_entry.is_some()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.veths.is_empty()
            && self.masquerade.is_empty()
            && self.cache_entry.is_none()
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: Vec<String>| v.join(", ");
        let mut parts = Vec::new();
        if !self.addresses.is_empty() {
            parts.push(format!(
                "addresses {}",
                list(self.addresses.iter().map(IpAddr::to_string).collect())
            ));
        }
        if !self.veths.is_empty() {
            parts.push(format!("veth {}", list(self.veths.clone())));
        }
        if !self.masquerade.is_empty() {
            parts.push(format!(
                "masquerade of {}",
                list(self.masquerade.iter().map(IpAddr::to_string).collect())
            ));
        }
        if let Some(p) = &self.cache_entry {
            parts.push(format!("cache entry {}", p.display()));
        }
        if parts.is_empty() {
            parts.push("nothing left".into());
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// One attachment the runtime no longer knows.
#[derive(Debug, Clone)]
pub struct Reclaim {
    pub attachment: Attachment,
    pub why: String,
    pub held: Held,
    /// What is still there after the collection (empty in a dry run: nothing was tried).
    pub left: Held,
    pub errors: Vec<String>,
}

impl Reclaim {
    /// What went (in a dry run: what would go).
    pub fn counts(&self, dry_run: bool) -> Counts {
        let mut c = self.held.counts();
        if !dry_run {
            let l = self.left.counts();
            c.addresses -= l.addresses.min(c.addresses);
            c.veths -= l.veths.min(c.veths);
            c.masquerade_members -= l.masquerade_members.min(c.masquerade_members);
            c.cache_entries -= l.cache_entries.min(c.cache_entries);
            c.attachments = u64::from(self.left.is_empty());
        }
        c
    }
}

/// One network of the conf dir.
#[derive(Debug, Clone, Default)]
pub struct NetworkReport {
    pub name: String,
    pub file: PathBuf,
    /// Attachments kept: known to the runtime, or younger than the grace period.
    pub listed: usize,
    pub young: usize,
    pub reclaims: Vec<Reclaim>,
    /// Plugins sent GC, and those skipped with why.
    pub gc_plugins: Vec<String>,
    pub gc_skipped: Vec<(String, String)>,
    /// Why the network was left alone, if it was.
    pub skipped: Option<String>,
    pub errors: Vec<String>,
}

/// A whole collection.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub dry_run: bool,
    /// Where the truth came from (the CRI endpoint or the file) and what it said.
    pub source: String,
    pub networks: Vec<NetworkReport>,
    /// Files of the conf dir that were skipped, and why.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in self.networks.iter().flat_map(|n| &n.reclaims) {
            c.add(r.counts(self.dry_run));
        }
        c
    }

    /// Every error, prefixed with its network.
    pub fn errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.networks {
            out.extend(
                n.errors
                    .iter()
                    .map(|e| format!("network {:?}: {e}", n.name)),
            );
            for r in &n.reclaims {
                out.extend(r.errors.iter().map(|e| {
                    format!(
                        "network {:?}, {}/{}: {e}",
                        n.name, r.attachment.container_id, r.attachment.ifname
                    )
                }));
            }
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would reclaim"
        } else {
            "reclaimed"
        };
        writeln!(f, "valid attachments: {}", self.source)?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        for n in &self.networks {
            writeln!(f, "network {:?} ({}):", n.name, n.file.display())?;
            if let Some(why) = &n.skipped {
                writeln!(f, "  left alone: {why}")?;
                continue;
            }
            for r in &n.reclaims {
                let a = &r.attachment;
                writeln!(
                    f,
                    "  {verb} {}/{} ({}): {}",
                    a.container_id, a.ifname, r.why, r.held
                )?;
                if !self.dry_run && !r.left.is_empty() {
                    writeln!(f, "    still there: {}", r.left)?;
                }
                for e in &r.errors {
                    writeln!(f, "    error: {e}")?;
                }
            }
            let ran = if n.gc_plugins.is_empty() {
                "none".to_string()
            } else {
                n.gc_plugins.join(", ")
            };
            let gc = if self.dry_run {
                "would send GC to"
            } else {
                "GC sent to"
            };
            writeln!(f, "  {gc}: {ran}")?;
            for (ty, why) in &n.gc_skipped {
                writeln!(f, "  GC skipped {ty}: {why}")?;
            }
            writeln!(
                f,
                "  kept {} known to the runtime, {} younger than the grace period",
                n.listed, n.young
            )?;
            for e in &n.errors {
                writeln!(f, "  error: {e}")?;
            }
        }
        write!(f, "{verb}: {}", self.counts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_went_and_says_what_is_left() {
        let held = Held {
            addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            veths: vec!["veth0123456789a".into()],
            masquerade: vec!["10.0.0.2".parse().unwrap()],
            cache_entry: Some("/var/lib/cni/results/n-c1-eth0".into()),
        };
        let mut r = Reclaim {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            why: "gone".into(),
            held: held.clone(),
            left: Held::default(),
            errors: vec![],
        };
        let all = Counts {
            attachments: 1,
            addresses: 2,
            veths: 1,
            masquerade_members: 1,
            cache_entries: 1,
        };
        assert_eq!(r.counts(false), all);
        r.left.cache_entry = held.cache_entry.clone();
        let c = r.counts(false);
        assert_eq!((c.attachments, c.addresses, c.cache_entries), (0, 2, 0));
        assert_eq!(r.counts(true), all);
        let report = Report {
            dry_run: false,
            source: "file v.json".into(),
            networks: vec![NetworkReport {
                name: "n".into(),
                reclaims: vec![r],
                gc_skipped: vec![("portmap".into(), "supports CNI up to 1.0.0".into())],
                ..NetworkReport::default()
            }],
            warnings: vec![],
        };
        let text = report.to_string();
        assert!(
            text.contains("reclaimed c1/eth0 (gone): addresses 10.0.0.2, fd00::2; veth veth0123456789a; masquerade of 10.0.0.2; cache entry"),
            "{text}"
        );
        assert!(text.contains("still there: cache entry"), "{text}");
        assert!(text.contains("GC skipped portmap"), "{text}");
        assert!(text.ends_with("reclaimed: 0 attachments, 2 addresses, 1 veth, 1 masquerade member, 0 cache entries"), "{text}");
    }
}
