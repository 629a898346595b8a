//! TLS on our own poller: a rustls session used sans-IO under a connection's
//! [`Transport`](super::transport::Transport).
//!
//! rustls never touches the socket here, and holds no buffer of its own: it
//! is rustls' *unbuffered* connection. What the poller reads is handed to it
//! (`process_tls_records`), it decrypts records in place and the plaintext is
//! copied into the caller's buffer; what a writer sends it encrypts into
//! records (`WriteTraffic::encrypt`) that we write. So TLS runs on the same
//! poller, with the same edge-triggered readiness, queue, watermarks and
//! timeouts as plain TCP, needs no second event loop, and an idle connection
//! keeps no buffer: the ciphertext of a partly received record, plaintext the
//! caller had no room for and records the socket did not take are the only
//! bytes kept, each freed once it is empty.
//!
//! The session lives behind a mutex of its own: a connection is read by its
//! poller and written by whichever thread answers, and `Transport`'s methods
//! take `&self`. Writers hold the connection's state lock when they write,
//! so the order is always the state lock, then this one; the poller's reads
//! take this one alone.
//!
//! Two contracts keep the connection's accounting true:
//!
//! - **Sends.** A send encrypts what it is given and writes the records. The
//!   plaintext counts as sent only once all its records are on the wire: if
//!   the socket takes part, the send reports `WouldBlock`, the records wait
//!   here, and the caller keeps (queues) the plaintext, as it would for plain
//!   TCP, and presents it again, first, on its next send. That call writes
//!   the waiting records and reports the plaintext taken. So the connection's
//!   queued bytes, its watermarks and its pauses see TLS output exactly as
//!   they see plain output, and at most one batch of records
//!   ([`MAX_BATCH`] of plaintext) waits here besides.
//! - **Receives.** A receive fills the caller's buffer before it returns
//!   while plaintext is there to take. Even when it returns less, the session
//!   may hold the peer's end of input (a `close_notify` read with the last
//!   record), which no readiness edge will announce: the engines read a TLS
//!   connection until `WouldBlock` or the end, not just until a short read
//!   (`Transport::short_read_drains`).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};

use super::tls_config::Agreed;

/// Most plaintext one send encrypts (its records then wait on the socket
/// as one batch).
const MAX_BATCH: usize = 64 * 1024;

/// Bytes read from the socket at a time: a whole maximum-size record.
const READ_SIZE: usize = 16 * 1024 + 256;

/// A TCP socket with a TLS session over it.
pub(crate) struct TlsStream {
    sock: TcpStream,
    session: Mutex<Session>,
}

enum Unbuffered {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

struct Session {
    conn: Unbuffered,
    /// Ciphertext read and not yet processed (a partly received record).
    incoming: Vec<u8>,
    /// Plaintext decrypted that the caller had no room for, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Records to write, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// Plaintext bytes the last send encrypted whose records are not all
    /// written yet (see the module docs).
    in_flight: usize,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// The socket reported end of file.
    eof: bool,
    /// The session failed: rustls must not be asked again (it would report
    /// the failure, and queue its alert, a second time).
    failed: bool,
}

/// What one turn of the session's state machine left.
#[derive(PartialEq, Eq)]
enum Step {
    /// Something was done; turn again.
    Again,
    /// A message was encoded into `outgoing`; turn again.
    Encoded,
    /// Encoded messages are complete; turn again.
    Transmitted,
    /// Nothing to do until more ciphertext arrives.
    NeedData,
    /// The session is closed both ways.
    Closed,
}

/// A TLS failure: a handshake that failed, or a peer that broke the protocol.
/// Carried as an `io::Error` of kind `InvalidData`
/// (see `tls_config::is_tls_error`).
#[derive(Debug)]
struct TlsFailure(rustls::Error);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// A rustls error as an `io::Error` the engines close with `tls_error`.
fn failure(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e))
}

thread_local! {
    /// Several slices sent as one are copied here first, so they become one
    /// record, not one each (the per-record cost is most of a small reply's).
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where a receive reads ciphertext, and the records are decrypted in
    /// place: one per thread, zeroed once, so no connection holds a receive
    /// buffer (and no read pays to zero one).
    static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where decrypted plaintext goes: the caller's buffer, and what does not fit
/// into the session's `plain`.
struct Sink<'a> {
    buf: &'a mut [u8],
    filled: usize,
}

