//! Requests: the server's incremental parser and the client's builder.
//!
//! One type plays both roles because the runtime's protocol contract has one
//! request type: a server gets [`Request::parser`] and feeds it reads until it
//! is complete; a client builds one with [`Request::new`] and encodes it.
//!
//! Parsing is strict (RFC 9112; see `docs/http.md`): whatever another
//! implementation might frame differently is rejected with the status to
//! answer, and a failed parser stays failed, so no bytes after a bad request
//! are ever taken as a request. The head is copied once into a `Bytes`; method,
//! target and fields are offsets into it.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};

use super::body::BodyReader;
use super::chunked::{put_chunk_size, CHUNK_END_AFTER_DATA, LAST_CHUNK};
use super::framing::{BodyKind, Framing, FramingFields};
use super::head::{
    check_line_endings, check_parsed_line_endings, leading_empty_lines, start_line, HeadReader,
};
use super::headers::{special_of, BuildError, Field, FieldIndex, Headers, Span, Text};
use super::limits::Limits;
use super::syntax::{byte_table, in_table, is_token, list_contains, trim_ows, ByteRule};
use super::version::Version;
use crate::protocol::{Message, MessageSizes, Progress, ProtocolError};

/// Header slots `httparse` gets on the stack; more come from the heap.
pub(crate) const STACK_SLOTS: usize = 128;

/// The interim response sent to an `Expect: 100-continue` request.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Body,
    Done,
    Failed(ProtocolError),
}

/// An HTTP/1.1 request: parsed from the wire by a server, or built by a client.
#[derive(Debug)]
pub struct Request {
    limits: Limits,
    state: State,
    reader: HeadReader,
    method: Text,
    target: Text,
    version: Version,
    headers: Headers,
    body: Bytes,
    body_reader: BodyReader,
    keep_alive: bool,
    expect_continue: bool,
    continue_offered: bool,
    head_len: u64,
    framing: Framing,
    /// Payload bytes of the parsed body (kept when the body is taken).
    body_len: u64,
    /// Sizes of the last `encode` (client side).
    encoded: Option<MessageSizes>,
}

impl Request {
    /// A server-side parser with the default [`Limits`].
    pub fn parser() -> Self {
        Request::parser_with(Limits::default())
    }

    /// A server-side parser with the given limits.
    pub fn parser_with(limits: Limits) -> Self {
        Request {
            limits,
            state: State::Head,
            reader: HeadReader::default(),
            method: Text::Static(""),
            target: Text::Static(""),
            version: Version::Http11,
            headers: Headers::new(),
            body: Bytes::new(),
            body_reader: BodyReader::new(),
            keep_alive: false,
            expect_continue: false,
            continue_offered: false,
            head_len: 0,
            framing: Framing::Length,
            body_len: 0,
            encoded: None,
        }
    }

    /// Makes this what [`parser_with`](Self::parser_with) its limits makes,
    /// keeping a buffer for the next head. Field by field, in place: moving a
    /// new request in costs more than the parse. The pattern names every field
    /// so that a new one cannot be forgotten here.
    pub(crate) fn reuse(&mut self) {
        let Request {
            limits: _,
            state,
            reader,
            method,
            target,
            version,
            headers,
            body,
            body_reader,
            keep_alive,
            expect_continue,
            continue_offered,
            head_len,
            framing,
            body_len,
            encoded,
        } = self;
        *state = State::Head;
        *reader = HeadReader::default();
        *method = Text::Static("");
        *target = Text::Static("");
        *version = Version::Http11;
        headers.clear();
        *body = Bytes::new();
        *body_reader = BodyReader::new();
        *keep_alive = false;
        *expect_continue = false;
        *continue_offered = false;
        *head_len = 0;
        *framing = Framing::Length;
        *body_len = 0;
        *encoded = None;
    }

    /// A client request for `method` (a token such as `GET`) and `target`
    /// (origin-form `/path?query`, absolute-form, authority-form for CONNECT or
    /// `*`). Add a `Host` field with [`set_header`](Self::set_header); without
    /// one, [`encode`](Message::encode) takes it from an absolute-form target or
    /// sends it empty, as RFC 9112 §3.2 requires.
    pub fn new(method: &str, target: &str) -> Result<Self, BuildError> {
        let mut req = Request::parser();
        req.state = State::Done;
        req.keep_alive = true;
        req.set_method(method)?;
        req.set_target(target)?;
        Ok(req)
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.method.resolve(self.headers.raw())
    }

