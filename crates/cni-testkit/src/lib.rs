//! Test helpers shared by the tests of every rcni plugin crate.
//!
//! Plugin tests exercise real kernels: they create throwaway network namespaces, run the built
//! plugin binaries inside them exactly like a container runtime would (environment, stdin, exit
//! code), alone or as the plugins of a conflist driven like libcni drives them ([`Chain`]), and
//! then read the resulting kernel state back with `ip -j`. Everything here panics with a clear
//! message instead of returning errors: a test that cannot set up its world must fail loudly, never
//! skip silently.
//!
//! Beside that, what every crate's tests need alike: the spec versions to loop over
//! ([`VERSIONS`], [`UPSTREAM_VERSIONS`]), a result's addresses in any version and configs with a
//! `prevResult` ([`json`]), a host-local store read from outside ([`reservations`]), directory
//! snapshots ([`snapshot`]), traffic checks ([`ping`], [`source_seen`]), unique container IDs,
//! [`eventually`] and a seeded [`Rng`]. Each crate's `tests/common` keeps only its own world.
//! For the node agent, a fake Kubernetes API server serving Nodes to kube-rs ([`FakeApi`]).
//!
//! Tests need root and netns support. They never touch the root network namespace: every link,
//! address, route and sysctl lives in a [`Netns`] that is deleted on drop, even when the test
//! panics.

mod chain;
mod fs;
pub mod json;
mod kubeapi;
mod netns;
mod plugin;
mod rng;
mod snapshot;
mod store;
mod traffic;
mod versions;
mod wait;

pub use chain::{binary, conflist, find_plugin, plugin_config, Chain, PluginCall};
pub use fs::{
    bin_dir, cni_path_with_upstream, plugin_bin, require_root, temp_dir, temp_dir_in, upstream_bin,
    upstream_dir, TempDir,
};
pub use kubeapi::{ApiRequest, FakeApi, FakeNode};
pub use netns::{sweep_stale, Netns};
pub use plugin::{container_id, run_plugin, Invocation, PluginRun};
pub use rng::Rng;
pub use snapshot::{assert_same_tree, snapshot, Entry, Snapshot};
pub use store::{allocations, reservations};
pub use traffic::{ping, source_seen, source_seen_via};
pub use versions::{upstream_version, UPSTREAM_VERSIONS, VERSIONS};
pub use wait::eventually;

#[cfg(test)]
mod tests;
