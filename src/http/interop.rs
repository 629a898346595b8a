//! Conversions between taskweave's HTTP messages and the [`http`] crate's
//! types, so that code written for the Rust HTTP ecosystem (handlers,
//! routers, middleware that take an `http::Request` and give an
//! `http::Response`) runs in a taskweave server or client. Only with the
//! cargo feature `http`.
//!
//! | taskweave | `http` | conversions |
//! |---|---|---|
//! | [`Request`] | [`http::Request<Bytes>`](::http::Request) | `TryFrom` both ways |
//! | [`Response`] | [`http::Response<Bytes>`](::http::Response) | `TryFrom` both ways; [`Response::set_from_http`] fills a server's response in place |
//! | [`Headers`] | [`HeaderMap`] | `TryFrom` both ways |
//! | [`Version`] | [`http::Version`] | `From` ours; `TryFrom` theirs (HTTP/1.0 and HTTP/1.1 only) |
//! | a method (`&str`) | [`Method`] | [`Request::http_method`]; back: `req.set_method(m.as_str())` |
//! | a status (`u16`) | [`StatusCode`] | [`Response::http_status`]; back: `resp.set_status(s.as_u16())` |
//!
//! Our messages convert by reference or by value. Coming from `http`, a body
//! is anything `Into<Bytes>` (`Bytes`, `Vec<u8>`, `String`, `&'static str`);
//! going to `http` it is our [`Bytes`], shared rather than copied.
//!
//! # Where a conversion fails
//!
//! Into taskweave, a message is refused with an [`InteropError`] rather than
//! turned into one that taskweave would send differently:
//!
//! * `Content-Length` must equal the body's length: taskweave derives it from
//!   the body. So a response to `HEAD`, or a 304, that states the length of a
//!   body it does not carry is refused.
//! * `Transfer-Encoding` may only be `chunked` (it becomes
//!   [`Framing::Chunked`]), and not together with `Content-Length`: taskweave
//!   applies no other coding.
//! * The request target must be visible ASCII: since 1.3 `http` accepts other
//!   UTF-8 in a path, which is not a valid HTTP/1.1 request target.
//! * Field names must be tokens and values must hold no control byte but
//!   HTAB, as `http` itself checks.
//!
//! Out of taskweave, what `http` refuses fails: a status outside 100-999
//! (which taskweave would send as 500), a target that is not a URI to
//! [`Uri`], a field name over 65,535 bytes, more fields than a
//! [`HeaderMap`] holds. So do a response whose body is not all in the
//! message ([`Framing::Streaming`], [`Framing::Declared`]) and a request
//! still being parsed.
//!
//! # What does not carry over
//!
//! * The case of field names (`http` keeps them in lower case) and the
//!   order of fields with different names: a [`HeaderMap`] groups the fields
//!   of one name, in the order each name first appeared, so `A, B, A` comes
//!   back as `A, A, B`.
//! * The version of an `http` message: taskweave sends every message it
//!   builds as HTTP/1.1 (and answers an HTTP/1.0 request in a form it
//!   understands). The version of a message taskweave parsed goes to `http`.
//! * A reason phrase (`http` has none of its own) and `http`'s extensions.
//! * The [`Framing`] chosen for a request (a response's `Chunked` becomes
//!   `transfer-encoding: chunked`). A parsed message keeps the framing fields
//!   it arrived with, as hyper keeps them, and its body is the decoded one.
//!
//! # Example
//!
//! A handler written for `http` answering a request that taskweave parsed,
//! the way a server task would call it:
//!
//! ```
//! use taskweave::bytes::Bytes;
//! use taskweave::http::{Request, Response};
//! use taskweave::protocol::{Message, Progress};
//!
//! // Code written for the `http` crate.
//! fn greet(req: http::Request<Bytes>) -> http::Response<Bytes> {
//!     let name = req.uri().query().unwrap_or("world");
//!     http::Response::builder()
//!         .header(http::header::CONTENT_TYPE, "text/plain")
//!         .body(Bytes::from(format!("hello, {name}")))
//!         .unwrap()
//! }
//!
//! let mut req = Request::parser();
//! let wire = b"GET /greet?you HTTP/1.1\r\nHost: example\r\n\r\n";
//! assert_eq!(req.append(wire)?, Progress::Complete(wire.len()));
//!
//! let answer = greet(http::Request::try_from(&req)?);
//! let mut resp = Response::for_request(&req);
//! resp.set_from_http(answer)?;
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.header("Content-Type"), Some(&b"text/plain"[..]));
//! assert_eq!(&resp.body()[..], b"hello, you");
//!
//! // And a request built for `http`, sent by taskweave's client.
//! let theirs = http::Request::post("http://example.com/items")
//!     .header("accept", "application/json")
//!     .body("{}")?;
//! let ours = Request::try_from(theirs)?;
//! assert_eq!((ours.method(), ours.target()), ("POST", "http://example.com/items"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use ::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use ::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use bytes::Bytes;

