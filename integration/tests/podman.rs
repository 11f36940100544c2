//! Containers through podman 4.3 with its CNI backend, as a user runs them: a podman of the test's
//! own in a node namespace, the shipped conflists/10-rcni.conflist (rbridge + rhost-local, rmasq,
//! upstream portmap) as its network. A container gets its addresses and default routes from our
//! chain; `-p` reaches it from the node, from the node's network and, hairpinned, from containers;
//! `podman rm -f` leaves no allocation, veth, masquerade state or port-mapping rule.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use cni_testkit::{container_id, eventually, reservations, Netns};
use rcni_integration::podman::{Container, Podman};
use rcni_integration::shipped_conflist;
use serde_json::{json, Value};

/// The bridge of every test's node (each test has its own node namespace).
const BRIDGE: &str = "rcnipm0";
/// The node's own address on its network, and a client there (the "LAN").
const NODE_IP: &str = "192.168.247.1";
const LAN_IP: &str = "192.168.247.2";
const CLUSTER: [&str; 2] = ["10.247.0.0/16", "fd00:10:247::/48"];

/// A test's pod subnets, inside [`CLUSTER`].
struct Net {
    v4: &'static str,
    v6: &'static str,
}

impl Net {
    /// The gateway rbridge puts on the bridge: the subnet's first address.
    fn gateway(&self, family: u8) -> IpAddr {
        match first_of(if family == 4 { self.v4 } else { self.v6 }) {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
        }
    }
}

fn first_of(subnet: &str) -> IpAddr {
    subnet.split('/').next().unwrap().parse().unwrap()
}

