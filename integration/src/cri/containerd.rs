//! A containerd of the test's own, in a node network namespace, with its config, its CNI bin and
//! conf dirs and an offline pause image.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cni_testkit::{temp_dir, Netns, TempDir};
use serde_json::Value;

use super::client::{Cri, K8S_NS};
use super::host::{
    cgroup_parents, kill_shims, remove_cgroups, stop_process, sweep_stale_runs, unmount_under,
    HOST_PATHS,
};

/// The sandbox image, imported offline by [`Containerd::start`].
pub const PAUSE_IMAGE: &str = "localhost/pause:test";
/// Plugins we build; every other `type` comes from the upstream reference plugins.
const OURS: [&str; 4] = ["rbridge", "rhost-local", "rmasq", "rroutes"];

/// One containerd at a time per process: they share the host paths above, and telling what a
/// test created needs nobody else creating them meanwhile.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A containerd of the test's own, running in a node network namespace.
///
/// [`Containerd::prepare`] makes the namespace and a temporary directory (so the test can point
/// its conflist's state there), [`Containerd::start`] does the rest. Drop tears everything down.
pub struct Containerd {
    node: Option<Netns>,
    dir: Option<TempDir>,
    pub(super) child: Option<Child>,
    pub(super) cri: Option<Cri>,
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

    /// containerd's CNI bin dir (its `cni.bin_dir`).
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir().join("cni-bin")
    }

    /// containerd's CNI conf dir (its `cni.conf_dir`).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir().join("cni-conf")
    }

    /// Writes the config, the CNI bin and conf dirs (holding `conflist`), starts containerd in
    /// the node namespace, imports the pause image and waits until the CRI reports the runtime
    /// and the network ready.
    pub fn start(&mut self, conflist: &Value) {
        let (bin, conf) = (self.cni_bin_dir(), self.cni_conf_dir());
        make_bin_dir(&bin, conflist);
        std::fs::create_dir_all(&conf).unwrap();
        let name = conflist["name"].as_str().expect("conflist without a name");
        std::fs::write(
            conf.join(format!("10-{name}.conflist")),
            serde_json::to_vec_pretty(conflist).unwrap(),
        )
        .unwrap();
        self.launch();
        self.wait_network_ready(20);
    }

    /// Like [`Containerd::start`] but with empty CNI bin and conf dirs, as on a node before its
    /// CNI DaemonSet ran: host-network pods start, others wait for a conflist.
    pub fn start_without_network(&mut self) {
        std::fs::create_dir_all(self.cni_bin_dir()).unwrap();
        std::fs::create_dir_all(self.cni_conf_dir()).unwrap();
        self.launch();
        self.wait("the CRI to report RuntimeReady", 20, |me| {
            let conditions = me.cri().conditions().ok()?;
            let runtime = conditions.iter().find(|c| c.0 == "RuntimeReady")?;
            runtime.1.then_some(())
        });
    }

    /// Waits up to `secs` seconds until the CRI reports RuntimeReady and NetworkReady (for
    /// NetworkReady, containerd needs a conflist in its conf dir).
    pub fn wait_network_ready(&mut self, secs: u64) {
        self.wait(
            "the CRI to report RuntimeReady and NetworkReady",
            secs,
            |me| {
                let conditions = me.cri().conditions().ok()?;
                conditions.iter().all(|c| c.1).then_some(())
            },
        );
    }

    /// `ctr images import` of the archive `tar` into the CRI's namespace, then waits until the
    /// CRI knows `image` (a name as a pod spec gives it).
    pub fn import_image(&mut self, tar: &Path, image: &str) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", K8S_NS, "images", "import"])
            .arg(tar)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"));
        if !out.status.success() {
            panic!(
                "ctr images import {} failed: {}",
                tar.display(),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        // The CRI learns of imported images through events: wait, or a RunPodSandbox or
        // CreateContainer would try to pull the image from a registry.
        self.wait(&format!("the CRI to see image {image}"), 20, |me| {
            me.cri().has_image(image).ok().filter(|&b| b)
        });
    }

    /// containerd's CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("containerd.sock")
    }

    /// Writes the config, starts containerd in the node namespace, imports the pause image.
    pub(super) fn launch(&mut self) {
        let dir = self.dir().to_path_buf();
        let config = dir.join("config.toml");
        let (bin, conf) = (self.cni_bin_dir(), self.cni_conf_dir());
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
        self.cri = Some(Cri::connect(&self.socket()));

        let version = self.wait("containerd to answer on its CRI socket", 30, |me| {
            me.cri().version().ok()
        });
        eprintln!("cri: {version} in netns {}", self.node().name());
        self.import_image(&pause, PAUSE_IMAGE);
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
        // A plugin the test put there itself (e.g. one that stalls an ADD).
        if bin.join(&ty).exists() {
            continue;
        }
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
    let tar = dir.join("pause.tar");
    // Built once per test; a restarted containerd imports it again.
    if tar.is_file() {
        return tar;
    }
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
