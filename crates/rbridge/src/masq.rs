//! `ipMasq` through the rmasq library: the one masquerading implementation of rcni. State is
//! keyed by (network, container ID, ifname), so DEL and GC need neither the netns nor the
//! pod's addresses.

use ipnet::IpNet;

use cni_plugin::Call;
use cni_types::{Attachment, Result};
use rmasq::{Masq, Options};

use crate::config::BridgeConf;

fn masq(conf: &BridgeConf) -> Masq {
    Masq::new(
        conf.ip_masq_state_dir
            .clone()
            .unwrap_or_else(|| rmasq::DEFAULT_STATE_DIR.into()),
    )
}

fn options(conf: &BridgeConf) -> Options {
    Options {
        backend: conf.ip_masq_backend,
        // Upstream: everything leaving the pod's subnets is masqueraded, and ipMasq adds no
        // FORWARD rules.
        non_masquerade_cidrs: None,
        masq_link_local: false,
        allow_forward: false,
    }
}

/// Masquerades the pod's addresses (before ADD returns, as upstream's `ipMasq`).
pub fn setup(call: &Call, conf: &BridgeConf, addrs: &[IpNet]) -> Result<()> {
    masq(conf).setup(
        &conf.network,
        &call.container_id,
        &call.ifname,
        addrs,
        &options(conf),
    )
}

pub fn teardown(call: &Call, conf: &BridgeConf) -> Result<()> {
    masq(conf).teardown(&conf.network, &call.container_id, &call.ifname)
}

pub fn check(call: &Call, conf: &BridgeConf, addrs: &[IpNet]) -> Result<()> {
    masq(conf).check(
        &conf.network,
        &call.container_id,
        &call.ifname,
        Some(addrs),
        &options(conf),
    )
}

pub fn gc(
    conf: &BridgeConf,
    valid: &[Attachment],
    keep_after: Option<std::time::SystemTime>,
) -> Result<()> {
    masq(conf).gc(&conf.network, valid, keep_after)
}
