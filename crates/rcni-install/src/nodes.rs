//! Node objects as the API serves them (`GET /api/v1/nodes`, `kubectl get nodes -o json`), and the
//! conflist inputs they give one node.

use std::net::IpAddr;

use std::borrow::Cow;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use kube::Resource;
use serde::Deserialize;

use crate::conflist::{parse_cidr, HostRoute, Inputs};

/// Only the fields used; everything else in the API's answer is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeList {
    #[serde(default)]
    pub items: Vec<Node>,
}

/// A Node as the agent keeps it: name, podCIDRs and addresses, nothing else. kube's watcher
/// decodes the API's answers straight into it, so the images, conditions and managed fields of a
/// real Node (several KB each) are skipped while parsing instead of held for every node.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Node {
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
}

/// The Node API (core/v1 `nodes`, cluster-scoped) for kube's client and watcher.
impl Resource for Node {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields the watcher needs (resourceVersion to resume) and the name.
fn lean_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Lean {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        uid: Option<String>,
        #[serde(default)]
        resource_version: Option<String>,
    }
    let l = Lean::deserialize(d)?;
    Ok(ObjectMeta {
        name: l.name,
        uid: l.uid,
        resource_version: l.resource_version,
        ..ObjectMeta::default()
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeSpec {
    #[serde(rename = "podCIDR", default)]
    pub pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs", default)]
    pub pod_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeStatus {
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

impl Node {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// `spec.podCIDRs` (dual stack, primary family first), else the older single `spec.podCIDR`.
    /// Empty until the controller manager has allocated one.
    pub fn pod_cidrs(&self) -> Result<Vec<IpNet>> {
        let raw: Vec<&String> = if self.spec.pod_cidrs.is_empty() {
            self.spec.pod_cidr.iter().collect()
        } else {
            self.spec.pod_cidrs.iter().collect()
        };
        raw.into_iter()
            .map(|s| parse_cidr(s).with_context(|| format!("node {}: podCIDR", self.name())))
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
        .find(|n| n.name() == node_name)
        .with_context(|| format!("node {node_name:?} is not in the node list (check NODE_NAME)"))?;
    let pod_cidrs = own.pod_cidrs()?;
    if pod_cidrs.is_empty() {
        bail!("node {node_name} has no podCIDR yet (allocated by kube-controller-manager with --allocate-node-cidrs)");
    }

    // Sorted by node name, so the API's order never rewrites the file.
    let mut others: Vec<&Node> = nodes.iter().filter(|n| n.name() != node_name).collect();
    others.sort_by(|a, b| a.name().cmp(b.name()));
    let mut host_routes = Vec::new();
    for node in others {
        host_routes.extend(routes_to(node, &pod_cidrs, &mut warnings));
    }
    let inputs = Inputs {
        pod_cidrs,
        cluster_cidrs: cluster_cidrs.to_vec(),
        host_routes,
        mtu,
        plugin_state_dir: None,
        portmap_versions: None,
    };
    inputs.validate()?;
    Ok((inputs, warnings))
}

/// The host routes to `node`'s podCIDRs, each through its InternalIP of the same family, given
/// this node's own podCIDRs. Whatever cannot be routed to yet (no podCIDR allocated, no InternalIP
/// of the family, an overlap with this node's) is skipped with a warning: it is picked up when the
/// node changes.
pub fn routes_to(node: &Node, own: &[IpNet], warnings: &mut Vec<String>) -> Vec<HostRoute> {
    let name = node.name();
    let cidrs = match node.pod_cidrs() {
        Ok(c) if c.is_empty() => {
            warnings.push(format!("node {name}: no podCIDR yet, no route to it"));
            return Vec::new();
        }
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!("{e:#}: no route to it"));
            return Vec::new();
        }
    };
    let ips = node.internal_ips();
    let mut routes = Vec::new();
    for dst in cidrs {
        if own.iter().any(|p| p.contains(&dst) || dst.contains(p)) {
            warnings.push(format!(
                "node {name}: podCIDR {dst} overlaps this node's, no route to it"
            ));
            continue;
        }
        match ips.iter().find(|ip| ip.is_ipv4() == dst.addr().is_ipv4()) {
            Some(gw) => routes.push(HostRoute { dst, gw: *gw }),
            None => warnings.push(format!(
                "node {name}: no InternalIP of the family of {dst}, no route to it"
            )),
        }
    }
    routes
}
