//! A server for any [`Protocol`]: each request is a [`ServerTask`] at the head
//! of a new series, answered when the series ends or as a stream.
//!
//! The user's `process` runs (on a handler thread, or inline on the poller),
//! may push more tasks, and the reply is written when the series ends, as in
//! Workflow: a proxy runs its client task first and fills the response from
//! its callback. Or `process` (or any later callback) starts a
//! [`Stream`] and sends the body in pieces from wherever it likes. The
//! connection engine is `comm`'s; this module is the task side of it.

use super::handlers::Job;
use super::{handlers_inline, spawn_handler, spawn_handler_job, Finisher, Series, Step, Task};
use crate::comm::{
    self, ConnConfig, Exchange, FlowControl, RateLimited, Reply, SendError, ServerHandle, Service,
    Stream,
};
use crate::metrics::{AccessLog, NullLog};
use crate::protocol::Protocol;
use crossbeam_queue::ArrayQueue;
use std::any::Any;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The user's request handler, boxed once more so that the task holds a thin
/// pointer to it (every byte of a task counts, see `http::server`'s tests).
/// The function a server runs for each request.
type ProcessFn<P> = Box<dyn Fn(&mut ServerTask<P>, &mut Series) + Send + Sync>;

/// A server's `process` function, and the tasks its handler threads gave
/// back for the poller's next requests.
struct Process<P: Protocol> {
    run: ProcessFn<P>,
    /// Finished tasks, from handler threads to the poller: a task answered
    /// there would otherwise be freed on one thread after being allocated
    /// on another, which glibc makes costly (about a fifth of the user time
    /// per request at 1,000 connections), and its request's buffers with
    /// it. They hold no reference to this `Process` while here.
    spares: ArrayQueue<Box<ServerTask<P>>>,
}

/// How many finished tasks a server keeps for reuse in handler mode: more
/// than a poller turn hands over in a busy moment, at about a kilobyte each.
const SPARES_KEPT: usize = 256;

