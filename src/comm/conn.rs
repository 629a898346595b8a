//! [`Conn`]: a connection's transport and outbound queue, shared by the poller
//! and every thread that writes to it.
//!
//! Any thread may write: a handler thread that finishes a reply writes it at
//! once, a stream's producer sends from wherever it runs. A write goes straight
//! to the socket while nothing is queued; what the socket does not take is
//! queued (the connection is *paused*) and the poller flushes it when the
//! socket drains. The queue keeps message boundaries, so a policy can drop
//! whole unsent messages. Everything shared sits behind one lock, private to
//! this file; the poller and the writers reach it through methods that each
//! take the lock once.

use super::flow::{FlowControl, Held, Pacer, Released};
use super::tls_config::Agreed;
use super::transport::Transport;
use super::ConnConfig;
use crate::metrics::{AccessLog, CloseReason, ConnStats, RequestRecord, Side, Text};
use crate::poller::{self, Command};
use crate::protocol::PieceFramer;
use bytes::{Buf, Bytes};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes per cache line (x86-64 and most ARM cores), the prefetch stride.
const CACHE_LINE: usize = 64;

/// Slices handed to one vectored write.
const MAX_IOV: usize = 64;

/// Where a connection's output stands after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Everything was written to the socket.
    Written,
    /// Some output is queued; the connection is paused until the socket drains.
    Queued,
    /// Queued output is above the high watermark: slow down.
    AboveHigh,
}

/// A send that was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection (or the stream) is closed.
    Closed,
    /// The connection already holds more than its hard queue limit
    /// (`max_queued`) unwritten: the data was refused, nothing was queued.
    Full,
    /// The piece would break the message's framing (more bytes than its
    /// declared length): it was refused.
    Invalid,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "connection closed",
            SendError::Full => "send queue full",
            SendError::Invalid => "piece does not fit the message's framing",
        })
    }
}

impl std::error::Error for SendError {}

/// What a send completes, so its end is timed when its last byte leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// A server's answer to a request (a reply, or a stream that ended).
    Reply {
        head: u64,
        body: u64,
        status: Option<u16>,
    },
    /// A client request.
    Request { head: u64, body: u64 },
    /// The error reply to a request that failed to parse (timed and counted in
    /// the status counters, but not a request served).
    Rejection {
        head: u64,
        body: u64,
        status: Option<u16>,
    },
}

/// A request as it arrived, for the access log: recorded under the
/// connection's lock, by the reply when that comes inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    /// When the request was complete.
    pub at: Instant,
    /// Header and framing bytes.
    pub head: u64,
    /// Payload bytes.
    pub body: u64,
    /// Bytes read from the socket and not yet counted.
    pub bytes_in: u32,
}

impl Arrival {
    fn record(&self, stats: &mut ConnStats) {
        stats.add_in(self.bytes_in as usize);
        stats.request_complete(self.at, self.head, self.body);
    }
}

/// A request's record, kept while its exchange is under way (a server whose
/// sink wants request records): finished and handed to the sink when the
/// answer's last byte leaves, or when the connection ends first.
struct ExchangeLog {
    sink: Arc<dyn AccessLog>,
    /// The exchange under way, if one is: boxed only while it lasts, so an
    /// idle connection keeps 32 bytes here, not a whole record.
    open: Option<Box<OpenExchange>>,
}

/// The record of an exchange under way.
struct OpenExchange {
    rec: RequestRecord,
    /// When its answer's first byte was written.
    first_byte: Option<Instant>,
}

impl OpenExchange {
    /// The answer's status and sizes (what went out of it, for a stream cut
    /// short).
    fn answer(&mut self, status: Option<u16>, head: u64, body: u64) {
        self.rec.status = status;
        self.rec.resp_header_bytes = Some(head);
        self.rec.resp_body_bytes = Some(body);
    }
}

thread_local! {
    /// The record box of the last exchange finished on this thread, for the
    /// next one opened here: no allocation, free and 430-byte copy per
    /// request with request records on.
    static SPARE_EXCHANGE: Cell<Option<Box<OpenExchange>>> = const { Cell::new(None) };
}

/// A box for a new exchange's record starting at `start`: this thread's
/// spare, reset, or a new one.
fn exchange_box(start: Instant) -> Box<OpenExchange> {
    match SPARE_EXCHANGE.try_with(Cell::take).ok().flatten() {
        Some(mut open) => {
            open.rec.reset_at(Side::Server, "", start);
            open.first_byte = None;
            open
        }
        None => Box::new(OpenExchange {
            rec: RequestRecord::starting_at(Side::Server, "", start),
            first_byte: None,
        }),
    }
}

/// Keeps a finished exchange's box as this thread's spare.
fn recycle(open: Box<OpenExchange>) {
    // A thread whose thread-locals are gone frees it.
    let _ = SPARE_EXCHANGE.try_with(|s| s.set(Some(open)));
}

/// Finishes `open` at `now`, with `error` when it did not complete, and
/// hands its record to `sink`.
fn emit(
    sink: &Arc<dyn AccessLog>,
    open: &mut OpenExchange,
    now: Instant,
    error: Option<&'static str>,
) {
    let rec = &mut open.rec;
    let start = rec.start;
    let micros = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
    rec.total_us = micros(now);
    // An answer written whole had its first byte at its end: one subtraction.
    rec.first_byte_us = open
        .first_byte
        .map(|t| if t == now { rec.total_us } else { micros(t) });
    rec.error = error;
    let rec = &*rec;
    crate::poller::contain("an access log's request", || sink.request(rec));
}

/// An answer whose tail is queued: timed, and its record finished, when the
/// queued chunk marked `done` leaves.
struct Pending {
    done: Done,
    rec: Option<Box<OpenExchange>>,
}

/// A callback run once the queue falls below the low watermark.
pub(crate) type Writable = Box<dyn FnOnce() + Send>;

/// One queued piece of output; `last` marks the end of a message.
struct Chunk {
    bytes: Bytes,
    last: bool,
    /// The last chunk of a message whose completion is pending.
    done: bool,
}

/// What the writers finished that the poller has not seen yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    None,
    /// The exchange's answer is complete (written or queued); `close`: the
    /// connection closes after it, for this reason.
    Answered {
        close: Option<CloseReason>,
        /// It did not wake the poller (see `Conn::answered`).
        quiet: bool,
    },
}

/// A stream about to start, as the answer to the current request.
pub(crate) struct StreamSpec {
    /// The head's `(head, body)` sizes, for the access log.
    pub sizes: (u64, u64),
    /// The head's status, for the access log.
    pub status: Option<u16>,
    /// Frames the body's pieces and marks its end.
    pub framer: Box<dyn PieceFramer>,
    /// The connection closes once the stream ends.
    pub close_after: bool,
    /// Flow control, if the stream has it.
    pub flow: Option<FlowControl>,
}

