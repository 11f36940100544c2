//! rbridge's own config keys (the upstream bridge plugin's), typed and validated before anything
//! changes on the node. Errors are code 7 and name the key and the bad value.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use cni_plugin::{Call, PluginConfig};
use cni_types::config::{lookup_ci, Flag};
use cni_types::error::INVALID_ENVIRONMENT_VARIABLES;
use cni_types::{CniError, Result};
use rmasq::BackendKind;

const DEFAULT_BRIDGE: &str = "cni0";

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(rename = "isGateway", default)]
    is_gateway: Flag,
    #[serde(rename = "isDefaultGateway", default)]
    is_default_gateway: Flag,
    #[serde(rename = "forceAddress", default)]
    force_address: Flag,
    #[serde(rename = "ipMasq", default)]
    ip_masq: Flag,
    #[serde(rename = "ipMasqBackend", default)]
    ip_masq_backend: Option<String>,
    /// rcni: where rmasq keeps its state (default `/var/lib/cni/rmasq`); `stateDir`, rmasq's own
    /// key, works too.
    #[serde(rename = "ipMasqStateDir", alias = "stateDir", default)]
    ip_masq_state_dir: Option<PathBuf>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "hairpinMode", default)]
    hairpin_mode: Flag,
    #[serde(rename = "promiscMode", default)]
    promisc_mode: Flag,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(rename = "vlanTrunk", default)]
    vlan_trunk: Option<Vec<Map<String, Value>>>,
    #[serde(rename = "preserveDefaultVlan", default)]
    preserve_default_vlan: Option<Flag>,
    #[serde(default)]
    macspoofchk: Flag,
    #[serde(default)]
    enabledad: Flag,
    #[serde(rename = "disableContainerInterface", default)]
    disable_container_interface: Flag,
    #[serde(rename = "portIsolation", default)]
    port_isolation: Flag,
}

/// Where the container MAC came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacSource {
    CniArgs,
    ArgsCni,
    RuntimeConfig,
}

impl MacSource {
    fn describe(self) -> &'static str {
        match self {
            MacSource::CniArgs => "CNI_ARGS MAC",
            MacSource::ArgsCni => "args.cni.mac",
            MacSource::RuntimeConfig => "runtimeConfig.mac",
        }
    }
}

/// The validated config of one call.
#[derive(Debug, Clone)]
pub struct BridgeConf {
    pub network: String,
    pub bridge: String,
    /// True also when only `isDefaultGateway` is set, as upstream.
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub ip_masq_backend: Option<BackendKind>,
    pub ip_masq_state_dir: Option<PathBuf>,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN of the host veth; 0 for none.
    pub vlan: u16,
    /// Trunk VLANs, sorted, without duplicates.
    pub vlan_trunk: Vec<u16>,
    pub preserve_default_vlan: bool,
    pub mac_spoof_check: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// The container MAC asked for, if any.
    pub mac: Option<[u8; 6]>,
    /// `ipam.type`; None for an L2-only network (`"ipam": {}` or no ipam).
    pub ipam: Option<String>,
}

