//! Files as the installer writes them: whole (temporary name, fsync, rename, fsync of the
//! directory), with their mode and owner, and what is at a path now.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The file that was at a path before we wrote there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Backup {
    File {
        copy: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
    },
}

/// What is at a path now.
pub(crate) enum Current {
    Missing,
    File {
        sha256: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink(PathBuf),
}

impl Current {
    pub(crate) fn read(path: &Path) -> Result<Current> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Current::Missing),
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        };
        if meta.file_type().is_symlink() {
            return Ok(Current::Symlink(fs::read_link(path)?));
        }
        if !meta.is_file() {
            bail!(
                "{} exists and is not a file: refusing to replace it",
                path.display()
            );
        }
        let content = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Current::File {
            sha256: sha256(&content),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

pub(crate) fn restore(path: &Path, b: &Backup) -> Result<()> {
    match b {
        Backup::File {
            copy,
            mode,
            uid,
            gid,
        } => {
            let content = fs::read(copy)
                .with_context(|| format!("reading the kept copy {}", copy.display()))?;
            write_atomic(path, &content, *mode, Some((*uid, *gid)))?;
            remove_file_synced(copy)
        }
        Backup::Symlink { target } => {
            let tmp = temp_name(path);
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
            sync_parent(path)
        }
    }
}

/// Beside the target, hidden and ending in `.tmp`: libcni loads only `.conf`, `.conflist` and
/// `.json` from the conf dir, so a runtime never reads a half-written conflist either.
pub(crate) fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TEMP_MARK}{}.tmp", std::process::id()))
}

pub(crate) const TEMP_MARK: &str = ".rcni-install-";

/// Write beside, fsync, rename over, fsync the directory.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let tmp = temp_name(path);
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(content)
            .with_context(|| format!("writing {}", tmp.display()))?;
        if let Some((uid, gid)) = owner {
            // Only when it differs: chown needs CAP_CHOWN, which the DaemonSet drops.
            let meta = f.metadata()?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", tmp.display()))?;
            }
        }
        // After chown, which clears set-id bits; and past the umask.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

pub(crate) fn remove_file_synced(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

pub fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
