//! Results: one in-memory type (the 1.1.0 superset) and its wire form in every spec version.
//!
//! Conversion follows libcni: up from 0.1.0/0.2.0 the `ip4`/`ip6` blocks become `ips` and their
//! routes are concatenated; down to 0.2.0 only the first IPv4 and first IPv6 address survive and
//! each route goes with the block of its family. 0.3.x/0.4.0 add `ips[].version`; fields new in
//! 1.1.0 are dropped when writing an older version, since that schema has no place for them.
//! Keys we do not know are kept, so a chained plugin passes them on untouched.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, Result, DECODING_FAILURE};
use crate::version::SpecVersion;

type Extra = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Always written (as `{}` when empty), as upstream plugins do.
    #[serde(default)]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    /// 1.1.0
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// The host address with its prefix, e.g. 10.1.0.5/16.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

impl IpConfig {
    pub fn new(address: IpNet, gateway: Option<IpAddr>) -> IpConfig {
        IpConfig {
            interface: None,
            address,
            gateway,
            extra: Extra::new(),
        }
    }

    pub fn is_v4(&self) -> bool {
        self.address.addr().is_ipv4()
    }
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
            extra: Extra::new(),
        }
    }

    pub fn is_v4(&self) -> bool {
        self.dst.addr().is_ipv4()
    }
}

impl Interface {
    pub fn new(
        name: impl Into<String>,
        mac: impl Into<String>,
        sandbox: impl Into<String>,
    ) -> Self {
        Interface {
            name: name.into(),
            mac: mac.into(),
            sandbox: sandbox.into(),
            ..Default::default()
        }
    }
}

/// The 0.1.0/0.2.0 shape.
#[derive(Debug, Serialize, Deserialize)]
struct LegacyResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<LegacyIpConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<LegacyIpConfig>,
    #[serde(default)]
    dns: Dns,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Serialize, Deserialize)]
struct LegacyIpConfig {
    ip: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<LegacyRoute>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LegacyRoute {
    dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

/// The top-level keys of each wire shape. An unknown key kept from a result read in the other
/// shape (a 0.2.0 result's `ips`, say) is dropped when writing a shape that has a field by that
/// name: it would stand in for that field, or (unparsable) make the result unreadable.
const CURRENT_KEYS: [&str; 5] = ["cniVersion", "interfaces", "ips", "routes", "dns"];
const LEGACY_KEYS: [&str; 4] = ["cniVersion", "ip4", "ip6", "dns"];

fn without_keys(extra: &Extra, keys: &[&str]) -> Extra {
    let mut extra = extra.clone();
    extra.retain(|k, _| !keys.contains(&k.as_str()));
    extra
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(DECODING_FAILURE, format!("cannot decode {what}: {e}"))
}

impl CniResult {
    /// Decodes a result. Its own `cniVersion` decides the shape when present (a delegate may
    /// answer in another version than the config's); `version` is used when it is absent.
    pub fn from_value(value: &Value, version: SpecVersion) -> Result<CniResult> {
        let Value::Object(obj) = value else {
            return Err(decode_err("result", "not a JSON object"));
        };
        let mut obj = obj.clone();
        let version = match obj.remove("cniVersion") {
            Some(Value::String(s)) => SpecVersion::parse(&s)?,
            Some(other) => {
                return Err(decode_err(
                    "result",
                    format!("cniVersion {other} is not a string"),
                ))
            }
            None => version,
        };
        if version.is_legacy() {
            let legacy: LegacyResult = serde_json::from_value(Value::Object(obj))
                .map_err(|e| decode_err(&format!("{version} result"), e))?;
            return Ok(legacy.into_current());
        }
        let mut result: CniResult = serde_json::from_value(Value::Object(obj))
            .map_err(|e| decode_err(&format!("{version} result"), e))?;
        for ip in &mut result.ips {
            // `version` is derived from the address; never carry a stale copy along.
            ip.extra.remove("version");
        }
        Ok(result)
    }

    pub fn from_slice(bytes: &[u8], version: SpecVersion) -> Result<CniResult> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| decode_err("result", e))?;
        CniResult::from_value(&value, version)
    }

