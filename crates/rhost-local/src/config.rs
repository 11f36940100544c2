//! The `ipam` section as upstream host-local reads it, checked up front: every error is code 7
//! (4 for CNI_ARGS) and names the key at fault, and nothing on disk is touched before the config
//! is known to be good.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use cni_plugin::{Call, PluginConfig};
use cni_types::config::decode_config;
use cni_types::error::{CniError, Result, INVALID_ENVIRONMENT_VARIABLES, INVALID_NETWORK_CONFIG};
use cni_types::{CniArgs, Dns, NetConf, Route};
use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::range::{from_u128, to_u128, Range, RangeSet};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// A valid configuration: range sets in upstream's order (runtime `ipRanges`, then the legacy
/// single range, then `ranges`), so `last_reserved_ip.<index>` means the same to both plugins.
#[derive(Debug, Clone)]
pub struct Config {
    pub network: String,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    name: String,
    ipam: Option<IpamInput>,
}

#[derive(Deserialize)]
struct IpamInput {
    #[serde(default, deserialize_with = "opt_subnet")]
    subnet: Option<IpNet>,
    #[serde(rename = "rangeStart", default, deserialize_with = "opt_ip")]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default, deserialize_with = "opt_ip")]
    range_end: Option<IpAddr>,
    #[serde(default, deserialize_with = "opt_ip")]
    gateway: Option<IpAddr>,
    #[serde(default)]
    ranges: Option<Vec<Vec<RangeInput>>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<String>,
}

#[derive(Deserialize)]
struct RangeInput {
    #[serde(deserialize_with = "subnet")]
    subnet: IpNet,
    #[serde(rename = "rangeStart", default, deserialize_with = "opt_ip")]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default, deserialize_with = "opt_ip")]
    range_end: Option<IpAddr>,
    #[serde(default, deserialize_with = "opt_ip")]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
struct RuntimeRanges {
    #[serde(rename = "runtimeConfig")]
    runtime: RuntimeRangesInner,
}

#[derive(Deserialize)]
struct RuntimeRangesInner {
    #[serde(rename = "ipRanges")]
    ranges: Vec<Vec<RangeInput>>,
}

/// Go's net.IP decodes "" as unset; so do we, for parity with existing configs.
fn opt_ip<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<IpAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{s:?} is not an IP address"))),
    }
}

fn subnet<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        D::Error::custom(format!(
            "{s:?} is not a subnet in CIDR notation (e.g. 10.244.0.0/24)"
        ))
    })
}

fn opt_subnet<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<IpNet>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "subnet")] IpNet);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_NETWORK_CONFIG, msg)
}

impl PluginConfig for Config {
    fn from_call(call: &Call) -> Result<Config> {
        Config::load(&call.raw, &call.conf)
    }
}

impl Config {
    /// Reads the config of one call: `raw` is stdin, `conf` its shared keys.
    pub fn load(raw: &Value, conf: &NetConf) -> Result<Config> {
        let version = conf.version()?;
        let input: Input = decode_config(raw.clone())?;
        cni_types::validate::network_name(&input.name)?;
        let ipam = input.ipam.ok_or_else(|| {
            invalid("the network config has no \"ipam\" section: rhost-local reads its ranges from ipam".into())
        })?;

        let mut sets = Vec::new();
        if let Some(v) = conf.runtime("ipRanges") {
            let r: RuntimeRanges = decode_config(json!({ "runtimeConfig": { "ipRanges": v } }))?;
            for (i, set) in r.runtime.ranges.iter().enumerate() {
                sets.push(range_set(set, &format!("runtimeConfig.ipRanges[{i}]"))?);
            }
        }
        // Upstream ignores a stray rangeStart/rangeEnd/gateway without subnet; so do we, so
        // that configs it accepts keep working.
        if let Some(subnet) = ipam.subnet {
            let legacy = RangeInput {
                subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            };
            sets.push(RangeSet {
                ranges: vec![canonical_range(&legacy, "ipam")?],
                source: "ipam.subnet".into(),
            });
        }
        for (i, set) in ipam.ranges.iter().flatten().enumerate() {
            sets.push(range_set(set, &format!("ipam.ranges[{i}]"))?);
        }
        if sets.is_empty() {
            return Err(invalid(
                "ipam has no ranges: set ipam.ranges (a list of range sets, e.g. [[{\"subnet\": \"10.244.0.0/24\"}]]) or ipam.subnet".into(),
            ));
        }
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                if a.overlaps(b) {
                    return Err(invalid(format!(
                        "{} and {} overlap: range sets must be disjoint, or one address would be handed out twice",
                        a.source, b.source
                    )));
                }
            }
        }
        if version.is_legacy() {
            let v4 = sets.iter().filter(|s| s.is_v4()).count();
            if v4 > 1 || sets.len() - v4 > 1 {
                return Err(invalid(format!(
                    "cniVersion {version} results hold one address per family, but ipam has {v4} IPv4 and {} IPv6 range sets: use cniVersion 0.3.0 or later",
                    sets.len() - v4
                )));
            }
        }
        Ok(Config {
            network: input.name,
            range_sets: sets,
            routes: ipam.routes.unwrap_or_default(),
            data_dir: PathBuf::from(
                ipam.data_dir
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            ),
            resolv_conf: ipam
                .resolv_conf
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        })
    }

    /// The DNS of `resolvConf`, read before the store is touched.
    pub fn dns(&self) -> Result<Dns> {
        let Some(path) = &self.resolv_conf else {
            return Ok(Dns::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                INVALID_NETWORK_CONFIG
            } else {
                cni_types::error::IO_FAILURE
            };
            CniError::new(
                code,
                format!("ipam.resolvConf {}: cannot read it: {e}", path.display()),
            )
        })?;
        Ok(parse_resolv_conf(&text))
    }
}