/// An open stream: the answer to the current request, sent in pieces.
struct StreamState {
    id: u64,
    framer: Box<dyn PieceFramer>,
    close_after: bool,
    head: u64,
    body: u64,
    status: Option<u16>,
    /// Flow control, when the stream has it: pieces wait here until the
    /// poller releases them.
    pacer: Option<Box<Pacer>>,
    /// Runs once the stream is over, however it ended.
    on_close: Option<Writable>,
    /// The poller timer that wakes a flow-controlled stream, once armed.
    timer: Option<poller::TimerKey>,
}

impl StreamState {
    /// The stream is over: its wake-up timer is cancelled (on `poller`, its
    /// connection's), and its close callback returned, to run unlocked.
    fn retire(self, poller: u32) -> Option<Writable> {
        if let Some(key) = self.timer {
            poller::cancel_timer(poller as usize, key);
        }
        self.on_close
    }

    /// Frames `piece` onto `chunks`, counting its payload and framing bytes.
    fn frame(&mut self, piece: Bytes, chunks: &mut Vec<Bytes>) -> Result<(), SendError> {
        let len = piece.len() as u64;
        let before = chunks.len();
        if self.framer.piece(piece, chunks).is_err() {
            chunks.truncate(before);
            return Err(SendError::Invalid);
        }
        let framed: u64 = chunks[before..].iter().map(|c| c.len() as u64).sum();
        self.body += len;
        self.head += framed.saturating_sub(len);
        Ok(())
    }
}

/// Rarely used state, boxed on first use so an idle connection does not
/// carry it.
#[derive(Default)]
struct Extra {
    /// Answers (and client requests) whose tail is queued, oldest first.
    pending: VecDeque<Pending>,
    writable: Option<Writable>,
    stream: Option<StreamState>,
}

/// State guarded by the connection's lock.
struct State {
    out: VecDeque<Chunk>,
    queued: usize,
    closed: bool,
    /// A write failed, or a limit was hit; the poller closes with this reason.
    broken: Option<CloseReason>,
    outcome: Outcome,
    /// The arrival of the request in flight is recorded (by its dispatcher
    /// when its series went asynchronous, or by the start of its answer);
    /// whoever comes later must not record it again. Cleared when the answer
    /// is complete.
    request_recorded: bool,
    /// Output was queued and the poller has not looked since: it must flush
    /// once when it does, since the socket's writable edge may have passed
    /// while it did not know of the queue.
    pause_unseen: bool,
    /// The poller wants a wake-up when the exchange's answer is complete
    /// (it holds input back, or must act at once). Otherwise an answer that
    /// went out whole, promptly, is left for the poller to find at the
    /// connection's next event or deadline: no wake-up, no extra turn.
    wake_on_answer: bool,
    extra: Option<Box<Extra>>,
    /// Request records under way, when the server's sink wants them.
    exchange: Option<Box<ExchangeLog>>,
    stats: ConnStats,
}

impl State {
    /// Whether an exchange's record is open: its events read the clock.
    fn logging(&self) -> bool {
        self.exchange.as_ref().is_some_and(|e| e.open.is_some())
    }

    /// The open exchange's answer wrote its first byte at `now`.
    fn first_byte(&mut self, now: Instant) {
        // Behind queued output its first byte leaves later: when the answer
        // ahead of it is out (see `flush_locked`).
        if !self.out.is_empty() {
            return;
        }
        if let Some(open) = self
            .exchange
            .as_deref_mut()
            .and_then(|e| e.open.as_deref_mut())
        {
            open.first_byte.get_or_insert(now);
        }
    }

    /// An answer queued behind another starts to leave at `now`: the next
    /// pending answer, or else the exchange under way, has its first byte.
    fn next_answer_starts(&mut self, now: Instant) {
        let next = self
            .extra
            .as_mut()
            .and_then(|e| e.pending.front_mut())
            .and_then(|p| p.rec.as_deref_mut());
        let next = match next {
            Some(rec) => Some(rec),
            None => self
                .exchange
                .as_deref_mut()
                .and_then(|e| e.open.as_deref_mut()),
        };
        if let Some(open) = next {
            open.first_byte.get_or_insert(now);
        }
    }

    /// A stream cut short: its record keeps the head's status and what was
    /// written, for the close that finishes it.
    fn note_cut(&mut self, status: Option<u16>, head: u64, body: u64) {
        if let Some(open) = self
            .exchange
            .as_deref_mut()
            .and_then(|e| e.open.as_deref_mut())
        {
            open.answer(status, head, body);
        }
    }

