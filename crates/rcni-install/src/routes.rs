//! Routes to the other nodes are rroutes' business: the installer runs its `sync` subcommand
//! rather than touching the kernel itself, so there is one implementation of what "installed by
//! rcni" means for a route.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `rroutes sync --conflist FILE`: ensures the file's hostRoutes and removes the routes rroutes
/// installed that it no longer lists.
pub fn sync(rroutes: &Path, conflist: &Path) -> Result<()> {
    let out = Command::new(rroutes)
        .arg("sync")
        .arg("--conflist")
        .arg(conflist)
        .output()
        .with_context(|| format!("running {}", rroutes.display()))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        bail!(
            "{} sync --conflist {} failed ({}): {msg}",
            rroutes.display(),
            conflist.display(),
            out.status
        );
    }
    Ok(())
}
