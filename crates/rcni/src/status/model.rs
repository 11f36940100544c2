//! What `rcni status` reports; `--json` prints it as is (keys in camelCase, documented in
//! docs/operations.md).

use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub conf_dir: String,
    pub networks: Vec<Network>,
    pub anomalies: Vec<Anomaly>,
    /// Conf dir files not used, and why.
    pub skipped: Vec<String>,
    /// Sandboxes the runtime listed (with `--cri-endpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_sandboxes: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub file: String,
    pub cni_version: String,
    pub plugins: Vec<String>,
    pub bridge: Option<String>,
    /// The host-local style store (rhost-local or host-local): `{type, dataDir}`.
    pub ipam: Option<Ipam>,
    pub ranges: Vec<RangeUse>,
    pub host_routes: Vec<HostRoute>,
    pub attachments: Vec<Attachment>,
    /// Parts of the config our plugins refuse (`rcni lint` says more).
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipam {
    #[serde(rename = "type")]
    pub ipam_type: String,
    pub data_dir: String,
}

/// One range of a range set: how many of its addresses are held and free.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeUse {
    pub range_set: usize,
    pub subnet: String,
    pub start: String,
    pub end: String,
    /// Addresses it hands out (network, gateway, IPv4 broadcast excluded); may exceed 2^53
    /// for IPv6.
    pub capacity: u128,
    pub used: u128,
    pub free: u128,
}

/// rroutes' `hostRoutes` and whether the node has each.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRoute {
    pub dst: String,
    pub gw: String,
    pub installed: bool,
}

/// One (container, interface) with state on the node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// None for a reservation in host-local's old format (no interface recorded).
    pub ifname: Option<String>,
    /// From the store; from the cached result when the network has no store.
    pub addresses: Vec<String>,
    /// Holds addresses in the store.
    pub allocated: bool,
    /// The node end of its veth: from the cached result, or rbridge's name for it.
    pub host_veth: Option<String>,
    /// Whether that link exists on the node (None when no veth is known).
    pub host_veth_present: Option<bool>,
    /// Its netns path, from the cached result.
    pub netns: Option<String>,
    pub netns_alive: Option<bool>,
    /// Addresses masqueraded for it (rmasq's state).
    pub masquerade: Vec<String>,
    /// Routes through its interface in its netns (while alive), else those of its cached
    /// result.
    pub routes: Vec<String>,
    /// Has a libcni result-cache entry.
    pub cached: bool,
    /// With `--cri-endpoint`: its container ID is a sandbox the runtime lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_to_runtime: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Addresses held by an attachment whose netns is gone (or, without a known netns, whose
    /// host veth is gone or unknown).
    StaleAllocation,
    /// A veth on a network's bridge that belongs to no attachment holding addresses.
    OrphanVeth,
    /// Masquerade state of an attachment that holds no addresses.
    StaleMasquerade,
    /// A result-cache entry whose netns is gone, whose attachment holds no addresses, or whose
    /// network is not in the conf dir.
    StaleCacheEntry,
    /// An attachment whose container the runtime does not list (`--cri-endpoint`).
    UnknownToRuntime,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StaleAllocation => "stale-allocation",
            Kind::OrphanVeth => "orphan-veth",
            Kind::StaleMasquerade => "stale-masquerade",
            Kind::StaleCacheEntry => "stale-cache-entry",
            Kind::UnknownToRuntime => "unknown-to-runtime",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Anomaly {
    pub kind: Kind,
    pub network: Option<String>,
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    pub host_veth: Option<String>,
    pub detail: String,
}
