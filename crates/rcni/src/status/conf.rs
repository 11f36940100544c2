//! The networks of the conf dir, as a runtime loads them (libcni, go-cni): `.conflist` files as
//! lists, `.conf` and `.json` as lists of one, in file-name order, the first file of a name
//! winning; and, through our plugins' parsers, where each network keeps its state.

use std::path::{Path, PathBuf};

use cni_types::NetConfList;
use serde_json::{json, Map, Value};

/// Where state lives when a config does not say (the plugins' defaults, overridable).
#[derive(Debug, Clone)]
pub struct Defaults {
    /// host-local's and rhost-local's `dataDir`.
    pub ipam_data_dir: PathBuf,
    /// rmasq's `stateDir` and rbridge's `ipMasqStateDir`.
    pub masq_state_dir: PathBuf,
}

/// The bridge a network's pods hang on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    /// rbridge: host veth names derive from the attachment, and its VLAN gateway veth is its own.
    pub ours: bool,
    pub vlan: u16,
}

/// A host-local style store and the ranges it hands out from.
#[derive(Debug, Clone)]
pub struct Store {
    pub ipam_type: String,
    pub data_dir: PathBuf,
    pub range_sets: Vec<rhost_local::RangeSetSummary>,
}

/// One network of the conf dir and where its plugins keep state.
#[derive(Debug, Clone)]
pub struct NetworkConf {
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    pub plugins: Vec<String>,
    pub bridge: Option<Bridge>,
    pub store: Option<Store>,
    /// rmasq's state dirs (rmasq entries, rbridge's `ipMasq`).
    pub masq_dirs: Vec<PathBuf>,
    pub host_routes: Vec<rroutes::HostRoute>,
    /// Parts of the config our plugins refuse (see `rcni lint`).
    pub problems: Vec<String>,
}

/// The networks of `dir`, and a line for every file skipped.
pub fn load(dir: &Path, defaults: &Defaults) -> anyhow::Result<(Vec<NetworkConf>, Vec<String>)> {
    let files = rcni_gc::conf_files(dir)
        .map_err(|e| anyhow::anyhow!("cannot list the conf dir {}: {e}", dir.display()))?;
    let mut nets: Vec<NetworkConf> = Vec::new();
    let mut skipped = Vec::new();
    for file in files {
        match read_list(&file) {
            Err(e) => skipped.push(format!("{}: {e}", file.display())),
            Ok(list) if nets.iter().any(|n| n.name == list.name) => skipped.push(format!(
                "{}: network {:?} is already defined by an earlier file, which runtimes use",
                file.display(),
                list.name
            )),
            Ok(list) => nets.push(network(file, &list, defaults)),
        }
    }
    Ok((nets, skipped))
}

/// A file as a list: a `.conf` becomes a list of its one plugin, as libcni does.
fn read_list(file: &Path) -> Result<NetConfList, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read it: {e}"))?;
    let is_list = file.extension().is_some_and(|e| e == "conflist");
    let bytes = if is_list {
        bytes
    } else {
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        json!({
            "cniVersion": v.get("cniVersion").cloned().unwrap_or(Value::Null),
            "name": v.get("name").cloned().unwrap_or(Value::Null),
            "plugins": [v],
        })
        .to_string()
        .into_bytes()
    };
    let list = NetConfList::from_slice(&bytes).map_err(|e| e.msg)?;
    cni_types::validate::network_name(&list.name).map_err(|e| e.msg)?;
    list.version().map_err(|e| e.msg)?;
    Ok(list)
}

