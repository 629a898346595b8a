//! Property tests: any split of a pipelined stream of requests or responses
//! parses into the same messages, line ends are checked as by a full scan,
//! built fields encode as their lines. Only with the `proptest` feature.

use bytes::Bytes;
use proptest::prelude::*;

use super::super::{Framing, Request, Response};
use super::{feed_requests, feed_requests_reusing, split_at_points, Req};
use crate::protocol::{Message, Progress, ProtocolError};

// ----- request streams -------------------------------------------------------

#[derive(Debug, Clone)]
enum BodySpec {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>, bool),
}

#[derive(Debug, Clone)]
struct ReqSpec {
    method: &'static str,
    target: String,
    fields: Vec<(String, String)>,
    body: BodySpec,
}

fn body_spec() -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        Just(BodySpec::None),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(BodySpec::Length),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..24), 0..5),
            any::<bool>()
        )
            .prop_map(|(c, t)| BodySpec::Chunked(c, t)),
    ]
}

fn field() -> impl Strategy<Value = (String, String)> {
    (
        "X-[A-Za-z0-9-]{1,10}",
        prop_oneof![Just(String::new()), "[!-~]([ -~]{0,20}[!-~])?"],
    )
}

fn req_spec() -> impl Strategy<Value = ReqSpec> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        "/[A-Za-z0-9._~/%-]{0,24}(\\?[a-z0-9=&]{0,12})?",
        prop::collection::vec(field(), 0..6),
        body_spec(),
    )
        .prop_map(|(method, target, fields, body)| ReqSpec {
            method,
            target,
            fields,
            body,
        })
}

