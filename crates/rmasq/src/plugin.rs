//! The chained CNI plugin over [`Masq`].

use std::path::PathBuf;

use cni_plugin::{Call, Plugin, PluginConfig, PluginInfo};
use cni_types::config::Flag;
use cni_types::error::{CniError, Result, INVALID_NETWORK_CONFIG};
use cni_types::CniResult;
use ipnet::IpNet;
use serde::Deserialize;

use crate::class::{BackendKind, Options};
use crate::masq::{Masq, DEFAULT_STATE_DIR};

pub const INFO: PluginInfo = PluginInfo {
    name: "rmasq",
    version: env!("CARGO_PKG_VERSION"),
    about: "chained plugin: masquerade pod traffic leaving the cluster network",
};

/// rmasq's own keys, as written.
#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default, rename = "nonMasqueradeCIDRs")]
    non_masquerade_cidrs: Option<Vec<IpNet>>,
    #[serde(default, rename = "masqLinkLocal")]
    masq_link_local: Option<Flag>,
    #[serde(default)]
    backend: Option<BackendKind>,
    #[serde(default, rename = "allowForward")]
    allow_forward: Option<Flag>,
    #[serde(default, rename = "stateDir")]
    state_dir: Option<PathBuf>,
}

pub struct Rmasq;

/// The masquerade state and what the config asks of it.
pub(crate) struct Conf {
    pub(crate) masq: Masq,
    pub(crate) opts: Options,
}

impl PluginConfig for Conf {
    fn from_call(call: &Call) -> Result<Conf> {
        let raw: Raw = call.decode()?;
        let opts = Options {
            backend: raw.backend,
            non_masquerade_cidrs: raw.non_masquerade_cidrs,
            masq_link_local: raw.masq_link_local.is_some_and(|f| f.0),
            allow_forward: raw.allow_forward.is_none_or(|f| f.0),
        };
        let dir = raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Ok(Conf {
            masq: Masq::new(dir),
            opts,
        })
    }
}

/// The pod's addresses from prevResult; code 7 if there are none.
pub(crate) fn pod_addrs(prev: &CniResult) -> Result<Vec<IpNet>> {
    let addrs: Vec<IpNet> = prev.ips.iter().map(|ip| ip.address).collect();
    if addrs.is_empty() {
        return Err(CniError::new(
            INVALID_NETWORK_CONFIG,
            "prevResult has no IP address: put rmasq after a plugin that assigns the pod's addresses (e.g. bridge with IPAM)",
        ));
    }
    Ok(addrs)
}

impl Plugin for Rmasq {
    fn add(&self, call: &Call) -> Result<CniResult> {
        let Conf { masq, opts } = call.config()?;
        let prev = call.require_prev_result(INFO.name)?;
        let addrs = pod_addrs(&prev)?;
        masq.setup(
            &call.conf.name,
            &call.container_id,
            &call.ifname,
            &addrs,
            &opts,
        )?;
        Ok(prev)
    }

    /// Works from the recorded state alone: no netns, no prevResult needed.
    fn del(&self, call: &Call) -> Result<()> {
        let Conf { masq, .. } = call.config()?;
        masq.teardown(&call.conf.name, &call.container_id, &call.ifname)
    }

    fn check(&self, call: &Call) -> Result<()> {
        let Conf { masq, opts } = call.config()?;
        let prev = call.require_prev_result(INFO.name)?;
        let addrs = pod_addrs(&prev)?;
        masq.check(
            &call.conf.name,
            &call.container_id,
            &call.ifname,
            Some(&addrs),
            &opts,
        )
    }

    fn gc(&self, call: &Call) -> Result<()> {
        let Conf { masq, .. } = call.config()?;
        let keep_after = cni_types::gc::keep_created_after(&call.raw)?;
        masq.gc(&call.conf.name, &call.valid_attachments()?, keep_after)
    }

    fn status(&self, call: &Call) -> Result<()> {
        let Conf { masq, opts } = call.config()?;
        masq.status(&opts)
    }
}

/// The state dir and options a config asks for, read as ADD reads them (see `inspect`).
pub(crate) fn read_config(call: &Call) -> Result<(PathBuf, Options)> {
    let conf = Conf::from_call(call)?;
    Ok((conf.masq.state_dir().to_path_buf(), conf.opts))
}

#[cfg(test)]
mod tests;
