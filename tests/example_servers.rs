//! The example servers as a user meets them: Ctrl-C (SIGINT) after N
//! requests on M connections leaves N request and M connection records in
//! the access-log file (shutdown flushes it) and the process exits 0 at once; a port already in use is an error,
//! not a second server; a query parameter that does not parse is a 400;
//! `--help` prints the usage and exits 0, an unknown flag or a bad value is
//! an error that names it, an access log that cannot be opened too (exit 2);
//! `http_proxy` forwards end-to-end header fields both ways and drops the
//! hop-by-hop ones.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::example::{run, Server};
use support::upstream::{field, Upstream};

fn tmp_path(name: &str) -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// One HTTP GET on a connection of its own; the status line.
fn http_get(srv: &Server, path: &str) -> String {
    let mut s = TcpStream::connect(srv.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_string()
}

/// One echo frame on a connection of its own.
fn echo(srv: &Server, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(srv.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&support::frame(payload)).unwrap();
    support::read_frame(&mut s).expect("an echo")
}

/// Sends SIGINT and waits for a clean exit; the log's lines.
fn interrupt(mut srv: Server, log: &PathBuf) -> Vec<String> {
    let t0 = Instant::now();
    srv.signal(libc::SIGINT);
    let status = srv
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("still running 8 s after SIGINT: {}", srv.stderr()));
    assert!(status.success(), "{status}: {}", srv.stderr());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    let text = std::fs::read_to_string(log).expect("the access log");
    text.lines().map(str::to_string).collect()
}

#[test]
fn http_server_flushes_every_record_on_sigint() {
    let log = tmp_path("http_sigint.jsonl");
    let srv = Server::start("http_server", &["--access-log", log.to_str().unwrap()]);
    for path in ["/", "/", "/nope", "/echo", "/"] {
        assert!(http_get(&srv, path).starts_with("HTTP/1.1 "), "{path}");
    }
    // Three more on one keep-alive connection, still open at Ctrl-C.
    let mut ka = TcpStream::connect(srv.addr()).expect("connect");
    ka.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ka.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3).as_slice())
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("HTTP/1.1 ").count() < 3 {
        let n = ka.read(&mut buf).expect("three answers");
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let lines = interrupt(srv, &log);
    let kind = |k: &str| {
        let tag = format!("{{\"kind\":\"{k}\",");
        lines.iter().filter(|l| l.starts_with(&tag)).count()
    };
    assert_eq!(kind("request"), 8, "one record per request: {lines:?}");
    assert_eq!(kind("conn"), 6, "one record per connection: {lines:?}");
    assert_eq!(lines.len(), 14, "{lines:?}");
    let not_found = lines
        .iter()
        .filter(|l| l.contains("\"path\":\"/nope\",\"status\":404"))
        .count();
    assert_eq!(not_found, 1, "the 404: {lines:?}");
}

#[test]
fn echo_server_flushes_every_record_on_sigint() {
    let log = tmp_path("echo_sigint.jsonl");
    let srv = Server::start("echo_server", &["--access-log", log.to_str().unwrap()]);
    for i in 0..4u8 {
        assert_eq!(echo(&srv, &[i; 10]), vec![i; 10]);
    }
    let lines = interrupt(srv, &log);
    let conns = lines
        .iter()
        .filter(|l| l.contains("\"kind\":\"conn\""))
        .count();
    assert_eq!(conns, 4, "one record per connection: {lines:?}");
    assert_eq!(lines.len(), 8, "and one per request: {lines:?}");
}