    /// Whether the method is HEAD (without validating UTF-8).
    pub fn is_head(&self) -> bool {
        self.method.as_bytes(self.headers.raw()) == b"HEAD"
    }

    /// The request target as received, e.g. `/search?q=x`.
    pub fn target(&self) -> &str {
        self.target.resolve(self.headers.raw())
    }

    /// The path of the target: before `?` for origin-form; the path part of an
    /// absolute-form URI (`/` if it has none); the whole target for the
    /// authority and asterisk forms.
    pub fn path(&self) -> &str {
        let target = self.target();
        let absolute = if target.starts_with('/') {
            None
        } else {
            target.find("://")
        };
        let path = match absolute {
            Some(scheme_end) => {
                let after = target.get(scheme_end + 3..).unwrap_or("");
                match after.find('/') {
                    Some(slash) => after.get(slash..).unwrap_or("/"),
                    None => return "/",
                }
            }
            _ => target,
        };
        // A byte scan: targets are short, and shorter than a searcher's setup.
        match path.bytes().position(|b| b == b'?') {
            Some(q) => path.get(..q).unwrap_or(path),
            None => path,
        }
    }

    /// The query of the target (after `?`), if it has one.
    pub fn query(&self) -> Option<&str> {
        let target = self.target();
        target.find('?').and_then(|q| target.get(q + 1..))
    }

    /// The version the request was sent with (HTTP/1.1 for built requests).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The value of the first header field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The body (empty until the request is complete).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out, leaving it empty.
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Whether the connection may carry another request after this one (RFC
    /// 9112 §9.3): for HTTP/1.1 unless `Connection: close`; for HTTP/1.0 only
    /// with `Connection: keep-alive`.
    /// For a built request: unless it has `Connection: close`.
    pub fn keep_alive(&self) -> bool {
        if self.head_len == 0 {
            return self.keep_alive && !self.headers.contains_token("connection", "close");
        }
        self.keep_alive
    }

    /// Whether the request carried `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// Whether the whole request (head and body) has been parsed.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// The limits this parser applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sets the method (a token). Client side.
    pub fn set_method(&mut self, method: &str) -> Result<&mut Self, BuildError> {
        if !is_token(method.as_bytes()) {
            return Err(BuildError::new("method is not a token"));
        }
        self.method = match method {
            "GET" => Text::Static("GET"),
            "HEAD" => Text::Static("HEAD"),
            "POST" => Text::Static("POST"),
            "PUT" => Text::Static("PUT"),
            "DELETE" => Text::Static("DELETE"),
            "OPTIONS" => Text::Static("OPTIONS"),
            "PATCH" => Text::Static("PATCH"),
            other => Text::Owned(other.into()),
        };
        Ok(self)
    }

    /// Sets the target: visible ASCII, no spaces, no fragment. Client side.
    pub fn set_target(&mut self, target: &str) -> Result<&mut Self, BuildError> {
        let ok = !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !ok {
            return Err(BuildError::new(
                "request target is not visible ASCII without a fragment",
            ));
        }
        self.target = Text::Owned(target.into());
        Ok(self)
    }

    /// Replaces every field called `name` with one holding `value`.
    /// A field that cannot be sent is refused, logged and left out: a name
    /// that is not a token, a value with CR, LF or NUL, or `Content-Length`
    /// and `Transfer-Encoding` ([`encode`] derives them from the body and
    /// [`set_framing`](Self::set_framing)). Use
    /// [`try_set_header`](Self::try_set_header) to handle the error.
    ///
    /// [`encode`]: Message::encode
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if let Err(e) = self.try_set_header(name, value) {
            log::warn!("taskweave: request field {name:?} refused ({e}); left out");
        }
        self
    }

