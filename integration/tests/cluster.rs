//! A simulated two-node cluster: pods on both nodes, an outside host; the connectivity every
//! Kubernetes network must give, then DEL of every pod leaving nothing behind.

use rcni_integration::cluster::{Chain, Cluster, Naming};

fn two_nodes(chain: Chain) {
    cni_testkit::require_root();
    let state = cni_testkit::temp_dir("e2e-cluster");
    let mut cluster = Cluster::up(chain, Naming::Test, 2, 2, state.path());
    let mut problems = Vec::new();
    for v6 in [false, true] {
        let (table, p) = cluster.matrix(v6);
        eprintln!("{table}");
        problems.extend(p);
    }
    assert!(
        problems.is_empty(),
        "connectivity broken:\n{}",
        problems.join("\n")
    );
    let leftovers = cluster.delete_pods();
    assert!(leftovers.is_empty(), "left after DEL: {leftovers:?}");
}

#[test]
fn two_node_cluster_with_rcni() {
    two_nodes(Chain::Rcni);
}

/// The same checks on upstream plugins with hand-made routes and masquerade: proves the harness.
#[test]
fn two_node_cluster_control_upstream() {
    two_nodes(Chain::UpstreamControl);
}
