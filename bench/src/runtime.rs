//! A minimal CNI runtime: runs a conflist's plugins one process per call, as libcni does
//! (each plugin's config built by `cni_testkit::plugin_config`, prevResult handed down the chain
//! on ADD, DEL in reverse with the cached result). The benchmark uses it so that nothing but
//! plugin work is timed; its exec is its own (wall time per call). Peak RSS is measured in
//! separate, traced calls ([`Runtime::trace_rss`]): wait4's ru_maxrss is no use here, as the
//! kernel counts in it the address space the child had before exec (a copy of its parent's),
//! so a plugin would be charged for the benchmark's memory and an IPAM child for its plugin's.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_plugin::netns::NetNs;
use cni_testkit::{conflist, find_plugin, plugin_config};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::{Map, Value};

/// One plugin call: its exit, output and wall time; with [`Runtime::trace_rss`], the peak RSS of
/// every process it ran (the plugin and what it exec'd, e.g. its IPAM plugin).
#[derive(Debug, Clone)]
pub struct Exec {
    pub plugin: String,
    pub ok: bool,
    pub stdout: String,
    pub elapsed: Duration,
    pub procs: Vec<ProcRss>,
}

/// A process's own peak RSS (VmHWM of the address space exec gave it), read as it exits.
#[derive(Debug, Clone)]
pub struct ProcRss {
    /// Basename of the executable.
    pub name: String,
    pub peak_kib: u64,
}

/// Which attachment a call is for: the runtime's CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME.
pub struct Attachment<'a> {
    pub id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
}

pub struct Runtime {
    /// Network namespace the plugins run in (the node).
    pub node: NetNs,
    pub cni_path: String,
    /// Run each call under ptrace, stopping only at process exit to read its VmHWM. Costs a
    /// few context switches per process: timings from such calls are not to be used.
    pub trace_rss: bool,
}

impl Runtime {
    pub fn new(node_path: &std::path::Path, cni_path: String) -> Runtime {
        Runtime {
            node: NetNs::open(node_path).expect("opening node netns"),
            cni_path,
            trace_rss: false,
        }
    }

    fn find(&self, plugin: &str) -> PathBuf {
        find_plugin(&self.cni_path, plugin)
            .unwrap_or_else(|| panic!("plugin {plugin} not in {}", self.cni_path))
    }