use super::headers::{is_framing_field, BuildError};
use super::syntax::list_elements;
use super::{Framing, Headers, Request, Response, Version};

/// Why a message, its fields, its version, method or status could not be
/// converted between taskweave's types and the `http` crate's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteropError {
    what: &'static str,
    field: Option<Box<str>>,
}

impl InteropError {
    const fn new(what: &'static str) -> Self {
        InteropError { what, field: None }
    }

    fn in_field(name: &str, what: &'static str) -> Self {
        InteropError {
            what,
            field: Some(name.into()),
        }
    }

    /// What was wrong.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The name of the header field that was refused, if it was one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl From<BuildError> for InteropError {
    fn from(e: BuildError) -> Self {
        InteropError::new(e.what())
    }
}

impl fmt::Display for InteropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(name) => write!(f, "header field {name:?}: {}", self.what),
            None => f.write_str(self.what),
        }
    }
}

impl std::error::Error for InteropError {}

// ----- version, method, status ------------------------------------------------

impl From<Version> for ::http::Version {
    fn from(v: Version) -> Self {
        match v {
            Version::Http10 => ::http::Version::HTTP_10,
            Version::Http11 => ::http::Version::HTTP_11,
        }
    }
}

impl TryFrom<::http::Version> for Version {
    type Error = InteropError;

    /// HTTP/1.0 and HTTP/1.1; HTTP/0.9, 2 and 3 are refused.
    fn try_from(v: ::http::Version) -> Result<Self, InteropError> {
        if v == ::http::Version::HTTP_11 {
            Ok(Version::Http11)
        } else if v == ::http::Version::HTTP_10 {
            Ok(Version::Http10)
        } else {
            Err(InteropError::new(
                "version is not HTTP/1.0 or HTTP/1.1, the ones taskweave speaks",
            ))
        }
    }
}

impl Request {
    /// The method as an [`http::Method`](Method) (feature `http`). Fails only
    /// for a parser that has not read a request line yet.
    ///
    /// ```
    /// let req = taskweave::http::Request::new("PATCH", "/")?;
    /// assert_eq!(req.http_method()?, http::Method::PATCH);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn http_method(&self) -> Result<Method, InteropError> {
        Method::from_bytes(self.method().as_bytes())
            .map_err(|_| InteropError::new("method is empty or not a token"))
    }
}

