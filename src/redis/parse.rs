//! [`parse`]: an incremental, bounded RESP2/RESP3 parser.

use std::fmt;

use bytes::Bytes;

use super::Value;

/// How much one reply may ask of the parser; every bound is checked before
/// anything is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// How many aggregates (arrays, maps, sets, pushes, attributes) may be
    /// open inside each other. Default 64.
    pub max_depth: usize,
    /// How many elements one aggregate may declare (pairs, for a map or an
    /// attribute). Default 1,048,576.
    pub max_elements: usize,
    /// How long a blob (bulk string, bulk error, verbatim string) may be.
    /// Default 512 MiB, Redis's `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// How long a line (a simple string, error, number or length) may be,
    /// without its CRLF. Default 64 KiB, Redis's inline limit.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_elements: 1 << 20,
            max_bulk_len: 512 << 20,
            max_line_len: 64 << 10,
        }
    }
}

/// Why bytes are not a RESP reply. After any of these the stream is out of
/// sync: close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    /// A value began with a byte that is no RESP type.
    BadType(u8),
    /// A line had a CR not followed by LF, or a bare LF.
    BadLineEnd,
    /// A blob was not followed by CRLF.
    BadBlobEnd,
    /// An integer or length was empty, not decimal, or out of range.
    BadInteger,
    /// A length was negative (other than the RESP2 null `-1`).
    NegativeLength,
    /// A double was not a number, `inf`, `-inf` or `nan`.
    BadDouble,
    /// A boolean was not `t` or `f`.
    BadBoolean,
    /// A big number was not decimal digits.
    BadBigNumber,
    /// A null (`_`) had something on its line.
    BadNull,
    /// A verbatim string had no `xxx:` format prefix.
    BadVerbatim,
    /// Aggregates were nested deeper than [`Limits::max_depth`].
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// An aggregate declared more elements than [`Limits::max_elements`].
    TooManyElements {
        /// The declared count.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A blob declared a length over [`Limits::max_bulk_len`].
    BulkTooLong {
        /// The declared length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A line ran past [`Limits::max_line_len`] without its CRLF.
    LineTooLong {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::BadType(b) => write!(f, "RESP: unknown type byte 0x{b:02x}"),
            RespError::BadLineEnd => f.write_str("RESP: line not ended by CRLF"),
            RespError::BadBlobEnd => f.write_str("RESP: blob not followed by CRLF"),
            RespError::BadInteger => f.write_str("RESP: malformed integer"),
            RespError::NegativeLength => f.write_str("RESP: negative length"),
            RespError::BadDouble => f.write_str("RESP: malformed double"),
            RespError::BadBoolean => f.write_str("RESP: malformed boolean"),
            RespError::BadBigNumber => f.write_str("RESP: malformed big number"),
            RespError::BadNull => f.write_str("RESP: malformed null"),
            RespError::BadVerbatim => f.write_str("RESP: verbatim string without format"),
            RespError::TooDeep { max } => write!(f, "RESP: nesting deeper than {max}"),
            RespError::TooManyElements { len, max } => {
                write!(f, "RESP: aggregate of {len} elements (limit {max})")
            }
            RespError::BulkTooLong { len, max } => {
                write!(f, "RESP: blob of {len} bytes (limit {max})")
            }
            RespError::LineTooLong { max } => write!(f, "RESP: line longer than {max} bytes"),
        }
    }
}

impl std::error::Error for RespError {}

/// Capacity an aggregate starts with, whatever count it declares: memory
/// grows with the bytes that arrive, not with the count a server claims.
const PREALLOC: usize = 64;

/// Parses one value from the start of `buf`.
///
/// Returns the value and the number of bytes it used, `Ok(None)` if `buf`
/// ends inside the value (call again once more bytes arrived, with all of
/// them), or an error if `buf` is not RESP or breaks `limits`. Never panics,
/// whatever `buf` holds; nesting is handled with a heap stack, not recursion.
/// A connection that reads a reply in pieces uses a [`Parser`], which keeps
/// what it parsed between calls instead of starting over.
///
/// ```
/// use taskweave::redis::{parse, Limits, Value};
///
/// let wire = b"+OK\r\n:1\r\n";
/// let (first, used) = parse(wire, &Limits::default()).unwrap().unwrap();
/// assert_eq!(first, Value::SimpleString("OK".into()));
/// let (second, _) = parse(&wire[used..], &Limits::default()).unwrap().unwrap();
/// assert_eq!(second.as_int(), Some(1));
/// assert_eq!(parse(b"$5\r\nhel", &Limits::default()), Ok(None));
/// ```
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, RespError> {
    let mut parser = Parser::new(*limits);
    match parser.feed(buf)? {
        (Some(value), used) => Ok(Some((value, used))),
        (None, _) => Ok(None),
    }
}

