//! The networks of a conf dir, as a runtime loads them (go-cni, libcni): `.conflist` files as
//! lists, `.conf` and `.json` as one-plugin lists, in file-name order; the first file of a
//! network name wins. And where each network's plugins keep state that GC can see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cni_types::config::NetConfList;
use serde_json::{Map, Value};

/// upstream host-local's and rhost-local's default `dataDir`.
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// IPAM plugins keeping host-local's store (reservations named by address).
const HOST_LOCAL_STORES: [&str; 2] = ["rhost-local", "host-local"];

/// One network of the conf dir.
#[derive(Debug, Clone)]
pub struct Network {
    pub file: PathBuf,
    pub list: NetConfList,
}

/// The config files of conf dir `dir` as containerd (go-cni) and CRI-O take them: `.conflist`,
/// `.conf` and `.json`, in name order; none when the dir does not exist.
pub fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

/// The networks of `dir` and a warning for every file skipped.
pub fn load(dir: &Path) -> std::io::Result<(Vec<Network>, Vec<String>)> {
    let files = conf_files(dir)?;
    let mut networks: Vec<Network> = Vec::new();
    let mut warnings = Vec::new();
    for file in files {
        match read(&file) {
            Ok(list) => {
                if let Some(first) = networks.iter().find(|n| n.list.name == list.name) {
                    warnings.push(format!(
                        "{}: network {:?} is already defined by {}; skipped, as the runtime skips it",
                        file.display(),
                        list.name,
                        first.file.display()
                    ));
                    continue;
                }
                networks.push(Network { file, list });
            }
            Err(e) => warnings.push(format!("{}: {e}; skipped", file.display())),
        }
    }
    Ok((networks, warnings))
}

fn read(file: &Path) -> Result<NetConfList, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let conflist = file.extension().and_then(|e| e.to_str()) == Some("conflist");
    let list = if conflist {
        NetConfList::from_slice(&bytes).map_err(|e| e.msg)?
    } else {
        // A single plugin's config, which libcni turns into a list of one (ConfListFromConf).
        let conf: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON object: {e}"))?;
        let get = |k: &str| {
            conf.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        NetConfList {
            cni_version: get("cniVersion"),
            name: get("name"),
            plugins: vec![conf],
            ..NetConfList::default()
        }
    };
    cni_types::validate::network_name(&list.name).map_err(|e| e.msg)?;
    for (i, p) in list.plugins.iter().enumerate() {
        if p.get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("plugin #{i} has no \"type\""));
        }
    }
    Ok(list)
}

impl Network {
    pub fn name(&self) -> &str {
        &self.list.name
    }

    pub fn plugin_type(&self, index: usize) -> &str {
        self.list.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn types(&self) -> Vec<&str> {
        (0..self.list.plugins.len())
            .map(|i| self.plugin_type(i))
            .collect()
    }

    pub fn disable_gc(&self) -> bool {
        self.list.disable_gc.is_some_and(|f| f.0)
    }

    /// The versions the list declares (`cniVersion` and `cniVersions`), highest first.
    pub fn versions(&self) -> Vec<cni_types::SpecVersion> {
        let mut v: Vec<_> = std::iter::once(&self.list.cni_version)
            .chain(&self.list.cni_versions)
            .filter_map(|s| cni_types::SpecVersion::parse(s).ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        v.reverse();
        v
    }

    /// The stores (`<dataDir>/<network>`) of the chain's host-local-format IPAM plugins.
    pub fn ipam_stores(&self) -> Vec<PathBuf> {
        let mut out = BTreeSet::new();
        for p in &self.list.plugins {
            let Some(ipam) = p.get("ipam").and_then(Value::as_object) else {
                continue;
            };
            let ty = ipam.get("type").and_then(Value::as_str).unwrap_or("");
            if HOST_LOCAL_STORES.contains(&ty) {
                let dir = ipam
                    .get("dataDir")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_DATA_DIR);
                out.insert(PathBuf::from(dir));
            }
        }
        out.into_iter().collect()
    }

    /// The state dirs of the chain's masquerade: rmasq's `stateDir`, rbridge's with `ipMasq`.
    pub fn masq_dirs(&self) -> Vec<PathBuf> {
        let mut out = BTreeSet::new();
        for p in &self.list.plugins {
            let dir = |k: &str| p.get(k).and_then(Value::as_str).map(PathBuf::from);
            match p.get("type").and_then(Value::as_str) {
                Some("rmasq") => {
                    out.insert(dir("stateDir").unwrap_or(rmasq::DEFAULT_STATE_DIR.into()));
                }
                Some("rbridge") if p.get("ipMasq").and_then(Value::as_bool) == Some(true) => {
                    let d = dir("ipMasqStateDir").or_else(|| dir("stateDir"));
                    out.insert(d.unwrap_or(rmasq::DEFAULT_STATE_DIR.into()));
                }
                _ => {}
            }
        }
        out.into_iter().collect()
    }

    /// Whether rbridge makes the host veths (named after the attachment).
    pub fn has_rbridge(&self) -> bool {
        self.types().contains(&"rbridge")
    }

    /// Plugin `index`'s capabilities it declares (`capabilities: {name: true}`).
    pub fn capabilities(&self, index: usize) -> Vec<String> {
        self.list.plugins[index]
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| {
                caps.iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_lists_and_single_confs_in_order_first_name_wins() {
        let dir = cni_testkit::temp_dir("gc-conf");
        let list = |name: &str, extra: &str| {
            format!(
                r#"{{"cniVersion":"1.0.0","cniVersions":["0.4.0","1.1.0"],"name":"{name}","plugins":[
                    {{"type":"rbridge","ipMasq":true,"ipam":{{"type":"rhost-local","dataDir":"/d"}}}},
                    {{"type":"rmasq"{extra}}},
                    {{"type":"portmap","capabilities":{{"portMappings":true,"bandwidth":false}}}}]}}"#
            )
        };
        std::fs::write(dir.join("10-a.conflist"), list("a", r#","stateDir":"/m""#)).unwrap();
        std::fs::write(dir.join("20-a.conflist"), list("a", "")).unwrap();
        std::fs::write(
            dir.join("30-b.conf"),
            r#"{"cniVersion":"0.3.1","name":"b","type":"bridge","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("40-c.conflist"), "{").unwrap();
        std::fs::write(dir.join("README"), "not a config").unwrap();
        let (nets, warnings) = load(&dir).unwrap();
        let names: Vec<&str> = nets.iter().map(Network::name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("20-a.conflist"), "{warnings:?}");
        assert!(warnings[1].contains("40-c.conflist"), "{warnings:?}");

        let a = &nets[0];
        assert_eq!(a.types(), ["rbridge", "rmasq", "portmap"]);
        assert!(a.has_rbridge() && !nets[1].has_rbridge());
        assert_eq!(a.ipam_stores(), [PathBuf::from("/d")]);
        assert_eq!(
            a.masq_dirs(),
            [PathBuf::from("/m"), PathBuf::from(rmasq::DEFAULT_STATE_DIR)]
        );
        assert_eq!(a.capabilities(2), ["portMappings"]);
        assert_eq!(a.versions()[0], cni_types::SpecVersion::V1_1_0);
        assert_eq!(
            nets[1].ipam_stores(),
            [PathBuf::from("/var/lib/cni/networks")]
        );
        assert!(!a.disable_gc());
        assert!(load(&dir.join("none")).unwrap().0.is_empty());
    }
}
