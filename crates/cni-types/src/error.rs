//! The spec's error type: `{cniVersion, code, msg, details}` on stdout and a non-zero exit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Config's cniVersion is not one the plugin supports, or the verb does not exist in it.
pub const INCOMPATIBLE_CNI_VERSION: u32 = 1;
/// A config field the plugin does not support; the message names it.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// The container is unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// A CNI_* environment variable is missing or invalid; the message names it.
pub const INVALID_ENVIRONMENT_VARIABLES: u32 = 4;
/// Reading or writing something failed (files, netlink, exec).
pub const IO_FAILURE: u32 = 5;
/// stdin, prevResult or a delegate's output could not be decoded.
pub const DECODING_FAILURE: u32 = 6;
/// The network config is invalid; the message names the key and value.
pub const INVALID_NETWORK_CONFIG: u32 = 7;
/// A transient failure: the runtime should retry.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve new ADDs (e.g. address pool exhausted).
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
/// STATUS: not available, and existing containers may be affected.
pub const PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;

/// First plugin-specific code (the spec reserves 0-99).
pub const PLUGIN_SPECIFIC: u32 = 100;
/// A delegated plugin failed without writing a valid error of its own.
pub const DELEGATE_FAILED: u32 = 100;
/// An interface named CNI_IFNAME already exists in the container.
pub const INTERFACE_EXISTS: u32 = 101;
/// CHECK found the container's state differs from what ADD set up.
pub const CHECK_MISMATCH: u32 = 102;
/// The kernel refused a netlink request.
pub const NETLINK_FAILURE: u32 = 103;
/// No free address left in a range.
pub const ADDRESS_POOL_EXHAUSTED: u32 = 104;
/// A firewall (iptables/nftables) operation failed.
pub const FIREWALL_FAILURE: u32 = 105;
/// A requested address is held by another attachment (or this one holds a different one).
pub const ADDRESS_IN_USE: u32 = 106;
/// A bug in the plugin (it panicked); libcni's `ErrInternal`.
pub const INTERNAL: u32 = 999;

/// An error as the spec defines it. `msg` says what went wrong and what to fix; `details` may
/// carry the underlying cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(INVALID_NETWORK_CONFIG, msg)
    }

    pub fn invalid_env(msg: impl Into<String>) -> CniError {
        CniError::new(INVALID_ENVIRONMENT_VARIABLES, msg)
    }

    pub fn io(msg: impl Into<String>) -> CniError {
        CniError::new(IO_FAILURE, msg)
    }

    pub fn decode(msg: impl Into<String>) -> CniError {
        CniError::new(DECODING_FAILURE, msg)
    }

    /// The error JSON as the spec writes it for `version`. The shape is the same in every
    /// version; only the `cniVersion` field follows the config.
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v
    }

    /// Reads a plugin's error output (from a delegate). Returns None when it is not error JSON.
    pub fn from_json(bytes: &[u8]) -> Option<CniError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let code = v.get("code")?.as_u64()?;
        let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or_default();
        let details = v
            .get("details")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        Some(CniError {
            code: u32::try_from(code).ok()?,
            msg: msg.to_string(),
            details: details.to_string(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

/// Adds context to foreign errors: `.cni(IO_FAILURE, || format!("reading {path}"))`.
pub trait Context<T> {
    fn cni<F, S>(self, code: u32, what: F) -> Result<T>
    where
        F: FnOnce() -> S,
        S: Into<String>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn cni<F, S>(self, code: u32, what: F) -> Result<T>
    where
        F: FnOnce() -> S,
        S: Into<String>,
    {
        self.map_err(|e| CniError::new(code, format!("{}: {e}", what().into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_keys() {
        let e = CniError::invalid_config("ipam.subnet \"x\" is not a CIDR").with_details("why");
        let j = e.to_json("1.0.0");
        assert_eq!(j["cniVersion"], "1.0.0");
        assert_eq!(j["code"], 7);
        assert_eq!(j["msg"], "ipam.subnet \"x\" is not a CIDR");
        assert_eq!(j["details"], "why");
        let e = CniError::io("disk full");
        assert!(e.to_json("0.4.0").get("details").is_none());
    }

    #[test]
    fn error_json_per_version_round_trips() {
        for v in ["0.1.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let e = CniError::new(11, "busy").with_details("lock");
            let text = serde_json::to_vec(&e.to_json(v)).unwrap();
            assert_eq!(CniError::from_json(&text).unwrap(), e);
        }
    }

    #[test]
    fn from_json_rejects_non_errors() {
        assert!(CniError::from_json(b"not json").is_none());
        assert!(CniError::from_json(br#"{"cniVersion":"1.0.0","ips":[]}"#).is_none());
    }

    #[test]
    fn plugin_codes_are_distinct_and_plugin_specific() {
        let codes = [
            DELEGATE_FAILED,
            INTERFACE_EXISTS,
            CHECK_MISMATCH,
            NETLINK_FAILURE,
            ADDRESS_POOL_EXHAUSTED,
            FIREWALL_FAILURE,
            ADDRESS_IN_USE,
        ];
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert!(codes.iter().all(|c| *c >= PLUGIN_SPECIFIC));
    }

    #[test]
    fn context_prefixes_message() {
        let r: std::result::Result<(), std::io::Error> = Err(std::io::Error::other("boom"));
        let e = r.cni(IO_FAILURE, || "writing /x").unwrap_err();
        assert_eq!(e.code, 5);
        assert_eq!(e.msg, "writing /x: boom");
    }
}
