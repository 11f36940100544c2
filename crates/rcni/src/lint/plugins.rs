//! Each plugin entry: its `type` (and `ipam.type`) found in the bin dirs and supporting every
//! version a runtime may call it with; our plugins' keys through their own parsers, as ADD
//! reads them; keys they do not read.

use serde_json::{Map, Value};

use cni_types::config::lookup_ci;
use cni_types::SpecVersion;

use super::bins::BinDirs;
use super::keys::{self, unknown_keys};
use super::load::Network;
use super::report::Finding;
use super::versions::Versions;

/// Checks the entry at `at` of `net`.
pub fn check(
    bins: &BinDirs,
    net: &Network,
    at: &str,
    entry: &Map<String, Value>,
    out: &mut Vec<Finding>,
) {
    let Some(plugin_type) = plugin_type(at, entry, out) else {
        return;
    };
    let type_path = Network::path(at, "type");
    check_binary(bins, net.versions.as_ref(), &type_path, &plugin_type, out);
    if let Some(caps) = entry.get("capabilities") {
        let ok = caps
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_boolean));
        if !ok {
            out.push(Finding::error(
                Network::path(at, "capabilities"),
                format!("must map capability names to true or false, e.g. {{\"portMappings\": true}}, not {caps} (libcni refuses it)"),
            ));
        }
    }
    let ipam_type = ipam_type(at, entry, out);
    if let Some(t) = &ipam_type {
        let path = Network::path(at, "ipam.type");
        check_binary(bins, net.versions.as_ref(), &path, t, out);
    }
    let Some(versions) = &net.versions else {
        return;
    };
    // The same refusal at both versions is reported once, at `cniVersion`.
    let mut seen: Vec<(&str, String)> = Vec::new();
    for v in versions.all() {
        let stdin = plugin_config(net, entry, v);
        let mut refusals: Vec<(&str, String)> = Vec::new();
        if let Some(msg) = ours(&plugin_type, &stdin) {
            refusals.push((plugin_type.as_str(), msg));
        }
        if ipam_type.as_deref() == Some("rhost-local") {
            if let Err(e) = rhost_local::parse_config(&stdin) {
                refusals.push(("rhost-local", e.msg));
            }
        }
        for r in refusals {
            if !seen.contains(&r) {
                let negotiated = (versions.negotiated == Some(v)).then_some(v);
                out.push(refused(r.0, at, entry, &r.1, negotiated));
                seen.push(r);
            }
        }
    }
    unknown(&plugin_type, ipam_type.as_deref(), at, entry, out);
}

/// `type`: a non-empty string without '/' (libcni's rules).
fn plugin_type(at: &str, entry: &Map<String, Value>, out: &mut Vec<Finding>) -> Option<String> {
    let path = Network::path(at, "type");
    match entry.get("type") {
        Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => Some(t.clone()),
        Some(Value::String(t)) if t.contains('/') => {
            out.push(Finding::error(
                path,
                format!(
                    "{t:?} is a path: the type names a binary in the bin dirs, e.g. \"rbridge\""
                ),
            ));
            None
        }
        None => {
            out.push(Finding::error(
                path,
                "missing: every plugin needs a \"type\", the name of its binary (e.g. \"rbridge\")",
            ));
            None
        }
        Some(other) => {
            out.push(Finding::error(
                path,
                format!("must be a plugin binary's name, not {other}"),
            ));
            None
        }
    }
}

/// `ipam.type` when the entry has an `ipam` section that names one.
fn ipam_type(at: &str, entry: &Map<String, Value>, out: &mut Vec<Finding>) -> Option<String> {
    let ipam = entry.get("ipam")?;
    let Some(obj) = ipam.as_object() else {
        out.push(Finding::error(
            Network::path(at, "ipam"),
            format!("must be an object such as {{\"type\": \"rhost-local\", ...}}, not {ipam}"),
        ));
        return None;
    };
    match obj.get("type") {
        None => None,
        Some(Value::String(t)) if t.is_empty() => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(other) => {
            out.push(Finding::error(
                Network::path(at, "ipam.type"),
                format!("must be an IPAM plugin's name, not {other}"),
            ));
            None
        }
    }
}

