//! The on-disk store, file for file what upstream host-local uses, so both plugins can serve one
//! network at the same time and a node can switch either way:
//!
//! ```text
//! <dataDir>/<network>/
//!   lock                     flock(2) held by every writer, theirs and ours
//!   <ip>                     a reservation: "<containerID>\r\n<ifname>" (old: "<containerID>")
//!   last_reserved_ip.<set>   the address last handed out from range set <set>
//!   .rhost-local/            ours only: the index
//!     index/.snapshot        every attachment's addresses at the last rebuild, sorted by key
//!     index/<id>@<ifname>    an attachment's addresses since then ("<id>": old reservations)
//!     marker                 the state of the store when the index was right (see below)
//!     spare/                 removed files, kept to be written again (`cni_plugin::spare`)
//! ```
//!
//! The reservation files are the truth; the index is a cache that makes ADD, DEL and CHECK cost
//! the same whatever the number of reservations (upstream reads every file on each call): a
//! lookup reads one small file, or binary-searches the snapshot. It is trusted only while the
//! marker matches: the network dir's and index/'s (dev, inode, ctime), and the content of each
//! `last_reserved_ip.<set>` with the state (inode, ctime, size, content) of the reservation it
//! names. Every change anyone makes to the set of reservations (create, unlink, rename, by us or
//! by upstream) changes the dir's ctime, which the kernel sets itself (it cannot be set back);
//! a change in the same tick of the coarse timestamp clock as our last one leaves it equal,
//! but every reservation upstream makes also rewrites `last_reserved_ip.<set>`, which the
//! marker covers (see [`Store::close`]), so no wait for the clock is needed. On a mismatch the index is
//! rebuilt from the files (read them all, write one snapshot): only then does the cost grow with
//! the number of reservations, as upstream's does on every call. Entries are also verified
//! against the file they name before use, and exclusivity never depends on the index at all:
//! the rename that makes a reservation refuses a taken address.
//!
//! Upstream's DEL walks subdirectories and deletes any file whose trimmed content is
//! `<id>\r\n<ifname>` or `<id>`. Index files cannot match: they start with a header line
//! holding spaces, which IDs and ifnames cannot contain. Nor can spares: a released file is
//! blanked as it becomes one (only a spare filled by a writer killed before its rename holds a
//! reservation's content, and deleting it costs a spare). Upstream takes no other file for a
//! reservation: it reads addresses from names, and spares are not named by addresses.
//!
//! Crash safety: a reservation is written into a spare first and renamed to `<ip>` with
//! `RENAME_NOREPLACE` (link(2) where the filesystem lacks it), so it appears whole or not at all,
//! and the rename fails with EEXIST atomically if the address is taken. A release moves the file
//! back to spare/ (up to 64 are kept), so pods that come and go allocate and free no inode. Every
//! writer holds the lock, so an empty or unreadable `<ip>` seen under the lock is a leftover of a
//! killed writer (upstream creates, then writes): it is reclaimed. The marker is written last; a
//! kill before that leaves a marker that no longer matches, so the next call rebuilds. The marker
//! and `last_reserved_ip.<set>` are rewritten in place (see `Store::overwrite`): a torn one is
//! a rebuild or a different search start, never a wrong answer.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cni_plugin::log::Logger;
use cni_plugin::spare::Spares;
use cni_types::error::{CniError, Result, IO_FAILURE};
use nix::fcntl::{Flock, FlockArg};

use crate::snapshot;
use crate::testhook::point;

pub const LOCK_FILE: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
pub const META_DIR: &str = ".rhost-local";
/// Upstream's separator between container ID and ifname.
const LINE_BREAK: &str = "\r\n";
const KEYS_HEADER: &str = "rhost-local reservations v1";
const SNAPSHOT: &str = ".snapshot";
const MARKER_HEADER: &str = "rhost-local index v2";

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> CniError {
    CniError::new(IO_FAILURE, format!("{what}: {e}"))
}

