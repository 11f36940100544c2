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
        }
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

    /// Runs plugin `ty`: its stdout on success, its error (message and code) on failure.
    pub fn run(&self, ty: &str, env: &Env, stdin: &[u8]) -> Result<Vec<u8>, String> {
        let bin = self.find(ty)?;
        let mut child = Command::new(&bin)
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
}