impl Sink<'_> {
    fn put(&mut self, payload: &[u8], spill: &mut Vec<u8>) {
        let room = self.buf.len() - self.filled;
        let n = room.min(payload.len());
        self.buf[self.filled..self.filled + n].copy_from_slice(&payload[..n]);
        self.filled += n;
        spill.extend_from_slice(&payload[n..]);
    }
}

/// One turn of a connection's state machine over `incoming`; returns how
/// many bytes of `incoming` to discard, and what happened.
fn turn<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    outgoing: &mut Vec<u8>,
    sink: &mut Sink<'_>,
    plain: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> (usize, Result<Step, rustls::Error>) {
    let UnbufferedStatus { mut discard, state } = status;
    let step = match state {
        Err(e) => Err(e),
        Ok(ConnectionState::ReadTraffic(mut traffic)) => {
            while let Some(record) = traffic.next_record() {
                match record {
                    Ok(AppDataRecord {
                        discard: more,
                        payload,
                    }) => {
                        discard += more;
                        sink.put(payload, plain);
                    }
                    Err(e) => return (discard, Err(e)),
                }
            }
            Ok(Step::Again)
        }
        Ok(ConnectionState::EncodeTlsData(mut encode)) => {
            let start = outgoing.len();
            outgoing.resize(start + 4096, 0);
            let mut encoded = encode.encode(&mut outgoing[start..]);
            if let Err(EncodeError::InsufficientSize(short)) = &encoded {
                outgoing.resize(start + short.required_size, 0);
                encoded = encode.encode(&mut outgoing[start..]);
            }
            match encoded {
                Ok(n) => {
                    outgoing.truncate(start + n);
                    Ok(Step::Encoded)
                }
                Err(EncodeError::AlreadyEncoded) => {
                    outgoing.truncate(start);
                    Ok(Step::Encoded)
                }
                Err(e) => {
                    outgoing.truncate(start);
                    Err(rustls::Error::General(format!(
                        "TLS message did not encode: {e}"
                    )))
                }
            }
        }
        // The records are in `outgoing`; they go out when the caller flushes.
        Ok(ConnectionState::TransmitTlsData(transmit)) => {
            transmit.done();
            Ok(Step::Transmitted)
        }
        Ok(ConnectionState::PeerClosed) => {
            *peer_closed = true;
            Ok(Step::Again)
        }
        Ok(ConnectionState::Closed) => Ok(Step::Closed),
        // Handshake done and nothing to process, or waiting for the peer's
        // next flight: either way, more ciphertext is needed. (Early data is
        // never accepted, so it never arrives.)
        Ok(_) => Ok(Step::NeedData),
    };
    (discard, step)
}

impl Session {
    /// Turns the state machine once over `records`: the bytes that have
    /// arrived, less those discarded before. Returns how many more to
    /// discard. rustls keeps positions into these bytes between calls while
    /// a handshake message spans records, so every call sees the same bytes
    /// from the same start: `recv`'s per-thread read buffer, or, between
    /// reads, `incoming` (what a read left of a partial record).
    fn turn_over(
        &mut self,
        records: &mut [u8],
        sink: &mut Sink<'_>,
    ) -> (usize, Result<Step, rustls::Error>) {
        let Session {
            conn,
            outgoing,
            plain,
            peer_closed,
            ..
        } = self;
        match conn {
            Unbuffered::Server(c) => turn(
                c.process_tls_records(records),
                outgoing,
                sink,
                plain,
                peer_closed,
            ),
            Unbuffered::Client(c) => turn(
                c.process_tls_records(records),
                outgoing,
                sink,
                plain,
                peer_closed,
            ),
        }
    }

