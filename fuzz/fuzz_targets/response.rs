//! Feeds arbitrary bytes, in arbitrary splits, to the HTTP/1.1 response parser
//! for a request method chosen by the input, then signals end of stream.
//!
//! Checks, besides "never panics": whole and split feeding yield the same
//! responses (including a close-delimited one completed by end of stream);
//! `NeedMore` uses every offered byte; a failed parser keeps failing.

#![no_main]

#[path = "common.rs"]
mod common;

use common::{chunks, feed, fields_of, limits};
use libfuzzer_sys::fuzz_target;
use taskweave::http::Response;
use taskweave::protocol::Message;

#[derive(Debug, PartialEq, Eq)]
struct Summary {
    status: u16,
    reason: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    keep_alive: bool,
}

const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "CONNECT"];

fn summarize(r: &Response) -> Summary {
    Summary {
        status: r.status(),
        reason: r.reason().to_string(),
        fields: fields_of(r.headers()),
        body: r.body().to_vec(),
        keep_alive: r.keep_alive(),
    }
}

/// Parses a stream of responses; the i-th answers `METHODS[(seed + i) % 4]`.
fn run(pieces: &[&[u8]], seed: u8) -> Vec<Summary> {
    let limits = limits(seed);
    let parser = |i: usize| {
        let method = METHODS[(usize::from(seed) + i) % METHODS.len()];
        Response::parser_with(method, limits)
    };
    let complete = |cur: &mut Response| {
        assert!(cur.is_complete());
        assert!(cur.sizes().is_some());
        summarize(cur)
    };
    let (mut done, mut cur, failed) = feed(pieces, parser, complete, |_| {}, |code| code == 502);
    if !failed && cur.end_of_stream() {
        assert!(cur.is_complete());
        done.push(summarize(&cur));
    }
    done
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = run(&[data], seed);
    let split = run(&chunks(data, seed), seed);
    assert_eq!(whole, split, "split feeding changed the parsed responses");
});