    /// Runs one plugin call and waits for it.
    // With trace_rss the child is reaped by waitpid (in `trace_to_exit`), not through Child.
    #[allow(clippy::zombie_processes)]
    pub fn exec(&self, plugin: &str, verb: &str, at: &Attachment, conf: &Value) -> Exec {
        let bin = self.find(plugin);
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", at.id)
            .env("CNI_NETNS", at.netns)
            .env("CNI_IFNAME", at.ifname)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let input = serde_json::to_vec(conf).unwrap();
        // As a runtime execs a plugin (Go's os/exec: vfork, the child in the caller's netns):
        // spawned from this thread while it is in the node, so std uses posix_spawn; a netns
        // hook in pre_exec would force a full fork of the benchmark process.
        let spawn = |cmd: &mut Command| {
            let _in_node = self.node.enter().expect("entering the node's netns");
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()))
        };
        if !self.trace_rss {
            let started = Instant::now();
            let mut child = spawn(&mut cmd);
            // Fits the pipe; a plugin that exits without reading it gets EPIPE, not a hang.
            let _ = child.stdin.take().unwrap().write_all(&input);
            let out = child.wait_with_output().expect("waiting for the plugin");
            return Exec {
                plugin: plugin.to_string(),
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                elapsed: started.elapsed(),
                procs: Vec::new(),
            };
        }
        unsafe {
            // Stops the child right after exec until the tracer has set its options.
            cmd.pre_exec(|| nix::sys::ptrace::traceme().map_err(std::io::Error::from));
        }
        let started = Instant::now();
        let mut child = spawn(&mut cmd);
        let mut stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        // The tracer must stay free to resume the child, so the pipes get their own thread.
        let io = std::thread::spawn(move || {
            stdin.write_all(&input).unwrap();
            drop(stdin);
            let mut stdout = String::new();
            std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
            stdout
        });
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (status, procs) = trace_to_exit(pid);
        let stdout = io.join().unwrap();
        let elapsed = started.elapsed();
        Exec {
            plugin: plugin.to_string(),
            ok: status == 0,
            stdout,
            elapsed,
            procs,
        }
    }

    /// ADD through the whole chain; returns the final result and each plugin's exec.
    pub fn add(&self, list: &Value, at: &Attachment) -> Result<(Value, Vec<Exec>), String> {
        let list = conflist(list);
        let mut prev: Option<Value> = None;
        let mut execs = Vec::new();
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = plugin_config(&list, i, prev.as_ref(), &Map::new());
            let ty = plugin["type"].as_str().unwrap();
            let e = self.exec(ty, "ADD", at, &conf);
            if !e.ok {
                return Err(format!("{ty} ADD failed: {}", e.stdout));
            }
            prev = Some(
                serde_json::from_str(&e.stdout)
                    .map_err(|err| format!("{ty}: {err}: {}", e.stdout))?,
            );
            execs.push(e);
        }
        Ok((prev.unwrap_or(Value::Null), execs))
    }

    /// CHECK through the chain in order, each plugin given the cached ADD result.
    pub fn check(
        &self,
        list: &Value,
        at: &Attachment,
        cached: &Value,
    ) -> Result<Vec<Exec>, String> {
        self.each("CHECK", false, list, at, Some(cached))
    }

    /// DEL through the chain in reverse, with the cached ADD result as prevResult.
    pub fn del(
        &self,
        list: &Value,
        at: &Attachment,
        cached: Option<&Value>,
    ) -> Result<Vec<Exec>, String> {
        self.each("DEL", true, list, at, cached)
    }

    /// `verb` on every plugin of the chain (in reverse if asked), each given `cached` as
    /// prevResult; stops at the first failure.
    fn each(
        &self,
        verb: &str,
        reverse: bool,
        list: &Value,
        at: &Attachment,
        cached: Option<&Value>,
    ) -> Result<Vec<Exec>, String> {
        let list = conflist(list);
        let mut order: Vec<usize> = (0..list.plugins.len()).collect();
        if reverse {
            order.reverse();
        }
        let mut execs = Vec::new();
        for i in order {
            let conf = plugin_config(&list, i, cached, &Map::new());
            let ty = list.plugins[i]["type"].as_str().unwrap();
            let e = self.exec(ty, verb, at, &conf);
            if !e.ok {
                return Err(format!("{ty} {verb} failed: {}", e.stdout));
            }
            execs.push(e);
        }
        Ok(execs)
    }
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for the child to end: its exit code (128 + signal if killed).
/// Follows a traced child (stopped after its exec) and everything it starts until all of them
/// have exited; at each exit stop, while the address space still exists, reads its VmHWM.
/// Returns the child's exit code and each process's peak. Only while no other child of this
/// process runs: it waits for any child.
fn trace_to_exit(pid: Pid) -> (i32, Vec<ProcRss>) {
    use nix::sys::ptrace::{self, Event, Options};
    let st = waitpid(pid, Some(WaitPidFlag::__WALL)).expect("waitpid");
    assert!(
        matches!(st, WaitStatus::Stopped(_, Signal::SIGTRAP)),
        "traced child did not stop at exec: {st:?}"
    );
    ptrace::setoptions(
        pid,
        Options::PTRACE_O_TRACEEXIT
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_EXITKILL,
    )
    .expect("PTRACE_SETOPTIONS");
    ptrace::cont(pid, None).expect("PTRACE_CONT");
    // Per process (thread group): executable name and the highest VmHWM seen.
    let mut peaks: std::collections::BTreeMap<i32, ProcRss> = Default::default();
    let mut code = None;
    loop {
        let st = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(st) => st,
            Err(nix::errno::Errno::ECHILD) => break,
            Err(e) => panic!("waitpid: {e}"),
        };
        match st {
            WaitStatus::PtraceEvent(tid, _, ev) => {
                if ev == Event::PTRACE_EVENT_EXIT as i32 {
                    if let Some((tgid, p)) = read_peak(tid) {
                        let e = peaks.entry(tgid).or_insert(ProcRss {
                            name: p.name.clone(),
                            peak_kib: 0,
                        });
                        e.peak_kib = e.peak_kib.max(p.peak_kib);
                    }
                }
                let _ = ptrace::cont(tid, None);
            }
            // New tracees start with SIGSTOP; group-stop and exec traps are resumed as well.
            WaitStatus::Stopped(tid, Signal::SIGSTOP | Signal::SIGTRAP) => {
                let _ = ptrace::cont(tid, None);
            }
            WaitStatus::Stopped(tid, sig) => {
                let _ = ptrace::cont(tid, Some(sig));
            }
            other => {
                if other.pid() == Some(pid) {
                    code = exit_code(other);
                }
            }
        }
    }
    (
        code.expect("traced child's exit not seen"),
        peaks.into_values().collect(),
    )
}

/// (thread group, process name and VmHWM) of a task stopped at exit.
fn read_peak(tid: Pid) -> Option<(i32, ProcRss)> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().trim_end_matches(" kB").to_string())
    };
    let tgid: i32 = field("Tgid:")?.parse().ok()?;
    let peak_kib: u64 = field("VmHWM:")?.parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{tid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    if let Some(dir) = std::env::var_os("RCNI_BENCH_SMAPS") {
        dump_memory(tid, &name, std::path::Path::new(&dir));
    }
    Some((tgid, ProcRss { name, peak_kib }))
}

/// Where a process's RSS is (`RCNI_BENCH_SMAPS=DIR`): its smaps as `DIR/<name>.<tid>`, and which
/// pages of its executable are mapped as `DIR/<name>.<tid>.pages` (permissions and file offset
/// of each page), to see which code and data a call touched.
fn dump_memory(tid: Pid, name: &str, dir: &std::path::Path) {
    use std::io::{Read, Seek};
    let _ = std::fs::copy(
        format!("/proc/{tid}/smaps"),
        dir.join(format!("{name}.{tid}")),
    );
    let maps = std::fs::read_to_string(format!("/proc/{tid}/maps")).unwrap_or_default();
    let Ok(mut pagemap) = std::fs::File::open(format!("/proc/{tid}/pagemap")) else {
        return;
    };
    let mut out = String::new();
    for l in maps.lines().filter(|l| l.ends_with(&format!("/{name}"))) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
        let (a, b) = f[0].split_once('-').unwrap_or_default();
        let (a, b, off) = (hex(a), hex(b), hex(f[2]));
        for page in (a..b).step_by(4096) {
            let mut e = [0u8; 8];
            let present = pagemap
                .seek(std::io::SeekFrom::Start(page / 4096 * 8))
                .is_ok()
                && pagemap.read_exact(&mut e).is_ok()
                && u64::from_le_bytes(e) >> 63 == 1;
            if present {
                out += &format!("{} {:x}\n", f[1], off + (page - a));
            }
        }
    }
    let _ = std::fs::write(dir.join(format!("{name}.{tid}.pages")), out);
}
