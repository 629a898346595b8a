//! A client task for any [`Protocol`], over a per-target connection pool.
//!
//! All requests to one target (and one [`ClientConfig`]) go to the same poller,
//! chosen by hashing the target, so the pool for that target is single-threaded:
//! an exact `max_per_target`, reuse of the most recently used idle connection, an
//! idle timeout, and a queue of requests waiting for a free connection, all
//! without locks. A request that fails on a reused connection before any response
//! byte arrived is retried (`retry_max`), since the peer may have closed the idle
//! connection just as we picked it.

use super::{Message, Progress, Protocol};
use crate::comm::{Conn, ConnConfig, Done, SendError};
use crate::error::Error;
use crate::metrics::{AccessLog, CloseReason, ConnStats, NullLog, Side};
use crate::poller::{self, Core, Flow, Handler, QueueKey, Ready, Signal};
use crate::task::{deliver, Series, Step, Task};
use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

static NEXT_POOL_GROUP: AtomicU32 = AtomicU32::new(1 << 30);

/// Settings shared by client tasks: timeouts, pool size, retries, access log.
/// Tasks that share a `ClientConfig` (an `Arc`) share connection pools.
pub struct ClientConfig {
    conn: ConnConfig,
    max_per_target: usize,
    retry_max: u32,
    log: Arc<dyn AccessLog>,
    group: u32,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("conn", &self.conn)
            .field("max_per_target", &self.max_per_target)
            .field("retry_max", &self.retry_max)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig::new(ConnConfig::default())
    }
}

impl ClientConfig {
    /// A config with these connection settings, 32 connections per target, one
    /// retry and no access log.
    pub fn new(conn: ConnConfig) -> ClientConfig {
        ClientConfig {
            conn,
            max_per_target: 32,
            retry_max: 1,
            log: Arc::new(NullLog),
            group: NEXT_POOL_GROUP.fetch_add(1, Ordering::Relaxed),
        }
    }
    /// Most connections open to one target; more requests wait. Default 32.
    pub fn max_per_target(mut self, n: usize) -> Self {
        self.max_per_target = n.max(1);
        self
    }
    /// Retries of a request whose reused connection failed before any response
    /// byte. Default 1.
    pub fn retry_max(mut self, n: u32) -> Self {
        self.retry_max = n;
        self
    }
    /// Where each client connection's record goes when it closes.
    pub fn access_log(mut self, log: impl AccessLog) -> Self {
        self.log = Arc::new(log);
        self
    }
    /// The connection settings.
    pub fn conn(&self) -> &ConnConfig {
        &self.conn
    }
    /// The shared default config.
    pub fn shared_default() -> Arc<ClientConfig> {
        static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Arc::new(ClientConfig::default()))
            .clone()
    }

    fn key(&self, kind: u8) -> QueueKey {
        let dur = match kind {
            KIND_CONNECT => self.conn.connect_timeout,
            KIND_SEND => self.conn.send_timeout,
            KIND_RECEIVE => self.conn.receive_timeout,
            _ => self.conn.keep_alive_timeout,
        };
        QueueKey {
            dur,
            group: self.group,
            kind,
        }
    }
}

const KIND_CONNECT: u8 = 4;
const KIND_SEND: u8 = 5;
const KIND_RECEIVE: u8 = 6;
const KIND_IDLE: u8 = 7;

type Callback<P> = Box<dyn FnOnce(&mut ClientTask<P>, &mut Series) + Send>;

/// Where a client task's time went, like curl's `-w` phases. Every phase is
/// measured from the moment the task started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Name resolution; `None` when no lookup was made (an address, or cached).
    pub dns: Option<Duration>,
    /// The TCP connect itself; `None` on a reused connection.
    pub connect: Option<Duration>,
    /// Start until the first response byte arrived.
    pub first_byte: Option<Duration>,
    /// Start until the response was complete or the task failed.
    pub total: Duration,
}

