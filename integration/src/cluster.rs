//! A simulated Kubernetes cluster in network namespaces: a LAN switch, nodes that each run a CNI
//! chain through the real libcni with their own podCIDR, pods, and an "outside" host. Used by the
//! end-to-end test and by `scripts/demo`, so what the demo shows is what the test asserts.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use cni_testkit::Netns;
use serde_json::{json, Value};

use crate::libcni::{shipped_conflist, Libcni};

const PROBE_PORT: &str = "7777";
pub const CLUSTER_V4: &str = "10.244.0.0/16";
pub const CLUSTER_V6: &str = "fd00:10:244::/48";
const LAN_V4: &str = "10.100.0";
const LAN_V6: &str = "fd00:100::";

/// Which plugins the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// conflists/10-rcni.conflist (rbridge + rhost-local, rmasq, upstream portmap) with
    /// rroutes for the routes to the other nodes.
    Rcni,
    /// Upstream bridge + host-local, with the host routes and masquerade a node agent would
    /// add by hand: proves the harness itself.
    UpstreamControl,
}

/// How namespaces are named: throwaway ones for tests, fixed ones for the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Test,
    Demo,
}

pub struct Pod {
    pub name: String,
    pub id: String,
    pub ns: Netns,
    pub addrs: Vec<IpAddr>,
    pub result: Value,
}

pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub lan: [IpAddr; 2],
    pub pod_cidrs: [String; 2],
    pub gateways: Vec<IpAddr>,
    pub conflist: PathBuf,
    pub pods: Vec<Pod>,
}

pub struct Cluster {
    pub lan: Netns,
    pub outside: Netns,
    pub outside_addrs: [IpAddr; 2],
    pub nodes: Vec<Node>,
    pub state: PathBuf,
    pub chain: Chain,
    probes: Probes,
    cni_path: String,
}

/// The probe listeners, killed when the cluster goes away.
#[derive(Default)]
struct Probes(Vec<Child>);

impl Drop for Probes {
    fn drop(&mut self) {
        for mut c in self.0.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Connected; the destination saw this source address.
    SeenAs(IpAddr),
    Failed(String),
}

/// One end of a probe in the connectivity matrix.
struct End<'a> {
    label: String,
    ns: &'a Netns,
    addr: IpAddr,
    node: Option<usize>,
    is_pod: bool,
}

