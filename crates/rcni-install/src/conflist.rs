//! The node's conflist: the chain of conflists/10-rcni.conflist (rbridge with rhost-local, rmasq,
//! upstream portmap), filled in with this node's inputs, plus rroutes for static host routes.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde_json::{json, Value};

/// File name in the conf dir. "10-" so it sorts before most add-ons' files: the runtime uses the
/// first conflist by name.
pub const CONFLIST_FILE: &str = "10-rcni.conflist";
/// Network name, as in the shipped conflist.
pub const NETWORK_NAME: &str = "rcni";
/// The spec versions the conflist offers, as conflists/10-rcni.conflist.
const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// rhost-local's (and upstream host-local's) store, written out so the file says where it is.
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// A route in the node's own netns towards another node's pods (`hostRoutes` of rroutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: IpNet,
    pub gw: IpAddr,
}

impl FromStr for HostRoute {
    type Err = anyhow::Error;

    /// `DST=GW`, e.g. `10.244.1.0/24=192.168.1.12`.
    fn from_str(s: &str) -> Result<Self> {
        let (dst, gw) = s.split_once('=').with_context(|| {
            format!("host route {s:?}: expected DST=GW, e.g. 10.244.1.0/24=192.168.1.12")
        })?;
        let route = HostRoute {
            dst: parse_cidr(dst).with_context(|| format!("host route {s:?}"))?,
            gw: gw.trim().parse().with_context(|| {
                format!("host route {s:?}: gateway {gw:?} is not an IP address")
            })?,
        };
        if route.dst.addr().is_ipv4() != route.gw.is_ipv4() {
            bail!("host route {s:?}: destination and gateway are of different IP families");
        }
        Ok(route)
    }
}

impl fmt::Display for HostRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.dst, self.gw)
    }
}

/// A CIDR as Kubernetes writes it: network address, no host bits (rhost-local would reject a
/// range such as 10.244.1.5/24, and a typo there is better caught here).
pub fn parse_cidr(s: &str) -> Result<IpNet> {
    let s = s.trim();
    let net: IpNet = s
        .parse()
        .with_context(|| format!("{s:?} is not a CIDR (expected e.g. 10.244.0.0/24)"))?;
    if net.trunc() != net {
        bail!("{s:?} has host bits set: did you mean {}?", net.trunc());
    }
    Ok(net)
}

/// Everything that differs from one node to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// This node's podCIDR(s): one, or one per family for dual stack.
    pub pod_cidrs: Vec<IpNet>,
    /// The cluster's pod network(s): traffic to them is not masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// The other nodes' podCIDRs, each through that node's address.
    pub host_routes: Vec<HostRoute>,
    /// Bridge and veth MTU; the rbridge default when absent.
    pub mtu: Option<u32>,
    /// Where the plugins keep their state: `DIR/networks` (rhost-local's store, shared with
    /// upstream host-local) and `DIR/rmasq`. `None`: /var/lib/cni, the plugins' defaults.
    pub plugin_state_dir: Option<PathBuf>,
    /// The spec versions the node's portmap supports ([`plugin_versions`]); the conflist
    /// offers only those (a runtime picks the highest of `cniVersions`, and portmap before
    /// 1.5 refuses 1.1.0). `None`: unknown, all of ours.
    pub portmap_versions: Option<Vec<String>>,
}

impl Inputs {
    /// Rejects inputs that would give the node a broken network rather than none.
    pub fn validate(&self) -> Result<()> {
        if self.pod_cidrs.is_empty() {
            bail!("no podCIDR for this node (--pod-cidr, or the node's spec.podCIDRs)");
        }
        let v4 = self.pod_cidrs.iter().filter(|n| n.addr().is_ipv4()).count();
        if v4 > 1 || self.pod_cidrs.len() - v4 > 1 {
            bail!(
                "podCIDRs {:?}: at most one per IP family",
                self.pod_cidrs
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
            );
        }
        if self.cluster_cidrs.is_empty() {
            bail!("no cluster CIDR (--cluster-cidr or RCNI_CLUSTER_CIDRS): it is not in the Node API, and without it rmasq would masquerade pod-to-pod traffic");
        }
        // A podCIDR outside the cluster CIDRs would have this node's pods masqueraded towards
        // every other pod: almost certainly a wrong flag.
        for pod in &self.pod_cidrs {
            if !self.cluster_cidrs.iter().any(|c| c.contains(pod)) {
                bail!(
                    "podCIDR {pod} is not inside any cluster CIDR ({})",
                    join(&self.cluster_cidrs)
                );
            }
        }
        for r in &self.host_routes {
            if r.dst.addr().is_ipv4() != r.gw.is_ipv4() {
                bail!("host route {r}: destination and gateway are of different IP families");
            }
            if self
                .pod_cidrs
                .iter()
                .any(|p| p.contains(&r.dst) || r.dst.contains(p))
            {
                bail!("host route {r} overlaps this node's own podCIDR");
            }
        }
        if let Some(mtu) = self.mtu {
            if !(576..=65535).contains(&mtu) {
                bail!("MTU {mtu} out of range (576..65535)");
            }
        }
        Ok(())
    }

