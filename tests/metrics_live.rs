//! Issue 13: `ServerMetrics` counts requests as they end, not when their
//! connection closes. Real HTTP over 127.0.0.1: 50 requests on one keep-alive
//! connection show on `/metrics` (and in the getters) while the connection is
//! still open; closing it counts nothing twice; an open stream shows in the
//! `streams_open` gauge until it ends; the application's own counter renders
//! on the same page.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use support::wait_until;
use taskweave::comm::Stream;
use taskweave::http::{Server, ServerTask};
use taskweave::metrics::{Counter, ServerMetrics, StatusClass};
use taskweave::{Series, Settings};

fn settings() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Settings {
            poller_threads: 2,
            handler_threads: 2,
            ..Settings::default()
        }
        .apply()
        .expect("settings");
    });
}

/// A stream the test ends when it chooses.
type Held = Arc<Mutex<Option<Stream>>>;

/// A server whose access log is `metrics` alone: `/` says hello and counts
/// into the application's `hits_total`, `/metrics` renders the page,
/// `/stream` opens a stream the test holds, anything else is 404.
fn start(metrics: Arc<ServerMetrics>, held: Held) -> SocketAddr {
    settings();
    let hits: Counter = metrics.counter("hits_total", "Hellos said.").unwrap();
    let page = metrics.clone();
    let handle = Server::builder()
        .access_log(metrics)
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| match task.request().path() {
                "/" => {
                    hits.inc();
                    task.response().set_body("Hello, World!");
                }
                "/metrics" => {
                    let mut out = String::new();
                    page.render_prometheus("taskweave", &mut out);
                    task.response()
                        .set_header("Content-Type", "text/plain; version=0.0.4")
                        .set_body(out);
                }
                "/stream" => {
                    if let Ok(stream) = task.stream() {
                        let _ = stream.send("first\n");
                        *held.lock().unwrap() = Some(stream);
                    }
                }
                _ => {
                    task.response().set_status(404).set_body("not found\n");
                }
            },
        )
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// GETs `path` on `s` and returns the status and the body (which must have a
/// `Content-Length`).
fn get(s: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// The value of the sample `series` (name and labels) on a Prometheus page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const WIRED: &str = "the engine did not report this request to ServerMetrics::request \
                     (AccessLog::request is called once per exchange when the engine is wired)";

#[test]
fn keep_alive_requests_count_while_the_connection_is_open() {
    let metrics = Arc::new(ServerMetrics::new());
    let addr = start(metrics.clone(), Held::default());
    let mut c = connect(addr);
    for _ in 0..50 {
        assert_eq!(get(&mut c, "/"), (200, "Hello, World!".to_string()));
    }
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/missing").0, 404);
    }
    // A record is handed over as its response ends: it may trail the last
    // byte the client read by a moment.
    assert!(
        wait_until(Duration::from_secs(5), || metrics.requests() == 53),
        "requests() = {}: {WIRED}",
        metrics.requests()
    );
    assert_eq!(metrics.requests_of(StatusClass::Success), 50);
    assert_eq!(metrics.requests_of(StatusClass::ClientError), 3);
    assert_eq!(metrics.requests_of(StatusClass::Failed), 0);
    assert_eq!(metrics.request_duration().snapshot().count(), 53);
    assert_eq!(metrics.connections_open(), 1);
    assert_eq!(metrics.connections_closed(), 0);

    // The page, from the same connection: the request asking is not over yet.
    let (status, page) = get(&mut c, "/metrics");
    assert_eq!(status, 200);
    let v = |series: &str| sample(&page, series).unwrap_or_else(|| panic!("{series}\n{page}"));
    assert_eq!(v("taskweave_requests_total{class=\"2xx\"}"), 50.0);
    assert_eq!(v("taskweave_requests_total{class=\"4xx\"}"), 3.0);
    assert_eq!(v("taskweave_requests_total{class=\"error\"}"), 0.0);
    assert_eq!(v("taskweave_connections_open"), 1.0);
    assert_eq!(v("taskweave_request_duration_seconds_count"), 53.0);
    assert_eq!(
        v("taskweave_request_duration_seconds_bucket{le=\"+Inf\"}"),
        53.0
    );
    assert_eq!(v("taskweave_request_first_byte_seconds_count"), 53.0);
    assert_eq!(v("taskweave_streams_open"), 0.0);
    assert_eq!(v("taskweave_hits_total"), 50.0);
    // No connection has closed, so nothing counted at close yet.
    assert_eq!(v("taskweave_connection_lifetime_seconds_count"), 0.0);

    // Closing the connection counts it, and its requests not a second time.
    drop(c);
    assert!(wait_until(Duration::from_secs(5), || {
        metrics.connections_closed() == 1
    }));
    // 54 with the page's own request; 108 would be the close counting again.
    assert!(
        wait_until(Duration::from_secs(5), || metrics.requests() == 54),
        "requests() = {}",
        metrics.requests()
    );
    assert_eq!(metrics.requests_of(StatusClass::Success), 51);
    assert_eq!(metrics.connections_open(), 0);
    assert_eq!(metrics.lifetime().snapshot().count(), 1);
}

#[test]
fn an_open_stream_shows_in_the_gauge_until_it_ends() {
    let metrics = Arc::new(ServerMetrics::new());
    let held = Held::default();
    let addr = start(metrics.clone(), held.clone());
    let mut c = connect(addr);
    c.write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the first piece");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        wait_until(Duration::from_secs(5), || metrics.streams_open() == 1),
        "streams_open() = {}: the engine did not call AccessLog::stream_started",
        metrics.streams_open()
    );
    assert_eq!(metrics.streams_started(), 1);
    // Not over: no request counted yet.
    assert_eq!(metrics.requests(), 0);

    // The handler sends the first piece before it stores the stream, so
    // the piece can arrive first.
    assert!(
        wait_until(Duration::from_secs(5), || held.lock().unwrap().is_some()),
        "the handler never stored the stream"
    );
    let stream = held.lock().unwrap().take().expect("the stream");
    assert!(stream.finish());
    drop(stream);
    while !String::from_utf8_lossy(&got).ends_with("0\r\n\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the stream's end");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        wait_until(Duration::from_secs(5), || metrics.streams_open() == 0),
        "streams_open() = {}: {WIRED}",
        metrics.streams_open()
    );
    assert_eq!(metrics.requests_of(StatusClass::Success), 1);
    assert_eq!(metrics.stream_duration().snapshot().count(), 1);
    // A stream's length is not a request latency.
    assert_eq!(metrics.request_duration().snapshot().count(), 0);
    assert_eq!(metrics.first_byte().snapshot().count(), 1);
    assert_eq!(metrics.connections_open(), 1);
}
