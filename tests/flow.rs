//! Flow-controlled HTTP streams (`ServerTask::stream_with`) against raw
//! sockets on 127.0.0.1: message and byte rates (with free bytes) timed at
//! the client, the held queue's overflow policies against a reader that has
//! stopped (drop-oldest with its gap notes, reject, disconnect), the stall
//! timeout, heartbeats, `Stream::on_close`, a graceful shutdown's farewell,
//! and a poller that must not spin while output waits on a stalled socket.
//!
//! `flow_inline.rs` includes this file to run every case again with
//! `process` and callbacks inline on the poller threads.
//!
//! Every test holds `exclusive()`: several measure time, memory or CPU, and
//! would disturb each other on a small machine.

mod support;

use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, MutexGuard, Once};
use std::time::{Duration, Instant};
use support::*;
use taskweave::comm::{FlowControl, FlowCounters, Overflow, SendError, SendState, Stream};
use taskweave::http::{Framing, Server, ServerBuilder, ServerHandle, ServerTask};
use taskweave::metrics::{CloseReason, ConnStats, MemoryLog};
use taskweave::{Series, Settings};

/// Whether this binary runs `process` inline on the poller threads.
fn inline_mode() -> bool {
    module_path!().starts_with("flow_inline")
}

/// Applies the mode of this binary (inline for `flow_inline`) before any
/// server starts, and serializes the tests.
fn setup() -> MutexGuard<'static, ()> {
    static MODE: Once = Once::new();
    MODE.call_once(|| {
        if inline_mode() {
            Settings {
                handler_threads: 0,
                ..Settings::default()
            }
            .apply()
            .expect("settings apply before any server starts");
        }
    });
    exclusive()
}

/// Starts a server on 127.0.0.1 that answers `/plain` with a small body and
/// every other path with `stream`.
fn serve(
    builder: ServerBuilder,
    stream: impl Fn(&mut ServerTask) + Send + Sync + 'static,
) -> ServerHandle {
    builder
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                if task.request().path() == "/plain" {
                    task.response().set_body("plain");
                } else {
                    stream(task);
                }
            },
        )
        .expect("serve")
}

/// A server whose every path answers with a stream under `flow`, a client
/// that asked for `/events` and read the head, and the stream's handle.
fn open_stream(builder: ServerBuilder, flow: FlowControl) -> (ServerHandle, Client, Stream) {
    let (tx, rx) = mpsc::channel::<Stream>();
    let server = serve(builder, move |task| {
        let Ok(stream) = task.stream_with(flow.clone()) else {
            return;
        };
        let _ = tx.send(stream);
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    c.stream_head();
    let stream = rx.recv_timeout(Duration::from_secs(10)).expect("streaming");
    (server, c, stream)
}

/// A piece of `size` bytes that starts with its id (8 digits).
fn piece(id: u64, size: usize) -> Bytes {
    let mut v = format!("{id:08}").into_bytes();
    v.resize(size.max(8), b'.');
    Bytes::from(v)
}

/// The id a piece starts with.
fn id_of(data: &[u8]) -> u64 {
    std::str::from_utf8(&data[..8])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a piece: {:?}", String::from_utf8_lossy(data)))
}

fn gap_note(n: u64) -> Bytes {
    Bytes::from(format!(": gap {n}\n"))
}

/// The number a gap note announces, if `data` is one.
fn gap_of(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data)
        .ok()?
        .strip_prefix(": gap ")?
        .trim_end()
        .parse()
        .ok()
}

/// The only record in `log`, once the connection has closed.
fn record(log: &MemoryLog) -> ConnStats {
    let all = records(log, 1);
    assert_eq!(all.len(), 1, "one connection, one record: {all:?}");
    all.into_iter().next().unwrap()
}

/// Whether `got` is within `tolerance` (a fraction) of `want`.
fn within(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= want * tolerance
}

/// A raw HTTP/1.1 client that reads chunked bodies chunk by chunk and notes
/// when each chunk arrived: the instant of the read that completed it.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    pos: usize,
    /// When the last read returned.
    read_at: Instant,
}

