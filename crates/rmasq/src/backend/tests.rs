use super::*;

#[test]
fn detection_ignores_iptables_nft_tables() {
    assert!(!uses_nftables(""));
    assert!(!uses_nftables(
        "table ip filter\ntable ip nat\ntable ip6 mangle\ntable arp filter\ntable bridge nat\n"
    ));
    assert!(uses_nftables("table ip nat\ntable inet firewalld\n"));
    assert!(uses_nftables("table inet rmasq\n"));
    assert!(uses_nftables("table ip kube-proxy\n"));
}
