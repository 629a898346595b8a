//! Encoders: a command as an array of blob strings, and any [`Value`].

use bytes::BufMut;

use super::Value;

/// Appends `args` to `out` as one command: an array of blob strings, the form
/// every Redis server accepts (`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n`).
/// Arguments are binary-safe. `out` may be a `Vec<u8>` or a `BytesMut`;
/// several commands appended to one buffer form a pipeline.
///
/// ```
/// use taskweave::redis::encode_command;
///
/// let mut out = Vec::new();
/// encode_command(["SET", "k", "v"], &mut out);
/// assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
/// ```
pub fn encode_command<I>(args: I, out: &mut impl BufMut)
where
    I: IntoIterator,
    I::IntoIter: ExactSizeIterator,
    I::Item: AsRef<[u8]>,
{
    let args = args.into_iter();
    header(out, b'*', args.len());
    for arg in args {
        blob(out, b'$', arg.as_ref());
    }
}

/// [`encode_command`] into a new, exactly sized `Vec<u8>`.
pub fn command_bytes<I>(args: I) -> Vec<u8>
where
    I: IntoIterator,
    I::IntoIter: ExactSizeIterator + Clone,
    I::Item: AsRef<[u8]>,
{
    let args = args.into_iter();
    let mut buf = itoa::Buffer::new();
    let size = args.clone().fold(3 + buf.format(args.len()).len(), |n, a| {
        let len = a.as_ref().len();
        n + 5 + buf.format(len).len() + len
    });
    let mut out = Vec::with_capacity(size);
    encode_command(args, &mut out);
    out
}

/// Appends `value` to `out` in RESP3 (RESP2 for the types RESP2 has, with
/// `Null` as `_`, which RESP2 peers do not read; servers never need it).
///
/// A simple string or error containing CR or LF cannot be a line, so it is
/// written as a blob string or blob error instead: the output always parses.
/// Recurses once per level of nesting, as deep as `value` is.
pub fn encode_value(value: &Value, out: &mut impl BufMut) {
    match value {
        Value::SimpleString(s) => line_or_blob(out, b'+', b'$', s.as_bytes()),
        Value::Error(s) => line_or_blob(out, b'-', b'!', s.as_bytes()),
        Value::Integer(n) => {
            out.put_u8(b':');
            out.put_slice(itoa::Buffer::new().format(*n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Value::BulkString(b) => blob(out, b'$', b),
        Value::Null => out.put_slice(b"_\r\n"),
        Value::Array(items) => aggregate(out, b'*', items),
        Value::Double(d) => {
            out.put_u8(b',');
            if d.is_nan() {
                out.put_slice(b"nan");
            } else if d.is_infinite() {
                out.put_slice(if *d > 0.0 { b"inf" } else { b"-inf" });
            } else {
                out.put_slice(format!("{d:?}").as_bytes());
            }
            out.put_slice(b"\r\n");
        }
        Value::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Value::BigNumber(n) => {
            out.put_u8(b'(');
            out.put_slice(n.as_bytes());
            out.put_slice(b"\r\n");
        }
        Value::BulkError(b) => blob(out, b'!', b),
        Value::VerbatimString { format, text } => {
            // A format must be three bytes; pad or cut one that is not.
            let mut f = *b"txt";
            for (dst, src) in f
                .iter_mut()
                .zip(format.bytes().chain(std::iter::repeat(b' ')))
            {
                *dst = src;
            }
            header(out, b'=', text.len() + 4);
            out.put_slice(&f);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode_value(k, out);
                encode_value(v, out);
            }
        }
        Value::Set(items) => aggregate(out, b'~', items),
        Value::Push(items) => aggregate(out, b'>', items),
        Value::Attribute { attrs, value } => {
            header(out, b'|', attrs.len());
            for (k, v) in attrs {
                encode_value(k, out);
                encode_value(v, out);
            }
            encode_value(value, out);
        }
    }
}

fn header(out: &mut impl BufMut, ty: u8, len: usize) {
    out.put_u8(ty);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

fn blob(out: &mut impl BufMut, ty: u8, bytes: &[u8]) {
    header(out, ty, bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

fn line_or_blob(out: &mut impl BufMut, line_ty: u8, blob_ty: u8, bytes: &[u8]) {
    if bytes.iter().any(|&b| b == b'\r' || b == b'\n') {
        blob(out, blob_ty, bytes);
    } else {
        out.put_u8(line_ty);
        out.put_slice(bytes);
        out.put_slice(b"\r\n");
    }
}

fn aggregate(out: &mut impl BufMut, ty: u8, items: &[Value]) {
    header(out, ty, items.len());
    for item in items {
        encode_value(item, out);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::redis::{parse, Limits};

    #[test]
    fn command_is_an_array_of_blobs() {
        let mut out = Vec::new();
        encode_command(["SET", "k", "v"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    }

    #[test]
    fn command_is_binary_safe_and_sized_exactly() {
        let args: [&[u8]; 3] = [b"SET", b"\r\n\0", b""];
        let out = command_bytes(args);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\n\r\n\0\r\n$0\r\n\r\n");
        assert_eq!(out.capacity(), out.len());
        let big = "x".repeat(1234);
        let out = command_bytes(["GET", big.as_str()]);
        assert_eq!(out.capacity(), out.len());
    }

    #[test]
    fn commands_pipeline_into_bytes_mut() {
        let mut out = BytesMut::new();
        encode_command(vec!["PING"], &mut out);
        encode_command(vec!["GET", "k"], &mut out);
        assert_eq!(
            &out[..],
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn command_parses_back() {
        let out = command_bytes(["HSET", "h", "f", "1"]);
        let (v, used) = parse(&out, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, out.len());
        let words: Vec<_> = v.into_array().unwrap();
        let words: Vec<_> = words.iter().map(|w| w.as_str().unwrap()).collect();
        assert_eq!(words, ["HSET", "h", "f", "1"]);
    }

    #[test]
    fn encode_value_writes_resp3() {
        let mut out = Vec::new();
        encode_value(
            &Value::Array(vec![
                Value::Double(f64::NEG_INFINITY),
                Value::Double(1.5),
                Value::Boolean(true),
                Value::Null,
                Value::Integer(-3),
            ]),
            &mut out,
        );
        assert_eq!(out, b"*5\r\n,-inf\r\n,1.5\r\n#t\r\n_\r\n:-3\r\n");
    }

    #[test]
    fn simple_string_with_crlf_becomes_a_blob() {
        let mut out = Vec::new();
        encode_value(&Value::SimpleString("a\r\nb".into()), &mut out);
        assert_eq!(out, b"$4\r\na\r\nb\r\n");
    }
}
