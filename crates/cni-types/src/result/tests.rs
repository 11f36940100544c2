use serde_json::json;

use super::*;
use crate::version::SUPPORTED_VERSIONS;

/// The spec's 1.1.0 ADD result example, with the 1.1.0-only fields filled in.
fn spec_110() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "mtu": 1450,
             "sandbox": "/var/run/netns/blue", "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"}
        ],
        "ips": [
            {"interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
            {"interface": 2, "address": "2001:db8::5/64", "gateway": "2001:db8::1"}
        ],
        "routes": [
            {"dst": "0.0.0.0/0"},
            {"dst": "10.2.0.0/16", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360,
             "priority": 100, "table": 42, "scope": 0},
            {"dst": "::/0", "gw": "2001:db8::1"}
        ],
        "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com",
                "search": ["example.com"], "options": ["ndots:5"]}
    })
}

#[test]
fn spec_110_round_trips_exactly() {
    let r = CniResult::from_value(&spec_110(), SpecVersion::V1_1_0).unwrap();
    assert_eq!(r.interfaces.len(), 3);
    assert_eq!(r.interfaces[2].mtu, Some(1450));
    assert_eq!(r.interfaces[2].socket_path, "/run/vhost.sock");
    assert_eq!(r.interfaces[2].pci_id, "0000:00:1f.6");
    assert_eq!(r.ips[0].interface, Some(2));
    assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/16");
    assert_eq!(r.routes[1].table, Some(42));
    assert_eq!(r.routes[1].scope, Some(0));
    assert_eq!(r.to_value(SpecVersion::V1_1_0).unwrap(), spec_110());
}

#[test]
fn spec_100_example_round_trips() {
    let v = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
        ],
        "ips": [{"interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.1.0.1"]}
    });
    let r = CniResult::from_value(&v, SpecVersion::V1_0_0).unwrap();
    assert_eq!(r.to_value(SpecVersion::V1_0_0).unwrap(), v);
}

