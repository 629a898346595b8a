//! A raw HTTP/1.1 client over std sockets, for tests that must see exactly what
//! a server sent and how the exchange ended. Bodies are counted, not kept.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How reading a reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The whole body announced by `Content-Length` arrived.
    Complete,
    /// The peer closed the connection first.
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing arrived for the whole timeout.
    Timeout,
    /// Another read error.
    Error(String),
}

/// One reply, or as much of it as arrived.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code, once the whole head arrived.
    pub status: Option<u16>,
    /// The head as text (what arrived of it).
    pub head: String,
    /// `Content-Length`, if the head had one.
    pub content_length: Option<usize>,
    /// Body bytes received.
    pub body: usize,
    pub end: End,
    /// From the request (or the start of reading) to the end.
    pub elapsed: Duration,
}

impl Reply {
    /// Whether a complete reply with `status` arrived.
    pub fn is(&self, status: u16) -> bool {
        self.status == Some(status) && self.end == End::Complete
    }

    /// Whether the server answered 500, or closed the connection without a
    /// reply, rather than leaving the request hanging.
    pub fn is_500_or_closed(&self) -> bool {
        self.status == Some(500)
            || (self.status.is_none() && matches!(self.end, End::Eof | End::Reset))
    }
}

/// Where `needle` starts in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `GET path` on `s` and reads the reply, waiting at most `timeout` for
/// each read.
pub fn get(s: &mut TcpStream, path: &str, timeout: Duration) -> Reply {
    let start = Instant::now();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    match s.write_all(req.as_bytes()) {
        Ok(()) => read_reply(s, timeout, start),
        Err(e) => failed(format!("writing the request: {e}"), start),
    }
}

/// Connects to `addr` and GETs `path` on a new connection.
pub fn get_new(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> Reply {
    let start = Instant::now();
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(mut s) => {
            s.set_nodelay(true).unwrap();
            get(&mut s, path, timeout)
        }
        Err(e) => failed(format!("connect: {e}"), start),
    }
}

fn failed(why: String, start: Instant) -> Reply {
    Reply {
        status: None,
        head: String::new(),
        content_length: None,
        body: 0,
        end: End::Error(why),
        elapsed: start.elapsed(),
    }
}

/// Reads one reply: the head, then the body up to its `Content-Length` (or to
/// the end of the connection if it has none).
pub fn read_reply(s: &mut TcpStream, timeout: Duration, start: Instant) -> Reply {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut head_len = None;
    let mut body = 0usize;
    let mut content_length = None;
    let end = loop {
        if head_len.is_some() && content_length.is_some_and(|n| body >= n) {
            break End::Complete;
        }
        // Never read past this reply.
        let want = match (head_len, content_length) {
            (Some(_), Some(n)) => (n - body).min(buf.len()),
            (None, _) => 1024,
            _ => buf.len(),
        };
        match s.read(&mut buf[..want]) {
            Ok(0) => break End::Eof,
            Ok(n) if head_len.is_some() => body += n,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if let Some(p) = find(&head, b"\r\n\r\n") {
                    body = head.len() - (p + 4);
                    head.truncate(p + 4);
                    head_len = Some(p + 4);
                    content_length = header(&head, "content-length").and_then(|v| v.parse().ok());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break End::Reset,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break End::Timeout
            }
            Err(e) => break End::Error(e.to_string()),
        }
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head_len
        .and(head.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    Reply {
        status,
        head,
        content_length,
        body,
        end,
        elapsed: start.elapsed(),
    }
}

/// The value of header `name` in a raw head.
pub fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}
