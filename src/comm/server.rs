//! The server connection engine: accept, read, parse, dispatch, answer, keep
//! alive, close, for any [`Protocol`].
//!
//! Each accepted connection gets a [`ServerConn`] on the poller that accepted
//! it, a state machine over [`Phase`]. A request is parsed in place into an
//! exchange the layer above provides at its first byte; once complete it is
//! dispatched through the [`Service`] and answered through a [`Reply`] from
//! whichever thread finishes it. One request per connection is dispatched at a
//! time: pipelined requests wait, already read, and are answered in order.
//! While a request is with the layer above, or the connection's output is
//! above the high watermark, the connection does not read, so a peer that
//! pipelines and never reads cannot grow our memory beyond the watermark plus
//! one answer.

use super::conn::{dispatch_inline, Arrival, Conn, Done, Writable};
use super::listener::{Acceptor, Listener};
use super::ratelimit::{RateLimit, RateLimited};
use super::reply::{Reply, StreamHost};
use super::service::{Exchange, Service};
use super::tls_config::ServerTls;
use super::transport::Transport;
use super::ConnConfig;
use crate::metrics::{AccessLog, CloseReason, ConnStats, Side};
use crate::poller::{self, Core, Flow, Handler, QueueKey, Ready};
use crate::protocol::{Message, Progress, Protocol, ProtocolError};
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes read but not yet counted in the stats past which they are counted
/// at once (the count is a u32).
const UNRECORDED_MAX: u32 = 1 << 30;

/// How long a closing connection keeps reading (and discarding) after its last
/// answer, so unread input does not turn our close into a reset that destroys
/// the answer before the peer reads it.
const LINGER: Duration = Duration::from_secs(1);

/// An answer from another thread that is written whole within this share
/// of the keep-alive timeout after its request arrived does not wake the
/// poller (`Wait::Answer`): the keep-alive deadline, armed at the dispatch,
/// may then close the connection up to this share early (1/64: under a
/// second of the default 60 s).
const QUIET_SHARE: u32 = 64;

static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);

/// A server's limits, as its builder collected them.
pub(crate) struct ServerSpec {
    pub config: ConnConfig,
    pub max_connections: usize,
    pub backlog: i32,
    pub log: Arc<dyn AccessLog>,
    /// Requests a second over all pollers; 0: no limit.
    pub max_rps: u32,
    /// Counts the requests refused over `max_rps`.
    pub rate_limited: RateLimited,
    /// Whether the port may be shared with other listeners.
    pub reuse_port: bool,
    /// TLS settings: every connection speaks TLS.
    pub tls: Option<ServerTls>,
}

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum RunState {
    Running = 0,
    /// Graceful shutdown: no new connections; answers in flight finish and
    /// go out whole, then each connection closes.
    Draining = 1,
    /// The grace period is over: close everything now.
    Stopping = 2,
}

struct Keys {
    handshake: QueueKey,
    keep_alive: QueueKey,
    receive: QueueKey,
    send: QueueKey,
    linger: QueueKey,
}

/// What every connection of one server shares.
pub(crate) struct ServerShared<P: Protocol, S: Service<P>> {
    group: u32,
    keys: Keys,
    proto: P,
    service: S,
    /// `service.inline()`, asked once.
    inline: bool,
    config: ConnConfig,
    max_connections: usize,
    open: AtomicUsize,
    state: AtomicU8,
    closed: (Mutex<()>, Condvar),
    log: Arc<dyn AccessLog>,
    /// The log wants a record per request (asked once, at the start).
    log_requests: bool,
    /// The request rate limit, if there is one.
    rate: Option<Arc<RateLimit>>,
    /// How soon after its request an answer must be out to be quiet.
    quiet_window: Duration,
    /// TLS settings, when the server speaks TLS.
    tls: Option<ServerTls>,
}

/// Starts serving `proto` on `addr` with one listener per poller; requests go
/// to `service`.
pub(crate) fn serve<P: Protocol, S: Service<P>>(
    addr: SocketAddr,
    spec: ServerSpec,
    proto: P,
    service: S,
) -> io::Result<ServerHandle> {
    crate::sys::process::reserve_spare_fd();
    let rate = (spec.max_rps > 0).then(|| {
        let limit = Arc::new(RateLimit::new(spec.max_rps, poller::count()));
        spec.rate_limited.attach(limit.clone());
        limit
    });
    let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    let key = |dur, kind| QueueKey { dur, group, kind };
    let quiet_window = spec.config.keep_alive_timeout / QUIET_SHARE;
    let shared = Arc::new(ServerShared {
        group,
        keys: Keys {
            handshake: key(spec.config.handshake_timeout, 4),
            keep_alive: key(spec.config.keep_alive_timeout, 0),
            receive: key(spec.config.receive_timeout, 1),
            send: key(spec.config.send_timeout, 2),
            linger: key(LINGER, 3),
        },
        proto,
        inline: service.inline(),
        service,
        config: spec.config,
        max_connections: spec.max_connections,
        open: AtomicUsize::new(0),
        state: AtomicU8::new(RunState::Running as u8),
        closed: (Mutex::new(()), Condvar::new()),
        log_requests: spec.log.wants_requests(),
        log: spec.log,
        rate,
        quiet_window,
        tls: spec.tls,
    });
    // The pollers' listeners share the port with SO_REUSEPORT, which would
    // let a second server join them unnoticed: unless the user allows it,
    // a port someone listens on already is an error.
    if !spec.reuse_port && addr.port() != 0 {
        crate::sys::socket::check_port_free(addr)?;
    }
    let first = crate::sys::socket::reuseport_listener(addr, spec.backlog)?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..poller::count() {
        listeners.push(crate::sys::socket::reuseport_listener(local, spec.backlog)?);
    }
    for (index, std_listener) in listeners.into_iter().enumerate() {
        let acceptor: Arc<dyn Acceptor> = shared.clone();
        poller::run_on(index, move |core| {
            let mut listener = mio::net::TcpListener::from_std(std_listener);
            let res = core.insert(poller::next_id(), |token, registry| {
                registry.register(&mut listener, Token(token), Interest::READABLE)?;
                Ok(Box::new(Listener::new(listener, acceptor)))
            });
            if let Err(e) = res {
                log::error!("taskweave: cannot register listener: {e}");
            }
        });
    }
    Ok(ServerHandle {
        local,
        control: shared,
    })
}

