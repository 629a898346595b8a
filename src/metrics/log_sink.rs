//! [`LogCrate`]: access-log records as `log` crate messages, for programs that
//! already route their logs somewhere (journald, a log shipper).

use std::cell::RefCell;

use super::{AccessLog, ConnStats, RequestRecord};

/// The `log` target of access-log records.
pub const ACCESS_TARGET: &str = "taskweave::access";

/// An [`AccessLog`] that emits each record as one JSON object at `info` level
/// with target [`ACCESS_TARGET`].
///
/// The record is formatted on the calling (poller) thread only if that target is
/// enabled, into a per-thread buffer; whether emitting blocks is up to the
/// installed logger, so prefer [`JsonLines`](super::JsonLines) for busy servers.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogCrate;

impl LogCrate {
    /// The sink (it has no state).
    pub fn new() -> Self {
        LogCrate
    }
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn emit(json: &[u8]) {
    // Always valid UTF-8 (see `Record::write_json`); the lossy path is never taken.
    match std::str::from_utf8(json) {
        Ok(s) => log::info!(target: ACCESS_TARGET, "{s}"),
        Err(_) => log::info!(target: ACCESS_TARGET, "{}", String::from_utf8_lossy(json)),
    }
}

/// Formats with `write` into this thread's buffer and emits the result, when
/// the access target is enabled.
fn emit_with(write: impl Fn(&mut Vec<u8>)) {
    if !log::log_enabled!(target: ACCESS_TARGET, log::Level::Info) {
        return;
    }
    let done = BUF
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                write(&mut buf);
                emit(&buf);
                true
            }
            // Re-entered from inside the logger: fall back to a fresh buffer.
            Err(_) => false,
        })
        .unwrap_or(false);
    if !done {
        let mut buf = Vec::with_capacity(640);
        write(&mut buf);
        emit(&buf);
    }
}

impl AccessLog for LogCrate {
    fn record(&self, stats: &ConnStats) {
        emit_with(|buf| stats.write_json(buf));
    }
    fn wants_requests(&self) -> bool {
        true
    }
    fn request(&self, record: &RequestRecord) {
        emit_with(|buf| record.write_json(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CloseReason, Side};
    use std::sync::Mutex;

    struct Capture(Mutex<Vec<(String, log::Level, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
            v.push((r.target().to_string(), r.level(), r.args().to_string()));
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    #[test]
    fn records_go_to_the_log_crate_as_json() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        let mut s = ConnStats::new(
            0xfeed_f00d,
            Side::Server,
            "http",
            "127.0.0.1:80".parse().unwrap(),
        );
        s.close(CloseReason::Evicted, None);
        LogCrate::new().record(&s);
        LogCrate.record(&s);
        let got: Vec<_> = CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, m)| t == ACCESS_TARGET && m.contains("4277006349"))
            .cloned()
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        for (_, level, msg) in got {
            assert_eq!(level, log::Level::Info);
            let j: serde_json::Value = serde_json::from_str(&msg).unwrap();
            assert_eq!(j["conn_id"].as_u64(), Some(0xfeed_f00d));
            assert_eq!(j["close_reason"].as_str(), Some("evicted"));
        }
    }
}
