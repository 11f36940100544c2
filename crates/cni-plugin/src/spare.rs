//! State files whose inodes are used again instead of being freed and allocated anew.
//!
//! The plugins keep small state files that ADD writes and DEL removes. Allocating an inode and
//! freeing one (with its data block) is the slow part of such a write on common setups: ext4
//! without a journal skips over every inode freed in the last minutes when it allocates one
//! (0.05-0.3 ms per file on a node that churns pods), and a `discard` mount waits for the
//! device on every block freed. So a removed file or empty directory is moved into a spare dir,
//! and the next write takes it from there: a write is then an open, a pwrite and a rename, and
//! nothing is allocated or freed, as long as pods come and go a few dozen at a time.
//!
//! - A file appears whole or not at all: its content goes into a spare, which nothing reads,
//!   and the spare is then renamed into place. A writer killed half way leaves a spare.
//! - At most [`SLOTS`] spares are kept (a removed entry takes a free slot, or is deleted when a
//!   few tries find none), so churn on a node with thousands of pods leaves a few hundred KiB,
//!   not a block per pod it ever had. A fresh file or directory is made only when no spare is
//!   left.
//! - A spare with more than one link (a writer killed between the link(2) and the unlink of the
//!   fallback for filesystems without `RENAME_NOREPLACE`) is never written into.
//!
//! Callers serialise the writes to one store (they hold its lock), and keep the spare dir on
//! the same filesystem as the files.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Tells apart the names this process gives fresh files, and spreads the slots it tries.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// How many unusable spares one write steps over before it makes a fresh file, and how many
/// slots a removal tries before it deletes.
const TRIES: usize = 4;

/// The spare dir's capacity: spares are named by slot, `0` to `SLOTS - 1`.
pub const SLOTS: u32 = 64;

/// Larger files are not kept (state files are a few hundred bytes).
const MAX_SPARE: u64 = 64 * 1024;

