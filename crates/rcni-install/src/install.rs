//! Installing files atomically and removing exactly them again.
//!
//! Every file is written beside its target under a temporary name, fsynced, then renamed over
//! the target, and the directory fsynced: a runtime reading the conf dir or executing a plugin
//! sees the old file or the new one, never a part. What was installed is recorded in a manifest
//! in the state dir *before* it is written, so `down` knows it even after a crash halfway: each
//! file with the SHA-256 of what was written (a file someone has changed since is not ours to
//! remove), a copy of any file it replaced (restored on `down`), the directories it created, and
//! whether it synced routes.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::conflist::{self, NETWORK_NAME};
use crate::files::{remove_file_synced, restore, Current, TEMP_MARK};
use crate::routes;

pub use crate::files::{sha256, write_atomic, Backup};

/// The binaries installed, in the order of the chain.
pub const PLUGINS: [&str; 4] = ["rbridge", "rhost-local", "rmasq", "rroutes"];
/// Upstream plugins the image carries, installed where the node has none (see [`upstream_wanted`]).
pub const UPSTREAM: [&str; 2] = ["portmap", "loopback"];
pub const MANIFEST_FILE: &str = "installed.json";

#[derive(Debug, Clone)]
pub struct Layout {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub conflist_name: String,
}

impl Layout {
    pub fn conflist_path(&self) -> PathBuf {
        self.conf_dir.join(&self.conflist_name)
    }
    pub fn manifest_path(&self) -> PathBuf {
        self.state_dir.join(MANIFEST_FILE)
    }
    pub fn rroutes_path(&self) -> PathBuf {
        self.bin_dir.join("rroutes")
    }
}

/// What `down` reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// In creation order; removed in reverse, each only if empty.
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RoutesEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: PathBuf,
    /// Contents that count as ours: the last written, plus the previous one while a rewrite is
    /// under way (a crash between the manifest and the rename leaves either on disk).
    pub sha256: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesEntry {
    pub rroutes: PathBuf,
    pub conflist: PathBuf,
}

/// One file to install.
#[derive(Debug, Clone)]
pub struct Desired {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<Desired>,
    /// rroutes, recorded in the manifest: `down` removes the routes to other nodes with it.
    pub routes: Option<PathBuf>,
    /// Whether `up` runs `rroutes sync --conflist` after the files (static host routes); the
    /// node agent programs its routes itself.
    pub sync_routes: bool,
}

impl Plan {
    /// The four plugins from `src_dir`, the upstream plugins the conflist needs from
    /// `upstream_dir` (see [`upstream_wanted`]), and the conflist text.
    pub fn new(
        layout: &Layout,
        src_dir: &Path,
        upstream: &[PathBuf],
        conflist: &str,
        sync_routes: bool,
    ) -> Result<Plan> {
        let mut files = Vec::new();
        for name in PLUGINS {
            let src = src_dir.join(name);
            let content = fs::read(&src).with_context(|| {
                format!(
                    "plugin binary {} (build with `cargo build --release`, or point --src-dir at the binaries)",
                    src.display()
                )
            })?;
            files.push(Desired {
                path: layout.bin_dir.join(name),
                content,
                mode: 0o755,
            });
        }
        for src in upstream {
            let name = src
                .file_name()
                .context("upstream plugin path without a name")?;
            files.push(Desired {
                path: layout.bin_dir.join(name),
                content: fs::read(src).with_context(|| format!("reading {}", src.display()))?,
                mode: 0o755,
            });
        }
        files.push(Desired {
            path: layout.conflist_path(),
            content: conflist.as_bytes().to_vec(),
            mode: 0o644,
        });
        Ok(Plan {
            files,
            routes: Some(layout.rroutes_path()),
            sync_routes,
        })
    }
}

