//! Character classes and list syntax shared by the parsers and the builders.
//!
//! RFC 9110 §5.6 defines tokens, optional whitespace and comma-separated lists;
//! header names, transfer codings, chunk extensions and trailer fields are all
//! built from them. Keeping the classes in one place keeps the parsers and the
//! builders agreeing on what is valid.

/// A byte class as a 256-entry table: the `const fn(u8) -> bool` rule,
/// evaluated for every byte at compile time, so a check is one load per byte.
#[allow(clippy::indexing_slicing)] // `b < 256`: the loop's own bound
pub(crate) const fn byte_table(rule: ByteRule) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match rule {
            ByteRule::Tchar => tchar_rule(b as u8),
            ByteRule::Host => host_rule(b as u8),
        };
        b += 1;
    }
    table
}

/// The byte classes kept as tables.
#[derive(Clone, Copy)]
pub(crate) enum ByteRule {
    /// [`is_tchar`].
    Tchar,
    /// The bytes of a `Host` value.
    Host,
}

/// Whether `table` admits `b`.
#[inline]
pub(crate) fn in_table(table: &[bool; 256], b: u8) -> bool {
    table.get(usize::from(b)).copied().unwrap_or(false)
}

/// Whether `b` is a `tchar` (RFC 9110 §5.6.2): a byte a token may contain.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    in_table(&TCHAR, b)
}

static TCHAR: [bool; 256] = byte_table(ByteRule::Tchar);

/// The bytes a `Host` value may hold: reg-name, IP-literal and port characters.
const fn host_rule(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'%'
        )
}

/// The `tchar` rule as written in the RFC.
const fn tchar_rule(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `s` is a non-empty token.
pub(crate) fn is_token(s: &[u8]) -> bool {
    // No early exit: names are short and valid, and a branch-free loop is
    // cheaper than one that tests each byte's result.
    !s.is_empty() && s.iter().fold(true, |ok, &b| ok & is_tchar(b))
}

/// Whether every byte of `s` [`is_field_byte`], without a branch per byte.
pub(crate) fn all_field_bytes(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & is_field_byte(b))
}

/// Whether `b` may appear inside a field value: VCHAR, obs-text, SP or HTAB
/// (RFC 9110 §5.5). Excludes NUL, CR, LF, DEL and the other controls.
#[inline]
pub(crate) fn is_field_byte(b: u8) -> bool {
    // Without short-circuits, so that loops over it need no branch per byte.
    (b >= b' ') & (b != 0x7f) | (b == b'\t')
}

/// Optional whitespace (RFC 9110 §5.6.3).
#[inline]
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing optional whitespace.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The elements of a comma-separated list, each trimmed; empty elements are
/// skipped, as RFC 9110 §5.6.1 asks of recipients.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Whether a comma-separated list contains `token`, compared without case.
pub(crate) fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_class() {
        assert!(is_token(b"Content-Length"));
        assert!(is_token(b"x!#$%&'*+-.^_`|~9"));
        for bad in [
            &b""[..],
            b"a b",
            b"a:b",
            b"a/b",
            b"\"a\"",
            b"a\x7f",
            b"\xc3\xa9",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn field_bytes() {
        assert!(b"a b\tc~\x80\xff".iter().all(|&b| is_field_byte(b)));
        for b in [0u8, b'\r', b'\n', 0x7f, 0x0b, 0x1f] {
            assert!(!is_field_byte(b), "{b}");
        }
        assert!(all_field_bytes(b"a b\tc~\x80\xff") && all_field_bytes(b""));
        for b in 0..=255u8 {
            assert_eq!(all_field_bytes(&[b'a', b, b'z']), is_field_byte(b), "{b}");
        }
    }

    #[test]
    fn trimming_and_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        let items: Vec<&[u8]> = list_elements(b" a ,, b,\tc , ").collect();
        assert_eq!(items, vec![&b"a"[..], b"b", b"c"]);
        assert!(list_contains(b"keep-alive, Close", b"close"));
        assert!(!list_contains(b"closed", b"close"));
    }
}