    /// Adds a field after the existing ones (same rules as
    /// [`set_header`](Self::set_header)).
    pub fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if let Err(e) = self.try_append_header(name, value) {
            log::warn!("taskweave: request field {name:?} refused ({e}); left out");
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
        self.detach_start_line();
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
        self.detach_start_line();
        self.headers.append(name, value)?;
        Ok(self)
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove_header(&mut self, name: &str) -> usize {
        self.detach_start_line();
        self.headers.remove(name)
    }

    /// Sets the body. Client side.
    pub fn set_body(&mut self, body: impl Into<Bytes>) -> &mut Self {
        self.body = body.into();
        self
    }

    /// Chooses how [`encode`](Message::encode) frames the body:
    /// [`Framing::Length`] (default) or chunked ([`Framing::Chunked`], or
    /// [`Framing::Streaming`] to send more chunks after). [`Framing::Close`] is
    /// not possible for a request and is treated as `Length`.
    pub fn set_framing(&mut self, framing: Framing) -> &mut Self {
        self.framing = framing;
        self
    }

    /// Makes method and target independent of the parsed head before the
    /// fields are edited (editing may move the head's bytes).
    fn detach_start_line(&mut self) {
        if self.headers.is_frozen() {
            let raw = self.headers.raw();
            self.method = self.method.detach(raw);
            self.target = self.target.detach(raw);
        }
    }

    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        self.state = State::Failed(err.clone());
        err
    }

    fn append_inner(&mut self, data: &[u8]) -> Result<Progress, ProtocolError> {
        let mut used = 0;
        if self.state == State::Head {
            match self.append_head(data)? {
                Some(n) => used = n,
                None => return Ok(Progress::NeedMore(data.len())),
            }
        }
        let rest = data.get(used..).unwrap_or_default();
        let (n, done) = self.body_reader.feed(rest)?;
        used += n;
        if done {
            self.body = self.body_reader.take();
            self.body_len = self.body.len() as u64;
            self.state = State::Done;
            Ok(Progress::Complete(used))
        } else {
            Ok(Progress::NeedMore(used))
        }
    }

    /// Parses the head from `data` (directly) or from the buffer; returns the
    /// bytes of `data` it used once the head is complete.
    fn append_head(&mut self, data: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let limits = self.limits;
        let mut skipped = 0;
        let mut data = data;
        if self.reader.is_empty() {
            skipped = leading_empty_lines(data);
            data = data.get(skipped..).unwrap_or_default();
            if data.is_empty() {
                return Ok(None);
            }
            if let Some(head) = parse_head(data, &limits, self.headers.index_mut())? {
                let len = head.len;
                self.headers
                    .freeze_copy(data.get(..len).unwrap_or_default(), head.special);
                self.install(head);
                return Ok(Some(skipped + len));
            }
        }
        let before = self.reader.buffered().len();
        match self.reader.push(data, limits.max_head())? {
            None => {
                check_partial(self.reader.buffered(), &limits)?;
                Ok(None)
            }
            Some(end) => {
                let head = parse_head(self.reader.buffered(), &limits, self.headers.index_mut())?
                    .filter(|h| h.len == end)
                    .ok_or_else(|| ProtocolError::new(400, "malformed request head"))?;
                self.headers.freeze(self.reader.take(end), head.special);
                self.install(head);
                Ok(Some(skipped + end.saturating_sub(before)))
            }
        }
    }

    /// Takes in a parsed head whose bytes the headers hold (frozen).
    fn install(&mut self, head: ParsedHead) {
        self.method = Text::Span(head.method);
        self.target = Text::Span(head.target);
        self.version = head.version;
        self.keep_alive = head.keep_alive;
        self.expect_continue = head.expect_continue;
        self.head_len = head.len as u64;
        self.body_reader.start(head.body, &self.limits);
        self.state = State::Body;
    }
}

/// Refuses the fields the encoder owns.
pub(crate) fn check_not_framing(name: &str) -> Result<(), BuildError> {
    if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
    {
        return Err(BuildError::new(
            "Content-Length and Transfer-Encoding are set by the encoder",
        ));
    }
    Ok(())
}