impl Client {
    fn new(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            pos: 0,
            read_at: Instant::now(),
        }
    }

    fn connect(addr: SocketAddr) -> Client {
        Client::new(TcpStream::connect(addr).expect("connect"))
    }

    /// A client with a 4 KiB receive buffer, so output backs up in the server
    /// as soon as it stops reading.
    fn stalled(addr: SocketAddr) -> Client {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        Client::new(sock.into())
    }

    fn get(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.s.write_all(req.as_bytes()).unwrap();
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// One read into the buffer; an error for the end of the connection, a
    /// reset or a timeout.
    fn fill(&mut self) -> Result<(), String> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        match self.s.read(&mut tmp) {
            Ok(0) => Err("end of connection".to_string()),
            Ok(n) => {
                self.read_at = Instant::now();
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// A response head.
    fn head(&mut self) -> String {
        loop {
            if let Some(p) = raw_http::find(self.unread(), b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.unread()[..p + 4]).into_owned();
                self.pos += p + 4;
                return head;
            }
            if let Err(e) = self.fill() {
                panic!(
                    "no response head ({e}); got {:?}",
                    String::from_utf8_lossy(self.unread())
                );
            }
        }
    }

    /// A streamed response's head: 200 and chunked.
    fn stream_head(&mut self) -> Instant {
        let head = self.head();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        self.read_at
    }

    /// The next chunk and when it arrived; `Ok(None)` for the last chunk.
    fn chunk(&mut self) -> Result<Option<(Instant, Vec<u8>)>, String> {
        loop {
            let rest = self.unread();
            if let Some(p) = raw_http::find(rest, b"\r\n") {
                let line = std::str::from_utf8(&rest[..p]).map_err(|e| e.to_string())?;
                let size = usize::from_str_radix(line, 16)
                    .map_err(|e| format!("bad chunk size {line:?}: {e}"))?;
                if size == 0 {
                    if rest.len() >= p + 4 {
                        if &rest[p + 2..p + 4] != b"\r\n" {
                            return Err("trailers after the last chunk".to_string());
                        }
                        self.pos += p + 4;
                        return Ok(None);
                    }
                } else if rest.len() >= p + 2 + size + 2 {
                    if &rest[p + 2 + size..p + 4 + size] != b"\r\n" {
                        return Err("a chunk not ended by CRLF".to_string());
                    }
                    let data = rest[p + 2..p + 2 + size].to_vec();
                    self.pos += p + 4 + size;
                    return Ok(Some((self.read_at, data)));
                }
            }
            self.fill()?;
        }
    }

    /// Every chunk up to the last one; panics if the stream does not end
    /// with its last chunk.
    fn body(&mut self) -> Vec<(Instant, Vec<u8>)> {
        let mut chunks = Vec::new();
        loop {
            match self.chunk() {
                Ok(Some(c)) => chunks.push(c),
                Ok(None) => return chunks,
                Err(e) => panic!(
                    "the stream ended without its last chunk ({e}) after {} chunks",
                    chunks.len()
                ),
            }
        }
    }

    /// A plain response with a `Content-Length` body.
    fn reply(&mut self) -> (String, Vec<u8>) {
        let head = self.head();
        let len: usize = raw_http::header(head.as_bytes(), "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no content-length: {head}"));
        while self.unread().len() < len {
            self.fill().unwrap();
        }
        let body = self.unread()[..len].to_vec();
        self.pos += len;
        (head, body)
    }

    /// Whether the server closes the connection (end or reset) within
    /// `timeout`, reading and discarding whatever comes first.
    fn closed_within(&mut self, timeout: Duration) -> bool {
        closed_by_peer(&mut self.s, timeout)
    }
}

// ---------------------------------------------------------------------------
// Rates

/// `message_rate(20, 1)`: forty pieces sent at once arrive in order, one
/// every 50 ms (the span from the first to the last within 10% of 39/20 s),
/// then the last chunk; the record counts 40 events and a rate-limit delay
/// close to the span, and the connection serves its next request.
#[test]
fn a_message_rate_spaces_forty_pieces_at_twenty_a_second() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (thread_tx, thread_rx) = mpsc::channel::<String>();
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let this = std::thread::current();
        let _ = thread_tx.send(this.name().unwrap_or_default().to_string());
        let Ok(stream) = task.stream_with(FlowControl::new().message_rate(20, 1)) else {
            return;
        };
        for i in 0..40 {
            stream.send(format!("msg {i}\n")).expect("held");
        }
        stream.finish();
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    c.stream_head();
    let chunks = c.body();
    let texts: Vec<String> = chunks
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    let want: Vec<String> = (0..40).map(|i| format!("msg {i}\n")).collect();
    assert_eq!(texts, want);
    // Inline, process runs in the poller's loop; with handler threads, on
    // the poller's thread too, with its loop set aside (the handoff).
    let thread = thread_rx.recv().unwrap();
    assert!(thread.starts_with("tw-poller"), "process ran on {thread}");
    let span = chunks[39].0 - chunks[0].0;
    let ideal = Duration::from_secs_f64(39.0 / 20.0);
    eprintln!("40 messages at 20/s: span {span:?} (ideal {ideal:?})");
    assert!(
        within(span.as_secs_f64(), ideal.as_secs_f64(), 0.10),
        "40 messages at 20/s spanned {span:?}, not {ideal:?} within 10%"
    );
    // No burst beyond 1: no two messages arrived much closer than 50 ms on
    // average over any ten.
    for w in chunks.windows(11) {
        let ten = w[10].0 - w[0].0;
        assert!(ten >= Duration::from_millis(400), "ten messages in {ten:?}");
    }

    // The connection is still usable.
    c.get("/plain");
    let (head, body) = c.reply();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"plain");
    drop(c);

    let rec = record(&log);
    assert_eq!(rec.requests(), 2);
    assert_eq!(rec.events_sent(), 40);
    assert_eq!(rec.events_dropped(), 0);
    let delay = rec.ratelimit_delay();
    eprintln!("rate-limit delay in the record: {delay:?}");
    assert!(
        within(delay.as_secs_f64(), span.as_secs_f64(), 0.10),
        "rate-limit delay {delay:?} is not close to the span {span:?}"
    );
}

