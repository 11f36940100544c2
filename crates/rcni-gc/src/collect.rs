//! One collection, network by network, as libcni's GCNetworkList does it and a little more:
//!
//! 1. Every attachment with state on the node (reservations, masquerade records, cache entries)
//!    is either known to the runtime, younger than the grace period (an ADD in flight, or done
//!    but not yet listed: containerd lists a sandbox only once its task runs), or stale.
//! 2. Each stale attachment gets a DEL through the chain in reverse, as the runtime would have
//!    sent it: with its cached result, netns, CNI_ARGS and capability args when libcni cached
//!    them (libcni does this for cached ones only; a runtime killed during ADD caches nothing),
//!    then its cache entry goes. Unlike libcni, a plugin's failure does not stop the others.
//!    Host veths it still has (those of its cached result, or rbridge's) are deleted last.
//! 3. GC (spec 1.1.0) goes to every plugin of the chain that supports 1.1.0 (VERSION), with the
//!    valid attachments: the runtime's, and the young ones. Plugins that do not (upstream
//!    portmap 1.1) are skipped. Unlike libcni, also for lists written for runtimes without 1.1.0
//!    (their ADD results are 1.0.0; GC returns none).
//! 4. The state is read again: what a stale attachment still holds is reported as left.
//!
//! The valid list alone cannot protect an ADD that starts after it was drawn up. The config of
//! every GC also carries [`cni_types::gc::KEEP_CREATED_AFTER`]: our plugins keep state created
//! after that instant whatever the list says.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use cni_types::{Attachment, CniResult, SpecVersion};
use serde_json::{json, Map, Value};

use crate::conf::{self, Network};
use crate::exec::{Env, Plugins};
use crate::report::{Held, NetworkReport, Reclaim, Report};
use crate::state::{self, Evidence, Key};

/// File timestamps come from the kernel's coarse clock, up to a tick behind the one the
/// listing's time is read from: an attachment set up just after the listing may carry a time a
/// few milliseconds before it.
const COARSE_CLOCK: Duration = Duration::from_millis(50);

/// Where and how to collect.
#[derive(Debug, Clone)]
pub struct Options {
    pub conf_dir: PathBuf,
    /// CNI_PATH: where the plugins are.
    pub bin_dirs: Vec<PathBuf>,
    /// libcni's cache dir (its results are in `results/`).
    pub cache_dir: PathBuf,
    /// Attachments changed this recently before the listing are kept.
    pub grace: Duration,
    /// Find and report only; run no plugin but VERSION.
    pub dry_run: bool,
    /// How long one plugin call may take.
    pub plugin_timeout: Duration,
    /// A mount namespace to run the plugins in (e.g. `/proc/1/ns/mnt`, the node's, seen from a
    /// container with the host's PID namespace): there they find the node's own tools and
    /// libraries (iptables, nft, upstream plugins' libc), as when the runtime runs them.
    pub mount_ns: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into()],
            cache_dir: crate::cache::DEFAULT_CACHE_DIR.into(),
            grace: Duration::from_secs(120),
            dry_run: false,
            plugin_timeout: Duration::from_secs(60),
            mount_ns: None,
        }
    }
}

/// The runtime's truth: which attachments are valid, and when that was so.
#[derive(Debug, Clone)]
pub struct Listing {
    pub source: String,
    pub taken_at: SystemTime,
    /// Sandboxes the runtime knows (CRI): every interface of theirs is valid.
    pub sandboxes: Option<BTreeSet<String>>,
    /// Attachments valid as such.
    pub attachments: BTreeSet<Key>,
}

impl Listing {
    /// `ListPodSandbox` of the runtime at `endpoint`, now.
    pub fn from_cri(endpoint: &str, timeout: Duration) -> Result<Listing> {
        let taken_at = SystemTime::now();
        let sandboxes = crate::cri::list_sandboxes(endpoint, timeout)?;
        let ids: BTreeSet<String> = sandboxes.into_iter().map(|s| s.id).collect();
        Ok(Listing {
            source: format!("{} pod sandboxes from CRI {endpoint}", ids.len()),
            taken_at,
            sandboxes: Some(ids),
            attachments: BTreeSet::new(),
        })
    }

    /// Exactly `valid` (e.g. an operator's file), now.
    pub fn from_attachments(source: &str, valid: Vec<Attachment>) -> Listing {
        Listing {
            source: format!("{} attachments from {source}", valid.len()),
            taken_at: SystemTime::now(),
            sandboxes: None,
            attachments: valid
                .into_iter()
                .map(|a| (a.container_id, a.ifname))
                .collect(),
        }
    }