impl Message for Request {
    fn append(&mut self, data: &[u8]) -> Result<Progress, ProtocolError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Done => return Ok(Progress::Complete(0)),
            State::Head | State::Body => {}
        }
        self.append_inner(data).map_err(|e| self.fail(e))
    }

    fn request_line(&self) -> Option<(&str, &str)> {
        Some((self.method(), self.target()))
    }

    fn encode(&mut self, out: &mut Vec<Bytes>) {
        let raw = self.headers.raw();
        let method = self.method.resolve(raw);
        let target = self.target.resolve(raw);
        let host = if self.headers.contains("host") {
            None
        } else {
            Some(authority_of(target))
        };
        let chunked = matches!(self.framing, Framing::Chunked | Framing::Streaming);
        let body_len = self.body.len();
        let send_length = !chunked && (body_len > 0 || !no_content_method(method));
        let mut len_buf = itoa::Buffer::new();
        let len_str = len_buf.format(body_len);

        let cap = method.len()
            + target.len()
            + 12
            + host.map_or(0, |h| h.len() + 8)
            + self.headers.encoded_len()
            + 30
            + 20
            + 2;
        let mut head = BytesMut::with_capacity(cap);
        head.put_slice(method.as_bytes());
        head.put_u8(b' ');
        head.put_slice(target.as_bytes());
        head.put_slice(b" HTTP/1.1\r\n");
        if let Some(host) = host {
            head.put_slice(b"Host: ");
            head.put_slice(host.as_bytes());
            head.put_slice(b"\r\n");
        }
        self.headers.write_to(&mut head);
        if chunked {
            head.put_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        } else if send_length {
            head.put_slice(b"Content-Length: ");
            head.put_slice(len_str.as_bytes());
            head.put_slice(b"\r\n\r\n");
        } else {
            head.put_slice(b"\r\n");
        }
        if chunked && body_len > 0 {
            put_chunk_size(&mut head, body_len as u64);
        }
        if chunked && body_len == 0 && self.framing == Framing::Chunked {
            head.put_slice(LAST_CHUNK);
        }
        debug_assert!(head.len() <= cap, "head capacity estimate too small");
        let mut head_len = head.len() as u64;
        out.push(head.freeze());
        if body_len > 0 {
            out.push(self.body.clone());
            if chunked {
                let end: &'static [u8] = if self.framing == Framing::Chunked {
                    CHUNK_END_AFTER_DATA
                } else {
                    b"\r\n"
                };
                head_len += end.len() as u64;
                out.push(Bytes::from_static(end));
            }
        }
        self.encoded = Some(MessageSizes {
            head: head_len,
            body: body_len as u64,
        });
    }

    /// `100 Continue` once, while an HTTP/1.1 request that asked for it waits
    /// for its body (RFC 9110 §10.1.1); HTTP/1.0 clients never get a 1xx.
    fn interim(&mut self) -> Option<Bytes> {
        let wanted = self.state == State::Body
            && self.expect_continue
            && self.version == Version::Http11
            && !self.continue_offered;
        if wanted {
            self.continue_offered = true;
            Some(Bytes::from_static(CONTINUE))
        } else {
            None
        }
    }

    fn sizes(&self) -> Option<MessageSizes> {
        match self.state {
            State::Body | State::Done if self.head_len > 0 => Some(MessageSizes {
                head: self.head_len + self.body_reader.overhead_len(),
                body: if self.state == State::Done {
                    self.body_len
                } else {
                    self.body_reader.payload_len()
                },
            }),
            _ => self.encoded,
        }
    }
}

/// Whether an empty body needs no `Content-Length` for this method (RFC 9110
/// §8.6: a client should not send one when the method gives content no
/// meaning).
fn no_content_method(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE" | "CONNECT"
    )
}

/// The authority of an absolute-form target (for `Host`), else empty.
fn authority_of(target: &str) -> &str {
    match target.find("://") {
        Some(i) if !target.starts_with('/') => {
            let rest = target.get(i + 3..).unwrap_or("");
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = rest.get(..end).unwrap_or("");
            // Drop userinfo: it must not be sent in Host.
            authority.rsplit('@').next().unwrap_or(authority)
        }
        _ if !target.starts_with('/') && target != "*" => target,
        _ => "",
    }
}

