//! libcni's result cache, as libcni writes it after every ADD and reads it for DEL, CHECK and
//! GC: `<cacheDir>/results/<network>-<containerID>-<ifname>`, JSON of kind `cniCacheV1` with
//! the runtime's view of the attachment (netns, CNI_ARGS, capability args) and the final
//! result. An entry is removed by DEL (libcni's DelNetworkList), so one outliving its pod is a
//! leak of its own: a later GC would DEL it again and again.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Map, Value};

/// libcni's default cache dir (`libcni.CacheDir`).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

const KIND: &str = "cniCacheV1";

/// One cached attachment.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub modified: Option<SystemTime>,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// CNI_ARGS as pairs, as libcni keeps them.
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The final ADD result (its own `cniVersion`), if cached.
    pub result: Option<Value>,
}

#[derive(Deserialize)]
struct Raw {
    kind: String,
    #[serde(rename = "containerId", default)]
    container_id: String,
    #[serde(rename = "ifName", default)]
    ifname: String,
    #[serde(rename = "networkName", default)]
    network: String,
    #[serde(default)]
    netns: String,
    #[serde(rename = "cniArgs", default)]
    cni_args: Option<Vec<(String, String)>>,
    #[serde(rename = "capabilityArgs", default)]
    capability_args: Option<Map<String, Value>>,
    #[serde(default)]
    result: Option<Value>,
}

impl Entry {
    /// CNI_ARGS as a runtime passes them: `K=V;K=V`.
    pub fn cni_args_env(&self) -> String {
        let pairs: Vec<String> = self
            .cni_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join(";")
    }

    /// The host-side interfaces of the cached result (those without a `sandbox`): the host
    /// veth, as upstream bridge names it at random, and the bridge itself.
    pub fn host_interfaces(&self) -> Vec<String> {
        let Some(ifaces) = self
            .result
            .as_ref()
            .and_then(|r| r.get("interfaces"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        ifaces
            .iter()
            .filter(|i| {
                i.get("sandbox")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
            })
            .filter_map(|i| i.get("name").and_then(Value::as_str))
            .map(String::from)
            .collect()
    }
}

/// The cache's `results` dir under `cache_dir`.
pub fn results_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("results")
}

/// Every entry of `network`, as libcni's GetCachedAttachments reads them: files that are not
/// `cniCacheV1` JSON naming a container, an ifname and this network are skipped. Sorted by
/// file name, as libcni walks them.
pub fn entries(cache_dir: &Path, network: &str) -> std::io::Result<Vec<Entry>> {
    let dir = results_dir(cache_dir);
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(raw) = serde_json::from_slice::<Raw>(&bytes) else {
            continue;
        };
        if raw.kind != KIND
            || raw.network != network
            || raw.container_id.is_empty()
            || raw.ifname.is_empty()
        {
            continue;
        }
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        out.push(Entry {
            path,
            modified,
            container_id: raw.container_id,
            ifname: raw.ifname,
            netns: raw.netns,
            cni_args: raw.cni_args.unwrap_or_default(),
            capability_args: raw.capability_args.unwrap_or_default(),
            result: raw.result,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libcni_entries_of_one_network() {
        let dir = cni_testkit::temp_dir("gc-cache");
        let results = results_dir(&dir);
        std::fs::create_dir_all(&results).unwrap();
        // As libcni 1.1 writes it (config is base64 of the conflist).
        let entry = serde_json::json!({
            "kind": "cniCacheV1", "containerId": "c1", "config": "e30=", "ifName": "eth0",
            "networkName": "pods", "netns": "/var/run/netns/cni-1",
            "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]],
            "capabilityArgs": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]},
            "result": {"cniVersion": "1.0.0", "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth12345678", "mac": "aa:bb:cc:dd:ee:00"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/var/run/netns/cni-1"}]}
        });
        std::fs::write(results.join("pods-c1-eth0"), entry.to_string()).unwrap();
        let mut other = entry.clone();
        other["networkName"] = "other".into();
        std::fs::write(results.join("other-c1-eth0"), other.to_string()).unwrap();
        std::fs::write(results.join("pods-c2-eth0"), "not json").unwrap();
        let mut legacy = entry.clone();
        legacy["kind"] = "".into();
        std::fs::write(results.join("pods-c3-eth0"), legacy.to_string()).unwrap();

        let got = entries(&dir, "pods").unwrap();
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!((e.container_id.as_str(), e.ifname.as_str()), ("c1", "eth0"));
        assert_eq!(e.netns, "/var/run/netns/cni-1");
        assert_eq!(e.cni_args_env(), "IgnoreUnknown=1;K8S_POD_NAME=p");
        assert!(e.capability_args.contains_key("portMappings"));
        assert_eq!(e.host_interfaces(), ["cni0", "veth12345678"]);
        assert!(e.modified.is_some());
        assert!(entries(&dir.join("none"), "pods").unwrap().is_empty());
    }
}
