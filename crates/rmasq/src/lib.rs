//! rmasq (not yet written).
