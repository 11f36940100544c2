//! Delegation: run another plugin from CNI_PATH (usually the IPAM plugin named in `ipam.type`)
//! with our stdin and environment, and take its result or its error as ours.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::skel::Call;
use cni_types::error::{CniError, Result, DELEGATE_FAILED, INVALID_NETWORK_CONFIG, IO_FAILURE};
use cni_types::result::CniResult;
use cni_types::version::Verb;

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
    start(call, name, verb, stdin)?.finish()
}

/// A delegate started by [`start`] and not yet waited for.
pub struct Running {
    name: String,
    child: Option<Child>,
}

/// Starts plugin `name` for `verb` with `stdin` and returns at once, so the caller can work while
/// the delegate runs (rbridge builds the veth while IPAM allocates). [`Running::finish`] collects
/// the outcome; dropping it unfinished waits for the child, so none is left behind. Spawned from
/// the calling thread, which waits until the child has exec'd (std uses posix_spawn, a vfork):
/// measured with `scripts/bench`, spawning from a helper thread instead made rbridge's ADD
/// 4-13% slower (the new thread waits for a CPU before it can spawn).
pub fn start(call: &Call, name: &str, verb: Verb, stdin: &[u8]) -> Result<Running> {
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
    Ok(Running {
        name: name.to_string(),
        child: Some(child),
    })
}

impl Running {
    /// Waits for the delegate: its stdout on success, its own error on failure.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let name = std::mem::take(&mut self.name);
        let child = self.child.take().expect("finish runs once");
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

