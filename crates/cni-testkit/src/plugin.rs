//! Running a plugin binary the way a container runtime does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::fs::bin_dir;
use crate::netns::Netns;

/// Default time a plugin may take before it is killed; `RCNI_PLUGIN_TIMEOUT_SECS` overrides.
/// A hung plugin must fail its test, not hang the whole suite.
const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// What a plugin invocation produced.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// Exit code; 128 + signal number if the plugin was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as JSON, if it is JSON (results and error objects both are).
    pub json: Option<Value>,
}

impl PluginRun {
    /// The JSON result of a successful run; panics with the full stdout and stderr if the plugin
    /// failed or printed no JSON, so the test failure shows why.
    pub fn ok(&self) -> &Value {
        self.assert_ok();
        match &self.json {
            Some(v) => v,
            None => panic!(
                "plugin succeeded but printed no JSON result\n{}",
                self.dump()
            ),
        }
    }

    /// Panics with the full stdout and stderr unless the exit code is 0. For verbs that print
    /// nothing on success (DEL, CHECK, GC).
    pub fn assert_ok(&self) -> &Self {
        if self.code != 0 {
            panic!("plugin failed\n{}", self.dump());
        }
        self
    }

    /// The `code` of the CNI error object on stdout, if there is one.
    pub fn err_code(&self) -> Option<u64> {
        self.json.as_ref()?.get("code")?.as_u64()
    }

    fn dump(&self) -> String {
        format!(
            "exit code: {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The CNI environment of one call. Empty strings (and `netns: None`) leave the variable unset,
/// so tests can provoke missing-variable errors.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// `CNI_COMMAND`: ADD, DEL, CHECK, VERSION, GC, STATUS.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`: path of the pod namespace, usually `Netns::path()`.
    pub netns: Option<&'a str>,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`, e.g. `"IgnoreUnknown=1;K8S_POD_NAME=x"`.
    pub args: &'a str,
    /// `CNI_PATH`: where delegated plugins (IPAM) are looked up.
    pub path: String,
    /// Further variables, set as given (even if empty), after the CNI ones.
    pub extra_env: Vec<(String, String)>,
}

impl<'a> Invocation<'a> {
    /// An invocation with no `CNI_ARGS`, `CNI_PATH` = [`bin_dir`] and no extra variables.
    pub fn new(
        command: &'a str,
        container_id: &'a str,
        netns: Option<&'a str>,
        ifname: &'a str,
    ) -> Self {
        Invocation {
            command,
            container_id,
            netns,
            ifname,
            args: "",
            path: bin_dir().display().to_string(),
            extra_env: Vec::new(),
        }
    }

    /// Sets `CNI_ARGS`.
    pub fn with_args(mut self, args: &'a str) -> Self {
        self.args = args;
        self
    }

    /// Sets `CNI_PATH` (e.g. [`crate::cni_path_with_upstream`]).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Adds an extra environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }
}

/// Runs `binary` like a runtime: config on stdin, CNI variables in a clean environment (only
/// `PATH` survives, so stray `CNI_*` or `RUST_*` variables of the test process cannot leak in), and
/// inside `node` when given (runtimes run plugins in the host namespace; `node` plays the host so
/// the real root namespace is never touched). Never panics on plugin failure: inspect the result,
/// or use [`PluginRun::ok`]. Panics if the binary cannot be started or exceeds the timeout.
/// A fresh container ID, unique among the test processes running at once.
pub fn container_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "c{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn run_plugin(node: Option<&Netns>, binary: &Path, inv: &Invocation, stdin: &str) -> PluginRun {
    let mut cmd = match node {
        Some(ns) => ns.command(binary),
        None => Command::new(binary),
    };
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let netns = inv.netns.unwrap_or("");
    for (key, value) in [
        ("CNI_COMMAND", inv.command),
        ("CNI_CONTAINERID", inv.container_id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", inv.ifname),
        ("CNI_ARGS", inv.args),
        ("CNI_PATH", inv.path.as_str()),
    ] {
        if !value.is_empty() {
            cmd.env(key, value);
        }
    }
    for (key, value) in &inv.extra_env {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut child = spawn_retrying(&mut cmd, binary);
    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_owned();
    // A separate writer so a plugin that prints before reading (or never reads, like VERSION)
    // cannot deadlock us; its EPIPE is expected and ignored.
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(input.as_bytes());
    });
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let timeout = timeout();
    let out = match rx.recv_timeout(timeout) {
        Ok(res) => res.unwrap_or_else(|e| panic!("waiting for plugin {}: {e}", binary.display())),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!(
                "plugin {} {} did not finish within {}s and was killed",
                binary.display(),
                inv.command,
                timeout.as_secs()
            );
        }
    };
    let _ = writer.join();

    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + out.status.signal().unwrap_or(0)
    });
    let json = match stdout.trim() {
        "" => None,
        text => serde_json::from_str(text).ok(),
    };
    PluginRun {
        code,
        stdout,
        stderr,
        json,
    }
}

/// Spawns, retrying on ETXTBSY: a test that just wrote a script plugin can race with another
/// thread's fork that briefly inherited the write fd.
fn spawn_retrying(cmd: &mut Command, binary: &Path) -> std::process::Child {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && attempts < 100 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot run plugin {}: {e}", binary.display()),
        }
    }
}

fn timeout() -> Duration {
    let secs = std::env::var("RCNI_PLUGIN_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}
