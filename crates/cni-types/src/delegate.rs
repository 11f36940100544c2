//! Delegation: run another plugin from CNI_PATH (usually the IPAM plugin named in `ipam.type`)
//! with our stdin and environment, and take its result or its error as ours.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{CniError, Result, DELEGATE_FAILED, INVALID_NETWORK_CONFIG, IO_FAILURE};
use crate::result::CniResult;
use crate::skel::Call;
use crate::version::Verb;

/// Finds `name` in the CNI_PATH directories. A name with a '/' is refused: `ipam.type` names a
/// plugin, it is not a way to run an arbitrary file.
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::new(
            INVALID_NETWORK_CONFIG,
            format!("plugin type {name:?} is not a plugin name: give the name of a binary in CNI_PATH, e.g. \"rhost-local\""),
        ));
    }
    path.iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs = std::env::join_paths(path).unwrap_or_default();
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!(
                    "plugin {name:?} not found in CNI_PATH {:?}: install it there or fix the plugin type in the config",
                    dirs.to_string_lossy()
                ),
            )
        })
}

/// Runs plugin `name` for `verb` with `stdin`; returns its stdout on success and its own error
/// (code, msg, details) on failure.
pub fn exec(call: &Call, name: &str, verb: Verb, stdin: &[u8]) -> Result<Vec<u8>> {
    let binary = find_plugin(name, &call.path)?;
    let mut child = Command::new(&binary)
        .envs(call.env_for(verb))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                IO_FAILURE,
                format!("cannot run plugin {}: {e}", binary.display()),
            )
        })?;
    // Plugins read all of stdin before writing, so writing first cannot deadlock.
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(IO_FAILURE, format!("waiting for plugin {name}: {e}")))?;
    if !out.stderr.is_empty() {
        // Keep the delegate's diagnostics where the runtime collects ours.
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(CniError::from_json(&out.stdout).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        });
        CniError::new(
            DELEGATE_FAILED,
            format!(
                "plugin {name} failed ({}) without a CNI error: {}",
                out.status,
                text.trim()
            ),
        )
    }))
}

/// ADD through the delegate, result decoded whatever version it answered in.
pub fn add(call: &Call, name: &str) -> Result<CniResult> {
    let out = exec(call, name, Verb::Add, &call.stdin)?;
    CniResult::from_slice(&out, call.version)
        .map_err(|e| CniError::decode(format!("result of plugin {name}: {}", e.msg)))
}

pub fn del(call: &Call, name: &str) -> Result<()> {
    exec(call, name, Verb::Del, &call.stdin).map(drop)
}

pub fn check(call: &Call, name: &str) -> Result<()> {
    exec(call, name, Verb::Check, &call.stdin).map(drop)
}

pub fn gc(call: &Call, name: &str) -> Result<()> {
    exec(call, name, Verb::Gc, &call.stdin).map(drop)
}

pub fn status(call: &Call, name: &str) -> Result<()> {
    exec(call, name, Verb::Status, &call.stdin).map(drop)
}

/// Undoes a delegate's ADD (with its DEL) unless disarmed: hold it across the steps that follow
/// a successful IPAM ADD so that any failure releases the address.
pub struct UndoAdd<'a> {
    call: &'a Call,
    name: String,
    armed: bool,
}

impl<'a> UndoAdd<'a> {
    pub fn new(call: &'a Call, name: &str) -> UndoAdd<'a> {
        UndoAdd {
            call,
            name: name.to_string(),
            armed: true,
        }
    }

    /// The ADD succeeded as a whole: keep what the delegate did.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UndoAdd<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = del(self.call, &self.name) {
                self.call
                    .logger
                    .debug(format!("undoing {} ADD failed: {e}", self.name));
            }
        }
    }
}
