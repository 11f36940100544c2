//! DEL: idempotent, and complete without the pod's netns. The host veth has a name derived from
//! the attachment, so it is deleted from the node (which removes the pod end with it); the
//! address is released through IPAM and the masquerade state through rmasq, both keyed by the
//! attachment, whatever is left of the pod.

use std::time::Instant;

use cni_netlink::Netlink;
use cni_plugin::delegate;
use cni_plugin::netns::NetNs;
use cni_plugin::Call;
use cni_types::{CniError, Result};

use crate::config::BridgeConf;
use crate::timeline::Timeline;
use crate::{masq, names};
use cni_netlink::runtime;

pub fn del(call: &Call) -> Result<()> {
    let mut timeline = Timeline::new(call, "DEL");
    let conf = call.config::<BridgeConf>()?;
    let done = |r: Result<()>| (r, Instant::now());
    let (ipam, links, masq) = std::thread::scope(|s| {
        // The links go first: deleting a veth waits on the kernel (an RCU barrier) longer than
        // anything else DEL does, so the IPAM release and the masquerade teardown run beside it
        // rather than before it.
        let links = s.spawn(|| done(runtime().and_then(|rt| rt.block_on(remove_links(call)))));
        let masq = (conf.ip_masq && conf.ipam.is_some())
            .then(|| s.spawn(|| done(masq::teardown(call, &conf))));
        let ipam = done(
            conf.ipam
                .as_ref()
                .map_or(Ok(()), |name| delegate::del(call, name)),
        );
        let join = |h: std::thread::ScopedJoinHandle<'_, (Result<()>, Instant)>, what: &str| {
            h.join()
                .unwrap_or_else(|_| done(Err(CniError::io(format!("{what} panicked")))))
        };
        let links = join(links, "link deletion");
        let masq = masq.map(|m| join(m, "masquerade teardown"));
        (ipam, links, masq)
    });
    timeline.mark_at("ipam", ipam.1);
    timeline.mark_at("links", links.1);
    if let Some(m) = &masq {
        timeline.mark_at("masquerade", m.1);
    }
    timeline.log(call);
    ipam.0.and(links.0).and(masq.map_or(Ok(()), |m| m.0))
}

async fn remove_links(call: &Call) -> Result<()> {
    let node = Netlink::open(None)?;
    let host = names::host_veth(&call.container_id, &call.ifname);
    if node.delete_link(&host).await? {
        return Ok(());
    }
    // Not found under our name: already gone, or made by upstream bridge (random host name)
    // before the node switched plugins. As upstream, remove CNI_IFNAME in the pod if the pod is
    // still there, but only a veth: never a device some other plugin put under that name.
    let Some(path) = &call.netns else {
        return Ok(());
    };
    let ns = match NetNs::open(path) {
        Ok(ns) => ns,
        Err(e) => {
            call.logger.debug(format!(
                "DEL: pod netns unavailable ({e}); nothing left to remove there"
            ));
            return Ok(());
        }
    };
    let pod = Netlink::open(Some(&ns))?;
    if let Some(l) = pod.link_by_name(&call.ifname).await? {
        if l.kind.as_deref() == Some("veth") {
            pod.delete_link(l.index).await?;
        }
    }
    Ok(())
}
