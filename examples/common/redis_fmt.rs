//! Redis replies printed the way `redis-cli` prints them on a terminal.
//!
//! The layout is redis-cli 7's (`cliFormatReplyTTY`): status replies bare,
//! `(nil)`, `(integer) 3`, blob strings quoted with C-style escapes, `(error)
//! ...`, `(double) 1.5`, `(true)`/`(false)`, verbatim strings as their text,
//! and aggregates numbered (`1)` arrays and pushes, `1~` sets, `1#` maps as
//! `key => value`) with nested ones indented under their number. redis-cli 7
//! cannot print two RESP3 types; here a big number is `(big number) 123` and
//! attributes are numbered `1|` like a map's pairs, with the value they
//! annotate on the line after them.

use taskweave::redis::Value;

/// `value` as redis-cli shows it on a terminal, ending with a newline.
pub fn format_reply(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, "");
    out
}

/// Writes `v`; every line after its first starts with `prefix` (the first
/// one follows whatever the caller wrote, such as an element's number).
fn write_value(out: &mut String, v: &Value, prefix: &str) {
    match v {
        Value::SimpleString(s) => line(out, s),
        Value::Error(s) => line(out, &format!("(error) {s}")),
        Value::BulkError(b) => line(out, &format!("(error) {}", String::from_utf8_lossy(b))),
        Value::Integer(n) => line(out, &format!("(integer) {n}")),
        Value::Double(d) => line(out, &format!("(double) {}", double(*d))),
        Value::BigNumber(s) => line(out, &format!("(big number) {s}")),
        Value::Boolean(b) => line(out, if *b { "(true)" } else { "(false)" }),
        Value::Null => line(out, "(nil)"),
        Value::BulkString(b) => line(out, &quoted(b)),
        Value::VerbatimString { text, .. } => line(out, &String::from_utf8_lossy(text)),
        Value::Array(items) => elements(out, items, ')', "(empty array)", prefix),
        Value::Push(items) => elements(out, items, ')', "(empty push)", prefix),
        Value::Set(items) => elements(out, items, '~', "(empty set)", prefix),
        Value::Map(pairs) => pairs_of(out, pairs, '#', "(empty hash)", prefix),
        Value::Attribute { attrs, value } => {
            if !attrs.is_empty() {
                pairs_of(out, attrs, '|', "", prefix);
                out.push_str(prefix);
            }
            write_value(out, value, prefix);
        }
    }
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

/// The number of each element is right-aligned to the widest one, and
/// nested lines are indented past it.
fn numbering(count: usize, prefix: &str) -> (usize, String) {
    let width = count.to_string().len();
    (width, format!("{prefix}{}", " ".repeat(width + 2)))
}

fn elements(out: &mut String, items: &[Value], sep: char, empty: &str, prefix: &str) {
    if items.is_empty() {
        return line(out, empty);
    }
    let (width, inner) = numbering(items.len(), prefix);
    for (i, item) in items.iter().enumerate() {
        let lead = if i == 0 { "" } else { prefix };
        out.push_str(&format!("{lead}{:>width$}{sep} ", i + 1));
        write_value(out, item, &inner);
    }
}

fn pairs_of(out: &mut String, pairs: &[(Value, Value)], sep: char, empty: &str, prefix: &str) {
    if pairs.is_empty() {
        return line(out, empty);
    }
    let (width, inner) = numbering(pairs.len(), prefix);
    for (i, (key, value)) in pairs.iter().enumerate() {
        let lead = if i == 0 { "" } else { prefix };
        out.push_str(&format!("{lead}{:>width$}{sep} ", i + 1));
        write_value(out, key, &inner);
        out.pop(); // the key's newline
        out.push_str(" => ");
        write_value(out, value, &inner);
    }
}

/// A double as Redis writes one: `inf`, `-inf`, `nan`, else the shortest
/// text that reads back as the same number (`1.5`, `3`).
fn double(d: f64) -> String {
    match d {
        d if d.is_nan() => "nan".into(),
        d if d.is_infinite() => if d > 0.0 { "inf" } else { "-inf" }.into(),
        d => d.to_string(),
    }
}

/// Bytes quoted like redis-cli's `sdscatrepr`: `"` and `\` escaped, `\n`
/// `\r` `\t` `\a` `\b` by name, other bytes outside printable ASCII as
/// `\xHH`.
fn quoted(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'\\' | b'"' => {
                s.push('\\');
                s.push(b as char);
            }
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec().into())
    }

    #[test]
    fn scalars() {
        assert_eq!(format_reply(&Value::SimpleString("OK".into())), "OK\n");
        assert_eq!(format_reply(&Value::Null), "(nil)\n");
        assert_eq!(format_reply(&Value::Integer(-3)), "(integer) -3\n");
        assert_eq!(format_reply(&bulk("bulk")), "\"bulk\"\n");
        assert_eq!(
            format_reply(&Value::Error("ERR unknown command 'FOO'".into())),
            "(error) ERR unknown command 'FOO'\n"
        );
        assert_eq!(
            format_reply(&Value::BulkError("SYNTAX bad".as_bytes().to_vec().into())),
            "(error) SYNTAX bad\n"
        );
        assert_eq!(format_reply(&Value::Double(1.5)), "(double) 1.5\n");
        assert_eq!(format_reply(&Value::Double(3.0)), "(double) 3\n");
        assert_eq!(
            format_reply(&Value::Double(f64::NEG_INFINITY)),
            "(double) -inf\n"
        );
        assert_eq!(format_reply(&Value::Double(f64::NAN)), "(double) nan\n");
        assert_eq!(format_reply(&Value::Boolean(true)), "(true)\n");
        assert_eq!(format_reply(&Value::Boolean(false)), "(false)\n");
        assert_eq!(
            format_reply(&Value::BigNumber("1234567999999999999999".into())),
            "(big number) 1234567999999999999999\n"
        );
        let verbatim = Value::VerbatimString {
            format: "txt".into(),
            text: "This is a verbatim\nstring".as_bytes().to_vec().into(),
        };
        assert_eq!(format_reply(&verbatim), "This is a verbatim\nstring\n");
    }

    #[test]
    fn blobs_are_quoted_like_sdscatrepr() {
        assert_eq!(
            format_reply(&Value::BulkString(
                b"a\"b\\\n\t\x01\xff\r\x07\x08 ~"[..].into()
            )),
            "\"a\\\"b\\\\\\n\\t\\x01\\xff\\r\\a\\b ~\"\n"
        );
        assert_eq!(format_reply(&bulk("")), "\"\"\n");
    }

    #[test]
    fn empty_aggregates() {
        assert_eq!(format_reply(&Value::Array(vec![])), "(empty array)\n");
        assert_eq!(format_reply(&Value::Map(vec![])), "(empty hash)\n");
        assert_eq!(format_reply(&Value::Set(vec![])), "(empty set)\n");
        assert_eq!(format_reply(&Value::Push(vec![])), "(empty push)\n");
    }

    /// `EVAL "return {1,{2,{3,'x'}},{},'y'}" 0` as redis-cli 7.0 prints it.
    #[test]
    fn nested_arrays_are_indented_under_their_number() {
        let v = Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![
                Value::Integer(2),
                Value::Array(vec![Value::Integer(3), bulk("x")]),
            ]),
            Value::Array(vec![]),
            bulk("y"),
        ]);
        assert_eq!(
            format_reply(&v),
            "1) (integer) 1\n\
             2) 1) (integer) 2\n   \
                2) 1) (integer) 3\n      \
                   2) \"x\"\n\
             3) (empty array)\n\
             4) \"y\"\n"
        );
    }

    /// Numbers are right-aligned to the widest (`LRANGE` of 11 items).
    #[test]
    fn numbers_are_aligned() {
        let items: Vec<Value> = "abcdefghijk"
            .chars()
            .map(|c| bulk(&c.to_string()))
            .collect();
        let out = format_reply(&Value::Array(items));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], " 1) \"a\"");
        assert_eq!(lines[9], "10) \"j\"");
        assert_eq!(lines[10], "11) \"k\"");
    }

    /// `HELLO 3` and `DEBUG PROTOCOL set|map|push` as redis-cli 7.0 prints
    /// them.
    #[test]
    fn maps_sets_and_pushes() {
        let hello = Value::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("proto"), Value::Integer(3)),
            (bulk("modules"), Value::Array(vec![])),
        ]);
        assert_eq!(
            format_reply(&hello),
            "1# \"server\" => \"redis\"\n\
             2# \"proto\" => (integer) 3\n\
             3# \"modules\" => (empty array)\n"
        );
        let set = Value::Set(vec![Value::Integer(0), Value::Integer(1)]);
        assert_eq!(format_reply(&set), "1~ (integer) 0\n2~ (integer) 1\n");
        let push = Value::Push(vec![bulk("server-cpu-usage"), Value::Integer(42)]);
        assert_eq!(
            format_reply(&push),
            "1) \"server-cpu-usage\"\n2) (integer) 42\n"
        );
        let nested = Value::Map(vec![(
            bulk("k"),
            Value::Array(vec![Value::Integer(1), Value::Integer(2)]),
        )]);
        assert_eq!(
            format_reply(&nested),
            "1# \"k\" => 1) (integer) 1\n   2) (integer) 2\n"
        );
    }

    /// `DEBUG PROTOCOL attrib` in RESP3 (redis-cli 7.0 cannot print it).
    #[test]
    fn attributes_come_before_the_value_they_annotate() {
        let v = Value::Attribute {
            attrs: vec![(
                bulk("key-popularity"),
                Value::Array(vec![bulk("key:123"), Value::Integer(90)]),
            )],
            value: Box::new(bulk("Some real reply following the attribute")),
        };
        assert_eq!(
            format_reply(&v),
            "1| \"key-popularity\" => 1) \"key:123\"\n   \
                2) (integer) 90\n\
             \"Some real reply following the attribute\"\n"
        );
        // Inside an array, the annotated value is indented like the rest.
        let arr = Value::Array(vec![v, Value::Null]);
        assert_eq!(
            format_reply(&arr),
            "1) 1| \"key-popularity\" => 1) \"key:123\"\n      \
                   2) (integer) 90\n   \
                \"Some real reply following the attribute\"\n\
             2) (nil)\n"
        );
    }
}
