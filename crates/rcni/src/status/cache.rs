//! libcni's result cache: `<cacheDir>/results/<network>-<containerID>-<ifname>`, JSON of kind
//! `cniCacheV1`, written after every ADD and removed by DEL. It holds the runtime's view of
//! the attachment: its netns (libcni 1.2+; older ones only in the result's interfaces) and the
//! final result, with the host-side interfaces.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// libcni's `CacheDir`.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The netns path the runtime gave: the entry's own `netns`, else the `sandbox` of the
    /// result's interface named `ifname`.
    pub netns: Option<String>,
    /// Host-side interfaces of the result (no `sandbox`): the bridge and the host veth.
    pub host_interfaces: Vec<String>,
    /// The result's addresses, `10.244.0.5/24`.
    pub addresses: Vec<String>,
    /// The result's routes, `0.0.0.0/0 via 10.244.0.1`.
    pub routes: Vec<String>,
}

/// Every entry under `cache_dir` (its `results` dir), sorted by file name; files that are not
/// libcni entries are skipped, as libcni skips them.
pub fn read(cache_dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let dir = cache_dir.join("results");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => anyhow::bail!("cannot list the result cache {}: {e}", dir.display()),
    };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            parse(p, &bytes)
        })
        .collect())
}

fn parse(path: PathBuf, bytes: &[u8]) -> Option<Entry> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v.get("kind")?.as_str()? != "cniCacheV1" {
        return None;
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (network, container_id, ifname) = (s("networkName"), s("containerId"), s("ifName"));
    if network.is_empty() || ifname.is_empty() {
        return None;
    }
    let result = v.get("result");
    let ifaces: Vec<&Value> = result
        .and_then(|r| r.get("interfaces"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let field = |i: &Value, k: &str| i.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let netns = Some(s("netns")).filter(|n| !n.is_empty()).or_else(|| {
        ifaces
            .iter()
            .find(|i| field(i, "name") == ifname)
            .map(|i| field(i, "sandbox"))
            .filter(|n| !n.is_empty())
    });
    let host_interfaces = ifaces
        .iter()
        .filter(|i| field(i, "sandbox").is_empty())
        .map(|i| field(i, "name"))
        .filter(|n| !n.is_empty())
        .collect();
    let list = |k: &str| -> Vec<&Value> {
        result
            .and_then(|r| r.get(k))
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let addresses = list("ips").iter().map(|ip| field(ip, "address")).collect();
    let routes = list("routes")
        .iter()
        .map(|r| {
            // As `ip route` and the pod's routes read back: "default".
            let dst = match field(r, "dst").as_str() {
                "0.0.0.0/0" | "::/0" => "default".to_string(),
                d => d.to_string(),
            };
            match r.get("gw").and_then(Value::as_str) {
                Some(gw) => format!("{dst} via {gw}"),
                None => dst,
            }
        })
        .collect();
    Some(Entry {
        path,
        network,
        container_id,
        ifname,
        netns,
        host_interfaces,
        addresses,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_old_and_new_libcni() {
        let old = br#"{"kind":"cniCacheV1","containerId":"c1","config":"e30=","ifName":"eth0","networkName":"pods",
            "result":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa"},{"name":"veth1","mac":"bb"},
            {"name":"eth0","mac":"cc","sandbox":"/run/netns/p1"}],"ips":[{"interface":2,"address":"10.1.0.2/24","gateway":"10.1.0.1"}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]}}"#;
        let e = parse("x".into(), old).unwrap();
        assert_eq!(e.netns.as_deref(), Some("/run/netns/p1"));
        assert_eq!(e.host_interfaces, ["cni0", "veth1"]);
        assert_eq!(e.addresses, ["10.1.0.2/24"]);
        assert_eq!(e.routes, ["default via 10.1.0.1"]);
        let new = br#"{"kind":"cniCacheV1","containerId":"c2","ifName":"eth0","networkName":"pods","netns":"/proc/1/ns/net"}"#;
        let e = parse("y".into(), new).unwrap();
        assert_eq!(e.netns.as_deref(), Some("/proc/1/ns/net"));
        assert!(e.host_interfaces.is_empty());
        assert!(parse(
            "z".into(),
            br#"{"kind":"other","ifName":"eth0","networkName":"n"}"#
        )
        .is_none());
        assert!(parse("z".into(), b"garbage").is_none());
    }
}
