//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder and the
//! encoding helpers.
//!
//! The decoder is a byte-at-a-time state machine for the framing and a plain
//! copy for chunk data, so it accepts input split anywhere and never buffers
//! more than the payload it hands out. It follows the grammar exactly: hex size
//! (at most 16 digits), extensions as `;name[=token|"quoted"]` with whitespace
//! only around `;` and `=`, CRLF everywhere (a bare LF or CR is an error), CRLF
//! after each chunk's data, and a trailer section of well-formed field lines.
//! Extensions and trailer fields are validated and then discarded; their sizes
//! are limited per message so they cannot be used to hold the connection's
//! CPU or memory.

use bytes::{BufMut, Bytes, BytesMut};

use super::limits::Limits;
use super::syntax::{is_field_byte, is_ows, is_tchar};
use crate::protocol::{PieceFramer, ProtocolError};

/// Longest chunk-size accepted, in hex digits (enough for any `u64`).
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size; only `;` may follow.
    SizeWs,
    ExtBeforeName,
    ExtName,
    ExtAfterName,
    ExtBeforeValue,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    /// Right after a closing quote: CR, `;` or whitespace.
    ExtAfterQuoted,
    /// Whitespace after a value; only `;` may follow.
    ExtAfterValue,
    /// CR seen at the end of the chunk header.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// CR seen on the empty line that ends the message.
    EndLf,
    Done,
}

impl State {
    fn in_extension(self) -> bool {
        matches!(
            self,
            State::SizeWs
                | State::ExtBeforeName
                | State::ExtName
                | State::ExtAfterName
                | State::ExtBeforeValue
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtAfterQuoted
                | State::ExtAfterValue
        )
    }

    fn in_trailer(self) -> bool {
        matches!(
            self,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        )
    }
}

