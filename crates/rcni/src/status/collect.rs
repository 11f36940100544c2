//! One network's attachments, put together from every place that holds state of one: the
//! IPAM store, the result cache, rmasq's state, the node's links, the pod's netns.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::cache::Entry;
use super::conf::NetworkConf;
use super::kernel::{netns_alive, Node};
use super::model::{Attachment, HostRoute, Ipam, Network, RangeUse};

/// (container ID, ifname); ifname None for host-local's old-format reservations.
type Key = (String, Option<String>);

pub fn network(
    conf: &NetworkConf,
    node: &Node,
    cache: &[&Entry],
    sandboxes: Option<&HashSet<String>>,
) -> Network {
    let mut problems = conf.problems.clone();
    let (mut atts, reserved) = gather(conf, cache, &mut problems);
    for ((cid, ifname), a) in atts.iter_mut() {
        finish(conf, node, sandboxes, cid, ifname.as_deref(), a);
    }
    Network {
        name: conf.name.clone(),
        file: conf.file.display().to_string(),
        cni_version: conf.version.clone(),
        plugins: conf.plugins.clone(),
        bridge: conf.bridge.as_ref().map(|b| b.name.clone()),
        ipam: conf.store.as_ref().map(|s| Ipam {
            ipam_type: s.ipam_type.clone(),
            data_dir: s.data_dir.display().to_string(),
        }),
        ranges: ranges(conf, &reserved),
        host_routes: conf
            .host_routes
            .iter()
            .map(|r| HostRoute {
                dst: r.dst.to_string(),
                gw: r.gw.to_string(),
                installed: node.has_route(r.dst, r.gw),
            })
            .collect(),
        attachments: atts.into_values().collect(),
        problems,
    }
}

/// Every attachment with state in the store, the cache or rmasq's state, and every address
/// the store holds.
fn gather(
    conf: &NetworkConf,
    cache: &[&Entry],
    problems: &mut Vec<String>,
) -> (BTreeMap<Key, Attachment>, Vec<IpAddr>) {
    let mut atts: BTreeMap<Key, Attachment> = BTreeMap::new();
    let mut reserved: Vec<IpAddr> = Vec::new();
    if let Some(store) = &conf.store {
        match rhost_local::reservations(&store.data_dir, &conf.name) {
            Ok(list) => {
                for r in list {
                    reserved.push(r.ip);
                    let a = entry(&mut atts, &r.container_id, r.ifname.as_deref());
                    a.allocated = true;
                    a.addresses.push(with_prefix(conf, r.ip));
                }
            }
            Err(e) => problems.push(format!("cannot read the IPAM store: {}", e.msg)),
        }
    }
    for c in cache {
        let a = entry(&mut atts, &c.container_id, Some(&c.ifname));
        a.cached = true;
        a.netns = c.netns.clone();
        let bridge = conf.bridge.as_ref().map(|b| b.name.as_str());
        a.host_veth = c
            .host_interfaces
            .iter()
            .find(|n| Some(n.as_str()) != bridge)
            .cloned();
        if conf.store.is_none() {
            a.addresses = c.addresses.clone();
        }
        a.routes = c.routes.clone();
    }
    for dir in &conf.masq_dirs {
        match rmasq::members(dir, &conf.name) {
            Ok(members) => {
                for m in members {
                    let a = entry(&mut atts, &m.container_id, Some(&m.ifname));
                    a.masquerade
                        .extend(m.addresses.iter().map(IpAddr::to_string));
                }
            }
            Err(e) => problems.push(format!(
                "cannot read rmasq's state in {}: {}",
                dir.display(),
                e.msg
            )),
        }
    }
    merge_old_format(&mut atts);
    (atts, reserved)
}

