//! Issue 4: every close reason produces exactly one record with that reason; the
//! byte counts are what the peer really sent and received; timings are
//! consistent; the JSON Lines sink reaches its file within a second.
//! One poller (so eviction is deterministic), handler threads on.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use support::*;
use taskweave::comm::ClientConfig;
use taskweave::http::{self, Server, ServerBuilder, ServerTask};
use taskweave::metrics::{
    CloseReason, ConnStats, JsonLines, MemoryLog, Record, RequestRecord, Side,
};
use taskweave::{comm::ConnConfig, timer, Series, Settings, WaitGroup};

fn settings() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Settings {
            poller_threads: 1,
            handler_threads: 2,
            ..Settings::default()
        }
        .apply()
        .expect("settings");
    });
}

fn process(task: &mut ServerTask, series: &mut Series) {
    match task.request().path() {
        "/big" => {
            task.response().set_body(vec![b'x'; 8 << 20]);
        }
        "/delay" => {
            let ms: u64 = task
                .request()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            series.push_back(timer(Duration::from_millis(ms), |_, s: &mut Series| {
                if let Some(t) = ServerTask::of_series(s) {
                    t.response().set_body("late");
                }
            }));
        }
        _ => {
            task.response().set_body("Hello, World!");
        }
    }
}

fn start(builder: ServerBuilder) -> (SocketAddr, MemoryLog) {
    settings();
    let log = MemoryLog::new();
    let handle = builder
        .access_log(log.clone())
        .serve("127.0.0.1:0", process)
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    (addr, log)
}

/// Waits for exactly one record, then makes sure no second one follows.
fn only_record(log: &MemoryLog) -> ConnStats {
    let recs = records(log, 1);
    std::thread::sleep(Duration::from_millis(200));
    let recs2 = log.records();
    assert_eq!(recs2.len(), 1, "expected one record: {:?}", reasons(&recs2));
    recs[0].clone()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn peer_closed() {
    let (addr, log) = start(Server::builder());
    let mut s = connect(addr);
    s.write_all(GET).unwrap();
    let got = read_response(&mut s);
    drop(s);
    let r = only_record(&log);
    assert_eq!(r.close_reason(), Some(CloseReason::PeerClosed));
    // Bytes are exactly what went over the wire.
    assert_eq!(r.bytes_in(), GET.len() as u64);
    assert_eq!(r.bytes_out(), got.len() as u64);
    assert_eq!(r.request_header_bytes(), Some(GET.len() as u64));
    assert_eq!(r.request_body_bytes(), Some(0));
    assert_eq!(
        r.response_header_bytes().unwrap() + r.response_body_bytes().unwrap(),
        got.len() as u64
    );
    assert_eq!(r.response_body_bytes(), Some(13));
    assert_eq!(r.requests(), 1);
    assert_eq!(r.side(), Side::Server);
    assert_eq!(r.proto(), "http");
    assert_eq!(r.local(), Some(addr));
}

#[test]
fn keep_alive_timeout() {
    let (addr, log) = start(Server::builder().keep_alive_timeout(Duration::from_millis(150)));
    let mut s = connect(addr);
    s.write_all(GET).unwrap();
    read_response(&mut s);
    assert_eq!(
        only_record(&log).close_reason(),
        Some(CloseReason::KeepAliveTimeout)
    );
}

#[test]
fn receive_timeout() {
    let (addr, log) = start(Server::builder().receive_timeout(Duration::from_millis(150)));
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let r = only_record(&log);
    assert_eq!(r.close_reason(), Some(CloseReason::ReceiveTimeout));
    assert_eq!(r.bytes_in(), 18);
    assert_eq!(r.requests(), 0);
    assert_eq!(
        r.first_byte_time(),
        None,
        "no response: first byte must be null"
    );
}

#[test]
fn send_timeout() {
    let (addr, log) = start(Server::builder().send_timeout(Duration::from_millis(200)));
    let s = connect(addr);
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4096)
        .unwrap();
    (&s).write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = only_record(&log);
    assert_eq!(r.close_reason(), Some(CloseReason::SendTimeout));
    assert!(r.write_pauses() >= 1);
    assert!(r.paused_time() >= Duration::from_millis(150));
    assert!(r.peak_queued_bytes() > 0);
    drop(s);
}

