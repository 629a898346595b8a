//! [`ConnStats`]: what one connection did, kept small because every idle
//! connection carries one.
//!
//! # Layout
//!
//! The budget for an idle keep-alive connection is 0.4 KiB of process memory, all
//! structures included, so this struct is packed by hand (96 bytes on 64-bit
//! targets, asserted by a test):
//!
//! - the start is nanoseconds since a process-wide anchor (8 bytes instead of an
//!   [`Instant`]'s 16), and the wall-clock start is derived when asked for;
//! - every later timestamp is microseconds since that start, and every size and
//!   duration is a `u32` slot. A value that does not fit (a body over 4 GiB, a
//!   connection older than 71 minutes) *spills*: the slot holds a marker and the
//!   exact `u64` lives out of line. Nothing saturates and nothing wraps;
//! - the protocol name is a one-byte index (see `intern`), the peer address is 18
//!   bytes (IPv6 flow info and scope id, almost always zero, go out of line);
//! - rarely used counters (4xx/5xx counts, write pauses and paused time, peak
//!   queued bytes, rate-limit delay, dropped events) and the local address (known
//!   only at close) live in a [`Rare`] box allocated on first use. A connection
//!   that only served successful requests never allocates it.
//!
//! # Which request the timings describe
//!
//! The record is per connection, but a keep-alive connection carries many
//! exchanges. `first_byte`, `processing` and `transfer` describe the **first**
//! exchange, like curl's `-w` timing breakdown of a fresh connection
//! (`time_namelookup`, `time_connect`, `time_starttransfer`, `time_total`);
//! together with DNS and connect they say what a new connection cost. The sizes
//! and counters are totals over every exchange on the connection.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant, SystemTime};

use super::{clock, intern};

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// We accepted the connection.
    Server,
    /// We opened the connection.
    Client,
}

impl Side {
    /// `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection closed. Each reason is its own value so logs and counters can
/// tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer closed its end (read returned 0) between messages.
    PeerClosed,
    /// No new request arrived within the keep-alive timeout.
    KeepAliveTimeout,
    /// A message did not arrive in full within the receive timeout.
    ReceiveTimeout,
    /// Queued output could not be written within the send timeout.
    SendTimeout,
    /// The connection could not be established within the connect timeout.
    ConnectTimeout,
    /// The peer reset the connection (ECONNRESET, EPIPE) or a socket error occurred.
    Reset,
    /// The peer sent something the protocol could not parse.
    ProtocolError,
    /// A limit was exceeded (message size, outbound queue hard limit, refused at
    /// `max_connections`).
    LimitExceeded,
    /// Closed to make room for a new connection at `max_connections`.
    Evicted,
    /// The server shut down.
    ServerShutdown,
    /// Closed by this side deliberately (e.g. `Connection: close`, a task's choice).
    Local,
    /// User code serving the connection panicked (a server answered 500 first
    /// when it could).
    InternalError,
    /// A stream's consumer fell behind its flow control's bound, or made no
    /// progress for its stall timeout, under the `Disconnect` overflow policy.
    SlowConsumer,
    /// TLS failed: a handshake that failed (plain text sent to a TLS port,
    /// a name the server has no certificate for, a certificate the client
    /// refused, a protocol violation) or did not finish within the
    /// handshake timeout, or a record that did not decrypt.
    TlsError,
}

impl CloseReason {
    /// Every reason, in declaration order (the order of [`index`](Self::index)).
    pub const ALL: [CloseReason; 14] = [
        CloseReason::PeerClosed,
        CloseReason::KeepAliveTimeout,
        CloseReason::ReceiveTimeout,
        CloseReason::SendTimeout,
        CloseReason::ConnectTimeout,
        CloseReason::Reset,
        CloseReason::ProtocolError,
        CloseReason::LimitExceeded,
        CloseReason::Evicted,
        CloseReason::ServerShutdown,
        CloseReason::Local,
        CloseReason::InternalError,
        CloseReason::SlowConsumer,
        CloseReason::TlsError,
    ];

    /// The snake_case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::KeepAliveTimeout => "keep_alive_timeout",
            CloseReason::ReceiveTimeout => "receive_timeout",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::Reset => "reset",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::LimitExceeded => "limit_exceeded",
            CloseReason::Evicted => "evicted",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::Local => "local",
            CloseReason::InternalError => "internal_error",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::TlsError => "tls_error",
        }
    }

    /// The position of this reason in [`ALL`](Self::ALL), for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Slots of `ConnStats::small`. Sizes are bytes, times are microseconds.
const BYTES_IN: usize = 0;
const BYTES_OUT: usize = 1;
const REQ_HEAD: usize = 2;
const REQ_BODY: usize = 3;
const RESP_HEAD: usize = 4;
const RESP_BODY: usize = 5;
/// Start → close, set at close.
const LIFETIME: usize = 6;
/// Sum of reported DNS durations.
const DNS: usize = 7;
/// Start → connected.
const CONNECT: usize = 8;
/// Start → first request complete (the *mark*) until the first exchange is done,
/// then that exchange's processing time.
const MARK: usize = 9;
/// First request complete → first response byte.
const FIRST_BYTE: usize = 10;
/// Requests served or made; saturates (never spills).
const REQUESTS: usize = 11;
const SLOTS: usize = 12;

