use std::path::PathBuf;

use cni_plugin::skel::{run_or_subcommand, Subcommand};
use rroutes::{RRoutes, INFO};

#[global_allocator]
static ALLOC: cni_plugin::alloc::PluginAlloc = cni_plugin::alloc::PluginAlloc;

const SYNC: Subcommand = Subcommand {
    name: "sync",
    args: "--conflist FILE",
    about: "Ensure the hostRoutes of a conflist's rroutes entry in this netns and remove the routes rroutes installed that it no longer lists",
};

/// The FILE of `sync --conflist FILE` (or `--conflist=FILE`).
fn conflist_arg(args: &[String]) -> Result<PathBuf, String> {
    match args {
        [flag, file] if flag == "--conflist" => Ok(file.into()),
        [arg] if arg.starts_with("--conflist=") => Ok(arg["--conflist=".len()..].into()),
        _ => Err(format!("usage: rroutes sync {} (got {args:?})", SYNC.args)),
    }
}

fn main() {
    // `sync` is the only subcommand: whatever returns here is it.
    let (_sync, args) = run_or_subcommand(&RRoutes, &INFO, &[SYNC]);
    let file = conflist_arg(&args).unwrap_or_else(|e| {
        eprintln!("rroutes sync: {e}");
        std::process::exit(2)
    });
    match rroutes::sync(&file) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("rroutes sync: {e}");
            std::process::exit(1)
        }
    }
}
