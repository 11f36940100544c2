//! rcni-install: puts the rcni plugins and a node's conflist in place, from flags (a single host)
//! or from the Kubernetes API (a DaemonSet on every node), keeps the conflist and the routes to
//! the other nodes in step, and removes exactly what it installed.
//!
//! - [`conflist`]: the node's conflist from its inputs (podCIDR, MTU, other nodes' routes).
//! - [`install`] over `files`: binaries and conflist written whole, backups, removal of exactly
//!   what was installed.
//! - [`kube`], [`nodes`]: Node objects from the API server, and what they give this node.
//! - [`routes`]: routes to other nodes through `rroutes sync`; the installer itself never
//!   touches the kernel.
//! - [`signal`]: ending the daemon cleanly as PID 1.

pub mod conflist;
mod files;
pub mod install;
pub mod kube;
pub mod nodes;
pub mod routes;
pub mod signal;
