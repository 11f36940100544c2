//! Node objects as the API serves them (`GET /api/v1/nodes`, `kubectl get nodes -o json`), and the
//! conflist inputs they give one node.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::conflist::{parse_cidr, HostRoute, Inputs};

/// Only the fields used; everything else in the API's answer is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeList {
    #[serde(default)]
    pub items: Vec<Node>,
    #[serde(default)]
    pub metadata: ListMeta,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListMeta {
    /// Pagination token: present when `limit` cut the list short.
    #[serde(rename = "continue", default)]
    pub continue_token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Node {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeSpec {
    #[serde(rename = "podCIDR", default)]
    pub pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs", default)]
    pub pod_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeStatus {
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

impl Node {
    /// `spec.podCIDRs` (dual stack, primary family first), else the older single `spec.podCIDR`.
    /// Empty until the controller manager has allocated one.
    pub fn pod_cidrs(&self) -> Result<Vec<IpNet>> {
        let raw: Vec<&String> = if self.spec.pod_cidrs.is_empty() {
            self.spec.pod_cidr.iter().collect()
        } else {
            self.spec.pod_cidrs.iter().collect()
        };
        raw.into_iter()
            .map(|s| parse_cidr(s).with_context(|| format!("node {}: podCIDR", self.metadata.name)))
            .collect()
    }

    /// InternalIP addresses: the ones other nodes reach this node's pods through.
    pub fn internal_ips(&self) -> Vec<IpAddr> {
        self.status
            .addresses
            .iter()
            .filter(|a| a.kind == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect()
    }
}

pub fn parse_node_list(bytes: &[u8]) -> Result<NodeList> {
    serde_json::from_slice(bytes).context("not a NodeList (expected the JSON of GET /api/v1/nodes)")
}

/// The inputs of node `node_name` given every node of the cluster: its own podCIDR(s), and a
/// host route to each other node's podCIDR through that node's InternalIP of the same family.
///
/// Other nodes that cannot be routed to yet (no podCIDR allocated, no InternalIP of the family)
/// are skipped with a warning and picked up on a later round; a problem with the node's own entry
/// is an error, since no conflist can be written for it.
pub fn inputs_for(
    node_name: &str,
    nodes: &[Node],
    cluster_cidrs: &[IpNet],
    mtu: Option<u32>,
) -> Result<(Inputs, Vec<String>)> {
    let mut warnings = Vec::new();
    let own = nodes
        .iter()
        .find(|n| n.metadata.name == node_name)
        .with_context(|| format!("node {node_name:?} is not in the node list (check NODE_NAME)"))?;
    let pod_cidrs = own.pod_cidrs()?;
    if pod_cidrs.is_empty() {
        bail!("node {node_name} has no podCIDR yet (allocated by kube-controller-manager with --allocate-node-cidrs)");
    }

    // Sorted by node name, so the API's order never rewrites the file.
    let mut others: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.metadata.name != node_name)
        .collect();
    others.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut host_routes = Vec::new();
    for node in others {
        let name = &node.metadata.name;
        let cidrs = match node.pod_cidrs() {
            Ok(c) if c.is_empty() => {
                warnings.push(format!("node {name}: no podCIDR yet, no route to it"));
                continue;
            }
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("{e:#}: no route to it"));
                continue;
            }
        };
        let ips = node.internal_ips();
        for dst in cidrs {
            if pod_cidrs
                .iter()
                .any(|p| p.contains(&dst) || dst.contains(p))
            {
                warnings.push(format!(
                    "node {name}: podCIDR {dst} overlaps this node's, no route to it"
                ));
                continue;
            }
            match ips.iter().find(|ip| ip.is_ipv4() == dst.addr().is_ipv4()) {
                Some(gw) => host_routes.push(HostRoute { dst, gw: *gw }),
                None => warnings.push(format!(
                    "node {name}: no InternalIP of the family of {dst}, no route to it"
                )),
            }
        }
    }
    let inputs = Inputs {
        pod_cidrs,
        cluster_cidrs: cluster_cidrs.to_vec(),
        host_routes,
        mtu,
    };
    inputs.validate()?;
    Ok((inputs, warnings))
}