/// The binary is in the bin dirs and supports every version a runtime may call it with.
fn check_binary(
    bins: &BinDirs,
    versions: Option<&Versions>,
    path: &str,
    name: &str,
    out: &mut Vec<Finding>,
) {
    let Some(bin) = bins.find(name) else {
        let names = bins.names();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = match keys::did_you_mean(name, &refs) {
            Some(s) => format!("; did you mean {s:?}?"),
            None => String::new(),
        };
        out.push(Finding::error(
            path,
            format!(
                "plugin {name:?} not found in the bin dirs ({}): install it there, or fix the type{hint}",
                bins.describe()
            ),
        ));
        return;
    };
    let supported = match bins.versions(&bin) {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::error(
                path,
                format!("plugin {name:?} ({}): {e}", bin.display()),
            ));
            return;
        }
    };
    let Some(versions) = versions else {
        return;
    };
    let lists = |v: SpecVersion| supported.iter().any(|s| s == v.as_str());
    if !lists(versions.base) {
        out.push(Finding::error(
            path,
            format!(
                "plugin {name:?} ({}) does not support cniVersion {} (it supports {}): every call would fail; use a version it supports, or another build of it",
                bin.display(),
                versions.base,
                supported.join(", ")
            ),
        ));
    }
    if let Some(n) = versions.negotiated.filter(|v| !lists(*v)) {
        out.push(Finding::warning(
            path,
            format!(
                "plugin {name:?} ({}) does not support {n} (it supports {}), which runtimes on libcni 1.2 or later (containerd 2, CRI-O) pick from cniVersions: their calls would fail; drop {n} from cniVersions or install a {name} that supports it",
                bin.display(),
                supported.join(", ")
            ),
        ));
    }
}

/// The stdin the plugin gets (libcni's buildOneConfig): its entry, the list's name, the version.
pub(super) fn plugin_config(net: &Network, entry: &Map<String, Value>, v: SpecVersion) -> Vec<u8> {
    let mut conf = entry.clone();
    // A bad name is reported once, by `load`, not again by every plugin.
    let name = match cni_types::validate::network_name(&net.name) {
        Ok(()) => net.name.clone(),
        Err(_) => "lint".into(),
    };
    conf.insert("name".into(), Value::String(name));
    conf.insert("cniVersion".into(), Value::String(v.as_str().into()));
    serde_json::to_vec(&Value::Object(conf)).expect("JSON values serialize")
}

/// Our main and chained plugins, through their parsers: the refusal, if any.
fn ours(plugin_type: &str, stdin: &[u8]) -> Option<String> {
    let err = match plugin_type {
        "rbridge" => rbridge::parse_config(stdin).err(),
        "rmasq" => rmasq::parse_config(stdin).err(),
        "rroutes" => rroutes::parse_config(stdin).err(),
        _ => None,
    };
    err.map(|e| e.msg)
}

/// A plugin's refusal, at the JSON path its message names; `negotiated` when only the version
/// taken from `cniVersions` is refused.
fn refused(
    plugin: &str,
    at: &str,
    entry: &Map<String, Value>,
    msg: &str,
    negotiated: Option<SpecVersion>,
) -> Finding {
    let msg = msg.strip_prefix("invalid network config: ").unwrap_or(msg);
    let path = locate(entry, msg).map_or_else(|| at.to_string(), |p| Network::path(at, &p));
    let when = match negotiated {
        Some(v) => format!(" at cniVersion {v} (from cniVersions)"),
        None => String::new(),
    };
    Finding::error(path, format!("{plugin} refuses this config{when}: {msg}"))
}

