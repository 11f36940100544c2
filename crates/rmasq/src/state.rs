//! On-disk state, so DEL works from (network, containerID, ifname) alone and never removes what
//! another attachment still needs. Every operation is O(1) in the number of pods:
//!
//! ```text
//! <dir>/lock                                      flock held around every read-modify-write
//! <dir>/default-backend                           the detected backend, decided once
//! <dir>/attachments/<network>/<cid>:<ifname>      JSON Record: backend, (class, address) pairs
//! <dir>/classes/<id>.json                         JSON Class: enough to remove its rules
//! <dir>/members/<id>/<address>/<net>:<cid>:<if>   empty file: this attachment uses this address
//! <dir>/verified/<id>                             iptables chains when the class's rules were
//!                                                 last written or checked (a cache, see
//!                                                 `fingerprint::fingerprint`)
//! ```
//!
//! A file is written whole into a temporary file in its own directory and renamed into place;
//! nothing is fsynced (a torn write after a power loss reads as a corrupt record, which DEL
//! drops and GC sweeps). Every write holds the lock, so one temporary name per directory
//! ([`TEMP`]) serves them all: one left by a killed writer is taken over by the next write in
//! that directory, and readers skip it. Owner entries are empty, so they are created in place.
//! Removing unlinks, and a member dir goes (rmdir) with its last owner. A pod whose class
//! exists writes two files, its record and its owner entry, and (for a new address) makes a
//! member dir.
//!
//! Earlier versions kept removed files and member dirs in `<dir>/spare/` to use them again;
//! taking the lock removes what an upgrade left there.
//!
//! An address (and with the last address, its class) is removed from the firewall only when no
//! other attachment owns it, so a pod that reuses the address of a pod whose DEL never came keeps
//! its masquerade. ':' separates fields because neither IDs, ifnames nor network names contain it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cni_types::error::{CniError, Context, Result, DECODING_FAILURE, IO_FAILURE};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::class::{BackendKind, Class};
use cni_plugin::statefile::find_entry;

/// What one attachment added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) network: String,
    #[serde(rename = "containerID")]
    pub(crate) container_id: String,
    pub(crate) ifname: String,
    pub(crate) backend: BackendKind,
    pub(crate) entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    #[serde(deserialize_with = "crate::class::class_id")]
    pub(crate) class: String,
    pub(crate) address: IpAddr,
}

impl Record {
    pub(crate) fn owner(&self) -> String {
        owner_key(&self.network, &self.container_id, &self.ifname)
    }
}

pub(crate) fn owner_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}:{container_id}:{ifname}")
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

/// The store with its lock held; dropping it releases the lock.
pub(crate) struct Locked<'a> {
    store: &'a Store,
    _lock: Flock<File>,
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

/// The temporary file of a directory's writes. Its name holds ".tmp", which every listing of
/// the state skips.
const TEMP: &str = ".rmasq.tmp";

/// `bytes` into the temporary file of `dir`, then renamed to `path`.
fn write_then_rename(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(TEMP);
    // A leftover is truncated; a symlink in its place is refused, not followed.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Replaces `path` whole, creating its directory if needed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("state paths have a parent");
    let written = match write_then_rename(dir, path, bytes) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
            write_then_rename(dir, path, bytes)
        }
        r => r,
    };
    written.map_err(|e| io_err("cannot write", path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CniError::decode(format!("corrupt state file {}: {e}", path.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("cannot read", path, e)),
    }
}

/// A state file that does not decode (torn: nothing is fsynced) reads as absent where one file
/// must not fail the calls of every other attachment: GC's listings and the classes. Its
/// attachment's owner entries make it an orphan that GC sweeps (the record goes with them), and
/// the next ADD of a class writes the class's file again. Only an attachment's own record is
/// an error when corrupt: DEL then drops it (see `Masq::teardown`).
fn read_json_or_absent<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match read_json(path) {
        Err(e) if e.code == DECODING_FAILURE => Ok(None),
        r => r,
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("cannot remove", path, e)),
        _ => Ok(()),
    }
}

