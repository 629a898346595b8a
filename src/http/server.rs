//! The HTTP/1.1 server: the generic protocol server with HTTP's decisions.
//!
//! A `process` callback gets a [`ServerTask`] whose response is written when
//! its series ends, so `process` can push client tasks or timers before the
//! reply (Workflow's proxy pattern). Keep-alive, pipelining (in order),
//! `Expect: 100-continue`, HEAD and chunked request bodies come from the
//! message layer; bad input is answered with its 4xx and the connection closed.

use super::{Limits, Request, Response};
use crate::comm::{ConnConfig, RateLimited};
use crate::metrics::AccessLog;
use crate::protocol::{Protocol, ProtocolError};
use crate::task::{self, Series};
use std::io;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

/// HTTP as the generic server sees it.
#[derive(Debug, Clone, Default)]
pub struct ServerProto {
    limits: Limits,
}

impl Protocol for ServerProto {
    type Request = Request;
    type Response = Response;

    fn name(&self) -> &'static str {
        "http"
    }

    fn alpn(&self) -> &'static [&'static [u8]] {
        &[b"http/1.1"]
    }

    fn new_request(&self) -> Request {
        Request::parser_with(self.limits)
    }

    fn new_response(&self, req: &Request) -> Response {
        Response::for_request(req)
    }

    fn reuse_request(&self, req: &mut Request) {
        req.reuse();
    }

    fn reuse_response(&self, req: &Request, resp: &mut Response) {
        resp.reuse_for(req);
    }

    fn keep_alive(&self, req: &Request, resp: &Response) -> bool {
        req.keep_alive() && resp.keep_alive()
    }

    fn reject(&self, err: &ProtocolError) -> Option<Response> {
        Some(Response::from_error(err))
    }

    fn refuse(
        &self,
        req: &Request,
        err: &ProtocolError,
        retry_after: Duration,
    ) -> Option<Response> {
        Some(Response::refusal(req, err.code, retry_after))
    }
}

/// One HTTP request being served: the generic
/// [`task::ServerTask`] over HTTP, whose page lists its methods. The ones
/// a handler uses most:
///
/// - [`request`](task::ServerTask::request): the [`Request`], complete
///   (its body read, chunked or not); [`request_mut`](task::ServerTask::request_mut)
///   to take its body without a copy.
/// - [`response`](task::ServerTask::response): the [`Response`] to fill,
///   made for this request (200, the request's version and keep-alive, no
///   body on the wire for `HEAD`); written when the series ends.
///   [`parts`](task::ServerTask::parts) gives both at once.
/// - [`peer_addr`](task::ServerTask::peer_addr),
///   [`conn_id`](task::ServerTask::conn_id) (as in the access log),
///   [`received_at`](task::ServerTask::received_at).
/// - [`stream`](task::ServerTask::stream) and
///   [`stream_with`](task::ServerTask::stream_with): answer with a body in
///   pieces, chunked ([`sse::start`](super::sse::start) for server-sent
///   events).
/// - [`of_series`](task::ServerTask::of_series) and
///   [`reply_handle`](task::ServerTask::reply_handle): reach the task from
///   callbacks that run after `process`.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///     let req = task.request();
///     if req.method() != "POST" || req.path() != "/upper" {
///         task.response().set_status(404);
///         return;
///     }
///     let upper = req.body().to_ascii_uppercase();
///     let from = task.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
///     task.response()
///         .set_header("Content-Type", "text/plain")
///         .set_header("X-Peer", from)
///         .set_body(upper);
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let post = http::request("POST", &format!("http://{}/upper", server.local_addr()), move |t, _| {
///     let _ = tx.send(t.take_response());
/// })
/// .body("quiet");
/// Series::new(post).start();
/// let resp = rx.recv()?.ok_or("no response")?;
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.header("x-peer"), Some(&b"127.0.0.1"[..]));
/// assert_eq!(&resp.body()[..], b"QUIET");
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type ServerTask = task::ServerTask<ServerProto>;

/// Reaches an HTTP server task from later callbacks of its series: the
/// generic [`task::ReplyHandle`] over HTTP. Made by
/// [`ServerTask::reply_handle`](task::ServerTask::reply_handle), whose
/// example answers with what a `Parallel` member fetched; its one method is
/// [`with`](task::ReplyHandle::with).
pub type ReplyHandle = task::ReplyHandle<ServerProto>;

/// A running HTTP server, as [`ServerBuilder::serve`] returns it: the
/// generic [`task::ServerHandle`], whose page lists its methods:
/// [`local_addr`](task::ServerHandle::local_addr),
/// [`open_connections`](task::ServerHandle::open_connections),
/// [`requests_rate_limited`](task::ServerHandle::requests_rate_limited)
/// and [`shutdown`](task::ServerHandle::shutdown). [`Server`]'s example
/// uses it.
pub type ServerHandle = task::ServerHandle;

/// Entry point for HTTP servers: [`Server::builder`] gives a
/// [`ServerBuilder`], whose [`serve`](ServerBuilder::serve) starts one.
///
/// A server that greets whatever path it is asked for, asked once by the
/// crate's own client task:
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// let server = Server::builder()
///     .keep_alive_timeout(Duration::from_secs(10))
///     .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///         let greeting = format!("hello, {}", task.request().path());
///         task.response().set_body(greeting);
///     })?;
///
/// let (tx, rx) = mpsc::channel();
/// let url = format!("http://{}/world", server.local_addr());
/// let get = http::get(&url, move |t, _| {
///     let _ = tx.send(t.result().map(|r| r.body().clone()).map_err(|e| e.clone()));
/// });
/// Series::new(get).start();
/// assert_eq!(&rx.recv()??[..], b"hello, /world");
///
/// assert!(server.shutdown(Duration::from_secs(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the default limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Limits, timeouts and the access log of an HTTP server. Every limit has a
/// default; see each setter.
#[derive(Debug)]
pub struct ServerBuilder {
    inner: task::ServerBuilder,
    limits: Limits,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            inner: task::Server::builder(),
            limits: Limits::default(),
        }
    }
}

