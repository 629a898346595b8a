//! The byte pipe under a connection: a plain TCP socket, or (feature `tls`)
//! a TLS session over one.
//!
//! Everything a connection does to its socket goes through [`Transport`], so
//! a transport that transforms bytes slots in here without reshaping the
//! engines: the TLS variant decrypts what `recv` reads into the caller's
//! buffer, and encrypts what `send` and `send_vectored` are given before it
//! writes the records (see `tls.rs` for how what the socket does not take is
//! accounted). Without the feature the enum has one variant and the match
//! compiles away; with it, plain TCP pays one well-predicted branch a call.

use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// A connection's byte pipe.
pub(crate) enum Transport {
    /// Plain TCP: a std socket (4 bytes; mio's wrapper carries a selector id
    /// in debug builds), registered with the poller by its descriptor.
    Tcp(TcpStream),
    /// TLS over TCP: the session behind a mutex of its own (boxed: a plain
    /// connection does not carry it).
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::TlsStream>),
}

impl Transport {
    /// A TCP connection, accepted or connecting.
    pub fn tcp(stream: mio::net::TcpStream) -> Transport {
        Transport::Tcp(TcpStream::from(stream))
    }

    /// A connecting client socket: TLS to `target` (its name for SNI and the
    /// certificate check) when given TLS settings.
    pub fn connecting(
        stream: TcpStream,
        tls: Option<(&super::tls_config::ClientTls, &super::Target)>,
    ) -> io::Result<Transport> {
        match tls {
            None => Ok(Transport::Tcp(stream)),
            #[cfg(feature = "tls")]
            Some((config, target)) => {
                let name = rustls::pki_types::ServerName::try_from(target.host().into_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = super::tls::TlsStream::client(stream, config, name)?;
                Ok(Transport::Tls(Box::new(tls)))
            }
            #[cfg(not(feature = "tls"))]
            Some((never, _)) => match *never {},
        }
    }

    /// An accepted connection: TLS when the server has `tls` settings.
    pub fn accepted(
        stream: mio::net::TcpStream,
        tls: Option<&super::tls_config::ServerTls>,
    ) -> io::Result<Transport> {
        match tls {
            None => Ok(Transport::tcp(stream)),
            #[cfg(feature = "tls")]
            Some(config) => Ok(Transport::Tls(Box::new(super::tls::TlsStream::server(
                TcpStream::from(stream),
                config,
            )?))),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }
}

impl Transport {
    /// Reads what is there into `buf` (non-blocking).
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => crate::sys::socket::recv(s.as_fd(), buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.recv(buf),
        }
    }

    /// Writes from `buf` what the socket takes (non-blocking).
    #[inline]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => crate::sys::socket::send(s.as_fd(), buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.send(buf),
        }
    }

    /// Writes from `bufs`, in order, what the socket takes (non-blocking).
    #[inline]
    pub fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => crate::sys::socket::send_vectored(s.as_fd(), bufs),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.send_vectored(bufs),
        }
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: Shutdown) {
        match self {
            Transport::Tcp(s) => {
                let _ = s.shutdown(how);
            }
            #[cfg(feature = "tls")]
            Transport::Tls(t) => {
                t.close_notify();
                let _ = t.sock().shutdown(how);
            }
        }
    }

    /// The descriptor to register with the poller.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.sock().as_raw_fd(),
        }
    }

    /// Our address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Transport::Tcp(s) => s.local_addr().ok(),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.sock().local_addr().ok(),
        }
    }

    /// The peer's address; `NotConnected` while a connect is in progress.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Tcp(s) => s.peer_addr(),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.sock().peer_addr(),
        }
    }

    /// A pending socket error (a failed connect).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Transport::Tcp(s) => s.take_error(),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.sock().take_error(),
        }
    }

    /// Writes what a TLS session still holds to send (a handshake flight
    /// the socket did not take whole); `WouldBlock` while some is left.
    /// Plain TCP holds nothing.
    pub fn flush(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.flush(),
        }
    }

    /// Whether a read shorter than its buffer means the socket is drained.
    /// Not over TLS: the session may hold the peer's end of input, read
    /// with the last record, and no readiness edge would come for it.
    #[inline]
    pub fn short_read_drains(&self) -> bool {
        match self {
            Transport::Tcp(_) => true,
            #[cfg(feature = "tls")]
            Transport::Tls(_) => false,
        }
    }

    /// Whether a TLS handshake is still under way (never, for plain TCP).
    pub fn handshaking(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.agreed().is_none(),
        }
    }

    /// What a finished TLS handshake agreed on; `None` for plain TCP and
    /// while the handshake is under way.
    pub fn agreed(&self) -> Option<super::tls_config::Agreed> {
        match self {
            Transport::Tcp(_) => None,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.agreed(),
        }
    }
}
