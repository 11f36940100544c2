//! The CNI specification (0.1.0 to 1.1.0) as Rust types, and nothing else: no kernel calls, no
//! processes, no files. Everything here is unit-testable anywhere.
//!
//! - [`version`]: spec versions, negotiation, which verbs each version has.
//! - [`config`]: network configs and conflists; keys a plugin does not know are kept.
//! - [`result`]: results of every version and conversion between them.
//! - [`error`]: the spec's error JSON and codes (well-known and rcni's plugin-specific ones).
//! - [`args`]: the `CNI_ARGS` variable.
//! - [`validate`]: container IDs, interface and network names, as libcni checks them.
//! - [`gc`]: GC's list of attachments to keep.
//!
//! The plugin runtime (skeleton, delegation, logging, netns) is `cni-plugin`.

pub mod args;
pub mod config;
pub mod error;
mod fold;
pub mod gc;
pub mod result;
pub mod validate;
pub mod version;

pub use args::CniArgs;
pub use config::{IpamConf, NetConf, NetConfList};
pub use error::{CniError, Context, Result};
pub use gc::Attachment;
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::{SpecVersion, Verb};
