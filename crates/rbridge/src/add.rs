//! ADD. The IPAM plugin is started first and allocates while we build the bridge and the veth
//! (created straight into the pod under its final name, host end already on the bridge and up);
//! a thread takes its result, hands it over and writes the masquerade state while the addresses
//! and routes are configured, once the links are ready. Every step that changes state is undone
//! when a later one fails: the veth pair (which takes the pod's addresses and routes with it),
//! the masquerade state and, through IPAM DEL, the allocation.

use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, RecvError, TryRecvError};
use std::time::{Duration, Instant};

use futures::future::{join_all, try_join_all};
use ipnet::IpNet;

use cni_netlink::packet::link::InfoBridgePort;
use cni_netlink::{sysctl, BridgeSpec, Link, Netlink, PortVlan, RouteSpec, VethSpec};
use cni_plugin::delegate::{self, UndoAdd};
use cni_plugin::netns::NetNs;
use cni_plugin::Call;
use cni_types::error::{INTERFACE_EXISTS, INVALID_NETWORK_CONFIG, NETLINK_FAILURE};
use cni_types::{CniError, CniResult, Interface, Result, Route, Verb};

use crate::config::BridgeConf;
use crate::timeline::Timeline;
use crate::{masq, names};
use cni_netlink::runtime;

/// Index of the container interface in the result: bridge, host veth, container veth.
pub const CONTAINER_INDEX: usize = 2;

/// The IPAM ADD in flight and its undo. A thread of its own waits for the IPAM plugin, hands its
/// result over at once (the addresses and routes go on while it works on), then, with
/// `ipMasq`, does the masquerade setup (files and a firewall check, 0.3-0.5 ms) with the
/// addresses and hands its outcome over too. The thread is not joined: what it does after that
/// (exit, unmap its stacks) is off the critical path, and the process exit ends it. Dropped
/// without `keep`, it waits for that outcome, tears down the masquerade set up, then releases
/// the address with IPAM DEL: a failed ADD leaves neither behind, and the DEL never races the
/// ADD.
struct IpamAdd<'a> {
    call: &'a Call,
    conf: &'a BridgeConf,
    /// The IPAM plugin's answer and when it came.
    answer: Receiver<(Result<CniResult>, Instant)>,
    /// The masquerade setup's outcome, until taken.
    masquerade: Option<Receiver<Masquerade>>,
    /// The waiter ran the masquerade setup (undone on drop unless kept, i.e. `undo` is armed).
    masq_set_up: bool,
    undo: Option<UndoAdd<'a>>,
}

/// The masquerade setup's outcome and when it was done, when it ran.
type Masquerade = Option<(Result<()>, Instant)>;

/// How long [`recv_soon`] polls before it blocks.
const POLL_FOR: Duration = Duration::from_millis(2);

/// Receives from `rx`, polling for a while (yielding the CPU to anything else runnable) before
/// blocking. The waits here are a fraction of a millisecond, and a thread that blocks is woken
/// on a CPU that went idle meanwhile: in a VM, whose idle vCPUs halt, that wake-up alone took
/// 0.1-0.2 ms (rbridge's debug timeline, between the waiter's send and the receive).
fn recv_soon<T>(rx: &Receiver<T>) -> std::result::Result<T, RecvError> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) if start.elapsed() < POLL_FOR => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return rx.recv(),
        }
    }
}

