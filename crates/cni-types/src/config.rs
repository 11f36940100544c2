//! Network configuration: the keys every plugin shares, the conflist, and typed decoding of a
//! plugin's own keys with errors that name the field at fault.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, Result, DECODING_FAILURE, INVALID_NETWORK_CONFIG};
use crate::result::Dns;
use crate::version::{SpecVersion, SUPPORTED_VERSIONS};

/// The keys the spec gives every plugin's config. Everything else stays in `extra`; a plugin
/// reads its own keys with [`decode_config`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Map<String, Value>>,
    #[serde(
        rename = "disableCheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_check: Option<Flag>,
    #[serde(rename = "disableGC", default, skip_serializing_if = "Option::is_none")]
    pub disable_gc: Option<Flag>,
    /// rcni: append one line per call to this file.
    #[serde(rename = "logFile", default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// rcni: `error`, `info` (default) or `debug`.
    #[serde(rename = "logLevel", default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// NetConf's own keys (it collects the others in `extra`), as Go's plugins match them.
const NETCONF_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "ipam",
    "dns",
    "prevResult",
    "runtimeConfig",
    "args",
    "capabilities",
    "disableCheck",
    "disableGC",
    "logFile",
    "logLevel",
];

/// The `ipam` section: its `type` names the IPAM plugin; the rest is that plugin's business.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A boolean that libcni also accepts as a string ("true", "false", "1", "0", ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(b)),
            Value::String(s) => parse_bool(&s).map(Flag).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not a boolean (use true or false)"))
            }),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a boolean (use true or false)"
            ))),
        }
    }
}

/// Go's strconv.ParseBool, which libcni uses for these flags.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl NetConf {
    /// Decodes the shared keys of a plugin's stdin.
    pub fn from_slice(bytes: &[u8]) -> Result<NetConf> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::decode(
                "no network configuration on stdin: the runtime must pass the plugin's config as JSON",
            ));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::decode(format!(
                "network configuration on stdin is not valid JSON: {e}"
            ))
        })?;
        if !value.is_object() {
            return Err(CniError::decode(
                "network configuration on stdin must be a JSON object",
            ));
        }
        let mut value = value;
        crate::fold::fold_keys(&mut value, NETCONF_KEYS);
        if let Some(ipam) = value.get_mut("ipam") {
            crate::fold::fold_keys(ipam, &["type"]);
        }
        decode_config(value)
    }

    /// The spec version to speak: the highest of `cniVersions` we support, else `cniVersion`.
    pub fn version(&self) -> Result<SpecVersion> {
        let best = self
            .cni_versions
            .iter()
            .filter_map(|v| SpecVersion::parse(v).ok())
            .max();
        match best {
            Some(v) => Ok(v),
            None => SpecVersion::parse(&self.cni_version),
        }
    }

    /// `args.cni.<key>`, where runtimes put per-attachment arguments.
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        self.args.as_ref()?.get("cni")?.get(key)
    }

    /// `runtimeConfig.<key>`, matched without regard to case because Go runtimes
    /// (containerd) and others (podman) spell the same keys differently.
    pub fn runtime(&self, key: &str) -> Option<&Value> {
        lookup_ci(self.runtime_config.as_ref()?, key)
    }
}

/// Finds `key` in `map`, exact match first, then ignoring ASCII case (Go's JSON decoding rule).
pub fn lookup_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Decodes a config into `T`, its keys matched as Go matches them (exactly, else ignoring case:
/// `fold`). A type error becomes code 7 naming the path of the bad key, e.g.
/// `ipam.ranges[0][0].subnet: invalid IP network syntax`.
pub fn decode_config<T: DeserializeOwned>(value: Value) -> Result<T> {
    decoded(serde_path_to_error::deserialize(crate::fold::Folding(
        value,
    )))
}

/// [`decode_config`] with keys matched exactly.
fn decode_exact<T: DeserializeOwned>(value: Value) -> Result<T> {
    decoded(serde_path_to_error::deserialize(value))
}

fn decoded<T>(
    r: std::result::Result<T, serde_path_to_error::Error<serde_json::Error>>,
) -> Result<T> {
    r.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!("invalid network config: {inner}"),
            )
        } else {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!("invalid network config: {path}: {inner}"),
            )
        }
    })
}

