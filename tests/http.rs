//! The HTTP server against curl and raw sockets, and the HTTP client task against
//! our server and hand-written peers. Everything on 127.0.0.1.

mod support;
#[allow(dead_code)]
mod malformed {
    include!("support/malformed.rs");
}

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::*;
use taskweave::comm::ClientConfig;
use taskweave::http::{self, Server, ServerTask};
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::{timer, Error, Parallel, Series, Settings, WaitGroup};

struct Fixture {
    addr: SocketAddr,
    log: MemoryLog,
}

/// One server for the whole file, like `examples/http_server.rs`.
fn server() -> &'static Fixture {
    static SERVER: OnceLock<Fixture> = OnceLock::new();
    SERVER.get_or_init(|| {
        // `http_inline.rs` includes this file to run it all inline.
        if module_path!().starts_with("http_inline") {
            let inline = Settings {
                handler_threads: 0,
                ..Settings::default()
            };
            inline
                .apply()
                .expect("settings apply before any server starts");
        }
        let log = MemoryLog::new();
        let handle = Server::builder()
            .access_log(log.clone())
            .serve(
                "127.0.0.1:0",
                |task: &mut ServerTask, series: &mut Series| match task.request().path() {
                    "/" => {
                        task.response().set_body("Hello, World!");
                    }
                    "/echo" => {
                        let body = task.request_mut().take_body();
                        task.response().set_body(body);
                    }
                    "/redirect" => {
                        task.response().set_status(302).set_header("Location", "/");
                    }
                    "/delay" => {
                        series.push_back(timer(Duration::from_millis(100), |_, s: &mut Series| {
                            if let Some(t) = ServerTask::of_series(s) {
                                t.response().set_body("late");
                            }
                        }));
                    }
                    "/parallel" => {
                        // A Parallel member's callback reaches the reply
                        // through the handle (of_series could not).
                        let reply = task.reply_handle();
                        let member = timer(Duration::from_millis(10), move |_, s: &mut Series| {
                            assert!(ServerTask::of_series(s).is_none());
                            reply.with(|t| {
                                let (req, resp) = t.parts();
                                let body = format!("from a member, for {}", req.path());
                                resp.set_body(body);
                            });
                        });
                        series.push_back(Parallel::new(|_, _| {}).with(Series::new(member)));
                    }
                    "/panic" => panic!("process panicked on purpose"),
                    _ => {
                        task.response().set_status(404);
                    }
                },
            )
            .expect("serve");
        let addr = handle.local_addr();
        std::mem::forget(handle); // lives for the test process
        Fixture { addr, log }
    })
}

/// Runs curl; fails loudly if curl is missing (scripts/test.sh installs it).
fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is required for the HTTP tests: run ./scripts/test.sh, which installs it")
}

fn url(path: &str) -> String {
    format!("http://{}{}", server().addr, path)
}

/// Records of connections from `port`, our side of a client socket.
fn record_for(peer_port: u16) -> Option<taskweave::metrics::ConnStats> {
    server()
        .log
        .records()
        .into_iter()
        .find(|r| r.peer().port() == peer_port)
}

#[test]
fn curl_get_and_keep_alive_reuses_one_connection() {
    let out = curl(&["-w", "|%{num_connects}|%{local_port}", &url("/"), &url("/")]);
    let text = String::from_utf8(out.stdout).unwrap();
    // Two bodies; curl's second transfer made no new connection.
    assert!(text.starts_with("Hello, World!|1|"), "{text}");
    assert!(text.contains("Hello, World!|0|"), "{text}");
    let port: u16 = text.rsplit('|').next().unwrap().parse().unwrap();
    assert!(wait_until(Duration::from_secs(5), || record_for(port).is_some()));
    let r = record_for(port).unwrap();
    assert_eq!(r.requests(), 2);
    assert_eq!(r.close_reason(), Some(CloseReason::PeerClosed));
}

#[test]
fn curl_head_has_length_but_no_body() {
    let out = curl(&["-I", &url("/")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-length: 13"),
        "{text}"
    );
    assert!(!text.contains("Hello"), "{text}");
}

#[test]
fn curl_chunked_upload_is_echoed() {
    let body: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    let path = std::env::temp_dir().join(format!("tw-chunked-{}", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", path.display()),
        &url("/echo"),
    ]);
    std::fs::remove_file(&path).ok();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), body);
}