/// One request to a target and its response.
pub struct ClientTask<P: Protocol> {
    proto: Arc<P>,
    target: SocketAddr,
    config: Arc<ClientConfig>,
    req: P::Request,
    resp: Option<P::Response>,
    error: Option<Error>,
    reused: bool,
    retries: u32,
    started: Option<Instant>,
    timings: Timings,
    callback: Option<Callback<P>>,
}

impl<P: Protocol> ClientTask<P> {
    /// A task sending `req` to `target` with protocol `proto`; `callback` runs
    /// when the response is complete or the request failed.
    pub fn new(
        proto: Arc<P>,
        target: SocketAddr,
        req: P::Request,
        callback: impl FnOnce(&mut ClientTask<P>, &mut Series) + Send + 'static,
    ) -> Self {
        ClientTask {
            proto,
            target,
            config: ClientConfig::shared_default(),
            req,
            resp: None,
            error: None,
            reused: false,
            retries: 0,
            started: None,
            timings: Timings::default(),
            callback: Some(Box::new(callback)),
        }
    }

    /// Uses `config` (and its pools) instead of the shared default.
    pub fn with_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = config;
        self
    }

    /// The request.
    pub fn request(&self) -> &P::Request {
        &self.req
    }
    /// The request, mutably (before the task starts).
    pub fn request_mut(&mut self) -> &mut P::Request {
        &mut self.req
    }
    /// The response, or why there is none.
    pub fn result(&self) -> Result<&P::Response, &Error> {
        match (&self.resp, &self.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => Err(&Error::Cancelled),
        }
    }
    /// Takes the response out (without copying its body). Read
    /// [`result`](Self::result) first: afterwards it reports `Cancelled`.
    pub fn take_response(&mut self) -> Option<P::Response> {
        self.resp.take()
    }
    /// Whether the request went over a pooled connection.
    pub fn reused(&self) -> bool {
        self.reused
    }
    /// Where the task's time went.
    pub fn timings(&self) -> Timings {
        self.timings
    }
    /// Records a name lookup made before the task ran (the HTTP client resolves
    /// names before it connects); it goes to the connection's `dns_us` too.
    pub fn set_dns_time(&mut self, d: Duration) {
        self.timings.dns = Some(d);
    }
    /// How many times the request was retried.
    pub fn retries(&self) -> u32 {
        self.retries
    }
    /// The target address.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    fn pool_key(&self) -> PoolKey {
        PoolKey {
            proto: TypeId::of::<P>(),
            target: self.target,
            group: self.config.group,
        }
    }
}

impl<P: Protocol> Task for ClientTask<P> {
    fn run(mut self: Box<Self>, series: Box<Series>) -> Step {
        let started = Instant::now() - self.timings.dns.unwrap_or_default();
        self.started.get_or_insert(started);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.target.hash(&mut h);
        let index = (h.finish() as usize) % poller::count();
        poller::run_on(index, move |core| submit(core, Job { task: self, series }));
        Step::Pending
    }
}

struct Job<P: Protocol> {
    task: Box<ClientTask<P>>,
    series: Box<Series>,
}