/// Entry point for building servers of any [`Protocol`]:
/// [`Server::builder`] gives a [`ServerBuilder`], whose
/// [`serve`](ServerBuilder::serve) starts one and returns its
/// [`ServerHandle`]. HTTP has its own, [`http::Server`](crate::http::Server).
///
/// ```
/// # #[path = "../protocol/doc_lines.rs"] mod lines;
/// use lines::{Line, Lines}; // the line protocol of `Protocol`'s example
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use taskweave::task::Server;
///
/// // Answers each line with its length.
/// let server = Server::builder()
///     .max_connections(100)
///     .receive_timeout(Duration::from_secs(5))
///     .serve("127.0.0.1:0", Lines, |task, _series| {
///         let len = task.request().text().len();
///         *task.response() = Line::new(len.to_string());
///     })?;
///
/// let mut conn = TcpStream::connect(server.local_addr())?;
/// conn.write_all(b"hello\n")?;
/// let mut answer = String::new();
/// BufReader::new(&conn).read_line(&mut answer)?;
/// assert_eq!(answer, "5\n");
///
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with default limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Limits, timeouts and the access log of a server. Every limit has a
/// default; see each setter.
pub struct ServerBuilder {
    config: ConnConfig,
    max_connections: usize,
    backlog: i32,
    log: Arc<dyn AccessLog>,
    max_rps: u32,
    rate_limited: RateLimited,
    reuse_port: bool,
    tls: Vec<comm::PemPair>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            config: ConnConfig::default(),
            max_connections: 10_000,
            backlog: 1024,
            log: Arc::new(NullLog),
            max_rps: 0,
            rate_limited: RateLimited::new(),
            reuse_port: false,
            tls: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("max_connections", &self.max_connections)
            .field("max_rps", &self.max_rps)
            .finish_non_exhaustive()
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
    /// accept to the first request): the slowloris bound. Default 30 s.
    pub fn receive_timeout(mut self, d: Duration) -> Self {
        self.config.receive_timeout = d;
        self
    }
    /// How long a TLS handshake may take, from accept; past it the
    /// connection closes with `tls_error`. Only with [`tls`](Self::tls).
    /// Default 10 s.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.config.handshake_timeout = d;
        self
    }
    /// How long queued output may wait without progress; a peer that stops
    /// reading is closed with `send_timeout`. Default 30 s.
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.config.send_timeout = d;
        self
    }
    /// Output watermarks in bytes: above `high` the connection stops reading
    /// and streams are told to slow down; below `low` it reads again and a
    /// stream's writable callback runs. Defaults 64 KiB / 256 KiB.
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.config.low_watermark = low.min(high);
        self.config.high_watermark = high;
        self
    }
    /// Queued output past which a stream's sends are refused. Default 16 MiB.
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
    /// Whether this server may share its port with other listeners that
    /// ask for it too (`SO_REUSEPORT`: another process, or a new version
    /// of this one starting before the old one stops; the kernel spreads
    /// connections over them). Default `false`: a port already listened on
    /// makes [`serve`](ServerBuilder::serve) fail with
    /// `io::ErrorKind::AddrInUse`. Either way every poller accepts on a
    /// listener of its own.
    ///
    /// ```
    /// # #[path = "../protocol/doc_lines.rs"] mod lines;
    /// use lines::Lines; // the line protocol of `Protocol`'s example
    /// use std::time::Duration;
    /// use taskweave::task::{Server, ServerTask};
    /// use taskweave::Series;
    ///
    /// let nothing = |_: &mut ServerTask<Lines>, _: &mut Series| {};
    /// let first = Server::builder().serve(("127.0.0.1", 0), Lines, nothing)?;
    /// let port = first.local_addr().port();
    /// let busy = Server::builder().serve(("127.0.0.1", port), Lines, nothing);
    /// assert_eq!(busy.err().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
    /// first.shutdown(Duration::from_secs(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }
    /// Where a record goes when each connection closes. Default: nowhere.
    pub fn access_log(mut self, log: impl AccessLog) -> Self {
        self.log = Arc::new(log);
        self
    }
    /// At most `n` requests a second over the whole server; 0 (the
    /// default) for no limit, which costs one branch per request.
    ///
    /// A request over the rate is answered on the poller, before `process`
    /// would run, with the protocol's refusal for code 429
    /// ([`Protocol::refuse`]; HTTP: `429 Too Many Requests` with
    /// `Retry-After`), and the connection stays open if the protocol keeps
    /// it alive. The limit is a token bucket of `n` a second holding a tenth
    /// of a second's requests (at least one), so a quiet server admits that
    /// many at once; pollers take its tokens in small leases, so the rate
    /// holds for the server however its connections are spread over the
    /// pollers. Refusals are counted live: see
    /// [`rate_limited`](Self::rate_limited).
    pub fn max_rps(mut self, n: u32) -> Self {
        self.max_rps = n;
        self
    }
    /// The live count of requests refused over [`max_rps`](Self::max_rps),
    /// to read from anywhere (a `/metrics` handler of this very server). It
    /// reads 0 until the server starts, and always without a limit.
    pub fn rate_limited(&self) -> RateLimited {
        self.rate_limited.clone()
    }
    /// The connection settings as configured.
    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    /// Serves TLS (1.2 and 1.3) with the certificate chain and private key
    /// in these PEM files (the key as PKCS#8, PKCS#1 or SEC1). Called again,
    /// it adds a certificate chosen by the name the client asks for (SNI):
    /// the first whose names cover it. A client that names no host gets the
    /// first certificate; one that names a host no certificate covers is
    /// refused (`tls_error`). The files are read when the server starts:
    /// [`serve`](Self::serve) reports one that is missing or does not parse.
    /// The protocol's ALPN names ([`Protocol::alpn`]) are offered.
    ///
    /// ```no_run
    /// use taskweave::task::Server;
    /// # #[path = "../protocol/doc_lines.rs"] mod lines;
    /// # use lines::{Line, Lines};
    ///
    /// let server = Server::builder()
    ///     .tls("certs/example.com.pem", "certs/example.com.key")
    ///     .tls("certs/example.org.pem", "certs/example.org.key")
    ///     .serve("0.0.0.0:8443", Lines, |task, _series| {
    ///         *task.response() = Line::new("hello over TLS");
    ///     })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tls(mut self, cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.push(comm::PemPair {
            cert_chain: cert_chain.into(),
            key: key.into(),
        });
        self
    }

    /// Starts serving `proto` on `addr` (the first address it resolves to),
    /// one listener per poller. `process` handles each request; the reply is
    /// written when the task's series ends. Port 0 picks a free port: ask
    /// the returned [`ServerHandle`] for its
    /// [`local_addr`](ServerHandle::local_addr).
    ///
    /// An echo server: two requests pipelined on one connection are
    /// answered in order.
    ///
    /// ```
    /// # #[path = "../protocol/doc_lines.rs"] mod lines;
    /// use lines::{Line, Lines}; // the line protocol of `Protocol`'s example
    /// use std::io::{BufRead, BufReader, Write};
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    /// use taskweave::task::Server;
    ///
    /// let server = Server::builder().serve("127.0.0.1:0", Lines, |task, _series| {
    ///     let (req, resp) = task.parts();
    ///     *resp = Line::new(req.text().as_bytes());
    /// })?;
    ///
    /// let mut conn = TcpStream::connect(server.local_addr())?;
    /// conn.write_all(b"one\ntwo\n")?;
    /// let mut answers = BufReader::new(&conn).lines();
    /// assert_eq!(answers.next().transpose()?.as_deref(), Some("one"));
    /// assert_eq!(answers.next().transpose()?.as_deref(), Some("two"));
    ///
    /// server.shutdown(Duration::from_secs(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve<P, F>(
        self,
        addr: impl ToSocketAddrs,
        proto: P,
        process: F,
    ) -> io::Result<ServerHandle>
    where
        P: Protocol,
        F: Fn(&mut ServerTask<P>, &mut Series) + Send + Sync + 'static,
    {
        let addr: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        })?;
        let tls = comm::server_tls(&self.tls, proto.alpn())?;
        let spec = comm::ServerSpec {
            config: self.config,
            max_connections: self.max_connections,
            backlog: self.backlog,
            log: self.log,
            max_rps: self.max_rps,
            rate_limited: self.rate_limited,
            reuse_port: self.reuse_port,
            tls,
        };
        let app = App::<P> {
            process: Arc::new(Process {
                run: Box::new(process),
                spares: ArrayQueue::new(SPARES_KEPT),
            }),
        };
        comm::serve(addr, spec, proto, app)
    }
}