impl<P: Protocol, S: Service<P>> ServerShared<P, S> {
    pub(super) fn proto(&self) -> &P {
        &self.proto
    }

    /// How soon after its request an answer must be written whole to leave
    /// the poller unwoken (see `QUIET_SHARE`).
    pub(super) fn quiet_window(&self) -> Duration {
        self.quiet_window
    }

    fn run_state(&self) -> RunState {
        match self.state.load(Ordering::Acquire) {
            0 => RunState::Running,
            1 => RunState::Draining,
            _ => RunState::Stopping,
        }
    }

    /// Shutting down (gracefully or not): answers close their connections.
    pub(super) fn stopping(&self) -> bool {
        self.run_state() != RunState::Running
    }

    /// The record first (a panic in the sink is contained), then the count:
    /// once `shutdown` sees no connection open, every record is written.
    fn on_closed(&self, stats: &ConnStats) {
        super::log_record(&*self.log, stats);
        self.open.fetch_sub(1, Ordering::AcqRel);
        let _guard = self.closed.0.lock();
        self.closed.1.notify_all();
    }
}

impl<P: Protocol, S: Service<P>> StreamHost for ServerShared<P, S> {
    fn defer(&self, f: Writable) {
        self.service.defer(f);
    }
}

impl<P: Protocol, S: Service<P>> Acceptor for ServerShared<P, S> {
    fn group(&self) -> u32 {
        self.group
    }

    fn stopped(&self) -> bool {
        self.stopping()
    }

    fn try_admit(&self) -> bool {
        if self.stopping() {
            return false;
        }
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok()
    }

    fn idle_key(&self) -> QueueKey {
        self.keys.keep_alive
    }

    fn open(self: Arc<Self>, core: &mut Core, stream: TcpStream, peer: SocketAddr) {
        crate::sys::socket::prepare_stream(stream.as_fd());
        let id = poller::next_id();
        let stats = ConnStats::new(id, Side::Server, self.proto.name(), peer);
        let index = core.index();
        let server = self.clone();
        let res = core.insert(id, move |token, registry| {
            let io = Transport::accepted(stream, server.tls.as_ref())?;
            let phase = match io.handshaking() {
                true => Phase::Handshake,
                false => Phase::Reading { partial: None },
            };
            let conn = Conn::register(io, registry, (index, token), id, stats, &server.config)?;
            Ok(Box::new(ServerConn {
                conn,
                server,
                phase,
                read: ReadState::Ready,
                wait: Wait::None,
                seen_request: false,
                served: false,
                queued: 0,
                unrecorded_in: 0,
                wake_asked: true,
            }))
        });
        match res {
            Ok(token) => {
                super::log_opened(&*self.log);
                let first = match self.tls {
                    Some(_) => self.keys.handshake,
                    None => self.keys.receive,
                };
                core.arm(token, first);
                core.wake(token);
            }
            Err(e) => {
                log::warn!("taskweave: cannot register connection from {peer}: {e}");
                let mut stats = ConnStats::new(id, Side::Server, self.proto.name(), peer);
                stats.close(CloseReason::Reset, None);
                super::log_opened(&*self.log);
                self.on_closed(&stats);
            }
        }
    }

    fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        let mut stats = ConnStats::new(poller::next_id(), Side::Server, self.proto.name(), peer);
        stats.close(CloseReason::LimitExceeded, stream.local_addr().ok());
        super::log_opened(&*self.log);
        super::log_record(&*self.log, &stats);
    }
}

/// A request's method and target, copied: for the record of a request that
/// failed to parse (a cold path).
fn owned_line(req: &impl Message) -> Option<(String, String)> {
    req.request_line()
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
}

/// The close reason for a failed read: the TLS session's own failures are
/// `tls_error`, the socket's `reset`.
fn read_error(err: &io::Error) -> CloseReason {
    match super::tls_config::is_tls_error(err) {
        true => CloseReason::TlsError,
        false => CloseReason::Reset,
    }
}