/// The JSON path a plugin's message starts with (`ipam.ranges[0][1].rangeStart ...`,
/// `mtu: ...`), spelled as in the entry, when it leads to the entry's keys (its last key may
/// be missing: "missing field").
fn locate(entry: &Map<String, Value>, msg: &str) -> Option<String> {
    let token = msg.split_whitespace().next()?.trim_end_matches([':', ',']);
    let mut here = Value::Object(entry.clone());
    let mut spelled = String::new();
    let segments = split_path(token)?;
    let last = segments.len() - 1;
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            Segment::Key(k) => {
                let obj = here.as_object()?;
                let found = obj
                    .iter()
                    .find(|(name, _)| name.as_str() == k)
                    .or_else(|| obj.iter().find(|(name, _)| name.eq_ignore_ascii_case(&k)));
                match found {
                    Some((name, v)) => {
                        spelled = keys::join(&spelled, name);
                        here = v.clone();
                    }
                    None if i == last && i > 0 => {
                        spelled = keys::join(&spelled, &k);
                        break;
                    }
                    None => return None,
                }
            }
            Segment::Index(n) => {
                here = here.as_array()?.get(n)?.clone();
                spelled += &format!("[{n}]");
            }
        }
    }
    Some(spelled)
}

enum Segment {
    Key(String),
    Index(usize),
}

/// `a.b[0][1].c` into its segments; None when it is not a path.
fn split_path(s: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    for part in s.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        out.push(Segment::Key(key.to_string()));
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            out.push(Segment::Index(r[..end].parse().ok()?));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// Keys our plugins do not read: warnings with the nearest known key. Our plugins match keys
/// as Go does (exactly, else ignoring case), so a key differing only in case is read.
fn unknown(
    plugin_type: &str,
    ipam_type: Option<&str>,
    at: &str,
    entry: &Map<String, Value>,
    out: &mut Vec<Finding>,
) {
    let own: &[&'static str] = match plugin_type {
        "rbridge" => keys::RBRIDGE,
        "rmasq" => keys::RMASQ,
        "rroutes" => keys::RROUTES,
        _ => &[],
    };
    if !own.is_empty() {
        let mut known = keys::COMMON.to_vec();
        known.extend(own);
        for u in unknown_keys(entry, at, &known, true) {
            out.push(unread(plugin_type, &u));
        }
    }
    if ipam_type != Some("rhost-local") {
        return;
    }
    let Some(ipam) = lookup_ci(entry, "ipam").and_then(Value::as_object) else {
        return;
    };
    let ipam_at = Network::path(at, "ipam");
    for u in unknown_keys(ipam, &ipam_at, keys::RHOST_LOCAL, true) {
        out.push(unread("rhost-local", &u));
    }
    let sets = lookup_ci(ipam, "ranges").and_then(Value::as_array);
    for (i, set) in sets.into_iter().flatten().enumerate() {
        for (j, range) in set.as_array().into_iter().flatten().enumerate() {
            if let Some(r) = range.as_object() {
                let range_at = format!("{ipam_at}.ranges[{i}][{j}]");
                for u in unknown_keys(r, &range_at, keys::RANGE, true) {
                    out.push(unread("rhost-local", &u));
                }
            }
        }
    }
}

fn unread(plugin: &str, u: &keys::Unknown) -> Finding {
    let hint = match u.suggestion {
        Some(s) => format!("; did you mean {s:?}?"),
        None => String::new(),
    };
    Finding::warning(
        u.path.clone(),
        format!(
            "{plugin} does not read {:?}, so it has no effect{hint}",
            u.key
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_located_in_the_entry() {
        let e = json!({"type": "rbridge", "MTU": 5, "ipam": {"ranges": [[{"subnet": "x"}]]}});
        let e = e.as_object().unwrap();
        assert_eq!(
            locate(e, "ipam.ranges[0][0].subnet: bad").as_deref(),
            Some("ipam.ranges[0][0].subnet")
        );
        assert_eq!(
            locate(e, "ipam.ranges[0][0].gateway 1.2.3.4 is").as_deref(),
            Some("ipam.ranges[0][0].gateway")
        );
        assert_eq!(locate(e, "mtu 5 is out of range").as_deref(), Some("MTU"));
        assert_eq!(locate(e, "the network config has no").as_deref(), None);
        assert_eq!(locate(e, "ipam.ranges[3][0].subnet").as_deref(), None);
        assert_eq!(locate(e, "vlan and vlanTrunk").as_deref(), None);
    }
}
