//! [`WaitGroup`]: lets a plain thread wait for series to finish.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counts down to zero; [`wait`](WaitGroup::wait) blocks until it gets there.
/// Clones share the count.
///
/// The bridge from a plain thread (`main`, a test) to series that end on
/// the runtime's threads: give each series a clone and count it down in
/// its `on_done`, which runs however the series ends.
///
/// ```
/// use std::time::Duration;
/// use taskweave::{timer, Series, WaitGroup};
///
/// let wg = WaitGroup::new(3);
/// for ms in [5, 10, 15] {
///     let done = wg.clone();
///     Series::new(timer(Duration::from_millis(ms), |_, _| {}))
///         .on_done(move |_| done.done())
///         .start();
/// }
/// wg.wait(); // all three series have ended
///
/// wg.add(1); // one more, which never comes
/// assert!(!wg.wait_timeout(Duration::from_millis(10)));
/// ```
#[derive(Debug, Clone)]
pub struct WaitGroup {
    inner: Arc<(Mutex<usize>, Condvar)>,
}

impl WaitGroup {
    /// A wait group expecting `n` calls to [`done`](WaitGroup::done).
    pub fn new(n: usize) -> WaitGroup {
        WaitGroup {
            inner: Arc::new((Mutex::new(n), Condvar::new())),
        }
    }

    /// Counts one down.
    pub fn done(&self) {
        let (lock, cv) = &*self.inner;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            cv.notify_all();
        }
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: usize) {
        let (lock, _) = &*self.inner;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    /// Blocks until the count is zero.
    pub fn wait(&self) {
        let (lock, cv) = &*self.inner;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the count is zero or `timeout` passes; returns whether it
    /// reached zero.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = cv
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}
