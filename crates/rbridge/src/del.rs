//! DEL: idempotent, and complete without the pod's netns. The host veth has a name derived from
//! the attachment, so it is deleted from the node (which removes the pod end with it); the
//! address is released through IPAM and the masquerade state through rmasq, both keyed by the
//! attachment, whatever is left of the pod.

use cni_netlink::Netlink;
use cni_types::delegate;
use cni_types::netns::NetNs;
use cni_types::{Call, CniError, Result, Verb};

use crate::config::BridgeConf;
use crate::{masq, names, runtime};

pub fn del(call: &Call) -> Result<()> {
    let conf = BridgeConf::from_call(call)?;
    // The release runs while the links go.
    let ipam = match &conf.ipam {
        Some(name) => Some(delegate::start(call, name, Verb::Del, &call.stdin)?),
        None => None,
    };
    // The masquerade teardown (firewall commands) runs beside the link deletion, which spends
    // most of its time waiting for the kernel to retire the devices.
    let (links, masq) = std::thread::scope(|s| {
        let masq =
            (conf.ip_masq && conf.ipam.is_some()).then(|| s.spawn(|| masq::teardown(call, &conf)));
        let links = runtime().and_then(|rt| rt.block_on(remove_links(call)));
        let masq = masq.map_or(Ok(()), |m| {
            m.join()
                .unwrap_or_else(|_| Err(CniError::io("masquerade teardown panicked")))
        });
        (links, masq)
    });
    if let Some(ipam) = ipam {
        ipam.finish()?;
    }
    links?;
    masq
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
