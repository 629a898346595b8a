//! Feeds arbitrary bytes, in arbitrary splits, to the HTTP/1.1 request parser
//! (head parsing, framing decisions and the chunked decoder).
//!
//! Checks, besides "never panics": feeding the bytes whole and split yields the
//! same complete requests; `NeedMore` uses every offered byte; a failed parser
//! keeps failing; every complete request encodes into a request that parses
//! back to the same method, target and body.

#![no_main]

#[path = "common.rs"]
mod common;

use common::{chunks, feed, fields_of, limits};
use libfuzzer_sys::fuzz_target;
use taskweave::http::{Limits, Request};
use taskweave::protocol::{Message, Progress};

/// What must agree between two ways of feeding the same bytes.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    method: String,
    target: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    keep_alive: bool,
}

fn summarize(r: &Request) -> Summary {
    Summary {
        method: r.method().to_string(),
        target: r.target().to_string(),
        fields: fields_of(r.headers()),
        body: r.body().to_vec(),
        keep_alive: r.keep_alive(),
    }
}

fn run(pieces: &[&[u8]], limits: Limits) -> Vec<Summary> {
    let complete = |cur: &mut Request| {
        assert!(cur.is_complete());
        assert!(cur.sizes().is_some());
        assert_eq!(cur.interim(), None);
        let summary = summarize(cur);
        round_trip(cur);
        summary
    };
    let need_more = |cur: &mut Request| {
        let _ = cur.interim();
    };
    let error_ok = |code| matches!(code, 400 | 413 | 414 | 431 | 501 | 505);
    feed(
        pieces,
        |_| Request::parser_with(limits),
        complete,
        need_more,
        error_ok,
    )
    .0
}

/// Re-encodes a parsed request and parses it again.
fn round_trip(req: &mut Request) {
    let mut out = Vec::new();
    req.encode(&mut out);
    let wire: Vec<u8> = out.concat();
    // Encoding may add Host and Content-Length: parse with room to spare.
    let roomy = Limits::new()
        .with_max_body(u64::MAX)
        .with_max_head(usize::MAX / 2)
        .with_max_headers(1_000)
        .with_max_target(usize::MAX / 2);
    let mut again = Request::parser_with(roomy);
    match again.append(&wire) {
        Ok(Progress::Complete(n)) => {
            assert_eq!(n, wire.len());
            assert_eq!(again.method(), req.method());
            assert_eq!(again.target(), req.target());
            assert_eq!(again.body(), req.body());
        }
        other => panic!("re-encoded request did not parse: {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let limits = limits(seed);
    let whole = run(&[data], limits);
    let split = run(&chunks(data, seed), limits);
    assert_eq!(whole, split, "split feeding changed the parsed requests");
});