const BYTE_PIECE: usize = 8 * 1024;
const BYTE_PIECES: u64 = 75; // 600 KiB

/// Sends pieces `next..BYTE_PIECES` of 8 KiB, stopping at `AboveHigh` until
/// the writable callback, then finishes. `waits` counts the stops.
fn produce(stream: Stream, next: Arc<AtomicU64>, waits: Arc<AtomicUsize>) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= BYTE_PIECES {
            stream.finish();
            return;
        }
        match stream.send(piece(i, BYTE_PIECE)) {
            Ok(SendState::AboveHigh) => {
                waits.fetch_add(1, Ordering::Relaxed);
                let s = stream.clone();
                stream.on_writable(move || produce(s, next, waits));
                return;
            }
            Ok(_) => {}
            Err(e) => panic!("piece {i} refused: {e}"),
        }
    }
}

/// `byte_rate(200_000, 16_384).free_bytes(100_000)`, 600 KiB in 8 KiB
/// pieces from a producer that waits for the writable callback whenever told
/// `AboveHigh`: the first 100 KB arrive at once, the rest at 200 KB/s within
/// 10%.
#[test]
fn a_byte_rate_after_free_bytes_holds_within_ten_percent() {
    let _serial = setup();
    let log = MemoryLog::new();
    let waits = Arc::new(AtomicUsize::new(0));
    let w = waits.clone();
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let flow = FlowControl::new()
            .byte_rate(200_000, 16_384)
            .free_bytes(100_000);
        let Ok(stream) = task.stream_with(flow) else {
            return;
        };
        produce(stream, Arc::new(AtomicU64::new(0)), w.clone());
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/download");
    let head_at = c.stream_head();
    let chunks = c.body();
    drop(c);
    assert_eq!(chunks.len(), BYTE_PIECES as usize);
    for (i, (_, data)) in chunks.iter().enumerate() {
        assert_eq!(data.len(), BYTE_PIECE);
        assert_eq!(id_of(data), i as u64, "pieces in order");
    }
    assert!(
        waits.load(Ordering::Relaxed) >= 1,
        "the producer was never told to slow down"
    );
    // Pieces 1..=12 (98,304 bytes) are free of the rate: at 200 KB/s they
    // would take about 400 ms.
    let free = chunks[11].0 - head_at;
    eprintln!("the first 96 KiB took {free:?}");
    assert!(
        free < Duration::from_millis(250),
        "the first 100 KB took {free:?}: not at once"
    );
    // From piece 15 (past the free bytes and the 16 KiB burst) to the last,
    // the rate.
    let (from, to) = (14, BYTE_PIECES as usize - 1);
    let bytes = ((to - from) * BYTE_PIECE) as f64;
    let secs = (chunks[to].0 - chunks[from].0).as_secs_f64();
    let rate = bytes / secs;
    eprintln!("byte rate after the free bytes: {rate:.0} B/s over {secs:.3} s");
    assert!(
        within(rate, 200_000.0, 0.10),
        "{rate:.0} B/s is not 200,000 B/s within 10%"
    );
    let rec = record(&log);
    assert_eq!(rec.events_sent(), BYTE_PIECES);
    assert_eq!(rec.events_dropped(), 0);
    assert!(
        rec.ratelimit_delay() > Duration::from_secs(2),
        "{:?}",
        rec.ratelimit_delay()
    );
}

/// A paced stream of declared length (`Content-Length`, a download): the
/// body arrives whole under its length and the connection goes on; a piece
/// past the length is refused with `Invalid`, as on any stream, and does not
/// cost the connection.
#[test]
fn a_paced_download_keeps_its_declared_length() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (tx, rx) = mpsc::channel::<Result<SendState, SendError>>();
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        task.response().set_framing(Framing::Declared(30_000));
        let flow = FlowControl::new().byte_rate(100_000, 10_000);
        let Ok(stream) = task.stream_with(flow) else {
            return;
        };
        for i in 0..3 {
            stream.send(piece(i, 10_000)).expect("held");
        }
        let _ = tx.send(stream.send("one too many"));
        stream.finish();
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/file");
    let started = Instant::now();
    let (head, body) = c.reply();
    let took = started.elapsed();
    assert!(head.contains("Content-Length: 30000\r\n"), "{head}");
    assert_eq!(body.len(), 30_000);
    for i in 0..3 {
        assert_eq!(id_of(&body[i * 10_000..]), i as u64);
    }
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        Err(SendError::Invalid),
        "a piece past the declared length"
    );
    // 10 KB of burst, then 20 KB at 100 KB/s.
    assert!(took >= Duration::from_millis(150), "{took:?}");
    c.get("/plain");
    assert_eq!(c.reply().1, b"plain");
    drop(c);
    let rec = record(&log);
    assert_eq!(rec.requests(), 2);
    assert_eq!(rec.response_body_bytes(), Some(30_000 + 5));
}

