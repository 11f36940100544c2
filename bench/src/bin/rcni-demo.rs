//! The demo behind `scripts/demo`: a two-node cluster simulated in network namespaces, our chain
//! on every node driven through the real libcni, pods on both nodes, and the connectivity matrix
//! every Kubernetes network must satisfy.
//!
//!   rcni-demo [up] [--keep] [--upstream]   build the cluster, show it, tear it down (or keep it)
//!   rcni-demo down                         remove a kept cluster

use std::path::Path;

use rcni_integration::cluster::{demo_down, Chain, Cluster, Naming, CLUSTER_V4, CLUSTER_V6};

const STATE: &str = "/run/rcni-demo";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: rcni-demo [up] [--keep] [--upstream] | rcni-demo down");
        return;
    }
    if args.first().map(String::as_str) == Some("down") {
        let removed = demo_down(Path::new(STATE));
        println!(
            "removed {} namespaces{}",
            removed.len(),
            if removed.is_empty() { "" } else { ":" }
        );
        for n in removed {
            println!("  {n}");
        }
        return;
    }
    let keep = args.iter().any(|a| a == "--keep");
    let chain = if args.iter().any(|a| a == "--upstream") {
        Chain::UpstreamControl
    } else {
        Chain::Rcni
    };
    // A previous kept demo would clash on names.
    demo_down(Path::new(STATE));

    println!("rcni demo: 2 nodes on a LAN (10.100.0.0/24, fd00:100::/64), an outside host, 2 pods per node");
    println!(
        "cluster CIDR {CLUSTER_V4} + {CLUSTER_V6}; chain: {}\n",
        match chain {
            Chain::Rcni =>
                "rbridge + rhost-local + rmasq + rroutes (conflists/10-rcni.conflist) via libcni",
            Chain::UpstreamControl => "upstream bridge + host-local (control) via libcni",
        }
    );
    let started = std::time::Instant::now();
    let cluster = Cluster::up(chain, Naming::Demo, 2, 2, Path::new(STATE));
    println!("cluster up in {:.2} s\n", started.elapsed().as_secs_f64());

    print_pods(&cluster);
    println!("\nconnectivity: each cell says how the destination saw the source");
    println!("  direct = source address kept (no NAT)   nat:X = seen as node X's address   FAIL = no connection");
    println!("  ! = not what a Kubernetes network must give\n");
    let mut problems = Vec::new();
    for v6 in [false, true] {
        let (table, p) = cluster.matrix(v6);
        println!("{}", if v6 { "IPv6" } else { "IPv4" });
        println!("{table}");
        problems.extend(p);
    }
    if keep {
        println!("kept: inspect with `ip netns` (rcni-demo-*), state in {STATE}; remove with `scripts/demo down`");
        cluster.keep();
    } else {
        problems.extend(delete_all(cluster));
    }
    if problems.is_empty() {
        println!("\nOK: every check a Kubernetes network needs passed");
    } else {
        println!("\n{} problem(s):", problems.len());
        for p in &problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
}

/// The nodes and pods with their addresses, one line each.
fn print_pods(cluster: &Cluster) {
    println!(
        "{:<8}{:<10}{:<20}{:<28}IPv6",
        "node", "pod", "netns", "IPv4"
    );
    for n in &cluster.nodes {
        println!(
            "{:<8}{:<10}{:<20}{:<28}{}",
            n.name,
            "(node)",
            n.ns.name(),
            n.lan[0],
            n.lan[1]
        );
        for p in &n.pods {
            let v4 = p
                .addrs
                .iter()
                .find(|a| a.is_ipv4())
                .map(|a| a.to_string())
                .unwrap_or_default();
            let v6 = p
                .addrs
                .iter()
                .find(|a| a.is_ipv6())
                .map(|a| a.to_string())
                .unwrap_or_default();
            println!("{:<8}{:<10}{:<20}{:<28}{}", "", p.name, p.ns.name(), v4, v6);
        }
        println!("{:<8}podCIDRs {} {}", "", n.pod_cidrs[0], n.pod_cidrs[1]);
    }
}

/// Deletes every pod through libcni, then the cluster; what was left behind.
fn delete_all(mut cluster: Cluster) -> Vec<String> {
    let leftovers = cluster.delete_pods();
    if leftovers.is_empty() {
        println!("all pods deleted through libcni (DEL twice each): no link or allocation left");
    } else {
        println!("left behind after DEL: {leftovers:?}");
    }
    drop(cluster);
    demo_down(Path::new(STATE));
    leftovers
}