    /// The result's wire form in `version`, `cniVersion` first.
    pub fn to_value(&self, version: SpecVersion) -> Result<Value> {
        let body = if version.is_legacy() {
            serde_json::to_value(self.to_legacy()?)
        } else if self
            .extra
            .keys()
            .any(|k| CURRENT_KEYS.contains(&k.as_str()))
        {
            serde_json::to_value(CniResult {
                extra: without_keys(&self.extra, &CURRENT_KEYS),
                ..self.clone()
            })
        } else {
            serde_json::to_value(self)
        }
        .map_err(|e| CniError::new(DECODING_FAILURE, format!("cannot encode result: {e}")))?;
        let Value::Object(mut body) = body else {
            unreachable!("results serialise to objects")
        };
        if !version.is_legacy() {
            shape_for(&mut body, version);
        }
        let mut out = Map::with_capacity(body.len() + 1);
        out.insert("cniVersion".into(), Value::String(version.as_str().into()));
        out.extend(body);
        Ok(Value::Object(out))
    }

    /// Converts between versions through the wire form, as libcni's converters do.
    pub fn convert(&self, to: SpecVersion) -> Result<CniResult> {
        CniResult::from_value(&self.to_value(to)?, to)
    }

    fn to_legacy(&self) -> Result<LegacyResult> {
        let first = |v4: bool| {
            self.ips
                .iter()
                .find(|ip| ip.is_v4() == v4)
                .map(|ip| LegacyIpConfig {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: self
                        .routes
                        .iter()
                        .filter(|r| r.is_v4() == v4)
                        .map(|r| LegacyRoute {
                            dst: r.dst,
                            gw: r.gw,
                        })
                        .collect(),
                })
        };
        let (ip4, ip6) = (first(true), first(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::new(
                DECODING_FAILURE,
                "cannot convert result to cniVersion 0.2.0 or older: it has no IP address",
            ));
        }
        Ok(LegacyResult {
            ip4,
            ip6,
            dns: self.dns.clone(),
            extra: without_keys(&self.extra, &LEGACY_KEYS),
        })
    }

    /// Addresses of the interface at `index` (or with no interface index at all).
    pub fn ips_of(&self, index: usize) -> impl Iterator<Item = &IpConfig> {
        self.ips
            .iter()
            .filter(move |ip| ip.interface.is_none_or(|i| i == index))
    }
}

impl LegacyResult {
    fn into_current(self) -> CniResult {
        let mut result = CniResult {
            dns: self.dns,
            extra: self.extra,
            ..Default::default()
        };
        for block in [self.ip4, self.ip6].into_iter().flatten() {
            result.ips.push(IpConfig::new(block.ip, block.gateway));
            result
                .routes
                .extend(block.routes.into_iter().map(|r| Route::new(r.dst, r.gw)));
        }
        result
    }
}

/// Adjusts a 0.3.0+ wire object to `version`: adds `ips[].version` for 0.3.x/0.4.0 and drops
/// the 1.1.0-only interface and route fields below 1.1.0.
fn shape_for(body: &mut Map<String, Value>, version: SpecVersion) {
    if version.has_ip_version_field() {
        if let Some(Value::Array(ips)) = body.get_mut("ips") {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                let v4 = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .is_some_and(|a| !a.contains(':'));
                let mut shaped = Map::with_capacity(ip.len() + 1);
                shaped.insert(
                    "version".into(),
                    Value::String(if v4 { "4" } else { "6" }.into()),
                );
                shaped.extend(std::mem::take(ip));
                *ip = shaped;
            }
        }
    }
    if version < SpecVersion::V1_1_0 {
        strip(body.get_mut("interfaces"), &["mtu", "socketPath", "pciID"]);
        strip(
            body.get_mut("routes"),
            &["mtu", "advmss", "priority", "table", "scope"],
        );
    }
}

fn strip(list: Option<&mut Value>, keys: &[&str]) {
    if let Some(Value::Array(items)) = list {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for k in keys {
                item.remove(*k);
            }
        }
    }
}

#[cfg(test)]
mod tests;
