//! The server-wide request rate limit (`max_rps`) against real clients on
//! 127.0.0.1: the rate admitted, `429` with `Retry-After` for the rest on
//! connections that stay open, each refusal framed for its request (HEAD,
//! HTTP/1.0, pipelined), the live count, and a protocol with no refusal.

#[path = "../examples/common/echo_proto.rs"]
mod echo_proto;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use support::raw_http::{self, End, Reply};
use support::*;
use taskweave::http::{Server, ServerBuilder, ServerHandle, ServerTask};
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::{Series, Settings};

/// `rate_limit_inline.rs` includes this file to run it all inline, where a
/// refused request's task is kept for the next request.
fn settings() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if module_path!().starts_with("rate_limit_inline") {
            Settings {
                handler_threads: 0,
                ..Settings::default()
            }
            .apply()
            .expect("settings apply before any server starts");
        }
    });
}

/// A server answering `ok` from `builder`, counting the requests `process`
/// saw.
fn ok_server(builder: ServerBuilder, seen: Arc<AtomicUsize>) -> ServerHandle {
    settings();
    builder
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                seen.fetch_add(1, Ordering::Relaxed);
                task.response().set_body("ok");
            },
        )
        .expect("serve")
}

/// What came back for a batch of requests.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    limited: usize,
}

/// Checks one reply of a limited server and counts it: a whole 200, or a
/// whole 429 with `Retry-After: 1` that leaves the connection open.
fn tally(t: &mut Tally, r: &Reply) {
    assert_eq!(r.end, End::Complete, "a reply did not arrive whole: {r:?}");
    match r.status {
        Some(200) => t.ok += 1,
        Some(429) => {
            t.limited += 1;
            let head = r.head.as_bytes();
            assert_eq!(raw_http::header(head, "retry-after").as_deref(), Some("1"));
            assert!(
                raw_http::header(head, "connection").is_none(),
                "a 429 closed the connection: {}",
                r.head
            );
        }
        other => panic!("unexpected status {other:?}: {r:?}"),
    }
}

/// `clients` keep-alive connections each send `each` requests, one every
/// `every` (staggered across clients; back to back when zero), or until
/// `until` passes. Returns the tally and the time from the first request to
/// the last reply.
fn load(
    addr: SocketAddr,
    clients: usize,
    each: usize,
    every: Duration,
    until: Duration,
) -> (Tally, Duration, usize) {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let mut t = Tally::default();
                let stagger = every / clients as u32 * c as u32;
                for i in 0..each {
                    let due = start + stagger + every * i as u32;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if start.elapsed() >= until {
                        break;
                    }
                    tally(&mut t, &raw_http::get(&mut s, "/", Duration::from_secs(5)));
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let t = thread.join().expect("a client failed");
        total.ok += t.ok;
        total.limited += t.limited;
    }
    let n = total.ok + total.limited;
    (total, start.elapsed(), n)
}

/// What a limit of `rps` admits over `elapsed` from a quiet start: its burst
/// (a tenth of a second's worth) and the rate.
fn expected(rps: u32, elapsed: Duration) -> f64 {
    (f64::from(rps) / 10.0).ceil().max(1.0) + f64::from(rps) * elapsed.as_secs_f64()
}

/// The case: 200 requests over about a second, from 8 keep-alive
/// connections, against `max_rps(50)`: about the burst and 50 a second are
/// served, every other request gets a whole 429 with `Retry-After: 1` on a
/// connection that stays open, `process` never sees them, the count is
/// live on the builder's counter and the handle, and the access log counts
/// them as requests with a 4xx status.
#[test]
fn requests_over_max_rps_get_429_with_retry_after_on_open_connections() {
    let _serial = exclusive();
    let log = MemoryLog::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let builder = Server::builder().max_rps(50).access_log(log.clone());
    let counter = builder.rate_limited();
    let server = ok_server(builder, seen.clone());
    let (t, elapsed, n) = load(
        server.local_addr(),
        8,
        25,
        Duration::from_millis(40),
        Duration::from_secs(5),
    );
    let want = expected(50, elapsed);
    eprintln!(
        "max_rps(50): {} of {n} served, {} refused in {elapsed:?} (expected about {want:.0} served)",
        t.ok, t.limited
    );
    assert_eq!(n, 200);
    assert!(
        (t.ok as f64) >= want * 0.85 && (t.ok as f64) <= want * 1.1 + 2.0,
        "{} served, expected about {want:.0}",
        t.ok
    );
    assert_eq!(seen.load(Ordering::Relaxed), t.ok);
    assert_eq!(counter.total(), t.limited as u64);
    assert_eq!(server.requests_rate_limited(), t.limited as u64);
    // Each client's one connection carried all its requests; once they are
    // closed, the records say so.
    let recs = records(&log, 8);
    assert_eq!(recs.len(), 8);
    assert!(reasons(&recs).iter().all(|r| *r == CloseReason::PeerClosed));
    let requests: u32 = recs.iter().map(|r| r.requests()).sum();
    let status_4xx: u32 = recs.iter().filter_map(|r| r.status_4xx()).sum();
    assert_eq!((requests, status_4xx as usize), (200, t.limited));
}

