//! Reading a host-local store from outside, as an operator would: upstream host-local and
//! rhost-local share its format (one file per reserved address, holding the owner).

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

/// The reservations in a network's directory (`<dataDir>/<network>`): address → file content
/// (container ID, then ifname). Empty when the directory does not exist yet.
pub fn reservations(net_dir: &Path) -> BTreeMap<IpAddr, String> {
    let Ok(dir) = fs::read_dir(net_dir) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
            Some((ip, fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// The reserved addresses of a network's directory as text, sorted as text.
pub fn allocations(net_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = reservations(net_dir)
        .keys()
        .map(|ip| ip.to_string())
        .collect();
    out.sort();
    out
}
