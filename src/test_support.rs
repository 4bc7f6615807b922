//! Helpers the in-crate tests share.

use std::time::{Duration, Instant};

/// How long a test waits for another thread to reach a state before failing instead of hanging.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Yields until `reached` holds. Panics naming `what` after [`PATIENCE`], so that a regression
/// (a compaction that never reaches the held step, a writer that never waits) fails the test
/// with a message instead of hanging CI.
pub(crate) fn wait_until(what: &str, mut reached: impl FnMut() -> bool) {
    let started = Instant::now();
    while !reached() {
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
        std::thread::yield_now();
    }
}
