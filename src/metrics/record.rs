//! One access-log record and its JSON form.
//!
//! A [`Record`] is a flat, heap-free snapshot of a closed connection's
//! [`ConnStats`]: cheap to take on the poller thread and to move through a
//! channel, so a writer thread can format it later. The JSON is written by hand
//! (no serde, no `fmt` on the common paths) into a caller's reusable buffer: one
//! object per record, keys in a fixed order, `null` for what does not apply.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::inplace::Cursor;
use super::{CloseReason, ConnStats, Side};

/// A snapshot of one connection's stats, field for field what the JSON record
/// holds. Times are microseconds; `None` means "does not apply" and is written as
/// `null`. `docs/access-log.md` defines each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Process-unique connection id.
    pub conn_id: u64,
    /// Server or client side.
    pub side: Side,
    /// Protocol name.
    pub proto: &'static str,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our address, if known at close.
    pub local: Option<SocketAddr>,
    /// Wall-clock time the connection started.
    pub start: SystemTime,
    /// Time spent resolving the peer's name (client).
    pub dns_us: Option<u64>,
    /// Start → connection established (client).
    pub connect_us: Option<u64>,
    /// The TLS handshake: accept (server) or connected (client) → done.
    pub tls_us: Option<u64>,
    /// The TLS protocol version (`TLSv1.3`).
    pub tls_version: Option<&'static str>,
    /// The TLS cipher suite's IANA name (`TLS13_AES_128_GCM_SHA256`).
    pub tls_cipher: Option<&'static str>,
    /// The TLS handshake resumed an earlier session.
    pub tls_resumed: Option<bool>,
    /// First exchange: request complete → first response byte.
    pub first_byte_us: Option<u64>,
    /// First exchange: request complete → response complete (or close).
    pub processing_us: Option<u64>,
    /// First exchange: first response byte → last response byte (or close).
    pub transfer_us: Option<u64>,
    /// Start → close.
    pub lifetime_us: Option<u64>,
    /// Request header and framing bytes, all requests.
    pub req_header_bytes: Option<u64>,
    /// Request body bytes, all requests.
    pub req_body_bytes: Option<u64>,
    /// Response header and framing bytes, all responses.
    pub resp_header_bytes: Option<u64>,
    /// Response body bytes, all responses.
    pub resp_body_bytes: Option<u64>,
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Requests served (server) or made (client).
    pub requests: u32,
    /// Why the connection closed.
    pub close_reason: Option<CloseReason>,
    /// Responses with a 4xx status (`None` if no response carried a status).
    pub status_4xx: Option<u32>,
    /// Responses with a 5xx status (`None` if no response carried a status).
    pub status_5xx: Option<u32>,
    /// Times writing paused on a full socket.
    pub write_pauses: u32,
    /// Total time writing was paused.
    pub paused_us: u64,
    /// Most bytes ever queued unwritten.
    pub peak_queued_bytes: u64,
    /// Total time a rate limiter held output back.
    pub ratelimit_delay_us: u64,
    /// Messages of flow-controlled streams sent.
    pub events_sent: u64,
    /// Stream events dropped by an overflow policy.
    pub events_dropped: u64,
}

impl From<&ConnStats> for Record {
    fn from(s: &ConnStats) -> Self {
        Record {
            conn_id: s.conn_id(),
            side: s.side(),
            proto: s.proto(),
            peer: s.peer(),
            local: s.local(),
            start: s.start_time(),
            dns_us: s.dns_us(),
            connect_us: s.connect_us(),
            tls_us: s.tls_us(),
            tls_version: s.tls_version(),
            tls_cipher: s.tls_cipher(),
            tls_resumed: s.tls_resumed(),
            first_byte_us: s.first_byte_us(),
            processing_us: s.processing_us(),
            transfer_us: s.transfer_us(),
            lifetime_us: s.lifetime_us(),
            req_header_bytes: s.request_header_bytes(),
            req_body_bytes: s.request_body_bytes(),
            resp_header_bytes: s.response_header_bytes(),
            resp_body_bytes: s.response_body_bytes(),
            bytes_in: s.bytes_in(),
            bytes_out: s.bytes_out(),
            requests: s.requests(),
            close_reason: s.close_reason(),
            status_4xx: s.status_4xx(),
            status_5xx: s.status_5xx(),
            write_pauses: s.write_pauses(),
            paused_us: s.paused_us(),
            peak_queued_bytes: s.peak_queued_bytes(),
            ratelimit_delay_us: s.ratelimit_delay_us(),
            events_sent: s.events_sent(),
            events_dropped: s.events_dropped(),
        }
    }
}

