//! The config and the store seen from outside a CNI call, touching nothing: for `rcni lint`
//! (the config through the parser ADD uses) and `rcni status` (ranges and reservations, read
//! without the lock, as STATUS reads them; every write to the store is a whole file).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_types::error::{CniError, Result, IO_FAILURE};
use cni_types::{CniArgs, NetConf};
use ipnet::IpNet;

use crate::config::{self, Config};
use crate::netdir::{NetworkDir, Slot};

/// A network's IPAM as rhost-local (and upstream host-local, same keys) reads it.
#[derive(Debug, Clone)]
pub struct IpamSummary {
    pub network: String,
    /// The store root (`ipam.dataDir`); the network's reservations are in `<data_dir>/<network>`.
    pub data_dir: PathBuf,
    /// In the order `last_reserved_ip.<n>` counts them.
    pub range_sets: Vec<RangeSetSummary>,
}

#[derive(Debug, Clone)]
pub struct RangeSetSummary {
    /// Where it came from in the config, e.g. `ipam.ranges[1]`.
    pub source: String,
    pub ranges: Vec<RangeSummary>,
}

/// One range, canonical (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSummary {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
    /// Addresses it can hand out (network, gateway and IPv4 broadcast excluded).
    pub capacity: u128,
}

impl RangeSummary {
    /// Inside `[start, end]`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let n = crate::range::to_u128(ip);
        ip.is_ipv4() == self.start.is_ipv4()
            && (crate::range::to_u128(self.start)..=crate::range::to_u128(self.end)).contains(&n)
    }
}

/// A plugin config (the whole stdin an ADD would get) through the checks ADD makes before it
/// touches the store: code 7 naming the key at fault, as the plugin answers. `resolvConf` is
/// not read (it names a file of the node the config runs on).
pub fn parse_config(stdin: &[u8]) -> Result<IpamSummary> {
    let conf = NetConf::from_slice(stdin)?;
    let raw: serde_json::Value =
        serde_json::from_slice(stdin).map_err(|e| CniError::decode(e.to_string()))?;
    let c = Config::load(&raw, &conf)?;
    // Addresses asked for in the config itself (`args.cni.ips`) must fit the ranges too.
    c.assign(config::requested_ips(&conf, &CniArgs::default())?)?;
    Ok(summary(&c))
}

fn summary(c: &Config) -> IpamSummary {
    IpamSummary {
        network: c.network.clone(),
        data_dir: c.data_dir.clone(),
        range_sets: c
            .range_sets
            .iter()
            .map(|s| RangeSetSummary {
                source: s.source.clone(),
                ranges: s
                    .ranges
                    .iter()
                    .map(|r| RangeSummary {
                        subnet: r.subnet,
                        start: r.start,
                        end: r.end,
                        gateway: r.gateway,
                        capacity: r.capacity(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One address held in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reservation {
    pub ip: IpAddr,
    pub container_id: String,
    /// None for reservations in the old format (upstream before it recorded the interface).
    pub ifname: Option<String>,
}

/// Every reservation of `network` in the store at `data_dir`, sorted by address; empty when
/// the network has no store yet. Files that are not reservations (the lock, `last_reserved_ip.*`,
/// our index, a killed writer's empty file) are skipped.
pub fn reservations(data_dir: &Path, network: &str) -> Result<Vec<Reservation>> {
    let dir = NetworkDir::new(data_dir, network);
    let entries = match std::fs::read_dir(&dir.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CniError::new(
                IO_FAILURE,
                format!("cannot list {}: {e}", dir.dir.display()),
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(ip) = entry.file_name().to_string_lossy().parse::<IpAddr>() else {
            continue;
        };
        if let Slot::Held(owner) = dir.slot(ip)? {
            out.push(Reservation {
                ip,
                container_id: owner.id,
                ifname: owner.ifname,
            });
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_summarised_with_defaults_and_errors_name_the_key() {
        let s = parse_config(
            br#"{"cniVersion":"1.0.0","name":"pods","type":"rbridge","ipam":{"type":"rhost-local",
                "ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10"}],[{"subnet":"fd00::/120"}]]}}"#,
        )
        .unwrap();
        assert_eq!(s.network, "pods");
        assert_eq!(s.data_dir, Path::new(config::DEFAULT_DATA_DIR));
        assert_eq!(s.range_sets.len(), 2);
        let r = &s.range_sets[0].ranges[0];
        assert_eq!(r.start, "10.1.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(r.capacity, 245);
        assert!(r.contains("10.1.0.254".parse().unwrap()));
        assert!(!r.contains("10.1.0.9".parse().unwrap()));
        assert_eq!(s.range_sets[1].ranges[0].capacity, 254);
        let e = parse_config(
            br#"{"cniVersion":"1.0.0","name":"pods","ipam":{"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}]]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam.ranges[0][0].gateway"), "{}", e.msg);
    }

    #[test]
    fn reservations_are_read_in_both_formats_skipping_other_files() {
        let dir = std::env::temp_dir().join(format!("rhost-local-inspect-{}", std::process::id()));
        let net = dir.join("pods");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("10.1.0.3"), "c2\r\neth0").unwrap();
        std::fs::write(net.join("10.1.0.2"), "c1").unwrap();
        std::fs::write(net.join("10.1.0.4"), "").unwrap();
        std::fs::write(net.join("last_reserved_ip.0"), "10.1.0.3").unwrap();
        std::fs::write(net.join("lock"), "").unwrap();
        let got = reservations(&dir, "pods").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got,
            [
                Reservation {
                    ip: "10.1.0.2".parse().unwrap(),
                    container_id: "c1".into(),
                    ifname: None
                },
                Reservation {
                    ip: "10.1.0.3".parse().unwrap(),
                    container_id: "c2".into(),
                    ifname: Some("eth0".into())
                },
            ]
        );
        assert!(reservations(&dir, "none").unwrap().is_empty());
    }
}
