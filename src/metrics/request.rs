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
//! It is plain data, built on the thread that finished the exchange; short
//! text stays inline, so the common record costs no allocation. A
//! [`JsonLines`](super::JsonLines) sink formats it on that same thread, in
//! place (`inplace.rs`), into a buffer its writer thread takes.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::addrs::AddrCache;
use super::clock;
use super::inplace::{json_str_bound, needs_escape, Cursor, LineBuf, SLACK};
use super::record::TimeFormat;
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

    /// Inline text as its whole buffer and its length: copied whole when
    /// formatted, with no call to `memcpy`.
    fn window(&self) -> Option<(&[u8; INLINE], usize)> {
        match &self.0 {
            Repr::Inline { len, buf } => Some((buf, usize::from(*len))),
            Repr::Heap(_) => None,
        }
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

    /// Makes this record what [`starting_at`](Self::starting_at) makes, in
    /// place (for a record box reused from one exchange to the next). Every
    /// field is named, so a new one cannot keep a previous exchange's value.
    pub(crate) fn reset_at(&mut self, side: Side, proto: &'static str, start: Instant) {
        let RequestRecord {
            conn_id,
            index,
            side: s,
            proto: p,
            peer,
            start: t,
            method,
            path,
            status,
            req_header_bytes,
            req_body_bytes,
            resp_header_bytes,
            resp_body_bytes,
            first_byte_us,
            total_us,
            streamed,
            upstream,
            reused,
            dns_us,
            connect_us,
            error,
        } = self;
        (*conn_id, *index, *s, *p, *peer, *t) = (None, 0, side, proto, None, start);
        *method = Text::default();
        *path = Text::default();
        (*status, *req_header_bytes, *req_body_bytes) = (None, None, None);
        (*resp_header_bytes, *resp_body_bytes) = (None, None);
        (*first_byte_us, *total_us, *streamed) = (None, 0, false);
        (*upstream, *reused, *dns_us, *connect_us, *error) = (None, None, None, None, None);
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
        let start = out.len();
        out.resize(start + self.json_bound(), 0);
        let n = {
            let mut c = Cursor::new(out.get_mut(start..).unwrap_or_default());
            let mut time = TimeFormat::default();
            self.put_json(&mut c, &clock::WallClock::now(), &mut time, None);
            c.len()
        };
        out.truncate(start + n);
    }

    /// Appends this record as one line (with its `\n`) to `buf`, with the
    /// clocks already read, the time's date part formatted (once for a
    /// batch of records) and recent peers' addresses at hand.
    pub(super) fn write_line(
        &self,
        buf: &mut LineBuf,
        wall: &clock::WallClock,
        time: &mut TimeFormat,
        addrs: &mut AddrCache,
    ) {
        let mut c = Cursor::new(buf.spare(self.json_bound() + 1));
        self.put_json(&mut c, wall, time, Some(addrs));
        c.put(b"\n");
        let n = c.len();
        buf.commit(n);
    }

    /// Room [`put_json`](Self::put_json) needs: at most 700 bytes of keys,
    /// numbers, an address and a time, what the text may take escaped, and
    /// room for window copies.
    fn json_bound(&self) -> usize {
        let text = self.proto.len()
            + self.method.as_bytes().len()
            + self.path.as_bytes().len()
            + self.upstream.as_ref().map_or(0, |u| u.as_bytes().len())
            + self.error.map_or(0, str::len);
        700 + json_str_bound(text) + SLACK
    }

    /// Writes the JSON object; `c` has room for [`json_bound`](Self::json_bound).
    fn put_json(
        &self,
        c: &mut Cursor<'_>,
        wall: &clock::WallClock,
        time: &mut TimeFormat,
        addrs: Option<&mut AddrCache>,
    ) {
        c.put(b"{\"kind\":\"request\",\"conn_id\":");
        c.put_opt_u64(self.conn_id);
        c.put(b",\"index\":");
        c.put_u64(u64::from(self.index));
        c.put(match self.side {
            Side::Server => b",\"side\":\"server\",\"proto\":",
            Side::Client => b",\"side\":\"client\",\"proto\":",
        });
        c.put_json_utf8(self.proto.as_bytes());
        match self.peer {
            Some(a) => {
                c.put(b",\"peer\":\"");
                match addrs {
                    Some(cache) => cache.put(a, c),
                    None => c.put_addr(a),
                }
                c.put(b"\",\"start\":\"");
            }
            None => c.put(b",\"peer\":null,\"start\":\""),
        }
        time.put(wall.unix_of(self.start), c);
        c.put(b"\",\"method\":");
        put_text(c, Some(&self.method));
        c.put(b",\"path\":");
        put_text(c, Some(&self.path));
        c.put(b",\"status\":");
        c.put_opt_u64(self.status.map(u64::from));
        c.put(b",\"req_header_bytes\":");
        c.put_opt_u64(self.req_header_bytes);
        c.put(b",\"req_body_bytes\":");
        c.put_opt_u64(self.req_body_bytes);
        c.put(b",\"resp_header_bytes\":");
        c.put_opt_u64(self.resp_header_bytes);
        c.put(b",\"resp_body_bytes\":");
        c.put_opt_u64(self.resp_body_bytes);
        c.put(b",\"first_byte_us\":");
        c.put_opt_u64(self.first_byte_us);
        c.put(b",\"total_us\":");
        c.put_u64(self.total_us);
        let client = (&self.upstream, self.reused, self.dns_us, self.connect_us);
        let server = matches!(client, (None, None, None, None));
        if server && !self.streamed && self.error.is_none() {
            // The common end of a server's line, in one piece.
            c.put(b",\"streamed\":false,\"upstream\":null,\"reused\":null,\"dns_us\":null,\"connect_us\":null,\"error\":null}");
            return;
        }
        if self.streamed {
            c.put(b",\"streamed\":true,\"upstream\":");
        } else {
            c.put(b",\"streamed\":false,\"upstream\":");
        }
        if server {
            // A server's record: the client's fields in one piece.
            c.put(b"null,\"reused\":null,\"dns_us\":null,\"connect_us\":null");
        } else {
            put_text(c, self.upstream.as_ref());
            match self.reused {
                Some(true) => c.put(b",\"reused\":true"),
                Some(false) => c.put(b",\"reused\":false"),
                None => c.put(b",\"reused\":null"),
            }
            c.put(b",\"dns_us\":");
            c.put_opt_u64(self.dns_us);
            c.put(b",\"connect_us\":");
            c.put_opt_u64(self.connect_us);
        }
        match self.error {
            Some(e) => {
                c.put(b",\"error\":");
                c.put_json_utf8(e.as_bytes());
                c.put(b"}");
            }
            None => c.put(b",\"error\":null}"),
        }
    }

    /// This record as a JSON object in a new `String`.
    pub fn to_json(&self) -> String {
        let mut v = Vec::with_capacity(400);
        self.write_json(&mut v);
        // Everything written is ASCII or comes from a `&str`.
        String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// The text as a JSON string, or `null` when there is none (or it is
/// empty). Inline text that needs no escape is copied as a window.
#[inline(always)]
fn put_text(c: &mut Cursor<'_>, v: Option<&Text>) {
    let Some(t) = v.filter(|t| !t.as_bytes().is_empty()) else {
        c.put(b"null");
        return;
    };
    match t.window() {
        Some((buf, len)) if !needs_escape(buf.get(..len).unwrap_or_default()) => {
            c.put(b"\"");
            c.put_window(buf, len);
            c.put(b"\"");
        }
        _ => c.put_json_utf8(t.as_bytes()),
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
    fn lines_hold_every_field_whatever_the_text_and_address() {
        let wall = clock::WallClock::now();
        let mut time = TimeFormat::default();
        let long = format!("/{}?q=\"x\"", "é".repeat(40));
        let cases: [(&str, &str, Option<SocketAddr>); 4] = [
            ("GET", "/", Some("127.0.0.1:47352".parse().unwrap())),
            ("POST", "/a\tb\\c", Some("[fe80::1%2]:443".parse().unwrap())),
            ("GET", &long, None),
            ("M\u{1}", "/x/y?z=1", Some("255.0.10.9:1".parse().unwrap())),
        ];
        for (i, (method, path, peer)) in cases.into_iter().enumerate() {
            let start = Instant::now() - std::time::Duration::from_millis(1500 * i as u64);
            let mut r = RequestRecord::starting_at(Side::Server, "http", start);
            r.conn_id = Some(u64::MAX - i as u64);
            r.index = u32::MAX;
            r.peer = peer;
            r.method = method.into();
            r.path = path.into();
            r.status = Some(200 + i as u16);
            r.req_header_bytes = Some(10u64.pow(i as u32 * 3));
            r.resp_body_bytes = Some(0);
            r.first_byte_us = Some(99);
            r.total_us = 1_000_000;
            r.streamed = i % 2 == 1;
            if i == 3 {
                r.side = Side::Client;
                r.upstream = Some("a.test:80".into());
                r.reused = Some(false);
                r.dns_us = Some(12);
                r.error = Some("timeout");
            }
            let mut buf = LineBuf::default();
            r.write_line(&mut buf, &wall, &mut time, &mut AddrCache::default());
            let line = std::str::from_utf8(buf.as_bytes()).unwrap();
            assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["conn_id"], r.conn_id.unwrap());
            assert_eq!(v["index"], r.index);
            assert_eq!(v["side"], r.side.as_str());
            assert_eq!(v["peer"].as_str(), peer.map(|p| p.to_string()).as_deref());
            let mut want = Vec::new();
            super::super::record::write_rfc3339(wall.time_of(start), &mut want);
            assert_eq!(v["start"].as_str().unwrap().as_bytes(), want);
            assert_eq!(v["method"], method);
            assert_eq!(v["path"], path);
            assert_eq!(v["status"], 200 + i);
            assert_eq!(v["req_header_bytes"], 10u64.pow(i as u32 * 3));
            assert_eq!(v["req_body_bytes"], serde_json::Value::Null);
            assert_eq!(v["resp_body_bytes"], 0);
            assert_eq!(v["first_byte_us"], 99);
            assert_eq!(v["total_us"], 1_000_000);
            assert_eq!(v["streamed"], i % 2 == 1);
            let client = i == 3;
            assert_eq!(v["upstream"].as_str(), client.then_some("a.test:80"));
            assert_eq!(v["reused"].as_bool(), client.then_some(false));
            assert_eq!(v["dns_us"].as_u64(), client.then_some(12));
            assert_eq!(v["connect_us"], serde_json::Value::Null);
            assert_eq!(v["error"].as_str(), client.then_some("timeout"));
            // The same object as `write_json` writes.
            let mut whole = Vec::new();
            r.write_json(&mut whole);
            let w: serde_json::Value = serde_json::from_slice(&whole).unwrap();
            assert_eq!(w["path"], v["path"]);
            assert_eq!(w.as_object().unwrap().len(), RequestRecord::JSON_KEYS.len());
        }
    }

    #[test]
    fn a_reset_record_is_a_new_one() {
        let start = Instant::now();
        let mut r = RequestRecord::new(Side::Client, "redis");
        r.conn_id = Some(3);
        r.method = "x".repeat(100).as_str().into();
        r.upstream = Some("a:1".into());
        r.error = Some("e");
        r.streamed = true;
        r.total_us = 9;
        r.reset_at(Side::Server, "http", start);
        assert_eq!(r, RequestRecord::starting_at(Side::Server, "http", start));
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
        let mut buf = LineBuf::default();
        let mut addrs = AddrCache::default();
        let n = 1_000_000;
        let t = Instant::now();
        for _ in 0..n {
            if buf.as_bytes().len() > (1 << 19) {
                buf.clear();
            }
            r.write_line(&mut buf, &wall, &mut time, &mut addrs);
        }
        println!("write_line: {:?} per record", t.elapsed() / n);
    }
}
