//! Plugin binaries in the bin dirs, found as libcni's FindInPath finds them, and asked for
//! their versions as libcni's GetVersionInfo asks (`CNI_COMMAND=VERSION`, a config naming the
//! version the runtime implements on stdin).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a plugin may take to answer VERSION.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

pub struct BinDirs {
    pub dirs: Vec<PathBuf>,
    answers: RefCell<HashMap<PathBuf, Result<Vec<String>, String>>>,
}

impl BinDirs {
    /// `CNI_PATH`-style: directories separated by ':'.
    pub fn parse(spec: &str) -> BinDirs {
        BinDirs {
            dirs: std::env::split_paths(spec)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            answers: RefCell::new(HashMap::new()),
        }
    }

    /// "/opt/cni/bin, /usr/lib/cni", for messages.
    pub fn describe(&self) -> String {
        let v: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        v.join(", ")
    }

    /// The first regular file named `plugin_type` in the dirs (following symlinks).
    pub fn find(&self, plugin_type: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// Every file name in the dirs, for suggestions.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The `supportedVersions` the binary answers, or why it did not; asked once per binary.
    pub fn versions(&self, bin: &Path) -> Result<Vec<String>, String> {
        if let Some(a) = self.answers.borrow().get(bin) {
            return a.clone();
        }
        let a = ask_versions(bin);
        self.answers
            .borrow_mut()
            .insert(bin.to_path_buf(), a.clone());
        a
    }
}

fn ask_versions(bin: &Path) -> Result<Vec<String>, String> {
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        // What libcni sets for plugins built on an older skel, which insist on them.
        .env("CNI_NETNS", "dummy")
        .env("CNI_IFNAME", "dummy")
        .env("CNI_PATH", "dummy")
        .env_remove("CNI_CONTAINERID")
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    // Dropped at once: the plugin sees EOF after the config.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(br#"{"cniVersion":"1.1.0"}"#);
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it did not answer VERSION within {} s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    parse_answer(&stdout, status.success())
}

/// A VERSION answer: `{"cniVersion", "supportedVersions"}`, or an error. A plugin of spec
/// 0.1.0 does not know VERSION; libcni takes it to support 0.1.0 only.
fn parse_answer(stdout: &[u8], success: bool) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(stdout);
    let v: Option<Value> = serde_json::from_slice(stdout).ok();
    if let Some(list) = v
        .as_ref()
        .and_then(|v| v.get("supportedVersions"))
        .and_then(Value::as_array)
        .filter(|_| success)
    {
        return Ok(list
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect());
    }
    let msg = v
        .as_ref()
        .and_then(|v| v.get("msg"))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| text.trim().to_string());
    if msg.contains("unknown CNI_COMMAND: VERSION") {
        return Ok(vec!["0.1.0".into()]);
    }
    Err(format!(
        "its VERSION answer has no supportedVersions: {}",
        if msg.is_empty() { "(nothing)" } else { &msg }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(
                br#"{"cniVersion":"1.0.0","supportedVersions":["0.3.1","1.0.0"]}"#,
                true
            )
            .unwrap(),
            ["0.3.1", "1.0.0"]
        );
        assert_eq!(
            parse_answer(br#"{"code":4,"msg":"unknown CNI_COMMAND: VERSION"}"#, false).unwrap(),
            ["0.1.0"]
        );
        let e = parse_answer(b"hello", true).unwrap_err();
        assert!(e.contains("hello"), "{e}");
        assert!(parse_answer(b"", false).unwrap_err().contains("(nothing)"));
    }
}
