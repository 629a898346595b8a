//! The message and protocol traits: the contract between the runtime and a protocol.

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// What a call to [`Message::append`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The message is complete; the payload says how many of the offered bytes it
    /// used. Bytes after those belong to the next message (pipelining).
    Complete(usize),
    /// The message needs more bytes; the payload says how many of the offered bytes
    /// it used (normally all of them).
    NeedMore(usize),
}

/// A message could not be parsed. The connection that carried it is closed with
/// [`CloseReason::ProtocolError`](crate::metrics::CloseReason::ProtocolError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// A protocol-specific code: HTTP uses the status to answer with (400, 413, ...).
    pub code: u16,
    /// What was wrong, for logs and for the task's error.
    pub reason: Cow<'static, str>,
}

impl ProtocolError {
    /// An error with a code and a static or owned reason.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        ProtocolError {
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ProtocolError {}

/// Header and body sizes of one message, for the access log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageSizes {
    /// Bytes of framing and headers.
    pub head: u64,
    /// Bytes of payload.
    pub body: u64,
}

/// One protocol message, parsed incrementally and encoded into `Bytes` slices.
///
/// The runtime feeds [`append`](Message::append) with whatever each read returned,
/// in order, until it reports [`Progress::Complete`]. An implementation copies what
/// it must keep: the slice is the poller's scratch buffer and is reused after the
/// call. That is what lets an idle connection hold no read buffer at all.
///
/// # Example
///
/// A line of text ended by `\n`, and the [`Protocol`] that serves it (the
/// same code serves the examples of [`Server`](crate::task::Server) and
/// [`ClientTask`](crate::task::ClientTask)). Here the message is parsed
/// from two reads, the second of which carries the start of the next line,
/// and encoded back:
///
/// ```
#[doc = include_str!("doc_lines.rs")]
///
/// let mut line = Line::default();
/// assert_eq!(line.append(b"hel")?, Progress::NeedMore(3));
/// assert_eq!(line.append(b"lo\nnext")?, Progress::Complete(3)); // "next" is not ours
/// assert_eq!(line.text(), "hello");
///
/// let mut out = Vec::new();
/// line.encode(&mut out);
/// assert_eq!(out.concat(), b"hello\n");
///
/// let mut long = Line::default();
/// assert_eq!(long.append(&[b'x'; 2000]).map_err(|e| e.code), Err(413));
/// # Ok::<(), ProtocolError>(())
/// ```
pub trait Message: Send + 'static {
    /// Feeds the next bytes of the stream. Returns how many were used and whether
    /// the message is now complete, or an error that closes the connection.
    fn append(&mut self, data: &[u8]) -> Result<Progress, ProtocolError>;

    /// Appends the encoded message to `out` as one or more chunks; they are written
    /// with a single `writev` where the socket allows.
    fn encode(&mut self, out: &mut Vec<Bytes>);

    /// Like [`encode`](Message::encode), with the leading bytes appended to
    /// `head`, a buffer the caller reuses, and the rest pushed to `out`; the
    /// `head` bytes go out first. A server writes a small reply straight from
    /// its per-thread buffer and copies only what the socket does not take,
    /// saving an allocation per reply. The default puts everything in `out`.
    fn encode_with_head(&mut self, head: &mut Vec<u8>, out: &mut Vec<Bytes>) {
        let _ = head;
        self.encode(out);
    }

    /// Bytes to write *now*, while the message is still incomplete (HTTP's
    /// `100 Continue`). Polled after every `append` that needs more.
    fn interim(&mut self) -> Option<Bytes> {
        None
    }

    /// Header and body sizes, once known; `None` for protocols without the notion.
    fn sizes(&self) -> Option<MessageSizes> {
        None
    }

    /// The peer closed the stream while this message was incomplete. Returns
    /// whether the message is complete anyway (an HTTP response whose body runs to
    /// the close); `false` makes it an error.
    fn end_of_stream(&mut self) -> bool {
        false
    }

    /// The request's method (or command) and target (path and query), for
    /// the access log's per-request records; `None` (the default) for
    /// protocols without them. Asked only when a sink wants request records.
    fn request_line(&self) -> Option<(&str, &str)> {
        None
    }

    /// A status for the access log's error counters (HTTP status codes); `None`
    /// when the protocol has none.
    fn status(&self) -> Option<u16> {
        None
    }

    /// Makes this message the head of a stream whose body follows in pieces
    /// (a server answering with a stream calls it before encoding the head),
    /// and returns what frames the pieces. The default sends the message as
    /// it encodes, then each piece as it is.
    fn start_stream(&mut self) -> Box<dyn PieceFramer> {
        Box::new(RawPieces)
    }

    /// Client: a push the parser found between the parts of this message
    /// (RESP3 sends pushes between the replies of a pipeline), taken out as
    /// a message of its own. The engine asks after every `append` and hands
    /// each one to the connection's push handler. The default finds none.
    fn take_push(&mut self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// Frames the pieces of a streamed message and its end: HTTP/1.1 wraps each
/// piece in a chunk and ends with the last chunk; a body of a declared length
/// goes out as it is, and no further; HTTP/1.0 sends the pieces as they are
/// and ends by closing; an answer to `HEAD` sends none.
pub trait PieceFramer: Send + Sync + 'static {
    /// Appends `piece`, framed, to `out`, or refuses it when it would break
    /// the message's framing (more than a declared length).
    fn piece(&mut self, piece: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProtocolError>;
    /// Appends what ends the stream. Returns whether the message is whole:
    /// `false` (fewer bytes than declared) closes the connection after it,
    /// so the peer cannot take a cut message for a complete one.
    fn end(&mut self, out: &mut Vec<Bytes>) -> bool;
    /// Payload bytes the message may still take (a declared length's rest),
    /// or `None` without a limit. A flow-controlled stream, which frames a
    /// piece only when it releases it, refuses a piece past this as it is
    /// sent.
    fn room(&self) -> Option<u64> {
        None
    }
}

/// Pieces go out as they are, and nothing marks the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawPieces;

impl PieceFramer for RawPieces {
    fn piece(&mut self, piece: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
        if !piece.is_empty() {
            out.push(piece);
        }
        Ok(())
    }
    fn end(&mut self, _out: &mut Vec<Bytes>) -> bool {
        true
    }
}

/// A request/response protocol: the types and the decisions `comm` leaves to it.
///
/// Every method but the types, [`name`](Protocol::name),
/// [`new_request`](Protocol::new_request) and
/// [`new_response`](Protocol::new_response) has a default; those marked
/// *Client* matter only to a [`ClientTask`](crate::task::ClientTask).
/// Implement it and the same value serves on a
/// [`Server`](crate::task::Server) and sends with a `ClientTask`.
///
/// # Example
///
/// A line protocol (its [`Message`] is explained there): a server that
/// answers each line in upper case, and a client task that asks it once.
///
/// ```
#[doc = include_str!("doc_lines.rs")]
///
/// use std::sync::{mpsc, Arc};
/// use std::time::Duration;
/// use taskweave::task::{ClientTask, Server};
/// use taskweave::Series;
///
/// let server = Server::builder().serve("127.0.0.1:0", Lines, |task, _| {
///     let shout = task.request().text().to_uppercase();
///     *task.response() = Line::new(shout);
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let ask = ClientTask::new(Arc::new(Lines), server.local_addr(), Line::new("hello"), move |t, _| {
///     let _ = tx.send(t.result().map(|line| line.text().into_owned()).map_err(|e| e.clone()));
/// });
/// Series::new(ask).start();
/// assert_eq!(rx.recv()??, "HELLO");
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Protocol: Send + Sync + 'static {
    /// What a server reads and a client writes.
    type Request: Message;
    /// What a server writes and a client reads.
    type Response: Message;

    /// Short name for the access log's `proto` field.
    fn name(&self) -> &'static str;

    /// The protocol's names for TLS's ALPN (`http/1.1`), most preferred
    /// first: a TLS server offers them, a TLS client asks for them. None by
    /// default.
    fn alpn(&self) -> &'static [&'static [u8]] {
        &[]
    }

    /// A fresh request parser (servers) or an empty request (clients).
    fn new_request(&self) -> Self::Request;

    /// A fresh response for `req`: the server's reply to fill, or the client's
    /// parser (which may depend on the request, e.g. HTTP HEAD has no body).
    fn new_response(&self, req: &Self::Request) -> Self::Response;

    /// Makes `req`, whose exchange is over, ready to parse the next request.
    /// A server reuses one request and response per thread, so a protocol can
    /// keep their buffers here; the default makes a fresh request.
    fn reuse_request(&self, req: &mut Self::Request) {
        *req = self.new_request();
    }

    /// Makes `resp`, left from an earlier exchange, the response to `req`
    /// (see [`reuse_request`](Protocol::reuse_request)); the default makes a
    /// fresh response.
    fn reuse_response(&self, req: &Self::Request, resp: &mut Self::Response) {
        *resp = self.new_response(req);
    }

    /// Whether the connection stays open after this exchange.
    fn keep_alive(&self, _req: &Self::Request, _resp: &Self::Response) -> bool {
        true
    }

    /// A response to write before closing a connection whose request failed to
    /// parse (HTTP's 400/413/431...), or whose `process` panicked (the error's
    /// code is then 500). `None` closes without writing.
    fn reject(&self, _err: &ProtocolError) -> Option<Self::Response> {
        None
    }

    /// A response to a complete, well-formed request that the server will
    /// not run: it came over the server's request rate (`err.code` 429, see
    /// the server builder's `max_rps`). `retry_after` is how long until the
    /// server would admit a request again (HTTP rounds it up to whole
    /// seconds in `Retry-After`). Unlike after [`reject`](Protocol::reject),
    /// the connection stays open if [`keep_alive`](Protocol::keep_alive)
    /// says so for this request and response. The default answers with
    /// `reject(err)`; `None` closes the connection without writing.
    fn refuse(
        &self,
        req: &Self::Request,
        err: &ProtocolError,
        retry_after: Duration,
    ) -> Option<Self::Response> {
        let _ = (req, retry_after);
        self.reject(err)
    }

    /// Client: how many requests may be in flight on one connection, their
    /// replies matched in order. The default, 1, is plain request/response;
    /// a protocol that pipelines (Redis, the echo example) says more.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Client: whether a parsed message is a push (an event the server sends
    /// on its own, like a RESP3 push) rather than the reply to the oldest
    /// request in flight. Pushes go to the connection's push handler.
    fn is_push(&self, _msg: &Self::Response) -> bool {
        false
    }

    /// Client: a parser for a message that arrives while no request is in
    /// flight. `None` (the default) makes such bytes a protocol error that
    /// closes the connection; a protocol with pushes returns a parser.
    fn new_unsolicited(&self) -> Option<Self::Response> {
        None
    }

    /// Client: whether `req` may be sent again on a new connection when the
    /// pooled connection it went out on failed before any byte of a reply
    /// arrived (the peer closed the idle connection as we picked it). Only a
    /// request whose repetition is harmless may say yes; the default is no.
    fn may_retry(&self, _req: &Self::Request) -> bool {
        false
    }

    /// Client: checks a request before it is sent. An error fails the task
    /// at once with `Error::InvalidRequest`, and nothing is sent (Redis
    /// refuses commands that would break a shared connection). The default
    /// accepts every request.
    fn check_request(&self, req: &Self::Request) -> Result<(), ProtocolError> {
        let _ = req;
        Ok(())
    }

    /// Client: which connections this protocol value may use. Requests whose
    /// protocols give different classes never share a connection, even to
    /// one target with one config: a Redis client's credentials and
    /// database make its connections its own. The default, 0, is one class.
    fn connection_class(&self) -> u64 {
        0
    }

    /// Client: a request sent first on every new connection, before any
    /// other (Redis's `HELLO`, `AUTH` and `SELECT`). Its reply goes to
    /// [`greeted`](Protocol::greeted), never to a task. The default sends
    /// none.
    fn greeting(&self) -> Option<Self::Request> {
        None
    }

    /// Client: checks the reply to the [`greeting`](Protocol::greeting).
    /// An error fails every request on the connection with it and closes
    /// the connection (a wrong password reaches the task that caused the
    /// connect, not a later one).
    fn greeted(&self, reply: &Self::Response) -> Result<(), ProtocolError> {
        let _ = reply;
        Ok(())
    }
}