/// The other framings: an HTTP/1.0 client gets the paced pieces as they are,
/// ended by the close; `HEAD` gets the head alone and the connection goes
/// on.
#[test]
fn paced_streams_to_http_1_0_and_head() {
    let _serial = setup();
    let server = serve(Server::builder(), |task| {
        let Ok(stream) = task.stream_with(FlowControl::new().message_rate(50, 1)) else {
            return;
        };
        for i in 0..5 {
            stream.send(format!("msg {i}\n")).expect("held");
        }
        stream.finish();
    });
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(!all.contains("Transfer-Encoding"), "{all}");
    assert!(
        all.ends_with("\r\n\r\nmsg 0\nmsg 1\nmsg 2\nmsg 3\nmsg 4\n"),
        "{all}"
    );

    let mut c = Client::connect(server.local_addr());
    c.s.write_all(b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = c.head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    c.get("/plain");
    let (head, body) = c.reply();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"plain", "nothing of the HEAD's stream came before");
}

// ---------------------------------------------------------------------------
// Overflow policies against a reader that has stopped

/// Drop-oldest with `max_messages(100)` and a gap note: a client that does
/// not read while 20,000 pieces of 1 KiB (20 MB) are sent costs the server
/// little memory; when it reads, every gap is announced with its exact size
/// before the next piece, ids increase, the last piece arrives, and the
/// record and the shared counters agree with what the client saw missing.
#[test]
fn drop_oldest_bounds_memory_and_announces_every_gap() {
    const N: u64 = 20_000;
    let _serial = setup();
    let log = MemoryLog::new();
    let counters = Arc::new(FlowCounters::new());
    let (done_tx, done_rx) = mpsc::channel::<Result<Stream, String>>();
    let flow = FlowControl::new()
        .max_messages(100)
        .gap_note(gap_note)
        .counters(counters.clone());
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let Ok(stream) = task.stream_with(flow.clone()) else {
            return;
        };
        let done = done_tx.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                if let Err(e) = stream.send(piece(i, 1024)) {
                    let _ = done.send(Err(format!("piece {i}: {e}")));
                    return;
                }
            }
            let _ = done.send(Ok(stream));
        });
    });
    let before = rss_kib();
    let watch = RssWatch::start();
    let mut c = Client::stalled(server.local_addr());
    c.get("/events");
    let stream = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the producer finished")
        .expect("drop-oldest takes every piece");
    std::thread::sleep(Duration::from_millis(100));
    let peak = watch.peak();
    let growth = peak.saturating_sub(before);
    let waiting = stream.queued_messages();
    eprintln!("server RSS +{growth} KiB while 20 MB were sent to a stalled reader; {waiting} messages wait");
    assert!(
        growth < 4 * 1024,
        "server RSS grew by {growth} KiB for a stalled reader"
    );
    assert!(
        waiting <= 2 * 100 + 2,
        "{waiting} messages wait for a stalled reader"
    );
    assert!(stream.finish(), "the stream was open");
    drop(stream);

    c.stream_head();
    let chunks = c.body();
    let mut last: Option<u64> = None;
    let mut announced = 0;
    let mut pending_gap: Option<u64> = None;
    let mut received = 0u64;
    for (_, data) in &chunks {
        if let Some(n) = gap_of(data) {
            assert!(pending_gap.is_none(), "two gap notes in a row");
            assert!(n > 0, "a gap note of 0");
            pending_gap = Some(n);
            announced += n;
            continue;
        }
        let id = id_of(data);
        assert_eq!(data.len(), 1024, "piece {id} whole");
        let missing = match last {
            Some(prev) => {
                assert!(id > prev, "ids increase: {id} after {prev}");
                id - prev - 1
            }
            None => id,
        };
        assert_eq!(
            pending_gap.take().unwrap_or(0),
            missing,
            "the gap before piece {id} (after {last:?})"
        );
        last = Some(id);
        received += 1;
    }
    assert!(pending_gap.is_none(), "a gap note with no piece after it");
    assert_eq!(last, Some(N - 1), "the last piece sent arrived");
    assert_eq!(announced, N - received);
    assert!(
        N - received > 10_000,
        "a stalled reader made the server drop only {} pieces",
        N - received
    );
    drop(c);
    let rec = record(&log);
    eprintln!(
        "received {received} of {N}; record: sent {} dropped {}",
        rec.events_sent(),
        rec.events_dropped()
    );
    assert_eq!(rec.events_dropped(), N - received);
    assert_eq!(rec.events_sent(), received);
    assert_eq!(counters.dropped(), N - received);
    assert_eq!(counters.sent(), received);
}