/// What the head said, as offsets into the buffer it was parsed from.
struct ParsedHead {
    len: usize,
    method: Span,
    target: Span,
    version: Version,
    keep_alive: bool,
    expect_continue: bool,
    body: BodyKind,
    /// The special-name bits of the fields, for [`Headers::freeze`].
    special: u8,
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes
/// are needed.
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
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        // A version is only judged once its line is complete, so that an
        // unsupported version gets 505 however the line was split.
        Err(httparse::Error::Version) if !start_line(buf).1 => return Ok(None),
        Err(e) => return Err(parse_error(e, buf)),
    };
    let head = buf.get(..len).unwrap_or_default();
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    check_request_line_endings(head, method, target, req.headers)?;
    check_target(method, target, limits)?;
    if len > limits.max_head() {
        return Err(ProtocolError::new(431, "request head too large"));
    }
    let version = Version::from_minor(req.version.unwrap_or(1));
    let inside = |part: &[u8]| {
        Span::of(buf, part).ok_or_else(|| ProtocolError::new(400, "request head too large"))
    };
    fields.reset(req.headers.len());
    let mut framing = FramingFields::default();
    let mut hosts = 0u32;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut special = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        fields.push(Field {
            name: inside(name)?,
            value: inside(h.value)?,
        });
        special |= special_of(name);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                if !valid_host(h.value) {
                    return Err(ProtocolError::new(400, "invalid Host"));
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                expect_continue |= trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
            }
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
    if hosts > 1 {
        return Err(ProtocolError::new(400, "more than one Host"));
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(ProtocolError::new(400, "missing Host"));
    }
    let body = framing.request_body(version, limits)?;
    Ok(Some(ParsedHead {
        len,
        method: inside(method.as_bytes())?,
        target: inside(target.as_bytes())?,
        version,
        keep_alive: !close && (version == Version::Http11 || keep_alive_token),
        expect_continue,
        body,
        special,
    }))
}

/// Rejects a bare LF in a request head `httparse` accepted, at the ends of
/// the lines it found: after the version, which follows the target and one
/// space, and after each field value. A head that does not start with its
/// method (`httparse` skipped an empty line) is scanned whole.
fn check_request_line_endings(
    head: &[u8],
    method: &str,
    target: &str,
    fields: &[httparse::Header<'_>],
) -> Result<(), ProtocolError> {
    let offset = |part: &[u8]| (part.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
    if offset(method.as_bytes()) != 0 {
        return check_line_endings(head);
    }
    let end_of = |part: &[u8]| offset(part).saturating_add(part.len());
    let start_line_end = end_of(target.as_bytes()).saturating_add(b" HTTP/1.1".len());
    let field_ends = fields.iter().map(|f| end_of(f.value));
    check_parsed_line_endings(head, std::iter::once(start_line_end).chain(field_ends))
}

/// The status for an `httparse` error.
fn parse_error(e: httparse::Error, buf: &[u8]) -> ProtocolError {
    match e {
        httparse::Error::TooManyHeaders => ProtocolError::new(431, "too many header fields"),
        httparse::Error::Version if is_http_version(start_line(buf).0) => {
            ProtocolError::new(505, "HTTP version not supported")
        }
        httparse::Error::Version => ProtocolError::new(400, "malformed HTTP version"),
        httparse::Error::HeaderName if has_obs_fold(buf) => {
            ProtocolError::new(400, "obsolete line folding")
        }
        httparse::Error::HeaderName => ProtocolError::new(400, "invalid header field name"),
        httparse::Error::HeaderValue => {
            ProtocolError::new(400, "invalid byte in header field value")
        }
        httparse::Error::NewLine => ProtocolError::new(400, "malformed line ending"),
        httparse::Error::Status | httparse::Error::Token => {
            ProtocolError::new(400, "malformed request line")
        }
    }
}

/// Whether the last word of a request line is a well-formed `HTTP/d.d`.
fn is_http_version(line: &[u8]) -> bool {
    match line.rsplit(|&b| b == b' ').next() {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        _ => false,
    }
}

/// Whether a field line starts with whitespace (obs-fold, RFC 9112 §5.2).
fn has_obs_fold(buf: &[u8]) -> bool {
    memchr::memmem::find(buf, b"\n ").is_some() || memchr::memmem::find(buf, b"\n\t").is_some()
}

/// Checks the target's length (414) and form (RFC 9112 §3.2).
fn check_target(method: &str, target: &str, limits: &Limits) -> Result<(), ProtocolError> {
    if target.len() > limits.max_target() {
        return Err(ProtocolError::new(414, "request target too long"));
    }
    let bytes = target.as_bytes();
    if !bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'#') {
        return Err(ProtocolError::new(400, "invalid byte in request target"));
    }
    let ok = if method == "CONNECT" {
        is_authority_form(bytes)
    } else if bytes.starts_with(b"/") {
        true
    } else if bytes == b"*" {
        method == "OPTIONS"
    } else {
        is_absolute_form(bytes)
    };
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::new(400, "invalid request target form"))
    }
}