/// The upstream plugins (portmap for hostPort, loopback which containerd and CRI-O call for
/// every pod) to install from `dir`: each one the bin dir lacks, or that an earlier `up`
/// installed (so an upgrade of the image upgrades it too). One the node already has from its own
/// CNI package is left alone. Warns when the conflist's portmap is nowhere.
pub fn upstream_wanted(
    layout: &Layout,
    dir: &Path,
    manifest: Option<&Manifest>,
    warnings: &mut Vec<String>,
) -> Vec<PathBuf> {
    let mut wanted = Vec::new();
    for name in UPSTREAM {
        let target = layout.bin_dir.join(name);
        let ours = manifest.is_some_and(|m| m.files.iter().any(|e| e.path == target));
        let src = dir.join(name);
        if src.is_file() && (ours || !target.exists()) {
            wanted.push(src);
        } else if !target.exists() && name == "portmap" {
            warnings.push(format!(
                "the conflist chains portmap, which is neither in {} nor in {}: pods will fail to start until it is (Debian/Ubuntu: containernetworking-plugins)",
                layout.bin_dir.display(),
                dir.display()
            ));
        }
    }
    wanted
}

/// What one `up` did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub actions: Vec<String>,
    pub warnings: Vec<String>,
    /// Whether the conflist (or any file) was written in this call.
    pub changed: bool,
}

pub struct Installer {
    pub layout: Layout,
    pub dry_run: bool,
}

impl Installer {
    pub fn new(layout: Layout, dry_run: bool) -> Self {
        Installer { layout, dry_run }
    }

    pub fn load_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.layout.manifest_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not an rcni-install manifest", path.display()))
                .map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save_manifest(&self, m: &Manifest) -> Result<()> {
        let text = conflist::render_json(&serde_json::to_value(m)?);
        write_atomic(&self.layout.manifest_path(), text.as_bytes(), 0o644, None)
    }

    /// Installs `plan`: writes what differs from what is on disk, then syncs routes. Idempotent:
    /// a second call with the same plan writes nothing.
    pub fn up(&self, plan: &Plan) -> Result<Report> {
        let mut report = Report::default();
        let existing = self.load_manifest()?;
        let mut m = existing.clone().unwrap_or_default();
        let would = if self.dry_run { "would " } else { "" };

        for dir in [
            &self.layout.state_dir,
            &self.layout.bin_dir,
            &self.layout.conf_dir,
        ] {
            self.ensure_dir(dir, &mut m, &mut report)?;
        }
        self.remove_stale_temps(&mut report)?;
        let writes = self.record_writes(plan, &mut m, &mut report)?;
        let routes = plan.routes.as_ref().map(|rroutes| RoutesEntry {
            rroutes: rroutes.clone(),
            conflist: self.layout.conflist_path(),
        });
        if routes.is_some() && m.routes != routes {
            m.routes = routes;
        }

        if !self.dry_run && existing.as_ref() != Some(&m) {
            // Recorded first: a crash from here on leaves nothing `down` does not know about.
            self.save_manifest(&m)?;
        }
        for d in &writes {
            report
                .actions
                .push(format!("{would}install {}", d.path.display()));
            if !self.dry_run {
                write_atomic(&d.path, &d.content, d.mode, None)?;
            }
        }
        if !writes.is_empty() {
            report.changed = true;
            for e in &mut m.files {
                e.sha256.truncate(1);
            }
            if !self.dry_run {
                self.save_manifest(&m)?;
            }
        }
        report.warnings.extend(self.shadowing_conflists());
        self.sync_routes(plan, &mut report)?;
        Ok(report)
    }