impl<'a> IpamAdd<'a> {
    fn start(call: &'a Call, conf: &'a BridgeConf, name: &str) -> Result<IpamAdd<'a>> {
        // Spawned from the calling thread (see `delegate::start`), waited for on the waiter.
        let running = delegate::start(call, name, Verb::Add, &call.stdin)?;
        // Armed before the waiter exists: if it cannot be started, the IPAM plugin is reaped
        // (dropping `running`) and its allocation released.
        let undo = UndoAdd::new(call, name);
        let (answer_tx, answer) = sync_channel(1);
        let (masq_tx, masquerade) = sync_channel(1);
        let setup = conf.ip_masq.then(|| masq::Setup::new(call, conf));
        let version = call.version;
        std::thread::Builder::new()
            .spawn(move || {
                let result = running.finish_add(version);
                let addrs: Option<Vec<IpNet>> = match &result {
                    Ok(r) if !r.ips.is_empty() => Some(r.ips.iter().map(|ip| ip.address).collect()),
                    _ => None,
                };
                let _ = answer_tx.send((result, Instant::now()));
                let masq = match (setup, addrs) {
                    (Some(setup), Some(addrs)) => Some((setup.run(&addrs), Instant::now())),
                    _ => None,
                };
                let _ = masq_tx.send(masq);
            })
            .map_err(|e| CniError::io(format!("cannot start the IPAM waiter: {e}")))?;
        Ok(IpamAdd {
            call,
            conf,
            answer,
            masquerade: Some(masquerade),
            masq_set_up: false,
            undo: Some(undo),
        })
    }

    /// The IPAM plugin's answer, as soon as there is one. A failed IPAM ADD is kept: as
    /// upstream, it is not followed by IPAM DEL, which could release the address of a live
    /// attachment with the same container ID and ifname (an ADD retried after success).
    fn answer(&mut self) -> (Result<CniResult>, Instant) {
        let answer = recv_soon(&self.answer)
            .unwrap_or_else(|_| (Err(CniError::io("IPAM waiter panicked")), Instant::now()));
        if answer.0.is_err() {
            self.keep();
        }
        answer
    }

    /// Waits for the waiter's masquerade setup to be over (once; None after).
    fn masquerade(&mut self) -> Option<Masquerade> {
        let masq = recv_soon(&self.masquerade.take()?)
            .unwrap_or_else(|_| Some((Err(CniError::io("IPAM waiter panicked")), Instant::now())));
        self.masq_set_up = masq.is_some();
        Some(masq)
    }

    /// Keeps what IPAM and the masquerade setup did: on success, or when undoing it could hurt
    /// a live attachment (whose retried ADD got the same address and masquerade again).
    fn keep(&mut self) {
        if let Some(undo) = self.undo.take() {
            undo.disarm();
        }
    }
}

impl Drop for IpamAdd<'_> {
    fn drop(&mut self) {
        self.masquerade();
        if self.masq_set_up && self.undo.is_some() {
            if let Err(e) = masq::teardown(self.call, self.conf) {
                self.call
                    .logger
                    .debug(format!("undo: masquerade teardown: {e}"));
            }
        }
        // Then `undo` drops: IPAM DEL unless kept.
    }
}

/// What ADD changed, for undoing it on failure.
#[derive(Default)]
struct Undo {
    host_veth: Option<String>,
    /// CNI_IFNAME exists in the pod as our veth on the bridge: the ADD was retried for a live
    /// attachment, and IPAM may have just handed out its address again.
    live_attachment: bool,
    /// The bridge, when this ADD created it: a failed first ADD on a node leaves no empty bridge.
    bridge_created: Option<u32>,
}

impl Undo {
    async fn run(&self, node: &Netlink, call: &Call, conf: &BridgeConf) {
        if let Some(name) = &self.host_veth {
            if let Err(e) = node.delete_link(name).await {
                call.logger.debug(format!("undo: deleting {name}: {e}"));
            }
        }
        // Only while no pod uses it: a concurrent ADD that already found it keeps it, or, in
        // the narrow window before its veth exists, fails cleanly and is retried.
        if let Some(index) = self.bridge_created {
            match node.links().await {
                Ok(links) if !links.iter().any(|l| l.master == Some(index)) => {
                    if let Err(e) = node.delete_link(index).await {
                        call.logger
                            .debug(format!("undo: deleting bridge {}: {e}", conf.bridge));
                    }
                }
                _ => {}
            }
        }
    }
}

