//! Validation of CNI_CONTAINERID and CNI_IFNAME as libcni does it: these strings end up in file
//! names, firewall rule comments and netlink requests.

use crate::error::{CniError, Result};

/// libcni: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return Err(CniError::invalid_env(
            "CNI_CONTAINERID is empty: the runtime must name the container",
        ));
    };
    let ok = first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(CniError::invalid_env(format!(
            "CNI_CONTAINERID {id:?} has invalid characters: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// libcni's ValidateNetworkName: the config's `name` is used in file names and rule comments, so
/// it follows the container ID's rule. Code 7 (it is a config key, not an env variable).
pub fn network_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    Err(CniError::invalid_config(if name.is_empty() {
        "network config has no \"name\": every network needs one".to_string()
    } else {
        format!(
            "network name {name:?} has invalid characters: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
        )
    }))
}

/// Linux's IFNAMSIZ is 16 bytes with the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// libcni: not empty, at most 15 bytes, not "." or "..", no '/', ':' or whitespace.
pub fn ifname(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_IFNAME_LEN {
        "is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "may not be \".\" or \"..\""
    } else if name.contains(['/', ':']) || name.chars().any(char::is_whitespace) {
        "may not contain '/', ':' or whitespace"
    } else {
        return Ok(());
    };
    Err(CniError::invalid_env(format!(
        "CNI_IFNAME {name:?} {problem}: use a valid Linux interface name such as eth0"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in [
            "a",
            "0",
            "abc-DEF_1.2",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ] {
            assert!(container_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-a", ".a", "_a", "a b", "a/b", "a;b", "a\nb", "ü", "a:b", "a\"b", "a$(x)",
        ] {
            let e = container_id(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
            assert!(e.msg.contains("CNI_CONTAINERID"));
        }
    }

    #[test]
    fn network_names() {
        for ok in ["pods", "k8s-pod-network", "a.b_c-1", "0"] {
            assert!(network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b", "../x", "a b", "a:b"] {
            let e = network_name(bad).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.contains("name"), "{}", e.msg);
        }
    }

    #[test]
    fn ifnames() {
        for ok in [
            "eth0",
            "net1",
            "a",
            "123456789012345",
            "veth-x_y.z",
            "e\u{e9}",
        ] {
            assert!(ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "eth/0",
            "eth:0",
            "eth 0",
            "eth\t0",
            "eth0\n",
        ] {
            let e = ifname(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad:?}");
            assert!(e.msg.contains("CNI_IFNAME"));
        }
        // 15 bytes, not 15 characters: "é" is two bytes.
        assert!(ifname("ééééééé").is_ok());
        assert!(ifname("éééééééé").is_err());
    }
}