fn make_ns(naming: Naming, role: &str) -> Netns {
    match naming {
        Naming::Test => Netns::new(role),
        Naming::Demo => Netns::named(&format!("rcni-demo-{role}")),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Cluster {
    /// Builds the LAN, the outside host and `nodes` nodes with `pods_per_node` pods each, every
    /// pod added through libcni. `state` holds conflists, IPAM data, caches and logs.
    pub fn up(
        chain: Chain,
        naming: Naming,
        nodes: usize,
        pods_per_node: usize,
        state: &Path,
    ) -> Cluster {
        let cni_path = cni_testkit::cni_path_with_upstream();
        std::fs::create_dir_all(state).unwrap();
        let lan = make_ns(naming, "lan");
        lan.sh("ip link add lan0 type bridge && ip link set lan0 up");
        let outside = make_ns(naming, "out");
        let outside_addrs = [ip(&format!("{LAN_V4}.100")), ip(&format!("{LAN_V6}100"))];
        attach_to_lan(&lan, &outside, "out", &outside_addrs);
        let mut cluster = Cluster {
            lan,
            outside,
            outside_addrs,
            nodes: Vec::new(),
            state: state.to_path_buf(),
            chain,
            probes: Probes::default(),
            cni_path,
        };
        let letters = ["a", "b", "c", "d"];
        for (i, letter) in letters.iter().enumerate().take(nodes) {
            let name = format!("node-{letter}");
            let ns = make_ns(naming, &format!("node{letter}"));
            let lan_addrs = [
                ip(&format!("{LAN_V4}.{}", 11 + i)),
                ip(&format!("{LAN_V6}{}", 11 + i)),
            ];
            attach_to_lan(&cluster.lan, &ns, &name, &lan_addrs);
            cluster.nodes.push(Node {
                name,
                ns,
                lan: lan_addrs,
                pod_cidrs: [
                    format!("10.244.{}.0/24", i + 1),
                    format!("fd00:10:244:{}::/64", i + 1),
                ],
                gateways: Vec::new(),
                conflist: PathBuf::new(),
                pods: Vec::new(),
            });
        }
        // The LAN's link-local addresses go through DAD (about a second); neighbour discovery
        // across the LAN is unreliable until then. This is the test's own wiring, not CNI's.
        for ns in std::iter::once(&cluster.outside).chain(cluster.nodes.iter().map(|n| &n.ns)) {
            wait_no_tentative(ns);
        }
        for i in 0..cluster.nodes.len() {
            cluster.configure_node(i);
        }
        for i in 0..cluster.nodes.len() {
            for p in 0..pods_per_node {
                cluster.add_pod(i, p, naming);
            }
        }
        if chain == Chain::UpstreamControl {
            // Upstream bridge puts its IPv6 gateway address through DAD: until that ends the
            // node does not answer for it and pods cannot route back. rbridge skips DAD.
            for n in &cluster.nodes {
                wait_no_tentative(&n.ns);
            }
        }
        cluster.start_probes();
        cluster
    }

    fn configure_node(&mut self, i: usize) {
        let others: Vec<(String, IpAddr)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, n)| {
                [
                    (n.pod_cidrs[0].clone(), n.lan[0]),
                    (n.pod_cidrs[1].clone(), n.lan[1]),
                ]
            })
            .collect();
        let node = &self.nodes[i];
        let dir = self.state.join(&node.name);
        std::fs::create_dir_all(&dir).unwrap();
        let list = match self.chain {
            Chain::Rcni => {
                let mut list = shipped_conflist("10-rcni.conflist");
                for plugin in list["plugins"].as_array_mut().unwrap() {
                    plugin["logFile"] = json!(dir.join("rcni.log"));
                    match plugin["type"].as_str().unwrap() {
                        "rbridge" => {
                            plugin["ipam"]["ranges"] = json!([[{"subnet": node.pod_cidrs[0]}], [{"subnet": node.pod_cidrs[1]}]]);
                            plugin["ipam"]["dataDir"] = json!(dir.join("networks"));
                        }
                        "rmasq" => {
                            plugin["nonMasqueradeCIDRs"] = json!([CLUSTER_V4, CLUSTER_V6]);
                            plugin["stateDir"] = json!(dir.join("rmasq"));
                        }
                        _ => {}
                    }
                }
                // Static routes to the other nodes, as `rcni-install up --host-route` chains
                // them: rroutes after rmasq, before portmap.
                let routes: Vec<Value> = others
                    .iter()
                    .map(|(dst, gw)| json!({"dst": dst, "gw": gw}))
                    .collect();
                let plugins = list["plugins"].as_array_mut().unwrap();
                let at = plugins.iter().position(|p| p["type"] == "rmasq").unwrap() + 1;
                let rroutes = json!({"type": "rroutes", "hostRoutes": routes,
                                     "logFile": dir.join("rcni.log")});
                plugins.insert(at, rroutes);
                list
            }
            Chain::UpstreamControl => {
                for (dst, gw) in &others {
                    node.ns.sh(&format!("ip route add {dst} via {gw}"));
                }
                node.ns.sh(&format!(
                    "iptables -t nat -A POSTROUTING -s {CLUSTER_V4} ! -d {CLUSTER_V4} -j MASQUERADE && \
                     ip6tables -t nat -A POSTROUTING -s {CLUSTER_V6} ! -d {CLUSTER_V6} -j MASQUERADE"
                ));
                json!({
                    "cniVersion": "1.0.0",
                    "name": "upstream",
                    "plugins": [{
                        "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                        "ipam": {"type": "host-local", "dataDir": dir.join("networks"),
                                 "ranges": [[{"subnet": node.pod_cidrs[0]}], [{"subnet": node.pod_cidrs[1]}]]}
                    }]
                })
            }
        };
        let file = dir.join("net.conflist");
        std::fs::write(&file, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        self.nodes[i].conflist = file;
    }

    fn libcni(&self, i: usize) -> Libcni<'_> {
        let node = &self.nodes[i];
        Libcni {
            node: &node.ns,
            conflist: node.conflist.clone(),
            cache: self.state.join(&node.name).join("cache"),
            path: self.cni_path.clone(),
        }
    }

    fn add_pod(&mut self, i: usize, p: usize, naming: Naming) {
        let letter = &self.nodes[i].name[5..];
        let name = format!("{letter}{}", p + 1);
        let ns = make_ns(naming, &format!("pod{name}"));
        let id = format!("demo-{name}");
        let result = self
            .libcni(i)
            .call("add", &id, Some(&ns), "eth0", &[])
            .expect_ok(&format!("ADD of pod {name}"));
        let addrs: Vec<IpAddr> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let gateways: Vec<IpAddr> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["gateway"].as_str()?.parse().ok())
            .collect();
        self.nodes[i].gateways = gateways;
        self.nodes[i].pods.push(Pod {
            name,
            id,
            ns,
            addrs,
            result,
        });
    }

    fn start_probes(&mut self) {
        let probe = cni_testkit::bin_dir().join("rcni-probe");
        assert!(
            probe.is_file(),
            "{} missing: cargo build -p rcni-integration --bins",
            probe.display()
        );
        let mut spaces: Vec<&Netns> = vec![&self.outside];
        for n in &self.nodes {
            spaces.push(&n.ns);
            spaces.extend(n.pods.iter().map(|p| &p.ns));
        }
        for ns in spaces {
            let child = ns
                .command(&probe)
                .args(["serve", PROBE_PORT])
                .stdout(Stdio::null())
                .spawn()
                .expect("starting rcni-probe");
            self.probes.0.push(child);
        }
        // The listeners are up once each namespace answers on its loopback.
        for ns in self.all_namespaces() {
            let mut ok = false;
            for _ in 0..100 {
                if ns
                    .try_sh(&format!(
                        "{} ask 127.0.0.1 {PROBE_PORT} 200",
                        probe.display()
                    ))
                    .is_ok()
                {
                    ok = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(ok, "probe listener in {} did not come up", ns.name());
        }
    }

    fn all_namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![&self.outside];
        for n in &self.nodes {
            v.push(&n.ns);
            v.extend(n.pods.iter().map(|p| &p.ns));
        }
        v
    }

    /// Connects from `from` to `to` and returns what the destination saw.
    pub fn probe(&self, from: &Netns, to: IpAddr) -> Reach {
        let probe = cni_testkit::bin_dir().join("rcni-probe");
        match from.try_sh(&format!("{} ask {to} {PROBE_PORT} 2000", probe.display())) {
            Ok(out) => match out.trim().parse() {
                Ok(seen) => Reach::SeenAs(seen),
                Err(_) => Reach::Failed(format!("odd answer {out:?}")),
            },
            Err(e) => Reach::Failed(e),
        }
    }

    fn node_owns(&self, i: usize, addr: IpAddr) -> bool {
        self.nodes[i].lan.contains(&addr) || self.nodes[i].gateways.contains(&addr)
    }

    /// The name of whoever owns `addr` in the cluster, for printing.
    pub fn owner_of(&self, addr: IpAddr) -> String {
        for n in &self.nodes {
            if n.lan.contains(&addr) || n.gateways.contains(&addr) {
                return n.name.clone();
            }
            for p in &n.pods {
                if p.addrs.contains(&addr) {
                    return format!("pod {}", p.name);
                }
            }
        }
        if self.outside_addrs.contains(&addr) {
            return "outside".into();
        }
        addr.to_string()
    }

    /// Every namespace that can start or end a probe for one family: pods, then nodes, then the
    /// outside world last.
    fn ends(&self, v6: bool) -> Vec<End<'_>> {
        let fam = usize::from(v6);
        let mut ends = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for p in &n.pods {
                if let Some(a) = p.addrs.iter().find(|a| a.is_ipv6() == v6) {
                    ends.push(End {
                        label: format!("pod {}", p.name),
                        ns: &p.ns,
                        addr: *a,
                        node: Some(i),
                        is_pod: true,
                    });
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            ends.push(End {
                label: n.name.clone(),
                ns: &n.ns,
                addr: n.lan[fam],
                node: Some(i),
                is_pod: false,
            });
        }
        ends.push(End {
            label: "outside".into(),
            ns: &self.outside,
            addr: self.outside_addrs[fam],
            node: None,
            is_pod: false,
        });
        ends
    }

    /// A probe's cell as the matrix prints it, and whether it is what Kubernetes requires.
    fn judge(&self, s: &End, d: &End, reach: &Reach, fam: usize) -> (String, bool) {
        // A node may speak from any of its addresses (e.g. its bridge's gateway address).
        let own = |a: &IpAddr| {
            *a == s.addr || (!s.is_pod && s.node.is_some_and(|i| self.node_owns(i, *a)))
        };
        let cell = match reach {
            Reach::SeenAs(seen) if own(seen) => "direct".to_string(),
            Reach::SeenAs(seen) => format!("nat:{}", self.owner_of(*seen).replace("node-", "")),
            Reach::Failed(_) => "FAIL".to_string(),
        };
        // What Kubernetes requires: pods reach pods without NAT; nodes reach pods; pods reach
        // their own node without NAT; pods reach outside through their node.
        let seen_as = |want: IpAddr| matches!(reach, Reach::SeenAs(a) if *a == want);
        let expected = match (s.is_pod, d.is_pod, d.node.is_none()) {
            (true, true, _) => seen_as(s.addr),
            (false, true, _) => matches!(reach, Reach::SeenAs(_)),
            (true, false, true) => seen_as(self.nodes[s.node.unwrap()].lan[fam]),
            (true, false, false) if s.node == d.node => seen_as(s.addr),
            _ => matches!(reach, Reach::SeenAs(_)),
        };
        (cell, expected)
    }

    /// The connectivity matrix for one family, as a person reads it, plus the list of cells that
    /// break what a Kubernetes network must give.
    pub fn matrix(&self, v6: bool) -> (String, Vec<String>) {
        let fam = usize::from(v6);
        let ends = self.ends(v6);
        let width = 12;
        let mut out = String::new();
        let _ = write!(out, "{:<28}", "from \\ to");
        for d in &ends {
            let _ = write!(out, "{:<width$}", d.label);
        }
        out.push('\n');
        let mut problems = Vec::new();
        for s in ends.iter().filter(|e| e.node.is_some()) {
            let _ = write!(out, "{:<28}", format!("{} {}", s.label, s.addr));
            for d in &ends {
                if std::ptr::eq(s, d) {
                    let _ = write!(out, "{:<width$}", "-");
                    continue;
                }
                let reach = self.probe(s.ns, d.addr);
                let (cell, expected) = self.judge(s, d, &reach, fam);
                let mark = if expected { "" } else { "!" };
                if !expected {
                    problems.push(format!(
                        "{} -> {} ({}): {:?}",
                        s.label, d.label, d.addr, reach
                    ));
                }
                let _ = write!(out, "{:<width$}", format!("{cell}{mark}"));
            }
            out.push('\n');
        }
        (out, problems)
    }

    /// DELs every pod through libcni (twice, as containerd does), then checks the nodes are clean.
    pub fn delete_pods(&mut self) -> Vec<String> {
        let mut leftovers = Vec::new();
        for i in 0..self.nodes.len() {
            let pods = std::mem::take(&mut self.nodes[i].pods);
            for p in &pods {
                for _ in 0..2 {
                    self.libcni(i)
                        .call("del", &p.id, Some(&p.ns), "eth0", &[])
                        .expect_ok(&format!("DEL of pod {}", p.name));
                }
            }
            let node = &self.nodes[i];
            for l in node.ns.links() {
                if l["linkinfo"]["info_kind"] == "veth" && l["ifname"] != "eth0" {
                    leftovers.push(format!("{}: link {}", node.name, l["ifname"]));
                }
            }
            let nets = self.state.join(&node.name).join("networks");
            if let Ok(dirs) = std::fs::read_dir(&nets) {
                for d in dirs.flatten() {
                    for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                        let n = f.file_name().to_string_lossy().to_string();
                        if n.parse::<IpAddr>().is_ok() {
                            leftovers.push(format!("{}: allocation {n}", node.name));
                        }
                    }
                }
            }
        }
        leftovers
    }

    /// Leaves every namespace in place (demo `--keep`); `down` removes them later.
    pub fn keep(self) {
        let Cluster {
            lan,
            outside,
            nodes,
            probes,
            ..
        } = self;
        drop(probes);
        lan.keep();
        outside.keep();
        for n in nodes {
            n.ns.keep();
            for p in n.pods {
                p.ns.keep();
            }
        }
    }
}

fn wait_no_tentative(ns: &Netns) {
    ns.sh("for i in $(seq 200); do [ -z \"$(ip -6 addr show tentative)\" ] && exit 0; sleep 0.05; done; exit 1");
}

fn attach_to_lan(lan: &Netns, host: &Netns, name: &str, addrs: &[IpAddr; 2]) {
    let port = format!("p-{name}");
    host.veth_to(lan, "eth0", &port, &format!("{}/24", addrs[0]), "");
    host.sh(&format!("ip -6 addr add {}/64 dev eth0 nodad", addrs[1]));
    lan.sh(&format!("ip link set {port} master lan0"));
}

/// Removes every namespace a kept demo left (`rcni-demo-*`) and its state directory.
pub fn demo_down(state: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("rcni-demo-") {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &name])
                    .status();
                removed.push(name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(state);
    removed
}
