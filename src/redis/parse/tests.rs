//! Every RESP2 and RESP3 type from wire bytes, every split point, every limit.

use bytes::Bytes;
#[cfg(feature = "proptest")]
use proptest::prelude::*;

use super::*;
#[cfg(feature = "proptest")]
use crate::redis::encode_value;

fn one(wire: &[u8]) -> Value {
    let (v, used) = parse(wire, &Limits::default())
        .unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(wire)))
        .unwrap_or_else(|| panic!("incomplete: {:?}", String::from_utf8_lossy(wire)));
    assert_eq!(used, wire.len(), "{:?}", String::from_utf8_lossy(wire));
    v
}

fn err(wire: &[u8]) -> RespError {
    parse(wire, &Limits::default()).expect_err(&String::from_utf8_lossy(wire))
}

fn bulk(s: &str) -> Value {
    Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
}

fn simple(s: &str) -> Value {
    Value::SimpleString(s.into())
}

// ---- RESP2 ----------------------------------------------------------------

#[test]
fn resp2_simple_string_and_error() {
    assert_eq!(one(b"+OK\r\n"), simple("OK"));
    assert_eq!(one(b"+\r\n"), simple(""));
    assert_eq!(
        one(b"-ERR unknown command\r\n"),
        Value::Error("ERR unknown command".into())
    );
}

#[test]
fn resp2_integers() {
    assert_eq!(one(b":42\r\n"), Value::Integer(42));
    assert_eq!(one(b":0\r\n"), Value::Integer(0));
    assert_eq!(one(b":-7\r\n"), Value::Integer(-7));
    assert_eq!(one(b":9223372036854775807\r\n"), Value::Integer(i64::MAX));
    assert_eq!(one(b":-9223372036854775808\r\n"), Value::Integer(i64::MIN));
}

#[test]
fn resp2_bulk_strings() {
    assert_eq!(one(b"$3\r\nfoo\r\n"), bulk("foo"));
    assert_eq!(one(b"$0\r\n\r\n"), bulk(""));
    assert_eq!(
        one(b"$4\r\n\r\n\0\xff\r\n"),
        Value::BulkString(Bytes::from_static(b"\r\n\0\xff"))
    );
}

#[test]
fn resp2_nulls() {
    assert_eq!(one(b"$-1\r\n"), Value::Null);
    assert_eq!(one(b"*-1\r\n"), Value::Null);
}

#[test]
fn resp2_arrays() {
    assert_eq!(
        one(b"*2\r\n$3\r\nfoo\r\n:42\r\n"),
        Value::Array(vec![bulk("foo"), Value::Integer(42)])
    );
    assert_eq!(one(b"*0\r\n"), Value::Array(vec![]));
    assert_eq!(
        one(b"*2\r\n*1\r\n+a\r\n*0\r\n"),
        Value::Array(vec![Value::Array(vec![simple("a")]), Value::Array(vec![])])
    );
    assert_eq!(
        one(b"*3\r\n$1\r\na\r\n$-1\r\n-ERR x\r\n"),
        Value::Array(vec![bulk("a"), Value::Null, Value::Error("ERR x".into())])
    );
}

// ---- RESP3 ----------------------------------------------------------------

#[test]
fn resp3_null() {
    assert_eq!(one(b"_\r\n"), Value::Null);
}

