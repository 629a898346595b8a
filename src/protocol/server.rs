//! A server for any [`Protocol`]: accept, parse, `process`, reply, keep alive.
//!
//! Each accepted connection gets a [`ServerConn`] on the poller that accepted it.
//! A complete request becomes a [`ServerTask`] at the head of a new series; the
//! user's `process` runs (on a handler thread, or inline on the poller), may push
//! more tasks, and the reply is written when the series ends, as in Workflow. One
//! request per connection is processed at a time; pipelined requests wait, already
//! read, and are answered in order. While a reply is being processed or the
//! connection's output is above the high watermark, the connection does not read,
//! so a peer that pipelines and never reads cannot grow our memory.

use super::{Message, Progress, Protocol, ProtocolError};
use crate::comm::{
    inline_dispatch, take_inline_reply, Acceptor, Arrival, Conn, ConnConfig, Done, Listener,
};
use crate::metrics::{AccessLog, CloseReason, ConnStats, NullLog, Side};
use crate::poller::{self, Core, Flow, Handler, QueueKey, Ready, Signal};
use crate::task::{handlers_inline, spawn_handler, Finisher, Series, Step, Task};
use bytes::Bytes;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes read but not yet counted in the stats past which they are counted
/// at once (the count is a u32).
const UNRECORDED_MAX: u32 = 1 << 30;

/// How long a closing connection keeps reading (and discarding) after its last
/// reply, so unread input does not turn our close into a reset that destroys the
/// reply before the peer reads it.
const LINGER: Duration = Duration::from_secs(1);

static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);

