//! Writing a log line in place: into bytes already there, with room for the
//! whole line checked once.
//!
//! Appending a line piece by piece to a `Vec` checks the capacity and stores
//! the length for every piece, and copies each piece of a length known only
//! at run time with a call to `memcpy`. A request line has some forty pieces.
//! Here the line is written through a [`Cursor`] into a [`LineBuf`]'s spare
//! bytes (initialized once, reused for every line after): keys are copied as
//! constants, short text as a fixed-size window of which only the text's
//! length is kept (the rest is overwritten by what follows), numbers digit
//! pair by digit pair.

use std::io::Write as _;
use std::net::SocketAddr;

/// Longest text copied byte by byte rather than scanned and copied whole.
const SHORT: usize = 16;

/// Bytes a window copy may write past what it keeps: room a writer leaves
/// after its bound.
pub(super) const SLACK: usize = 64;

/// Formatted lines, and spare bytes after them that are already initialized,
/// so a line is written with no capacity check per piece and no zero-filling.
#[derive(Debug, Default)]
pub(super) struct LineBuf {
    bytes: Vec<u8>,
    used: usize,
}

impl LineBuf {
    /// At least `n` bytes after the used ones, to write into, then
    /// [`commit`](Self::commit). Grows (zero-filled) when there is less.
    #[inline]
    pub(super) fn spare(&mut self, n: usize) -> &mut [u8] {
        let need = self.used.saturating_add(n);
        if self.bytes.len() < need {
            self.grow(need);
        }
        self.bytes.get_mut(self.used..).unwrap_or_default()
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, need: usize) {
        let len = need.max(self.bytes.len().saturating_mul(2)).max(4096);
        self.bytes.resize(len, 0);
    }

    /// Keeps `n` bytes written into [`spare`](Self::spare).
    #[inline]
    pub(super) fn commit(&mut self, n: usize) {
        self.used = self.used.saturating_add(n).min(self.bytes.len());
    }

    /// The lines written.
    pub(super) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.used).unwrap_or_default()
    }

    /// Forgets the lines, keeping the bytes for the next ones.
    pub(super) fn clear(&mut self) {
        self.used = 0;
    }
}

/// Writes a line into a slice that has room for it (the caller's bound plus
/// [`SLACK`]). A piece that would not fit is left out rather than panicking;
/// with a right bound none is.
pub(super) struct Cursor<'a> {
    buf: &'a mut [u8],
    n: usize,
}

/// `"00"` to `"99"`.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Each octet's decimal digits followed by a `.`, padded to 4 bytes: copied
/// whole, of which `1 + digits` are kept.
const OCTETS: [[u8; 4]; 256] = octets();

const fn octets() -> [[u8; 4]; 256] {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let (h, d, u) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        t[i] = if i >= 100 {
            [b'0' + h, b'0' + d, b'0' + u, b'.']
        } else if i >= 10 {
            [b'0' + d, b'0' + u, b'.', 0]
        } else {
            [b'0' + u, b'.', 0, 0]
        };
        i += 1;
    }
    t
}

