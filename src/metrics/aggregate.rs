//! [`ServerMetrics`]: per-server counters and latency histograms, live.
//!
//! The access log answers "what happened to this connection"; these counters
//! answer "how is the server doing" without reading the log. Requests count
//! as each one ends (from the engine's [`RequestRecord`]s), so a keep-alive
//! connection's requests show while it is still open; bytes, pauses and close
//! reasons count when a connection closes.
//!
//! Nothing here is a shared hot spot: every counter and histogram is sharded
//! per thread (see `shard.rs`), each thread adding with relaxed atomics to
//! cache lines only it writes, and a scrape sums the shards.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::histogram::Histogram;
use super::prometheus as prom;
use super::shard::{add, Sharded};
use super::user::{Counter, Gauge, MetricError, Registry};
use super::{AccessLog, CloseReason, ConnStats, RequestRecord, Side};

/// How a request ended, as `ServerMetrics` counts it: the `class` label of
/// `requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// A response with a status in 100–199 (`"1xx"`).
    Informational,
    /// 200–299 (`"2xx"`).
    Success,
    /// 300–399 (`"3xx"`).
    Redirection,
    /// 400–499 (`"4xx"`).
    ClientError,
    /// 500–599 (`"5xx"`).
    ServerError,
    /// A complete response without a status, as in protocols that have none
    /// (Redis, echo), or with one outside 100–599 (`"none"`).
    NoStatus,
    /// No complete response: the connection ended first, or a timeout or
    /// error cut the exchange short (`"error"`), whatever status had been
    /// sent. A stream is the exception: the peer leaving is how an event
    /// stream ends, so a stream whose head went out counts by its status.
    Failed,
}

impl StatusClass {
    /// Every class, in label order.
    pub const ALL: [StatusClass; 7] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::NoStatus,
        StatusClass::Failed,
    ];

    /// The class of one exchange: [`Failed`](Self::Failed) if it has an
    /// `error` (unless it is a stream whose head went out), else by its
    /// `status`.
    pub fn of(record: &RequestRecord) -> StatusClass {
        let head_sent = record.streamed && record.status.is_some();
        if record.error.is_some() && !head_sent {
            return StatusClass::Failed;
        }
        match record.status {
            Some(100..=199) => StatusClass::Informational,
            Some(200..=299) => StatusClass::Success,
            Some(300..=399) => StatusClass::Redirection,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..=599) => StatusClass::ServerError,
            _ => StatusClass::NoStatus,
        }
    }

    /// The label: `"1xx"` … `"5xx"`, `"none"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::NoStatus => "none",
            StatusClass::Failed => "error",
        }
    }

    /// Position in [`ALL`](Self::ALL).
    fn index(self) -> usize {
        self as usize
    }
}

