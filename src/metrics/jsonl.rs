//! [`JsonLines`]: the default access-log writer, one JSON object per line.
//!
//! `record` runs on a poller thread, so it must never wait for a disk. It takes a
//! heap-free [`Record`] snapshot and offers it to a bounded channel with
//! `try_send`; if the channel is full the record is dropped and counted, never
//! queued without bound and never blocking. A background thread formats records
//! into one buffer and writes it out when it fills, when it has held data for the
//! flush interval (200 ms by default, so `tail -f` sees a record well within a
//! second), or when asked to flush. Drops are reported in the log itself, as a
//! `{"dropped":N,...}` line, and through `log::warn!`.
//!
//! It writes a line per closed connection (`"kind":"conn"`) and, unless
//! [turned off](JsonLinesBuilder::requests), a line per request
//! (`"kind":"request"`). Request lines come far more often, so they take a
//! cheaper path: the thread that ended the exchange formats the line into a
//! buffer of its own (at most `capacity` lines; past that they are dropped
//! and counted), and the writer swaps the buffer out whole every tick (see
//! `lines.rs`). Lines written by one thread keep their order; lines of
//! different threads (handler threads answering one connection's pipelined
//! requests) may not, and a connection's line may land just before its last
//! request's: order by `conn_id` and `index` where it matters. While records come, the writer looks for them
//! every 20 ms; after half a second without any it sleeps until one arrives
//! (or a second passes, to notice a reopen), so an idle server's log costs
//! one wake-up a second, not fifty.
//!
//! Rotation works like nginx's `SIGHUP`/`USR1`: move the file away, then call
//! [`JsonLines::reopen`] (or set the flag from [`JsonLines::reopen_flag`] in a
//! signal handler); the writer reopens the path before it writes the next record.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::inplace::LineBuf;
use super::lines::LineBuffers;
use super::record::{write_rfc3339, Record};
use super::{AccessLog, ConnStats, RequestRecord};

/// Records the channel holds by default before `record` starts dropping.
pub const DEFAULT_CAPACITY: usize = 4096;
/// How long the writer holds formatted records before writing them by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// How often the writer thread looks for records. With the default capacity it
/// keeps up with about 200,000 records a second before it has to drop.
const TICK: Duration = Duration::from_millis(20);

/// Formatted bytes that trigger a write before the flush interval is up.
const BUF_LIMIT: usize = 64 * 1024;
/// Empty looks after which the writer stops polling and waits for a record.
const IDLE_AFTER: u32 = 25;
/// Longest wait of an idle writer: a reopen flag set by a signal handler is
/// seen within this.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Least time between two drop reports (unless a flush or shutdown forces one).
const REPORT_EVERY: Duration = Duration::from_secs(1);

// Records travel by value: a box would cost an allocation on the poller thread
// and a cross-thread free for every record, to save channel slots allocated once.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Record),
    Flush(Sender<io::Result<()>>),
    Wake,
}

struct Shared {
    dropped: AtomicU64,
    written: AtomicU64,
    reopen: Arc<AtomicBool>,
    /// Request lines, formatted by the threads that ended the exchanges.
    lines: LineBuffers,
}

/// An [`AccessLog`] that appends one JSON object per closed connection to a file,
/// stdout or any writer, from a background thread. See the module docs.
///
/// Dropping it stops the thread after everything already accepted is written.
pub struct JsonLines {
    tx: Option<Sender<Msg>>,
    requests: bool,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    target: String,
}

/// Options for a [`JsonLines`] writer.
#[derive(Debug, Clone)]
pub struct JsonLinesBuilder {
    capacity: usize,
    flush_interval: Duration,
    requests: bool,
}

impl Default for JsonLinesBuilder {
    fn default() -> Self {
        JsonLinesBuilder {
            capacity: DEFAULT_CAPACITY,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            requests: true,
        }
    }
}

impl JsonLinesBuilder {
    /// Connection records waiting for the writer thread before further ones
    /// are dropped, and request lines each thread may hold (at least 1;
    /// default [`DEFAULT_CAPACITY`]). Each channel slot takes about 350
    /// bytes, allocated up front; a thread's line buffer grows as needed.
    pub fn capacity(mut self, records: usize) -> Self {
        self.capacity = records.max(1);
        self
    }

