//! The client connection engine: connect, write requests, match replies in
//! order, route pushes, and fail exactly what a broken connection carried.
//!
//! A connection carries a FIFO of requests in flight, as many as the
//! protocol's `max_in_flight` allows (pipelining); replies are matched to
//! requests in order, several per read if they arrived together. A message
//! the protocol calls a push goes to the connection's push handler, never to
//! a request. When a connection fails or times out, every request in flight
//! on it fails with that error; none is sent again unless the protocol says
//! it may be (`Protocol::may_retry`), the connection was an idle pooled one,
//! and no byte arrived on it since: the peer closed it as we picked it.

use super::conn::{Conn, Done, SendError, SendState};
use super::dns;
use super::pool::{self, PoolKey};
use super::server::ReadState;
use super::service::{Job, PushHandler};
use super::tls_config::is_tls_error;
use super::transport::Transport;
use super::ClientConfig;
use crate::error::Error;
use crate::metrics::{CloseReason, ConnStats, RequestRecord, Side, Text};
use crate::poller::{self, Core, Flow, Handler, QueueKey, Ready};
use crate::protocol::{Message, Progress, Protocol};
use bytes::Bytes;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a client request goes: a host (a name or an IP address) and a port.
///
/// ```
/// use taskweave::comm::Target;
///
/// let t: Target = "localhost:6379".parse()?;
/// assert_eq!((t.host().as_ref(), t.port()), ("localhost", 6379));
/// let t: Target = "[::1]:80".parse()?;
/// assert_eq!(t.host(), "::1");
/// let t = Target::from(([127, 0, 0, 1], 8080));
/// assert_eq!(t.to_string(), "127.0.0.1:8080");
/// # Ok::<(), taskweave::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    host: Host,
    port: u16,
    /// Spoken to over TLS: a pool of its own.
    tls: bool,
}

/// A target's host: an address needs no lookup (and no formatting to build).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    Ip(IpAddr),
    Name(Arc<str>),
}

impl Target {
    /// `host` (a name, or an IP address, with or without IPv6 brackets) and
    /// `port`.
    pub fn new(host: &str, port: u16) -> Target {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(bare.into()),
        };
        Target {
            host,
            port,
            tls: false,
        }
    }
    /// The same host and port, spoken to over TLS (`https://`). TLS and
    /// plain targets never share a pool, even on one port.
    ///
    /// ```
    /// use taskweave::comm::Target;
    /// let t = Target::new("example.com", 443).tls();
    /// assert!(t.is_tls());
    /// assert_ne!(t, Target::new("example.com", 443));
    /// ```
    pub fn tls(mut self) -> Target {
        self.tls = true;
        self
    }
    /// Whether the target is spoken to over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    /// The host: the name, or the address written out.
    pub fn host(&self) -> Cow<'_, str> {
        match &self.host {
            Host::Ip(ip) => Cow::Owned(ip.to_string()),
            Host::Name(name) => Cow::Borrowed(name),
        }
    }
    /// The address, when the host is one (no lookup needed).
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = Error;
    /// `host:port`, with an IPv6 host in brackets.
    fn from_str(s: &str) -> Result<Target, Error> {
        let bad = || Error::InvalidRequest(format!("not a host:port target: {s:?}"));
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return Err(bad());
        }
        Ok(Target::new(host, port))
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
            tls: false,
        }
    }
}

impl From<(IpAddr, u16)> for Target {
    fn from((ip, port): (IpAddr, u16)) -> Target {
        Target::from(SocketAddr::new(ip, port))
    }
}

impl From<([u8; 4], u16)> for Target {
    fn from((ip, port): ([u8; 4], u16)) -> Target {
        Target::from(SocketAddr::from((ip, port)))
    }
}

impl From<(&str, u16)> for Target {
    fn from((host, port): (&str, u16)) -> Target {
        Target::new(host, port)
    }
}

impl From<(String, u16)> for Target {
    fn from((host, port): (String, u16)) -> Target {
        Target::new(&host, port)
    }
}

/// Where a client request's time went, like curl's `-w` phases. Every phase is
/// measured from the moment the request was submitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Name resolution; `None` when no lookup was made (an address, a cached
    /// name, or a pooled connection).
    pub dns: Option<Duration>,
    /// The TCP connect itself; `None` on a reused connection.
    pub connect: Option<Duration>,
    /// The TLS handshake after the connect (curl's `time_appconnect` minus
    /// its `time_connect`); `None` without TLS and on a reused connection.
    pub tls: Option<Duration>,
    /// Until the first byte of the reply arrived.
    pub first_byte: Option<Duration>,
    /// Until the reply was complete or the request failed.
    pub total: Duration,
}

