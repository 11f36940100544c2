//! Locating binaries, temporary directories and the root check.

use std::io::ErrorKind;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Directory holding the workspace's built plugin binaries.
///
/// `RCNI_BIN_DIR` wins so scripts can point tests at release builds or an install tree. Otherwise
/// it is derived from the running test executable, which cargo puts in `target/<profile>/deps/`
/// (or `examples/`): its grandparent is `target/<profile>`, where `cargo build --bins` puts the
/// plugins. This follows `CARGO_TARGET_DIR` and the profile without any configuration.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RCNI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("cannot determine the test executable's path");
    let parent = exe
        .parent()
        .expect("test executable has no parent directory");
    match parent.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => parent.parent().unwrap_or(parent).to_path_buf(),
        _ => parent.to_path_buf(),
    }
}

/// Path of the workspace plugin binary `name`; panics if it was not built, because a test running
/// against a stale or missing binary would test nothing.
pub fn plugin_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "plugin binary {name} not found at {}: run `cargo build --workspace --bins` first \
             (scripts/test does)",
            path.display()
        );
    }
    path
}

/// Directory of the upstream reference plugins (containernetworking-plugins), used to compare
/// behaviour and to chain with them. `RCNI_UPSTREAM_DIR` overrides the Debian location.
pub fn upstream_dir() -> PathBuf {
    std::env::var_os("RCNI_UPSTREAM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// Path of the upstream plugin `name`; panics if missing so comparison tests never pass vacuously.
pub fn upstream_bin(name: &str) -> PathBuf {
    let path = upstream_dir().join(name);
    if !path.is_file() {
        panic!(
            "upstream plugin {name} missing at {}: apt-get install containernetworking-plugins \
             (scripts/test does)",
            path.display()
        );
    }
    path
}

/// A `CNI_PATH` that finds our plugins first and upstream ones after, for chains and delegation
/// tests that mix both.
pub fn cni_path_with_upstream() -> String {
    format!("{}:{}", bin_dir().display(), upstream_dir().display())
}

/// Panics unless the effective uid is 0: netns tests cannot work otherwise, and must not skip.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        panic!("this test needs root (euid is {euid}): run it as root (scripts/test does)");
    }
}

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory removed recursively on drop (IPAM data dirs, fake plugins, config files).
///
/// Dereferences to [`Path`], so `dir.join("x")` and `dir.display()` work directly.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

/// Creates a fresh, empty directory `<tmp>/<prefix>-<pid>-<n>`.
///
/// The pid keeps concurrent test processes apart, the counter keeps threads apart; a leftover from
/// an earlier run with the same pid is skipped rather than reused, so tests always start empty.
pub fn temp_dir(prefix: &str) -> TempDir {
    temp_dir_in(&std::env::temp_dir(), prefix)
}

/// [`temp_dir`] under `base` instead of the system's temporary directory (e.g. a filesystem to
/// measure on).
pub fn temp_dir_in(base: &Path, prefix: &str) -> TempDir {
    let pid = std::process::id();
    for _ in 0..10_000 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{prefix}-{pid}-{n}"));
        match std::fs::create_dir(&path) {
            Ok(()) => return TempDir { path },
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temporary directory {}: {e}", path.display()),
        }
    }
    panic!(
        "cannot find a free temporary directory name for prefix {prefix} in {}",
        base.display()
    );
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                eprintln!("warning: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}