    /// Longest time a formatted record waits in the writer's buffer (clamped to
    /// 1 ms ..= 1 s; default [`DEFAULT_FLUSH_INTERVAL`]).
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every.clamp(Duration::from_millis(1), Duration::from_secs(1));
        self
    }

    /// Whether a line is written per request as well as per connection
    /// (default `true`). Off, only connections are logged, and a server
    /// builds no request records for this sink.
    pub fn requests(mut self, on: bool) -> Self {
        self.requests = on;
        self
    }

    /// Appends to the file at `path`, creating it if needed.
    pub fn open(self, path: impl AsRef<Path>) -> io::Result<JsonLines> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path)?;
        let target = path.display().to_string();
        self.start(Output::File { path, file }, target)
    }

    /// Writes to the process's standard output.
    pub fn stdout(self) -> io::Result<JsonLines> {
        self.start(Output::Stdout, "stdout".into())
    }

    /// Writes to `w` (a pipe, a socket, a test buffer). [`JsonLines::reopen`] does
    /// nothing for it.
    pub fn writer(self, w: impl Write + Send + 'static) -> io::Result<JsonLines> {
        self.start(Output::Writer(Box::new(w)), "writer".into())
    }

    fn start(self, out: Output, target: String) -> io::Result<JsonLines> {
        let (tx, rx) = bounded(self.capacity);
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            reopen: Arc::new(AtomicBool::new(false)),
            lines: LineBuffers::new(self.capacity as u64),
        });
        let worker = Worker {
            rx,
            shared: shared.clone(),
            out,
            buf: Vec::with_capacity(BUF_LIMIT + 1024),
            in_buf: 0,
            dirty_since: None,
            interval: self.flush_interval,
            error: None,
            reported: 0,
            last_report: None,
            spare: LineBuf::default(),
        };
        let handle = thread::Builder::new()
            .name("taskweave-access-log".into())
            .spawn(move || worker.run())?;
        Ok(JsonLines {
            tx: Some(tx),
            requests: self.requests,
            shared,
            worker: Some(handle),
            target,
        })
    }
}

impl JsonLines {
    /// Options: channel capacity and flush interval.
    pub fn builder() -> JsonLinesBuilder {
        JsonLinesBuilder::default()
    }

    /// A writer appending to the file at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> io::Result<JsonLines> {
        Self::builder().open(path)
    }

    /// A writer to standard output with default options.
    pub fn stdout() -> io::Result<JsonLines> {
        Self::builder().stdout()
    }

    /// Records that did not reach the output: dropped because the channel was
    /// full, or lost to a write error.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the output so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Asks the writer to close and reopen its file (after the file was moved away
    /// for rotation). Records passed to `record` after this call go to the new
    /// file; records still queued at the moment of the call may land in either.
    /// Never blocks.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        if let Some(tx) = &self.tx {
            // Only a nudge: if the channel is full the writer is busy and sees the
            // flag before its next record anyway.
            let _ = tx.try_send(Msg::Wake);
        }
    }

    /// The flag behind [`reopen`](Self::reopen). Setting it to `true` is all a
    /// signal handler may do (for example `signal_hook::flag::register(SIGHUP,
    /// log.reopen_flag())`); the writer notices it within the flush interval.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.shared.reopen.clone()
    }

    /// Waits until every record passed to `record` before this call is written
    /// and flushed, along with a report of any drops. Returns the first write or
    /// reopen error since the previous flush. Blocks: for tests and shutdown, not
    /// for a poller thread.
    pub fn flush(&self) -> io::Result<()> {
        let stopped = || io::Error::other("access log writer has stopped");
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        let (ack_tx, ack_rx) = bounded(1);
        tx.send(Msg::Flush(ack_tx)).map_err(|_| stopped())?;
        ack_rx.recv().map_err(|_| stopped())?
    }
}

