//! Where a message body ends: the `Content-Length` / `Transfer-Encoding`
//! decision (RFC 9112 §6).
//!
//! Request smuggling lives here: two parsers that disagree on a body's length
//! disagree on where the next request starts. So every head whose framing some
//! implementation could read differently is rejected rather than repaired:
//! both fields at once, conflicting or malformed lengths, codings we do not
//! decode, `Transfer-Encoding` in HTTP/1.0. The fields are first collected
//! line by line ([`FramingFields`]) and judged once the head is complete, so
//! the verdict does not depend on field order.

use super::limits::Limits;
use super::syntax::{is_tchar, list_elements, trim_ows};
use super::version::Version;
use crate::protocol::ProtocolError;

/// How an outgoing message's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `Content-Length` from the body's size (the default).
    #[default]
    Length,
    /// `Transfer-Encoding: chunked`; the body goes out as one chunk followed by
    /// the last chunk. To an HTTP/1.0 client a response falls back to
    /// [`Framing::Close`].
    Chunked,
    /// `Transfer-Encoding: chunked` with the body (if any) as the first chunk and
    /// no last chunk: the caller writes more chunks itself with
    /// [`encode_chunk`](super::encode_chunk) and ends with
    /// [`encode_last_chunk`](super::encode_last_chunk).
    Streaming,
    /// Responses only: no length at all; the body ends when the server closes
    /// the connection, which it then must.
    Close,
    /// Responses only (a request treats it as `Length`): `Content-Length` of
    /// this many bytes, for a body sent as a stream of that exact size (a
    /// file). A stream that ends short closes the connection.
    Declared(u64),
}

/// Where an incoming body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked,
    /// Everything until the peer closes (responses only).
    Close,
}

/// What the `Content-Length` fields said so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ContentLength {
    #[default]
    Absent,
    /// One value, repeated any number of times (saturated at `u64::MAX`).
    Value(u64),
    Invalid(&'static str),
}

/// The framing fields of one head, collected field line by field line.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FramingFields {
    content_length: ContentLength,
    te_present: bool,
    /// Non-empty codings seen, over all `Transfer-Encoding` lines.
    codings: u32,
    chunked: u32,
    last_is_chunked: bool,
    other_coding: bool,
    te_malformed: bool,
}

impl FramingFields {
    /// Takes one `Content-Length` field value.
    ///
    /// Each value is `1*DIGIT` after trimming whitespace. A comma-separated list
    /// or repeated fields are accepted only when every member is the same number
    /// (RFC 9110 §8.6 allows either rejecting or collapsing such lists; we
    /// collapse identical ones because some intermediaries produce them, and
    /// reject any disagreement).
    pub(crate) fn content_length(&mut self, value: &[u8]) {
        if matches!(self.content_length, ContentLength::Invalid(_)) {
            return;
        }
        for element in value.split(|&b| b == b',') {
            let digits = trim_ows(element);
            if digits.is_empty() {
                self.content_length = ContentLength::Invalid("empty Content-Length");
                return;
            }
            if !digits.iter().all(u8::is_ascii_digit) {
                self.content_length =
                    ContentLength::Invalid("Content-Length is not a decimal number");
                return;
            }
            let n = digits.iter().fold(0u64, |acc, d| {
                acc.saturating_mul(10)
                    .saturating_add(u64::from(d.wrapping_sub(b'0')))
            });
            match self.content_length {
                ContentLength::Value(prev) if prev != n => {
                    self.content_length =
                        ContentLength::Invalid("conflicting Content-Length values");
                    return;
                }
                _ => self.content_length = ContentLength::Value(n),
            }
        }
    }

