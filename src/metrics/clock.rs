//! The monotonic clock as plain integers.
//!
//! An [`Instant`] takes 16 bytes. [`ConnStats`](super::ConnStats) instead keeps its
//! start as nanoseconds since one process-wide anchor (8 bytes, good for 584
//! years) and every later event as microseconds since that start, so the clock is
//! still read once per event and no precision that the log shows is lost.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// `wall` as seconds since the epoch (rounded down) and nanoseconds.
    secs: i64,
    nanos: u32,
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z, in seconds since the
/// epoch: the times a log line can show.
const MIN_SECS: i64 = -62_167_219_200;
const MAX_SECS: i64 = 253_402_300_799;
const NANOS: i64 = 1_000_000_000;

impl WallClock {
    /// Both clocks, now.
    pub(crate) fn now() -> WallClock {
        let wall = SystemTime::now();
        let (secs, nanos) = match wall.duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                let d = e.duration();
                let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs - 1, NANOS as u32 - n),
                }
            }
        };
        WallClock {
            wall,
            mono: Instant::now(),
            secs,
            nanos,
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

    /// [`time_of`](Self::time_of) as whole seconds since the epoch and the
    /// microseconds past them (rounded down), clamped to years 0000–9999:
    /// one subtraction of instants and integer steps, for a log line.
    #[inline]
    pub(crate) fn unix_of(&self, t: Instant) -> (i64, u32) {
        let (d, sign) = match self.mono.checked_duration_since(t) {
            Some(back) => (back, -1),
            None => (t.saturating_duration_since(self.mono), 1),
        };
        let ds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let mut secs = self.secs.saturating_add(sign * ds);
        let mut nanos = i64::from(self.nanos) + sign * i64::from(d.subsec_nanos());
        if nanos < 0 {
            nanos += NANOS;
            secs = secs.saturating_sub(1);
        } else if nanos >= NANOS {
            nanos -= NANOS;
            secs = secs.saturating_add(1);
        }
        if secs < MIN_SECS {
            (MIN_SECS, 0)
        } else if secs > MAX_SECS {
            (MAX_SECS, 999_999)
        } else {
            (secs, (nanos / 1_000) as u32)
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
    fn unix_of_matches_time_of() {
        let w = WallClock::now();
        let base = Instant::now();
        for us in [0u64, 1, 999, 1_000_001, 86_400_000_000, 3_600_000_123] {
            for t in [
                base.checked_sub(Duration::from_micros(us)),
                base.checked_add(Duration::from_nanos(us * 997)),
            ] {
                let Some(t) = t else { continue };
                let d = w.time_of(t).duration_since(UNIX_EPOCH).unwrap();
                let want = (d.as_secs() as i64, d.subsec_micros());
                assert_eq!(w.unix_of(t), want, "{us}");
            }
        }
    }

    #[test]
    fn saturating_conversions() {
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
    }
}