/// A RESP parser that keeps the aggregates it has begun between calls, so
/// a reply that arrives in many reads is parsed once, not again from its
/// start on every read.
///
/// [`feed`](Parser::feed) consumes whole items (a scalar, a blob, an
/// aggregate's header) from the start of the buffer; the caller drops the
/// bytes it reports used, keeps the rest (the start of an item still
/// arriving), and feeds that again, with what arrives next appended.
///
/// ```
/// use taskweave::redis::{Limits, Parser, Value};
///
/// let mut parser = Parser::new(Limits::default());
/// // The array's header and first element are whole; `$3\r\nb` is not.
/// assert_eq!(parser.feed(b"*2\r\n:1\r\n$3\r\nb").unwrap(), (None, 8));
/// let (value, used) = parser.feed(b"$3\r\nbar\r\n").unwrap();
/// assert_eq!(used, 9);
/// assert_eq!(value, Some(Value::Array(vec![Value::Integer(1), Value::BulkString("bar".into())])));
/// ```
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// The aggregates begun and not yet complete, outermost first.
    stack: Vec<Frame>,
}

impl Parser {
    /// A parser that enforces `limits`.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            stack: Vec::new(),
        }
    }

    /// Whether the parser is between values (nothing begun).
    pub fn is_idle(&self) -> bool {
        self.stack.is_empty()
    }

    /// Parses from the start of `buf`: the value, once complete, and the
    /// bytes used either way. Bytes after a complete value are not touched.
    /// After an error the stream is out of sync; the parser should be
    /// dropped with its connection.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(Option<Value>, usize), RespError> {
        let limits = &self.limits;
        let stack = &mut self.stack;
        let mut pos = 0;
        loop {
            let Some((item, next)) = read_item(buf, pos, limits)? else {
                return Ok((None, pos));
            };
            pos = next;
            let mut done = match item {
                Item::Value(v) => v,
                Item::Open(kind, count) => {
                    if stack.len() >= limits.max_depth {
                        return Err(RespError::TooDeep {
                            max: limits.max_depth,
                        });
                    }
                    let want = match kind {
                        Kind::Map => count.saturating_mul(2),
                        Kind::Attribute => count.saturating_mul(2).saturating_add(1),
                        Kind::Array | Kind::Set | Kind::Push => count,
                    };
                    let frame = Frame {
                        kind,
                        want,
                        items: Vec::with_capacity(want.min(PREALLOC)),
                    };
                    if want > 0 {
                        stack.push(frame);
                        continue;
                    }
                    frame.finish()
                }
            };
            // Fold the finished value into its parents, closing each one it
            // fills.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok((Some(done), pos));
                };
                top.items.push(done);
                if top.items.len() < top.want {
                    break;
                }
                match stack.pop() {
                    Some(frame) => done = frame.finish(),
                    None => return Ok((None, pos)), // unreachable: `top` was on the stack
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Array,
    Set,
    Push,
    Map,
    Attribute,
}

/// An aggregate being filled: `want` values, flat (keys and values alternate
/// for a map; an attribute's pairs are followed by the value it annotates).
#[derive(Debug)]
struct Frame {
    kind: Kind,
    want: usize,
    items: Vec<Value>,
}

impl Frame {
    fn finish(self) -> Value {
        match self.kind {
            Kind::Array => Value::Array(self.items),
            Kind::Set => Value::Set(self.items),
            Kind::Push => Value::Push(self.items),
            Kind::Map => Value::Map(pairs(self.items.into_iter())),
            Kind::Attribute => {
                let mut items = self.items;
                let value = items.pop().unwrap_or(Value::Null);
                Value::Attribute {
                    attrs: pairs(items.into_iter()),
                    value: Box::new(value),
                }
            }
        }
    }
}