#[test]
fn curl_expect_100_continue_gets_an_interim_response() {
    let body = "x".repeat(100_000);
    let path = std::env::temp_dir().join(format!("tw-continue-{}", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let out = curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", path.display()),
        &url("/echo"),
    ]);
    std::fs::remove_file(&path).ok();
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(verbose.contains("HTTP/1.1 100 Continue"), "{verbose}");
    assert_eq!(out.stdout.len(), body.len());
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    out
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut s = connect(server().addr);
    let mut batch = Vec::new();
    for i in 0..20 {
        let body = format!("body-{i}");
        batch.extend(
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .bytes(),
        );
    }
    batch.extend(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&batch).unwrap();
    let text = String::from_utf8(read_all(&mut s)).unwrap();
    let mut at = 0;
    for i in 0..20 {
        let want = format!("\r\n\r\nbody-{i}");
        let pos = text[at..]
            .find(&want)
            .unwrap_or_else(|| panic!("reply {i} missing or out of order"));
        at += pos + want.len();
    }
    assert!(text[at..].ends_with("Hello, World!"));
    assert_eq!(text.matches("HTTP/1.1 200").count(), 21);
}

/// Replies that do not fit the socket are queued from the middle of a head:
/// a peer that pipelines 20,000 requests before reading gets every reply,
/// whole and in order.
#[test]
fn pipelined_replies_to_a_slow_reader_arrive_whole_and_in_order() {
    const N: usize = 20_000;
    // A small receive buffer, so the 11 MB of replies cannot all sit in kernel
    // buffers and the server's writes must pause.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server().addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = sent.clone();
    let send = std::thread::spawn(move || {
        for i in 0..N {
            let body = format!("{i:06}-{}", "x".repeat(500));
            let req = format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            writer.write_all(req.as_bytes()).unwrap();
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    // Let the server's output back up before reading anything: until every
    // request is written or the writer is stuck (the server stopped reading
    // because its queue went above the high watermark), then a second more
    // for the server to answer what it has read. 11 MB of replies cannot all
    // fit in kernel buffers (the server's send buffer grows to 4 MB at most),
    // so by then the server's writes have paused.
    let mut last = usize::MAX;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let now = sent.load(std::sync::atomic::Ordering::Relaxed);
        if now > N || now == last {
            break;
        }
        last = now;
    }
    std::thread::sleep(Duration::from_secs(1));
    let text = String::from_utf8(read_all(&mut s)).unwrap();
    send.join().unwrap();
    let mut at = 0;
    for i in 0..N {
        let want = format!("Content-Length: 507\r\n\r\n{i:06}-");
        let pos = text[at..]
            .find(&want)
            .unwrap_or_else(|| panic!("reply {i} missing or out of order"));
        at += pos + want.len() + 500;
        assert_eq!(&text[at - 500..at], "x".repeat(500), "reply {i} body");
    }
    assert!(text[at..].ends_with("Hello, World!"));
    assert_eq!(text.matches("HTTP/1.1 200").count(), N + 1);
    let port = s.local_addr().unwrap().port();
    let record = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            record_for(port)
        })
        .expect("access-log record");
    assert!(record.write_pauses() > 0, "writes never paused: {record:?}");
}

#[test]
fn half_closed_peer_is_answered_then_closed() {
    let mut s = connect(server().addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let text = String::from_utf8(read_all(&mut s)).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("Hello, World!"),
        "{text}"
    );
}

#[test]
fn http_1_0_keep_alive_and_connection_close() {
    let mut s = connect(server().addr);
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(first.contains("connection: keep-alive"), "{first}");
    // Still open: a second request on the same connection, asking to close.
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let rest = String::from_utf8(read_all(&mut s)).unwrap();
    assert!(
        rest.starts_with("HTTP/1.") && rest.ends_with("Hello, World!"),
        "{rest}"
    );
}

