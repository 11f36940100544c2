use super::*;
use crate::backend::forward::forward_rules;
use crate::class::Options;
use ipnet::IpNet;

#[test]
fn rules_are_keyed_on_the_subnet() {
    let a: IpNet = "fd00:1::5/64".parse().unwrap();
    let c = Class::new(BackendKind::Iptables, "pods", a, &[a], &Options::default());
    assert_eq!(
        jump_rule(&c),
        format!(
            "-s fd00:1::/64 -m comment --comment rmasq:pods -j RMASQ-{}",
            c.id
        )
    );
    assert!(
        nat_chain(&c).len() <= 28,
        "iptables chain names are at most 28 chars"
    );
    assert_eq!(
        class_rules(&c),
        [
            "-d fd00:1::/64 -j RETURN",
            "-d fe80::/10 -j RETURN",
            "-d ff00::/8 -j RETURN",
            "-j MASQUERADE"
        ]
    );
    let [from, to] = forward_rules(&c);
    assert!(from.starts_with("-s fd00:1::/64 ") && from.ends_with("-j ACCEPT"));
    assert!(to.starts_with("-d fd00:1::/64 "));
}
