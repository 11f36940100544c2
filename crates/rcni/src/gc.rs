//! `rcni gc`: one garbage collection now, from the runtime's truth (its CRI sandboxes) or an
//! operator's list, through every network of the conf dir (see the rcni-gc crate for what a
//! collection does). Prints every attachment reclaimed, what it held and why; with `--dry-run`
//! what would be, changing nothing. Exits 1 if anything failed.
//!
//! Run it where the runtime runs the plugins: the node's network namespace, as root.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use rcni_gc::{Listing, Options};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("truth").required(true).args(["cri_endpoint", "valid_attachments"])))]
pub struct Args {
    /// Print what would be reclaimed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Where the networks' configs are.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// Where the plugin binaries are: directories separated by ':', as CNI_PATH.
    #[arg(long, value_name = "DIRS", default_value = "/opt/cni/bin")]
    bin_dir: String,
    /// The runtime's CRI socket: the attachments of the pod sandboxes it lists (in any state)
    /// are valid. containerd: unix:///run/containerd/containerd.sock, CRI-O:
    /// unix:///var/run/crio/crio.sock.
    #[arg(long, value_name = "SOCK")]
    cri_endpoint: Option<String>,
    /// A JSON file of the valid attachments, as GC's cni.dev/valid-attachments:
    /// [{"containerID": "...", "ifname": "eth0"}]; - reads standard input.
    #[arg(long, value_name = "FILE")]
    valid_attachments: Option<PathBuf>,
    /// Keep attachments set up this recently before the listing (ADDs in flight, pods not
    /// listed yet), e.g. 30s, 2m [default: 2m with --cri-endpoint; 0s with
    /// --valid-attachments, whose list is taken as the whole truth].
    #[arg(long, value_name = "DURATION", value_parser = rcni_gc::parse_duration)]
    grace: Option<Duration>,
    /// libcni's cache dir (the runtime's; its entries are in results/).
    #[arg(long, value_name = "DIR", default_value = rcni_gc::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (listing, grace) = match (&args.cri_endpoint, &args.valid_attachments) {
        (Some(endpoint), _) => (
            Listing::from_cri(endpoint, Duration::from_secs(30))?,
            Duration::from_secs(120),
        ),
        (None, Some(file)) => (
            Listing::from_attachments(&file.display().to_string(), read_valid(file)?),
            Duration::ZERO,
        ),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let opts = Options {
        conf_dir: args.conf_dir,
        bin_dirs: std::env::split_paths(&args.bin_dir).collect(),
        cache_dir: args.cache_dir,
        grace: args.grace.unwrap_or(grace),
        dry_run: args.dry_run,
        ..Options::default()
    };
    let report = rcni_gc::collect(&opts, &listing)?;
    println!("{report}");
    let errors = report.errors();
    for e in &errors {
        eprintln!("rcni gc: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_valid(file: &PathBuf) -> Result<Vec<rcni_gc::Attachment>> {
    let bytes = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading the valid attachments from standard input")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    rcni_gc::parse_valid_attachments(&bytes)
        .with_context(|| format!("--valid-attachments {}", file.display()))
}
