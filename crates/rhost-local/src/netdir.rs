//! A network's directory of reservation files, read without the lock (STATUS) or under it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cni_types::error::{CniError, Result, IO_FAILURE};

use crate::owner::Owner;

/// Upstream's name of the file holding the address last handed out from range set `<n>`.
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

pub(crate) fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> CniError {
    CniError::new(IO_FAILURE, format!("{what}: {e}"))
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
    pub(crate) fn read_slot(&self, ip: IpAddr) -> Result<Slot> {
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

/// Up to 512 bytes of a regular file and its metadata; None if there is no regular file.
pub(crate) fn small_file(path: &Path) -> Result<Option<(fs::Metadata, Vec<u8>)>> {
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
