//! rroutes: the chained CNI plugin for routes, in the pod and towards the other nodes.
//!
//! In the pod, on CNI_IFNAME only, in this order: `flushRoutes`, `flushGateway`, `delRoutes`,
//! `addRoutes` (see [`conf`] for the keys and how `args.cni` combines with them). The result it
//! passes on is prevResult with exactly those changes. In the node's netns: `hostRoutes`, ensured
//! on every ADD and reconciled by `rroutes sync --conflist FILE` (see [`host`]). README.md has
//! the keys, the design decisions and what is left out.

pub mod conf;
pub mod host;
pub mod plugin;
pub mod pod;

use cni_plugin::PluginInfo;

pub use conf::{Conf, DEFAULT_PROTOCOL};
pub use plugin::RRoutes;

pub const INFO: PluginInfo = PluginInfo {
    name: "rroutes",
    version: env!("CARGO_PKG_VERSION"),
    about: "chained plugin: routes of the pod interface (route-override keys) and routes to other nodes",
};
