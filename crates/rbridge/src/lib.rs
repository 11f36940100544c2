//! rbridge: the bridge plugin (Linux bridge + veth), a drop-in for upstream `bridge`: the same
//! config keys and result (but for MACs and veth names), a faster ADD, and a DEL that cleans up
//! without the pod's netns.
//!
//! - `config`: the config keys, validated before anything changes.
//! - `add`: ADD's steps in order, over `ipam` (the IPAM job), `links` (bridge, veth pair,
//!   port), `gateway` (calcGateways, gateway addresses, forwarding), `layer3` (the pod's
//!   addresses and routes), `vlan` and `masq` (`ipMasq` through the rmasq library); `step` holds
//!   what the steps share and their undo.
//! - `del`, `check`: the other verbs; GC and STATUS go to IPAM (GC to the masquerade too).
//! - `names`: the host veth name derived from the attachment, MACs chosen by us.
//! - `timeline`: the debug log's milestones of a call.
//!
//! The crate's only public items are the plugin ([`Bridge`], [`INFO`]) that `main.rs` runs.

mod add;
mod check;
mod config;
mod del;
/// Not an API: for the fuzz targets in fuzz/.
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod inspect;
mod ipam;
mod layer3;
mod links;
mod masq;
mod names;
mod step;
mod timeline;
mod vlan;

use cni_plugin::delegate;
use cni_plugin::{Call, Plugin, PluginInfo};
use cni_types::{CniResult, Result};

use config::BridgeConf;

/// Read-only views of a config, for the `rcni` CLI.
pub use inspect::{host_veth, parse_config, vlan_gateway_veth, BridgeSummary};

pub const INFO: PluginInfo = PluginInfo {
    name: "rbridge",
    version: env!("CARGO_PKG_VERSION"),
    about: "bridge plugin: pods on a Linux bridge through veth pairs (drop-in for bridge)",
};

pub struct Bridge;

/// Whether IPAM plugin `name` speaks spec 1.1.0 (its VERSION), which GC needs.
fn ipam_has_gc(call: &Call, name: &str) -> Result<bool> {
    let out = delegate::exec(
        call,
        name,
        cni_types::Verb::Version,
        br#"{"cniVersion":"1.1.0"}"#,
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| cni_types::CniError::decode(format!("{name} VERSION: {e}")))?;
    Ok(v["supportedVersions"]
        .as_array()
        .is_some_and(|l| l.iter().any(|s| s == "1.1.0")))
}

impl Plugin for Bridge {
    fn add(&self, call: &Call) -> Result<CniResult> {
        add::add(call)
    }

    fn del(&self, call: &Call) -> Result<()> {
        del::del(call)
    }

    fn check(&self, call: &Call) -> Result<()> {
        check::check(call)
    }

    /// IPAM's GC, and masquerade state of attachments not in the valid list.
    fn gc(&self, call: &Call) -> Result<()> {
        let conf: BridgeConf = call.config()?;
        let valid = call.valid_attachments()?;
        let ipam = match &conf.ipam {
            Some(name) if ipam_has_gc(call, name)? => Some(delegate::start(
                call,
                name,
                cni_types::Verb::Gc,
                &call.stdin,
            )?),
            // An IPAM plugin without GC (upstream host-local before spec 1.1.0), skipped as
            // libcni skips such plugins: the DELs of stale attachments release its addresses.
            Some(name) => {
                call.logger
                    .debug(format!("GC: IPAM {name} has none (spec 1.1.0)"));
                None
            }
            None => None,
        };
        let masq = if conf.ip_masq {
            cni_types::gc::keep_created_after(&call.raw)
                .and_then(|keep_after| masq::gc(&conf, &valid, keep_after))
        } else {
            Ok(())
        };
        if let Some(ipam) = ipam {
            ipam.finish()?;
        }
        masq
    }

    fn status(&self, call: &Call) -> Result<()> {
        match call.config::<BridgeConf>()?.ipam {
            Some(name) => delegate::status(call, &name),
            None => Ok(()),
        }
    }
}
