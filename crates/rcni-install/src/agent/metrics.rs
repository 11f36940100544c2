//! What the agent exports on `/metrics` (Prometheus text, OpenMetrics flavour). Counters and
//! gauges of its own work are updated as it goes; the IPAM figures are read from the store on
//! each scrape, so they are never stale and cost nothing between scrapes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeLabels {
    pub network: String,
    pub range: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabels {
    pub network: String,
}

pub struct Metrics {
    registry: Registry,
    /// Route changes by op (added, replaced, removed).
    pub route_changes: Family<OpLabels, Counter>,
    /// Errors by what failed (watch, route, install, ...).
    pub errors: Family<OpLabels, Counter>,
    /// From a watch event's arrival to the kernel route change it causes.
    pub route_lag: Histogram,
    pub watch_restarts: Counter,
    pub last_sync: Gauge<f64, AtomicU64>,
    pub installs: Counter,
    pub nodes: Gauge,
    pub routes: Gauge,
    /// What garbage collection reclaimed, by kind (attachment, address, veth, ...).
    pub gc_reclaimed: Family<KindLabels, Counter>,
    pub gc_runs: Counter,
    pub gc_last_run: Gauge<f64, AtomicU64>,
    ipam_used: Family<RangeLabels, Gauge>,
    ipam_free: Family<RangeLabels, Gauge<f64, AtomicU64>>,
    attachments: Family<NetworkLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("rcni"),
            route_changes: Family::default(),
            errors: Family::default(),
            route_lag: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            watch_restarts: Counter::default(),
            last_sync: Gauge::default(),
            installs: Counter::default(),
            nodes: Gauge::default(),
            routes: Gauge::default(),
            gc_reclaimed: Family::default(),
            gc_runs: Counter::default(),
            gc_last_run: Gauge::default(),
            ipam_used: Family::default(),
            ipam_free: Family::default(),
            attachments: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "route_changes",
            "Routes to other nodes added, replaced or removed",
            m.route_changes.clone(),
        );
        r.register("errors", "Errors, by what failed", m.errors.clone());
        r.register(
            "route_lag_seconds",
            "From a node event's arrival to its route change in the kernel",
            m.route_lag.clone(),
        );
        r.register(
            "watch_restarts",
            "Times the node watch failed and was restarted (reconnect or relist)",
            m.watch_restarts.clone(),
        );
        r.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last full sync of nodes and routes",
            m.last_sync.clone(),
        );
        r.register(
            "installs",
            "Times binaries or the conflist were written (install or upgrade)",
            m.installs.clone(),
        );
        r.register("nodes", "Nodes known from the API", m.nodes.clone());
        r.register(
            "host_routes",
            "Routes to other nodes' podCIDRs installed",
            m.routes.clone(),
        );
        m.register_gc_and_ipam();
        m
    }

    /// Garbage collection's and the IPAM store's metrics.
    fn register_gc_and_ipam(&mut self) {
        let r = &mut self.registry;
        r.register(
            "gc_reclaimed",
            "What garbage collection reclaimed from attachments the runtime no longer knows, by kind",
            self.gc_reclaimed.clone(),
        );
        r.register(
            "gc_runs",
            "Garbage collections completed",
            self.gc_runs.clone(),
        );
        r.register(
            "gc_last_run_timestamp_seconds",
            "Unix time of the last completed garbage collection",
            self.gc_last_run.clone(),
        );
        r.register(
            "ipam_addresses_used",
            "Addresses allocated, per IPAM range",
            self.ipam_used.clone(),
        );
        r.register(
            "ipam_addresses_free",
            "Addresses still free, per IPAM range",
            self.ipam_free.clone(),
        );
        r.register(
            "attachments",
            "Pod attachments (container, interface) with an address, per network",
            self.attachments.clone(),
        );
    }

    pub fn count(&self, family: &Family<OpLabels, Counter>, op: &str) {
        family.get_or_create(&OpLabels { op: op.into() }).inc();
    }

    /// The text of a scrape, with the IPAM figures read from the store of `conflist`.
    pub fn encode(&self, conflist: &Path) -> String {
        self.ipam_used.clear();
        self.ipam_free.clear();
        self.attachments.clear();
        if let Some(net) = std::fs::read(conflist).ok().and_then(|b| ipam_of(&b)) {
            let stats = read_store(&net);
            for s in &stats.ranges {
                let l = RangeLabels {
                    network: net.name.clone(),
                    range: s.subnet.to_string(),
                };
                self.ipam_used.get_or_create(&l).set(s.used as i64);
                self.ipam_free.get_or_create(&l).set(s.free);
            }
            self.attachments
                .get_or_create(&NetworkLabels { network: net.name })
                .set(stats.attachments as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The IPAM part of a conflist: its network name, the store and the subnets.
#[derive(Debug, PartialEq)]
pub struct Ipam {
    pub name: String,
    pub data_dir: String,
    pub subnets: Vec<IpNet>,
}

/// The host-local style IPAM (rhost-local or host-local) of the conflist's first plugin that has
/// one.
pub fn ipam_of(conflist: &[u8]) -> Option<Ipam> {
    let v: Value = serde_json::from_slice(conflist).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let ipam = v
        .get("plugins")?
        .as_array()?
        .iter()
        .find_map(|p| p.get("ipam"))?;
    let subnets = ipam
        .get("ranges")?
        .as_array()?
        .iter()
        .flat_map(|set| set.as_array().into_iter().flatten())
        .filter_map(|r| r.get("subnet")?.as_str()?.parse().ok())
        .collect();
    let data_dir = ipam
        .get("dataDir")
        .and_then(Value::as_str)
        .unwrap_or("/var/lib/cni/networks")
        .to_string();
    Some(Ipam {
        name,
        data_dir,
        subnets,
    })
}

#[derive(Debug, PartialEq)]
pub struct RangeStat {
    pub subnet: IpNet,
    pub used: u64,
    /// f64: an IPv6 /64 has 2^64 addresses.
    pub free: f64,
}

#[derive(Debug, PartialEq)]
pub struct StoreStats {
    pub ranges: Vec<RangeStat>,
    pub attachments: usize,
}

/// Allocations in the store, read as rhost-local reads its own (and upstream host-local's)
/// files, counted per subnet. A subnet's capacity is that of host-local's default range: every
/// address but the network's, IPv4's broadcast and the gateway (the first address).
pub fn read_store(net: &Ipam) -> StoreStats {
    let held = rhost_local::reservations(Path::new(&net.data_dir), &net.name).unwrap_or_default();
    let mut used = vec![0u64; net.subnets.len()];
    let mut owners = HashSet::new();
    for r in held {
        if let Some(i) = net.subnets.iter().position(|s| s.contains(&r.ip)) {
            used[i] += 1;
        }
        owners.insert((r.container_id, r.ifname));
    }
    let ranges = net
        .subnets
        .iter()
        .zip(used)
        .map(|(s, used)| {
            let host_bits = u32::from(s.max_prefix_len() - s.prefix_len());
            let size = 2f64.powi(host_bits as i32);
            let reserved = if s.addr().is_ipv4() { 3.0 } else { 2.0 };
            RangeStat {
                subnet: *s,
                used,
                free: (size - reserved - used as f64).max(0.0),
            }
        })
        .collect();
    StoreStats {
        ranges,
        attachments: owners.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_counted_per_range_and_attachment() {
        let dir = std::env::temp_dir().join(format!("rcni-metrics-{}", std::process::id()));
        let net = dir.join("rcni");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("10.244.1.2"), "c1\neth0").unwrap();
        std::fs::write(net.join("fd00::2"), "c1\neth0").unwrap();
        std::fs::write(net.join("10.244.1.3"), "c2\neth0").unwrap();
        std::fs::write(net.join("last_reserved_ip.0"), "10.244.1.3").unwrap();
        std::fs::write(net.join("lock"), "").unwrap();
        let conflist = serde_json::json!({
            "name": "rcni",
            "plugins": [{"type": "rbridge", "ipam": {"type": "rhost-local",
                "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00::/120"}]],
                "dataDir": dir}}, {"type": "portmap"}],
        });
        let ipam = ipam_of(conflist.to_string().as_bytes()).unwrap();
        let stats = read_store(&ipam);
        assert_eq!(stats.attachments, 2);
        assert_eq!(stats.ranges[0].used, 2);
        assert_eq!(stats.ranges[0].free, 251.0);
        assert_eq!(stats.ranges[1].used, 1);
        assert_eq!(stats.ranges[1].free, 253.0);
        let text = Metrics::new().encode(&{
            let f = dir.join("c.conflist");
            std::fs::write(&f, conflist.to_string()).unwrap();
            f
        });
        assert!(
            text.contains("rcni_ipam_addresses_used{network=\"rcni\",range=\"10.244.1.0/24\"} 2")
        );
        assert!(text.contains("rcni_attachments{network=\"rcni\"} 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
