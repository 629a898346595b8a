//! Answering a request: one [`Reply`], or a [`Stream`] of pieces.
//!
//! A request's answer is written by whichever thread finishes it, without a
//! hop back to the poller: the reply is encoded into a per-thread head buffer
//! and written at once; only what the socket does not take is queued. An
//! answer that never comes (the exchange was dropped, say by a panic) is
//! answered by [`Reply`]'s `Drop`: the protocol's 500 and a close.

use super::conn::{Arrival, Conn, Done, Quiet, SendError, SendState, StreamSpec, Writable};
use super::flow::FlowControl;
use super::server::ServerShared;
use super::service::Service;
use crate::metrics::CloseReason;
use crate::protocol::{Message, Protocol, ProtocolError};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The right to answer one request on its connection.
///
/// Every request's task carries one, so it is kept small (the task must stay
/// in glibc's per-thread cache): the request's arrival is spread out here
/// rather than kept as an `Option<Arrival>`.
pub(crate) struct Reply<P: Protocol, S: Service<P>> {
    conn: Arc<Conn>,
    server: Arc<ServerShared<P, S>>,
    /// When the request was complete.
    received: Instant,
    /// The request's sizes and unrecorded bytes, for the answer to record
    /// when `record` (inline dispatch).
    head: u64,
    body: u64,
    bytes_in: u32,
    record: bool,
    answered: bool,
}

/// A reply's pieces: the head bytes, then chunks.
#[derive(Default)]
struct ReplyBuf {
    head: Vec<u8>,
    chunks: Vec<Bytes>,
}

/// Head buffers above this are not kept for the next reply.
const REPLY_BUF_KEEP: usize = 16 * 1024;

thread_local! {
    /// Reused for every reply encoded on this thread, so a small reply is
    /// written without an allocation.
    static REPLY_BUF: std::cell::RefCell<ReplyBuf> = std::cell::RefCell::new(ReplyBuf::default());
}

impl<P: Protocol, S: Service<P>> Reply<P, S> {
    pub(super) fn new(
        conn: Arc<Conn>,
        server: Arc<ServerShared<P, S>>,
        arrival: Arrival,
        record: bool,
    ) -> Reply<P, S> {
        Reply {
            conn,
            server,
            received: arrival.at,
            head: arrival.head,
            body: arrival.body,
            bytes_in: arrival.bytes_in,
            record,
            answered: false,
        }
    }

    /// The arrival for the answer to record, once.
    #[inline]
    fn take_arrival(&mut self) -> Option<Arrival> {
        std::mem::take(&mut self.record).then_some(Arrival {
            at: self.received,
            head: self.head,
            body: self.body,
            bytes_in: self.bytes_in,
        })
    }

    /// When the request was complete.
    pub fn received_at(&self) -> Instant {
        self.received
    }

    /// The server's protocol.
    pub fn proto(&self) -> &P {
        self.server.proto()
    }

    /// The connection's id, as in its access-log record.
    pub fn conn_id(&self) -> u64 {
        self.conn.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.peer_addr().ok()
    }

    /// Sends `resp` as the whole answer to `req`.
    #[inline]
    pub fn send(mut self, req: &P::Request, resp: &mut P::Response) {
        let keep_alive = self.proto().keep_alive(req, resp) && !self.server.stopping();
        self.send_response(resp, (!keep_alive).then_some(CloseReason::Local));
    }

    /// Sends `resp`'s head now and returns the stream its body follows in,
    /// paced by `flow` when given.
    pub fn stream(
        mut self,
        req: &P::Request,
        resp: &mut P::Response,
        flow: Option<FlowControl>,
    ) -> Result<Stream, SendError> {
        let framer = resp.start_stream();
        let keep_alive = self.proto().keep_alive(req, resp) && !self.server.stopping();
        let mut head = Vec::new();
        let mut chunks = Vec::new();
        resp.encode_with_head(&mut head, &mut chunks);
        if !head.is_empty() {
            chunks.insert(0, Bytes::from(head));
        }
        let sizes = resp.sizes().unwrap_or_default();
        let arrival = self.take_arrival();
        // From here on the connection has the answer, whatever comes of it.
        self.answered = true;
        let spec = StreamSpec {
            sizes: (sizes.head, sizes.body),
            status: resp.status(),
            framer,
            close_after: !keep_alive,
            flow,
        };
        let id = self.conn.start_stream(&mut chunks, spec, arrival)?;
        Ok(Stream {
            inner: Arc::new(StreamInner {
                conn: self.conn.clone(),
                server: self.server.clone(),
                id,
            }),
        })
    }