pub fn add(call: &Call) -> Result<CniResult> {
    let mut timeline = Timeline::new(call, "ADD");
    let conf = call.config::<BridgeConf>()?;
    conf.validate_for_add()?;
    let pod_ns = NetNs::open(call.netns_path()?)?;
    timeline.mark("conf");
    let mut attach_all = || {
        let mut ipam = match &conf.ipam {
            Some(name) => Some(IpamAdd::start(call, &conf, name)?),
            None => None,
        };
        timeline.mark("ipam-started");
        // After the spawn: the IPAM plugin is on the critical path, the runtime is not.
        let rt = runtime()?;
        let mut undo = Undo::default();
        let outcome = rt.block_on(async {
            let node = Netlink::open(None)?;
            let done = attach(
                call,
                &conf,
                &pod_ns,
                &node,
                ipam.as_mut(),
                &mut undo,
                &mut timeline,
            )
            .await;
            if done.is_err() {
                undo.run(&node, call, &conf).await;
            }
            done
        });
        if let (true, Some(ipam)) = (outcome.is_ok() || undo.live_attachment, ipam.as_mut()) {
            ipam.keep();
        }
        // Otherwise `ipam` drops here: masquerade setup waited for and torn down, IPAM DEL.
        drop(ipam);
        outcome
    };
    let outcome = attach_all();
    timeline.mark("done");
    timeline.log(call);
    outcome
}

