//! The agent's garbage collection: every `--gc-interval`, what the container runtime no longer
//! knows (CRI ListPodSandbox) is reclaimed through every network of the conf dir (the rcni-gc
//! crate: DEL of stale attachments, GC to the plugins, stale cache entries). Each reclaim is
//! logged with what it held and why; counts go to `/metrics`.
//!
//! After a reboot (the kernel's boot id differs from the one the agent kept in its state dir)
//! the first collection runs at once: nothing from before a reboot is alive, and the node's
//! pods are being recreated, needing the addresses. Otherwise it comes one interval after start,
//! as every later one: an agent restart alone (an upgrade rolling over the nodes, a crash loop)
//! leaks nothing, and the previous agent collected at most an interval ago.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::http::Shared;
use super::metrics::KindLabels;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// In the agent's state dir: the boot id of the last collection.
const LAST_BOOT: &str = "gc-boot-id";

/// The agent's GC flags.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Garbage collection")]
pub struct GcArgs {
    /// How often to reclaim what the runtime no longer knows (e.g. 5m, 30s); "off" for never.
    #[arg(long, env = "RCNI_GC_INTERVAL", default_value = "5m", value_parser = parse_interval)]
    pub gc_interval: Interval,
    /// Attachments set up this recently before the runtime's listing are kept (ADDs in flight,
    /// pods the runtime lists only once their sandbox runs).
    #[arg(long, env = "RCNI_GC_GRACE", default_value = "2m", value_parser = rcni_gc::parse_duration)]
    pub gc_grace: Duration,
    /// The container runtime's CRI socket: "auto" (containerd's
    /// unix:///run/containerd/containerd.sock or CRI-O's unix:///var/run/crio/crio.sock,
    /// whichever exists), or the one to use.
    #[arg(long, env = "RCNI_CRI_ENDPOINT", default_value = rcni_gc::cri::AUTO)]
    pub cri_endpoint: String,
    /// libcni's cache dir, the runtime's (its entries are in results/).
    #[arg(long, env = "RCNI_CNI_CACHE_DIR", default_value = rcni_gc::DEFAULT_CACHE_DIR)]
    pub cni_cache_dir: PathBuf,
    /// Run the plugins in this mount namespace, e.g. /proc/1/ns/mnt: the node's, from a
    /// container with the host's PID namespace (the DaemonSet), so that they find the node's
    /// iptables, nft and libc as when the runtime runs them [default: the agent's own].
    #[arg(long, env = "RCNI_GC_MOUNT_NS")]
    pub gc_mount_ns: Option<PathBuf>,
}

/// `--gc-interval`: a duration, or off.
#[derive(Debug, Clone, Copy)]
pub struct Interval(pub Option<Duration>);

fn parse_interval(s: &str) -> Result<Interval, String> {
    match s.trim() {
        "off" | "0" | "" => Ok(Interval(None)),
        d => rcni_gc::parse_duration(d).map(|d| Interval(Some(d))),
    }
}

/// Where one collection looks.
#[derive(Debug, Clone)]
pub struct Gc {
    pub args: GcArgs,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// Starts the periodic collection (unless `--gc-interval off`).
pub fn spawn(gc: Gc, shared: Arc<Shared>) {
    let Some(interval) = gc.args.gc_interval.0 else {
        info!("garbage collection off (--gc-interval)");
        return;
    };
    tokio::spawn(async move {
        let boot = std::fs::read_to_string(BOOT_ID).unwrap_or_default();
        let rebooted = last_boot(&gc.state_dir).as_deref() != Some(boot.trim());
        if rebooted {
            info!("first run since the node booted: garbage collection now");
        } else {
            tokio::time::sleep(interval).await;
        }
        loop {
            let g = gc.clone();
            let done = tokio::task::spawn_blocking(move || collect(&g)).await;
            let m = &shared.metrics;
            match done {
                Ok(Ok((counts, errors))) => {
                    if rebooted {
                        if let Err(e) = save_boot(&gc.state_dir, boot.trim()) {
                            warn!(error = format!("{e:#}"), "garbage collection");
                        }
                    }
                    for (kind, n) in counts.by_kind().into_iter().filter(|k| k.1 > 0) {
                        let kind = KindLabels { kind: kind.into() };
                        m.gc_reclaimed.get_or_create(&kind).inc_by(n);
                    }
                    m.gc_runs.inc();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    m.gc_last_run.set(now);
                    for e in errors {
                        m.count(&m.errors, "gc");
                        warn!(error = e, "garbage collection");
                    }
                }
                Ok(Err(e)) => {
                    m.count(&m.errors, "gc");
                    warn!(
                        error = format!("{e:#}"),
                        "garbage collection failed; next try in {interval:?}"
                    );
                }
                Err(e) => warn!(error = %e, "garbage collection panicked"),
            }
            tokio::time::sleep(interval).await;
        }
    });
}

/// One collection, logged: what it reclaimed and what failed; an error if it could not run
/// (the runtime did not answer, the conf dir cannot be read).
fn collect(gc: &Gc) -> Result<(rcni_gc::Counts, Vec<String>)> {
    let listing = rcni_gc::Listing::from_cri(&gc.args.cri_endpoint, Duration::from_secs(30))?;
    let opts = rcni_gc::Options {
        conf_dir: gc.conf_dir.clone(),
        bin_dirs: vec![gc.bin_dir.clone()],
        cache_dir: gc.args.cni_cache_dir.clone(),
        grace: gc.args.gc_grace,
        mount_ns: gc.args.gc_mount_ns.clone(),
        ..rcni_gc::Options::default()
    };
    let report = rcni_gc::collect(&opts, &listing)?;
    for w in &report.warnings {
        warn!("garbage collection: {w}");
    }
    for n in &report.networks {
        for r in &n.reclaims {
            info!(
                network = %n.name,
                container = %r.attachment.container_id,
                ifname = %r.attachment.ifname,
                why = %r.why,
                held = %r.held,
                "reclaimed"
            );
            if !r.left.is_empty() {
                warn!(network = %n.name, container = %r.attachment.container_id, left = %r.left, "not all reclaimed");
            }
        }
    }
    let counts = report.counts();
    let errors = report.errors();
    info!(
        source = %report.source,
        reclaimed = %counts,
        errors = errors.len(),
        "garbage collection done"
    );
    Ok((counts, errors))
}

fn last_boot(state_dir: &Path) -> Option<String> {
    std::fs::read_to_string(state_dir.join(LAST_BOOT))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Removes the boot id kept in the state dir (uninstall: the dir goes if nothing else is in it).
pub fn forget_boot(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(LAST_BOOT));
}

fn save_boot(state_dir: &Path, boot: &str) -> Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join(LAST_BOOT);
    let tmp = state_dir.join(format!(".{LAST_BOOT}.tmp"));
    std::fs::write(&tmp, format!("{boot}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_boot_ids() {
        assert!(parse_interval("off").unwrap().0.is_none());
        assert_eq!(
            parse_interval("30s").unwrap().0,
            Some(Duration::from_secs(30))
        );
        assert!(parse_interval("often").is_err());
        let dir = std::env::temp_dir().join(format!("rcni-gc-boot-{}", std::process::id()));
        assert_eq!(last_boot(&dir), None);
        save_boot(&dir, "abc").unwrap();
        assert_eq!(last_boot(&dir).as_deref(), Some("abc"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
