//! rbridge (not yet written).
