//! What the fuzz targets share: an input read as a plugin call (CNI_ARGS and stdin) or as a
//! directory of files, and a scratch directory per process.

use std::fs;
use std::path::{Component, Path, PathBuf};

use cni_plugin::skel::{parse_call, CniEnv};
use cni_plugin::Call;
use cni_types::Verb;
use serde_json::Value;

/// A plugin call's input: CNI_ARGS before the first NUL byte when there is one, then stdin
/// (a seed without NUL is a config file as it is).
pub fn split_args(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    }
}

/// The Call the skeleton hands the plugin for `verb` and this input, with the environment a
/// runtime sets; None when the skeleton refuses the input before the plugin sees it.
pub fn call(verb: Verb, data: &[u8]) -> Option<Call> {
    let (args, stdin) = split_args(data);
    let env = CniEnv {
        command: Some(verb.to_string()),
        container_id: Some("fuzz-0123456789abcdef".into()),
        netns: Some("/var/run/netns/fuzz".into()),
        ifname: Some("eth0".into()),
        args: Some(args),
        path: Some("/opt/cni/bin".into()),
    };
    parse_call(verb, &env, stdin).ok()
}

/// The files of a directory written as one input: sections opened by a line `--- <path>`
/// (relative, without `..`); bytes before the first such line are the file `default`. A
/// section's content ends before the newline that precedes the next header.
pub fn files<'a>(data: &'a [u8], default: &str) -> Vec<(PathBuf, &'a [u8])> {
    const HEADER: &[u8] = b"--- ";
    let mut starts: Vec<usize> = Vec::new();
    for i in 0..data.len() {
        if data[i..].starts_with(HEADER) && (i == 0 || data[i - 1] == b'\n') {
            starts.push(i);
        }
    }
    let mut out = Vec::new();
    let first = starts.first().copied().unwrap_or(data.len());
    if first > 0 {
        out.push((PathBuf::from(default), trim_sep(&data[..first])));
    }
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(data.len());
        let section = &data[s + HEADER.len()..end];
        let (name, body) = match section.iter().position(|b| *b == b'\n') {
            Some(i) => (&section[..i], &section[i + 1..]),
            None => (section, &section[section.len()..]),
        };
        let body = if n + 1 < starts.len() {
            trim_sep(body)
        } else {
            body
        };
        if let Some(path) = std::str::from_utf8(name).ok().and_then(safe_path) {
            out.push((path, body));
        }
    }
    out
}

fn trim_sep(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}

/// A relative path of at most 5 plain components, or None.
fn safe_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let plain = p.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && !name.is_empty() && !name.contains('\0') && p.components().count() <= 5)
        .then(|| p.to_path_buf())
}

/// Writes `files` under `root`; a file whose place is taken (by a directory, say) is skipped.
pub fn write_files(root: &Path, files: &[(PathBuf, &[u8])]) {
    for (path, body) in files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let _ = fs::write(&path, body);
    }
}

/// A directory of this process for target `name`, made on the first call and kept.
pub fn scratch_once(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| scratch(name)).clone()
}

/// An empty directory of this process for target `name` (in /dev/shm when there is one: the
/// store targets write files on every run).
pub fn scratch(name: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("rcni-fuzz-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `v` with its non-integer numbers blanked, for comparing JSON that went through text:
/// serde_json's float parsing is not exact in the last bit (its `float_roundtrip` feature, off
/// in the plugins, would make it so).
pub fn no_floats(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Number(n) if !n.is_i64() && !n.is_u64() => *v = Value::Null,
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}