/// What a connection knows about unread input.
///
/// Edge-triggered readiness asks for reading until `WouldBlock`, which costs a
/// `recv` per request that finds nothing. A read that returns less than it
/// asked for has emptied the receive queue as it stood, and any byte that
/// arrives later raises a new edge, so the connection stops there instead. The
/// exception is a peer that has shut its side: its end-of-file raised no edge
/// of its own after our read, so that connection reads on until it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadState {
    /// Nothing to read until the next readiness event.
    Drained,
    /// Read until a short read or `WouldBlock`.
    Ready,
    /// The peer shut its side: read until end-of-file or `WouldBlock`.
    ToEnd,
}

impl ReadState {
    /// Takes a readiness event into account.
    pub(super) fn on_ready(&mut self, ready: Ready) {
        if ready.read_closed {
            *self = ReadState::ToEnd;
        } else if ready.readable && *self == ReadState::Drained {
            *self = ReadState::Ready;
        }
    }

    /// Takes a read of `n` bytes into a buffer of `cap` into account;
    /// `drains`: a short read means the socket is drained (plain TCP). A
    /// TLS session's short read may leave its end of input (a
    /// `close_notify` that came with the last record) unseen, with no edge
    /// to come: such a connection reads on until `WouldBlock` or the end.
    pub(super) fn after_read(&mut self, n: usize, cap: usize, drains: bool) {
        if drains && n < cap && *self == ReadState::Ready {
            *self = ReadState::Drained;
        }
    }
}

/// What the connection's single deadline is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    Handshake,
    Receive,
    KeepAlive,
    /// A request is with another thread, whose answer will not wake us if
    /// it goes out whole and promptly: the keep-alive deadline, from the
    /// dispatch, is when we look whether it came.
    Answer,
    Send,
    Linger,
}

/// Where a server connection is between its requests and its close.
enum Phase<E> {
    /// The TLS handshake is under way (its own deadline,
    /// `handshake_timeout`); no request can arrive yet.
    Handshake,
    /// Reading requests; `partial` holds one partly received.
    Reading { partial: Option<Box<E>> },
    /// Not reading: output went above the high watermark, or bytes read past
    /// the last request (`leftover`) wait until the output has drained enough
    /// (below the low watermark when `until_low`, else to the high one).
    Paused {
        leftover: Option<Box<[u8]>>,
        until_low: bool,
    },
    /// A complete request is with the layer above; its answer (one reply or a
    /// stream) is not complete. `leftover`: bytes read past it.
    Dispatched { leftover: Option<Box<[u8]>> },
    /// The last answer is out or queued; close once output has drained.
    Draining(CloseReason),
    /// Write side shut; discarding input until the peer closes or the linger
    /// deadline passes.
    Lingering(CloseReason),
    /// Closed and accounted for.
    Closed,
}

/// The poller side of one server connection.
struct ServerConn<P: Protocol, S: Service<P>> {
    conn: Arc<Conn>,
    server: Arc<ServerShared<P, S>>,
    phase: Phase<S::Exchange>,
    /// Whether the socket may hold unread bytes.
    read: ReadState,
    wait: Wait,
    /// A request has arrived (before one, the idle wait is the receive
    /// timeout from accept, not keep-alive).
    seen_request: bool,
    /// An answer went out since the deadline was last armed: an inline
    /// exchange goes idle -> dispatched -> idle within one pump, and the
    /// keep-alive deadline must still restart.
    served: bool,
    /// Bytes queued unwritten when the shared state was last looked at (the
    /// queue holds at most `max_queued` plus one answer, and is counted in a
    /// u32 here).
    queued: u32,
    /// Bytes read but not yet added to the stats (at most a few reads' worth).
    unrecorded_in: u32,
    /// The last look at the shared state asked for a wake-up when the answer
    /// in flight is complete (see `sync_shared`).
    wake_asked: bool,
}

impl<P: Protocol, S: Service<P>> ServerConn<P, S> {
    #[cold]
    #[inline(never)]
    fn close(&mut self, core: &mut Core, reason: CloseReason) -> Flow {
        self.conn.deregister(core.registry());
        self.finish(reason);
        Flow::Remove
    }

    /// Closes the connection and hands its record to the log (once).
    fn finish(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.phase = Phase::Closed;
        let unrecorded = std::mem::take(&mut self.unrecorded_in) as usize;
        let (stats, writable) = self.conn.close(reason, unrecorded);
        self.server.on_closed(&stats);
        if let Some(f) = writable {
            self.server.service.defer(f);
        }
    }

    /// Picks up what writers left in the shared state: a broken connection,
    /// a finished answer, the bytes still queued. Tells an answer still to
    /// come whether it must wake us: when input is held back (`held_input`,
    /// leftover bytes, unread ones) or the server is shutting down; else we
    /// find the answer at our next event or deadline, which saves the answering
    /// thread a wake-up and us a turn. Returns whether an answer was found
    /// that did not wake us.
    fn sync_shared(&mut self, held_input: bool) -> Result<bool, CloseReason> {
        let unrecorded = std::mem::take(&mut self.unrecorded_in) as usize;
        let wake = held_input
            || self.read != ReadState::Drained
            || self.server.run_state() != RunState::Running
            || matches!(self.phase, Phase::Dispatched { leftover: Some(_) });
        self.wake_asked = wake;
        let synced = self.conn.sync(unrecorded, wake)?;
        self.queued = synced.queued.min(u32::MAX as usize) as u32;
        if let Some(f) = synced.writable {
            self.server.service.defer(f);
        }
        if let Some(close) = synced.answered {
            self.answered(close);
        }
        Ok(synced.answered_quietly)
    }