impl Response {
    /// The status as an [`http::StatusCode`](StatusCode) (feature `http`).
    /// Fails for a status outside 100-999, which taskweave sends as 500.
    ///
    /// ```
    /// use taskweave::http::Response;
    ///
    /// assert_eq!(Response::with_status(404).http_status()?, http::StatusCode::NOT_FOUND);
    /// assert!(Response::with_status(1000).http_status().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn http_status(&self) -> Result<StatusCode, InteropError> {
        StatusCode::from_u16(self.status())
            .map_err(|_| InteropError::new("status is outside 100-999 (taskweave sends it as 500)"))
    }

    /// Makes this response the one `resp` describes (feature `http`): its
    /// status, its fields (the ones set here before are removed), its body
    /// and its framing. What this response took from its request stays: no
    /// body on the wire for `HEAD`, the request's persistence, HTTP/1.0
    /// framing. So in a server task, fill [`ServerTask::response`] with this
    /// rather than replacing it. The reason phrase is left as it was.
    ///
    /// On error nothing changes. See the [module](super::interop) for what
    /// is refused: mainly a `Content-Length` other than the body's length.
    ///
    /// ```no_run
    /// use taskweave::bytes::Bytes;
    /// use taskweave::http::{Server, ServerTask};
    /// use taskweave::Series;
    ///
    /// // A handler written for the `http` crate.
    /// fn route(req: http::Request<Bytes>) -> http::Response<Bytes> {
    ///     let status = if req.uri().path() == "/" { 200 } else { 404 };
    ///     http::Response::builder().status(status).body(Bytes::new()).unwrap()
    /// }
    ///
    /// let server = Server::builder().serve("127.0.0.1:8080", |task: &mut ServerTask, _: &mut Series| {
    ///     let answer = match http::Request::try_from(task.request()) {
    ///         Ok(req) => route(req),
    ///         Err(e) => http::Response::builder()
    ///             .status(400)
    ///             .body(Bytes::from(e.to_string()))
    ///             .unwrap(),
    ///     };
    ///     if let Err(e) = task.response().set_from_http(answer) {
    ///         task.response().set_status(500).set_body(e.to_string());
    ///     }
    /// })?;
    /// std::thread::park();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// [`ServerTask::response`]: crate::task::ServerTask::response
    pub fn set_from_http<B: Into<Bytes>>(
        &mut self,
        resp: ::http::Response<B>,
    ) -> Result<&mut Self, InteropError> {
        let (parts, body) = resp.into_parts();
        let body: Bytes = body.into();
        let framing = framing_of(&parts.headers, body.len())?;
        let fields = fields_without_framing(&parts.headers)?;
        let old: Vec<Box<str>> = self.headers().iter().map(|(name, _)| name.into()).collect();
        for name in &old {
            self.remove_header(name);
        }
        for (name, value) in &fields {
            self.try_append_header(name, value)?;
        }
        self.set_status(parts.status.as_u16())
            .set_framing(framing)
            .set_body(body);
        Ok(self)
    }
}

// ----- fields ----------------------------------------------------------------

impl TryFrom<&Headers> for HeaderMap {
    type Error = InteropError;

    /// Every field, in order, its name in lower case.
    fn try_from(headers: &Headers) -> Result<Self, InteropError> {
        let mut map = HeaderMap::try_with_capacity(headers.len()).map_err(|_| too_many())?;
        for (name, value) in headers {
            let (name, value) = http_field(name, value)?;
            map.try_append(name, value).map_err(|_| too_many())?;
        }
        Ok(map)
    }
}

impl TryFrom<Headers> for HeaderMap {
    type Error = InteropError;

    fn try_from(headers: Headers) -> Result<Self, InteropError> {
        HeaderMap::try_from(&headers)
    }
}

impl TryFrom<&HeaderMap> for Headers {
    type Error = InteropError;

    /// Every field, the fields of one name together (a [`HeaderMap`]'s
    /// order). Values are trimmed of surrounding whitespace, as parsed
    /// values are.
    fn try_from(map: &HeaderMap) -> Result<Self, InteropError> {
        let mut headers = Headers::new();
        for (name, value) in map {
            headers
                .append(name.as_str(), value.as_bytes())
                .map_err(|e| InteropError::in_field(name.as_str(), e.what()))?;
        }
        Ok(headers)
    }
}

impl TryFrom<HeaderMap> for Headers {
    type Error = InteropError;

    fn try_from(map: HeaderMap) -> Result<Self, InteropError> {
        Headers::try_from(&map)
    }
}