/// One thread's counters. All of a shard's writes come from one thread (or a
/// few, past 16 threads), so nothing here is contended.
#[derive(Debug, Default)]
struct Counts {
    /// Requests ended, by [`StatusClass`].
    by_class: [AtomicU64; StatusClass::ALL.len()],
    /// Streamed responses begun (`stream_started`).
    streams_started: AtomicU64,
    /// Server streams whose record came (`streamed` set).
    streams_ended: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    by_reason: [AtomicU64; CloseReason::ALL.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    write_pauses: AtomicU64,
    paused_us: AtomicU64,
    ratelimit_delay_us: AtomicU64,
    events_sent: AtomicU64,
    events_dropped: AtomicU64,
}

/// Every series name the built-in families render (with an empty prefix):
/// an application's metric may not take one.
const RESERVED: &[&str] = &[
    "connections_open",
    "connections_opened_total",
    "connections_closed_total",
    "received_bytes_total",
    "sent_bytes_total",
    "requests_total",
    "streams_open",
    "streams_started_total",
    "write_pauses_total",
    "write_paused_seconds_total",
    "ratelimit_delay_seconds_total",
    "events_sent_total",
    "events_dropped_total",
    "request_duration_seconds",
    "request_duration_seconds_bucket",
    "request_duration_seconds_sum",
    "request_duration_seconds_count",
    "request_first_byte_seconds",
    "request_first_byte_seconds_bucket",
    "request_first_byte_seconds_sum",
    "request_first_byte_seconds_count",
    "stream_duration_seconds",
    "stream_duration_seconds_bucket",
    "stream_duration_seconds_sum",
    "stream_duration_seconds_count",
    "connection_lifetime_seconds",
    "connection_lifetime_seconds_bucket",
    "connection_lifetime_seconds_sum",
    "connection_lifetime_seconds_count",
    // Rendered next to these by `RateLimited::render_prometheus`.
    "requests_rate_limited_total",
];

/// Counters and histograms for one server (or client pool), and the
/// application's own metrics, for a Prometheus `/metrics` page.
///
/// Share it behind an `Arc` and register it as the access log (alone or in a
/// [`Tee`](super::Tee)): it [wants request records](AccessLog::wants_requests),
/// so requests count as each one ends, by [`StatusClass`], with their
/// latencies; bytes, pauses and close reasons count as each connection
/// closes. Every update goes to the calling thread's own shard, no lock and no
/// shared cache line; reading sums the shards. The engine must reach it
/// through sinks that pass `wants_requests` on (`Tee` and `Arc` do): requests
/// are counted only from request records, never from close records, so
/// nothing counts twice.
///
/// Metrics of the application's own ([`counter`](Self::counter),
/// [`gauge`](Self::gauge), [`histogram`](Self::histogram)) render on the same
/// page, after the built-in ones:
///
/// ```
/// use std::time::Duration;
/// use taskweave::metrics::{AccessLog, RequestRecord, ServerMetrics, Side};
///
/// let metrics = ServerMetrics::new();
/// let jobs = metrics.counter("jobs_total", "Jobs done.")?;
/// let queued = metrics.gauge("jobs_queued", "Jobs waiting.")?;
/// let job_time = metrics.histogram("job_seconds", "Time per job.")?;
/// jobs.inc();
/// queued.set(3);
/// job_time.observe(Duration::from_millis(12));
/// // Registering a name again returns the same metric.
/// metrics.counter("jobs_total", "Jobs done.")?.add(2);
/// assert_eq!(jobs.get(), 3);
///
/// // What a server reports as a request ends (the engine does this).
/// let mut r = RequestRecord::new(Side::Server, "http");
/// r.status = Some(200);
/// r.total_us = 350;
/// metrics.request(&r);
/// assert_eq!(metrics.requests(), 1);
///
/// let mut page = String::new();
/// metrics.render_prometheus("myapp", &mut page);
/// assert!(page.contains("myapp_requests_total{class=\"2xx\"} 1\n"));
/// assert!(page.contains("myapp_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
/// assert!(page.contains("# TYPE myapp_jobs_total counter\nmyapp_jobs_total 3\n"));
/// assert!(page.contains("myapp_jobs_queued 3\n"));
/// assert!(page.contains("myapp_job_seconds_bucket{le=\"0.025\"} 1\n"));
/// // Names are checked.
/// assert!(metrics.counter("jobs-total", "").is_err());
/// assert!(metrics.gauge("jobs_total", "").is_err());
/// # Ok::<(), taskweave::metrics::MetricError>(())
/// ```
#[derive(Debug, Default)]
pub struct ServerMetrics {
    counts: Sharded<Counts>,
    request_duration: Histogram,
    first_byte: Histogram,
    stream_duration: Histogram,
    lifetime: Histogram,
    user: Registry,
}

impl ServerMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sum over every thread's shard of one counter.
    fn sum(&self, field: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.counts.sum(field)
    }

    /// A connection was opened (accepted, or connected for a client pool).
    /// The engine calls it through [`AccessLog::opened`].
    pub fn conn_opened(&self) {
        self.counts.local().opened.fetch_add(1, Relaxed);
    }