    /// The answer to the dispatched request is complete (written or queued).
    #[inline(always)]
    fn answered(&mut self, close: Option<CloseReason>) {
        let Phase::Dispatched { leftover } = &mut self.phase else {
            return;
        };
        let leftover = leftover.take();
        self.served = true;
        self.phase = match close {
            Some(CloseReason::Local) if self.server.stopping() => {
                Phase::Draining(CloseReason::ServerShutdown)
            }
            Some(reason) => Phase::Draining(reason),
            None => Phase::Paused {
                leftover,
                until_low: self.queued as usize > self.conn.high_watermark(),
            },
        };
    }

    /// Runs the connection forward as far as it can go without blocking.
    /// `stale`: the shared state may have changed since it was last looked at.
    fn pump(&mut self, token: usize, core: &mut Core, stale: bool) -> Flow {
        let mut scratch = core.take_scratch();
        let flow = self.pump_with(core, &mut scratch, stale);
        core.put_scratch(scratch);
        if flow == Flow::Keep {
            self.update_wait(token, core);
        }
        flow
    }

    fn pump_with(&mut self, core: &mut Core, scratch: &mut [u8], stale: bool) -> Flow {
        // The shared state changes only through a flush (our own, on a
        // writable event), an answer (ours, inline, which reports back
        // directly, or another thread's, which wakes us) or a failed write: it
        // is looked at only then, not on every event or read.
        let mut stale = stale;
        loop {
            if std::mem::take(&mut stale) {
                if let Err(reason) = self.sync_shared(false) {
                    return self.close(core, reason);
                }
            }
            let queued = self.queued as usize;
            let shutdown = self.server.run_state();
            if shutdown == RunState::Stopping {
                return self.close(core, CloseReason::ServerShutdown);
            }
            match &mut self.phase {
                Phase::Closed => return Flow::Remove,
                Phase::Lingering(reason) => {
                    let reason = *reason;
                    return self.discard_input(core, scratch, reason);
                }
                Phase::Draining(reason) => {
                    let reason = *reason;
                    if queued > 0 {
                        return Flow::Keep;
                    }
                    if matches!(reason, CloseReason::Evicted | CloseReason::KeepAliveTimeout) {
                        return self.close(core, reason);
                    }
                    self.conn.shutdown_write();
                    self.phase = Phase::Lingering(reason);
                }
                Phase::Dispatched { .. } => {
                    if shutdown == RunState::Draining {
                        // An open stream ends now; a reply in flight finishes.
                        if let Some(f) = self.conn.end_stream_for_shutdown() {
                            self.server.service.defer(f);
                        }
                    }
                    return Flow::Keep;
                }
                Phase::Paused {
                    leftover,
                    until_low,
                } => {
                    let drained = if *until_low {
                        queued < self.conn.low_watermark()
                    } else {
                        queued <= self.conn.high_watermark()
                    };
                    if !drained {
                        return Flow::Keep;
                    }
                    let leftover = leftover.take();
                    self.phase = Phase::Reading { partial: None };
                    if let Some(buf) = leftover {
                        stale = self.feed(&buf, core.now(), core.index());
                    }
                }
                Phase::Handshake => {
                    if self.read == ReadState::Drained {
                        return Flow::Keep;
                    }
                    match self.handshake(core, scratch) {
                        Ok(more) => stale |= more,
                        Err(flow) => return flow,
                    }
                }
                Phase::Reading { partial } => {
                    // Above the high watermark stop reading, until below the low one.
                    if queued > self.conn.high_watermark() {
                        self.phase = Phase::Paused {
                            leftover: None,
                            until_low: true,
                        };
                        continue;
                    }
                    if partial.is_none() && shutdown == RunState::Draining {
                        return self.close(core, CloseReason::ServerShutdown);
                    }
                    if self.read == ReadState::Drained {
                        return Flow::Keep;
                    }
                    match self.conn.recv(scratch) {
                        // A peer that shut its side still gets what is queued
                        // for it (a half-close is not an abort).
                        Ok(0) if self.queued > 0 => {
                            self.phase = Phase::Draining(CloseReason::PeerClosed)
                        }
                        Ok(0) => return self.close(core, CloseReason::PeerClosed),
                        Ok(n) => {
                            self.read
                                .after_read(n, scratch.len(), self.conn.short_read_drains());
                            // Counted under the next lock taken anyway (the next
                            // request's arrival), or, before the count grows
                            // large, in a look at the shared state.
                            self.unrecorded_in += n as u32;
                            stale = self.feed(&scratch[..n], core.now(), core.index())
                                || self.unrecorded_in >= UNRECORDED_MAX;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.read = ReadState::Drained
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return self.close(core, read_error(&e)),
                    }
                }
            }
        }
    }

    /// Drives the TLS handshake with what the socket holds. Once it is
    /// done the connection reads requests (and feeds what came with the
    /// handshake's end); returns whether the shared state may have changed.
    #[cold]
    #[inline(never)]
    fn handshake(&mut self, core: &mut Core, scratch: &mut [u8]) -> Result<bool, Flow> {
        let read = self.conn.recv(scratch);
        match &read {
            Ok(0) => return Err(self.close(core, CloseReason::PeerClosed)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read = ReadState::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("taskweave: TLS handshake failed: {e}");
                return Err(self.close(core, read_error(e)));
            }
            Ok(_) => {}
        }
        let Some(agreed) = self.conn.note_handshake(Instant::now()) else {
            return Ok(false);
        };
        log::trace!("taskweave: TLS {} {}", agreed.version, agreed.cipher);
        self.phase = Phase::Reading { partial: None };
        let Ok(n) = read else {
            return Ok(false);
        };
        self.read
            .after_read(n, scratch.len(), self.conn.short_read_drains());
        self.unrecorded_in += n as u32;
        Ok(self.feed(&scratch[..n], core.now(), core.index()))
    }

    /// Lingering close: read and drop whatever the peer still sends until it
    /// closes or the linger deadline passes.
    #[cold]
    #[inline(never)]
    fn discard_input(&mut self, core: &mut Core, scratch: &mut [u8], reason: CloseReason) -> Flow {
        loop {
            match self.conn.recv(scratch) {
                Ok(0) => return self.close(core, reason),
                Ok(n) => self.unrecorded_in = self.unrecorded_in.saturating_add(n as u32),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(core, reason),
            }
        }
    }

    /// Parses `data`, dispatching each complete request (`now`: the poller's
    /// clock, `poller`: its index). Returns whether the shared state may have
    /// changed since it was last looked at (a request was dispatched, or an
    /// interim or error reply sent).
    fn feed(&mut self, data: &[u8], now: Instant, poller: usize) -> bool {
        let mut off = 0;
        let mut stale = false;
        while off < data.len() {
            let rest = &data[off..];
            let partial = match &mut self.phase {
                Phase::Reading { partial } => partial,
                Phase::Paused {
                    leftover: None,
                    until_low: false,
                } if self.queued as usize <= self.conn.high_watermark() => {
                    // Answered at once, with room to spare: go on.
                    self.phase = Phase::Reading { partial: None };
                    continue;
                }
                Phase::Paused { leftover, .. } | Phase::Dispatched { leftover } => {
                    *leftover = Some(match leftover.take() {
                        None => rest.into(),
                        Some(old) => [&old[..], rest].concat().into(),
                    });
                    return stale;
                }
                // Closing: whatever else the peer sent is dropped.
                Phase::Handshake | Phase::Draining(_) | Phase::Lingering(_) | Phase::Closed => {
                    return stale
                }
            };
            let exchange =
                partial.get_or_insert_with(|| self.server.service.receive(&self.server.proto));
            let req = exchange.request_mut();
            match req.append(rest) {
                Ok(Progress::Complete(n)) => {
                    off += n.min(rest.len());
                    if let Some(exchange) = partial.take() {
                        let more = off < data.len();
                        stale |= self.dispatch(exchange, now, poller, more);
                        // A reply from another thread may be there already: look,
                        // so pipelined requests in this buffer need no copy.
                        if stale && off < data.len() && self.sync_shared(true).is_ok() {
                            stale = false;
                        }
                    }
                }
                Ok(Progress::NeedMore(n)) => {
                    if let Some(bytes) = req.interim() {
                        let _ = self.conn.send(&mut vec![bytes], None);
                        stale = true;
                    }
                    if n == 0 {
                        self.reject(ProtocolError::new(500, "parser made no progress"), None);
                        return true;
                    }
                    off += n.min(rest.len());
                }
                Err(err) => {
                    let line = self.server.log_requests.then(|| owned_line(&*req));
                    self.reject(err, line.flatten());
                    return true;
                }
            }
        }
        stale
    }

    /// Answers a request that failed to parse, then closes.
    #[cold]
    #[inline(never)]
    fn reject(&mut self, err: ProtocolError, line: Option<(String, String)>) {
        log::debug!("taskweave: rejecting request: {err}");
        if self.server.log_requests {
            let line = line.as_ref().map(|(m, p)| (m.as_str(), p.as_str()));
            self.conn
                .open_exchange(&self.server.log, Instant::now(), line, (0, 0));
        }
        if let Some(mut resp) = self.server.proto.reject(&err) {
            let mut chunks = Vec::new();
            resp.encode(&mut chunks);
            let sizes = resp.sizes().unwrap_or_default();
            let done = Done::Rejection {
                head: sizes.head,
                body: sizes.body,
                status: resp.status(),
            };
            let _ = self.conn.send(&mut chunks, Some(done));
        }
        self.phase = Phase::Draining(CloseReason::ProtocolError);
    }

    /// Hands a complete request to the layer above: inline, or to run on
    /// another thread; or, over the server's request rate, refuses it here.
    /// Returns whether the shared state must be looked at now: inline, when
    /// the answer is not known yet; handed to another thread, only when
    /// `more_input` follows in this read (its answer may be there already).
    fn dispatch(
        &mut self,
        mut exchange: Box<S::Exchange>,
        now: Instant,
        poller: usize,
        more_input: bool,
    ) -> bool {
        self.phase = Phase::Dispatched { leftover: None };
        self.seen_request = true;
        let sizes = exchange.request_mut().sizes().unwrap_or_default();
        let arrival = Arrival {
            at: now,
            head: sizes.head,
            body: sizes.body,
            bytes_in: std::mem::take(&mut self.unrecorded_in),
        };
        if self.server.log_requests {
            let line = exchange.request_mut().request_line();
            self.conn
                .open_exchange(&self.server.log, now, line, (sizes.head, sizes.body));
        }
        // Without a limit, this is the whole cost: one branch.
        if let Some(limit) = &self.server.rate {
            if let Err(wait) = limit.admit(poller, now) {
                return self.refuse(exchange, arrival, wait);
            }
        }
        let (conn, server) = (self.conn.clone(), self.server.clone());
        if !self.server.inline {
            // Whether the answer must wake us is settled before the handler
            // can answer, so there is nothing to look at after the hand-off
            // unless more input follows (its answer may already be there).
            let wake = more_input
                || self.read != ReadState::Drained
                || self.server.run_state() != RunState::Running;
            self.wake_asked = wake;
            self.conn.hand_over(&arrival, wake);
            exchange.run(Reply::new(conn, server, arrival, false));
            return more_input;
        }
        // Inline: the answer records the arrival under the one lock it takes.
        let reply = Reply::new(conn, server, arrival, true);
        match dispatch_inline(self.conn.id, || exchange.run(reply)) {
            Some(answer) => {
                self.queued = answer.queued.min(u32::MAX as usize) as u32;
                self.answered(answer.close);
                answer.failed
            }
            None => {
                // The series went asynchronous (or a stream began): record the
                // arrival now, unless an answer from another thread did.
                self.conn.record_arrival(&arrival);
                true
            }
        }
    }

    /// Answers a request that came over the server's request rate with the
    /// protocol's refusal (429), here on the poller, without running it; the
    /// connection stays open if the protocol keeps it alive after that
    /// answer. A protocol with no refusal closes the connection
    /// (`limit_exceeded`). `wait`: how long until a request would be
    /// admitted. Returns whether the shared state must be looked at.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, mut exchange: Box<S::Exchange>, arrival: Arrival, wait: Duration) -> bool {
        let err = ProtocolError::new(429, "over the server's request rate");
        log::debug!("taskweave: refusing a request: {err}");
        let req = exchange.request_mut();
        let Some(mut resp) = self.server.proto.refuse(req, &err, wait) else {
            exchange.recycle();
            self.unrecorded_in = self.unrecorded_in.saturating_add(arrival.bytes_in);
            self.phase = Phase::Draining(CloseReason::LimitExceeded);
            return true;
        };
        let reply = Reply::new(self.conn.clone(), self.server.clone(), arrival, true);
        let answer = dispatch_inline(self.conn.id, || reply.send(req, &mut resp));
        exchange.recycle();
        match answer {
            Some(answer) => {
                self.queued = answer.queued.min(u32::MAX as usize) as u32;
                self.answered(answer.close);
                answer.failed
            }
            None => true,
        }
    }

