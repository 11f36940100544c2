//! A file as a runtime reads it: JSON, then a conflist (`.conflist`, or any file with
//! `plugins`) or a single plugin config (`.conf`, `.json`), which libcni turns into a list of
//! one. The list-level keys are checked here: `name`, the versions, the flags, `plugins`.

use serde_json::{Map, Value};

use super::keys::{self, CONFLIST};
use super::report::Finding;
use super::versions::{self, Versions};

/// A network config, read as far as it could be.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub versions: Option<Versions>,
    /// Each plugin entry with its JSON path: `plugins[i]`, or "" for a single config.
    pub plugins: Vec<(String, Map<String, Value>)>,
}

impl Network {
    /// The path of a key in plugin entry `at`.
    pub fn path(at: &str, key: &str) -> String {
        keys::join(at, key)
    }
}

/// Parses `bytes` of `file`; None (with the findings) when it is not a network config at all.
pub fn load(file: &str, bytes: &[u8], out: &mut Vec<Finding>) -> Option<Network> {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            let mut f = Finding::error("", format!("not valid JSON: {e}"));
            if e.line() > 0 {
                f.line_col = Some((e.line(), e.column()));
            }
            out.push(f);
            return None;
        }
    };
    let Value::Object(obj) = value else {
        out.push(Finding::error(
            "",
            "a network config is a JSON object ({...}), not a list or a value",
        ));
        return None;
    };
    let ext = std::path::Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let is_list = match ext {
        "conflist" => true,
        "conf" | "json" => {
            if obj.contains_key("plugins") && !obj.contains_key("type") {
                out.push(Finding::error(
                    "",
                    format!("this is a conflist (it has \"plugins\") in a .{ext} file, which runtimes read as a single plugin config: rename it to .conflist"),
                ));
                true
            } else {
                false
            }
        }
        // Standard input or another name: by content.
        _ => obj.contains_key("plugins"),
    };
    let name = check_name(&obj, out);
    if is_list {
        Some(load_list(obj, name, out))
    } else {
        let versions = versions::of_conf(&obj, out);
        Some(Network {
            name,
            versions,
            plugins: vec![(String::new(), obj)],
        })
    }
}

/// libcni: `name` must be there and a string; ADD refuses a name that is empty or not
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (it names files and rule comments).
fn check_name(obj: &Map<String, Value>, out: &mut Vec<Finding>) -> String {
    match obj.get("name") {
        None => {
            out.push(Finding::error(
                "name",
                "missing: every network needs a name (letters, digits, '_', '.', '-'), e.g. \"pods\"",
            ));
            String::new()
        }
        Some(Value::String(s)) => {
            if let Err(e) = cni_types::validate::network_name(s) {
                out.push(Finding::error("name", e.msg));
            }
            s.clone()
        }
        Some(other) => {
            out.push(Finding::error(
                "name",
                format!("must be a string, not {other}"),
            ));
            String::new()
        }
    }
}

fn load_list(mut obj: Map<String, Value>, name: String, out: &mut Vec<Finding>) -> Network {
    let versions = versions::of_list(&obj, out);
    for key in ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"] {
        match obj.get(key) {
            None | Some(Value::Bool(_)) => {}
            Some(Value::String(s)) if matches!(s.to_lowercase().as_str(), "true" | "false") => {}
            Some(other) => out.push(Finding::error(
                key,
                format!(
                    "{other} is not a boolean: use true or false (libcni refuses the conflist)"
                ),
            )),
        }
    }
    for u in keys::unknown_keys(&obj, "", CONFLIST, false) {
        out.push(unknown_list_key(&u));
    }
    let mut plugins = Vec::new();
    match obj.remove("plugins") {
        None => out.push(Finding::error(
            "plugins",
            "missing: a conflist lists its plugins in \"plugins\": [{\"type\": ...}, ...]",
        )),
        Some(Value::Array(items)) if items.is_empty() => out.push(Finding::error(
            "plugins",
            "is empty: add at least one plugin, e.g. {\"type\": \"rbridge\", ...}",
        )),
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("plugins[{i}]");
                match item {
                    Value::Object(m) => plugins.push((at, m)),
                    other => out.push(Finding::error(
                        at,
                        format!("a plugin is a JSON object with a \"type\", not {other}"),
                    )),
                }
            }
        }
        Some(other) => out.push(Finding::error(
            "plugins",
            format!("must be a list of plugin objects, not {other}"),
        )),
    }
    Network {
        name,
        versions,
        plugins,
    }
}

fn unknown_list_key(u: &keys::Unknown) -> Finding {
    let hint = match u.suggestion {
        Some(s) => format!("; did you mean {s:?}?"),
        None => String::new(),
    };
    Finding::warning(
        u.path.clone(),
        format!("not a conflist key, ignored by runtimes{hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(file: &str, text: &str) -> (Option<Network>, Vec<Finding>) {
        let mut out = Vec::new();
        let n = load(file, text.as_bytes(), &mut out);
        (n, out)
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let (n, f) = load_str("x.conflist", "{\n  \"name\": \"a\",\n  \"plugins\": [\n}\n");
        assert!(n.is_none());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].line_col, Some((4, 1)));
        assert!(
            f[0].message.starts_with("not valid JSON"),
            "{}",
            f[0].message
        );
        let (_, f) = load_str("x.conflist", "[1]");
        assert!(f[0].message.contains("JSON object"));
    }

    #[test]
    fn names_and_list_keys() {
        let (n, f) = load_str(
            "x.conflist",
            r#"{"cniVersion":"1.0.0","name":"bad name","plugin":[],"disableCheck":"maybe"}"#,
        );
        let n = n.unwrap();
        assert!(n.plugins.is_empty());
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["name", "disableCheck", "plugin", "plugins"],
            "{f:?}"
        );
        assert!(
            f[0].message.contains("invalid characters"),
            "{}",
            f[0].message
        );
        assert!(
            f[2].message.contains("did you mean \"plugins\""),
            "{}",
            f[2].message
        );
        let (_, f) = load_str(
            "x.conflist",
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}, 3]}"#,
        );
        assert_eq!(f[0].path, "name");
        assert_eq!(f[1].path, "plugins[1]");
    }

    #[test]
    fn single_configs_and_misnamed_lists() {
        let (n, f) = load_str(
            "x.conf",
            r#"{"cniVersion":"1.0.0","name":"a","type":"rbridge"}"#,
        );
        assert!(f.is_empty(), "{f:?}");
        let n = n.unwrap();
        assert_eq!(n.plugins.len(), 1);
        assert_eq!(n.plugins[0].0, "");
        let (n, f) = load_str(
            "x.conf",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"rbridge"}]}"#,
        );
        assert!(f[0].message.contains("rename it to .conflist"), "{f:?}");
        assert_eq!(n.unwrap().plugins[0].0, "plugins[0]");
        let (n, _) = load_str(
            "-",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"rbridge"}]}"#,
        );
        assert_eq!(n.unwrap().plugins.len(), 1);
    }
}
