//! Responses: the server's builder and encoder, and the client's incremental
//! parser.
//!
//! Encoding writes the whole head into one buffer sized exactly in advance and
//! hands the body over as its own `Bytes`, so a response costs one allocation
//! for the head and no copy of the body, and the runtime can write both with a
//! single `writev`. Framing fields (`Content-Length`, `Transfer-Encoding`) and
//! `Connection` are derived here, never taken from the user, so the head always
//! matches what is sent.
//!
//! Parsing (client side) needs the request's method, because a response to
//! HEAD, or a 2xx to CONNECT, has no body whatever its fields say (RFC 9112
//! §6.3). Interim 1xx responses other than 101 are skipped. Parser errors carry
//! status 502: the peer's response was unusable.

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{BufMut, Bytes};

use super::body::BodyReader;
use super::chunked::{
    put_chunk_size, ChunkedPieces, NoPieces, SizedPieces, CHUNK_END_AFTER_DATA, LAST_CHUNK,
};
use super::date::{date_line, DATE_LINE_LEN};
use super::framing::{upstream, BodyKind, Framing, FramingFields};
use super::head::{check_line_endings, leading_empty_lines, HeadReader};
use super::headers::{special_of, BuildError, Field, FieldIndex, Headers, Span, Text, DATE};
use super::limits::Limits;
use super::request::{check_not_framing, Request, STACK_SLOTS};
use super::status::{has_no_body, reason_phrase, status_line};
use super::syntax::{is_field_byte, list_contains};
use super::version::Version;
use crate::protocol::{Message, MessageSizes, PieceFramer, Progress, ProtocolError, RawPieces};

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Body,
    Done,
    Failed(ProtocolError),
}

/// What the request's method means for the response's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Connect,
    Other,
}

/// Client-side parsing state.
#[derive(Debug)]
struct Parser {
    limits: Limits,
    state: State,
    reader: HeadReader,
    body: BodyReader,
    method: Method,
    /// Bytes of skipped interim responses.
    interim_len: u64,
    head_len: u64,
    /// Payload bytes of the parsed body (kept when the body is taken).
    body_len: u64,
}

impl Parser {
    fn new(method: Method, limits: Limits) -> Self {
        Parser {
            limits,
            state: State::Head,
            reader: HeadReader::default(),
            body: BodyReader::new(),
            method,
            interim_len: 0,
            head_len: 0,
            body_len: 0,
        }
    }
}

/// An HTTP/1.1 response: built and encoded by a server, or parsed by a client.
#[derive(Debug)]
pub struct Response {
    status: u16,
    reason: Option<Text>,
    version: Version,
    headers: Headers,
    body: Bytes,
    framing: Framing,
    /// Server: the request was HEAD. Client: unused.
    request_head: bool,
    request_version: Version,
    /// Server: the connection may persist as far as the request is concerned.
    /// Client: the parsed response allows persistence.
    keep_alive: bool,
    parsed: bool,
    /// A field was refused by [`set_header`](Self::set_header) or
    /// [`append_header`](Self::append_header): the response goes out as a 500.
    bad_field: bool,
    sizes: Option<MessageSizes>,
    /// Client-side parsing state; a server's response never allocates it.
    parser: Option<Box<Parser>>,
}

impl Response {
    /// `200 OK` with no fields and an empty body, for a peer that allows
    /// persistence. Prefer [`for_request`](Self::for_request) in a server.
    pub fn new() -> Self {
        Response {
            status: 200,
            reason: None,
            version: Version::Http11,
            headers: Headers::new(),
            body: Bytes::new(),
            framing: Framing::Length,
            request_head: false,
            request_version: Version::Http11,
            keep_alive: true,
            parsed: false,
            bad_field: false,
            sizes: None,
            parser: None,
        }
    }

    /// A response with `status` (see [`set_status`](Self::set_status)).
    pub fn with_status(status: u16) -> Self {
        let mut r = Response::new();
        r.set_status(status);
        r
    }

    /// `200 OK` answering `req`: it has no body on the wire if `req` is HEAD,
    /// keeps or closes the connection as `req` asked, and uses only framing an
    /// HTTP/1.0 client understands when `req` is HTTP/1.0.
    pub fn for_request(req: &Request) -> Self {
        let mut r = Response::new();
        r.answer(req);
        r
    }

    /// Takes from `req` what the reply depends on: HEAD, version, persistence.
    fn answer(&mut self, req: &Request) {
        self.request_head = req.is_head();
        self.request_version = req.version();
        self.keep_alive = req.keep_alive();
    }

    /// Makes this what [`for_request(req)`](Self::for_request) makes, keeping
    /// a buffer for the fields (a server reuses one response per thread).
    /// Field by field, in place; the pattern names every field so that a new
    /// one cannot be forgotten here.
    pub(crate) fn reuse_for(&mut self, req: &Request) {
        let Response {
            status,
            reason,
            version,
            headers,
            body,
            framing,
            request_head,
            request_version,
            keep_alive,
            parsed,
            bad_field,
            sizes,
            parser,
        } = self;
        *status = 200;
        *reason = None;
        *version = Version::Http11;
        headers.clear();
        *body = Bytes::new();
        *framing = Framing::Length;
        *request_head = false;
        *request_version = Version::Http11;
        *keep_alive = true;
        *parsed = false;
        *bad_field = false;
        *sizes = None;
        *parser = None;
        self.answer(req);
    }