/// A network configuration list (`.conflist`), as a runtime reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConfList {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(
        rename = "disableCheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_check: Option<Flag>,
    #[serde(rename = "disableGC", default, skip_serializing_if = "Option::is_none")]
    pub disable_gc: Option<Flag>,
    #[serde(default)]
    pub plugins: Vec<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NetConfList {
    pub fn from_slice(bytes: &[u8]) -> Result<NetConfList> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(DECODING_FAILURE, format!("conflist is not valid JSON: {e}"))
        })?;
        // libcni reads a conflist's keys exactly (map lookups), unlike a plugin's.
        let list: NetConfList = decode_exact(value)?;
        if list.plugins.is_empty() {
            return Err(CniError::invalid_config(format!(
                "conflist {:?} has no plugins: add at least one entry to \"plugins\"",
                list.name
            )));
        }
        Ok(list)
    }

    /// The version a runtime supporting all our versions would pick: the highest of
    /// `cniVersions` it knows, else `cniVersion`.
    pub fn version(&self) -> Result<SpecVersion> {
        let best = self
            .cni_versions
            .iter()
            .filter_map(|v| SpecVersion::parse(v).ok())
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .max();
        match best {
            Some(v) => Ok(v),
            None => SpecVersion::parse(&self.cni_version),
        }
    }

    /// The config that plugin `index` receives, as libcni builds it (without prevResult or
    /// runtimeConfig): the plugin's own keys plus the list's `name` and `cniVersion`.
    pub fn plugin_config(&self, index: usize) -> Result<Value> {
        let mut conf = self.plugins.get(index).cloned().ok_or_else(|| {
            CniError::invalid_config(format!("conflist {:?} has no plugin #{index}", self.name))
        })?;
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert(
            "cniVersion".into(),
            Value::String(self.version()?.as_str().into()),
        );
        Ok(Value::Object(conf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NETCONF_KEYS, which NetConf's keys are folded to, are its fields' names: every one it
    /// writes when all are set.
    #[test]
    fn netconf_keys_are_the_structs_own() {
        let conf = NetConf {
            cni_versions: vec!["1.0.0".into()],
            ipam: Some(IpamConf::default()),
            dns: Some(Dns::default()),
            prev_result: Some(Value::Null),
            runtime_config: Some(Map::new()),
            args: Some(Value::Null),
            capabilities: Some(Map::new()),
            disable_check: Some(Flag(true)),
            disable_gc: Some(Flag(true)),
            log_file: Some("/l".into()),
            log_level: Some("info".into()),
            ..NetConf::default()
        };
        let written = serde_json::to_value(&conf).unwrap();
        let mut keys: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want = NETCONF_KEYS.to_vec();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn shared_keys_and_unknown_keys_are_kept() {
        let conf = NetConf::from_slice(
            br#"{"cniVersion":"1.0.0","name":"n","type":"rbridge","bridge":"cni0",
                "ipam":{"type":"rhost-local","subnet":"10.1.0.0/16"},
                "dns":{"nameservers":["10.1.0.1"]},
                "runtimeConfig":{"portMappings":[]},"args":{"cni":{"ips":["10.1.0.9"]}},
                "capabilities":{"ips":true},"disableCheck":"true","disableGC":false}"#,
        )
        .unwrap();
        assert_eq!(conf.version().unwrap(), SpecVersion::V1_0_0);
        assert_eq!(conf.plugin_type, "rbridge");
        assert_eq!(conf.extra["bridge"], "cni0");
        let ipam = conf.ipam.as_ref().unwrap();
        assert_eq!(ipam.plugin_type, "rhost-local");
        assert_eq!(ipam.extra["subnet"], "10.1.0.0/16");
        assert_eq!(conf.dns.as_ref().unwrap().nameservers, ["10.1.0.1"]);
        assert_eq!(conf.args_cni("ips").unwrap()[0], "10.1.0.9");
        assert_eq!(conf.disable_check, Some(Flag(true)));
        assert_eq!(conf.disable_gc, Some(Flag(false)));
        assert!(conf.runtime("PORTMAPPINGS").is_some());
        // Serialising keeps every key, so the config can be handed on unchanged.
        let back = serde_json::to_value(&conf).unwrap();
        assert_eq!(back["bridge"], "cni0");
        assert_eq!(back["ipam"]["subnet"], "10.1.0.0/16");
    }

    #[test]
    fn flag_rejects_non_booleans_naming_the_key() {
        let e =
            NetConf::from_slice(br#"{"cniVersion":"1.0.0","disableCheck":"maybe"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("disableCheck") && e.msg.contains("maybe"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn missing_version_means_010_and_cni_versions_picks_highest() {
        let c = NetConf::from_slice(br#"{"name":"x"}"#).unwrap();
        assert_eq!(c.version().unwrap(), SpecVersion::V0_1_0);
        let c = NetConf::from_slice(
            br#"{"cniVersion":"0.3.1","cniVersions":["0.4.0","1.0.0","9.9.9"]}"#,
        )
        .unwrap();
        assert_eq!(c.version().unwrap(), SpecVersion::V1_0_0);
    }

    #[test]
    fn bad_stdin_is_decode_error() {
        assert_eq!(NetConf::from_slice(b"").unwrap_err().code, 6);
        assert_eq!(NetConf::from_slice(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConf::from_slice(b"[1]").unwrap_err().code, 6);
        assert_eq!(
            NetConf::from_slice(br#"{"cniVersion":"7.0.0"}"#)
                .unwrap()
                .version()
                .unwrap_err()
                .code,
            1
        );
    }

    #[test]
    fn typed_decode_names_the_path() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Mine {
            ipam: Inner,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            subnet: ipnet::IpNet,
        }
        let e = decode_config::<Mine>(serde_json::json!({"ipam":{"subnet":"banana"}})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam.subnet"), "{}", e.msg);
    }

    #[test]
    fn conflist_plugin_config_gets_name_and_version() {
        let l = NetConfList::from_slice(
            br#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"rbridge"},{"type":"rmasq"}]}"#,
        )
        .unwrap();
        let c = l.plugin_config(1).unwrap();
        assert_eq!(c["type"], "rmasq");
        assert_eq!(c["name"], "pods");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert!(l.plugin_config(2).is_err());
        assert_eq!(
            NetConfList::from_slice(br#"{"name":"x","plugins":[]}"#)
                .unwrap_err()
                .code,
            7
        );
    }
}