/// `host:port` with a non-empty host and a decimal port.
fn is_authority_form(t: &[u8]) -> bool {
    match t.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let (host, port) = t.split_at(colon);
            let port = port.get(1..).unwrap_or_default();
            !host.is_empty()
                && valid_host(host)
                && !port.is_empty()
                && port.len() <= 5
                && port.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// `scheme://authority[/path][?query]` with a valid scheme (RFC 3986 §3.1)
/// and a non-empty authority that would be a valid `Host` (so no userinfo,
/// which RFC 9110 §4.2.4 makes an error).
fn is_absolute_form(t: &[u8]) -> bool {
    let Some(colon) = t.iter().position(|&b| b == b':') else {
        return false;
    };
    let (scheme, rest) = t.split_at(colon);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let Some(after) = rest.strip_prefix(b"://") else {
        return false;
    };
    let end = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    let authority = after.get(..end).unwrap_or_default();
    scheme_ok && !authority.is_empty() && valid_host(authority)
}

/// A `Host` value: `uri-host [":" port]`, possibly empty (RFC 9110 §7.2).
fn valid_host(v: &[u8]) -> bool {
    // A fold without an early exit: host values are short and almost always
    // valid, and the loop it compiles to has no branch per byte.
    v.iter().fold(true, |ok, &b| ok & in_table(&HOST_BYTE, b))
}

static HOST_BYTE: [bool; 256] = byte_table(ByteRule::Host);

/// Limits that can be judged before the head is complete: a target longer
/// than allowed (414) or a head longer than allowed (431).
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), ProtocolError> {
    let (line, _) = start_line(buf);
    if let Some(sp) = memchr::memchr(b' ', line) {
        let rest = line.get(sp + 1..).unwrap_or_default();
        let target_len = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        if target_len > limits.max_target() {
            return Err(ProtocolError::new(414, "request target too long"));
        }
    }
    if buf.len() > limits.max_head() {
        return Err(ProtocolError::new(431, "request head too large"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<(Request, usize), ProtocolError> {
        let mut r = Request::parser();
        match r.append(input)? {
            Progress::Complete(n) => Ok((r, n)),
            Progress::NeedMore(_) => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn code(input: &[u8]) -> u16 {
        match parse(input) {
            Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(input)),
            Err(e) => e.code,
        }
    }

    #[test]
    fn simple_get() {
        let input = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\nNEXT";
        let (r, used) = parse(input).unwrap();
        assert_eq!(used, input.len() - 4);
        assert_eq!(r.method(), "GET");
        assert_eq!(r.target(), "/a/b?x=1&y");
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), Some("x=1&y"));
        assert_eq!(r.version(), Version::Http11);
        assert_eq!(r.header("HOST"), Some(&b"example.com"[..]));
        assert_eq!(r.headers().len(), 2);
        assert!(r.keep_alive());
        assert!(r.body().is_empty());
        assert!(r.is_complete());
        assert_eq!(
            r.sizes(),
            Some(MessageSizes {
                head: (input.len() - 4) as u64,
                body: 0
            })
        );
    }

    #[test]
    fn content_length_body_split_anywhere() {
        let input = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
        for split in 0..input.len() {
            let mut r = Request::parser();
            assert_eq!(
                r.append(&input[..split]).unwrap(),
                Progress::NeedMore(split)
            );
            assert_eq!(
                r.append(&input[split..]).unwrap(),
                Progress::Complete(input.len() - split),
                "split {split}"
            );
            assert_eq!(&r.body()[..], b"hello world");
            assert_eq!(r.path(), "/p");
            assert_eq!(r.header("content-length"), Some(&b"11"[..]));
        }
    }

    #[test]
    fn chunked_body() {
        let input =
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (mut r, used) = parse(input).unwrap();
        assert_eq!(used, input.len());
        assert_eq!(&r.take_body()[..], b"abcde");
        let sizes = r.sizes().unwrap();
        assert_eq!(sizes.body, 5, "still counted after the body is taken");
        assert_eq!(sizes.head as usize, input.len() - 5);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |s: &[u8]| parse(s).unwrap().0.keep_alive();
        assert!(ka(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    #[test]
    fn continue_is_offered_once_while_the_body_is_missing() {
        let head =
            b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
        let mut r = Request::parser();
        assert_eq!(r.append(head).unwrap(), Progress::NeedMore(head.len()));
        assert!(r.expects_continue());
        assert_eq!(r.interim().as_deref(), Some(CONTINUE));
        assert_eq!(r.interim(), None);
        assert_eq!(r.append(b"a").unwrap(), Progress::NeedMore(1));
        assert_eq!(r.interim(), None, "only once");
        assert_eq!(r.append(b"bc").unwrap(), Progress::Complete(2));

        // Body in the same read: nothing to send.
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"abc");
        let (mut r, _) = parse(&whole).unwrap();
        assert_eq!(r.interim(), None);

        // HTTP/1.0 clients never get a 1xx.
        let mut r = Request::parser();
        r.append(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap();
        assert_eq!(r.interim(), None);

        // No body: nothing to wait for.
        let (mut r, _) =
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!(r.interim(), None);
    }

    #[test]
    fn target_forms() {
        let ok = |s: &[u8]| parse(s).map(|(r, _)| r.path().to_string());
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").unwrap(), "*");
        assert_eq!(
            ok(b"GET http://h.example/x?y HTTP/1.1\r\nHost: h\r\n\r\n").unwrap(),
            "/x"
        );
        assert_eq!(
            ok(b"GET http://h.example HTTP/1.1\r\nHost: h\r\n\r\n").unwrap(),
            "/"
        );
        assert_eq!(
            ok(b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n").unwrap(),
            "h.example:443"
        );
        assert_eq!(code(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"CONNECT h:port HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET x:80 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET 1http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET http://a{b/ HTTP/1.0\r\n\r\n"), 400);
        assert_eq!(code(b"GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn versions() {
        assert_eq!(code(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(code(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(code(b"GET / HTTP/1.10\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(code(b"GET / http/1.1\r\nHost: h\r\n\r\n"), 400);
        // Split just after the bad digit: still 505 once the line is complete.
        let mut r = Request::parser();
        assert!(matches!(
            r.append(b"GET / HTTP/2"),
            Ok(Progress::NeedMore(_))
        ));
        assert_eq!(r.append(b".0\r\nHost: h\r\n\r\n").unwrap_err().code, 505);
    }

    #[test]
    fn limits_apply_before_the_head_is_complete() {
        let limits = Limits::new().with_max_target(10).with_max_head(64);
        let mut r = Request::parser_with(limits);
        assert_eq!(r.append(b"GET /0123456789").unwrap_err().code, 414);
        let mut r = Request::parser_with(limits);
        assert!(r.append(b"GET /012345678 HTTP/1.1\r\n").is_ok());
        assert_eq!(r.append(&[b'a'; 64]).unwrap_err().code, 431);
        let mut r = Request::parser_with(limits);
        assert_eq!(r.append(&[b'G'; 65]).unwrap_err().code, 431);
        assert!(r.reader.buffered().len() <= 65);
    }

    #[test]
    fn header_count_limit() {
        let limits = Limits::new().with_max_headers(2);
        let ok = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n";
        assert!(Request::parser_with(limits).append(ok).is_ok());
        let bad = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            Request::parser_with(limits).append(bad).unwrap_err().code,
            431
        );
        // Above the stack slots the parser uses the heap.
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let limits = Limits::new().with_max_headers(201);
        let mut r = Request::parser_with(limits);
        assert!(matches!(r.append(&many), Ok(Progress::Complete(_))));
        assert_eq!(r.headers().len(), 201);
        assert_eq!(r.header("x-199"), Some(&b"199"[..]));
        assert_eq!(Request::parser().append(&many).unwrap_err().code, 431);
    }

    #[test]
    fn failure_is_sticky() {
        let mut r = Request::parser();
        let e = r
            .append(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            r.append(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap_err(),
            e
        );
        assert!(!r.is_complete());
        assert_eq!(r.interim(), None);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (r, used) = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(used, 31);
        assert_eq!(r.method(), "GET");
        assert_eq!(
            r.sizes().unwrap().head,
            27,
            "empty lines are not part of the head"
        );
        // Empty lines alone are consumed without being buffered.
        let mut r = Request::parser();
        assert_eq!(r.append(b"\r\n\r\n").unwrap(), Progress::NeedMore(4));
        assert!(r.reader.is_empty());
        assert_eq!(r.append(b"\nGET").unwrap_err().code, 400);
    }

    fn encoded(req: &mut Request) -> Vec<u8> {
        let mut out = Vec::new();
        req.encode(&mut out);
        out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn client_requests_are_always_framed() {
        let mut r = Request::new("GET", "/x").unwrap();
        r.set_header("Host", "h");
        assert!(r.keep_alive());
        assert_eq!(r.sizes(), None);
        assert_eq!(encoded(&mut r), b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.sizes(), Some(MessageSizes { head: 28, body: 0 }));

        let mut r = Request::new("POST", "/x").unwrap();
        r.set_header("Host", "h");
        assert_eq!(
            encoded(&mut r),
            b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        );
        r.set_body("abc");
        let wire = encoded(&mut r);
        assert_eq!(
            wire,
            b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        );
        let (parsed, _) = parse(&wire).unwrap();
        assert_eq!(&parsed.body()[..], b"abc");

        r.set_framing(Framing::Chunked);
        let wire = encoded(&mut r);
        assert_eq!(
            wire,
            &b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..]
        );
        assert_eq!(&parse(&wire).unwrap().0.body()[..], b"abc");

        r.set_framing(Framing::Streaming);
        assert!(encoded(&mut r).ends_with(b"3\r\nabc\r\n"));
    }

    #[test]
    fn client_host_comes_from_the_target_or_is_empty() {
        let mut r = Request::new("GET", "http://user@h.example:8080/p?q").unwrap();
        assert!(encoded(&mut r).starts_with(
            b"GET http://user@h.example:8080/p?q HTTP/1.1\r\nHost: h.example:8080\r\n\r\n"
        ));
        let mut r = Request::new("CONNECT", "h.example:443").unwrap();
        assert_eq!(
            encoded(&mut r),
            b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n"
        );
        let mut r = Request::new("OPTIONS", "*").unwrap();
        assert_eq!(encoded(&mut r), b"OPTIONS * HTTP/1.1\r\nHost: \r\n\r\n");
        assert!(parse(&encoded(&mut r)).is_ok());
    }

    #[test]
    fn builder_rejects_what_it_cannot_send() {
        assert!(Request::new("G T", "/").is_err());
        assert!(Request::new("GET", "/a b").is_err());
        assert!(Request::new("GET", "").is_err());
        assert!(Request::new("GET", "/#frag").is_err());
        let mut r = Request::new("GET", "/").unwrap();
        assert!(r.try_set_header("Content-Length", "5").is_err());
        assert!(r.try_set_header("transfer-encoding", "chunked").is_err());
        assert!(r.try_set_header("X", "a\r\nb").is_err());
        r.set_header("Connection", "close");
        assert!(!r.keep_alive());
        assert_eq!(r.append(b"anything").unwrap(), Progress::Complete(0));
    }

    #[test]
    fn a_parsed_request_can_be_edited_and_forwarded() {
        let (mut r, _) =
            parse(b"POST /f HTTP/1.0\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        r.set_header("X-B", "2");
        r.remove_header("x-a");
        assert_eq!(r.method(), "POST");
        assert_eq!(r.target(), "/f");
        assert_eq!(
            encoded(&mut r),
            b"POST /f HTTP/1.1\r\nHost: \r\nX-B: 2\r\nContent-Length: 2\r\n\r\nhi"
        );
    }
}