fn pairs(mut it: impl ExactSizeIterator<Item = Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

enum Item {
    Value(Value),
    Open(Kind, usize),
}

/// Reads one scalar, or the header of one aggregate, starting at `pos`.
fn read_item(buf: &[u8], pos: usize, limits: &Limits) -> Result<Option<(Item, usize)>, RespError> {
    let Some(&ty) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, after)) = read_line(buf, pos + 1, limits)? else {
        return Ok(None);
    };
    let value = match ty {
        b'+' => Value::SimpleString(text(line)),
        b'-' => Value::Error(text(line)),
        b':' => Value::Integer(parse_int(line)?),
        b'_' if line.is_empty() => Value::Null,
        b'_' => return Err(RespError::BadNull),
        b',' => Value::Double(parse_double(line)?),
        b'#' => match line {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(RespError::BadBoolean),
        },
        b'(' => Value::BigNumber(parse_big(line)?),
        b'$' | b'!' | b'=' => {
            let Some(len) = parse_len(line, ty == b'$')? else {
                return Ok(Some((Item::Value(Value::Null), after)));
            };
            if len > limits.max_bulk_len as u64 {
                return Err(RespError::BulkTooLong {
                    len,
                    max: limits.max_bulk_len,
                });
            }
            // len <= max_bulk_len, a usize, so these cannot overflow a u64;
            // checked anyway for a tiny usize.
            let len = usize::try_from(len).map_err(|_| RespError::BadInteger)?;
            let end = after
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or(RespError::BadInteger)?;
            let Some(blob) = buf.get(after..end) else {
                return Ok(None);
            };
            let (body, crlf) = blob.split_at(len);
            if crlf != b"\r\n" {
                return Err(RespError::BadBlobEnd);
            }
            let value = match ty {
                b'$' => Value::BulkString(Bytes::copy_from_slice(body)),
                b'!' => Value::BulkError(Bytes::copy_from_slice(body)),
                _ => match body {
                    [a, b, c, b':', text @ ..] => Value::VerbatimString {
                        format: String::from_utf8_lossy(&[*a, *b, *c]).into_owned(),
                        text: Bytes::copy_from_slice(text),
                    },
                    _ => return Err(RespError::BadVerbatim),
                },
            };
            return Ok(Some((Item::Value(value), end)));
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(count) = parse_len(line, ty == b'*')? else {
                return Ok(Some((Item::Value(Value::Null), after)));
            };
            if count > limits.max_elements as u64 {
                return Err(RespError::TooManyElements {
                    len: count,
                    max: limits.max_elements,
                });
            }
            let count = usize::try_from(count).map_err(|_| RespError::BadInteger)?;
            let kind = match ty {
                b'*' => Kind::Array,
                b'~' => Kind::Set,
                b'>' => Kind::Push,
                b'%' => Kind::Map,
                _ => Kind::Attribute,
            };
            return Ok(Some((Item::Open(kind, count), after)));
        }
        other => return Err(RespError::BadType(other)),
    };
    Ok(Some((Item::Value(value), after)))
}

/// The line starting at `start` without its CRLF, and the offset after the
/// CRLF; `None` if the CRLF has not arrived yet.
fn read_line<'a>(
    buf: &'a [u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<(&'a [u8], usize)>, RespError> {
    let rest = buf.get(start..).unwrap_or_default();
    match memchr::memchr2(b'\r', b'\n', rest) {
        Some(i) => {
            if i > limits.max_line_len {
                return Err(RespError::LineTooLong {
                    max: limits.max_line_len,
                });
            }
            match (rest.get(i), rest.get(i + 1)) {
                (Some(&b'\r'), Some(&b'\n')) => Ok(rest.get(..i).map(|l| (l, start + i + 2))),
                (Some(&b'\r'), None) => Ok(None),
                _ => Err(RespError::BadLineEnd),
            }
        }
        None if rest.len() > limits.max_line_len => Err(RespError::LineTooLong {
            max: limits.max_line_len,
        }),
        None => Ok(None),
    }
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// A strict decimal i64: an optional `-`, then at least one digit.
fn parse_int(line: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return Err(RespError::BadInteger);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadInteger);
        }
        let d = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if neg {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or(RespError::BadInteger)?;
    }
    Ok(n)
}

/// A length: `None` for the null `-1` where `null_ok`, else non-negative.
fn parse_len(line: &[u8], null_ok: bool) -> Result<Option<u64>, RespError> {
    if line == b"-1" && null_ok {
        return Ok(None);
    }
    let n = parse_int(line)?;
    if n < 0 || line.first() == Some(&b'-') {
        return Err(RespError::NegativeLength);
    }
    u64::try_from(n)
        .map(Some)
        .map_err(|_| RespError::NegativeLength)
}

fn parse_double(line: &[u8]) -> Result<f64, RespError> {
    match line {
        b"inf" | b"+inf" => Ok(f64::INFINITY),
        b"-inf" => Ok(f64::NEG_INFINITY),
        b"nan" | b"-nan" => Ok(f64::NAN),
        _ if line
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')) =>
        {
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(RespError::BadDouble)
        }
        _ => Err(RespError::BadDouble),
    }
}

fn parse_big(line: &[u8]) -> Result<String, RespError> {
    let digits = match line {
        [b'-', rest @ ..] => rest,
        _ => line,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadBigNumber);
    }
    Ok(text(line))
}

#[cfg(test)]
mod tests;
