//! TLS on our own poller: a rustls session used sans-IO under a connection's
//! [`Transport`](super::transport::Transport).
//!
//! rustls never touches the socket here. What the poller reads goes into the
//! session (`read_tls`), the session decrypts it (`process_new_packets`) and
//! the plaintext is copied into the caller's buffer; what a writer sends is
//! encrypted into records (`writer`) that we write (`write_tls`). So TLS
//! runs on the same poller, with the same edge-triggered readiness, queue,
//! watermarks and timeouts as plain TCP, and needs no second event loop.
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
//!   in the session, and the caller keeps (queues) the plaintext, as it would
//!   for plain TCP, and presents it again, first, on its next send. That call
//!   writes the waiting records and reports the plaintext taken. So the
//!   connection's queued bytes, its watermarks and its pauses see TLS output
//!   exactly as they see plain output, and the session holds at most one
//!   batch of records (rustls' buffer limit, 64 KiB) besides.
//! - **Receives.** A receive fills the caller's buffer before it returns
//!   while plaintext is there to take, so none is left in the session when it
//!   returns less. Even then the session may hold the peer's end of input
//!   (a `close_notify` read with the last record), which no readiness edge
//!   will announce: the engines read a TLS connection until `WouldBlock` or
//!   the end, not just until a short read (`Transport::short_read_drains`).

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use super::tls_config::Agreed;

/// A TCP socket with a TLS session over it.
pub(crate) struct TlsStream {
    sock: TcpStream,
    session: Mutex<Session>,
}

struct Session {
    conn: rustls::Connection,
    /// Plaintext bytes the last send encrypted whose records are not all
    /// written yet (see the module docs).
    in_flight: usize,
}

/// A TLS failure: a handshake that failed, or a peer that broke the protocol.
/// Carried as an `io::Error` of kind `InvalidData` (see [`is_tls_error`]).
#[derive(Debug)]
struct TlsFailure(rustls::Error);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// The socket as rustls' reader and writer, through `sys`'s calls.
struct Sock<'a>(BorrowedFd<'a>);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::socket::recv(self.0, buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::socket::send(self.0, buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::sys::socket::send_vectored(self.0, bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Session {
    /// Writes the records waiting in the session; `WouldBlock` if the
    /// socket did not take them all.
    fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Sock(fd)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl TlsStream {
    /// The server side of a TLS session over an accepted socket.
    pub fn server(sock: TcpStream, config: &Arc<rustls::ServerConfig>) -> io::Result<TlsStream> {
        let conn = rustls::ServerConnection::new(config.clone()).map_err(failure)?;
        Ok(TlsStream::new(sock, conn.into()))
    }

    /// The client side of a TLS session to `name`, over a socket that is
    /// connecting: the handshake starts once it is connected.
    pub fn client(
        sock: TcpStream,
        config: &Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let conn = rustls::ClientConnection::new(config.clone(), name).map_err(failure)?;
        Ok(TlsStream::new(sock, conn.into()))
    }

    fn new(sock: TcpStream, conn: rustls::Connection) -> TlsStream {
        TlsStream {
            sock,
            session: Mutex::new(Session { conn, in_flight: 0 }),
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
        let mut filled = 0;
        loop {
            match s.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: its end of data (a
                // cut message is the protocol's framing to catch).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            match s.conn.read_tls(&mut Sock(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Drained. Answers to what was processed (handshake
                    // messages) wait for a writable socket if they must.
                    return match s.flush(fd) {
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                        _ if filled > 0 => Ok(filled),
                        _ => Err(io::ErrorKind::WouldBlock.into()),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = s.conn.process_new_packets() {
                // The alert that says why, if the socket takes it.
                let _ = s.flush(fd);
                return Err(failure(e));
            }
            match s.flush(fd) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
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
        if s.conn.is_handshaking() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = s.conn.writer().write_vectored(bufs)?;
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

    /// Writes records that wait in the session (a handshake flight the socket
    /// did not take whole); `WouldBlock` if some still wait.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().flush(self.sock.as_fd())
    }

    /// Ends our side: a `close_notify` alert, if the socket takes it.
    pub fn close_notify(&self) {
        let mut s = self.lock();
        s.conn.send_close_notify();
        let _ = s.flush(self.sock.as_fd());
    }

    /// What the handshake agreed on, once it is over.
    pub fn agreed(&self) -> Option<Agreed> {
        let s = self.lock();
        if s.conn.is_handshaking() {
            return None;
        }
        let version = match s.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = s
            .conn
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("unknown");
        let resumed = s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Some(Agreed {
            version,
            cipher,
            resumed,
        })
    }
}

/// A rustls error as an `io::Error` the engines close with `tls_error`.
fn failure(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e))
}
