//! rhost-local: IPAM from local ranges, a drop-in for upstream host-local that shares its
//! on-disk store (both can serve one network at once), with per-call cost independent of the
//! number of reservations, crash-safe writes, idempotent ADD, GC and STATUS.
//!
//! - `config`: the `ipam` section, requested addresses, resolv.conf.
//! - `range`: ranges, range sets, round-robin iteration.
//! - `owner`, `netdir`: reservation files as upstream writes them, and reading them.
//! - `store`: upstream's files and lock, our index (`store/index`), crash safety.
//! - `ipam`: the verbs on a locked store.
//!
//! The crate's only public items are the plugin ([`HostLocal`], [`INFO`]) that `main.rs` runs.

mod config;
/// Not an API: for the fuzz targets in fuzz/.
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod ipam;
mod netdir;
mod owner;
mod range;
mod snapshot;
mod store;
mod testhook;

use cni_plugin::{Call, Plugin, PluginInfo};
use cni_types::error::Result;
use cni_types::{CniResult, IpConfig};

use crate::config::Config;
use crate::owner::Owner;
use crate::store::Store;

/// Read-only views of a config and the store, for the `rcni` CLI.
pub use inspect::{
    parse_config, reservations, IpamSummary, RangeSetSummary, RangeSummary, Reservation,
};

pub const INFO: PluginInfo = PluginInfo {
    name: "rhost-local",
    version: env!("CARGO_PKG_VERSION"),
    about:
        "IPAM plugin handing out addresses from local ranges; shares upstream host-local's store",
};

pub struct HostLocal;

/// Runs `f` on the locked store, then records the index whatever `f` returned.
fn with_store<T>(
    conf: &Config,
    create: bool,
    call: &Call,
    f: impl FnOnce(&mut Store) -> Result<T>,
) -> Result<Option<T>> {
    let Some(mut store) = Store::open(&conf.data_dir, &conf.network, create, &call.logger)? else {
        return Ok(None);
    };
    let out = f(&mut store);
    let closed = store.close();
    let out = out?;
    closed?;
    Ok(Some(out))
}

impl Plugin for HostLocal {
    fn add(&self, call: &Call) -> Result<CniResult> {
        // Everything that can be wrong with the input is found before the store is touched.
        let conf = call.config::<Config>()?;
        let requested = conf.assign(config::requested_ips(&call.conf, &call.args)?)?;
        let dns = conf.dns()?;
        let owner = Owner::new(&call.container_id, &call.ifname);
        let got = with_store(&conf, true, call, |s| {
            ipam::add(s, &conf, &owner, &requested)
        })?
        .unwrap_or_default();
        let ips = got
            .into_iter()
            .map(|(set, ip)| {
                let range = conf.range_sets[set]
                    .range_for(ip)
                    .expect("allocated from this set");
                IpConfig::new(range.with_prefix(ip), Some(range.gateway))
            })
            .collect();
        Ok(CniResult {
            ips,
            routes: conf.routes.clone(),
            dns,
            ..Default::default()
        })
    }

    fn del(&self, call: &Call) -> Result<()> {
        let conf = call.config::<Config>()?;
        let owner = Owner::new(&call.container_id, &call.ifname);
        let released = with_store(&conf, false, call, |s| ipam::del(s, &owner))?;
        if let Some(ips) = released.filter(|v| !v.is_empty()) {
            call.logger.debug(format!("released {ips:?}"));
        }
        Ok(())
    }

    fn check(&self, call: &Call) -> Result<()> {
        let conf = call.config::<Config>()?;
        let owner = Owner::new(&call.container_id, &call.ifname);
        let prev = call.prev_result()?;
        let checked = with_store(&conf, false, call, |s| {
            ipam::check(s, &conf, &owner, prev.as_ref())
        })?;
        match checked {
            Some(()) => Ok(()),
            None => Err(cni_types::CniError::new(
                cni_types::error::UNKNOWN_CONTAINER,
                format!(
                    "{owner} holds no address in network {:?}: its store {} does not exist",
                    conf.network,
                    conf.data_dir.join(&conf.network).display()
                ),
            )),
        }
    }

    fn gc(&self, call: &Call) -> Result<()> {
        let conf = call.config::<Config>()?;
        let valid = call.valid_attachments()?;
        let keep_after = cni_types::gc::keep_created_after(&call.raw)?;
        if let Some(r) = with_store(&conf, false, call, |s| ipam::gc(s, &valid, keep_after))? {
            call.logger.debug(format!(
                "GC kept {}, released {}, reclaimed {} leftovers",
                r.kept, r.released, r.leftovers
            ));
        }
        Ok(())
    }

    fn status(&self, call: &Call) -> Result<()> {
        ipam::status(&call.config::<Config>()?)
    }
}