impl PluginConfig for BridgeConf {
    fn from_call(call: &Call) -> Result<BridgeConf> {
        let raw: Raw = call.decode()?;
        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        check_link_name("bridge", &bridge)?;
        let vlan = match raw.vlan.unwrap_or(0) {
            v @ 0..=4094 => v as u16,
            v => {
                return Err(CniError::invalid_config(format!(
                    "vlan {v} is not a valid VLAN ID: use 1 to 4094, or 0 for none"
                )))
            }
        };
        let vlan_trunk = collect_vlan_trunk(raw.vlan_trunk.as_deref())?;
        if vlan != 0 && !vlan_trunk.is_empty() {
            return Err(CniError::invalid_config(
                "vlan and vlanTrunk are both set: a port is either an access port (vlan) or a trunk (vlanTrunk)",
            ));
        }
        if vlan != 0 && bridge.len() + 1 + vlan.to_string().len() > 15 {
            return Err(CniError::invalid_config(format!(
                "bridge {bridge:?} is too long for its VLAN gateway interface \"{bridge}.{vlan}\" (at most 15 bytes)"
            )));
        }
        let mtu = match raw.mtu.unwrap_or(0) {
            0 => None,
            m @ 68..=65535 => Some(m as u32),
            m => {
                return Err(CniError::invalid_config(format!(
                    "mtu {m} is out of range: use 68 to 65535, or leave it out for the kernel's default"
                )))
            }
        };
        let ip_masq_backend = match raw.ip_masq_backend.as_deref() {
            None => None,
            Some(b) => Some(b.parse::<BackendKind>().map_err(|()| {
                CniError::invalid_config(format!(
                    "ipMasqBackend {b:?} is not a masquerade backend: use \"iptables\" or \"nftables\""
                ))
            })?),
        };
        call.args.check_known(&["MAC"])?;
        let mac = container_mac(call)?;
        let ipam = call
            .conf
            .ipam
            .as_ref()
            .map(|i| i.plugin_type.clone())
            .filter(|t| !t.is_empty());
        let is_default_gateway = raw.is_default_gateway.0;
        Ok(BridgeConf {
            network: call.conf.name.clone(),
            bridge,
            is_gateway: raw.is_gateway.0 || is_default_gateway,
            is_default_gateway,
            force_address: raw.force_address.0,
            ip_masq: raw.ip_masq.0,
            ip_masq_backend,
            ip_masq_state_dir: raw.ip_masq_state_dir,
            mtu,
            hairpin: raw.hairpin_mode.0,
            promisc: raw.promisc_mode.0,
            vlan,
            vlan_trunk,
            preserve_default_vlan: raw.preserve_default_vlan.is_none_or(|f| f.0),
            mac_spoof_check: raw.macspoofchk.0,
            enable_dad: raw.enabledad.0,
            disable_container_interface: raw.disable_container_interface.0,
            port_isolation: raw.port_isolation.0,
            mac,
            ipam,
        })
    }
}

impl BridgeConf {
    /// The checks upstream makes in ADD only (DEL and CHECK of such a config still work).
    pub fn validate_for_add(&self) -> Result<()> {
        if self.hairpin && self.promisc {
            return Err(CniError::invalid_config(
                "hairpinMode and promiscMode are both true: they cannot be set at the same time",
            ));
        }
        if self.disable_container_interface && self.ipam.is_some() {
            return Err(CniError::invalid_config(
                "disableContainerInterface is true but ipam.type is set: IPAM cannot be used on a disabled container interface; use \"ipam\": {}",
            ));
        }
        Ok(())
    }

    /// The bridge filters VLANs when the port gets any VLAN setting.
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }
}

/// `bridge` is an interface name: the kernel's limits, checked before anything is created.
fn check_link_name(key: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > 15 {
        "is longer than 15 bytes"
    } else if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
    {
        "is not a valid interface name"
    } else {
        return Ok(());
    };
    Err(CniError::invalid_config(format!(
        "{key} {name:?} {problem}: use a Linux interface name such as cni0"
    )))
}

/// The trunk's VLAN IDs from `[{id}, {minID, maxID}, ...]`, sorted and unique. Keys match without
/// regard to case, as Go's JSON decoding in upstream does.
fn collect_vlan_trunk(items: Option<&[Map<String, Value>]>) -> Result<Vec<u16>> {
    let Some(items) = items else {
        return Ok(Vec::new());
    };
    let id = |item: &Map<String, Value>, key: &str, i: usize| -> Result<Option<u16>> {
        match lookup_ci(item, key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n @ 1..=4094) => Ok(Some(n as u16)),
                _ => Err(CniError::invalid_config(format!(
                    "vlanTrunk[{i}].{key} {v} is not a valid VLAN ID: use 1 to 4094"
                ))),
            },
        }
    };
    let mut vlans = std::collections::BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        match (id(item, "minID", i)?, id(item, "maxID", i)?) {
            (Some(min), Some(max)) => {
                if max < min {
                    return Err(CniError::invalid_config(format!(
                        "vlanTrunk[{i}]: minID {min} is greater than maxID {max}"
                    )));
                }
                vlans.extend(min..=max);
            }
            (None, Some(_)) => {
                return Err(CniError::invalid_config(format!(
                    "vlanTrunk[{i}] has maxID but no minID: give both"
                )))
            }
            (Some(_), None) => {
                return Err(CniError::invalid_config(format!(
                    "vlanTrunk[{i}] has minID but no maxID: give both"
                )))
            }
            (None, None) => {}
        }
        if let Some(v) = id(item, "id", i)? {
            vlans.insert(v);
        }
    }
    Ok(vlans.into_iter().collect())
}