/// Removes `dir` if it is empty; a non-empty or missing dir is fine.
fn remove_dir_if_empty(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

/// True if `dir` has an entry whose name is not in `except`. Stops at the first such entry, so
/// the cost does not grow with the size of the directory.
fn has_entry_except(dir: &Path, except: &[String]) -> Result<bool> {
    let found = find_entry(dir, |name, _| {
        let name = name.to_string_lossy();
        !except.iter().any(|e| *e == name) && !name.contains(".tmp")
    });
    match found {
        Ok(found) => Ok(found.is_some()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("cannot list", dir, e)),
    }
}

impl Store {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock, creating the state dir on first use.
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| io_err("cannot create state dir", &self.dir, e))?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("cannot open lock", &path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("cannot lock", &path, e))?;
        self.remove_spares();
        Ok(Locked {
            store: self,
            _lock: lock,
        })
    }

    /// Earlier versions' spare dir (see the module doc), which nothing uses any more. Best
    /// effort, under the lock, as its users held it too.
    fn remove_spares(&self) {
        let spare = self.dir.join("spare");
        if fs::symlink_metadata(&spare).is_ok() {
            let _ = fs::remove_dir_all(&spare);
        }
    }

    pub(crate) fn default_backend_path(&self) -> PathBuf {
        self.dir.join("default-backend")
    }
}

