//! The plugin skeleton: read env and stdin, validate, dispatch one verb, write the result or
//! the error JSON, log the call. Every rcni binary's main is a call to [`run`].

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::log::{quote, Level, Logger};
use cni_types::args::CniArgs;
use cni_types::config::{decode_config, NetConf};
use cni_types::error::{CniError, Result, INCOMPATIBLE_CNI_VERSION, INVALID_NETWORK_CONFIG};
use cni_types::gc::Attachment;
use cni_types::result::CniResult;
use cni_types::validate;
use cni_types::version::{SpecVersion, Verb, SUPPORTED_VERSIONS};

/// What a plugin says about itself (`--version`, the one-line about, log lines).
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub about: &'static str,
}

impl PluginInfo {
    /// The line printed when the binary is run by hand without CNI_COMMAND.
    pub fn about_line(&self) -> String {
        format!(
            "{} v{}: {}; CNI spec versions {}",
            self.name,
            self.version,
            self.about,
            cni_types::version::supported_list()
        )
    }
}

/// The verbs a plugin implements. VERSION is answered by the skeleton.
pub trait Plugin {
    fn add(&self, call: &Call) -> Result<CniResult>;
    fn del(&self, call: &Call) -> Result<()>;
    fn check(&self, call: &Call) -> Result<()>;
    fn gc(&self, _call: &Call) -> Result<()> {
        Ok(())
    }
    fn status(&self, _call: &Call) -> Result<()> {
        Ok(())
    }
}

/// A plugin's own config: its keys decoded from the call (errors are code 7 and name the JSON
/// path at fault) and validated, before anything on the node changes. Every plugin implements
/// it for its config type and reads it with [`Call::config`].
pub trait PluginConfig: Sized {
    fn from_call(call: &Call) -> Result<Self>;
}

/// One invocation: the environment, the config and its version.
#[derive(Debug, Clone)]
pub struct Call {
    pub verb: Verb,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
    /// CNI_ARGS as given, handed on to delegates unchanged.
    pub raw_args: String,
    /// stdin as given, handed on to delegates unchanged.
    pub stdin: Vec<u8>,
    /// stdin decoded; a plugin reads its own keys from it with [`Call::config`].
    pub raw: Value,
    pub conf: NetConf,
    pub version: SpecVersion,
    pub logger: Logger,
}

impl Call {
    /// The plugin's validated config (see [`PluginConfig`]).
    pub fn config<C: PluginConfig>(&self) -> Result<C> {
        C::from_call(self)
    }

    /// Decodes keys of the config into `T` (serde): the first step of a
    /// [`PluginConfig::from_call`]. Errors are code 7 naming the key.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        decode_config(self.raw.clone())
    }

    /// prevResult decoded in the config's version; None for the first plugin of a chain.
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        match &self.conf.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_value(v, self.version)
                .map(Some)
                .map_err(|e| CniError::decode(format!("prevResult: {}", e.msg))),
        }
    }

    /// prevResult for a chained plugin's ADD, which cannot work without it.
    pub fn require_prev_result(&self, plugin: &str) -> Result<CniResult> {
        self.prev_result()?.ok_or_else(|| {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!(
                    "prevResult is missing: {plugin} is a chained plugin; put it after a plugin that creates the interface (e.g. rbridge) in a conflist with cniVersion 0.3.0 or later"
                ),
            )
        })
    }

    /// CNI_NETNS, which ADD and CHECK always have (the skeleton checks it).
    pub fn netns_path(&self) -> Result<&Path> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS is not set"))
    }

    /// GC's `cni.dev/valid-attachments` (see [`cni_types::gc`]).
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>> {
        cni_types::gc::valid_attachments(&self.raw)
    }

    /// The environment a delegate gets: ours, with CNI_COMMAND set to `verb`.
    pub fn env_for(&self, verb: Verb) -> Vec<(&'static str, OsString)> {
        let path = std::env::join_paths(&self.path).unwrap_or_default();
        vec![
            ("CNI_COMMAND", verb.as_str().into()),
            ("CNI_CONTAINERID", self.container_id.clone().into()),
            (
                "CNI_NETNS",
                self.netns
                    .clone()
                    .map(PathBuf::into_os_string)
                    .unwrap_or_default(),
            ),
            ("CNI_IFNAME", self.ifname.clone().into()),
            ("CNI_ARGS", self.raw_args.clone().into()),
            ("CNI_PATH", path),
        ]
    }
}