fn in_subnet(ip: IpAddr, cidr: &str) -> bool {
    let len: u32 = cidr.split_once('/').unwrap().1.parse().unwrap();
    match (ip, first_of(cidr)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// conflists/10-rcni.conflist with the test's subnets and bridge, its state and our plugins' log
/// under `state`; the chain itself as shipped.
fn conflist(state: &Path, net: &Net) -> Value {
    let mut list = shipped_conflist("10-rcni.conflist");
    let types: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["rbridge", "rmasq", "portmap"],
        "the shipped chain changed"
    );
    let bridge = &mut list["plugins"][0];
    bridge["bridge"] = json!(BRIDGE);
    bridge["ipam"]["ranges"] = json!([[{ "subnet": net.v4 }], [{ "subnet": net.v6 }]]);
    bridge["ipam"]["dataDir"] = json!(state.join("networks"));
    bridge["logFile"] = json!(state.join("rcni.log"));
    let masq = &mut list["plugins"][1];
    masq["nonMasqueradeCIDRs"] = json!(CLUSTER);
    masq["stateDir"] = json!(state.join("rmasq"));
    masq["logFile"] = json!(state.join("rcni.log"));
    list
}

/// A started podman on `net`, with its CNI state under its dir.
fn podman_on(net: &Net) -> Podman {
    let mut h = Podman::prepare();
    let list = conflist(&h.dir().join("cni"), net);
    h.start(&list);
    h
}

/// Where rhost-local keeps the network's reservations.
fn store(h: &Podman) -> PathBuf {
    h.dir().join("cni/networks").join(h.network())
}

/// The node's own network: `eth0` with [`NODE_IP`], a client at [`LAN_IP`].
fn uplink(h: &Podman) -> Netns {
    let lan = Netns::new("lan");
    h.node().veth_to(
        &lan,
        "eth0",
        "eth0",
        &format!("{NODE_IP}/24"),
        &format!("{LAN_IP}/24"),
    );
    lan
}

/// The node's ends of the containers' veths: those on the bridge (the uplink is a veth too).
fn pod_veths(h: &Podman) -> Vec<String> {
    let node = h.node();
    node.veths()
        .into_iter()
        .filter(|v| node.master_of(v).as_deref() == Some(BRIDGE))
        .collect()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stdout of `cmd` in the container; panics unless it succeeds.
fn exec_ok(h: &Podman, c: &Container, cmd: &[&str]) -> String {
    let out = h.exec(&c.name, cmd);
    assert!(
        out.status.success(),
        "podman exec {} {cmd:?} failed: {}",
        c.name,
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

/// The page at `url` fetched from inside the namespace `ns` (busybox wget; `wget -T` segfaults in
/// Debian's busybox 1.35, so `timeout` bounds it), or None.
fn get_from(ns: &Netns, url: &str) -> Option<String> {
    let out = ns
        .command("/bin/busybox")
        .args(["timeout", "5", "/bin/busybox", "wget", "-q", "-O-", url])
        .output()
        .expect("running busybox wget");
    out.status.success().then(|| text(&out))
}

/// Like [`get_from`], from inside a container.
fn get_in(h: &Podman, c: &Container, url: &str) -> Option<String> {
    let out = h.exec(&c.name, &["timeout", "5", "wget", "-q", "-O-", url]);
    out.status.success().then(|| text(&out))
}

/// A container serving a page naming it on port 80 (busybox httpd), port 8080 of the node
/// mapped to it.
fn web(h: &Podman, name: &str) -> Container {
    let script =
        "mkdir -p /www && echo \"served by $0\" > /www/index.html && exec httpd -f -p 80 -h /www";
    h.run(name, &["-p", "8080:80"], &["sh", "-c", script, name])
}

/// Whether `text` holds `ip` as a whole address (10.0.0.1 is not in 10.0.0.12, nor in 10.0.0.1
/// written as 10.0.0.10:80), also as part of a CIDR or an `addr:port`.
fn has_addr(text: &str, ip: IpAddr) -> bool {
    let ip = ip.to_string();
    let part: fn(char) -> bool = match ip.contains(':') {
        true => |c| c.is_ascii_hexdigit() || c == ':',
        false => |c| c.is_ascii_digit() || c == '.',
    };
    text.split(|c: char| !part(c)).any(|t| t == ip)
}

/// The addresses rhost-local reserved for container `id`.
fn addrs_of(h: &Podman, id: &str) -> Vec<IpAddr> {
    reservations(&store(h))
        .into_iter()
        .filter(|(_, owner)| owner.lines().next() == Some(id))
        .map(|(ip, _)| ip)
        .collect()
}

/// Every call our plugins logged for `id`, as (plugin, verb, outcome).
fn calls(h: &Podman, id: &str) -> Vec<(String, String, String)> {
    let log = std::fs::read_to_string(h.dir().join("cni/rcni.log")).unwrap_or_default();
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    };
    log.lines()
        .filter(|l| field(l, "container") == id)
        .map(|l| {
            let plugin = l.split_whitespace().nth(2).unwrap_or_default().to_string();
            (plugin, field(l, "verb"), field(l, "outcome"))
        })
        .collect()
}

/// Asserts that each of our plugins ran `verb` for `c` and every call for it succeeded.
fn assert_called(h: &Podman, c: &Container, verb: &str) {
    let calls = calls(h, &c.id);
    for call in &calls {
        assert_eq!(call.2, "ok", "failed call for {}: {call:?}", c.name);
    }
    for plugin in ["rbridge", "rhost-local", "rmasq"] {
        assert!(
            calls.iter().any(|(p, v, _)| p == plugin && v == verb),
            "{plugin} never ran {verb} for {} ({}): {calls:?}",
            c.name,
            c.id
        );
    }
}

/// Nothing of the test reached the machine's own namespace (the test process runs in it).
fn assert_root_untouched(net: &Net) {
    let fw = std::process::Command::new("sh")
        .args([
            "-c",
            "nft list ruleset; iptables-save; ip6tables-save; ip -o link",
        ])
        .output()
        .expect("reading the root namespace");
    let fw = text(&fw);
    for word in [net.v4, net.v6, BRIDGE] {
        assert!(!fw.contains(word), "{word} in the root namespace:\n{fw}");
    }
}

/// The global addresses of `family` on eth0 of `c`, as "addr/len".
fn eth0_addrs(h: &Podman, c: &Container, family: &str) -> Vec<String> {
    let out = exec_ok(
        h,
        c,
        &[
            "ip", "-o", family, "addr", "show", "dev", "eth0", "scope", "global",
        ],
    );
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next().map(String::from)
        })
        .collect()
}

#[test]
fn container_gets_its_addresses_and_default_routes_from_our_chain() {
    let net = Net {
        v4: "10.247.1.0/24",
        v6: "fd00:10:247:1::/64",
    };
    let h = podman_on(&net);
    let c = h.run(&container_id(), &[], &["sleep", "600"]);

    let owned = addrs_of(&h, &c.id);
    assert_eq!(
        owned.len(),
        2,
        "reservations of {}: {:?}",
        c.id,
        reservations(&store(&h))
    );
    for (family, subnet, len) in [("-4", net.v4, 24), ("-6", net.v6, 64)] {
        let ip = *owned
            .iter()
            .find(|ip| ip.is_ipv4() == (family == "-4"))
            .unwrap_or_else(|| panic!("no reservation in {subnet} for {}", c.id));
        assert!(in_subnet(ip, subnet), "{ip} not in {subnet}");
        assert_eq!(
            eth0_addrs(&h, &c, family),
            [format!("{ip}/{len}")],
            "eth0 of {}",
            c.name
        );
        let gw = net.gateway(if family == "-4" { 4 } else { 6 }).to_string();
        let routes = exec_ok(&h, &c, &["ip", family, "route", "show", "default"]);
        let via_gw = ["default", "via", gw.as_str(), "dev", "eth0"];
        assert!(
            routes
                .lines()
                .any(|r| r.split_whitespace().take(5).eq(via_gw)),
            "default route {family} of {}: {routes:?}",
            c.name
        );
        assert!(
            h.node().addrs(BRIDGE).contains(&format!("{gw}/{len}")),
            "gateway {gw} not on {BRIDGE}: {:?}",
            h.node().addrs(BRIDGE)
        );
    }
    // podman reports what the chain returned.
    let v4 = owned.iter().find(|ip| ip.is_ipv4()).unwrap().to_string();
    let info = h.inspect(&c.name);
    let seen = &info["NetworkSettings"]["Networks"][h.network()];
    assert_eq!(seen["IPAddress"], v4.as_str(), "podman inspect: {seen}");
    assert_eq!(
        seen["Gateway"],
        net.gateway(4).to_string().as_str(),
        "podman inspect: {seen}"
    );
    // The host end of its veth is on our bridge, and the node reaches it.
    let veths = h.node().veths();
    assert_eq!(veths.len(), 1, "veths in the node: {veths:?}");
    assert_eq!(h.node().master_of(&veths[0]).as_deref(), Some(BRIDGE));
    assert!(cni_testkit::ping(h.node(), &v4), "node cannot ping {v4}");
    assert_called(&h, &c, "ADD");
    assert_root_untouched(&net);
}

#[test]
fn host_port_reaches_the_container_from_the_node_its_network_and_hairpinned() {
    let net = Net {
        v4: "10.247.2.0/24",
        v6: "fd00:10:247:2::/64",
    };
    let h = podman_on(&net);
    let lan = uplink(&h);
    let server = web(&h, &container_id());
    let peer = h.run(&container_id(), &[], &["sleep", "600"]);
    let page = format!("served by {}\n", server.name);
    let url = format!("http://{NODE_IP}:8080/");

    // httpd starts right after `podman run -d` returns: allow it a moment.
    assert!(
        eventually(|| get_from(h.node(), &url).as_deref() == Some(page.as_str())),
        "{url} from the node: {:?}",
        get_from(h.node(), &url)
    );
    // portmap's `snat` makes localhost work too (route_localnet and a masquerade).
    let local = "http://127.0.0.1:8080/";
    assert_eq!(
        get_from(h.node(), local).as_deref(),
        Some(page.as_str()),
        "{local} from the node"
    );
    assert_eq!(
        get_from(&lan, &url).as_deref(),
        Some(page.as_str()),
        "{url} from the LAN"
    );
    assert_eq!(
        get_in(&h, &peer, &url).as_deref(),
        Some(page.as_str()),
        "{url} from {}",
        peer.name
    );
    assert_eq!(
        get_in(&h, &server, &url).as_deref(),
        Some(page.as_str()),
        "{url} from itself"
    );
    // Only the mapped port: a port nothing maps does not answer (the checks above can fail).
    let unmapped = format!("http://{NODE_IP}:8081/");
    assert_eq!(get_from(&lan, &unmapped), None, "{unmapped} from the LAN");
    assert!(
        h.node().firewall().contains(&server.id),
        "no port-mapping rule names {}:\n{}",
        server.id,
        h.node().firewall()
    );
    assert_root_untouched(&net);
}

/// What the node's firewall, store and rmasq state still hold of `c`, as messages.
fn traces_of(h: &Podman, c: &Container, ips: &[IpAddr]) -> Vec<String> {
    let mut left = Vec::new();
    let fw = h.node().firewall();
    if fw.contains(&c.id) {
        left.push(format!("a rule names {}", c.id));
    }
    for ip in ips.iter().filter(|ip| has_addr(&fw, **ip)) {
        left.push(format!("a rule names {ip}"));
    }
    if !addrs_of(h, &c.id).is_empty() {
        left.push(format!("allocations {:?}", addrs_of(h, &c.id)));
    }
    for f in files_under(&h.dir().join("cni/rmasq")) {
        let named = std::fs::read_to_string(&f)
            .unwrap_or_default()
            .contains(&c.id)
            || f.to_string_lossy().contains(&c.id);
        if named {
            left.push(format!("rmasq state {}", f.display()));
        }
    }
    if c.netns.exists() {
        left.push(format!("netns {}", c.netns.display()));
    }
    for f in files_under(Path::new("/var/lib/cni/results")) {
        if f.to_string_lossy().contains(&c.id) {
            left.push(format!("cached result {}", f.display()));
        }
    }
    left
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.path() {
            p if p.is_dir() => out.extend(files_under(&p)),
            p => out.push(p),
        }
    }
    out
}

