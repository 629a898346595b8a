//! A server's request rate limit (`max_rps`): a token bucket for the whole
//! server, handed out to the pollers in small leases, so that admitting a
//! request touches only its own poller's memory.
//!
//! The server-wide bucket is kept as one number, the time its tokens would
//! run out at the configured rate (GCRA's "theoretical arrival time"), so
//! taking tokens is one compare-and-swap. A poller takes up to a lease of
//! tokens at a time (10 ms of the rate) and admits from it with a plain load
//! and store on a cache line that only it writes; the shared word is touched
//! once per lease, at most about 100 times a second whatever the rate. When
//! the bucket is dry the poller notes until when, and refuses without asking
//! again for at least 10 ms: a flood of refused requests does not turn the
//! shared word into a hot spot either.
//!
//! Why not a fixed share of the rate per poller: the kernel spreads
//! connections over the pollers, not requests. A few busy connections (one
//! benchmark client, a proxy in front) can all sit on one poller, and a fixed
//! split would hold them to `n / pollers` while the other pollers' shares go
//! unused. With leases a poller takes what it needs; the total stays within
//! the rate plus a burst and one unused lease per poller.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The burst, as a share of one second's rate: requests a quiet server
/// admits at once (at least 1).
const BURST_PER_SEC: u64 = 10;

/// The lease, as a share of one second's rate: requests a poller takes from
/// the server-wide bucket at a time (at least 1).
const LEASE_PER_SEC: u64 = 100;

/// After finding the server-wide bucket dry, a poller refuses without asking
/// it again for at least this long (ns): a flood of refusals asks it at most
/// 100 times a second per poller. A token that comes meanwhile is not lost,
/// only taken up to this late.
const DRY_MIN: u64 = 10_000_000;

const NANOS: u64 = 1_000_000_000;

/// One poller's part: written only by that poller's thread (plain loads and
/// stores, no read-modify-write), read by anyone for the count. Aligned so
/// two pollers never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Requests this poller may still admit from its lease.
    left: AtomicU64,
    /// Before this time (ns since the limit's anchor) the server-wide bucket
    /// is known to be dry: refuse without asking it.
    dry_until: AtomicU64,
    /// Requests refused on this poller.
    refused: AtomicU64,
}

/// A server's request rate limit: `n` requests a second over all its pollers.
#[derive(Debug)]
pub(crate) struct RateLimit {
    anchor: Instant,
    /// Nanoseconds between two requests at the rate.
    interval: u64,
    /// How far ahead of now the server-wide bucket may run (the burst), ns.
    tolerance: u64,
    /// Most tokens one lease takes.
    lease: u64,
    /// When the server-wide bucket's tokens run out at the rate, in ns since
    /// `anchor` (a time at or before now means it is full).
    tat: AtomicU64,
    shards: Box<[Shard]>,
}

