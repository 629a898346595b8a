//! Metrics of the application's own, registered on a
//! [`ServerMetrics`](super::ServerMetrics) and rendered on the same page.
//!
//! Registration takes a lock and is meant for start-up; the handles it returns
//! are cheap to clone and to update from any thread. A [`Counter`] is sharded
//! like the built-in counters (an `inc` writes only this thread's cache line);
//! a [`Gauge`] is one atomic, since `set` needs a single value.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::histogram::Histogram;
use super::prometheus as prom;
use super::shard::{self, Sharded};

/// A counter of the application's own: it only goes up. Clones count into
/// the same value.
#[derive(Clone, Default)]
pub struct Counter(Arc<Sharded<AtomicU64>>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.local().fetch_add(1, Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        shard::add(self.0.local(), n);
    }

    /// The count so far, over every thread.
    pub fn get(&self) -> u64 {
        self.0.sum(|c| c)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

/// A gauge of the application's own: a value that goes up and down (queue
/// length, jobs running). Clones share the value.
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.add(-1);
    }

    /// Adds `delta` (negative to subtract); wraps around at the ends of `i64`.
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

/// Why a metric could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricError {
    /// The name is not a valid Prometheus metric name for an application:
    /// it must match `[a-zA-Z_][a-zA-Z0-9_]*` and not start with `__`
    /// (colons are reserved for recording rules).
    InvalidName(String),
    /// The name is one of the built-in metrics', or one of the series a
    /// histogram renders (`_bucket`, `_sum`, `_count`) would clash with
    /// another metric.
    Reserved(String),
    /// A metric of another kind was registered under this name.
    KindMismatch {
        /// The name.
        name: String,
        /// The kind it was registered as: `"counter"`, `"gauge"` or
        /// `"histogram"`.
        registered: &'static str,
    },
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricError::InvalidName(n) => write!(
                f,
                "invalid metric name {n:?}: use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __"
            ),
            MetricError::Reserved(n) => write!(f, "metric name {n:?} is taken"),
            MetricError::KindMismatch { name, registered } => {
                write!(f, "metric {name:?} is already registered as a {registered}")
            }
        }
    }
}

impl std::error::Error for MetricError {}

/// One registered metric.
#[derive(Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Arc<Histogram>),
}

impl Metric {
    fn kind(&self) -> &'static str {
        match self {
            Metric::Counter(_) => "counter",
            Metric::Gauge(_) => "gauge",
            Metric::Histogram(_) => "histogram",
        }
    }
}

struct Entry {
    name: String,
    help: String,
    metric: Metric,
}

/// The series names a family renders: its name, and a histogram's three.
fn series(name: &str, histogram: bool) -> Vec<String> {
    let mut v = vec![name.to_string()];
    if histogram {
        v.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
    }
    v
}

/// Whether `name` is a metric name an application may use.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// The application's metrics of one `ServerMetrics`, in registration order.
#[derive(Default)]
pub(super) struct Registry {
    entries: Mutex<Vec<Entry>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_list()
            .entries(entries.iter().map(|e| (&e.name, e.metric.kind())))
            .finish()
    }
}

