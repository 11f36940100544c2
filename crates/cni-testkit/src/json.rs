//! Reading and shaping CNI JSON as tests need it: a result's addresses in any spec version, a
//! config with keys merged in, or with the `prevResult` a runtime sends with CHECK and DEL.

use serde_json::{json, Value};

/// `extra`'s top-level keys set on `into`, replacing what was there.
pub fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (k, v) in extra {
            into.insert(k, v);
        }
    }
}

/// `conf` with `prevResult` set, as a runtime sends CHECK and DEL.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// A 1.1.0 result of one interface `eth0` holding `cidrs` ("10.77.0.2/24"), as a main plugin
/// hands it to the chained plugins after it.
pub fn prev_result(cidrs: &[&str]) -> Value {
    let ips: Vec<Value> = cidrs
        .iter()
        .map(|a| json!({"address": a, "interface": 0}))
        .collect();
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": ips,
        "dns": {},
    })
}

/// The addresses of a result with their prefix ("10.22.0.2/24"), in any spec version: `ips` from
/// 0.3.0 on, `ip4`/`ip6` before.
pub fn cidrs(result: &Value) -> Vec<String> {
    let text = |v: &Value| {
        v.as_str()
            .expect("a result address is a string")
            .to_string()
    };
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        return ips.iter().map(|ip| text(&ip["address"])).collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result.get(*k))
        .map(|block| text(&block["ip"]))
        .collect()
}

/// Like [`cidrs`], the address alone ("10.22.0.2").
pub fn addresses(result: &Value) -> Vec<String> {
    cidrs(result).iter().map(|c| without_prefix(c)).collect()
}

/// The address part of a result address (`"10.22.0.2/24"` → `10.22.0.2`).
pub fn addr_of(cidr: &Value) -> String {
    without_prefix(cidr.as_str().expect("a result address is a string"))
}

fn without_prefix(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_result_shape() {
        let v1 = json!({"ips": [{"address": "10.0.0.2/24"}, {"address": "fd00::2/64"}]});
        assert_eq!(cidrs(&v1), ["10.0.0.2/24", "fd00::2/64"]);
        assert_eq!(addresses(&v1), ["10.0.0.2", "fd00::2"]);
        let v020 = json!({"ip4": {"ip": "10.0.0.3/24"}, "ip6": {"ip": "fd00::3/64"}});
        assert_eq!(addresses(&v020), ["10.0.0.3", "fd00::3"]);
        assert!(addresses(&json!({})).is_empty());
        assert_eq!(addr_of(&json!("10.1.2.3/8")), "10.1.2.3");
    }

    #[test]
    fn merge_replaces_top_level_keys_and_with_prev_sets_prev_result() {
        let mut c = json!({"name": "a", "mtu": 1});
        merge(&mut c, json!({"mtu": 2, "x": true}));
        assert_eq!(c, json!({"name": "a", "mtu": 2, "x": true}));
        let p = prev_result(&["10.0.0.2/24"]);
        assert_eq!(
            with_prev(&c, &p)["prevResult"]["ips"][0]["address"],
            "10.0.0.2/24"
        );
        assert!(
            c.get("prevResult").is_none(),
            "the original is left as it was"
        );
    }
}
