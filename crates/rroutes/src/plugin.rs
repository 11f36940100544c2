//! The CNI verbs.

use cni_netlink::Netlink;
use cni_plugin::netns::NetNs;
use cni_plugin::{Call, Plugin, PluginConfig};
use cni_types::{CniResult, Result};

use crate::conf::Conf;
use crate::host;
use crate::pod::Pod;

pub struct RRoutes;

impl PluginConfig for Conf {
    fn from_call(call: &Call) -> Result<Conf> {
        Conf::from_value(&call.raw)
    }
}

impl Plugin for RRoutes {
    fn add(&self, call: &Call) -> Result<CniResult> {
        let conf = call.config::<Conf>()?;
        let prev = call.require_prev_result("rroutes")?;
        let path = call.netns_path()?;
        let ns = NetNs::open(path)?;
        cni_netlink::runtime()?.block_on(async {
            // Node first: a failure there leaves the pod untouched.
            if !conf.host_routes.is_empty() {
                let node = Netlink::open(None)?;
                let mut report = host::Report::default();
                host::ensure(&node, &conf.host_routes, conf.protocol, &mut report).await?;
            }
            let pod = Pod::open(
                Netlink::open(Some(&ns))?,
                &call.ifname,
                path.display().to_string(),
            )
            .await?;
            pod.apply(&conf, prev).await
        })
    }

    /// Nothing to undo: the pod's routes go with its netns, and hostRoutes serve every pod.
    fn del(&self, _call: &Call) -> Result<()> {
        Ok(())
    }

    fn check(&self, call: &Call) -> Result<()> {
        let conf = call.config::<Conf>()?;
        if conf.skip_check {
            return Ok(());
        }
        let result = call.require_prev_result("rroutes")?;
        let path = call.netns_path()?;
        let ns = NetNs::open(path)?;
        cni_netlink::runtime()?.block_on(async {
            host::check(&Netlink::open(None)?, &conf.host_routes).await?;
            let pod = Pod::open(
                Netlink::open(Some(&ns))?,
                &call.ifname,
                path.display().to_string(),
            )
            .await?;
            pod.check(&conf, &result).await
        })
    }
}
