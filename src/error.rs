//! [`Error`]: why a task failed, precise enough to act on.

#![forbid(unsafe_code)]

use crate::protocol::ProtocolError;
use std::fmt;
use std::io;

/// Why a network task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Name resolution failed.
    Dns(String),
    /// Name resolution did not answer within the DNS timeout.
    DnsTimeout(String),
    /// The connection could not be established (refused, unreachable...).
    Connect(io::ErrorKind),
    /// The connect did not complete within the connect timeout.
    ConnectTimeout,
    /// The request could not be written within the send timeout.
    SendTimeout,
    /// The response did not arrive in full within the receive timeout.
    ReceiveTimeout,
    /// The peer closed the connection before the response was complete.
    PeerClosed,
    /// The peer reset the connection, or a socket error occurred.
    Reset,
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dns(e) => write!(f, "DNS lookup failed: {e}"),
            Error::DnsTimeout(e) => write!(f, "DNS timeout: {e}"),
            Error::Connect(kind) => write!(f, "connect failed: {kind}"),
            Error::ConnectTimeout => f.write_str("connect timeout"),
            Error::SendTimeout => f.write_str("send timeout"),
            Error::ReceiveTimeout => f.write_str("receive timeout"),
            Error::PeerClosed => {
                f.write_str("connection closed by peer before the response was complete")
            }
            Error::Reset => f.write_str("connection reset"),
            Error::Protocol(e) => write!(f, "{e}"),
            Error::LimitExceeded(what) => write!(f, "limit exceeded: {what}"),
            Error::InvalidRequest(what) => write!(f, "invalid request: {what}"),
            Error::WaitTimeout => f.write_str("timed out waiting for a connection"),
            Error::Panic(what) => write!(f, "a callback panicked: {what}"),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for Error {}