/// The task side of a server: what `comm` hands each request to.
struct App<P: Protocol> {
    process: Arc<Process<P>>,
}

impl<P: Protocol> Service<P> for App<P> {
    type Exchange = ServerTask<P>;

    fn receive(&self, proto: &P) -> Box<ServerTask<P>> {
        ServerTask::receiving(&self.process, proto)
    }

    fn inline(&self) -> bool {
        handlers_inline()
    }

    fn defer(&self, f: Box<dyn FnOnce() + Send>) {
        spawn_handler(move || {
            crate::poller::contain("a stream's writable callback", f);
        });
    }
}

/// One request being served: `process` reads the request and fills the
/// response, which is written when the task's series ends; or it answers
/// with a [`Stream`].
///
/// `process` gets the task and the new series it heads. It can answer at
/// once, or push tasks onto the series and fill the response from their
/// callbacks, which find the task with [`of_series`](Self::of_series) (or,
/// from a series of their own, through a
/// [`reply_handle`](Self::reply_handle)); or answer in pieces with
/// [`stream`](Self::stream). HTTP's is
/// [`http::ServerTask`](crate::http::ServerTask).
///
/// Here each request is a number, squared on the compute pool before the
/// answer goes out; pipelined requests are still answered in order:
///
/// ```
/// # #[path = "../protocol/doc_lines.rs"] mod lines;
/// use lines::{Line, Lines}; // the line protocol of `Protocol`'s example
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use taskweave::task::{Server, ServerTask};
/// use taskweave::{go, Series};
///
/// let server = Server::builder().serve("127.0.0.1:0", Lines, |task, series| {
///     let Ok(n) = task.request().text().parse::<u64>() else {
///         *task.response() = Line::new("not a number");
///         return; // answered when the series ends, that is now
///     };
///     series.push_back(go(move || n * n, |t, s: &mut Series| {
///         if let (Some(task), Some(square)) = (ServerTask::<Lines>::of_series(s), t.take_output()) {
///             *task.response() = Line::new(square.to_string());
///         }
///     }));
/// })?;
///
/// let mut conn = TcpStream::connect(server.local_addr())?;
/// conn.write_all(b"12\nzebra\n")?;
/// let mut answers = BufReader::new(&conn).lines();
/// assert_eq!(answers.next().transpose()?.as_deref(), Some("144"));
/// assert_eq!(answers.next().transpose()?.as_deref(), Some("not a number"));
///
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ServerTask<P: Protocol> {
    req: P::Request,
    /// Made ready for the request when it is complete (it may depend on it).
    resp: P::Response,
    process: Option<Arc<Process<P>>>,
    /// The right to answer, from the request's completion until the answer
    /// is out; a task kept for reuse holds none.
    reply: Option<Reply<P, App<P>>>,
    /// Where the task waits for its series to end once a [`ReplyHandle`]
    /// exists.
    handle: Option<Slot<P>>,
}

