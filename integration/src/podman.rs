//! podman 4.3 with its CNI backend, as a user runs it: a podman of the test's own (config, storage,
//! CNI plugin and network config dirs in a temp dir) running in a node network namespace, with
//! an offline busybox image made by `podman import`.
//!
//! Everything is torn down on drop, also when the test panics: containers (so their CNI DEL
//! runs), processes left in the test's cgroups or node namespace, mounts, container namespaces,
//! the host paths podman 4.3 insists on creating, the temp dir and the node namespace. Any step
//! that cannot be done panics saying why: an end-to-end test never skips.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cni_testkit::{temp_dir, Netns, TempDir};
use serde_json::Value;

use crate::cri::mounts_under;

/// The image every container runs: a static busybox, imported offline.
pub const IMAGE: &str = "localhost/rcni-busybox:test";
/// busybox applets the image links, for `podman run/exec IMAGE <applet> ...`.
const APPLETS: [&str; 10] = [
    "sh", "ip", "wget", "httpd", "nc", "sleep", "timeout", "cat", "echo", "mkdir",
];
/// Plugins we build; every other `type` comes from the upstream reference plugins.
const OURS: [&str; 4] = ["rbridge", "rhost-local", "rmasq", "rroutes"];
/// Host paths podman 4.3 creates whatever its config says: runc's state (`--root` of runc is not
/// configurable in a way the exit command of conmon keeps), libcni's result cache (not
/// configurable in podman 4.3) and c/image's blob-info cache (`podman import` ignores the graph
/// root for it). Parents before children: teardown removes those the test created, if empty.
const HOST_PATHS: [&str; 5] = [
    "/run/runc",
    "/var/lib/cni",
    "/var/lib/cni/results",
    "/var/lib/containers",
    "/var/lib/containers/cache",
];
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Temp dirs are `<tmp>/podman-<pid>-<n>`; their cgroup parent is `/rcni-<dir name>`.
const PREFIX: &str = "podman";

/// One podman at a time per process: they share the host paths above, and telling what a test
/// created needs nobody else creating them meanwhile.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A container this harness started.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    /// podman's full ID: what the plugins get as CNI_CONTAINERID.
    pub id: String,
    /// The container's network namespace (`/run/netns/netns-<uuid>`, podman's SandboxKey).
    pub netns: PathBuf,
}

/// A podman of the test's own, running in a node network namespace.
///
/// [`Podman::prepare`] makes the namespace and the temp dir (so the test can point its conflist's
/// state there), [`Podman::start`] the rest. Drop tears everything down.
pub struct Podman {
    node: Option<Netns>,
    dir: Option<TempDir>,
    network: String,
    started: bool,
    containers: RefCell<Vec<Container>>,
    created: Vec<PathBuf>,
    _one: MutexGuard<'static, ()>,
}

impl Podman {
    /// Creates the node namespace and the test's directory; checks what podman needs.
    pub fn prepare() -> Podman {
        cni_testkit::require_root();
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        sweep_stale_runs();
        for (program, package) in [
            ("podman", "podman"),
            ("conmon", "conmon"),
            ("runc", "runc"),
            ("nsenter", "util-linux"),
        ] {
            assert!(
                find_in_path(program).is_some(),
                "{program} not found in PATH ({}): apt-get install {package}",
                search_path()
            );
        }
        let created = HOST_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        Podman {
            node: Some(Netns::new("node")),
            dir: Some(temp_dir(PREFIX)),
            network: String::new(),
            started: false,
            containers: RefCell::new(Vec::new()),
            created,
            _one: one,
        }
    }

    /// The node namespace podman (and so every plugin it runs) lives in.
    pub fn node(&self) -> &Netns {
        self.node.as_ref().unwrap()
    }