    fn knows(&self, key: &Key) -> bool {
        self.attachments.contains(key)
            || self.sandboxes.as_ref().is_some_and(|s| s.contains(&key.0))
    }

    fn why_not(&self) -> &'static str {
        match self.sandboxes {
            Some(_) => "its sandbox is not known to the runtime",
            None => "not a valid attachment",
        }
    }
}

/// At most this many attachments are reclaimed at once.
const RECLAIM_THREADS: usize = 8;

/// One collection through every network of `opts.conf_dir`.
pub fn collect(opts: &Options, listing: &Listing) -> Result<Report> {
    if listing.sandboxes.as_ref().is_some_and(BTreeSet::is_empty) {
        // Not even the node's host-network pods: a runtime still starting, or the wrong one.
        bail!(
            "the runtime lists no pod sandbox at all ({}); not trusting that: nothing collected",
            listing.source
        );
    }
    let (networks, warnings) = conf::load(&opts.conf_dir)
        .map_err(|e| anyhow::anyhow!("reading the conf dir {}: {e}", opts.conf_dir.display()))?;
    let mut plugins = Plugins::new(opts.bin_dirs.clone(), opts.plugin_timeout);
    if let Some(ns) = &opts.mount_ns {
        plugins
            .in_mount_ns(ns)
            .map_err(|e| anyhow::anyhow!("opening the mount namespace {}: {e}", ns.display()))?;
    }
    let since = listing
        .taken_at
        .checked_sub(opts.grace + COARSE_CLOCK)
        .unwrap_or(UNIX_EPOCH);
    let run = Run {
        opts,
        listing,
        plugins: &plugins,
        since,
    };
    Ok(Report {
        dry_run: opts.dry_run,
        source: listing.source.clone(),
        networks: networks.iter().map(|n| run.network(n)).collect(),
        warnings,
    })
}

struct Run<'a> {
    opts: &'a Options,
    listing: &'a Listing,
    plugins: &'a Plugins,
    /// State changed at or after this instant is kept.
    since: SystemTime,
}