#[test]
fn v04_and_v03_carry_ip_version() {
    for ver in ["0.3.0", "0.3.1", "0.4.0"] {
        let v = json!({
            "cniVersion": ver,
            "interfaces": [{"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}],
            "ips": [
                {"version": "4", "interface": 0, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
                {"version": "6", "interface": 0, "address": "2001:db8::5/64"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {}
        });
        let spec = SpecVersion::parse(ver).unwrap();
        let r = CniResult::from_value(&v, spec).unwrap();
        // version is derived, never kept as an unknown key.
        assert!(r.ips.iter().all(|ip| ip.extra.is_empty()));
        assert_eq!(r.to_value(spec).unwrap(), v, "{ver}");
    }
}

#[test]
fn v02_and_v01_round_trip() {
    for ver in ["0.1.0", "0.2.0"] {
        let v = json!({
            "cniVersion": ver,
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "2001:db8::5/64", "routes": [{"dst": "::/0", "gw": "2001:db8::1"}]},
            "dns": {"nameservers": ["10.1.0.1"]}
        });
        let spec = SpecVersion::parse(ver).unwrap();
        let r = CniResult::from_value(&v, spec).unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.to_value(spec).unwrap(), v, "{ver}");
    }
}

#[test]
fn up_from_020_field_by_field() {
    let v = json!({
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/24", "gw": "10.1.0.9"}]},
        "ip6": {"ip": "2001:db8::5/64", "gateway": "2001:db8::1", "routes": [{"dst": "::/0"}]},
        "dns": {"nameservers": ["10.1.0.1"]}
    });
    let r = CniResult::from_value(&v, SpecVersion::V0_2_0).unwrap();
    let up = r.to_value(SpecVersion::V1_0_0).unwrap();
    assert_eq!(
        up,
        json!({
            "cniVersion": "1.0.0",
            "ips": [
                {"address": "10.1.0.5/16", "gateway": "10.1.0.1"},
                {"address": "2001:db8::5/64", "gateway": "2001:db8::1"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.0.0/24", "gw": "10.1.0.9"},
                {"dst": "::/0"}
            ],
            "dns": {"nameservers": ["10.1.0.1"]}
        })
    );
    let up04 = r.to_value(SpecVersion::V0_4_0).unwrap();
    assert_eq!(up04["ips"][0]["version"], "4");
    assert_eq!(up04["ips"][1]["version"], "6");
    assert!(up04.get("interfaces").is_none());
}

#[test]
fn down_to_020_keeps_first_of_each_family_and_routes_by_family() {
    let r = CniResult::from_value(&spec_110(), SpecVersion::V1_1_0).unwrap();
    let mut r2 = r.clone();
    r2.ips
        .insert(1, IpConfig::new("10.1.0.6/16".parse().unwrap(), None));
    r2.ips
        .push(IpConfig::new("2001:db8::6/64".parse().unwrap(), None));
    let down = r2.to_value(SpecVersion::V0_2_0).unwrap();
    assert_eq!(
        down,
        json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.2.0.0/16", "gw": "10.1.0.254"}]},
            "ip6": {"ip": "2001:db8::5/64", "gateway": "2001:db8::1",
                    "routes": [{"dst": "::/0", "gw": "2001:db8::1"}]},
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com",
                    "search": ["example.com"], "options": ["ndots:5"]}
        })
    );
}

#[test]
fn down_to_020_without_address_fails() {
    let r = CniResult {
        interfaces: vec![Interface::new("eth0", "", "/x")],
        ..Default::default()
    };
    assert_eq!(r.to_value(SpecVersion::V0_2_0).unwrap_err().code, 6);
}

#[test]
fn below_110_drops_110_fields() {
    let r = CniResult::from_value(&spec_110(), SpecVersion::V1_1_0).unwrap();
    for ver in [
        SpecVersion::V1_0_0,
        SpecVersion::V0_4_0,
        SpecVersion::V0_3_1,
    ] {
        let v = r.to_value(ver).unwrap();
        let eth0 = &v["interfaces"][2];
        assert_eq!(eth0["sandbox"], "/var/run/netns/blue");
        for k in ["mtu", "socketPath", "pciID"] {
            assert!(eth0.get(k).is_none(), "{ver} kept interface {k}");
        }
        let route = &v["routes"][1];
        assert_eq!(route["gw"], "10.1.0.254");
        for k in ["mtu", "advmss", "priority", "table", "scope"] {
            assert!(route.get(k).is_none(), "{ver} kept route {k}");
        }
    }
}

#[test]
fn every_version_converts_to_every_other() {
    let r = CniResult::from_value(&spec_110(), SpecVersion::V1_1_0).unwrap();
    for from in SUPPORTED_VERSIONS {
        let a = r.convert(from).unwrap();
        for to in SUPPORTED_VERSIONS {
            let b = a.convert(to).unwrap();
            let v = b.to_value(to).unwrap();
            assert_eq!(v["cniVersion"], to.as_str());
            // The first IPv4 address always survives, with its gateway.
            let addr = if to.is_legacy() {
                &v["ip4"]["ip"]
            } else {
                &v["ips"][0]["address"]
            };
            assert_eq!(addr, "10.1.0.5/16", "{from} -> {to}");
            assert_eq!(v["dns"]["nameservers"][0], "10.1.0.1");
            // Whatever survived re-reads to the same value.
            assert_eq!(
                CniResult::from_value(&v, to).unwrap().to_value(to).unwrap(),
                v
            );
        }
    }
}

#[test]
fn unknown_keys_pass_through_at_every_level() {
    let v = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x", "vendorIf": 1}],
        "ips": [{"address": "10.1.0.5/16", "interface": 0, "vendorIp": [1, 2]}],
        "routes": [{"dst": "0.0.0.0/0", "vendorRoute": {"a": "b"}}],
        "dns": {"nameservers": ["1.1.1.1"], "vendorDns": true},
        "vendorTop": {"keep": "me"}
    });
    let r = CniResult::from_value(&v, SpecVersion::V1_0_0).unwrap();
    assert_eq!(r.to_value(SpecVersion::V1_0_0).unwrap(), v);
}

