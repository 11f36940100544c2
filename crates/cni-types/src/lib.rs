//! The CNI specification as Rust, and the skeleton every rcni plugin runs on.
//!
//! - [`config`]: network configs and conflists; unknown keys are kept.
//! - [`result`]: results of every spec version (0.1.0 to 1.1.0) and conversion between them.
//! - [`error`]: the spec's error JSON and codes.
//! - [`skel`]: env, stdin, validation, verb dispatch, VERSION, logging.
//! - [`delegate`]: running an IPAM plugin from CNI_PATH, with undo.
//! - [`netns`]: work inside a network namespace without leaving threads there.
//! - [`alloc`]: the allocator of the plugin binaries (short-lived, multi-threaded).
//! - [`spare`]: state files whose inodes are used again, so writes allocate nothing.

pub mod alloc;
pub mod args;
pub mod config;
pub mod delegate;
pub mod error;
pub mod log;
pub mod netns;
pub mod result;
pub mod skel;
pub mod spare;
pub mod validate;
pub mod version;

pub use args::CniArgs;
pub use config::{IpamConf, NetConf, NetConfList};
pub use error::{CniError, Context, Result};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Attachment, Call, Plugin, PluginInfo};
pub use version::{SpecVersion, Verb};
