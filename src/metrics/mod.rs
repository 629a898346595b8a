//! Per-connection statistics and where they go when a connection closes.
//!
//! Every connection carries one [`ConnStats`], filled where each event happens
//! (one clock read per event, no extra syscalls). When the connection closes, for
//! any reason, the stats are handed once to the connection's [`AccessLog`]. This
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
//!   [`AccessLog`]: the same close records feed its counters and histograms, and
//!   [`Tee`] sends them to both.
//!
//! `docs/access-log.md` defines every field, unit and null.

mod aggregate;
mod clock;
mod histogram;
mod intern;
mod jsonl;
mod log_sink;
mod prometheus;
mod record;
mod sinks;
mod stats;
#[cfg(test)]
mod testjson;

pub use aggregate::ServerMetrics;
pub use histogram::{Histogram, HistogramSnapshot};
pub use jsonl::{JsonLines, JsonLinesBuilder, DEFAULT_CAPACITY, DEFAULT_FLUSH_INTERVAL};
pub use log_sink::{LogCrate, ACCESS_TARGET};
pub use record::Record;
pub use sinks::{MemoryLog, NullLog, Tee};
pub use stats::{CloseReason, ConnStats, Side};

use std::sync::Arc;

/// A sink for the records of closed connections.
///
/// `record` is called on the thread that closed the connection (a poller thread),
/// so an implementation must not block: hand the record to a background thread or
/// drop it and count the drop.
pub trait AccessLog: Send + Sync + 'static {
    /// One connection has closed; `stats` is final.
    fn record(&self, stats: &ConnStats);

    /// A connection was opened (accepted, or connected by a client pool). Sinks
    /// that count open connections use it; the default does nothing.
    fn opened(&self) {}
}

impl<T: AccessLog + ?Sized> AccessLog for Arc<T> {
    fn record(&self, stats: &ConnStats) {
        (**self).record(stats)
    }
    fn opened(&self) {
        (**self).opened()
    }
}
