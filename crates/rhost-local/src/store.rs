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
//!     tmp/                   files being written, renamed into place at once
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
//! holding spaces, which IDs and ifnames cannot contain. A temporary file of a writer killed
//! before its rename may match, and deleting it is harmless. Upstream takes no other file for a
//! reservation: it reads addresses from names, and temporary files are not named by addresses.
//!
//! Crash safety: a reservation is written into tmp/ first and renamed to `<ip>` with
//! `RENAME_NOREPLACE` (link(2) where the filesystem lacks it), so it appears whole or not at all,
//! and the rename fails with EEXIST atomically if the address is taken; a refused temporary file
//! is removed at once, so nothing is left naming a pod whose ADD failed. tmp/ is cleared when
//! the lock is taken (what a killed writer left). A release unlinks the file. Every
//! writer holds the lock, so an empty or unreadable `<ip>` seen under the lock is a leftover of a
//! killed writer (upstream creates, then writes): it is reclaimed. The marker is written last; a
//! kill before that leaves a marker that no longer matches, so the next call rebuilds. The marker
//! and `last_reserved_ip.<set>` are rewritten in place (see `Store::overwrite`): a torn one is
//! a rebuild or a different search start, never a wrong answer.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cni_plugin::log::Logger;
use cni_plugin::statefile;
use cni_types::error::{CniError, Result, IO_FAILURE};
use nix::fcntl::{Flock, FlockArg};

use crate::netdir::{io_err, small_file, NetworkDir, Slot, LAST_RESERVED_PREFIX};
use crate::owner::Owner;
use crate::testhook::point;

mod index;

pub(crate) use index::Rebuilt;
pub use index::{key_file, parse_key_file};

pub const LOCK_FILE: &str = "lock";
pub const META_DIR: &str = ".rhost-local";
pub(crate) const SNAPSHOT: &str = ".snapshot";
const MARKER_HEADER: &str = "rhost-local index v2";

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
    /// Where files are written before they are renamed into place (see `cni_plugin::statefile`).
    tmp: PathBuf,
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
                // Upstream host-local creates its lock with 0750; the same mode whoever came first.
                .mode(0o750)
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
            tmp: meta.join("tmp"),
            meta,
        };
        store.clean_tmp()?;
        Ok(Some(store))
    }

    pub fn dir(&self) -> &NetworkDir {
        &self.net
    }

    /// How often this call rebuilt the index (0 when the marker was trusted).
    #[cfg(test)]
    pub fn rebuilds(&self) -> u32 {
        self.rebuilds
    }

    fn index(&self) -> PathBuf {
        self.meta.join("index")
    }

    /// Files are written in tmp/ only under the lock: whatever is there now was left by a kill
    /// (one may still be linked to a reservation, so it must not be reused).
    fn clean_tmp(&mut self) -> Result<()> {
        let n = statefile::clear_temp(&self.tmp)
            .map_err(|e| io_err(format!("clearing {}", self.tmp.display()), e))?;
        if n > 0 {
            point("tmp-cleaned");
            self.logger
                .debug(format!("removed {n} temp files left by a killed call"));
        }
        Ok(())
    }

    /// Takes `ip` for `owner`: true if it was free. The file appears whole or not at all, and
    /// a taken address is refused atomically, whoever took it.
    pub fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let target = self.net.ip_path(ip);
        let taken = statefile::create_new(&target, &self.tmp, &owner.to_bytes())
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
        remove_if_exists(&self.net.ip_path(ip))?;
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

    /// Rewrites the small file `path` in place (write, then cut to length), for the files
    /// rewritten on every call, as upstream writes `last_reserved_ip`: no new inode or block per
    /// call. Not atomic, and need not be: the marker is compared whole with the store's state,
    /// so a torn one only costs a rebuild, and a torn `last_reserved_ip` is where the next
    /// search starts, nothing more. Anything but a regular file there is replaced whole.
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

    /// Replaces `path` whole (see `cni_plugin::statefile`).
    fn write_atomic(&mut self, path: &Path, content: &[u8]) -> Result<()> {
        statefile::replace(path, &self.tmp, content)
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

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