/// Who holds a reservation. `ifname` is None for reservations written before upstream recorded
/// it; those belong to every ifname of the container, as upstream treats them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub id: String,
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(id: &str, ifname: &str) -> Owner {
        Owner {
            id: id.to_string(),
            ifname: Some(ifname.to_string()),
        }
    }

    /// The same container in the old format (no ifname).
    pub fn old_format(&self) -> Owner {
        Owner {
            id: self.id.clone(),
            ifname: None,
        }
    }

    /// A reservation file's content, compared as upstream does (whitespace trimmed). None for an
    /// empty or binary file: a reservation whose writer was killed.
    pub fn parse(bytes: &[u8]) -> Option<Owner> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        if text.is_empty() || text.contains('\0') {
            return None;
        }
        Some(match text.split_once(LINE_BREAK) {
            Some((id, ifname)) => Owner {
                id: id.to_string(),
                ifname: Some(ifname.to_string()),
            },
            None => Owner {
                id: text.to_string(),
                ifname: None,
            },
        })
    }

    /// The file content upstream writes: `<id>\r\n<ifname>`, no trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.ifname {
            Some(ifname) => format!("{}{LINE_BREAK}{ifname}", self.id).into_bytes(),
            None => self.id.clone().into_bytes(),
        }
    }

    /// File name in index/: `<id>@<ifname>`, or `<id>` for the old format ('@' cannot be in an
    /// ID). None when the owner cannot be named that way; such owners are found by a scan.
    fn key_name(&self) -> Option<String> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c == '/' || c == '\0' || c.is_whitespace())
        };
        if !plain(&self.id) || self.id.contains('@') || self.id.starts_with('.') {
            return None;
        }
        let name = match &self.ifname {
            Some(ifname) if plain(ifname) => format!("{}@{ifname}", self.id),
            Some(_) => return None,
            None => self.id.clone(),
        };
        (name.len() <= 255).then_some(name)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ifname {
            Some(i) => write!(f, "container {} ifname {i}", self.id),
            None => write!(f, "container {} (reservation without ifname)", self.id),
        }
    }
}

/// What `<dir>/<ip>` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Free,
    /// Empty or unreadable: a killed writer's leftover (meaningful under the lock only).
    Leftover,
    Held(Owner),
    /// A directory or symlink named like an address: nobody's reservation, left alone, but
    /// the address cannot be taken either.
    NotAFile,
}

/// Read-only view of a network dir, usable without the lock (STATUS).
#[derive(Debug, Clone)]
pub struct NetworkDir {
    pub dir: PathBuf,
}

impl NetworkDir {
    pub fn new(data_dir: &Path, network: &str) -> NetworkDir {
        NetworkDir {
            dir: data_dir.join(network),
        }
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    pub fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Whether anything at all is at `<ip>` (what link(2) would fail on).
    pub fn is_taken(&self, ip: IpAddr) -> bool {
        fs::symlink_metadata(self.ip_path(ip)).is_ok()
    }

    pub fn slot(&self, ip: IpAddr) -> Result<Slot> {
        let path = self.ip_path(ip);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Slot::Free),
            Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
            Ok(m) if !m.is_file() => return Ok(Slot::NotAFile),
            Ok(_) => {}
        }
        match fs::read(&path) {
            Ok(bytes) => Ok(Owner::parse(&bytes).map_or(Slot::Leftover, Slot::Held)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Slot::Free),
            Err(e) => Err(io_err(format!("reading {}", path.display()), e)),
        }
    }

    /// Like [`NetworkDir::slot`] for a name readdir reported as a regular file: open, one read,
    /// close (reservations are tiny); a scan of thousands of files spends its time here.
    fn read_slot(&self, ip: IpAddr) -> Result<Slot> {
        let path = self.ip_path(ip);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Slot::Free),
            Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
        };
        let mut buf = [0u8; 512];
        let mut len = 0;
        loop {
            match f.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
            }
            if len == buf.len() {
                // Longer than any reservation: read it all the slow way.
                return self.slot(ip);
            }
        }
        Ok(Owner::parse(&buf[..len]).map_or(Slot::Leftover, Slot::Held))
    }

    /// `last_reserved_ip.<set>`; None when missing or unreadable (round-robin restarts then,
    /// as upstream's does).
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

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

/// The locked store of one network. Drop releases the lock; call [`Store::close`] to record the
/// index marker (without it the next call rebuilds, which is always safe).
pub struct Store {
    net: NetworkDir,
    meta: PathBuf,
    _lock: Flock<File>,
    logger: Logger,
    /// The network dir or index/ changed: a new marker is due.
    dirty: bool,
    indexed: bool,
    rebuilds: u32,
    /// Where removed files go and new ones come from (see `cni_plugin::spare`).
    spares: Spares,
}