    /// Waits for an ADD and decodes its result whatever version it answered in.
    pub fn finish_add(self, version: cni_types::version::SpecVersion) -> Result<CniResult> {
        let name = self.name.clone();
        let out = self.finish()?;
        CniResult::from_slice(&out, version)
            .map_err(|e| CniError::decode(format!("result of plugin {name}: {}", e.msg)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Close our ends first so a chatty child cannot block on a full pipe, then reap it:
            // an undo (DEL) must not race the ADD still running.
            drop(child.stdout.take());
            drop(child.stderr.take());
            let _ = child.wait();
        }
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::log::Logger;
    use cni_types::args::CniArgs;
    use cni_types::config::NetConf;
    use cni_types::version::SpecVersion;

    /// A directory of fake plugins written as shell scripts.
    struct Plugins(PathBuf);

    impl Plugins {
        fn new(tag: &str) -> Plugins {
            let dir =
                std::env::temp_dir().join(format!("cni-delegate-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Plugins(dir)
        }
        fn add(&self, name: &str, script: &str) {
            let p = self.0.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        fn call(&self, stdin: &str) -> Call {
            let raw: serde_json::Value = serde_json::from_str(stdin).unwrap();
            Call {
                verb: Verb::Add,
                container_id: "c1".into(),
                netns: Some("/run/netns/x".into()),
                ifname: "eth0".into(),
                args: CniArgs::default(),
                path: vec![Path::new("/nonexistent").into(), self.0.clone()],
                raw_args: "IgnoreUnknown=1".into(),
                stdin: stdin.as_bytes().to_vec(),
                conf: NetConf::from_slice(stdin.as_bytes()).unwrap(),
                version: SpecVersion::V1_0_0,
                raw,
                logger: Logger::default(),
            }
        }
    }

    impl Drop for Plugins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CONF: &str =
        r#"{"cniVersion":"1.0.0","name":"n","type":"rbridge","ipam":{"type":"fake"}}"#;

    #[test]
    fn result_in_another_version_is_converted() {
        let p = Plugins::new("ok");
        // Echo the env we got into a file, answer in 0.2.0 under a 1.0.0 config.
        p.add(
            "fake",
            &format!(
                "cat > {0}/stdin; env | grep ^CNI_ | sort > {0}/env\necho '{{\"cniVersion\":\"0.2.0\",\"ip4\":{{\"ip\":\"10.1.0.7/24\",\"gateway\":\"10.1.0.1\"}}}}'",
                p.0.display()
            ),
        );
        let call = p.call(CONF);
        let r = add(&call, "fake").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.7/24");
        assert_eq!(std::fs::read_to_string(p.0.join("stdin")).unwrap(), CONF);
        let env = std::fs::read_to_string(p.0.join("env")).unwrap();
        for line in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=c1",
            "CNI_IFNAME=eth0",
            "CNI_NETNS=/run/netns/x",
            "CNI_ARGS=IgnoreUnknown=1",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing in\n{env}");
        }
    }

    #[test]
    fn delegate_error_is_passed_through() {
        let p = Plugins::new("err");
        p.add(
            "fake",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"lock held"}'; exit 1"#,
        );
        let e = add(&p.call(CONF), "fake").unwrap_err();
        assert_eq!(e, CniError::new(11, "busy").with_details("lock held"));
    }

    #[test]
    fn delegate_failing_without_cni_error() {
        let p = Plugins::new("garbage");
        p.add("fake", "echo 'segfault or so' >&2; exit 2");
        let e = del(&p.call(CONF), "fake").unwrap_err();
        assert_eq!(e.code, DELEGATE_FAILED);
        assert!(
            e.msg.contains("fake") && e.msg.contains("segfault"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn missing_or_path_like_plugins_are_config_errors() {
        let p = Plugins::new("missing");
        let e = add(&p.call(CONF), "nope").unwrap_err();
        assert_eq!(e.code, INVALID_NETWORK_CONFIG);
        assert!(
            e.msg.contains("nope") && e.msg.contains("CNI_PATH"),
            "{}",
            e.msg
        );
        for bad in ["../../bin/sh", "/bin/sh", "", ".."] {
            assert_eq!(
                find_plugin(bad, std::slice::from_ref(&p.0))
                    .unwrap_err()
                    .code,
                INVALID_NETWORK_CONFIG
            );
        }
    }

    #[test]
    fn started_delegate_runs_while_caller_works() {
        let p = Plugins::new("start");
        p.add(
            "fake",
            &format!(
                "cat > /dev/null; echo $CNI_COMMAND >> {}/verbs; echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.1.0.9/24\"}}]}}'",
                p.0.display()
            ),
        );
        let call = p.call(CONF);
        let running = start(&call, "fake", Verb::Add, &call.stdin).unwrap();
        let r = running.finish_add(call.version).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.9/24");
        // Dropped unfinished: reaped, so its effect is visible right after.
        drop(start(&call, "fake", Verb::Del, &call.stdin).unwrap());
        assert_eq!(
            std::fs::read_to_string(p.0.join("verbs")).unwrap(),
            "ADD\nDEL\n"
        );
        assert!(start(&call, "nope", Verb::Add, &call.stdin).is_err());
    }

    /// A config larger than a pipe holds (a long prevResult, say) reaches the delegate whole.
    #[test]
    fn a_config_larger_than_a_pipe_reaches_the_delegate_whole() {
        let p = Plugins::new("big");
        p.add(
            "fake",
            &format!(
                "cat > {}/stdin; echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.1.0.9/24\"}}]}}'",
                p.0.display()
            ),
        );
        let padding = "x".repeat(200 << 10);
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"rbridge","ipam":{{"type":"fake"}},"pad":"{padding}"}}"#
        );
        let call = p.call(&conf);
        add(&call, "fake").unwrap();
        assert_eq!(std::fs::read_to_string(p.0.join("stdin")).unwrap(), conf);
    }

    #[test]
    fn undo_runs_del_unless_disarmed() {
        let p = Plugins::new("undo");
        p.add(
            "fake",
            &format!("echo $CNI_COMMAND >> {}/verbs; echo '{{}}'", p.0.display()),
        );
        let call = p.call(CONF);
        drop(UndoAdd::new(&call, "fake"));
        UndoAdd::new(&call, "fake").disarm();
        assert_eq!(std::fs::read_to_string(p.0.join("verbs")).unwrap(), "DEL\n");
    }
}