#[test]
fn malformed_and_smuggling_requests_get_their_status_and_nothing_more() {
    assert!(malformed::CASES.len() >= 60);
    let mut failures = Vec::new();
    for (name, raw, status) in malformed::CASES {
        let mut s = connect(server().addr);
        // The peer may close while we still write: that is fine.
        let _ = s.write_all(raw);
        let text = String::from_utf8_lossy(&read_all(&mut s)).to_string();
        let got = text.get(9..12).and_then(|c| c.parse::<u16>().ok());
        let replies = text.matches("HTTP/1.1 ").count();
        if got != Some(*status) || replies != 1 || text.contains("smuggled") {
            failures.push(format!(
                "{name}: want {status}, got {got:?} with {replies} replies"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// (status, body) or the error, the task's timings, and whether it reused a connection.
type Fetched = (
    Result<(u16, Vec<u8>), Error>,
    taskweave::comm::Timings,
    bool,
);

/// Runs a GET and returns (status, body), timings, reused.
fn fetch(task_url: &str, redirect_max: u32) -> Fetched {
    fetch_with(task_url, redirect_max, ClientConfig::shared_default())
}

/// Like `fetch`, with its own pool config.
fn fetch_with(task_url: &str, redirect_max: u32, config: Arc<ClientConfig>) -> Fetched {
    let out = Arc::new(Mutex::new(None));
    let slot = out.clone();
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let task = http::get(task_url, move |t, _| {
        let res = t
            .result()
            .map(|r| (r.status(), r.body().to_vec()))
            .map_err(Clone::clone);
        *slot.lock().unwrap() = Some((res, t.timings(), t.reused()));
    })
    .redirect_max(redirect_max)
    .config(config);
    Series::new(task).on_done(move |_| done.done()).start();
    assert!(
        wg.wait_timeout(Duration::from_secs(10)),
        "client task never completed"
    );
    let r = out.lock().unwrap().take().expect("callback ran");
    r
}

#[test]
fn client_get_records_dns_and_reuses_connections() {
    let port = server().addr.port();
    // A pool of its own: other tests talk to the same address.
    let config = Arc::new(ClientConfig::default());
    // `localhost` is looked up on a resolver thread the first time, then cached.
    let (res, timings, reused) =
        fetch_with(&format!("http://localhost:{port}/"), 0, config.clone());
    assert_eq!(res.unwrap(), (200, b"Hello, World!".to_vec()));
    assert!(!reused);
    assert!(timings.dns.is_some(), "{timings:?}");
    assert!(timings.connect.is_some());
    let fb = timings.first_byte.unwrap();
    assert!(fb <= timings.total);
    let (res, timings, reused) = fetch_with(&format!("http://localhost:{port}/delay"), 0, config);
    assert_eq!(res.unwrap(), (200, b"late".to_vec()));
    assert!(reused, "second request should reuse the pooled connection");
    assert!(timings.dns.is_none() && timings.connect.is_none());
    assert!(timings.first_byte.unwrap() >= Duration::from_millis(100));
}

#[test]
fn client_follows_redirects_only_when_asked() {
    let (res, _, _) = fetch(&url("/redirect"), 0);
    assert_eq!(res.unwrap().0, 302);
    let (res, _, _) = fetch(&url("/redirect"), 2);
    assert_eq!(res.unwrap(), (200, b"Hello, World!".to_vec()));
}

#[test]
fn client_reports_bad_urls_and_refused_connections() {
    let (res, _, _) = fetch("ftp://127.0.0.1/", 0);
    assert!(matches!(res, Err(Error::InvalidRequest(_))), "{res:?}");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (res, _, _) = fetch(&format!("http://{closed}/"), 0);
    assert!(matches!(res, Err(Error::Connect(_))), "{res:?}");
    let (res, _, _) = fetch("http://no-such-host.invalid/", 0);
    assert!(matches!(res, Err(Error::Dns(_))), "{res:?}");
}

/// A one-shot peer that answers any request with `reply` and closes.
fn raw_peer(reply: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    addr
}

#[test]
fn client_reads_chunked_and_close_delimited_responses() {
    let chunked = raw_peer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let (res, _, _) = fetch(&format!("http://{chunked}/"), 0);
    assert_eq!(res.unwrap(), (200, b"hello world".to_vec()));
    let close = raw_peer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
    let (res, _, _) = fetch(&format!("http://{close}/"), 0);
    assert_eq!(res.unwrap(), (200, b"until the end".to_vec()));
    let bad = raw_peer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    let (res, _, _) = fetch(&format!("http://{bad}/"), 0);
    assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
}

/// A `Parallel` member's callback fills the response through the reply
/// handle: the answer waits for the parallel, and carries what it set.
#[test]
fn a_parallel_member_answers_through_the_reply_handle() {
    let out = curl(&[&url("/parallel")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from a member, for /parallel"
    );
}

/// A `process` that panics answers 500 and closes its connection; the same
/// connection's earlier request was served, and the server goes on serving.
#[test]
fn a_panicking_process_answers_500_and_the_server_lives_on() {
    let mut s = connect(server().addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /panic HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 500 Internal Server Error\r\n")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        2,
        "nothing after the 500: {text}"
    );
    let port = s.local_addr().unwrap().port();
    let record = (0..200)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            record_for(port)
        })
        .expect("access-log record");
    assert_eq!(record.close_reason(), Some(CloseReason::InternalError));
    assert_eq!(record.status_5xx(), Some(1));
    for _ in 0..8 {
        let out = curl(&[&url("/")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!");
    }
}