fn range_set(input: &[RangeInput], path: &str) -> Result<RangeSet> {
    if input.is_empty() {
        return Err(invalid(format!(
            "{path} is an empty range set: give at least one {{\"subnet\": ...}}"
        )));
    }
    let mut ranges = Vec::with_capacity(input.len());
    for (j, r) in input.iter().enumerate() {
        let range = canonical_range(r, &format!("{path}[{j}]"))?;
        if let Some(first) = ranges.first() {
            let first: &Range = first;
            if first.is_v4() != range.is_v4() {
                return Err(invalid(format!(
                    "{path}[{j}].subnet {} is not of the family of {path}[0].subnet {}: a range set holds one family; put IPv4 and IPv6 in separate range sets",
                    range.subnet, first.subnet
                )));
            }
        }
        if let Some(k) = ranges.iter().position(|o: &Range| o.overlaps(&range)) {
            return Err(invalid(format!(
                "{path}[{k}] ({}) and {path}[{j}] ({range}) overlap",
                ranges[k]
            )));
        }
        ranges.push(range);
    }
    Ok(RangeSet {
        ranges,
        source: path.into(),
    })
}

/// Upstream's Range.Canonicalize, with errors naming `<path>.<key>`.
fn canonical_range(r: &RangeInput, path: &str) -> Result<Range> {
    let subnet = r.subnet;
    let v4 = subnet.addr().is_ipv4();
    if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
        return Err(invalid(format!(
            "{path}.subnet {subnet} is too small to allocate from: a /{} has no address besides network, gateway and broadcast; use at most /{}",
            subnet.prefix_len(),
            subnet.max_prefix_len() - 2
        )));
    }
    if subnet.addr() != subnet.network() {
        return Err(invalid(format!(
            "{path}.subnet {subnet} has host bits set: the network is {}/{}",
            subnet.network(),
            subnet.prefix_len()
        )));
    }
    let check = |key: &str, ip: IpAddr| -> Result<IpAddr> {
        if ip.is_ipv4() != v4 || !subnet.contains(&ip) {
            return Err(invalid(format!(
                "{path}.{key} {ip} is not in {path}.subnet {subnet}"
            )));
        }
        Ok(ip)
    };
    let first = from_u128(to_u128(subnet.network()) + 1, v4);
    let gateway = match r.gateway {
        Some(g) => check("gateway", g)?,
        None => first,
    };
    let start = match r.range_start {
        Some(s) => check("rangeStart", s)?,
        None => first,
    };
    let end = match r.range_end {
        Some(e) => check("rangeEnd", e)?,
        // IPv4: the last address before broadcast; IPv6: the last address.
        None if v4 => from_u128(to_u128(subnet.broadcast()) - 1, v4),
        None => subnet.broadcast(),
    };
    if to_u128(end) < to_u128(start) {
        return Err(invalid(format!(
            "{path}.rangeEnd {end} is before {path}.rangeStart {start}"
        )));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

/// A requested address and where it came from, for messages and error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub ip: IpAddr,
    pub source: String,
}

