//! Reading a body once the head has said how it is framed.
//!
//! One reader covers the three framings (a known length, chunked, until close)
//! so the request and response parsers share the limit checks. The payload is
//! copied into a single buffer sized from what is known: never more than
//! [`INITIAL_CAPACITY`] up front, so a peer that announces a large body and
//! sends nothing does not make us allocate it.

use bytes::{Bytes, BytesMut};

use super::chunked::ChunkedDecoder;
use super::framing::BodyKind;
use super::limits::Limits;
use crate::protocol::ProtocolError;

/// Most bytes reserved before they arrive.
const INITIAL_CAPACITY: u64 = 64 * 1024;

/// Reads one body.
#[derive(Debug, Clone)]
pub(crate) struct BodyReader {
    kind: BodyKind,
    /// Bytes still expected for [`BodyKind::Length`].
    remaining: u64,
    /// Boxed: most bodies are not chunked, and every request carries the reader.
    chunked: Option<Box<ChunkedDecoder>>,
    buf: BytesMut,
    max_body: u64,
}

impl BodyReader {
    /// A reader for an empty body; [`start`](Self::start) picks the real one.
    pub(crate) fn new() -> Self {
        BodyReader {
            kind: BodyKind::Empty,
            remaining: 0,
            chunked: None,
            buf: BytesMut::new(),
            max_body: 0,
        }
    }

    /// Prepares to read a body framed as `kind`.
    pub(crate) fn start(&mut self, kind: BodyKind, limits: &Limits) {
        self.kind = kind;
        self.max_body = limits.max_body();
        self.remaining = match kind {
            BodyKind::Length(n) => n,
            _ => 0,
        };
        if kind == BodyKind::Chunked {
            self.chunked = Some(Box::new(ChunkedDecoder::new(limits)));
        }
    }

    /// How the body is framed.
    pub(crate) fn kind(&self) -> BodyKind {
        self.kind
    }

    /// Takes body bytes from `data`: how many were used and whether the body
    /// is complete. A too-large close-delimited body is a 413.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ProtocolError> {
        match self.kind {
            BodyKind::Empty => Ok((0, true)),
            BodyKind::Length(_) => {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                if self.buf.capacity() == 0 {
                    let want = if take as u64 == self.remaining {
                        self.remaining
                    } else {
                        self.remaining.min(INITIAL_CAPACITY).max(take as u64)
                    };
                    self.buf.reserve(usize::try_from(want).unwrap_or(take));
                }
                self.buf
                    .extend_from_slice(data.get(..take).unwrap_or_default());
                self.remaining -= take as u64;
                Ok((take, self.remaining == 0))
            }
            BodyKind::Chunked => match &mut self.chunked {
                Some(decoder) => decoder.decode(data, &mut self.buf),
                None => Err(ProtocolError::new(400, "chunked decoder missing")),
            },
            BodyKind::Close => {
                let total = (self.buf.len() as u64).saturating_add(data.len() as u64);
                if total > self.max_body {
                    return Err(ProtocolError::new(413, "body exceeds the body limit"));
                }
                self.buf.extend_from_slice(data);
                Ok((data.len(), false))
            }
        }
    }

    /// The payload read so far, leaving the reader empty.
    pub(crate) fn take(&mut self) -> Bytes {
        if self.buf.is_empty() {
            return Bytes::new();
        }
        std::mem::take(&mut self.buf).freeze()
    }

    /// Payload bytes buffered so far.
    pub(crate) fn payload_len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Framing bytes read besides the payload (chunk sizes, CRLFs, trailers).
    pub(crate) fn overhead_len(&self) -> u64 {
        self.chunked.as_ref().map_or(0, |c| c.overhead_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(kind: BodyKind, limits: &Limits) -> BodyReader {
        let mut r = BodyReader::new();
        r.start(kind, limits);
        r
    }

    #[test]
    fn length_body_across_reads() {
        let mut r = reader(BodyKind::Length(5), &Limits::default());
        assert_eq!(r.feed(b"he").unwrap(), (2, false));
        assert_eq!(r.feed(b"lloGET").unwrap(), (3, true));
        assert_eq!(&r.take()[..], b"hello");
    }

    #[test]
    fn large_announcement_does_not_preallocate() {
        let mut r = reader(BodyKind::Length(16 << 20), &Limits::default());
        r.feed(b"x").unwrap();
        assert!(r.buf.capacity() <= INITIAL_CAPACITY as usize);
    }

    #[test]
    fn close_delimited_is_limited() {
        let limits = Limits::new().with_max_body(4);
        let mut r = reader(BodyKind::Close, &limits);
        assert_eq!(r.feed(b"abcd").unwrap(), (4, false));
        assert_eq!(r.feed(b"e").unwrap_err().code, 413);
    }

    #[test]
    fn chunked_counts_overhead() {
        let mut r = reader(BodyKind::Chunked, &Limits::default());
        let wire = b"3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(r.feed(wire).unwrap(), (wire.len(), true));
        assert_eq!(r.payload_len(), 3);
        assert_eq!(r.overhead_len(), wire.len() as u64 - 3);
        assert_eq!(r.kind(), BodyKind::Chunked);
    }

    #[test]
    fn empty_is_complete_at_once() {
        let mut r = BodyReader::new();
        assert_eq!(r.feed(b"next").unwrap(), (0, true));
    }
}