    /// Arms the one deadline the connection's state calls for.
    fn update_wait(&mut self, token: usize, core: &mut Core) {
        let want = match &self.phase {
            Phase::Handshake => Wait::Handshake,
            Phase::Lingering(_) => Wait::Linger,
            _ if self.queued > 0 => Wait::Send,
            Phase::Dispatched { .. } if !self.wake_asked => Wait::Answer,
            Phase::Dispatched { .. } | Phase::Closed => Wait::None,
            Phase::Reading { partial: Some(_) } => Wait::Receive,
            _ if !self.seen_request => Wait::Receive,
            Phase::Reading { partial: None } | Phase::Paused { .. } | Phase::Draining(_) => {
                Wait::KeepAlive
            }
        };
        // Each answer restarts the idle clock, and each dispatch the wait for
        // a quiet answer.
        let restart =
            std::mem::take(&mut self.served) && matches!(want, Wait::KeepAlive | Wait::Answer);
        if want == self.wait && !restart {
            return;
        }
        self.wait = want;
        let keys = &self.server.keys;
        match want {
            Wait::None => core.disarm(token),
            Wait::Handshake => core.arm(token, keys.handshake),
            Wait::Receive => core.arm(token, keys.receive),
            Wait::KeepAlive | Wait::Answer => core.arm(token, keys.keep_alive),
            Wait::Send => core.arm(token, keys.send),
            Wait::Linger => core.arm(token, keys.linger),
        }
    }
}

