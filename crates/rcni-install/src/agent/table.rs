//! The agent's picture of the cluster: every node's podCIDRs and addresses, and from them the
//! routes this node wants to the others. Pure: events in, route changes out, so the cost of an
//! event is that of the one node it names, whatever the cluster's size.
//!
//! Two nodes may briefly claim the same podCIDR (a node re-created under a new name, a CIDR
//! reassigned): each destination keeps the claims of every node, and the route goes through the
//! claimant with the smallest name until its claim ends.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::conflist::HostRoute;
use crate::nodes::{routes_to, Node};

/// One change to the node's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Add the route, or change its gateway.
    Set(HostRoute),
    Remove(IpNet),
}

/// What an event changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub ops: Vec<RouteOp>,
    /// This node's own podCIDRs changed: its conflist must be rewritten.
    pub own_changed: bool,
    pub warnings: Vec<String>,
}

pub struct Table {
    own_name: String,
    own_cidrs: Vec<IpNet>,
    nodes: HashMap<String, Node>,
    /// The routes each other node asks for.
    wants: HashMap<String, Vec<HostRoute>>,
    /// Per destination, the gateway each claiming node gives it.
    claims: BTreeMap<IpNet, BTreeMap<String, IpAddr>>,
}

impl Table {
    pub fn new(own_name: &str) -> Table {
        Table {
            own_name: own_name.to_string(),
            own_cidrs: Vec::new(),
            nodes: HashMap::new(),
            wants: HashMap::new(),
            claims: BTreeMap::new(),
        }
    }

