//! Names and MACs that rbridge chooses itself, so it never has to read them back.

/// FNV-1a, 64 bits: stable across builds and releases, unlike std's hasher, because the name
/// must come out the same in the ADD and in a DEL run by a later version of the plugin.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // A NUL after each part (it cannot occur in a container ID or ifname) keeps ("ab", "c")
    // and ("a", "bc") apart.
    for b in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The host end of the attachment (container ID, ifname): `veth` and 11 hex digits (44 bits of
/// the hash; the kernel allows 15 bytes). Deterministic, so DEL finds it without the pod's
/// netns and a retried ADD recognises a stale one; 44 bits keep two live pods of one node from
/// colliding (about 1 in 10^9 with 200 pods).
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    format!("veth{:011x}", fnv1a(&[container_id, ifname]) >> 20)
}

/// The host end of the veth that carries a VLAN gateway interface `<bridge>.<vlan>`.
pub fn vlan_gateway_veth(bridge: &str, vlan: u16) -> String {
    format!(
        "veth{:011x}",
        fnv1a(&["rbridge-vlan-gateway", bridge, &vlan.to_string()]) >> 20
    )
}

/// A random unicast, locally administered MAC, as the kernel would pick, but known to us
/// without a read-back.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        // Only without entropy at early boot; time and pid still keep nodes apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = fnv1a(&[&t.to_string(), &std::process::id().to_string()]);
        mac.copy_from_slice(&seed.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_is_stable_and_fits() {
        let a = host_veth("9f86d081884c7d65", "eth0");
        assert_eq!(a, host_veth("9f86d081884c7d65", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert_ne!(a, host_veth("9f86d081884c7d65", "eth1"));
        assert_ne!(host_veth("ab", "c"), host_veth("a", "bc"));
        // Pinned: a new version must find the veths an older one created.
        assert_eq!(host_veth("c1", "eth0"), "vetha35ad96f196");
        assert_eq!(vlan_gateway_veth("cni0", 100).len(), 15);
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..100 {
            let m = random_mac();
            assert_eq!(m[0] & 1, 0);
            assert_eq!(m[0] & 2, 2);
        }
        assert_ne!(random_mac(), random_mac());
    }
}