fn too_many() -> InteropError {
    InteropError::new("more header fields than an http::HeaderMap holds")
}

/// One of our fields as `http`'s name and value.
fn http_field(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), InteropError> {
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        InteropError::in_field(
            name,
            "name refused by http::HeaderName (over 65,535 bytes?)",
        )
    })?;
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        InteropError::in_field(name, "value has a control byte http::HeaderValue refuses")
    })?;
    Ok((header_name, value))
}

/// The fields of `map` but `Content-Length` and `Transfer-Encoding`, checked
/// as taskweave's builders check them.
fn fields_without_framing(map: &HeaderMap) -> Result<Headers, InteropError> {
    let mut fields = Headers::new();
    for (name, value) in map {
        if !is_framing_field(name.as_str().as_bytes()) {
            fields
                .append(name.as_str(), value.as_bytes())
                .map_err(|e| InteropError::in_field(name.as_str(), e.what()))?;
        }
    }
    Ok(fields)
}

/// The framing an `http` message's `Content-Length` and `Transfer-Encoding`
/// fields ask for, for a body of `body_len` bytes; an error where taskweave
/// would frame the body otherwise.
fn framing_of(map: &HeaderMap, body_len: usize) -> Result<Framing, InteropError> {
    let mut codings = 0;
    let mut chunked = false;
    for value in map.get_all(TRANSFER_ENCODING) {
        for coding in list_elements(value.as_bytes()) {
            codings += 1;
            chunked |= coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    let has_te = map.contains_key(TRANSFER_ENCODING);
    if has_te && (codings != 1 || !chunked) {
        return Err(InteropError::in_field(
            "transfer-encoding",
            "a coding other than chunked alone: taskweave sends bodies as they are",
        ));
    }
    let mut has_cl = false;
    for value in map.get_all(CONTENT_LENGTH) {
        has_cl = true;
        let len = value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
        if len.and_then(|v| v.parse::<usize>().ok()) != Some(body_len) {
            return Err(InteropError::in_field(
                "content-length",
                "is not the body's length in decimal (taskweave derives it from the body)",
            ));
        }
    }
    match (has_te, has_cl) {
        (true, true) => Err(InteropError::in_field(
            "transfer-encoding",
            "together with Content-Length",
        )),
        (true, false) => Ok(Framing::Chunked),
        (false, _) => Ok(Framing::Length),
    }
}

// ----- requests --------------------------------------------------------------

impl TryFrom<&Request> for ::http::Request<Bytes> {
    type Error = InteropError;

    /// Method, target, version, fields (those a parsed request framed its
    /// body with included) and body, shared.
    fn try_from(req: &Request) -> Result<Self, InteropError> {
        if !req.is_complete() {
            return Err(InteropError::new("the request is still being parsed"));
        }
        let method = req.http_method()?;
        let uri = Uri::try_from(req.target())
            .map_err(|_| InteropError::new("request target is not a URI to http::Uri"))?;
        let headers = HeaderMap::try_from(req.headers())?;
        let mut out = ::http::Request::new(req.body().clone());
        *out.method_mut() = method;
        *out.uri_mut() = uri;
        *out.version_mut() = req.version().into();
        *out.headers_mut() = headers;
        Ok(out)
    }
}

impl TryFrom<Request> for ::http::Request<Bytes> {
    type Error = InteropError;

    fn try_from(req: Request) -> Result<Self, InteropError> {
        ::http::Request::try_from(&req)
    }
}

impl<B: Into<Bytes>> TryFrom<::http::Request<B>> for Request {
    type Error = InteropError;

    /// A client request: method, target (the URI as written), fields and
    /// body; `Transfer-Encoding: chunked` becomes [`Framing::Chunked`].
    fn try_from(req: ::http::Request<B>) -> Result<Self, InteropError> {
        let (parts, body) = req.into_parts();
        let body: Bytes = body.into();
        let framing = framing_of(&parts.headers, body.len())?;
        let fields = fields_without_framing(&parts.headers)?;
        let mut out = Request::new(parts.method.as_str(), &parts.uri.to_string())?;
        for (name, value) in &fields {
            out.try_append_header(name, value)?;
        }
        out.set_framing(framing).set_body(body);
        Ok(out)
    }
}

// ----- responses -------------------------------------------------------------

impl TryFrom<&Response> for ::http::Response<Bytes> {
    type Error = InteropError;

    /// Status, version, fields and body, shared. A built response with
    /// [`Framing::Chunked`] gets `transfer-encoding: chunked`; one whose body
    /// is sent as a stream ([`Framing::Streaming`], [`Framing::Declared`]) is
    /// refused, since its body is not in the message.
    fn try_from(resp: &Response) -> Result<Self, InteropError> {
        let status = resp.http_status()?;
        let mut headers = HeaderMap::try_from(resp.headers())?;
        match resp.framing() {
            Framing::Streaming | Framing::Declared(_) => {
                return Err(InteropError::new(
                    "the body is sent as a stream, so it is not in the response",
                ))
            }
            Framing::Chunked if !headers.contains_key(TRANSFER_ENCODING) => {
                headers
                    .try_append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"))
                    .map_err(|_| too_many())?;
            }
            Framing::Chunked | Framing::Length | Framing::Close => {}
        }
        let mut out = ::http::Response::new(resp.body().clone());
        *out.status_mut() = status;
        *out.version_mut() = resp.version().into();
        *out.headers_mut() = headers;
        Ok(out)
    }
}

impl TryFrom<Response> for ::http::Response<Bytes> {
    type Error = InteropError;

    fn try_from(resp: Response) -> Result<Self, InteropError> {
        ::http::Response::try_from(&resp)
    }
}

impl<B: Into<Bytes>> TryFrom<::http::Response<B>> for Response {
    type Error = InteropError;

    /// A response for a peer that allows persistence, as
    /// [`Response::new`] makes, filled by [`Response::set_from_http`]. In a
    /// server, fill the task's response instead: it knows its request.
    fn try_from(resp: ::http::Response<B>) -> Result<Self, InteropError> {
        let mut out = Response::new();
        out.set_from_http(resp)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, Progress};

    fn parsed(wire: &[u8]) -> Request {
        let mut req = Request::parser();
        assert_eq!(req.append(wire).unwrap(), Progress::Complete(wire.len()));
        req
    }

    fn parsed_response(method: &str, wire: &[u8]) -> Response {
        let mut resp = Response::parser_for(method);
        assert_eq!(resp.append(wire).unwrap(), Progress::Complete(wire.len()));
        resp
    }

    fn encoded(msg: &mut impl Message) -> String {
        let mut out = Vec::new();
        msg.encode(&mut out);
        String::from_utf8_lossy(&out.concat()).into_owned()
    }

    /// Fields as (lower-case name, value), in order.
    fn fields(headers: &Headers) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_built_request_goes_to_http_and_back() {
        let mut ours = Request::new("POST", "/items?id=7&x=%20").unwrap();
        ours.set_header("Host", "example.com")
            .append_header("Accept", "text/plain")
            .append_header("Accept", "application/json")
            .set_header("X-Obs-Text", b"caf\xe9")
            .set_body("payload");
        let theirs = ::http::Request::try_from(&ours).unwrap();
        assert_eq!(theirs.method(), Method::POST);
        assert_eq!(theirs.uri().path(), "/items");
        assert_eq!(theirs.uri().query(), Some("id=7&x=%20"));
        assert_eq!(theirs.version(), ::http::Version::HTTP_11);
        assert_eq!(theirs.headers()["host"], "example.com");
        let accept: Vec<_> = theirs.headers().get_all("accept").iter().collect();
        assert_eq!(accept, ["text/plain", "application/json"]);
        assert_eq!(theirs.headers()["x-obs-text"].as_bytes(), b"caf\xe9");
        assert_eq!(theirs.body().as_ptr(), ours.body().as_ptr(), "shared");

        let back = Request::try_from(theirs).unwrap();
        assert_eq!(
            (back.method(), back.target()),
            (ours.method(), ours.target())
        );
        assert_eq!(fields(back.headers()), fields(ours.headers()));
        assert_eq!(back.body(), ours.body());
        let mut back = back;
        let wire = encoded(&mut back);
        assert!(
            wire.starts_with("POST /items?id=7&x=%20 HTTP/1.1\r\nhost: example.com\r\n"),
            "{wire}"
        );
        assert!(wire.ends_with("Content-Length: 7\r\n\r\npayload"), "{wire}");
    }

    #[test]
    fn an_http_request_comes_to_taskweave_and_back() {
        let theirs = ::http::Request::put("http://example.com:8080/a/b?c")
            .header("content-type", "text/plain")
            .header("x-empty", "")
            .header("content-length", "5")
            .body(Bytes::from_static(b"hello"))
            .unwrap();
        let mut ours = Request::try_from(theirs.clone()).unwrap();
        assert_eq!(ours.method(), "PUT");
        assert_eq!(ours.target(), "http://example.com:8080/a/b?c");
        assert_eq!(ours.header("x-empty"), Some(&b""[..]));
        assert!(
            !ours.headers().contains("content-length"),
            "derived by encode"
        );
        let wire = encoded(&mut ours);
        assert!(
            wire.starts_with(
                "PUT http://example.com:8080/a/b?c HTTP/1.1\r\nHost: example.com:8080\r\n"
            ),
            "{wire}"
        );
        assert!(wire.ends_with("Content-Length: 5\r\n\r\nhello"), "{wire}");

        let again = ::http::Request::try_from(&ours).unwrap();
        assert_eq!(again.method(), theirs.method());
        assert_eq!(again.uri(), theirs.uri());
        assert_eq!(again.body(), theirs.body());
        let mut expected = theirs.headers().clone();
        expected.remove("content-length");
        assert_eq!(again.headers(), &expected);
    }

    #[test]
    fn a_parsed_chunked_request_keeps_its_framing_both_ways() {
        let req = parsed(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        let theirs = ::http::Request::try_from(&req).unwrap();
        assert_eq!(theirs.headers()["transfer-encoding"], "chunked");
        assert_eq!(&theirs.body()[..], b"abc", "the decoded body");
        let mut back = Request::try_from(theirs).unwrap();
        let wire = encoded(&mut back);
        assert!(
            wire.ends_with("Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            "{wire}"
        );
    }

    #[test]
    fn a_parsed_http10_request_says_so() {
        let req = parsed(b"OPTIONS * HTTP/1.0\r\n\r\n");
        let theirs = ::http::Request::try_from(req).unwrap();
        assert_eq!(theirs.version(), ::http::Version::HTTP_10);
        assert_eq!(theirs.uri(), "*");
    }

    #[test]
    fn requests_taskweave_would_send_otherwise_are_refused() {
        let with = |name: &str, value: &str| {
            ::http::Request::post("/")
                .header(name, value)
                .body("abc")
                .unwrap()
        };
        for (theirs, field, what) in [
            (
                with("content-length", "4"),
                "content-length",
                "body's length",
            ),
            (
                with("content-length", "+3"),
                "content-length",
                "body's length",
            ),
            (
                with("transfer-encoding", "gzip"),
                "transfer-encoding",
                "other than chunked",
            ),
            (
                with("transfer-encoding", "gzip, chunked"),
                "transfer-encoding",
                "other than chunked",
            ),
            (
                with("transfer-encoding", ""),
                "transfer-encoding",
                "other than chunked",
            ),
        ] {
            let e = Request::try_from(theirs).unwrap_err();
            assert_eq!(e.field(), Some(field));
            assert!(e.what().contains(what), "{e}");
        }
        let mut both = with("transfer-encoding", "chunked");
        both.headers_mut()
            .insert("content-length", HeaderValue::from_static("3"));
        let e = Request::try_from(both).unwrap_err();
        assert_eq!(
            e.to_string(),
            "header field \"transfer-encoding\": together with Content-Length"
        );

        // `http` takes UTF-8 in a path; an HTTP/1.1 request target is ASCII.
        let utf8 = ::http::Request::get("/caf\u{e9}").body(()).unwrap();
        let e = Request::try_from(utf8.map(|()| Bytes::new())).unwrap_err();
        assert!(e.what().contains("visible ASCII"), "{e}");
    }

    #[test]
    fn requests_http_refuses_fail_to_convert() {
        // A target `Uri` does not parse.
        let req = Request::new("GET", "/a<b>").unwrap();
        let e = ::http::Request::try_from(&req).unwrap_err();
        assert_eq!(e.what(), "request target is not a URI to http::Uri");
        // A field name longer than `http` takes.
        let mut req = Request::new("GET", "/").unwrap();
        req.try_set_header(&"x".repeat(70_000), "v").unwrap();
        let e = ::http::Request::try_from(&req).unwrap_err();
        assert!(e.what().contains("http::HeaderName"), "{e}");
        assert_eq!(e.field().map(str::len), Some(70_000));
        // A parser midway.
        let mut req = Request::parser();
        req.append(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
            .unwrap();
        let e = ::http::Request::try_from(&req).unwrap_err();
        assert_eq!(e.what(), "the request is still being parsed");
    }

    #[test]
    fn a_built_response_goes_to_http_and_back() {
        let mut ours = Response::with_status(299);
        ours.set_header("Content-Type", "text/plain")
            .append_header("Set-Cookie", "a=1")
            .append_header("Set-Cookie", "b=2")
            .set_body("hi");
        let theirs = ::http::Response::try_from(&ours).unwrap();
        assert_eq!(theirs.status().as_u16(), 299);
        assert_eq!(theirs.headers().get_all("set-cookie").iter().count(), 2);
        assert!(!theirs.headers().contains_key("content-length"));
        let back = Response::try_from(theirs).unwrap();
        assert_eq!(back.status(), 299);
        assert_eq!(fields(back.headers()), fields(ours.headers()));
        assert_eq!(back.body(), ours.body());
        assert_eq!(back.framing(), Framing::Length);

        ours.set_framing(Framing::Chunked);
        let theirs = ::http::Response::try_from(&ours).unwrap();
        assert_eq!(theirs.headers()["transfer-encoding"], "chunked");
        assert_eq!(
            Response::try_from(theirs).unwrap().framing(),
            Framing::Chunked
        );
    }

    #[test]
    fn a_parsed_response_goes_to_http() {
        let ours = parsed_response(
            "GET",
            b"HTTP/1.0 404 Gone Fishing\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc",
        );
        let theirs = ::http::Response::try_from(ours).unwrap();
        assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
        assert_eq!(theirs.version(), ::http::Version::HTTP_10);
        assert_eq!(theirs.headers()["content-length"], "3");
        assert_eq!(theirs.headers()["x-a"], "1");
        assert_eq!(&theirs.body()[..], b"abc");
        // Its Content-Length matches its body: it comes back whole.
        let back = Response::try_from(theirs).unwrap();
        assert_eq!((back.status(), &back.body()[..]), (404, &b"abc"[..]));
    }

    #[test]
    fn set_from_http_keeps_what_the_request_decided() {
        let head = parsed(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let mut resp = Response::for_request(&head);
        resp.set_header("X-Before", "gone");
        let theirs = ::http::Response::builder()
            .status(201)
            .header("x-after", "here")
            .body("body")
            .unwrap();
        resp.set_from_http(theirs).unwrap();
        assert!(
            resp.keep_alive(),
            "the HTTP/1.0 request asked for keep-alive"
        );
        assert!(!resp.headers().contains("x-before"));
        let wire = encoded(&mut resp);
        assert!(
            wire.starts_with("HTTP/1.1 201 Created\r\nx-after: here\r\n"),
            "{wire}"
        );
        assert!(
            wire.ends_with("Content-Length: 4\r\nConnection: keep-alive\r\n\r\n"),
            "no body for HEAD: {wire}"
        );
    }

    #[test]
    fn responses_that_cannot_convert_leave_things_as_they_were() {
        let mut resp = Response::new();
        resp.set_header("X-Kept", "1").set_body("old");
        // The length of a body it does not carry (a response to HEAD).
        let theirs = ::http::Response::builder()
            .header("content-length", "1234")
            .header("x-new", "2")
            .body(Bytes::new())
            .unwrap();
        let e = resp.set_from_http(theirs).unwrap_err();
        assert_eq!(e.field(), Some("content-length"));
        assert_eq!(resp.header("x-kept"), Some(&b"1"[..]));
        assert!(!resp.headers().contains("x-new"));
        assert_eq!(&resp.body()[..], b"old");

        // Out of taskweave: statuses `http` has no code for, streamed bodies.
        for status in [7, 1000] {
            let e = ::http::Response::try_from(Response::with_status(status)).unwrap_err();
            assert!(e.what().starts_with("status is outside 100-999"), "{e}");
        }
        for framing in [Framing::Streaming, Framing::Declared(10)] {
            let mut resp = Response::new();
            resp.set_framing(framing);
            let e = ::http::Response::try_from(&resp).unwrap_err();
            assert!(e.what().contains("stream"), "{e}");
        }
    }

    #[test]
    fn header_maps_convert_both_ways() {
        let mut ours = Headers::new();
        ours.append("Host", "h").unwrap();
        ours.append("X-Tab", "a\tb").unwrap();
        ours.append("X-Tab", "c").unwrap();
        ours.append("Content-Length", "3").unwrap();
        let theirs = HeaderMap::try_from(&ours).unwrap();
        assert_eq!(theirs.len(), 4);
        assert_eq!(theirs["x-tab"], "a\tb");
        assert_eq!(fields(&Headers::try_from(theirs).unwrap()), fields(&ours));

        // Grouped by name, in the order each name first appeared.
        let mut mixed = Headers::new();
        for (n, v) in [("A", "1"), ("B", "2"), ("A", "3")] {
            mixed.append(n, v).unwrap();
        }
        let back = Headers::try_from(HeaderMap::try_from(mixed).unwrap()).unwrap();
        let order: Vec<_> = back.iter().map(|(n, v)| (n, v.to_vec())).collect();
        assert_eq!(
            order,
            [
                ("a", b"1".to_vec()),
                ("a", b"3".to_vec()),
                ("b", b"2".to_vec())
            ]
        );

        // Surrounding whitespace is not part of a value.
        let mut map = HeaderMap::new();
        map.insert("x", HeaderValue::from_static(" padded "));
        assert_eq!(
            Headers::try_from(&map).unwrap().get("x"),
            Some(&b"padded"[..])
        );
    }

    #[test]
    fn versions_methods_and_statuses() {
        for v in [Version::Http10, Version::Http11] {
            assert_eq!(Version::try_from(::http::Version::from(v)), Ok(v));
        }
        for v in [
            ::http::Version::HTTP_09,
            ::http::Version::HTTP_2,
            ::http::Version::HTTP_3,
        ] {
            assert!(Version::try_from(v).is_err(), "{v:?}");
        }
        for m in ["GET", "QUERY", "M-SEARCH", "x#$%&'*+.^_`|~1"] {
            let req = Request::new(m, "/").unwrap();
            assert_eq!(req.http_method().unwrap().as_str(), m);
        }
        assert!(Request::parser().http_method().is_err());
        for s in [100, 200, 299, 404, 599, 999] {
            assert_eq!(Response::with_status(s).http_status().unwrap().as_u16(), s);
        }
        assert!(Response::with_status(99).http_status().is_err());
    }
}
