//! rroutes: the chained CNI plugin for routes, in the pod and towards the other nodes.
//!
//! In the pod, on CNI_IFNAME only, in this order: `flushRoutes`, `flushGateway`, `delRoutes`,
//! `addRoutes` (`conf` has the keys and how `args.cni` combines with them). The result it
//! passes on is prevResult with exactly those changes. In the node's netns: `hostRoutes`, ensured
//! on every ADD and reconciled by `rroutes sync --conflist FILE` ([`sync`]). The keys are in
//! docs/configuration.md.
//!
//! Modules: `conf` (keys, validation), `pod` (the pod's routes), `host` (the node's routes),
//! `plugin` (the verbs). Public: the plugin ([`RRoutes`], [`INFO`]) and [`sync`].

mod conf;
mod host;
mod inspect;
mod plugin;
mod pod;

use cni_plugin::PluginInfo;

pub use host::{sync, Report};
/// The config read from outside a call, for the `rcni` CLI.
pub use inspect::{parse_config, AddRoute, Conf, DelRoute, HostRoute, DEFAULT_PROTOCOL};
pub use plugin::RRoutes;

pub const INFO: PluginInfo = PluginInfo {
    name: "rroutes",
    version: env!("CARGO_PKG_VERSION"),
    about: "chained plugin: routes of the pod interface (route-override keys) and routes to other nodes",
};
