//! Not an API: what the fuzz targets in `fuzz/` drive, the code ADD runs on its input before
//! anything on the node changes: the whole config, and the gateways planned from IPAM's result.

pub use crate::config::BridgeConf;
pub use crate::gateway::{calc_gateways, CONTAINER_INDEX};
