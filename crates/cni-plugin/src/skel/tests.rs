use std::cell::RefCell;

use serde_json::json;

use super::*;
use cni_types::result::IpConfig;

/// A plugin that records the call it got and answers with a fixed address.
#[derive(Default)]
struct Probe {
    seen: RefCell<Option<Call>>,
    fail: Option<CniError>,
}

impl Plugin for Probe {
    fn add(&self, call: &Call) -> Result<CniResult> {
        *self.seen.borrow_mut() = Some(call.clone());
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        let mut r = call.prev_result()?.unwrap_or_default();
        r.ips
            .push(IpConfig::new("10.1.0.5/16".parse().unwrap(), None));
        Ok(r)
    }
    fn del(&self, call: &Call) -> Result<()> {
        *self.seen.borrow_mut() = Some(call.clone());
        Ok(())
    }
    fn check(&self, call: &Call) -> Result<()> {
        *self.seen.borrow_mut() = Some(call.clone());
        Ok(())
    }
    fn gc(&self, call: &Call) -> Result<()> {
        call.valid_attachments().map(drop)
    }
}

const INFO: PluginInfo = PluginInfo {
    name: "rprobe",
    version: "0.0.1",
    about: "test plugin",
};

fn env(command: &str) -> CniEnv {
    CniEnv {
        command: Some(command.into()),
        container_id: Some("c1".into()),
        netns: Some("/run/netns/x".into()),
        ifname: Some("eth0".into()),
        args: Some("IgnoreUnknown=1;K8S_POD_NAME=p".into()),
        path: Some("/opt/cni/bin:/usr/lib/cni".into()),
    }
}

fn conf(version: &str) -> Vec<u8> {
    json!({"cniVersion": version, "name": "n", "type": "rprobe"})
        .to_string()
        .into_bytes()
}

fn error_of(o: &Outcome) -> Value {
    assert_ne!(o.exit_code, 0, "expected failure, got {}", o.stdout);
    serde_json::from_str(&o.stdout).unwrap()
}

#[test]
fn version_lists_all_and_echoes_config_version() {
    let p = Probe::default();
    let o = execute(
        &p,
        &INFO,
        &CniEnv {
            command: Some("VERSION".into()),
            ..Default::default()
        },
        b"",
    );
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(o.exit_code, 0);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    // podman asks with {"cniVersion":"1.0.0"} and CNI_NETNS=dummy.
    let o = execute(&p, &INFO, &env("VERSION"), br#"{"cniVersion":"1.0.0"}"#);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
}

#[test]
fn add_answers_in_the_configs_version() {
    for (ver, key) in [
        ("0.2.0", "ip4"),
        ("0.3.1", "ips"),
        ("1.0.0", "ips"),
        ("1.1.0", "ips"),
    ] {
        let o = execute(&Probe::default(), &INFO, &env("ADD"), &conf(ver));
        assert_eq!(o.exit_code, 0, "{}", o.stdout);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], ver);
        assert!(v.get(key).is_some(), "{ver}: {v}");
    }
}

#[test]
fn call_carries_env_and_config() {
    let p = Probe::default();
    let o = execute(&p, &INFO, &env("ADD"), &conf("1.0.0"));
    assert_eq!(o.exit_code, 0);
    let call = p.seen.borrow().clone().unwrap();
    assert_eq!(call.container_id, "c1");
    assert_eq!(call.ifname, "eth0");
    assert_eq!(call.netns.as_deref(), Some(Path::new("/run/netns/x")));
    assert_eq!(
        call.path,
        [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
    assert_eq!(call.args.get("K8S_POD_NAME"), Some("p"));
    assert_eq!(call.version, SpecVersion::V1_0_0);
    let env = call.env_for(Verb::Del);
    assert!(env.contains(&("CNI_COMMAND", "DEL".into())));
    assert!(env.contains(&("CNI_PATH", "/opt/cni/bin:/usr/lib/cni".into())));
}

#[test]
fn prev_result_is_decoded_and_passed_on() {
    let stdin = json!({
        "cniVersion": "0.4.0", "name": "n", "type": "rprobe",
        "prevResult": {"cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.1.0.9/16"}],
            "custom": 1}
    });
    let o = execute(
        &Probe::default(),
        &INFO,
        &env("ADD"),
        stdin.to_string().as_bytes(),
    );
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["name"], "eth0");
    assert_eq!(v["ips"][0]["address"], "10.1.0.9/16");
    assert_eq!(v["ips"][1]["version"], "4");
    assert_eq!(v["custom"], 1);
}

#[test]
fn missing_env_is_code_4_naming_each_variable() {
    let mut e = env("ADD");
    e.netns = None;
    e.ifname = Some(String::new());
    let v = error_of(&execute(&Probe::default(), &INFO, &e, &conf("1.0.0")));
    assert_eq!(v["code"], 4);
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("CNI_NETNS") && msg.contains("CNI_IFNAME"),
        "{msg}"
    );
    assert_eq!(v["cniVersion"], "1.0.0");
    // DEL needs no netns.
    let mut e = env("DEL");
    e.netns = None;
    assert_eq!(
        execute(&Probe::default(), &INFO, &e, &conf("1.0.0")).exit_code,
        0
    );
    // GC and STATUS need only CNI_PATH.
    let e = CniEnv {
        command: Some("STATUS".into()),
        path: Some("/opt/cni/bin".into()),
        ..Default::default()
    };
    assert_eq!(
        execute(&Probe::default(), &INFO, &e, &conf("1.1.0")).exit_code,
        0
    );
    let e = CniEnv {
        command: Some("STATUS".into()),
        ..Default::default()
    };
    assert_eq!(
        error_of(&execute(&Probe::default(), &INFO, &e, &conf("1.1.0")))["code"],
        4
    );
}

