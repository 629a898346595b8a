//! [`Error`]: why a task failed, precise enough to act on.

#![forbid(unsafe_code)]

use crate::protocol::ProtocolError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a network task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Name resolution failed.
    Dns(String),
    /// Name resolution did not answer within the DNS timeout.
    DnsTimeout(String),
    /// The connection could not be established (refused, unreachable...) at
    /// any of the target's addresses. It names every address tried;
    /// [`source()`](std::error::Error::source) is the last attempt's
    /// [`io::Error`], with its kind and OS error.
    Connect(ConnectError),
    /// The connect to the last address tried did not complete within the
    /// connect timeout (addresses tried before it failed too).
    ConnectTimeout,
    /// The request could not be written within the send timeout.
    SendTimeout,
    /// The response did not arrive in full within the receive timeout.
    ReceiveTimeout,
    /// The peer closed the connection before the response was complete.
    PeerClosed,
    /// The peer reset the connection, or a socket error occurred.
    Reset,
    /// TLS failed: the server's certificate was refused (expired, for
    /// another name, from an unknown CA), the handshake failed or did not
    /// finish within the handshake timeout, or a record did not decrypt.
    /// The text says why.
    Tls(String),
    /// The peer's message could not be parsed.
    Protocol(ProtocolError),
    /// A configured limit was reached (queue full, response too large...).
    LimitExceeded(&'static str),
    /// The URL or request was not valid.
    InvalidRequest(String),
    /// The request waited for a connection longer than the wait timeout.
    WaitTimeout,
    /// User code panicked (the message says what it said); the series it ran
    /// in ended early.
    Panic(String),
    /// The task was cancelled or the runtime is shutting down.
    Cancelled,
}

impl Error {
    /// A short, stable name of the failure (`"connect_timeout"`,
    /// `"peer_closed"`...): the `error` of a client request's access-log
    /// record, and a label for counting failures.
    ///
    /// ```
    /// assert_eq!(taskweave::Error::WaitTimeout.name(), "wait_timeout");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Error::Dns(..) => "dns",
            Error::DnsTimeout(..) => "dns_timeout",
            Error::Connect(..) => "connect",
            Error::ConnectTimeout => "connect_timeout",
            Error::SendTimeout => "send_timeout",
            Error::ReceiveTimeout => "receive_timeout",
            Error::PeerClosed => "peer_closed",
            Error::Reset => "reset",
            Error::Tls(..) => "tls",
            Error::Protocol(..) => "protocol",
            Error::LimitExceeded(..) => "limit_exceeded",
            Error::InvalidRequest(..) => "invalid_request",
            Error::WaitTimeout => "wait_timeout",
            Error::Panic(..) => "panic",
            Error::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dns(e) => write!(f, "DNS lookup failed: {e}"),
            Error::DnsTimeout(e) => write!(f, "DNS timeout: {e}"),
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::ConnectTimeout => f.write_str("connect timeout"),
            Error::SendTimeout => f.write_str("send timeout"),
            Error::ReceiveTimeout => f.write_str("receive timeout"),
            Error::PeerClosed => {
                f.write_str("connection closed by peer before the response was complete")
            }
            Error::Reset => f.write_str("connection reset"),
            Error::Tls(e) => write!(f, "TLS failed: {e}"),
            Error::Protocol(e) => write!(f, "{e}"),
            Error::LimitExceeded(what) => write!(f, "limit exceeded: {what}"),
            Error::InvalidRequest(what) => write!(f, "invalid request: {what}"),
            Error::WaitTimeout => f.write_str("timed out waiting for a connection"),
            Error::Panic(what) => write!(f, "a callback panicked: {what}"),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for Error {
    /// The wrapped error: for [`Error::Connect`], the last attempt's
    /// [`io::Error`]. [`Error::Protocol`] is shown as its [`ProtocolError`]
    /// (its `Display` is the protocol error's own), so it forwards to that
    /// error's source rather than repeat it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) => Some(e.io_error()),
            Error::Protocol(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

/// Why a connect failed: each address tried, in order, with the
/// [`io::Error`] it gave. A name that resolves to several addresses is tried
/// at each in turn; the task fails only when every one has failed.
///
/// ```
/// use std::error::Error as _;
/// use std::io;
/// use taskweave::Error;
///
/// fn explain(err: &Error) {
///     if let Error::Connect(e) = err {
///         for (addr, why) in e.attempts() {
///             eprintln!("{addr}: {why}");
///         }
///         assert_eq!(e.kind(), e.io_error().kind());
///     }
///     // The last attempt's io::Error, kind and OS error included:
///     if let Some(io) = err.source().and_then(|s| s.downcast_ref::<io::Error>()) {
///         eprintln!("{:?} (OS error {:?})", io.kind(), io.raw_os_error());
///     }
/// }
/// # explain(&Error::Cancelled);
/// ```
#[derive(Debug, Clone)]
pub struct ConnectError {
    attempts: Arc<Attempts>,
}

#[derive(Debug)]
struct Attempts {
    /// Every attempt before the last, oldest first.
    earlier: Vec<(SocketAddr, io::Error)>,
    last: (SocketAddr, io::Error),
}

impl ConnectError {
    /// The connect to `addr` failed with `error`, after those in `earlier`
    /// (oldest first).
    pub(crate) fn new(
        earlier: Vec<(SocketAddr, io::Error)>,
        addr: SocketAddr,
        error: io::Error,
    ) -> ConnectError {
        ConnectError {
            attempts: Arc::new(Attempts {
                earlier,
                last: (addr, error),
            }),
        }
    }

    /// Every address tried, oldest first, each with the error it gave.
    pub fn attempts(&self) -> impl Iterator<Item = (SocketAddr, &io::Error)> + '_ {
        let a = &*self.attempts;
        a.earlier
            .iter()
            .chain(std::iter::once(&a.last))
            .map(|(addr, e)| (*addr, e))
    }

    /// The last address tried.
    pub fn addr(&self) -> SocketAddr {
        self.attempts.last.0
    }

    /// The last attempt's error (what [`Error::source`](std::error::Error::source)
    /// returns for [`Error::Connect`]).
    pub fn io_error(&self) -> &io::Error {
        &self.attempts.last.1
    }

    /// The kind of the last attempt's error.
    pub fn kind(&self) -> io::ErrorKind {
        self.attempts.last.1.kind()
    }
}

/// `127.0.0.1:80: connection refused`, one such part per address tried,
/// separated by `; `.
impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (addr, e)) in self.attempts().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{addr}: {}", e.kind())?;
        }
        Ok(())
    }
}

/// Equal when the same addresses failed in the same order, with the same
/// kinds and OS errors.
impl PartialEq for ConnectError {
    fn eq(&self, other: &ConnectError) -> bool {
        let same = |(a, x): (SocketAddr, &io::Error), (b, y): (SocketAddr, &io::Error)| {
            a == b && x.kind() == y.kind() && x.raw_os_error() == y.raw_os_error()
        };
        self.attempts.earlier.len() == other.attempts.earlier.len()
            && self
                .attempts()
                .zip(other.attempts())
                .all(|(x, y)| same(x, y))
    }
}

impl Eq for ConnectError {}
