//! Waiting for what the kernel completes after a call returns.

use std::time::{Duration, Instant};

/// Whether `cond` holds within 5 s: for effects the kernel completes asynchronously (a deleted
/// netns's devices), never for what the plugin must have done before returning.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
