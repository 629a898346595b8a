//! Issue 13: a record per request, not only per connection. Pipelined
//! requests on one keep-alive connection get one record each, with their own
//! method, path, status, sizes and timings; streams, rejections, answers cut
//! by a close and client requests are recorded too. Handler threads here;
//! `request_log_inline.rs` runs the same cases inline.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::*;
use taskweave::comm::ClientConfig;
use taskweave::http::{self, Server, ServerTask};
use taskweave::metrics::{MemoryLog, RequestRecord, Side};
use taskweave::{timer, Series, Settings, WaitGroup};

struct Fixture {
    addr: SocketAddr,
    log: MemoryLog,
}

fn server() -> &'static Fixture {
    static SERVER: OnceLock<Fixture> = OnceLock::new();
    SERVER.get_or_init(|| {
        if module_path!().starts_with("request_log_inline") {
            Settings {
                handler_threads: 0,
                ..Settings::default()
            }
            .apply()
            .expect("settings apply before any server starts");
        }
        let log = MemoryLog::new();
        let handle = Server::builder()
            .access_log(log.clone())
            .serve("127.0.0.1:0", process)
            .expect("serve");
        let addr = handle.local_addr();
        std::mem::forget(handle);
        Fixture { addr, log }
    })
}

fn process(task: &mut ServerTask, series: &mut Series) {
    match task.request().path() {
        "/" => {
            task.response().set_body("Hello, World!");
        }
        "/missing" => {
            task.response().set_status(404).set_body("no such page");
        }
        "/delay" => {
            series.push_back(timer(Duration::from_millis(50), |_, s: &mut Series| {
                if let Some(t) = ServerTask::of_series(s) {
                    t.response().set_body("late");
                }
            }));
        }
        "/stream" => {
            let Ok(stream) = task.stream() else { return };
            let _ = stream.send("one,");
            series.push_back(timer(Duration::from_millis(30), move |_, _| {
                let _ = stream.send("two");
                stream.finish();
            }));
        }
        "/forever" => {
            // A stream that ends only when its sends fail (at most 10 s).
            let Ok(stream) = task.stream() else { return };
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    if stream.send("x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        _ => {
            task.response().set_status(500);
        }
    }
}

/// The server's request records for connections whose peer port is `port`,
/// once there are `n` of them.
fn records_for(port: u16, n: usize) -> Vec<RequestRecord> {
    let got = requests_from(&server().log, port, n);
    assert!(got.len() >= n, "expected {n} request records, got {got:?}");
    got
}

fn read_until(s: &mut std::net::TcpStream, needle: &str, count: usize) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.matches(needle).count() < count {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

#[test]
fn three_pipelined_requests_give_three_records() {
    let addr = server().addr;
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(
        b"GET /?a=1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /missing HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /delay HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    read_until(&mut s, "HTTP/1.1 ", 3);
    let recs = records_for(port, 3);
    assert_eq!(recs.len(), 3, "{recs:?}");
    let lines: Vec<_> = recs
        .iter()
        .map(|r| (r.index, r.method.as_str(), r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        lines,
        [
            (1, "GET", "/?a=1", Some(200)),
            (2, "POST", "/missing", Some(404)),
            (3, "GET", "/delay", Some(200)),
        ]
    );
    let conn = recs[0].conn_id;
    assert!(conn.is_some());
    for r in &recs {
        assert_eq!(r.conn_id, conn);
        assert_eq!(r.proto, "http");
        assert!(!r.streamed);
        assert_eq!(r.error, None);
        assert!(r.req_header_bytes.unwrap() > 10);
        let fb = r.first_byte_us.expect("first byte");
        assert!(fb <= r.total_us, "{r:?}");
    }
    assert_eq!(recs[1].req_body_bytes, Some(5));
    assert_eq!(recs[1].resp_body_bytes, Some(12));
    assert_eq!(recs[0].resp_body_bytes, Some(13));
    // The delayed answer took its timer's time; the others did not.
    assert!(recs[2].total_us >= 45_000, "{:?}", recs[2]);
    assert!(recs[0].total_us < recs[2].total_us);
    // Still open: the connection's own record has not come.
    assert!(server()
        .log
        .records()
        .iter()
        .all(|c| c.conn_id() != conn.unwrap()));
}

#[test]
fn a_stream_is_one_record_with_its_whole_body() {
    let mut s = connect(server().addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until(&mut s, "0\r\n\r\n", 1);
    let r = records_for(port, 1).remove(0);
    assert!(r.streamed, "{r:?}");
    assert_eq!(r.status, Some(200));
    assert_eq!(r.resp_body_bytes, Some(7));
    assert!(r.total_us >= 25_000, "{r:?}");
    assert!(r.first_byte_us.unwrap() < r.total_us);
}

#[test]
fn a_bad_request_gets_a_record_with_its_400() {
    let mut s = connect(server().addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .unwrap();
    read_until(&mut s, "HTTP/1.1 400", 1);
    let r = records_for(port, 1).remove(0);
    assert_eq!(r.status, Some(400));
    assert_eq!(r.index, 1);
}

#[test]
fn an_answer_cut_by_the_peer_is_recorded_with_the_reason() {
    let mut s = connect(server().addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until(&mut s, "HTTP/1.1 200", 1);
    s.shutdown(Shutdown::Both).unwrap();
    drop(s);
    let r = records_for(port, 1).remove(0);
    assert_eq!(r.path.as_str(), "/forever");
    assert!(r.streamed);
    // The head went out with its status; the body never ended.
    assert_eq!(r.status, Some(200), "{r:?}");
    assert!(r.error.is_some(), "{r:?}");
    assert!(r.resp_body_bytes.unwrap() >= 1, "{r:?}");
}

/// Runs one GET to its end.
fn get(url: &str, config: Arc<ClientConfig>) {
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let task = http::get(url, |_, _| {}).config(config);
    Series::new(task).on_done(move |_| done.done()).start();
    assert!(wg.wait_timeout(Duration::from_secs(10)));
}

#[test]
fn client_requests_name_their_target_and_reuse() {
    let addr = server().addr;
    let log = MemoryLog::new();
    let config = Arc::new(ClientConfig::default().access_log(log.clone()));
    for path in ["/", "/missing"] {
        get(&format!("http://{addr}{path}"), config.clone());
    }
    let mut recs = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        recs = log.requests();
        recs.len() >= 2
    }));
    let first = &recs[0];
    assert_eq!(first.side, Side::Client);
    assert_eq!(
        first.upstream.as_ref().map(|t| t.to_string()),
        Some(addr.to_string())
    );
    assert_eq!((first.method.as_str(), first.path.as_str()), ("GET", "/"));
    assert_eq!(first.status, Some(200));
    assert_eq!(first.reused, Some(false));
    assert_eq!(first.index, 1);
    assert!(first.connect_us.is_some());
    let second = &recs[1];
    assert_eq!(second.status, Some(404));
    assert_eq!(second.reused, Some(true));
    assert_eq!(second.index, 2);
    assert_eq!(second.conn_id, first.conn_id);
    assert!(second.first_byte_us.unwrap() <= second.total_us);
}

#[test]
fn a_failed_client_request_is_recorded_with_its_error() {
    // Settings first: the inline run applies its own before any poller starts.
    server();
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let log = MemoryLog::new();
    let config = Arc::new(ClientConfig::default().access_log(log.clone()));
    get(&format!("http://{closed}/x"), config);
    let mut recs = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        recs = log.requests();
        !recs.is_empty()
    }));
    let r = &recs[0];
    assert_eq!(r.status, None);
    assert!(r.error.is_some(), "{r:?}");
    assert_eq!(r.path.as_str(), "/x");
}