impl JsonLines {
    /// Offers `msg` to the writer; a full channel drops it, counted.
    fn offer(&self, msg: Msg) {
        let sent = match &self.tx {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => false,
        };
        if !sent {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AccessLog for JsonLines {
    fn record(&self, stats: &ConnStats) {
        self.offer(Msg::Record(Record::from(stats)));
    }
    fn wants_requests(&self) -> bool {
        self.requests
    }
    fn request(&self, record: &RequestRecord) {
        let Some(tx) = &self.tx else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let lines = &self.shared.lines;
        match lines.append(|w| record.write_line(w.buf, w.wall, w.time, w.addrs)) {
            None => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The first line for a writer that waits on its channel wakes it.
            Some(true) if lines.idle.load(Ordering::SeqCst) => {
                let _ = tx.try_send(Msg::Wake);
            }
            Some(_) => {}
        }
    }
}

impl fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLines")
            .field("target", &self.target)
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        // Disconnecting lets the writer drain what is queued, flush and exit.
        self.tx = None;
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

enum Output {
    File { path: PathBuf, file: File },
    Stdout,
    Writer(Box<dyn Write + Send>),
}

impl Output {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.write_all(b),
            Output::Stdout => io::stdout().lock().write_all(b),
            Output::Writer(w) => w.write_all(b),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            // Writes go straight to the file descriptor: nothing is buffered.
            Output::File { .. } => Ok(()),
            Output::Stdout => io::stdout().lock().flush(),
            Output::Writer(w) => w.flush(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        match self {
            Output::File { path, file } => {
                *file = open_append(path)?;
                Ok(())
            }
            Output::Stdout | Output::Writer(_) => Ok(()),
        }
    }
}

/// The background thread's state.
struct Worker {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    out: Output,
    /// Formatted lines not yet written.
    buf: Vec<u8>,
    /// Records in `buf`.
    in_buf: u64,
    /// When `buf` became non-empty.
    dirty_since: Option<Instant>,
    interval: Duration,
    /// First error since the last flush, for `flush()` to return.
    error: Option<io::Error>,
    /// Drops already reported.
    reported: u64,
    last_report: Option<Instant>,
    /// The empty buffer swapped for a thread's request lines.
    spare: LineBuf,
}

impl Worker {
    fn run(mut self) {
        // The writer polls instead of blocking on the channel: a sender then
        // never has a sleeping receiver to wake, so logging a record costs the
        // poller a queue push, not a futex wake and a context switch.
        //
        // An idle writer (nothing buffered, nothing for a while) waits on the
        // channel instead: the first record after a pause pays the wake.
        let mut empty_looks = 0;
        'run: loop {
            let mut got = false;
            if empty_looks >= IDLE_AFTER && self.buf.is_empty() {
                // Idle, then one more look: a line added before `idle` was
                // set is taken here, one added after it sends a wake-up.
                self.shared.lines.idle.store(true, Ordering::SeqCst);
                got = self.take_lines();
                if !got {
                    match self.rx.recv_timeout(IDLE_WAIT) {
                        Ok(msg) => {
                            got = true;
                            self.handle(&msg);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break 'run,
                    }
                }
                self.shared.lines.idle.store(false, Ordering::SeqCst);
            } else {
                std::thread::sleep(TICK);
            }
            // Request lines first: a connection's own record usually follows
            // its requests'.
            got |= self.take_lines();
            loop {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        got = true;
                        self.handle(&msg);
                    }
                    Err(TryRecvError::Empty) => break,
                    // Every sender is gone and the queue is empty.
                    Err(TryRecvError::Disconnected) => break 'run,
                }
            }
            empty_looks = if got {
                0
            } else {
                empty_looks.saturating_add(1)
            };
            self.check_reopen();
            let now = Instant::now();
            if self
                .dirty_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.interval)
            {
                self.write_out();
            }
            self.report_drops(false, now);
        }
        self.take_lines();
        self.report_drops(true, Instant::now());
        self.write_out();
        if let Err(e) = self.out.flush() {
            log::error!("access log: final flush failed: {e}");
        }
    }

