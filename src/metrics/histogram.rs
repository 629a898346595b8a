//! A latency histogram with fixed log-scale buckets, recorded with atomics only.
//!
//! Buckets are fixed at compile time so recording is a binary search over a
//! constant table plus three relaxed atomic operations: no lock, no allocation,
//! safe to call from every poller thread at once. Each thread records into its
//! own shard (see `shard.rs`), so threads recording at once never write the
//! same cache line; a snapshot sums the shards. Bounds follow a decimal
//! log scale (1, 2, 3, 4, 5, 6, 8 µs, then 10, 12, 15, 20, 25, 30, 40, 50, 60, 80
//! times each power of ten up to 100 000 s), so neighbouring bounds differ by at
//! most a third: a percentile read from the buckets is never below the true value
//! and at most a third above it (and never above the true maximum, which is kept
//! exactly). The bounds are round numbers, so the Prometheus buckets (a subset:
//! 1, 2.5 and 5 per decade) are round numbers of seconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::clock;
use super::shard::Sharded;

/// Number of finite bucket bounds.
const N: usize = 108;

/// Inclusive upper bounds of the buckets, in microseconds. A value above the last
/// goes to the overflow bucket (`le="+Inf"`).
pub(super) const BOUNDS_US: [u64; N] = bounds();

const fn bounds() -> [u64; N] {
    const FIRST: [u64; 7] = [1, 2, 3, 4, 5, 6, 8];
    const STEPS: [u64; 10] = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80];
    let mut b = [0u64; N];
    let mut i = 0;
    while i < FIRST.len() {
        b[i] = FIRST[i];
        i += 1;
    }
    let mut scale = 1u64;
    let mut decade = 0;
    while decade < 10 {
        let mut j = 0;
        while j < STEPS.len() {
            b[i] = STEPS[j] * scale;
            i += 1;
            j += 1;
        }
        scale *= 10;
        decade += 1;
    }
    b[i] = 10 * scale;
    b
}

/// A concurrent histogram of durations.
///
/// Each thread records into a copy of its own (one of 16, about 900 bytes
/// each), so a histogram takes about 14 KiB; reading sums the copies.
pub struct Histogram {
    shards: Sharded<Shard>,
}

/// One thread's part of a [`Histogram`].
struct Shard {
    /// `counts[i]` counts values in `(BOUNDS_US[i-1], BOUNDS_US[i]]`; the last
    /// entry counts values above every bound.
    counts: [AtomicU64; N + 1],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            counts: [const { AtomicU64::new(0) }; N + 1],
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Histogram")
            .field("count", &s.count())
            .field("sum", &s.sum())
            .field("max", &s.max())
            .finish()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            shards: Sharded::default(),
        }
    }

    /// Records one duration (at microsecond resolution).
    pub fn observe(&self, d: Duration) {
        self.observe_us(clock::micros(d));
    }

    /// Records one duration given in microseconds.
    pub fn observe_us(&self, us: u64) {
        let shard = self.shards.local();
        let i = BOUNDS_US.partition_point(|&b| b < us);
        if let Some(c) = shard.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        shard.sum_us.fetch_add(us, Relaxed);
        if shard.max_us.load(Relaxed) < us {
            shard.max_us.fetch_max(us, Relaxed);
        }
    }

    /// A consistent-enough copy to query: counts taken one bucket at a time while
    /// other threads may still record (each value is counted once or not yet).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0u64; N + 1];
        let (mut sum_us, mut max_us) = (0u64, 0u64);
        for shard in self.shards.iter() {
            for (dst, src) in counts.iter_mut().zip(&shard.counts) {
                *dst = dst.wrapping_add(src.load(Relaxed));
            }
            sum_us = sum_us.wrapping_add(shard.sum_us.load(Relaxed));
            max_us = max_us.max(shard.max_us.load(Relaxed));
        }
        HistogramSnapshot {
            counts,
            sum_us,
            max_us,
        }
    }
}

