//! Finding the end of a message head that arrives over several reads.
//!
//! When a whole head arrives in one read the parsers hand the read straight to
//! `httparse` and copy only the head. Otherwise the bytes are buffered here,
//! and each new read is scanned once for the empty line that ends the head, so
//! a head trickled in byte by byte costs linear time, and `httparse` runs once
//! on the complete head. The buffer never holds more than the head limit plus
//! one byte; it is released as soon as the head is complete.
//!
//! Line endings must be CRLF (RFC 9112 §2.2): a bare LF is rejected here while
//! scanning, and [`check_parsed_line_endings`] (or [`check_line_endings`])
//! rejects it in heads parsed directly.
//! Empty lines (CRLF) before the start line are skipped, as §2.2 allows, and
//! are not counted as part of the head.

use crate::protocol::ProtocolError;

/// Accumulates a head split across reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadReader {
    buf: Vec<u8>,
    /// Where the line being scanned starts.
    line_start: usize,
    /// Whether a non-empty line (the start line) has been seen.
    seen_line: bool,
}

impl HeadReader {
    /// Whether nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffered bytes.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Scans `data` for the end of the head and buffers it: up to the end if
    /// the end is there, else all of it (never more than `max_head + 1` bytes
    /// in total). Returns the head's length once its end has arrived; the
    /// caller then consumes `len - previously buffered` bytes of `data`.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        max_head: usize,
    ) -> Result<Option<usize>, ProtocolError> {
        let room = max_head.saturating_add(1).saturating_sub(self.buf.len());
        let data = data.get(..room.min(data.len())).unwrap_or_default();
        let base = self.buf.len();
        for i in memchr::memchr_iter(b'\n', data) {
            let lf = base + i;
            let prev = match i.checked_sub(1) {
                Some(p) => data.get(p),
                None => self.buf.last(),
            };
            if prev != Some(&b'\r') || lf - 1 < self.line_start {
                return Err(ProtocolError::new(400, "bare LF line ending"));
            }
            let empty = lf - 1 == self.line_start;
            self.line_start = lf + 1;
            if !empty {
                self.seen_line = true;
            } else if self.seen_line {
                self.buf
                    .extend_from_slice(data.get(..=i).unwrap_or_default());
                return Ok(Some(lf + 1));
            }
        }
        self.buf.extend_from_slice(data);
        Ok(None)
    }

    /// The first `len` buffered bytes as the head; resets the reader.
    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.truncate(len);
        *self = HeadReader::default();
        buf
    }
}

/// How many bytes of complete empty lines (CRLF) start `data`. Servers skip
/// them before a request line (RFC 9112 §2.2) without buffering them.
pub(crate) fn leading_empty_lines(data: &[u8]) -> usize {
    data.chunks_exact(2)
        .take_while(|pair| pair == b"\r\n")
        .count()
        * 2
}

/// Rejects a bare LF anywhere in a complete head. (`httparse` accepts bare LF
/// line endings but rejects every CR not followed by LF.)
pub(crate) fn check_line_endings(head: &[u8]) -> Result<(), ProtocolError> {
    for lf in memchr::memchr_iter(b'\n', head) {
        if lf == 0 || head.get(lf - 1) != Some(&b'\r') {
            return Err(bare_lf());
        }
    }
    Ok(())
}

/// [`check_line_endings`] for a head `httparse` has parsed, looking only where
/// its lines end instead of scanning every byte: `line_ends` are where the
/// content of the start line and of each field line ends (a field value's
/// trailing whitespace, which `httparse` trims, may follow). Each must be
/// followed by CR (which `httparse` has checked is followed by LF), and the head
/// must end with the empty line's CRLF.
pub(crate) fn check_parsed_line_endings(
    head: &[u8],
    line_ends: impl IntoIterator<Item = usize>,
) -> Result<(), ProtocolError> {
    let ends_in_cr = |end: usize| {
        let after = head.get(end..).unwrap_or_default();
        let ws = after
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        after.get(ws) == Some(&b'\r')
    };
    if head.ends_with(b"\r\n") && line_ends.into_iter().all(ends_in_cr) {
        Ok(())
    } else {
        Err(bare_lf())
    }
}

fn bare_lf() -> ProtocolError {
    ProtocolError::new(400, "bare LF line ending")
}

/// The start line of a possibly incomplete head: the first non-empty line,
/// without its line ending, and whether that line is complete.
pub(crate) fn start_line(buf: &[u8]) -> (&[u8], bool) {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = buf.get(start..).unwrap_or_default();
    match memchr::memchr(b'\n', rest) {
        Some(lf) => {
            let line = rest.get(..lf).unwrap_or_default();
            (line.strip_suffix(b"\r").unwrap_or(line), true)
        }
        None => (rest, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_bytewise(input: &[u8], max: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
        let mut r = HeadReader::default();
        for (i, b) in input.iter().enumerate() {
            let before = r.buffered().len();
            if let Some(len) = r.push(std::slice::from_ref(b), max)? {
                assert_eq!(len - before, 1);
                return Ok(Some((len, i + 1)));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_once() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\nA: b\r\n\r\nbody";
        let end = input.len() - 4;
        assert_eq!(feed_bytewise(input, 1000).unwrap(), Some((end, end)));
        let mut r = HeadReader::default();
        assert_eq!(r.push(&input[..10], 1000).unwrap(), None);
        assert_eq!(r.push(&input[10..], 1000).unwrap(), Some(end));
        assert_eq!(r.buffered().len(), end);
        assert_eq!(r.buffered().len(), end, "bytes after the head are not kept");
        assert_eq!(&r.take(end)[..], &input[..end]);
        assert!(r.is_empty());
    }

    #[test]
    fn rejects_bare_lf() {
        for bad in [
            &b"\nGET"[..],
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET\r\nA: b\n",
        ] {
            assert_eq!(feed_bytewise(bad, 1000).unwrap_err().code, 400);
        }
        assert!(check_line_endings(b"GET / HTTP/1.1\r\nA: b\r\n\r\n").is_ok());
        assert!(check_line_endings(b"GET / HTTP/1.1\r\nA: b\n\r\n").is_err());
        assert!(check_line_endings(b"\nGET").is_err());
    }

    #[test]
    fn never_buffers_past_the_limit() {
        let mut r = HeadReader::default();
        assert_eq!(r.push(&[b'a'; 100], 10).unwrap(), None);
        assert_eq!(r.buffered().len(), 11);
        assert_eq!(r.push(b"\r\n\r\n", 10).unwrap(), None);
        assert_eq!(r.buffered().len(), 11);
    }

    #[test]
    fn empty_lines_before_the_start_line() {
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"\r\n\r"), 2);
        assert_eq!(leading_empty_lines(b"\n\r\n"), 0);
        assert_eq!(leading_empty_lines(b""), 0);
    }

    #[test]
    fn start_lines() {
        assert_eq!(
            start_line(b"\r\nGET / HTTP/1.1\r\nX"),
            (&b"GET / HTTP/1.1"[..], true)
        );
        assert_eq!(start_line(b"GET /abc"), (&b"GET /abc"[..], false));
        assert_eq!(start_line(b""), (&b""[..], false));
    }
}
