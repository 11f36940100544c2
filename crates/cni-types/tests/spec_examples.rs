//! The spec's example configurations (SPEC.md, "Example configuration" and the execution
//! examples derived from it), for every version where their shape differs: parsed, derived per
//! plugin as a runtime derives them, decoded and written back unchanged.

use cni_types::{CniResult, NetConf, NetConfList, SpecVersion};
use serde_json::{json, Value};

/// The spec's `dbnet` conflist, at `version`.
fn dbnet(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        "name": "dbnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "keyA": ["some more", "plugin specific", "configuration"],
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.1.0.0/16",
                    "gateway": "10.1.0.1",
                    "routes": [{"dst": "0.0.0.0/0"}]
                },
                "dns": {"nameservers": ["10.1.0.1"]}
            },
            {"type": "tuning", "capabilities": {"mac": true}, "sysctl": {"net.core.somaxconn": "500"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The result the spec's bridge example returns, in `version`'s shape.
fn bridge_result(version: SpecVersion) -> Value {
    let mut ip = json!({"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2});
    if version.has_ip_version_field() {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version.as_str(),
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.1.0.1"]}
    })
}

const CHAINED: [SpecVersion; 5] = [
    SpecVersion::V0_3_0,
    SpecVersion::V0_3_1,
    SpecVersion::V0_4_0,
    SpecVersion::V1_0_0,
    SpecVersion::V1_1_0,
];

#[test]
fn conflist_and_derived_plugin_configs() {
    for v in CHAINED {
        let mut list_json = dbnet(v.as_str());
        if v < SpecVersion::V1_0_0 {
            list_json.as_object_mut().unwrap().remove("cniVersions");
        }
        let list = NetConfList::from_slice(list_json.to_string().as_bytes()).unwrap();
        assert_eq!(
            list.version().unwrap(),
            if v < SpecVersion::V1_0_0 {
                v
            } else {
                SpecVersion::V1_1_0
            }
        );
        assert_eq!(list.plugins.len(), 3);
        // The bridge's derived config is the spec's first execution example.
        let bridge = list.plugin_config(0).unwrap();
        assert_eq!(bridge["name"], "dbnet");
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["keyA"][2], "configuration");
        let conf = NetConf::from_slice(bridge.to_string().as_bytes()).unwrap();
        assert_eq!(conf.ipam.as_ref().unwrap().plugin_type, "host-local");
        assert_eq!(conf.ipam.as_ref().unwrap().extra["gateway"], "10.1.0.1");
        assert_eq!(conf.dns.as_ref().unwrap().nameservers, ["10.1.0.1"]);
        // Written back, nothing is lost or added.
        assert_eq!(serde_json::to_value(&conf).unwrap(), bridge, "{v}");
    }
}

#[test]
fn chained_add_check_del_inputs() {
    for v in CHAINED {
        let prev = bridge_result(v);
        // tuning's ADD: prevResult plus the runtimeConfig of its `mac` capability.
        let tuning = json!({
            "cniVersion": v.as_str(),
            "name": "dbnet",
            "type": "tuning",
            "sysctl": {"net.core.somaxconn": "500"},
            "runtimeConfig": {"mac": "00:11:22:33:44:66"},
            "prevResult": prev
        });
        let conf = NetConf::from_slice(tuning.to_string().as_bytes()).unwrap();
        assert_eq!(conf.version().unwrap(), v);
        assert_eq!(conf.runtime("mac").unwrap(), "00:11:22:33:44:66");
        let r = CniResult::from_value(conf.prev_result.as_ref().unwrap(), v).unwrap();
        assert_eq!(r.interfaces[2].sandbox, "/var/run/netns/blue");
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.to_value(v).unwrap(), prev, "{v}");
        assert_eq!(serde_json::to_value(&conf).unwrap(), tuning, "{v}");
        // portmap's ADD with its portMappings, as containerd (Go field names) and podman send them.
        for mapping in [
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
            json!({"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"}),
        ] {
            let portmap = json!({
                "cniVersion": v.as_str(), "name": "dbnet", "type": "portmap",
                "runtimeConfig": {"portMappings": [mapping]}, "prevResult": prev
            });
            let conf = NetConf::from_slice(portmap.to_string().as_bytes()).unwrap();
            assert!(conf.runtime("portmappings").unwrap().is_array());
        }
    }
}

#[test]
fn gc_and_status_inputs() {
    let gc = json!({
        "cniVersion": "1.1.0",
        "name": "dbnet",
        "type": "bridge",
        "cni.dev/valid-attachments": [
            {"containerID": "a1b2", "ifname": "eth0"},
            {"containerID": "c3d4", "ifname": "net1"}
        ]
    });
    let conf = NetConf::from_slice(gc.to_string().as_bytes()).unwrap();
    assert_eq!(conf.version().unwrap(), SpecVersion::V1_1_0);
    assert_eq!(conf.extra["cni.dev/valid-attachments"][1]["ifname"], "net1");
    assert_eq!(serde_json::to_value(&conf).unwrap(), gc);
}

#[test]
fn legacy_single_plugin_configs() {
    // 0.1.0/0.2.0 networks are single plugin configs, with results in the ip4/ip6 shape.
    for v in ["0.1.0", "0.2.0"] {
        let c = json!({
            "cniVersion": v, "name": "mynet", "type": "bridge", "bridge": "mynet0",
            "isDefaultGateway": true, "forceAddress": false, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "subnet": "10.10.0.0/16"}
        });
        let conf = NetConf::from_slice(c.to_string().as_bytes()).unwrap();
        assert_eq!(conf.version().unwrap().as_str(), v);
        assert_eq!(serde_json::to_value(&conf).unwrap(), c);
        let legacy = json!({"cniVersion": v, "ip4": {"ip": "10.10.0.5/16", "gateway": "10.10.0.1",
                           "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {}});
        let version = SpecVersion::parse(v).unwrap();
        assert_eq!(
            CniResult::from_value(&legacy, version)
                .unwrap()
                .to_value(version)
                .unwrap(),
            legacy
        );
    }
}
