use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use rcni_install::conflist::{parse_cidr, HostRoute, Inputs, CONFLIST_FILE};
use rcni_install::install::{Installer, Layout, Plan, Report};
use rcni_install::kube::{KubeConfig, SA_CA, SA_TOKEN};
use rcni_install::{nodes, signal};

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
    Up {
        /// Directory holding the plugin binaries to install [default: this program's directory].
        #[arg(long, env = "RCNI_SRC_DIR")]
        src_dir: Option<PathBuf>,
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
    },
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
    /// In a cluster (the DaemonSet): install from the Kubernetes API, then list the nodes every
    /// interval and keep the conflist and the routes in step as nodes join and leave.
    Daemon {
        /// Directory holding the plugin binaries to install [default: this program's directory].
        #[arg(long, env = "RCNI_SRC_DIR")]
        src_dir: Option<PathBuf>,
        /// Do not run `rroutes sync`.
        #[arg(long)]
        no_routes: bool,
        /// Time between two lists of the nodes (e.g. 30s, 500ms, 2m).
        #[arg(long, env = "RCNI_INTERVAL", default_value = "30s", value_parser = parse_duration)]
        interval: Duration,
        /// Stop after this many rounds (tests); forever by default.
        #[arg(long)]
        rounds: Option<u64>,
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
    },
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
    /// MTU of the bridge and pod interfaces [default: rbridge's].
    #[arg(long, env = "RCNI_MTU")]
    mtu: Option<u32>,
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
    if source.kube || source.nodes_file.is_some() {
        let nodes = match &source.nodes_file {
            Some(file) => {
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                nodes::parse_node_list(&bytes)
                    .with_context(|| file.display().to_string())?
                    .items
            }
            None => kube.config()?.list_nodes()?,
        };
        return nodes::inputs_for(kube.node_name()?, &nodes, &cluster, inputs.mtu);
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
        mtu: inputs.mtu,
    };
    inputs.validate()?;
    Ok((inputs, Vec::new()))
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
        Cmd::Up {
            layout,
            inputs,
            source,
            kube,
            src_dir: src,
            no_routes,
            dry_run,
        } => {
            let layout = layout.layout()?;
            let (inputs, warnings) = resolve(&inputs, &source, &kube)?;
            print_warnings(&warnings);
            let text = inputs.render();
            let plan = Plan::new(&layout, &src_dir(&src)?, &text, !no_routes)?;
            let report = Installer::new(layout.clone(), dry_run).up(&plan)?;
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
        Cmd::Daemon {
            layout,
            inputs,
            kube,
            src_dir: src,
            no_routes,
            interval,
            rounds,
            uninstall,
        } => {
            signal::install_handlers();
            let mut daemon = Daemon {
                installer: Installer::new(layout.layout()?, false),
                src: src_dir(&src)?,
                inputs,
                kube,
                no_routes,
                last_warnings: Vec::new(),
                uninstalled: false,
            };
            daemon.run(interval, rounds, uninstall)
        }
    }
}

/// The DaemonSet's loop: a round every `interval`, errors logged (once while they repeat) and
/// retried on the next round.
struct Daemon {
    installer: Installer,
    src: PathBuf,
    inputs: InputArgs,
    kube: KubeArgs,
    no_routes: bool,
    last_warnings: Vec<String>,
    uninstalled: bool,
}

impl Daemon {
    fn run(&mut self, interval: Duration, rounds: Option<u64>, uninstall: bool) -> Result<()> {
        let mut round = 0u64;
        let mut last_error = None;
        loop {
            round += 1;
            let result = if uninstall {
                self.uninstall()
            } else {
                self.install()
            };
            match result {
                Ok(()) => {
                    if last_error.take().is_some() {
                        println!("rcni-install: recovered");
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if last_error.as_ref() != Some(&msg) {
                        eprintln!("rcni-install: error (retrying every {interval:?}): {msg}");
                    }
                    last_error = Some(msg);
                }
            }
            if rounds.is_some_and(|n| round >= n) || signal::sleep(interval) {
                break;
            }
        }
        match last_error {
            Some(e) => bail!("last round failed: {e}"),
            None => Ok(()),
        }
    }

    /// `down` once, then idle.
    fn uninstall(&mut self) -> Result<()> {
        if !self.uninstalled {
            print_report(&self.installer.down(false)?);
            self.uninstalled = true;
        }
        Ok(())
    }

    /// One round: the node's inputs from the API, and whatever they change installed.
    fn install(&mut self) -> Result<()> {
        let source = SourceArgs {
            pod_cidrs: Vec::new(),
            host_routes: Vec::new(),
            nodes_file: None,
            kube: true,
        };
        let (inputs, warnings) = resolve(&self.inputs, &source, &self.kube)?;
        // Only when they change: the same warning every round is noise.
        if warnings != self.last_warnings {
            print_warnings(&warnings);
            self.last_warnings = warnings;
        }
        let plan = Plan::new(
            &self.installer.layout,
            &self.src,
            &inputs.render(),
            !self.no_routes,
        )?;
        let report = self.installer.up(&plan)?;
        print_report(&report);
        if report.changed {
            let pod_cidrs: Vec<String> = inputs.pod_cidrs.iter().map(|n| n.to_string()).collect();
            println!(
                "rcni-install: node {} up to date: podCIDRs {}, {} host routes",
                self.kube.node_name()?,
                pod_cidrs.join(","),
                inputs.host_routes.len()
            );
        }
        Ok(())
    }
}

/// `30s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 30s, 500ms, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unit must be ms, s or m")),
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