/// The container MAC: CNI_ARGS `MAC`, overridden by `args.cni.mac`, overridden by
/// `runtimeConfig.mac` (upstream's order).
fn container_mac(call: &Call) -> Result<Option<[u8; 6]>> {
    let mut chosen: Option<(&str, MacSource)> = None;
    if let Some(m) = call.args.get("MAC").filter(|m| !m.is_empty()) {
        chosen = Some((m, MacSource::CniArgs));
    }
    if let Some(m) = call.conf.args_cni("mac").and_then(Value::as_str) {
        if !m.is_empty() {
            chosen = Some((m, MacSource::ArgsCni));
        }
    }
    if let Some(m) = call.conf.runtime("mac").and_then(Value::as_str) {
        if !m.is_empty() {
            chosen = Some((m, MacSource::RuntimeConfig));
        }
    }
    let Some((text, source)) = chosen else {
        return Ok(None);
    };
    let code = if source == MacSource::CniArgs {
        INVALID_ENVIRONMENT_VARIABLES
    } else {
        cni_types::error::INVALID_NETWORK_CONFIG
    };
    let mac = cni_netlink::parse_mac(text).ok_or_else(|| {
        CniError::new(
            code,
            format!(
                "{} {text:?} is not a MAC address: use the form 0a:58:0a:f4:00:05",
                source.describe()
            ),
        )
    })?;
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(CniError::new(
            code,
            format!(
                "{} {text:?} is not a unicast MAC address: the first byte must be even and the address not all zero",
                source.describe()
            ),
        ));
    }
    Ok(Some(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(json: &str) -> Result<Vec<u16>> {
        let v: Vec<Map<String, Value>> = serde_json::from_str(json).unwrap();
        collect_vlan_trunk(Some(&v))
    }

    #[test]
    fn vlan_trunk_ranges_and_ids() {
        assert_eq!(
            trunk(r#"[{"id":101},{"minID":200,"maxID":203},{"ID":201}]"#).unwrap(),
            [101, 200, 201, 202, 203]
        );
        assert!(trunk(r#"[{"minID":5}]"#).unwrap_err().msg.contains("maxID"));
        assert!(trunk(r#"[{"maxID":5}]"#).unwrap_err().msg.contains("minID"));
        assert!(trunk(r#"[{"minID":9,"maxID":5}]"#)
            .unwrap_err()
            .msg
            .contains("greater"));
        let e = trunk(r#"[{"id":4095}]"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("vlanTrunk[0].id"), "{}", e.msg);
        assert!(trunk("[]").unwrap().is_empty());
    }

    /// As upstream bridge (Go's JSON decoding): a key names its field exactly or ignoring case.
    #[test]
    fn keys_are_read_ignoring_case_as_upstream_reads_them() {
        let stdin = br#"{"cniVersion":"1.0.0","name":"n","Type":"rbridge","BRIDGE":"br9",
            "isgateway":true,"IPMasq":true,"Mtu":1400,"IPAM":{"type":"rhost-local"}}"#;
        let call = cni_plugin::skel::lint_call("rbridge", stdin).unwrap();
        let conf = BridgeConf::from_call(&call).unwrap();
        assert_eq!(conf.bridge, "br9");
        assert!(conf.is_gateway && conf.ip_masq);
        assert_eq!(conf.mtu, Some(1400));
        assert_eq!(conf.ipam.as_deref(), Some("rhost-local"));
    }

    #[test]
    fn link_names() {
        assert!(check_link_name("bridge", "cni0").is_ok());
        for bad in ["", "a-very-long-bridge-name", "a b", "x/y", ".."] {
            let e = check_link_name("bridge", bad).unwrap_err();
            assert!(e.msg.starts_with("bridge"), "{}", e.msg);
        }
    }
}
