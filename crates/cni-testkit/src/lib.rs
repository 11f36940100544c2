//! Test helpers shared by the tests of every rcni plugin crate.
//!
//! Plugin tests exercise real kernels: they create throwaway network namespaces, run the built
//! plugin binaries inside them exactly like a container runtime would (environment, stdin, exit
//! code), alone or as the plugins of a conflist driven like libcni drives them ([`Chain`]), and
//! then read the resulting kernel state back with `ip -j`. Everything here panics with a clear
//! message instead of returning errors: a test that cannot set up its world must fail loudly, never
//! skip silently.
//!
//! Tests need root and netns support. They never touch the root network namespace: every link,
//! address, route and sysctl lives in a [`Netns`] that is deleted on drop, even when the test
//! panics.

mod chain;
mod fs;
mod netns;
mod plugin;

pub use chain::{binary, conflist, find_plugin, plugin_config, Chain, PluginCall};
pub use fs::{
    bin_dir, cni_path_with_upstream, plugin_bin, require_root, temp_dir, temp_dir_in, upstream_bin,
    upstream_dir, TempDir,
};
pub use netns::{sweep_stale, Netns};
pub use plugin::{run_plugin, Invocation, PluginRun};

#[cfg(test)]
mod tests;
