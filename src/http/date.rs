//! The `Date` header value, formatted at most once per second per thread.
//!
//! Every response carries `Date` (RFC 9110 §6.6.1), and formatting a date costs
//! more than the rest of a small response head. Each thread keeps the value for
//! the current second and reformats it only when the second changes, so reading
//! it costs a coarse clock read (no timer access) and a compare, with no lock or atomic shared between
//! threads.

use std::cell::Cell;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// Latest second httpdate can format (9999-12-31T23:59:59Z).
const MAX_SECS: u64 = 253_402_300_799;

/// Length of the whole header line `Date: <date>\r\n`.
pub(crate) const DATE_LINE_LEN: usize = DATE_LEN + 8;

thread_local! {
    static CACHE: Cell<(u64, [u8; DATE_LINE_LEN])> =
        const { Cell::new((u64::MAX, [b' '; DATE_LINE_LEN])) };
    #[cfg(test)]
    static REFRESHES: Cell<u64> = const { Cell::new(0) };
}

/// The current date as an IMF-fixdate, for the `Date` header.
pub fn http_date() -> [u8; DATE_LEN] {
    let line = date_line();
    let mut date = [b' '; DATE_LEN];
    for (d, s) in date.iter_mut().zip(line.iter().skip(6)) {
        *d = *s;
    }
    date
}

/// The whole `Date: <date>\r\n` line, as the encoder writes it.
pub(crate) fn date_line() -> [u8; DATE_LINE_LEN] {
    let secs = crate::sys::cpu::coarse_unix_secs().min(MAX_SECS);
    CACHE
        .try_with(|cache| {
            let (cached_secs, line) = cache.get();
            if cached_secs == secs {
                return line;
            }
            let line = format_line(secs);
            cache.set((secs, line));
            line
        })
        // Only during thread teardown: format without the cache.
        .unwrap_or_else(|_| format_line(secs))
}

/// Formats the `Date` line for `secs` after the epoch.
fn format_line(secs: u64) -> [u8; DATE_LINE_LEN] {
    #[cfg(test)]
    REFRESHES.with(|r| r.set(r.get() + 1));
    let date = httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs));
    let mut out = FixedBuf {
        buf: [b' '; DATE_LINE_LEN],
        len: 0,
    };
    // The format always fits exactly for the clamped range.
    let _ = write!(out, "Date: {date}\r\n");
    out.buf
}

/// A `fmt::Write` into a fixed array that drops what does not fit.
struct FixedBuf {
    buf: [u8; DATE_LINE_LEN],
    len: usize,
}

impl Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(
            &format_line(784_111_777),
            b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        );
        assert_eq!(&format_line(0), b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
        assert_eq!(
            &format_line(MAX_SECS),
            b"Date: Fri, 31 Dec 9999 23:59:59 GMT\r\n"
        );
    }

    #[test]
    fn matches_the_clock_and_is_cached() {
        let before = SystemTime::now();
        let start = REFRESHES.with(Cell::get);
        let mut last = http_date();
        for _ in 0..10_000 {
            last = http_date();
        }
        let refreshes = REFRESHES.with(Cell::get) - start;
        let elapsed = before.elapsed().unwrap_or_default().as_secs();
        assert!(
            refreshes <= elapsed + 2,
            "{refreshes} refreshes in {elapsed}s"
        );
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&last).unwrap()).unwrap();
        let drift = parsed
            .duration_since(before)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(drift <= Duration::from_secs(2), "{drift:?}");
    }

    #[test]
    fn threads_read_independently() {
        let values: Vec<[u8; DATE_LEN]> = (0..4)
            .map(|_| std::thread::spawn(http_date))
            .map(|h| h.join().unwrap())
            .collect();
        for v in &values {
            assert!(v.ends_with(b" GMT"));
        }
        assert_eq!(&date_line()[6..DATE_LEN + 6], &http_date()[..]);
    }
}
