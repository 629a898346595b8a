//! A client task for any [`Protocol`]: one request to a target, its reply,
//! and a callback, over `comm`'s pooled, pipelining connections.

use super::{deliver, Series, Step, Task};
use crate::comm::{self, ClientConfig, Job, JobInfo, PushHandler, Target, Timings};
use crate::error::Error;
use crate::protocol::Protocol;
use std::net::SocketAddr;
use std::sync::Arc;

type Callback<P> = Box<dyn FnOnce(&mut ClientTask<P>, &mut Series) + Send>;

/// One request to a target and, once it ran, its reply.
///
/// The target is a host name or an address with a port: names are resolved
/// (cached, with a timeout) before a new connection is opened. Requests to
/// one target share a pool of connections (see [`ClientConfig`]); a protocol
/// that allows it pipelines several requests on one connection, replies
/// matched in order.
///
/// The callback runs when the reply is complete or the request failed; it
/// reads [`result`](Self::result) (or takes the reply out with
/// [`take_response`](Self::take_response)) and may push more tasks onto the
/// series. HTTP's is [`http::ClientTask`](crate::http::ClientTask), Redis's
/// [`RedisTask`](crate::redis::RedisTask).
///
/// ```
/// # #[path = "../protocol/doc_lines.rs"] mod lines;
/// use lines::{Line, Lines}; // the line protocol of `Protocol`'s example
/// use std::sync::{mpsc, Arc};
/// use std::time::Duration;
/// use taskweave::task::{ClientTask, Server};
/// use taskweave::Series;
///
/// // Something to ask: a server that answers each line reversed.
/// let server = Server::builder().serve("127.0.0.1:0", Lines, |task, _| {
///     let reversed: String = task.request().text().chars().rev().collect();
///     *task.response() = Line::new(reversed);
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let ask = ClientTask::new(Arc::new(Lines), server.local_addr(), Line::new("stressed"), move |t, _| {
///     match t.result() {
///         Ok(line) => println!("{} after {:?}", line.text(), t.timings().total),
///         Err(e) => eprintln!("failed: {e}"), // which phase: connect, timeout, reset...
///     }
///     let _ = tx.send(t.take_response().map(|line| line.text().into_owned()));
/// });
/// Series::new(ask).start();
/// assert_eq!(rx.recv()?.as_deref(), Some("desserts"));
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ClientTask<P: Protocol> {
    proto: Arc<P>,
    target: Target,
    config: Arc<ClientConfig>,
    req: P::Request,
    resp: Option<P::Response>,
    error: Option<Error>,
    info: JobInfo,
    callback: Option<Callback<P>>,
    push: Option<PushHandler<P>>,
    /// The series, while the request is out.
    series: Option<Box<Series>>,
}

impl<P: Protocol> ClientTask<P> {
    /// A task sending `req` to `target` with protocol `proto`; `callback` runs
    /// when the reply is complete or the request failed.
    pub fn new(
        proto: Arc<P>,
        target: impl Into<Target>,
        req: P::Request,
        callback: impl FnOnce(&mut ClientTask<P>, &mut Series) + Send + 'static,
    ) -> Self {
        ClientTask {
            proto,
            target: target.into(),
            config: ClientConfig::shared_default(),
            req,
            resp: None,
            error: None,
            info: JobInfo::default(),
            callback: Some(Box::new(callback)),
            push: None,
            series: None,
        }
    }

    /// Uses `config` (and its pools) instead of the shared default.
    pub fn with_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = config;
        self
    }

    /// Sends the pushes that arrive on this request's connection, from now
    /// on, to `f` (on the connection's poller thread: hand heavy work on).
    /// A subscription installs its handler this way.
    pub fn on_push(mut self, f: impl FnMut(P::Response) + Send + 'static) -> Self {
        self.push = Some(Box::new(f));
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
    /// The reply, or why there is none.
    pub fn result(&self) -> Result<&P::Response, &Error> {
        match (&self.resp, &self.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => Err(&Error::Cancelled),
        }
    }
    /// Takes the reply out (without copying it). Read
    /// [`result`](Self::result) first: afterwards it reports `Cancelled`.
    pub fn take_response(&mut self) -> Option<P::Response> {
        self.resp.take()
    }
    /// Whether the request went out on a connection that had served an
    /// earlier request.
    pub fn reused(&self) -> bool {
        self.info.reused
    }
    /// Where the request's time went.
    pub fn timings(&self) -> Timings {
        self.info.timings
    }
    /// How many times the request was sent again on a new connection.
    pub fn retries(&self) -> u32 {
        self.info.retries
    }
    /// The target, as given.
    pub fn target(&self) -> &Target {
        &self.target
    }
    /// The address the request went to, once it was resolved.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.info.peer
    }
}

impl<P: Protocol> Task for ClientTask<P> {
    fn run(mut self: Box<Self>, mut series: Box<Series>) -> Step {
        // A request the protocol refuses fails here, inside the series
        // loop, so a long series of such tasks does not recurse.
        if let Err(e) = self.proto.check_request(&self.req) {
            self.error = Some(Error::InvalidRequest(e.reason.into_owned()));
            if let Some(cb) = self.callback.take() {
                series.guard(|s| cb(&mut self, s));
            }
            return Step::Next(series);
        }
        self.series = Some(series);
        let (proto, target, config) =
            (self.proto.clone(), self.target.clone(), self.config.clone());
        comm::submit(proto, target, config, self);
        Step::Pending
    }
}

impl<P: Protocol> Job<P> for ClientTask<P> {
    fn proto(&self) -> &P {
        &self.proto
    }

    fn request(&self) -> &P::Request {
        &self.req
    }

    fn info_mut(&mut self) -> &mut JobInfo {
        &mut self.info
    }

    fn info(&self) -> &JobInfo {
        &self.info
    }

    fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn request_mut(&mut self) -> &mut P::Request {
        &mut self.req
    }

    fn take_push_handler(&mut self) -> Option<PushHandler<P>> {
        self.push.take()
    }

    fn complete(mut self: Box<Self>, result: Result<P::Response, Error>) {
        match result {
            Ok(resp) => self.resp = Some(resp),
            Err(e) => self.error = Some(e),
        }
        let Some(series) = self.series.take() else {
            return;
        };
        deliver(series, move |s| {
            if let Some(cb) = self.callback.take() {
                cb(&mut self, s);
            }
        });
    }
}