impl Record {
    /// The keys of [`write_json`](Self::write_json)'s object, in the order
    /// written (a header row for tools that want columns).
    pub const JSON_KEYS: [&'static str; 33] = [
        "kind",
        "conn_id",
        "side",
        "proto",
        "peer",
        "local",
        "start",
        "dns_us",
        "connect_us",
        "tls_us",
        "tls_version",
        "tls_cipher",
        "tls_resumed",
        "first_byte_us",
        "processing_us",
        "transfer_us",
        "lifetime_us",
        "req_header_bytes",
        "req_body_bytes",
        "resp_header_bytes",
        "resp_body_bytes",
        "bytes_in",
        "bytes_out",
        "requests",
        "close_reason",
        "status_4xx",
        "status_5xx",
        "write_pauses",
        "paused_us",
        "peak_queued_bytes",
        "ratelimit_delay_us",
        "events_sent",
        "events_dropped",
    ];

    /// Appends this record as one JSON object (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"{\"kind\":\"conn\",\"conn_id\":");
        out.extend_from_slice(n.format(self.conn_id).as_bytes());
        out.extend_from_slice(b",\"side\":\"");
        out.extend_from_slice(self.side.as_str().as_bytes());
        out.extend_from_slice(b"\",\"proto\":");
        write_json_str(self.proto, out);
        out.extend_from_slice(b",\"peer\":\"");
        write_addr(self.peer, out);
        out.extend_from_slice(b"\",\"local\":");
        match self.local {
            Some(a) => {
                out.push(b'"');
                write_addr(a, out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"start\":\"");
        write_rfc3339(self.start, out);
        out.push(b'"');
        let opt = |out: &mut Vec<u8>, key: &[u8], v: Option<u64>| {
            out.extend_from_slice(key);
            match v {
                Some(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        };
        opt(out, b",\"dns_us\":", self.dns_us);
        opt(out, b",\"connect_us\":", self.connect_us);
        opt(out, b",\"tls_us\":", self.tls_us);
        let text = |out: &mut Vec<u8>, key: &[u8], v: Option<&str>| {
            out.extend_from_slice(key);
            match v {
                Some(v) => write_json_str(v, out),
                None => out.extend_from_slice(b"null"),
            }
        };
        text(out, b",\"tls_version\":", self.tls_version);
        text(out, b",\"tls_cipher\":", self.tls_cipher);
        out.extend_from_slice(match self.tls_resumed {
            Some(true) => b",\"tls_resumed\":true",
            Some(false) => b",\"tls_resumed\":false",
            None => b",\"tls_resumed\":null",
        });
        opt(out, b",\"first_byte_us\":", self.first_byte_us);
        opt(out, b",\"processing_us\":", self.processing_us);
        opt(out, b",\"transfer_us\":", self.transfer_us);
        opt(out, b",\"lifetime_us\":", self.lifetime_us);
        opt(out, b",\"req_header_bytes\":", self.req_header_bytes);
        opt(out, b",\"req_body_bytes\":", self.req_body_bytes);
        opt(out, b",\"resp_header_bytes\":", self.resp_header_bytes);
        opt(out, b",\"resp_body_bytes\":", self.resp_body_bytes);
        opt(out, b",\"bytes_in\":", Some(self.bytes_in));
        opt(out, b",\"bytes_out\":", Some(self.bytes_out));
        opt(out, b",\"requests\":", Some(u64::from(self.requests)));
        out.extend_from_slice(b",\"close_reason\":");
        match self.close_reason {
            Some(r) => {
                out.push(b'"');
                out.extend_from_slice(r.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        opt(out, b",\"status_4xx\":", self.status_4xx.map(u64::from));
        opt(out, b",\"status_5xx\":", self.status_5xx.map(u64::from));
        opt(
            out,
            b",\"write_pauses\":",
            Some(u64::from(self.write_pauses)),
        );
        opt(out, b",\"paused_us\":", Some(self.paused_us));
        opt(
            out,
            b",\"peak_queued_bytes\":",
            Some(self.peak_queued_bytes),
        );
        opt(
            out,
            b",\"ratelimit_delay_us\":",
            Some(self.ratelimit_delay_us),
        );
        opt(out, b",\"events_sent\":", Some(self.events_sent));
        opt(out, b",\"events_dropped\":", Some(self.events_dropped));
        out.push(b'}');
    }

    /// This record as a JSON object in a new `String`.
    pub fn to_json(&self) -> String {
        let mut v = Vec::with_capacity(640);
        self.write_json(&mut v);
        // Everything written is ASCII or comes from a `&str`, so this never fails.
        String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

impl ConnStats {
    /// Appends this connection's record as one JSON object (no trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        Record::from(self).write_json(out);
    }
}

/// Writes `s` as a JSON string literal, escaping quotes, backslashes and control
/// characters.
pub(super) fn write_json_str(s: &str, out: &mut Vec<u8>) {
    write_json_utf8(s.as_bytes(), out);
}

/// [`write_json_str`] of bytes that are valid UTF-8 (taken from a `&str`);
/// escaping works on bytes, so they need not be checked again.
pub(super) fn write_json_utf8(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // The common case (a method, a path, a name) needs no escape: one copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Writes `a` as `Display` does (`1.2.3.4:80`, `[::1]:80`), IPv4 without `fmt`.
pub(super) fn write_addr(a: SocketAddr, out: &mut Vec<u8>) {
    match a {
        SocketAddr::V4(v4) => {
            // At most 21 bytes: formatted in a stack buffer, copied once.
            let mut buf = [0u8; 24];
            let mut n = 0;
            let mut put = |bytes: &[u8]| {
                if let Some(dst) = buf.get_mut(n..n + bytes.len()) {
                    dst.copy_from_slice(bytes);
                    n += bytes.len();
                }
            };
            let mut num = itoa::Buffer::new();
            let [a0, a1, a2, a3] = v4.ip().octets();
            for (octet, sep) in [(a0, b"."), (a1, b"."), (a2, b"."), (a3, b":")] {
                put(num.format(octet).as_bytes());
                put(sep);
            }
            put(num.format(v4.port()).as_bytes());
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        // Writing into a Vec cannot fail.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes `t` as RFC 3339 in UTC with microseconds: `2024-05-01T12:34:56.123456Z`.
/// Times outside years 0000–9999 are clamped to the nearest representable one.
pub(super) fn write_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let (secs, micros) = split_micros(t);
    write_until_second(secs, out);
    write_micros(micros, out);
}

/// `t` as whole seconds since the epoch and the microseconds past them,
/// clamped to 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999Z.
fn split_micros(t: SystemTime) -> (i64, u32) {
    // The common case, after 1970 and before 10000: no 128-bit division.
    if let Ok(d) = t.duration_since(UNIX_EPOCH) {
        if d.as_secs() < 253_402_300_800 {
            return (d.as_secs() as i64, d.subsec_micros());
        }
    }
    let total_us: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    };
    const MIN_US: i128 = -62_167_219_200 * 1_000_000;
    const MAX_US: i128 = 253_402_300_800 * 1_000_000 - 1;
    let total_us = total_us.clamp(MIN_US, MAX_US);
    (
        total_us.div_euclid(1_000_000) as i64,
        total_us.rem_euclid(1_000_000) as u32,
    )
}

/// `YYYY-MM-DDTHH:MM:SS.` of `secs` since the epoch.
fn write_until_second(secs: i64, out: &mut Vec<u8>) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let year = y.clamp(0, 9999) as u32;
    pad(out, year, 4);
    out.push(b'-');
    pad(out, m, 2);
    out.push(b'-');
    pad(out, d, 2);
    out.push(b'T');
    pad(out, sod / 3600, 2);
    out.push(b':');
    pad(out, sod / 60 % 60, 2);
    out.push(b':');
    pad(out, sod % 60, 2);
    out.push(b'.');
}

/// The six digits of `micros` and the `Z`.
fn write_micros(micros: u32, out: &mut Vec<u8>) {
    let mut digits = [b'0'; 7];
    digits[6] = b'Z';
    let mut v = micros;
    for d in digits[..6].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Writes RFC 3339 times like [`write_rfc3339`], formatting the part up to
/// the second once per second: a writer dating a stream of records.
#[derive(Debug, Default)]
pub(super) struct TimeFormat {
    /// The second `prefix` shows, if any yet.
    secs: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of that second.
    prefix: [u8; 20],
}

impl TimeFormat {
    /// Writes the time `secs` since the epoch and `micros` past them (as
    /// [`WallClock::unix_of`](super::clock::WallClock::unix_of) gives it).
    #[inline]
    pub(super) fn put(&mut self, (secs, micros): (i64, u32), c: &mut Cursor<'_>) {
        if self.secs != Some(secs) {
            self.new_second(secs);
        }
        c.put(&self.prefix);
        c.put_6_digits(micros);
        c.put(b"Z");
    }

    #[cold]
    #[inline(never)]
    fn new_second(&mut self, secs: i64) {
        let mut v = Vec::with_capacity(self.prefix.len());
        write_until_second(secs, &mut v);
        if let Some(p) = v.get(..self.prefix.len()) {
            self.prefix.copy_from_slice(p);
        }
        self.secs = Some(secs);
    }
}

/// Zero-padded decimal of `v` in at least `width` digits.
fn pad(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut n = itoa::Buffer::new();
    let s = n.format(v);
    for _ in s.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(s.as_bytes());
}

/// (year, month, day) of the proleptic Gregorian calendar for days since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    #[test]
    fn time_format_matches_write_rfc3339_across_seconds() {
        let mut cached = TimeFormat::default();
        let mut put = |t: SystemTime| {
            let mut buf = [0u8; 64];
            let mut c = Cursor::new(&mut buf);
            cached.put(split_micros(t), &mut c);
            let n = c.len();
            buf[..n].to_vec()
        };
        let base = UNIX_EPOCH + std::time::Duration::from_micros(1_764_480_000_999_990);
        for step in 0..40u64 {
            let t = base + std::time::Duration::from_micros(step * 3);
            let mut a = Vec::new();
            write_rfc3339(t, &mut a);
            assert_eq!(a, put(t));
        }
        let one = put(UNIX_EPOCH + std::time::Duration::from_micros(7));
        assert_eq!(one, b"1970-01-01T00:00:00.000007Z");
    }
    use std::time::{Duration, Instant};

    /// The record as parsed JSON, after checking that it is one line and that
    /// its keys are exactly [`Record::JSON_KEYS`], in that order.
    fn json_of(s: &ConnStats) -> Json {
        let mut out = Vec::new();
        s.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\n'));
        let j: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        // serde_json sorts an object's keys; their order is read from the text.
        let obj = j.as_object().unwrap();
        assert_eq!(obj.len(), Record::JSON_KEYS.len(), "{text}");
        let mut last = 0;
        for key in Record::JSON_KEYS {
            assert!(obj.contains_key(key), "{key} missing: {text}");
            let at = text.find(&format!("\"{key}\":")).unwrap();
            assert!(at > last, "{key} out of order: {text}");
            last = at;
        }
        j
    }

    /// `text` parsed as one JSON string.
    fn parse_str(text: &str) -> String {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn full_client_record() {
        let t0 = Instant::now();
        let peer: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
        let local: SocketAddr = "10.1.2.3:55000".parse().unwrap();
        let mut s = ConnStats::new_at(u64::MAX, Side::Client, "http", peer, t0);
        s.dns(Duration::from_micros(1500));
        s.connected(t0 + Duration::from_micros(700));
        s.tls_done(
            t0 + Duration::from_micros(1200),
            "TLSv1.3",
            "TLS13_AES_128_GCM_SHA256",
            true,
        );
        s.request_complete(t0 + Duration::from_micros(900), 120, 33);
        s.first_byte(t0 + Duration::from_micros(4900));
        s.response_complete(t0 + Duration::from_micros(5000), 80, 7000, Some(503));
        s.request_done();
        s.add_in(7080);
        s.add_out(153);
        s.pause(t0 + Duration::from_micros(800));
        s.resume(t0 + Duration::from_micros(850));
        s.queued(4096);
        s.add_ratelimit_delay(Duration::from_micros(12));
        s.add_events_sent(5);
        s.add_events_dropped(3);
        s.close_at(
            CloseReason::Local,
            Some(local),
            t0 + Duration::from_micros(6000),
        );

        let j = json_of(&s);
        assert_eq!(j["conn_id"].as_u64(), Some(u64::MAX));
        assert_eq!(j["side"].as_str(), Some("client"));
        assert_eq!(j["proto"].as_str(), Some("http"));
        assert_eq!(j["peer"].as_str(), Some("[2001:db8::5]:443"));
        assert_eq!(j["local"].as_str(), Some("10.1.2.3:55000"));
        let start = j["start"].as_str().unwrap();
        assert_eq!(start.len(), "2024-05-01T12:34:56.123456Z".len(), "{start}");
        assert!(
            start.ends_with('Z') && start.as_bytes()[10] == b'T',
            "{start}"
        );
        let expect = [
            ("dns_us", 1500),
            ("connect_us", 700),
            ("tls_us", 500),
            ("first_byte_us", 4000),
            ("processing_us", 4100),
            ("transfer_us", 100),
            ("lifetime_us", 6000),
            ("req_header_bytes", 120),
            ("req_body_bytes", 33),
            ("resp_header_bytes", 80),
            ("resp_body_bytes", 7000),
            ("bytes_in", 7080),
            ("bytes_out", 153),
            ("requests", 1),
            ("status_4xx", 0),
            ("status_5xx", 1),
            ("write_pauses", 1),
            ("paused_us", 50),
            ("peak_queued_bytes", 4096),
            ("ratelimit_delay_us", 12),
            ("events_sent", 5),
            ("events_dropped", 3),
        ];
        for (k, v) in expect {
            assert_eq!(j[k].as_u64(), Some(v), "{k}");
        }
        assert_eq!(j["close_reason"].as_str(), Some("local"));
        assert_eq!(j["tls_version"].as_str(), Some("TLSv1.3"));
        assert_eq!(j["tls_cipher"].as_str(), Some("TLS13_AES_128_GCM_SHA256"));
        assert_eq!(j["tls_resumed"].as_bool(), Some(true));
    }

    #[test]
    fn open_server_record_has_nulls() {
        let s = ConnStats::new(5, Side::Server, "echo", "127.0.0.1:9".parse().unwrap());
        let j = json_of(&s);
        for k in [
            "local",
            "dns_us",
            "connect_us",
            "tls_us",
            "tls_version",
            "tls_cipher",
            "tls_resumed",
            "first_byte_us",
            "processing_us",
            "transfer_us",
            "lifetime_us",
            "req_header_bytes",
            "req_body_bytes",
            "resp_header_bytes",
            "resp_body_bytes",
            "close_reason",
            "status_4xx",
            "status_5xx",
        ] {
            assert!(j.get(k).is_some_and(Json::is_null), "{k} should be null");
        }
        for k in [
            "bytes_in",
            "bytes_out",
            "requests",
            "write_pauses",
            "paused_us",
        ] {
            assert_eq!(j[k].as_u64(), Some(0), "{k}");
        }
        assert_eq!(j["peer"].as_str(), Some("127.0.0.1:9"));
    }

    #[test]
    fn strings_are_escaped() {
        let nasty = "a\"b\\c\nd\re\tf\u{8}\u{c}\u{0}\u{1f}\u{7f}é😀\u{2028}</script>";
        let mut out = Vec::new();
        write_json_str(nasty, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(parse_str(&text), nasty);
        // A proto name with a quote cannot break the record.
        let s = ConnStats::new(1, Side::Server, "x\"}{\"", "1.2.3.4:5".parse().unwrap());
        assert_eq!(json_of(&s)["proto"].as_str(), Some("x\"}{\""));
    }

    #[test]
    fn every_control_char_is_escaped() {
        for c in 0u8..0x20 {
            let s = String::from(char::from(c));
            let mut out = Vec::new();
            write_json_str(&s, &mut out);
            assert!(out.iter().all(|&b| b >= 0x20), "{c:#x}");
            assert_eq!(parse_str(std::str::from_utf8(&out).unwrap()), s);
        }
    }

    #[test]
    fn addresses_match_display() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a4 = SocketAddr::from(((x as u32).to_be_bytes(), (x >> 40) as u16));
            let mut out = Vec::new();
            write_addr(a4, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), a4.to_string());
        }
        let a6: SocketAddr = "[fe80::1%3]:8".parse().unwrap();
        let mut out = Vec::new();
        write_addr(a6, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "[fe80::1%3]:8");
    }

    fn rfc(t: SystemTime) -> String {
        let mut out = Vec::new();
        write_rfc3339(t, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3339_known_values() {
        let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us);
        assert_eq!(rfc(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc(at(951_782_400, 1)), "2000-02-29T00:00:00.000001Z");
        assert_eq!(
            rfc(at(1_700_000_000, 123_456)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            rfc(at(4_107_542_399, 999_999)),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH - Duration::from_micros(1)),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH - Duration::from_millis(1500)),
            "1969-12-31T23:59:58.500000Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH - Duration::from_secs(62_167_219_200)),
            "0000-01-01T00:00:00.000000Z"
        );
        // Out of range clamps instead of printing a five-digit year.
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn rfc3339_agrees_with_httpdate() {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let secs = (x >> 11) % 253_402_300_799;
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let ours = rfc(t);
            // "Sun, 06 Nov 1994 08:49:37 GMT"
            let h = httpdate::fmt_http_date(t);
            let p: Vec<&str> = h.split([' ', ':']).collect();
            let month = MONTHS.iter().position(|m| *m == p[2]).unwrap() + 1;
            let expect = format!(
                "{}-{:02}-{}T{}:{}:{}.000000Z",
                p[3], month, p[1], p[4], p[5], p[6]
            );
            assert_eq!(ours, expect, "secs {secs}");
        }
    }

    #[test]
    fn record_round_trips_stats() {
        let s = ConnStats::new(3, Side::Server, "http", "[::1]:1".parse().unwrap());
        let r = Record::from(&s);
        assert_eq!(r.conn_id, 3);
        assert_eq!(r.peer, s.peer());
        assert_eq!(r.to_json(), {
            let mut v = Vec::new();
            r.write_json(&mut v);
            String::from_utf8(v).unwrap()
        });
    }
}
