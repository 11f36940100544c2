//! The host side of a test containerd: processes, cgroups and mounts it leaves, and sweeping
//! what killed test runs left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cni_testkit::Netns;

use super::client::K8S_NS;

/// Host paths containerd 1.6 creates whatever its config says (shim sockets, runc state, the
/// libcni result cache). Parents before children: teardown removes those the test created.
pub(super) const HOST_PATHS: [&str; 6] = [
    "/run/containerd",
    "/run/containerd/s",
    "/run/containerd/runc",
    "/run/containerd/runc/k8s.io",
    "/var/lib/cni",
    "/var/lib/cni/results",
];

/// Where containerd puts the sandboxes' cgroups (`k8s.io`, as no cgroup_parent is given): in
pub(super) fn cgroup_parents() -> Vec<PathBuf> {
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
pub(super) fn remove_cgroups(dirs: &[PathBuf]) {
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
pub(super) fn stop_process(child: &mut Child) {
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
pub(super) fn kill_shims(node: &Netns) {
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
pub(super) fn sweep_stale_runs() {
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
    pids_where(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
    })
}

/// Every running process's PID for which `keep` holds.
fn pids_where(keep: impl Fn(i32) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| keep(*pid))
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
    pids_where(|pid| {
        // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain spaces.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 2..];
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            })
            == Some(parent)
    })
}

/// Detaches every mount below `dir` (sandbox rootfs, netns bind mounts, shm), deepest first.
/// Returns whether none is left.
pub(super) fn unmount_under(dir: &Path) -> bool {
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