    /// The record of the answer whose `done` this is, taken from the open
    /// exchange (a client request has none).
    fn take_record(&mut self, done: Done) -> Option<Box<OpenExchange>> {
        match done {
            Done::Request { .. } => None,
            _ => self.exchange.as_deref_mut()?.open.take(),
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn stream(&mut self, id: u64) -> Option<&mut StreamState> {
        self.extra
            .as_mut()?
            .stream
            .as_mut()
            .filter(|s| s.id == id && !self.closed && self.broken.is_none())
    }

    /// The open stream's flow control, if it has one.
    fn pacer(&mut self) -> Option<&mut Pacer> {
        self.extra.as_mut()?.stream.as_mut()?.pacer.as_deref_mut()
    }

    /// Bytes waiting to go out: queued on the socket, and held by a
    /// flow-controlled stream.
    fn backlog(&self) -> usize {
        let held = self
            .extra
            .as_ref()
            .and_then(|e| e.stream.as_ref()?.pacer.as_ref())
            .map_or(0, |p| p.held_bytes());
        self.queued + held
    }
}

/// A connection's transport and everything writers share with the poller.
pub(crate) struct Conn {
    io: Transport,
    /// The poller that owns the read side.
    pub poller: u32,
    /// The handler's token on that poller.
    pub token: u32,
    /// Process-unique connection id.
    pub id: u64,
    high: u32,
    low: u32,
    max_queued: u32,
    state: Mutex<State>,
}

/// When an answer from another thread is quiet enough not to wake the poller
/// (see `Conn::answered`): written whole within `window` of `received`, the
/// request's arrival.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quiet {
    pub received: Instant,
    pub window: Duration,
}

/// What the poller learns when it looks at the shared state.
pub(crate) struct Synced {
    /// Bytes still queued.
    pub queued: usize,
    /// The exchange's answer completed: `Some(close)`, where `close` says
    /// whether (and why) the connection closes after it.
    pub answered: Option<Option<CloseReason>>,
    /// That answer did not wake the poller.
    pub answered_quietly: bool,
    /// A writable callback made due by the flush of an unseen pause.
    pub writable: Option<Writable>,
}

/// What a flush left.
pub(crate) struct Flushed {
    /// Bytes still queued.
    pub queued: usize,
    /// Some bytes were written.
    pub progressed: bool,
    /// A writable callback that is now due.
    pub writable: Option<Writable>,
}

thread_local! {
    /// The connection whose request is being dispatched inline on this thread:
    /// a reply to it reports back through `INLINE_REPLY` instead of waking the
    /// poller, because the dispatcher looks right after. One of the two
    /// thread-locals of the inline fast path (a lock and a wake-up fewer per
    /// request); both live here, the only place they are read or written.
    static DISPATCHING: Cell<u64> = const { Cell::new(0) };
    /// What a reply sent during an inline dispatch left for the dispatcher.
    static INLINE_REPLY: Cell<Option<InlineReply>> = const { Cell::new(None) };
}

/// What a reply sent during an inline dispatch left for the dispatcher, which
/// would otherwise find it in the shared state under the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InlineReply {
    id: u64,
    /// Bytes still queued after the reply.
    pub queued: usize,
    /// The connection closes once output is flushed, for this reason.
    pub close: Option<CloseReason>,
    /// A write failed: the shared state holds the reason.
    pub failed: bool,
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

impl Conn {
    fn new(
        io: Transport,
        poller: usize,
        token: usize,
        id: u64,
        stats: ConnStats,
        config: &ConnConfig,
    ) -> Conn {
        let clamp = |n: usize| n.min(u32::MAX as usize) as u32;
        Conn {
            io,
            poller: poller as u32,
            token: token as u32,
            id,
            high: clamp(config.high_watermark),
            // "Below the low watermark" must be reachable: an empty queue is.
            low: clamp(config.low_watermark).max(1),
            max_queued: clamp(config.max_queued),
            state: Mutex::new(State {
                out: VecDeque::new(),
                queued: 0,
                closed: false,
                broken: None,
                outcome: Outcome::None,
                request_recorded: false,
                pause_unseen: false,
                wake_on_answer: true,
                extra: None,
                exchange: None,
                stats,
            }),
        }
    }

    /// A connection over `io`, registered edge-triggered for reading and
    /// writing at `token` on the poller `registry` belongs to (once: pausing
    /// and resuming writes needs no `epoll_ctl`).
    pub fn register(
        io: Transport,
        registry: &mio::Registry,
        (poller, token): (usize, usize),
        id: u64,
        stats: ConnStats,
        config: &ConnConfig,
    ) -> io::Result<Arc<Conn>> {
        registry.register(
            &mut mio::unix::SourceFd(&io.raw_fd()),
            mio::Token(token),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        Ok(Arc::new(Conn::new(io, poller, token, id, stats, config)))
    }

    /// Removes the connection from its poller.
    pub fn deregister(&self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut mio::unix::SourceFd(&self.io.raw_fd()));
    }

    /// Prefetches the whole connection (its reference counts, lock, queue
    /// and stats), an event before its handler runs.
    pub fn prefetch(self: &Arc<Self>) {
        // The counts sit before the data, in the same allocation.
        let counts = 2 * std::mem::size_of::<usize>();
        let start = Arc::as_ptr(self).cast::<u8>().wrapping_sub(counts);
        for offset in (0..counts + std::mem::size_of::<Conn>()).step_by(CACHE_LINE) {
            crate::sys::cpu::prefetch(start.wrapping_add(offset));
        }
    }

    /// Locks the shared state (a poisoned lock is still usable: no invariant of
    /// ours spans a panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// A pending socket error (a failed connect).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.take_error()
    }

