//! Small state files written whole: whoever reads one (another plugin call, upstream
//! host-local, an operator) sees the old content or the new, never a part, even if the writer is
//! killed half way. The content goes into a temporary file in a directory of the caller's (on
//! the same filesystem), which is then renamed into place. A writer killed before its rename
//! leaves that temporary file: callers clear their temporary directory under their lock, when
//! no other writer can be using it.
//!
//! Nothing is fsynced: plugins' state is rebuilt or repaired after a crash (a torn file after a
//! power loss reads as corrupt), and an fsync per pod would cost more than the whole call.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Tells apart the temporary files of one process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Replaces `dest` (or creates it) with `bytes`, whole. `tmp_dir` is created when missing.
pub fn replace(dest: &Path, tmp_dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_file(tmp_dir, bytes)?;
    fs::rename(&tmp, dest).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Creates `dest` with `bytes`, whole; false (and nothing written) when something is at `dest`
/// already, which is decided atomically: the name is never replaced.
pub fn create_new(dest: &Path, tmp_dir: &Path, bytes: &[u8]) -> io::Result<bool> {
    let tmp = temp_file(tmp_dir, bytes)?;
    let created = match rename_noreplace(&tmp, dest) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        // No RENAME_NOREPLACE here: link(2) refuses a taken name as well.
        Err(e) if unsupported(&e) => match fs::hard_link(&tmp, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    // Refused or linked: the temporary name goes, so no file is left naming what was asked.
    let _ = fs::remove_file(&tmp);
    created
}

/// Removes every entry of `tmp_dir` (what killed writers left); how many there were.
pub fn clear_temp(tmp_dir: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(tmp_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
        n += 1;
    }
    Ok(n)
}

/// A new file in `tmp_dir` holding `bytes`.
fn temp_file(tmp_dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut made_dir = false;
    loop {
        let path = tmp_dir.join(format!(
            "{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path);
        match file {
            Ok(mut f) => {
                return match f.write_all(bytes) {
                    Ok(()) => Ok(path),
                    Err(e) => {
                        let _ = fs::remove_file(&path);
                        Err(e)
                    }
                }
            }
            // A name left by an earlier process with the same pid.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == ErrorKind::NotFound && !made_dir => {
                made_dir = true;
                fs::create_dir_all(tmp_dir)?;
            }
            Err(e) => return Err(e),
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
) -> io::Result<Option<OsString>> {
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
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("cni-statefile-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn tmp(&self) -> PathBuf {
            self.0.join("tmp")
        }
        fn leftovers(&self) -> usize {
            fs::read_dir(self.tmp()).map_or(0, |d| d.count())
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn replace_writes_whole_files_and_leaves_no_temporary() {
        let d = Dir::new("replace");
        let f = d.0.join("record");
        replace(&f, &d.tmp(), b"first, longer content").unwrap();
        replace(&f, &d.tmp(), b"second").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"second");
        assert_eq!(d.leftovers(), 0);
        // A missing destination dir is an error, and nothing is left behind.
        assert!(replace(&d.0.join("no/such/dir"), &d.tmp(), b"x").is_err());
        assert_eq!(d.leftovers(), 0);
    }

    #[test]
    fn create_new_refuses_a_taken_name_and_leaves_nothing_of_the_refused_write() {
        let d = Dir::new("create");
        let f = d.0.join("10.1.0.5");
        assert!(create_new(&f, &d.tmp(), b"c1\r\neth0").unwrap());
        assert!(!create_new(&f, &d.tmp(), b"c2\r\neth0").unwrap());
        assert_eq!(fs::read(&f).unwrap(), b"c1\r\neth0");
        assert_eq!(
            d.leftovers(),
            0,
            "the refused content must not stay anywhere"
        );
    }

    #[test]
    fn clear_temp_removes_what_killed_writers_left() {
        let d = Dir::new("clear");
        assert_eq!(clear_temp(&d.tmp()).unwrap(), 0);
        fs::create_dir_all(d.tmp().join("dir")).unwrap();
        fs::write(d.tmp().join("1.0"), b"x").unwrap();
        assert_eq!(clear_temp(&d.tmp()).unwrap(), 2);
        assert_eq!(d.leftovers(), 0);
    }

    #[test]
    fn find_entry_reads_past_the_first_buffer() {
        let d = Dir::new("find");
        for i in 0..200 {
            fs::write(d.0.join(format!("entry-with-a-long-name-{i:04}")), b"").unwrap();
        }
        let found = find_entry(&d.0, |n, t| {
            assert_eq!(t, libc::DT_REG, "{n:?}");
            n == "entry-with-a-long-name-0199"
        })
        .unwrap();
        assert_eq!(
            found.as_deref(),
            Some(OsStr::new("entry-with-a-long-name-0199"))
        );
        assert_eq!(find_entry(&d.0, |n, _| n == "missing").unwrap(), None);
        assert!(find_entry(&d.0.join("nope"), |_, _| true).is_err());
    }
}
