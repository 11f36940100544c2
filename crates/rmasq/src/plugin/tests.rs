use super::*;
use cni_plugin::skel::{execute, CniEnv};

fn env(cmd: &str) -> CniEnv {
    CniEnv {
        command: Some(cmd.into()),
        container_id: Some("c1".into()),
        netns: Some("/proc/self/ns/net".into()),
        ifname: Some("eth0".into()),
        args: None,
        path: Some("/usr/lib/cni".into()),
    }
}

fn run(cmd: &str, conf: serde_json::Value) -> serde_json::Value {
    let out = execute(&Rmasq, &INFO, &env(cmd), conf.to_string().as_bytes());
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn add_without_prev_result_or_addresses_is_code_7() {
    let conf = serde_json::json!({"cniVersion":"1.0.0","name":"n","type":"rmasq"});
    let out = run("ADD", conf.clone());
    assert_eq!(out["code"], 7);
    assert!(out["msg"].as_str().unwrap().contains("prevResult"));
    let mut with_prev = conf;
    with_prev["prevResult"] =
        serde_json::json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}]});
    let out = run("ADD", with_prev);
    assert_eq!(out["code"], 7);
    assert!(out["msg"].as_str().unwrap().contains("no IP address"));
}

#[test]
fn bad_keys_are_named() {
    for (key, value) in [
        ("backend", serde_json::json!("ipfw")),
        ("nonMasqueradeCIDRs", serde_json::json!(["10.0.0.0/33"])),
        ("masqLinkLocal", serde_json::json!("maybe")),
        ("allowForward", serde_json::json!(3)),
    ] {
        let mut conf = serde_json::json!({"cniVersion":"1.0.0","name":"n","type":"rmasq",
            "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24"}]}});
        conf[key] = value;
        let out = run("ADD", conf);
        assert_eq!(out["code"], 7, "{key}: {out}");
        assert!(out["msg"].as_str().unwrap().contains(key), "{out}");
    }
}