/// Entry point for building servers.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with default limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Limits, timeouts and the access log of a server.
pub struct ServerBuilder {
    config: ConnConfig,
    max_connections: usize,
    backlog: i32,
    log: Arc<dyn AccessLog>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            config: ConnConfig::default(),
            max_connections: 10_000,
            backlog: 1024,
            log: Arc::new(NullLog),
        }
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl ServerBuilder {
    /// Most connections open at once; at the limit the oldest idle keep-alive
    /// connection is evicted, and if there is none the new one is refused.
    /// Default 10,000.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
    /// How long an idle keep-alive connection stays open. Default 60 s.
    pub fn keep_alive_timeout(mut self, d: Duration) -> Self {
        self.config.keep_alive_timeout = d;
        self
    }
    /// How long a request may take to arrive, from its first byte (and from
    /// accept to the first request). Default 30 s.
    pub fn receive_timeout(mut self, d: Duration) -> Self {
        self.config.receive_timeout = d;
        self
    }
    /// How long queued output may wait without progress. Default 30 s.
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.config.send_timeout = d;
        self
    }
    /// Output watermarks in bytes: above `high` the connection stops reading;
    /// below `low` it reads again. Defaults 64 KiB / 256 KiB.
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.config.low_watermark = low.min(high);
        self.config.high_watermark = high;
        self
    }
    /// Queued output past which a reply fails and the connection closes.
    /// Default 16 MiB.
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.config.max_queued = bytes;
        self
    }
    /// Replaces all connection settings at once.
    pub fn conn_config(mut self, config: ConnConfig) -> Self {
        self.config = config;
        self
    }
    /// The listen backlog. Default 1024.
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }
    /// Where a record goes when each connection closes. Default: nowhere.
    pub fn access_log(mut self, log: impl AccessLog) -> Self {
        self.log = Arc::new(log);
        self
    }
    /// The connection settings as configured.
    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    /// Starts serving `proto` on `addr`, one listener per poller. `process` fills
    /// the response of each request; it is written when the task's series ends.
    pub fn serve<P, F>(self, addr: SocketAddr, proto: P, process: F) -> io::Result<ServerHandle>
    where
        P: Protocol,
        F: Fn(&mut ServerTask<P>, &mut Series) + Send + Sync + 'static,
    {
        crate::sys::reserve_spare_fd();
        let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
        let key = |dur, kind| QueueKey { dur, group, kind };
        let shared = Arc::new(ServerShared {
            group,
            keys: Keys {
                keep_alive: key(self.config.keep_alive_timeout, 0),
                receive: key(self.config.receive_timeout, 1),
                send: key(self.config.send_timeout, 2),
                linger: key(LINGER, 3),
            },
            proto,
            process: Box::new(process),
            config: self.config,
            max_connections: self.max_connections,
            open: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            closed: (Mutex::new(()), Condvar::new()),
            log: self.log,
        });
        let first = crate::sys::reuseport_listener(addr, self.backlog)?;
        let local = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..poller::count() {
            listeners.push(crate::sys::reuseport_listener(local, self.backlog)?);
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
}

struct Keys {
    keep_alive: QueueKey,
    receive: QueueKey,
    send: QueueKey,
    linger: QueueKey,
}

type Process<P> = Box<dyn Fn(&mut ServerTask<P>, &mut Series) + Send + Sync>;

struct ServerShared<P: Protocol> {
    group: u32,
    keys: Keys,
    proto: P,
    process: Process<P>,
    config: ConnConfig,
    max_connections: usize,
    open: AtomicUsize,
    shutting_down: AtomicBool,
    closed: (Mutex<()>, Condvar),
    log: Arc<dyn AccessLog>,
}

impl<P: Protocol> ServerShared<P> {
    fn on_closed(&self, stats: &ConnStats) {
        self.log.record(stats);
        self.open.fetch_sub(1, Ordering::AcqRel);
        let _guard = self.closed.0.lock();
        self.closed.1.notify_all();
    }
}

impl<P: Protocol> Acceptor for ServerShared<P> {
    fn group(&self) -> u32 {
        self.group
    }

    fn try_admit(&self) -> bool {
        if self.shutting_down.load(Ordering::Relaxed) {
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
        let _ = stream.set_nodelay(true);
        let id = poller::next_id();
        let stats = ConnStats::new(id, Side::Server, self.proto.name(), peer);
        let index = core.index();
        let server = self.clone();
        let res = core.insert(id, move |token, registry| {
            let fd = stream.as_raw_fd();
            registry.register(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let conn = Arc::new(Conn::new(stream, index, token, id, stats, &server.config));
            Ok(Box::new(ServerConn {
                conn,
                server,
                req: None,
                leftover: None,
                busy: false,
                seen_request: false,
                read: ReadState::Ready,
                closing: None,
                lingering: false,
                queued: 0,
                served: false,
                unrecorded_in: 0,
                throttled: false,
                wait: Wait::None,
            }))
        });
        match res {
            Ok(token) => {
                self.log.opened();
                core.arm(token, self.keys.receive);
                core.call(token, |h, core| h.wake(token, core));
            }
            Err(e) => {
                log::warn!("taskweave: cannot register connection from {peer}: {e}");
                let mut stats = ConnStats::new(id, Side::Server, self.proto.name(), peer);
                stats.close(CloseReason::Reset, None);
                self.log.opened();
                self.on_closed(&stats);
            }
        }
    }

    fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        let mut stats = ConnStats::new(poller::next_id(), Side::Server, self.proto.name(), peer);
        stats.close(CloseReason::LimitExceeded, stream.local_addr().ok());
        self.log.opened();
        self.log.record(&stats);
    }
}

/// What a server connection knows about unread input.
///
/// Edge-triggered readiness asks for reading until `WouldBlock`, which costs a
/// `recv` per request that finds nothing. A read that returns less than it
/// asked for has emptied the receive queue as it stood, and any byte that
/// arrives later raises a new edge, so the connection stops there instead. The
/// exception is a peer that has shut its side: its end-of-file raised no edge
/// of its own after our read, so that connection reads on until it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Nothing to read until the next readiness event.
    Drained,
    /// Read until a short read or `WouldBlock`.
    Ready,
    /// The peer shut its side: read until end-of-file or `WouldBlock`.
    ToEnd,
}

/// What the connection's single deadline is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    Receive,
    KeepAlive,
    Send,
    Linger,
}