    /// Reads into `buf` (poller side).
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.recv(buf)
    }

    /// Whether a read shorter than its buffer means the socket is drained
    /// (plain TCP), or more may be pending (TLS).
    #[inline]
    pub fn short_read_drains(&self) -> bool {
        self.io.short_read_drains()
    }

    /// Writes what the transport itself holds to send (a TLS handshake
    /// flight), apart from the queue.
    pub fn flush_transport(&self) -> io::Result<()> {
        self.io.flush()
    }

    /// Whether a TLS handshake is under way.
    pub fn handshaking(&self) -> bool {
        self.io.handshaking()
    }

    /// Records a finished TLS handshake in the stats (`now`: its end), and
    /// returns what it agreed on; `None` while it is under way.
    pub fn note_handshake(&self, now: Instant) -> Option<Agreed> {
        let agreed = self.io.agreed()?;
        self.lock()
            .stats
            .tls_done(now, agreed.version, agreed.cipher, agreed.resumed);
        Some(agreed)
    }

    /// Runs `f` on the connection's stats.
    pub fn with_stats<R>(&self, f: impl FnOnce(&mut ConnStats) -> R) -> R {
        f(&mut self.lock().stats)
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> usize {
        self.high as usize
    }

    /// The low watermark.
    pub fn low_watermark(&self) -> usize {
        self.low as usize
    }

    /// Bytes queued unwritten.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Sends `chunks` as one message: written now if nothing is queued, the
    /// rest queued. From a thread other than the owning poller, a pause wakes
    /// the poller (to arm the send timeout and flush).
    pub fn send(
        &self,
        chunks: &mut Vec<Bytes>,
        done: Option<Done>,
    ) -> Result<SendState, SendError> {
        let mut st = self.lock();
        let now = clock(&st);
        if matches!(done, Some(Done::Rejection { .. })) {
            st.stats.response_started(now);
            st.first_byte(now);
        }
        let res = self.send_locked(&mut st, &[], chunks);
        finish_send(&mut st, done, res, now);
        let wake = st.pause_unseen;
        drop(st);
        if wake {
            self.wake_poller();
        }
        res
    }

    /// A server's one-shot answer to the current request: `head` goes out
    /// before `chunks`, written from the caller's buffer (only what the
    /// socket does not take is copied into the queue). It first records the
    /// request's `arrival` if the dispatcher left that to it, so an inline
    /// exchange takes the lock once. A reply is accepted whatever its size
    /// (its bytes are already in memory; queuing them copies nothing) unless
    /// the queue already holds more than `max_queued`. A reply written whole
    /// within `quiet`'s window may leave the poller unwoken (see `answered`).
    pub fn reply(
        &self,
        head: &[u8],
        chunks: &mut Vec<Bytes>,
        done: Done,
        close: Option<CloseReason>,
        arrival: Option<Arrival>,
        quiet: Quiet,
    ) -> Result<SendState, SendError> {
        let mut head = head;
        if !head.is_empty() && !chunks.is_empty() {
            // Large or chunked bodies: one vectored write of all the pieces.
            chunks.insert(0, Bytes::copy_from_slice(head));
            head = &[];
        }
        let mut st = self.begin_answer(arrival);
        let now = clock(&st);
        st.stats.response_started(now);
        st.first_byte(now);
        let res = self.send_locked(&mut st, head, chunks);
        finish_send(&mut st, Some(done), res, now);
        st.stats.request_done();
        self.answered(st, close, Some(quiet));
        res
    }

    /// Starts a stream as the answer to the current request: sends its head
    /// (the message in `chunks`) and opens the stream `spec` describes.
    /// Returns the stream's id for the calls that follow.
    pub fn start_stream(
        &self,
        chunks: &mut Vec<Bytes>,
        spec: StreamSpec,
        arrival: Option<Arrival>,
    ) -> Result<u64, SendError> {
        let StreamSpec {
            sizes: (head, body),
            status,
            framer,
            close_after,
            flow,
        } = spec;
        let mut st = self.begin_answer(arrival);
        let now = clock(&st);
        st.stats.response_started(now);
        st.first_byte(now);
        if let Some(e) = st.exchange.as_deref_mut() {
            if let Some(open) = e.open.as_deref_mut() {
                open.rec.streamed = true;
                let sink = &e.sink;
                crate::poller::contain("an access log's stream_started", || sink.stream_started());
            }
        }
        let res = self.send_locked(&mut st, &[], chunks);
        let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        // A paced stream has the poller arm its timers at once.
        let paced = flow.is_some();
        if res.is_ok() {
            st.extra().stream = Some(StreamState {
                id,
                framer,
                close_after,
                head,
                body,
                status,
                pacer: flow.map(|f| Box::new(Pacer::new(f, Instant::now()))),
                on_close: None,
                timer: None,
            });
        }
        let wake = st.pause_unseen || paced;
        let inline = DISPATCHING.with(|d| d.get()) == self.id;
        if let Err(e) = res {
            st.stats.request_done();
            self.answered(st, Some(CloseReason::Local), None);
            return Err(e);
        }
        drop(st);
        if wake && !inline {
            self.wake_poller();
        }
        Ok(id)
    }

    /// Sends one piece of stream `id`'s body.
    pub fn stream_send(&self, id: u64, piece: Bytes) -> Result<SendState, SendError> {
        let mut st = self.lock();
        if st.stream(id).is_some_and(|s| s.pacer.is_some()) {
            return self.hold(st, piece);
        }
        if st.queued > self.max_queued as usize && st.stream(id).is_some() {
            return Err(SendError::Full);
        }
        let Some(stream) = st.stream(id) else {
            return Err(SendError::Closed);
        };
        let mut chunks = Vec::with_capacity(3);
        stream.frame(piece, &mut chunks)?;
        if chunks.is_empty() {
            return Ok(queued_state(st.queued, self.high));
        }
        let res = self.send_locked(&mut st, &[], &mut chunks);
        let wake = st.pause_unseen || res == Err(SendError::Closed);
        drop(st);
        if wake {
            self.wake_poller();
        }
        res
    }

    /// Holds `piece` for a flow-controlled stream's poller to release, and
    /// asks the poller to look when nothing else will make it.
    fn hold(&self, mut st: MutexGuard<'_, State>, piece: Bytes) -> Result<SendState, SendError> {
        let out_empty = st.out.is_empty();
        // A piece past a declared length is refused now, as on a stream
        // without flow control: framed at its release, it would break the
        // connection instead.
        let room = st
            .extra
            .as_ref()
            .and_then(|e| e.stream.as_ref()?.framer.room());
        let Some(pacer) = st.pacer().filter(|p| !p.finishing) else {
            return Err(SendError::Closed);
        };
        if room.is_some_and(|room| (pacer.held_bytes() + piece.len()) as u64 > room) {
            return Err(SendError::Invalid);
        }
        let held = pacer.hold(piece);
        // While output waits on the socket a flush brings the poller; while
        // it waits on the rate, a timer does.
        let wake = matches!(held, Held::Yes { .. })
            && out_empty
            && !pacer.throttled()
            && !std::mem::replace(&mut pacer.release_asked, true);
        let res = match held {
            Held::Yes { dropped } => {
                st.stats.add_events_dropped(dropped);
                Ok(queued_state(st.backlog(), self.high))
            }
            Held::Rejected => {
                st.stats.add_events_dropped(1);
                Err(SendError::Full)
            }
            Held::Disconnect => {
                st.broken.get_or_insert(CloseReason::SlowConsumer);
                Err(SendError::Closed)
            }
        };
        drop(st);
        if wake || res == Err(SendError::Closed) {
            self.wake_poller();
        }
        res
    }

    /// Ends stream `id`: its end marker goes out and the exchange is over.
    /// Returns whether the stream was still open, and its writable callback,
    /// for the caller to run now that the stream is over (never under the
    /// lock: the callback may hold the stream's last handle). A
    /// flow-controlled stream with messages still held ends once its poller
    /// has released them.
    pub fn stream_finish(&self, id: u64) -> (bool, Option<Writable>) {
        let mut st = self.lock();
        if st.stream(id).is_none() {
            return (false, None);
        }
        if let Some(pacer) = st.pacer().filter(|p| p.held_messages() > 0) {
            let first = !std::mem::replace(&mut pacer.finishing, true);
            drop(st);
            if first {
                self.wake_poller();
            }
            return (first, None);
        }
        let (close_after, writable) = self.end_stream(&mut st, false);
        self.answered(st, close_after.then_some(CloseReason::Local), None);
        (true, writable)
    }

    /// Abandons stream `id` without its end marker (every handle was dropped
    /// before `finish`): the peer must not take a cut body for a whole one,
    /// so the connection closes. Returns the writable callback, for the
    /// caller to run outside the lock.
    pub fn stream_abort(&self, id: u64) -> Option<Writable> {
        let mut st = self.lock();
        st.stream(id)?;
        // A flow-controlled stream that was finished with messages still
        // held is not abandoned: its poller ends it once they are out.
        if st.pacer().is_some_and(|p| p.finishing) {
            return None;
        }
        let stream = st.extra.as_mut().and_then(|extra| extra.stream.take());
        if let Some(s) = &stream {
            st.note_cut(s.status, s.head, s.body);
        }
        let on_close = stream.and_then(|s| s.retire(self.poller));
        let writable = both(st.extra.as_mut().and_then(|e| e.writable.take()), on_close);
        st.stats.request_done();
        st.broken.get_or_insert(CloseReason::Local);
        self.answered(st, Some(CloseReason::Local), None);
        writable
    }

    /// Registers `f` to run once the queue is below the low watermark.
    /// Returns what the caller must do outside the lock: `f` to run now, when
    /// that is already so (or the stream is over, so the producer finds out
    /// at its next send); and the callback `f` replaced, to drop.
    pub fn stream_on_writable(&self, id: u64, f: Writable) -> (Option<Writable>, Option<Writable>) {
        let mut st = self.lock();
        if st.stream(id).is_none() || st.backlog() < self.low as usize {
            return (Some(f), None);
        }
        let replaced = st.extra().writable.replace(f);
        (None, replaced)
    }

    /// Registers `f` to run once stream `id` is over. Returns what the
    /// caller must do outside the lock: `f` to run now, when the stream is
    /// over already; and the callback `f` replaced, to drop.
    pub fn stream_on_close(&self, id: u64, f: Writable) -> (Option<Writable>, Option<Writable>) {
        match self.lock().stream(id) {
            Some(stream) => (None, stream.on_close.replace(f)),
            None => (Some(f), None),
        }
    }

    /// Whether a flow-controlled stream that ends when its peer shuts its
    /// side is open.
    pub fn stream_ends_on_peer_shutdown(&self) -> bool {
        self.lock()
            .pacer()
            .is_some_and(|p| p.ends_on_peer_shutdown())
    }

    /// Whether stream `id` is still open.
    pub fn stream_open(&self, id: u64) -> bool {
        self.lock().stream(id).is_some()
    }

    /// Ends an open stream, if there is one, for a server shutdown: the peer
    /// gets the end marker, and the connection closes after it. Returns the
    /// stream's writable callback, for the caller to run outside the lock.
    pub fn end_stream_for_shutdown(&self) -> Option<Writable> {
        let mut st = self.lock();
        let open = st.extra.as_ref().is_some_and(|e| e.stream.is_some());
        if !open || st.closed || st.broken.is_some() {
            return None;
        }
        let (_, writable) = self.end_stream(&mut st, true);
        self.answered(st, Some(CloseReason::ServerShutdown), None);
        writable
    }

    /// Writes the open stream's end and queues its completion (under the
    /// lock); returns whether the connection closes after it, and the
    /// stream's writable callback, which the caller runs once unlocked. A
    /// flow-controlled stream first sends whatever it still holds, whatever
    /// the rate, and on a `shutdown` its farewell piece.
    fn end_stream(&self, st: &mut State, shutdown: bool) -> (bool, Option<Writable>) {
        let Some((mut stream, writable)) = st
            .extra
            .as_mut()
            .and_then(|e| Some((e.stream.take()?, e.writable.take())))
        else {
            return (false, None);
        };
        if let Some(key) = stream.timer.take() {
            poller::cancel_timer(self.poller as usize, key);
        }
        let writable = both(writable, stream.on_close.take());
        let mut chunks = Vec::with_capacity(1);
        if let Some(mut pacer) = stream.pacer.take() {
            let released = pacer.release(Instant::now(), true);
            st.stats.add_events_sent(released.messages);
            st.stats.add_ratelimit_delay(released.delayed);
            let farewell = shutdown.then(|| pacer.farewell()).flatten();
            for piece in released.pieces.into_iter().chain(farewell) {
                let _ = stream.frame(piece, &mut chunks);
            }
        }
        let before = chunks.len();
        let whole = stream.framer.end(&mut chunks);
        let framed: u64 = chunks[before..].iter().map(|c| c.len() as u64).sum();
        let now = clock(st);
        // Should the end fail to go out, the close finishes the record.
        st.note_cut(stream.status, stream.head, stream.body);
        let res = self.send_locked(st, &[], &mut chunks);
        let done = Done::Reply {
            head: stream.head + framed,
            body: stream.body,
            status: stream.status,
        };
        finish_send(st, Some(done), res, now);
        st.stats.request_done();
        (stream.close_after || !whole, writable)
    }

    /// Records the request's arrival if the dispatcher left that to the
    /// answer, and returns the lock.
    #[inline(always)]
    fn begin_answer(&self, arrival: Option<Arrival>) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        if let Some(a) = arrival {
            // Unless the dispatcher recorded it when the series went asynchronous.
            if !st.request_recorded {
                a.record(&mut st.stats);
                st.request_recorded = true;
            }
        }
        st
    }

    /// The exchange's answer is complete: tell the poller, directly when it is
    /// dispatching inline on this thread, else through the shared state, with
    /// a wake-up unless the answer is quiet: written whole in `quiet`'s window,
    /// the connection staying open, and the poller not waiting for it (it
    /// then learns of the answer at the connection's next event, or at the
    /// deadline it armed for this, see `comm::server`).
    #[inline(always)]
    fn answered(
        &self,
        mut st: MutexGuard<'_, State>,
        close: Option<CloseReason>,
        quiet: Option<Quiet>,
    ) {
        let close = close.or(st.broken);
        st.request_recorded = false;
        if DISPATCHING.with(|d| d.get()) == self.id {
            // The dispatcher picks this up as soon as the series returns, a
            // pause included.
            st.pause_unseen = false;
            st.outcome = Outcome::None;
            let reply = InlineReply {
                id: self.id,
                queued: st.queued,
                close,
                failed: st.broken.is_some(),
            };
            drop(st);
            INLINE_REPLY.with(|r| r.set(Some(reply)));
            return;
        }
        let quiet = close.is_none()
            && !st.wake_on_answer
            && st.out.is_empty()
            && quiet.is_some_and(|q| q.received.elapsed() < q.window);
        st.outcome = Outcome::Answered { close, quiet };
        drop(st);
        if !quiet {
            self.wake_poller();
        }
    }

    fn wake_poller(&self) {
        poller::send(
            self.poller as usize,
            Command::Wake {
                token: self.token as usize,
                id: self.id,
            },
        );
    }

    /// Writes `head` (when `chunks` is empty) or `chunks` as one message,
    /// queuing the rest. The common case, everything written at once, stays
    /// on a short path; queuing and failures are kept out of line, so the hot
    /// code of a request stays small in the instruction cache.
    #[inline(always)]
    fn send_locked(
        &self,
        st: &mut State,
        head: &[u8],
        chunks: &mut Vec<Bytes>,
    ) -> Result<SendState, SendError> {
        if st.closed || st.broken.is_some() {
            return refuse(chunks, SendError::Closed);
        }
        if st.queued > self.max_queued as usize {
            return refuse(chunks, SendError::Full);
        }
        let mut head = head;
        if st.out.is_empty() {
            let written = if head.is_empty() {
                write_chunks(&self.io, chunks)
            } else {
                write_one(&self.io, head)
            };
            let n = match written {
                Ok(n) => n,
                Err(e) => return write_failed(st, chunks, &e),
            };
            st.stats.add_out(n);
            if head.is_empty() {
                advance(chunks, n);
            } else {
                head = head.get(n..).unwrap_or_default();
            }
            if head.is_empty() && chunks.is_empty() {
                return Ok(SendState::Written);
            }
            st.stats.pause(Instant::now());
            st.pause_unseen = true;
        }
        Ok(self.queue(st, head, chunks))
    }

    /// Queues what the socket did not take, as one message.
    #[cold]
    #[inline(never)]
    fn queue(&self, st: &mut State, head: &[u8], chunks: &mut Vec<Bytes>) -> SendState {
        if !head.is_empty() {
            st.queued += head.len();
            st.out.push_back(Chunk {
                bytes: Bytes::copy_from_slice(head),
                last: chunks.is_empty(),
                done: false,
            });
        }
        let n = chunks.len();
        for (i, c) in chunks.drain(..).enumerate() {
            if !c.is_empty() || i + 1 == n {
                st.queued += c.len();
                st.out.push_back(Chunk {
                    bytes: c,
                    last: i + 1 == n,
                    done: false,
                });
            }
        }
        let queued = st.queued;
        st.stats.queued(queued);
        queued_state(queued, self.high)
    }

    /// Looks at what writers left (poller side): counts `unrecorded_in` bytes
    /// read, reports a broken connection, a finished answer and the bytes
    /// queued. A pause the poller has not seen is flushed at once: the
    /// socket's writable edge may have come and gone before it knew.
    /// `wake_on_answer`: whether an answer still to come must wake the poller.
    pub fn sync(
        self: &Arc<Self>,
        unrecorded_in: usize,
        wake_on_answer: bool,
    ) -> Result<Synced, CloseReason> {
        let mut st = self.lock();
        st.stats.add_in(unrecorded_in);
        st.wake_on_answer = wake_on_answer;
        if let Some(reason) = st.broken {
            return Err(reason);
        }
        let mut writable = None;
        if std::mem::take(&mut st.pause_unseen) && st.queued > 0 {
            writable = self.flush_locked(&mut st);
            if let Some(reason) = st.broken {
                keep_for_close(&mut st, writable);
                return Err(reason);
            }
        }
        let mut wake_at = None;
        if st.pacer().is_some() {
            let (paced, at) = self.pace(&mut st);
            writable = both(writable, paced);
            wake_at = at;
            if let Some(reason) = st.broken {
                keep_for_close(&mut st, writable);
                return Err(reason);
            }
        }
        let mut answered_quietly = false;
        let answered = match std::mem::replace(&mut st.outcome, Outcome::None) {
            Outcome::Answered { close, quiet } => {
                answered_quietly = quiet;
                Some(close)
            }
            Outcome::None => None,
        };
        let queued = st.queued;
        drop(st);
        if let Some(at) = wake_at {
            self.wake_at(at);
        }
        Ok(Synced {
            queued,
            answered,
            answered_quietly,
            writable,
        })
    }

    /// The poller side of a flow-controlled stream: closes a stalled
    /// consumer, releases what the socket and the rate allow in one write,
    /// ends a finished stream once nothing is held, and says when to look
    /// again (a new, earlier timer is needed) and which writable callback is
    /// due.
    fn pace(&self, st: &mut State) -> (Option<Writable>, Option<Instant>) {
        let now = Instant::now();
        let queued = st.queued;
        let Some(pacer) = st.pacer() else {
            return (None, None);
        };
        pacer.release_asked = false;
        if pacer.timer_at.is_some_and(|t| t <= now) {
            pacer.timer_at = None;
        }
        pacer.socket_state(now, queued, false);
        let mut probed = None;
        if pacer.stalled(now) {
            // The socket's writable edge comes only once its buffer has
            // drained by about a third, which a slow but steady reader may
            // take longer than the stall timeout to do: before calling the
            // consumer stalled, see whether the socket takes anything now (a
            // write that makes progress restarts the stall).
            probed = self.flush_locked(st);
            if st.broken.is_some() || st.pacer().is_some_and(|p| p.stalled(now)) {
                st.broken.get_or_insert(CloseReason::SlowConsumer);
                return (probed, None);
            }
        }
        let out_empty = st.out.is_empty();
        let Some(pacer) = st.pacer() else {
            return (probed, None);
        };
        let released = if out_empty {
            pacer.release(now, false)
        } else {
            // Output waits on the socket now, not on the rate.
            Released {
                delayed: pacer.socket_busy(now),
                ..Default::default()
            }
        };
        let finish = pacer.finishing && pacer.held_messages() == 0;
        st.stats.add_events_sent(released.messages);
        st.stats.add_ratelimit_delay(released.delayed);
        if !released.pieces.is_empty() {
            let mut chunks = Vec::with_capacity(released.pieces.len() * 3);
            if let Some(stream) = st.extra.as_mut().and_then(|e| e.stream.as_mut()) {
                for piece in released.pieces {
                    if stream.frame(piece, &mut chunks).is_err() {
                        st.broken.get_or_insert(CloseReason::Local);
                        return (probed, None);
                    }
                }
            }
            let _ = self.send_locked(st, &[], &mut chunks);
            // The poller wrote this itself: a pause is seen.
            st.pause_unseen = false;
            let queued = st.queued;
            if let Some(pacer) = st.pacer() {
                pacer.socket_state(now, queued, true);
            }
        }
        let writable = if finish {
            let (close_after, writable) = self.end_stream(st, false);
            st.request_recorded = false;
            st.outcome = Outcome::Answered {
                quiet: false,
                close: close_after.then_some(CloseReason::Local).or(st.broken),
            };
            writable
        } else if st.backlog() < self.low as usize {
            st.extra.as_mut().and_then(|e| e.writable.take())
        } else {
            None
        };
        let writable = both(probed, writable);
        let socket_busy = !st.out.is_empty();
        let wake_at = st.pacer().and_then(|p| {
            let due = p.next_due(socket_busy)?;
            if p.timer_at.is_some_and(|t| t <= due) {
                return None;
            }
            p.timer_at = Some(due);
            Some(due)
        });
        (writable, wake_at)
    }

    /// Has the poller wake this connection at `at` (from the poller thread,
    /// this costs no syscall). The stream keeps one timer: the one this
    /// replaces is cancelled, so a stream woken earlier and earlier (a rate
    /// wake-up ahead of a heartbeat) never piles timers up in the poller.
    fn wake_at(self: &Arc<Self>, at: Instant) {
        let conn = Arc::clone(self);
        poller::run_on(self.poller as usize, move |core| {
            let (token, id) = (conn.token as usize, conn.id);
            let key = core.add_timer(
                at,
                Box::new(move |core: &mut poller::Core, cancelled: bool| {
                    if !cancelled && core.id_of(token) == Some(id) {
                        core.wake(token);
                    }
                }),
            );
            let replaced = {
                let mut st = conn.lock();
                match st.extra.as_mut().and_then(|e| e.stream.as_mut()) {
                    Some(stream) => stream.timer.replace(key),
                    // The stream is over: its timer is not needed.
                    None => Some(key),
                }
            };
            if let Some(old) = replaced {
                core.cancel_timer(old);
            }
        });
    }

    /// Opens the record of a server exchange whose request was complete at
    /// `start`: its method and target (`line`), its `(head, body)` sizes.
    /// Its answer, or the connection's end, finishes it and hands it to
    /// `sink`.
    pub fn open_exchange(
        &self,
        sink: &Arc<dyn AccessLog>,
        start: Instant,
        line: Option<(&str, &str)>,
        (head, body): (u64, u64),
    ) {
        let mut open = exchange_box(start);
        let rec = &mut open.rec;
        if let Some((method, path)) = line {
            rec.method = Text::new(method);
            rec.path = Text::new(path);
        }
        rec.req_header_bytes = Some(head);
        rec.req_body_bytes = Some(body);
        rec.conn_id = Some(self.id);
        let mut st = self.lock();
        rec.proto = st.stats.proto();
        rec.peer = Some(st.stats.peer());
        rec.index = st.stats.requests().saturating_add(1);
        let log = st.exchange.get_or_insert_with(|| {
            Box::new(ExchangeLog {
                sink: sink.clone(),
                open: None,
            })
        });
        log.open = Some(open);
    }

    /// Records a request's arrival now (its series went asynchronous), unless
    /// its answer came first and did.
    pub fn record_arrival(&self, arrival: &Arrival) {
        record_arrival_locked(&mut self.lock(), arrival);
    }

    /// A request goes to another thread: records its arrival and says
    /// whether its answer must wake the poller (see `answered`), under one
    /// lock taken before that thread can answer, so the poller need not look
    /// again until its next event, deadline or wake-up.
    pub fn hand_over(&self, arrival: &Arrival, wake_on_answer: bool) {
        let mut st = self.lock();
        st.wake_on_answer = wake_on_answer;
        record_arrival_locked(&mut st, arrival);
    }

    /// Writes queued output (poller side).
    pub fn flush(&self) -> Flushed {
        let mut st = self.lock();
        let before = st.queued;
        let writable = self.flush_locked(&mut st);
        Flushed {
            queued: st.queued,
            progressed: st.queued < before,
            writable,
        }
    }

    /// Writes queued output until the socket stops taking it; returns the
    /// writable callback that is due once the queue is below the low mark.
    fn flush_locked(&self, st: &mut State) -> Option<Writable> {
        let before = st.queued;
        while !st.out.is_empty() && st.broken.is_none() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n_iov = st.out.len().min(MAX_IOV);
            for (slot, chunk) in iov.iter_mut().zip(st.out.iter()) {
                *slot = IoSlice::new(&chunk.bytes);
            }
            match self.io.send_vectored(&iov[..n_iov]) {
                Ok(0) => st.broken = Some(CloseReason::Reset),
                Ok(mut n) => {
                    st.stats.add_out(n);
                    st.queued -= n;
                    let mut completed = 0;
                    while let Some(front) = st.out.front_mut() {
                        if front.bytes.len() > n {
                            front.bytes.advance(n);
                            break;
                        }
                        n -= front.bytes.len();
                        completed += usize::from(front.done);
                        st.out.pop_front();
                    }
                    if completed > 0 {
                        let now = Instant::now();
                        for _ in 0..completed {
                            if let Some(p) = st.extra.as_mut().and_then(|e| e.pending.pop_front()) {
                                complete(st, p, now);
                            }
                        }
                        if !st.out.is_empty() {
                            st.next_answer_starts(now);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => st.broken = Some(CloseReason::Reset),
            }
        }
        if st.out.is_empty() {
            let now = Instant::now();
            st.stats.resume(now);
            st.out = VecDeque::new(); // give the ring's memory back while idle
            while let Some(p) = st.extra.as_mut().and_then(|e| e.pending.pop_front()) {
                complete(st, p, now);
            }
        }
        let queued = st.queued;
        if let Some(pacer) = st.pacer() {
            pacer.socket_state(Instant::now(), queued, queued < before);
        }
        if st.backlog() < self.low as usize {
            st.extra.as_mut().and_then(|e| e.writable.take())
        } else {
            None
        }
    }

    /// Whole or partly written messages still queued.
    pub fn queued_messages(&self) -> usize {
        let mut st = self.lock();
        let held = st.pacer().map_or(0, |p| p.held_messages());
        st.out.iter().filter(|c| c.last).count() + held
    }

    /// Stops all writing and shuts the socket down; returns the final stats
    /// and a writable callback still registered (so its producer can learn
    /// the stream is over).
    pub fn close(
        &self,
        reason: CloseReason,
        unrecorded_in: usize,
    ) -> (ConnStats, Option<Writable>) {
        let mut st = self.lock();
        st.closed = true;
        st.out.clear();
        st.queued = 0;
        st.stats.add_in(unrecorded_in);
        // A stream cut short: its head went out, its body did not end.
        if let Some((status, head, body)) = st
            .extra
            .as_ref()
            .and_then(|e| e.stream.as_ref())
            .map(|s| (s.status, s.head, s.body))
        {
            st.note_cut(status, head, body);
        }
        let mut extra = st.extra.take();
        let queued_answers = extra.as_mut().map(|e| std::mem::take(&mut e.pending));
        let writable = extra.and_then(|e| {
            if e.stream.is_some() {
                st.stats.request_done();
            }
            both(e.writable, e.stream.and_then(|s| s.retire(self.poller)))
        });
        if let Some(e) = st.exchange.as_deref_mut() {
            // Answers still queued, then the exchange under way, in order.
            let now = Instant::now();
            let queued = queued_answers.into_iter().flatten().filter_map(|p| p.rec);
            for mut open in queued.chain(e.open.take()) {
                emit(&e.sink, &mut open, now, Some(reason.as_str()));
                recycle(open);
            }
        }
        let local = self.io.local_addr();
        st.stats.close(reason, local);
        self.io.shutdown(Shutdown::Both);
        (st.stats.clone(), writable)
    }

    /// Half-closes the write side (lingering close after the last answer).
    pub fn shutdown_write(&self) {
        self.io.shutdown(Shutdown::Write);
    }

    /// Marks the connection to be closed by its poller with `reason`.
    pub fn break_with(&self, reason: CloseReason) {
        self.lock().broken.get_or_insert(reason);
        self.wake_poller();
    }
}

/// Runs `f` marked as the inline dispatch of a request on connection `id`,
/// and returns what a reply sent meanwhile left, if one was.
pub(crate) fn dispatch_inline(id: u64, f: impl FnOnce()) -> Option<InlineReply> {
    /// Restores the mark even if `f` unwinds.
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            DISPATCHING.with(|d| d.set(self.0));
        }
    }
    let restore = Restore(DISPATCHING.with(|d| d.replace(id)));
    f();
    drop(restore);
    INLINE_REPLY
        .with(|r| r.take())
        .filter(|reply| reply.id == id)
}