    /// Encodes `resp` into this thread's reply buffer and writes it.
    #[inline]
    fn send_response(&mut self, resp: &mut P::Response, close: Option<CloseReason>) {
        let mut buf = REPLY_BUF
            .try_with(|b| b.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        resp.encode_with_head(&mut buf.head, &mut buf.chunks);
        let sizes = resp.sizes().unwrap_or_default();
        let done = Done::Reply {
            head: sizes.head,
            body: sizes.body,
            status: resp.status(),
        };
        let arrival = self.take_arrival();
        self.answered = true;
        let quiet = Quiet {
            received: self.received,
            window: self.server.quiet_window(),
        };
        let _ = self
            .conn
            .reply(&buf.head, &mut buf.chunks, done, close, arrival, quiet);
        buf.head.clear();
        buf.chunks.clear();
        if buf.head.capacity() <= REPLY_BUF_KEEP {
            let _ = REPLY_BUF.try_with(|b| {
                if let Ok(mut b) = b.try_borrow_mut() {
                    *b = buf;
                }
            });
        }
    }
}

impl<P: Protocol, S: Service<P>> Drop for Reply<P, S> {
    /// An exchange dropped unanswered (its series panicked, or it was lost):
    /// the peer gets the protocol's 500, and the connection closes.
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.answered = true;
        // While a panic unwinds, protocol code must not run (a second panic
        // would abort the process): just close.
        let reject = (!std::thread::panicking())
            .then(|| {
                let err = ProtocolError::new(500, "the request's handler failed");
                self.proto().reject(&err)
            })
            .flatten();
        match reject {
            Some(mut resp) => self.send_response(&mut resp, Some(CloseReason::InternalError)),
            None => self.conn.break_with(CloseReason::InternalError),
        }
    }
}

/// A response body sent in pieces, from any thread.
///
/// A server task answers with a stream instead of one reply (see
/// [`ServerTask::stream`](crate::task::ServerTask::stream)): the head goes
/// out at once, then each [`send`](Stream::send) adds a piece (HTTP/1.1: a
/// chunk) and [`finish`](Stream::finish) ends it (HTTP/1.1: the last chunk).
/// The handle is `Send + Sync + Clone`: keep it in a timer's callback,
/// another task, a hub of subscribers. Each send reports where the
/// connection's output stands, and [`on_writable`](Stream::on_writable) says
/// when a producer that was told to slow down may go on, so a producer never
/// buffers without bound. Dropping every handle without `finish` aborts the
/// stream: the connection closes, so the peer cannot take a cut body for a
/// whole one.
/// [`ServerTask::stream_with`](crate::task::ServerTask::stream_with) makes
/// one paced by a [`FlowControl`]; [`http::sse`](crate::http::sse) sends
/// events on such streams.
///
/// A producer that sends 4 MiB in pieces as fast as the client takes them,
/// and no faster: when a send reports [`SendState::AboveHigh`] it stops,
/// and goes on from `on_writable` once the queue has drained.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::comm::{SendState, Stream};
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// const PIECE: usize = 64 * 1024;
///
/// fn pump(stream: Stream, mut left: usize) {
///     while left > 0 {
///         let n = left.min(PIECE);
///         left -= n;
///         match stream.send(vec![b'x'; n]) {
///             Ok(SendState::AboveHigh) if left > 0 => {
///                 let more = stream.clone();
///                 stream.on_writable(move || pump(more, left));
///                 return;
///             }
///             Ok(_) => {}
///             Err(_) => return, // the client is gone
///         }
///     }
///     stream.finish();
/// }
///
/// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///     if let Ok(stream) = task.stream() {
///         pump(stream, 4 << 20);
///     }
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let get = http::get(&format!("http://{}/", server.local_addr()), move |t, _| {
///     let _ = tx.send(t.result().map(|r| r.body().len()).map_err(|e| e.clone()));
/// });
/// Series::new(get).start();
/// assert_eq!(rx.recv()??, 4 << 20);
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Stream {
    inner: Arc<StreamInner>,
}

/// What the handles of one stream share.
struct StreamInner {
    conn: Arc<Conn>,
    server: Arc<dyn StreamHost>,
    id: u64,
}

/// Where a stream's callbacks run.
pub(crate) trait StreamHost: Send + Sync + 'static {
    /// Runs `f` where the server runs user callbacks.
    fn defer(&self, f: Writable);
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("conn_id", &self.inner.conn.id)
            .field("open", &self.is_open())
            .finish()
    }
}

