//! HTTP client tasks: URL, the pooled generic client, redirects.
//!
//! `http::get(url, callback)` returns a task to put in a series. It sends the
//! request with the generic client task over the per-target pool (names
//! resolved by `comm`, cached, with a timeout; a stale pooled connection is
//! retried for idempotent methods, `retry_max`), follows redirects if asked
//! (`redirect_max`), and runs the callback with the response or an [`Error`]
//! that says which phase failed.

use super::url::Url;
use super::{Limits, Request, Response};
use crate::comm::{ClientConfig, Target, Timings};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::task::{self, Series, Step, Task};
use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// HTTP as the generic client sees it.
#[derive(Debug, Clone, Default)]
pub struct ClientProto {
    limits: Limits,
}

impl Protocol for ClientProto {
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
        Response::parser_with(req.method(), self.limits)
    }

    fn keep_alive(&self, req: &Request, resp: &Response) -> bool {
        req.keep_alive() && resp.keep_alive()
    }

    /// Idempotent methods (RFC 9110 §9.2.2) may be sent again when a pooled
    /// connection turned out closed before any byte of the response.
    fn may_retry(&self, req: &Request) -> bool {
        matches!(
            req.method(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }
}

/// The protocol with default limits, shared by every task that sets none.
fn default_proto() -> Arc<ClientProto> {
    static DEFAULT: OnceLock<Arc<ClientProto>> = OnceLock::new();
    DEFAULT.get_or_init(Default::default).clone()
}

type Callback = Box<dyn FnOnce(&mut ClientTask, &mut Series) + Send>;

/// An HTTP request to a URL and, once it ran, its response.
///
/// Made by [`get`] or [`request`]; set headers, a body, redirects, limits
/// or a [`ClientConfig`] with the builder methods, put it in a series, and
/// read the outcome in its callback: [`result`](Self::result) (a
/// [`Response`], or an error that says which phase failed),
/// [`timings`](Self::timings), [`reused`](Self::reused),
/// [`redirects`](Self::redirects), [`url`](Self::url).
///
/// Following a redirect:
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///     if task.request().path() == "/old" {
///         task.response().set_status(301).set_header("Location", "/new");
///     } else {
///         task.response().set_body("moved here");
///     }
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let get = http::get(&format!("http://{}/old", server.local_addr()), move |t, _| {
///     let body = t.result().map(|r| r.body().clone()).map_err(|e| e.clone());
///     let path = t.url().map(|u| u.target().to_owned());
///     let _ = tx.send((body, t.redirects(), path));
/// })
/// .header("Accept", "text/plain")
/// .redirect_max(3);
/// Series::new(get).start();
///
/// let (body, redirects, path) = rx.recv()?;
/// assert_eq!(&body?[..], b"moved here");
/// assert_eq!(redirects, 1);
/// assert_eq!(path.as_deref(), Some("/new"));
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ClientTask {
    url: Result<Url, Error>,
    method: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
    proto: Arc<ClientProto>,
    config: Arc<ClientConfig>,
    redirect_max: u32,
    redirects: u32,
    resp: Option<Response>,
    error: Option<Error>,
    timings: Timings,
    reused: bool,
    callback: Option<Callback>,
}

impl std::fmt::Debug for ClientTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTask")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("redirects", &self.redirects)
            .finish()
    }
}

/// A `GET` of `url`; `callback` runs with the response or the error.
///
/// A `url` that does not parse (see [`Url`]) fails the task when it runs,
/// with `Error::InvalidRequest`, like any other failure:
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::http;
/// use taskweave::{Error, Series};
///
/// let (tx, rx) = mpsc::channel();
/// let get = http::get("ftp://example.com/", move |t, _| {
///     let _ = tx.send(t.result().err().cloned());
/// });
/// Series::new(get).start();
/// assert!(matches!(rx.recv()?, Some(Error::InvalidRequest(_)))); // http and https only
/// # Ok::<(), std::sync::mpsc::RecvError>(())
/// ```
///
/// [`ClientTask`]'s example gets a page from a server of its own; the
/// callback's [`Series`] can also carry the outcome on, in its context:
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///     task.response().set_status(204);
/// })?;
///
/// let get = http::get(&format!("http://{}/", server.local_addr()), |t, s: &mut Series| {
///     *s.context_mut::<u16>() = t.result().map_or(0, |r| r.status());
/// });
/// let (tx, rx) = mpsc::channel();
/// Series::with_context(get, 0u16)
///     .on_done(move |s| { let _ = tx.send(*s.context::<u16>()); })
///     .start();
/// assert_eq!(rx.recv()?, 204);
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn get(
    url: &str,
    callback: impl FnOnce(&mut ClientTask, &mut Series) + Send + 'static,
) -> ClientTask {
    request("GET", url, callback)
}

/// A request with `method` to `url`; add headers and a body with the builder
/// methods before starting it.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// // Answers with the length of what was put, and its type.
/// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///     let (req, resp) = task.parts();
///     let kind = String::from_utf8_lossy(req.header("content-type").unwrap_or(b"?")).into_owned();
///     resp.set_body(format!("{} {} bytes of {kind}", req.method(), req.body().len()));
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let url = format!("http://{}/notes/1", server.local_addr());
/// let put = http::request("PUT", &url, move |t, _| {
///     let _ = tx.send(t.take_response());
/// })
/// .header("Content-Type", "application/json")
/// .body(r#"{"text":"hi"}"#);
/// Series::new(put).start();
///
/// let resp = rx.recv()?.ok_or("no response")?;
/// assert_eq!(&resp.body()[..], b"PUT 13 bytes of application/json");
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn request(
    method: &str,
    url: &str,
    callback: impl FnOnce(&mut ClientTask, &mut Series) + Send + 'static,
) -> ClientTask {
    ClientTask {
        url: Url::parse(url),
        method: method.to_string(),
        headers: Vec::new(),
        body: Bytes::new(),
        proto: default_proto(),
        config: ClientConfig::shared_default(),
        redirect_max: 0,
        redirects: 0,
        resp: None,
        error: None,
        timings: Timings::default(),
        reused: false,
        callback: Some(Box::new(callback)),
    }
}

impl ClientTask {
    /// Adds a header field (`Host`, `Content-Length` and `Transfer-Encoding` are
    /// set by the client).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }
    /// Sets the body; it is always sent with a `Content-Length`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
    /// Follows up to `n` redirects (301, 302, 303, 307, 308). Default 0.
    pub fn redirect_max(mut self, n: u32) -> Self {
        self.redirect_max = n;
        self
    }
    /// Uses `config` (timeouts, pool size, `retry_max`, access log) and its pools.
    pub fn config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = config;
        self
    }
    /// Response limits (body size, head size).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.proto = Arc::new(ClientProto { limits });
        self
    }

    /// The response, or why there is none.
    pub fn result(&self) -> Result<&Response, &Error> {
        match (&self.resp, &self.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => Err(&Error::Cancelled),
        }
    }
    /// Takes the response out (without copying its body). Read
    /// [`result`](Self::result) first: afterwards it reports `Cancelled`.
    pub fn take_response(&mut self) -> Option<Response> {
        self.resp.take()
    }
    /// Where the last attempt's time went (DNS, connect, first byte, total).
    pub fn timings(&self) -> Timings {
        self.timings
    }
    /// Whether the last attempt used a pooled connection.
    pub fn reused(&self) -> bool {
        self.reused
    }
    /// How many redirects were followed.
    pub fn redirects(&self) -> u32 {
        self.redirects
    }
    /// The URL of the last attempt (after redirects).
    pub fn url(&self) -> Option<&Url> {
        self.url.as_ref().ok()
    }

    fn build(&self, url: &Url) -> Result<Request, Error> {
        let bad = |e: super::BuildError| Error::InvalidRequest(e.to_string());
        let mut req = Request::new(&self.method, url.target()).map_err(bad)?;
        req.try_set_header("Host", url.authority()).map_err(bad)?;
        for (name, value) in &self.headers {
            req.try_append_header(name, value).map_err(bad)?;
        }
        req.set_body(self.body.clone());
        Ok(req)
    }

    fn start(self: Box<Self>, series: Box<Series>) {
        let url = match &self.url {
            Ok(u) => u.clone(),
            Err(e) => {
                let e = e.clone();
                return self.finish(series, None, Some(e));
            }
        };
        let req = match self.build(&url) {
            Ok(r) => r,
            Err(e) => return self.finish(series, None, Some(e)),
        };
        let proto = self.proto.clone();
        let config = self.config.clone();
        let mut target = Target::new(url.host(), url.port());
        if url.is_https() {
            target = target.tls();
        }
        let mut outer = Some((self, series));
        let inner = task::ClientTask::new(proto, target, req, move |t, _| {
            if let Some((mut task, series)) = outer.take() {
                task.timings = t.timings();
                task.reused = t.reused();
                let error = t.result().err().cloned();
                let resp = t.take_response();
                task.after_response(series, resp, error);
            }
        })
        .with_config(config);
        Series::new(inner).start();
    }

    fn after_response(
        mut self: Box<Self>,
        series: Box<Series>,
        resp: Option<Response>,
        error: Option<Error>,
    ) {
        if let (Some(r), Ok(url)) = (&resp, &self.url) {
            let status = r.status();
            let location = r
                .header("location")
                .and_then(|l| std::str::from_utf8(l).ok());
            if matches!(status, 301 | 302 | 303 | 307 | 308) && self.redirects < self.redirect_max {
                if let Some(next) = location.map(|l| url.join(l.trim())) {
                    self.redirects += 1;
                    // 303, and 301/302 after a POST, continue as a GET without a body.
                    if status == 303 || (matches!(status, 301 | 302) && self.method == "POST") {
                        self.method = "GET".into();
                        self.body = Bytes::new();
                    }
                    self.url = next;
                    return self.start(series);
                }
            }
        }
        self.finish(series, resp, error);
    }

    fn finish(
        mut self: Box<Self>,
        mut series: Box<Series>,
        resp: Option<Response>,
        error: Option<Error>,
    ) {
        self.resp = resp;
        self.error = error;
        if let Some(cb) = self.callback.take() {
            series.guard(|s| cb(&mut self, s));
        }
        Series::resume(series);
    }
}

impl Task for ClientTask {
    fn run(mut self: Box<Self>, mut series: Box<Series>) -> Step {
        // A request that cannot be built fails here, inside the series loop, so a
        // long series of such tasks does not recurse.
        let built = self.url.clone().and_then(|u| self.build(&u));
        if let Err(e) = built {
            self.error = Some(e);
            if let Some(cb) = self.callback.take() {
                series.guard(|s| cb(&mut self, s));
            }
            return Step::Next(series);
        }
        self.start(series);
        Step::Pending
    }
}
