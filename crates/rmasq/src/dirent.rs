//! The first matching entry of a directory, at a cost that does not grow with its size: the
//! state's member checks ask "does anyone else own this?" of directories that hold one entry
//! per pod of a class.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The first entry of `dir` (not `.` or `..`) for which `pick(name, d_type)` holds. It reads
/// entries a few at a time, so the cost does not grow with the size of the directory when one
/// is found early (`fs::read_dir` asks for 32 KiB of them at once).
pub(crate) fn find_entry(
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
mod tests;
