//! sysctls under /proc/sys/net, which belong to the network namespace of the thread that opens
//! them: to set one in another namespace, do it inside `NetNs::run`.

use cni_types::{CniError, Result};

/// Writes `value` to `key` (dotted, e.g. `net.ipv4.ip_forward`; interface names may hold dots,
/// so pass them through [`iface_key`]). Skips the write when the value is already set, which
/// keeps concurrent ADDs from rewriting shared sysctls.
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = path_of(key);
    if let Ok(current) = std::fs::read_to_string(&path) {
        if current.trim() == value {
            return Ok(());
        }
    }
    std::fs::write(&path, value)
        .map_err(|e| CniError::io(format!("setting sysctl {key}={value}: {e}")))
}

pub fn get(key: &str) -> Result<String> {
    std::fs::read_to_string(path_of(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| CniError::io(format!("reading sysctl {key}: {e}")))
}

/// `net.ipv6.conf.<ifname>.<leaf>` as a path-safe key: dots in `ifname` stay dots in the path.
pub fn iface_key(family: &str, ifname: &str, leaf: &str) -> String {
    format!("net/{family}/conf/{ifname}/{leaf}")
}

fn path_of(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{key}")
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            path_of("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            path_of(&iface_key("ipv4", "eth0.100", "forwarding")),
            "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
        );
        assert!(get("net.ipv4.ip_forward").is_ok());
    }
}