    /// The conflist as JSON, keys in the order of conflists/10-rcni.conflist.
    pub fn to_json(&self) -> Value {
        let mut bridge = json!({
            "type": "rbridge",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
        });
        if let Some(mtu) = self.mtu {
            bridge["mtu"] = json!(mtu);
        }
        let ranges: Vec<Value> = self
            .pod_cidrs
            .iter()
            .map(|n| json!([{ "subnet": n.to_string() }]))
            .collect();
        let state = self.plugin_state_dir.as_deref();
        let data_dir = state.map_or(DEFAULT_DATA_DIR.into(), |d| d.join("networks"));
        bridge["ipam"] = json!({
            "type": "rhost-local",
            "ranges": ranges,
            "dataDir": data_dir,
        });
        let mut masq = json!({
            "type": "rmasq",
            "nonMasqueradeCIDRs": self.cluster_cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        });
        if let Some(dir) = state {
            masq["stateDir"] = json!(dir.join("rmasq"));
        }
        let mut plugins = vec![bridge, masq];
        // Static routes to other nodes (a host set up from flags); the node agent programs its
        // routes itself as nodes come and go, and an entry with nothing to do would cost every
        // pod an exec.
        if !self.host_routes.is_empty() {
            let routes: Vec<Value> = self
                .host_routes
                .iter()
                .map(|r| json!({ "dst": r.dst.to_string(), "gw": r.gw.to_string() }))
                .collect();
            plugins.push(json!({ "type": "rroutes", "hostRoutes": routes }));
        }
        // hostPort: kubelet passes a pod's ports as the portMappings capability to the plugins
        // that declare it; without this entry they would silently do nothing.
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
        let mut versions: Vec<&str> = VERSIONS
            .into_iter()
            .filter(|v| {
                self.portmap_versions
                    .as_ref()
                    .is_none_or(|p| p.iter().any(|s| s == v))
            })
            .collect();
        if versions.is_empty() {
            versions = VERSIONS.to_vec(); // a portmap too old for any: let the runtime say so
        }
        let version = if versions.contains(&"1.0.0") {
            "1.0.0"
        } else {
            versions[versions.len() - 1]
        };
        json!({
            "cniVersion": version,
            "cniVersions": versions,
            "name": NETWORK_NAME,
            "plugins": plugins,
        })
    }

    /// The file's bytes: pretty JSON and a final newline. Deterministic, so an unchanged input
    /// never rewrites the file (the runtime reloads the conf dir on every write).
    pub fn render(&self) -> String {
        render_json(&self.to_json())
    }
}

pub fn render_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a JSON value always serializes");
    s.push('\n');
    s
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spec versions a plugin binary supports, asked as a runtime asks (`VERSION`); `None` if
/// it is not there or does not answer.
pub fn plugin_versions(bin: &Path) -> Option<Vec<String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Dropped at the end of the statement: the plugin sees EOF.
    child
        .stdin
        .take()?
        .write_all(br#"{"cniVersion":"1.0.0"}"#)
        .ok()?;
    let out = child.wait_with_output().ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let list = v.get("supportedVersions")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
    )
}

/// [`plugin_versions`] of the portmap the node will run: the one about to be installed (in
/// `upstream`), else the bin dir's; `None` when there is none. One that cannot be asked (the
/// agent's image has no libc for Debian's dynamically linked portmap, which the node runs
/// fine) is taken to support up to 1.0.0, as every portmap does, and said in `warnings`.
pub fn portmap_versions(
    bin_dir: &Path,
    upstream: &[PathBuf],
    warnings: &mut Vec<String>,
) -> Option<Vec<String>> {
    let bin = upstream
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "portmap"))
        .cloned()
        .unwrap_or_else(|| bin_dir.join("portmap"));
    if !bin.exists() {
        return None;
    }
    plugin_versions(&bin).or_else(|| {
        warnings.push(format!(
            "could not ask {} its spec versions (VERSION): the conflist offers up to 1.0.0, which every portmap supports",
            bin.display()
        ));
        Some(["0.3.1", "0.4.0", "1.0.0"].map(String::from).to_vec())
    })
}
