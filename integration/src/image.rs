//! The node agent's image (scripts/image, deploy/Dockerfile) as the DaemonSet (deploy/rcni.yaml)
//! runs it through a CRI: the archive and what it holds, a host-network pod, and the agent's
//! container with the DaemonSet's environment, mounts and security context.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
};
use serde_json::Value;

use crate::cri::pod_config;

/// The image as deploy/rcni.yaml names it; the CRI normalises it to docker.io/library/rcni:0.1.0.
pub const IMAGE: &str = "rcni:0.1.0";
/// Where the image keeps the binaries the agent installs.
pub const IMAGE_BIN: &str = "opt/rcni/bin";

/// The image archive: `$RCNI_IMAGE`, which scripts/image prints. Panics saying how to make it.
pub fn archive() -> PathBuf {
    let hint = "build the image with scripts/image and run with RCNI_IMAGE=$(scripts/image) \
                (scripts/test does)";
    let path = std::env::var_os("RCNI_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("RCNI_IMAGE is not set: {hint}"));
    assert!(
        path.is_file(),
        "RCNI_IMAGE={}: no such file: {hint}",
        path.display()
    );
    path
}

/// Unpacks the OCI archive into `dir` and its layers, in order, into `dir/rootfs`; returns the
/// image config (`config.Entrypoint`, ...) and the rootfs path.
pub fn unpack(archive: &Path, dir: &Path) -> (Value, PathBuf) {
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    tar(archive, &layout);
    let blob = |digest: &Value| -> PathBuf {
        let d = digest.as_str().expect("a descriptor without a digest");
        let hex = d.strip_prefix("sha256:").expect("a sha256 digest");
        layout.join("blobs/sha256").join(hex)
    };
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json: manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest = read_json(&blob(&manifests[0]["digest"]));
    for layer in manifest["layers"].as_array().expect("manifest: layers") {
        tar(&blob(&layer["digest"]), &rootfs);
    }
    (read_json(&blob(&manifest["config"]["digest"])), rootfs)
}

/// `sha256sum` of every file in `dir`, by file name.
pub fn sha256_dir(dir: &Path) -> BTreeMap<String, String> {
    let mut sums = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            sums.insert(name, sha256(&path));
        }
    }
    sums
}

/// The SHA-256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sha256sum: {e}"));
    assert!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A pod in the node's network namespace (`hostNetwork: true`), logging under `log_dir`.
pub fn host_network_pod(name: &str, uid: &str, log_dir: &Path) -> PodSandboxConfig {
    let mut config = pod_config(name, uid);
    if let Some(m) = config.metadata.as_mut() {
        m.namespace = "kube-system".to_string();
    }
    // The node's UTS namespace comes with its network: kubelet sets no hostname then.
    config.hostname = String::new();
    config.log_directory = log_dir.display().to_string();
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(node_network()),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A mount of the agent's container: host path to container path.
pub struct Bind<'a> {
    pub host: &'a Path,
    pub container: &'a str,
    pub readonly: bool,
}

/// The DaemonSet's container: the image's entrypoint with `args: ["daemon"]`, `env`, the
/// mounts, and its securityContext (root, no privilege escalation, read-only root filesystem,
/// every capability dropped but NET_ADMIN, SYS_ADMIN and SYS_CHROOT); its log at `log_path` below the pod's log dir.
pub fn agent_container(name: &str, env: &[(&str, &str)], binds: &[Bind]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.to_string(),
            ..Default::default()
        }),
        args: vec!["daemon".to_string()],
        envs: env
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        mounts: binds
            .iter()
            .map(|b| Mount {
                container_path: b.container.to_string(),
                host_path: b.host.display().to_string(),
                readonly: b.readonly,
                ..Default::default()
            })
            .collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: ["NET_ADMIN", "SYS_ADMIN", "SYS_CHROOT"]
                        .map(String::from)
                        .to_vec(),
                    drop_capabilities: vec!["ALL".to_string()],
                    ..Default::default()
                }),
                namespace_options: Some(node_network()),
                run_as_user: Some(Int64Value { value: 0 }),
                readonly_rootfs: true,
                no_new_privs: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The messages of a container's CRI log (`TIME STREAM TAG MESSAGE` lines), or why not.
pub fn container_log(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// The DaemonSet's `hostNetwork` and `hostPID`.
fn node_network() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn tar(archive: &Path, into: &Path) {
    // GNU tar detects the layers' gzip by itself.
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .arg("--no-same-owner")
        .output()
        .unwrap_or_else(|e| panic!("cannot run tar: {e}"));
    assert!(
        out.status.success(),
        "tar -xf {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