    /// An error response that closes the connection: `status` (400, 413, 414,
    /// 431, 501, 505, ...; anything outside 400-599 becomes 400), its reason
    /// phrase as a `text/plain` body and `Connection: close`.
    pub fn error(status: u16) -> Self {
        let status = if (400..=599).contains(&status) {
            status
        } else {
            400
        };
        let mut r = Response::with_status(status);
        r.keep_alive = false;
        r.headers
            .append("Content-Type", "text/plain; charset=utf-8")
            .ok();
        r.body = Bytes::from_static(reason_phrase(status).unwrap_or("Error").as_bytes());
        r
    }

    /// The error response for a request that failed to parse. A 429 says
    /// `Retry-After: 1`.
    pub fn from_error(err: &ProtocolError) -> Self {
        let mut r = Response::error(err.code);
        if r.status == 429 {
            r.headers.append("Retry-After", "1").ok();
        }
        r
    }

    /// The answer to a well-formed `req` the server will not run (429 over
    /// its request rate, or another 4xx/5xx `status`): the status, its
    /// reason phrase as a `text/plain` body (none for HEAD), and for 429 and
    /// 503 `Retry-After` in whole seconds, rounded up from `retry_after`
    /// (at least 1). Unlike [`error`](Self::error) it keeps the connection
    /// as `req` asked.
    pub(crate) fn refusal(req: &Request, status: u16, retry_after: Duration) -> Self {
        let status = if (400..=599).contains(&status) {
            status
        } else {
            400
        };
        let mut r = Response::for_request(req);
        r.set_status(status);
        r.headers
            .append("Content-Type", "text/plain; charset=utf-8")
            .ok();
        if matches!(status, 429 | 503) {
            let secs = retry_after
                .as_nanos()
                .div_ceil(1_000_000_000)
                .clamp(1, u128::from(u32::MAX)) as u32;
            r.headers
                .append("Retry-After", itoa::Buffer::new().format(secs))
                .ok();
        }
        r.body = Bytes::from_static(reason_phrase(status).unwrap_or("Error").as_bytes());
        r
    }

    /// A client-side parser for the response to a request with `method`,
    /// with the default [`Limits`] (`max_body` limits the response body).
    pub fn parser_for(method: &str) -> Self {
        Response::parser_with(method, Limits::default())
    }

    /// A client-side parser with the given limits.
    pub fn parser_with(method: &str, limits: Limits) -> Self {
        let method = match method {
            "HEAD" => Method::Head,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        };
        Response::with_parser(method, limits)
    }

