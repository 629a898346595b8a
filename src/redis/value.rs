//! [`Value`]: one RESP2 or RESP3 reply, as an enum to match on.

use bytes::Bytes;

/// One reply (or one element of a reply) in RESP2 or RESP3.
///
/// Texts the protocol defines as lines (simple strings, errors, big numbers,
/// the verbatim format) are `String`s, converted lossily if a server sends
/// bytes that are not UTF-8; blobs are [`Bytes`]. The helpers look through an
/// [`Attribute`](Value::Attribute) to the value it annotates.
///
/// ```
/// use taskweave::redis::{parse, Limits, Value};
///
/// let (reply, _) = parse(b"%1\r\n+k\r\n:1\r\n", &Limits::default()).unwrap().unwrap();
/// match reply {
///     Value::Map(pairs) => {
///         assert_eq!(pairs[0].0.as_str(), Some("k"));
///         assert_eq!(pairs[0].1.as_int(), Some(1));
///     }
///     other => panic!("not a map: {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`: a short text without CR or LF.
    SimpleString(String),
    /// `-ERR message`: an error reply, the error code first.
    Error(String),
    /// `:42`: a signed 64-bit integer.
    Integer(i64),
    /// `$3\r\nfoo`: a binary-safe blob string.
    BulkString(Bytes),
    /// RESP2 `$-1` and `*-1`, RESP3 `_`.
    Null,
    /// `*2`: an ordered array.
    Array(Vec<Value>),
    /// RESP3 `,1.5`, including `inf`, `-inf` and `nan`.
    Double(f64),
    /// RESP3 `#t` and `#f`.
    Boolean(bool),
    /// RESP3 `(123...`: an integer of any size, as its decimal digits.
    BigNumber(String),
    /// RESP3 `!21\r\nSYNTAX invalid syntax`: a binary-safe error.
    BulkError(Bytes),
    /// RESP3 `=15\r\ntxt:Some string`: a blob with a three-byte format
    /// (`txt`, `mkd`).
    VerbatimString {
        /// The format, such as `txt` or `mkd`.
        format: String,
        /// The text after the `format:` prefix.
        text: Bytes,
    },
    /// RESP3 `%1`: key/value pairs in the order the server sent them.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~2`: an unordered collection, in the order the server sent it.
    Set(Vec<Value>),
    /// RESP3 `>3`: an out-of-band push (pub/sub messages, invalidations);
    /// never the reply to a command.
    Push(Vec<Value>),
    /// RESP3 `|1`: attributes sent ahead of a value, with that value.
    Attribute {
        /// The attribute pairs.
        attrs: Vec<(Value, Value)>,
        /// The value they annotate.
        value: Box<Value>,
    },
}

impl Value {
    /// This value, or the value an [`Attribute`](Value::Attribute) annotates.
    pub fn unannotated(&self) -> &Value {
        let mut v = self;
        while let Value::Attribute { value, .. } = v {
            v = value;
        }
        v
    }

    /// The text of a simple string, or of a blob or verbatim string that is
    /// valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self.unannotated() {
            Value::SimpleString(s) => Some(s),
            Value::BulkString(b) | Value::VerbatimString { text: b, .. } => {
                std::str::from_utf8(b).ok()
            }
            _ => None,
        }
    }

    /// The bytes of a simple, blob or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self.unannotated() {
            Value::SimpleString(s) => Some(s.as_bytes()),
            Value::BulkString(b) | Value::VerbatimString { text: b, .. } => Some(b),
            _ => None,
        }
    }

    /// The number in an integer reply (not parsed out of a string).
    pub fn as_int(&self) -> Option<i64> {
        match self.unannotated() {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether this is an error reply, simple or blob.
    pub fn is_error(&self) -> bool {
        matches!(self.unannotated(), Value::Error(_) | Value::BulkError(_))
    }

    /// The elements of an array, set or push; otherwise the value back.
    pub fn into_array(self) -> Result<Vec<Value>, Value> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Ok(v),
            Value::Attribute { value, .. } => value.into_array(),
            other => Err(other),
        }
    }

    /// The pairs of a map, or of a RESP2 array of even length read as
    /// alternating keys and values (what `HGETALL` answers in RESP2);
    /// otherwise the value back.
    pub fn into_map(self) -> Result<Vec<(Value, Value)>, Value> {
        match self {
            Value::Map(pairs) => Ok(pairs),
            Value::Array(items) if items.len() % 2 == 0 => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Ok(pairs)
            }
            Value::Attribute { value, .. } => value.into_map(),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn helpers_read_strings_and_ints() {
        assert_eq!(Value::SimpleString("OK".into()).as_str(), Some("OK"));
        assert_eq!(bulk("foo").as_str(), Some("foo"));
        assert_eq!(bulk("foo").as_bytes(), Some(&b"foo"[..]));
        assert_eq!(
            Value::BulkString(Bytes::from_static(b"\xff")).as_str(),
            None
        );
        assert_eq!(Value::Integer(7).as_int(), Some(7));
        assert_eq!(bulk("7").as_int(), None);
        assert_eq!(Value::Null.as_str(), None);
    }

    #[test]
    fn helpers_look_through_attributes() {
        let v = Value::Attribute {
            attrs: vec![(bulk("a"), Value::Integer(1))],
            value: Box::new(Value::Integer(3)),
        };
        assert_eq!(v.as_int(), Some(3));
        let v = Value::Attribute {
            attrs: vec![],
            value: Box::new(Value::Array(vec![Value::Null])),
        };
        assert_eq!(v.into_array(), Ok(vec![Value::Null]));
    }

    #[test]
    fn errors_are_errors() {
        assert!(Value::Error("ERR x".into()).is_error());
        assert!(Value::BulkError(Bytes::from_static(b"SYNTAX x")).is_error());
        assert!(!Value::Null.is_error());
    }

    #[test]
    fn into_map_takes_maps_and_even_arrays() {
        let pairs = vec![(bulk("k"), Value::Integer(1))];
        assert_eq!(Value::Map(pairs.clone()).into_map(), Ok(pairs.clone()));
        assert_eq!(
            Value::Array(vec![bulk("k"), Value::Integer(1)]).into_map(),
            Ok(pairs)
        );
        let odd = Value::Array(vec![Value::Null]);
        assert_eq!(odd.clone().into_map(), Err(odd));
        assert_eq!(Value::Integer(1).into_array(), Err(Value::Integer(1)));
    }
}