impl<P: Protocol> Job<P> {
    fn complete(self, resp: Option<P::Response>, error: Option<Error>) {
        let Job { mut task, series } = self;
        task.resp = resp;
        task.error = error;
        if let Some(start) = task.started {
            task.timings.total = start.elapsed();
        }
        deliver(series, move |s| {
            if let Some(cb) = task.callback.take() {
                cb(&mut task, s);
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    proto: TypeId,
    target: SocketAddr,
    group: u32,
}

type Waiter = Box<dyn FnOnce(&mut Core) + Send>;

#[derive(Default)]
struct Pool {
    /// Idle connections, most recently used last.
    idle: Vec<(usize, u64)>,
    /// Connections open or opening.
    total: usize,
    waiters: VecDeque<Waiter>,
}

thread_local! {
    /// This poller thread's pools (pools are only touched on their poller).
    static POOLS: RefCell<HashMap<PoolKey, Pool>> = RefCell::new(HashMap::new());
}

fn with_pool<R>(key: PoolKey, f: impl FnOnce(&mut Pool) -> R) -> R {
    POOLS.with(|p| f(p.borrow_mut().entry(key).or_default()))
}

/// Sends a job over an idle pooled connection, a new one, or queues it.
fn submit<P: Protocol>(core: &mut Core, job: Job<P>) {
    let key = job.task.pool_key();
    let mut job = Some(job);
    while let Some((token, id)) = with_pool(key, |p| p.idle.pop()) {
        if core.id_of(token) != Some(id) {
            continue;
        }
        core.call(token, |h, core| {
            match h.as_any_mut().downcast_mut::<ClientConn<P>>() {
                Some(conn) => match job.take() {
                    Some(j) => conn.attach(token, core, j),
                    None => Flow::Keep,
                },
                None => Flow::Keep,
            }
        });
        if job.is_none() {
            return;
        }
    }
    let Some(job) = job else { return };
    let max = job.task.config.max_per_target;
    let admitted = with_pool(key, |p| {
        (p.total < max).then(|| {
            p.total += 1;
        })
    });
    if admitted.is_some() {
        connect(core, key, job);
    } else {
        with_pool(key, |p| {
            p.waiters.push_back(Box::new(move |core| submit(core, job)))
        });
    }
}

/// A connection slot was freed: let the next waiting request in.
fn release(core: &mut Core, key: PoolKey) {
    if let Some(waiter) = with_pool(key, |p| p.waiters.pop_front()) {
        waiter(core);
    }
}

fn connect<P: Protocol>(core: &mut Core, key: PoolKey, job: Job<P>) {
    let target = job.task.target;
    let std_stream = match crate::sys::start_connect(target) {
        Ok(s) => s,
        Err(e) => {
            with_pool(key, |p| p.total -= 1);
            job.complete(None, Some(Error::Connect(e.kind())));
            release(core, key);
            return;
        }
    };
    let stream = mio::net::TcpStream::from_std(std_stream);
    let id = poller::next_id();
    let config = job.task.config.clone();
    let proto = job.task.proto.clone();
    let mut stats = ConnStats::new(id, Side::Client, proto.name(), target);
    if let Some(d) = job.task.timings.dns.filter(|_| job.task.retries == 0) {
        stats.dns(d);
    }
    let index = core.index();
    let mut job = Some(job);
    let res = core.insert(id, |token, registry| {
        let fd = stream.as_raw_fd();
        registry.register(
            &mut SourceFd(&fd),
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let conn = Arc::new(Conn::new(stream, index, token, id, stats, &config.conn));
        Ok(Box::new(ClientConn {
            conn,
            key,
            config: config.clone(),
            proto,
            connected: false,
            job: job.take(),
            resp: None,
            got_bytes: false,
            reusable: true,
            reused: false,
            read_ready: false,
            wait: KIND_CONNECT,
        }))
    });
    match res {
        Ok(token) => {
            config.log.opened();
            core.arm(token, config.key(KIND_CONNECT));
        }
        Err(e) => {
            with_pool(key, |p| p.total -= 1);
            if let Some(job) = job {
                job.complete(None, Some(Error::Connect(e.kind())));
            }
            release(core, key);
        }
    }
}

/// The poller side of one client connection.
struct ClientConn<P: Protocol> {
    conn: Arc<Conn>,
    key: PoolKey,
    config: Arc<ClientConfig>,
    proto: Arc<P>,
    connected: bool,
    job: Option<Job<P>>,
    resp: Option<P::Response>,
    got_bytes: bool,
    /// False once the peer sent more than one response's worth.
    reusable: bool,
    /// The current job came from the idle list.
    reused: bool,
    read_ready: bool,
    /// The kind of the armed deadline (`KIND_*`), or 0 for none.
    wait: u8,
}

impl<P: Protocol> ClientConn<P> {
    fn set_wait(&mut self, token: usize, core: &mut Core, kind: u8) {
        if self.wait != kind {
            self.wait = kind;
            if kind == 0 {
                core.disarm(token);
            } else {
                core.arm(token, self.config.key(kind));
            }
        }
    }

    /// Takes a job on an idle pooled connection.
    fn attach(&mut self, token: usize, core: &mut Core, mut job: Job<P>) -> Flow {
        job.task.reused = true;
        self.reused = true;
        self.job = Some(job);
        self.write_request(token, core)
    }

    fn write_request(&mut self, token: usize, core: &mut Core) -> Flow {
        let Some(job) = self.job.as_mut() else {
            return Flow::Keep;
        };
        self.got_bytes = false;
        self.resp = Some(self.proto.new_response(&job.task.req));
        let mut chunks: Vec<Bytes> = Vec::new();
        job.task.req.encode(&mut chunks);
        let sizes = job.task.req.sizes().unwrap_or_default();
        let done = Done::Request {
            head: sizes.head,
            body: sizes.body,
        };
        match self.conn.send(&mut chunks, Some(done)) {
            Ok(crate::comm::SendState::Written) => self.set_wait(token, core, KIND_RECEIVE),
            Ok(_) => self.set_wait(token, core, KIND_SEND),
            Err(SendError::Full) => {
                return self.fail(
                    core,
                    Error::LimitExceeded("request larger than max_queued"),
                    CloseReason::LimitExceeded,
                )
            }
            Err(SendError::Closed) => return self.fail(core, Error::Reset, CloseReason::Reset),
        }
        self.pump(token, core)
    }

    /// Ends the current job with `err` (or retries it) and closes the connection.
    fn fail(&mut self, core: &mut Core, err: Error, reason: CloseReason) -> Flow {
        if let Some(mut job) = self.job.take() {
            let retry = self.reused
                && !self.got_bytes
                && matches!(err, Error::Reset | Error::PeerClosed)
                && job.task.retries < self.config.retry_max;
            if retry {
                job.task.retries += 1;
                job.task.reused = false;
                // Close first so the slot is free for the retry's connection.
                let flow = self.close(core, reason);
                submit(core, job);
                return flow;
            }
            job.complete(None, Some(err));
        }
        self.close(core, reason)
    }

    fn close(&mut self, core: &mut Core, reason: CloseReason) -> Flow {
        let fd = self.conn.stream().as_raw_fd();
        let _ = core.registry().deregister(&mut SourceFd(&fd));
        let stats = self.conn.close(reason);
        self.config.log.record(&stats);
        let (token, id) = (self.conn.token as usize, self.conn.id);
        with_pool(self.key, |p| {
            p.idle.retain(|&(t, i)| (t, i) != (token, id));
            p.total -= 1;
        });
        release(core, self.key);
        Flow::Remove
    }

    /// The response is complete: hand it over and go idle (or close).
    fn finish(&mut self, token: usize, core: &mut Core, reason: CloseReason) -> Flow {
        let resp = self.resp.take();
        let keep = match (&self.job, &resp) {
            (Some(job), Some(r)) => self.proto.keep_alive(&job.task.req, r),
            _ => false,
        };
        self.conn.lock().stats.request_done();
        if let Some(job) = self.job.take() {
            job.complete(resp, None);
        }
        if !keep || !self.reusable {
            return self.close(core, reason);
        }
        self.reused = false;
        self.set_wait(token, core, KIND_IDLE);
        let id = self.conn.id;
        with_pool(self.key, |p| p.idle.push((token, id)));
        release(core, self.key);
        Flow::Keep
    }

    fn pump(&mut self, token: usize, core: &mut Core) -> Flow {
        let mut scratch = core.take_scratch();
        let flow = self.pump_with(token, core, &mut scratch);
        core.put_scratch(scratch);
        flow
    }

    fn pump_with(&mut self, token: usize, core: &mut Core, scratch: &mut [u8]) -> Flow {
        loop {
            if self.conn.lock().broken.is_some() {
                return self.fail(core, Error::Reset, CloseReason::Reset);
            }
            if !self.read_ready {
                return Flow::Keep;
            }
            match self.conn.read(scratch) {
                Ok(0) => {
                    let complete = self.resp.as_mut().is_some_and(|r| r.end_of_stream());
                    if self.job.is_some() && complete {
                        self.reusable = false;
                        return self.finish(token, core, CloseReason::PeerClosed);
                    }
                    if self.job.is_none() {
                        return self.close(core, CloseReason::PeerClosed);
                    }
                    return self.fail(core, Error::PeerClosed, CloseReason::PeerClosed);
                }
                Ok(n) => {
                    self.conn.lock().stats.add_in(n);
                    if let Some(flow) = self.feed(token, core, &scratch[..n]) {
                        return flow;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(core, Error::Reset, CloseReason::Reset),
            }
        }
    }

    /// Parses response bytes; `Some` when the connection's fate is decided.
    fn feed(&mut self, token: usize, core: &mut Core, data: &[u8]) -> Option<Flow> {
        let Some(resp) = self.resp.as_mut() else {
            // Bytes nobody asked for on an idle connection.
            return Some(self.close(core, CloseReason::ProtocolError));
        };
        if !self.got_bytes {
            self.got_bytes = true;
            let now = Instant::now();
            self.conn.lock().stats.first_byte(now);
            if let Some(job) = self.job.as_mut() {
                job.task.timings.first_byte = job.task.started.map(|s| now - s);
            }
        }
        match resp.append(data) {
            Ok(Progress::Complete(n)) => {
                let sizes = resp.sizes().unwrap_or_default();
                let status = resp.status();
                self.conn.lock().stats.response_complete(
                    Instant::now(),
                    sizes.head,
                    sizes.body,
                    status,
                );
                if n < data.len() {
                    self.reusable = false;
                }
                let flow = self.finish(token, core, CloseReason::Local);
                (flow == Flow::Remove).then_some(flow)
            }
            Ok(Progress::NeedMore(_)) => None,
            Err(e) => Some(self.fail(core, Error::Protocol(e), CloseReason::ProtocolError)),
        }
    }

    fn on_connected(&mut self, token: usize, core: &mut Core) -> Flow {
        if let Ok(Some(e)) | Err(e) = self.conn.stream().take_error() {
            return self.fail(core, Error::Connect(e.kind()), CloseReason::Reset);
        }
        match self.conn.stream().peer_addr() {
            Ok(_) => {
                self.connected = true;
                let mut st = self.conn.lock();
                st.stats.connected(Instant::now());
                if let Some(job) = self.job.as_mut() {
                    job.task.timings.connect = Some(st.stats.connect_time().unwrap_or_default());
                }
                drop(st);
                self.write_request(token, core)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Flow::Keep,
            Err(e) => self.fail(core, Error::Connect(e.kind()), CloseReason::Reset),
        }
    }
}

impl<P: Protocol> Handler for ClientConn<P> {
    fn ready(&mut self, token: usize, core: &mut Core, ready: Ready) -> Flow {
        if ready.readable {
            self.read_ready = true;
        }
        if !self.connected {
            return self.on_connected(token, core);
        }
        if ready.writable && self.conn.queued() > 0 {
            let left = self.conn.flush();
            if left == 0 && self.job.is_some() {
                self.set_wait(token, core, KIND_RECEIVE);
            }
        }
        self.pump(token, core)
    }

    fn timeout(&mut self, _token: usize, core: &mut Core) -> Flow {
        match self.wait {
            KIND_CONNECT => self.fail(core, Error::ConnectTimeout, CloseReason::ConnectTimeout),
            KIND_SEND => self.fail(core, Error::SendTimeout, CloseReason::SendTimeout),
            KIND_RECEIVE => self.fail(core, Error::ReceiveTimeout, CloseReason::ReceiveTimeout),
            KIND_IDLE => self.close(core, CloseReason::KeepAliveTimeout),
            _ => Flow::Keep,
        }
    }

    fn wake(&mut self, token: usize, core: &mut Core) -> Flow {
        self.conn.lock().pause_unseen = false;
        self.pump(token, core)
    }

    fn signal(&mut self, _token: usize, core: &mut Core, signal: Signal) -> Flow {
        match signal {
            Signal::Evict if self.job.is_none() => self.close(core, CloseReason::Evicted),
            _ => Flow::Keep,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
