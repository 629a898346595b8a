//! The small sinks: discard everything, keep everything in memory, and send each
//! record to several sinks.

use std::sync::{Arc, Mutex};

use super::{AccessLog, ConnStats};

/// Discards every record: the sink used when none is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullLog;

impl AccessLog for NullLog {
    fn record(&self, _stats: &ConnStats) {}
}

/// Keeps every record in memory; for tests and small tools.
///
/// Unbounded and behind a mutex: not for a busy server.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    records: Arc<Mutex<Vec<ConnStats>>>,
}

impl MemoryLog {
    /// An empty in-memory log. Clones share the same records.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the records so far, in close order.
    pub fn records(&self) -> Vec<ConnStats> {
        self.records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// How many records have arrived.
    pub fn len(&self) -> usize {
        self.records
            .lock()
            .map(|r| r.len())
            .unwrap_or_else(|e| e.into_inner().len())
    }

    /// Whether no record has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AccessLog for MemoryLog {
    fn record(&self, stats: &ConnStats) {
        let mut r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        r.push(stats.clone());
    }
}

/// Sends every record to each of several sinks, in order: for example a
/// [`JsonLines`](super::JsonLines) file and a [`ServerMetrics`](super::ServerMetrics).
#[derive(Clone, Default)]
pub struct Tee {
    sinks: Vec<Arc<dyn AccessLog>>,
}

impl Tee {
    /// A tee over `sinks`.
    pub fn new(sinks: Vec<Arc<dyn AccessLog>>) -> Self {
        Tee { sinks }
    }

    /// Adds one more sink.
    pub fn with(mut self, sink: impl AccessLog) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds one more shared sink.
    pub fn push(&mut self, sink: Arc<dyn AccessLog>) {
        self.sinks.push(sink);
    }

    /// How many sinks records go to.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether records go nowhere.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl AccessLog for Tee {
    fn record(&self, stats: &ConnStats) {
        for s in &self.sinks {
            s.record(stats);
        }
    }
    fn opened(&self) {
        for s in &self.sinks {
            s.opened();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CloseReason, Side};

    #[test]
    fn tee_reaches_every_sink() {
        let a = MemoryLog::new();
        let b = MemoryLog::new();
        let tee = Tee::new(vec![Arc::new(a.clone())])
            .with(b.clone())
            .with(NullLog);
        assert_eq!(tee.len(), 3);
        let mut s = ConnStats::new(1, Side::Server, "http", "127.0.0.1:1".parse().unwrap());
        s.close(CloseReason::Local, None);
        tee.record(&s);
        tee.record(&s);
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 2);
        assert_eq!(b.records()[1].close_reason(), Some(CloseReason::Local));
        assert!(!a.is_empty());
    }

    #[test]
    fn arc_of_sink_is_a_sink() {
        let m = MemoryLog::new();
        let shared: Arc<dyn AccessLog> = Arc::new(m.clone());
        shared.record(&ConnStats::new(
            1,
            Side::Client,
            "x",
            "127.0.0.1:1".parse().unwrap(),
        ));
        Arc::clone(&shared).record(&ConnStats::new(
            2,
            Side::Client,
            "x",
            "127.0.0.1:1".parse().unwrap(),
        ));
        assert_eq!(m.len(), 2);
    }
}
