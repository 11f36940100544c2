//! The runtime every rcni plugin runs on, over the spec types of `cni-types`.
//!
//! - [`skel`]: one call from env and stdin to stdout: validation, verb dispatch, VERSION, the
//!   error JSON, the per-call log line. A plugin implements [`Plugin`]; its `main` is
//!   [`skel::run`].
//! - [`delegate`]: running the IPAM plugin named in the config from CNI_PATH, with undo.
//! - [`log`]: the per-call log (`logFile`, `logLevel`).
//! - [`netns`]: work inside a network namespace without leaving a thread there.
//! - [`alloc`]: the plugin binaries' global allocator.
//! - [`statefile`]: small state files written whole (temporary file, then rename).
//!
//! Nothing here speaks netlink: that is `cni-netlink`, the one kernel layer.

pub mod alloc;
pub mod delegate;
pub mod log;
pub mod netns;
pub mod skel;
pub mod statefile;

pub use skel::{Call, Plugin, PluginConfig, PluginInfo};