    /// This node, if the API has shown it.
    pub fn own(&self) -> Option<&Node> {
        self.nodes.get(&self.own_name)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every route wanted now: destination → gateway.
    pub fn desired(&self) -> BTreeMap<IpNet, IpAddr> {
        self.claims
            .iter()
            .filter_map(|(dst, c)| c.values().next().map(|gw| (*dst, *gw)))
            .collect()
    }

    /// A node added or changed.
    pub fn apply(&mut self, node: Node) -> Delta {
        let name = node.name().to_string();
        if name == self.own_name {
            return self.apply_own(node);
        }
        let mut delta = Delta::default();
        let routes = routes_to(&node, &self.own_cidrs, &mut delta.warnings);
        self.nodes.insert(name.clone(), node);
        delta.ops = self.set_wants(&name, routes);
        delta
    }

    /// A node the API says is gone: its routes go, and only then.
    pub fn delete(&mut self, name: &str) -> Delta {
        let mut delta = Delta::default();
        if name == self.own_name {
            delta.warnings.push(format!(
                "this node ({name}) was deleted from the API: keeping its conflist and routes"
            ));
            return delta;
        }
        self.nodes.remove(name);
        delta.ops = self.set_wants(name, Vec::new());
        delta
    }

    /// A full list (the watcher's first, or a relist after a 410): the table becomes exactly
    /// it, and the changes are only the differences, so a relist of an unchanged cluster changes
    /// no route.
    pub fn replace_all(&mut self, nodes: Vec<Node>) -> Delta {
        let before = self.desired();
        let old_own = self.own_cidrs.clone();
        let mut warnings = Vec::new();
        self.nodes = nodes
            .into_iter()
            .map(|n| (n.name().to_string(), n))
            .collect();
        self.own_cidrs = self.own_cidrs_now(&mut warnings);
        self.rebuild(&mut warnings);
        Delta {
            ops: diff(&before, &self.desired()),
            own_changed: self.own_cidrs != old_own,
            warnings,
        }
    }

    fn apply_own(&mut self, node: Node) -> Delta {
        let before = self.desired();
        let mut warnings = Vec::new();
        self.nodes.insert(self.own_name.clone(), node);
        let cidrs = self.own_cidrs_now(&mut warnings);
        if cidrs == self.own_cidrs {
            return Delta {
                warnings,
                ..Delta::default()
            };
        }
        // Rare (a podCIDR is set once): every other node's routes are checked against it again.
        self.own_cidrs = cidrs;
        self.rebuild(&mut warnings);
        Delta {
            ops: diff(&before, &self.desired()),
            own_changed: true,
            warnings,
        }
    }

    fn own_cidrs_now(&self, warnings: &mut Vec<String>) -> Vec<IpNet> {
        match self.own().map(Node::pod_cidrs) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                warnings.push(format!("{e:#}"));
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn rebuild(&mut self, warnings: &mut Vec<String>) {
        self.wants.clear();
        self.claims.clear();
        let mut names: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| **n != self.own_name)
            .cloned()
            .collect();
        names.sort();
        for name in names {
            let routes = routes_to(&self.nodes[&name], &self.own_cidrs, warnings);
            self.set_wants(&name, routes);
        }
    }

    /// Replaces what `name` asks for; the route changes are those of the destinations it
    /// claimed before or claims now.
    fn set_wants(&mut self, name: &str, routes: Vec<HostRoute>) -> Vec<RouteOp> {
        let old = self.wants.remove(name).unwrap_or_default();
        let touched: Vec<IpNet> = old.iter().chain(&routes).map(|r| r.dst).collect();
        let before: Vec<Option<IpAddr>> = touched.iter().map(|d| self.winner(d)).collect();
        for r in &old {
            if let Some(c) = self.claims.get_mut(&r.dst) {
                c.remove(name);
                if c.is_empty() {
                    self.claims.remove(&r.dst);
                }
            }
        }
        for r in &routes {
            self.claims
                .entry(r.dst)
                .or_default()
                .insert(name.to_string(), r.gw);
        }
        if !routes.is_empty() {
            self.wants.insert(name.to_string(), routes);
        }
        let mut ops = Vec::new();
        for (dst, was) in touched.iter().zip(before) {
            let now = self.winner(dst);
            if now == was || ops.iter().any(|o| op_dst(o) == *dst) {
                continue;
            }
            ops.push(match now {
                Some(gw) => RouteOp::Set(HostRoute { dst: *dst, gw }),
                None => RouteOp::Remove(*dst),
            });
        }
        ops
    }

    fn winner(&self, dst: &IpNet) -> Option<IpAddr> {
        self.claims
            .get(dst)
            .and_then(|c| c.values().next().copied())
    }
}

fn op_dst(op: &RouteOp) -> IpNet {
    match op {
        RouteOp::Set(r) => r.dst,
        RouteOp::Remove(d) => *d,
    }
}

/// The changes from one set of routes to another.
pub fn diff(before: &BTreeMap<IpNet, IpAddr>, after: &BTreeMap<IpNet, IpAddr>) -> Vec<RouteOp> {
    let mut ops: Vec<RouteOp> = before
        .keys()
        .filter(|d| !after.contains_key(d))
        .map(|d| RouteOp::Remove(*d))
        .collect();
    for (dst, gw) in after {
        if before.get(dst) != Some(gw) {
            ops.push(RouteOp::Set(HostRoute { dst: *dst, gw: *gw }));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "resourceVersion": "1"},
            "spec": {"podCIDRs": cidrs},
            "status": {"addresses": ips.iter().map(|a| serde_json::json!({"type": "InternalIP", "address": a})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn set(dst: &str, gw: &str) -> RouteOp {
        RouteOp::Set(HostRoute {
            dst: dst.parse().unwrap(),
            gw: gw.parse().unwrap(),
        })
    }

    fn seeded() -> Table {
        let mut t = Table::new("a");
        let d = t.replace_all(vec![
            node("a", &["10.244.0.0/24"], &["192.168.1.1"]),
            node("b", &["10.244.1.0/24"], &["192.168.1.2"]),
        ]);
        assert!(d.own_changed);
        assert_eq!(d.ops, vec![set("10.244.1.0/24", "192.168.1.2")]);
        t
    }

    #[test]
    fn join_change_and_leave_touch_only_that_node() {
        let mut t = seeded();
        let d = t.apply(node("c", &["10.244.2.0/24"], &["192.168.1.3"]));
        assert_eq!(d.ops, vec![set("10.244.2.0/24", "192.168.1.3")]);
        // An update that changes nothing routable (a heartbeat) changes no route.
        assert!(t
            .apply(node("c", &["10.244.2.0/24"], &["192.168.1.3"]))
            .ops
            .is_empty());
        let d = t.apply(node("c", &["10.244.2.0/24"], &["192.168.1.9"]));
        assert_eq!(d.ops, vec![set("10.244.2.0/24", "192.168.1.9")]);
        let d = t.apply(node("c", &["10.244.3.0/24"], &["192.168.1.9"]));
        assert_eq!(
            d.ops,
            vec![
                RouteOp::Remove("10.244.2.0/24".parse().unwrap()),
                set("10.244.3.0/24", "192.168.1.9")
            ]
        );
        let d = t.delete("c");
        assert_eq!(
            d.ops,
            vec![RouteOp::Remove("10.244.3.0/24".parse().unwrap())]
        );
        assert_eq!(t.desired().len(), 1);
    }

    #[test]
    fn a_relist_of_the_same_cluster_changes_nothing() {
        let mut t = seeded();
        let d = t.replace_all(vec![
            node("b", &["10.244.1.0/24"], &["192.168.1.2"]),
            node("a", &["10.244.0.0/24"], &["192.168.1.1"]),
        ]);
        assert_eq!(d, Delta::default());
        // A relist that misses a node (deleted while the watch was down) removes its route.
        let d = t.replace_all(vec![node("a", &["10.244.0.0/24"], &["192.168.1.1"])]);
        assert_eq!(
            d.ops,
            vec![RouteOp::Remove("10.244.1.0/24".parse().unwrap())]
        );
    }

    #[test]
    fn a_shared_podcidr_goes_through_one_claimant_until_its_claim_ends() {
        let mut t = seeded();
        let d = t.apply(node("c", &["10.244.1.0/24"], &["192.168.1.3"]));
        assert!(d.ops.is_empty(), "b keeps it: {:?}", d.ops);
        let d = t.delete("b");
        assert_eq!(d.ops, vec![set("10.244.1.0/24", "192.168.1.3")]);
    }

    #[test]
    fn own_node_deleted_keeps_everything_and_own_cidr_change_rechecks_all() {
        let mut t = seeded();
        let d = t.delete("a");
        assert!(d.ops.is_empty() && !d.warnings.is_empty());
        assert_eq!(t.desired().len(), 1);
        // b's podCIDR now overlaps ours: its route goes, with a warning.
        let d = t.apply(node("a", &["10.244.1.0/24"], &["192.168.1.1"]));
        assert!(d.own_changed);
        assert_eq!(
            d.ops,
            vec![RouteOp::Remove("10.244.1.0/24".parse().unwrap())]
        );
        assert!(d.warnings.iter().any(|w| w.contains("overlaps")));
    }

    #[test]
    fn nodes_without_podcidr_or_address_of_the_family_are_skipped() {
        let mut t = seeded();
        let d = t.apply(node("c", &[], &["192.168.1.3"]));
        assert!(d.ops.is_empty() && d.warnings[0].contains("no podCIDR"));
        let d = t.apply(node("d", &["fd00:10:244:4::/64"], &["192.168.1.4"]));
        assert!(d.ops.is_empty() && d.warnings[0].contains("no InternalIP of the family"));
    }
}