/// Links first (while IPAM runs), then the layer-3 configuration from its result.
async fn attach(
    call: &Call,
    conf: &BridgeConf,
    pod_ns: &NetNs,
    node: &Netlink,
    ipam: Option<&mut IpamAdd<'_>>,
    undo: &mut Undo,
    timeline: &mut Timeline,
) -> Result<CniResult> {
    let layer3 = ipam.is_some();
    let (bridge, bridge_created) = node
        .ensure_bridge_with(&BridgeSpec {
            name: &conf.bridge,
            mtu: conf.mtu,
            vlan_filtering: conf.vlan_filtering(),
            mac: Some(names::random_mac()),
            promisc: conf.promisc,
            no_dad: !conf.enable_dad,
        })
        .await
        .map_err(|e| {
            prefix(
                vlan_unsupported(e, conf),
                &format!("bridge {}", conf.bridge),
            )
        })?;
    if bridge_created {
        undo.bridge_created = Some(bridge.index);
    }
    timeline.mark("bridge");
    // As upstream: the bridge's routes are ours, not a router's (no error if IPv6 is off).
    // Written only when the kernel reports another value: /proc/sys costs O(netns) per lookup.
    if bridge.conf.ipv6_accept_ra.is_some_and(|v| v != 0) {
        let _ = sysctl::set(&sysctl::iface_key("ipv6", &conf.bridge, "accept_ra"), "0");
    }

    let host = names::host_veth(&call.container_id, &call.ifname);
    let host_mac = names::random_mac();
    let cont_mac = conf.mac.unwrap_or_else(names::random_mac);
    create_veth(
        call, conf, pod_ns, node, &bridge, &host, host_mac, cont_mac, undo,
    )
    .await?;
    timeline.mark("veth");

    let pod = Netlink::open(Some(pod_ns))?;

    timeline.mark("pod-session");
    let gateway_addrs = async {
        if layer3 && conf.is_gateway && conf.vlan == 0 {
            node.addresses(Some(bridge.index)).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let ((), bridge_now, bridge_addrs, cont_link) = futures::try_join!(
        configure_port(node, conf, &host, cont_mac),
        node.link_by_index(bridge.index),
        gateway_addrs,
        pod_link_up(&pod, call, conf, layer3),
    )?;
    // The bridge's MAC as it is now that the port is on it (it follows its lowest port MAC
    // unless it was set explicitly).
    let bridge = bridge_now.unwrap_or(bridge);

    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: bridge.mac_string(),
                ..Default::default()
            },
            Interface {
                name: host.clone(),
                mac: cni_netlink::format_mac(&host_mac),
                ..Default::default()
            },
            Interface {
                name: call.ifname.clone(),
                mac: cni_netlink::format_mac(&cont_mac),
                sandbox: pod_ns.path().display().to_string(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };

    if let Some(ipam) = ipam {
        timeline.mark("links-ready");
        let (from_ipam, at) = ipam.answer();
        timeline.mark_at("ipam-result", at);
        let from_ipam = from_ipam?;
        if from_ipam.ips.is_empty() {
            return Err(CniError::new(
                cni_types::error::DELEGATE_FAILED,
                format!(
                    "IPAM plugin {} returned no IP address",
                    conf.ipam.as_deref().unwrap_or_default()
                ),
            ));
        }
        result.ips = from_ipam.ips;
        result.routes = from_ipam.routes;
        result.dns = from_ipam.dns;
        let gateways = calc_gateways(&mut result, conf);
        let cont_link = cont_link.ok_or_else(|| {
            CniError::new(
                NETLINK_FAILURE,
                format!(
                    "interface {} vanished from the pod right after it was created",
                    call.ifname
                ),
            )
        })?;
        let cont_index = cont_link.index;
        if result.ips.iter().any(|ip| !ip.is_v4()) {
            pod_ipv6_sysctls(&pod, pod_ns, &cont_link, conf.enable_dad).await?;
        }
        let ((), vlan_gateway) = futures::try_join!(
            configure_pod(&pod, &result, conf, cont_index, &call.ifname),
            configure_gateways(node, conf, &bridge, bridge_created, bridge_addrs, &gateways),
        )?;
        timeline.mark("addresses-routes");
        // The masquerade, set up meanwhile: in place before ADD returns, as upstream's.
        if let Some(Some((masq, at))) = ipam.masquerade() {
            timeline.mark_at("masquerade", at);
            masq?;
        }
        timeline.mark("ipam-joined");
        if let Some(v) = vlan_gateway {
            result.interfaces.push(Interface {
                name: v.name.clone(),
                mac: v.mac_string(),
                ..Default::default()
            });
        }
    }
    if let Some(dns) = call.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        // Upstream: DNS from the config wins over what IPAM returned.
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Creates the pair. EEXIST means either CNI_IFNAME exists in the pod (the call fails, nothing
/// touched) or a stale host veth of an earlier ADD of this attachment is left (removed, then the
/// pair is created again).
#[allow(clippy::too_many_arguments)]
async fn create_veth(
    call: &Call,
    conf: &BridgeConf,
    pod_ns: &NetNs,
    node: &Netlink,
    bridge: &Link,
    host: &str,
    host_mac: [u8; 6],
    cont_mac: [u8; 6],
    undo: &mut Undo,
) -> Result<()> {
    // The host end comes up later, with no IPv6 of its own (`set_port_up`): at 1,000 pods
    // every other pod's ADD then waits less for the kernel's rtnl lock (README, Benchmark), and
    // the node keeps no fe80::/64 route per pod. Bridged IPv6 is untouched.
    let spec = VethSpec {
        host_name: host,
        host_master: Some(bridge.index),
        host_up: false,
        host_mac: Some(host_mac),
        peer_name: &call.ifname,
        peer_ns: pod_ns,
        peer_mac: Some(cont_mac),
        mtu: conf.mtu,
    };
    let describe = || {
        format!(
            "creating veth {host} (on {}) with peer {} in {}",
            bridge.name,
            call.ifname,
            pod_ns.path().display()
        )
    };
    if let Err(e) = node.create_veth(&spec).await {
        if !cni_netlink::is_exists(&e) {
            return Err(cni_netlink::nl_err(describe(), e));
        }
        let pod = Netlink::open(Some(pod_ns))?;
        if pod.link_by_name(&call.ifname).await?.is_some() {
            undo.live_attachment = node
                .link_by_name(host)
                .await?
                .is_some_and(|l| l.master == Some(bridge.index));
            return Err(CniError::new(
                INTERFACE_EXISTS,
                format!(
                    "interface {} already exists in {}: DEL the attachment first, or choose another CNI_IFNAME",
                    call.ifname,
                    pod_ns.path().display()
                ),
            ));
        }
        call.logger
            .debug(format!("removing stale host veth {host} of an earlier ADD"));
        node.delete_link(host).await?;
        node.create_veth(&spec)
            .await
            .map_err(|e| cni_netlink::nl_err(describe(), e))?;
    }
    undo.host_veth = Some(host.to_string());
    node.set_port_up(host).await
}

/// For a pod that gets IPv6 addresses, before they are added: IPv6 on where the pod's netns has
/// it off (as upstream, on lo and the interface), and DAD as upstream sets it (off unless
/// `enableDad`), so the addresses are usable at once. An IPv4-only pod needs none of it, and
/// skipping it spares every ADD two /proc/sys lookups, which cost O(netns on the node) each
/// (about 1 ms per lookup with 1,000 pods). DAD failures are ignored as upstream does.
async fn pod_ipv6_sysctls(
    pod: &Netlink,
    pod_ns: &NetNs,
    cont: &Link,
    enable_dad: bool,
) -> Result<()> {
    let lo_disabled = match pod.link_by_name("lo").await? {
        Some(lo) => lo.conf.ipv6_disabled == Some(true),
        None => false,
    };
    let enable: Vec<String> = [
        (lo_disabled, "lo"),
        (cont.conf.ipv6_disabled == Some(true), cont.name.as_str()),
    ]
    .into_iter()
    .filter(|(off, _)| *off)
    .map(|(_, dev)| dev.to_string())
    .collect();
    let ifname = cont.name.clone();
    pod_ns.run(move || {
        for dev in &enable {
            sysctl::set(&sysctl::iface_key("ipv6", dev, "disable_ipv6"), "0")?;
        }
        let v6 = |leaf: &str, value: &str| {
            let _ = sysctl::set(&sysctl::iface_key("ipv6", &ifname, leaf), value);
        };
        if enable_dad {
            v6("enhanced_dad", "1");
            v6("accept_dad", "1");
        } else {
            v6("accept_dad", "0");
        }
        Ok::<(), CniError>(())
    })?
}

/// Brings the container interface up (unless disabled), with `arp_notify` on as upstream sets it
/// for layer 3 (over netlink, not /proc/sys), and returns the interface when layer 3 needs it;
/// both requests go out together.
async fn pod_link_up(
    pod: &Netlink,
    call: &Call,
    conf: &BridgeConf,
    layer3: bool,
) -> Result<Option<Link>> {
    let up = !conf.disable_container_interface;
    let set = async {
        if layer3 {
            pod.set_up_arp_notify(call.ifname.as_str(), up).await
        } else if up {
            pod.set_up(&call.ifname).await
        } else {
            Ok(())
        }
    };
    let link = async {
        if layer3 {
            pod.link_by_name(&call.ifname).await
        } else {
            Ok(None)
        }
    };
    let ((), link) = futures::try_join!(set, link)?;
    Ok(link)
}

/// Host-veth port settings: hairpin, isolation, VLANs, and the MAC spoof check (a locked port
/// that forwards only frames from MACs with a static FDB entry on it: the container's MAC).
async fn configure_port(
    node: &Netlink,
    conf: &BridgeConf,
    host: &str,
    cont_mac: [u8; 6],
) -> Result<()> {
    let mut options = Vec::new();
    if conf.hairpin {
        options.push(InfoBridgePort::HairpinMode(true));
    }
    if conf.port_isolation {
        options.push(InfoBridgePort::Isolated(true));
    }
    if conf.mac_spoof_check {
        options.push(InfoBridgePort::Learning(false));
        options.push(InfoBridgePort::Locked(true));
    }
    if !options.is_empty() {
        node.set_bridge_port(host, options).await?;
    }
    if conf.vlan == 0 && conf.vlan_trunk.is_empty() && !conf.mac_spoof_check {
        return Ok(());
    }
    let index = node
        .link_by_name(host)
        .await?
        .ok_or_else(|| {
            CniError::new(
                NETLINK_FAILURE,
                format!("host veth {host} vanished right after it was created"),
            )
        })?
        .index;
    configure_port_vlans(
        node,
        index,
        conf.vlan,
        &conf.vlan_trunk,
        conf.preserve_default_vlan,
    )
    .await
    .map_err(|e| vlan_unsupported(e, conf))?;
    if conf.mac_spoof_check {
        // One entry per VLAN the port may carry frames in, and one for a bridge that does not
        // filter VLANs.
        let mut vids: Vec<Option<u16>> = vec![None];
        vids.extend(node.port_vlans(index).await?.iter().map(|v| Some(v.vid)));
        try_join_all(
            vids.into_iter()
                .map(|vid| node.add_static_fdb(index, cont_mac, vid)),
        )
        .await?;
    }
    Ok(())
}

/// Access port (`vlan`: PVID, untagged) or trunk (`vlanTrunk`: tagged); without
/// `preserveDefaultVlan` the bridge's default VLAN is taken off the port first.
async fn configure_port_vlans(
    node: &Netlink,
    index: u32,
    vlan: u16,
    trunk: &[u16],
    preserve_default: bool,
) -> Result<()> {
    if vlan == 0 && trunk.is_empty() {
        return Ok(());
    }
    if !preserve_default {
        for v in node.port_vlans(index).await? {
            node.del_port_vlan(index, v.vid).await?;
        }
    }
    if vlan != 0 {
        node.add_port_vlan(
            index,
            PortVlan {
                vid: vlan,
                pvid: true,
                untagged: true,
            },
        )
        .await?;
    }
    try_join_all(trunk.iter().map(|&vid| {
        node.add_port_vlan(
            index,
            PortVlan {
                vid,
                pvid: false,
                untagged: false,
            },
        )
    }))
    .await?;
    Ok(())
}

/// Gateways per family, as upstream's calcGateways: every address points at the container
/// interface; with `isGateway` a missing gateway becomes the subnet's first address and the
/// gateway goes on the bridge with the pod address's prefix; with `isDefaultGateway` a default
/// route via it is added per family unless IPAM returned one with a gateway.
fn calc_gateways(result: &mut CniResult, conf: &BridgeConf) -> Vec<IpNet> {
    let mut gateways: Vec<IpNet> = Vec::new();
    let mut default_found = [false, false];
    for i in 0..result.ips.len() {
        let ip = &mut result.ips[i];
        ip.interface = Some(CONTAINER_INDEX);
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = first_address(&ip.address);
        }
        let (address, gateway) = (ip.address, ip.gateway);
        let family = usize::from(!address.addr().is_ipv4());
        let any: IpNet = if family == 0 {
            "0.0.0.0/0".parse().expect("constant")
        } else {
            "::/0".parse().expect("constant")
        };
        if conf.is_default_gateway && !default_found[family] {
            default_found[family] = result.routes.iter().any(|r| r.gw.is_some() && r.dst == any);
            if !default_found[family] {
                result.routes.push(Route::new(any, gateway));
                default_found[family] = true;
            }
        }
        if conf.is_gateway {
            if let Some(gw) = gateway.and_then(|g| IpNet::new(g, address.prefix_len()).ok()) {
                gateways.push(gw);
            }
        }
    }
    gateways
}

/// The subnet's first address (network address + 1), upstream's default gateway.
pub fn first_address(net: &IpNet) -> Option<IpAddr> {
    match net.trunc().addr() {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Addresses and routes in the pod: sent together, in order (addresses before the routes that
/// need them), so they cost one round trip. Routes without a gateway go via the first gateway of
/// their family, as upstream's ConfigureIface.
async fn configure_pod(
    pod: &Netlink,
    result: &CniResult,
    conf: &BridgeConf,
    index: u32,
    ifname: &str,
) -> Result<()> {
    let mine: Vec<_> = result.ips_of(CONTAINER_INDEX).collect();
    let gw_of = |v4: bool| {
        mine.iter()
            .filter_map(|ip| ip.gateway)
            .find(|g| g.is_ipv4() == v4)
    };
    let routes: Vec<RouteSpec> = result
        .routes
        .iter()
        .map(|r| {
            let mut spec = RouteSpec::new(
                r.dst,
                r.gw.or_else(|| gw_of(r.dst.addr().is_ipv4())),
                Some(index),
            );
            spec.table = r.table;
            spec.priority = r.priority;
            spec.mtu = r.mtu;
            spec.advmss = r.advmss;
            spec.scope = r.scope;
            spec
        })
        .collect();
    let addresses = join_all(
        mine.iter()
            .map(|ip| pod.add_address(index, ip.address, conf.enable_dad)),
    );
    let route_adds = join_all(routes.iter().map(|r| pod.add_route(r)));
    let (addresses, route_adds) = futures::join!(addresses, route_adds);
    for r in addresses {
        r.map_err(|e| prefix(e, &format!("configuring {ifname} in the pod")))?;
    }
    for r in route_adds {
        r.map_err(|e| prefix(e, &format!("configuring {ifname} in the pod")))?;
    }
    Ok(())
}

/// Gateway addresses on the bridge (or on its VLAN gateway interface) and forwarding on the
/// node. Returns the VLAN gateway interface when one is used.
async fn configure_gateways(
    node: &Netlink,
    conf: &BridgeConf,
    bridge: &Link,
    bridge_created: bool,
    bridge_addrs: Option<Vec<cni_netlink::Address>>,
    gateways: &[IpNet],
) -> Result<Option<Link>> {
    if gateways.is_empty() {
        return Ok(None);
    }
    let (target, existing, vlan_gateway) = if conf.vlan != 0 {
        let link = ensure_vlan_gateway(node, bridge, conf).await?;
        let addrs = node.addresses(Some(link.index)).await?;
        (link.clone(), addrs, Some(link))
    } else {
        (bridge.clone(), bridge_addrs.unwrap_or_default(), None)
    };
    let mut existing = existing;
    let mut added = false;
    for gw in gateways {
        added |=
            ensure_gateway_address(node, &target, &mut existing, *gw, conf.force_address).await?;
    }
    if added && vlan_gateway.is_none() && !bridge_created {
        // Upstream sets the bridge's MAC to itself once it is a gateway, so it stops following
        // the lowest MAC of its ports; a bridge we created has a set MAC already.
        node.set_mac(bridge.index, &bridge.mac).await?;
    }
    // Forwarding on, as upstream; checked over netlink first, since the /proc/sys path costs
    // O(netns on the node) per lookup and is needed only on a node's first gateway.
    for (v6, key) in [
        (false, "net.ipv4.ip_forward"),
        (true, "net.ipv6.conf.all.forwarding"),
    ] {
        if gateways.iter().any(|g| g.addr().is_ipv6() == v6)
            && cni_netlink::netconf::forwarding_all(v6) != Some(true)
        {
            sysctl::set(key, "1")?;
        }
    }
    Ok(vlan_gateway)
}

/// Upstream's ensureAddr: the gateway address present is fine; another IPv4 address, or an IPv6
/// one overlapping it, is an error unless `forceAddress` (then it is replaced). Safe when ADDs
/// race: the loser of two identical adds gets EEXIST, which counts as present. Returns whether
/// this call added it.
async fn ensure_gateway_address(
    node: &Netlink,
    link: &Link,
    existing: &mut Vec<cni_netlink::Address>,
    gw: IpNet,
    force: bool,
) -> Result<bool> {
    let v4 = gw.addr().is_ipv4();
    let mut conflicting = Vec::new();
    for a in existing.iter().filter(|a| a.net.addr().is_ipv4() == v4) {
        if a.net == gw {
            return Ok(false);
        }
        if v4 || a.net.contains(&gw.addr()) || gw.contains(&a.net.addr()) {
            if !force {
                return Err(CniError::new(
                    INVALID_NETWORK_CONFIG,
                    format!(
                        "{:?} already has an IP address different from {gw} ({}): set \"forceAddress\": true to replace it",
                        link.name, a.net
                    ),
                ));
            }
            conflicting.push(a.net);
        }
    }
    for old in conflicting {
        node.del_address(link.index, old).await?;
        existing.retain(|a| a.net != old);
    }
    // Without DAD: the gateway comes from IPAM, and a tentative gateway would drop the pods'
    // first packets for a second or more.
    let added = node
        .add_address(link.index, gw, false)
        .await
        .map_err(|e| prefix(e, &format!("setting gateway address on {}", link.name)))?;
    existing.push(cni_netlink::Address {
        index: link.index,
        net: gw,
        link_scope: false,
    });
    Ok(added)
}

/// Upstream's VLAN gateway: interface `<bridge>.<vlan>`, the peer of a veth whose other end is
/// an access port of the VLAN on the bridge; the gateway address goes on it. Shared by every
/// pod of the VLAN and never removed by DEL, as upstream.
async fn ensure_vlan_gateway(node: &Netlink, bridge: &Link, conf: &BridgeConf) -> Result<Link> {
    let name = format!("{}.{}", bridge.name, conf.vlan);
    if let Some(l) = node.link_by_name(&name).await? {
        if !l.up {
            node.set_up(l.index).await?;
        }
        return Ok(l);
    }
    let host = names::vlan_gateway_veth(&bridge.name, conf.vlan);
    let node_ns = NetNs::current()?;
    let spec = VethSpec {
        host_name: &host,
        host_master: Some(bridge.index),
        host_up: true,
        host_mac: None,
        peer_name: &name,
        peer_ns: &node_ns,
        peer_mac: None,
        mtu: Some(bridge.mtu),
    };
    match node.create_veth(&spec).await {
        Ok(()) => {
            let index = node
                .link_by_name(&host)
                .await?
                .map(|l| l.index)
                .unwrap_or_default();
            configure_port_vlans(node, index, conf.vlan, &[], conf.preserve_default_vlan).await?;
        }
        // Another ADD created it a moment ago.
        Err(e) if cni_netlink::is_exists(&e) => {}
        Err(e) => {
            return Err(cni_netlink::nl_err(
                format!("creating VLAN gateway interface {name}"),
                e,
            ))
        }
    }
    node.set_up(&name).await?;
    node.link_by_name(&name).await?.ok_or_else(|| {
        CniError::new(
            NETLINK_FAILURE,
            format!("VLAN gateway interface {name} vanished right after it was created"),
        )
    })
}

/// Kernels built without CONFIG_BRIDGE_VLAN_FILTERING refuse VLAN settings with EOPNOTSUPP;
/// say so instead of the bare errno.
fn vlan_unsupported(mut e: CniError, conf: &BridgeConf) -> CniError {
    if conf.vlan_filtering() && e.msg.contains("os error 95") {
        e.msg = format!(
            "{}: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING), which vlan and vlanTrunk need",
            e.msg
        );
    }
    e
}

fn prefix(mut e: CniError, what: &str) -> CniError {
    e.msg = format!("{what}: {}", e.msg);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_types::IpConfig;

    fn conf(gw: bool, default_gw: bool) -> BridgeConf {
        BridgeConf {
            network: "n".into(),
            bridge: "cni0".into(),
            is_gateway: gw || default_gw,
            is_default_gateway: default_gw,
            force_address: false,
            ip_masq: false,
            ip_masq_backend: None,
            ip_masq_state_dir: None,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            vlan_trunk: vec![],
            preserve_default_vlan: true,
            mac_spoof_check: false,
            enable_dad: false,
            disable_container_interface: false,
            port_isolation: false,
            mac: None,
            ipam: Some("host-local".into()),
        }
    }

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig::new(a.parse().unwrap(), gw.map(|g| g.parse().unwrap()))
    }

    #[test]
    fn gateways_and_default_routes_as_upstream() {
        let mut r = CniResult {
            ips: vec![
                ip("10.22.0.5/16", None),
                ip("10.23.0.5/24", Some("10.23.0.254")),
                ip("fd00:22::5/64", None),
            ],
            ..Default::default()
        };
        let gws = calc_gateways(&mut r, &conf(false, true));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(r.ips[0].gateway, Some("10.22.0.1".parse().unwrap()));
        let gws: Vec<String> = gws.iter().map(ToString::to_string).collect();
        assert_eq!(gws, ["10.22.0.1/16", "10.23.0.254/24", "fd00:22::1/64"]);
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            ["0.0.0.0/0 Some(10.22.0.1)", "::/0 Some(fd00:22::1)"]
        );
    }

    #[test]
    fn default_route_from_ipam_is_kept() {
        let mut r = CniResult {
            ips: vec![ip("10.22.0.5/16", Some("10.22.0.1"))],
            routes: vec![Route::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.22.0.99".parse().unwrap()),
            )],
            ..Default::default()
        };
        calc_gateways(&mut r, &conf(false, true));
        assert_eq!(r.routes.len(), 1);
        // Without isGateway there is no gateway to compute and nothing goes on the bridge.
        let mut r = CniResult {
            ips: vec![ip("10.22.0.5/16", None)],
            ..Default::default()
        };
        assert!(calc_gateways(&mut r, &conf(false, false)).is_empty());
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn first_addresses() {
        let f = |s: &str| first_address(&s.parse().unwrap()).unwrap().to_string();
        assert_eq!(f("10.22.3.4/16"), "10.22.0.1");
        assert_eq!(f("fd00::99/64"), "fd00::1");
    }
}