/// The CNI_* variables, read once.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl CniEnv {
    pub fn from_process() -> CniEnv {
        let get = |k: &str| std::env::var(k).ok();
        CniEnv {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }
}

/// What a call produced: text for stdout and the exit code.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
    pub error: Option<CniError>,
}

/// main() of every plugin: a CNI call when CNI_COMMAND is set, else a small CLI.
pub fn run<P: Plugin>(plugin: &P, info: &PluginInfo) -> ! {
    let (name, _) = run_or_subcommand(plugin, info, &[]);
    unreachable!("no subcommand {name} is declared")
}

/// main() of a plugin with subcommands: serves a CNI call when CNI_COMMAND is set, handles
/// `--help`, `--version` and no argument (exiting), and otherwise returns the subcommand given,
/// one of `subcommands`, with its arguments.
pub fn run_or_subcommand<P: Plugin>(
    plugin: &P,
    info: &PluginInfo,
    subcommands: &[Subcommand<'_>],
) -> (String, Vec<String>) {
    if std::env::var_os("CNI_COMMAND").is_some_and(|v| !v.is_empty()) {
        run_cni(plugin, info)
    }
    let cli = Cli { info, subcommands };
    cli.parse(std::env::args().skip(1)).unwrap_or_else(|| {
        eprintln!("{}", info.about_line());
        std::process::exit(0)
    })
}

/// A subcommand a plugin offers besides the CNI protocol (e.g. `rroutes sync`).
pub struct Subcommand<'a> {
    pub name: &'a str,
    /// Its arguments, as shown in the usage line (e.g. `--conflist FILE`).
    pub args: &'a str,
    pub about: &'a str,
}

/// A plugin's command line outside CNI calls: `--help`, `--version` and its subcommands. Hand
/// written rather than clap: a plugin's binary is mapped on every CNI call, and clap was a
/// tenth of it.
pub struct Cli<'a> {
    pub info: &'a PluginInfo,
    pub subcommands: &'a [Subcommand<'a>],
}

impl Cli<'_> {
    pub fn help(&self) -> String {
        let mut h = format!(
            "{}\n\nUsage: {} [--help | --version]\n",
            self.info.about, self.info.name
        );
        for s in self.subcommands {
            h += &format!(
                "       {} {} {}\n           {}\n",
                self.info.name, s.name, s.args, s.about
            );
        }
        h += &format!(
            "\nRun by a container runtime with CNI_COMMAND set and the network config on stdin.\nCNI spec versions: {}\n",
            cni_types::version::supported_list()
        );
        h
    }

    /// Handles `--help` and `--version` (exiting), refuses unknown arguments (exit 2), and
    /// returns the subcommand named with its arguments, or None when no argument was given.
    pub fn parse(&self, mut args: impl Iterator<Item = String>) -> Option<(String, Vec<String>)> {
        let first = args.next()?;
        match first.as_str() {
            "-h" | "--help" | "help" => {
                print!("{}", self.help());
                std::process::exit(0)
            }
            "-V" | "--version" => {
                println!("{} {}", self.info.name, self.info.version);
                std::process::exit(0)
            }
            name if self.subcommands.iter().any(|s| s.name == name) => {
                Some((first, args.collect()))
            }
            other => {
                eprintln!(
                    "{}: unexpected argument {other:?}\n\n{}",
                    self.info.name,
                    self.help()
                );
                std::process::exit(2)
            }
        }
    }
}

