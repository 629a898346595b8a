//! [`ServerMetrics`]: per-server totals and latency histograms, fed by the same
//! close records as the access log.
//!
//! The access log answers "what happened to this connection"; these counters
//! answer "how is the server doing" without reading the log. Everything is a
//! relaxed atomic updated once per closed connection (counters whose value is
//! zero are skipped), so the record path takes no lock. Counters sum whole
//! connections at close: a long-lived stream's bytes appear when it ends.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::histogram::Histogram;
use super::prometheus as prom;
use super::shard::add;
use super::{AccessLog, CloseReason, ConnStats};

/// Counters and histograms for one server (or client pool). Share it behind an
/// `Arc`: register it as an access log (alone or in a [`Tee`](super::Tee)) and
/// call [`conn_opened`](Self::conn_opened) when a connection is accepted.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    opened: AtomicU64,
    closed: AtomicU64,
    by_reason: [AtomicU64; CloseReason::ALL.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    requests: AtomicU64,
    status_4xx: AtomicU64,
    status_5xx: AtomicU64,
    write_pauses: AtomicU64,
    paused_us: AtomicU64,
    ratelimit_delay_us: AtomicU64,
    events_sent: AtomicU64,
    events_dropped: AtomicU64,
    first_byte: Histogram,
    lifetime: Histogram,
}

impl ServerMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection was opened (accepted, or connected for a client pool).
    pub fn conn_opened(&self) {
        self.opened.fetch_add(1, Relaxed);
    }

    /// Connections open now: opened minus closed (0 if more closes than opens
    /// were reported).
    pub fn connections_open(&self) -> u64 {
        let closed = self.closed.load(Relaxed);
        self.opened.load(Relaxed).saturating_sub(closed)
    }
    /// Connections opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Relaxed)
    }
    /// Connections closed so far.
    pub fn connections_closed(&self) -> u64 {
        self.closed.load(Relaxed)
    }
    /// Connections closed for `reason`.
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.by_reason
            .get(reason.index())
            .map_or(0, |c| c.load(Relaxed))
    }
    /// Bytes read by closed connections.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Relaxed)
    }
    /// Bytes written by closed connections.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }
    /// Requests served by closed connections.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// Responses with a 4xx status.
    pub fn status_4xx(&self) -> u64 {
        self.status_4xx.load(Relaxed)
    }
    /// Responses with a 5xx status.
    pub fn status_5xx(&self) -> u64 {
        self.status_5xx.load(Relaxed)
    }
    /// Write pauses (socket full).
    pub fn write_pauses(&self) -> u64 {
        self.write_pauses.load(Relaxed)
    }
    /// Total time writes were paused.
    pub fn paused_time(&self) -> Duration {
        Duration::from_micros(self.paused_us.load(Relaxed))
    }
    /// Total time rate limiters held output back.
    pub fn ratelimit_delay(&self) -> Duration {
        Duration::from_micros(self.ratelimit_delay_us.load(Relaxed))
    }
    /// Messages of flow-controlled streams sent, over closed connections.
    pub fn events_sent(&self) -> u64 {
        self.events_sent.load(Relaxed)
    }
    /// Stream events dropped by overflow policies, over closed connections.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Relaxed)
    }
    /// Time to first byte of each connection's first exchange; query it with
    /// [`snapshot`](Histogram::snapshot) (`p50()`, `p90()`, `p99()`, `max()`).
    pub fn first_byte(&self) -> &Histogram {
        &self.first_byte
    }
    /// Connection lifetimes.
    pub fn lifetime(&self) -> &Histogram {
        &self.lifetime
    }

    /// Appends every metric in the Prometheus text format (0.0.4) to `out`, each
    /// name starting with `prefix` and `_` (e.g. `"taskweave"` gives
    /// `taskweave_connections_open`). Invalid characters in `prefix` become `_`.
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
        let closed = name("connections_closed_total");
        prom::header(out, &closed, "counter", "Connections closed, by reason.");
        for r in CloseReason::ALL {
            out.push_str(&closed);
            out.push_str("{reason=\"");
            out.push_str(r.as_str());
            out.push_str("\"} ");
            out.push_str(itoa::Buffer::new().format(self.closed_by(r)));
            out.push('\n');
        }
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
        prom::single(
            out,
            &name("requests_total"),
            "counter",
            "Requests served (or made, on the client side).",
            self.requests(),
        );
        let errors = name("error_responses_total");
        prom::header(
            out,
            &errors,
            "counter",
            "Responses with an error status, by class.",
        );
        for (class, v) in [("4xx", self.status_4xx()), ("5xx", self.status_5xx())] {
            out.push_str(&errors);
            out.push_str("{class=\"");
            out.push_str(class);
            out.push_str("\"} ");
            out.push_str(itoa::Buffer::new().format(v));
            out.push('\n');
        }
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
            self.paused_us.load(Relaxed),
        );
        prom::single_seconds(
            out,
            &name("ratelimit_delay_seconds_total"),
            "counter",
            "Time rate limiters held output back.",
            self.ratelimit_delay_us.load(Relaxed),
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
            &name("first_byte_seconds"),
            "Time to first byte of each connection's first exchange.",
            &self.first_byte.snapshot(),
        );
        prom::histogram(
            out,
            &name("connection_lifetime_seconds"),
            "Connection lifetime, accept or connect to close.",
            &self.lifetime.snapshot(),
        );
    }
}

