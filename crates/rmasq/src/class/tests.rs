use super::*;

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

#[test]
fn default_skips_pod_subnet_multicast_and_link_local() {
    let pod = nets(&["10.1.0.5/24", "fd00:1::5/64"]);
    let c = Class::new(
        BackendKind::Nftables,
        "pods",
        pod[0],
        &pod,
        &Options::default(),
    );
    assert_eq!(c.source, net("10.1.0.0/24"));
    assert_eq!(
        c.skip,
        nets(&["10.1.0.0/24", "169.254.0.0/16", "224.0.0.0/4"])
    );
    let c6 = Class::new(
        BackendKind::Nftables,
        "pods",
        pod[1],
        &pod,
        &Options::default(),
    );
    assert_eq!(c6.skip, nets(&["fd00:1::/64", "fe80::/10", "ff00::/8"]));
    assert_ne!(c.id, c6.id);
    assert_eq!(c.id.len(), 16);
}

#[test]
fn explicit_cidrs_are_aggregated_and_link_local_optional() {
    let pod = nets(&["10.1.0.5/24"]);
    let opts = Options {
        non_masquerade_cidrs: Some(nets(&["10.0.0.0/8", "10.1.0.0/16", "fd00::/8"])),
        masq_link_local: true,
        ..Options::default()
    };
    let c = Class::new(BackendKind::Iptables, "n", pod[0], &pod, &opts);
    assert_eq!(c.skip, nets(&["10.0.0.0/8", "224.0.0.0/4"]));
}

#[test]
fn pods_of_one_subnet_share_a_class_and_policy_changes_it() {
    let a = nets(&["10.1.0.5/24"]);
    let b = nets(&["10.1.0.77/24"]);
    let o = Options::default();
    let ca = Class::new(BackendKind::Nftables, "n", a[0], &a, &o);
    assert_eq!(ca, Class::new(BackendKind::Nftables, "n", b[0], &b, &o));
    for other in [
        Class::new(BackendKind::Iptables, "n", a[0], &a, &o),
        Class::new(BackendKind::Nftables, "m", a[0], &a, &o),
        Class::new(
            BackendKind::Nftables,
            "n",
            a[0],
            &a,
            &Options {
                allow_forward: false,
                ..o.clone()
            },
        ),
        Class::new(
            BackendKind::Nftables,
            "n",
            a[0],
            &a,
            &Options {
                masq_link_local: true,
                ..o.clone()
            },
        ),
    ] {
        assert_ne!(ca.id, other.id);
    }
    // The id is stable across builds: it is stored on disk and in rule names.
    assert_eq!(
        ca.id,
        Class::new(BackendKind::Nftables, "n", a[0], &a, &o).id
    );
}

#[test]
fn backend_names_parse_back() {
    for k in [BackendKind::Nftables, BackendKind::Iptables] {
        assert_eq!(k.as_str().parse::<BackendKind>(), Ok(k));
    }
    assert!("ipfw".parse::<BackendKind>().is_err());
    assert!("NFTABLES".parse::<BackendKind>().is_err());
}

/// A class file reads back as written; one whose id or network could reach a path outside the
/// state dir or a line of iptables-restore's input does not read at all.
#[test]
fn class_files_with_ids_or_names_that_escape_do_not_read() {
    let a = nets(&["10.1.0.5/24"]);
    let c = Class::new(
        BackendKind::Iptables,
        "pods.v1",
        a[0],
        &a,
        &Options::default(),
    );
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(serde_json::from_value::<Class>(json.clone()).unwrap(), c);
    for (key, bad) in [
        ("id", "../lock"),
        ("id", "0123456789ABCDEF"),
        ("id", "0123456789abcde"),
        ("network", "n\n-A INPUT -j DROP"),
        ("network", "a b"),
        ("network", ""),
    ] {
        let mut j = json.clone();
        j[key] = serde_json::json!(bad);
        assert!(serde_json::from_value::<Class>(j).is_err(), "{key} {bad:?}");
    }
}
