//! Running plugins as a runtime does: found in the bin dirs (CNI_PATH), the CNI_* variables in
//! the environment, the config on stdin, an error JSON on stdout when they fail. VERSION answers
//! are asked once per plugin type and kept.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cni_types::{CniError, SpecVersion};
use serde_json::Value;

/// The plugins of the bin dirs.
pub struct Plugins {
    dirs: Vec<PathBuf>,
    timeout: Duration,
    /// VERSION answers, shared by the threads that reclaim.
    versions: Mutex<HashMap<String, Result<Vec<SpecVersion>, String>>>,
    /// The mount namespace plugins run in, if not ours.
    mount_ns: Option<std::fs::File>,
}

/// What a plugin is called with, beside its stdin.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub command: &'static str,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl Plugins {
    pub fn new(dirs: Vec<PathBuf>, timeout: Duration) -> Plugins {
        Plugins {
            dirs,
            timeout,
            versions: Mutex::default(),
            mount_ns: None,
        }
    }

    /// Plugins run in the mount namespace of the file `ns` (a `/proc/PID/ns/mnt`).
    pub fn in_mount_ns(&mut self, ns: &std::path::Path) -> std::io::Result<()> {
        self.mount_ns = Some(std::fs::File::open(ns)?);
        Ok(())
    }

    fn find(&self, ty: &str) -> Result<PathBuf, String> {
        if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
            return Err(format!("plugin type {ty:?} is not a plugin name"));
        }
        self.dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("plugin {ty:?} not found in {}", self.path()))
    }

    /// CNI_PATH.
    fn path(&self) -> String {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        dirs.join(":")
    }

    /// The spec versions plugin `ty` says it supports (VERSION).
    pub fn versions(&self, ty: &str) -> Result<Vec<SpecVersion>, String> {
        if let Some(v) = self.answers().get(ty) {
            return v.clone();
        }
        let env = Env {
            command: "VERSION",
            ..Env::default()
        };
        let answer = self
            .run(ty, &env, br#"{"cniVersion":"1.1.0"}"#)
            .and_then(|out| {
                let v: Value = serde_json::from_slice(&out)
                    .map_err(|e| format!("VERSION answer is not JSON: {e}"))?;
                let list = v["supportedVersions"]
                    .as_array()
                    .ok_or("VERSION answer has no supportedVersions")?;
                Ok(list
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| SpecVersion::parse(s).ok())
                    .collect())
            })
            .map_err(|e| format!("{ty} VERSION: {e}"));
        self.answers().insert(ty.to_string(), answer.clone());
        answer
    }

    fn answers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Result<Vec<SpecVersion>, String>>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A command for plugin binary `bin`, in the mount namespace asked for.
    fn command(&self, bin: &std::path::Path) -> Command {
        let mut command = Command::new(bin);
        if let Some(ns) = &self.mount_ns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: between fork and exec the child only makes the setns(2) system call
            // (async-signal-safe) on a descriptor the parent keeps open; the child is single
            // threaded, as joining a mount namespace requires.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
    }

    /// Runs plugin `ty`: its stdout on success, its error (message and code) on failure.
    pub fn run(&self, ty: &str, env: &Env, stdin: &[u8]) -> Result<Vec<u8>, String> {
        let bin = self.find(ty)?;
        let mut command = self.command(&bin);
        let mut child = command
            .env("CNI_COMMAND", env.command)
            .env("CNI_CONTAINERID", &env.container_id)
            .env("CNI_NETNS", &env.netns)
            .env("CNI_IFNAME", &env.ifname)
            .env("CNI_ARGS", &env.args)
            .env("CNI_PATH", self.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut input = child.stdin.take().expect("piped");
        let stdin = stdin.to_vec();
        // A plugin that exits without reading its stdin must not make us fail: EPIPE is fine.
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{ty} {} did not finish within {:?}; killed",
                        env.command, self.timeout
                    ));
                }
                Err(e) => return Err(format!("waiting for {ty}: {e}")),
            }
        };
        let _ = writer.join();
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if status.success() {
            return Ok(stdout);
        }
        Err(match CniError::from_json(&stdout) {
            Some(e) => format!("{e} (code {})", e.code),
            None => format!(
                "{ty} {} failed ({status}): {}{}",
                env.command,
                String::from_utf8_lossy(&stdout).trim(),
                String::from_utf8_lossy(&stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn versions_errors_and_timeouts() {
        let dir = cni_testkit::temp_dir("gc-exec");
        script(
            &dir,
            "old",
            r#"echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'"#,
        );
        script(
            &dir,
            "fails",
            r#"cat >/dev/null; echo '{"cniVersion":"1.1.0","code":11,"msg":"try later"}'; exit 1"#,
        );
        script(
            &dir,
            "env",
            r#"echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_PATH""#,
        );
        script(&dir, "hangs", "sleep 10");
        let p = Plugins::new(
            vec![dir.join("none"), dir.to_path_buf()],
            Duration::from_secs(1),
        );
        assert_eq!(
            p.versions("old").unwrap(),
            [SpecVersion::V0_4_0, SpecVersion::V1_0_0]
        );
        let e = p.run("fails", &Env::default(), b"{}").unwrap_err();
        assert_eq!(e, "try later (code 11)");
        let env = Env {
            command: "DEL",
            container_id: "c1".into(),
            ..Env::default()
        };
        let out = String::from_utf8(p.run("env", &env, b"").unwrap()).unwrap();
        assert_eq!(
            out.trim(),
            format!("DEL c1 {}:{}", dir.join("none").display(), dir.display())
        );
        assert!(p.versions("missing").unwrap_err().contains("not found"));
        assert!(p
            .run("../x", &env, b"")
            .unwrap_err()
            .contains("not a plugin name"));
        let e = p.run("hangs", &env, b"").unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
    }

    /// A plugin run in another mount namespace sees that namespace's files (the node's tools,
    /// from a container), and the run fails when the namespace cannot be joined.
    #[test]
    fn plugins_run_in_the_mount_namespace_given() {
        let dir = cni_testkit::temp_dir("gc-mntns");
        let seen = dir.join("seen");
        std::fs::create_dir(&seen).unwrap();
        script(
            &dir,
            "look",
            &format!("cat {}/marker 2>/dev/null || echo none", seen.display()),
        );
        // A mount namespace where `seen` holds a marker that ours does not have.
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs none {0} && echo inside > {0}/marker && exec sleep 60",
                seen.display()
            ))
            .spawn()
            .expect("unshare (util-linux)");
        let ns = PathBuf::from(format!("/proc/{}/ns/mnt", holder.id()));
        let in_holder = PathBuf::from(format!(
            "/proc/{}/root{}/marker",
            holder.id(),
            seen.display()
        ));
        assert!(
            cni_testkit::eventually(|| in_holder.exists()),
            "the holder's mount"
        );
        let mut p = Plugins::new(vec![dir.to_path_buf()], Duration::from_secs(5));
        let ours = p.run("look", &Env::default(), b"").unwrap();
        assert_eq!(String::from_utf8_lossy(&ours).trim(), "none");
        p.in_mount_ns(&ns).unwrap();
        let theirs = p.run("look", &Env::default(), b"").unwrap();
        assert_eq!(String::from_utf8_lossy(&theirs).trim(), "inside");
        let _ = holder.kill();
        let _ = holder.wait();
        // A file that is no namespace: the plugin is not run.
        p.in_mount_ns(&dir.join("look")).unwrap();
        let e = p.run("look", &Env::default(), b"").unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }
}
