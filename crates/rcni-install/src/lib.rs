//! rcni-install: puts the rcni plugins and a node's conflist in place, from flags (a single host)
//! or from the Kubernetes API (a DaemonSet on every node), keeps the conflist and the routes to
//! the other nodes in step, and removes exactly what it installed.
//!
//! - [`conflist`]: the node's conflist from its inputs (podCIDR, MTU, other nodes' routes).
//! - [`install`] over `files`: binaries and conflist written whole, backups, removal of exactly
//!   what was installed.
//! - [`kube`], [`nodes`]: the API client (kube-rs) and Node objects, and what they give a node.
//! - [`agent`]: the DaemonSet's node agent: watch, install, routes, metrics and health.
//! - [`routes`]: routes to other nodes: `rroutes sync` for static ones, netlink for the agent's
//!   (through one nexthop object per gateway, `hops`); the MTU of the default route's interface.

pub mod agent;
pub mod conflist;
mod files;
mod hops;
pub mod install;
pub mod kube;
pub mod nodes;
pub mod routes;
