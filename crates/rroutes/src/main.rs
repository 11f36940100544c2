use std::path::PathBuf;

use clap::{Arg, Command};

use cni_types::skel::{cli, run_cni};
use rroutes::{host, RRoutes, INFO};

fn main() {
    if std::env::var_os("CNI_COMMAND").is_some_and(|v| !v.is_empty()) {
        run_cni(&RRoutes, &INFO)
    }
    let matches = cli(&INFO)
        .subcommand(
            Command::new("sync")
                .about("Ensure the hostRoutes of a conflist's rroutes entry in this netns and remove the routes rroutes installed that it no longer lists")
                .arg(
                    Arg::new("conflist")
                        .long("conflist")
                        .value_name("FILE")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf)),
                ),
        )
        .get_matches();
    let Some(sync) = matches.subcommand_matches("sync") else {
        eprintln!("{}", INFO.about_line());
        std::process::exit(0)
    };
    let file = sync.get_one::<PathBuf>("conflist").expect("required");
    match host::sync(file) {
        Ok(report) => {
            for r in &report.added {
                println!("added {}", rroutes::conf::describe(r, ""));
            }
            for (old, new) in &report.replaced {
                println!(
                    "replaced {} with {}",
                    rroutes::conf::describe(old, ""),
                    rroutes::conf::describe(new, "")
                );
            }
            for r in &report.removed {
                println!("removed {}", rroutes::conf::describe(r, ""));
            }
            println!(
                "rroutes sync: {} added, {} replaced, {} removed, {} already present",
                report.added.len(),
                report.replaced.len(),
                report.removed.len(),
                report.kept
            );
        }
        Err(e) => {
            eprintln!("rroutes sync: {e}");
            std::process::exit(1)
        }
    }
}
