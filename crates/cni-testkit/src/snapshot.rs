//! What a directory tree holds, to assert that a call changed nothing (or only what it should):
//! every path with its kind, mode, owner and bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a path holds, compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        content: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
    },
}

impl Entry {
    /// A file's bytes; nothing for directories and symlinks.
    pub fn content(&self) -> &[u8] {
        match self {
            Entry::File { content, .. } => content,
            _ => &[],
        }
    }
}

/// Paths relative to the snapshot's root.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Everything below `root`; empty when `root` does not exist.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound && dir == root => return,
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    for e in entries {
        let path = e.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(&path).unwrap();
        let entry = if meta.file_type().is_symlink() {
            Entry::Symlink {
                target: fs::read_link(&path).unwrap(),
            }
        } else if meta.is_dir() {
            walk(root, &path, out);
            Entry::Dir {
                mode: meta.mode() & 0o7777,
            }
        } else {
            Entry::File {
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                content: fs::read(&path).unwrap(),
            }
        };
        out.insert(rel, entry);
    }
}

/// Asserts two snapshots are equal, naming the paths that differ.
pub fn assert_same_tree(before: &Snapshot, after: &Snapshot) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("missing now: {}", k.display())),
            Some(w) if w != v => diffs.push(format!("changed: {}", k.display())),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("new: {}", k.display()));
        }
    }
    assert!(diffs.is_empty(), "tree differs:\n{}", diffs.join("\n"));
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::temp_dir;

    #[test]
    fn a_snapshot_sees_content_mode_and_kind_and_a_missing_root_is_empty() {
        let dir = temp_dir("testkit-snap");
        assert!(snapshot(&dir.join("absent")).is_empty());
        fs::create_dir(dir.join("d")).unwrap();
        fs::write(dir.join("d/f"), b"one").unwrap();
        std::os::unix::fs::symlink("d/f", dir.join("l")).unwrap();
        let before = snapshot(&dir);
        assert_eq!(before.len(), 3, "{before:?}");
        assert_eq!(before[Path::new("d/f")].content(), b"one");
        assert_same_tree(&before, &snapshot(&dir));

        fs::set_permissions(dir.join("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(snapshot(&dir), before, "a mode change is a change");
        fs::set_permissions(dir.join("d/f"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("d/f"), b"two").unwrap();
        assert_ne!(snapshot(&dir), before, "a content change is a change");
    }
}
