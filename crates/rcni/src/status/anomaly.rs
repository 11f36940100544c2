//! Leaks: state that outlived its pod, or that a pod never should have had.

use std::collections::BTreeMap;

use super::cache::Entry;
use super::conf::NetworkConf;
use super::kernel::Node;
use super::model::{Anomaly, Attachment, Kind, Network};

fn anomaly(kind: Kind, net: &str, a: Option<&Attachment>, detail: String) -> Anomaly {
    Anomaly {
        kind,
        network: Some(net.to_string()),
        container_id: a.map(|a| a.container_id.clone()),
        ifname: a.and_then(|a| a.ifname.clone()),
        host_veth: a.and_then(|a| a.host_veth.clone()),
        detail,
    }
}

/// An attachment is in use while its netns lives; without a known netns (no cached result),
/// while its host veth is there.
fn live(a: &Attachment) -> bool {
    match a.netns_alive {
        Some(alive) => alive,
        None => a.host_veth_present == Some(true),
    }
}

/// Holds the network's addresses: in the store, or, for a network without one, in the cache.
fn holds(conf: &NetworkConf, a: &Attachment) -> bool {
    if conf.store.is_some() {
        a.allocated
    } else {
        a.cached
    }
}

/// Why `a` is not live, for messages.
fn why_dead(a: &Attachment) -> String {
    match (&a.netns, &a.host_veth) {
        (Some(ns), _) => format!("its netns {ns} is gone"),
        (None, Some(v)) => {
            format!("no cached result names its netns, and its host veth {v} is gone")
        }
        (None, None) => "no cached result names its netns or host veth".into(),
    }
}

/// The anomalies of one network's attachments.
pub fn of_network(conf: &NetworkConf, net: &Network) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for a in &net.attachments {
        if a.allocated && !live(a) {
            out.push(anomaly(
                Kind::StaleAllocation,
                &net.name,
                Some(a),
                format!("holds {} but {}", a.addresses.join(", "), why_dead(a)),
            ));
        }
        if !a.masquerade.is_empty() && !holds(conf, a) {
            out.push(anomaly(
                Kind::StaleMasquerade,
                &net.name,
                Some(a),
                format!(
                    "{} masqueraded for an attachment that holds no address",
                    a.masquerade.join(", ")
                ),
            ));
        }
        if a.cached {
            let why = if a.netns_alive == Some(false) {
                Some(why_dead(a))
            } else if conf.store.is_some() && !a.allocated {
                Some("the attachment holds no address".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                out.push(anomaly(
                    Kind::StaleCacheEntry,
                    &net.name,
                    Some(a),
                    format!("cached result kept, but {why}"),
                ));
            }
        }
        if a.known_to_runtime == Some(false) {
            out.push(anomaly(
                Kind::UnknownToRuntime,
                &net.name,
                Some(a),
                "the runtime lists no sandbox with this container ID".into(),
            ));
        }
    }
    out
}

/// Veths on the networks' bridges that belong to no attachment holding addresses. Networks
/// that share a bridge are looked at together.
pub fn orphan_veths(nets: &[(&NetworkConf, &Network)], node: &Node) -> Vec<Anomaly> {
    let mut by_bridge: BTreeMap<&str, Vec<(&NetworkConf, &Network)>> = BTreeMap::new();
    for (conf, net) in nets {
        if let Some(b) = &conf.bridge {
            by_bridge
                .entry(b.name.as_str())
                .or_default()
                .push((conf, net));
        }
    }
    let mut out = Vec::new();
    for (bridge, nets) in by_bridge {
        let Some(ports) = node.veth_ports(bridge) else {
            continue;
        };
        // rbridge's own veth carrying a VLAN gateway interface.
        let gateways: Vec<String> = nets
            .iter()
            .filter_map(|(c, _)| c.bridge.as_ref().filter(|b| b.ours && b.vlan != 0))
            .map(|b| rbridge::vlan_gateway_veth(&b.name, b.vlan))
            .collect();
        for port in ports.iter().filter(|p| !gateways.contains(p)) {
            let owners: Vec<(&NetworkConf, &Network, &Attachment)> = nets
                .iter()
                .flat_map(|(c, n)| n.attachments.iter().map(move |a| (*c, *n, a)))
                .filter(|(_, _, a)| a.host_veth.as_deref() == Some(port.as_str()))
                .collect();
            if owners.iter().any(|(c, _, a)| holds(c, a)) {
                continue;
            }
            let (net, att) = match owners.first() {
                Some((_, n, a)) => (n.name.as_str(), Some(*a)),
                None => (nets[0].1.name.as_str(), None),
            };
            let mut a = anomaly(
                Kind::OrphanVeth,
                net,
                att,
                format!("{port} is a port of bridge {bridge} but belongs to no attachment holding an address"),
            );
            a.host_veth = Some(port.clone());
            out.push(a);
        }
    }
    out
}

/// Cache entries of networks that are not in the conf dir: no runtime will DEL them.
pub fn foreign_cache(entries: &[&Entry]) -> Vec<Anomaly> {
    entries
        .iter()
        .map(|e| Anomaly {
            kind: Kind::StaleCacheEntry,
            network: Some(e.network.clone()),
            container_id: Some(e.container_id.clone()),
            ifname: Some(e.ifname.clone()),
            host_veth: None,
            detail: format!(
                "{}: network {:?} is not in the conf dir",
                e.path.display(),
                e.network
            ),
        })
        .collect()
}