impl AccessLog for ServerMetrics {
    fn opened(&self) {
        self.conn_opened();
    }

    fn record(&self, s: &ConnStats) {
        self.closed.fetch_add(1, Relaxed);
        if let Some(c) = s.close_reason().and_then(|r| self.by_reason.get(r.index())) {
            c.fetch_add(1, Relaxed);
        }
        add(&self.bytes_in, s.bytes_in());
        add(&self.bytes_out, s.bytes_out());
        add(&self.requests, u64::from(s.requests()));
        add(&self.status_4xx, u64::from(s.status_4xx().unwrap_or(0)));
        add(&self.status_5xx, u64::from(s.status_5xx().unwrap_or(0)));
        add(&self.write_pauses, u64::from(s.write_pauses()));
        add(&self.paused_us, s.paused_us());
        add(&self.ratelimit_delay_us, s.ratelimit_delay_us());
        add(&self.events_sent, s.events_sent());
        add(&self.events_dropped, s.events_dropped());
        if let Some(us) = s.first_byte_us() {
            self.first_byte.observe_us(us);
        }
        if let Some(us) = s.lifetime_us() {
            self.lifetime.observe_us(us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Side;
    use std::collections::HashMap;
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
        assert_eq!(m.requests(), 3);
        assert_eq!(m.status_4xx(), 1);
        assert_eq!(m.status_5xx(), 1);
        assert_eq!(m.write_pauses(), 1);
        let fb = m.first_byte().snapshot();
        assert_eq!(fb.count(), 3);
        assert_eq!(fb.max(), Some(Duration::from_millis(8)));
        assert_eq!(fb.p50(), Some(Duration::from_millis(4)));
        let life = m.lifetime().snapshot();
        assert_eq!(life.count(), 3);
        assert_eq!(life.max(), Some(Duration::from_millis(30)));
    }

    /// A strict reader of the text format: names, labels, values, one TYPE per
    /// family before its samples, histogram invariants. Returns samples by
    /// `name{labels}`.
    fn parse_exposition(text: &str) -> Result<HashMap<String, f64>, String> {
        fn valid_name(n: &str) -> bool {
            let mut c = n.chars();
            matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
                && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        let mut family: Option<(String, String)> = None;
        let mut last_le = f64::NEG_INFINITY;
        let mut last_bucket = 0.0;
        let mut inf_count = None;
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !valid_name(name) {
                    return Err(format!("bad HELP name {line}"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut p = rest.split(' ');
                let (name, kind) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
                if !valid_name(name) || !["counter", "gauge", "histogram"].contains(&kind) {
                    return Err(format!("bad TYPE {line}"));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(format!("duplicate family {name}"));
                }
                family = Some((name.to_string(), kind.to_string()));
                last_le = f64::NEG_INFINITY;
                last_bucket = 0.0;
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(format!("stray line {line:?}"));
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().map_err(|_| format!("bad value {line}"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (
                    n,
                    Some(l.strip_suffix('}').ok_or(format!("bad labels {line}"))?),
                ),
                None => (series, None),
            };
            if !valid_name(name) {
                return Err(format!("bad name {line}"));
            }
            let (fam, kind) = family
                .as_ref()
                .ok_or(format!("sample before TYPE: {line}"))?;
            let ok = match kind.as_str() {
                "histogram" => [
                    format!("{fam}_bucket"),
                    format!("{fam}_sum"),
                    format!("{fam}_count"),
                ]
                .contains(&name.to_string()),
                _ => name == fam,
            };
            if !ok {
                return Err(format!("{name} outside its family {fam}"));
            }
            if let Some(l) = labels {
                for pair in l.split(',') {
                    let (k, v) = pair.split_once('=').ok_or(format!("bad label {line}"))?;
                    if !valid_name(k) || !v.starts_with('"') || !v.ends_with('"') || v.len() < 2 {
                        return Err(format!("bad label {line}"));
                    }
                }
            }
            if name.ends_with("_bucket") && kind == "histogram" {
                let le = labels
                    .and_then(|l| l.strip_prefix("le=\""))
                    .and_then(|l| l.strip_suffix('"'))
                    .ok_or(format!("bucket without le: {line}"))?;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le {line}"))?
                };
                if le <= last_le || value < last_bucket {
                    return Err(format!("buckets out of order at {line}"));
                }
                last_le = le;
                last_bucket = value;
                if le.is_infinite() {
                    inf_count = Some(value);
                }
            }
            if name.ends_with("_count") && kind == "histogram" && inf_count != Some(value) {
                return Err(format!("_count differs from +Inf bucket: {line}"));
            }
            if samples.insert(series.to_string(), value).is_some() {
                return Err(format!("duplicate series {series}"));
            }
        }
        Ok(samples)
    }

    #[test]
    fn prometheus_text_is_valid() {
        let m = ServerMetrics::new();
        m.conn_opened();
        m.conn_opened();
        m.record(&closed(CloseReason::KeepAliveTimeout, 3, 2500, 200));
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
        assert_eq!(s["taskweave_requests_total"], 1.0);
        assert_eq!(s["taskweave_error_responses_total{class=\"4xx\"}"], 0.0);
        assert_eq!(s["taskweave_first_byte_seconds_bucket{le=\"0.0025\"}"], 0.0);
        assert_eq!(s["taskweave_first_byte_seconds_bucket{le=\"0.005\"}"], 1.0);
        assert_eq!(s["taskweave_first_byte_seconds_count"], 1.0);
        assert_eq!(s["taskweave_first_byte_seconds_sum"], 0.003);
        assert_eq!(
            s["taskweave_connection_lifetime_seconds_bucket{le=\"2.5\"}"],
            1.0
        );
        assert_eq!(
            s["taskweave_connection_lifetime_seconds_bucket{le=\"1\"}"],
            0.0
        );
        assert_eq!(s["taskweave_connection_lifetime_seconds_sum"], 2.5);
        for reason in CloseReason::ALL {
            let key = format!("taskweave_connections_closed_total{{reason=\"{reason}\"}}");
            assert!(s.contains_key(&key), "{key}");
        }
    }

    #[test]
    fn checker_catches_broken_text() {
        assert!(parse_exposition("x 1\n").is_err()); // no TYPE
        assert!(parse_exposition("# TYPE x counter\nx{a=b} 1\n").is_err());
        assert!(parse_exposition(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"
        )
        .is_err());
        assert!(
            parse_exposition("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\n").is_err()
        );
    }

    #[test]
    fn odd_prefixes_still_render_valid_names() {
        let m = ServerMetrics::new();
        for prefix in ["", "my app", "0day", "ns:sub"] {
            let mut out = String::new();
            m.render_prometheus(prefix, &mut out);
            parse_exposition(&out).unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
        }
    }

    #[test]
    fn concurrent_records_all_count() {
        let m = std::sync::Arc::new(ServerMetrics::new());
        let s = closed(CloseReason::Local, 1, 2, 500);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (m, s) = (m.clone(), s.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.conn_opened();
                        m.record(&s);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.connections_closed(), 4000);
        assert_eq!(m.closed_by(CloseReason::Local), 4000);
        assert_eq!(m.status_5xx(), 4000);
        assert_eq!(m.lifetime().snapshot().count(), 4000);
        assert_eq!(m.connections_open(), 0);
    }
}