impl Stream {
    /// Sends one piece of the body. `Ok` says where output stands: written,
    /// queued (the connection is paused), or above the high watermark (slow
    /// down: wait for [`on_writable`](Stream::on_writable)). `Err(Closed)`:
    /// the peer is gone or the stream is over; `Err(Full)`: the connection
    /// already holds more than its hard limit unwritten, and this piece was
    /// refused.
    pub fn send(&self, piece: impl Into<Bytes>) -> Result<SendState, SendError> {
        self.inner.conn.stream_send(self.inner.id, piece.into())
    }

    /// Runs `f` once the connection's queued output is below the low
    /// watermark (at once, on the server's callback threads, if it already
    /// is), or once the stream is over (finished, aborted, ended by a
    /// shutdown, or its connection closed) so that the producer finds out at
    /// its next send. One callback at a time: a new one replaces the last,
    /// which is dropped without running.
    pub fn on_writable(&self, f: impl FnOnce() + Send + 'static) {
        let inner = &self.inner;
        let (due, replaced) = inner.conn.stream_on_writable(inner.id, Box::new(f));
        drop(replaced);
        if let Some(f) = due {
            inner.server.defer(f);
        }
    }

    /// Runs `f` once the stream is over, however it ends: finished,
    /// aborted, ended by a shutdown or a policy, or its connection closed (at
    /// once, on the server's callback threads, if it is over already). A hub
    /// of subscribers forgets a subscriber this way as soon as it leaves. One
    /// callback at a time: a new one replaces the last, which is dropped
    /// without running.
    pub fn on_close(&self, f: impl FnOnce() + Send + 'static) {
        let inner = &self.inner;
        let (due, replaced) = inner.conn.stream_on_close(inner.id, Box::new(f));
        drop(replaced);
        if let Some(f) = due {
            inner.server.defer(f);
        }
    }

    /// Ends the stream (HTTP/1.1: the last chunk). The connection then serves
    /// its next request, or closes if the protocol says so. Returns whether
    /// the stream was still open.
    pub fn finish(&self) -> bool {
        let (open, writable) = self.inner.conn.stream_finish(self.inner.id);
        if let Some(f) = writable {
            self.inner.server.defer(f);
        }
        open
    }

    /// Whether pieces can still be sent.
    pub fn is_open(&self) -> bool {
        self.inner.conn.stream_open(self.inner.id)
    }

    /// Bytes queued unwritten on the connection.
    pub fn queued(&self) -> usize {
        self.inner.conn.queued()
    }

    /// Messages (pieces, and the head) queued unwritten on the connection,
    /// counting one that is partly written: the queue keeps their boundaries.
    pub fn queued_messages(&self) -> usize {
        self.inner.conn.queued_messages()
    }

    /// The connection's id, as in its access-log record.
    pub fn conn_id(&self) -> u64 {
        self.inner.conn.id
    }
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        if let Some(f) = self.conn.stream_abort(self.id) {
            self.server.defer(f);
        }
    }
}
