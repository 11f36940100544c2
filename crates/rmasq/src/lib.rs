//! rmasq: masquerade pod traffic that leaves the cluster network, with a cost per pod that does
//! not grow with the number of pods, and nothing leaked.
//!
//! The library is shared by the `rmasq` chained plugin and rbridge's `ipMasq`:
//!
//! ```no_run
//! # use rmasq::{Masq, Options};
//! let masq = Masq::new(rmasq::DEFAULT_STATE_DIR);
//! let addrs = ["10.1.0.5/24".parse().unwrap()];
//! masq.setup("pods", "9f86d0", "eth0", &addrs, &Options::default())?;
//! masq.teardown("pods", "9f86d0", "eth0")?;
//! # Ok::<(), cni_types::CniError>(())
//! ```
//!
//! Pods are grouped in classes (`class`); rules exist per class, pods are set elements (the
//! nftables backend) or references counted on disk (the iptables backend): `backend`. `state`
//! remembers what each attachment added, so teardown needs only (network, containerID, ifname),
//! and removes an address only when no other attachment owns it. Every read-modify-write of
//! state and firewall happens under one flock in the state dir, so parallel calls are safe.
//!
//! The public API is what the plugin and rbridge's `ipMasq` use: [`Masq`] with its [`Options`]
//! and [`BackendKind`], [`DEFAULT_STATE_DIR`], and the plugin [`Rmasq`] that `main` runs with
//! [`INFO`].

mod backend;
mod class;
mod fingerprint;
/// Not an API: for the fuzz targets in fuzz/.
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod masq;
mod plugin;
mod state;

pub use class::{BackendKind, Options};
/// Read-only views of a config and the state, for the `rcni` CLI.
pub use inspect::{members, parse_config, MasqSummary, Member};
pub use masq::{Masq, DEFAULT_STATE_DIR};
pub use plugin::{Rmasq, INFO};