impl<P: Protocol, S: Service<P>> ServerConn<P, S> {
    /// The keep-alive deadline armed at a dispatch passed (`Wait::Answer`).
    /// An answer that came quietly came within `QUIET_SHARE` of it, and
    /// nothing has arrived since: the connection has been idle for its
    /// keep-alive timeout, give or take that share. With no answer yet, the
    /// answer will wake us from now on.
    #[cold]
    #[inline(never)]
    fn answer_deadline(&mut self, token: usize, core: &mut Core) -> Flow {
        match self.sync_shared(true) {
            Err(reason) => return self.close(core, reason),
            // An answer that woke us (its wake-up is still on the way) came
            // late: the connection has been idle only since then.
            Ok(true) if matches!(self.phase, Phase::Paused { leftover: None, .. }) => {
                return self.close(core, CloseReason::KeepAliveTimeout);
            }
            Ok(_) => {}
        }
        self.pump(token, core, false)
    }
}

impl<P: Protocol, S: Service<P>> Handler for ServerConn<P, S> {
    fn ready(&mut self, token: usize, core: &mut Core, ready: Ready) -> Flow {
        // Edge-triggered events carry `writable` whenever the socket is; only a
        // connection with output queued (as last seen) needs a flush.
        let flushing = ready.writable && self.queued > 0;
        // A quiet answer may have come since we last looked.
        let stale = flushing || matches!(self.phase, Phase::Dispatched { .. });
        if flushing {
            let flushed = self.conn.flush();
            if flushed.progressed && flushed.queued > 0 {
                // Progress restarts the send timeout.
                core.arm(token, self.server.keys.send);
            }
            if let Some(f) = flushed.writable {
                self.server.service.defer(f);
            }
        }
        if ready.writable && matches!(self.phase, Phase::Handshake) {
            // A handshake flight the socket did not take whole.
            if let Err(e) = self.conn.flush_transport() {
                if e.kind() != io::ErrorKind::WouldBlock {
                    return self.close(core, CloseReason::Reset);
                }
            }
        }
        self.read.on_ready(ready);
        if ready.read_closed
            && matches!(self.phase, Phase::Dispatched { .. })
            && self.conn.stream_ends_on_peer_shutdown()
        {
            // A push stream that asked for it (`end_on_peer_shutdown`): its
            // peer never half-closes (an SSE client), so its end of input
            // means it left, and it is forgotten now rather than at the next
            // heartbeat.
            let reason = match self.conn.take_error() {
                Ok(Some(_)) => CloseReason::Reset,
                _ => CloseReason::PeerClosed,
            };
            return self.close(core, reason);
        }
        self.pump(token, core, stale)
    }