/// A flood: 4 connections send back to back for a second against
/// `max_rps(100)`. About the burst and 100 are served, however many
/// thousands are refused, and nothing hangs.
#[test]
fn a_flood_is_held_to_the_rate() {
    let _serial = exclusive();
    let builder = Server::builder().max_rps(100);
    let counter = builder.rate_limited();
    let server = ok_server(builder, Arc::new(AtomicUsize::new(0)));
    let (t, elapsed, n) = load(
        server.local_addr(),
        4,
        usize::MAX,
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let want = expected(100, elapsed);
    eprintln!(
        "max_rps(100) flood: {} of {n} served, {} refused in {elapsed:?} (expected about {want:.0})",
        t.ok, t.limited
    );
    assert!(n > 1000, "only {n} requests in a second");
    assert!(
        (t.ok as f64) >= want * 0.85 && (t.ok as f64) <= want * 1.1 + 4.0,
        "{} served, expected about {want:.0}",
        t.ok
    );
    assert_eq!(counter.total(), t.limited as u64);
}

/// Without `max_rps` nothing is refused, however fast the requests come.
#[test]
fn without_max_rps_nothing_is_refused() {
    let _serial = exclusive();
    let builder = Server::builder();
    let counter = builder.rate_limited();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = ok_server(builder, seen.clone());
    let (t, _, n) = load(
        server.local_addr(),
        4,
        50,
        Duration::ZERO,
        Duration::from_secs(10),
    );
    assert_eq!((t.ok, t.limited, n), (200, 0, 200));
    assert_eq!(seen.load(Ordering::Relaxed), 200);
    assert_eq!(counter.total(), 0);
    assert_eq!(server.requests_rate_limited(), 0);
}

/// Reads one reply head (to the blank line), byte by byte, so that nothing
/// after it is consumed.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "reading a head: {other:?} after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Each refusal is framed for its request: pipelined requests get their
/// 429s in order on the one connection, HEAD gets the head alone (and the
/// connection stays in step), an HTTP/1.0 request without keep-alive gets
/// its 429 and the close. `max_rps(1)` admits the first request only (the
/// next token is a second away).
#[test]
fn each_refusal_is_framed_for_its_request() {
    let _serial = exclusive();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = ok_server(Server::builder().max_rps(1), seen.clone());
    let addr = server.local_addr();
    let mut s = connect(addr);
    let first = raw_http::get(&mut s, "/", Duration::from_secs(5));
    assert!(first.is(200), "{first:?}");

    // Three pipelined in one write: three 429s, in order, whole.
    let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(get.repeat(3).as_bytes()).unwrap();
    for _ in 0..3 {
        let head = read_head(&mut s);
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        let field = |name| raw_http::header(head.as_bytes(), name);
        assert_eq!(field("retry-after").as_deref(), Some("1"));
        assert!(field("content-type").is_some_and(|v| v.starts_with("text/plain")));
        assert!(field("connection").is_none(), "{head}");
        let mut body = vec![
            0;
            field("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        ];
        s.read_exact(&mut body).unwrap();
        assert_eq!(body, b"Too Many Requests");
    }

    // HEAD: the head with its Content-Length, no body; the next reply on
    // the connection starts right after it.
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    assert!(head.contains("Retry-After: 1\r\n"), "{head}");
    let next = raw_http::get(&mut s, "/", Duration::from_secs(5));
    assert!(next.is(429), "after HEAD: {next:?}");

    // HTTP/1.0 without keep-alive: the 429, then the close.
    let mut old = connect(addr);
    old.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    old.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 429 "), "{all}");
    assert!(all.contains("Retry-After: 1\r\n"), "{all}");
    assert!(all.ends_with("Too Many Requests"), "{all}");

    assert_eq!(seen.load(Ordering::Relaxed), 1);
    assert_eq!(server.requests_rate_limited(), 6);
}

/// Any protocol gets the limit: the echo protocol has no refusal to send,
/// so a request over the rate closes its connection (`limit_exceeded`), and
/// is counted.
#[test]
fn a_protocol_without_a_refusal_closes_the_connection() {
    use echo_proto::Echo;
    let _serial = exclusive();
    settings();
    let log = MemoryLog::new();
    let builder = taskweave::task::Server::builder()
        .max_rps(1)
        .access_log(log.clone());
    let counter = builder.rate_limited();
    let server = builder
        .serve("127.0.0.1:0", Echo, |task, _| {
            let p = task.request().payload().clone();
            task.response().set_payload(p);
        })
        .expect("serve");
    let mut s = connect(server.local_addr());
    assert_eq!(echo(&mut s, b"first"), b"first");
    s.write_all(&frame(b"second")).unwrap();
    assert!(closed_by_peer(&mut s, Duration::from_secs(5)));
    let recs = records(&log, 1);
    assert_eq!(reasons(&recs), [CloseReason::LimitExceeded]);
    assert_eq!(counter.total(), 1);
}