#[test]
fn http_proxy_forwards_and_flushes_every_record_on_sigint() {
    let backend = Server::start("http_server", &["--access-log", "off"]);
    let target = format!("http://{}", backend.addr());
    let log = tmp_path("proxy_sigint.jsonl");
    let proxy = Server::start(
        "http_proxy",
        &["--backend", &target, "--access-log", log.to_str().unwrap()],
    );
    assert_eq!(http_get(&proxy, "/"), "HTTP/1.1 200 OK");
    assert!(http_get(&proxy, "/nope").starts_with("HTTP/1.1 404"));
    // A HEAD answer keeps the backend's Content-Length (of `Hello, World!`).
    let mut s = TcpStream::connect(proxy.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    let _ = s.read_to_string(&mut head);
    assert_eq!(field(&head, "content-length"), Some("13"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
    let lines = interrupt(proxy, &log);
    let kind = |k: &str| {
        let tag = format!("{{\"kind\":\"{k}\",");
        lines.iter().filter(|l| l.starts_with(&tag)).count()
    };
    assert_eq!(kind("request"), 3, "one record per request: {lines:?}");
    assert_eq!(kind("conn"), 3, "one record per connection: {lines:?}");
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("\"side\":\"server\"")),
        "{lines:?}"
    );
}

#[test]
fn http_proxy_forwards_end_to_end_fields_only() {
    let upstream = Upstream::start(|_| {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Upstream: kept\r\nX-Secret-Hop: dropped\r\n\
         Keep-Alive: timeout=5\r\nConnection: close, X-Secret-Hop\r\n\r\nok\n"
            .to_string()
    });
    let proxy = Server::start(
        "http_proxy",
        &["--backend", &upstream.url(""), "--access-log", "off"],
    );
    let mut s = TcpStream::connect(proxy.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /submit?x=1 HTTP/1.1\r\nHost: proxy.example\r\nX-Custom: end-to-end\r\n\
          Connection: close, X-Hop\r\nX-Hop: dropped\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nProxy-Authorization: Basic c2VjcmV0\r\nUpgrade: websocket\r\n\
          Via: 1.0 first\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);

    // What the upstream received: the end-to-end fields, the body, the
    // backend's Host, and Via with the proxy added after the client's entry.
    let request = upstream.received();
    assert!(
        request.starts_with("POST /submit?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert_eq!(field(&request, "x-custom"), Some("end-to-end"), "{request}");
    let host = upstream.addr().to_string();
    assert_eq!(field(&request, "host"), Some(host.as_str()), "{request}");
    for hop in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert_eq!(field(&request, hop), None, "{hop} forwarded: {request}");
    }
    let via = request.find("\r\nVia: 1.0 first\r\n");
    let ours = request.find("\r\nVia: 1.1 taskweave\r\n");
    assert!(via.is_some() && ours > via, "Via: {request}");
    assert!(request.ends_with("\r\n\r\nhello"), "{request}");

    // What the client received: the upstream's end-to-end fields and body.
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(field(&response, "x-upstream"), Some("kept"), "{response}");
    assert_eq!(field(&response, "x-secret-hop"), None, "{response}");
    assert_eq!(field(&response, "keep-alive"), None, "{response}");
    assert_eq!(field(&response, "via"), Some("1.1 taskweave"), "{response}");
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
}

#[test]
fn a_second_server_on_a_busy_port_fails() {
    let first = Server::start("http_server", &["--access-log", "off"]);
    let port = first.addr().port().to_string();
    let out = std::process::Command::new(support::example::binary("http_server"))
        .args(["--access-log", "off", "--port", &port])
        .output()
        .expect("run http_server");
    assert!(
        !out.status.success(),
        "a second server started on a busy port"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "stderr: {err}");
}

#[test]
fn a_bad_query_parameter_is_a_400() {
    let srv = Server::start("http_server", &["--access-log", "off"]);
    assert!(http_get(&srv, "/delay?ms=abc").starts_with("HTTP/1.1 400"));
    assert!(http_get(&srv, "/stream?n=-1").starts_with("HTTP/1.1 400"));
    assert_eq!(http_get(&srv, "/delay?ms=1"), "HTTP/1.1 200 OK");
}

#[test]
fn help_and_bad_flags() {
    for name in [
        "http_server",
        "sse_server",
        "echo_server",
        "echo_client",
        "http_proxy",
        "http_client",
    ] {
        let help = run(name, &["--help"]);
        assert!(help.status.success(), "{name} --help: {help:?}");
        let usage = String::from_utf8_lossy(&help.stdout);
        assert!(
            usage.starts_with(&format!("usage: {name}")),
            "{name}: {usage}"
        );

        let unknown = run(name, &["--prot", "9999"]);
        assert_eq!(unknown.status.code(), Some(2), "{name} --prot: {unknown:?}");
        let err = String::from_utf8_lossy(&unknown.stderr);
        assert!(err.contains("--prot"), "{name}: {err}");
    }
    let bad = run("http_server", &["--port", "eighty"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--port") && err.contains("eighty"), "{err}");
    let missing = run("http_server", &["--port"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}

/// An access log that cannot be opened is a bad value on the command line:
/// exit 2, with the file named, before anything listens.
#[test]
fn an_access_log_that_cannot_be_opened_is_a_usage_error() {
    let path = "/nonexistent/dir/x.log";
    for name in ["http_server", "echo_server", "sse_server", "http_proxy"] {
        let out = run(name, &["--port", "0", "--access-log", path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(path),
            "{name}: {err}"
        );
        assert!(!err.contains("listening"), "{name}: {err}");
    }
}
