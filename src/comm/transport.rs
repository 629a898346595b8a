//! The byte pipe under a connection: today a plain TCP socket.
//!
//! Everything a connection does to its socket goes through [`Transport`], so
//! a transport that transforms bytes slots in here without reshaping the
//! engines: TLS adds a variant that holds the TLS session, decrypts what
//! `recv` reads into the caller's buffer, and encrypts what `send` and
//! `send_vectored` are given before it writes the records (buffering what the
//! socket does not take). A one-variant enum costs nothing at run time: the
//! match compiles away.

use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// A connection's byte pipe.
pub(crate) enum Transport {
    /// Plain TCP: a std socket (4 bytes; mio's wrapper carries a selector id
    /// in debug builds), registered with the poller by its descriptor.
    Tcp(TcpStream),
}

impl Transport {
    /// A TCP connection, accepted or connecting.
    pub fn tcp(stream: mio::net::TcpStream) -> Transport {
        Transport::Tcp(TcpStream::from(stream))
    }
}

impl Transport {
    /// Reads what is there into `buf` (non-blocking).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => crate::sys::socket::recv(s.as_fd(), buf),
        }
    }

    /// Writes from `buf` what the socket takes (non-blocking).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => crate::sys::socket::send(s.as_fd(), buf),
        }
    }

    /// Writes from `bufs`, in order, what the socket takes (non-blocking).
    pub fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => crate::sys::socket::send_vectored(s.as_fd(), bufs),
        }
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: Shutdown) {
        match self {
            Transport::Tcp(s) => {
                let _ = s.shutdown(how);
            }
        }
    }

    /// The descriptor to register with the poller.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// Our address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Transport::Tcp(s) => s.local_addr().ok(),
        }
    }

    /// The peer's address; `NotConnected` while a connect is in progress.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Tcp(s) => s.peer_addr(),
        }
    }

    /// A pending socket error (a failed connect).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Transport::Tcp(s) => s.take_error(),
        }
    }
}
