//! One request's record: what a single exchange on a connection did.
//!
//! A connection's [`Record`](super::Record) sums every exchange it carried, so
//! on a keep-alive connection nobody can tell which request was slow or
//! failed. A [`RequestRecord`] is written when one exchange ends (its response
//! complete, or the connection gone before it was): the request's method,
//! path and status, its sizes and timings, and for a client, where it went and
//! whether the connection was reused. Both kinds go to the same sinks; the
//! JSON of each carries a `"kind"` key (`"request"` / `"conn"`), so one file
//! holds both.
//!
//! Like `Record`, it is plain data taken on the thread that finished the
//! exchange, formatted later by a writer thread; short text stays inline, so
//! the common record costs no allocation.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::clock;
use super::record::{push_decimal, write_addr, write_json_str, write_json_utf8, TimeFormat};
use super::Side;

/// Bytes of text a [`Text`] keeps without allocating.
const INLINE: usize = 62;

/// A short piece of text in a [`RequestRecord`] (a method, a path, a target):
/// inline up to 62 bytes, on the heap beyond that.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

impl Text {
    /// `s` as a record's text.
    pub fn new(s: &str) -> Text {
        let mut buf = [0; INLINE];
        match buf.get_mut(..s.len()) {
            Some(head) => {
                head.copy_from_slice(s.as_bytes());
                Text(Repr::Inline {
                    len: s.len() as u8,
                    buf,
                })
            }
            None => Text(Repr::Heap(s.into())),
        }
    }

    /// The text's bytes (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Made from a `&str`, so always valid; the fallback is never taken.
            Repr::Inline { len, buf } => {
                std::str::from_utf8(buf.get(..usize::from(*len)).unwrap_or_default())
                    .unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::new("")
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}

/// What one request/response exchange did. `docs/access-log.md` defines
/// every field; `None` is "does not apply" or "not known", written as `null`.
///
/// ```
/// use taskweave::metrics::{RequestRecord, Side};
///
/// let mut r = RequestRecord::new(Side::Server, "http");
/// r.method = "GET".into();
/// r.path = "/hello".into();
/// r.status = Some(200);
/// let json = r.to_json();
/// assert!(json.starts_with(r#"{"kind":"request","#));
/// assert!(json.contains(r#""method":"GET","path":"/hello","status":200"#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestRecord {
    /// The connection that carried it; `None` for a client request that never
    /// got one (its lookup or connect failed, or it waited too long).
    pub conn_id: Option<u64>,
    /// Its place on that connection: 1 for the first request, 0 when it had
    /// no connection.
    pub index: u32,
    /// Server (a request answered) or client (a request made).
    pub side: Side,
    /// Protocol name.
    pub proto: &'static str,
    /// The peer: the client (server side) or the address connected to.
    pub peer: Option<SocketAddr>,
    /// Server: when the request was complete. Client: when it was submitted.
    pub start: Instant,
    /// The request's method (HTTP) or command (Redis); empty when unknown.
    pub method: Text,
    /// The request's target as sent: path and query; empty when unknown.
    pub path: Text,
    /// The response's status, when it has one.
    pub status: Option<u16>,
    /// Request header and framing bytes.
    pub req_header_bytes: Option<u64>,
    /// Request body bytes.
    pub req_body_bytes: Option<u64>,
    /// Response header and framing bytes.
    pub resp_header_bytes: Option<u64>,
    /// Response body bytes.
    pub resp_body_bytes: Option<u64>,
    /// Start → first response byte (server: written; client: read).
    pub first_byte_us: Option<u64>,
    /// Start → response complete, or the exchange's end when it failed.
    pub total_us: u64,
    /// The response was a stream, its body sent in pieces.
    pub streamed: bool,
    /// Client: the target asked for (`host:port`).
    pub upstream: Option<Text>,
    /// Client: it went out on a connection that had carried a request before.
    pub reused: Option<bool>,
    /// Client: time resolving the target's name for this request.
    pub dns_us: Option<u64>,
    /// Client: time connecting for this request.
    pub connect_us: Option<u64>,
    /// Why the exchange failed (a close reason, a timeout); `None` when it
    /// completed.
    pub error: Option<&'static str>,
}