    /// Connections open now: opened minus closed (0 if more closes than opens
    /// were reported).
    pub fn connections_open(&self) -> u64 {
        // Closes first: a connection that opens and closes between the two
        // reads makes the gauge too high for a moment, never too low.
        let closed = self.connections_closed();
        self.connections_opened().saturating_sub(closed)
    }
    /// Connections opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.sum(|c| &c.opened)
    }
    /// Connections closed so far.
    pub fn connections_closed(&self) -> u64 {
        self.sum(|c| &c.closed)
    }
    /// Connections closed for `reason`.
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.counts
            .iter()
            .filter_map(|c| c.by_reason.get(reason.index()))
            .fold(0u64, |a, c| a.wrapping_add(c.load(Relaxed)))
    }
    /// Bytes read by closed connections.
    pub fn bytes_in(&self) -> u64 {
        self.sum(|c| &c.bytes_in)
    }
    /// Bytes written by closed connections.
    pub fn bytes_out(&self) -> u64 {
        self.sum(|c| &c.bytes_out)
    }
    /// Requests ended so far (served, or made on the client side), counted as
    /// each one ends, whatever its class.
    pub fn requests(&self) -> u64 {
        StatusClass::ALL
            .iter()
            .fold(0u64, |a, &c| a.wrapping_add(self.requests_of(c)))
    }
    /// Requests ended so far in `class`.
    pub fn requests_of(&self, class: StatusClass) -> u64 {
        self.counts
            .iter()
            .filter_map(|c| c.by_class.get(class.index()))
            .fold(0u64, |a, c| a.wrapping_add(c.load(Relaxed)))
    }
    /// Complete responses with a 4xx status (`requests_of(ClientError)`).
    pub fn status_4xx(&self) -> u64 {
        self.requests_of(StatusClass::ClientError)
    }
    /// Complete responses with a 5xx status (`requests_of(ServerError)`).
    pub fn status_5xx(&self) -> u64 {
        self.requests_of(StatusClass::ServerError)
    }
    /// Streamed responses begun so far.
    pub fn streams_started(&self) -> u64 {
        self.sum(|c| &c.streams_started)
    }
    /// Streamed responses going on now: begun minus ended (0 if more ends
    /// than starts were reported).
    pub fn streams_open(&self) -> u64 {
        let ended = self.sum(|c| &c.streams_ended);
        self.streams_started().saturating_sub(ended)
    }
    /// Write pauses (socket full), over closed connections.
    pub fn write_pauses(&self) -> u64 {
        self.sum(|c| &c.write_pauses)
    }
    /// Total time writes were paused, over closed connections.
    pub fn paused_time(&self) -> Duration {
        Duration::from_micros(self.sum(|c| &c.paused_us))
    }
    /// Total time rate limiters held output back, over closed connections.
    pub fn ratelimit_delay(&self) -> Duration {
        Duration::from_micros(self.sum(|c| &c.ratelimit_delay_us))
    }
    /// Messages of flow-controlled streams sent, over closed connections.
    pub fn events_sent(&self) -> u64 {
        self.sum(|c| &c.events_sent)
    }
    /// Stream events dropped by overflow policies, over closed connections.
    pub fn events_dropped(&self) -> u64 {
        self.sum(|c| &c.events_dropped)
    }
    /// Duration (`total_us`) of every request that ended, failed ones
    /// included, streams excepted (see [`stream_duration`](Self::stream_duration));
    /// query it with [`snapshot`](Histogram::snapshot) (`p50()`, `p90()`,
    /// `p99()`, `max()`).
    pub fn request_duration(&self) -> &Histogram {
        &self.request_duration
    }
    /// Time to first byte (`first_byte_us`) of every request that has one,
    /// streams included.
    pub fn first_byte(&self) -> &Histogram {
        &self.first_byte
    }
    /// Duration of every streamed response, from its request to its end.
    pub fn stream_duration(&self) -> &Histogram {
        &self.stream_duration
    }
    /// Connection lifetimes, accept or connect to close.
    pub fn lifetime(&self) -> &Histogram {
        &self.lifetime
    }

    /// A counter of the application's own, rendered after the built-in
    /// metrics as `<prefix>_<name>` with `help` as its HELP line.
    ///
    /// Registering a name already registered as a counter returns that
    /// counter (its first help stays), so a name can be registered wherever
    /// it is used. Registration takes a lock: do it once, keep the handle.
    ///
    /// # Errors
    ///
    /// [`MetricError::InvalidName`] unless `name` matches
    /// `[a-zA-Z_][a-zA-Z0-9_]*` without a leading `__`;
    /// [`MetricError::Reserved`] if a built-in metric renders that name, or it
    /// clashes with a histogram's `_bucket`, `_sum` or `_count`;
    /// [`MetricError::KindMismatch`] if it is registered as a gauge or a
    /// histogram.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, MetricError> {
        self.user.counter(name, help, RESERVED)
    }

    /// A gauge of the application's own; as [`counter`](Self::counter).
    ///
    /// # Errors
    ///
    /// As for [`counter`](Self::counter).
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, MetricError> {
        self.user.gauge(name, help, RESERVED)
    }

    /// A histogram of the application's own, in seconds, with the request
    /// latency buckets (`le` 100 µs to 10 s); as [`counter`](Self::counter).
    /// Record with [`Histogram::observe`].
    ///
    /// # Errors
    ///
    /// As for [`counter`](Self::counter).
    pub fn histogram(&self, name: &str, help: &str) -> Result<Arc<Histogram>, MetricError> {
        self.user.histogram(name, help, RESERVED)
    }

    /// Appends every metric in the Prometheus text format (0.0.4) to `out`, each
    /// name starting with `prefix` and `_` (e.g. `"taskweave"` gives
    /// `taskweave_connections_open`): the built-in ones, then the
    /// application's in the order they were registered. Invalid characters in
    /// `prefix` become `_`.
    pub fn render_prometheus(&self, prefix: &str, out: &mut String) {
        let p = prom::sanitize_prefix(prefix);
        let name = |suffix: &str| format!("{p}{suffix}");
        prom::single(
            out,
            &name("connections_open"),
            "gauge",
            "Connections open now.",
            self.connections_open(),
        );
        prom::single(
            out,
            &name("connections_opened_total"),
            "counter",
            "Connections opened.",
            self.connections_opened(),
        );
        prom::labelled(
            out,
            &name("connections_closed_total"),
            "counter",
            "Connections closed, by reason.",
            "reason",
            CloseReason::ALL.map(|r| (r.as_str(), self.closed_by(r))),
        );
        prom::single(
            out,
            &name("received_bytes_total"),
            "counter",
            "Bytes read from sockets, counted when each connection closes.",
            self.bytes_in(),
        );
        prom::single(
            out,
            &name("sent_bytes_total"),
            "counter",
            "Bytes written to sockets, counted when each connection closes.",
            self.bytes_out(),
        );
        prom::labelled(
            out,
            &name("requests_total"),
            "counter",
            "Requests ended (served, or made on the client side), by status class; \
             error: no complete response (a stream counts by its status).",
            "class",
            StatusClass::ALL.map(|c| (c.as_str(), self.requests_of(c))),
        );
        prom::single(
            out,
            &name("streams_open"),
            "gauge",
            "Streamed responses going on now.",
            self.streams_open(),
        );
        prom::single(
            out,
            &name("streams_started_total"),
            "counter",
            "Streamed responses begun.",
            self.streams_started(),
        );
        prom::single(
            out,
            &name("write_pauses_total"),
            "counter",
            "Times writing paused because the socket was full.",
            self.write_pauses(),
        );
        prom::single_seconds(
            out,
            &name("write_paused_seconds_total"),
            "counter",
            "Time writing was paused because the socket was full.",
            self.sum(|c| &c.paused_us),
        );
        prom::single_seconds(
            out,
            &name("ratelimit_delay_seconds_total"),
            "counter",
            "Time rate limiters held output back.",
            self.sum(|c| &c.ratelimit_delay_us),
        );
        prom::single(
            out,
            &name("events_sent_total"),
            "counter",
            "Messages of flow-controlled streams sent.",
            self.events_sent(),
        );
        prom::single(
            out,
            &name("events_dropped_total"),
            "counter",
            "Stream events dropped by overflow policies.",
            self.events_dropped(),
        );
        prom::histogram(
            out,
            &name("request_duration_seconds"),
            "Request duration, from the request to the end of its response; streams excepted.",
            &self.request_duration.snapshot(),
            prom::LATENCY,
        );
        prom::histogram(
            out,
            &name("request_first_byte_seconds"),
            "Time from each request to the first byte of its response.",
            &self.first_byte.snapshot(),
            prom::LATENCY,
        );
        prom::histogram(
            out,
            &name("stream_duration_seconds"),
            "Duration of streamed responses, from the request to the stream's end.",
            &self.stream_duration.snapshot(),
            prom::LONG,
        );
        prom::histogram(
            out,
            &name("connection_lifetime_seconds"),
            "Connection lifetime, accept or connect to close.",
            &self.lifetime.snapshot(),
            prom::LONG,
        );
        self.user.render(&p, out);
    }
}