    fn handle(&mut self, msg: &Msg) {
        match msg {
            Msg::Record(r) => self.push_line(|buf| r.write_json(buf)),
            Msg::Flush(ack) => {
                self.take_lines();
                self.check_reopen();
                self.report_drops(true, Instant::now());
                self.write_out();
                let flushed = self.out.flush();
                let result = match self.error.take() {
                    Some(e) => Err(e),
                    None => flushed,
                };
                let _ = ack.send(result);
            }
            Msg::Wake => self.check_reopen(),
        }
    }

    /// Takes the request lines the threads formatted; whether there were any.
    fn take_lines(&mut self) -> bool {
        self.check_reopen();
        let shared = self.shared.clone();
        let mut spare = std::mem::take(&mut self.spare);
        let n = shared
            .lines
            .take(&mut spare, |bytes, lines| self.add_lines(bytes, lines));
        self.spare = spare;
        n > 0
    }

    /// One thread's request lines: a small batch joins the buffer; a large
    /// one is written as it is, after what the buffer holds (no copy).
    fn add_lines(&mut self, bytes: &[u8], lines: u64) {
        if bytes.len() < BUF_LIMIT {
            self.buf.extend_from_slice(bytes);
            self.in_buf += lines;
            self.dirty_since.get_or_insert_with(Instant::now);
            if self.buf.len() >= BUF_LIMIT {
                self.write_out();
            }
            return;
        }
        self.write_out();
        self.write_counted(bytes, lines);
    }

    /// Formats one record's line with `write` into the buffer.
    fn push_line(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.check_reopen();
        write(&mut self.buf);
        self.buf.push(b'\n');
        self.in_buf += 1;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        if self.buf.len() >= BUF_LIMIT {
            self.write_out();
        }
    }

    fn check_reopen(&mut self) {
        let flag = &self.shared.reopen;
        if flag.load(Ordering::Acquire) && flag.swap(false, Ordering::AcqRel) {
            // What is already formatted goes to the old file.
            self.write_out();
            if let Err(e) = self.out.reopen() {
                log::error!("access log: reopen failed, still writing to the old file: {e}");
                self.error.get_or_insert(e);
            }
        }
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        self.write_counted(&buf, self.in_buf);
        self.buf = buf;
        self.buf.clear();
        self.in_buf = 0;
        self.dirty_since = None;
    }