/// Where a task with a [`ReplyHandle`] waits for its series to end.
type Slot<P> = Arc<HandleSlot<P>>;

/// A task's place while handles may reach it. The lock is never held while
/// user code runs: `with` takes the task out and puts it back, and a series
/// that ends meanwhile leaves the answer to it.
struct HandleSlot<P: Protocol> {
    state: Mutex<SlotState<P>>,
    /// Signalled when a borrowed task is back.
    back: Condvar,
}

enum SlotState<P: Protocol> {
    /// `process` has not returned yet.
    Before,
    Ready(Box<ServerTask<P>>),
    /// A `with` on thread `by` has the task; `ended` is set when the series
    /// ended meanwhile (with whether it failed).
    Borrowed {
        by: std::thread::ThreadId,
        ended: Option<bool>,
    },
    /// The answer is out.
    Done,
}

impl<P: Protocol> HandleSlot<P> {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The series ended (`failed`): answer now, or leave it to the `with`
    /// that has the task.
    fn end(&self, failed: bool) {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, SlotState::Done) {
            SlotState::Ready(task) => {
                drop(state);
                task.answer(failed);
            }
            SlotState::Borrowed { by, .. } => {
                *state = SlotState::Borrowed {
                    by,
                    ended: Some(failed),
                }
            }
            SlotState::Before | SlotState::Done => {}
        }
    }
}