impl AccessLog for ServerMetrics {
    fn opened(&self) {
        self.conn_opened();
    }

    /// Counts what only the close knows: bytes, pauses, stream events, the
    /// reason and the lifetime. Requests and statuses are not counted here:
    /// [`request`](AccessLog::request) counted each as it ended.
    fn record(&self, s: &ConnStats) {
        let c = self.counts.local();
        c.closed.fetch_add(1, Relaxed);
        if let Some(r) = s.close_reason().and_then(|r| c.by_reason.get(r.index())) {
            r.fetch_add(1, Relaxed);
        }
        add(&c.bytes_in, s.bytes_in());
        add(&c.bytes_out, s.bytes_out());
        add(&c.write_pauses, u64::from(s.write_pauses()));
        add(&c.paused_us, s.paused_us());
        add(&c.ratelimit_delay_us, s.ratelimit_delay_us());
        add(&c.events_sent, s.events_sent());
        add(&c.events_dropped, s.events_dropped());
        if let Some(us) = s.lifetime_us() {
            self.lifetime.observe_us(us);
        }
    }

    fn wants_requests(&self) -> bool {
        true
    }

    fn request(&self, r: &RequestRecord) {
        let c = self.counts.local();
        if let Some(n) = c.by_class.get(StatusClass::of(r).index()) {
            n.fetch_add(1, Relaxed);
        }
        if r.streamed {
            // Only a server's streams were announced by `stream_started`.
            if r.side == Side::Server {
                c.streams_ended.fetch_add(1, Relaxed);
            }
            self.stream_duration.observe_us(r.total_us);
        } else {
            self.request_duration.observe_us(r.total_us);
        }
        if let Some(us) = r.first_byte_us {
            self.first_byte.observe_us(us);
        }
    }

