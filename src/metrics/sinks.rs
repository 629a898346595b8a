//! The small sinks: discard everything, keep everything in memory, and send each
//! record to several sinks.

use std::sync::{Arc, Mutex};

use super::{AccessLog, ConnStats, RequestRecord};

/// Discards every record: the sink used when none is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullLog;

impl AccessLog for NullLog {
    fn record(&self, _stats: &ConnStats) {}
}

/// Keeps every record in memory, the connections' and the requests'; for
/// tests and small tools.
///
/// Unbounded and behind a mutex: not for a busy server.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    records: Arc<Mutex<Vec<ConnStats>>>,
    requests: Arc<Mutex<Vec<RequestRecord>>>,
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

    /// A copy of the request records so far, in the order the exchanges
    /// ended.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// How many connection records have arrived.
    pub fn len(&self) -> usize {
        self.records
            .lock()
            .map(|r| r.len())
            .unwrap_or_else(|e| e.into_inner().len())
    }

    /// Whether no connection record has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AccessLog for MemoryLog {
    fn record(&self, stats: &ConnStats) {
        let mut r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        r.push(stats.clone());
    }
    fn wants_requests(&self) -> bool {
        true
    }
    fn request(&self, record: &RequestRecord) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        r.push(record.clone());
    }
}

/// Sends every record to each of several sinks, in order: for example a
/// [`JsonLines`](super::JsonLines) file and a [`ServerMetrics`](super::ServerMetrics).
#[derive(Clone, Default)]
pub struct Tee {
    sinks: Vec<Arc<dyn AccessLog>>,
    /// The sinks that want request records, asked once, when added (as the
    /// engine asks a sink once): a request goes straight to them.
    wanting: Vec<Arc<dyn AccessLog>>,
}

impl Tee {
    /// A tee over `sinks`.
    pub fn new(sinks: Vec<Arc<dyn AccessLog>>) -> Self {
        let wanting = sinks
            .iter()
            .filter(|s| s.wants_requests())
            .cloned()
            .collect();
        Tee { sinks, wanting }
    }

    /// Adds one more sink.
    pub fn with(mut self, sink: impl AccessLog) -> Self {
        self.push(Arc::new(sink));
        self
    }

    /// Adds one more shared sink.
    pub fn push(&mut self, sink: Arc<dyn AccessLog>) {
        if sink.wants_requests() {
            self.wanting.push(sink.clone());
        }
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
    fn wants_requests(&self) -> bool {
        !self.wanting.is_empty()
    }
    fn request(&self, record: &RequestRecord) {
        for s in &self.wanting {
            s.request(record);
        }
    }
    fn stream_started(&self) {
        // Only where the stream's record will come too (a gauge of open
        // streams would never come down otherwise).
        for s in &self.wanting {
            s.stream_started();
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
