//! Not an API: what the fuzz targets in `fuzz/` drive: the config ADD reads, the files of the
//! store (reservations, the index's snapshot and key files), and the verbs on a store.

pub use crate::config::{parse_resolv_conf, requested_ips, Config, Requested};
pub use crate::ipam::{add, check, del, gc};
pub use crate::owner::Owner;
pub use crate::snapshot::{lookup as snapshot_lookup, render as snapshot_render};
pub use crate::store::{key_file, parse_key_file, Store};
