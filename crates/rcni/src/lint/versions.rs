//! `cniVersion` and `cniVersions`, as runtimes read them. libcni before 1.2 (containerd 1.6,
//! podman 4) uses `cniVersion` only; libcni 1.2 and later take the highest of `cniVersions` and
//! `cniVersion` it implements (up to 1.1.0), refuse the list when an entry is not a version,
//! and skip the higher ones. Every plugin is called with the version chosen, so each must
//! support every version a runtime may choose.

use serde_json::{Map, Value};

use cni_types::version::supported_list;
use cni_types::SpecVersion;

use super::report::Finding;

/// The highest spec version libcni implements.
const LIBCNI_CURRENT: (i64, i64, i64) = (1, 1, 0);

/// The versions runtimes call the plugins with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// `cniVersion` (what every runtime uses without `cniVersions`, and older libcni always).
    pub base: SpecVersion,
    /// What libcni 1.2+ picks from `cniVersions`, when that differs from `base`.
    pub negotiated: Option<SpecVersion>,
}

impl Versions {
    pub fn all(&self) -> Vec<SpecVersion> {
        let mut v = vec![self.base];
        v.extend(self.negotiated);
        v
    }
}

/// libcni's ParseVersion: up to three dot-separated integers; "" is 0.1.0.
fn parse_semver(v: &str) -> Option<(i64, i64, i64)> {
    if v.is_empty() {
        return Some((0, 1, 0));
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() > 3 {
        return None;
    }
    let mut n = [0i64; 3];
    for (i, p) in parts.iter().enumerate() {
        n[i] = p.parse().ok()?;
    }
    Some((n[0], n[1], n[2]))
}

/// `cniVersion` of a config or conflist: known, or the error saying which to use.
fn base_version(obj: &Map<String, Value>, out: &mut Vec<Finding>) -> Option<SpecVersion> {
    match obj.get("cniVersion") {
        None => {
            out.push(Finding::warning(
                "cniVersion",
                "missing: runtimes and plugins take it as 0.1.0, which has no CHECK and no prevResult for chained plugins; set \"cniVersion\": \"1.0.0\"",
            ));
            Some(SpecVersion::V0_1_0)
        }
        Some(Value::String(s)) => match SpecVersion::parse(s) {
            Ok(v) => Some(v),
            Err(_) => {
                out.push(Finding::error(
                    "cniVersion",
                    format!(
                        "{s:?} is not a CNI spec version: use one of {}",
                        supported_list()
                    ),
                ));
                None
            }
        },
        Some(other) => {
            out.push(Finding::error(
                "cniVersion",
                format!("must be a string such as \"1.0.0\", not {other}"),
            ));
            None
        }
    }
}

/// The versions of a conflist, with findings for what runtimes would refuse or skip.
pub fn of_list(obj: &Map<String, Value>, out: &mut Vec<Finding>) -> Option<Versions> {
    let base = base_version(obj, out);
    let Some(raw) = obj.get("cniVersions") else {
        return base.map(|base| Versions {
            base,
            negotiated: None,
        });
    };
    let Some(items) = raw.as_array() else {
        out.push(Finding::error(
            "cniVersions",
            format!(
                "must be a list of version strings, not {raw}: libcni 1.2+ refuses the conflist"
            ),
        ));
        return None;
    };
    let mut candidates: Vec<((i64, i64, i64), Option<SpecVersion>)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = format!("cniVersions[{i}]");
        let Some(s) = item.as_str() else {
            out.push(Finding::error(
                path,
                format!("{item} is not a version string: libcni 1.2+ refuses the conflist"),
            ));
            ok = false;
            continue;
        };
        let Some(semver) = parse_semver(s).filter(|_| !s.is_empty()) else {
            out.push(Finding::error(
                path,
                format!(
                    "{s:?} is not a version: libcni 1.2+ refuses the conflist; use one of {}",
                    supported_list()
                ),
            ));
            ok = false;
            continue;
        };
        if semver > LIBCNI_CURRENT {
            out.push(Finding::warning(
                path,
                format!("{s:?} is later than any spec version runtimes implement (1.1.0): libcni skips it"),
            ));
            continue;
        }
        let known = SpecVersion::parse(s).ok();
        if known.is_none() {
            out.push(Finding::error(
                path,
                format!(
                    "{s:?} is not a CNI spec version: use one of {}",
                    supported_list()
                ),
            ));
            ok = false;
        }
        candidates.push((semver, known));
    }
    if let (Some(b), Some(s)) = (base, obj.get("cniVersion").and_then(Value::as_str)) {
        candidates.push((parse_semver(s).unwrap_or((0, 1, 0)), Some(b)));
    }
    let base = base?;
    if !ok {
        return None;
    }
    let negotiated = candidates
        .into_iter()
        .max_by_key(|(semver, _)| *semver)
        .and_then(|(_, v)| v)
        .filter(|v| *v != base);
    Some(Versions { base, negotiated })
}

/// The version of a single plugin config (`.conf`): `cniVersion` alone.
pub fn of_conf(obj: &Map<String, Value>, out: &mut Vec<Finding>) -> Option<Versions> {
    base_version(obj, out).map(|base| Versions {
        base,
        negotiated: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> (Option<Versions>, Vec<Finding>) {
        let mut out = Vec::new();
        let got = of_list(v.as_object().unwrap(), &mut out);
        (got, out)
    }

    #[test]
    fn negotiation_as_libcni_does_it() {
        let (v, f) = list(json!({"cniVersion": "1.0.0", "cniVersions": ["0.3.1", "1.1.0"]}));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(
            v.unwrap(),
            Versions {
                base: SpecVersion::V1_0_0,
                negotiated: Some(SpecVersion::V1_1_0)
            }
        );
        let (v, f) = list(json!({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "9.0.0"]}));
        assert_eq!(v.unwrap().negotiated, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "cniVersions[1]");
        assert!(f[0].message.contains("skips"), "{}", f[0].message);
    }

    #[test]
    fn bad_versions_are_errors_naming_the_entry() {
        let (v, f) = list(json!({"cniVersion": "0.5.0"}));
        assert!(v.is_none());
        assert_eq!(f[0].path, "cniVersion");
        assert!(f[0].message.contains("one of 0.1.0"), "{}", f[0].message);
        let (v, f) = list(json!({"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "one"]}));
        assert!(v.is_none());
        assert_eq!(f[0].path, "cniVersions[1]");
        let (_, f) = list(json!({"cniVersion": 1}));
        assert!(f[0].message.contains("string"), "{}", f[0].message);
        let (v, f) = list(json!({"name": "x"}));
        assert_eq!(v.unwrap().base, SpecVersion::V0_1_0);
        assert!(f[0].message.contains("0.1.0"), "{}", f[0].message);
    }
}
