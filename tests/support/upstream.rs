//! A tiny HTTP server on a std `TcpListener`, for tests of HTTP clients and
//! proxies: it reads one request per connection, answers with what the
//! test's function returns for it, closes the connection, and hands the
//! request it received (head and body, as text) to the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// A running upstream; its thread serves until the test process ends.
pub struct Upstream {
    addr: SocketAddr,
    received: mpsc::Receiver<String>,
}

impl Upstream {
    /// Serves on 127.0.0.1, answering each request with the bytes
    /// `answer(request)` returns (a whole response: status line, fields,
    /// body). `request` is the head and body as received.
    pub fn start(answer: impl Fn(&str) -> String + Send + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = listener.local_addr().expect("the upstream's address");
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some(request) = read_request(&mut conn) else {
                    continue;
                };
                let _ = conn.write_all(answer(&request).as_bytes());
                let _ = tx.send(request);
            }
        });
        Upstream { addr, received }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request it received (waits at most 10 s).
    pub fn received(&self) -> String {
        self.received
            .recv_timeout(Duration::from_secs(10))
            .expect("a request at the upstream within 10 s")
    }
}

/// The path of a request's start line (`GET /a HTTP/1.1` gives `/a`).
pub fn path_of(request: &str) -> &str {
    request.split_whitespace().nth(1).unwrap_or("")
}

/// The value of the first field called `name` (any case) in `head`.
pub fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// One request: the head, then as many body bytes as its `Content-Length`
/// says. `None` if the connection ends or stalls (5 s) before that.
fn read_request(conn: &mut TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = field(&text, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return Some(text.into_owned());
            }
        }
        let n = conn.read(&mut buf).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    }
}