    fn timeout(&mut self, token: usize, core: &mut Core) -> Flow {
        let reason = match (self.wait, &self.phase) {
            (Wait::None, _) => return Flow::Keep,
            (Wait::Answer, _) => return self.answer_deadline(token, core),
            (Wait::Handshake, _) => {
                log::debug!("taskweave: TLS handshake timed out");
                CloseReason::TlsError
            }
            (Wait::Receive, _) => CloseReason::ReceiveTimeout,
            (Wait::KeepAlive, _) => CloseReason::KeepAliveTimeout,
            (Wait::Send, _) => CloseReason::SendTimeout,
            (Wait::Linger, Phase::Lingering(reason)) => *reason,
            (Wait::Linger, _) => CloseReason::Local,
        };
        self.close(core, reason)
    }

    fn wake(&mut self, token: usize, core: &mut Core) -> Flow {
        self.pump(token, core, true)
    }

    /// Evicted to make room: only an idle keep-alive connection goes. One
    /// whose answer may have gone out quietly is looked at first; if it is
    /// still being answered, it leaves the keep-alive queue (its answer will
    /// wake us); if its answer woke us (its wake-up still on the way), it
    /// has been idle only since then, and its keep-alive restarts.
    fn cancel(&mut self, token: usize, core: &mut Core) -> Flow {
        if self.wait == Wait::Answer {
            match self.sync_shared(true) {
                Err(reason) => return self.close(core, reason),
                Ok(true)
                    if self.queued == 0
                        && matches!(self.phase, Phase::Paused { leftover: None, .. }) =>
                {
                    return self.close(core, CloseReason::Evicted);
                }
                Ok(_) => return self.pump(token, core, false),
            }
        }
        if self.wait == Wait::KeepAlive && matches!(self.phase, Phase::Reading { partial: None }) {
            return self.close(core, CloseReason::Evicted);
        }
        Flow::Keep
    }

    fn prefetch(&self) {
        self.conn.prefetch();
    }
}

impl<P: Protocol, S: Service<P>> Drop for ServerConn<P, S> {
    /// A connection dropped without closing (a panic escaped its handler)
    /// still closes and leaves its record.
    fn drop(&mut self) {
        self.finish(CloseReason::InternalError);
    }
}

/// Object-safe view of a running server, for its handle.
trait Control: Send + Sync {
    fn open(&self) -> usize;
    fn rate_limited(&self) -> u64;
    fn set_state(&self, state: RunState);
    fn wait_closed(&self, deadline: Instant) -> bool;
}

