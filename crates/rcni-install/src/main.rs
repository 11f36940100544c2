use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use rcni_install::agent;
use rcni_install::conflist::{parse_cidr, portmap_versions, HostRoute, Inputs, CONFLIST_FILE};
use rcni_install::install::{upstream_wanted, Installer, Layout, Plan, Report};
use rcni_install::kube::{KubeConfig, SA_CA, SA_TOKEN};
use rcni_install::{nodes, routes};

/// Installs the rcni CNI plugins and this node's conflist, keeps the routes to the other nodes in
/// step, and removes exactly what it installed.
#[derive(Parser)]
#[command(name = "rcni-install", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the plugins and the conflist once, then sync routes (`rroutes sync`).
    Up(UpArgs),
    /// Remove what `up` or `daemon` installed (per the manifest in the state dir), nothing else.
    Down {
        /// Do not remove the routes `rroutes sync` installed (e.g. rroutes no longer runs).
        #[arg(long)]
        skip_routes: bool,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Print the conflist the inputs give; write nothing.
    Render {
        #[command(flatten)]
        inputs: InputArgs,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// In a cluster (the DaemonSet): watch the Node API, keep this node's conflist and the
    /// plugins installed and the routes to the other nodes in step as nodes join, change and
    /// leave; serve /metrics, /healthz and /readyz.
    Daemon(DaemonArgs),
}

/// Where the binaries to install come from.
#[derive(Args)]
struct Sources {
    /// Directory holding the plugin binaries to install [default: this program's directory].
    #[arg(long, env = "RCNI_SRC_DIR")]
    src_dir: Option<PathBuf>,
    /// Directory holding the upstream plugins the conflist chains (portmap), installed where
    /// the bin dir has none [default: --src-dir].
    #[arg(long, env = "RCNI_UPSTREAM_DIR")]
    upstream_dir: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    sources: Sources,
    /// Do not run `rroutes sync`.
    #[arg(long)]
    no_routes: bool,
    /// Print what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

#[derive(Args)]
struct DaemonArgs {
    #[command(flatten)]
    sources: Sources,
    /// Do not program routes to other nodes.
    #[arg(long)]
    no_routes: bool,
    /// How often the routes and installed files are checked against what the agent knows,
    /// repairing what someone removed (no API call; e.g. 5m, 30s).
    #[arg(long, env = "RCNI_RESYNC", default_value = "5m", value_parser = rcni_gc::parse_duration)]
    resync: Duration,
    /// Address of /metrics, /healthz and /readyz; "off" for none.
    #[arg(long, env = "RCNI_METRICS_ADDR", default_value = agent::DEFAULT_ADDR)]
    metrics_addr: String,
    /// Log format: text or json.
    #[arg(long, env = "RCNI_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Run `down` instead, then idle: how the DaemonSet cleans every node before deletion.
    #[arg(long, env = "RCNI_UNINSTALL", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    uninstall: bool,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    gc: agent::gc::GcArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Where")]
struct LayoutArgs {
    /// CNI bin dir, where the runtime finds plugins.
    #[arg(long, env = "RCNI_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    bin_dir: PathBuf,
    /// CNI conf dir, where the runtime finds conflists.
    #[arg(long, env = "RCNI_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// Where the manifest of what was installed (and copies of replaced files) is kept.
    #[arg(long, env = "RCNI_STATE_DIR", default_value = "/var/lib/rcni")]
    state_dir: PathBuf,
    /// File name of the conflist in the conf dir.
    #[arg(long, default_value = CONFLIST_FILE)]
    conflist_name: String,
}

#[derive(Args)]
#[command(next_help_heading = "Inputs")]
struct InputArgs {
    /// The cluster's pod network(s), not masqueraded (rmasq nonMasqueradeCIDRs); comma-separated
    /// or repeated, one per family for dual stack.
    #[arg(
        long = "cluster-cidr",
        env = "RCNI_CLUSTER_CIDRS",
        value_delimiter = ','
    )]
    cluster_cidrs: Vec<String>,
    /// MTU of the bridge and pod interfaces [default: that of the default route's interface].
    #[arg(long, env = "RCNI_MTU")]
    mtu: Option<u32>,
    /// Where the plugins keep their state: DIR/networks (the IPAM store, shared with upstream
    /// host-local) and DIR/rmasq [default: /var/lib/cni].
    #[arg(long, env = "RCNI_PLUGIN_STATE_DIR")]
    plugin_state_dir: Option<PathBuf>,
}

#[derive(Args)]
#[command(next_help_heading = "Node inputs from flags (a single host)")]
struct SourceArgs {
    /// This node's podCIDR(s); comma-separated or repeated, one per family for dual stack.
    #[arg(long = "pod-cidr", value_delimiter = ',', conflicts_with_all = ["kube", "nodes_file"])]
    pod_cidrs: Vec<String>,
    /// Route to another node's podCIDR through its address, DST=GW (rroutes hostRoutes); repeated.
    #[arg(long = "host-route", conflicts_with_all = ["kube", "nodes_file"])]
    host_routes: Vec<String>,
    /// Take the node inputs from a NodeList JSON file (`kubectl get nodes -o json`).
    #[arg(long, conflicts_with = "kube")]
    nodes_file: Option<PathBuf>,
    /// Take the node inputs from the Kubernetes API (in-cluster service-account config).
    #[arg(long)]
    kube: bool,
}

#[derive(Args)]
#[command(next_help_heading = "Kubernetes API")]
struct KubeArgs {
    /// This node's name in the node list (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// API server URL [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, env = "RCNI_API_SERVER")]
    api_server: Option<String>,
    /// Bearer token file.
    #[arg(long, env = "RCNI_TOKEN_FILE", default_value = SA_TOKEN)]
    token_file: PathBuf,
    /// CA bundle the API server's certificate is checked against (https only).
    #[arg(long, env = "RCNI_CA_FILE", default_value = SA_CA)]
    ca_file: PathBuf,
}

impl LayoutArgs {
    fn layout(&self) -> Result<Layout> {
        let name = &self.conflist_name;
        if name.contains('/') || name.starts_with('.') || !name.ends_with(".conflist") {
            bail!("--conflist-name {name:?}: a file name ending in .conflist");
        }
        Ok(Layout {
            bin_dir: self.bin_dir.clone(),
            conf_dir: self.conf_dir.clone(),
            state_dir: self.state_dir.clone(),
            conflist_name: name.clone(),
        })
    }
}

impl KubeArgs {
    fn node_name(&self) -> Result<&str> {
        self.node_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .context("the node's name is needed: --node-name or NODE_NAME")
    }
    fn config(&self) -> Result<KubeConfig> {
        KubeConfig::in_cluster(self.api_server.as_deref(), &self.token_file, &self.ca_file)
    }
}

impl InputArgs {
    fn cluster_cidrs(&self) -> Result<Vec<ipnet::IpNet>> {
        self.cluster_cidrs
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_cidr(s).context("--cluster-cidr"))
            .collect()
    }
}