impl RateLimit {
    /// `per_sec` requests a second (at least 1) over `pollers` pollers.
    pub fn new(per_sec: u32, pollers: usize) -> RateLimit {
        let per_sec = u64::from(per_sec.max(1));
        let interval = (NANOS / per_sec).max(1);
        let burst = per_sec.div_ceil(BURST_PER_SEC);
        let lease = per_sec.div_ceil(LEASE_PER_SEC).min(burst);
        RateLimit {
            anchor: Instant::now(),
            interval,
            tolerance: burst * interval,
            lease,
            tat: AtomicU64::new(0),
            shards: (0..pollers.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    /// Whether poller `poller` may admit a request that arrived at `now`;
    /// `Err` carries how long until a request would be admitted. Called only
    /// from poller `poller`'s own thread.
    #[inline]
    pub fn admit(&self, poller: usize, now: Instant) -> Result<(), Duration> {
        let Some(shard) = self.shards.get(poller) else {
            return Ok(());
        };
        let left = shard.left.load(Relaxed);
        if left > 0 {
            shard.left.store(left - 1, Relaxed);
            return Ok(());
        }
        self.renew(shard, now)
    }

    /// The lease is used up: take a new one, or refuse.
    #[cold]
    #[inline(never)]
    fn renew(&self, shard: &Shard, now: Instant) -> Result<(), Duration> {
        let t = now.saturating_duration_since(self.anchor).as_nanos() as u64;
        let dry = shard.dry_until.load(Relaxed);
        if t < dry {
            return Err(self.refuse(shard, t, dry));
        }
        let mut tat = self.tat.load(Relaxed);
        loop {
            let start = tat.max(t);
            // Whole tokens in the bucket now.
            let room = (t + self.tolerance).saturating_sub(start) / self.interval;
            if room == 0 {
                // The next token comes at `start + interval - tolerance`.
                let next = start + self.interval - self.tolerance;
                let until = next.max(t + DRY_MIN);
                shard.dry_until.store(until, Relaxed);
                return Err(self.refuse(shard, t, until));
            }
            let take = room.min(self.lease);
            match self.tat.compare_exchange_weak(
                tat,
                start + take * self.interval,
                Relaxed,
                Relaxed,
            ) {
                Ok(_) => {
                    shard.left.store(take - 1, Relaxed);
                    return Ok(());
                }
                Err(now_tat) => tat = now_tat,
            }
        }
    }

    /// Counts a refusal at `t`; returns the wait until `at`.
    fn refuse(&self, shard: &Shard, t: u64, at: u64) -> Duration {
        shard
            .refused
            .store(shard.refused.load(Relaxed) + 1, Relaxed);
        Duration::from_nanos(at.saturating_sub(t).max(1))
    }

    /// Requests refused so far, over all pollers.
    pub fn refused(&self) -> u64 {
        self.shards.iter().map(|s| s.refused.load(Relaxed)).sum()
    }
}

/// The count of requests a server refused because they came over its
/// request rate (`ServerBuilder::max_rps`), live: each poller counts its own
/// and this sums them when read. Cheap to clone and to read from any thread
/// (a `/metrics` handler); it reads 0 until the server starts, and always
/// for a server without a rate limit.
#[derive(Debug, Clone, Default)]
pub struct RateLimited {
    limit: Arc<OnceLock<Arc<RateLimit>>>,
}

impl RateLimited {
    /// A counter at zero, not yet tied to a server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests refused with the protocol's 429 so far.
    pub fn total(&self) -> u64 {
        self.limit.get().map_or(0, |l| l.refused())
    }

    /// Appends the count in the Prometheus text format, as the counter
    /// `<prefix>_requests_rate_limited_total` (like `ServerMetrics`, an empty
    /// prefix means no prefix).
    pub fn render_prometheus(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write as _;
        let sep = if prefix.is_empty() { "" } else { "_" };
        let name = format!("{prefix}{sep}requests_rate_limited_total");
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused (429) over the request rate limit."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", self.total());
    }

    /// Ties the counter to the limit of the server that starts with it.
    pub(crate) fn attach(&self, limit: Arc<RateLimit>) {
        let _ = self.limit.set(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Admits requests on `poller` at `now` until one is refused; returns
    /// how many were admitted and the wait the refusal gave.
    fn drain(limit: &RateLimit, poller: usize, now: Instant) -> (u64, Duration) {
        let mut n = 0;
        loop {
            match limit.admit(poller, now) {
                Ok(()) => n += 1,
                Err(wait) => return (n, wait),
            }
        }
    }

    #[test]
    fn a_quiet_server_admits_its_burst_then_the_rate() {
        let limit = RateLimit::new(50, 2);
        let t0 = limit.anchor;
        // 50/s: a burst of 5, then one every 20 ms.
        let (n, wait) = drain(&limit, 0, t0);
        assert_eq!(n, 5);
        assert!(wait > ms(19) && wait <= ms(20), "{wait:?}");
        let mut admitted = 0;
        for step in 1..=100 {
            let now = t0 + ms(10 * step);
            admitted += drain(&limit, (step % 2) as usize, now).0;
        }
        // One second later: 50 more, whichever poller asked.
        assert!((49..=51).contains(&admitted), "{admitted}");
        assert_eq!(limit.refused(), 101);
    }

    #[test]
    fn the_count_renders_as_a_prometheus_counter() {
        let mut out = String::new();
        RateLimited::new().render_prometheus("taskweave", &mut out);
        assert!(out.contains("# TYPE taskweave_requests_rate_limited_total counter\n"));
        assert!(
            out.ends_with("\ntaskweave_requests_rate_limited_total 0\n"),
            "{out}"
        );
    }

    #[test]
    fn one_busy_poller_gets_the_whole_rate() {
        let limit = RateLimit::new(1000, 4);
        let t0 = limit.anchor;
        let mut admitted = 0;
        for step in 0..=1000 {
            admitted += drain(&limit, 3, t0 + ms(step)).0;
        }
        // The burst (100) and one second at 1,000/s.
        assert!((1095..=1110).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_dry_bucket_is_not_asked_again_for_10_ms() {
        let limit = RateLimit::new(100_000, 2);
        let t0 = limit.anchor;
        let (burst, _) = drain(&limit, 0, t0);
        assert_eq!(burst, 10_000);
        let tat = limit.tat.load(Relaxed);
        // 5 µs later a token has come, but this poller waits out its 10 ms.
        assert!(limit.admit(0, t0 + Duration::from_micros(5)).is_err());
        assert_eq!(limit.tat.load(Relaxed), tat);
        // The other poller asks and gets it.
        assert!(limit.admit(1, t0 + Duration::from_micros(20)).is_ok());
        assert!(limit.admit(0, t0 + ms(11)).is_ok());
    }

    #[test]
    fn a_refusal_says_when_the_next_request_is_admitted() {
        let limit = RateLimit::new(1, 1);
        let t0 = limit.anchor;
        assert!(limit.admit(0, t0).is_ok());
        let wait = limit.admit(0, t0 + ms(200)).unwrap_err();
        assert_eq!(wait, ms(800));
        assert!(limit.admit(0, t0 + ms(1000)).is_ok());
    }

    #[test]
    fn the_counter_reads_zero_until_attached() {
        let counter = RateLimited::new();
        assert_eq!(counter.total(), 0);
        let limit = Arc::new(RateLimit::new(1, 1));
        counter.clone().attach(limit.clone());
        let t0 = limit.anchor;
        assert!(limit.admit(0, t0).is_ok());
        assert!(limit.admit(0, t0).is_err());
        assert_eq!(counter.total(), 1);
    }
}
