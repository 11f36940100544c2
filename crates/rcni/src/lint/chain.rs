//! The order of a chain. A chained plugin works on the result of the plugins before it
//! (prevResult): rmasq needs the pod's addresses, rroutes its interface, portmap both. So an
//! interface-creating plugin must come first.

use serde_json::Value;

use cni_types::SpecVersion;

use super::load::Network;
use super::report::Finding;

/// Plugins that create the pod's interface (and so start a chain's result).
pub const MAIN: &[&str] = &[
    "rbridge",
    "bridge",
    "ptp",
    "macvlan",
    "ipvlan",
    "host-device",
    "vlan",
    "dummy",
    "tap",
    "loopback",
    "ib-sriov",
    "sriov",
];

/// Plugins that only work on a prevResult.
pub const CHAINED: &[&str] = &[
    "rmasq",
    "rroutes",
    "portmap",
    "tuning",
    "bandwidth",
    "firewall",
    "sbr",
    "vrf",
    "route-override",
    "tc-redirect-tap",
];

fn type_of(entry: &serde_json::Map<String, Value>) -> &str {
    entry.get("type").and_then(Value::as_str).unwrap_or("")
}

pub fn check(net: &Network, out: &mut Vec<Finding>) {
    let types: Vec<&str> = net.plugins.iter().map(|(_, e)| type_of(e)).collect();
    let mut has_chained = false;
    for (i, (at, _)) in net.plugins.iter().enumerate() {
        if !CHAINED.contains(&types[i]) {
            continue;
        }
        has_chained = true;
        // An unknown type before it may well be a main plugin (a third-party CNI).
        if types[..i]
            .iter()
            .any(|t| !t.is_empty() && !CHAINED.contains(t))
        {
            continue;
        }
        let fix = match types[i + 1..].iter().position(|t| MAIN.contains(t)) {
            Some(k) => format!(
                "move it after {} ({})",
                net.plugins[i + 1 + k].0,
                types[i + 1 + k]
            ),
            None => "put one before it".to_string(),
        };
        let what = if i == 0 {
            "it is first in the chain"
        } else {
            "only chained plugins come before it"
        };
        out.push(Finding::error(
            Network::path(at, "type"),
            format!(
                "{} is a chained plugin: it needs the result (prevResult) of a plugin that creates the pod's interface, such as {}, but {what}: {fix}",
                types[i],
                MAIN[..6].join(", ")
            ),
        ));
    }
    if has_chained {
        if let Some(v) = net.versions.as_ref().map(|v| v.base) {
            if v < SpecVersion::V0_3_0 {
                out.push(Finding::warning(
                    "cniVersion",
                    format!(
                        "{v} predates chained plugins and prevResult (0.3.0): use 0.3.1 or later"
                    ),
                ));
            }
        }
    }
    double_masquerade(net, &types, out);
}

/// rbridge's `ipMasq` and an rmasq entry both masquerade the same pods through the same
/// library, each undoing the other's state on DEL.
fn double_masquerade(net: &Network, types: &[&str], out: &mut Vec<Finding>) {
    if !types.contains(&"rmasq") {
        return;
    }
    for (i, (at, entry)) in net.plugins.iter().enumerate() {
        let on = match entry.get("ipMasq") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True")
            }
            _ => false,
        };
        if types[i] == "rbridge" && on {
            out.push(Finding::warning(
                Network::path(at, "ipMasq"),
                "rbridge masquerades these pods and so does the chain's rmasq: set ipMasq to false and keep rmasq",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(plugins: Value) -> Vec<Finding> {
        let text = json!({"cniVersion": "1.0.0", "name": "n", "plugins": plugins}).to_string();
        let mut out = Vec::new();
        let net = super::super::load::load("x.conflist", text.as_bytes(), &mut out).unwrap();
        check(&net, &mut out);
        out
    }

    #[test]
    fn chained_plugins_need_a_main_plugin_first() {
        assert!(
            findings(json!([{"type": "rbridge"}, {"type": "rmasq"}, {"type": "portmap"}]))
                .is_empty()
        );
        let f = findings(json!([{"type": "rmasq"}, {"type": "rbridge"}]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "plugins[0].type");
        assert!(
            f[0].message
                .contains("first in the chain: move it after plugins[1] (rbridge)"),
            "{}",
            f[0].message
        );
        let f = findings(json!([{"type": "portmap"}, {"type": "rroutes"}]));
        assert_eq!(f.len(), 2);
        assert!(
            f[1].message
                .contains("only chained plugins come before it: put one before it"),
            "{}",
            f[1].message
        );
        // A third-party main plugin is not known, and not taken for a chained one.
        assert!(findings(json!([{"type": "calico"}, {"type": "rmasq"}])).is_empty());
    }

    #[test]
    fn ip_masq_and_rmasq_together() {
        let f = findings(json!([{"type": "rbridge", "ipMasq": true}, {"type": "rmasq"}]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "plugins[0].ipMasq");
        assert!(findings(json!([{"type": "rbridge", "ipMasq": true}])).is_empty());
    }
}