#[test]
fn resp3_doubles() {
    assert_eq!(one(b",1.23\r\n"), Value::Double(1.23));
    assert_eq!(one(b",10\r\n"), Value::Double(10.0));
    assert_eq!(one(b",-2.5e3\r\n"), Value::Double(-2500.0));
    assert_eq!(one(b",inf\r\n"), Value::Double(f64::INFINITY));
    assert_eq!(one(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
    assert!(matches!(one(b",nan\r\n"), Value::Double(d) if d.is_nan()));
}

#[test]
fn resp3_booleans() {
    assert_eq!(one(b"#t\r\n"), Value::Boolean(true));
    assert_eq!(one(b"#f\r\n"), Value::Boolean(false));
}

#[test]
fn resp3_big_number() {
    assert_eq!(
        one(b"(3492890328409238509324850943850943825024385\r\n"),
        Value::BigNumber("3492890328409238509324850943850943825024385".into())
    );
    assert_eq!(one(b"(-12\r\n"), Value::BigNumber("-12".into()));
}

#[test]
fn resp3_bulk_error() {
    let v = one(b"!21\r\nSYNTAX invalid syntax\r\n");
    assert_eq!(
        v,
        Value::BulkError(Bytes::from_static(b"SYNTAX invalid syntax"))
    );
    assert!(v.is_error());
}

#[test]
fn resp3_verbatim_string() {
    let v = one(b"=15\r\ntxt:Some string\r\n");
    assert_eq!(
        v,
        Value::VerbatimString {
            format: "txt".into(),
            text: Bytes::from_static(b"Some string")
        }
    );
    assert_eq!(v.as_str(), Some("Some string"));
    assert_eq!(
        one(b"=4\r\nmkd:\r\n"),
        Value::VerbatimString {
            format: "mkd".into(),
            text: Bytes::new()
        }
    );
}

#[test]
fn resp3_map() {
    assert_eq!(
        one(b"%1\r\n+k\r\n:1\r\n"),
        Value::Map(vec![(simple("k"), Value::Integer(1))])
    );
    assert_eq!(
        one(b"%2\r\n+first\r\n:1\r\n+second\r\n*1\r\n#f\r\n"),
        Value::Map(vec![
            (simple("first"), Value::Integer(1)),
            (simple("second"), Value::Array(vec![Value::Boolean(false)])),
        ])
    );
    assert_eq!(one(b"%0\r\n"), Value::Map(vec![]));
}

#[test]
fn resp3_set() {
    assert_eq!(
        one(b"~2\r\n+orange\r\n:5\r\n"),
        Value::Set(vec![simple("orange"), Value::Integer(5)])
    );
}

#[test]
fn resp3_push() {
    assert_eq!(
        one(b">3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\nhello\r\n"),
        Value::Push(vec![bulk("message"), bulk("chan"), bulk("hello")])
    );
}

#[test]
fn resp3_attribute_ahead_of_a_reply() {
    let wire = b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n";
    let v = one(wire);
    assert_eq!(
        v,
        Value::Attribute {
            attrs: vec![(
                simple("key-popularity"),
                Value::Map(vec![
                    (bulk("a"), Value::Double(0.1923)),
                    (bulk("b"), Value::Double(0.0012)),
                ])
            )],
            value: Box::new(Value::Array(vec![
                Value::Integer(2039123),
                Value::Integer(9543892)
            ])),
        }
    );
    assert_eq!(
        v.into_array(),
        Ok(vec![Value::Integer(2039123), Value::Integer(9543892)])
    );
}

#[test]
fn resp3_attribute_inside_an_array() {
    assert_eq!(
        one(b"*2\r\n|1\r\n+ttl\r\n:3600\r\n:7\r\n:8\r\n"),
        Value::Array(vec![
            Value::Attribute {
                attrs: vec![(simple("ttl"), Value::Integer(3600))],
                value: Box::new(Value::Integer(7)),
            },
            Value::Integer(8),
        ])
    );
}

// ---- incremental ----------------------------------------------------------

/// Several values back to back, of every type.
const STREAM: &[u8] = b"*2\r\n$3\r\nfoo\r\n:42\r\n_\r\n,inf\r\n,-inf\r\n#t\r\n\
(3492890328409238509324850943850943825024385\r\n=15\r\ntxt:Some string\r\n\
%1\r\n+k\r\n:1\r\n~2\r\n+a\r\n,1.5\r\n>3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n\
|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:1\r\n\
!21\r\nSYNTAX invalid syntax\r\n$-1\r\n*-1\r\n-ERR x\r\n$0\r\n\r\n*0\r\n";

fn parse_all(mut buf: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (v, used) = parse(buf, &Limits::default()).unwrap().unwrap();
        out.push(v);
        buf = &buf[used..];
    }
    out
}

#[test]
fn stream_parses_value_by_value() {
    assert_eq!(parse_all(STREAM).len(), 17);
}

#[test]
fn every_split_point_needs_more_then_gives_the_same_value() {
    let whole = parse_all(STREAM);
    let mut start = 0;
    for expected in &whole {
        let (_, used) = parse(&STREAM[start..], &Limits::default())
            .unwrap()
            .unwrap();
        let value = &STREAM[start..start + used];
        for cut in 0..value.len() {
            assert_eq!(
                parse(&value[..cut], &Limits::default()),
                Ok(None),
                "cut {cut} of {:?}",
                String::from_utf8_lossy(value)
            );
        }
        // More bytes after the value change nothing.
        let (again, used_again) = parse(&STREAM[start..], &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!((&again, used_again), (expected, used));
        start += used;
    }
}

// ---- limits and errors ----------------------------------------------------

fn nested(depth: usize) -> Vec<u8> {
    let mut wire = b"*1\r\n".repeat(depth);
    wire.extend_from_slice(b":1\r\n");
    wire
}

#[test]
fn depth_64_parses_and_65_is_an_error() {
    assert!(matches!(one(&nested(64)), Value::Array(_)));
    assert_eq!(err(&nested(65)), RespError::TooDeep { max: 64 });
    // Caught as the header arrives, before the rest is there.
    assert_eq!(err(&b"*1\r\n".repeat(65)), RespError::TooDeep { max: 64 });
    assert_eq!(err(&b"%1\r\n".repeat(65)), RespError::TooDeep { max: 64 });
    let small = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    assert!(parse(&nested(2), &small).unwrap().is_some());
    assert_eq!(
        parse(&nested(3), &small),
        Err(RespError::TooDeep { max: 2 })
    );
}

#[test]
fn a_huge_declared_length_is_an_error_without_allocating() {
    // Errors at once, on the header alone: nothing waits for the bytes.
    assert_eq!(
        err(b"$536870913\r\n"),
        RespError::BulkTooLong {
            len: 536_870_913,
            max: 512 << 20
        }
    );
    assert!(matches!(
        err(b"$9223372036854775807\r\n"),
        RespError::BulkTooLong { .. }
    ));
    assert!(matches!(
        err(b"!99999999999\r\n"),
        RespError::BulkTooLong { .. }
    ));
    assert_eq!(
        err(b"*1048577\r\n"),
        RespError::TooManyElements {
            len: 1_048_577,
            max: 1 << 20
        }
    );
    assert!(matches!(
        err(b"%9223372036854775807\r\n"),
        RespError::TooManyElements { .. }
    ));
    assert!(matches!(
        err(b"|4611686018427387904\r\n"),
        RespError::TooManyElements { .. }
    ));
    // At the limit, it just waits for the bytes.
    assert_eq!(parse(b"$536870912\r\nabc", &Limits::default()), Ok(None));
    assert_eq!(parse(b"*1048576\r\n:1\r\n", &Limits::default()), Ok(None));
}

#[test]
fn a_line_without_end_is_bounded() {
    let mut wire = b"+".to_vec();
    wire.extend(std::iter::repeat(b'a').take(64 << 10));
    assert_eq!(parse(&wire, &Limits::default()), Ok(None));
    wire.push(b'a');
    assert_eq!(err(&wire), RespError::LineTooLong { max: 64 << 10 });
}

#[test]
fn garbage_type_byte_is_an_error() {
    for b in [b'x', b'\0', b' ', b'\r', b'?', 0xff] {
        assert_eq!(err(&[b, b'1', b'\r', b'\n']), RespError::BadType(b));
    }
    assert_eq!(err(b"*1\r\nhello\r\n"), RespError::BadType(b'h'));
}

#[test]
fn bad_integers_are_errors() {
    for wire in [
        &b":\r\n"[..],
        b":-\r\n",
        b":abc\r\n",
        b":1a\r\n",
        b":+1\r\n",
        b": 1\r\n",
        b":1 \r\n",
        b":--1\r\n",
        b":1.5\r\n",
        b":9223372036854775808\r\n",
        b":-9223372036854775809\r\n",
        b":99999999999999999999999\r\n",
        b"$x\r\n",
        b"$\r\n",
        b"*1x\r\n",
    ] {
        assert_eq!(
            err(wire),
            RespError::BadInteger,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn negative_lengths_other_than_null_are_errors() {
    for wire in [
        &b"$-2\r\n"[..],
        b"*-5\r\n",
        b"$-0\r\n",
        b"!-1\r\n",
        b"=-1\r\n",
        b"%-1\r\n",
        b"~-1\r\n",
        b">-1\r\n",
        b"|-1\r\n",
    ] {
        assert_eq!(
            err(wire),
            RespError::NegativeLength,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn malformed_scalars_are_errors() {
    assert_eq!(err(b"+OK\rX"), RespError::BadLineEnd);
    assert_eq!(err(b"+O\nK\r\n"), RespError::BadLineEnd);
    assert_eq!(err(b"$3\r\nfooXY"), RespError::BadBlobEnd);
    assert_eq!(err(b"$3\r\nfoo\n\r"), RespError::BadBlobEnd);
    assert_eq!(err(b"#x\r\n"), RespError::BadBoolean);
    assert_eq!(err(b"#\r\n"), RespError::BadBoolean);
    assert_eq!(err(b"#true\r\n"), RespError::BadBoolean);
    assert_eq!(err(b"_x\r\n"), RespError::BadNull);
    assert_eq!(err(b",\r\n"), RespError::BadDouble);
    assert_eq!(err(b",abc\r\n"), RespError::BadDouble);
    assert_eq!(err(b",1.2.3\r\n"), RespError::BadDouble);
    assert_eq!(err(b",infinity\r\n"), RespError::BadDouble);
    assert_eq!(err(b"(\r\n"), RespError::BadBigNumber);
    assert_eq!(err(b"(12a\r\n"), RespError::BadBigNumber);
    assert_eq!(err(b"=3\r\ntxt\r\n"), RespError::BadVerbatim);
    assert_eq!(err(b"=5\r\ntxt-x\r\n"), RespError::BadVerbatim);
}

#[test]
fn an_error_inside_an_aggregate_is_an_error() {
    assert_eq!(err(b"*2\r\n:1\r\n:x\r\n"), RespError::BadInteger);
    assert_eq!(err(b"%1\r\n+k\r\n?\r\n"), RespError::BadType(b'?'));
}

#[test]
fn errors_display() {
    assert_eq!(
        RespError::TooDeep { max: 64 }.to_string(),
        "RESP: nesting deeper than 64"
    );
    assert_eq!(
        RespError::BadType(b'x').to_string(),
        "RESP: unknown type byte 0x78"
    );
}

// ---- properties (with the `proptest` feature; scripts/test.sh turns it on) --

#[cfg(feature = "proptest")]
fn arb_value() -> impl Strategy<Value = Value> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from);
    let line = "[a-zA-Z0-9 :_-]{0,10}";
    let leaf = prop_oneof![
        line.prop_map(Value::SimpleString),
        line.prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        bytes.clone().prop_map(Value::BulkString),
        Just(Value::Null),
        // NaN is not equal to itself; its round trip is tested above.
        any::<f64>()
            .prop_filter("not nan", |d| !d.is_nan())
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        "-?[0-9]{1,40}".prop_map(Value::BigNumber),
        bytes.clone().prop_map(Value::BulkError),
        ("[a-z]{3}", bytes).prop_map(|(format, text)| Value::VerbatimString { format, text }),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let items = proptest::collection::vec(inner.clone(), 0..4);
        let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
        prop_oneof![
            items.clone().prop_map(Value::Array),
            items.clone().prop_map(Value::Set),
            items.prop_map(Value::Push),
            pairs.clone().prop_map(Value::Map),
            (pairs, inner).prop_map(|(attrs, value)| Value::Attribute {
                attrs,
                value: Box::new(value)
            }),
        ]
    })
}

#[cfg(feature = "proptest")]
proptest! {
    #[test]
    fn prop_encoded_values_round_trip_at_every_split(v in arb_value(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut wire = Vec::new();
        encode_value(&v, &mut wire);
        let n = wire.len();
        for cut in 0..n {
            prop_assert_eq!(parse(&wire[..cut], &Limits::default()), Ok(None));
        }
        wire.extend_from_slice(&tail);
        prop_assert_eq!(parse(&wire, &Limits::default()), Ok(Some((v, n))));
    }

    #[test]
    fn prop_never_panics_on_arbitrary_bytes(wire in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some((_, used))) = parse(&wire, &Limits::default()) {
            prop_assert!(used > 0 && used <= wire.len());
        }
    }

    #[test]
    fn prop_never_panics_on_resp_shaped_bytes(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(&b"*"[..]), Just(&b"%"[..]), Just(&b"|"[..]), Just(&b"$"[..]),
                Just(&b"="[..]), Just(&b"!"[..]), Just(&b":"[..]), Just(&b","[..]),
                Just(&b"\r\n"[..]), Just(&b"-1"[..]), Just(&b"1"[..]), Just(&b"3"[..]),
                Just(&b"txt:"[..]), Just(&b"_"[..]), Just(&b"#t"[..]),
            ],
            0..40,
        ),
        depth in 1usize..4,
    ) {
        let wire = parts.concat();
        let limits = Limits { max_depth: depth, max_elements: 3, max_bulk_len: 5, max_line_len: 8 };
        let _ = parse(&wire, &limits);
        let _ = parse(&wire, &Limits::default());
    }
}

/// Feeds `wire` to a [`Parser`] in pieces of `step` bytes, the way a
/// connection does: unused bytes are kept and fed again with the next piece.
#[cfg(feature = "proptest")]
fn feed_in_pieces(wire: &[u8], step: usize) -> Result<Option<(Value, usize)>, RespError> {
    let mut parser = Parser::new(Limits::default());
    let mut kept: Vec<u8> = Vec::new();
    let mut offered = 0;
    let mut used_total = 0;
    while offered < wire.len() {
        let end = (offered + step).min(wire.len());
        kept.extend_from_slice(&wire[offered..end]);
        offered = end;
        let (value, used) = parser.feed(&kept)?;
        used_total += used;
        kept.drain(..used);
        if let Some(v) = value {
            return Ok(Some((v, used_total)));
        }
    }
    Ok(None)
}

#[test]
fn a_parser_keeps_aggregates_between_calls() {
    let mut parser = Parser::new(Limits::default());
    assert_eq!(parser.feed(b"*3\r\n:1\r\n").unwrap(), (None, 8));
    assert!(!parser.is_idle());
    assert_eq!(parser.feed(b"%1\r\n+k").unwrap(), (None, 4));
    assert_eq!(parser.feed(b"+k\r\n:2\r\n").unwrap(), (None, 8));
    let (v, used) = parser.feed(b"_\r\n+next\r\n").unwrap();
    assert_eq!(used, 3);
    assert!(parser.is_idle());
    assert_eq!(
        v,
        Some(Value::Array(vec![
            Value::Integer(1),
            Value::Map(vec![(simple("k"), Value::Integer(2))]),
            Value::Null,
        ]))
    );
}

#[test]
fn a_parser_counts_depth_across_calls() {
    let limits = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    let mut parser = Parser::new(limits);
    assert_eq!(parser.feed(b"*1\r\n*1\r\n").unwrap(), (None, 8));
    assert_eq!(parser.feed(b"*1\r\n"), Err(RespError::TooDeep { max: 2 }));
}

#[cfg(feature = "proptest")]
proptest! {
    #[test]
    fn prop_a_parser_fed_in_pieces_gives_the_whole_value(
        v in arb_value(),
        step in 1usize..9,
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut wire = Vec::new();
        encode_value(&v, &mut wire);
        let n = wire.len();
        wire.extend_from_slice(&tail);
        let whole = parse(&wire, &Limits::default());
        prop_assert_eq!(&whole, &Ok(Some((v, n))));
        // Pieces never run past the value, so the tail is never offered.
        prop_assert_eq!(feed_in_pieces(&wire[..n], step), whole);
    }
}
