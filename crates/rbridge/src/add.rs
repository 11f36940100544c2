//! ADD, as upstream's cmdAdd: config; the IPAM plugin started (it allocates while the links are
//! built); the bridge and the veth pair; IPAM's result; gateways, addresses and routes; the
//! masquerade; the result. Every step that changes state records its undo, and a failure runs
//! them in reverse: the masquerade state, the veth pair (which takes the pod's addresses and
//! routes with it), a bridge this ADD created, and through IPAM DEL the allocation.

use ipnet::IpNet;

use cni_netlink::{runtime, Netlink};
use cni_plugin::netns::NetNs;
use cni_plugin::Call;
use cni_types::error::NETLINK_FAILURE;
use cni_types::{CniError, CniResult, Interface, Result};

use crate::config::BridgeConf;
use crate::gateway::{calc_gateways, configure_gateways};
use crate::ipam::IpamAdd;
use crate::layer3::{configure_pod, pod_ipv6_sysctls};
use crate::links::{self, Links};
use crate::masq;
use crate::step::{Ctx, Undo};
use crate::timeline::Timeline;

pub fn add(call: &Call) -> Result<CniResult> {
    let mut timeline = Timeline::new(call, "ADD");
    let conf: BridgeConf = call.config()?;
    conf.validate_for_add()?;
    let pod_ns = NetNs::open(call.netns_path()?)?;
    timeline.mark("conf");
    let outcome = attach(call, &conf, &pod_ns, &mut timeline);
    timeline.mark("done");
    timeline.log(call);
    outcome
}

/// The ADD's steps, and their undo on failure.
fn attach(
    call: &Call,
    conf: &BridgeConf,
    pod_ns: &NetNs,
    timeline: &mut Timeline,
) -> Result<CniResult> {
    let mut ipam = match &conf.ipam {
        Some(name) => Some(IpamAdd::start(call, name)?),
        None => None,
    };
    timeline.mark("ipam-started");
    // After the spawn: the IPAM plugin is on the critical path, the runtime is not.
    let rt = runtime()?;
    let mut undo = Undo::default();
    let outcome = rt.block_on(async {
        let node = Netlink::open(None)?;
        let ctx = Ctx {
            call,
            conf,
            pod_ns,
            node: &node,
        };
        let done = configure(&ctx, ipam.as_mut(), &mut undo, timeline).await;
        if done.is_err() {
            undo.run(&ctx).await;
        }
        done
    });
    if let (true, Some(ipam)) = (outcome.is_ok() || undo.live_attachment, ipam.as_mut()) {
        ipam.keep();
    }
    // Otherwise `ipam` drops here: IPAM DEL.
    outcome
}

/// Links first (while IPAM runs), then the layer-3 configuration from its result.
async fn configure(
    ctx: &Ctx<'_>,
    ipam: Option<&mut IpamAdd<'_>>,
    undo: &mut Undo,
    timeline: &mut Timeline,
) -> Result<CniResult> {
    let links = links::create(ctx, ipam.is_some(), undo, timeline).await?;
    let mut result = CniResult {
        interfaces: links.interfaces(ctx),
        ..Default::default()
    };
    if let Some(ipam) = ipam {
        timeline.mark("links-ready");
        let from_ipam = ipam.result(ctx.call)?;
        timeline.mark("ipam-result");
        result.ips = from_ipam.ips;
        result.routes = from_ipam.routes;
        result.dns = from_ipam.dns;
        if let Some(vlan_gateway) = layer3(ctx, &links, &mut result).await? {
            result.interfaces.push(vlan_gateway);
        }
        timeline.mark("addresses-routes");
        if ctx.conf.ip_masq {
            // In place before ADD returns, as upstream's.
            undo.masquerade = true;
            let addrs: Vec<IpNet> = result.ips.iter().map(|ip| ip.address).collect();
            masq::setup(ctx.call, ctx.conf, &addrs)?;
            timeline.mark("masquerade");
        }
    }
    if let Some(dns) = ctx.call.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        // Upstream: DNS from the config wins over what IPAM returned.
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Gateways, the pod's addresses and routes, and the gateway addresses on the node: the pod's
/// and the node's requests go out together. Returns the VLAN gateway interface when one is used.
async fn layer3(ctx: &Ctx<'_>, links: &Links, result: &mut CniResult) -> Result<Option<Interface>> {
    let (call, conf) = (ctx.call, ctx.conf);
    let gateways = calc_gateways(result, conf);
    let cont = links.cont.as_ref().ok_or_else(|| {
        CniError::new(
            NETLINK_FAILURE,
            format!(
                "interface {} vanished from the pod right after it was created",
                call.ifname
            ),
        )
    })?;
    if result.ips.iter().any(|ip| !ip.is_v4()) {
        pod_ipv6_sysctls(&links.pod, ctx.pod_ns, cont, conf.enable_dad).await?;
    }
    let ((), vlan_gateway) = futures::try_join!(
        configure_pod(&links.pod, result, conf, cont.index, &call.ifname),
        configure_gateways(
            ctx.node,
            conf,
            &links.bridge,
            links.bridge_created,
            links.bridge_addrs.clone(),
            &gateways
        ),
    )?;
    Ok(vlan_gateway.map(|v| Interface {
        name: v.name.clone(),
        mac: v.mac_string(),
        ..Default::default()
    }))
}
