//! Kernel helpers (being written).