#[test]
fn bad_ids_and_ifnames_never_reach_the_plugin() {
    for (id, ifname) in [
        ("../etc", "eth0"),
        ("c1", "eth0/../x"),
        ("c1", "a-very-long-ifname0"),
    ] {
        let p = Probe::default();
        let mut e = env("ADD");
        e.container_id = Some(id.into());
        e.ifname = Some(ifname.into());
        let v = error_of(&execute(&p, &INFO, &e, &conf("1.0.0")));
        assert_eq!(v["code"], 4);
        assert!(p.seen.borrow().is_none());
    }
}

#[test]
fn unknown_command_is_code_4() {
    let v = error_of(&execute(
        &Probe::default(),
        &INFO,
        &env("PUT"),
        &conf("1.0.0"),
    ));
    assert_eq!(v["code"], 4);
    assert!(v["msg"].as_str().unwrap().contains("PUT"));
}

#[test]
fn verbs_missing_from_the_configs_version_are_code_1() {
    for (verb, ver) in [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "0.4.0")] {
        let p = Probe::default();
        let v = error_of(&execute(&p, &INFO, &env(verb), &conf(ver)));
        assert_eq!(v["code"], 1, "{verb} {ver}");
        assert_eq!(v["cniVersion"], ver);
        assert!(p.seen.borrow().is_none());
    }
    assert_eq!(
        execute(&Probe::default(), &INFO, &env("CHECK"), &conf("0.4.0")).exit_code,
        0
    );
}

#[test]
fn unsupported_or_undecodable_config() {
    let v = error_of(&execute(
        &Probe::default(),
        &INFO,
        &env("ADD"),
        &conf("0.5.0"),
    ));
    assert_eq!(v["code"], 1);
    let v = error_of(&execute(&Probe::default(), &INFO, &env("ADD"), b"{oops"));
    assert_eq!(v["code"], 6);
    let v = error_of(&execute(&Probe::default(), &INFO, &env("ADD"), b""));
    assert_eq!(v["code"], 6);
}

#[test]
fn plugin_errors_are_written_in_the_configs_version() {
    let p = Probe {
        fail: Some(
            CniError::invalid_config("bridge \"x y\" is not a valid name").with_details("d"),
        ),
        ..Default::default()
    };
    let o = execute(&p, &INFO, &env("ADD"), &conf("0.3.1"));
    assert_eq!(o.exit_code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&o.stdout).unwrap(),
        json!({"cniVersion": "0.3.1", "code": 7, "msg": "bridge \"x y\" is not a valid name", "details": "d"})
    );
}

#[test]
fn gc_requires_valid_attachments_and_accepts_old_key() {
    let mut e = env("GC");
    e.container_id = None;
    e.ifname = None;
    let base = json!({"cniVersion": "1.1.0", "name": "n", "type": "rprobe"});
    let v = error_of(&execute(
        &Probe::default(),
        &INFO,
        &e,
        base.to_string().as_bytes(),
    ));
    assert_eq!(v["code"], 7);
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let mut c = base.clone();
        c[key] = json!([{"containerID": "a", "ifname": "eth0"}]);
        assert_eq!(
            execute(&Probe::default(), &INFO, &e, c.to_string().as_bytes()).exit_code,
            0
        );
    }
    let mut c = base.clone();
    c["cni.dev/valid-attachments"] = json!([{"containerID": 5}]);
    let v = error_of(&execute(
        &Probe::default(),
        &INFO,
        &e,
        c.to_string().as_bytes(),
    ));
    assert_eq!(v["code"], 7);
}

#[test]
fn each_call_is_logged_when_log_file_is_set() {
    let dir = std::env::temp_dir().join(format!("cni-skel-log-{}", std::process::id()));
    let file = dir.join("calls.log");
    let stdin = json!({"cniVersion": "1.0.0", "name": "n", "type": "rprobe",
                       "logFile": file, "logLevel": "info"});
    let ok = execute(
        &Probe::default(),
        &INFO,
        &env("ADD"),
        stdin.to_string().as_bytes(),
    );
    assert_eq!(ok.exit_code, 0);
    let mut e = env("ADD");
    e.ifname = None;
    let bad = execute(&Probe::default(), &INFO, &e, stdin.to_string().as_bytes());
    assert_eq!(bad.exit_code, 1);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("INFO rprobe") && lines[0].contains("verb=ADD container=c1 ifname=eth0")
    );
    assert!(lines[0].contains("outcome=ok") && lines[0].contains("duration_ms="));
    assert!(lines[1].contains("ERROR rprobe") && lines[1].contains("outcome=error code=4"));
    assert!(lines[1].contains("CNI_IFNAME"));
    // Nothing but the result on stdout.
    assert!(serde_json::from_str::<Value>(&ok.stdout).is_ok());
}

#[test]
fn about_line_names_plugin_version_and_spec_versions() {
    let line = INFO.about_line();
    assert!(line.starts_with("rprobe v0.0.1"));
    assert!(line.contains("0.1.0") && line.contains("1.1.0"));
}

#[test]
fn cli_returns_a_declared_subcommand_with_its_arguments() {
    let cli = Cli {
        info: &INFO,
        subcommands: &[Subcommand {
            name: "sync",
            args: "--conflist FILE",
            about: "reconcile",
        }],
    };
    let args = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    };
    assert_eq!(cli.parse(args(&[])), None);
    assert_eq!(
        cli.parse(args(&["sync", "--conflist", "f"])),
        Some(("sync".into(), vec!["--conflist".into(), "f".into()]))
    );
    let help = cli.help();
    assert!(help.contains("rprobe sync --conflist FILE") && help.contains("reconcile"));
    assert!(help.contains("CNI_COMMAND") && help.contains("1.1.0"));
}
