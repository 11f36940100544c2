//! `rcni lint FILE...`: checks network configs as libcni and our plugins read them, before a
//! runtime trips on them. Each finding names the file, the JSON path (e.g.
//! `plugins[1].ipam.ranges[0][0].subnet`) and what to change. Errors (the runtime or a plugin
//! would refuse the config) exit 1; warnings alone (a key nobody reads, a version only some
//! runtimes pick) exit 0.
//!
//! - `load`: JSON, conflist or single config, `name`, the list's keys; `versions`:
//!   `cniVersion`/`cniVersions` as runtimes negotiate them.
//! - `plugins`: each entry's binary (`bins`: found and asked for its versions as libcni does),
//!   our plugins' parsers, keys they do not read (`keys`).
//! - `chain`: chained plugins after an interface-creating one; `overlap`: ranges of networks.
//! - `report`: findings and their lines.

mod bins;
mod chain;
mod keys;
mod load;
mod overlap;
mod plugins;
mod report;
mod versions;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use bins::BinDirs;
use report::{FileReport, Finding, Severity};

#[derive(clap::Args)]
pub struct Args {
    /// Conflists (.conflist) or single plugin configs (.conf, .json); `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where the plugin binaries are: directories separated by ':', as CNI_PATH.
    #[arg(long, value_name = "DIRS", default_value = "/opt/cni/bin")]
    bin_dir: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bins = BinDirs::parse(&args.bin_dir);
    let reports = lint_files(&args.files, &bins);
    for r in &reports {
        print!("{}", r.render());
    }
    if reports.len() > 1 {
        println!("{}", report::totals(&reports));
    }
    let failed = reports.iter().any(|r| r.count(Severity::Error) > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Every file's findings, networks compared with each other at the end.
fn lint_files(files: &[PathBuf], bins: &BinDirs) -> Vec<FileReport> {
    let mut reports = Vec::new();
    let mut nets = Vec::new();
    for file in files {
        let label = file.display().to_string();
        let mut report = FileReport::new(&label);
        let bytes = if label == "-" {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map(|_| b)
        } else {
            std::fs::read(file)
        };
        match bytes {
            Ok(bytes) => {
                if let Some(net) = lint_bytes(&label, &bytes, bins, &mut report) {
                    nets.push((reports.len(), net));
                }
            }
            Err(e) => report.push(Finding::error("", format!("cannot read it: {e}"))),
        }
        reports.push(report);
    }
    overlap::check(&nets, &mut reports);
    reports
}

/// One file's own findings; the network when it is one.
fn lint_bytes(
    label: &str,
    bytes: &[u8],
    bins: &BinDirs,
    report: &mut FileReport,
) -> Option<load::Network> {
    let mut out = Vec::new();
    let net = load::load(label, bytes, &mut out);
    if let Some(net) = &net {
        for (at, entry) in &net.plugins {
            plugins::check(bins, net, at, entry, &mut out);
        }
        chain::check(net, &mut out);
        let version = match &net.versions {
            Some(v) => match v.negotiated {
                Some(n) => format!("cniVersion {} ({n} from cniVersions)", v.base),
                None => format!("cniVersion {}", v.base),
            },
            None => "no valid cniVersion".into(),
        };
        let n = net.plugins.len();
        report.summary = Some(format!(
            "network {:?}, {version}, {n} plugin{}",
            net.name,
            if n == 1 { "" } else { "s" }
        ));
    }
    for f in out {
        report.push(f);
    }
    net
}

#[cfg(test)]
mod tests;