/// The instant for an output event: after the first exchange the events only
/// count, so any instant will do and the clock is not read, unless the
/// exchange's own record is being kept.
#[inline]
fn clock(st: &State) -> Instant {
    if st.stats.wants_clock() || st.logging() {
        Instant::now()
    } else {
        st.stats.start_instant()
    }
}

/// Records a request's arrival, unless its answer came first and did.
fn record_arrival_locked(st: &mut State, arrival: &Arrival) {
    if st.outcome == Outcome::None && !st.request_recorded {
        arrival.record(&mut st.stats);
        st.request_recorded = true;
    }
}

#[inline]
fn queued_state(queued: usize, high: u32) -> SendState {
    if queued == 0 {
        SendState::Written
    } else if queued > high as usize {
        SendState::AboveHigh
    } else {
        SendState::Queued
    }
}

/// The connection is broken and its poller will close it: callbacks already
/// taken out of the shared state (a writable callback, a stream's `on_close`
/// that its end returned) are put back for the close to run.
fn keep_for_close(st: &mut State, writable: Option<Writable>) {
    if let Some(f) = writable {
        let extra = st.extra();
        extra.writable = both(extra.writable.take(), Some(f));
    }
}

/// Runs `a` then `b`, whichever of them there are.
fn both(a: Option<Writable>, b: Option<Writable>) -> Option<Writable> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Box::new(move || {
            a();
            b();
        })),
        (a, b) => a.or(b),
    }
}