/// A slot holding this value has its exact value in [`Rare::wide`].
const SPILLED: u32 = u32::MAX;

// Bits of `ConnStats::flags`.
/// `dns` was reported.
const F_DNS: u8 = 1 << 0;
/// `connected` was reported.
const F_CONNECT: u8 = 1 << 1;
/// A request completed: `MARK` is set and the request sizes apply.
const F_REQ: u8 = 1 << 2;
/// The first exchange's first byte is known: `FIRST_BYTE` is set.
const F_FB: u8 = 1 << 3;
/// The first exchange is over: `MARK` holds its processing time.
const F_DONE: u8 = 1 << 4;
/// A response completed: the response sizes apply.
const F_RESP: u8 = 1 << 5;
/// A response carried a status: the 4xx/5xx counts apply.
const F_STATUS: u8 = 1 << 6;
/// The peer is IPv6.
const F_V6: u8 = 1 << 7;

/// What one connection did: identity, sizes, timings and trouble.
///
/// Filled by the runtime as events happen, final once the connection has closed
/// (when [`close_reason`](Self::close_reason) is `Some`). `docs/access-log.md`
/// defines every value. Getters return `None` for what does not apply to this
/// connection (no DNS on an accepted connection, no response yet), never a
/// made-up zero.
#[derive(Clone)]
pub struct ConnStats {
    /// Start, as nanoseconds since `clock::anchor()`.
    start_ns: u64,
    conn_id: u64,
    rare: Option<Box<Rare>>,
    small: [u32; SLOTS],
    /// IPv4 in the first four bytes, or IPv6 when `F_V6` is set.
    ip: [u8; 16],
    port: u16,
    proto: u8,
    flags: u8,
    side: Side,
    close_reason: Option<CloseReason>,
}

/// What most connections never need; allocated on first use.
#[derive(Clone, Default)]
struct Rare {
    /// Exact values of spilled slots.
    wide: Option<Box<[u64; SLOTS]>>,
    local: Option<SocketAddr>,
    peak_queued: u64,
    paused_us: u64,
    /// Start → current write pause began.
    paused_since_us: Option<u64>,
    ratelimit_delay_us: u64,
    events_sent: u64,
    events_dropped: u64,
    status_4xx: u32,
    status_5xx: u32,
    write_pauses: u32,
    flowinfo: u32,
    scope_id: u32,
    /// A TLS handshake: its time (µs), protocol version, cipher suite and
    /// whether it resumed a session (boxed: most connections that need
    /// `Rare` are not TLS).
    tls: Option<Box<(u64, &'static str, &'static str, bool)>>,
}

impl ConnStats {
    /// Stats for a connection starting now.
    pub fn new(conn_id: u64, side: Side, proto: &'static str, peer: SocketAddr) -> Self {
        Self::new_at(conn_id, side, proto, peer, Instant::now())
    }