/// The poller side of one server connection.
struct ServerConn<P: Protocol> {
    conn: Arc<Conn>,
    server: Arc<ServerShared<P>>,
    /// The task of a request partly received: allocated at its first byte,
    /// so the request is parsed in place and runs without another allocation.
    req: Option<Box<ServerTask<P>>>,
    /// Bytes read past a complete request while it was being processed.
    leftover: Option<Box<[u8]>>,
    /// A request is being processed; its reply has not been written yet.
    busy: bool,
    seen_request: bool,
    /// Whether the socket may hold unread bytes.
    read: ReadState,
    /// Close once the reply in flight is written and output is flushed.
    closing: Option<CloseReason>,
    /// Write side shut, discarding input until the peer closes.
    lingering: bool,
    /// Bytes queued unwritten when the shared state was last looked at (the
    /// queue is capped at `max_queued`, a u32).
    queued: u32,
    /// A reply went out since the deadline was last armed: an inline exchange
    /// goes idle -> busy -> idle within one pump, and the keep-alive deadline
    /// must still restart.
    served: bool,
    /// Bytes read but not yet added to the stats (at most a few reads' worth).
    unrecorded_in: u32,
    /// Not reading: output went above the high watermark and has not yet
    /// drained below the low one.
    throttled: bool,
    wait: Wait,
}

impl<P: Protocol> ServerConn<P> {
    fn close(&mut self, core: &mut Core, reason: CloseReason) -> Flow {
        let unrecorded = std::mem::take(&mut self.unrecorded_in) as usize;
        self.conn.lock().stats.add_in(unrecorded);
        let fd = self.conn.stream().as_raw_fd();
        let _ = core.registry().deregister(&mut SourceFd(&fd));
        let stats = self.conn.close(reason);
        self.server.on_closed(&stats);
        Flow::Remove
    }

    /// Picks up what writers left in the shared state: a write failure, a
    /// finished reply, and the bytes still queued (into `self.queued`).
    fn sync_shared(&mut self) -> Result<(), CloseReason> {
        let unrecorded = std::mem::take(&mut self.unrecorded_in) as usize;
        let mut st = self.conn.lock();
        st.stats.add_in(unrecorded);
        if let Some(reason) = st.broken {
            return Err(reason);
        }
        st.pause_unseen = false;
        let replied = std::mem::take(&mut st.replied);
        let close_after = st.close_after;
        let queued = st.queued().min(u32::MAX as usize) as u32;
        drop(st);
        self.queued = queued;
        if replied {
            self.replied(close_after);
        }
        Ok(())
    }