impl Store {
    /// Locks the store of `network`, creating it when `create` (ADD); None when it does not
    /// exist and `create` is false (DEL, CHECK, GC of a network that never had an address).
    pub fn open(
        data_dir: &Path,
        network: &str,
        create: bool,
        logger: &Logger,
    ) -> Result<Option<Store>> {
        let net = NetworkDir::new(data_dir, network);
        if !create && !net.exists() {
            return Ok(None);
        }
        let lock_path = net.dir.join(LOCK_FILE);
        let open_lock = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&lock_path)
        };
        // The dirs are made when missing, not checked on every call.
        let lock = match open_lock() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                mkdir(&net.dir, true)?;
                open_lock()
            }
            r => r,
        }
        .map_err(|e| io_err(format!("opening {}", lock_path.display()), e))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| {
            CniError::new(IO_FAILURE, format!("locking {}: {e}", lock_path.display()))
        })?;
        point("locked");
        let meta = net.dir.join(META_DIR);
        if !meta.join("index").is_dir() {
            for d in [meta.clone(), meta.join("index")] {
                mkdir(&d, false)?;
            }
        }
        let mut store = Store {
            net,
            _lock: lock,
            logger: logger.clone(),
            dirty: false,
            indexed: false,
            rebuilds: 0,
            spares: Spares::new(meta.join("spare")),
            meta,
        };
        store.clean_tmp()?;
        Ok(Some(store))
    }

    pub fn dir(&self) -> &NetworkDir {
        &self.net
    }

    /// How often this call rebuilt the index (0 when the marker was trusted).
    pub fn rebuilds(&self) -> u32 {
        self.rebuilds
    }

    fn index(&self) -> PathBuf {
        self.meta.join("index")
    }

    /// Earlier versions wrote temp files in tmp/, only under the lock: whatever is there now was
    /// left by a kill (one may still be linked to a reservation, so it must not be reused).
    fn clean_tmp(&mut self) -> Result<()> {
        let tmp = self.meta.join("tmp");
        let entries = match fs::read_dir(&tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(format!("listing {}", tmp.display()), e)),
        };
        let mut n = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
            n += 1;
            point("tmp-cleaned");
        }
        if n > 0 {
            self.logger
                .debug(format!("removed {n} temp files left by a killed call"));
        }
        Ok(())
    }

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

    /// Addresses that have a regular file in the network dir (file type from readdir).
    fn list_ips(&self) -> Result<Vec<IpAddr>> {
        let dir = &self.net.dir;
        let entries =
            fs::read_dir(dir).map_err(|e| io_err(format!("listing {}", dir.display()), e))?;
        Ok(entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
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
        let Some(listed) = self.indexed_ips(&name)? else {
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
            Ok(text) => return Ok(Some(parse_key_file(&text))),
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
            self.spares
                .remove_file(&path)
                .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
        } else {
            let mut ips = ips.to_vec();
            ips.sort();
            ips.dedup();
            self.write_atomic(&path, key_file(&ips).as_bytes())?;
        }
        point("key-updated");
        Ok(())
    }

    /// Takes `ip` for `owner`: true if it was free. The file appears whole or not at all, and
    /// a taken address is refused atomically, whoever took it.
    pub fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let target = self.net.ip_path(ip);
        let taken = self
            .spares
            .write_new(&target, &owner.to_bytes())
            .map_err(|e| io_err(format!("creating {}", target.display()), e))?;
        if taken {
            self.dirty = true;
            point("reservation-written");
        }
        Ok(taken)
    }

    /// Removes `<ip>` if (and only if) `owner` holds it, or it is a leftover.
    pub fn release(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        match self.net.slot(ip)? {
            Slot::Held(o) if &o == owner => {}
            Slot::Leftover => {}
            _ => return Ok(false),
        }
        let path = self.net.ip_path(ip);
        self.spares
            .remove_file(&path)
            .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
        self.dirty = true;
        point("released");
        Ok(true)
    }

    pub fn set_last_reserved(&mut self, set: usize, ip: IpAddr) -> Result<()> {
        let path = self.net.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        // No newline: upstream parses the whole content as an address.
        self.overwrite(&path, ip.to_string().as_bytes())?;
        self.dirty = true;
        point("last-reserved-written");
        Ok(())
    }

    /// Rewrites the small file `path` in place (write, then cut to length), for files rewritten
    /// on every call. Replacing one by rename frees the old file's block, which on a filesystem
    /// mounted with `discard` waits for a synchronous discard (0.2-0.3 ms each, measured on
    /// ext4); in place, nothing is freed. Not atomic, and need not be: the marker is compared
    /// whole with the store's state, so a torn one only costs a rebuild, and a torn
    /// `last_reserved_ip` is where the next search starts, nothing more (upstream writes it
    /// the same way). Anything but a regular file there is replaced as before.
    fn overwrite(&mut self, path: &Path, content: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path);
        let file = f.ok().and_then(|f| {
            let m = f.metadata().ok().filter(|m| m.is_file())?;
            Some((f, m.len()))
        });
        let Some((f, len)) = file else {
            return self.write_atomic(path, content);
        };
        f.write_all_at(content, 0)
            .and_then(|()| {
                // Cut only when shorter: even a truncation to the same length dirties the inode.
                if len > content.len() as u64 {
                    f.set_len(content.len() as u64)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| io_err(format!("writing {}", path.display()), e))
    }

    /// Replaces `path` whole (a spare written, then renamed).
    fn write_atomic(&mut self, path: &Path, content: &[u8]) -> Result<()> {
        self.spares
            .write(path, content)
            .map_err(|e| io_err(format!("writing {}", path.display()), e))
    }

    /// The marker text for the store as it is now: (dev, inode, ctime) of the network dir and
    /// index/, then for each `last_reserved_ip.<n>` (n = 0, 1, ... up to the first missing
    /// one) its content and the state of the reservation file it names (inode, ctime, size,
    /// content). See [`Store::close`] for why the contents make a wait for the clock needless.
    fn marker(&self) -> Result<String> {
        let mut text = format!("{MARKER_HEADER}\n");
        for dir in [&self.net.dir, &self.index()] {
            let m = fs::metadata(dir).map_err(|e| io_err(format!("stat {}", dir.display()), e))?;
            text.push_str(&format!(
                "{} {} {}.{:09}\n",
                m.dev(),
                m.ino(),
                m.ctime(),
                m.ctime_nsec()
            ));
        }
        for set in 0.. {
            let path = self.net.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
            let Some((_, last)) = small_file(&path)? else {
                text.push_str(&format!("last {set} -\n"));
                break;
            };
            text.push_str(&format!("last {set} {}", hex(&last)));
            let named = std::str::from_utf8(&last)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok());
            match named {
                Some(ip) => match small_file(&self.net.ip_path(ip))? {
                    Some((m, content)) => text.push_str(&format!(
                        " {ip} {} {}.{:09} {} {}\n",
                        m.ino(),
                        m.ctime(),
                        m.ctime_nsec(),
                        m.size(),
                        hex(&content)
                    )),
                    None => text.push_str(&format!(" {ip} -\n")),
                },
                None => text.push('\n'),
            }
        }
        Ok(text)
    }

    /// Records the index as right for the store as it is now, then unlocks.
    ///
    /// No wait for the timestamp clock is needed. A change someone else makes right after we
    /// unlock may land in the same clock tick and leave the dir's ctime as recorded, but every
    /// reservation upstream makes (ADD, requested addresses included) rewrites
    /// `last_reserved_ip.<n>` with the address it took, under the same lock. The recorded
    /// address cannot be taken again while its file exists, so the content changes; and if its
    /// file was released and taken again, the file's content (or inode) changes. Either way the
    /// marker no longer matches and the next call rebuilds. A release behind our back is
    /// harmless: index entries are verified against the file they name before any use.
    pub fn close(mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let text = self.marker()?;
        point("before-marker");
        self.overwrite(&self.meta.join("marker"), text.as_bytes())?;
        point("marker-written");
        Ok(())
    }
}

/// Up to 512 bytes of a regular file and its metadata; None if there is no regular file.
fn small_file(path: &Path) -> Result<Option<(fs::Metadata, Vec<u8>)>> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        // A symlink (ELOOP) or something else no writer of reservations makes: not a file.
        Err(_) => return Ok(None),
    };
    let m = f
        .metadata()
        .map_err(|e| io_err(format!("stat {}", path.display()), e))?;
    if !m.is_file() {
        return Ok(None);
    }
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
        }
    }
    buf.truncate(len);
    Ok(Some((m, buf)))
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "~".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mkdir(path: &Path, recursive: bool) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(recursive)
        .mode(0o755)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(io_err(format!("creating {}", path.display()), e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

fn key_file(ips: &[IpAddr]) -> String {
    let mut s = format!("{KEYS_HEADER}\n");
    for ip in ips {
        s.push_str(&format!("{ip}\n"));
    }
    s
}

fn parse_key_file(text: &str) -> Vec<IpAddr> {
    let mut lines = text.lines();
    if lines.next() != Some(KEYS_HEADER) {
        return Vec::new();
    }
    lines.filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests;