/// What a request's connection reports with its outcome.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JobInfo {
    pub timings: Timings,
    /// It went out on a connection that had served an earlier request.
    pub reused: bool,
    /// How many times it was sent again on a new connection.
    pub retries: u32,
    /// The address it went to.
    pub peer: Option<SocketAddr>,
    /// The connection it went out on, last.
    pub conn_id: Option<u64>,
    /// Its place on that connection (1 for the first request).
    pub index: u32,
}

/// A request on its way: the job (which carries its own protocol and
/// info), when it was submitted, and whether it went to an idle pooled
/// connection. Small, since the pool and the connection move it around.
pub(super) struct InFlight<P: Protocol> {
    job: Box<dyn Job<P>>,
    started: Instant,
    /// Handed to a connection that sat idle in the pool.
    from_idle: bool,
}

impl<P: Protocol> InFlight<P> {
    pub(super) fn new(job: Box<dyn Job<P>>, started: Instant) -> Self {
        InFlight {
            job,
            started,
            from_idle: false,
        }
    }

    /// Marks whether it was handed to a pooled idle connection.
    pub(super) fn reused(mut self, from_idle: bool) -> Self {
        self.from_idle = from_idle;
        self
    }

    fn info(&mut self) -> &mut JobInfo {
        self.job.info_mut()
    }

    fn finish(mut self, result: Result<P::Response, Error>) {
        self.info().timings.total = self.started.elapsed();
        if self.job.config().log_requests {
            self.log_request(&result);
        }
        let job = self.job;
        poller::contain("a client task's completion", move || job.complete(result));
    }

    /// Hands the request's record to its config's log.
    fn log_request(&self, result: &Result<P::Response, Error>) {
        let job = &*self.job;
        let (info, req) = (job.info(), job.request());
        let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut rec = RequestRecord::starting_at(Side::Client, job.proto().name(), self.started);
        if let Some((method, path)) = req.request_line() {
            rec.method = Text::new(method);
            rec.path = Text::new(path);
        }
        rec.conn_id = info.conn_id;
        rec.index = info.index;
        rec.peer = info.peer;
        rec.upstream = Some(Text::new(&job.target().to_string()));
        rec.reused = Some(info.reused);
        rec.dns_us = info.timings.dns.map(micros);
        rec.connect_us = info.timings.connect.map(micros);
        rec.first_byte_us = info.timings.first_byte.map(micros);
        rec.total_us = micros(info.timings.total);
        if info.conn_id.is_some() {
            let sizes = req.sizes().unwrap_or_default();
            rec.req_header_bytes = Some(sizes.head);
            rec.req_body_bytes = Some(sizes.body);
        }
        match result {
            Ok(resp) => {
                let sizes = resp.sizes().unwrap_or_default();
                rec.status = resp.status();
                rec.resp_header_bytes = Some(sizes.head);
                rec.resp_body_bytes = Some(sizes.body);
            }
            Err(e) => rec.error = Some(e.name()),
        }
        let log = &job.config().log;
        poller::contain("an access log's request", || log.request(&rec));
    }

    /// Ends the request with `err`.
    pub(super) fn fail(self, err: Error) {
        self.finish(Err(err));
    }
}

const KIND_CONNECT: u8 = 4;
const KIND_SEND: u8 = 5;
const KIND_RECEIVE: u8 = 6;
const KIND_IDLE: u8 = 7;
const KIND_HANDSHAKE: u8 = 8;

/// The deadline queue for a client wait: shared by every client connection
/// with the same timeout, whatever its config or pool.
fn key(config: &ClientConfig, kind: u8) -> QueueKey {
    let c = &config.conn;
    let dur = match kind {
        KIND_CONNECT => c.connect_timeout,
        KIND_SEND => c.send_timeout,
        KIND_RECEIVE => c.receive_timeout,
        KIND_HANDSHAKE => c.handshake_timeout,
        _ => c.keep_alive_timeout,
    };
    QueueKey {
        dur,
        group: 0,
        kind,
    }
}

/// Where a new connection is going: every address the target resolved to,
/// the one being tried, and how those tried before it failed.
struct Route {
    addrs: dns::Addrs,
    /// The address being tried, as an index into `addrs`.
    at: usize,
    /// The addresses tried before, oldest first, with why each failed.
    failed: Vec<(SocketAddr, io::Error)>,
    /// How long the lookup took, when one was made (for each attempt's
    /// record).
    dns: Option<Duration>,
}

