//! containerd's CRI, as kubelet calls it: a CRI client over the unix socket, and a containerd of
//! the test's own running inside a node network namespace with our conflist in its CNI conf dir.
//!
//! Everything is set up from nothing (config, offline pause image, CNI bin and conf dirs) and torn
//! down on drop, also when the test panics: sandboxes, containerd, shims, mounts, the host paths
//! containerd 1.6 insists on creating, and the node namespace. Any step that cannot be done panics
//! saying why: an end-to-end test never skips.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cni_testkit::{temp_dir, Netns, TempDir};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse, RemovePodSandboxRequest,
    RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest, VersionRequest,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

/// The sandbox image, imported offline by [`Containerd::start`].
pub const PAUSE_IMAGE: &str = "localhost/pause:test";
/// containerd's CRI namespace.
const K8S_NS: &str = "k8s.io";
/// What kubelet allows a CRI call; a hang fails the test instead of the suite.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Plugins we build; every other `type` comes from the upstream reference plugins.
const OURS: [&str; 4] = ["rbridge", "rhost-local", "rmasq", "rroutes"];
/// Host paths containerd 1.6 creates whatever its config says (shim sockets, runc state, the
/// libcni result cache). Parents before children: teardown removes those the test created.
const HOST_PATHS: [&str; 6] = [
    "/run/containerd",
    "/run/containerd/s",
    "/run/containerd/runc",
    "/run/containerd/runc/k8s.io",
    "/var/lib/cni",
    "/var/lib/cni/results",
];