fn network(file: PathBuf, list: &NetConfList, defaults: &Defaults) -> NetworkConf {
    let mut net = NetworkConf {
        file,
        name: list.name.clone(),
        version: list.cni_version.clone(),
        plugins: Vec::new(),
        bridge: None,
        store: None,
        masq_dirs: Vec::new(),
        host_routes: Vec::new(),
        problems: Vec::new(),
    };
    for (i, entry) in list.plugins.iter().enumerate() {
        let t = entry.get("type").and_then(Value::as_str).unwrap_or("");
        net.plugins.push(t.to_string());
        let Ok(conf) = list.plugin_config(i) else {
            continue;
        };
        let stdin = conf.to_string().into_bytes();
        let mut refused: Option<cni_types::CniError> = None;
        match t {
            "rbridge" => match rbridge::parse_config(&stdin) {
                Ok(b) => {
                    if b.ip_masq {
                        let dir = b.ip_masq_state_dir.clone();
                        net.masq_dirs
                            .push(dir.unwrap_or_else(|| defaults.masq_state_dir.clone()));
                    }
                    net.bridge.get_or_insert(Bridge {
                        name: b.bridge,
                        ours: true,
                        vlan: b.vlan,
                    });
                }
                Err(e) => refused = Some(e),
            },
            "bridge" => {
                let name = entry
                    .get("bridge")
                    .and_then(Value::as_str)
                    .unwrap_or("cni0");
                net.bridge.get_or_insert(Bridge {
                    name: name.to_string(),
                    ours: false,
                    vlan: 0,
                });
            }
            "rmasq" => match rmasq::parse_config(&stdin) {
                Ok(m) => net.masq_dirs.push(if has_key(entry, "stateDir") {
                    m.state_dir
                } else {
                    defaults.masq_state_dir.clone()
                }),
                Err(e) => refused = Some(e),
            },
            "rroutes" => match rroutes::parse_config(&stdin) {
                Ok(r) => net.host_routes.extend(r.host_routes),
                Err(e) => refused = Some(e),
            },
            _ => {}
        }
        if let Some(e) = refused {
            net.problems
                .push(format!("plugins[{i}] ({t}) refuses its config: {}", e.msg));
        }
        if net.store.is_none() {
            net.store = store(entry, &stdin, defaults, &mut net.problems, i);
        }
    }
    net.masq_dirs.dedup();
    net
}

/// The store of a host-local style IPAM (ours or upstream's: one format and the same keys).
fn store(
    entry: &Map<String, Value>,
    stdin: &[u8],
    defaults: &Defaults,
    problems: &mut Vec<String>,
    i: usize,
) -> Option<Store> {
    let ipam = entry.get("ipam")?.as_object()?;
    let ipam_type = ipam.get("type")?.as_str()?;
    if !matches!(ipam_type, "rhost-local" | "host-local") {
        return None;
    }
    match rhost_local::parse_config(stdin) {
        Ok(s) => Some(Store {
            ipam_type: ipam_type.to_string(),
            data_dir: if has_key(ipam, "dataDir") {
                s.data_dir
            } else {
                defaults.ipam_data_dir.clone()
            },
            range_sets: s.range_sets,
        }),
        Err(e) => {
            problems.push(format!(
                "plugins[{i}].ipam ({ipam_type}) refuses its config: {}",
                e.msg
            ));
            None
        }
    }
}

fn has_key(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_a_conf_dir() {
        let dir = cni_testkit::temp_dir("rcni-status-conf");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conflists");
        for f in ["10-rcni.conflist", "30-bridge-rcni.conflist"] {
            std::fs::copy(shipped.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            dir.join("50-single.conf"),
            r#"{"cniVersion":"1.0.0","name":"single","type":"rbridge","bridge":"br1","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.9.0.0/24"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("60-dup.conflist"),
            std::fs::read(shipped.join("10-rcni.conflist")).unwrap(),
        )
        .unwrap();
        let defaults = Defaults {
            ipam_data_dir: "/d/networks".into(),
            masq_state_dir: "/d/rmasq".into(),
        };
        let (nets, skipped) = load(&dir, &defaults).unwrap();
        let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["rcni", "bridge-rcni", "single"]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("05-broken"), "{skipped:?}");
        assert!(skipped[1].contains("already defined"), "{skipped:?}");
        let rcni = &nets[0];
        assert_eq!(rcni.plugins, ["rbridge", "rmasq", "portmap"]);
        assert_eq!(
            rcni.bridge,
            Some(Bridge {
                name: "cni0".into(),
                ours: true,
                vlan: 0
            })
        );
        let store = rcni.store.as_ref().unwrap();
        // The shipped conflist names the store itself.
        assert_eq!(store.data_dir, Path::new("/var/lib/cni/networks"));
        assert_eq!(store.range_sets.len(), 2);
        assert_eq!(rcni.masq_dirs, [PathBuf::from("/d/rmasq")]);
        assert!(!nets[1].bridge.as_ref().unwrap().ours);
        let single = &nets[2];
        assert_eq!(
            single.store.as_ref().unwrap().data_dir,
            Path::new("/d/networks")
        );
        assert_eq!(single.masq_dirs, [PathBuf::from("/d/rmasq")]);
        assert!(single.problems.is_empty(), "{:?}", single.problems);
    }
}
