//! The node agent (`rcni-install daemon`, the DaemonSet): watches the Node API with kube-rs's
//! watcher (list, then watch; reconnect with backoff; relist on 410 Gone), keeps this node's
//! conflist and binaries installed, and the routes to every other node's podCIDRs as the events
//! arrive. A route goes only when the API says its node is gone (a DELETED event, or a full list
//! without it), never because the API could not be reached.
//!
//! - `table`: nodes → wanted routes, one event at a time (pure).
//! - `metrics`, `http`: `/metrics`, `/healthz`, `/readyz`.
//! - `gc`: periodic garbage collection from the container runtime's truth.

pub mod gc;
mod http;
pub mod metrics;
pub mod table;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures::StreamExt;
use ipnet::IpNet;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::conflist::{portmap_versions, Inputs};
use crate::install::{upstream_wanted, Installer, Plan};
use crate::kube::{KubeConfig, PAGE};
use crate::nodes::Node;
use crate::routes::{default_route_mtu, NodeRoutes};
use table::{Delta, RouteOp, Table};

pub use http::DEFAULT_ADDR;

pub struct Options {
    pub installer: Installer,
    pub src_dir: PathBuf,
    /// Where the upstream plugins the conflist needs (portmap) are taken from.
    pub upstream_dir: PathBuf,
    pub cluster_cidrs: Vec<IpNet>,
    pub mtu: Option<u32>,
    /// See [`Inputs::plugin_state_dir`].
    pub plugin_state_dir: Option<PathBuf>,
    pub node_name: String,
    pub kube: KubeConfig,
    pub metrics_addr: Option<SocketAddr>,
    /// Every this often, the kernel's routes and the installed files are checked against what
    /// the agent knows (no API call): repairs what someone removed.
    pub resync: Duration,
    pub routes: bool,
    pub uninstall: bool,
    pub gc: gc::GcArgs,
}

/// Runs until SIGTERM or SIGINT.
pub fn run(opts: Options) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move { Agent::start(opts).await?.run().await })
}

struct Agent {
    opts: Options,
    shared: Arc<http::Shared>,
    table: Table,
    routes: Option<NodeRoutes>,
    /// The own podCIDRs the installed conflist was written for.
    installed_for: Option<Vec<IpNet>>,
    synced: bool,
    warned: HashSet<String>,
}

impl Agent {
    async fn start(mut opts: Options) -> Result<Agent> {
        let shared = Arc::new(http::Shared::new(opts.installer.layout.conflist_path()));
        if let Some(addr) = opts.metrics_addr {
            let local = http::serve(addr, shared.clone()).await?;
            info!(%local, "serving /metrics, /healthz and /readyz");
        }
        if opts.mtu.is_none() && !opts.uninstall {
            opts.mtu = detect_mtu().await;
        }
        if !opts.uninstall {
            let layout = &opts.installer.layout;
            let g = gc::Gc {
                args: opts.gc.clone(),
                conf_dir: layout.conf_dir.clone(),
                bin_dir: layout.bin_dir.clone(),
                state_dir: layout.state_dir.clone(),
            };
            gc::spawn(g, shared.clone());
        }
        let routes = match opts.routes && !opts.uninstall {
            true => Some(NodeRoutes::open()?),
            false => None,
        };
        Ok(Agent {
            table: Table::new(&opts.node_name),
            opts,
            shared,
            routes,
            installed_for: None,
            synced: false,
            warned: HashSet::new(),
        })
    }

