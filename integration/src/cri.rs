//! containerd's CRI, as kubelet calls it: a CRI client over the unix socket, and a containerd of
//! the test's own running inside a node network namespace with our conflist in its CNI conf dir.
//!
//! Everything is set up from nothing (config, offline pause image, CNI bin and conf dirs) and torn
//! down on drop, also when the test panics: sandboxes, containerd, shims, mounts, the host paths
//! containerd 1.6 insists on creating, and the node namespace. Any step that cannot be done panics
//! saying why: an end-to-end test never skips.

mod client;
mod containerd;
mod host;
mod lifecycle;

pub use client::{pod_config, sandbox_netns, Cri};
pub use containerd::{Containerd, PAUSE_IMAGE};
pub use host::mounts_under;