/// One containerd at a time per process: they share the host paths above, and telling what a
/// test created needs nobody else creating them meanwhile.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A blocking CRI client (runtime.v1) over containerd's unix socket. Parallel calls go through
/// [`Cri::block_on`] with futures over clones of [`Cri::runtime`], multiplexed on one channel.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI socket at `socket` (lazily: the first call reports a refused connection).
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime");
        let socket = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector always dials the socket.
        let channel = rt.block_on(async {
            Endpoint::from_static("http://localhost")
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
        });
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    /// A clone of the RuntimeService client, for futures run together with [`Cri::block_on`].
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// Runs `f` to completion on this client's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&self) -> Result<String, String> {
        let mut c = self.runtime();
        let r = self.call(async move { c.version(VersionRequest::default()).await })?;
        Ok(format!("{} {}", r.runtime_name, r.runtime_version))
    }

    /// `Status`: the conditions (`RuntimeReady`, `NetworkReady`) as (type, ok, message).
    pub fn conditions(&self) -> Result<Vec<(String, bool, String)>, String> {
        let mut c = self.runtime();
        let r = self.call(async move { c.status(StatusRequest::default()).await })?;
        Ok(r.status
            .map(|s| {
                s.conditions
                    .into_iter()
                    .map(|c| (c.r#type, c.status, format!("{}: {}", c.reason, c.message)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `ImageStatus`: whether the image is known to the CRI.
    pub fn has_image(&self, image: &str) -> Result<bool, String> {
        let mut c = self.images.clone();
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(self
            .call(async move { c.image_status(req).await })?
            .image
            .is_some())
    }

    /// `RunPodSandbox` for every config at once, as kubelet does for pods scheduled together.
    /// Returns, in order, the sandbox ID or the error, and how long each call took.
    pub fn run_pod_sandboxes(
        &self,
        configs: &[PodSandboxConfig],
    ) -> Vec<(Result<String, String>, Duration)> {
        self.parallel(configs.iter().cloned(), |mut c, config| async move {
            let req = RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            };
            c.run_pod_sandbox(req)
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        })
    }

    /// `StopPodSandbox` for every ID at once (containerd's first CNI DEL).
    pub fn stop_pod_sandboxes(&self, ids: &[String]) -> Vec<(Result<(), String>, Duration)> {
        self.parallel(ids.iter().cloned(), |mut c, id| async move {
            let req = StopPodSandboxRequest { pod_sandbox_id: id };
            c.stop_pod_sandbox(req).await.map(|_| ())
        })
    }

    /// `RemovePodSandbox` for every ID at once (containerd's second CNI DEL).
    pub fn remove_pod_sandboxes(&self, ids: &[String]) -> Vec<(Result<(), String>, Duration)> {
        self.parallel(ids.iter().cloned(), |mut c, id| async move {
            let req = RemovePodSandboxRequest { pod_sandbox_id: id };
            c.remove_pod_sandbox(req).await.map(|_| ())
        })
    }

    /// Verbose `PodSandboxStatus`: status plus containerd's `info` (runtime spec, CNI result).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse, String> {
        let mut c = self.runtime();
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        self.call(async move { c.pod_sandbox_status(req).await })
    }

    /// `ListPodSandbox`: the IDs of every sandbox, ready or not.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<String>, String> {
        let mut c = self.runtime();
        let r =
            self.call(async move { c.list_pod_sandbox(ListPodSandboxRequest::default()).await })?;
        Ok(r.items.into_iter().map(|s| s.id).collect())
    }

    fn call<T, F>(&self, f: F) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, f).await {
                Ok(r) => r.map(|r| r.into_inner()).map_err(status_text),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        })
    }

    fn parallel<I, T, F, Fut>(&self, items: I, f: F) -> Vec<(Result<T, String>, Duration)>
    where
        I: IntoIterator,
        F: Fn(RuntimeServiceClient<Channel>, I::Item) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let calls = items.into_iter().map(|item| {
            let fut = f(self.runtime(), item);
            async move {
                let start = Instant::now();
                let r = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                    Ok(r) => r.map_err(status_text),
                    Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
                };
                (r, start.elapsed())
            }
        });
        self.rt.block_on(futures::future::join_all(calls))
    }
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A pod as kubelet describes it to RunPodSandbox: metadata, hostname, pod network namespace.
pub fn pod_config(name: &str, uid: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        labels: [("io.kubernetes.pod.name".to_string(), name.to_string())].into(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// The path of a sandbox's network namespace, from containerd's verbose status info (the OCI
/// runtime spec it gave runc).
pub fn sandbox_netns(status: &PodSandboxStatusResponse) -> Option<PathBuf> {
    let info: Value = serde_json::from_str(status.info.get("info")?).ok()?;
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?["path"]
        .as_str()
        .map(PathBuf::from)
}

/// A containerd of the test's own, running in a node network namespace.
///
/// [`Containerd::prepare`] makes the namespace and a temporary directory (so the test can point
/// its conflist's state there), [`Containerd::start`] does the rest. Drop tears everything down.
pub struct Containerd {
    node: Option<Netns>,
    dir: Option<TempDir>,
    child: Option<Child>,
    cri: Option<Cri>,
    created: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    _one: MutexGuard<'static, ()>,
}

impl Containerd {
    /// Creates the node namespace and the test's directory; checks what containerd needs.
    pub fn prepare() -> Containerd {
        cni_testkit::require_root();
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        sweep_stale_runs();
        for (program, package) in [
            ("containerd", "containerd"),
            ("containerd-shim-runc-v2", "containerd"),
            ("ctr", "containerd"),
            ("runc", "runc"),
        ] {
            assert!(
                find_in_path(program).is_some(),
                "{program} not found in PATH ({}): apt-get install {package} (scripts/test does)",
                search_path()
            );
        }
        let created = HOST_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        Containerd {
            cgroups: cgroup_parents()
                .into_iter()
                .filter(|d| !d.exists())
                .collect(),
            node: Some(Netns::new("node")),
            dir: Some(temp_dir("cri")),
            child: None,
            cri: None,
            created,
            _one: one,
        }
    }

    /// The node namespace containerd (and so every plugin it runs) lives in.
    pub fn node(&self) -> &Netns {
        self.node.as_ref().unwrap()
    }

    /// The test's directory; CNI state belongs under `dir().join("cni")`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap()
    }

    /// containerd's CRI state dir, where sandbox netns are mounted (`netns/`).
    pub fn cri_state_dir(&self) -> PathBuf {
        self.dir().join("state/io.containerd.grpc.v1.cri")
    }

    /// The CRI client; panics before [`Containerd::start`].
    pub fn cri(&self) -> &Cri {
        self.cri.as_ref().expect("containerd not started")
    }

    /// Writes the config, the CNI bin and conf dirs (holding `conflist`), starts containerd in
    /// the node namespace, imports the pause image and waits until the CRI reports the runtime
    /// and the network ready.
    pub fn start(&mut self, conflist: &Value) {
        let dir = self.dir().to_path_buf();
        let bin = dir.join("cni-bin");
        let conf = dir.join("cni-conf");
        make_bin_dir(&bin, conflist);
        std::fs::create_dir_all(&conf).unwrap();
        let name = conflist["name"].as_str().expect("conflist without a name");
        std::fs::write(
            conf.join(format!("10-{name}.conflist")),
            serde_json::to_vec_pretty(conflist).unwrap(),
        )
        .unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, containerd_config(&dir, &bin, &conf)).unwrap();
        let pause = build_pause_image(&dir.join("pause"));

        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // Network namespace only (what `nsenter --net` does): `ip netns exec` would remount /sys,
        // hiding the cgroup mounts runc needs, and the pod netns mounts in a private mount ns.
        let mut cmd = self.node().command("containerd");
        cmd.arg("--config")
            .arg(&config)
            .env("PATH", search_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: runs in the child between fork and exec; prctl is async-signal-safe. If the
        // test process dies without unwinding, containerd goes with it.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd: {e}"));
        self.child = Some(child);
        let socket = dir.join("containerd.sock");
        self.cri = Some(Cri::connect(&socket));

        let version = self.wait("containerd to answer on its CRI socket", 30, |me| {
            me.cri().version().ok()
        });
        eprintln!("cri: {version} in netns {}", self.node().name());

        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", K8S_NS, "images", "import"])
            .arg(&pause)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"));
        if !out.status.success() {
            panic!(
                "ctr images import {} failed: {}",
                pause.display(),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        // The CRI learns of imported images through events: wait, or RunPodSandbox would try to
        // pull the sandbox image from a registry.
        self.wait("the CRI to see the pause image", 20, |me| {
            me.cri().has_image(PAUSE_IMAGE).ok().filter(|&b| b)
        });
        self.wait(
            "the CRI to report RuntimeReady and NetworkReady",
            20,
            |me| {
                let conditions = me.cri().conditions().ok()?;
                conditions.iter().all(|c| c.1).then_some(())
            },
        );
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Polls `f` every 50 ms for up to `secs` seconds; panics if containerd exits or time runs out.
    fn wait<T>(&mut self, what: &str, secs: u64, f: impl Fn(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited ({status}) while waiting for {what}");
            }
            if Instant::now() > deadline {
                let extra = match what.contains("Ready") {
                    true => format!("conditions: {:?}\n", self.cri().conditions()),
                    false => String::new(),
                };
                panic!("timed out after {secs} s waiting for {what}\n{extra}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn teardown(&mut self) {
        // Sandboxes a failed test left: stop and remove them so their CNI DEL runs.
        if let (Some(cri), Some(child)) = (&self.cri, &mut self.child) {
            if child.try_wait().ok().flatten().is_none() {
                if let Ok(ids) = cri.list_pod_sandboxes() {
                    for (r, _) in cri.stop_pod_sandboxes(&ids) {
                        if let Err(e) = r {
                            eprintln!("warning: teardown StopPodSandbox: {e}");
                        }
                    }
                    for (r, _) in cri.remove_pod_sandboxes(&ids) {
                        if let Err(e) = r {
                            eprintln!("warning: teardown RemovePodSandbox: {e}");
                        }
                    }
                }
            }
        }
        self.cri = None;
        if let Some(mut child) = self.child.take() {
            stop_process(&mut child);
        }
        if let Some(node) = &self.node {
            kill_shims(node);
        }
        let unmounted = match &self.dir {
            Some(dir) => unmount_under(dir),
            None => true,
        };
        remove_cgroups(&self.cgroups);
        for path in self.created.iter().rev() {
            // Only the topmost path the test created: the rest goes with it.
            if self
                .created
                .iter()
                .any(|p| p != path && path.starts_with(p))
            {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("warning: cannot remove {}: {e}", path.display());
                }
            }
        }
        // Every failure panics: its cause is usually in containerd's log, about to be removed.
        if std::thread::panicking() && self.dir.is_some() {
            eprintln!(
                "--- containerd log (last 80 lines) ---\n{}",
                self.log_tail(80)
            );
        }
        match self.dir.take() {
            Some(dir) if !unmounted => {
                // Removing it recursively could reach into a mounted rootfs: leave it.
                eprintln!(
                    "warning: mounts remain under {}; not removing it",
                    dir.display()
                );
                std::mem::forget(dir);
            }
            other => drop(other),
        }
        self.node = None;
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// containerd's config: everything it writes under `dir`, CRI as real-clients.md found it must be
/// set on these machines (no systemd, cgroup v1, no AppArmor, root without CAP_SYS_RESOURCE).
fn containerd_config(dir: &Path, bin: &Path, conf: &Path) -> String {
    let d = dir.display();
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"

[{cri}.cni]
  bin_dir = "{bin}"
  conf_dir = "{conf}"
  max_conf_num = 1

[{cri}.containerd]
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"#,
        bin = bin.display(),
        conf = conf.display(),
    )
}

/// The CNI bin dir: symlinks to every plugin `conflist` names (ours from the workspace build,
/// the rest upstream) and upstream `loopback`, which containerd runs for `lo` in every pod.
fn make_bin_dir(bin: &Path, conflist: &Value) {
    std::fs::create_dir_all(bin).unwrap();
    let mut types = BTreeSet::from(["loopback".to_string()]);
    for plugin in conflist["plugins"]
        .as_array()
        .expect("conflist without plugins")
    {
        for ty in [&plugin["type"], &plugin["ipam"]["type"]] {
            if let Some(ty) = ty.as_str() {
                types.insert(ty.to_string());
            }
        }
    }
    for ty in types {
        let target = if OURS.contains(&ty.as_str()) {
            cni_testkit::plugin_bin(&ty)
        } else {
            cni_testkit::upstream_bin(&ty)
        };
        std::os::unix::fs::symlink(&target, bin.join(&ty)).unwrap();
    }
}

/// Builds the sandbox image offline as a docker-archive tar: one layer holding a static busybox,
/// an entrypoint that sleeps. Returns the tar's path.
fn build_pause_image(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "{} missing: apt-get install busybox-static (scripts/test does)",
        busybox.display()
    );
    assert!(
        is_static_elf(busybox),
        "{} is dynamically linked and would not run in the pause image: apt-get install \
         busybox-static (scripts/test does)",
        busybox.display()
    );
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let layer = dir.join("layer.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .args(["--owner=0", "--group=0", "."]));
    let sum = run(Command::new("sha256sum").arg(&layer));
    let digest = sum.split_whitespace().next().unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        // Sleeps until killed; containerd stops sandboxes with SIGKILL.
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [PAUSE_IMAGE],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let tar = dir.join("pause.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .args(["manifest.json", "config.json", "layer.tar"]));
    tar
}

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. is statically linked.
fn is_static_elf(path: &Path) -> bool {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // 64-bit little-endian only: what Debian ships on the machines we run on.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= bytes.len() && u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) != 3
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// PATH for containerd and its shims: runc lives in /usr/sbin, which a test's PATH may lack.
fn search_path() -> String {
    let mut dirs: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    }
    dirs.join(":")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    search_path()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Where containerd puts the sandboxes' cgroups (`k8s.io`, as no cgroup_parent is given): in
/// every v1 hierarchy, or at the v2 root.
fn cgroup_parents() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(K8S_NS)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path().join(K8S_NS));
            }
        }
    }
    dirs
}

/// rmdir of cgroups (only empty ones can go); a few tries while the last tasks exit.
fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        for attempt in 0.. {
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound && attempt < 50 => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    eprintln!("warning: cannot remove cgroup {}: {e}", dir.display());
                    break;
                }
                _ => break,
            }
        }
    }
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop_process(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("warning: containerd did not exit on SIGTERM within 10 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills what is left in the node namespace after containerd (shims of sandboxes that could not be
/// removed) together with their children (the sandboxes' processes, in pod namespaces).
fn kill_shims(node: &Netns) {
    let pids = netns_pids(node);
    if pids.is_empty() {
        return;
    }
    eprintln!(
        "warning: processes left in netns {} after containerd: {pids:?}; killing them",
        node.name()
    );
    kill_trees(pids);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !netns_pids(node).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL to `pids` and all their descendants, children first.
fn kill_trees(pids: Vec<i32>) {
    let mut all = pids;
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    for pid in all.iter().rev() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Cleans up after test processes that were killed (SIGKILL skips Drop): their containerd died
/// with them (PDEATHSIG), but shims, sandboxes, mounts and directories remain. Runs of live
/// processes are left alone.
fn sweep_stale_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let mut swept = false;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("cri-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = e.path();
        if pid == std::process::id()
            || Path::new(&format!("/proc/{pid}")).exists()
            || !dir.join("config.toml").is_file()
        {
            continue;
        }
        eprintln!(
            "cri: cleaning up {} left by killed test process {pid}",
            dir.display()
        );
        // Shims name the socket of their containerd (`-address <dir>/containerd.sock`).
        let needle = dir.join("containerd.sock").display().to_string();
        let shims = pids_with_arg(&needle);
        let ids: Vec<String> = shims.iter().filter_map(|p| arg_after(*p, "-id")).collect();
        kill_trees(shims);
        // What the killed sandboxes left outside the directory: runc state, cached CNI results,
        // cgroups (shim sockets go below, with every other dead socket).
        for id in &ids {
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(id));
            for f in std::fs::read_dir("/var/lib/cni/results")
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.file_name().to_string_lossy().contains(id.as_str()) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
            for parent in cgroup_parents() {
                let _ = std::fs::remove_dir(parent.join(id));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        if unmount_under(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        swept = true;
    }
    if swept {
        // Their node namespaces (of any dead test process, as scripts/test does).
        cni_testkit::sweep_stale();
        // Shim sockets nobody listens on any more.
        for f in std::fs::read_dir("/run/containerd/s")
            .into_iter()
            .flatten()
            .flatten()
        {
            let refused = std::os::unix::net::UnixStream::connect(f.path())
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused {
                let _ = std::fs::remove_file(f.path());
            }
        }
        // Then the host paths and cgroup parents, if nothing else uses them (only empty
        // directories go: a real containerd's stay).
        for path in HOST_PATHS.iter().rev() {
            let _ = std::fs::remove_dir(path);
        }
        for dir in cgroup_parents() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The argument after `flag` in the command line of `pid`.
fn arg_after(pid: i32, flag: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    args.find(|a| *a == flag.as_bytes())?;
    Some(String::from_utf8_lossy(args.next()?).into_owned())
}

/// PIDs of processes whose command line has an argument equal to `arg`.
fn pids_with_arg(arg: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

fn netns_pids(node: &Netns) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", node.name()])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain spaces.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Detaches every mount below `dir` (sandbox rootfs, netns bind mounts, shm), deepest first.
/// Returns whether none is left.
fn unmount_under(dir: &Path) -> bool {
    for _ in 0..5 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            return true;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("warning: umount {}: {e}", m.display());
            }
        }
    }
    mounts_under(dir).is_empty()
}

/// Mount points strictly below `dir`, from /proc/self/mountinfo (octal escapes decoded).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount(p)))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