impl RequestRecord {
    /// An empty record of `side` and protocol `proto`, starting now.
    pub fn new(side: Side, proto: &'static str) -> Self {
        Self::starting_at(side, proto, Instant::now())
    }

    /// An empty record of `side` and protocol `proto`, starting at `start`.
    pub fn starting_at(side: Side, proto: &'static str, start: Instant) -> Self {
        RequestRecord {
            conn_id: None,
            index: 0,
            side,
            proto,
            peer: None,
            start,
            method: Text::default(),
            path: Text::default(),
            status: None,
            req_header_bytes: None,
            req_body_bytes: None,
            resp_header_bytes: None,
            resp_body_bytes: None,
            first_byte_us: None,
            total_us: 0,
            streamed: false,
            upstream: None,
            reused: None,
            dns_us: None,
            connect_us: None,
            error: None,
        }
    }

    /// Wall-clock time of [`start`](Self::start).
    pub fn start_time(&self) -> SystemTime {
        clock::wall_time_of(self.start)
    }

    /// The keys of [`write_json`](Self::write_json)'s object, in order.
    pub const JSON_KEYS: [&'static str; 22] = [
        "kind",
        "conn_id",
        "index",
        "side",
        "proto",
        "peer",
        "start",
        "method",
        "path",
        "status",
        "req_header_bytes",
        "req_body_bytes",
        "resp_header_bytes",
        "resp_body_bytes",
        "first_byte_us",
        "total_us",
        "streamed",
        "upstream",
        "reused",
        "dns_us",
        "connect_us",
        "error",
    ];

