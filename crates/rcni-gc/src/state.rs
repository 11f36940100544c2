//! What a network's attachments hold on the node, read from outside the plugins and touching
//! nothing: reservations in the host-local-format stores, masquerade records, libcni's cache
//! entries, each with its file's modification time (how recently the attachment was set up);
//! and whether host veths exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use cni_netlink::Netlink;

use crate::cache;
use crate::conf::Network;

/// (container ID, ifname).
pub type Key = (String, String);

/// What one attachment holds.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub addresses: BTreeSet<IpAddr>,
    pub masquerade: BTreeSet<IpAddr>,
    pub cache: Option<cache::Entry>,
    /// The newest modification time of its files: an ADD writes them all.
    pub newest: Option<SystemTime>,
}

impl Evidence {
    fn touched(&mut self, t: Option<SystemTime>) {
        if let Some(t) = t {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Every attachment of `net` with state on the node. Reservations in the old format (no
/// ifname) are left to the plugins' GC, which keeps them while their container is valid.
pub fn scan(net: &Network, cache_dir: &Path) -> Result<BTreeMap<Key, Evidence>> {
    let mut out: BTreeMap<Key, Evidence> = BTreeMap::new();
    let name = net.name();
    for data_dir in net.ipam_stores() {
        let held = rhost_local::reservations(&data_dir, name)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading the IPAM store {}", data_dir.display()))?;
        for r in held {
            let Some(ifname) = r.ifname else { continue };
            let e = out.entry((r.container_id, ifname)).or_default();
            e.addresses.insert(r.ip);
            e.touched(mtime(&data_dir.join(name).join(r.ip.to_string())));
        }
    }
    for dir in net.masq_dirs() {
        let members = rmasq::members(&dir, name)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading the masquerade state {}", dir.display()))?;
        for m in members {
            let record = dir
                .join("attachments")
                .join(name)
                .join(format!("{}:{}", m.container_id, m.ifname));
            let e = out.entry((m.container_id, m.ifname)).or_default();
            e.masquerade.extend(m.addresses);
            e.touched(mtime(&record));
        }
    }
    let entries = cache::entries(cache_dir, name).with_context(|| {
        format!(
            "reading the result cache {}",
            cache::results_dir(cache_dir).display()
        )
    })?;
    for c in entries {
        let e = out
            .entry((c.container_id.clone(), c.ifname.clone()))
            .or_default();
        e.touched(c.modified);
        e.cache = Some(c);
    }
    Ok(out)
}

/// The host veths an attachment may have: rbridge's, named after it, and the host-side
/// interfaces of its cached result (upstream bridge names its veth at random).
pub fn veth_candidates(net: &Network, key: &Key, e: &Evidence) -> Vec<String> {
    let mut names = BTreeSet::new();
    if net.has_rbridge() {
        names.insert(rbridge::host_veth(&key.0, &key.1));
    }
    if let Some(c) = &e.cache {
        names.extend(c.host_interfaces());
    }
    names.into_iter().collect()
}

/// Which of `names` are veths in this network namespace.
pub fn present_veths(names: &[String]) -> Result<Vec<String>> {
    with_netlink(|nl| async move {
        let mut out = Vec::new();
        for n in names {
            if let Some(l) = nl.link_by_name(n).await? {
                if l.kind.as_deref() == Some("veth") {
                    out.push(n.clone());
                }
            }
        }
        Ok(out)
    })
}

/// Deletes the veths among `names` (the pod's end goes with each).
pub fn delete_veths(names: &[String]) -> Result<()> {
    with_netlink(|nl| async move {
        for n in names {
            if let Some(l) = nl.link_by_name(n).await? {
                if l.kind.as_deref() == Some("veth") {
                    nl.delete_link(l.index).await?;
                }
            }
        }
        Ok(())
    })
}

fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: std::future::Future<Output = cni_types::Result<T>>,
{
    let rt = cni_netlink::runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
    rt.block_on(async {
        let nl = Netlink::open(None)?;
        f(nl).await
    })
    .map_err(|e| anyhow::anyhow!("netlink: {e}"))
}
