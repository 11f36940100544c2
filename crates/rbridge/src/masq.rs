//! `ipMasq` through the rmasq library: the one masquerading implementation of rcni. State is
//! keyed by (network, container ID, ifname), so DEL and GC need neither the netns nor the
//! pod's addresses.

use ipnet::IpNet;

use cni_plugin::Call;
use cni_types::{Attachment, Result};
use rmasq::{BackendKind, Masq, Options};

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
        backend: match conf.ip_masq_backend.as_deref() {
            Some("iptables") => Some(BackendKind::Iptables),
            Some("nftables") => Some(BackendKind::Nftables),
            _ => None,
        },
        // Upstream: everything leaving the pod's subnets is masqueraded, and ipMasq adds no
        // FORWARD rules.
        non_masquerade_cidrs: None,
        masq_link_local: false,
        allow_forward: false,
    }
}

/// One attachment's masquerade setup, owning what it needs, for a thread that may outlive the
/// call's borrows (the IPAM waiter, which is not joined: see `add`).
pub struct Setup {
    masq: Masq,
    network: String,
    container_id: String,
    ifname: String,
    options: Options,
}

impl Setup {
    pub fn new(call: &Call, conf: &BridgeConf) -> Setup {
        Setup {
            masq: masq(conf),
            network: conf.network.clone(),
            container_id: call.container_id.clone(),
            ifname: call.ifname.clone(),
            options: options(conf),
        }
    }

    pub fn run(&self, addrs: &[IpNet]) -> Result<()> {
        self.masq.setup(
            &self.network,
            &self.container_id,
            &self.ifname,
            addrs,
            &self.options,
        )
    }
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

pub fn gc(conf: &BridgeConf, valid: &[Attachment]) -> Result<()> {
    masq(conf).gc(&conf.network, valid)
}