    /// Stats for a connection that started at `start` (the accept, or the
    /// `connect()` call; DNS comes before it). Lets the caller share one clock read.
    pub(crate) fn new_at(
        conn_id: u64,
        side: Side,
        proto: &'static str,
        peer: SocketAddr,
        start: Instant,
    ) -> Self {
        let mut s = ConnStats {
            start_ns: clock::to_nanos(start),
            conn_id,
            rare: None,
            small: [0; SLOTS],
            ip: [0; 16],
            port: peer.port(),
            proto: intern::intern(proto),
            flags: 0,
            side,
            close_reason: None,
        };
        match peer {
            SocketAddr::V4(a) => {
                let [a0, a1, a2, a3] = a.ip().octets();
                s.ip = [a0, a1, a2, a3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            }
            SocketAddr::V6(a) => {
                s.ip = a.ip().octets();
                s.flags |= F_V6;
                if a.flowinfo() != 0 || a.scope_id() != 0 {
                    let r = s.rare_mut();
                    r.flowinfo = a.flowinfo();
                    r.scope_id = a.scope_id();
                }
            }
        }
        s
    }

    // ---- identity ----

    /// Process-unique connection id.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }
    /// Server or client side.
    pub fn side(&self) -> Side {
        self.side
    }
    /// Protocol name (`"http"`, `"echo"`...). After 255 distinct names in one
    /// process, further names read as `"other"`.
    pub fn proto(&self) -> &'static str {
        intern::name(self.proto)
    }
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        if self.flags & F_V6 != 0 {
            let (flow, scope) = self
                .rare
                .as_ref()
                .map_or((0, 0), |r| (r.flowinfo, r.scope_id));
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(self.ip),
                self.port,
                flow,
                scope,
            ))
        } else {
            let [a0, a1, a2, a3, ..] = self.ip;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a0, a1, a2, a3), self.port))
        }
    }
    /// Our address, filled when the connection closes (if the runtime knew it).
    pub fn local(&self) -> Option<SocketAddr> {
        self.rare.as_ref().and_then(|r| r.local)
    }
    /// Wall-clock time the connection started: the current wall clock minus the
    /// monotonic time elapsed since [`start_instant`](Self::start_instant).
    pub fn start_time(&self) -> SystemTime {
        clock::wall_time_of(self.start_instant())
    }
    /// Monotonic time the connection started (accept, or the `connect()` call).
    pub fn start_instant(&self) -> Instant {
        clock::from_nanos(self.start_ns)
    }

    // ---- timings ----

    /// Total time spent resolving the peer's name (client; `None` when no lookup
    /// was reported).
    pub fn dns_time(&self) -> Option<Duration> {
        self.dns_us().map(Duration::from_micros)
    }
    /// Start → connection established (client; `None` on accepted connections and
    /// until connected).
    pub fn connect_time(&self) -> Option<Duration> {
        self.connect_us().map(Duration::from_micros)
    }
    /// The TLS handshake: accept → handshake done (server), connected →
    /// handshake done (client). `None` without TLS and until it is done.
    pub fn tls_time(&self) -> Option<Duration> {
        self.tls_us().map(Duration::from_micros)
    }
    /// The TLS protocol version (`TLSv1.3`, `TLSv1.2`); `None` without TLS
    /// and until the handshake is done.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.rare.as_ref()?.tls.as_ref().map(|t| t.1)
    }
    /// The TLS cipher suite, by its IANA name (`TLS13_AES_128_GCM_SHA256`);
    /// `None` without TLS and until the handshake is done.
    pub fn tls_cipher(&self) -> Option<&'static str> {
        self.rare.as_ref()?.tls.as_ref().map(|t| t.2)
    }
    /// Whether the TLS handshake resumed an earlier session (no certificate
    /// exchanged); `None` without TLS and until the handshake is done.
    pub fn tls_resumed(&self) -> Option<bool> {
        self.rare.as_ref()?.tls.as_ref().map(|t| t.3)
    }
    /// First exchange: request complete → first response byte (server: last
    /// request byte read → first response byte written; client: last request byte
    /// written → first response byte read). `None` until known.
    pub fn first_byte_time(&self) -> Option<Duration> {
        self.first_byte_us().map(Duration::from_micros)
    }
    /// First exchange: request complete → response complete (or → close, if the
    /// connection closed before the response completed). `None` until then.
    pub fn processing_time(&self) -> Option<Duration> {
        self.processing_us().map(Duration::from_micros)
    }
    /// First exchange: first response byte → last response byte (or → close).
    /// `None` until then, or if no response byte ever moved.
    pub fn transfer_time(&self) -> Option<Duration> {
        self.transfer_us().map(Duration::from_micros)
    }
    /// How long the connection lived; `None` while it is open.
    pub fn lifetime(&self) -> Option<Duration> {
        self.lifetime_us().map(Duration::from_micros)
    }

    // ---- sizes ----

    /// Request header (and framing) bytes, all requests; `None` if no request
    /// completed.
    pub fn request_header_bytes(&self) -> Option<u64> {
        self.if_flag(F_REQ, REQ_HEAD)
    }
    /// Request body bytes, all requests; `None` if no request completed.
    pub fn request_body_bytes(&self) -> Option<u64> {
        self.if_flag(F_REQ, REQ_BODY)
    }
    /// Response header (and framing) bytes, all responses; `None` if no response
    /// completed.
    pub fn response_header_bytes(&self) -> Option<u64> {
        self.if_flag(F_RESP, RESP_HEAD)
    }
    /// Response body bytes, all responses; `None` if no response completed.
    pub fn response_body_bytes(&self) -> Option<u64> {
        self.if_flag(F_RESP, RESP_BODY)
    }
    /// Bytes read from the socket.
    pub fn bytes_in(&self) -> u64 {
        self.get(BYTES_IN)
    }
    /// Bytes written to the socket.
    pub fn bytes_out(&self) -> u64 {
        self.get(BYTES_OUT)
    }
    /// Requests served (server) or made (client) on this connection.
    pub fn requests(&self) -> u32 {
        self.small[REQUESTS]
    }

    // ---- trouble ----

    /// Why the connection closed; `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }
    /// Responses with a 4xx status; `None` if no response carried a status.
    pub fn status_4xx(&self) -> Option<u32> {
        (self.flags & F_STATUS != 0).then(|| self.rare.as_ref().map_or(0, |r| r.status_4xx))
    }
    /// Responses with a 5xx status; `None` if no response carried a status.
    pub fn status_5xx(&self) -> Option<u32> {
        (self.flags & F_STATUS != 0).then(|| self.rare.as_ref().map_or(0, |r| r.status_5xx))
    }
    /// How many times writing paused because the socket did not take everything.
    pub fn write_pauses(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.write_pauses)
    }
    /// Total time spent paused (a pause still going on counts once it ends or the
    /// connection closes).
    pub fn paused_time(&self) -> Duration {
        Duration::from_micros(self.paused_us())
    }
    /// The most bytes that were ever queued unwritten.
    pub fn peak_queued_bytes(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.peak_queued)
    }
    /// Total time a rate limiter held output back.
    pub fn ratelimit_delay(&self) -> Duration {
        Duration::from_micros(self.ratelimit_delay_us())
    }
    /// Messages of flow-controlled streams released to the socket on this
    /// connection (heartbeats and gap notes not counted).
    pub fn events_sent(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.events_sent)
    }
    /// Stream events dropped by an overflow policy (drop-oldest) on this connection.
    pub fn events_dropped(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.events_dropped)
    }

    // ---- raw microsecond values for the record writer ----

    pub(super) fn dns_us(&self) -> Option<u64> {
        self.if_flag(F_DNS, DNS)
    }
    pub(super) fn tls_us(&self) -> Option<u64> {
        self.rare.as_ref()?.tls.as_ref().map(|t| t.0)
    }
    pub(super) fn connect_us(&self) -> Option<u64> {
        self.if_flag(F_CONNECT, CONNECT)
    }
    pub(super) fn first_byte_us(&self) -> Option<u64> {
        self.if_flag(F_FB, FIRST_BYTE)
    }
    pub(super) fn processing_us(&self) -> Option<u64> {
        self.if_flag(F_DONE, MARK)
    }
    pub(super) fn transfer_us(&self) -> Option<u64> {
        let fb = self.first_byte_us()?;
        Some(self.processing_us()?.saturating_sub(fb))
    }
    pub(super) fn lifetime_us(&self) -> Option<u64> {
        self.close_reason.map(|_| self.get(LIFETIME))
    }
    pub(super) fn paused_us(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.paused_us)
    }
    pub(super) fn ratelimit_delay_us(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.ratelimit_delay_us)
    }

    // ---- events, called by the runtime ----

    /// Whether the exchange events below still read their `now`: only the
    /// first exchange is timed, so later ones need no clock read (a write
    /// pause is timed on its own).
    pub(crate) fn wants_clock(&self) -> bool {
        self.flags & F_DONE == 0
    }

    /// `n` bytes were read from the socket.
    pub(crate) fn add_in(&mut self, n: usize) {
        self.add(BYTES_IN, n as u64);
    }
    /// `n` bytes were written to the socket.
    pub(crate) fn add_out(&mut self, n: usize) {
        self.add(BYTES_OUT, n as u64);
    }
    /// One more request was served (server) or made (client).
    pub(crate) fn request_done(&mut self) {
        self.small[REQUESTS] = self.small[REQUESTS].saturating_add(1);
    }
    /// `queued` bytes are waiting in the outbound queue after a write attempt.
    /// Tracks the peak; `0` costs nothing (no allocation).
    pub(crate) fn queued(&mut self, queued: usize) {
        let q = queued as u64;
        if q > self.peak_queued_bytes() {
            self.rare_mut().peak_queued = q;
        }
    }
    /// Writing paused at `now` (the socket did not take everything). A pause while
    /// already paused is ignored.
    pub(crate) fn pause(&mut self, now: Instant) {
        let at = self.offset_us(now);
        let r = self.rare_mut();
        if r.paused_since_us.is_none() {
            r.write_pauses = r.write_pauses.saturating_add(1);
            r.paused_since_us = Some(at);
        }
    }
    /// Writing resumed at `now`; the pause's length is added to the paused time.
    /// Cheap when not paused: no allocation, no arithmetic.
    pub(crate) fn resume(&mut self, now: Instant) {
        let start_ns = self.start_ns;
        if let Some(r) = self.rare.as_deref_mut() {
            if let Some(since) = r.paused_since_us.take() {
                let at = offset_us(start_ns, now);
                r.paused_us = r.paused_us.saturating_add(at.saturating_sub(since));
            }
        }
    }
    /// Name resolution for this connection took `d` (client). Several lookups add up.
    pub(crate) fn dns(&mut self, d: Duration) {
        self.add(DNS, clock::micros(d));
        self.flags |= F_DNS;
    }
    /// The connection was established at `now` (client: the non-blocking connect
    /// completed). Only the first call counts.
    /// A TLS handshake finished at `now`, agreeing on `version` and
    /// `cipher`, `resumed` or not. Server: timed from the start (accept);
    /// client: from `connected`.
    pub(crate) fn tls_done(
        &mut self,
        now: Instant,
        version: &'static str,
        cipher: &'static str,
        resumed: bool,
    ) {
        let from = self.connect_us().unwrap_or(0);
        let us = self.offset_us(now).saturating_sub(from);
        self.rare_mut().tls = Some(Box::new((us, version, cipher, resumed)));
    }
    pub(crate) fn connected(&mut self, now: Instant) {
        if self.flags & F_CONNECT == 0 {
            let at = self.offset_us(now);
            self.set(CONNECT, at);
            self.flags |= F_CONNECT;
        }
    }
    /// A request became complete at `now` with `head` header/framing bytes and
    /// `body` payload bytes. Server: its last byte was read and parsed. Client: its
    /// last byte was written to the socket. The first call starts the first
    /// exchange's clock.
    pub(crate) fn request_complete(&mut self, now: Instant, head: u64, body: u64) {
        self.add(REQ_HEAD, head);
        self.add(REQ_BODY, body);
        if self.flags & F_REQ == 0 {
            let at = self.offset_us(now);
            self.set(MARK, at);
            self.flags |= F_REQ;
        }
    }
    /// Server: the first byte of a response was written to the socket at `now`.
    /// Only the first exchange's counts; ignored before any request completed.
    pub(crate) fn response_started(&mut self, now: Instant) {
        self.mark_first_byte(now);
    }
    /// Client: the first byte of a response was read from the socket at `now`.
    /// Only the first exchange's counts; ignored before any request was written.
    pub(crate) fn first_byte(&mut self, now: Instant) {
        self.mark_first_byte(now);
    }
    /// A response became complete at `now` (server: last byte written; client:
    /// last byte read) with `head` header/framing bytes, `body` payload bytes and,
    /// if the protocol has one, a `status` for the 4xx/5xx counters. If no first
    /// byte was reported for the first exchange, the response went out in one
    /// piece: its first byte counts as written at `now`.
    pub(crate) fn response_complete(
        &mut self,
        now: Instant,
        head: u64,
        body: u64,
        status: Option<u16>,
    ) {
        self.add(RESP_HEAD, head);
        self.add(RESP_BODY, body);
        self.flags |= F_RESP;
        if let Some(code) = status {
            self.flags |= F_STATUS;
            match code {
                400..=499 => {
                    let r = self.rare_mut();
                    r.status_4xx = r.status_4xx.saturating_add(1);
                }
                500..=599 => {
                    let r = self.rare_mut();
                    r.status_5xx = r.status_5xx.saturating_add(1);
                }
                _ => {}
            }
        }
        if self.flags & (F_REQ | F_DONE) == F_REQ {
            self.mark_first_byte(now);
            self.finish_first_exchange(now);
        }
    }
    /// A rate limiter held this connection's output back for `d`.
    pub(crate) fn add_ratelimit_delay(&mut self, d: Duration) {
        let us = clock::micros(d);
        if us > 0 {
            let r = self.rare_mut();
            r.ratelimit_delay_us = r.ratelimit_delay_us.saturating_add(us);
        }
    }
    /// `n` stream events (messages of a flow-controlled stream) went out.
    pub(crate) fn add_events_sent(&mut self, n: u64) {
        if n > 0 {
            let r = self.rare_mut();
            r.events_sent = r.events_sent.saturating_add(n);
        }
    }
    /// `n` stream events were dropped by the stream's overflow policy.
    pub(crate) fn add_events_dropped(&mut self, n: u64) {
        if n > 0 {
            let r = self.rare_mut();
            r.events_dropped = r.events_dropped.saturating_add(n);
        }
    }
    /// Marks the connection closed now. Only the first reason counts.
    pub(crate) fn close(&mut self, reason: CloseReason, local: Option<SocketAddr>) {
        self.close_at(reason, local, Instant::now());
    }
    /// Marks the connection closed at `now`, with our address `local` if known.
    /// Only the first call counts. Ends a write pause still going on, and an
    /// unfinished first exchange (its processing and transfer run to `now`).
    pub(crate) fn close_at(
        &mut self,
        reason: CloseReason,
        local: Option<SocketAddr>,
        now: Instant,
    ) {
        if self.close_reason.is_some() {
            return;
        }
        self.resume(now);
        if self.flags & (F_REQ | F_DONE) == F_REQ {
            self.finish_first_exchange(now);
        }
        if local.is_some() {
            self.rare_mut().local = local;
        }
        let at = self.offset_us(now);
        self.set(LIFETIME, at);
        self.close_reason = Some(reason);
    }

    // ---- internals ----

    /// Microseconds from the start to `now` (0 if `now` is earlier).
    fn offset_us(&self, now: Instant) -> u64 {
        offset_us(self.start_ns, now)
    }

    fn mark_first_byte(&mut self, now: Instant) {
        if self.flags & (F_REQ | F_FB | F_DONE) == F_REQ {
            let fb = self.offset_us(now).saturating_sub(self.get(MARK));
            self.set(FIRST_BYTE, fb);
            self.flags |= F_FB;
        }
    }

    fn finish_first_exchange(&mut self, now: Instant) {
        let processing = self.offset_us(now).saturating_sub(self.get(MARK));
        self.set(MARK, processing);
        self.flags |= F_DONE;
    }

    fn if_flag(&self, flag: u8, slot: usize) -> Option<u64> {
        (self.flags & flag != 0).then(|| self.get(slot))
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn get(&self, slot: usize) -> u64 {
        let v = self.small.get(slot).copied().unwrap_or(0);
        if v != SPILLED {
            return u64::from(v);
        }
        self.rare
            .as_ref()
            .and_then(|r| r.wide.as_ref())
            .and_then(|w| w.get(slot).copied())
            .unwrap_or(u64::from(SPILLED))
    }

    fn set(&mut self, slot: usize, v: u64) {
        let small = match u32::try_from(v) {
            Ok(s) if s != SPILLED => s,
            _ => {
                let wide = self.rare_mut().wide.get_or_insert_with(Box::default);
                if let Some(w) = wide.get_mut(slot) {
                    *w = v;
                }
                SPILLED
            }
        };
        if let Some(s) = self.small.get_mut(slot) {
            *s = small;
        }
    }

    fn add(&mut self, slot: usize, n: u64) {
        if let Some(s) = self.small.get_mut(slot) {
            if *s != SPILLED {
                if let Some(sum) = s.checked_add(n.try_into().unwrap_or(SPILLED)) {
                    if sum != SPILLED {
                        *s = sum;
                        return;
                    }
                }
            }
        }
        let total = self.get(slot).saturating_add(n);
        self.set(slot, total);
    }

    #[cfg(test)]
    fn has_rare(&self) -> bool {
        self.rare.is_some()
    }
}

