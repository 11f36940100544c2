use serde::Deserialize;
use serde_json::json;

use crate::config::decode_config;

#[derive(Debug, Deserialize, PartialEq)]
struct Range {
    subnet: String,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Conf {
    #[serde(rename = "isGateway", default)]
    is_gateway: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    ranges: Vec<Vec<Range>>,
    #[serde(rename = "stateDir", alias = "dataDir", default)]
    state_dir: Option<String>,
}

#[test]
fn keys_match_their_field_ignoring_case_at_every_depth() {
    let c: Conf = decode_config(json!({
        "isgateway": true,
        "MTU": 1400,
        "Ranges": [[{"Subnet": "10.1.0.0/24", "RANGESTART": "10.1.0.10"}]],
        "statedir": "/x",
    }))
    .unwrap();
    assert_eq!(
        c,
        Conf {
            is_gateway: true,
            mtu: Some(1400),
            ranges: vec![vec![Range {
                subnet: "10.1.0.0/24".into(),
                range_start: Some("10.1.0.10".into()),
            }]],
            state_dir: Some("/x".into()),
        }
    );
}

#[test]
fn the_exact_key_wins_over_one_that_differs_in_case() {
    let c: Conf = decode_config(json!({"isGateway": false, "ISGATEWAY": true})).unwrap();
    assert!(!c.is_gateway);
    // Aliases are matched exactly, as before.
    let c: Conf = decode_config(json!({"dataDir": "/d"})).unwrap();
    assert_eq!(c.state_dir.as_deref(), Some("/d"));
}

#[test]
fn errors_still_name_the_key_as_written_in_the_struct() {
    let e = decode_config::<Conf>(json!({"Ranges": [[{"subnet": 5}]]})).unwrap_err();
    assert_eq!(e.code, crate::error::INVALID_NETWORK_CONFIG);
    assert!(e.msg.contains("ranges[0][0].subnet"), "{}", e.msg);
    let e = decode_config::<Conf>(json!({"mtu": "x"})).unwrap_err();
    assert!(
        e.msg.contains("mtu: invalid type: string \"x\""),
        "{}",
        e.msg
    );
}

#[test]
fn a_plugins_shared_keys_are_read_ignoring_case_a_conflists_exactly() {
    use crate::config::{NetConf, NetConfList};
    let conf = NetConf::from_slice(
        br#"{"CNIVersion":"1.0.0","Name":"n","TYPE":"rbridge","IPAM":{"Type":"rhost-local"},"X":1}"#,
    )
    .unwrap();
    assert_eq!(
        (
            conf.cni_version.as_str(),
            conf.name.as_str(),
            conf.plugin_type.as_str()
        ),
        ("1.0.0", "n", "rbridge")
    );
    assert_eq!(conf.ipam.unwrap().plugin_type, "rhost-local");
    assert_eq!(conf.extra["X"], 1, "other keys are kept as written");
    // libcni looks a conflist's keys up exactly: "Plugins" is not "plugins".
    let list = br#"{"cniVersion":"1.0.0","name":"n","Plugins":[{"type":"rbridge"}]}"#;
    assert!(NetConfList::from_slice(list).is_err());
}