impl Route {
    /// The address being tried (`at` is always within `addrs`, which is
    /// never empty).
    fn addr(&self) -> SocketAddr {
        self.addrs[self.at]
    }

    /// The address being tried failed with `err`. Moves to the next address
    /// and returns `Ok`, or, when there is none left, returns the error that
    /// names every address tried.
    fn next(&mut self, err: io::Error) -> Result<(), Error> {
        let addr = self.addr();
        if self.at + 1 < self.addrs.len() {
            log::debug!("taskweave: connect to {addr} failed ({err}); trying the next address");
            self.failed.push((addr, err));
            self.at += 1;
            return Ok(());
        }
        let earlier = std::mem::take(&mut self.failed);
        Err(Error::Connect(crate::error::ConnectError::new(
            earlier, addr, err,
        )))
    }
}

/// Resolves the target and connects, with `owner` as the first request.
pub(super) fn open<P: Protocol>(
    core: &mut Core,
    key: PoolKey,
    owner: InFlight<P>,
    proto: Arc<P>,
    config: Arc<ClientConfig>,
    target: Target,
) {
    let route = |addrs, dns| Route {
        addrs,
        at: 0,
        failed: Vec::new(),
        dns,
    };
    // TLS settings that cannot be built (a CA file that does not parse)
    // fail the request before any connect.
    if target.is_tls() {
        if let Some(e) = config.tls_config().err() {
            owner.fail(e);
            pool::attempt_failed::<P>(core, &key);
            return;
        }
    }
    if let Some(ip) = target.ip() {
        let addrs = Arc::from([SocketAddr::new(ip, target.port())]);
        let attempt = Attempt::first(owner);
        return connect(core, key, attempt, proto, config, route(addrs, None));
    }
    // A lookup is part of connecting: it waits no longer than either bound.
    let timeout = config.conn.dns_timeout.min(config.conn.connect_timeout);
    let ttl = config.dns_ttl;
    let name = target.clone();
    dns::resolve(
        core,
        &target.host(),
        target.port(),
        ttl,
        timeout,
        Box::new(move |core, res, took| {
            let mut owner = owner;
            owner.info().timings.dns = took;
            match res {
                Ok(addrs) if addrs.is_empty() => {
                    owner.fail(Error::Dns(format!("{}: no addresses", name.host())));
                    pool::attempt_failed::<P>(core, &key);
                }
                Ok(addrs) => {
                    let attempt = Attempt::first(owner);
                    connect(core, key, attempt, proto, config, route(addrs, took))
                }
                Err(e) => {
                    owner.fail(e);
                    pool::attempt_failed::<P>(core, &key);
                }
            }
        }),
    );
}

/// What a connection attempt carries: its requests, and the push handler
/// one of them installed.
struct Attempt<P: Protocol> {
    fifo: VecDeque<InFlight<P>>,
    push: Option<PushHandler<P>>,
}

impl<P: Protocol> Attempt<P> {
    fn first(mut owner: InFlight<P>) -> Attempt<P> {
        let push = owner.job.take_push_handler();
        Attempt {
            fifo: VecDeque::from([owner]),
            push,
        }
    }

    /// Every request fails with `err`.
    fn fail(self, err: Error) {
        for item in self.fifo {
            item.fail(err.clone());
        }
    }
}

/// Connects to the route's address, moving on to the next while the
/// connect cannot even start; every request of `attempt` goes out on the
/// connection. With no address left, they all fail with the error that
/// names every address tried.
fn connect<P: Protocol>(
    core: &mut Core,
    key: PoolKey,
    attempt: Attempt<P>,
    proto: Arc<P>,
    config: Arc<ClientConfig>,
    mut route: Route,
) {
    let mut attempt = Some(attempt);
    loop {
        let err = match start(core, &key, &mut attempt, &proto, &config, &mut route) {
            Ok(()) => return,
            Err(e) => e,
        };
        if let Err(e) = route.next(err) {
            if let Some(attempt) = attempt.take() {
                attempt.fail(e);
            }
            pool::attempt_failed::<P>(core, &key);
            return;
        }
    }
}