/// Decodes a chunked body incrementally.
///
/// Feed it the bytes after the head with [`decode`](Self::decode); it appends
/// the payload to a buffer and reports how many input bytes it used and whether
/// the body (including its trailer section) is complete.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size being read, then data still to copy, of the current chunk.
    remaining: u64,
    digits: u8,
    payload: u64,
    overhead: u64,
    ext_len: usize,
    trailer_len: usize,
    max_body: u64,
    max_ext: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    /// A decoder applying the body, chunk-extension and trailer limits of
    /// `limits`.
    pub fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            payload: 0,
            overhead: 0,
            ext_len: 0,
            trailer_len: 0,
            max_body: limits.max_body(),
            max_ext: limits.max_chunk_ext(),
            max_trailer: limits.max_trailer(),
        }
    }

    /// Decodes from `input`, appending payload bytes to `out`. Returns how many
    /// bytes of `input` were used and whether the body is complete; bytes after
    /// a complete body are not used. Errors carry status 400, or 413 when the
    /// payload would exceed the body limit.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
    ) -> Result<(usize, bool), ProtocolError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let rest = input.get(i..).unwrap_or_default();
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                out.extend_from_slice(rest.get(..take).unwrap_or_default());
                i += take;
                self.remaining -= take as u64;
                self.payload += take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let Some(&b) = input.get(i) else { break };
            i += 1;
            self.overhead += 1;
            self.step(b)?;
        }
        Ok((i, self.state == State::Done))
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes decoded so far.
    pub fn payload_len(&self) -> u64 {
        self.payload
    }

    /// Framing bytes (sizes, extensions, CRLFs, trailers) read so far.
    pub fn overhead_len(&self) -> u64 {
        self.overhead
    }

    fn step(&mut self, b: u8) -> Result<(), ProtocolError> {
        if self.state.in_extension() && b != b'\r' {
            self.ext_len += 1;
            if self.ext_len > self.max_ext {
                return Err(bad("chunk extensions too long"));
            }
        } else if self.state.in_trailer() {
            self.trailer_len += 1;
            if self.trailer_len > self.max_trailer {
                return Err(bad("trailer section too long"));
            }
        }
        self.state = match (self.state, b) {
            (State::Size, _) if hex_value(b).is_some() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return Err(bad("chunk size overflows"));
                }
                self.digits += 1;
                self.remaining = (self.remaining << 4) | u64::from(hex_value(b).unwrap_or(0));
                State::Size
            }
            (State::Size, _) if self.digits == 0 => return Err(bad("missing chunk size")),
            (State::Size, b'\r') => State::SizeLf,
            (State::Size, b';') => self.ext_start()?,
            (State::Size, _) if is_ows(b) => self.ext_start_ws()?,
            (State::Size, _) => return Err(bad("invalid chunk size")),

            (State::SizeWs, b';') => State::ExtBeforeName,
            (State::SizeWs, _) if is_ows(b) => State::SizeWs,
            (State::ExtBeforeName, _) if is_ows(b) => State::ExtBeforeName,
            (State::ExtBeforeName, _) if is_tchar(b) => State::ExtName,
            (State::ExtName, _) if is_tchar(b) => State::ExtName,
            (State::ExtName, _) if is_ows(b) => State::ExtAfterName,
            (State::ExtName | State::ExtAfterName, b'=') => State::ExtBeforeValue,
            (State::ExtName | State::ExtAfterName, b';') => State::ExtBeforeName,
            (State::ExtName | State::ExtToken | State::ExtAfterQuoted, b'\r') => State::SizeLf,
            (State::ExtAfterName, _) if is_ows(b) => State::ExtAfterName,
            (State::ExtBeforeValue, _) if is_ows(b) => State::ExtBeforeValue,
            (State::ExtBeforeValue, b'"') => State::ExtQuoted,
            (State::ExtBeforeValue, _) if is_tchar(b) => State::ExtToken,
            (State::ExtToken, _) if is_tchar(b) => State::ExtToken,
            (State::ExtToken | State::ExtAfterQuoted | State::ExtAfterValue, b';') => {
                State::ExtBeforeName
            }
            (State::ExtToken | State::ExtAfterQuoted | State::ExtAfterValue, _) if is_ows(b) => {
                State::ExtAfterValue
            }
            (State::ExtQuoted, b'"') => State::ExtAfterQuoted,
            (State::ExtQuoted, b'\\') => State::ExtQuotedPair,
            (State::ExtQuoted | State::ExtQuotedPair, _) if is_field_byte(b) => State::ExtQuoted,
            (s, _) if s.in_extension() => return Err(bad("malformed chunk extension")),

            (State::SizeLf, b'\n') => {
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    let total = self.payload.saturating_add(self.remaining);
                    if total > self.max_body {
                        return Err(ProtocolError::new(
                            413,
                            "chunked body exceeds the body limit",
                        ));
                    }
                    State::Data
                }
            }
            (State::SizeLf, _) => return Err(bad("chunk size line not ended by CRLF")),

            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.remaining = 0;
                self.digits = 0;
                State::Size
            }
            (State::DataCr | State::DataLf, _) => {
                return Err(bad("chunk data not followed by CRLF"))
            }

            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerStart, _) if is_ows(b) => {
                return Err(bad("obsolete line folding in trailer section"))
            }
            (State::TrailerName, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, _) if is_field_byte(b) => State::TrailerValue,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerStart | State::TrailerName | State::TrailerValue, _) => {
                return Err(bad("malformed trailer field"))
            }
            (State::TrailerLf | State::EndLf, _) => {
                return Err(bad("trailer line not ended by CRLF"))
            }
            // Data is handled by `decode`; nothing follows Done.
            (State::Data | State::Done, _) => return Err(bad("chunked decoder misuse")),
            (_, _) => return Err(bad("malformed chunk extension")),
        };
        Ok(())
    }

    /// `;` right after the size: the extension bytes start here.
    fn ext_start(&mut self) -> Result<State, ProtocolError> {
        self.count_ext()?;
        Ok(State::ExtBeforeName)
    }

    /// Whitespace right after the size.
    fn ext_start_ws(&mut self) -> Result<State, ProtocolError> {
        self.count_ext()?;
        Ok(State::SizeWs)
    }

    fn count_ext(&mut self) -> Result<(), ProtocolError> {
        self.ext_len += 1;
        if self.ext_len > self.max_ext {
            return Err(bad("chunk extensions too long"));
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn bad(reason: &'static str) -> ProtocolError {
    ProtocolError::new(400, reason)
}

/// Writes `n` in lowercase hex followed by CRLF: a chunk header.
pub(crate) fn put_chunk_size(dst: &mut impl BufMut, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        let d = ((n >> (i * 4)) & 0xf) as u8;
        dst.put_u8(if d < 10 { b'0' + d } else { b'a' + d - 10 });
    }
    dst.put_slice(b"\r\n");
}

/// The bytes that end a chunked body: CRLF after the last data chunk, then the
/// last chunk and an empty trailer section.
pub(crate) const CHUNK_END_AFTER_DATA: &[u8] = b"\r\n0\r\n\r\n";

/// The last chunk with an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` as one chunk to `out` (header, data without a copy, CRLF).
/// Empty data writes nothing: an empty chunk would end the body.
pub fn encode_chunk(data: Bytes, out: &mut Vec<Bytes>) {
    if data.is_empty() {
        return;
    }
    let mut head = BytesMut::with_capacity(18);
    put_chunk_size(&mut head, data.len() as u64);
    out.push(head.freeze());
    out.push(data);
    out.push(Bytes::from_static(b"\r\n"));
}

/// Appends the last chunk (with no trailer fields) to `out`, ending a body.
pub fn encode_last_chunk(out: &mut Vec<Bytes>) {
    out.push(Bytes::from_static(LAST_CHUNK));
}

/// Frames a streamed HTTP/1.1 body: each piece a chunk, the end the last
/// chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkedPieces;

/// Pieces up to this size are framed by copying them, with their chunk
/// header and CRLF, into one buffer: the header needs an allocation anyway,
/// and one slice instead of three makes the vectored write cheaper (an SSE
/// event sent to thousands of subscribers is this small).
const COPY_CHUNK_MAX: usize = 512;

impl PieceFramer for ChunkedPieces {
    fn piece(&mut self, piece: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
        if piece.is_empty() || piece.len() > COPY_CHUNK_MAX {
            encode_chunk(piece, out);
            return Ok(());
        }
        let mut chunk = BytesMut::with_capacity(piece.len() + 8);
        put_chunk_size(&mut chunk, piece.len() as u64);
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        out.push(chunk.freeze());
        Ok(())
    }
    fn end(&mut self, out: &mut Vec<Bytes>) -> bool {
        encode_last_chunk(out);
        true
    }
}

/// A streamed body that must not be sent (the answer to `HEAD`, a 204 or a
/// 304): pieces are dropped, and nothing marks the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoPieces;

impl PieceFramer for NoPieces {
    fn piece(&mut self, _piece: Bytes, _out: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
        Ok(())
    }
    fn end(&mut self, _out: &mut Vec<Bytes>) -> bool {
        true
    }
}

/// A streamed body whose length the head declared (`Content-Length`): the
/// pieces go out as they are, never past the length, and the stream is whole
/// only if it sent exactly that many bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SizedPieces {
    /// Bytes still owed.
    pub(crate) remaining: u64,
}