/// A send that cannot be taken: nothing of it is queued.
#[cold]
fn refuse(chunks: &mut Vec<Bytes>, err: SendError) -> Result<SendState, SendError> {
    chunks.clear();
    Err(err)
}

/// A write failed: the connection is broken, and the poller closes it.
#[cold]
#[inline(never)]
fn write_failed(
    st: &mut State,
    chunks: &mut Vec<Bytes>,
    err: &io::Error,
) -> Result<SendState, SendError> {
    st.broken = Some(CloseReason::Reset);
    log::debug!("taskweave: write failed: {err}");
    refuse(chunks, SendError::Closed)
}

/// Times `done` now if everything went out, or when the queue drains.
#[inline]
fn finish_send(
    st: &mut State,
    done: Option<Done>,
    res: Result<SendState, SendError>,
    now: Instant,
) {
    let (Some(done), Ok(state)) = (done, res) else {
        return;
    };
    // The answer's record goes with it: the next exchange may open its own
    // before this one's tail has left.
    let rec = st.take_record(done);
    if state == SendState::Written {
        complete(st, Pending { done, rec }, now);
    } else {
        if let Some(c) = st.out.back_mut() {
            c.done = true;
        }
        st.extra().pending.push_back(Pending { done, rec });
    }
}

/// Times an answer (or a client request) whose last byte just left, and
/// finishes its record.
fn complete(st: &mut State, p: Pending, now: Instant) {
    let Pending { done, rec } = p;
    match done {
        Done::Reply { head, body, status } | Done::Rejection { head, body, status } => {
            st.stats.response_complete(now, head, body, status);
            if let (Some(mut rec), Some(log)) = (rec, st.exchange.as_deref()) {
                // No first byte seen: it went out whole, with the answer
                // ahead of it.
                rec.first_byte.get_or_insert(now);
                rec.answer(status, head, body);
                emit(&log.sink, &mut rec, now, None);
                recycle(rec);
            }
        }
        Done::Request { head, body } => st.stats.request_complete(now, head, body),
    }
}