    fn with_parser(method: Method, limits: Limits) -> Self {
        let mut r = Response::new();
        r.parser = Some(Box::new(Parser::new(method, limits)));
        r
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase: the one set or received, else the registered one.
    pub fn reason(&self) -> &str {
        match &self.reason {
            Some(text) => text.resolve(self.headers.raw()),
            None => reason_phrase(self.status).unwrap_or(""),
        }
    }

    /// The version of a parsed response (HTTP/1.1 for built ones).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The header fields (without the ones the encoder adds).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The value of the first header field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The body. After [`encode`](Message::encode) it is empty: encoding
    /// moves it out rather than sharing it.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out, leaving it empty.
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// The framing [`encode`](Message::encode) will use: the one set, except
    /// that chunked framing becomes [`Framing::Close`] for an HTTP/1.0 client.
    pub fn framing(&self) -> Framing {
        match self.framing {
            Framing::Chunked | Framing::Streaming if self.request_version == Version::Http10 => {
                Framing::Close
            }
            f => f,
        }
    }

    /// Whether the connection may carry another exchange after this response.
    /// Server: the request allowed it, nothing set `Connection: close` or
    /// [`set_keep_alive(false)`](Self::set_keep_alive), and the body is not
    /// close-delimited. Client: the parsed response allows it (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        if self.parsed {
            return self.keep_alive;
        }
        self.keep_alive && self.framing() != Framing::Close && !self.headers.connection_has("close")
    }

    /// Whether a parsed response is complete.
    pub fn is_complete(&self) -> bool {
        self.parser.as_ref().is_some_and(|p| p.state == State::Done)
    }

    /// Sets the status. Codes outside 100-999 are sent as 500.
    pub fn set_status(&mut self, status: u16) -> &mut Self {
        self.status = status;
        self
    }

    /// Sets a reason phrase other than the registered one (HTAB, SP, visible
    /// ASCII and obs-text only).
    pub fn set_reason(&mut self, reason: &str) -> Result<&mut Self, BuildError> {
        if !reason.bytes().all(is_field_byte) {
            return Err(BuildError::new("reason phrase contains a control byte"));
        }
        self.reason = Some(Text::Owned(reason.into()));
        Ok(self)
    }

    /// Replaces every field called `name` with one holding `value`.
    ///
    /// A field that cannot be sent is refused: a name that is not a token, a
    /// value with CR, LF or NUL (response splitting), or `Content-Length` /
    /// `Transfer-Encoding` (the encoder derives them from the body and
    /// [`set_framing`](Self::set_framing)). A refused field is logged and
    /// turns the response into a `500 Internal Server Error`, so a bug
    /// shows instead of a reply missing a field; use
    /// [`try_set_header`](Self::try_set_header) to handle the error yourself.
    /// A `Date` set here replaces the automatic one.
    ///
    /// ```
    /// use taskweave::http::Response;
    ///
    /// let mut resp = Response::new();
    /// resp.set_header("Content-Type", "text/plain").set_body("hello");
    /// assert_eq!(resp.header("content-type"), Some(&b"text/plain"[..]));
    /// assert!(resp.try_set_header("X-Bad", "a\r\nInjected: 1").is_err());
    /// ```
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if let Err(e) = self.try_set_header(name, value) {
            self.refuse_field(name, &e);
        }
        self
    }

    /// Adds a field after the existing ones (same rules as
    /// [`set_header`](Self::set_header)).
    pub fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if let Err(e) = self.try_append_header(name, value) {
            self.refuse_field(name, &e);
        }
        self
    }

    /// [`set_header`](Self::set_header), with the error returned instead.
    pub fn try_set_header(
        &mut self,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, BuildError> {
        check_not_framing(name)?;
        self.detach_reason();
        self.headers.set(name, value)?;
        Ok(self)
    }

    /// [`append_header`](Self::append_header), with the error returned instead.
    pub fn try_append_header(
        &mut self,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, BuildError> {
        check_not_framing(name)?;
        self.detach_reason();
        self.headers.append(name, value)?;
        Ok(self)
    }

    fn refuse_field(&mut self, name: &str, err: &BuildError) {
        log::warn!("taskweave: response field {name:?} refused ({err}): answering 500");
        self.bad_field = true;
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove_header(&mut self, name: &str) -> usize {
        self.detach_reason();
        self.headers.remove(name)
    }

    /// Sets the body; it is sent without being copied.
    pub fn set_body(&mut self, body: impl Into<Bytes>) -> &mut Self {
        self.body = body.into();
        self
    }

    /// Chooses how the body is framed (default [`Framing::Length`]).
    pub fn set_framing(&mut self, framing: Framing) -> &mut Self {
        self.framing = framing;
        self
    }

    /// Asks for the connection to close after this response (`false`), or
    /// allows it to persist if the request did (`true`).
    pub fn set_keep_alive(&mut self, keep_alive: bool) -> &mut Self {
        self.keep_alive = keep_alive;
        self
    }

    fn detach_reason(&mut self) {
        if let Some(reason) = &self.reason {
            self.reason = Some(reason.detach(self.headers.raw()));
        }
    }

    fn append_inner(&mut self, p: &mut Parser, data: &[u8]) -> Result<Progress, ProtocolError> {
        let mut used = 0;
        while p.state == State::Head {
            let rest = data.get(used..).unwrap_or_default();
            match self.append_head(p, rest)? {
                Some(n) if n > 0 => used += n,
                _ => return Ok(Progress::NeedMore(data.len())),
            }
        }
        let rest = data.get(used..).unwrap_or_default();
        let (n, done) = p.body.feed(rest)?;
        used += n;
        if done {
            self.finish(p);
            Ok(Progress::Complete(used))
        } else {
            Ok(Progress::NeedMore(used))
        }
    }

    fn finish(&mut self, p: &mut Parser) {
        self.body = p.body.take();
        p.body_len = self.body.len() as u64;
        p.state = State::Done;
    }

    /// Parses one head (final or interim); returns the bytes of `data` used.
    fn append_head(&mut self, p: &mut Parser, data: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let limits = p.limits;
        let mut skipped = 0;
        let mut data = data;
        if p.reader.is_empty() {
            skipped = leading_empty_lines(data);
            data = data.get(skipped..).unwrap_or_default();
            if data.is_empty() {
                return Ok(None);
            }
            if let Some(head) = parse_head(data, &limits, self.headers.index_mut())? {
                let len = head.len;
                if head.is_interim() {
                    p.interim_len += len as u64;
                } else {
                    self.headers
                        .freeze_copy(data.get(..len).unwrap_or_default(), head.special);
                    self.install(p, head)?;
                }
                return Ok(Some(skipped + len));
            }
        }
        let before = p.reader.buffered().len();
        match p.reader.push(data, limits.max_head())? {
            None => {
                if p.reader.buffered().len() > limits.max_head() {
                    return Err(upstream("response head too large"));
                }
                Ok(None)
            }
            Some(end) => {
                let head = parse_head(p.reader.buffered(), &limits, self.headers.index_mut())?
                    .filter(|h| h.len == end)
                    .ok_or_else(|| upstream("malformed response head"))?;
                let raw = p.reader.take(end);
                if head.is_interim() {
                    p.interim_len += end as u64;
                } else {
                    self.headers.freeze(raw, head.special);
                    self.install(p, head)?;
                }
                Ok(Some(skipped + end.saturating_sub(before)))
            }
        }
    }

    /// Takes in a parsed head whose bytes the headers hold (frozen).
    fn install(&mut self, p: &mut Parser, head: ParsedHead) -> Result<(), ProtocolError> {
        let method = p.method;
        let tunnel = method == Method::Connect && (200..300).contains(&head.status);
        let no_body = method == Method::Head || has_no_body(head.status) || tunnel;
        let kind = head
            .framing
            .response_body(head.version, no_body, &p.limits)?;
        self.status = head.status;
        self.reason = Some(Text::Span(head.reason));
        self.version = head.version;
        self.keep_alive =
            head.keep_alive && kind != BodyKind::Close && head.status != 101 && !tunnel;
        self.parsed = true;
        p.head_len = head.len as u64;
        p.body.start(kind, &p.limits);
        p.state = State::Body;
        Ok(())
    }
}

/// Bodies up to this size are copied into the head buffer by `encode`.
const INLINE_BODY_MAX: usize = 1024;

impl Default for Response {
    fn default() -> Self {
        Response::new()
    }
}

impl Message for Response {
    fn append(&mut self, data: &[u8]) -> Result<Progress, ProtocolError> {
        let mut p = self
            .parser
            .take()
            .unwrap_or_else(|| Box::new(Parser::new(Method::Other, Limits::default())));
        let result = match &p.state {
            State::Failed(e) => Err(e.clone()),
            State::Done => Ok(Progress::Complete(0)),
            State::Head | State::Body => self.append_inner(&mut p, data).map_err(|e| {
                let e = if e.code == 502 { e } else { upstream(e.reason) };
                p.state = State::Failed(e.clone());
                e
            }),
        };
        self.parser = Some(p);
        result
    }

    fn encode(&mut self, out: &mut Vec<Bytes>) {
        let mut head = Vec::new();
        let at = out.len();
        self.encode_with_head(&mut head, out);
        out.insert(at, Bytes::from(head));
    }

    fn encode_with_head(&mut self, head: &mut Vec<u8>, out: &mut Vec<Bytes>) {
        if self.bad_field {
            let mut error = Response::error(500);
            error.request_head = self.request_head;
            error.request_version = self.request_version;
            *self = error;
        }
        let status = if (100..=999).contains(&self.status) {
            self.status
        } else {
            500
        };
        let bodiless_status = has_no_body(status);
        let framing = self.framing();
        let keep_alive = self.keep_alive();
        let body = std::mem::take(&mut self.body);
        let send_body = !bodiless_status && !self.request_head && !body.is_empty();
        let chunked = !bodiless_status && matches!(framing, Framing::Chunked | Framing::Streaming);
        let chunk_framing = chunked && !self.request_head;
        // A small body rides in the head buffer: one chunk, one plain `write`,
        // for the price of copying a few hundred bytes.
        let inline_body = send_body && !chunk_framing && body.len() <= INLINE_BODY_MAX;

        let raw = self.headers.raw();
        let reason = match &self.reason {
            Some(text) => text.resolve(raw),
            None => reason_phrase(status).unwrap_or(""),
        };
        let date = if self.headers.has_special(DATE) {
            None
        } else {
            Some(date_line())
        };
        let connection: &[u8] = if !keep_alive {
            if self.headers.connection_has("close") {
                b""
            } else {
                b"Connection: close\r\n"
            }
        } else if self.request_version == Version::Http10
            && !self.headers.connection_has("keep-alive")
        {
            b"Connection: keep-alive\r\n"
        } else {
            b""
        };
        let mut len_buf = itoa::Buffer::new();
        let length = match framing {
            _ if bodiless_status => None,
            Framing::Length => Some(len_buf.format(body.len())),
            Framing::Declared(n) => Some(len_buf.format(n)),
            Framing::Chunked | Framing::Streaming | Framing::Close => None,
        };

        let cap = 13
            + reason.len()
            + 2
            + self.headers.encoded_len()
            + date.map_or(0, |_| DATE_LINE_LEN)
            + connection.len()
            + length.map_or(0, |l| l.len() + 18)
            + if chunked { 28 } else { 0 }
            + 2
            + if chunk_framing { 18 } else { 0 }
            + if inline_body { body.len() } else { 0 };
        let start = head.len();
        head.reserve(cap);
        match (&self.reason, status_line(status)) {
            (None, Some(line)) => head.put_slice(line),
            _ => {
                head.put_slice(b"HTTP/1.1 ");
                put_status_code(head, status);
                head.put_u8(b' ');
                head.put_slice(reason.as_bytes());
                head.put_slice(b"\r\n");
            }
        }
        self.headers.write_to(head);
        if let Some(date) = date {
            head.put_slice(&date);
        }
        if let Some(length) = length {
            head.put_slice(b"Content-Length: ");
            head.put_slice(length.as_bytes());
            head.put_slice(b"\r\n");
        }
        if chunked {
            head.put_slice(b"Transfer-Encoding: chunked\r\n");
        }
        head.put_slice(connection);
        head.put_slice(b"\r\n");
        debug_assert!(
            head.len() - start <= cap,
            "head capacity estimate too small"
        );
        let head_only = (head.len() - start) as u64;
        if chunk_framing && send_body {
            put_chunk_size(head, body.len() as u64);
        } else if chunk_framing && framing == Framing::Chunked {
            head.put_slice(LAST_CHUNK);
        }
        debug_assert!(
            head.len() - start <= cap,
            "head capacity estimate too small"
        );
        let mut framing_len = (head.len() - start) as u64 - head_only;
        if inline_body {
            head.put_slice(&body);
        }
        debug_assert!(
            head.len() - start <= cap,
            "head capacity estimate too small"
        );
        let body_len = if send_body { body.len() as u64 } else { 0 };
        if send_body && !inline_body {
            out.push(body);
            if chunk_framing {
                let end: &'static [u8] = if framing == Framing::Chunked {
                    CHUNK_END_AFTER_DATA
                } else {
                    b"\r\n"
                };
                framing_len += end.len() as u64;
                out.push(Bytes::from_static(end));
            }
        }
        self.sizes = Some(MessageSizes {
            head: head_only + framing_len,
            body: body_len,
        });
    }

    fn sizes(&self) -> Option<MessageSizes> {
        if let (true, Some(p)) = (self.parsed, &self.parser) {
            return Some(MessageSizes {
                head: p.interim_len + p.head_len + p.body.overhead_len(),
                body: if p.state == State::Done {
                    p.body_len
                } else {
                    p.body.payload_len()
                },
            });
        }
        self.sizes
    }

    /// A close-delimited body is complete when the peer closes; anything else
    /// cut short by a close is an error.
    fn end_of_stream(&mut self) -> bool {
        let Some(mut p) = self.parser.take() else {
            return false;
        };
        if p.state == State::Body && p.body.kind() == BodyKind::Close {
            self.finish(&mut p);
        }
        let done = p.state == State::Done;
        self.parser = Some(p);
        done
    }

    fn status(&self) -> Option<u16> {
        Some(self.status)
    }

    /// A streamed response: chunked to an HTTP/1.1 client, ended by closing
    /// the connection to an HTTP/1.0 one (or when asked for with
    /// [`Framing::Close`]), and with no body at all when it has none on the
    /// wire (the answer to `HEAD`, a 1xx, 204 or 304).
    fn start_stream(&mut self) -> Box<dyn PieceFramer> {
        if self.request_head || has_no_body(self.status) {
            return Box::new(NoPieces);
        }
        if let Framing::Declared(n) = self.framing {
            let first = self.body.len() as u64;
            return Box::new(SizedPieces {
                remaining: n.saturating_sub(first),
            });
        }
        if self.framing != Framing::Close {
            self.framing = Framing::Streaming;
        }
        match self.framing() {
            Framing::Close => Box::new(RawPieces),
            _ => Box::new(ChunkedPieces),
        }
    }
}

/// Writes a status code in 100-999 as three digits.
fn put_status_code(dst: &mut impl BufMut, code: u16) {
    let digits = [code / 100 % 10, code / 10 % 10, code % 10];
    for d in digits {
        dst.put_u8(b'0' + d as u8);
    }
}

/// What a response head said, as offsets into the buffer it was parsed from.
struct ParsedHead {
    len: usize,
    status: u16,
    reason: Span,
    version: Version,
    framing: FramingFields,
    keep_alive: bool,
    /// The special-name bits of the fields, for [`Headers::freeze`].
    special: u8,
}

impl ParsedHead {
    /// 1xx other than 101: skipped; the final response follows.
    fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a response head from the start of `buf`; `Ok(None)` means more
/// bytes are needed.
///
/// Fields go straight into `fields` (no copy of the inline index); they are
/// only meaningful when a head is returned.
fn parse_head(
    buf: &[u8],
    limits: &Limits,
    fields: &mut FieldIndex,
) -> Result<Option<ParsedHead>, ProtocolError> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_SLOTS];
    let mut heap;
    let max = limits.max_headers();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max <= STACK_SLOTS {
        stack.get_mut(..max).unwrap_or_default()
    } else {
        heap = vec![MaybeUninit::uninit(); max];
        &mut heap
    };
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(upstream("too many header fields")),
        Err(e) => return Err(upstream(format!("malformed response head: {e}"))),
    };
    check_line_endings(buf.get(..len).unwrap_or_default())?;
    if len > limits.max_head() {
        return Err(upstream("response head too large"));
    }
    let status = resp.code.unwrap_or(0);
    if status < 100 {
        return Err(upstream("invalid status code"));
    }
    let version = Version::from_minor(resp.version.unwrap_or(1));
    let inside =
        |part: &[u8]| Span::of(buf, part).ok_or_else(|| upstream("response head too large"));
    fields.reset(resp.headers.len());
    let mut framing = FramingFields::default();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut special = 0;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        fields.push(Field {
            name: inside(name)?,
            value: inside(h.value)?,
        });
        special |= special_of(name);
        match name.len() {
            10 if name.eq_ignore_ascii_case(b"connection") => {
                close |= list_contains(h.value, b"close");
                keep_alive_token |= list_contains(h.value, b"keep-alive");
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => framing.content_length(h.value),
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                framing.transfer_encoding(h.value)
            }
            _ => {}
        }
    }
    Ok(Some(ParsedHead {
        len,
        status,
        reason: Span::of(buf, resp.reason.unwrap_or("").as_bytes()).unwrap_or_default(),
        version,
        framing,
        keep_alive: !close && (version == Version::Http11 || keep_alive_token),
        special,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(resp: &mut Response) -> (Vec<Bytes>, Vec<u8>) {
        let mut out = Vec::new();
        resp.encode(&mut out);
        let flat = out.iter().flat_map(|b| b.iter().copied()).collect();
        (out, flat)
    }

    /// The wire form with the Date line replaced by a fixed one.
    fn fixed_date(flat: &[u8]) -> String {
        let s = String::from_utf8(flat.to_vec()).unwrap();
        match s.find("Date: ") {
            Some(i) => format!("{}Date: D{}", &s[..i], &s[i + DATE_LINE_LEN - 2..]),
            None => s,
        }
    }

    fn request(raw: &[u8]) -> Request {
        let mut r = Request::parser();
        assert!(matches!(r.append(raw), Ok(Progress::Complete(_))));
        r
    }

    #[test]
    fn hello_world_is_one_chunk_and_a_large_body_is_not_copied() {
        let mut r = Response::new();
        r.set_header("Content-Type", "text/plain");
        r.set_body(Bytes::from_static(b"Hello, world!"));
        let (chunks, flat) = wire(&mut r);
        assert_eq!(chunks.len(), 1, "a small body rides in the head buffer");
        assert_eq!(
            fixed_date(&flat),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: D\r\nContent-Length: 13\r\n\r\nHello, world!"
        );
        assert_eq!(
            r.sizes(),
            Some(MessageSizes {
                head: chunks[0].len() as u64 - 13,
                body: 13
            })
        );
        let big = Bytes::from(vec![b'x'; INLINE_BODY_MAX + 1]);
        let mut r = Response::new();
        r.set_body(big.clone());
        let (chunks, _) = wire(&mut r);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].as_ptr(), big.as_ptr(), "the body is not copied");
        assert_eq!(Message::status(&r), Some(200));
    }

    /// A server reuses one response per thread: after any reply, one made
    /// ready for the next request encodes exactly as a new one does.
    #[test]
    fn a_reused_response_encodes_like_a_new_one() {
        let head = request(b"HEAD / HTTP/1.0\r\n\r\n");
        let get = request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut r = Response::for_request(&head);
        r.set_status(299)
            .set_framing(Framing::Chunked)
            .set_keep_alive(false);
        r.set_reason("Odd").unwrap();
        r.set_header("Date", "yesterday");
        r.set_header("X-Many", "a".repeat(100));
        r.set_body("a body");
        wire(&mut r);
        r.reuse_for(&get);
        let mut fresh = Response::for_request(&get);
        for resp in [&mut r, &mut fresh] {
            resp.set_header("Content-Type", "text/plain");
            resp.set_body("hello");
        }
        assert_eq!(fixed_date(&wire(&mut r).1), fixed_date(&wire(&mut fresh).1));
        assert_eq!(r.sizes(), fresh.sizes());
        assert_eq!(r.keep_alive(), fresh.keep_alive());
    }

    #[test]
    fn head_capacity_covers_every_variant() {
        // `encode` debug-asserts that the head fit the capacity it reserved.
        let req10 = request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        for framing in [
            Framing::Length,
            Framing::Chunked,
            Framing::Streaming,
            Framing::Close,
        ] {
            for status in [100, 200, 204, 299, 404, 1000] {
                for body in ["", "body"] {
                    let mut r = Response::for_request(&req10);
                    r.set_status(status).set_framing(framing).set_body(body);
                    r.set_reason("A Much Longer Reason Phrase Than Usual")
                        .unwrap();
                    r.set_header("X-Long", "v".repeat(300));
                    let (chunks, _) = wire(&mut r);
                    assert!(!chunks.is_empty());
                    let mut r = Response::error(413);
                    r.set_framing(framing);
                    wire(&mut r);
                }
            }
        }
    }

    #[test]
    fn no_body_for_head_requests_and_bodiless_statuses() {
        let req = request(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut r = Response::for_request(&req);
        r.set_body("hello");
        let (chunks, flat) = wire(&mut r);
        assert_eq!(chunks.len(), 1);
        assert!(fixed_date(&flat).ends_with("Content-Length: 5\r\n\r\n"));

        for status in [100, 204, 304] {
            let mut r = Response::with_status(status);
            r.set_body("ignored");
            let (chunks, flat) = wire(&mut r);
            assert_eq!(chunks.len(), 1);
            let text = fixed_date(&flat);
            assert!(!text.contains("Content-Length"), "{text}");
            assert!(text.ends_with("Date: D\r\n\r\n"), "{text}");
        }
    }

    #[test]
    fn chunked_and_streaming() {
        let mut r = Response::new();
        r.set_framing(Framing::Chunked).set_body("hello");
        let (chunks, flat) = wire(&mut r);
        assert_eq!(chunks.len(), 3);
        assert!(fixed_date(&flat)
            .ends_with("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));

        let mut r = Response::new();
        r.set_framing(Framing::Chunked);
        let (_, flat) = wire(&mut r);
        assert!(fixed_date(&flat).ends_with("chunked\r\n\r\n0\r\n\r\n"));

        let mut r = Response::new();
        r.set_framing(Framing::Streaming).set_body("a");
        let (_, flat) = wire(&mut r);
        assert!(fixed_date(&flat).ends_with("chunked\r\n\r\n1\r\na\r\n"));
    }

    #[test]
    fn a_refusal_answers_its_request_and_rounds_retry_after_up() {
        let secs = std::time::Duration::from_secs_f64;
        let req = request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut r = Response::refusal(&req, 429, secs(2.5));
        assert!(r.keep_alive());
        assert_eq!(
            fixed_date(&wire(&mut r).1),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Retry-After: 3\r\nDate: D\r\nContent-Length: 17\r\n\r\nToo Many Requests"
        );
        // Never "0": a token due in a millisecond is still a second away.
        let mut r = Response::refusal(&req, 429, secs(0.001));
        assert!(fixed_date(&wire(&mut r).1).contains("Retry-After: 1\r\n"));
        // HEAD: the head alone; HTTP/1.0 without keep-alive: closes.
        let head = request(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut r = Response::refusal(&head, 429, secs(1.0));
        assert!(fixed_date(&wire(&mut r).1).ends_with("Content-Length: 17\r\n\r\n"));
        let old = request(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!Response::refusal(&old, 429, secs(1.0)).keep_alive());
        // Other statuses carry no Retry-After.
        let mut r = Response::refusal(&req, 403, secs(1.0));
        assert!(!fixed_date(&wire(&mut r).1).contains("Retry-After"));
        // A 429 from a parse error says one second, and closes.
        let mut r = Response::from_error(&ProtocolError::new(429, "x"));
        let text = fixed_date(&wire(&mut r).1);
        assert!(text.contains("Retry-After: 1\r\n") && text.contains("Connection: close\r\n"));
    }

    #[test]
    fn http10_clients() {
        let req = request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let mut r = Response::for_request(&req);
        r.set_body("x");
        assert!(r.keep_alive());
        let (_, flat) = wire(&mut r);
        assert!(fixed_date(&flat).contains("Connection: keep-alive\r\n"));

        let mut r = Response::for_request(&req);
        r.set_framing(Framing::Chunked).set_body("x");
        assert_eq!(r.framing(), Framing::Close);
        assert!(!r.keep_alive());
        let (_, flat) = wire(&mut r);
        let text = fixed_date(&flat);
        assert!(!text.contains("chunked") && text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nx"));

        let req = request(b"GET / HTTP/1.0\r\n\r\n");
        let mut r = Response::for_request(&req);
        assert!(!r.keep_alive());
        assert!(fixed_date(&wire(&mut r).1).contains("Connection: close\r\n"));
    }

    #[test]
    fn connection_close_is_sent_when_closing() {
        let req = request(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let mut r = Response::for_request(&req);
        assert!(!r.keep_alive());
        assert!(fixed_date(&wire(&mut r).1).contains("Connection: close\r\n"));

        let mut r = Response::new();
        r.set_header("Connection", "close");
        assert!(!r.keep_alive());
        let text = fixed_date(&wire(&mut r).1);
        assert_eq!(text.matches("Connection").count(), 1, "{text}");

        let mut r = Response::new();
        r.set_keep_alive(false);
        assert!(fixed_date(&wire(&mut r).1).contains("Connection: close\r\n"));
    }

    #[test]
    fn error_responses_close() {
        for code in [400, 413, 414, 431, 501, 505] {
            let mut r = Response::from_error(&ProtocolError::new(code, "x"));
            assert!(!r.keep_alive());
            let text = fixed_date(&wire(&mut r).1);
            let phrase = reason_phrase(code).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {code} {phrase}\r\n")),
                "{text}"
            );
            assert!(text.contains("Connection: close\r\n"));
            assert!(text.ends_with(&format!("\r\n\r\n{phrase}")));
        }
        assert_eq!(Response::error(200).status(), 400);
    }

    #[test]
    fn a_refused_field_turns_the_response_into_a_500() {
        let mut r = Response::new();
        r.set_header("X-Ok", "1")
            .set_header("X-Split", "a\r\nSet-Cookie: x=1")
            .set_body("secret");
        let text = fixed_date(&wire(&mut r).1);
        assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
        assert!(
            !text.contains("Set-Cookie") && !text.contains("secret"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
    }

    #[test]
    fn custom_reason_status_and_date() {
        let mut r = Response::with_status(299);
        r.set_reason("Fine Indeed").unwrap();
        assert!(r.set_reason("bad\r\n").is_err());
        r.set_header("Date", "Thu, 01 Jan 1970 00:00:00 GMT");
        assert!(r.try_set_header("Content-Length", "1").is_err());
        let text = String::from_utf8(wire(&mut r).1).unwrap();
        assert!(text.starts_with("HTTP/1.1 299 Fine Indeed\r\n"));
        assert_eq!(text.matches("Date:").count(), 1);
        let mut r = Response::with_status(7);
        assert!(String::from_utf8(wire(&mut r).1)
            .unwrap()
            .starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
    }

    fn parse_one(method: &str, input: &[u8]) -> Result<(Response, usize), ProtocolError> {
        let mut r = Response::parser_for(method);
        match r.append(input)? {
            Progress::Complete(n) => Ok((r, n)),
            Progress::NeedMore(_) => panic!("incomplete"),
        }
    }

    #[test]
    fn parses_length_and_chunked_bodies() {
        let (r, n) = parse_one("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcX").unwrap();
        assert_eq!((n, &r.body()[..], r.reason()), (41, &b"abc"[..], "OK"));
        assert!(r.keep_alive());
        let input = b"HTTP/1.1 404 Nope\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        let (r, n) = parse_one("POST", input).unwrap();
        assert_eq!((n, &r.body()[..]), (input.len(), &b"ab"[..]));
        assert_eq!((r.status(), r.reason()), (404, "Nope"));
        assert_eq!(r.sizes().unwrap().body, 2);
    }

    #[test]
    fn bodiless_responses() {
        for (method, status) in [("HEAD", 200), ("GET", 204), ("GET", 304), ("CONNECT", 200)] {
            let input = format!("HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\nNEXT");
            let (r, n) = parse_one(method, input.as_bytes()).unwrap();
            assert_eq!(n, input.len() - 4, "{method} {status}");
            assert!(r.body().is_empty());
        }
        let (r, _) = parse_one("CONNECT", b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert!(!r.keep_alive(), "a tunnel is not HTTP any more");
        let (r, _) = parse_one(
            "GET",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status(), 101);
        assert!(!r.keep_alive());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let input =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz";
        for split in 0..input.len() {
            let mut r = Response::parser_for("POST");
            assert_eq!(
                r.append(&input[..split]).unwrap(),
                Progress::NeedMore(split)
            );
            assert_eq!(
                r.append(&input[split..]).unwrap(),
                Progress::Complete(input.len() - split)
            );
            assert_eq!((r.status(), &r.body()[..]), (200, &b"z"[..]));
            assert!(!r.headers().contains("link"));
            assert_eq!(r.sizes().unwrap().head, input.len() as u64 - 1);
        }
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let mut r = Response::parser_for("GET");
        assert_eq!(
            r.append(b"HTTP/1.1 200 OK\r\n\r\nsome").unwrap(),
            Progress::NeedMore(23)
        );
        assert_eq!(r.append(b" more").unwrap(), Progress::NeedMore(5));
        assert!(r.end_of_stream());
        assert_eq!(&r.body()[..], b"some more");
        assert!(!r.keep_alive());

        let mut r = Response::parser_for("GET");
        r.append(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
            .unwrap();
        assert!(
            !r.end_of_stream(),
            "a short Content-Length body is an error"
        );
        let mut r = Response::parser_for("GET");
        r.append(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert!(!r.end_of_stream());
    }

    #[test]
    fn response_limits() {
        let limits = Limits::new().with_max_body(4);
        let mut r = Response::parser_with("GET", limits);
        assert_eq!(
            r.append(b"HTTP/1.1 200 OK\r\n\r\n12345").unwrap_err().code,
            502
        );
        let mut r = Response::parser_with("GET", limits);
        let e = r
            .append(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.code, 502);
        let mut r = Response::parser_with("GET", limits);
        let e = r
            .append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n")
            .unwrap_err();
        assert_eq!(e.code, 502);
        assert_eq!(
            r.append(b"HTTP/1.1 200 OK\r\n\r\n").unwrap_err(),
            e,
            "sticky"
        );
        let limits = Limits::new().with_max_head(32);
        let mut r = Response::parser_with("GET", limits);
        assert_eq!(r.append(&[b'H'; 40]).unwrap_err().code, 502);
    }

    #[test]
    fn malformed_responses() {
        for bad in [
            &b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        ] {
            let mut r = Response::parser_for("GET");
            let e = r.append(bad).unwrap_err();
            assert_eq!(e.code, 502, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encoded_responses_parse_back() {
        let mut r = Response::with_status(201);
        r.set_header("X-A", "1").set_body("payload");
        let (_, flat) = wire(&mut r);
        let (p, n) = parse_one("GET", &flat).unwrap();
        assert_eq!(
            (n, p.status(), &p.body()[..]),
            (flat.len(), 201, &b"payload"[..])
        );
        assert_eq!(p.header("x-a"), Some(&b"1"[..]));
        assert!(p.header("date").is_some());
    }
}