    /// Appends this record as one JSON object (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_at(out, &clock::WallClock::now(), &mut TimeFormat::default());
    }

    /// [`write_json`](Self::write_json), with the clocks already read and
    /// the time's date part formatted (once for a batch of records).
    pub(super) fn write_json_at(
        &self,
        out: &mut Vec<u8>,
        wall: &clock::WallClock,
        time: &mut TimeFormat,
    ) {
        out.reserve(400);
        json_u64(out, b"{\"kind\":\"request\",\"conn_id\":", self.conn_id);
        json_u64(out, b",\"index\":", Some(u64::from(self.index)));
        out.extend_from_slice(b",\"side\":\"");
        out.extend_from_slice(self.side.as_str().as_bytes());
        out.extend_from_slice(b"\",\"proto\":");
        write_json_str(self.proto, out);
        out.extend_from_slice(b",\"peer\":");
        match self.peer {
            Some(a) => {
                out.push(b'"');
                write_addr(a, out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"start\":\"");
        time.write(wall.time_of(self.start), out);
        out.push(b'"');
        json_text(out, b",\"method\":", Some(&self.method));
        json_text(out, b",\"path\":", Some(&self.path));
        json_u64(out, b",\"status\":", self.status.map(u64::from));
        json_u64(out, b",\"req_header_bytes\":", self.req_header_bytes);
        json_u64(out, b",\"req_body_bytes\":", self.req_body_bytes);
        json_u64(out, b",\"resp_header_bytes\":", self.resp_header_bytes);
        json_u64(out, b",\"resp_body_bytes\":", self.resp_body_bytes);
        json_u64(out, b",\"first_byte_us\":", self.first_byte_us);
        json_u64(out, b",\"total_us\":", Some(self.total_us));
        out.extend_from_slice(if self.streamed {
            b",\"streamed\":true"
        } else {
            b",\"streamed\":false"
        });
        let client = (&self.upstream, self.reused, self.dns_us, self.connect_us);
        if let (None, None, None, None) = client {
            // A server's record: the client's fields in one piece.
            out.extend_from_slice(
                b",\"upstream\":null,\"reused\":null,\"dns_us\":null,\"connect_us\":null",
            );
        } else {
            json_text(out, b",\"upstream\":", self.upstream.as_ref());
            out.extend_from_slice(match self.reused {
                Some(true) => b",\"reused\":true",
                Some(false) => b",\"reused\":false",
                None => b",\"reused\":null",
            });
            json_u64(out, b",\"dns_us\":", self.dns_us);
            json_u64(out, b",\"connect_us\":", self.connect_us);
        }
        out.extend_from_slice(b",\"error\":");
        match self.error {
            Some(e) => write_json_str(e, out),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }

    /// This record as a JSON object in a new `String`.
    pub fn to_json(&self) -> String {
        let mut v = Vec::with_capacity(400);
        self.write_json(&mut v);
        // Everything written is ASCII or comes from a `&str`.
        String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// `key` and `v`, or `null`. Inlined, so the key's copy has a known length
/// (a few moves, not a call to `memcpy`).
#[inline(always)]
fn json_u64(out: &mut Vec<u8>, key: &[u8], v: Option<u64>) {
    out.extend_from_slice(key);
    match v {
        Some(v) => push_decimal(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `key` and the text as a JSON string, or `null` when there is none.
#[inline(always)]
fn json_text(out: &mut Vec<u8>, key: &[u8], v: Option<&Text>) {
    out.extend_from_slice(key);
    match v.map(Text::as_bytes) {
        Some(b) if !b.is_empty() => write_json_utf8(b, out),
        _ => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_inline_when_short_and_whole_when_long() {
        let short = Text::new("/a");
        assert!(matches!(short.0, Repr::Inline { len: 2, .. }));
        assert_eq!(short.as_str(), "/a");
        let exact = "x".repeat(INLINE);
        assert!(matches!(Text::new(&exact).0, Repr::Inline { .. }));
        let long = format!("/{}", "é".repeat(100));
        let t = Text::new(&long);
        assert!(matches!(t.0, Repr::Heap(_)));
        assert_eq!(t.as_str(), long);
    }

    #[test]
    fn json_has_every_key_in_order_and_escapes_text() {
        let mut r = RequestRecord::new(Side::Client, "http");
        r.conn_id = Some(7);
        r.index = 3;
        r.peer = Some("127.0.0.1:80".parse().unwrap());
        r.method = "POST".into();
        r.path = "/q?x=\"1\"".into();
        r.status = Some(404);
        r.req_header_bytes = Some(40);
        r.total_us = 1234;
        r.upstream = Some("example.test:80".into());
        r.reused = Some(true);
        r.error = Some("timeout");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want: Vec<&str> = RequestRecord::JSON_KEYS.to_vec();
        // serde_json's map is sorted by key.
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["kind"], "request");
        assert_eq!(v["path"], "/q?x=\"1\"");
        assert_eq!(v["status"], 404);
        assert_eq!(v["resp_body_bytes"], serde_json::Value::Null);
        assert_eq!(v["reused"], true);
        assert_eq!(v["error"], "timeout");
        assert_eq!(v["side"], "client");
    }

    #[test]
    fn unknown_text_is_null() {
        let r = RequestRecord::new(Side::Server, "echo");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["method"], serde_json::Value::Null);
        assert_eq!(v["path"], serde_json::Value::Null);
        assert_eq!(v["upstream"], serde_json::Value::Null);
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore]
    fn write_json_cost() {
        let mut r = RequestRecord::new(Side::Server, "http");
        r.method = "GET".into();
        r.path = "/".into();
        r.status = Some(200);
        r.conn_id = Some(6);
        r.index = 1;
        r.peer = Some("127.0.0.1:47352".parse().unwrap());
        r.req_header_bytes = Some(40);
        r.req_body_bytes = Some(0);
        r.resp_header_bytes = Some(102);
        r.resp_body_bytes = Some(13);
        r.first_byte_us = Some(79245);
        r.total_us = 79245;
        let wall = clock::WallClock::now();
        let mut time = TimeFormat::default();
        let mut buf = Vec::with_capacity(1 << 20);
        let n = 1_000_000;
        let t = Instant::now();
        for _ in 0..n {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            r.write_json_at(&mut buf, &wall, &mut time);
        }
        println!("write_json_at: {:?} per record", t.elapsed() / n);
        let t = Instant::now();
        for _ in 0..n {
            buf.clear();
            time.write(wall.time_of(r.start), &mut buf);
        }
        println!("time: {:?} per record", t.elapsed() / n);
        let t = Instant::now();
        for _ in 0..n {
            buf.clear();
            super::super::record::write_addr(r.peer.unwrap(), &mut buf);
        }
        println!("addr: {:?} per record", t.elapsed() / n);
    }
}
