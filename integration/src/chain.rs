//! A minimal CNI runtime: runs a conflist's plugins one process per call, as libcni does
//! (each plugin's config built by `cni_testkit::plugin_config`, prevResult handed down the chain
//! on ADD, DEL in reverse with the cached result). The benchmark uses it so that nothing but
//! plugin work is timed; its exec is its own (wall time and peak RSS from wait4 per process).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_testkit::{conflist, find_plugin, plugin_config};
use serde_json::{Map, Value};

/// One plugin process: its exit, output, wall time and peak RSS.
#[derive(Debug, Clone)]
pub struct Exec {
    pub plugin: String,
    pub ok: bool,
    pub stdout: String,
    pub elapsed: Duration,
    pub max_rss_kib: i64,
}

pub struct Runtime {
    /// Network namespace the plugins run in (the node), as an open file.
    pub node: std::fs::File,
    pub cni_path: String,
}

impl Runtime {
    pub fn new(node_path: &std::path::Path, cni_path: String) -> Runtime {
        Runtime {
            node: std::fs::File::open(node_path).expect("opening node netns"),
            cni_path,
        }
    }

    fn find(&self, plugin: &str) -> PathBuf {
        find_plugin(&self.cni_path, plugin)
            .unwrap_or_else(|| panic!("plugin {plugin} not in {}", self.cni_path))
    }

    /// Runs one plugin call and waits for it, recording its peak RSS (wait4).
    // The child is reaped by wait4, which std's Child cannot do while giving us rusage.
    #[allow(clippy::zombie_processes)]
    pub fn exec(
        &self,
        plugin: &str,
        verb: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> Exec {
        let bin = self.find(plugin);
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let fd = self.node.as_fd().try_clone_to_owned().unwrap();
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let input = serde_json::to_vec(conf).unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let (status, rss) = wait4(child.id() as i32);
        let elapsed = started.elapsed();
        Exec {
            plugin: plugin.to_string(),
            ok: status == 0,
            stdout,
            elapsed,
            max_rss_kib: rss,
        }
    }

    /// ADD through the whole chain; returns the final result and each plugin's exec.
    pub fn add(
        &self,
        list: &Value,
        id: &str,
        netns: &str,
        ifname: &str,
    ) -> Result<(Value, Vec<Exec>), String> {
        let list = conflist(list);
        let mut prev: Option<Value> = None;
        let mut execs = Vec::new();
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = plugin_config(&list, i, prev.as_ref(), &Map::new());
            let ty = plugin["type"].as_str().unwrap();
            let e = self.exec(ty, "ADD", id, netns, ifname, &conf);
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

    /// DEL through the chain in reverse, with the cached ADD result as prevResult.
    pub fn del(
        &self,
        list: &Value,
        id: &str,
        netns: &str,
        ifname: &str,
        cached: Option<&Value>,
    ) -> Result<Vec<Exec>, String> {
        let list = conflist(list);
        let mut execs = Vec::new();
        for (i, plugin) in list.plugins.iter().enumerate().rev() {
            let conf = plugin_config(&list, i, cached, &Map::new());
            let ty = plugin["type"].as_str().unwrap();
            let e = self.exec(ty, "DEL", id, netns, ifname, &conf);
            if !e.ok {
                return Err(format!("{ty} DEL failed: {}", e.stdout));
            }
            execs.push(e);
        }
        Ok(execs)
    }
}

/// waitpid with rusage: the exit code and the child's peak RSS in KiB.
fn wait4(pid: i32) -> (i32, i64) {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, usage.ru_maxrss)
}