/// The node's inputs, and warnings about other nodes that cannot be routed to.
fn resolve(
    inputs: &InputArgs,
    source: &SourceArgs,
    kube: &KubeArgs,
) -> Result<(Inputs, Vec<String>)> {
    let cluster = inputs.cluster_cidrs()?;
    let mtu = match inputs.mtu {
        Some(m) => Some(m),
        None => block_on(routes::default_route_mtu())?.map(|(ifname, mtu)| {
            eprintln!(
                "rcni-install: MTU {mtu}, from {ifname} (the default route's; --mtu overrides)"
            );
            mtu
        }),
    };
    if source.kube || source.nodes_file.is_some() {
        let nodes = match &source.nodes_file {
            Some(file) => {
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                nodes::parse_node_list(&bytes)
                    .with_context(|| file.display().to_string())?
                    .items
            }
            None => block_on(kube.config()?.list_nodes())?,
        };
        let (mut node_inputs, warnings) =
            nodes::inputs_for(kube.node_name()?, &nodes, &cluster, mtu)?;
        node_inputs.plugin_state_dir = inputs.plugin_state_dir.clone();
        return Ok((node_inputs, warnings));
    }
    let inputs = Inputs {
        pod_cidrs: source
            .pod_cidrs
            .iter()
            .map(|s| parse_cidr(s).context("--pod-cidr"))
            .collect::<Result<_>>()?,
        cluster_cidrs: cluster,
        host_routes: source
            .host_routes
            .iter()
            .map(|s| s.parse::<HostRoute>())
            .collect::<Result<_>>()?,
        mtu,
        plugin_state_dir: inputs.plugin_state_dir.clone(),
        portmap_versions: None,
    };
    inputs.validate()?;
    Ok((inputs, Vec::new()))
}

