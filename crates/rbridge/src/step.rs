//! What every step of an ADD shares: the call's context, and the record of what it changed so
//! that a failure undoes it.

use cni_netlink::Netlink;
use cni_plugin::netns::NetNs;
use cni_plugin::Call;
use cni_types::CniError;

use crate::config::BridgeConf;
use crate::masq;

/// The call, its config, the pod's netns and the netlink session on the node.
pub struct Ctx<'a> {
    pub call: &'a Call,
    pub conf: &'a BridgeConf,
    pub pod_ns: &'a NetNs,
    pub node: &'a Netlink,
}

/// What ADD changed, undone in reverse order when a later step fails.
#[derive(Default)]
pub struct Undo {
    /// The bridge, when this ADD created it: a failed first ADD on a node leaves no empty bridge.
    pub bridge_created: Option<u32>,
    pub host_veth: Option<String>,
    /// CNI_IFNAME exists in the pod as our veth on the bridge: the ADD was retried for a live
    /// attachment, and IPAM may have just handed out its address again.
    pub live_attachment: bool,
    /// The masquerade setup ran (undone even if it failed half way).
    pub masquerade: bool,
}

impl Undo {
    /// The masquerade state, the veth pair (which takes the pod's addresses and routes with
    /// it), then the bridge if this ADD created it and no pod uses it.
    pub async fn run(&self, ctx: &Ctx<'_>) {
        let debug = |what: String| ctx.call.logger.debug(format!("undo: {what}"));
        if self.masquerade {
            if let Err(e) = masq::teardown(ctx.call, ctx.conf) {
                debug(format!("masquerade teardown: {e}"));
            }
        }
        if let Some(name) = &self.host_veth {
            if let Err(e) = ctx.node.delete_link(name).await {
                debug(format!("deleting {name}: {e}"));
            }
        }
        // Only while no pod uses it: a concurrent ADD that already found it keeps it, or, in
        // the narrow window before its veth exists, fails cleanly and is retried.
        if let Some(index) = self.bridge_created {
            match ctx.node.links().await {
                Ok(links) if !links.iter().any(|l| l.master == Some(index)) => {
                    if let Err(e) = ctx.node.delete_link(index).await {
                        debug(format!("deleting bridge {}: {e}", ctx.conf.bridge));
                    }
                }
                _ => {}
            }
        }
    }
}

/// `e` with `what` (the step and the object) in front of its message.
pub fn prefix(mut e: CniError, what: &str) -> CniError {
    e.msg = format!("{what}: {}", e.msg);
    e
}