/// Starts one connect to the route's address; on success the connection
/// has taken `attempt` (and the route, for the addresses after this one).
fn start<P: Protocol>(
    core: &mut Core,
    key: &PoolKey,
    attempt: &mut Option<Attempt<P>>,
    proto: &Arc<P>,
    config: &Arc<ClientConfig>,
    route: &mut Route,
) -> io::Result<()> {
    let addr = route.addr();
    if let Some(a) = attempt.as_mut() {
        for item in a.fifo.iter_mut() {
            item.info().peer = Some(addr);
        }
    }
    let stream = crate::sys::socket::start_connect(addr)?;
    let id = poller::next_id();
    let mut stats = ConnStats::new(id, Side::Client, proto.name(), addr);
    if let Some(d) = route.dns {
        stats.dns(d);
    }
    let index = core.index();
    let tls = match key.target().is_tls() {
        true => Some(config.tls_config().map_err(io::Error::other)?),
        false => None,
    };
    let res = core.insert(id, |token, registry| {
        let io = Transport::connecting(stream, tls.as_ref().map(|c| (c, key.target())))?;
        let conn = Conn::register(io, registry, (index, token), id, stats, &config.conn)?;
        let Attempt { fifo, push } = attempt.take().ok_or(io::ErrorKind::InvalidInput)?;
        let seat = pool::joined::<P>(key, token, id, fifo.len());
        // The rest of the route goes with the connection, for a fallback.
        let rest = Route {
            addrs: route.addrs.clone(),
            at: route.at,
            failed: std::mem::take(&mut route.failed),
            dns: route.dns,
        };
        Ok(Box::new(ClientConn {
            conn,
            key: key.clone(),
            seat,
            proto: proto.clone(),
            config: config.clone(),
            phase: Phase::Connecting,
            peer: addr,
            route: Some(Box::new(rest)),
            fifo,
            written: 0,
            parser: None,
            chunks: Vec::new(),
            got_bytes: false,
            read: ReadState::Ready,
            wait: 0,
            push,
            served: 0,
            greeting: Greeting::None,
        }))
    })?;
    super::log_opened(&*config.log);
    core.arm(res, self::key(config, KIND_CONNECT));
    Ok(())
}