/// Serves one CNI call from the process's env and stdin, then exits.
pub fn run_cni<P: Plugin>(plugin: &P, info: &PluginInfo) -> ! {
    // One malloc arena: a call's few helper threads would each touch a fresh one (RSS) to
    // spare lock contention that a short-lived plugin never has.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Release builds abort on panic: the runtime still gets an error result rather than none.
    #[cfg(panic = "abort")]
    std::panic::set_hook(Box::new(|panic| {
        let e = CniError::new(
            cni_types::error::INTERNAL,
            format!("internal error (a bug in the plugin, please report it): {panic}"),
        );
        let v = SpecVersion::FALLBACK;
        println!("{}", e.to_json(v.as_str()));
        eprintln!("{panic}");
    }));
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => execute(plugin, info, &CniEnv::from_process(), &stdin),
        Err(e) => failure(
            &CniError::io(format!("cannot read the network config from stdin: {e}")),
            None,
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.exit_code)
}

fn failure(e: &CniError, version: Option<&str>) -> Outcome {
    let v = version.unwrap_or(SpecVersion::FALLBACK.as_str());
    Outcome {
        stdout: format!("{}\n", e.to_json(v)),
        exit_code: 1,
        error: Some(e.clone()),
    }
}

/// The whole protocol for one call, without touching the process: tests drive it directly.
pub fn execute<P: Plugin>(plugin: &P, info: &PluginInfo, env: &CniEnv, stdin: &[u8]) -> Outcome {
    let started = Instant::now();
    let command = env.command.clone().unwrap_or_default();
    let Some(verb) = Verb::parse(&command) else {
        return failure(
            &CniError::invalid_env(format!(
                "CNI_COMMAND {command:?} is not a CNI verb: expected ADD, DEL, CHECK, VERSION, GC or STATUS"
            )),
            None,
        );
    };
    if verb == Verb::Version {
        return version_info(stdin);
    }
    // The config first: errors are written in its version and logged to its logFile.
    let conf = match NetConf::from_slice(stdin) {
        Ok(c) => c,
        Err(e) => return failure(&e, None),
    };
    let logger = Logger::new(info.name, conf.log_file.clone(), conf.log_level.as_deref());
    let err_version = conf.version().ok().map(SpecVersion::as_str);
    let result =
        prepare(verb, env, stdin, conf, logger.clone()).and_then(|call| dispatch(plugin, &call));
    let outcome = match result {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
            error: None,
        },
        Err(e) => failure(&e, err_version),
    };
    if logger.enabled(Level::Error) {
        log_call(&logger, verb, env, stdin, &outcome, started);
    }
    outcome
}

fn log_call(
    logger: &Logger,
    verb: Verb,
    env: &CniEnv,
    stdin: &[u8],
    o: &Outcome,
    started: Instant,
) {
    let mut line = format!(
        "verb={verb} container={} ifname={} netns={}",
        quote(env.container_id.as_deref().unwrap_or("")),
        quote(env.ifname.as_deref().unwrap_or("")),
        quote(env.netns.as_deref().unwrap_or("")),
    );
    match &o.error {
        None => line.push_str(" outcome=ok"),
        Some(e) => line.push_str(&format!(
            " outcome=error code={} error={}",
            e.code,
            quote(&e.to_string())
        )),
    }
    line.push_str(&format!(
        " duration_ms={:.3}",
        started.elapsed().as_secs_f64() * 1e3
    ));
    if logger.enabled(Level::Debug) {
        line.push_str(&format!(
            " stdin={} stdout={}",
            quote(&String::from_utf8_lossy(stdin)),
            quote(o.stdout.trim_end())
        ));
    }
    logger.line(
        if o.error.is_some() {
            Level::Error
        } else {
            Level::Info
        },
        &line,
    );
}

/// VERSION: answers in the config's version when stdin names a supported one.
fn version_info(stdin: &[u8]) -> Outcome {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
        .and_then(|v| SpecVersion::parse(&v).ok())
        .unwrap_or(SpecVersion::LATEST);
    let body = serde_json::json!({
        "cniVersion": asked.as_str(),
        "supportedVersions": SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    });
    Outcome {
        stdout: format!("{body}\n"),
        exit_code: 0,
        error: None,
    }
}