impl Registry {
    /// The metric named `name`, registered as a `kind` made by `make` if
    /// there is none; `reserved` lists the series the built-in families
    /// render.
    fn register(
        &self,
        name: &str,
        help: &str,
        reserved: &[&str],
        kind: &'static str,
        make: impl FnOnce() -> Metric,
    ) -> Result<Metric, MetricError> {
        if !valid_name(name) {
            return Err(MetricError::InvalidName(name.to_string()));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.iter().find(|e| e.name == name) {
            return if e.metric.kind() == kind {
                Ok(e.metric.clone())
            } else {
                Err(MetricError::KindMismatch {
                    name: name.to_string(),
                    registered: e.metric.kind(),
                })
            };
        }
        let new_series = series(name, kind == "histogram");
        let clash = |taken: &str| new_series.iter().any(|s| s == taken);
        let taken_by_user = entries.iter().any(|e| {
            series(&e.name, matches!(e.metric, Metric::Histogram(_)))
                .iter()
                .any(|s| clash(s))
        });
        if taken_by_user || reserved.iter().any(|r| clash(r)) {
            return Err(MetricError::Reserved(name.to_string()));
        }
        let new = make();
        entries.push(Entry {
            name: name.to_string(),
            help: help.to_string(),
            metric: new.clone(),
        });
        Ok(new)
    }

    /// A counter (see `ServerMetrics::counter`).
    pub(super) fn counter(
        &self,
        name: &str,
        help: &str,
        reserved: &[&str],
    ) -> Result<Counter, MetricError> {
        match self.register(name, help, reserved, "counter", || {
            Metric::Counter(Counter::default())
        })? {
            Metric::Counter(c) => Ok(c),
            other => Err(MetricError::KindMismatch {
                name: name.to_string(),
                registered: other.kind(),
            }),
        }
    }

    /// A gauge (see `ServerMetrics::gauge`).
    pub(super) fn gauge(
        &self,
        name: &str,
        help: &str,
        reserved: &[&str],
    ) -> Result<Gauge, MetricError> {
        match self.register(name, help, reserved, "gauge", || {
            Metric::Gauge(Gauge::default())
        })? {
            Metric::Gauge(g) => Ok(g),
            other => Err(MetricError::KindMismatch {
                name: name.to_string(),
                registered: other.kind(),
            }),
        }
    }

    /// A histogram (see `ServerMetrics::histogram`).
    pub(super) fn histogram(
        &self,
        name: &str,
        help: &str,
        reserved: &[&str],
    ) -> Result<Arc<Histogram>, MetricError> {
        let make = || Metric::Histogram(Arc::new(Histogram::new()));
        match self.register(name, help, reserved, "histogram", make)? {
            Metric::Histogram(h) => Ok(h),
            other => Err(MetricError::KindMismatch {
                name: name.to_string(),
                registered: other.kind(),
            }),
        }
    }

    /// Appends every registered metric, each name after `prefix` (already
    /// sanitized, with its `_`).
    pub(super) fn render(&self, prefix: &str, out: &mut String) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries.iter() {
            let name = format!("{prefix}{}", e.name);
            match &e.metric {
                Metric::Counter(c) => prom::single(out, &name, "counter", &e.help, c.get()),
                Metric::Gauge(g) => prom::single(out, &name, "gauge", &e.help, g.get()),
                Metric::Histogram(h) => {
                    prom::histogram(out, &name, &e.help, &h.snapshot(), prom::LATENCY)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_follow_the_prometheus_rules() {
        for ok in ["jobs_total", "_x", "A9_b", "x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "9x", "a-b", "a b", "a:b", "é", "__x", "x\n"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn handles_share_their_value_across_clones_and_threads() {
        let c = Counter::default();
        let g = Gauge::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, g) = (c.clone(), g.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                        c.add(2);
                        c.add(0);
                        g.inc();
                        g.inc();
                        g.dec();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 12_000);
        assert_eq!(g.get(), 4_000);
        g.add(-5_000);
        assert_eq!(g.get(), -1_000);
        g.set(7);
        assert_eq!(format!("{g:?} {c:?}"), "Gauge(7) Counter(12000)");
    }

    #[test]
    fn same_name_same_kind_is_the_same_metric() {
        let r = Registry::default();
        let a = r.counter("jobs_total", "Jobs.", &[]).unwrap();
        let b = r.counter("jobs_total", "Other help.", &[]).unwrap();
        a.inc();
        assert_eq!(b.get(), 1);
        let h1 = r.histogram("job_seconds", "Job time.", &[]).unwrap();
        let h2 = r.histogram("job_seconds", "Job time.", &[]).unwrap();
        h1.observe(Duration::from_millis(3));
        assert_eq!(h2.snapshot().count(), 1);
        // The first help stays.
        let mut out = String::new();
        r.render("", &mut out);
        assert!(out.starts_with("# HELP jobs_total Jobs.\n"), "{out}");
    }

    #[test]
    fn refusals() {
        let r = Registry::default();
        r.counter("jobs", "J.", &[]).unwrap();
        r.histogram("lat", "L.", &[]).unwrap();
        assert_eq!(
            r.gauge("jobs", "J.", &[]).unwrap_err(),
            MetricError::KindMismatch {
                name: "jobs".into(),
                registered: "counter"
            }
        );
        assert!(matches!(
            r.histogram("jobs", "J.", &[]),
            Err(MetricError::KindMismatch { .. })
        ));
        assert_eq!(
            r.counter("a-b", "", &[]).unwrap_err(),
            MetricError::InvalidName("a-b".into())
        );
        // Series of a histogram, and a histogram whose series are taken.
        for (name, hist) in [
            ("lat_count", false),
            ("lat_bucket", false),
            ("jobs", true), // kind mismatch, checked above
        ] {
            let res = if hist {
                r.histogram(name, "", &[]).map(drop)
            } else {
                r.counter(name, "", &[]).map(drop)
            };
            assert!(res.is_err(), "{name}");
        }
        r.counter("x_sum", "", &[]).unwrap();
        assert_eq!(
            r.histogram("x", "", &[]).unwrap_err(),
            MetricError::Reserved("x".into())
        );
        // Built-in names.
        let builtin = ["requests_total", "t_seconds_count"];
        assert!(r.counter("requests_total", "", &builtin).is_err());
        assert!(r.histogram("t_seconds", "", &builtin).is_err());
        assert!(r.gauge("requests", "", &builtin).is_ok());
        let e = MetricError::Reserved("requests_total".into());
        assert!(e.to_string().contains("taken"));
    }
}
