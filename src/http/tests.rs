//! Tests across the parsers: the malformed/smuggling table, the table of edge
//! cases that must parse, and property tests that any split of a pipelined
//! stream parses into the same messages.

use bytes::Bytes;
use proptest::prelude::*;

use super::{Framing, Request, Response};
use crate::protocol::{Message, Progress, ProtocolError};

mod table {
    include!("../../tests/support/malformed.rs");
}

/// What a test compares of a parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    method: String,
    target: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn summarize(r: &Request) -> Req {
    Req {
        method: r.method().to_string(),
        target: r.target().to_string(),
        fields: r
            .headers()
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
            .collect(),
        body: r.body().to_vec(),
    }
}

/// Feeds `chunks` in order to a sequence of request parsers (a new one after
/// each complete request). Returns the complete requests and, if one failed,
/// its error. After an error the rest of the stream is fed to the failed
/// parser, which must keep failing.
fn feed_requests(chunks: &[&[u8]]) -> (Vec<Req>, Option<ProtocolError>) {
    feed_requests_reusing(chunks, false)
}

/// [`feed_requests`], with the one parser reused (as a server does) after
/// each complete request instead of a new one when `reuse` is set.
fn feed_requests_reusing(chunks: &[&[u8]], reuse: bool) -> (Vec<Req>, Option<ProtocolError>) {
    let mut done = Vec::new();
    let mut cur = Request::parser();
    let mut failed: Option<ProtocolError> = None;
    for chunk in chunks {
        let mut data: &[u8] = chunk;
        if let Some(e) = &failed {
            assert_eq!(
                cur.append(data).as_ref(),
                Err(e),
                "a failed parser must stay failed"
            );
            continue;
        }
        loop {
            match cur.append(data) {
                Ok(Progress::Complete(n)) => {
                    assert!(n <= data.len());
                    done.push(summarize(&cur));
                    if reuse {
                        cur.reuse();
                    } else {
                        cur = Request::parser();
                    }
                    data = &data[n..];
                    if data.is_empty() {
                        break;
                    }
                }
                Ok(Progress::NeedMore(n)) => {
                    assert_eq!(n, data.len(), "NeedMore must use all offered bytes");
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    (done, failed)
}

fn split_at_points<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|&p| p.min(data.len())).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(&data[last..p]);
        last = p;
    }
    out.push(&data[last..]);
    out
}

#[test]
fn malformed_table_has_enough_cases_with_unique_names() {
    assert!(table::CASES.len() >= 60, "{}", table::CASES.len());
    let mut names: Vec<&str> = table::CASES.iter().map(|c| c.0).collect();
    names.extend(table::VALID.iter().map(|c| c.0));
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "duplicate case names");
    for (name, raw, _) in table::CASES {
        assert!(
            raw.ends_with(table::SMUGGLED),
            "{name} must end with the smuggled request"
        );
    }
}

#[test]
fn malformed_requests_fail_with_their_status_however_split() {
    let mut failures = Vec::new();
    for &(name, raw, status) in table::CASES {
        // Whole, byte by byte, and at a few split points.
        let bytewise: Vec<&[u8]> = raw.chunks(1).collect();
        let splits = [
            vec![raw],
            split_at_points(raw, &[raw.len() / 3, raw.len() / 2]),
            split_at_points(raw, &[raw.len() - table::SMUGGLED.len()]),
            bytewise,
        ];
        for (i, chunks) in splits.iter().enumerate() {
            let (done, err) = feed_requests(chunks);
            let got = err.as_ref().map(|e| e.code);
            if !done.is_empty() || got != Some(status) {
                failures.push(format!(
                    "{name} (split #{i}): expected {status}, got {got:?} after {} complete request(s) [{}]",
                    done.len(),
                    err.map(|e| e.reason.into_owned()).unwrap_or_default(),
                ));
            }
        }
        // The failed parser never completes, whatever follows.
        let mut r = Request::parser();
        assert!(r.append(raw).is_err(), "{name}");
        for tail in [table::SMUGGLED, b"\r\n\r\n", b""] {
            assert!(r.append(tail).is_err(), "{name}: a later append succeeded");
        }
        assert!(!r.is_complete());
        assert_eq!(r.interim(), None);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A server reuses one parser per thread: one that has just parsed a request
/// (of each valid edge case, chunked bodies and trailers included) must then
/// fail every malformed case exactly as a new parser does.
#[test]
fn a_reused_parser_fails_malformed_requests_like_a_new_one() {
    for &(valid, first, _) in table::VALID {
        for &(name, raw, status) in table::CASES {
            let mut r = Request::parser();
            assert!(
                matches!(r.append(first), Ok(Progress::Complete(_))),
                "{valid}"
            );
            r.reuse();
            let got = r.append(raw).map_err(|e| e.code);
            assert_eq!(got, Err(status), "{name} after {valid}");
        }
    }
}

#[test]
fn valid_edge_cases_parse_however_split() {
    for &(name, raw, body) in table::VALID {
        let mut results = Vec::new();
        for chunks in [
            vec![raw],
            raw.chunks(1).collect::<Vec<_>>(),
            split_at_points(raw, &[raw.len() / 2]),
        ] {
            let (done, err) = feed_requests(&chunks);
            assert!(err.is_none(), "{name}: {err:?}");
            assert_eq!(done.len(), 1, "{name}");
            assert_eq!(done[0].body, body, "{name}");
            results.push(done[0].clone());
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{name}");
        // Followed by a pipelined request, it still ends exactly where it should.
        let mut both = raw.to_vec();
        both.extend_from_slice(table::SMUGGLED);
        let (done, err) = feed_requests(&[&both]);
        assert!(err.is_none(), "{name}");
        assert_eq!(done.len(), 2, "{name}");
        assert_eq!(done[1].target, "/smuggled", "{name}");
    }
}

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
        let bare_lf = super::head::check_line_endings(&head).is_err();
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
        let mut h = super::Headers::new();
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
            if !super::headers::is_framing_field(name.as_bytes()) {
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