impl Requested {
    /// Code 4 for CNI_ARGS (an env variable), 7 for config keys.
    fn error(&self, msg: String) -> CniError {
        error_for(&self.source, msg)
    }
}

fn error_for(source: &str, msg: String) -> CniError {
    let code = if source.starts_with("CNI_ARGS") {
        INVALID_ENVIRONMENT_VARIABLES
    } else {
        INVALID_NETWORK_CONFIG
    };
    CniError::new(code, msg)
}

/// An address, optionally with a prefix length that is ignored (runtimeConfig.ips carries
/// CIDRs; upstream keeps only the address).
fn parse_requested(text: &str, source: String) -> Result<Requested> {
    let t = text.trim();
    let ip = t
        .parse::<IpAddr>()
        .ok()
        .or_else(|| t.parse::<IpNet>().ok().map(|n| n.addr()));
    match ip {
        Some(ip) => Ok(Requested { ip, source }),
        None => Err(error_for(
            &source,
            format!("{source} {text:?} is not an IP address"),
        )),
    }
}

/// Requested addresses from CNI_ARGS `IP=` (comma separated), `args.cni.ips` and
/// `runtimeConfig.ips`, in that order, duplicates dropped (upstream collects all three).
pub fn requested_ips(conf: &NetConf, args: &CniArgs) -> Result<Vec<Requested>> {
    args.check_known(&["IP"])?;
    let mut out = Vec::new();
    if let Some(list) = args.get("IP") {
        for (i, part) in list.split(',').enumerate() {
            out.push(parse_requested(part, format!("CNI_ARGS IP[{i}]"))?);
        }
    }
    for (key, value) in [
        ("args.cni.ips", conf.args_cni("ips")),
        ("runtimeConfig.ips", conf.runtime("ips")),
    ] {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            continue;
        };
        let Value::Array(items) = value else {
            return Err(invalid(format!(
                "{key} must be a list of IP addresses, not {value}"
            )));
        };
        for (i, item) in items.iter().enumerate() {
            let source = format!("{key}[{i}]");
            let Some(text) = item.as_str() else {
                return Err(invalid(format!("{source} {item} is not an IP address")));
            };
            out.push(parse_requested(text, source)?);
        }
    }
    let mut seen = HashSet::new();
    out.retain(|r| seen.insert(r.ip));
    Ok(out)
}

impl Config {
    /// Places each requested address in its range set. All or nothing: an address outside every
    /// range, a reserved address, or two addresses for one range set is an error.
    pub fn assign(&self, requested: Vec<Requested>) -> Result<Vec<Option<Requested>>> {
        let mut out: Vec<Option<Requested>> = vec![None; self.range_sets.len()];
        for req in requested {
            let found = self
                .range_sets
                .iter()
                .enumerate()
                .find_map(|(i, s)| s.range_for(req.ip).map(|r| (i, r)));
            let Some((i, range)) = found else {
                let all: Vec<String> = self
                    .range_sets
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.describe(i))
                    .collect();
                return Err(req.error(format!(
                    "requested address {} ({}) is outside every range of network {:?}: {}",
                    req.ip,
                    req.source,
                    self.network,
                    all.join("; ")
                )));
            };
            if range.is_reserved(req.ip) {
                let what = if req.ip == range.gateway {
                    "the gateway"
                } else if req.ip == range.subnet.network() {
                    "the network address"
                } else {
                    "the broadcast address"
                };
                return Err(req.error(format!(
                    "requested address {} ({}) is {what} of {}",
                    req.ip, req.source, range.subnet
                )));
            }
            if let Some(prev) = &out[i] {
                return Err(req.error(format!(
                    "requested addresses {} ({}) and {} ({}) are both in {}: one address is taken per range set",
                    prev.ip,
                    prev.source,
                    req.ip,
                    req.source,
                    self.range_sets[i].describe(i)
                )));
            }
            out[i] = Some(req);
        }
        Ok(out)
    }
}

/// resolv.conf as upstream reads it: nameserver, domain, search, options; comments skipped.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(['#', ';']) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].into()),
            "domain" => dns.domain = fields[1].into(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests;
