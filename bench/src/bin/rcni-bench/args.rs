//! The command line.

use std::path::PathBuf;

/// What to run.
pub struct Args {
    /// Only our chain's scale points.
    pub scale_ours: bool,
    pub runs: usize,
    /// Lifecycles of one pod on an empty node, per chain (0: none).
    pub empty: usize,
    /// Only those.
    pub empty_only: bool,
    pub storm: usize,
    pub scale: Vec<usize>,
    /// Cluster sizes the node agent's routes are measured at (empty: none).
    pub cluster: Vec<usize>,
    /// Only those.
    pub cluster_only: bool,
    /// Attachments on the node GC is measured on, half stale (0: none).
    pub gc: usize,
    /// Only that.
    pub gc_only: bool,
    /// Where the chains keep their IPAM and masquerade state (default: the temporary dir).
    pub state_dir: Option<PathBuf>,
}

impl Args {
    pub fn storm(&self) -> bool {
        self.storm > 0
    }
}

pub fn parse_args() -> Args {
    let mut a = Args {
        scale_ours: false,
        runs: 40,
        empty: 20,
        empty_only: false,
        storm: 250,
        scale: vec![10, 250, 1000],
        cluster: vec![500, 5000],
        cluster_only: false,
        gc: 1000,
        gc_only: false,
        state_dir: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let next = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--runs" => a.runs = next().parse().expect("--runs N"),
            "--state-dir" => a.state_dir = Some(PathBuf::from(next())),
            "--storm" => a.storm = next().parse().expect("--storm N"),
            "--empty" | "--empty-only" => {
                a.empty_only = argv[i] == "--empty-only";
                a.empty = next().parse().expect("--empty N");
            }
            "--scale" | "--scale-ours" => {
                a.scale_ours = argv[i] == "--scale-ours";
                a.scale = next()
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(|s| s.parse().expect("--scale A,B,C or none"))
                    .collect()
            }
            "--gc" | "--gc-only" => {
                a.gc_only = argv[i] == "--gc-only";
                a.gc = next().parse().expect("--gc N");
            }
            "--cluster" | "--cluster-only" => {
                a.cluster_only = argv[i] == "--cluster-only";
                a.cluster = next()
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(|s| s.parse().expect("--cluster A,B or none"))
                    .collect()
            }
            "--quick" => {
                a.runs = 10;
                a.empty = 8;
                a.storm = 30;
                a.scale = vec![10, 100];
                a.cluster = vec![100, 500];
                a.gc = 100;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}; usage: rcni-bench [--runs N] [--empty N|0] [--empty-only N] [--storm N|0] [--scale A,B|none] [--cluster A,B|none] [--cluster-only A,B] [--gc N|0] [--gc-only N] [--quick] [--state-dir DIR]"),
        }
        i += 2;
    }
    a
}
