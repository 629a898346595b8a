//! Costs of the HTTP/1.1 message layer: parsing typical requests and encoding
//! a small response, each from a fresh message as the server does per request.
//!
//! A crate of its own, so that criterion is not a dev-dependency of taskweave
//! (see bench/README.md). From the repository root:
//!
//! ```text
//! cargo bench --manifest-path bench/http_parse/Cargo.toml
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taskweave::bytes::Bytes;
use taskweave::http::{Request, Response};
use taskweave::protocol::{Message, Progress};

/// A typical browser navigation request (about 300 bytes).
const BROWSER_GET: &[u8] = b"GET /articles/2024/rust-networking?ref=home HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
\r\n";

const TINY_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

const CHUNKED_POST: &[u8] = b"POST /upload HTTP/1.1\r\n\
Host: api.example.com\r\n\
Content-Type: application/json\r\n\
Transfer-Encoding: chunked\r\n\
\r\n\
1a\r\n{\"name\":\"taskweave\",\"id\":1\r\n\
10\r\n,\"tags\":[\"a\",\"b\"\r\n\
2\r\n]}\r\n\
0\r\n\
\r\n";

fn parse_one(input: &[u8]) -> Request {
    let mut req = Request::parser();
    match req.append(input) {
        Ok(Progress::Complete(n)) if n == input.len() => req,
        other => panic!("benchmark input did not parse: {other:?}"),
    }
}

fn parse_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, input) in [
        ("browser_get", BROWSER_GET),
        ("tiny_get", TINY_GET),
        ("chunked_post", CHUNKED_POST),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        // Parse, look at the result and drop it, as a server does; returning
        // the whole `Request` to `black_box` would add a copy of it.
        group.bench_function(name, |b| {
            b.iter(|| {
                let req = parse_one(black_box(input));
                black_box((req.headers().len(), req.body().len()))
            })
        });
    }
    group.finish();
}

fn hello_world(req: &Request) -> Vec<Bytes> {
    let mut resp = Response::for_request(req);
    resp.set_header("Content-Type", "text/plain");
    resp.set_body(Bytes::from_static(b"Hello, world!"));
    let mut out = Vec::with_capacity(2);
    resp.encode(&mut out);
    out
}

fn encode_benches(c: &mut Criterion) {
    let req = parse_one(TINY_GET);
    c.bench_function("encode/hello_world", |b| {
        b.iter(|| hello_world(black_box(&req)))
    });
    c.bench_function("exchange/tiny_get_hello_world", |b| {
        b.iter(|| hello_world(&parse_one(black_box(TINY_GET))))
    });
}

criterion_group!(benches, parse_benches, encode_benches);
criterion_main!(benches);
