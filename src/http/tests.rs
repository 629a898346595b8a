//! Tests across the parsers: the malformed/smuggling table and the table of
//! edge cases that must parse. The property tests (any split of a pipelined
//! stream parses into the same messages) are in `props`, with the `proptest`
//! feature: `scripts/test.sh` turns it on.

use super::Request;
use crate::protocol::{Message, Progress, ProtocolError};

#[cfg(feature = "proptest")]
mod props;

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
