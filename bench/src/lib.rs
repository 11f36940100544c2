//! Support for `scripts/bench` and `scripts/demo`: a minimal runtime that runs a conflist's
//! plugins one process per call, as libcni does, timing each call and (in separate, traced
//! calls) reading each process's peak RSS.

pub mod runtime;