    async fn run(mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        if self.opts.uninstall {
            return self.uninstall(&mut term, &mut int).await;
        }
        let api: Api<Node> = Api::all(self.opts.kube.client().await?);
        let config = watcher::Config::default().page_size(PAGE);
        let stream = watcher::watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut listed: Option<Vec<Node>> = None;
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + self.opts.resync,
            self.opts.resync,
        );
        let mut beat = tokio::time::interval(Duration::from_secs(5));
        self.shared
            .set_ready(false, "waiting for the first list of nodes");
        info!(node = %self.opts.node_name, "watching nodes");
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => self.on_event(ev, &mut listed).await,
                    Some(Err(e)) => {
                        // The watcher retries by itself, with backoff; nothing is removed meanwhile.
                        warn!(error = crate::kube::explain_watch(&e), "node watch failed; retrying");
                        self.shared.metrics.watch_restarts.inc();
                        self.shared.metrics.count(&self.shared.metrics.errors, "watch");
                    }
                    None => anyhow::bail!("the node watch ended"),
                },
                _ = resync.tick() => self.resync().await,
                _ = beat.tick() => self.shared.beat(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        info!("stopping; what was installed stays in place");
        Ok(())
    }

    /// `down`, then idle until stopped: how the DaemonSet cleans every node before deletion.
    async fn uninstall(
        &self,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
    ) -> Result<()> {
        gc::forget_boot(&self.opts.installer.layout.state_dir);
        loop {
            match self.opts.installer.down(false) {
                Ok(report) => {
                    for a in &report.actions {
                        info!("{a}");
                    }
                    self.shared.set_ready(true, "");
                    break;
                }
                Err(e) => {
                    error!(
                        error = format!("{e:#}"),
                        "uninstall failed; retrying in 10 s"
                    );
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
        let mut beat = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = beat.tick() => self.shared.beat(),
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
        }
    }

    async fn on_event(&mut self, ev: Event<Node>, listed: &mut Option<Vec<Node>>) {
        let arrived = Instant::now();
        let delta = match ev {
            Event::Init => {
                if self.synced {
                    info!("relisting nodes");
                }
                *listed = Some(Vec::new());
                return;
            }
            Event::InitApply(n) => {
                listed.get_or_insert_with(Vec::new).push(n);
                return;
            }
            Event::InitDone => {
                let nodes = listed.take().unwrap_or_default();
                let delta = self.table.replace_all(nodes);
                self.after_list(delta).await;
                return;
            }
            Event::Apply(n) => self.table.apply(n),
            Event::Delete(n) => self.table.delete(n.name()),
        };
        self.warn(&delta.warnings);
        if delta.own_changed {
            self.install();
            self.update_ready();
        }
        for op in &delta.ops {
            self.route(op, Some(arrived)).await;
        }
        self.gauges();
    }

    /// After a full list: files for this node, then the kernel's routes made exactly the wanted
    /// ones (the list is the truth about which nodes exist).
    async fn after_list(&mut self, delta: Delta) {
        self.warned.clear();
        self.warn(&delta.warnings);
        self.install();
        self.reconcile().await;
        self.synced = true;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.shared.metrics.last_sync.set(now);
        info!(
            nodes = self.table.node_count(),
            routes = self.routes.as_ref().map_or(0, NodeRoutes::count),
            "nodes listed and routes in step"
        );
        self.update_ready();
    }

    async fn resync(&mut self) {
        if self.synced {
            self.install();
            self.reconcile().await;
            self.update_ready();
        }
    }

    async fn reconcile(&mut self) {
        let Some(routes) = self.routes.as_mut() else {
            return;
        };
        let (counts, errors) = routes.reconcile(&self.table.desired()).await;
        let m = &self.shared.metrics;
        for (op, n) in [
            ("added", counts.added),
            ("replaced", counts.replaced),
            ("removed", counts.removed),
        ] {
            if n > 0 {
                info!(op, count = n, "routes reconciled");
                m.route_changes
                    .get_or_create(&metrics::OpLabels { op: op.into() })
                    .inc_by(n as u64);
            }
        }
        for e in errors {
            m.count(&m.errors, "route");
            warn!(error = format!("{e:#}"), "route to another node");
        }
        self.gauges();
    }

    async fn route(&mut self, op: &RouteOp, arrived: Option<Instant>) {
        let Some(routes) = self.routes.as_mut() else {
            return;
        };
        let m = &self.shared.metrics;
        match routes.apply(op).await {
            Ok(Some(what)) => {
                info!(op = what, route = %describe(op), "route to another node");
                m.count(&m.route_changes, what);
                if let Some(t) = arrived {
                    m.route_lag.observe(t.elapsed().as_secs_f64());
                }
            }
            Ok(None) => {}
            Err(e) => {
                m.count(&m.errors, "route");
                warn!(error = format!("{e:#}"), "route to another node");
            }
        }
    }

    /// This node's conflist and the binaries, written only where they differ.
    fn install(&mut self) {
        let Some(own) = self.table.own() else {
            self.shared.set_ready(
                false,
                "this node is not in the API's node list (check NODE_NAME)",
            );
            warn!(node = %self.opts.node_name, "this node is not in the node list (check NODE_NAME)");
            return;
        };
        let pod_cidrs = match own.pod_cidrs() {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                self.shared.set_ready(false, "this node has no podCIDR yet");
                warn!("this node has no podCIDR yet (kube-controller-manager --allocate-node-cidrs); waiting");
                return;
            }
            Err(e) => {
                self.shared
                    .set_ready(false, "this node's podCIDR is not valid");
                error!(error = format!("{e:#}"), "this node's podCIDR");
                return;
            }
        };
        let mut inputs = Inputs {
            pod_cidrs: pod_cidrs.clone(),
            cluster_cidrs: self.opts.cluster_cidrs.clone(),
            mtu: self.opts.mtu,
            plugin_state_dir: self.opts.plugin_state_dir.clone(),
            ..Inputs::default()
        };
        match self.write(&mut inputs) {
            Ok(()) => self.installed_for = Some(pod_cidrs),
            Err(e) => {
                let m = &self.shared.metrics;
                m.count(&m.errors, "install");
                self.shared
                    .set_ready(false, "installing failed (see the log)");
                error!(error = format!("{e:#}"), "installing");
            }
        }
    }

    fn write(&mut self, inputs: &mut Inputs) -> Result<()> {
        inputs.validate()?;
        let installer = &self.opts.installer;
        let mut warnings = Vec::new();
        let upstream = upstream_wanted(
            &installer.layout,
            &self.opts.upstream_dir,
            installer.load_manifest()?.as_ref(),
            &mut warnings,
        );
        inputs.portmap_versions =
            portmap_versions(&installer.layout.bin_dir, &upstream, &mut warnings);
        let plan = Plan::new(
            &installer.layout,
            &self.opts.src_dir,
            &upstream,
            &inputs.render(),
            false,
        )?;
        let mut plan = plan;
        if !self.opts.routes {
            plan.routes = None;
        }
        let report = installer.up(&plan)?;
        for a in &report.actions {
            info!("{a}");
        }
        warnings.extend(report.warnings);
        self.warn(&warnings);
        if report.changed {
            self.shared.metrics.installs.inc();
            let cidrs: Vec<String> = inputs.pod_cidrs.iter().map(|n| n.to_string()).collect();
            info!(pod_cidrs = cidrs.join(","), mtu = ?inputs.mtu, "conflist and plugins installed");
        }
        Ok(())
    }

    fn update_ready(&self) {
        match (&self.installed_for, self.synced) {
            (Some(_), true) => self.shared.set_ready(true, ""),
            (None, _) => {} // install() said why
            (_, false) => self
                .shared
                .set_ready(false, "waiting for the first list of nodes"),
        }
    }

    fn gauges(&self) {
        let m = &self.shared.metrics;
        m.nodes.set(self.table.node_count() as i64);
        m.routes
            .set(self.routes.as_ref().map_or(0, NodeRoutes::count) as i64);
    }

    /// Each warning once until the next full list: a node's status updates would repeat it.
    fn warn(&mut self, warnings: &[String]) {
        for w in warnings {
            if self.warned.insert(w.clone()) {
                warn!("{w}");
            }
        }
    }
}

fn describe(op: &RouteOp) -> String {
    match op {
        RouteOp::Set(r) => format!("{} via {}", r.dst, r.gw),
        RouteOp::Remove(d) => d.to_string(),
    }
}

async fn detect_mtu() -> Option<u32> {
    match default_route_mtu().await {
        Ok(Some((dev, mtu))) => {
            info!(
                dev,
                mtu, "MTU from the default route's interface (--mtu overrides)"
            );
            Some(mtu)
        }
        Ok(None) => {
            warn!("no default route: the bridge keeps rbridge's default MTU (--mtu sets one)");
            None
        }
        Err(e) => {
            warn!(
                error = format!("{e:#}"),
                "reading the default route's MTU; --mtu sets one"
            );
            None
        }
    }
}