#[test]
fn rm_f_leaves_no_allocation_veth_masquerade_or_port_mapping() {
    let net = Net {
        v4: "10.247.3.0/24",
        v6: "fd00:10:247:3::/64",
    };
    let h = podman_on(&net);
    let _lan = uplink(&h);
    let server = web(&h, &container_id());
    let other = h.run(&container_id(), &[], &["sleep", "600"]);
    let url = format!("http://{NODE_IP}:8080/");
    assert!(
        eventually(|| get_from(h.node(), &url).is_some()),
        "{url} never answered"
    );
    let (server_ips, other_ips) = (addrs_of(&h, &server.id), addrs_of(&h, &other.id));
    assert_eq!(
        (server_ips.len(), other_ips.len()),
        (2, 2),
        "{:?}",
        reservations(&store(&h))
    );
    // While they run, the traces looked for below are there: the checks can fail.
    assert!(!traces_of(&h, &server, &server_ips).is_empty());
    let veths = pod_veths(&h);
    assert_eq!(veths.len(), 2, "veths: {veths:?}");

    h.rm_f(&server.name);
    let left = traces_of(&h, &server, &server_ips);
    assert!(
        left.is_empty(),
        "after podman rm -f {}: {left:?}",
        server.name
    );
    let fw = h.node().firewall();
    assert!(
        !fw.contains("CNI-DN-"),
        "a port-mapping chain is left:\n{fw}"
    );
    assert_eq!(get_from(h.node(), &url), None, "{url} still answers");
    let now = pod_veths(&h);
    assert!(
        now.len() == 1 && veths.contains(&now[0]),
        "veths after rm: {now:?} (before: {veths:?})"
    );
    // The other container keeps its address and its (shared) masquerade.
    assert_eq!(addrs_of(&h, &other.id), other_ips);
    assert!(
        fw.contains("RMASQ"),
        "masquerade for {} gone too:\n{fw}",
        other.name
    );
    assert_called(&h, &server, "DEL");

    h.rm_f(&other.name);
    let left = traces_of(&h, &other, &other_ips);
    assert!(
        left.is_empty(),
        "after podman rm -f {}: {left:?}",
        other.name
    );
    assert_eq!(h.node().veths(), ["eth0"], "veths left");
    assert_eq!(reservations(&store(&h)).len(), 0, "allocations left");
    let fw = h.node().firewall();
    for word in ["RMASQ", "rmasq:", "CNI-DN-", net.v4, net.v6] {
        assert!(
            !fw.contains(word),
            "{word} left in the node's firewall:\n{fw}"
        );
    }
    let state = files_under(&h.dir().join("cni/rmasq"));
    let members: Vec<_> = state
        .iter()
        .filter(|f| {
            f.to_string_lossy().contains("/members/")
                || f.to_string_lossy().contains("/attachments/")
        })
        .collect();
    assert!(members.is_empty(), "rmasq state left: {members:?}");
    assert_called(&h, &other, "DEL");
    assert_root_untouched(&net);
}