/// The decimal digits of `v` (below 10^8) as 8 bytes, leading zeros
/// dropped, and how many there are. The digits are split in halves, pairs
/// and single digits in lanes of one `u64` (a multiply and a shift stand in
/// for each division by 100 or 10), so each byte ends up holding one digit,
/// the most significant first in memory.
#[inline]
fn eight_digits(v: u32) -> ([u8; 8], usize) {
    let v = u64::from(v);
    // Two 4-digit halves in 32-bit lanes.
    let y = (v / 10_000) | ((v % 10_000) << 32);
    // Each below 10^4: `* 10486 >> 20` is `/ 100` there.
    let hundreds = ((y * 10_486) >> 20) & 0x0000_007f_0000_007f;
    let y = hundreds | ((y - hundreds * 100) << 16);
    // Each below 100: `* 103 >> 10` is `/ 10` there.
    let tens = ((y * 103) >> 10) & 0x000f_000f_000f_000f;
    let digits = tens | ((y - tens * 10) << 8);
    // Leading zeros are the low bytes that are 0; `0` keeps one digit.
    let zeros = (digits.trailing_zeros() / 8).min(7);
    let ascii = (digits | 0x3030_3030_3030_3030) >> (8 * zeros);
    (ascii.to_le_bytes(), 8 - zeros as usize)
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(super) fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, n: 0 }
    }

    /// Bytes written.
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// Copies `s`, whose length is known when compiling: a few moves.
    #[inline(always)]
    pub(super) fn put<const N: usize>(&mut self, s: &[u8; N]) {
        if let Some(dst) = self.buf.get_mut(self.n..self.n + N) {
            dst.copy_from_slice(s);
            self.n += N;
        }
    }

    /// Copies all of `src` and keeps its first `len` bytes: a fixed-size
    /// copy instead of a call to `memcpy`.
    #[inline(always)]
    pub(super) fn put_window<const W: usize>(&mut self, src: &[u8; W], len: usize) {
        if let Some(dst) = self.buf.get_mut(self.n..self.n + W) {
            dst.copy_from_slice(src);
            self.n += len.min(W);
        }
    }

    /// Copies `s`, of any length.
    pub(super) fn put_slice(&mut self, s: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.n..self.n + s.len()) {
            dst.copy_from_slice(s);
            self.n += s.len();
        }
    }

    /// `v` in decimal. Below 10^8 (sizes, times, ids: nearly every number
    /// of a line), its eight digits are computed side by side in one `u64`
    /// and copied as an 8-byte window.
    #[inline]
    pub(super) fn put_u64(&mut self, v: u64) {
        match u32::try_from(v) {
            Ok(v) if v < 100_000_000 => {
                let (bytes, len) = eight_digits(v);
                self.put_window(&bytes, len);
            }
            _ => self.put_long(v),
        }
    }

    /// `v` in decimal, digit pairs written backwards into a scratch array
    /// and copied as a window.
    #[cold]
    #[inline(never)]
    fn put_long(&mut self, v: u64) {
        // Digits end at `END`; a window of `END` bytes from where they begin
        // stays inside the array.
        const END: usize = 20;
        let mut tmp = [0u8; 2 * END];
        let mut i = END;
        let mut v = v;
        while v >= 100 {
            let p = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            if let (Some(d), Some(s)) = (tmp.get_mut(i..i + 2), PAIRS.get(p..p + 2)) {
                d.copy_from_slice(s);
            }
        }
        if v >= 10 {
            let p = v as usize * 2;
            i -= 2;
            if let (Some(d), Some(s)) = (tmp.get_mut(i..i + 2), PAIRS.get(p..p + 2)) {
                d.copy_from_slice(s);
            }
        } else {
            i -= 1;
            if let Some(d) = tmp.get_mut(i) {
                *d = b'0' + v as u8;
            }
        }
        if let Some(window) = tmp
            .get(i..i + END)
            .and_then(|w| <&[u8; END]>::try_from(w).ok())
        {
            self.put_window(window, END - i);
        }
    }

    /// `v` in decimal, or `null`.
    #[inline]
    pub(super) fn put_opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.put_u64(v),
            None => self.put(b"null"),
        }
    }

    /// `v` (below 1,000,000) in six digits, zero-padded.
    #[inline]
    pub(super) fn put_6_digits(&mut self, v: u32) {
        let v = v.min(999_999) as usize;
        let (a, b, c) = (v / 10_000 * 2, v / 100 % 100 * 2, v % 100 * 2);
        let mut six = [0u8; 6];
        for (dst, p) in six.chunks_exact_mut(2).zip([a, b, c]) {
            if let Some(s) = PAIRS.get(p..p + 2) {
                dst.copy_from_slice(s);
            }
        }
        self.put(&six);
    }

    /// `a` as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
    pub(super) fn put_addr(&mut self, a: SocketAddr) {
        match a {
            SocketAddr::V4(v4) => {
                let [a0, a1, a2, a3] = v4.ip().octets();
                let digits = |o: u8| 1 + usize::from(o >= 10) + usize::from(o >= 100);
                for o in [a0, a1, a2] {
                    self.put_window(&OCTETS[usize::from(o)], digits(o) + 1);
                }
                self.put_window(&OCTETS[usize::from(a3)], digits(a3));
                self.put(b":");
                self.put_u64(u64::from(v4.port()));
            }
            SocketAddr::V6(v6) => {
                // At most 58 bytes with a scope id.
                let mut tmp = [0u8; 64];
                let mut w = &mut tmp[..];
                let _ = write!(w, "{v6}");
                let len = 64 - w.len();
                self.put_slice(tmp.get(..len).unwrap_or_default());
            }
        }
    }

    /// `bytes` (valid UTF-8) as a JSON string: quoted, with quotes,
    /// backslashes and control characters escaped.
    pub(super) fn put_json_utf8(&mut self, bytes: &[u8]) {
        self.put(b"\"");
        if !(bytes.len() <= SHORT && self.put_short_clean(bytes)) {
            if !needs_escape(bytes) {
                self.put_slice(bytes);
            } else {
                self.put_escaped(bytes);
            }
        }
        self.put(b"\"");
    }

    /// Copies `bytes` (at most [`SHORT`]) byte by byte while checking that
    /// none needs an escape: for a name such as a protocol's, cheaper than a
    /// scan and a call to `memcpy`. Returns whether it did (else nothing is
    /// kept).
    #[inline]
    fn put_short_clean(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(self.n..self.n + SHORT) else {
            return false;
        };
        for (d, &b) in dst.iter_mut().zip(bytes) {
            if b < 0x20 || b == b'"' || b == b'\\' {
                return false;
            }
            *d = b;
        }
        self.n += bytes.len();
        true
    }

    #[cold]
    #[inline(never)]
    fn put_escaped(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            match b {
                b'"' => self.put(b"\\\""),
                b'\\' => self.put(b"\\\\"),
                b'\n' => self.put(b"\\n"),
                b'\r' => self.put(b"\\r"),
                b'\t' => self.put(b"\\t"),
                0x08 => self.put(b"\\b"),
                0x0c => self.put(b"\\f"),
                0x00..=0x1f => {
                    self.put(b"\\u00");
                    self.put(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                }
                _ => self.put(&[b]),
            }
        }
    }
}