fn write_chunked(out: &mut Vec<u8>, chunks: &[Vec<u8>], extras: bool) {
    for (i, c) in chunks.iter().enumerate() {
        out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
        if extras && i % 2 == 0 {
            out.extend_from_slice(b";ext=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if extras {
        out.extend_from_slice(b"X-Trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The wire form of a request and what parsing it must give.
fn serialize_request(spec: &ReqSpec, out: &mut Vec<u8>) -> Req {
    out.extend_from_slice(
        format!(
            "{} {} HTTP/1.1\r\nHost: example\r\n",
            spec.method, spec.target
        )
        .as_bytes(),
    );
    let mut fields = vec![("host".to_string(), b"example".to_vec())];
    for (n, v) in &spec.fields {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        fields.push((n.to_ascii_lowercase(), v.as_bytes().to_vec()));
    }
    let body = match &spec.body {
        BodySpec::None => Vec::new(),
        BodySpec::Length(b) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
            fields.push(("content-length".into(), b.len().to_string().into_bytes()));
            b.clone()
        }
        BodySpec::Chunked(..) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            fields.push(("transfer-encoding".into(), b"chunked".to_vec()));
            Vec::new()
        }
    };
    out.extend_from_slice(b"\r\n");
    let body = match &spec.body {
        BodySpec::Chunked(chunks, extras) => {
            write_chunked(out, chunks, *extras);
            chunks.concat()
        }
        _ => {
            out.extend_from_slice(&body);
            body
        }
    };
    Req {
        method: spec.method.to_string(),
        target: spec.target.clone(),
        fields,
        body,
    }
}

proptest! {
    #[test]
    fn any_split_of_pipelined_requests_parses_the_same(
        specs in prop::collection::vec(req_spec(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        reuse in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        let expected: Vec<Req> = specs.iter().map(|s| serialize_request(s, &mut wire)).collect();
        let points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        let chunks = split_at_points(&wire, &points);
        let (done, err) = feed_requests_reusing(&chunks, reuse);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(done, expected);
    }

    #[test]
    fn built_requests_parse_back(spec in req_spec(), chunked in any::<bool>()) {
        let mut req = Request::new(spec.method, &spec.target).unwrap();
        req.set_header("Host", "example");
        for (n, v) in &spec.fields {
            req.try_append_header(n, v).unwrap();
        }
        let body = match &spec.body {
            BodySpec::None => Vec::new(),
            BodySpec::Length(b) => b.clone(),
            BodySpec::Chunked(c, _) => c.concat(),
        };
        req.set_body(Bytes::from(body.clone()));
        if chunked {
            req.set_framing(Framing::Chunked);
        }
        let mut out = Vec::new();
        req.encode(&mut out);
        let wire: Vec<u8> = out.concat();
        let (done, err) = feed_requests(&[&wire]);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(done.len(), 1);
        prop_assert_eq!(&done[0].body, &body);
        prop_assert_eq!(&done[0].target, &spec.target);
    }
}

// ----- response streams ------------------------------------------------------

#[derive(Debug, Clone)]
struct RespSpec {
    method: &'static str,
    interim: bool,
    status: u16,
    body: BodySpec,
}

fn resp_spec() -> impl Strategy<Value = RespSpec> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST"]),
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        body_spec(),
    )
        .prop_map(|(method, interim, status, body)| RespSpec {
            method,
            interim,
            status,
            body,
        })
}

/// What a test compares of a parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    status: u16,
    body: Vec<u8>,
}

/// Serializes a response; `last` may make it close-delimited.
fn serialize_response(spec: &RespSpec, close_delimited: bool, out: &mut Vec<u8>) -> Resp {
    if spec.interim {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    out.extend_from_slice(format!("HTTP/1.1 {} Whatever\r\nServer: t\r\n", spec.status).as_bytes());
    let bodiless = spec.method == "HEAD" || matches!(spec.status, 204 | 304);
    let body: Vec<u8> = match &spec.body {
        BodySpec::None => Vec::new(),
        BodySpec::Length(b) => b.clone(),
        BodySpec::Chunked(c, _) => c.concat(),
    };
    if close_delimited && !bodiless {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        return Resp {
            status: spec.status,
            body,
        };
    }
    match &spec.body {
        BodySpec::Chunked(chunks, extras) if !bodiless => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            write_chunked(out, chunks, *extras);
        }
        _ => {
            // HEAD/204/304 may announce a length without sending it.
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            if !bodiless {
                out.extend_from_slice(&body);
            }
        }
    }
    Resp {
        status: spec.status,
        body: if bodiless { Vec::new() } else { body },
    }
}

/// Feeds a response stream; the i-th response is parsed for `methods[i]`.
fn feed_responses(
    methods: &[&str],
    chunks: &[&[u8]],
    eof: bool,
) -> Result<Vec<Resp>, ProtocolError> {
    let mut done = Vec::new();
    let mut i = 0;
    let new = |i: usize| Response::parser_for(methods.get(i).copied().unwrap_or("GET"));
    let mut cur = new(0);
    for chunk in chunks {
        let mut data: &[u8] = chunk;
        loop {
            match cur.append(data)? {
                Progress::Complete(n) => {
                    done.push(Resp {
                        status: cur.status(),
                        body: cur.body().to_vec(),
                    });
                    i += 1;
                    cur = new(i);
                    data = &data[n..];
                    if data.is_empty() {
                        break;
                    }
                }
                Progress::NeedMore(n) => {
                    assert_eq!(n, data.len());
                    break;
                }
            }
        }
    }
    if eof && i < methods.len() && cur.end_of_stream() {
        done.push(Resp {
            status: cur.status(),
            body: cur.body().to_vec(),
        });
    }
    Ok(done)
}

proptest! {
    #[test]
    fn any_split_of_pipelined_responses_parses_the_same(
        specs in prop::collection::vec(resp_spec(), 1..5),
        close_last in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = Vec::new();
        let n = specs.len();
        let expected: Vec<Resp> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| serialize_response(s, close_last && i == n - 1, &mut wire))
            .collect();
        let methods: Vec<&str> = specs.iter().map(|s| s.method).collect();
        let points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        let chunks = split_at_points(&wire, &points);
        let done = feed_responses(&methods, &chunks, true);
        prop_assert_eq!(done, Ok(expected));
    }

    #[test]
    fn encoded_responses_parse_back(
        status in prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        body in prop::collection::vec(any::<u8>(), 0..64),
        framing in prop::sample::select(vec![Framing::Length, Framing::Chunked]),
        head in any::<bool>(),
    ) {
        let method = if head { "HEAD" } else { "GET" };
        let raw = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut req = Request::parser();
        prop_assert!(matches!(req.append(raw.as_bytes()), Ok(Progress::Complete(_))));
        let mut resp = Response::for_request(&req);
        resp.set_status(status).set_framing(framing).set_body(Bytes::from(body.clone()));
        let mut out = Vec::new();
        resp.encode(&mut out);
        let wire = out.concat();
        let done = feed_responses(&[method], &[&wire], false).unwrap();
        let bodiless = head || matches!(status, 204 | 304);
        prop_assert_eq!(done, vec![Resp { status, body: if bodiless { Vec::new() } else { body } }]);
    }
}

/// A request head with every line ending chosen apart: CRLF or a bare LF.
fn head_with_line_endings() -> impl Strategy<Value = Vec<u8>> {
    let ending = || prop::sample::select(vec![&b"\r\n"[..], b"\n"]);
    let value = prop::sample::select(vec!["", "a", "a b", " a ", "\t", "x \t", "  "]);
    let field = (
        prop::sample::select(vec!["A", "Accept", "X-Y"]),
        value,
        ending(),
    );
    (
        prop::sample::select(vec![&b""[..], b"\r\n", b"\n", b"\r\n\n"]),
        prop::sample::select(vec!["GET / HTTP/1.1", "POST /a?b HTTP/1.0"]),
        ending(),
        ending(),
        prop::collection::vec(field, 0..4),
        ending(),
    )
        .prop_map(|(lead, start, start_end, host_end, fields, blank)| {
            let mut head = [lead, start.as_bytes(), start_end, b"Host: h", host_end].concat();
            for (name, value, end) in fields {
                head.extend_from_slice(format!("{name}:{value}").as_bytes());
                head.extend_from_slice(end);
            }
            head.extend_from_slice(blank);
            head
        })
}

proptest! {
    /// The check at the line ends `httparse` found rejects a head exactly when
    /// a scan of every byte finds a bare LF.
    #[test]
    fn bare_lf_is_found_at_the_line_ends_as_by_a_full_scan(head in head_with_line_endings()) {
        let bare_lf = super::super::head::check_line_endings(&head).is_err();
        let mut req = Request::parser();
        match req.append(&head) {
            Ok(Progress::Complete(n)) => {
                prop_assert!(!bare_lf, "accepted a bare LF: {:?}", String::from_utf8_lossy(&head));
                prop_assert_eq!(n, head.len());
            }
            Ok(Progress::NeedMore(_)) => prop_assert!(false, "incomplete"),
            Err(e) => {
                prop_assert!(bare_lf, "{e}: {:?}", String::from_utf8_lossy(&head));
                prop_assert_eq!((e.code, e.to_string().contains("bare LF")), (400, true));
            }
        }
    }
}

/// One edit of a header list.
#[derive(Debug, Clone)]
enum Edit {
    Append(&'static str, String),
    Set(&'static str, String),
    Remove(&'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let name =
        || prop::sample::select(vec!["A", "b", "Content-Length", "Transfer-Encoding", "X-Y"]);
    prop_oneof![
        (name(), "[a-z0-9 ]{0,6}").prop_map(|(n, v)| Edit::Append(n, v)),
        (name(), "[a-z0-9 ]{0,6}").prop_map(|(n, v)| Edit::Set(n, v)),
        name().prop_map(Edit::Remove),
    ]
}

proptest! {
    /// Built fields are kept as the lines they are sent as; whatever the
    /// edits, what is written is each field but the framing ones, in order.
    #[test]
    fn built_fields_encode_as_their_lines(edits in prop::collection::vec(edit(), 0..12)) {
        let mut h = super::super::Headers::new();
        for e in edits {
            let _ = match e {
                Edit::Append(n, v) => h.append(n, v.trim()),
                Edit::Set(n, v) => h.set(n, v.trim()),
                Edit::Remove(n) => {
                    h.remove(n);
                    Ok(())
                }
            };
        }
        let mut expected = Vec::new();
        for (name, value) in h.iter() {
            if !super::super::headers::is_framing_field(name.as_bytes()) {
                expected.extend_from_slice(format!("{name}: ").as_bytes());
                expected.extend_from_slice(value);
                expected.extend_from_slice(b"\r\n");
            }
        }
        let mut out = Vec::new();
        h.write_to(&mut out);
        prop_assert_eq!(h.encoded_len(), out.len());
        prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
    }
}