/// A reservation in host-local's old format (no ifname) belongs to every interface of its
/// container, as upstream treats it: it goes to the container's attachment when there is one.
fn merge_old_format(atts: &mut BTreeMap<Key, Attachment>) {
    let old: Vec<Key> = atts.keys().filter(|(_, i)| i.is_none()).cloned().collect();
    for key in old {
        let target = atts
            .keys()
            .find(|(cid, i)| *cid == key.0 && i.is_some())
            .cloned();
        if let Some(target) = target {
            let from = atts.remove(&key).expect("listed above");
            let to = atts.get_mut(&target).expect("listed above");
            to.allocated |= from.allocated;
            to.addresses.extend(from.addresses);
        }
    }
}

fn entry<'a>(
    atts: &'a mut BTreeMap<Key, Attachment>,
    cid: &str,
    ifname: Option<&str>,
) -> &'a mut Attachment {
    atts.entry((cid.to_string(), ifname.map(String::from)))
        .or_insert_with(|| Attachment {
            container_id: cid.to_string(),
            ifname: ifname.map(String::from),
            addresses: Vec::new(),
            allocated: false,
            host_veth: None,
            host_veth_present: None,
            netns: None,
            netns_alive: None,
            masquerade: Vec::new(),
            routes: Vec::new(),
            cached: false,
            known_to_runtime: None,
        })
}

/// What the kernel and the runtime say of an attachment.
fn finish(
    conf: &NetworkConf,
    node: &Node,
    sandboxes: Option<&HashSet<String>>,
    cid: &str,
    ifname: Option<&str>,
    a: &mut Attachment,
) {
    if a.host_veth.is_none() {
        if let (Some(b), Some(ifname)) = (&conf.bridge, ifname) {
            if b.ours {
                a.host_veth = Some(rbridge::host_veth(cid, ifname));
            }
        }
    }
    a.host_veth_present = a.host_veth.as_deref().map(|v| node.link(v).is_some());
    a.netns_alive = a.netns.as_deref().map(netns_alive);
    if let (Some(true), Some(netns), Some(ifname)) = (a.netns_alive, &a.netns, ifname) {
        if let Some(routes) = node.pod_routes(netns, ifname) {
            a.routes = routes;
        }
    }
    a.known_to_runtime = sandboxes.map(|s| s.contains(cid));
}

/// `ip` with the prefix of the range it was handed out from.
fn with_prefix(conf: &NetworkConf, ip: IpAddr) -> String {
    let prefix = conf
        .store
        .iter()
        .flat_map(|s| &s.range_sets)
        .flat_map(|s| &s.ranges)
        .find(|r| r.subnet.contains(&ip))
        .map(|r| r.subnet.prefix_len());
    match prefix.and_then(|p| IpNet::new(ip, p).ok()) {
        Some(net) => net.to_string(),
        None => ip.to_string(),
    }
}

fn ranges(conf: &NetworkConf, reserved: &[IpAddr]) -> Vec<RangeUse> {
    let Some(store) = &conf.store else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, set) in store.range_sets.iter().enumerate() {
        for r in &set.ranges {
            let used = reserved.iter().filter(|ip| r.contains(**ip)).count() as u128;
            out.push(RangeUse {
                range_set: i,
                subnet: r.subnet.to_string(),
                start: r.start.to_string(),
                end: r.end.to_string(),
                capacity: r.capacity,
                used,
                free: r.capacity.saturating_sub(used),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_format_reservations_go_to_their_containers_attachment() {
        let mut atts = BTreeMap::new();
        entry(&mut atts, "c1", None).allocated = true;
        entry(&mut atts, "c1", None)
            .addresses
            .push("10.1.0.2/24".into());
        entry(&mut atts, "c1", Some("eth0")).cached = true;
        entry(&mut atts, "c2", None).allocated = true;
        merge_old_format(&mut atts);
        let keys: Vec<&Key> = atts.keys().collect();
        assert_eq!(
            keys,
            [
                &("c1".to_string(), Some("eth0".to_string())),
                &("c2".to_string(), None)
            ]
        );
        let a = &atts[&("c1".to_string(), Some("eth0".to_string()))];
        assert!(a.allocated && a.cached);
        assert_eq!(a.addresses, ["10.1.0.2/24"]);
    }
}