impl Run<'_> {
    fn network(&self, net: &Network) -> NetworkReport {
        let mut report = NetworkReport {
            name: net.name().to_string(),
            file: net.file.clone(),
            ..NetworkReport::default()
        };
        if net.disable_gc() {
            report.skipped = Some("the list sets disableGC".into());
            return report;
        }
        let found = match state::scan(net, &self.opts.cache_dir) {
            Ok(f) => f,
            Err(e) => {
                report
                    .errors
                    .push(format!("{e:#}; not collecting this network"));
                return report;
            }
        };
        let mut valid: BTreeSet<Key> = self.listing.attachments.clone();
        if let Some(ids) = &self.listing.sandboxes {
            // kubelet's pods have eth0; other interfaces of theirs are kept where seen.
            valid.extend(ids.iter().map(|id| (id.clone(), "eth0".to_string())));
        }
        let mut stale = Vec::new();
        for (key, e) in &found {
            if self.listing.knows(key) {
                report.listed += 1;
                valid.insert(key.clone());
            } else if e.newest.is_none_or(|t| t >= self.since) {
                report.young += 1;
                valid.insert(key.clone());
            } else {
                stale.push((key, e));
            }
        }
        report.reclaims = self.reclaim_all(net, &stale);
        self.gc(net, &valid, &mut report);
        if !self.opts.dry_run {
            self.what_is_left(net, &mut report);
        }
        report
    }

    /// Reclaims `stale` on a few threads at once: each is a DEL through the chain, whose time is
    /// mostly the plugins' exec and the kernel's, and the plugins lock what they share. In the
    /// order given.
    fn reclaim_all(&self, net: &Network, stale: &[(&Key, &Evidence)]) -> Vec<Reclaim> {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .clamp(1, RECLAIM_THREADS);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::with_capacity(stale.len()));
        std::thread::scope(|s| {
            for _ in 0..workers.min(stale.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((key, e)) = stale.get(i) else { break };
                    let r = self.reclaim(net, key, e);
                    done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                });
            }
        });
        let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }

    fn reclaim(&self, net: &Network, key: &Key, e: &Evidence) -> Reclaim {
        let candidates = state::veth_candidates(net, key, e);
        let mut errors = Vec::new();
        let veths = state::present_veths(&candidates).unwrap_or_else(|err| {
            errors.push(format!("{err:#}"));
            Vec::new()
        });
        let age = e
            .newest
            .and_then(|t| self.listing.taken_at.duration_since(t).ok())
            .map_or(String::new(), |d| format!("; set up {} ago", human(d)));
        let mut r = Reclaim {
            attachment: Attachment {
                container_id: key.0.clone(),
                ifname: key.1.clone(),
            },
            why: format!("{}{age}", self.listing.why_not()),
            held: Held {
                addresses: e.addresses.iter().copied().collect(),
                veths,
                masquerade: e.masquerade.iter().copied().collect(),
                cache_entry: e.cache.as_ref().map(|c| c.path.clone()),
            },
            left: Held::default(),
            errors,
        };
        if self.opts.dry_run {
            return r;
        }
        let del_errors = self.del(net, key, e);
        let ok = del_errors.is_empty();
        r.errors.extend(del_errors);
        if ok {
            if let Some(c) = &e.cache {
                if let Err(err) = std::fs::remove_file(&c.path) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        r.errors
                            .push(format!("removing {}: {err}", c.path.display()));
                    }
                }
            }
        }
        // What DEL could not reach: upstream bridge's veth when the cached netns path is gone
        // but the netns is not; rbridge's when its DEL failed.
        if let Err(err) = state::delete_veths(&r.held.veths) {
            r.errors.push(format!("deleting host veths: {err:#}"));
        }
        r
    }

    /// DEL through the chain in reverse; the errors of the plugins that failed.
    fn del(&self, net: &Network, key: &Key, e: &Evidence) -> Vec<String> {
        let (version, prev) = match self.del_version(net, e) {
            Ok(v) => v,
            Err(err) => return vec![err],
        };
        let env = Env {
            command: "DEL",
            container_id: key.0.clone(),
            ifname: key.1.clone(),
            netns: e
                .cache
                .as_ref()
                .map(|c| c.netns.clone())
                .unwrap_or_default(),
            args: e
                .cache
                .as_ref()
                .map(|c| c.cni_args_env())
                .unwrap_or_default(),
        };
        let mut errors = Vec::new();
        for i in (0..net.list.plugins.len()).rev() {
            let mut conf = self.plugin_conf(net, i, version);
            if let Some(p) = &prev {
                conf.insert("prevResult".into(), p.clone());
            }
            if let Some(c) = &e.cache {
                let rc: Map<String, Value> = net
                    .capabilities(i)
                    .into_iter()
                    .filter_map(|cap| Some((cap.clone(), c.capability_args.get(&cap)?.clone())))
                    .collect();
                if !rc.is_empty() {
                    conf.insert("runtimeConfig".into(), Value::Object(rc));
                }
            }
            let ty = net.plugin_type(i);
            let stdin = Value::Object(conf).to_string();
            if let Err(err) = self.plugins.run(ty, &env, stdin.as_bytes()) {
                errors.push(format!("{ty} DEL: {err}"));
            }
        }
        errors
    }

    /// The version of a DEL: that of the cached result (the ADD's), else the highest of the
    /// list's that every plugin supports; and the prevResult in it (0.4.0 on, as libcni).
    fn del_version(
        &self,
        net: &Network,
        e: &Evidence,
    ) -> Result<(SpecVersion, Option<Value>), String> {
        let mut supported: Option<BTreeSet<SpecVersion>> = None;
        for ty in net.types() {
            let v: BTreeSet<SpecVersion> = self.plugins.versions(ty)?.into_iter().collect();
            supported = Some(match supported {
                None => v,
                Some(s) => s.intersection(&v).copied().collect(),
            });
        }
        let supported = supported.unwrap_or_default();
        let cached = e
            .cache
            .as_ref()
            .and_then(|c| c.result.clone())
            .and_then(|r| {
                let v = SpecVersion::parse(r.get("cniVersion")?.as_str()?).ok()?;
                Some((v, r))
            });
        let version =
            match &cached {
                Some((v, _)) if supported.contains(v) => *v,
                _ => {
                    net.versions()
                        .into_iter()
                        .find(|v| supported.contains(v))
                        .ok_or_else(|| {
                            format!(
                        "no version of the list ({}) is supported by every plugin of the chain",
                        net.versions().iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                    )
                        })?
                }
            };
        let prev = match cached {
            Some((v, r)) if version >= SpecVersion::V0_4_0 => CniResult::from_value(&r, v)
                .and_then(|res| res.to_value(version))
                .ok(),
            _ => None,
        };
        Ok((version, prev))
    }

    /// GC to every plugin that supports 1.1.0.
    fn gc(&self, net: &Network, valid: &BTreeSet<Key>, report: &mut NetworkReport) {
        let list: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let since = self
            .since
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for i in 0..net.list.plugins.len() {
            let ty = net.plugin_type(i);
            match self.plugins.versions(ty) {
                Ok(v) if v.contains(&SpecVersion::V1_1_0) => {}
                Ok(v) => {
                    let top = v.iter().max().map_or("none", |v| v.as_str());
                    report.gc_skipped.push((
                        ty.to_string(),
                        format!("supports CNI up to {top}, GC needs 1.1.0"),
                    ));
                    continue;
                }
                Err(e) => {
                    report.errors.push(format!("GC: {e}"));
                    continue;
                }
            }
            report.gc_plugins.push(ty.to_string());
            if self.opts.dry_run {
                continue;
            }
            let mut conf = self.plugin_conf(net, i, SpecVersion::V1_1_0);
            conf.insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(list.clone()),
            );
            // libcni sends the spec's first name for the key too (containernetworking/cni#1101).
            conf.insert("cni.dev/attachments".into(), Value::Array(list.clone()));
            conf.insert(cni_types::gc::KEEP_CREATED_AFTER.into(), json!(since));
            let env = Env {
                command: "GC",
                ..Env::default()
            };
            let stdin = Value::Object(conf).to_string();
            if let Err(e) = self.plugins.run(ty, &env, stdin.as_bytes()) {
                report.errors.push(format!("{ty} GC: {e}"));
            }
        }
    }

    /// Plugin `index`'s config as libcni builds it: its keys plus the list's name and `version`.
    fn plugin_conf(&self, net: &Network, index: usize, version: SpecVersion) -> Map<String, Value> {
        let mut conf = net.list.plugins[index].clone();
        conf.insert("name".into(), net.name().into());
        conf.insert("cniVersion".into(), version.as_str().into());
        conf
    }

    fn what_is_left(&self, net: &Network, report: &mut NetworkReport) {
        let after = match state::scan(net, &self.opts.cache_dir) {
            Ok(a) => a,
            Err(e) => {
                report
                    .errors
                    .push(format!("reading the state again: {e:#}"));
                return;
            }
        };
        for r in &mut report.reclaims {
            let key = (
                r.attachment.container_id.clone(),
                r.attachment.ifname.clone(),
            );
            let now = after.get(&key).cloned().unwrap_or_default();
            let keep = |v: &[std::net::IpAddr], s: &BTreeSet<std::net::IpAddr>| {
                v.iter().copied().filter(|a| s.contains(a)).collect()
            };
            r.left = Held {
                addresses: keep(&r.held.addresses, &now.addresses),
                masquerade: keep(&r.held.masquerade, &now.masquerade),
                cache_entry: now.cache.map(|c| c.path),
                veths: state::present_veths(&r.held.veths).unwrap_or_else(|e| {
                    r.errors.push(format!("{e:#}"));
                    r.held.veths.clone()
                }),
            };
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(human(Duration::from_secs(3 * 86400)), "3d");
    }

    #[test]
    fn sandboxes_make_every_interface_valid_files_exact_pairs() {
        let key = |a: &str, b: &str| (a.to_string(), b.to_string());
        let cri = Listing {
            source: String::new(),
            taken_at: SystemTime::now(),
            sandboxes: Some(["s1".to_string()].into()),
            attachments: BTreeSet::new(),
        };
        assert!(cri.knows(&key("s1", "eth0")) && cri.knows(&key("s1", "net1")));
        assert!(!cri.knows(&key("s2", "eth0")));
        let file = Listing::from_attachments(
            "f",
            vec![Attachment {
                container_id: "s1".into(),
                ifname: "eth0".into(),
            }],
        );
        assert!(file.knows(&key("s1", "eth0")) && !file.knows(&key("s1", "net1")));
    }

    #[test]
    fn a_list_with_disable_gc_is_left_alone() {
        let dir = cni_testkit::temp_dir("gc-disabled");
        std::fs::write(
            dir.join("10-n.conflist"),
            r#"{"cniVersion":"1.1.0","name":"n","disableGC":true,"plugins":[{"type":"rbridge"}]}"#,
        )
        .unwrap();
        let opts = Options {
            conf_dir: dir.to_path_buf(),
            bin_dirs: vec![dir.join("none")],
            cache_dir: dir.join("cache"),
            ..Options::default()
        };
        let report = collect(&opts, &Listing::from_attachments("f", vec![])).unwrap();
        assert!(report.errors().is_empty(), "{report}");
        let text = report.to_string();
        assert!(
            text.contains("left alone: the list sets disableGC"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_runtime_listing_is_not_trusted() {
        let l = Listing {
            source: "0 pod sandboxes from CRI x".into(),
            taken_at: SystemTime::now(),
            sandboxes: Some(BTreeSet::new()),
            attachments: BTreeSet::new(),
        };
        let e = collect(&Options::default(), &l).unwrap_err().to_string();
        assert!(e.contains("no pod sandbox"), "{e}");
    }
}
