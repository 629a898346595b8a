//! Per-connection and per-request statistics, and where they go.
//!
//! Every connection carries one [`ConnStats`], filled where each event happens
//! (one clock read per event, no extra syscalls). When the connection closes, for
//! any reason, the stats are handed once to the connection's [`AccessLog`]. A
//! sink that [wants them](AccessLog::wants_requests) also gets a
//! [`RequestRecord`] as each exchange ends, so a keep-alive connection's
//! requests are told apart, and counters move while it is still open. This
//! module depends on nothing else in the crate, so any layer can report into it.
//!
//! Why it is shaped this way:
//!
//! - **Memory.** An idle keep-alive connection may cost 0.4 KiB in total, and
//!   every one carries its stats, so [`ConnStats`] is packed into 96 bytes with
//!   rare data out of line (see `stats.rs`).
//! - **The poller never waits for logging.** A sink's `record` runs on the poller
//!   thread. [`JsonLines`] copies a heap-free [`Record`] into a bounded channel and
//!   counts what does not fit; a background thread does the formatting and I/O.
//! - **Logs and metrics from one source.** [`ServerMetrics`] is itself an
//!   [`AccessLog`]: the same request and close records feed its counters and
//!   histograms, and [`Tee`] sends them to both.
//! - **No shared hot spot.** Counters and histograms are sharded per thread:
//!   each thread adds to cache lines only it writes, a scrape sums them.
//!
//! `docs/access-log.md` defines every field, unit and null.

mod addrs;
mod aggregate;
mod clock;
mod histogram;
mod inplace;
mod intern;
mod jsonl;
mod lines;
mod log_sink;
mod prometheus;
mod record;
mod request;
mod shard;
mod sinks;
mod stats;
mod user;

pub use aggregate::{ServerMetrics, StatusClass};
pub use histogram::{Histogram, HistogramSnapshot};
pub use jsonl::{JsonLines, JsonLinesBuilder, DEFAULT_CAPACITY, DEFAULT_FLUSH_INTERVAL};
pub use log_sink::{LogCrate, ACCESS_TARGET};
pub use record::Record;
pub use request::{RequestRecord, Text};
pub use sinks::{MemoryLog, NullLog, Tee};
pub use stats::{CloseReason, ConnStats, Side};
pub use user::{Counter, Gauge, MetricError};

use std::sync::Arc;

/// A sink for the records of closed connections and, if it wants them, of
/// each request.
///
/// Every method is called on the thread where the event happened (a poller, or
/// the handler thread that finished an answer, under that connection's lock),
/// so an implementation must not block and must not call back into the
/// connection: hand the record to a background thread, or count it, or drop
/// it and count the drop.
pub trait AccessLog: Send + Sync + 'static {
    /// One connection has closed; `stats` is final.
    fn record(&self, stats: &ConnStats);

    /// A connection was opened (accepted, or connected by a client pool). Sinks
    /// that count open connections use it; the default does nothing.
    fn opened(&self) {}

    /// Whether this sink wants a [`RequestRecord`] per exchange. Asked once,
    /// when a server starts or a client task is made; `false` (the default)
    /// spares every request the work of building one.
    fn wants_requests(&self) -> bool {
        false
    }

    /// One exchange is over: its response is complete, or its connection
    /// ended first (then `record.error` says why). Called only on a sink
    /// that [wants requests](AccessLog::wants_requests).
    fn request(&self, record: &RequestRecord) {
        let _ = record;
    }

    /// A server began answering a request with a stream; its record comes
    /// when the stream ends (`streamed` set). For gauges of open streams.
    fn stream_started(&self) {}
}

impl<T: AccessLog + ?Sized> AccessLog for Arc<T> {
    fn record(&self, stats: &ConnStats) {
        (**self).record(stats)
    }
    fn opened(&self) {
        (**self).opened()
    }
    fn wants_requests(&self) -> bool {
        (**self).wants_requests()
    }
    fn request(&self, record: &RequestRecord) {
        (**self).request(record)
    }
    fn stream_started(&self) {
        (**self).stream_started()
    }
}
