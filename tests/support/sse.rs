//! A raw `text/event-stream` client over a std socket: it reads the reply's
//! head, undoes HTTP/1.1 chunked framing, and parses the stream by the WHATWG
//! rules (lines end at CRLF, LF or CR; `data:` lines joined with LF; one
//! leading space of a value stripped), returning events, comments and
//! `retry:` fields in the order they came. Also a keep-alive publisher.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One thing read from an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event(Event),
    /// A comment line, without its `:` and one leading space.
    Comment(String),
    /// A `retry:` field's value.
    Retry(String),
}

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `id` field of this event's block, if it had one.
    pub id: Option<String>,
    /// The `event` field, if any.
    pub event: Option<String>,
    /// The data: the `data:` lines joined with LF.
    pub data: String,
}

impl Event {
    /// The id as a number (panics if it has none or it is not decimal).
    pub fn num(&self) -> u64 {
        let id = self
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("no id: {self:?}"));
        id.parse()
            .unwrap_or_else(|_| panic!("id {id:?} is not a number"))
    }
}

/// How a stream ended (or stopped giving items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The last chunk (`0\r\n\r\n`) arrived.
    LastChunk,
    /// The peer closed the connection (without a last chunk).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing complete arrived in time.
    Timeout,
    /// Another read error, or broken framing.
    Error(String),
}

/// An open event stream.
pub struct Client {
    sock: TcpStream,
    /// The reply's status.
    pub status: u16,
    /// The reply's head, as text.
    pub head: String,
    /// Received bytes not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked bytes not yet parsed into lines.
    text: Vec<u8>,
    /// Bytes left of the current chunk's data (`None`: a size line is next).
    chunk_left: Option<usize>,
    /// A chunk's data ended: its CRLF is next.
    chunk_crlf: bool,
    ended: Option<End>,
    /// The data lines of the event being built.
    data: Vec<String>,
    id: Option<String>,
    event: Option<String>,
    /// Total body bytes received (after de-chunking).
    pub body_bytes: usize,
}

/// Connects to `addr` and sends `GET path` with `headers`; `recv_buf`: the
/// socket's receive buffer (set before connecting, so the window is small
/// from the start), if given.
pub fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    recv_buf: Option<usize>,
) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(n) = recv_buf {
        sock.set_recv_buffer_size(n)?;
    }
    sock.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    Ok(s)
}

impl Client {
    /// Opens `GET path` on `addr` and reads the reply's head (waiting at
    /// most 10 s).
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Client {
        let s = connect(addr, path, headers, None).expect("connect");
        Client::read_head(s)
    }

    /// Reads the head of the reply on `sock` (a request was sent on it).
    pub fn read_head(mut sock: TcpStream) -> Client {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = loop {
            if let Some(p) = super::raw_http::find(&raw, b"\r\n\r\n") {
                break p + 4;
            }
            match sock.read(&mut tmp) {
                Ok(0) => panic!(
                    "closed before the head: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
                Ok(n) => raw.extend_from_slice(&tmp[..n]),
                Err(e) => panic!(
                    "reading the head: {e} (got {:?})",
                    String::from_utf8_lossy(&raw)
                ),
            }
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw.drain(..end);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut c = Client {
            sock,
            status,
            head,
            raw,
            text: Vec::new(),
            chunk_left: None,
            chunk_crlf: false,
            ended: None,
            data: Vec::new(),
            id: None,
            event: None,
            body_bytes: 0,
        };
        // What came with the head (a replay, say) may be all there is.
        c.dechunk();
        c
    }

    /// The value of header `name` in the head.
    pub fn header(&self, name: &str) -> Option<String> {
        super::raw_http::header(self.head.as_bytes(), name)
    }

    /// The socket (to read its address, or to shut it).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The next item, waiting at most `timeout` for it; `Err` once the stream
    /// is over or nothing came in time.
    pub fn next(&mut self, timeout: Duration) -> Result<Item, End> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.parse_item() {
                return Ok(item);
            }
            if let Some(end) = &self.ended {
                return Err(end.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut tmp = [0u8; 64 * 1024];
            match self.sock.read(&mut tmp) {
                Ok(0) => self.ended = Some(End::Eof),
                Ok(n) => {
                    self.raw.extend_from_slice(&tmp[..n]);
                    self.dechunk();
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.ended = Some(End::Reset)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => self.ended = Some(End::Error(e.to_string())),
            }
        }
    }

    /// The next event (skipping comments and `retry:`), or how the stream
    /// ended.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Event, End> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Item::Event(e) = self.next(left)? {
                return Ok(e);
            }
        }
    }