/// Microseconds from `start_ns` (on the anchor clock) to `now`, 0 if earlier.
fn offset_us(start_ns: u64, now: Instant) -> u64 {
    clock::to_nanos(now).saturating_sub(start_ns) / 1_000
}

impl fmt::Debug for ConnStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnStats")
            .field("conn_id", &self.conn_id)
            .field("side", &self.side)
            .field("proto", &self.proto())
            .field("peer", &self.peer())
            .field("local", &self.local())
            .field("dns", &self.dns_time())
            .field("connect", &self.connect_time())
            .field("first_byte", &self.first_byte_time())
            .field("processing", &self.processing_time())
            .field("transfer", &self.transfer_time())
            .field("lifetime", &self.lifetime())
            .field("request_header_bytes", &self.request_header_bytes())
            .field("request_body_bytes", &self.request_body_bytes())
            .field("response_header_bytes", &self.response_header_bytes())
            .field("response_body_bytes", &self.response_body_bytes())
            .field("bytes_in", &self.bytes_in())
            .field("bytes_out", &self.bytes_out())
            .field("requests", &self.requests())
            .field("close_reason", &self.close_reason)
            .field("status_4xx", &self.status_4xx())
            .field("status_5xx", &self.status_5xx())
            .field("write_pauses", &self.write_pauses())
            .field("paused", &self.paused_time())
            .field("peak_queued_bytes", &self.peak_queued_bytes())
            .field("ratelimit_delay", &self.ratelimit_delay())
            .field("events_dropped", &self.events_dropped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn peer4() -> SocketAddr {
        "192.0.2.7:40000".parse().unwrap()
    }

    #[test]
    fn stays_small() {
        // The idle-connection budget is 0.4 KiB for everything; stats get 96 bytes.
        assert!(
            size_of::<ConnStats>() <= 96,
            "ConnStats is {} bytes",
            size_of::<ConnStats>()
        );
        assert_eq!(size_of::<Option<Box<Rare>>>(), size_of::<usize>());
        // Allocated only for troubled connections and at close; keep it modest.
        assert!(
            size_of::<Rare>() <= 128,
            "Rare is {} bytes",
            size_of::<Rare>()
        );
    }

    #[test]
    fn fresh_stats_have_nothing_made_up() {
        let s = ConnStats::new(1, Side::Server, "http", peer4());
        assert_eq!(s.dns_time(), None);
        assert_eq!(s.connect_time(), None);
        assert_eq!(s.first_byte_time(), None);
        assert_eq!(s.processing_time(), None);
        assert_eq!(s.transfer_time(), None);
        assert_eq!(s.lifetime(), None);
        assert_eq!(s.request_header_bytes(), None);
        assert_eq!(s.request_body_bytes(), None);
        assert_eq!(s.response_header_bytes(), None);
        assert_eq!(s.response_body_bytes(), None);
        assert_eq!(s.status_4xx(), None);
        assert_eq!(s.status_5xx(), None);
        assert_eq!(s.close_reason(), None);
        assert_eq!(s.local(), None);
        assert_eq!((s.bytes_in(), s.bytes_out(), s.requests()), (0, 0, 0));
        assert!(!s.has_rare());
    }

    #[test]
    fn server_exchange_timings() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(7, Side::Server, "http", peer4(), t0);
        s.add_in(110);
        s.request_complete(t0 + ms(1), 100, 10);
        s.response_started(t0 + ms(3));
        s.add_out(1050);
        s.response_complete(t0 + ms(10), 50, 1000, Some(200));
        s.request_done();
        let local: SocketAddr = "198.51.100.1:8080".parse().unwrap();
        s.close_at(CloseReason::PeerClosed, Some(local), t0 + ms(20));

        assert_eq!(s.first_byte_time(), Some(ms(2)));
        assert_eq!(s.processing_time(), Some(ms(9)));
        assert_eq!(s.transfer_time(), Some(ms(7)));
        assert_eq!(s.lifetime(), Some(ms(20)));
        assert_eq!(s.dns_time(), None);
        assert_eq!(s.connect_time(), None);
        assert_eq!(s.request_header_bytes(), Some(100));
        assert_eq!(s.request_body_bytes(), Some(10));
        assert_eq!(s.response_header_bytes(), Some(50));
        assert_eq!(s.response_body_bytes(), Some(1000));
        assert_eq!((s.bytes_in(), s.bytes_out(), s.requests()), (110, 1050, 1));
        assert_eq!(s.status_4xx(), Some(0));
        assert_eq!(s.status_5xx(), Some(0));
        assert_eq!(s.close_reason(), Some(CloseReason::PeerClosed));
        assert_eq!(s.local(), Some(local));
        assert_eq!(s.peer(), peer4());
        assert_eq!(s.proto(), "http");
        assert_eq!(s.conn_id(), 7);
        assert_eq!(s.side(), Side::Server);
    }

    #[test]
    fn successful_keep_alive_connection_allocates_nothing() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        for i in 0..100u64 {
            s.add_in(100);
            s.request_complete(t0 + ms(i), 90, 10);
            s.queued(0);
            s.response_complete(t0 + ms(i), 60, 40, Some(200));
            s.add_out(100);
            s.request_done();
        }
        assert!(!s.has_rare());
        assert_eq!(s.requests(), 100);
        assert_eq!(s.request_header_bytes(), Some(9000));
        assert_eq!(s.response_body_bytes(), Some(4000));
    }

    #[test]
    fn client_exchange_timings() {
        let t0 = Instant::now();
        let peer: SocketAddr = "[2001:db8::1]:6379".parse().unwrap();
        let mut s = ConnStats::new_at(9, Side::Client, "redis", peer, t0);
        s.dns(ms(5));
        s.connected(t0 + ms(2));
        s.connected(t0 + ms(4)); // ignored
        s.request_complete(t0 + ms(3), 20, 0);
        s.first_byte(t0 + ms(8));
        s.response_complete(t0 + ms(9), 5, 100, None);
        s.request_done();
        s.close_at(CloseReason::Local, None, t0 + ms(9));

        assert_eq!(s.dns_time(), Some(ms(5)));
        assert_eq!(s.connect_time(), Some(ms(2)));
        assert_eq!(s.first_byte_time(), Some(ms(5)));
        assert_eq!(s.processing_time(), Some(ms(6)));
        assert_eq!(s.transfer_time(), Some(ms(1)));
        assert_eq!(s.lifetime(), Some(ms(9)));
        // Redis has no status: the error counts do not apply.
        assert_eq!(s.status_4xx(), None);
        assert_eq!(s.status_5xx(), None);
        assert_eq!(s.peer(), peer);
        assert_eq!(s.proto(), "redis");
        assert_eq!(s.local(), None);
    }

    #[test]
    fn later_exchanges_only_add_to_totals() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        s.request_complete(t0 + ms(1), 10, 0);
        s.response_started(t0 + ms(2));
        s.response_complete(t0 + ms(4), 10, 5, Some(404));
        s.request_complete(t0 + ms(100), 20, 7);
        s.response_started(t0 + ms(150));
        s.response_complete(t0 + ms(200), 30, 6, Some(503));
        s.request_complete(t0 + ms(300), 1, 1);
        s.response_complete(t0 + ms(301), 1, 1, Some(500));
        s.close_at(CloseReason::KeepAliveTimeout, None, t0 + ms(1000));
        assert_eq!(s.first_byte_time(), Some(ms(1)));
        assert_eq!(s.processing_time(), Some(ms(3)));
        assert_eq!(s.transfer_time(), Some(ms(2)));
        assert_eq!(s.request_header_bytes(), Some(31));
        assert_eq!(s.request_body_bytes(), Some(8));
        assert_eq!(s.response_header_bytes(), Some(41));
        assert_eq!(s.response_body_bytes(), Some(12));
        assert_eq!(s.status_4xx(), Some(1));
        assert_eq!(s.status_5xx(), Some(2));
    }

    #[test]
    fn response_in_one_write_has_zero_transfer() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        s.request_complete(t0 + ms(1), 10, 0);
        s.response_complete(t0 + ms(6), 10, 5, Some(200));
        assert_eq!(s.first_byte_time(), Some(ms(5)));
        assert_eq!(s.processing_time(), Some(ms(5)));
        assert_eq!(s.transfer_time(), Some(Duration::ZERO));
    }

    #[test]
    fn response_without_request_has_no_timings() {
        // A 400 for a request that never parsed: sizes count, timings do not apply.
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        s.response_started(t0 + ms(1));
        s.response_complete(t0 + ms(2), 40, 11, Some(400));
        s.close_at(CloseReason::ProtocolError, None, t0 + ms(3));
        assert_eq!(s.first_byte_time(), None);
        assert_eq!(s.processing_time(), None);
        assert_eq!(s.transfer_time(), None);
        assert_eq!(s.request_header_bytes(), None);
        assert_eq!(s.response_header_bytes(), Some(40));
        assert_eq!(s.status_4xx(), Some(1));
    }

    #[test]
    fn close_mid_response_measures_to_close() {
        let t0 = Instant::now();
        // A stream the client abandoned after the first byte.
        let mut s = ConnStats::new_at(1, Side::Server, "sse", peer4(), t0);
        s.request_complete(t0 + ms(1), 10, 0);
        s.response_started(t0 + ms(2));
        s.close_at(CloseReason::PeerClosed, None, t0 + ms(50));
        assert_eq!(s.first_byte_time(), Some(ms(1)));
        assert_eq!(s.processing_time(), Some(ms(49)));
        assert_eq!(s.transfer_time(), Some(ms(48)));
        assert_eq!(s.response_body_bytes(), None);

        // A request that timed out before any response byte.
        let mut s = ConnStats::new_at(2, Side::Client, "http", peer4(), t0);
        s.request_complete(t0 + ms(1), 10, 0);
        s.close_at(CloseReason::ReceiveTimeout, None, t0 + ms(31));
        assert_eq!(s.first_byte_time(), None);
        assert_eq!(s.processing_time(), Some(ms(30)));
        assert_eq!(s.transfer_time(), None);
    }

    #[test]
    fn big_values_spill_exactly() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        s.add_out(u32::MAX as usize - 1);
        assert!(!s.has_rare());
        s.add_out(1); // exactly u32::MAX: the marker value itself must spill
        assert_eq!(s.bytes_out(), u64::from(u32::MAX));
        s.add_out(10);
        assert_eq!(s.bytes_out(), u64::from(u32::MAX) + 10);
        s.add_in(5);
        s.add_in(usize::MAX);
        assert_eq!(s.bytes_in(), u64::MAX);
        s.request_complete(t0 + ms(1), 0, 6_000_000_000);
        assert_eq!(s.request_body_bytes(), Some(6_000_000_000));
        // A stream that runs three hours: the mark, processing and lifetime spill.
        let hours = Duration::from_secs(3 * 3600);
        s.response_started(t0 + ms(2));
        s.response_complete(t0 + hours, 100, 1, Some(200));
        s.close_at(CloseReason::Local, None, t0 + hours + hours);
        assert_eq!(s.processing_time(), Some(hours - ms(1)));
        assert_eq!(s.transfer_time(), Some(hours - ms(2)));
        assert_eq!(s.lifetime(), Some(hours * 2));
    }

    #[test]
    fn late_first_request_spills_the_mark() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Client, "http", peer4(), t0);
        let late = Duration::from_secs(5 * 3600);
        s.request_complete(t0 + late, 1, 1);
        s.first_byte(t0 + late + ms(3));
        s.response_complete(t0 + late + ms(4), 1, 1, None);
        assert_eq!(s.first_byte_time(), Some(ms(3)));
        assert_eq!(s.processing_time(), Some(ms(4)));

        // The marker value itself, over a slot that spilled before: the stale
        // out-of-line value must not be read back.
        let mut s = ConnStats::new_at(2, Side::Client, "http", peer4(), t0);
        s.request_complete(t0 + late, 1, 1);
        let exact = Duration::from_micros(u64::from(u32::MAX));
        s.response_complete(t0 + late + exact, 1, 1, None);
        assert_eq!(s.processing_time(), Some(exact));
    }

    #[test]
    fn pauses_accumulate() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        s.resume(t0 + ms(1)); // not paused: nothing
        assert!(!s.has_rare());
        s.pause(t0 + ms(1));
        s.pause(t0 + ms(2)); // already paused
        s.resume(t0 + ms(5));
        assert_eq!(s.write_pauses(), 1);
        assert_eq!(s.paused_time(), ms(4));
        s.pause(t0 + ms(10));
        s.close_at(CloseReason::SendTimeout, None, t0 + ms(16));
        assert_eq!(s.write_pauses(), 2);
        assert_eq!(s.paused_time(), ms(10));
    }

    #[test]
    fn peak_queued_and_rare_counters() {
        let mut s = ConnStats::new(1, Side::Server, "sse", peer4());
        s.queued(0);
        s.add_ratelimit_delay(Duration::ZERO);
        s.add_events_dropped(0);
        assert!(!s.has_rare(), "zero values must not allocate");
        s.queued(100);
        s.queued(50);
        assert_eq!(s.peak_queued_bytes(), 100);
        s.add_ratelimit_delay(ms(3));
        s.add_ratelimit_delay(Duration::from_micros(5));
        assert_eq!(s.ratelimit_delay(), Duration::from_micros(3005));
        s.add_events_dropped(4);
        s.add_events_dropped(u64::MAX);
        assert_eq!(s.events_dropped(), u64::MAX);
    }

    #[test]
    fn only_first_close_counts() {
        let t0 = Instant::now();
        let mut s = ConnStats::new_at(1, Side::Server, "http", peer4(), t0);
        s.close_at(CloseReason::Reset, None, t0 + ms(5));
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        s.close_at(CloseReason::Local, Some(local), t0 + ms(9));
        s.close(CloseReason::Local, Some(local));
        assert_eq!(s.close_reason(), Some(CloseReason::Reset));
        assert_eq!(s.lifetime(), Some(ms(5)));
        assert_eq!(s.local(), None);
    }

    #[test]
    fn events_before_start_clamp_to_zero() {
        let t0 = Instant::now() + ms(100);
        let mut s = ConnStats::new_at(1, Side::Client, "http", peer4(), t0);
        s.connected(t0 - ms(50));
        s.request_complete(t0 - ms(40), 1, 1);
        s.first_byte(t0 - ms(60));
        s.close_at(CloseReason::Local, None, t0 - ms(90));
        assert_eq!(s.connect_time(), Some(Duration::ZERO));
        assert_eq!(s.first_byte_time(), Some(Duration::ZERO));
        assert_eq!(s.lifetime(), Some(Duration::ZERO));
    }

    #[test]
    fn peers_round_trip() {
        for p in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:80",
            "[::ffff:10.0.0.1]:443",
            "[fe80::1%7]:22",
        ] {
            let addr: SocketAddr = p.parse().unwrap();
            let s = ConnStats::new(1, Side::Server, "t", addr);
            assert_eq!(s.peer(), addr, "{p}");
        }
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0x12345, 3));
        assert_eq!(ConnStats::new(1, Side::Server, "t", v6).peer(), v6);
    }

    #[test]
    fn start_time_is_now_ish() {
        let before = SystemTime::now();
        let s = ConnStats::new(1, Side::Server, "http", peer4());
        let d = s
            .start_time()
            .duration_since(before)
            .unwrap_or_else(|e| e.duration());
        assert!(d < ms(50), "{d:?}");
        let e = s.start_instant().elapsed();
        assert!(e < ms(50), "{e:?}");
    }

    #[test]
    fn close_reasons_are_indexed_in_order() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CloseReason::ALL.len());
    }

    #[test]
    fn debug_shows_values() {
        let s = ConnStats::new(42, Side::Client, "http", peer4());
        let d = format!("{s:?}");
        assert!(
            d.contains("conn_id: 42") && d.contains("192.0.2.7:40000"),
            "{d}"
        );
    }
}