impl<P: Protocol> ServerTask<P> {
    /// The task for a request whose first byte just arrived: the one this
    /// thread kept from its last reply, one a handler thread gave back, or a
    /// new one.
    fn receiving(process: &Arc<Process<P>>, proto: &P) -> Box<Self> {
        let mut task = match take_spare::<Self>().or_else(|| process.spares.pop()) {
            Some(mut task) => {
                proto.reuse_request(&mut task.req);
                task
            }
            None => {
                let req = proto.new_request();
                let resp = proto.new_response(&req);
                Box::new(ServerTask {
                    req,
                    resp,
                    process: None,
                    reply: None,
                    handle: None,
                })
            }
        };
        // A task kept inline still holds its server's handler: no reference
        // count to touch per request.
        if !task
            .process
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, process))
        {
            task.process = Some(process.clone());
        }
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
    /// The request and the response at once (to build one from the other).
    pub fn parts(&mut self) -> (&P::Request, &mut P::Response) {
        (&self.req, &mut self.resp)
    }
    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.reply.as_ref()?.peer_addr()
    }
    /// The connection's id, as in its access-log record (0 once answered).
    pub fn conn_id(&self) -> u64 {
        self.reply.as_ref().map_or(0, Reply::conn_id)
    }
    /// When the request was complete.
    pub fn received_at(&self) -> Option<Instant> {
        self.reply.as_ref().map(Reply::received_at)
    }
    /// Whether the answer has gone out (or a stream has started).
    pub fn is_answered(&self) -> bool {
        self.reply.is_none()
    }

    /// Answers with a stream: the response's head goes out now (HTTP/1.1:
    /// chunked; HTTP/1.0: ended by the close; `HEAD`: the head only) and the
    /// body follows in the pieces sent on the returned [`Stream`], from any
    /// thread, until [`Stream::finish`]. When the series ends nothing more is
    /// written. `Err(Closed)` if the task has already answered or the
    /// connection is gone.
    ///
    /// A piece now, another from a timer's callback 10 ms later; the client
    /// task gets the whole body:
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use taskweave::http::{self, Server, ServerTask};
    /// use taskweave::{timer, Series};
    ///
    /// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, series: &mut Series| {
    ///     let Ok(stream) = task.stream() else { return };
    ///     stream.send("tick 1\n").ok();
    ///     series.push_back(timer(Duration::from_millis(10), move |_, _| {
    ///         stream.send("tick 2\n").ok();
    ///         stream.finish();
    ///     }));
    /// })?;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let get = http::get(&format!("http://{}/", server.local_addr()), move |t, _| {
    ///     let _ = tx.send(t.take_response().map(|r| r.body().clone()));
    /// });
    /// Series::new(get).start();
    /// assert_eq!(rx.recv()?.as_deref(), Some(b"tick 1\ntick 2\n".as_slice()));
    /// server.shutdown(Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream(&mut self) -> Result<Stream, SendError> {
        let reply = self.reply.take().ok_or(SendError::Closed)?;
        reply.stream(&self.req, &mut self.resp, None)
    }

    /// Answers with a stream under flow control: like
    /// [`stream`](Self::stream), but sends are held in the stream's bounded
    /// queue and released by the connection's poller at the rate `flow`
    /// sets, with its overflow policy, heartbeat and stall timeout. A send
    /// then never writes from the caller's thread, so one publisher can feed
    /// many streams without waiting on any.
    ///
    /// Three pieces sent at once go out 50 ms apart:
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::{Duration, Instant};
    /// use taskweave::comm::FlowControl;
    /// use taskweave::http::{self, Server, ServerTask};
    /// use taskweave::Series;
    ///
    /// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
    ///     // Twenty pieces a second, one at a time, however fast they are sent.
    ///     let Ok(stream) = task.stream_with(FlowControl::new().message_rate(20, 1)) else {
    ///         return;
    ///     };
    ///     for i in 1..=3 {
    ///         stream.send(format!("tick {i}\n")).ok();
    ///     }
    ///     stream.finish(); // ends after the last tick, about 100 ms from now
    /// })?;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let start = Instant::now();
    /// let get = http::get(&format!("http://{}/", server.local_addr()), move |t, _| {
    ///     let _ = tx.send(t.take_response().map(|r| r.body().clone()));
    /// });
    /// Series::new(get).start();
    /// assert_eq!(rx.recv()?.as_deref(), Some(b"tick 1\ntick 2\ntick 3\n".as_slice()));
    /// assert!(start.elapsed() >= Duration::from_millis(90));
    /// server.shutdown(Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_with(&mut self, flow: FlowControl) -> Result<Stream, SendError> {
        let reply = self.reply.take().ok_or(SendError::Closed)?;
        reply.stream(&self.req, &mut self.resp, Some(flow))
    }

    /// A handle that reaches this task from any later callback of its
    /// series, a `Parallel` member's included, until the answer goes out: the
    /// explicit, typed way for a task run after `process` to fill the
    /// response or start a stream. Create it in `process`: the task moves to
    /// the handle when `process` returns.
    ///
    /// A front server that answers with what a backend said, fetched by a
    /// member of a [`Parallel`](crate::task::Parallel) (a series of its
    /// own, where [`of_series`](Self::of_series) finds nothing):
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use taskweave::http::{self, Server, ServerTask};
    /// use taskweave::{Parallel, Series};
    ///
    /// let backend = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
    ///     task.response().set_body("from the backend");
    /// })?;
    /// let backend_url = format!("http://{}/", backend.local_addr());
    ///
    /// let front = Server::builder().serve("127.0.0.1:0", move |task: &mut ServerTask, series: &mut Series| {
    ///     let reply = task.reply_handle();
    ///     let fetch = http::get(&backend_url, move |t: &mut http::ClientTask, _: &mut Series| {
    ///         let body = t.take_response().map(|r| r.body().clone()).unwrap_or_default();
    ///         reply.with(|task| {
    ///             task.response().set_body(body);
    ///         });
    ///     });
    ///     series.push_back(Parallel::new(|_, _| {}).with(Series::new(fetch)));
    /// })?;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let get = http::get(&format!("http://{}/", front.local_addr()), move |t, _| {
    ///     let _ = tx.send(t.take_response().map(|r| r.body().clone()));
    /// });
    /// Series::new(get).start();
    /// assert_eq!(rx.recv()?.as_deref(), Some(b"from the backend".as_slice()));
    /// front.shutdown(Duration::from_secs(1));
    /// backend.shutdown(Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply_handle(&mut self) -> ReplyHandle<P> {
        let slot = self
            .handle
            .get_or_insert_with(|| {
                Arc::new(HandleSlot {
                    state: Mutex::new(SlotState::Before),
                    back: Condvar::new(),
                })
            })
            .clone();
        ReplyHandle { slot }
    }

    /// The server task waiting to reply at the end of `series`, for callbacks
    /// of tasks that `process` pushed onto the same series. `None` in any
    /// other series (a `Parallel` member's, say) and once a
    /// [`ReplyHandle`] exists: use [`reply_handle`](Self::reply_handle) there.
    /// The [type's example](ServerTask) answers from a go task's callback
    /// this way.
    pub fn of_series(series: &mut Series) -> Option<&mut ServerTask<P>> {
        series.finisher_mut::<ServerTask<P>>()
    }

    /// Sends the answer (unless a stream took it), or the protocol's 500 if
    /// the series failed, and keeps the task for reuse.
    #[inline]
    fn answer(mut self: Box<Self>, failed: bool) {
        if let Some(reply) = self.reply.take() {
            if failed {
                drop(reply); // answers 500 and closes
            } else {
                reply.send(&self.req, &mut self.resp);
            }
        }
        self.handle = None;
        // Inline, the next request on this poller thread takes this task; a
        // handler thread gives it back to the server, for its pollers.
        if handlers_inline() {
            keep_spare(self);
        } else if let Some(process) = self.process.take() {
            let _ = process.spares.push(self);
        }
    }
}