/// One API call or netlink read, for the one-shot subcommands.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

fn src_dir(arg: &Option<PathBuf>) -> Result<PathBuf> {
    match arg {
        Some(d) => Ok(d.clone()),
        None => {
            let exe = std::env::current_exe().context("locating this program")?;
            Ok(exe.parent().unwrap_or(Path::new("/")).to_path_buf())
        }
    }
}

fn print_report(report: &Report) {
    for a in &report.actions {
        println!("rcni-install: {a}");
    }
    for w in &report.warnings {
        eprintln!("rcni-install: warning: {w}");
    }
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("rcni-install: warning: {w}");
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Up(args) => up(args),
        Cmd::Down {
            layout,
            skip_routes,
            dry_run,
        } => {
            let report = Installer::new(layout.layout()?, dry_run).down(skip_routes)?;
            print_report(&report);
            Ok(())
        }
        Cmd::Render {
            inputs,
            source,
            kube,
        } => {
            let (inputs, warnings) = resolve(&inputs, &source, &kube)?;
            print_warnings(&warnings);
            print!("{}", inputs.render());
            Ok(())
        }
        Cmd::Daemon(args) => daemon(args),
    }
}

fn up(args: UpArgs) -> Result<()> {
    let UpArgs {
        layout,
        inputs,
        source,
        kube,
        sources: Sources {
            src_dir: src,
            upstream_dir,
        },
        no_routes,
        dry_run,
    } = args;
    let layout = layout.layout()?;
    let (mut inputs, mut warnings) = resolve(&inputs, &source, &kube)?;
    let src = src_dir(&src)?;
    let installer = Installer::new(layout.clone(), dry_run);
    let upstream = upstream_wanted(
        &layout,
        upstream_dir.as_deref().unwrap_or(&src),
        installer.load_manifest()?.as_ref(),
        &mut warnings,
    );
    inputs.portmap_versions = portmap_versions(&layout.bin_dir, &upstream, &mut warnings);
    let text = inputs.render();
    print_warnings(&warnings);
    let mut plan = Plan::new(&layout, &src, &upstream, &text, !no_routes)?;
    if no_routes {
        plan.routes = None;
    }
    let report = installer.up(&plan)?;
    print_report(&report);
    if dry_run {
        println!(
            "rcni-install: conflist {}:",
            layout.conflist_path().display()
        );
        print!("{text}");
    } else if !report.changed {
        println!("rcni-install: already up to date");
    }
    Ok(())
}

fn daemon(args: DaemonArgs) -> Result<()> {
    let DaemonArgs {
        layout,
        inputs,
        kube,
        sources: Sources {
            src_dir: src,
            upstream_dir,
        },
        no_routes,
        resync,
        metrics_addr,
        log_format,
        uninstall,
        gc,
    } = args;
    init_logging(&log_format);
    let src = src_dir(&src)?;
    let cluster_cidrs = inputs.cluster_cidrs()?;
    if cluster_cidrs.is_empty() && !uninstall {
        bail!("no cluster CIDR (--cluster-cidr or RCNI_CLUSTER_CIDRS): it is not in the Node API, and without it rmasq would masquerade pod-to-pod traffic");
    }
    let metrics_addr = match metrics_addr.as_str() {
        "off" | "" => None,
        a => Some(a.parse().with_context(|| {
            format!(
                "--metrics-addr {a:?}: expected IP:PORT (e.g. {}) or off",
                agent::DEFAULT_ADDR
            )
        })?),
    };
    agent::run(agent::Options {
        installer: Installer::new(layout.layout()?, false),
        upstream_dir: upstream_dir.unwrap_or_else(|| src.clone()),
        src_dir: src,
        cluster_cidrs,
        mtu: inputs.mtu,
        plugin_state_dir: inputs.plugin_state_dir,
        node_name: kube.node_name()?.to_string(),
        kube: kube.config()?,
        metrics_addr,
        resync,
        routes: !no_routes,
        uninstall,
        gc,
    })
}

/// Logs to stderr: text (default) or one JSON object per line; the level from RCNI_LOG
/// (e.g. `debug`, default `info`).
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RCNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcni-install: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
