//! deploy/rcni.yaml: valid against the Kubernetes schema (kubernetes-validate, offline: the
//! package ships the schemas), RBAC limited to reading nodes, and the DaemonSet's command and
//! environment accepted by the installer as written.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use cni_testkit::temp_dir;
use common::*;
use serde_json::{json, Value};

const INSTALL_HINT: &str = "python3 -m pip install kubernetes-validate==1.37.0 (scripts/test does)";

fn manifest() -> PathBuf {
    repo_root().join("deploy/rcni.yaml")
}

fn python(args: &[&str]) -> Output {
    let py = std::env::var("RCNI_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(&py).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {py} ({e}): the manifest test needs it; {INSTALL_HINT}")
    })
}

/// Fails, never skips, when the validator is not installed.
fn require_validator() {
    let out = python(&["-c", "import kubernetes_validate, yaml"]);
    assert!(
        out.status.success(),
        "kubernetes-validate is not installed: {INSTALL_HINT}\n{}",
        stderr(&out)
    );
}

fn validate(file: &std::path::Path, version: &str) -> Output {
    require_validator();
    python(&[
        "-m",
        "kubernetes_validate",
        "--strict",
        "--kubernetes-version",
        version,
        file.to_str().unwrap(),
    ])
}

/// The manifest's documents as JSON.
fn documents() -> Vec<Value> {
    require_validator();
    let out = python(&[
        "-c",
        "import sys, json, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        manifest().to_str().unwrap(),
    ]);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == k)
        .unwrap_or_else(|| panic!("no {k}"))
}

#[test]
fn manifest_validates_against_the_kubernetes_schema() {
    // The oldest and the newest schema the package ships, strict: unknown fields are errors.
    for version in ["1.25.0", "1.37.0"] {
        let out = validate(&manifest(), version);
        assert_ok(&out);
        let text = stdout(&out) + &stderr(&out);
        for resource in [
            "serviceaccount/rcni",
            "clusterrole/rcni",
            "clusterrolebinding/rcni",
            "daemonset/rcni",
        ] {
            assert!(
                text.contains(&format!("passed for resource {resource} against version")),
                "{resource} not validated for {version}:\n{text}"
            );
        }
    }
}

/// The validator does reject a broken manifest: a passing run above means something.
#[test]
fn validator_rejects_a_broken_manifest() {
    let dir = temp_dir("rcni-install-yaml");
    let broken = dir.join("broken.yaml");
    let text = std::fs::read_to_string(manifest()).unwrap().replace(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetwrk: true",
    );
    std::fs::write(&broken, text).unwrap();
    let out = validate(&broken, "1.37.0");
    assert!(!out.status.success(), "a typo in a field name must fail");
    assert!(
        (stdout(&out) + &stderr(&out)).contains("'hostNetwrk' was unexpected"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn rbac_only_reads_nodes() {
    let docs = documents();
    assert_eq!(
        docs.iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    let sa = kind(&docs, "ServiceAccount");
    assert_eq!(
        kind(&docs, "ClusterRole")["rules"],
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = kind(&docs, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": kind(&docs, "ClusterRole")["metadata"]["name"]})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}])
    );
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], sa["metadata"]["namespace"]);
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
}

#[test]
fn daemonset_runs_on_every_node_with_what_it_needs() {
    let docs = documents();
    let ds = kind(&docs, "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(spec["hostNetwork"], true);
    // GC joins the node's mount namespace through /proc/1.
    assert_eq!(spec["hostPID"], true);
    // Every taint, NoExecute included.
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
    let c = &spec["containers"][0];
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
    assert_eq!(
        c["securityContext"]["capabilities"],
        json!({"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN", "SYS_CHROOT"]})
    );
    assert_ne!(c["securityContext"]["privileged"], true);
    // Each host directory mounted at its own path, so the manifest of installed files is valid
    // on the host too.
    let mut host_paths = Vec::new();
    for v in spec["volumes"].as_array().unwrap() {
        let path = v["hostPath"]["path"].as_str().unwrap();
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == v["name"])
            .unwrap();
        assert_eq!(mount["mountPath"], path);
        host_paths.push(path);
    }
    host_paths.sort();
    assert_eq!(
        host_paths,
        [
            "/etc/cni/net.d",
            "/opt/cni/bin",
            "/run/containerd",
            "/var/lib/cni",
            "/var/lib/rcni",
            "/var/run/crio"
        ]
    );
    let node_name = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"],
        json!({"fieldRef": {"fieldPath": "spec.nodeName"}})
    );
}

/// The container's command and environment, as written in the manifest, against a local API
/// server: only the paths and the API address are the test's.
#[test]
fn daemonset_command_and_env_work_as_written() {
    let docs = documents();
    let c = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["/opt/rcni/bin/rcni-install"]);
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, ["daemon"]);

    // The container as the kubelet would start it, in a node namespace with the fake API
    // server: only the paths and the API address are the test's.
    let node = Node::new();
    let _lan = daemon::lan(&node);
    let api = daemon::api(&node);
    api.put_nodes(fake_nodes("nodes-single.json"));
    let token = node.aux.join("token");
    std::fs::write(&token, daemon::TOKEN).unwrap();
    let mut cmd = installer_in(&node.ns);
    cmd.args(&args)
        .args(node.layout_args())
        .args(["--src-dir", node.src.to_str().unwrap()])
        .args([
            "--api-server",
            &api.url(),
            "--token-file",
            token.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let help = stdout(&installer().args(["daemon", "--help"]).output().unwrap());
    let mut vars: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match (
            e["value"].as_str(),
            &e["valueFrom"]["fieldRef"]["fieldPath"],
        ) {
            (Some(v), _) => expand(v, &vars),
            // The downward API: this node's name in the recorded list, and its address.
            (None, f) if f == "spec.nodeName" => "worker-2".to_string(),
            (None, f) if f == "status.hostIP" => "192.168.56.12".to_string(),
            (None, f) => panic!("{name}: a field the test does not know: {f}"),
        };
        if name.starts_with("RCNI_") || name == "NODE_NAME" {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "the manifest sets {name}, which rcni-install daemon does not read"
            );
        }
        cmd.env(name, &value);
        vars.push((name.to_string(), value));
    }
    let mut child = cmd.spawn().unwrap();
    // The probes as the kubelet runs them: on the metrics port of the node's address.
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    let addr: std::net::SocketAddr = format!("192.168.56.12:{port}").parse().unwrap();
    let probe = |probe: &str| {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        node.ns
            .http_get(addr, path)
            .map(|(status, _)| status)
            .unwrap_or(0)
    };
    let ready = daemon::wait_for(20, || probe("readinessProbe") == 200);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the readiness probe never passed");
    assert_eq!(
        probe("livenessProbe"),
        0,
        "stopped: nothing listens any more"
    );
    let conflist: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(node.conflist()).unwrap()).unwrap();
    assert_eq!(
        conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.2.0/24"
    );
}

/// `$(VAR)` references to earlier variables, as the kubelet expands them in env values.
fn expand(value: &str, vars: &[(String, String)]) -> String {
    let mut out = value.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "{value}: refers to an unset variable");
    out
}