impl<P: Protocol> Exchange<P, App<P>> for ServerTask<P> {
    fn request_mut(&mut self) -> &mut P::Request {
        &mut self.req
    }

    fn run(mut self: Box<Self>, reply: Reply<P, App<P>>) {
        reply.proto().reuse_response(&self.req, &mut self.resp);
        self.reply = Some(reply);
        if handlers_inline() {
            Series::start_boxed(self);
        } else {
            spawn_handler_job(self);
        }
    }

    fn recycle(self: Box<Self>) {
        // Refused over the rate on the poller thread: inline, the next
        // request there takes this task, as after an answer.
        if handlers_inline() {
            keep_spare(self);
        }
    }
}

/// Handed to a handler thread as it is: the thread starts its series.
impl<P: Protocol> Job for ServerTask<P> {
    fn run(self: Box<Self>) {
        Series::start_boxed(self);
    }
}

impl<P: Protocol> Task for ServerTask<P> {
    fn run(mut self: Box<Self>, mut series: Box<Series>) -> Step {
        if let Some(process) = self.process.clone() {
            series.guard(|s| (process.run)(&mut self, s));
        }
        match self.handle.clone() {
            Some(slot) => {
                *slot.lock() = SlotState::Ready(self);
                series.set_finisher(Box::new(HandleFinisher { slot: Some(slot) }));
            }
            None => series.set_finisher(self),
        }
        Step::Next(series)
    }
}

