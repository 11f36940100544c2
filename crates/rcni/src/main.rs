//! `rcni`: the operator's view of a node's CNI networking.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod gc;
mod lint;
mod status;

/// Shows and checks a node's CNI networking: what is attached and what leaked, whether
/// conflists will work, and garbage collection from the runtime's truth.
#[derive(Parser)]
#[command(name = "rcni", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every network's attachments, ranges and anomalies (leaks) on this node.
    Status(status::Args),
    /// Check conflists as libcni and the plugins would, before the runtime trips on them.
    Lint(lint::Args),
    /// One garbage collection now: reclaim what the runtime no longer knows.
    Gc(gc::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = match cli.cmd {
        Cmd::Status(args) => status::run(args),
        Cmd::Lint(args) => lint::run(args),
        Cmd::Gc(args) => gc::run(args),
    };
    match run {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rcni: {e:#}");
            ExitCode::FAILURE
        }
    }
}