impl<P: Protocol> Greeting<P> {
    fn is_sent(&self) -> bool {
        matches!(self, Greeting::Sent(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TCP connect is in progress.
    Connecting,
    /// Connected; the TLS handshake is under way (its own deadline,
    /// `handshake_timeout`). Requests wait.
    Handshake,
    /// Connected: requests go out, replies come in.
    Open,
    /// Closed and accounted for.
    Closed,
}

/// The poller side of one client connection.
struct ClientConn<P: Protocol> {
    conn: Arc<Conn>,
    key: PoolKey,
    /// Its seat in the pool.
    seat: usize,
    /// The pool's protocol: pushes, unsolicited messages, the name.
    proto: Arc<P>,
    config: Arc<ClientConfig>,
    phase: Phase,
    /// The address it connects to (each request's `peer`).
    peer: SocketAddr,
    /// While connecting: the target's addresses, for a fallback to the next
    /// one if this connect fails.
    route: Option<Box<Route>>,
    /// Requests in flight, oldest first: the first `written` are on the wire
    /// (or queued), the rest wait for the connect.
    fifo: VecDeque<InFlight<P>>,
    written: usize,
    /// The message being parsed (the oldest request's reply, or a push).
    parser: Option<P::Response>,
    /// Kept empty between requests: encoding reuses its capacity.
    chunks: Vec<Bytes>,
    /// A byte arrived since the connection was last idle.
    got_bytes: bool,
    read: ReadState,
    /// The kind of the armed deadline (`KIND_*`), or 0 for none.
    wait: u8,
    push: Option<PushHandler<P>>,
    /// Replies received (the connection is "reused" after the first).
    served: u32,
    /// The protocol's greeting, while it is owed or unanswered.
    greeting: Greeting<P>,
}

/// Where a new connection is with the protocol's greeting.
enum Greeting<P: Protocol> {
    /// None is owed, or it was answered.
    None,
    /// To be written before any request.
    Unsent(P::Request),
    /// Written; its reply is the next message that is not a push.
    Sent(P::Request),
}

impl<P: Protocol> ClientConn<P> {
    fn set_wait(&mut self, token: usize, core: &mut Core, kind: u8, restart: bool) {
        if self.wait != kind || restart {
            self.wait = kind;
            if kind == 0 {
                core.disarm(token);
            } else {
                core.arm(token, key(&self.config, kind));
            }
        }
    }

    /// Arms the deadline the connection's state calls for.
    fn update_wait(&mut self, token: usize, core: &mut Core, restart: bool) {
        let kind = match self.phase {
            Phase::Closed => return,
            Phase::Connecting => KIND_CONNECT,
            Phase::Handshake => KIND_HANDSHAKE,
            Phase::Open if self.conn.queued() > 0 => KIND_SEND,
            Phase::Open if !self.fifo.is_empty() || self.greeting.is_sent() => KIND_RECEIVE,
            Phase::Open => KIND_IDLE,
        };
        self.set_wait(token, core, kind, restart);
    }

    /// Takes the requests the pool assigned to this connection.
    fn take_assigned(&mut self) {
        let (fifo, push, got_bytes) = (&mut self.fifo, &mut self.push, &mut self.got_bytes);
        let peer = self.peer;
        pool::take_inbox::<P>(&self.key, self.seat, |mut item| {
            item.info().peer = Some(peer);
            if let Some(handler) = item.job.take_push_handler() {
                *push = Some(handler);
            }
            if fifo.is_empty() && item.from_idle {
                *got_bytes = false;
            }
            fifo.push_back(item);
        });
    }

    /// Writes every request not yet written, the greeting first, in one
    /// send: pipelined requests share a `writev` (and the peer reads them in
    /// one go). `Some` when the connection is done for.
    fn write_pending(&mut self, core: &mut Core) -> Option<Flow> {
        if self.phase != Phase::Open {
            return None;
        }
        let (mut head, mut body) = (0, 0);
        let mut encode = |req: &mut P::Request, chunks: &mut Vec<Bytes>| {
            req.encode(chunks);
            let sizes = req.sizes().unwrap_or_default();
            head += sizes.head;
            body += sizes.body;
        };
        // Only an unsent greeting is written; one awaiting its reply stays.
        let greeting_now = match std::mem::replace(&mut self.greeting, Greeting::None) {
            Greeting::Unsent(mut req) => {
                encode(&mut req, &mut self.chunks);
                self.greeting = Greeting::Sent(req);
                true
            }
            kept => {
                self.greeting = kept;
                false
            }
        };
        let first = self.written;
        let (id, served) = (self.conn.id, self.served);
        for (i, item) in self.fifo.iter_mut().enumerate().skip(first) {
            encode(item.job.request_mut(), &mut self.chunks);
            let info = item.info();
            info.reused = served > 0;
            info.conn_id = Some(id);
            info.index = served.saturating_add(u32::try_from(i + 1).unwrap_or(u32::MAX));
        }
        if self.chunks.is_empty() && first == self.fifo.len() {
            return None;
        }
        match self
            .conn
            .send(&mut self.chunks, Some(Done::Request { head, body }))
        {
            Ok(SendState::Written | SendState::Queued | SendState::AboveHigh) => {
                self.written = self.fifo.len();
                None
            }
            Err(SendError::Full | SendError::Invalid) => {
                self.chunks.clear();
                // Refused with this write, the greeting never went out: the
                // connection is of no use. One written earlier stays owed.
                if greeting_now {
                    let err = Error::LimitExceeded("client send queue full");
                    return Some(self.fail_all(core, err, CloseReason::Local));
                }
                // Only these requests are refused; those already written
                // stay in flight.
                for item in self.fifo.drain(first..).collect::<Vec<_>>() {
                    item.fail(Error::LimitExceeded("client send queue full"));
                    pool::finished_one::<P>(core, &self.key, self.seat);
                }
                None
            }
            Err(SendError::Closed) => Some(self.fail_all(core, Error::Reset, CloseReason::Reset)),
        }
    }

    /// Fails (or re-sends) every request in flight, then closes.
    fn fail_all(&mut self, core: &mut Core, err: Error, reason: CloseReason) -> Flow {
        let stale = !self.got_bytes;
        let retryable = matches!(err, Error::Reset | Error::PeerClosed);
        let mut failed = Vec::new();
        let mut again = Vec::new();
        for mut item in self.fifo.drain(..) {
            let retry = retryable
                && stale
                && item.from_idle
                && item.job.info_mut().retries < self.config.retry_max
                && item.job.proto().may_retry(item.job.request());
            if retry {
                item.info().retries += 1;
                item.from_idle = false;
                again.push(item);
            } else {
                failed.push(item);
            }
        }
        self.written = 0;
        self.greeting = Greeting::None;
        // Re-sent requests keep their place at the head of the queue; the
        // close frees this connection's slot and lets the pool go on.
        for item in again.into_iter().rev() {
            pool::requeue(&self.key, item);
        }
        let flow = self.close(core, reason);
        for item in failed {
            item.fail(err.clone());
        }
        flow
    }

    fn close(&mut self, core: &mut Core, reason: CloseReason) -> Flow {
        if self.shut(core, reason) {
            let (token, id) = (self.conn.token as usize, self.conn.id);
            pool::left::<P>(core, &self.key, self.seat, token, id);
        }
        Flow::Remove
    }

    /// Closes the socket and writes the record; `false` if it was closed
    /// already.
    fn shut(&mut self, core: &mut Core, reason: CloseReason) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        self.phase = Phase::Closed;
        self.conn.deregister(core.registry());
        let (stats, _) = self.conn.close(reason, 0);
        super::log_record(&*self.config.log, &stats);
        true
    }

    /// The connect failed (`err`; `None` for the connect timeout). The
    /// requests move, with the connection's place in the pool, to a new
    /// attempt at the target's next address; with none left they fail, with
    /// the error that names every address tried (or `ConnectTimeout`).
    fn connect_failed(&mut self, core: &mut Core, err: Option<io::Error>) -> Flow {
        let reason = match err {
            Some(_) => CloseReason::Reset,
            None => CloseReason::ConnectTimeout,
        };
        let timed_out = err.is_none();
        let err = err.unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"));
        // A connection has its route until it is open; without one, the
        // address it tried is the only one.
        let mut route = self.route.take().unwrap_or_else(|| {
            Box::new(Route {
                addrs: Arc::from([self.conn.with_stats(|s| s.peer())]),
                at: 0,
                failed: Vec::new(),
                dns: None,
            })
        });
        if let Err(e) = route.next(err) {
            let e = if timed_out { Error::ConnectTimeout } else { e };
            return self.fail_all(core, e, reason);
        }
        // What the pool assigned meanwhile goes along.
        self.take_assigned();
        let attempt = Attempt {
            fifo: std::mem::take(&mut self.fifo),
            push: self.push.take(),
        };
        if self.shut(core, reason) {
            let (token, id) = (self.conn.token as usize, self.conn.id);
            pool::moving_on::<P>(&self.key, self.seat, token, id);
        }
        let (key, proto, config) = (self.key.clone(), self.proto.clone(), self.config.clone());
        // From a command: this handler is still running.
        poller::run_on(core.index(), move |core| {
            connect(core, key, attempt, proto, config, *route)
        });
        Flow::Remove
    }

    /// The oldest request's reply is complete.
    fn reply_complete(&mut self, core: &mut Core, resp: P::Response) -> Option<Flow> {
        let item = self.fifo.pop_front()?;
        self.written = self.written.saturating_sub(1);
        self.served += 1;
        let keep = item.job.proto().keep_alive(item.job.request(), &resp);
        let sizes = resp.sizes().unwrap_or_default();
        let status = resp.status();
        self.conn.with_stats(|s| {
            s.response_complete(Instant::now(), sizes.head, sizes.body, status);
            s.request_done();
        });
        item.finish(Ok(resp));
        pool::finished_one::<P>(core, &self.key, self.seat);
        if !keep {
            return Some(self.fail_all(core, Error::PeerClosed, CloseReason::Local));
        }
        None
    }

    fn pump(&mut self, token: usize, core: &mut Core) -> Flow {
        let served = self.served;
        let mut scratch = core.take_scratch();
        let flow = self.pump_with(core, &mut scratch);
        core.put_scratch(scratch);
        if flow == Flow::Keep {
            // Requests the pool handed over meanwhile, this connection's own
            // completions included (it could not be woken while running).
            self.take_assigned();
            if let Some(flow) = self.write_pending(core) {
                return flow;
            }
            // A reply restarts the receive timeout for the next one.
            self.update_wait(token, core, self.served != served);
        }
        flow
    }

    fn pump_with(&mut self, core: &mut Core, scratch: &mut [u8]) -> Flow {
        loop {
            if self.phase == Phase::Handshake && self.read != ReadState::Drained {
                if let Some(flow) = self.handshake(core, scratch) {
                    return flow;
                }
                continue;
            }
            if self.read == ReadState::Drained || self.phase != Phase::Open {
                return Flow::Keep;
            }
            match self.conn.recv(scratch) {
                Ok(0) => return self.end_of_stream(core),
                Ok(n) => {
                    self.read
                        .after_read(n, scratch.len(), self.conn.short_read_drains());
                    self.conn.with_stats(|s| s.add_in(n));
                    if let Some(flow) = self.feed(core, &scratch[..n]) {
                        return flow;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read = ReadState::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_tls_error(&e) => {
                    return self.fail_all(core, Error::Tls(e.to_string()), CloseReason::TlsError)
                }
                Err(_) => return self.fail_all(core, Error::Reset, CloseReason::Reset),
            }
        }
    }

    /// Drives the TLS handshake with what the socket holds; once it is done
    /// the connection is open. `Some` when the connection is done for.
    #[cold]
    #[inline(never)]
    fn handshake(&mut self, core: &mut Core, scratch: &mut [u8]) -> Option<Flow> {
        let read = self.conn.recv(scratch);
        match &read {
            Ok(0) => {
                let err =
                    Error::Tls("the server closed the connection during the handshake".into());
                return Some(self.fail_all(core, err, CloseReason::PeerClosed));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read = ReadState::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_tls_error(e) => {
                let err = Error::Tls(e.to_string());
                return Some(self.fail_all(core, err, CloseReason::TlsError));
            }
            Err(_) => return Some(self.fail_all(core, Error::Reset, CloseReason::Reset)),
            Ok(_) => {}
        }
        let now = Instant::now();
        self.conn.note_handshake(now)?;
        self.phase = Phase::Open;
        pool::opened::<P>(&self.key, self.seat);
        let tls = self.conn.with_stats(|s| s.tls_time());
        for item in self.fifo.iter_mut() {
            item.info().timings.tls = tls;
        }
        if let Ok(n) = read {
            // Bytes that came with the handshake's end (a server that speaks
            // first).
            self.read
                .after_read(n, scratch.len(), self.conn.short_read_drains());
            self.conn.with_stats(|s| s.add_in(n));
            return self.feed(core, &scratch[..n]);
        }
        None
    }

    /// The peer closed: a reply that runs to the close is complete; anything
    /// else in flight fails.
    fn end_of_stream(&mut self, core: &mut Core) -> Flow {
        let complete = self.parser.as_mut().is_some_and(|r| r.end_of_stream());
        if complete {
            if let Some(resp) = self.parser.take() {
                if let Some(flow) = self.reply_complete(core, resp) {
                    return flow;
                }
            }
        }
        if self.fifo.is_empty() && self.parser.is_none() {
            return self.close(core, CloseReason::PeerClosed);
        }
        self.fail_all(core, Error::PeerClosed, CloseReason::PeerClosed)
    }

    /// Parses what arrived: replies in order, pushes aside. `Some` when the
    /// connection's fate is decided.
    fn feed(&mut self, core: &mut Core, data: &[u8]) -> Option<Flow> {
        let mut off = 0;
        while off < data.len() {
            if self.parser.is_none() {
                let fresh = match (&self.greeting, self.fifo.front_mut()) {
                    (Greeting::Sent(req), _) => Some(self.proto.new_response(req)),
                    (_, Some(front)) => {
                        let now = Instant::now();
                        let since = now - front.started;
                        front.info().timings.first_byte = Some(since);
                        self.conn.with_stats(|s| s.first_byte(now));
                        Some(front.job.proto().new_response(front.job.request()))
                    }
                    (_, None) => self.proto.new_unsolicited(),
                };
                let Some(parser) = fresh else {
                    // Bytes nobody asked for.
                    return Some(self.close(core, CloseReason::ProtocolError));
                };
                self.parser = Some(parser);
            }
            self.got_bytes = true;
            let parser = self.parser.as_mut()?;
            let rest = &data[off..];
            let progress = parser.append(rest);
            while let Some(push) = self.parser.as_mut().and_then(|p| p.take_push()) {
                self.deliver_push(push);
            }
            match progress {
                Ok(Progress::Complete(n)) => {
                    off += n.clamp(1, rest.len());
                    let msg = self.parser.take()?;
                    if self.proto.is_push(&msg) {
                        self.deliver_push(msg);
                        continue;
                    }
                    if let Greeting::Sent(_) = self.greeting {
                        self.greeting = Greeting::None;
                        if let Err(e) = self.proto.greeted(&msg) {
                            let err = Error::Protocol(e);
                            return Some(self.fail_all(core, err, CloseReason::ProtocolError));
                        }
                        continue;
                    }
                    if self.fifo.is_empty() {
                        return Some(self.close(core, CloseReason::ProtocolError));
                    }
                    if let Some(flow) = self.reply_complete(core, msg) {
                        return Some(flow);
                    }
                }
                Ok(Progress::NeedMore(n)) => {
                    if n == 0 {
                        let err = Error::Protocol(crate::protocol::ProtocolError::new(
                            502,
                            "parser made no progress",
                        ));
                        return Some(self.fail_all(core, err, CloseReason::ProtocolError));
                    }
                    off += n.min(rest.len());
                }
                Err(e) => {
                    return Some(self.fail_all(
                        core,
                        Error::Protocol(e),
                        CloseReason::ProtocolError,
                    ))
                }
            }
        }
        None
    }

    /// Hands a push to the connection's handler, if it has one.
    fn deliver_push(&mut self, msg: P::Response) {
        match self.push.as_mut() {
            Some(push) => {
                poller::contain("a push handler", || push(msg));
            }
            None => log::debug!("taskweave: a push with no handler dropped"),
        }
    }

    fn on_connected(&mut self, core: &mut Core) -> Option<Flow> {
        if let Ok(Some(e)) | Err(e) = self.conn.take_error() {
            return Some(self.connect_failed(core, Some(e)));
        }
        match self.conn.peer_addr() {
            Ok(_) => {
                self.route = None;
                if let Some(req) = self.proto.greeting() {
                    self.greeting = Greeting::Unsent(req);
                }
                if self.conn.handshaking() {
                    // The client's first flight, then the server's answer.
                    self.phase = Phase::Handshake;
                    self.read = ReadState::Ready;
                    if let Err(e) = self.conn.flush_transport() {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            return Some(self.fail_all(core, Error::Reset, CloseReason::Reset));
                        }
                    }
                } else {
                    self.phase = Phase::Open;
                    pool::opened::<P>(&self.key, self.seat);
                }
                let now = Instant::now();
                let connect = self.conn.with_stats(|s| {
                    s.connected(now);
                    s.connect_time()
                });
                for item in self.fifo.iter_mut() {
                    item.info().timings.connect = connect;
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(e) => Some(self.connect_failed(core, Some(e))),
        }
    }
}

impl<P: Protocol> Handler for ClientConn<P> {
    fn ready(&mut self, token: usize, core: &mut Core, ready: Ready) -> Flow {
        self.read.on_ready(ready);
        if self.phase == Phase::Connecting {
            if let Some(flow) = self.on_connected(core) {
                return flow;
            }
        }
        if ready.writable && self.phase == Phase::Handshake {
            // A handshake flight the socket did not take whole.
            if let Err(e) = self.conn.flush_transport() {
                if e.kind() != io::ErrorKind::WouldBlock {
                    return self.fail_all(core, Error::Reset, CloseReason::Reset);
                }
            }
        }
        if ready.writable && self.phase == Phase::Open {
            let flushed = self.conn.flush();
            if flushed.progressed && flushed.queued > 0 {
                // Progress restarts the send timeout.
                self.set_wait(token, core, KIND_SEND, true);
            }
            // Only this poller writes to a client connection: a failed
            // flush is the one way it can break behind our back.
            if let Err(reason) = self.conn.sync(0, true) {
                return self.fail_all(core, Error::Reset, reason);
            }
        }
        self.pump(token, core)
    }

    fn timeout(&mut self, _token: usize, core: &mut Core) -> Flow {
        match self.wait {
            KIND_CONNECT => self.connect_failed(core, None),
            KIND_SEND => self.fail_all(core, Error::SendTimeout, CloseReason::SendTimeout),
            KIND_RECEIVE => self.fail_all(core, Error::ReceiveTimeout, CloseReason::ReceiveTimeout),
            KIND_IDLE => self.close(core, CloseReason::KeepAliveTimeout),
            KIND_HANDSHAKE => {
                let err =
                    Error::Tls("the handshake did not finish within the handshake timeout".into());
                self.fail_all(core, err, CloseReason::TlsError)
            }
            _ => Flow::Keep,
        }
    }

    /// Woken by the pool: requests were assigned to it.
    fn wake(&mut self, token: usize, core: &mut Core) -> Flow {
        self.pump(token, core)
    }

    fn cancel(&mut self, _token: usize, core: &mut Core) -> Flow {
        if self.fifo.is_empty() {
            return self.close(core, CloseReason::Evicted);
        }
        Flow::Keep
    }
}

impl<P: Protocol> Drop for ClientConn<P> {
    /// A connection dropped without closing (a panic escaped its handler):
    /// its requests fail, its record is written, and it leaves its pool (from
    /// a command: a drop has no poller at hand).
    fn drop(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        let (stats, _) = self.conn.close(CloseReason::InternalError, 0);
        let (key, seat) = (self.key.clone(), self.seat);
        let (token, id) = (self.conn.token as usize, self.conn.id);
        poller::run_on(self.conn.poller as usize, move |core| {
            pool::left::<P>(core, &key, seat, token, id)
        });
        for item in self.fifo.drain(..) {
            item.fail(Error::Reset);
        }
        super::log_record(&*self.config.log, &stats);
    }
}
