//! rroutes' config seen from outside a CNI call, touching nothing: for `rcni lint` (the config
//! through the parser every verb uses) and `rcni status` (the node routes a network asks for).

use cni_types::{CniError, Result};

pub use crate::conf::{AddRoute, Conf, DelRoute, HostRoute, DEFAULT_PROTOCOL};

/// A plugin config (the whole stdin an ADD would get) through rroutes' parser: code 7 naming
/// the key at fault, e.g. `addRoutes[1].dst`.
pub fn parse_config(stdin: &[u8]) -> Result<Conf> {
    let raw = serde_json::from_slice(stdin)
        .map_err(|e| CniError::decode(format!("network configuration is not valid JSON: {e}")))?;
    Conf::from_value(&raw)
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_is_parsed_and_errors_name_the_key() {
        let c = super::parse_config(
            br#"{"type":"rroutes","hostRoutes":[{"dst":"10.2.0.0/24","gw":"192.168.1.2"}]}"#,
        )
        .unwrap();
        assert_eq!(c.host_routes.len(), 1);
        assert_eq!(c.protocol, super::DEFAULT_PROTOCOL);
        let e = super::parse_config(br#"{"addRoutes":[{"dst":"10.0.0.0/8","gateway":"1.2.3.4"}]}"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("addRoutes[0]"), "{}", e.msg);
    }
}