    fn stream_started(&self) {
        self.counts.local().streams_started.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::prometheus::checker::parse_exposition;
    use std::time::Instant;

    fn closed(reason: CloseReason, fb_ms: u64, life_ms: u64, status: u16) -> ConnStats {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = ConnStats::new_at(1, Side::Server, "http", "127.0.0.1:1".parse().unwrap(), t0);
        s.add_in(100);
        s.add_out(1000);
        s.request_complete(t0, 90, 10);
        s.response_started(t0 + ms(fb_ms));
        s.response_complete(t0 + ms(fb_ms), 50, 950, Some(status));
        s.request_done();
        s.close_at(reason, None, t0 + ms(life_ms));
        s
    }

    /// A request record: `status`, `total_us`, first byte after `fb_us`.
    fn req(status: Option<u16>, total_us: u64, fb_us: Option<u64>) -> RequestRecord {
        let mut r = RequestRecord::new(Side::Server, "http");
        r.status = status;
        r.total_us = total_us;
        r.first_byte_us = fb_us;
        r
    }

    #[test]
    fn counts_closed_connections() {
        let m = ServerMetrics::new();
        m.conn_opened();
        m.conn_opened();
        m.conn_opened();
        m.record(&closed(CloseReason::PeerClosed, 2, 10, 200));
        m.record(&closed(CloseReason::PeerClosed, 4, 20, 404));
        let mut paused = closed(CloseReason::SendTimeout, 8, 30, 503);
        paused.pause(Instant::now());
        m.record(&paused);
        // A record with no reason (should not happen) still counts as closed.
        m.record(&ConnStats::new(
            9,
            Side::Server,
            "x",
            "127.0.0.1:1".parse().unwrap(),
        ));
        assert_eq!(m.connections_opened(), 3);
        assert_eq!(m.connections_closed(), 4);
        assert_eq!(m.connections_open(), 0);
        assert_eq!(m.closed_by(CloseReason::PeerClosed), 2);
        assert_eq!(m.closed_by(CloseReason::SendTimeout), 1);
        assert_eq!(m.closed_by(CloseReason::Reset), 0);
        assert_eq!(m.bytes_in(), 300);
        assert_eq!(m.bytes_out(), 3000);
        assert_eq!(m.write_pauses(), 1);
        let life = m.lifetime().snapshot();
        assert_eq!(life.count(), 3);
        assert_eq!(life.max(), Some(Duration::from_millis(30)));
        // Requests and statuses come from request records only: the close
        // records' counts are not added a second time.
        assert_eq!(m.requests(), 0);
        assert_eq!(m.status_4xx(), 0);
        assert_eq!(m.status_5xx(), 0);
        assert_eq!(m.first_byte().snapshot().count(), 0);
    }

    #[test]
    fn requests_count_live_by_class() {
        let m = ServerMetrics::new();
        assert!(m.wants_requests());
        m.opened();
        // 50 requests on one connection that stays open.
        for i in 0..50u64 {
            m.request(&req(Some(200), 100 + i, Some(50)));
        }
        m.request(&req(Some(101), 10, Some(10)));
        m.request(&req(Some(302), 10, Some(10)));
        m.request(&req(Some(404), 10, Some(10)));
        m.request(&req(Some(503), 10, Some(10)));
        m.request(&req(None, 10, Some(10))); // Redis, echo
        m.request(&req(Some(999), 10, Some(10)));
        let mut failed = req(Some(200), 7_000, Some(20));
        failed.error = Some("reset");
        m.request(&failed);
        let mut no_answer = req(None, 30_000, None);
        no_answer.error = Some("receive_timeout");
        m.request(&no_answer);
        use StatusClass::*;
        let got: Vec<u64> = StatusClass::ALL.iter().map(|&c| m.requests_of(c)).collect();
        assert_eq!(got, [1, 50, 1, 1, 1, 2, 2]);
        assert_eq!(m.requests(), 58);
        assert_eq!(m.status_4xx(), 1);
        assert_eq!(m.status_5xx(), 1);
        assert_eq!(m.requests_of(Failed), 2);
        assert_eq!(m.connections_open(), 1);
        let d = m.request_duration().snapshot();
        assert_eq!(d.count(), 58);
        assert_eq!(d.max(), Some(Duration::from_millis(30)));
        assert_eq!(m.first_byte().snapshot().count(), 57);
        assert_eq!(m.stream_duration().snapshot().count(), 0);
        let labels: Vec<&str> = StatusClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "error"]);
        assert_eq!(StatusClass::of(&req(Some(599), 0, None)), ServerError);
        assert_eq!(StatusClass::of(&req(Some(99), 0, None)), NoStatus);
        // A stream the peer left counts by its head's status; a reply cut
        // short is a failure whatever its status.
        let mut left = req(Some(200), 0, None);
        left.error = Some("peer_closed");
        assert_eq!(StatusClass::of(&left), Failed);
        left.streamed = true;
        assert_eq!(StatusClass::of(&left), Success);
    }

    #[test]
    fn streams_are_a_gauge_and_have_their_own_histogram() {
        let m = ServerMetrics::new();
        m.stream_started();
        m.stream_started();
        m.stream_started();
        assert_eq!(m.streams_open(), 3);
        let mut s = req(Some(200), 3_600_000_000, Some(150));
        s.streamed = true;
        m.request(&s);
        s.error = Some("peer_closed");
        m.request(&s);
        assert_eq!(m.streams_started(), 3);
        assert_eq!(m.streams_open(), 1);
        // A client's streamed response was never announced: the gauge holds.
        let mut c = s.clone();
        c.side = Side::Client;
        m.request(&c);
        assert_eq!(m.streams_open(), 1);
        assert_eq!(m.stream_duration().snapshot().count(), 3);
        assert_eq!(m.request_duration().snapshot().count(), 0);
        assert_eq!(m.first_byte().snapshot().count(), 3);
        // More ends than starts: zero, not a wrap.
        m.request(&s);
        m.request(&s);
        assert_eq!(m.streams_open(), 0);
        assert_eq!(m.requests(), 5);
    }

    #[test]
    fn prometheus_text_is_valid() {
        let m = ServerMetrics::new();
        m.conn_opened();
        m.conn_opened();
        m.record(&closed(CloseReason::KeepAliveTimeout, 3, 2500, 200));
        m.request(&req(Some(200), 3_000, Some(2_000)));
        m.request(&req(Some(200), 40, Some(30)));
        m.request(&req(Some(404), 20_000_000, Some(30)));
        m.stream_started();
        let mut out = String::new();
        m.render_prometheus("taskweave", &mut out);
        let s = parse_exposition(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(s["taskweave_connections_open"], 1.0);
        assert_eq!(s["taskweave_connections_opened_total"], 2.0);
        assert_eq!(
            s["taskweave_connections_closed_total{reason=\"keep_alive_timeout\"}"],
            1.0
        );
        assert_eq!(
            s["taskweave_connections_closed_total{reason=\"reset\"}"],
            0.0
        );
        assert_eq!(s["taskweave_received_bytes_total"], 100.0);
        assert_eq!(s["taskweave_sent_bytes_total"], 1000.0);
        assert_eq!(s["taskweave_requests_total{class=\"2xx\"}"], 2.0);
        assert_eq!(s["taskweave_requests_total{class=\"4xx\"}"], 1.0);
        assert_eq!(s["taskweave_requests_total{class=\"error\"}"], 0.0);
        for c in StatusClass::ALL {
            let key = format!("taskweave_requests_total{{class=\"{}\"}}", c.as_str());
            assert!(s.contains_key(&key), "{key}");
        }
        assert_eq!(s["taskweave_streams_open"], 1.0);
        assert_eq!(s["taskweave_streams_started_total"], 1.0);
        let d = "taskweave_request_duration_seconds";
        // 40 µs lands in the first bucket, 100 µs.
        assert_eq!(s[&format!("{d}_bucket{{le=\"0.0001\"}}")], 1.0);
        assert_eq!(s[&format!("{d}_bucket{{le=\"0.0025\"}}")], 1.0);
        assert_eq!(s[&format!("{d}_bucket{{le=\"0.005\"}}")], 2.0);
        assert_eq!(s[&format!("{d}_bucket{{le=\"10\"}}")], 2.0);
        assert_eq!(s[&format!("{d}_bucket{{le=\"+Inf\"}}")], 3.0);
        assert!(!s.contains_key(&format!("{d}_bucket{{le=\"25\"}}")));
        assert!(!s.contains_key(&format!("{d}_bucket{{le=\"0.00005\"}}")));
        assert_eq!(s[&format!("{d}_count")], 3.0);
        assert_eq!(s[&format!("{d}_sum")], 20.00304);
        let fb = "taskweave_request_first_byte_seconds";
        assert_eq!(s[&format!("{fb}_bucket{{le=\"0.0001\"}}")], 2.0);
        assert_eq!(s[&format!("{fb}_count")], 3.0);
        let life = "taskweave_connection_lifetime_seconds";
        assert_eq!(s[&format!("{life}_bucket{{le=\"2.5\"}}")], 1.0);
        assert_eq!(s[&format!("{life}_bucket{{le=\"1\"}}")], 0.0);
        assert_eq!(s[&format!("{life}_bucket{{le=\"0.001\"}}")], 0.0);
        assert_eq!(s[&format!("{life}_bucket{{le=\"10000\"}}")], 1.0);
        assert_eq!(s[&format!("{life}_sum")], 2.5);
        let sd = "taskweave_stream_duration_seconds";
        assert_eq!(s[&format!("{sd}_count")], 0.0);
        for reason in CloseReason::ALL {
            let key = format!("taskweave_connections_closed_total{{reason=\"{reason}\"}}");
            assert!(s.contains_key(&key), "{key}");
        }
        // 16 latency buckets, 22 long ones, each with +Inf.
        let buckets = |fam: &str| {
            s.keys()
                .filter(|k| k.starts_with(&format!("{fam}_bucket")))
                .count()
        };
        assert_eq!(buckets(d), 17);
        assert_eq!(buckets(fb), 17);
        assert_eq!(buckets(life), 23);
        assert_eq!(buckets(sd), 23);
    }

    #[test]
    fn reserved_names_are_every_builtin_series() {
        let m = ServerMetrics::new();
        let mut out = String::new();
        m.render_prometheus("", &mut out);
        let samples = parse_exposition(&out).unwrap();
        let mut names: Vec<&str> = samples
            .keys()
            .map(|k| k.split('{').next().unwrap_or(k))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut reserved: Vec<&str> = RESERVED
            .iter()
            .copied()
            .filter(|n| *n != "requests_rate_limited_total")
            .filter(|n| {
                // A histogram's family name is reserved but renders no
                // series of its own.
                !RESERVED.contains(&format!("{n}_bucket").as_str())
            })
            .collect();
        reserved.sort_unstable();
        assert_eq!(names, reserved);
        for n in RESERVED {
            assert!(m.counter(n, "").is_err(), "{n}");
        }
    }

    #[test]
    fn user_metrics_render_after_the_builtins() {
        let m = ServerMetrics::new();
        let jobs = m.counter("jobs_total", "Jobs done.").unwrap();
        let q = m.gauge("queue_length", "Waiting,\nnow \\ here.").unwrap();
        let h = m.histogram("job_seconds", "Time per job.").unwrap();
        jobs.add(41);
        jobs.inc();
        q.set(5);
        q.dec();
        q.add(-10);
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(60));
        assert!(m.counter("connections_open", "").is_err());
        assert!(m.gauge("request_duration_seconds_sum", "").is_err());
        assert!(m.counter("bad name", "").is_err());
        let mut out = String::new();
        m.render_prometheus("app", &mut out);
        let s = parse_exposition(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(s["app_jobs_total"], 42.0);
        assert_eq!(s["app_queue_length"], -6.0);
        assert_eq!(s["app_job_seconds_bucket{le=\"0.00025\"}"], 0.0);
        assert_eq!(s["app_job_seconds_bucket{le=\"0.0005\"}"], 1.0);
        assert_eq!(s["app_job_seconds_bucket{le=\"10\"}"], 1.0);
        assert_eq!(s["app_job_seconds_count"], 2.0);
        assert_eq!(s["app_job_seconds_sum"], 60.0003);
        assert!(out.contains("# HELP app_queue_length Waiting,\\nnow \\\\ here.\n"));
        // After every built-in, in registration order.
        let at = |needle: &str| out.find(needle).unwrap();
        assert!(at("# TYPE app_connection_lifetime_seconds") < at("# TYPE app_jobs_total"));
        assert!(at("# TYPE app_jobs_total counter") < at("# TYPE app_queue_length gauge"));
        assert!(at("# TYPE app_queue_length") < at("# TYPE app_job_seconds histogram"));
    }

    #[test]
    fn odd_prefixes_still_render_valid_names() {
        let m = ServerMetrics::new();
        m.counter("c", "").unwrap();
        for prefix in ["", "my app", "0day", "ns:sub"] {
            let mut out = String::new();
            m.render_prometheus(prefix, &mut out);
            parse_exposition(&out).unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
        }
    }

    #[test]
    fn concurrent_updates_all_count_across_shards() {
        let m = std::sync::Arc::new(ServerMetrics::new());
        let s = closed(CloseReason::Local, 1, 2, 500);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (m, s) = (m.clone(), s.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        m.conn_opened();
                        m.request(&req(Some(500), i, Some(1)));
                        m.stream_started();
                        let mut st = req(Some(200), i, None);
                        st.streamed = true;
                        m.request(&st);
                        m.record(&s);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.connections_closed(), 8000);
        assert_eq!(m.closed_by(CloseReason::Local), 8000);
        assert_eq!(m.status_5xx(), 8000);
        assert_eq!(m.requests(), 16_000);
        assert_eq!(m.lifetime().snapshot().count(), 8000);
        assert_eq!(m.request_duration().snapshot().count(), 8000);
        assert_eq!(m.stream_duration().snapshot().count(), 8000);
        assert_eq!(m.connections_open(), 0);
        assert_eq!(m.streams_open(), 0);
        // The threads wrote more than one shard.
        let used = m
            .counts
            .iter()
            .filter(|c| c.closed.load(Relaxed) > 0)
            .count();
        assert!(used > 1, "{used}");
    }

    /// Cost of `request` and `record` on the caller's thread, alone and with
    /// every thread of the machine counting at once. Run with
    /// `cargo test --release --lib -- --ignored request_path_cost --nocapture`.
    #[test]
    #[ignore]
    fn request_path_cost() {
        fn per(m: &ServerMetrics) -> (Duration, Duration) {
            let n = 2_000_000u32;
            let r = req(Some(200), 250, Some(120));
            let c = closed(CloseReason::PeerClosed, 1, 2, 200);
            let t = Instant::now();
            for _ in 0..n {
                m.request(std::hint::black_box(&r));
            }
            let req = t.elapsed() / n;
            let t = Instant::now();
            for _ in 0..n {
                m.record(std::hint::black_box(&c));
            }
            (req, t.elapsed() / n)
        }
        let m = std::sync::Arc::new(ServerMetrics::new());
        let (req1, rec1) = per(&m);
        println!("one thread: request {req1:?}, record {rec1:?}");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let all: Vec<_> = (0..threads)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || per(&m))
            })
            .collect();
        for (i, t) in all.into_iter().enumerate() {
            let (a, b) = t.join().unwrap();
            println!("{threads} threads, #{i}: request {a:?}, record {b:?}");
        }
    }
}