/// `Overflow::Reject`: with the reader stalled (a first piece of 4 MiB fills
/// the socket and waits in the queue), exactly `max_messages` more are taken
/// and the next sends are refused with `Full`; when the reader catches up it
/// gets everything taken, and a gap note for the refused pieces ahead of the
/// next piece sent, not ahead of those taken before them.
#[test]
fn reject_refuses_with_full_once_the_bound_is_reached() {
    const BOUND: u64 = 50;
    const REFUSED: u64 = 10;
    let _serial = setup();
    let log = MemoryLog::new();
    let counters = Arc::new(FlowCounters::new());
    let (tx, rx) = mpsc::channel::<Result<Stream, String>>();
    let flow = FlowControl::new()
        .max_messages(BOUND as usize)
        .overflow(Overflow::Reject)
        .gap_note(gap_note)
        .counters(counters.clone());
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let Ok(stream) = task.stream_with(flow.clone()) else {
            return;
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let outcome = (|| {
                stream.send(piece(0, 4 << 20)).map_err(|e| e.to_string())?;
                if !wait_until(Duration::from_secs(5), || stream.queued() > 0) {
                    return Err("the socket never filled".to_string());
                }
                for i in 1..=BOUND {
                    stream
                        .send(piece(i, 1024))
                        .map_err(|e| format!("piece {i} of the bound: {e}"))?;
                }
                for _ in 0..REFUSED {
                    match stream.send(piece(999_999, 1024)) {
                        Err(SendError::Full) => {}
                        other => return Err(format!("past the bound: {other:?}")),
                    }
                }
                Ok(())
            })();
            let _ = tx.send(outcome.map(|()| stream));
        });
    });
    let mut c = Client::stalled(server.local_addr());
    c.get("/events");
    let stream = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the producer stopped")
        .unwrap_or_else(|e| panic!("{e}"));
    let waiting = stream.queued_messages() as u64;
    assert!(
        waiting > BOUND,
        "{waiting} messages wait: the reader was not stalled"
    );
    assert_eq!(counters.dropped(), REFUSED);
    // The reader catches up with everything taken.
    c.stream_head();
    for i in 0..=BOUND {
        let (_, data) = c
            .chunk()
            .unwrap_or_else(|e| panic!("piece {i}: {e}"))
            .expect("not the end yet");
        assert_eq!(id_of(&data), i);
    }
    stream.send(piece(BOUND + 1, 1024)).expect("room again");
    stream.finish();
    let rest = c.body();
    let rest: Vec<&[u8]> = rest.iter().map(|(_, d)| &d[..]).collect();
    assert_eq!(rest.len(), 2, "a gap note and the last piece");
    assert_eq!(gap_of(rest[0]), Some(REFUSED));
    assert_eq!(id_of(rest[1]), BOUND + 1);
    drop(c);
    let rec = record(&log);
    assert_eq!(rec.events_dropped(), REFUSED);
    assert_eq!(rec.events_sent(), BOUND + 2);
    assert_eq!(counters.sent(), BOUND + 2);
}

/// `Overflow::Disconnect`: the send that does not fit closes the connection
/// with `slow_consumer`; the client sees the connection end without the last
/// chunk.
#[test]
fn disconnect_closes_a_slow_consumer_on_overflow() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (tx, rx) = mpsc::channel::<Result<u64, String>>();
    let flow = FlowControl::new()
        .max_messages(10)
        .overflow(Overflow::Disconnect);
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let Ok(stream) = task.stream_with(flow.clone()) else {
            return;
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0..1_000_000 {
                match stream.send(piece(i, 1024)) {
                    Ok(_) => {}
                    Err(SendError::Closed) => {
                        let _ = tx.send(Ok(i));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("piece {i}: {e}")));
                        return;
                    }
                }
            }
            let _ = tx.send(Err("never disconnected".to_string()));
        });
    });
    let started = Instant::now();
    let mut c = Client::stalled(server.local_addr());
    c.get("/events");
    let refused = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the producer stopped")
        .unwrap_or_else(|e| panic!("{e}"));
    let rec = record(&log);
    eprintln!("closed after piece {refused}, {:?} in", started.elapsed());
    assert_eq!(rec.close_reason(), Some(CloseReason::SlowConsumer));
    // What the client gets ends without the last chunk.
    let mut all = Vec::new();
    c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.s.read_to_end(&mut all);
    assert!(!all.ends_with(b"0\r\n\r\n"), "a cut stream looks whole");
}

/// `stall_timeout(500 ms)`: a reader that stops with megabytes queued is
/// closed with `slow_consumer` about half a second after the socket last
/// took something, long before the send timeout (20 s here).
#[test]
fn the_stall_timeout_closes_a_stalled_reader() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (tx, rx) = mpsc::channel::<Stream>();
    let flow = FlowControl::new()
        .stall_timeout(Duration::from_millis(500))
        .max_bytes(16 << 20);
    let server = serve(
        Server::builder()
            .send_timeout(Duration::from_secs(20))
            .access_log(log.clone()),
        move |task| {
            let Ok(stream) = task.stream_with(flow.clone()) else {
                return;
            };
            for i in 0..32 {
                stream.send(piece(i, 256 * 1024)).expect("held");
            }
            // Kept open: dropping it would abort the stream.
            let _ = tx.send(stream);
        },
    );
    let started = Instant::now();
    let mut c = Client::stalled(server.local_addr());
    c.get("/big");
    let stream = rx.recv_timeout(Duration::from_secs(10)).expect("streaming");
    let rec = record(&log);
    let took = started.elapsed();
    eprintln!("closed after {took:?}: {:?}", rec.close_reason());
    assert_eq!(rec.close_reason(), Some(CloseReason::SlowConsumer));
    assert!(took >= Duration::from_millis(450), "closed after {took:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(!stream.is_open());
    assert!(c.closed_within(Duration::from_secs(5)));
}

// ---------------------------------------------------------------------------
// Heartbeats

