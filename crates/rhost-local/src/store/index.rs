//! The index beside upstream's files (see the module doc of `store`): trusted while the marker
//! matches, rebuilt from the reservation files otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::IpAddr;

use cni_types::error::Result;

use super::{remove_if_exists, Store, SNAPSHOT};
use crate::netdir::io_err;
use crate::netdir::Slot;
use crate::owner::Owner;
use crate::snapshot;
use crate::testhook::point;

const KEYS_HEADER: &str = "rhost-local reservations v1";

/// One reservation file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ip: IpAddr,
    pub owner: Owner,
}

/// What a rebuild did, for the log and for GC's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub kept: usize,
    pub released: usize,
    pub leftovers: usize,
}

impl Store {
    /// Makes the index usable: trusted as is when the marker matches, else rebuilt.
    pub fn ensure_index(&mut self) -> Result<()> {
        if self.indexed {
            return Ok(());
        }
        let recorded = fs::read_to_string(self.meta.join("marker")).unwrap_or_default();
        if !recorded.is_empty() && recorded == self.marker()? {
            self.indexed = true;
            return Ok(());
        }
        let r = self.rebuild(|_| true)?;
        self.logger.debug(format!(
            "index of {} rebuilt: {} reservations, {} leftovers of killed writers reclaimed",
            self.net.dir.display(),
            r.kept,
            r.leftovers
        ));
        Ok(())
    }

    /// Reads every reservation, deletes leftovers and those `keep` rejects, and writes the
    /// index afresh. The marker goes first, so a kill half-way leaves no trusted index.
    pub fn rebuild(&mut self, keep: impl Fn(&Owner) -> bool) -> Result<Rebuilt> {
        remove_if_exists(&self.meta.join("marker"))?;
        // Development versions kept released files in spare/; nothing reads them any more.
        let _ = fs::remove_dir_all(self.meta.join("spare"));
        self.dirty = true;
        self.rebuilds += 1;
        point("rebuild-start");
        let mut stats = Rebuilt::default();
        let mut by_owner: BTreeMap<Owner, Vec<IpAddr>> = BTreeMap::new();
        for ip in self.list_ips()? {
            match self.net.read_slot(ip)? {
                Slot::Free | Slot::NotAFile => {}
                Slot::Leftover => {
                    remove_if_exists(&self.net.ip_path(ip))?;
                    stats.leftovers += 1;
                    point("leftover-removed");
                }
                Slot::Held(owner) if !keep(&owner) => {
                    remove_if_exists(&self.net.ip_path(ip))?;
                    stats.released += 1;
                    point("released-by-rebuild");
                }
                Slot::Held(owner) => {
                    by_owner.entry(owner).or_default().push(ip);
                    stats.kept += 1;
                }
            }
        }
        let named: Vec<(String, &[IpAddr])> = by_owner
            .iter()
            .filter_map(|(o, ips)| Some((o.key_name()?, ips.as_slice())))
            .collect();
        let text = snapshot::render(named.iter().map(|(k, ips)| (k.as_str(), *ips)));
        let index = self.index();
        self.write_atomic(&index.join(SNAPSHOT), text.as_bytes())?;
        point("snapshot-written");
        // Everything else in index/ predates the snapshot.
        for entry in fs::read_dir(&index)
            .map_err(|e| io_err(format!("listing {}", index.display()), e))?
            .flatten()
        {
            if entry.file_name() != SNAPSHOT {
                remove_if_exists(&entry.path())?;
            }
        }
        point("overlay-cleared");
        self.indexed = true;
        Ok(stats)
    }