/// The spare dir of one store.
#[derive(Debug, Clone)]
pub struct Spares {
    dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

#[derive(Debug, PartialEq, Eq)]
enum Retired {
    Kept(PathBuf),
    Removed,
    Missing,
}

impl Spares {
    /// Spares kept in `dir`, which is created when first needed.
    pub fn new(dir: impl Into<PathBuf>) -> Spares {
        Spares { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces `dest` (or creates it) with `bytes`, whole. Its directory must exist.
    pub fn write(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let src = self.filled(bytes)?;
        // On failure the filled spare stays a spare.
        fs::rename(&src, dest)
    }

    /// Creates `dest` with `bytes`, whole; false when something is at `dest` already, which is
    /// decided atomically (the name is never replaced).
    pub fn write_new(&self, dest: &Path, bytes: &[u8]) -> io::Result<bool> {
        let src = self.filled(bytes)?;
        match rename_noreplace(&src, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) if unsupported(&e) => match fs::hard_link(&src, dest) {
                // link(2) refuses a taken name as well; the spare's name then goes.
                Ok(()) => fs::remove_file(&src).map(|()| true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Creates the empty directory `dest`; false when something is there already.
    pub fn create_dir(&self, dest: &Path) -> io::Result<bool> {
        if let Some(spare) = self.take(Kind::Dir)? {
            match rename_noreplace(&spare, dest) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
                // No RENAME_NOREPLACE, or no parent: mkdir decides (and says why).
                Err(_) => {}
            }
        }
        match fs::create_dir(dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `path`, keeping its inode as a spare; false when nothing was there. The spare's
    /// bytes are blanked (spaces, written in place so no block is freed): no file left behind
    /// names a pod that is gone, to an operator's grep or to upstream host-local's walk.
    pub fn remove_file(&self, path: &Path) -> io::Result<bool> {
        // Only regular files become spares: anything else is removed (or refused) as before.
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return fs::remove_file(path).map(|()| true),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        match self.retire(path, || fs::remove_file(path))? {
            Retired::Kept(spare) => {
                let blanked = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&spare)
                    .and_then(|f| {
                        let len = f.metadata()?.len();
                        if len > MAX_SPARE {
                            return Err(ErrorKind::FileTooLarge.into());
                        }
                        f.write_all_at(&vec![b' '; len as usize], 0)
                    });
                if blanked.is_err() {
                    let _ = fs::remove_file(&spare);
                }
                Ok(true)
            }
            Retired::Removed => Ok(true),
            Retired::Missing => Ok(false),
        }
    }

    /// Removes the directory `path` if it is empty, keeping its inode as a spare; false when it
    /// is missing or not empty.
    pub fn remove_dir(&self, path: &Path) -> io::Result<bool> {
        match find_entry(path, |_, _| true) {
            Ok(None) if path.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(self.retire(path, || fs::remove_dir(path))? != Retired::Missing)
    }

    /// Moves `path` into a free slot of the spare dir; `remove` where none is found.
    fn retire(&self, path: &Path, remove: impl Fn() -> io::Result<()>) -> io::Result<Retired> {
        let gone = |r: io::Result<()>| match r {
            Ok(()) => Ok(Retired::Removed),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Retired::Missing),
            Err(e) => Err(e),
        };
        let mut made_dir = false;
        let first = std::process::id().wrapping_add(SEQ.fetch_add(1, Ordering::Relaxed));
        for i in 0..TRIES as u32 {
            // From a start that differs per call, slots a quarter of the range apart.
            let slot = first.wrapping_add(i.wrapping_mul(SLOTS / 4 + 1)) % SLOTS;
            let spare = self.dir.join(slot.to_string());
            match rename_noreplace(path, &spare) {
                Ok(()) => return Ok(Retired::Kept(spare)),
                // Taken: try another slot.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == ErrorKind::NotFound && !made_dir => {
                    // Either `path` is missing or the spare dir is: make the latter and retry.
                    if fs::symlink_metadata(path).is_err() {
                        return Ok(Retired::Missing);
                    }
                    made_dir = true;
                    fs::create_dir_all(&self.dir)?;
                }
                Err(_) => break,
            }
        }
        gone(remove())
    }

    /// A spare file holding `bytes` (and nothing else), ready to be renamed into place.
    fn filled(&self, bytes: &[u8]) -> io::Result<PathBuf> {
        for _ in 0..TRIES {
            let Some(path) = self.take(Kind::File)? else {
                break;
            };
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path);
            if let Ok(f) = f {
                let m = f.metadata()?;
                if m.is_file() && m.nlink() == 1 {
                    f.write_all_at(bytes, 0)?;
                    if m.len() > bytes.len() as u64 {
                        f.set_len(bytes.len() as u64)?;
                    }
                    return Ok(path);
                }
            }
            // Not a file we alone have: not a spare.
            let _ = fs::remove_file(&path);
        }
        self.fresh(bytes)
    }

    /// A new file in the spare dir holding `bytes`.
    fn fresh(&self, bytes: &[u8]) -> io::Result<PathBuf> {
        let mut made_dir = false;
        loop {
            // Not a slot name: renamed away at once, it only stays if its writer is killed.
            let path = self.dir.join(format!(
                "new.{}.{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path);
            match f {
                Ok(mut f) => {
                    f.write_all(bytes)?;
                    return Ok(path);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == ErrorKind::NotFound && !made_dir => {
                    made_dir = true;
                    fs::create_dir_all(&self.dir)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The first spare of `kind`, if any. Entries of other types (not made here) are removed.
    fn take(&self, kind: Kind) -> io::Result<Option<PathBuf>> {
        let mut junk = Vec::new();
        let found = find_entry(&self.dir, |name, t| match t {
            libc::DT_REG => kind == Kind::File,
            libc::DT_DIR => kind == Kind::Dir,
            // The filesystem does not say: opening or renaming it will.
            libc::DT_UNKNOWN => true,
            _ => {
                junk.push(name.to_owned());
                false
            }
        });
        for name in junk {
            let _ = fs::remove_file(self.dir.join(name));
        }
        match found {
            Ok(name) => Ok(name.map(|n| self.dir.join(n))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(ErrorKind::InvalidInput))
}

/// rename(2) that fails with EEXIST instead of replacing.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (cstr(from)?, cstr(to)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The filesystem (or kernel) has no `RENAME_NOREPLACE`.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// The first entry of `dir` (not `.` or `..`) for which `pick(name, d_type)` holds. It reads
/// entries a few at a time, so the cost does not grow with the size of the directory when one
/// is found early (`fs::read_dir` asks for 32 KiB of them at once).
pub fn find_entry(
    dir: &Path,
    mut pick: impl FnMut(&OsStr, u8) -> bool,
) -> io::Result<Option<std::ffi::OsString>> {
    let file = File::open(dir)?;
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                file.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(None);
        }
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        let mut off = 0;
        while off + 19 <= n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen < 19 || off + reclen > n as usize {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "malformed directory entry",
                ));
            }
            let d_type = buf[off + 18];
            let raw = &buf[off + 19..off + reclen];
            let name =
                OsStr::from_bytes(&raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())]);
            if name != "." && name != ".." && pick(name, d_type) {
                return Ok(Some(name.to_owned()));
            }
            off += reclen;
        }
    }
}

#[cfg(test)]
mod tests;
