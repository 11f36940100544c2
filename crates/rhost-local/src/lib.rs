//! rhost-local (not yet written).
