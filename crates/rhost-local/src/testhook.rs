//! Crash points for the kill tests, compiled into debug builds only: between every two steps
//! that change the store, `point` may kill the process (`RHOST_LOCAL_TEST_CRASH_AT=<n>`: SIGKILL
//! at the n-th point reached) or pause (`RHOST_LOCAL_TEST_STEP_DELAY_US=<µs>`), so tests can kill
//! rhost-local at every step, or at random instants inside the critical section.

#[cfg(debug_assertions)]
pub fn point(_name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    static CONF: OnceLock<(Option<u32>, Option<u64>)> = OnceLock::new();
    static REACHED: AtomicU32 = AtomicU32::new(0);
    let (crash_at, delay) = *CONF.get_or_init(|| {
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        (
            num("RHOST_LOCAL_TEST_CRASH_AT").map(|n: u64| n as u32),
            num("RHOST_LOCAL_TEST_STEP_DELAY_US"),
        )
    });
    let n = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(us) = delay {
        std::thread::sleep(std::time::Duration::from_micros(us));
    }
    if crash_at == Some(n) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}