/// A silent stream with `heartbeat(200 ms)` gets a heartbeat about every
/// 200 ms.
#[test]
fn a_silent_stream_gets_heartbeats() {
    let _serial = setup();
    let server = serve(Server::builder(), |task| {
        let flow = FlowControl::new().heartbeat(Duration::from_millis(200), ":\n\n");
        let Ok(stream) = task.stream_with(flow) else {
            return;
        };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1100));
            stream.send("done\n").expect("held");
            stream.finish();
        });
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    let head_at = c.stream_head();
    let chunks = c.body();
    let (last, beats) = chunks.split_last().expect("chunks");
    assert_eq!(last.1, b"done\n");
    assert!(
        beats.iter().all(|(_, d)| d == b":\n\n"),
        "only heartbeats before the message"
    );
    let times: Vec<Duration> = beats.iter().map(|(t, _)| *t - head_at).collect();
    eprintln!("heartbeats at {times:?}");
    // About five in 1.1 s (more if the message comes late), none early.
    assert!(beats.len() >= 4, "{} heartbeats in 1.1 s", beats.len());
    assert!(times[0] >= Duration::from_millis(180), "{times:?}");
    let mean = (times[times.len() - 1] - times[0]).as_secs_f64() / (times.len() - 1) as f64;
    assert!(
        (0.180..0.300).contains(&mean),
        "heartbeats every {mean:.3} s"
    );
}