impl<P: Protocol, S: Service<P>> Control for ServerShared<P, S> {
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
    fn rate_limited(&self) -> u64 {
        self.rate.as_ref().map_or(0, |limit| limit.refused())
    }
    fn set_state(&self, state: RunState) {
        self.state.store(state as u8, Ordering::Release);
    }
    fn wait_closed(&self, deadline: Instant) -> bool {
        let mut guard = self.closed.0.lock().unwrap_or_else(|e| e.into_inner());
        while self.open.load(Ordering::Acquire) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let step = left.min(Duration::from_millis(50));
            guard = self
                .closed
                .1
                .wait_timeout(guard, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A running server. Dropping the handle leaves the server running; call
/// [`shutdown`](ServerHandle::shutdown) to stop it.
///
/// A graceful shutdown while a request is in flight: the request's answer
/// still goes out whole, then its connection closes.
///
/// ```
/// # #[path = "../protocol/doc_lines.rs"] mod lines;
/// use lines::{Line, Lines}; // the line protocol of `Protocol`'s example
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::task::{Server, ServerTask};
/// use taskweave::{timer, Series};
///
/// let (started, has_started) = mpsc::channel();
/// let server = Server::builder().serve("127.0.0.1:0", Lines, move |_task, series| {
///     let _ = started.send(());
///     series.push_back(timer(Duration::from_millis(50), |_, s: &mut Series| {
///         if let Some(task) = ServerTask::<Lines>::of_series(s) {
///             *task.response() = Line::new("worth the wait");
///         }
///     }));
/// })?;
///
/// let mut conn = TcpStream::connect(server.local_addr())?;
/// conn.write_all(b"hello?\n")?;
/// has_started.recv()?;
/// assert_eq!(server.open_connections(), 1);
///
/// assert!(server.shutdown(Duration::from_secs(5))); // all done within the grace
/// let mut answer = String::new();
/// conn.read_to_string(&mut answer)?; // the answer, then the close
/// assert_eq!(answer, "worth the wait\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ServerHandle {
    local: SocketAddr,
    control: Arc<dyn Control>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local", &self.local)
            .field("open", &self.control.open())
            .finish()
    }
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.control.open()
    }

    /// Requests refused so far because they came over the server's request
    /// rate (`max_rps`); 0 without a limit. To read it from inside the
    /// server (a `/metrics` handler), take the builder's counter instead.
    pub fn requests_rate_limited(&self) -> u64 {
        self.control.rate_limited()
    }

    /// Graceful shutdown: stops accepting, closes idle connections, lets the
    /// answers in flight finish and go out whole within `grace` (an open
    /// stream is ended: HTTP sends its last chunk), then closes what is left.
    /// Returns whether everything finished within `grace`. It blocks until
    /// then: call it from a thread of your own, not from a callback.
    pub fn shutdown(self, grace: Duration) -> bool {
        self.control.set_state(RunState::Draining);
        poller::wake_all();
        let graceful = self.control.wait_closed(Instant::now() + grace);
        if !graceful {
            self.control.set_state(RunState::Stopping);
            poller::wake_all();
            self.control
                .wait_closed(Instant::now() + Duration::from_secs(5));
        }
        graceful
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, Progress, ProtocolError};
    use bytes::Bytes;

    /// A protocol of empty messages, and a service that never runs them:
    /// what a server connection's size does not depend on.
    struct Nothing;
    struct NoService;
    struct NoExchange(());

    impl Service<Nothing> for NoService {
        type Exchange = NoExchange;
        fn receive(&self, _: &Nothing) -> Box<NoExchange> {
            Box::new(NoExchange(()))
        }
        fn inline(&self) -> bool {
            true
        }
        fn defer(&self, f: Box<dyn FnOnce() + Send>) {
            f()
        }
    }

    impl Exchange<Nothing, NoService> for NoExchange {
        fn request_mut(&mut self) -> &mut () {
            &mut self.0
        }
        fn run(self: Box<Self>, _: Reply<Nothing, NoService>) {}
    }

    impl Message for () {
        fn append(&mut self, _: &[u8]) -> Result<Progress, ProtocolError> {
            Ok(Progress::Complete(0))
        }
        fn encode(&mut self, _: &mut Vec<Bytes>) {}
    }

    impl Protocol for Nothing {
        type Request = ();
        type Response = ();
        fn name(&self) -> &'static str {
            "nothing"
        }
        fn new_request(&self) {}
        fn new_response(&self, _: &()) {}
    }

    /// Idle connections are budgeted at 0.4 KiB of process memory in all; these
    /// are the per-connection heap objects (plus a 32-byte slab slot and a
    /// 24-byte deadline link).
    #[test]
    fn per_connection_structures_stay_small() {
        let conn = std::mem::size_of::<Conn>();
        let handler = std::mem::size_of::<ServerConn<Nothing, NoService>>();
        eprintln!(
            "Conn {conn} B, ServerConn {handler} B, ConnStats {} B",
            std::mem::size_of::<ConnStats>()
        );
        // Sizes that keep each allocation in a smaller malloc size class.
        // glibc rounds (size + 8) up to 16: 216 B is a 224 B chunk, 56 B a 64 B one.
        // The `tls` feature's transport is a pointer wide, not a descriptor:
        // 16 bytes more, one size class up (docs/architecture.md, "TLS").
        let limit = if cfg!(feature = "tls") { 232 } else { 216 };
        assert!(conn + 16 <= limit, "Arc<Conn> is {} bytes", conn + 16);
        assert!(handler <= 56, "ServerConn is {handler} bytes");
    }
}