/// Bytes a JSON string of `len` bytes of text takes at most (each byte may
/// become `\u00XX`, and the quotes).
pub(super) fn json_str_bound(len: usize) -> usize {
    len.saturating_mul(6).saturating_add(2)
}

/// Whether a byte of `bytes` must be escaped in a JSON string (a quote, a
/// backslash, a control character): eight bytes at a time.
#[inline]
pub(super) fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero: its high bit set in the result (exact, as long
    // as no byte of `x` has its own high bit masked in; `!x` sees to that).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let x = u64::from_le_bytes(a);
        // Below 0x20: `x - 0x20..` borrows into a high bit not set in `x`.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if control | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Cursor<'_>)) -> String {
        let mut buf = [0u8; 256];
        let mut c = Cursor::new(&mut buf);
        f(&mut c);
        let n = c.len();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn numbers_match_display() {
        let mut v = 1u64;
        let mut cases = vec![0, 9, 10, 99, 100, 101, 999, 1000, u64::MAX];
        while let Some(n) = v.checked_mul(7) {
            cases.extend([n - 1, n, n + 1]);
            v = n;
        }
        for n in cases {
            assert_eq!(written(|c| c.put_u64(n)), n.to_string());
        }
        for n in (0..100_000u32)
            .chain((0..100_000_000).step_by(9_973))
            .chain([99_999_999])
        {
            let (bytes, len) = eight_digits(n);
            assert_eq!(&bytes[..len], n.to_string().as_bytes());
        }
        assert_eq!(written(|c| c.put_opt_u64(None)), "null");
        for n in [0, 7, 42, 123_456, 999_999, 5_000_000] {
            assert_eq!(
                written(|c| c.put_6_digits(n)),
                format!("{:06}", n.min(999_999))
            );
        }
    }

    #[test]
    fn addresses_match_display() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:47352",
            "10.200.3.45:80",
            "255.255.255.255:65535",
            "[::1]:8080",
            "[fe80::1%4294967295]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(written(|c| c.put_addr(a)), a.to_string());
        }
        for o in 0..=255u8 {
            let a = SocketAddr::from(([o, 1, o, o], u16::from(o)));
            assert_eq!(written(|c| c.put_addr(a)), a.to_string());
        }
    }

    #[test]
    fn escape_scan_finds_every_special_byte_anywhere() {
        for len in 0..20 {
            let clean = vec![b'a'; len];
            assert!(!needs_escape(&clean));
            for at in 0..len {
                for b in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut s = clean.clone();
                    s[at] = b;
                    assert!(needs_escape(&s), "{s:?}");
                }
                for b in [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xdc, 0xff] {
                    let mut s = clean.clone();
                    s[at] = b;
                    assert!(!needs_escape(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_as_json() {
        for s in ["", "/", "/a b?c=\"d\"", "tab\there", "\u{1}\u{1f}\\", "é/ü"] {
            let out = written(|c| c.put_json_utf8(s.as_bytes()));
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
            assert!(out.len() <= json_str_bound(s.len()));
        }
    }

    #[test]
    fn a_piece_that_does_not_fit_is_left_out() {
        let mut buf = [0u8; 4];
        let mut c = Cursor::new(&mut buf);
        c.put(b"ab");
        c.put(b"cde");
        // A number is copied as a 20-byte window: it needs that much room.
        c.put_u64(1);
        assert_eq!(c.len(), 2);
        assert_eq!(&buf, b"ab\0\0");
    }

    #[test]
    fn line_buf_keeps_what_was_committed() {
        let mut b = LineBuf::default();
        let spare = b.spare(10);
        assert!(spare.len() >= 10);
        spare[..4].copy_from_slice(b"abc\n");
        b.commit(4);
        assert_eq!(b.as_bytes(), b"abc\n");
        let big = b.spare(10_000).len();
        assert!(big >= 10_000);
        assert_eq!(b.as_bytes(), b"abc\n");
        b.clear();
        assert!(b.as_bytes().is_empty());
    }
}