    /// Writes `bytes`, holding `lines` records, counting them written or lost.
    fn write_counted(&mut self, bytes: &[u8], lines: u64) {
        match self.out.write_all(bytes) {
            Ok(()) => {
                self.shared.written.fetch_add(lines, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.dropped.fetch_add(lines, Ordering::Relaxed);
                log::error!("access log: write failed, {lines} records lost: {e}");
                self.error.get_or_insert(e);
            }
        }
    }

    /// Adds a `{"dropped":N,"dropped_total":M,"time":"..."}` line for drops not yet
    /// reported, at most once per [`REPORT_EVERY`] unless `force`d.
    fn report_drops(&mut self, force: bool, now: Instant) {
        let total = self.shared.dropped.load(Ordering::Relaxed);
        if total <= self.reported {
            return;
        }
        if !force
            && self
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) < REPORT_EVERY)
        {
            return;
        }
        let new = total - self.reported;
        let mut n = itoa::Buffer::new();
        self.buf.extend_from_slice(b"{\"dropped\":");
        self.buf.extend_from_slice(n.format(new).as_bytes());
        self.buf.extend_from_slice(b",\"dropped_total\":");
        self.buf.extend_from_slice(n.format(total).as_bytes());
        self.buf.extend_from_slice(b",\"time\":\"");
        write_rfc3339(SystemTime::now(), &mut self.buf);
        self.buf.extend_from_slice(b"\"}\n");
        if self.dirty_since.is_none() {
            self.dirty_since = Some(now);
        }
        log::warn!("access log: dropped {new} records ({total} in total); the writer could not keep up or could not write");
        self.reported = total;
        self.last_report = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CloseReason, Side};
    use serde_json::Value as Json;
    use std::sync::{Condvar, Mutex};

    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "taskweave-jsonl-{}-{}-{name}",
            std::process::id(),
            n
        ));
        // A run long ago may have had this process id: start empty.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("access.log")
    }

    fn stats(id: u64) -> ConnStats {
        let mut s = ConnStats::new(id, Side::Server, "http", "127.0.0.1:4000".parse().unwrap());
        s.add_in(10);
        s.close(CloseReason::PeerClosed, None);
        s
    }

    fn lines(path: &Path) -> Vec<Json> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn writes_one_parsable_line_per_record_in_order() {
        let path = temp_path("order");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let log = JsonLines::open(&path).unwrap();
        for id in 0..500 {
            log.record(&stats(id));
        }
        log.flush().unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 501, "appends after the existing line");
        for (i, j) in l[1..].iter().enumerate() {
            assert_eq!(j["conn_id"].as_u64(), Some(i as u64));
        }
        assert_eq!(log.written(), 500);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn records_reach_the_file_without_a_flush_call() {
        let path = temp_path("tail");
        let log = JsonLines::open(&path).unwrap();
        log.record(&stats(77));
        let start = Instant::now();
        loop {
            let l = lines(&path);
            if l.len() == 1 {
                assert_eq!(l[0]["conn_id"].as_u64(), Some(77));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "not written within 1 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn drop_writes_everything_and_stops() {
        let path = temp_path("drop");
        let log = JsonLines::builder()
            .flush_interval(Duration::from_secs(1))
            .open(&path)
            .unwrap();
        for id in 0..100 {
            log.record(&stats(id));
        }
        drop(log);
        assert_eq!(lines(&path).len(), 100);
    }

    #[test]
    fn reopen_follows_rotation() {
        let path = temp_path("rotate");
        let rotated = path.with_extension("log.1");
        let log = JsonLines::open(&path).unwrap();
        log.record(&stats(1));
        log.flush().unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record(&stats(2));
        log.flush().unwrap();
        let old = lines(&rotated);
        let new = lines(&path);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0]["conn_id"].as_u64(), Some(1));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0]["conn_id"].as_u64(), Some(2));

        // The bare flag, as a signal handler would set it.
        std::fs::rename(&path, path.with_extension("log.2")).unwrap();
        log.reopen_flag().store(true, Ordering::Release);
        log.record(&stats(3));
        log.flush().unwrap();
        assert_eq!(lines(&path)[0]["conn_id"].as_u64(), Some(3));
    }

    #[test]
    fn failed_reopen_is_reported_and_writing_goes_on() {
        let path = temp_path("badreopen");
        let log = JsonLines::open(&path).unwrap();
        let dir = path.parent().unwrap().to_path_buf();
        let moved = dir.with_extension("moved");
        std::fs::rename(&dir, &moved).unwrap();
        log.reopen();
        log.record(&stats(5));
        assert!(
            log.flush().is_err(),
            "reopen into a missing directory must fail"
        );
        // Still written, to the old (moved) file.
        assert_eq!(lines(&moved.join("access.log")).len(), 1);
        assert!(log.flush().is_ok(), "the error is reported once");
    }

    #[derive(Default)]
    struct GateState {
        open: bool,
        entered: bool,
        data: Vec<u8>,
    }

    /// A writer that blocks in `write` until opened.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<GateState>, Condvar)>);

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut st = m.lock().unwrap();
            st.entered = true;
            cv.notify_all();
            while !st.open {
                st = cv.wait(st).unwrap();
            }
            st.data.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Gate {
        fn wait_entered(&self) {
            let (m, cv) = &*self.0;
            let mut st = m.lock().unwrap();
            while !st.entered {
                st = cv.wait(st).unwrap();
            }
        }
        fn open(&self) {
            let (m, cv) = &*self.0;
            m.lock().unwrap().open = true;
            cv.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.0 .0.lock().unwrap().data.clone()).unwrap()
        }
    }

    #[test]
    fn full_channel_drops_counts_and_reports() {
        let gate = Gate::default();
        let log = JsonLines::builder()
            .capacity(1)
            .flush_interval(Duration::from_millis(1))
            .writer(gate.clone())
            .unwrap();
        log.record(&stats(0));
        gate.wait_entered(); // the writer is now stuck writing record 0
        let start = Instant::now();
        for id in 1..=100 {
            log.record(&stats(id));
        }
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "record blocked: {took:?}"
        );
        assert_eq!(log.dropped(), 99, "one fits in the channel");
        gate.open();
        log.flush().unwrap();
        let text = gate.text();
        let l: Vec<Json> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(l.len(), 3, "{text}");
        assert_eq!(l[0]["conn_id"].as_u64(), Some(0));
        // The report goes in as soon as the writer notices the drops: before or
        // after the one record that fit in the channel.
        let ids: Vec<u64> = l.iter().filter_map(|j| j["conn_id"].as_u64()).collect();
        assert_eq!(ids, [0, 1]);
        let report = l.iter().find(|j| j.get("dropped").is_some()).unwrap();
        assert_eq!(report["dropped"].as_u64(), Some(99));
        assert_eq!(report["dropped_total"].as_u64(), Some(99));
        assert!(report["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(log.written(), 2);
        // Nothing new dropped: no second report.
        log.flush().unwrap();
        assert_eq!(gate.text().lines().count(), 3);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_surface_and_count_as_dropped() {
        let log = JsonLines::builder().writer(Broken).unwrap();
        log.record(&stats(1));
        log.record(&stats(2));
        let err = log.flush().unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(log.dropped(), 2);
        assert_eq!(log.written(), 0);
    }

    #[test]
    fn stdout_target_works() {
        let log = JsonLines::stdout().unwrap();
        log.record(&stats(123));
        log.flush().unwrap();
        assert_eq!(log.written(), 1);
        assert!(format!("{log:?}").contains("stdout"));
    }

    #[test]
    fn shared_across_threads() {
        let path = temp_path("threads");
        let log = Arc::new(JsonLines::builder().capacity(100_000).open(&path).unwrap());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let log = log.clone();
                thread::spawn(move || {
                    for i in 0..1000 {
                        log.record(&stats(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.flush().unwrap();
        let mut ids: Vec<u64> = lines(&path)
            .iter()
            .filter_map(|j| j["conn_id"].as_u64())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..4000).collect::<Vec<_>>());
    }

    /// Cost of `record` on the caller's thread. Run with
    /// `cargo test --release -- --ignored record_path --nocapture`.
    #[test]
    #[ignore]
    fn record_path_cost() {
        let log = JsonLines::builder()
            .capacity(1 << 20)
            .writer(io::sink())
            .unwrap();
        let mut s = stats(1);
        s.request_complete(Instant::now(), 100, 0);
        s.response_complete(Instant::now(), 100, 1000, Some(200));
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            log.record(&s);
        }
        let per = t.elapsed() / n;
        log.flush().unwrap();
        println!(
            "JsonLines::record: {per:?} per record, dropped {}",
            log.dropped()
        );
        let mut buf = Vec::with_capacity(1024);
        let r = Record::from(&s);
        let t = Instant::now();
        for _ in 0..n {
            buf.clear();
            r.write_json(&mut buf);
        }
        println!("Record::write_json: {:?} per record", t.elapsed() / n);
        let m = crate::metrics::ServerMetrics::new();
        let t = Instant::now();
        for _ in 0..n {
            m.record(&s);
        }
        println!("ServerMetrics::record: {:?} per record", t.elapsed() / n);
        assert!(per < Duration::from_micros(1));
        // The request record: handing it over, and formatting it.
        let mut r = RequestRecord::new(crate::metrics::Side::Server, "http");
        r.method = "GET".into();
        r.path = "/api/v1/items?page=2".into();
        r.status = Some(200);
        r.conn_id = Some(1);
        r.peer = Some("127.0.0.1:40000".parse().unwrap());
        let t = Instant::now();
        for _ in 0..n {
            log.request(&r);
        }
        let per = t.elapsed() / n;
        log.flush().unwrap();
        println!("JsonLines::request: {per:?} per record");
        let t = Instant::now();
        for _ in 0..n {
            buf.clear();
            r.write_json(&mut buf);
        }
        println!(
            "RequestRecord::write_json: {:?} per record",
            t.elapsed() / n
        );
    }
}
