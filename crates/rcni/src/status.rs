//! `rcni status`: every network of the conf dir with its attachments (container, interface,
//! addresses, host veth, netns, masquerade, routes) and ranges, then the anomalies: state that
//! outlived its pod. Read-only: it takes no lock and changes nothing, so an ADD or DEL running
//! meanwhile may show half done.
//!
//! - `conf`: the conf dir's networks and where their plugins keep state; `cache`: libcni's
//!   result cache; `kernel`: links, routes and netns over netlink.
//! - `collect`: one network's attachments from all of these; `anomaly`: the leaks.
//! - `model`: the report (`--json` prints it); `text`: the operator's view.

mod anomaly;
mod cache;
mod collect;
mod conf;
mod kernel;
mod model;
mod text;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use conf::Defaults;
use model::Status;

#[derive(clap::Args)]
pub struct Args {
    /// The runtime's CNI conf dir: every .conflist, .conf and .json in it.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// The container runtime's CRI socket (e.g. unix:///run/containerd/containerd.sock):
    /// attachments whose container it does not list are anomalies.
    #[arg(long, value_name = "SOCK")]
    cri_endpoint: Option<String>,
    /// Machine-readable output (documented in docs/operations.md).
    #[arg(long)]
    json: bool,
    /// libcni's cache dir; results are in DIR/results.
    #[arg(long, value_name = "DIR", default_value = cache::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// The IPAM store of configs that name no ipam.dataDir (host-local's default).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cni/networks")]
    ipam_data_dir: PathBuf,
    /// rmasq's state of configs that name no stateDir (rmasq's default).
    #[arg(long, value_name = "DIR", default_value = rmasq::DEFAULT_STATE_DIR)]
    masq_state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let status = collect_status(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", text::render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn collect_status(args: &Args) -> anyhow::Result<Status> {
    let defaults = Defaults {
        ipam_data_dir: args.ipam_data_dir.clone(),
        masq_state_dir: args.masq_state_dir.clone(),
    };
    let (confs, skipped) = conf::load(&args.conf_dir, &defaults)?;
    let node = kernel::Node::read()?;
    let entries = cache::read(&args.cache_dir)?;
    let sandboxes: Option<HashSet<String>> = match &args.cri_endpoint {
        Some(endpoint) => Some(runtime_sandboxes(endpoint)?),
        None => None,
    };
    let mut networks = Vec::new();
    for c in &confs {
        let mine: Vec<&cache::Entry> = entries.iter().filter(|e| e.network == c.name).collect();
        networks.push(collect::network(c, &node, &mine, sandboxes.as_ref()));
    }
    let mut anomalies: Vec<model::Anomaly> = confs
        .iter()
        .zip(&networks)
        .flat_map(|(c, n)| anomaly::of_network(c, n))
        .collect();
    let pairs: Vec<_> = confs.iter().zip(networks.iter()).collect();
    anomalies.extend(anomaly::orphan_veths(&pairs, &node));
    let foreign: Vec<&cache::Entry> = entries
        .iter()
        .filter(|e| !confs.iter().any(|c| c.name == e.network))
        .collect();
    anomalies.extend(anomaly::foreign_cache(&foreign));
    anomalies.sort();
    Ok(Status {
        conf_dir: args.conf_dir.display().to_string(),
        networks,
        anomalies,
        skipped,
        runtime_sandboxes: sandboxes.as_ref().map(HashSet::len),
    })
}

/// How long the runtime may take to list its sandboxes.
const CRI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The IDs of every sandbox the runtime lists, in any state: the container IDs it gives the
/// plugins.
fn runtime_sandboxes(endpoint: &str) -> anyhow::Result<HashSet<String>> {
    let list = rcni_gc::cri::list_sandboxes(endpoint, CRI_TIMEOUT)?;
    Ok(list.into_iter().map(|s| s.id).collect())
}