    /// Items until the stream ends or `timeout` passes with nothing new.
    pub fn drain(&mut self, timeout: Duration) -> (Vec<Item>, End) {
        let mut items = Vec::new();
        loop {
            match self.next(timeout) {
                Ok(item) => items.push(item),
                Err(end) => return (items, end),
            }
        }
    }

    /// Moves whole chunks' data from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            if self.ended.is_some() {
                return;
            }
            if self.chunk_crlf {
                if self.raw.len() < 2 {
                    return;
                }
                if &self.raw[..2] != b"\r\n" {
                    self.ended = Some(End::Error("no CRLF after a chunk".into()));
                    return;
                }
                self.raw.drain(..2);
                self.chunk_crlf = false;
            }
            match self.chunk_left {
                Some(left) => {
                    let n = left.min(self.raw.len());
                    if n == 0 {
                        return;
                    }
                    self.text.extend(self.raw.drain(..n));
                    self.body_bytes += n;
                    if n == left {
                        self.chunk_left = None;
                        self.chunk_crlf = true;
                    } else {
                        self.chunk_left = Some(left - n);
                    }
                }
                None => {
                    let Some(p) = super::raw_http::find(&self.raw, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.raw[..p]).into_owned();
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let Ok(size) = usize::from_str_radix(hex, 16) else {
                        self.ended = Some(End::Error(format!("bad chunk size {line:?}")));
                        return;
                    };
                    if size == 0 {
                        // The last chunk: no trailers are expected.
                        if self.raw.len() < p + 4 {
                            return;
                        }
                        if &self.raw[p + 2..p + 4] == b"\r\n" {
                            self.raw.drain(..p + 4);
                            self.ended = Some(End::LastChunk);
                        } else {
                            self.ended = Some(End::Error("trailers after the last chunk".into()));
                        }
                        return;
                    }
                    self.raw.drain(..p + 2);
                    self.chunk_left = Some(size);
                }
            }
        }
    }

    /// Parses lines from `text` until one completes an item.
    fn parse_item(&mut self) -> Option<Item> {
        loop {
            let p = self.text.iter().position(|&b| b == b'\r' || b == b'\n')?;
            let mut skip = 1;
            if self.text[p] == b'\r' {
                match self.text.get(p + 1) {
                    Some(b'\n') => skip = 2,
                    Some(_) => {}
                    // A CR last: an LF may follow in the next read.
                    None if self.ended.is_none() => return None,
                    None => {}
                }
            }
            let line = String::from_utf8_lossy(&self.text[..p]).into_owned();
            self.text.drain(..p + skip);
            if let Some(item) = self.line(&line) {
                return Some(item);
            }
        }
    }

    /// Processes one line; returns the item it completes, if any.
    fn line(&mut self, line: &str) -> Option<Item> {
        if line.is_empty() {
            // Dispatch: an event only if it had a data line. (WHATWG appends
            // each value and an LF, then drops one final LF: the lines
            // joined with LF.)
            let id = self.id.take();
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(Item::Event(Event { id, event, data }));
        }
        if let Some(c) = line.strip_prefix(':') {
            return Some(Item::Comment(c.strip_prefix(' ').unwrap_or(c).to_string()));
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "data" => self.data.push(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "retry" => return Some(Item::Retry(value.to_string())),
            _ => {}
        }
        None
    }
}

/// A reply read whole: status, head and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one reply with a `Content-Length` body from `r`.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed in the head: {head:?}"),
            ));
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    let len: usize = super::raw_http::header(head.as_bytes(), "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no Content-Length in {head:?}")))?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Reply { status, head, body })
}

/// A request as bytes: `method path` with `headers` and `body` (a
/// `Content-Length` is added when there is a body or the method is POST).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A keep-alive HTTP/1.1 connection for requests with small replies.
pub struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    /// Connects to `addr` (replies waited for at most 10 s).
    pub fn new(addr: SocketAddr) -> Conn {
        let w = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        w.set_nodelay(true).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Conn { w, r }
    }

    /// Sends a request and reads its reply.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.w
            .write_all(&request(method, path, headers, body))
            .expect("send a request");
        read_reply(&mut self.r).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, &[], b"")
    }

    /// Publishes `body` on `topic`; returns the event's id (panics unless
    /// the server answers 200).
    pub fn publish(&mut self, topic: &str, body: &[u8]) -> u64 {
        let reply = self.send("POST", &format!("/publish?topic={topic}"), &[], body);
        assert_eq!(reply.status, 200, "publish on {topic}: {}", reply.text());
        reply
            .text()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("publish answered {:?}", reply.text()))
    }

    /// The socket (to read its address).
    pub fn socket(&self) -> &TcpStream {
        &self.w
    }
}

/// The value of the Prometheus sample `name` (with its labels, e.g.
/// `taskweave_sse_subscribers{topic="t"}`) in `metrics`.
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}