    /// Takes one `Transfer-Encoding` field value (a list of transfer codings,
    /// each a token optionally followed by `;` parameters).
    pub(crate) fn transfer_encoding(&mut self, value: &[u8]) {
        self.te_present = true;
        for element in list_elements(value) {
            let name_len = element
                .iter()
                .position(|&b| !is_tchar(b))
                .unwrap_or(element.len());
            let (name, rest) = element.split_at(name_len);
            let rest = trim_ows(rest);
            let has_params = !rest.is_empty();
            if name.is_empty() || (has_params && !rest.starts_with(b";")) {
                self.te_malformed = true;
                continue;
            }
            self.codings += 1;
            if name.eq_ignore_ascii_case(b"chunked") {
                if has_params {
                    // `chunked` takes no parameters (RFC 9112 §7).
                    self.te_malformed = true;
                }
                self.chunked += 1;
                self.last_is_chunked = true;
            } else {
                self.other_coding = true;
                self.last_is_chunked = false;
            }
        }
    }

    /// The body of a request with these fields (RFC 9112 §6.3 rules 3-7), or
    /// the status to reject it with.
    pub(crate) fn request_body(
        &self,
        version: Version,
        limits: &Limits,
    ) -> Result<BodyKind, ProtocolError> {
        if self.te_present {
            if version == Version::Http10 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if self.content_length != ContentLength::Absent {
                return Err(bad("both Content-Length and Transfer-Encoding"));
            }
            self.chunked_coding()?;
            return Ok(BodyKind::Chunked);
        }
        match self.content_length {
            ContentLength::Absent => Ok(BodyKind::Empty),
            ContentLength::Invalid(reason) => Err(bad(reason)),
            ContentLength::Value(n) if n > limits.max_body() => Err(ProtocolError::new(
                413,
                "Content-Length exceeds the body limit",
            )),
            ContentLength::Value(0) => Ok(BodyKind::Empty),
            ContentLength::Value(n) => Ok(BodyKind::Length(n)),
        }
    }

    /// The body of a response with these fields (RFC 9112 §6.3 rules 1-8).
    /// `no_body` is true for responses to HEAD, 1xx/204/304 statuses and 2xx
    /// answers to CONNECT. Errors carry status 502.
    pub(crate) fn response_body(
        &self,
        version: Version,
        no_body: bool,
        limits: &Limits,
    ) -> Result<BodyKind, ProtocolError> {
        if no_body {
            return Ok(BodyKind::Empty);
        }
        if self.te_present {
            if version == Version::Http10 {
                return Err(upstream("Transfer-Encoding in an HTTP/1.0 response"));
            }
            if self.content_length != ContentLength::Absent {
                return Err(upstream("both Content-Length and Transfer-Encoding"));
            }
            return match self.chunked_coding() {
                Ok(()) => Ok(BodyKind::Chunked),
                Err(e) => Err(upstream(e.reason)),
            };
        }
        match self.content_length {
            ContentLength::Absent => Ok(BodyKind::Close),
            ContentLength::Invalid(reason) => Err(upstream(reason)),
            ContentLength::Value(n) if n > limits.max_body() => {
                Err(upstream("Content-Length exceeds the body limit"))
            }
            ContentLength::Value(0) => Ok(BodyKind::Empty),
            ContentLength::Value(n) => Ok(BodyKind::Length(n)),
        }
    }

    /// Checks that the codings are exactly `chunked`: the only one we decode.
    fn chunked_coding(&self) -> Result<(), ProtocolError> {
        if self.te_malformed {
            return Err(bad("malformed Transfer-Encoding"));
        }
        if self.codings == 0 {
            return Err(bad("empty Transfer-Encoding"));
        }
        if !self.last_is_chunked {
            return Err(bad("final transfer coding is not chunked"));
        }
        if self.chunked > 1 {
            return Err(bad("chunked applied more than once"));
        }
        if self.other_coding {
            return Err(ProtocolError::new(501, "unsupported transfer coding"));
        }
        Ok(())
    }
}

fn bad(reason: &'static str) -> ProtocolError {
    ProtocolError::new(400, reason)
}