#[test]
fn reset_by_peer() {
    let (addr, log) = start(Server::builder());
    let mut s = connect(addr);
    s.write_all(GET).unwrap();
    read_response(&mut s);
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    assert_eq!(only_record(&log).close_reason(), Some(CloseReason::Reset));
}

#[test]
fn protocol_error_and_its_4xx() {
    let (addr, log) = start(Server::builder());
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello")
        .unwrap();
    assert!(closed_by_peer(&mut s, Duration::from_secs(5)));
    let r = only_record(&log);
    assert_eq!(r.close_reason(), Some(CloseReason::ProtocolError));
    assert_eq!(r.status_4xx(), Some(1));
}

#[test]
fn local_close_on_connection_close() {
    let (addr, log) = start(Server::builder());
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(closed_by_peer(&mut s, Duration::from_secs(5)));
    drop(s);
    assert_eq!(only_record(&log).close_reason(), Some(CloseReason::Local));
}

#[test]
fn evicted_then_limit_exceeded() {
    let (addr, log) = start(Server::builder().max_connections(1));
    let mut a = connect(addr);
    a.write_all(GET).unwrap();
    read_response(&mut a);
    // With handler threads the poller learns the reply is done a moment after
    // the peer has it; only then is `a` idle, and evictable.
    std::thread::sleep(Duration::from_millis(100));
    let mut b = connect(addr); // evicts a
    b.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // b is mid-request: not evictable
    assert!(closed_by_peer(&mut a, Duration::from_secs(5)));
    assert_eq!(reasons(&records(&log, 1)), vec![CloseReason::Evicted]);
    let mut c = connect(addr); // refused
    assert!(closed_by_peer(&mut c, Duration::from_secs(5)));
    let recs = records(&log, 2);
    assert_eq!(
        reasons(&recs),
        vec![CloseReason::Evicted, CloseReason::LimitExceeded]
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(log.len(), 2);
}

#[test]
fn server_shutdown() {
    settings();
    let log = MemoryLog::new();
    let handle = Server::builder()
        .access_log(log.clone())
        .serve("127.0.0.1:0", process)
        .unwrap();
    let mut s = connect(handle.local_addr());
    s.write_all(GET).unwrap();
    read_response(&mut s);
    assert!(handle.shutdown(Duration::from_secs(2)));
    assert_eq!(
        only_record(&log).close_reason(),
        Some(CloseReason::ServerShutdown)
    );
}

#[test]
fn delay_is_reflected_in_first_byte_and_timings_are_consistent() {
    let (addr, log) = start(Server::builder());
    let mut s = connect(addr);
    s.write_all(b"GET /delay?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut s);
    drop(s);
    let r = only_record(&log);
    let first = r.first_byte_time().unwrap();
    assert!(first >= Duration::from_millis(100), "{first:?}");
    let processing = r.processing_time().unwrap();
    assert!(first <= processing && processing <= r.lifetime().unwrap());
    assert_eq!(r.dns_time(), None);
    assert_eq!(r.connect_time(), None);
}

fn client_get(url: &str, config: Arc<ClientConfig>) -> (bool, taskweave::comm::Timings) {
    let out = Arc::new(Mutex::new(None));
    let slot = out.clone();
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let t = http::get(url, move |t, _| {
        assert_eq!(t.result().unwrap().status(), 200);
        *slot.lock().unwrap() = Some((t.reused(), t.timings()));
    })
    .config(config);
    Series::new(t).on_done(move |_| done.done()).start();
    assert!(wg.wait_timeout(Duration::from_secs(10)));
    let r = out.lock().unwrap().take().unwrap();
    r
}

#[test]
fn client_records_dns_connect_and_reuse() {
    let (addr, _server_log) = start(Server::builder());
    let log = MemoryLog::new();
    let config = Arc::new(
        ClientConfig::new(ConnConfig {
            keep_alive_timeout: Duration::from_millis(300),
            ..ConnConfig::default()
        })
        .access_log(log.clone()),
    );
    let url = format!("http://localhost:{}/delay?ms=20", addr.port());
    let (reused, t1) = client_get(&url, config.clone());
    assert!(!reused && t1.dns.is_some() && t1.connect.is_some());
    let (reused, t2) = client_get(&url, config);
    assert!(reused && t2.dns.is_none() && t2.connect.is_none());
    // The pooled connection closes on its idle timeout: one record for both requests.
    let r = only_record(&log);
    assert_eq!(r.side(), Side::Client);
    assert_eq!(r.close_reason(), Some(CloseReason::KeepAliveTimeout));
    assert_eq!(r.requests(), 2);
    let (dns, conn) = (r.dns_time().unwrap(), r.connect_time().unwrap());
    let first = r.first_byte_time().unwrap();
    assert!(first >= Duration::from_millis(20));
    assert!(
        dns + conn <= first + dns,
        "connect {conn:?} first byte {first:?}"
    );
    assert!(first <= r.lifetime().unwrap());
}

#[test]
fn client_connect_timeout_record() {
    settings();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let _fill: Vec<_> = (0..4)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let log = MemoryLog::new();
    let config = Arc::new(
        ClientConfig::new(ConnConfig {
            connect_timeout: Duration::from_millis(150),
            ..ConnConfig::default()
        })
        .access_log(log.clone()),
    );
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let t = http::get(&format!("http://{addr}/"), |t, _| {
        assert_eq!(t.result().unwrap_err(), &taskweave::Error::ConnectTimeout);
    })
    .config(config);
    Series::new(t).on_done(move |_| done.done()).start();
    assert!(wg.wait_timeout(Duration::from_secs(10)));
    let r = only_record(&log);
    assert_eq!(r.close_reason(), Some(CloseReason::ConnectTimeout));
    assert_eq!(r.connect_time(), None);
}

#[test]
fn json_lines_file_shows_a_record_within_a_second() {
    settings();
    let path = std::env::temp_dir().join(format!("tw-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sink = JsonLines::open(&path).unwrap();
    let handle = Server::builder()
        .access_log(sink)
        .serve("127.0.0.1:0", process)
        .unwrap();
    let mut s = connect(handle.local_addr());
    s.write_all(GET).unwrap();
    read_response(&mut s);
    drop(s);
    // The request's record, then the connection's.
    let found = wait_until(Duration::from_millis(1000), || {
        std::fs::read_to_string(&path)
            .map(|t| t.lines().count() == 2)
            .unwrap_or(false)
    });
    assert!(found, "records did not reach the file within a second");
    let text = std::fs::read_to_string(&path).unwrap();
    // A connection's line may come before its request's.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| !l.starts_with("{\"kind\":\"request\","));
    let (request, line) = (lines[0], lines[1]);
    assert!(request.starts_with("{\"kind\":\"request\","), "{request}");
    assert!(line.starts_with("{\"kind\":\"conn\","), "{line}");
    for key in RequestRecord::JSON_KEYS {
        assert!(
            request.contains(&format!("\"{key}\":")),
            "missing {key} in {request}"
        );
    }
    for key in Record::JSON_KEYS {
        assert!(
            line.contains(&format!("\"{key}\":")),
            "missing {key} in {line}"
        );
    }
    assert!(
        line.contains("\"dns_us\":null") && line.contains("\"close_reason\":\"peer_closed\""),
        "{line}"
    );
    let _ = std::fs::remove_file(&path);
    let _ = TcpListener::bind("127.0.0.1:0");
}
