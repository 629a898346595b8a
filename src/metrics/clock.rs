//! The monotonic clock as plain integers.
//!
//! An [`Instant`] takes 16 bytes. [`ConnStats`](super::ConnStats) instead keeps its
//! start as nanoseconds since one process-wide anchor (8 bytes, good for 584
//! years) and every later event as microseconds since that start, so the clock is
//! still read once per event and no precision that the log shows is lost.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// The process-wide origin of the integer clock: a day before it was first asked
/// for (or as far back as the platform's clock allows), so that instants taken
/// before the first connection's stats existed, such as the very accept time
/// that created them, still convert exactly instead of clamping to 0.
pub(crate) fn anchor() -> Instant {
    *ANCHOR.get_or_init(|| {
        let now = Instant::now();
        [86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    })
}

/// `d` in whole nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `d` in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `t` as nanoseconds since the anchor; instants before the anchor count as 0.
pub(crate) fn to_nanos(t: Instant) -> u64 {
    nanos(t.saturating_duration_since(anchor()))
}

/// The instant `ns` nanoseconds after the anchor.
pub(crate) fn from_nanos(ns: u64) -> Instant {
    let a = anchor();
    a.checked_add(Duration::from_nanos(ns)).unwrap_or(a)
}

/// The two clocks read once, to convert many instants to wall-clock times
/// (a writer formatting a batch of records reads them once per batch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    wall: SystemTime,
    mono: Instant,
}

impl WallClock {
    /// Both clocks, now.
    pub(crate) fn now() -> WallClock {
        WallClock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// The wall-clock time of the monotonic instant `t`.
    pub(crate) fn time_of(&self, t: Instant) -> SystemTime {
        if self.mono >= t {
            let back = self.mono.duration_since(t);
            self.wall.checked_sub(back).unwrap_or(self.wall)
        } else {
            let ahead = t.duration_since(self.mono);
            self.wall.checked_add(ahead).unwrap_or(self.wall)
        }
    }
}

/// The wall-clock time of the monotonic instant `t`, judged from the clocks now.
///
/// Deriving it (rather than reading the wall clock when `t` happened) saves a
/// clock read and 8 to 16 bytes per connection; it differs only if the wall clock
/// was stepped in between.
pub(crate) fn wall_time_of(t: Instant) -> SystemTime {
    WallClock::now().time_of(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_nanos() {
        let t = Instant::now() + Duration::from_millis(5);
        let back = from_nanos(to_nanos(t));
        let diff = if back > t { back - t } else { t - back };
        assert!(diff < Duration::from_micros(1), "{diff:?}");
    }

    #[test]
    fn instants_just_before_first_use_convert_exactly() {
        // The anchor lies well before its first use, wherever the platform allows,
        // so an instant taken just before it still converts exactly.
        let a = anchor();
        let now = Instant::now();
        if now.checked_sub(Duration::from_secs(2)).is_some() {
            assert!(a + Duration::from_secs(1) <= now);
        }
        let t = Instant::now();
        let later = t + Duration::from_micros(512);
        assert_eq!(to_nanos(later) - to_nanos(t), 512_000);
        assert!(to_nanos(t) > 0);
    }

    #[test]
    fn before_anchor_is_zero() {
        let a = anchor();
        if let Some(earlier) = a.checked_sub(Duration::from_secs(1)) {
            assert_eq!(to_nanos(earlier), 0);
        }
    }

    #[test]
    fn wall_time_tracks_elapsed() {
        let t = Instant::now();
        let w = wall_time_of(t);
        let now = SystemTime::now();
        let d = now.duration_since(w).unwrap_or_default();
        assert!(d < Duration::from_millis(100), "{d:?}");
        let past = t.checked_sub(Duration::from_secs(10)).unwrap_or(t);
        let wp = wall_time_of(past);
        let gap = w.duration_since(wp).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(9_900) && gap <= Duration::from_millis(10_100),
            "{gap:?}"
        );
    }

    #[test]
    fn saturating_conversions() {
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
    }
}