    /// Turns until more ciphertext is needed (or the session closed), over
    /// `records`; returns how many of them were used. On a failure, the
    /// alert that says why is the session's next output: one more turn
    /// encodes it, and a failed session is never turned again.
    fn run_over(
        &mut self,
        records: &mut [u8],
        sink: &mut Sink<'_>,
    ) -> (usize, Result<Step, rustls::Error>) {
        if self.failed {
            let failed = rustls::Error::General("the TLS session failed".into());
            return (0, Err(failed));
        }
        let mut used = 0;
        loop {
            let (discard, step) = self.turn_over(&mut records[used..], sink);
            used = (used + discard).min(records.len());
            match step {
                Ok(Step::Again | Step::Encoded | Step::Transmitted) => {}
                Ok(step) => return (used, Ok(step)),
                Err(e) => {
                    self.failed = true;
                    let mut nothing = Sink {
                        buf: &mut [],
                        filled: 0,
                    };
                    // One turn: it takes the alert off the session's queue.
                    // (A second would parse the records that failed again.)
                    let (discard, _) = self.turn_over(&mut records[used..], &mut nothing);
                    used = (used + discard).min(records.len());
                    return (used, Err(e));
                }
            }
        }
    }

    /// [`run_over`](Self::run_over) the bytes kept in `incoming`.
    fn run(&mut self, sink: &mut Sink<'_>) -> Result<Step, rustls::Error> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let (used, step) = self.run_over(&mut incoming, sink);
        incoming.drain(..used);
        self.incoming = incoming;
        step
    }

    /// One turn over `incoming` (for a writer: see `encrypt`).
    fn turn(&mut self, sink: &mut Sink<'_>) -> Result<Step, rustls::Error> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let (used, step) = self.turn_over(&mut incoming, sink);
        incoming.drain(..used.min(incoming.len()));
        self.incoming = incoming;
        step
    }

    /// Writes the waiting records; `WouldBlock` if the socket did not take
    /// them all. Frees the buffer once it is empty.
    fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        while self.out_at < self.outgoing.len() {
            match crate::sys::socket::send(fd, &self.outgoing[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Ok(())
    }

    /// Takes plaintext decrypted earlier into `sink`.
    fn take_plain(&mut self, sink: &mut Sink<'_>) {
        if self.plain_at < self.plain.len() {
            let rest = &self.plain[self.plain_at..];
            let n = rest.len().min(sink.buf.len() - sink.filled);
            sink.buf[sink.filled..sink.filled + n].copy_from_slice(&rest[..n]);
            sink.filled += n;
            self.plain_at += n;
        }
        if self.plain_at == self.plain.len() && self.plain_at > 0 {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
    }

    fn common(&self) -> &rustls::CommonState {
        match &self.conn {
            Unbuffered::Server(c) => c,
            Unbuffered::Client(c) => c,
        }
    }

    /// Encrypts `data` into `outgoing`, when the session may send.
    /// `Ok(false)`: not yet (the handshake is under way).
    fn encrypt(&mut self, data: &[u8]) -> Result<bool, rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("the TLS session failed".into()));
        }
        // Whatever the session has to send first (tickets, a key update)
        // is encoded before the data.
        let mut nothing = Sink {
            buf: &mut [],
            filled: 0,
        };
        for _ in 0..8 {
            let Session {
                conn,
                incoming,
                outgoing,
                ..
            } = self;
            let (discard, done) = match conn {
                Unbuffered::Server(c) => {
                    encrypt_into(c.process_tls_records(incoming), data, outgoing)
                }
                Unbuffered::Client(c) => {
                    encrypt_into(c.process_tls_records(incoming), data, outgoing)
                }
            };
            incoming.drain(..discard.min(incoming.len()));
            match done {
                Some(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Some(result) => return result,
                None => {
                    if let Err(e) = self.turn(&mut nothing) {
                        self.failed = true;
                        return Err(e);
                    }
                }
            }
        }
        Ok(false)
    }
}

/// Encrypts `data` into `outgoing` if the session is ready for application
/// data; `None` when it has something else to do first.
fn encrypt_into<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    data: &[u8],
    outgoing: &mut Vec<u8>,
) -> (usize, Option<Result<bool, rustls::Error>>) {
    let discard = status.discard;
    let done = match status.state {
        Ok(ConnectionState::WriteTraffic(mut traffic)) => {
            let start = outgoing.len();
            // Records of at most 16 KiB, each with at most 256 bytes of
            // header, padding and tag.
            let estimate = data.len() + (data.len() / (16 * 1024) + 1) * 256;
            outgoing.resize(start + estimate, 0);
            let result = match traffic.encrypt(data, &mut outgoing[start..]) {
                Ok(n) => {
                    outgoing.truncate(start + n);
                    Ok(true)
                }
                Err(EncryptError::InsufficientSize(short)) => {
                    outgoing.resize(start + short.required_size, 0);
                    match traffic.encrypt(data, &mut outgoing[start..]) {
                        Ok(n) => {
                            outgoing.truncate(start + n);
                            Ok(true)
                        }
                        Err(e) => {
                            outgoing.truncate(start);
                            Err(rustls::Error::General(e.to_string()))
                        }
                    }
                }
                Err(e) => {
                    outgoing.truncate(start);
                    Err(rustls::Error::General(e.to_string()))
                }
            };
            Some(result)
        }
        Ok(ConnectionState::BlockedHandshake) => Some(Ok(false)),
        Ok(ConnectionState::Closed) | Ok(ConnectionState::PeerClosed) => {
            Some(Err(rustls::Error::General("TLS session closed".into())))
        }
        Err(e) => Some(Err(e)),
        Ok(_) => None,
    };
    (discard, done)
}