    /// The reply in flight went out (or was queued).
    fn replied(&mut self, close_after: bool) {
        self.busy = false;
        self.served = true;
        if close_after && self.closing.is_none() {
            self.closing = Some(if self.server.shutting_down.load(Ordering::Relaxed) {
                CloseReason::ServerShutdown
            } else {
                CloseReason::Local
            });
        }
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
        // writable event), a reply (ours, inline, which reports back directly,
        // or another thread's, which wakes us) or a failed write: it is looked
        // at only then, not on every event or read.
        let mut stale = stale;
        loop {
            if std::mem::take(&mut stale) {
                if let Err(reason) = self.sync_shared() {
                    return self.close(core, reason);
                }
            }
            let queued = self.queued as usize;
            if let Some(reason) = self.closing {
                if self.busy || queued > 0 {
                    return Flow::Keep;
                }
                if !self.lingering {
                    if matches!(reason, CloseReason::Evicted | CloseReason::KeepAliveTimeout) {
                        return self.close(core, reason);
                    }
                    self.conn.shutdown_write();
                    self.lingering = true;
                }
                return self.discard_input(core, scratch, reason);
            }
            // Above the high watermark stop reading; start again only once the
            // queue has drained below the low one.
            if queued > self.conn.high_watermark() {
                self.throttled = true;
            } else if queued < self.server.config.low_watermark {
                self.throttled = false;
            }
            if self.busy || self.throttled {
                return Flow::Keep;
            }
            // A shutdown signal may have found us busy; once idle, close.
            if self.req.is_none()
                && self.leftover.is_none()
                && self.server.shutting_down.load(Ordering::Relaxed)
            {
                return self.close(core, CloseReason::ServerShutdown);
            }
            if let Some(buf) = self.leftover.take() {
                stale = self.feed(&buf, core.now());
                continue;
            }
            if self.read == ReadState::Drained {
                return Flow::Keep;
            }
            match self.conn.read(scratch) {
                Ok(0) => return self.close(core, CloseReason::PeerClosed),
                Ok(n) => {
                    if n < scratch.len() && self.read == ReadState::Ready {
                        self.read = ReadState::Drained;
                    }
                    // Counted under the next lock we take anyway (the next
                    // request's arrival), or, before the count grows large,
                    // in a look at the shared state.
                    self.unrecorded_in += n as u32;
                    stale = self.feed(&scratch[..n], core.now())
                        || self.unrecorded_in >= UNRECORDED_MAX;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read = ReadState::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(core, CloseReason::Reset),
            }
        }
    }

    /// Lingering close: read and drop whatever the peer still sends until it
    /// closes or the linger deadline passes.
    fn discard_input(&mut self, core: &mut Core, scratch: &mut [u8], reason: CloseReason) -> Flow {
        loop {
            match self.conn.read(scratch) {
                Ok(0) => return self.close(core, reason),
                Ok(n) => self.conn.lock().stats.add_in(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(core, reason),
            }
        }
    }

    /// Keeps bytes read past a request that is being processed.
    fn stash(&mut self, rest: &[u8]) {
        self.leftover = Some(match self.leftover.take() {
            None => rest.into(),
            Some(old) => [&old[..], rest].concat().into(),
        });
    }

    /// Parses `data`, dispatching each complete request. Returns whether the
    /// shared state may have changed since it was last looked at (a request
    /// was dispatched, or an interim or error reply sent).
    fn feed(&mut self, data: &[u8], now: Instant) -> bool {
        let mut off = 0;
        let mut stale = false;
        while off < data.len() {
            if self.closing.is_some() {
                return stale;
            }
            if self.busy {
                self.stash(&data[off..]);
                return stale;
            }
            let (server, conn) = (&self.server, &self.conn);
            let task = self
                .req
                .get_or_insert_with(|| ServerTask::receiving(server, conn, now));
            let req = &mut task.req;
            let rest = &data[off..];
            match req.append(rest) {
                Ok(Progress::Complete(n)) => {
                    off += n.min(rest.len());
                    if let Some(req) = self.req.take() {
                        stale |= self.dispatch(req, now);
                        // A reply from another thread may be there already: look,
                        // so pipelined requests in this buffer need no copy.
                        if stale && off < data.len() && self.sync_shared().is_ok() {
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
                        self.reject(ProtocolError::new(500, "parser made no progress"));
                        return true;
                    }
                    off += n.min(rest.len());
                }
                Err(err) => {
                    self.reject(err);
                    return true;
                }
            }
        }
        stale
    }

    /// Answers a request that failed to parse, then closes.
    fn reject(&mut self, err: ProtocolError) {
        log::debug!("taskweave: rejecting request: {err}");
        self.req = None;
        self.leftover = None;
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
        self.closing = Some(CloseReason::ProtocolError);
    }

    /// Runs the request's series: inline, or on a handler thread. Returns
    /// whether the shared state must be looked at (the reply is not known yet).
    fn dispatch(&mut self, mut task: Box<ServerTask<P>>, now: Instant) -> bool {
        self.busy = true;
        self.seen_request = true;
        self.server.proto.reuse_response(&task.req, &mut task.resp);
        task.received = now;
        let bytes_in = std::mem::take(&mut self.unrecorded_in);
        let arrival = task.arrival(bytes_in);
        if !handlers_inline() {
            arrival.record(&mut self.conn.lock().stats);
            spawn_handler(move || Series::start_boxed(task));
            return true;
        }
        // Inline: the reply records the arrival under the one lock it takes.
        task.unrecorded_in = Some(bytes_in);
        let task: Box<dyn Task> = task;
        inline_dispatch(self.conn.id, || Series::start_boxed(task));
        if let Some(reply) = take_inline_reply(self.conn.id) {
            self.queued = reply.queued.min(u32::MAX as usize) as u32;
            self.replied(reply.close_after);
            return reply.failed;
        }
        // The series went asynchronous: record the arrival now, unless a reply
        // from another thread has done it already.
        let mut st = self.conn.lock();
        if !st.replied {
            arrival.record(&mut st.stats);
            st.request_recorded = true;
        }
        true
    }

    /// Arms the one deadline the connection's state calls for.
    fn update_wait(&mut self, token: usize, core: &mut Core) {
        let want = if self.lingering {
            Wait::Linger
        } else if self.queued > 0 {
            Wait::Send
        } else if self.busy {
            Wait::None
        } else if self.req.is_some() || !self.seen_request {
            Wait::Receive
        } else {
            Wait::KeepAlive
        };
        let restart = std::mem::take(&mut self.served) && want == Wait::KeepAlive;
        if want == self.wait && !restart {
            return;
        }
        self.wait = want;
        let keys = &self.server.keys;
        match want {
            Wait::None => core.disarm(token),
            Wait::Receive => core.arm(token, keys.receive),
            Wait::KeepAlive => core.arm(token, keys.keep_alive),
            Wait::Send => core.arm(token, keys.send),
            Wait::Linger => core.arm(token, keys.linger),
        }
    }
}

impl<P: Protocol> Handler for ServerConn<P> {
    fn ready(&mut self, token: usize, core: &mut Core, ready: Ready) -> Flow {
        // Edge-triggered events carry `writable` whenever the socket is; only a
        // connection with output queued (as last seen) needs a flush.
        let flushing = ready.writable && self.queued > 0;
        if flushing {
            let before = self.conn.queued();
            let after = self.conn.flush();
            if after > 0 && after < before {
                // Progress restarts the send timeout.
                core.arm(token, self.server.keys.send);
            }
        }
        if ready.read_closed {
            self.read = ReadState::ToEnd;
        } else if ready.readable && self.read == ReadState::Drained {
            self.read = ReadState::Ready;
        }
        self.pump(token, core, flushing)
    }

    fn timeout(&mut self, _token: usize, core: &mut Core) -> Flow {
        let reason = match self.wait {
            Wait::None => return Flow::Keep,
            Wait::Receive => CloseReason::ReceiveTimeout,
            Wait::KeepAlive => CloseReason::KeepAliveTimeout,
            Wait::Send => CloseReason::SendTimeout,
            Wait::Linger => self.closing.unwrap_or(CloseReason::Local),
        };
        self.close(core, reason)
    }

    fn wake(&mut self, token: usize, core: &mut Core) -> Flow {
        self.pump(token, core, true)
    }

    fn signal(&mut self, _token: usize, core: &mut Core, signal: Signal) -> Flow {
        let group = self.server.group;
        match signal {
            Signal::Evict if !self.busy => self.close(core, CloseReason::Evicted),
            // A request in flight (or partly received) finishes: its reply goes
            // out without keep-alive and the connection closes after it.
            Signal::Shutdown(g) if g == group && !self.busy && self.req.is_none() => {
                self.close(core, CloseReason::ServerShutdown)
            }
            Signal::ShutdownNow(g) if g == group => self.close(core, CloseReason::ServerShutdown),
            _ => Flow::Keep,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn prefetch(&self) {
        self.conn.prefetch();
    }
}

/// One request being served: `process` reads the request and fills the response,
/// which is written when the task's series ends.
pub struct ServerTask<P: Protocol> {
    req: P::Request,
    /// Made ready for the request when it is complete (it may depend on it).
    resp: P::Response,
    /// The connection and server, from the request's first byte until its
    /// reply is written; a task kept for reuse holds neither.
    conn: Option<Arc<Conn>>,
    server: Option<Arc<ServerShared<P>>>,
    received: Instant,
    /// Some while the request's arrival is the reply's to record (inline
    /// dispatch): the bytes read for it and not yet counted.
    unrecorded_in: Option<u32>,
}

impl<P: Protocol> ServerTask<P> {
    /// The request as it arrived, with `bytes_in` read for it not yet counted.
    fn arrival(&self, bytes_in: u32) -> Arrival {
        let sizes = self.req.sizes().unwrap_or_default();
        Arrival {
            at: self.received,
            head: sizes.head,
            body: sizes.body,
            bytes_in,
        }
    }

    /// The task for a request whose first byte just arrived: the one this
    /// thread kept from its last reply, or a new one.
    fn receiving(server: &Arc<ServerShared<P>>, conn: &Arc<Conn>, now: Instant) -> Box<Self> {
        let mut task = take_spare::<Self>().unwrap_or_else(|| {
            let req = server.proto.new_request();
            let resp = server.proto.new_response(&req);
            Box::new(ServerTask {
                req,
                resp,
                conn: None,
                server: None,
                received: now,
                unrecorded_in: None,
            })
        });
        task.conn = Some(conn.clone());
        task.server = Some(server.clone());
        task.received = now;
        task.unrecorded_in = None;
        task
    }

    /// The request.
    pub fn request(&self) -> &P::Request {
        &self.req
    }
    /// The request, mutably (to take its body without copying).
    pub fn request_mut(&mut self) -> &mut P::Request {
        &mut self.req
    }
    /// The response to fill.
    pub fn response(&mut self) -> &mut P::Response {
        &mut self.resp
    }
    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref()?.stream().peer_addr().ok()
    }
    /// The connection's id, as in its access-log record.
    pub fn conn_id(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.id)
    }
    /// When the request was complete.
    pub fn received_at(&self) -> Instant {
        self.received
    }
    /// The server task waiting to reply at the end of `series`, for callbacks of
    /// tasks that `process` pushed (a proxy fills the response this way).
    pub fn of_series(series: &mut Series) -> Option<&mut ServerTask<P>> {
        series.finisher_mut::<ServerTask<P>>()
    }
}

impl<P: Protocol> Task for ServerTask<P> {
    fn run(mut self: Box<Self>, mut series: Box<Series>) -> Step {
        if let Some(server) = self.server.take() {
            (server.process)(&mut self, &mut series);
            self.server = Some(server);
        }
        series.set_finisher(self);
        Step::Next(series)
    }
}

/// A reply's pieces: the head bytes, then chunks.
#[derive(Default)]
struct ReplyBuf {
    head: Vec<u8>,
    chunks: Vec<Bytes>,
}

thread_local! {
    /// The last finished task, kept for the next request on this thread: it
    /// saves allocating, moving and freeing a task of about a kilobyte, and
    /// its request and response keep their buffers. Typed `Any` because a
    /// thread may serve several protocols; it holds no connection or server.
    static SPARE_TASK: std::cell::RefCell<Option<Box<dyn Any>>> =
        const { std::cell::RefCell::new(None) };
}

/// Keeps `task` (emptied of its connection and server) for reuse.
fn keep_spare(task: Box<dyn Any>) {
    let _ = SPARE_TASK.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            *spare = Some(task);
        }
    });
}