impl ServerBuilder {
    /// Most connections open at once (default 10,000); at the limit the oldest
    /// idle keep-alive connection is evicted, else the new one is refused.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.inner = self.inner.max_connections(n);
        self
    }
    /// How long an idle keep-alive connection stays open (default 60 s).
    pub fn keep_alive_timeout(mut self, d: Duration) -> Self {
        self.inner = self.inner.keep_alive_timeout(d);
        self
    }
    /// How long a request may take to arrive in full, from its first byte (and
    /// from accept to the first request): the slowloris bound. Default 30 s.
    pub fn receive_timeout(mut self, d: Duration) -> Self {
        self.inner = self.inner.receive_timeout(d);
        self
    }
    /// How long a TLS handshake may take, from accept (default 10 s); see
    /// [`task::ServerBuilder::handshake_timeout`].
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.inner = self.inner.handshake_timeout(d);
        self
    }
    /// How long queued response bytes may wait without progress (default 30 s).
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.inner = self.inner.send_timeout(d);
        self
    }
    /// Output watermarks in bytes (defaults 64 KiB / 256 KiB).
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.inner = self.inner.watermarks(low, high);
        self
    }
    /// Queued output past which a stream's sends are refused (default 16 MiB).
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.inner = self.inner.max_queued(bytes);
        self
    }
    /// Replaces all connection settings at once.
    pub fn conn_config(mut self, config: ConnConfig) -> Self {
        self.inner = self.inner.conn_config(config);
        self
    }
    /// Message limits: head size and header count (431), target (414), body
    /// (413), chunk extensions and trailers.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Where each connection's record goes when it closes.
    pub fn access_log(mut self, log: impl AccessLog) -> Self {
        self.inner = self.inner.access_log(log);
        self
    }
    /// At most `n` requests a second over the whole server (0, the default:
    /// no limit). Beyond it a request gets `429 Too Many Requests` with
    /// `Retry-After` (whole seconds until a request would be admitted,
    /// rounded up) before `process` runs, and the connection stays open as
    /// the request allows. See [`task::ServerBuilder::max_rps`].
    pub fn max_rps(mut self, n: u32) -> Self {
        self.inner = self.inner.max_rps(n);
        self
    }
    /// Whether the port may be shared with other listeners that ask for it
    /// too; by default a busy port is an `AddrInUse` error (see
    /// [`task::ServerBuilder::reuse_port`]).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.inner = self.inner.reuse_port(on);
        self
    }
    /// Serves HTTPS: TLS 1.2/1.3 with the certificate chain and key in these
    /// PEM files, ALPN `http/1.1`; called again, it adds a certificate
    /// chosen by SNI. See [`task::ServerBuilder::tls`].
    ///
    /// ```no_run
    /// use taskweave::http::{Server, ServerTask};
    /// use taskweave::Series;
    ///
    /// let server = Server::builder()
    ///     .tls("cert.pem", "key.pem")
    ///     .serve("0.0.0.0:8443", |task: &mut ServerTask, _: &mut Series| {
    ///         task.response().set_body("hello over TLS");
    ///     })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tls(mut self, cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.inner = self.inner.tls(cert_chain, key);
        self
    }
    /// The live count of requests refused over [`max_rps`](Self::max_rps),
    /// readable from anywhere, this server's own handlers included.
    pub fn rate_limited(&self) -> RateLimited {
        self.inner.rate_limited()
    }

    /// Serves HTTP on `addr` (the first address it resolves to): one
    /// listener per poller, `process` run for each request, the response
    /// written when the request's series ends. Port 0 picks a free port
    /// (see [`local_addr`](task::ServerHandle::local_addr)).
    ///
    /// Seen from a plain socket: a request that asks to close gets its
    /// answer, and then the close.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    /// use taskweave::http::{Server, ServerTask};
    /// use taskweave::Series;
    ///
    /// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
    ///     task.response().set_header("Content-Type", "text/plain").set_body("pong");
    /// })?;
    ///
    /// let mut conn = TcpStream::connect(server.local_addr())?;
    /// conn.write_all(b"GET /ping HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    /// let mut answer = String::new();
    /// conn.read_to_string(&mut answer)?; // to the close
    /// assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
    /// assert!(answer.contains("\r\nContent-Length: 4\r\n"));
    /// assert!(answer.ends_with("\r\n\r\npong"));
    ///
    /// server.shutdown(Duration::from_secs(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve<F>(self, addr: impl ToSocketAddrs, process: F) -> io::Result<ServerHandle>
    where
        F: Fn(&mut ServerTask, &mut Series) + Send + Sync + 'static,
    {
        let proto = ServerProto {
            limits: self.limits,
        };
        self.inner.serve(addr, proto, process)
    }
}

#[cfg(test)]
mod tests {
    /// Each request allocates its task once (a request and a response
    /// inside); above 1,032 bytes glibc serves it from the slow path instead
    /// of the per-thread cache.
    #[test]
    fn a_request_task_stays_in_the_fast_malloc_path() {
        let task = std::mem::size_of::<super::ServerTask>();
        assert!(task <= 1032, "ServerTask is {task} bytes");
    }
}
