//! rbridge's config seen from outside a CNI call, touching nothing: for `rcni lint` (the config
//! through the parser and checks ADD uses) and `rcni status` (the bridge, the masquerade, the
//! host veth names).

use std::path::PathBuf;

use cni_plugin::PluginConfig;
use cni_types::Result;

use crate::config::BridgeConf;

pub use crate::names::{host_veth, vlan_gateway_veth};

/// What rbridge makes of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSummary {
    pub bridge: String,
    /// `ipMasq`: masquerade through the rmasq library, its state in `ip_masq_state_dir`
    /// (rmasq's default when None).
    pub ip_masq: bool,
    pub ip_masq_state_dir: Option<PathBuf>,
    /// `ipam.type`, None for an L2-only network.
    pub ipam: Option<String>,
    /// Access VLAN of the pods' ports, 0 for none (its gateway veth is rbridge's own).
    pub vlan: u16,
}

/// A plugin config (the whole stdin an ADD would get) through ADD's checks, as a call for
/// container `lint`/`eth0` would see them: code 7 (4 for CNI_ARGS keys) naming the key at fault.
pub fn parse_config(stdin: &[u8]) -> Result<BridgeSummary> {
    let call = cni_plugin::skel::lint_call(crate::INFO.name, stdin)?;
    let c = BridgeConf::from_call(&call)?;
    c.validate_for_add()?;
    Ok(BridgeSummary {
        bridge: c.bridge,
        ip_masq: c.ip_masq,
        ip_masq_state_dir: c.ip_masq_state_dir,
        ipam: c.ipam,
        vlan: c.vlan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_read_with_defaults_and_errors_name_the_key() {
        let s = parse_config(br#"{"cniVersion":"1.0.0","name":"n","type":"rbridge","ipMasq":true,"ipam":{"type":"rhost-local"}}"#).unwrap();
        assert_eq!(s.bridge, "cni0");
        assert!(s.ip_masq);
        assert_eq!(s.ipam.as_deref(), Some("rhost-local"));
        let e = parse_config(br#"{"cniVersion":"1.0.0","name":"n","type":"rbridge","mtu":"big"}"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("mtu"), "{}", e.msg);
        let e = parse_config(
            br#"{"cniVersion":"1.0.0","name":"n","type":"rbridge","hairpinMode":true,"promiscMode":true}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("hairpinMode and promiscMode"), "{}", e.msg);
    }
}
