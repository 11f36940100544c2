//! rcni-install: puts the rcni plugins and a node's conflist in place, from flags (a single host)
//! or from the Kubernetes API (a DaemonSet on every node), keeps the conflist and the routes to
//! the other nodes in step, and removes exactly what it installed.

pub mod conflist;
mod files;
pub mod install;
pub mod kube;
pub mod nodes;
pub mod routes;
pub mod signal;
