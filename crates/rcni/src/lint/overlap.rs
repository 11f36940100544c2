//! Ranges of different networks that overlap: used together (podman, Multus, a runtime given
//! both), both networks hand out the same addresses, as their stores are apart. A warning, not
//! an error: kubelet's runtimes use only the first conf file, and files such as our shipped
//! conflists are alternatives for one node.

use std::net::IpAddr;

use rhost_local::RangeSummary;
use serde_json::Value;

use super::load::Network;
use super::plugins::plugin_config;
use super::report::{FileReport, Finding};

/// One host-local style range of a network, with its JSON path.
#[derive(Debug, Clone)]
pub struct NetRange {
    pub path: String,
    pub range: RangeSummary,
}

/// The ranges the network's host-local style IPAM (ours or upstream's, same keys) hands out
/// from, as rhost-local reads them; none when the config does not parse.
pub fn ranges(net: &Network) -> Vec<NetRange> {
    let Some(v) = net.versions.as_ref().map(|v| v.base) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (at, entry) in &net.plugins {
        let ipam_type = entry
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str);
        if !matches!(ipam_type, Some("rhost-local" | "host-local")) {
            continue;
        }
        let Ok(ipam) = rhost_local::parse_config(&plugin_config(net, entry, v)) else {
            continue;
        };
        for set in &ipam.range_sets {
            // Ranges the runtime passes (runtimeConfig.ipRanges) are not in the file.
            if !set.source.starts_with("ipam.") {
                continue;
            }
            for (j, r) in set.ranges.iter().enumerate() {
                let path = if set.source == "ipam.subnet" {
                    Network::path(at, "ipam.subnet")
                } else {
                    format!("{}[{j}]", Network::path(at, &set.source))
                };
                out.push(NetRange {
                    path,
                    range: r.clone(),
                });
            }
        }
    }
    out
}

fn overlaps(a: &RangeSummary, b: &RangeSummary) -> bool {
    let n = |ip: IpAddr| match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    a.start.is_ipv4() == b.start.is_ipv4() && n(a.start) <= n(b.end) && n(b.start) <= n(a.end)
}

/// Compares every network with those of the files before it; findings go to the later file.
pub fn check(nets: &[(usize, Network)], reports: &mut [FileReport]) {
    let all: Vec<(usize, &Network, Vec<NetRange>)> =
        nets.iter().map(|(i, n)| (*i, n, ranges(n))).collect();
    for (k, (file, net, mine)) in all.iter().enumerate() {
        for (other_file, other, theirs) in &all[..k] {
            let other_name = reports[*other_file].file.clone();
            if other.name == net.name && !net.name.is_empty() {
                reports[*file].push(Finding::warning(
                    "name",
                    format!("network {:?} is also defined in {other_name}: a runtime uses the first file (by name) with it and ignores the other", net.name),
                ));
                continue;
            }
            for a in mine {
                for b in theirs.iter().filter(|b| overlaps(&a.range, &b.range)) {
                    reports[*file].push(Finding::warning(
                        a.path.clone(),
                        format!(
                            "{} ({}-{}) overlaps network {:?} of {other_name} ({}: {}, {}-{}): a runtime using both would hand out the same addresses in each; give each network its own subnet, or keep only one of the files",
                            a.range.subnet, a.range.start, a.range.end, other.name, b.path,
                            b.range.subnet, b.range.start, b.range.end
                        ),
                    ));
                }
            }
        }
    }
}
