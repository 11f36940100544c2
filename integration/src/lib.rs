//! Support for end-to-end tests: the real libcni (built offline from Debian's source) driving
//! the shipped conflists inside a node namespace, as containerd or CRI-O would.

pub mod cluster;
pub mod cri;
pub mod image;
mod libcni;
pub mod podman;

pub use libcni::{libcni_driver, shipped_conflist, workspace_root, Libcni, Outcome};