    /// The files of `plan` that differ from what is on disk, each recorded in the manifest
    /// (with a backup of a file not ours that it replaces) before it is written.
    fn record_writes<'p>(
        &self,
        plan: &'p Plan,
        m: &mut Manifest,
        report: &mut Report,
    ) -> Result<Vec<&'p Desired>> {
        let mut writes = Vec::new();
        for d in &plan.files {
            let new = sha256(&d.content);
            let cur = Current::read(&d.path)?;
            match m.files.iter_mut().find(|e| e.path == d.path) {
                Some(e) => {
                    if let Current::File { sha256, mode, .. } = &cur {
                        if *sha256 == new && *mode == d.mode {
                            // On disk as wanted: drop hashes a crashed rewrite left.
                            e.sha256 = vec![new];
                            continue;
                        }
                    }
                    // First is what will be on disk; the others stay ours until it is.
                    e.sha256.retain(|h| *h != new);
                    e.sha256.insert(0, new);
                }
                None => {
                    let backup = match &cur {
                        Current::Missing => None,
                        _ => Some(self.backup(&d.path, &cur, m, report)?),
                    };
                    m.files.push(FileEntry {
                        path: d.path.clone(),
                        sha256: vec![new],
                        backup,
                    });
                }
            }
            writes.push(d);
        }
        Ok(writes)
    }

    fn sync_routes(&self, plan: &Plan, report: &mut Report) -> Result<()> {
        let Some(rroutes) = plan.routes.as_ref().filter(|_| plan.sync_routes) else {
            return Ok(());
        };
        let conflist = self.layout.conflist_path();
        if self.dry_run {
            report.actions.push(format!(
                "would run {} sync --conflist {}",
                rroutes.display(),
                conflist.display()
            ));
            Ok(())
        } else {
            routes::sync(rroutes, &conflist)
        }
    }

    /// Temporary files of a write that was interrupted (killed between create and rename): ours
    /// by their name, see [`temp_name`].
    fn remove_stale_temps(&self, report: &mut Report) -> Result<()> {
        let would = if self.dry_run { "would " } else { "" };
        for dir in [
            &self.layout.bin_dir,
            &self.layout.conf_dir,
            &self.layout.state_dir,
        ] {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(TEMP_MARK) && name.ends_with(".tmp") {
                    report
                        .actions
                        .push(format!("{would}remove leftover {}", e.path().display()));
                    if !self.dry_run {
                        remove_file_synced(&e.path())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Config files that sort before ours: the runtime (containerd, CRI-O) uses the first one
    /// by name, so ours would be ignored.
    fn shadowing_conflists(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(&self.layout.conf_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| {
                !n.starts_with('.')
                    && [".conf", ".conflist", ".json"]
                        .iter()
                        .any(|x| n.ends_with(x))
                    && *n < self.layout.conflist_name
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                format!(
                    "{} sorts before {} in {}: the runtime uses the first config file, so it, not rcni, configures pods",
                    n,
                    self.layout.conflist_name,
                    self.layout.conf_dir.display()
                )
            })
            .collect()
    }

    /// Undoes `up`: routes first (while rroutes is still installed), then the files, restoring
    /// any file they replaced, then the directories `up` created if they are empty. A file
    /// changed since `up` wrote it is left in place with a warning.
    pub fn down(&self, skip_routes: bool) -> Result<Report> {
        let mut report = Report::default();
        let would = if self.dry_run { "would " } else { "" };
        let Some(m) = self.load_manifest()? else {
            report.actions.push(format!(
                "nothing to remove: no manifest at {}",
                self.layout.manifest_path().display()
            ));
            return Ok(report);
        };

        self.remove_stale_temps(&mut report)?;
        if let Some(r) = m.routes.clone().filter(|_| !skip_routes) {
            self.remove_routes(&r, &mut report)?;
        }

        for e in m.files.iter().rev() {
            self.remove_file(e, &mut report)?;
        }

        report.actions.push(format!(
            "{would}remove {}",
            self.layout.manifest_path().display()
        ));
        for dir in m.created_dirs.iter().rev() {
            report.actions.push(format!(
                "{would}remove directory {} if empty",
                dir.display()
            ));
        }
        if self.dry_run {
            return Ok(report);
        }
        remove_file_synced(&self.layout.manifest_path())?;
        for dir in m.created_dirs.iter().rev() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => report
                    .warnings
                    .push(format!("{} is not empty: left in place", dir.display())),
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
        Ok(report)
    }

    /// Removes one file `up` wrote, or puts back the file it replaced; leaves it (with a
    /// warning) when someone changed it since.
    fn remove_file(&self, e: &FileEntry, report: &mut Report) -> Result<()> {
        let would = if self.dry_run { "would " } else { "" };
        let cur = Current::read(&e.path)?;
        let ours = match &cur {
            Current::Missing => true,
            Current::File { sha256, .. } => e.sha256.contains(sha256),
            Current::Symlink(_) => false,
        };
        if !ours {
            report.warnings.push(format!(
                "{} changed since rcni-install wrote it: left in place{}",
                e.path.display(),
                match &e.backup {
                    Some(Backup::File { copy, .. }) =>
                        format!(" (the file it replaced is kept at {})", copy.display()),
                    _ => String::new(),
                }
            ));
            return Ok(());
        }
        match &e.backup {
            None => {
                if !matches!(cur, Current::Missing) {
                    report
                        .actions
                        .push(format!("{would}remove {}", e.path.display()));
                    if !self.dry_run {
                        remove_file_synced(&e.path)?;
                    }
                }
            }
            Some(b) => {
                report.actions.push(format!(
                    "{would}restore {} as it was before",
                    e.path.display()
                ));
                if !self.dry_run {
                    restore(&e.path, b)?;
                }
            }
        }
        Ok(())
    }

    /// `rroutes sync` on a conflist with no hostRoutes, in the state dir: rroutes removes every
    /// route of its protocol, which is how both `rroutes sync` and the node agent mark theirs.
    fn remove_routes(&self, r: &RoutesEntry, report: &mut Report) -> Result<()> {
        let path = self.layout.state_dir.join("routes-cleanup.conflist");
        report.actions.push(format!(
            "{}run {} sync --conflist {} with no hostRoutes",
            if self.dry_run { "would " } else { "" },
            r.rroutes.display(),
            path.display()
        ));
        if self.dry_run {
            return Ok(());
        }
        let text = conflist::render_json(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": [{ "type": "rroutes", "hostRoutes": [] }],
        }));
        write_atomic(&path, text.as_bytes(), 0o644, None)?;
        routes::sync(&r.rroutes, &path).context(
            "removing the routes failed, nothing else was removed (`down --skip-routes` removes the files anyway)",
        )?;
        // The agent's routes went through nexthop objects of the same protocol.
        crate::hops::remove_all().context("removing the routes' nexthop objects")?;
        remove_file_synced(&path)
    }

    /// Creates `dir` and missing parents, recording each one created.
    fn ensure_dir(&self, dir: &Path, m: &mut Manifest, report: &mut Report) -> Result<()> {
        let mut missing = Vec::new();
        let mut p = Some(dir);
        while let Some(d) = p {
            if d.as_os_str().is_empty() || d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            p = d.parent();
        }
        for d in missing.into_iter().rev() {
            if self.dry_run {
                report
                    .actions
                    .push(format!("would create directory {}", d.display()));
            } else {
                fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
                report
                    .actions
                    .push(format!("created directory {}", d.display()));
            }
            if !m.created_dirs.contains(&d) {
                m.created_dirs.push(d);
            }
        }
        Ok(())
    }

    /// Keeps what is at `path` in the state dir, to be put back by `down`.
    fn backup(
        &self,
        path: &Path,
        cur: &Current,
        m: &mut Manifest,
        report: &mut Report,
    ) -> Result<Backup> {
        let would = if self.dry_run { "would " } else { "" };
        match cur {
            Current::Symlink(target) => {
                report.actions.push(format!(
                    "{would}replace symlink {} -> {} (restored by down)",
                    path.display(),
                    target.display()
                ));
                Ok(Backup::Symlink {
                    target: target.clone(),
                })
            }
            Current::File { mode, uid, gid, .. } => {
                let dir = self.layout.state_dir.join("backup");
                self.ensure_dir(&dir, m, report)?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let copy = dir.join(format!("{}-{name}", m.files.len()));
                report.actions.push(format!(
                    "{would}keep the existing {} as {} (restored by down)",
                    path.display(),
                    copy.display()
                ));
                if !self.dry_run {
                    let content =
                        fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                    write_atomic(&copy, &content, 0o600, None)?;
                }
                Ok(Backup::File {
                    copy,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                })
            }
            Current::Missing => unreachable!("nothing to back up"),
        }
    }
}