/// Vectored writes until the socket stops taking data; returns bytes written.
fn write_chunks(io: &Transport, chunks: &[Bytes]) -> io::Result<usize> {
    if let [only] = chunks {
        return write_one(io, only);
    }
    let mut written = 0;
    let mut skip = 0;
    let mut offset = 0;
    while skip < chunks.len() {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n_iov = 0;
        for (i, c) in chunks[skip..].iter().take(MAX_IOV).enumerate() {
            iov[n_iov] = IoSlice::new(if i == 0 { &c[offset..] } else { c });
            n_iov += 1;
        }
        match io.send_vectored(&iov[..n_iov]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                written += n;
                while n > 0 && skip < chunks.len() {
                    let left = chunks[skip].len() - offset;
                    if n >= left {
                        n -= left;
                        skip += 1;
                        offset = 0;
                    } else {
                        offset += n;
                        n = 0;
                    }
                }
                while skip < chunks.len() && chunks[skip].len() == offset {
                    skip += 1;
                    offset = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// A plain `send` for the common single-chunk message (cheaper than a
/// vectored write). Inlined: with the `tls` feature's second transport it
/// would otherwise become a call of its own on every reply.
#[inline(always)]
fn write_one(io: &Transport, chunk: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < chunk.len() {
        match io.send(chunk.get(written..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Drops the first `n` bytes of `chunks`.
fn advance(chunks: &mut Vec<Bytes>, mut n: usize) {
    let mut drop_n = 0;
    for c in chunks.iter_mut() {
        if n == 0 {
            break;
        }
        if c.len() <= n {
            n -= c.len();
            drop_n += 1;
        } else {
            c.advance(n);
            n = 0;
        }
    }
    chunks.drain(..drop_n);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that served a request on a server whose sink wants
    /// request records keeps this between requests: a 32-byte malloc chunk.
    #[test]
    fn an_idle_connections_exchange_log_is_small() {
        assert!(std::mem::size_of::<ExchangeLog>() <= 24);
    }
}