/// The task kept by [`keep_spare`], if it is a `T`.
fn take_spare<T: Any>() -> Option<Box<T>> {
    let spare = SPARE_TASK
        .try_with(|spare| spare.try_borrow_mut().ok()?.take())
        .ok()??;
    spare.downcast::<T>().ok()
}

/// Head buffers above this are not kept for the next reply.
const REPLY_BUF_KEEP: usize = 16 * 1024;

thread_local! {
    /// Reused for every reply encoded on this thread, so a small reply is
    /// written without an allocation.
    static REPLY_BUF: std::cell::RefCell<ReplyBuf> = std::cell::RefCell::new(ReplyBuf::default());
}

impl<P: Protocol> Finisher for ServerTask<P> {
    fn finish(mut self: Box<Self>, series: Box<Series>) {
        series.recycle();
        let (Some(server), Some(conn)) = (self.server.take(), self.conn.take()) else {
            return;
        };
        let arrival = self.unrecorded_in.take().map(|n| self.arrival(n));
        let ServerTask { req, resp, .. } = &mut *self;
        let keep_alive =
            server.proto.keep_alive(req, resp) && !server.shutting_down.load(Ordering::Relaxed);
        let mut buf = REPLY_BUF
            .try_with(|b| b.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        resp.encode_with_head(&mut buf.head, &mut buf.chunks);
        let sizes = resp.sizes().unwrap_or_default();
        let done = Done::Reply {
            keep_alive,
            head: sizes.head,
            body: sizes.body,
            status: resp.status(),
        };
        let _ = conn.reply(&buf.head, &mut buf.chunks, done, arrival);
        buf.head.clear();
        buf.chunks.clear();
        if buf.head.capacity() <= REPLY_BUF_KEEP {
            let _ = REPLY_BUF.try_with(|b| {
                if let Ok(mut b) = b.try_borrow_mut() {
                    *b = buf;
                }
            });
        }
        // Inline, the next request on this poller thread takes this task; a
        // handler thread would only keep it from the poller.
        if handlers_inline() {
            server.proto.reuse_request(&mut self.req);
            keep_spare(self);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Object-safe view of a running server, for its handle.
trait Control: Send + Sync {
    fn group(&self) -> u32;
    fn open(&self) -> usize;
    fn begin_shutdown(&self);
    fn wait_closed(&self, deadline: Instant) -> bool;
}

impl<P: Protocol> Control for ServerShared<P> {
    fn group(&self) -> u32 {
        self.group
    }
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
    fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
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

    /// Graceful shutdown: stops accepting, closes idle connections, lets requests
    /// in flight finish within `grace`, then closes what is left. Returns whether
    /// everything finished within `grace`.
    pub fn shutdown(self, grace: Duration) -> bool {
        self.control.begin_shutdown();
        let group = self.control.group();
        for p in 0..poller::count() {
            poller::run_on(p, move |core| core.broadcast(Signal::Shutdown(group)));
        }
        let graceful = self.control.wait_closed(Instant::now() + grace);
        if !graceful {
            for p in 0..poller::count() {
                poller::run_on(p, move |core| core.broadcast(Signal::ShutdownNow(group)));
            }
            self.control
                .wait_closed(Instant::now() + Duration::from_secs(5));
        }
        graceful
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle connections are budgeted at 0.4 KiB of process memory in all; these
    /// are the per-connection heap objects (plus a 32-byte slab slot and a
    /// 24-byte deadline link).
    #[test]
    fn per_connection_structures_stay_small() {
        let conn = std::mem::size_of::<Conn>();
        let handler = std::mem::size_of::<ServerConn<crate::http::ServerProto>>();
        eprintln!(
            "Conn {conn} B, ServerConn {handler} B, ConnStats {} B",
            std::mem::size_of::<ConnStats>()
        );
        // Sizes that keep each allocation in a smaller malloc size class.
        // glibc rounds (size + 8) up to 16: 216 B is a 224 B chunk, 56 B a 64 B one.
        assert!(conn + 16 <= 216, "Arc<Conn> is {} bytes", conn + 16);
        assert!(handler <= 56, "ServerConn is {handler} bytes");
    }

    /// Each request allocates its task once; above 1,032 bytes glibc serves it
    /// from the slow path instead of the per-thread cache.
    #[test]
    fn a_request_task_stays_in_the_fast_malloc_path() {
        let task = std::mem::size_of::<ServerTask<crate::http::ServerProto>>();
        assert!(task <= 1032, "ServerTask is {task} bytes");
    }
}