    /// Addresses that have a regular file in the network dir (file type from readdir), named as
    /// [`NetworkDir::ip_path`] names them: `FD00::2` beside `fd00::2` is not a second
    /// reservation of that address, and reading it would read the other.
    ///
    /// [`NetworkDir::ip_path`]: crate::netdir::NetworkDir::ip_path
    fn list_ips(&self) -> Result<Vec<IpAddr>> {
        let dir = &self.net.dir;
        let entries =
            fs::read_dir(dir).map_err(|e| io_err(format!("listing {}", dir.display()), e))?;
        Ok(entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let ip: IpAddr = name.parse().ok()?;
                (ip.to_string() == name).then_some(ip)
            })
            .collect())
    }

    /// Every reservation, read from the files (GC's view; also used for unindexable owners).
    pub fn scan(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for ip in self.list_ips()? {
            if let Slot::Held(owner) = self.net.read_slot(ip)? {
                out.push(Entry { ip, owner });
            }
        }
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// The addresses `owner` holds (exact match: an old-format owner matches old-format
    /// reservations only), each verified against its file.
    pub fn owned(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        self.ensure_index()?;
        let Some(name) = owner.key_name() else {
            return Ok(self
                .scan()?
                .into_iter()
                .filter(|e| &e.owner == owner)
                .map(|e| e.ip)
                .collect());
        };
        let listed = match self.indexed_ips(&name) {
            // An index file we cannot read under a matching marker (torn by a power loss, or
            // written by someone else) is rebuilt from the reservations, the truth, not obeyed.
            Err(e) if self.rebuilds == 0 => {
                self.logger
                    .debug(format!("{}: rebuilding the index", e.msg));
                self.rebuild(|_| true)?;
                self.indexed_ips(&name)?
            }
            r => r?,
        };
        let Some(listed) = listed else {
            return Ok(Vec::new());
        };
        let mut verified = Vec::with_capacity(listed.len());
        for ip in &listed {
            if self.net.slot(*ip)? == Slot::Held(owner.clone()) {
                verified.push(*ip);
            }
        }
        if verified.len() != listed.len() {
            self.set_owned(owner, &verified)?;
        }
        Ok(verified)
    }

    /// What the index lists for `name`: its own file if it changed since the snapshot, else the
    /// snapshot's line. None when neither knows it.
    fn indexed_ips(&self, name: &str) -> Result<Option<Vec<IpAddr>>> {
        let path = self.index().join(name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                return parse_key_file(&text).map(Some).ok_or_else(|| {
                    io_err(
                        format!("reading {}", path.display()),
                        std::io::Error::new(ErrorKind::InvalidData, "not an index key file"),
                    )
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
        }
        let snap = self.index().join(SNAPSHOT);
        snapshot::lookup(&snap, name).map_err(|e| io_err(format!("reading {}", snap.display()), e))
    }

    /// Records in the index that `owner` holds exactly `ips`. An empty list stays as a file
    /// when the snapshot lists the owner, to override it.
    pub fn set_owned(&mut self, owner: &Owner, ips: &[IpAddr]) -> Result<()> {
        let Some(name) = owner.key_name() else {
            return Ok(());
        };
        let path = self.index().join(&name);
        self.dirty = true;
        let in_snapshot = || {
            let snap = self.index().join(SNAPSHOT);
            matches!(snapshot::lookup(&snap, &name), Ok(Some(_)))
        };
        if ips.is_empty() && !in_snapshot() {
            remove_if_exists(&path)?;
        } else {
            let mut ips = ips.to_vec();
            ips.sort();
            ips.dedup();
            self.write_atomic(&path, key_file(&ips).as_bytes())?;
        }
        point("key-updated");
        Ok(())
    }
}

pub fn key_file(ips: &[IpAddr]) -> String {
    let mut s = format!("{KEYS_HEADER}\n");
    for ip in ips {
        s.push_str(&format!("{ip}\n"));
    }
    s
}

/// The addresses of a key file; None for a file without our header (never trust what we did
/// not write).
pub fn parse_key_file(text: &str) -> Option<Vec<IpAddr>> {
    let mut lines = text.lines();
    if lines.next() != Some(KEYS_HEADER) {
        return None;
    }
    Some(lines.filter_map(|l| l.trim().parse().ok()).collect())
}