impl<P: Protocol> Finisher for ServerTask<P> {
    fn finish(self: Box<Self>, series: Box<Series>) {
        let failed = series.error().is_some();
        series.recycle();
        self.answer(failed);
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Finishes a task that waits in its reply handle's slot (`None` once it
/// has).
struct HandleFinisher<P: Protocol> {
    slot: Option<Slot<P>>,
}

impl<P: Protocol> Finisher for HandleFinisher<P> {
    fn finish(mut self: Box<Self>, series: Box<Series>) {
        if let Some(slot) = self.slot.take() {
            slot.end(series.error().is_some());
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<P: Protocol> Drop for HandleFinisher<P> {
    /// A series dropped before it ended still answers (500), rather than
    /// leaving the task and its connection waiting in the slot.
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.end(true);
        }
    }
}

/// Reaches a [`ServerTask`] from any later callback of its series, a
/// [`Parallel`](crate::task::Parallel) member's included, until the answer
/// goes out. `Send + Sync + Clone`. Made by
/// [`ServerTask::reply_handle`], whose example fills a response through one;
/// [`with`](ReplyHandle::with) is its one method.
pub struct ReplyHandle<P: Protocol> {
    slot: Slot<P>,
}

impl<P: Protocol> Clone for ReplyHandle<P> {
    fn clone(&self) -> Self {
        ReplyHandle {
            slot: self.slot.clone(),
        }
    }
}

impl<P: Protocol> std::fmt::Debug for ReplyHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyHandle")
    }
}

impl<P: Protocol> ReplyHandle<P> {
    /// Runs `f` with the server task: to fill its response, or to start a
    /// stream. `None` before `process` has returned (the task is still
    /// `process`'s own), after the series has ended (the answer is out), and
    /// when called from inside `f` itself. Calls from several threads take
    /// turns. No lock is held while `f` runs: if the series ends meanwhile,
    /// the answer goes out when `f` returns.
    pub fn with<R>(&self, f: impl FnOnce(&mut ServerTask<P>) -> R) -> Option<R> {
        let me = std::thread::current().id();
        let mut state = self.slot.lock();
        let task = loop {
            match std::mem::replace(&mut *state, SlotState::Done) {
                SlotState::Ready(task) => {
                    *state = SlotState::Borrowed {
                        by: me,
                        ended: None,
                    };
                    break task;
                }
                SlotState::Borrowed { by, ended } => {
                    *state = SlotState::Borrowed { by, ended };
                    if by == me {
                        return None;
                    }
                    state = self
                        .slot
                        .back
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
                other => {
                    *state = other;
                    return None;
                }
            }
        };
        drop(state);
        // Put the task back (or answer for a series that ended) even if `f`
        // panics.
        struct Return<'a, P: Protocol> {
            slot: &'a HandleSlot<P>,
            task: Option<Box<ServerTask<P>>>,
        }
        impl<P: Protocol> Drop for Return<'_, P> {
            fn drop(&mut self) {
                let Some(task) = self.task.take() else { return };
                let mut state = self.slot.lock();
                match std::mem::replace(&mut *state, SlotState::Done) {
                    SlotState::Borrowed {
                        ended: Some(failed),
                        ..
                    } => {
                        drop(state);
                        task.answer(failed || std::thread::panicking());
                    }
                    _ => *state = SlotState::Ready(task),
                }
                self.slot.back.notify_all();
            }
        }
        let mut back = Return {
            slot: &self.slot,
            task: Some(task),
        };
        back.task.as_deref_mut().map(f)
    }
}

thread_local! {
    /// The last finished task, kept for the next request on this thread: it
    /// saves allocating, moving and freeing a task of about a kilobyte, and
    /// its request and response keep their buffers. Typed `Any` because a
    /// thread may serve several protocols; it holds no connection.
    static SPARE_TASK: std::cell::RefCell<Option<Box<dyn Any>>> =
        const { std::cell::RefCell::new(None) };
}

/// Keeps `task` (which holds no reply) for reuse.
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