#[test]
fn unknown_keys_never_stand_in_for_the_other_shapes_fields() {
    // Found by fuzz/ (target `result`): unknown keys of one shape that name fields of the other
    // became those fields on conversion, so a 0.1.0 result gained an address it did not have,
    // and junk in them made the converted result unreadable.
    let up = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16"},
        "ips": [{"address": "192.168.0.2/24"}], "routes": "junk", "vendorTop": 1});
    let r = CniResult::from_value(&up, SpecVersion::V0_2_0).unwrap();
    for to in [
        SpecVersion::V0_4_0,
        SpecVersion::V1_0_0,
        SpecVersion::V1_1_0,
    ] {
        let v = r.to_value(to).unwrap();
        let ip = match to {
            SpecVersion::V0_4_0 => json!({"version": "4", "address": "10.1.0.5/16"}),
            _ => json!({"address": "10.1.0.5/16"}),
        };
        assert_eq!(v["ips"], json!([ip]), "{to}");
        assert!(v.get("routes").is_none(), "{to}: {v}");
        assert_eq!(v["vendorTop"], 1);
        assert_eq!(CniResult::from_value(&v, to).unwrap().ips, r.ips);
    }
    let down = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16"}],
        "ip4": "junk", "ip6": {"ip": "fd00::9/64"}});
    let r = CniResult::from_value(&down, SpecVersion::V1_0_0).unwrap();
    let v = r.to_value(SpecVersion::V0_2_0).unwrap();
    assert_eq!(v["ip4"], json!({"ip": "10.1.0.5/16"}));
    assert!(v.get("ip6").is_none(), "{v}");
    assert_eq!(
        CniResult::from_value(&v, SpecVersion::V0_2_0).unwrap().ips,
        r.ips
    );
}

#[test]
fn own_cni_version_wins_over_the_callers() {
    // A delegate may answer 0.2.0 under a 1.0.0 config.
    let v = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16"}});
    let r = CniResult::from_value(&v, SpecVersion::V1_0_0).unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/16");
    // Without cniVersion, the caller's version decides the shape.
    let v = json!({"ips": [{"address": "10.1.0.5/16"}]});
    assert_eq!(
        CniResult::from_value(&v, SpecVersion::V1_0_0)
            .unwrap()
            .ips
            .len(),
        1
    );
}

#[test]
fn empty_dns_is_written_as_object_like_upstream() {
    let r = CniResult {
        ips: vec![IpConfig::new("10.1.0.5/16".parse().unwrap(), None)],
        ..Default::default()
    };
    assert_eq!(
        r.to_value(SpecVersion::V1_0_0).unwrap(),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16"}], "dns": {}})
    );
}

#[test]
fn bad_results_are_decode_errors() {
    for bad in [
        json!([]),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "nonsense"}]}),
        json!({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}),
        json!({"cniVersion": "1.0.0", "routes": [{"dst": "10.0.0.0/33"}]}),
        json!({"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}),
        json!({"cniVersion": 1}),
    ] {
        assert_eq!(
            CniResult::from_value(&bad, SpecVersion::V1_0_0)
                .unwrap_err()
                .code,
            6,
            "{bad}"
        );
    }
    assert_eq!(
        CniResult::from_value(&json!({"cniVersion": "2.0.0"}), SpecVersion::V1_0_0)
            .unwrap_err()
            .code,
        1
    );
}

#[test]
fn ips_of_interface() {
    let r = CniResult::from_value(&spec_110(), SpecVersion::V1_1_0).unwrap();
    assert_eq!(r.ips_of(2).count(), 2);
    assert_eq!(r.ips_of(0).count(), 0);
}