/// A response parser error: the status a proxy would answer with.
pub(crate) fn upstream(reason: impl Into<std::borrow::Cow<'static, str>>) -> ProtocolError {
    ProtocolError::new(502, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cl: &[&[u8]], te: &[&[u8]], version: Version) -> Result<BodyKind, u16> {
        let mut f = FramingFields::default();
        for v in cl {
            f.content_length(v);
        }
        for v in te {
            f.transfer_encoding(v);
        }
        f.request_body(version, &Limits::default())
            .map_err(|e| e.code)
    }

    fn req11(cl: &[&[u8]], te: &[&[u8]]) -> Result<BodyKind, u16> {
        request(cl, te, Version::Http11)
    }

    #[test]
    fn content_length_values() {
        assert_eq!(req11(&[], &[]), Ok(BodyKind::Empty));
        assert_eq!(req11(&[b"0"], &[]), Ok(BodyKind::Empty));
        assert_eq!(req11(&[b" 5 "], &[]), Ok(BodyKind::Length(5)));
        assert_eq!(req11(&[b"005"], &[]), Ok(BodyKind::Length(5)));
        assert_eq!(req11(&[b"5, 5"], &[]), Ok(BodyKind::Length(5)));
        assert_eq!(req11(&[b"5", b"5"], &[]), Ok(BodyKind::Length(5)));
        for bad in [
            &b"+5"[..],
            b"-1",
            b"0x10",
            b"",
            b" ",
            b"5 5",
            b"5,",
            b",5",
            b"5, 6",
            b"5.0",
            b"1e3",
        ] {
            assert_eq!(
                req11(&[bad], &[]),
                Err(400),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(req11(&[b"5", b"6"], &[]), Err(400));
        assert_eq!(req11(&[b"16777217"], &[]), Err(413));
        assert_eq!(req11(&[b"99999999999999999999999999"], &[]), Err(413));
        assert_eq!(req11(&[b"16777216"], &[]), Ok(BodyKind::Length(16 << 20)));
    }

    #[test]
    fn transfer_encoding_values() {
        assert_eq!(req11(&[], &[b"chunked"]), Ok(BodyKind::Chunked));
        assert_eq!(req11(&[], &[b"Chunked"]), Ok(BodyKind::Chunked));
        assert_eq!(req11(&[], &[b" , chunked ,"]), Ok(BodyKind::Chunked));
        for (te, code) in [
            (&[&b"gzip"[..]][..], 400),
            (&[b"chunked, gzip"], 400),
            (&[b"chunked", b"gzip"], 400),
            (&[b"gzip, chunked"], 501),
            (&[b"foo", b"chunked"], 501),
            (&[b"chunked, chunked"], 400),
            (&[b"chunked", b"chunked"], 400),
            (&[b""], 400),
            (&[b"identity"], 400),
            (&[b"\"chunked\""], 400),
            (&[b"chunked;q=1"], 400),
            (&[b"chunked x"], 400),
            (&[b"xchunked"], 400),
        ] {
            assert_eq!(req11(&[], te), Err(code), "{te:?}");
        }
        assert_eq!(req11(&[b"5"], &[b"chunked"]), Err(400));
        assert_eq!(request(&[], &[b"chunked"], Version::Http10), Err(400));
    }

    #[test]
    fn response_framing() {
        let limits = Limits::default();
        let judge = |cl: Option<&[u8]>, te: Option<&[u8]>, v: Version, no_body: bool| {
            let mut f = FramingFields::default();
            if let Some(cl) = cl {
                f.content_length(cl);
            }
            if let Some(te) = te {
                f.transfer_encoding(te);
            }
            f.response_body(v, no_body, &limits).map_err(|e| e.code)
        };
        let v11 = Version::Http11;
        assert_eq!(judge(None, None, v11, false), Ok(BodyKind::Close));
        assert_eq!(judge(Some(b"3"), None, v11, false), Ok(BodyKind::Length(3)));
        assert_eq!(judge(Some(b"3"), None, v11, true), Ok(BodyKind::Empty));
        assert_eq!(
            judge(None, Some(b"chunked"), v11, false),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(judge(Some(b"3"), Some(b"chunked"), v11, false), Err(502));
        assert_eq!(judge(None, Some(b"gzip"), v11, false), Err(502));
        assert_eq!(
            judge(None, Some(b"chunked"), Version::Http10, false),
            Err(502)
        );
        assert_eq!(judge(Some(b"x"), None, v11, false), Err(502));
        assert_eq!(judge(Some(b"99999999"), None, v11, false), Err(502));
    }
}