    /// The test's directory; CNI state belongs under `dir().join("cni")`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap()
    }

    /// The network's name, what `--network` takes: the conflist's `name` (not its file name).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The containers' cgroup parent: the test's own, so that teardown finds every process.
    fn cgroup_parent(&self) -> String {
        format!(
            "/rcni-{}",
            self.dir().file_name().unwrap().to_string_lossy()
        )
    }

    /// Writes containers.conf, storage.conf, the CNI plugin dir (symlinks) and the network config
    /// dir (holding `conflist`), and imports the busybox image.
    pub fn start(&mut self, conflist: &Value) {
        let dir = self.dir().to_path_buf();
        let name = conflist["name"].as_str().expect("conflist without a name");
        self.network = name.to_string();
        let (bin, net) = (dir.join("cni-bin"), dir.join("cni-net"));
        make_bin_dir(&bin, conflist);
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(
            net.join(format!("10-{name}.conflist")),
            serde_json::to_vec_pretty(conflist).unwrap(),
        )
        .unwrap();
        for sub in ["root", "runroot", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let (conf, storage) = configs(&dir, &bin, &net);
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        std::fs::write(dir.join("storage.conf"), storage).unwrap();
        self.started = true;
        let tar = build_rootfs_tar(&dir.join("image"));
        self.ok(&["import".as_ref(), tar.as_os_str(), IMAGE.as_ref()]);
        // podman knows the network by the conflist's name, or `run --network` would fail.
        let networks = self.ok(&["network", "ls", "--format", "{{.Name}}"]);
        assert!(
            networks.lines().any(|l| l == name),
            "podman does not list network {name} from {}: {networks}",
            net.display()
        );
    }

    /// `podman <args>` as a user runs it, in the node namespace: `nsenter --net` only (`ip netns
    /// exec` would remount /sys, hiding the cgroup mounts runc needs).
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let dir = self.dir();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node().path().display()))
            .arg("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .env("TMPDIR", dir.join("tmp"))
            .env("PATH", search_path());
        cmd
    }

    /// Runs `podman <args>` and returns its output whatever the exit status.
    pub fn podman<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = self.command(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Runs `podman <args>`, panics unless it succeeds; returns stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.podman(args);
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        assert!(
            out.status.success(),
            "podman {} failed ({}):\nstderr: {}\nstdout: {}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run -d --name <name> --network <ours> <opts> IMAGE <cmd>`: a detached container on
    /// the test's network and in the test's cgroup parent.
    pub fn run(&self, name: &str, opts: &[&str], cmd: &[&str]) -> Container {
        let parent = self.cgroup_parent();
        let mut args = vec!["run", "-d", "--name", name, "--network", &self.network];
        args.extend(["--cgroup-parent", &parent]);
        args.extend(opts);
        args.push(IMAGE);
        args.extend(cmd);
        let id = self.ok(&args).trim().to_string();
        let info = self.inspect(name);
        assert_eq!(info["Id"], id.as_str(), "podman inspect {name}: {info}");
        let netns = info["NetworkSettings"]["SandboxKey"]
            .as_str()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| panic!("container {name} has no SandboxKey: {info}"));
        let c = Container {
            name: name.to_string(),
            id,
            netns: PathBuf::from(netns),
        };
        self.containers.borrow_mut().push(c.clone());
        c
    }

    /// `podman exec <name> <cmd>`, output whatever the exit status.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend(cmd);
        self.podman(&args)
    }

    /// `podman container inspect <name>`, the one object it prints.
    pub fn inspect(&self, name: &str) -> Value {
        let out = self.ok(&["container", "inspect", name]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("podman inspect {name} printed invalid JSON ({e}): {out}"));
        v[0].clone()
    }

    /// `podman rm -f -t 0 <name>`: what users do, without the 10 s a PID 1 that ignores SIGTERM
    /// (busybox) would add.
    pub fn rm_f(&self, name: &str) {
        self.ok(&["rm", "-f", "-t", "0", name]);
    }

    fn teardown(&mut self) {
        if self.started {
            // Containers a failed test left: removing them runs their CNI DEL.
            let out = self.podman(&["rm", "-a", "-f", "-t", "0"]);
            if !out.status.success() {
                eprintln!(
                    "warning: teardown podman rm -af: {}",
                    String::from_utf8_lossy(&out.stderr).trim_end()
                );
            }
        }
        let cgroups = cgroup_dirs(&self.cgroup_parent());
        kill_leftovers(self.node(), &cgroups);
        for c in self.containers.borrow().iter() {
            remove_container_host_state(c);
        }
        let unmounted = unmount_under(self.dir());
        remove_cgroups(cgroups);
        for path in self.created.iter().rev() {
            if let Err(e) = remove_host_path(path) {
                eprintln!("warning: cannot remove {}: {e}", path.display());
            }
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

impl Drop for Podman {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// containers.conf as real-clients.md found it must be on these machines (runc: crun fails on
/// the hybrid cgroup setup; cgroupfs: no systemd; explicit ulimits: root cannot raise them), with
/// every path podman writes under `dir`; and storage.conf (without one, podman reads the system's
/// and insists on its driver being set there).
fn configs(dir: &Path, bin: &Path, net: &Path) -> (String, String) {
    let d = dir.display();
    let storage = format!(
        "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/root\"\n"
    );
    let conf = format!(
        r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{net}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
static_dir = "{d}/root/libpod"
volume_path = "{d}/root/volumes"
image_copy_tmp_dir = "{d}/tmp"
# File locks under tmp_dir: shm locks (/dev/shm/libpod_lock) are shared by every podman.
lock_type = "file"
"#,
        bin = bin.display(),
        net = net.display(),
    );
    (conf, storage)
}

/// The CNI plugin dir: symlinks to every plugin `conflist` names, ours from the workspace build
/// (`RCNI_BIN_DIR`), the rest upstream, so that no other binary of either dir can answer.
fn make_bin_dir(bin: &Path, conflist: &Value) {
    std::fs::create_dir_all(bin).unwrap();
    let mut types = BTreeSet::new();
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

/// A rootfs tar holding /bin/busybox and its applets, for `podman import`. Returns its path.
fn build_rootfs_tar(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "{} missing: apt-get install busybox-static",
        busybox.display()
    );
    // ldd says "not a dynamic executable" (and fails) for a static binary.
    let ldd = Command::new("ldd").arg(busybox).output();
    assert!(
        ldd.is_ok_and(|o| !o.status.success()),
        "{} is dynamically linked and would not run in the image: apt-get install busybox-static",
        busybox.display()
    );
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .args(["--owner=0", "--group=0", "."])
        .output()
        .expect("cannot run tar");
    assert!(
        out.status.success(),
        "tar of {}: {}",
        rootfs.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    tar
}

/// The cgroup directories of `parent` in every hierarchy (cgroup v1 controllers, the hybrid
/// `unified` one, or v2 alone), children before parents.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let mut tops = vec![root.join(parent.trim_start_matches('/'))];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tops.push(e.path().join(parent.trim_start_matches('/')));
        }
    }
    let mut out = Vec::new();
    for top in tops.into_iter().filter(|t| t.is_dir()) {
        dirs_depth_first(&top, &mut out);
    }
    out
}

fn dirs_depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            dirs_depth_first(&e.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

/// SIGKILLs what podman left: containers and their conmon (in the test's cgroup parent) and exit
/// commands (in the node namespace), after giving them a moment to finish on their own.
fn kill_leftovers(node: &Netns, cgroups: &[PathBuf]) {
    let in_cgroups = || -> Vec<i32> { cgroups.iter().flat_map(|d| cgroup_procs(d)).collect() };
    let in_node = || -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", node.name()])
            .output();
        out.map(|o| pids_in(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_default()
    };
    // conmon and `podman container cleanup` exit within moments of `podman rm`.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !(in_cgroups().is_empty() && in_node().is_empty()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<i32> = in_cgroups().into_iter().chain(in_node()).collect();
    if !left.is_empty() {
        eprintln!("warning: processes left after podman: {left:?}; killing them");
        kill_all(left);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kill_all(pids: impl IntoIterator<Item = i32>) {
    for pid in pids {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

fn cgroup_procs(dir: &Path) -> Vec<i32> {
    pids_in(&std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default())
}

fn pids_in(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What a container keeps outside the temp dir if podman could not remove it: its network
/// namespace, runc's state, libcni's cached result.
fn remove_container_host_state(c: &Container) {
    if c.netns.exists() {
        eprintln!("warning: netns {} left; removing it", c.netns.display());
        let _ = nix::mount::umount2(&c.netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&c.netns);
    }
    let _ = std::fs::remove_dir_all(Path::new("/run/runc").join(&c.id));
    for f in std::fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
    {
        if f.file_name().to_string_lossy().contains(c.id.as_str()) {
            let _ = std::fs::remove_file(f.path());
        }
    }
}

/// rmdir of cgroups (only empty ones can go), children first; a few tries while tasks exit.
fn remove_cgroups(dirs: Vec<PathBuf>) {
    for dir in dirs {
        for attempt in 0.. {
            match std::fs::remove_dir(&dir) {
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

/// Removes a host path the test created: the blob-info cache's files (ours alone: nothing else
/// had created the directory), then the directory if empty. A path somebody else started using
/// meanwhile stays.
fn remove_host_path(path: &Path) -> std::io::Result<()> {
    if path == Path::new("/var/lib/containers/cache") {
        let _ = std::fs::remove_file(path.join("blob-info-cache-v1.boltdb"));
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        other => other,
    }
}

/// Detaches every mount below `dir` (shm of containers, their rootfs), deepest first. Returns
/// whether none is left.
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

/// Cleans up after test processes that were killed (SIGKILL skips Drop): the processes in their
/// cgroups (containers and conmon), their mounts, temp dirs and cgroups, and their node
/// namespaces. Runs of live processes are left alone.
fn sweep_stale_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let mut swept = false;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = e.path();
        if pid == std::process::id()
            || Path::new(&format!("/proc/{pid}")).exists()
            || !dir.join("containers.conf").is_file()
        {
            continue;
        }
        eprintln!(
            "podman: cleaning up {} left by killed test process {pid}",
            dir.display()
        );
        let cgroups = cgroup_dirs(&format!("/rcni-{name}"));
        kill_all(cgroups.iter().flat_map(|d| cgroup_procs(d)));
        remove_cgroups(cgroups);
        if unmount_under(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        swept = true;
    }
    if swept {
        cni_testkit::sweep_stale();
    }
}

/// PATH for podman, conmon and runc: runc lives in /usr/sbin, which a test's PATH may lack.
fn search_path() -> String {
    let mut dirs: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    for d in "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".split(':') {
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