/// A copy of a [`Histogram`] at one moment, for percentiles and export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: [u64; N + 1],
    sum_us: u64,
    max_us: u64,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The sum of the recorded values.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }

    /// The largest recorded value, exactly; `None` if nothing was recorded.
    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.max_us))
    }

    /// The mean of the recorded values; `None` if nothing was recorded.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_micros(self.sum_us / n))
    }

    /// The `q`-quantile (`0.5` for the median, `0.99` for p99): the upper bound of
    /// the bucket holding the value of rank ⌈q·count⌉, capped at the maximum. At
    /// least the true quantile and at most a third above it. `q` is clamped to
    /// `0..=1`; `None` if nothing was recorded or `q` is NaN.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 || q.is_nan() {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                let bound = BOUNDS_US.get(i).copied().unwrap_or(u64::MAX);
                return Some(Duration::from_micros(bound.min(self.max_us)));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }

    /// The median.
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.5)
    }
    /// The 90th percentile.
    pub fn p90(&self) -> Option<Duration> {
        self.quantile(0.9)
    }
    /// The 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// Per-bucket counts, the last one above every bound in [`BOUNDS_US`].
    pub(super) fn counts(&self) -> &[u64; N + 1] {
        &self.counts
    }

    /// The sum in microseconds.
    pub(super) fn sum_us(&self) -> u64 {
        self.sum_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_increasing_and_fine_enough() {
        assert_eq!(BOUNDS_US[0], 1);
        assert_eq!(BOUNDS_US[N - 1], 100_000_000_000);
        for w in BOUNDS_US.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
            if w[0] >= 10 {
                // Neighbours differ by at most a third.
                assert!(w[1] * 3 <= w[0] * 4, "{w:?}");
            }
        }
    }

    #[test]
    fn values_land_in_their_bucket() {
        let h = Histogram::new();
        for us in [
            0,
            1,
            2,
            9,
            10,
            11,
            12,
            13,
            100_000_000_000,
            100_000_000_001,
            u64::MAX,
        ] {
            h.observe_us(us);
        }
        let s = h.snapshot();
        let c = s.counts();
        assert_eq!(c[0], 2); // 0 and 1
        assert_eq!(c[1], 1); // 2
        assert_eq!(c[7], 2); // 9 and 10 (le 10)
        assert_eq!(c[8], 2); // 11 and 12
        assert_eq!(c[9], 1); // 13 (le 15)
        assert_eq!(c[N - 1], 1);
        assert_eq!(c[N], 2);
        assert_eq!(s.count(), 11);
        assert_eq!(s.max(), Some(Duration::from_micros(u64::MAX)));
    }

    #[test]
    fn empty_has_no_percentiles() {
        let s = Histogram::new().snapshot();
        assert_eq!(s.count(), 0);
        assert_eq!(s.p50(), None);
        assert_eq!(s.max(), None);
        assert_eq!(s.mean(), None);
    }

    #[test]
    fn percentiles_bound_the_truth() {
        let h = Histogram::new();
        // 1..=1000 ms.
        for ms in 1..=1000u64 {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        for (q, truth_ms) in [
            (0.5, 500u64),
            (0.9, 900),
            (0.99, 990),
            (0.0, 1),
            (1.0, 1000),
        ] {
            let got = s.quantile(q).unwrap();
            let truth = Duration::from_millis(truth_ms);
            assert!(got >= truth, "q{q}: {got:?} < {truth:?}");
            assert!(
                got <= truth * 4 / 3,
                "q{q}: {got:?} too far above {truth:?}"
            );
        }
        assert_eq!(s.max(), Some(Duration::from_millis(1000)));
        assert_eq!(s.p99().unwrap(), Duration::from_millis(1000));
        assert_eq!(s.mean(), Some(Duration::from_micros(500_500)));
        assert_eq!(s.sum(), Duration::from_millis(500_500));
        assert_eq!(s.quantile(f64::NAN), None);
        assert_eq!(s.quantile(7.0), s.quantile(1.0));
        assert_eq!(s.quantile(-1.0), s.quantile(0.0));
    }

    #[test]
    fn percentile_never_exceeds_max() {
        let h = Histogram::new();
        h.observe_us(13);
        let s = h.snapshot();
        assert_eq!(s.p50(), Some(Duration::from_micros(13)));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let h = std::sync::Arc::new(Histogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe_us(i * (t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 40_000);
        assert_eq!(s.max(), Some(Duration::from_micros(9_999 * 4)));
    }
}