impl PieceFramer for SizedPieces {
    fn piece(&mut self, piece: Bytes, out: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
        let len = piece.len() as u64;
        if len > self.remaining {
            return Err(ProtocolError::new(
                500,
                "a streamed piece goes past the declared Content-Length",
            ));
        }
        self.remaining -= len;
        if len > 0 {
            out.push(piece);
        }
        Ok(())
    }
    fn end(&mut self, _out: &mut Vec<Bytes>) -> bool {
        self.remaining == 0
    }
    fn room(&self) -> Option<u64> {
        Some(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_pieces_frame_and_end_a_body() {
        let mut out = Vec::new();
        ChunkedPieces
            .piece(Bytes::from_static(b"hello"), &mut out)
            .unwrap();
        ChunkedPieces.piece(Bytes::new(), &mut out).unwrap();
        assert!(ChunkedPieces.end(&mut out));
        assert_eq!(out.concat(), b"5\r\nhello\r\n0\r\n\r\n");
        // Small pieces are one slice; larger ones go out uncopied.
        for (len, slices) in [(1, 1), (COPY_CHUNK_MAX, 1), (COPY_CHUNK_MAX + 1, 3)] {
            let mut out = Vec::new();
            ChunkedPieces
                .piece(Bytes::from(vec![b'x'; len]), &mut out)
                .unwrap();
            assert_eq!(out.len(), slices, "{len}");
            let want = [
                format!("{len:x}\r\n").into_bytes(),
                vec![b'x'; len],
                b"\r\n".to_vec(),
            ];
            assert_eq!(out.concat(), want.concat(), "{len}");
        }
        let mut none = Vec::new();
        NoPieces.piece(Bytes::from_static(b"x"), &mut none).unwrap();
        assert!(NoPieces.end(&mut none));
        assert!(none.is_empty());
    }

    #[test]
    fn sized_pieces_stop_at_the_declared_length() {
        let mut sized = SizedPieces { remaining: 5 };
        let mut out = Vec::new();
        sized.piece(Bytes::from_static(b"abc"), &mut out).unwrap();
        assert!(sized.piece(Bytes::from_static(b"def"), &mut out).is_err());
        assert!(!sized.end(&mut out), "2 bytes short");
        sized.piece(Bytes::from_static(b"de"), &mut out).unwrap();
        assert!(sized.end(&mut out));
        assert_eq!(out.concat(), b"abcde");
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), ProtocolError> {
        decode_with(input, &Limits::default())
    }

    fn decode_with(input: &[u8], limits: &Limits) -> Result<(Vec<u8>, usize), ProtocolError> {
        let mut d = ChunkedDecoder::new(limits);
        let mut out = BytesMut::new();
        let (used, done) = d.decode(input, &mut out)?;
        assert!(done, "incomplete: {:?}", String::from_utf8_lossy(input));
        Ok((out.to_vec(), used))
    }

    fn code(input: &[u8]) -> u16 {
        match decode_all(input) {
            Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(input)),
            Err(e) => e.code,
        }
    }

    #[test]
    fn decodes_and_stops_at_the_end() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
        let (body, used) = decode_all(input).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn every_split_gives_the_same_payload() {
        let input: &[u8] =
            b"A;x=1;y=\"a b\\\"c\"\r\n0123456789\r\n1 ; z\r\n!\r\n0\r\nT: v\r\nU:\r\n\r\n";
        for split in 0..=input.len() {
            let mut d = ChunkedDecoder::new(&Limits::default());
            let mut out = BytesMut::new();
            let (a, done_a) = d.decode(&input[..split], &mut out).unwrap();
            assert_eq!(a, split);
            let (b, done) = d.decode(&input[split..], &mut out).unwrap();
            assert!(done || done_a, "split {split}");
            assert_eq!(a + b, input.len());
            assert_eq!(&out[..], b"0123456789!");
            assert_eq!(d.payload_len() + d.overhead_len(), input.len() as u64);
        }
    }

    #[test]
    fn accepts_valid_extensions_and_trailers() {
        for ok in [
            &b"3;a\r\nabc\r\n0\r\n\r\n"[..],
            b"3 ;a = b\r\nabc\r\n0\r\n\r\n",
            b"3;a=\"\"\r\nabc\r\n0;last\r\n\r\n",
            b"0000000000000003\r\nabc\r\n0\r\nX-Sum: 1\r\nY:  two words \r\n\r\n",
            b"FfFf\r\n",
        ] {
            if ok == b"FfFf\r\n" {
                let mut d = ChunkedDecoder::new(&Limits::default());
                assert!(d.decode(ok, &mut BytesMut::new()).is_ok());
            } else {
                decode_all(ok).unwrap();
            }
        }
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"\r\nabc\r\n0\r\n\r\n"[..],
            b"g\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"-3\r\n",
            b"+3\r\n",
            b"3 \r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\rabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"0\n\r\n",
            b"0\r\n\n",
            b"0\r\n\r\r",
            b"11111111111111111\r\n",
            b"3;\r\nabc\r\n0\r\n\r\n",
            b"3;a=\r\nabc\r\n0\r\n\r\n",
            b"3;a \r\nabc\r\n0\r\n\r\n",
            b"3;a=b \r\nabc\r\n0\r\n\r\n",
            b"3;a=\"b\r\nabc\r\n0\r\n\r\n",
            b"3;a\x00\r\nabc\r\n0\r\n\r\n",
            b"3;a\nb\r\nabc\r\n0\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\nName : x\r\n\r\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
            b"0\r\nX: a\x00\r\n\r\n",
            b"0\r\n: x\r\n\r\n",
        ] {
            assert_eq!(code(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn limits_apply() {
        let limits = Limits::new()
            .with_max_body(10)
            .with_max_chunk_ext(8)
            .with_max_trailer(13);
        assert!(decode_with(b"a\r\n0123456789\r\n0\r\n\r\n", &limits).is_ok());
        let e = decode_with(b"b\r\n", &limits).unwrap_err();
        assert_eq!(e.code, 413);
        let e = decode_with(b"5\r\n01234\r\n6\r\n", &limits).unwrap_err();
        assert_eq!(e.code, 413, "the limit is on the total payload");
        assert!(decode_with(b"1;abcdefg\r\nx\r\n0\r\n\r\n", &limits).is_ok());
        let e = decode_with(b"1;abcdefgh\r\nx\r\n0\r\n\r\n", &limits).unwrap_err();
        assert_eq!(e.code, 400);
        let e = decode_with(b"1;abcd\r\nx\r\n1;abcd\r\n", &limits).unwrap_err();
        assert_eq!(e.code, 400, "the extension limit is per message");
        assert!(decode_with(b"0\r\nA: 123456\r\n\r\n", &limits).is_ok());
        let e = decode_with(b"0\r\nA: 1234567\r\n\r\n", &limits).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn max_size_digits_do_not_overflow() {
        let mut d = ChunkedDecoder::new(&Limits::new().with_max_body(u64::MAX));
        let mut out = BytesMut::new();
        assert!(d.decode(b"ffffffffffffffff\r\nab", &mut out).is_ok());
        assert_eq!(&out[..], b"ab");
    }

    #[test]
    fn encoding_round_trips() {
        let mut out = Vec::new();
        encode_chunk(Bytes::from_static(b"hello world, this is chunk"), &mut out);
        encode_chunk(Bytes::new(), &mut out);
        encode_last_chunk(&mut out);
        let wire: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert!(wire.starts_with(b"1a\r\n"));
        let (body, used) = decode_all(&wire).unwrap();
        assert_eq!(body, b"hello world, this is chunk");
        assert_eq!(used, wire.len());
        let mut size = BytesMut::new();
        put_chunk_size(&mut size, 0);
        put_chunk_size(&mut size, u64::MAX);
        assert_eq!(&size[..], b"0\r\nffffffffffffffff\r\n");
    }
}
