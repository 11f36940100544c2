//! The keys each of our plugins reads (docs/configuration.md), so a key nobody reads (a typo:
//! `hairpinmode`, `nonMasqueradeCIDR`) is reported with the nearest known key. The plugins
//! themselves keep unknown keys silently, as the spec asks.

use serde_json::{Map, Value};

/// Keys any plugin entry of a conflist may carry: the spec's, libcni's and rcni's logging.
pub const COMMON: &[&str] = &[
    "type",
    "name",
    "cniVersion",
    "capabilities",
    "ipam",
    "dns",
    "args",
    "runtimeConfig",
    "prevResult",
    "logFile",
    "logLevel",
];

/// Top-level keys of a conflist (libcni's NetworkConfFromBytes).
pub const CONFLIST: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "plugins",
    "disableCheck",
    "disableGC",
    "loadOnlyInlinedPlugins",
];

pub const RBRIDGE: &[&str] = &[
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "forceAddress",
    "ipMasq",
    "ipMasqBackend",
    "ipMasqStateDir",
    "stateDir",
    "mtu",
    "hairpinMode",
    "promiscMode",
    "vlan",
    "vlanTrunk",
    "preserveDefaultVlan",
    "macspoofchk",
    "enabledad",
    "disableContainerInterface",
    "portIsolation",
];

pub const RMASQ: &[&str] = &[
    "nonMasqueradeCIDRs",
    "masqLinkLocal",
    "backend",
    "allowForward",
    "stateDir",
];

/// rroutes matches its keys without regard to case, as route-override (Go) does.
pub const RROUTES: &[&str] = &[
    "flushRoutes",
    "flushGateway",
    "delRoutes",
    "addRoutes",
    "hostRoutes",
    "routeProtocol",
    "skipCheck",
];

/// The `ipam` section of rhost-local (upstream host-local's keys).
pub const RHOST_LOCAL: &[&str] = &[
    "type",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "ranges",
    "routes",
    "dataDir",
    "resolvConf",
];

/// One range of `ipam.ranges`.
pub const RANGE: &[&str] = &["subnet", "rangeStart", "rangeEnd", "gateway"];

/// A key of `obj` that none of `known` is, with the path it is at (`at` + `.key`) and the
/// nearest known key when one is close enough to be a typo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub path: String,
    pub key: String,
    pub suggestion: Option<&'static str>,
}

/// The keys of `obj` not in `known` (compared exactly, or ignoring ASCII case when
/// `ignore_case`, as Go's JSON decoding does).
pub fn unknown_keys(
    obj: &Map<String, Value>,
    at: &str,
    known: &[&'static str],
    ignore_case: bool,
) -> Vec<Unknown> {
    obj.keys()
        .filter(|k| {
            !known
                .iter()
                .any(|n| *n == k.as_str() || (ignore_case && n.eq_ignore_ascii_case(k)))
        })
        .map(|k| Unknown {
            path: join(at, k),
            key: k.clone(),
            suggestion: did_you_mean(k, known),
        })
        .collect()
}

/// `at.key`, or `key` at the top.
pub fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// The known word nearest to `word` (edit distance, ignoring case), if it is near enough to be
/// a typo of it: at most a third of the longer one's length in edits, and at least one.
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&w, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len().max(w.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(here)
            };
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edit_distance() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn suggestions_are_near_misses_only() {
        assert_eq!(did_you_mean("hairpinmode", RBRIDGE), Some("hairpinMode"));
        assert_eq!(
            did_you_mean("nonMasqueradeCIDR", RMASQ),
            Some("nonMasqueradeCIDRs")
        );
        assert_eq!(did_you_mean("isGatway", RBRIDGE), Some("isGateway"));
        assert_eq!(did_you_mean("snat", RBRIDGE), None);
        assert_eq!(did_you_mean("x", RMASQ), None);
    }

    #[test]
    fn unknown_keys_with_paths() {
        let obj = json!({"type": "rroutes", "FlushRoutes": true, "hostroute": []});
        let obj = obj.as_object().unwrap();
        let mut known = COMMON.to_vec();
        known.extend(RROUTES);
        let u = unknown_keys(obj, "plugins[2]", &known, true);
        assert_eq!(
            u,
            [Unknown {
                path: "plugins[2].hostroute".into(),
                key: "hostroute".into(),
                suggestion: Some("hostRoutes"),
            }]
        );
        assert_eq!(unknown_keys(obj, "", &known, false).len(), 2);
    }
}