impl Locked<'_> {
    fn dir(&self) -> &Path {
        &self.store.dir
    }

    fn record_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir()
            .join("attachments")
            .join(network)
            .join(format!("{container_id}:{ifname}"))
    }

    fn class_path(&self, id: &str) -> PathBuf {
        self.dir().join("classes").join(format!("{id}.json"))
    }

    fn member_dir(&self, class: &str, addr: IpAddr) -> PathBuf {
        self.dir()
            .join("members")
            .join(class)
            .join(addr.to_string())
    }

    pub(crate) fn record(&self, network: &str, cid: &str, ifname: &str) -> Result<Option<Record>> {
        read_json(&self.record_path(network, cid, ifname))
    }

    pub(crate) fn put_record(&self, r: &Record) -> Result<()> {
        let path = self.record_path(&r.network, &r.container_id, &r.ifname);
        let bytes = serde_json::to_vec(r).cni(IO_FAILURE, || "cannot encode state")?;
        write_atomic(&path, &bytes)
    }

    pub(crate) fn remove_record(&self, r: &Record) -> Result<()> {
        remove_file(&self.record_path(&r.network, &r.container_id, &r.ifname))
    }

    /// When the record of an attachment was written (its ADD), if it exists.
    pub(crate) fn record_modified(&self, r: &Record) -> Option<std::time::SystemTime> {
        let path = self.record_path(&r.network, &r.container_id, &r.ifname);
        fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    /// When an owner entry was created, if it exists.
    pub(crate) fn owner_modified(
        &self,
        class: &str,
        addr: IpAddr,
        owner: &str,
    ) -> Option<std::time::SystemTime> {
        let path = self.member_dir(class, addr).join(owner);
        fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    /// Every record of `network` (for GC, which is rare; the only call that lists all pods).
    pub(crate) fn records(&self, network: &str) -> Result<Vec<Record>> {
        let dir = self.dir().join("attachments").join(network);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(".tmp") {
                continue;
            }
            if let Some(r) = read_json_or_absent(&entry.path())? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub(crate) fn class(&self, id: &str) -> Result<Option<Class>> {
        read_json_or_absent(&self.class_path(id))
    }

    pub(crate) fn put_class(&self, c: &Class) -> Result<()> {
        let path = self.class_path(&c.id);
        let bytes = serde_json::to_vec(c).cni(IO_FAILURE, || "cannot encode state")?;
        write_atomic(&path, &bytes)
    }

    pub(crate) fn remove_class(&self, id: &str) -> Result<()> {
        remove_file(&self.verified_path(id))?;
        remove_file(&self.class_path(id))?;
        remove_dir_if_empty(&self.dir().join("members").join(id));
        Ok(())
    }

    fn verified_path(&self, id: &str) -> PathBuf {
        self.dir().join("verified").join(id)
    }

    /// The fingerprint stored when the class's iptables rules were last written or checked.
    pub(crate) fn verified(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.verified_path(id)).ok()
    }

    /// Stores a fingerprint. Best effort: without it, the next ADD checks the rules again.
    pub(crate) fn put_verified(&self, id: &str, fingerprint: &str) {
        let _ = write_atomic(&self.verified_path(id), fingerprint.as_bytes());
    }

    /// Every class of `backend`: one per network, subnet and policy, however many pods.
    pub(crate) fn classes(&self, backend: BackendKind) -> Result<Vec<Class>> {
        let dir = self.dir().join("classes");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            if let Some(c) = read_json_or_absent::<Class>(&entry.path())? {
                if c.backend == backend {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Does an attachment other than `owner` own `addr` in `class`?
    pub(crate) fn other_owners(&self, class: &str, addr: IpAddr, owner: &str) -> Result<bool> {
        has_entry_except(&self.member_dir(class, addr), &[owner.to_string()])
    }

    /// Does `class` have addresses other than `leaving`?
    pub(crate) fn other_members(&self, class: &str, leaving: &[IpAddr]) -> Result<bool> {
        let except: Vec<String> = leaving.iter().map(IpAddr::to_string).collect();
        has_entry_except(&self.dir().join("members").join(class), &except)
    }

    pub(crate) fn add_owner(&self, class: &str, addr: IpAddr, owner: &str) -> Result<()> {
        let dir = self.member_dir(class, addr);
        let path = dir.join(owner);
        if let Err(e) = File::create(&path) {
            if e.kind() != ErrorKind::NotFound {
                return Err(io_err("cannot create", &path, e));
            }
            let class_dir = dir.parent().expect("member dirs have a parent");
            fs::create_dir_all(class_dir).map_err(|e| io_err("cannot create", class_dir, e))?;
            match fs::create_dir(&dir) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                    return Err(io_err("cannot create", &dir, e));
                }
                _ => {}
            }
            File::create(&path).map_err(|e| io_err("cannot create", &path, e))?;
        }
        Ok(())
    }

    pub(crate) fn remove_owner(&self, class: &str, addr: IpAddr, owner: &str) -> Result<()> {
        let dir = self.member_dir(class, addr);
        remove_file(&dir.join(owner))?;
        // The member dir goes with its last owner; one that is still owned or gone is fine.
        match fs::remove_dir(&dir) {
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOENT)
                ) =>
            {
                return Err(io_err("cannot remove", &dir, e));
            }
            _ => {}
        }
        remove_dir_if_empty(dir.parent().expect("member dirs have a parent"));
        Ok(())
    }

    /// Owner files of `network` whose attachment has no record (left by a crash between writes),
    /// as (class, address, containerID, ifname). Scans every member: for GC only.
    pub(crate) fn orphan_owners(
        &self,
        network: &str,
    ) -> Result<Vec<(String, IpAddr, String, String)>> {
        let mut out = Vec::new();
        let root = self.dir().join("members");
        let Ok(classes) = fs::read_dir(&root) else {
            return Ok(out);
        };
        let prefix = format!("{network}:");
        for class in classes.flatten() {
            let class_id = class.file_name().to_string_lossy().into_owned();
            for addr in fs::read_dir(class.path()).into_iter().flatten().flatten() {
                let Ok(ip) = addr.file_name().to_string_lossy().parse::<IpAddr>() else {
                    continue;
                };
                for owner in fs::read_dir(addr.path()).into_iter().flatten().flatten() {
                    let name = owner.file_name().to_string_lossy().into_owned();
                    let Some(rest) = name.strip_prefix(&prefix) else {
                        continue;
                    };
                    let Some((cid, ifname)) = rest.split_once(':') else {
                        continue;
                    };
                    let path = self.record_path(network, cid, ifname);
                    if read_json_or_absent::<Record>(&path)?.is_none() {
                        out.push((class_id.clone(), ip, cid.to_string(), ifname.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