/// A stream that sends every 40 ms gets no heartbeat (every 200 ms). On a
/// busy machine the producer may sleep far longer than asked, and then a
/// heartbeat is right: one is accepted only after 150 ms without a tick.
#[test]
fn a_busy_stream_gets_no_heartbeat() {
    let _serial = setup();
    let server = serve(Server::builder(), |task| {
        let flow = FlowControl::new().heartbeat(Duration::from_millis(200), ":\n\n");
        let Ok(stream) = task.stream_with(flow) else {
            return;
        };
        std::thread::spawn(move || {
            for i in 0..25 {
                stream.send(format!("tick {i}\n")).expect("held");
                std::thread::sleep(Duration::from_millis(40));
            }
            stream.finish();
        });
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    c.stream_head();
    let chunks = c.body();
    let mut ticks = Vec::new();
    let mut last_tick: Option<Instant> = None;
    for (at, data) in &chunks {
        if data == b":\n\n" {
            let silent = last_tick.map(|t| *at - t);
            assert!(
                silent.is_some_and(|s| s >= Duration::from_millis(150)),
                "a heartbeat {silent:?} after a tick"
            );
        } else {
            ticks.push(String::from_utf8_lossy(data).into_owned());
            last_tick = Some(*at);
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(ticks, want);
    let beats = chunks.len() - ticks.len();
    if beats > 0 {
        eprintln!("{beats} heartbeats after long pauses of the producer");
    }
}

/// While output waits on a stalled socket, a due heartbeat or a rate that
/// opens must not make the poller spin: the flush brings it back when the
/// socket drains. The process's CPU time over one second of stall stays
/// small.
#[test]
fn a_stalled_socket_does_not_make_the_poller_spin() {
    let _serial = setup();
    // The heartbeat case: one message of 8 MiB, released whole at once, so
    // nothing is held while most of it waits on the socket and the heartbeat
    // falls due. The rate case: a burst of 40 pieces of 64 KiB released at
    // once, 40 more held while the rate opens.
    let cases = [
        (
            "heartbeat",
            FlowControl::new()
                .heartbeat(Duration::from_millis(20), ":\n\n")
                .max_bytes(16 << 20),
            vec![piece(0, 8 << 20)],
        ),
        (
            "message rate",
            FlowControl::new()
                .message_rate(100, 40)
                .max_messages(1000)
                .max_bytes(16 << 20),
            (0..80).map(|i| piece(i, 64 * 1024)).collect(),
        ),
    ];
    for (name, flow, pieces) in cases {
        let (tx, rx) = mpsc::channel::<Stream>();
        let server = serve(Server::builder(), move |task| {
            let Ok(stream) = task.stream_with(flow.clone()) else {
                return;
            };
            for p in &pieces {
                stream.send(p.clone()).expect("held");
            }
            let _ = tx.send(stream);
        });
        let mut c = Client::stalled(server.local_addr());
        c.get("/events");
        let stream = rx.recv_timeout(Duration::from_secs(10)).expect("streaming");
        assert!(
            wait_until(Duration::from_secs(5), || stream.queued() > 0),
            "{name}: output never backed up"
        );
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = taskweave::os::process_cpu_time().unwrap();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let cpu = taskweave::os::process_cpu_time().unwrap() - cpu0;
        let wall = t0.elapsed();
        eprintln!("{name}: {cpu:?} of CPU in {wall:?} of stall");
        assert!(stream.is_open(), "{name}: the stream is still open");
        assert!(
            cpu < Duration::from_millis(300),
            "{name}: the process used {cpu:?} of CPU in {wall:?} while the reader was stalled"
        );
        drop(c);
        drop(stream);
        assert!(server.shutdown(Duration::from_secs(5)));
    }
}

// ---------------------------------------------------------------------------
// on_close

/// `on_close` runs when the client goes away mid-stream: the heartbeat's
/// write finds out.
#[test]
fn on_close_runs_when_the_client_leaves_a_heartbeat_stream() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (tx, rx) = mpsc::channel::<Stream>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let flow = FlowControl::new().heartbeat(Duration::from_millis(100), ":\n\n");
        let Ok(stream) = task.stream_with(flow) else {
            return;
        };
        let closed = closed_tx.clone();
        stream.on_close(move || {
            let _ = closed.send(());
        });
        let _ = tx.send(stream);
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    c.stream_head();
    let stream = rx.recv_timeout(Duration::from_secs(10)).expect("streaming");
    assert!(
        closed_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "on_close ran while the client was there"
    );
    let left = Instant::now();
    drop(c);
    closed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("on_close ran after the client left");
    eprintln!("on_close {:?} after the client left", left.elapsed());
    assert!(!stream.is_open());
    let rec = record(&log);
    assert!(
        matches!(
            rec.close_reason(),
            Some(CloseReason::Reset | CloseReason::PeerClosed)
        ),
        "{:?}",
        rec.close_reason()
    );
}

/// `on_close` runs when the client goes away mid-stream and a send finds out.
#[test]
fn on_close_runs_when_the_client_leaves_and_a_send_finds_out() {
    let _serial = setup();
    let (tx, rx) = mpsc::channel::<Stream>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let server = serve(Server::builder(), move |task| {
        let Ok(stream) = task.stream_with(FlowControl::new()) else {
            return;
        };
        let closed = closed_tx.clone();
        stream.on_close(move || {
            let _ = closed.send(());
        });
        let _ = tx.send(stream);
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    c.stream_head();
    let stream = rx.recv_timeout(Duration::from_secs(10)).expect("streaming");
    stream.send("one\n").expect("held");
    let (_, data) = c.chunk().unwrap().expect("a piece");
    assert_eq!(data, b"one\n");
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sends = 0;
    let ran = loop {
        if closed_rx.try_recv().is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        sends += 1;
        let _ = stream.send("more\n");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        ran,
        "on_close never ran ({sends} sends after the client left)"
    );
    assert_eq!(stream.send("late\n"), Err(SendError::Closed));
}

/// `on_close` runs when the client resets the connection while a finished
/// stream still holds its last piece: the write of that piece fails as the
/// stream ends, and the close must still run the callback.
#[test]
fn on_close_runs_when_the_last_held_piece_meets_a_reset() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (_server, mut c, stream) = open_stream(
        Server::builder().access_log(log.clone()),
        FlowControl::new().message_rate(5, 1),
    );
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    stream.on_close(move || {
        let _ = closed_tx.send(());
    });
    stream.send("one\n").expect("held");
    stream.send("two\n").expect("held");
    assert!(stream.finish());
    drop(stream);
    let (_, first) = c.chunk().unwrap().expect("the first piece");
    assert_eq!(first, b"one\n");
    // A reset, at once: the second piece, due 200 ms after the first, meets it.
    socket2::SockRef::from(&c.s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    let rec = record(&log);
    assert_eq!(rec.close_reason(), Some(CloseReason::Reset));
    closed_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("on_close ran when the connection closed");
}

/// `on_close` runs when the stream finishes (after what it still held has
/// gone out), and at once when registered on a stream that is over.
#[test]
fn on_close_runs_when_the_stream_finishes_and_at_once_when_late() {
    let _serial = setup();
    let (_server, mut c, stream) =
        open_stream(Server::builder(), FlowControl::new().message_rate(10, 1));
    let (closed_tx, closed_rx) = mpsc::channel::<Instant>();
    let closed = closed_tx.clone();
    stream.on_close(move || {
        let _ = closed.send(Instant::now());
    });
    for i in 0..5 {
        stream.send(format!("msg {i}\n")).expect("held");
    }
    let finished_at = Instant::now();
    assert!(stream.finish(), "the stream was open");
    // Four pieces wait on the rate for about 400 ms: the stream is not over.
    assert!(
        closed_rx.recv_timeout(Duration::from_millis(150)).is_err(),
        "on_close ran while pieces were still held"
    );
    let chunks = c.body();
    assert_eq!(chunks.len(), 5);
    let at = closed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("on_close ran when the stream finished");
    // The last piece goes about 400 ms after the first, at 10 a second.
    assert!(
        at >= finished_at + Duration::from_millis(300),
        "on_close ran {:?} after finish, before the last piece went out",
        at - finished_at
    );
    assert!(!stream.is_open());
    // Registered on a stream that is over: runs at once.
    let (late_tx, late_rx) = mpsc::channel::<()>();
    stream.on_close(move || {
        let _ = late_tx.send(());
    });
    late_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("on_close on a finished stream runs at once");
    // The connection goes on.
    c.get("/plain");
    assert_eq!(c.reply().1, b"plain");
}

// ---------------------------------------------------------------------------
// Shutdown

/// A graceful shutdown of a flow-controlled stream with pieces still held
/// (by a rate of 2 a second): the client gets them all at once, whatever the
/// rate, then the farewell, then the last chunk, and the connection closes.
#[test]
fn shutdown_sends_what_is_held_then_the_farewell_then_the_end() {
    let _serial = setup();
    let log = MemoryLog::new();
    let (tx, rx) = mpsc::channel::<Stream>();
    let server = serve(Server::builder().access_log(log.clone()), move |task| {
        let flow = FlowControl::new().message_rate(2, 1).farewell("bye\n");
        let Ok(stream) = task.stream_with(flow) else {
            return;
        };
        for i in 0..10 {
            stream.send(format!("msg {i}\n")).expect("held");
        }
        let _ = tx.send(stream);
    });
    let mut c = Client::connect(server.local_addr());
    c.get("/events");
    c.stream_head();
    let stream = rx.recv_timeout(Duration::from_secs(10)).expect("streaming");
    let (_, first) = c.chunk().unwrap().expect("the first piece");
    assert_eq!(first, b"msg 0\n");
    // The second piece waits 500 ms for the rate; 300 ms of that pass.
    std::thread::sleep(Duration::from_millis(300));
    assert!(stream.queued_messages() >= 9, "pieces are still held");
    let started = Instant::now();
    let shutdown = std::thread::spawn(move || server.shutdown(Duration::from_secs(5)));
    let rest = c.body();
    let took = started.elapsed();
    let texts: Vec<String> = rest
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    let mut want: Vec<String> = (1..10).map(|i| format!("msg {i}\n")).collect();
    want.push("bye\n".to_string());
    assert_eq!(texts, want);
    eprintln!("the held pieces, the farewell and the end came {took:?} after the shutdown");
    assert!(
        took < Duration::from_secs(1),
        "the held pieces waited on the rate during a shutdown ({took:?})"
    );
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "the connection closes"
    );
    drop(c);
    assert!(shutdown.join().unwrap(), "shutdown within its grace");
    let rec = record(&log);
    assert_eq!(rec.close_reason(), Some(CloseReason::ServerShutdown));
    assert_eq!(rec.events_sent(), 10);
    let delay = rec.ratelimit_delay();
    assert!(
        delay >= Duration::from_millis(250) && delay < Duration::from_secs(2),
        "the rate held the second piece back about 300 ms, not {delay:?}"
    );
    assert!(!stream.is_open());
}

/// Sends on a stream that has finished are refused; a second finish says
/// the stream was over. (The finish of a stream with pieces held.)
#[test]
fn a_finishing_stream_refuses_more_pieces() {
    let _serial = setup();
    let (_server, mut c, stream) =
        open_stream(Server::builder(), FlowControl::new().message_rate(20, 1));
    for i in 0..3 {
        stream.send(format!("msg {i}\n")).expect("held");
    }
    assert!(stream.finish());
    assert_eq!(stream.send("late\n"), Err(SendError::Closed));
    assert!(!stream.finish(), "finished already");
    let chunks = c.body();
    let texts: Vec<&[u8]> = chunks.iter().map(|(_, d)| &d[..]).collect();
    assert_eq!(texts, [&b"msg 0\n"[..], b"msg 1\n", b"msg 2\n"]);
}

/// `stall_timeout(500 ms)` leaves alone a reader that is slow but steady:
/// 6 MiB to a client with a 4 KiB receive buffer that sleeps 2 ms after each
/// read (about 2 MB/s). More than the socket's buffers hold (4 MiB at most
/// here) waits in the server, and the socket's writable edge comes only once
/// its buffer has drained by a third, which takes longer than the timeout at
/// that pace: the stall must be judged by whether the socket takes anything,
/// not by the edge.
#[test]
fn the_stall_timeout_spares_a_slow_steady_reader() {
    let _serial = setup();
    let log = MemoryLog::new();
    let flow = FlowControl::new()
        .stall_timeout(Duration::from_millis(500))
        .max_bytes(16 << 20);
    let server = serve(
        Server::builder()
            .send_timeout(Duration::from_secs(20))
            .access_log(log.clone()),
        move |task| {
            let Ok(stream) = task.stream_with(flow.clone()) else {
                return;
            };
            for i in 0..96 {
                stream.send(piece(i, 64 * 1024)).expect("held");
            }
            stream.finish();
        },
    );
    let mut c = Client::stalled(server.local_addr());
    c.get("/big");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let end = loop {
        match c.s.read(&mut tmp) {
            Ok(0) => break "the end of the connection".to_string(),
            Ok(n) => {
                got.extend_from_slice(&tmp[..n]);
                if got.ends_with(b"\r\n0\r\n\r\n") {
                    break "the last chunk".to_string();
                }
            }
            Err(e) => break e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = started.elapsed();
    eprintln!("read {} bytes in {took:?}, up to {end}", got.len());
    assert!(
        got.len() > 96 * 64 * 1024,
        "{} bytes then {end} after {took:?}",
        got.len()
    );
    assert_eq!(end, "the last chunk");
    drop(c);
    let rec = record(&log);
    assert_ne!(rec.close_reason(), Some(CloseReason::SlowConsumer));
    assert!(
        rec.peak_queued_bytes() > 0,
        "output never waited in the server"
    );
}