/// The Call [`execute`] would hand the plugin for `verb`, with logging off, and nothing run:
/// for tools that feed an input through a plugin's real parsers (the fuzz targets in fuzz/).
pub fn parse_call(verb: Verb, env: &CniEnv, stdin: &[u8]) -> Result<Call> {
    let conf = NetConf::from_slice(stdin)?;
    prepare(verb, env, stdin, conf, Logger::new("", None, None))
}

/// The Call of an ADD of `stdin` for container `lint`, interface `eth0` and no netns, as the
/// skeleton builds it, reading no environment and logging nothing: how a tool (`rcni lint`)
/// feeds a config through plugin `plugin`'s own parser.
pub fn lint_call(plugin: &'static str, stdin: &[u8]) -> Result<Call> {
    let conf = NetConf::from_slice(stdin)?;
    let version = conf.version()?;
    let raw = serde_json::from_slice(stdin).map_err(|e| CniError::decode(e.to_string()))?;
    Ok(Call {
        verb: Verb::Add,
        container_id: "lint".into(),
        netns: None,
        ifname: "eth0".into(),
        args: CniArgs::default(),
        path: Vec::new(),
        raw_args: String::new(),
        stdin: stdin.to_vec(),
        raw,
        conf,
        version,
        logger: Logger::new(plugin, None, None),
    })
}

/// Checks the environment for `verb` as the upstream skel does and builds the Call.
fn prepare(verb: Verb, env: &CniEnv, stdin: &[u8], conf: NetConf, logger: Logger) -> Result<Call> {
    let version = conf.version()?;
    if !version.supports(verb) {
        let needs = match verb {
            Verb::Check => "0.4.0",
            _ => "1.1.0",
        };
        return Err(CniError::new(
            INCOMPATIBLE_CNI_VERSION,
            format!("CNI_COMMAND={verb} needs cniVersion {needs} or later, but the config has cniVersion {version}"),
        ));
    }
    let (need_id, need_netns, need_ifname) = match verb {
        Verb::Add | Verb::Check => (true, true, true),
        Verb::Del => (true, false, true),
        _ => (false, false, false),
    };
    let non_empty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(String::from);
    let mut missing = Vec::new();
    let container_id = non_empty(&env.container_id);
    let netns = non_empty(&env.netns);
    let ifname = non_empty(&env.ifname);
    let path = non_empty(&env.path);
    if need_id && container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if need_netns && netns.is_none() {
        missing.push("CNI_NETNS");
    }
    if need_ifname && ifname.is_none() {
        missing.push("CNI_IFNAME");
    }
    if path.is_none() {
        missing.push("CNI_PATH");
    }
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!(
            "required environment variables missing for {verb}: {}",
            missing.join(", ")
        )));
    }
    if let Some(id) = &container_id {
        validate::container_id(id)?;
    }
    if let Some(name) = &ifname {
        validate::ifname(name)?;
    }
    let raw_args = env.args.clone().unwrap_or_default();
    let args = CniArgs::parse(&raw_args)?;
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| CniError::decode(e.to_string()))?;
    Ok(Call {
        verb,
        container_id: container_id.unwrap_or_default(),
        netns: netns.map(PathBuf::from),
        ifname: ifname.unwrap_or_default(),
        args,
        path: std::env::split_paths(&path.unwrap_or_default())
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        raw_args,
        stdin: stdin.to_vec(),
        raw,
        conf,
        version,
        logger,
    })
}

fn dispatch<P: Plugin>(plugin: &P, call: &Call) -> Result<String> {
    match call.verb {
        Verb::Add => {
            let result = plugin.add(call)?;
            Ok(format!("{}\n", result.to_value(call.version)?))
        }
        Verb::Del => plugin.del(call).map(|_| String::new()),
        Verb::Check => plugin.check(call).map(|_| String::new()),
        Verb::Gc => plugin.gc(call).map(|_| String::new()),
        Verb::Status => plugin.status(call).map(|_| String::new()),
        Verb::Version => unreachable!("answered before dispatch"),
    }
}

#[cfg(test)]
mod tests;