impl TlsStream {
    /// The server side of a TLS session over an accepted socket.
    pub fn server(sock: TcpStream, config: &Arc<rustls::ServerConfig>) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config.clone()).map_err(failure)?;
        Ok(TlsStream::new(sock, Unbuffered::Server(conn)))
    }

    /// The client side of a TLS session to `name`, over a socket that is
    /// connecting: the handshake starts once it is connected.
    pub fn client(
        sock: TcpStream,
        config: &Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let conn = UnbufferedClientConnection::new(config.clone(), name).map_err(failure)?;
        Ok(TlsStream::new(sock, Unbuffered::Client(conn)))
    }

    fn new(sock: TcpStream, conn: Unbuffered) -> TlsStream {
        TlsStream {
            sock,
            session: Mutex::new(Session {
                conn,
                incoming: Vec::new(),
                plain: Vec::new(),
                plain_at: 0,
                outgoing: Vec::new(),
                out_at: 0,
                in_flight: 0,
                peer_closed: false,
                eof: false,
                failed: false,
            }),
        }
    }

    /// The socket.
    pub fn sock(&self) -> &TcpStream {
        &self.sock
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and decrypts into `buf`: `Ok(0)` at the end of the peer's
    /// data, `WouldBlock` while nothing is readable (the handshake too runs
    /// here, its answers written as they come), `InvalidData` for a TLS
    /// failure (the alert for it is sent first).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.sock.as_fd();
        let mut s = self.lock();
        let mut sink = Sink { buf, filled: 0 };
        s.take_plain(&mut sink);
        loop {
            if sink.filled == sink.buf.len() {
                return Ok(sink.filled);
            }
            let step = match s.run(&mut sink) {
                Ok(step) => step,
                Err(e) => {
                    let _ = s.flush(fd);
                    return Err(failure(e));
                }
            };
            // Answers to what was processed (handshake messages) go out
            // now, or on the next writable event.
            match s.flush(fd) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            if sink.filled == sink.buf.len() {
                return Ok(sink.filled);
            }
            if matches!(step, Step::Closed) || s.peer_closed || s.eof {
                // The end of the peer's data (a cut message is the
                // protocol's framing to catch).
                return Ok(sink.filled);
            }
            // More ciphertext: into this thread's read buffer, processed
            // there, with only a partial record's bytes kept.
            if s.incoming.is_empty() {
                let read: io::Result<(usize, Result<Step, rustls::Error>)> = READ.with(|rb| {
                    let mut rb = rb.borrow_mut();
                    if rb.len() < READ_SIZE {
                        rb.resize(READ_SIZE, 0);
                    }
                    let n = crate::sys::socket::recv(fd, &mut rb[..])?;
                    let (used, step) = s.run_over(&mut rb[..n], &mut sink);
                    s.incoming.extend_from_slice(&rb[used.min(n)..n]);
                    Ok((n, step))
                });
                match read {
                    Ok((0, _)) => s.eof = true,
                    Ok((_, Ok(_))) => {}
                    Ok((_, Err(e))) => {
                        let _ = s.flush(fd);
                        return Err(failure(e));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && sink.filled > 0 => {
                        return Ok(sink.filled)
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let old = s.incoming.len();
            s.incoming.resize(old + READ_SIZE, 0);
            let read = crate::sys::socket::recv(fd, &mut s.incoming[old..]);
            let got = *read.as_ref().unwrap_or(&0);
            s.incoming.truncate(old + got);
            match read {
                Ok(0) => s.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock if sink.filled > 0 => Ok(sink.filled),
                        _ => Err(e),
                    };
                }
            }
        }
    }

    /// Encrypts and writes `bufs` (see the module docs for what the count
    /// means). `WouldBlock` while the handshake is under way.
    pub fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = self.sock.as_fd();
        let mut s = self.lock();
        s.flush(fd)?;
        if s.in_flight > 0 {
            // The caller presents those bytes again, first: they are out now.
            // (Never report more than it gave, should it give fewer.)
            let given: usize = bufs.iter().map(|b| b.len()).sum();
            let done = s.in_flight.min(given);
            s.in_flight -= done;
            return Ok(done);
        }
        let first = bufs.iter().position(|b| !b.is_empty());
        let Some(first) = first else {
            return Ok(0);
        };
        let encrypted = if bufs[first].len() >= MAX_BATCH || bufs.len() == first + 1 {
            let n = bufs[first].len().min(MAX_BATCH);
            s.encrypt(&bufs[first][..n]).map(|ok| ok.then_some(n))
        } else {
            JOINED.with(|joined| {
                let mut joined = joined.borrow_mut();
                joined.clear();
                for b in &bufs[first..] {
                    let room = MAX_BATCH - joined.len();
                    joined.extend_from_slice(&b[..b.len().min(room)]);
                    if joined.len() == MAX_BATCH {
                        break;
                    }
                }
                let n = joined.len();
                let result = s.encrypt(&joined).map(|ok| ok.then_some(n));
                if joined.capacity() > MAX_BATCH {
                    *joined = Vec::new();
                }
                result
            })
        };
        let n = match encrypted {
            Ok(Some(n)) => n,
            Ok(None) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(failure(e)),
        };
        match s.flush(fd) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.in_flight = n;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// [`send_vectored`](Self::send_vectored) of one buffer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(buf)])
    }

    /// Writes what the session has to send (the client's first flight, or
    /// a handshake flight the socket did not take whole); `WouldBlock` if
    /// some is left.
    pub fn flush(&self) -> io::Result<()> {
        let mut s = self.lock();
        let mut nothing = Sink {
            buf: &mut [],
            filled: 0,
        };
        // A failed session is reported by `recv`, with its reason.
        let _ = s.run(&mut nothing);
        s.flush(self.sock.as_fd())
    }

    /// Ends our side: a `close_notify` alert, if the socket takes it.
    pub fn close_notify(&self) {
        let mut s = self.lock();
        if s.failed {
            let _ = s.flush(self.sock.as_fd());
            return;
        }
        let Session {
            conn,
            incoming,
            outgoing,
            ..
        } = &mut *s;
        let (discard, queued) = match conn {
            Unbuffered::Server(c) => close_into(c.process_tls_records(incoming), outgoing),
            Unbuffered::Client(c) => close_into(c.process_tls_records(incoming), outgoing),
        };
        incoming.drain(..discard.min(incoming.len()));
        if queued {
            let _ = s.flush(self.sock.as_fd());
        }
    }

    /// What the handshake agreed on, once it is over.
    pub fn agreed(&self) -> Option<Agreed> {
        let s = self.lock();
        let common = s.common();
        if common.is_handshaking() {
            return None;
        }
        let version = match common.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = common
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("unknown");
        let resumed = common.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Some(Agreed {
            version,
            cipher,
            resumed,
        })
    }
}

/// Encodes a `close_notify` into `outgoing` when the session may still send;
/// returns whether it did.
fn close_into<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    outgoing: &mut Vec<u8>,
) -> (usize, bool) {
    let discard = status.discard;
    let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state else {
        return (discard, false);
    };
    let start = outgoing.len();
    outgoing.resize(start + 64, 0);
    let queued = match traffic.queue_close_notify(&mut outgoing[start..]) {
        Ok(n) => {
            outgoing.truncate(start + n);
            true
        }
        Err(_) => {
            outgoing.truncate(start);
            false
        }
    };
    (discard, queued)
}
