//! Socket calls on borrowed descriptors.
//!
//! Reads and writes are the raw system calls on Linux: glibc's wrappers are
//! thread-cancellation points that bracket every call with two atomic updates
//! of the thread's cancel state, which cost as much as a connection's whole
//! deadline bookkeeping on the request path (we never cancel threads). Every
//! write passes `MSG_NOSIGNAL`, vectored ones included (`sendmsg`, never
//! `writev`), so a peer that resets mid-reply is an `EPIPE` error, never a
//! `SIGPIPE` that kills a host process which has not ignored it. Platforms
//! without `MSG_NOSIGNAL` set `SO_NOSIGPIPE` on each socket instead.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

#[cfg(any(target_os = "macos", target_os = "ios"))]
const SEND_FLAGS: libc::c_int = 0;
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;

/// Receives into `buf` from the connected socket `fd` (non-blocking).
#[cfg(target_os = "linux")]
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of
    // the call and the kernel writes at most that many; null address arguments
    // ask for no peer address. `fd` is a live descriptor borrowed for the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(fd.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len(),
            0 as libc::c_long,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    super::check(n as isize)
}

/// Receives into `buf` from the connected socket `fd` (non-blocking).
#[cfg(not(target_os = "linux"))]
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    super::check(n)
}

/// Sends `buf` on the connected socket `fd` (non-blocking, no `SIGPIPE`).
#[cfg(target_os = "linux")]
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of
    // the call; a null address with length 0 means the connected peer. `fd` is
    // a live descriptor borrowed for the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(fd.as_raw_fd()),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(SEND_FLAGS),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::c_long,
        )
    };
    super::check(n as isize)
}

/// Sends `buf` on the connected socket `fd` (non-blocking, no `SIGPIPE`).
#[cfg(not(target_os = "linux"))]
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call.
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), SEND_FLAGS) };
    super::check(n)
}

/// Sends the slices in `bufs`, in order, with one `sendmsg` (non-blocking, no
/// `SIGPIPE`): `writev` with flags.
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero `msghdr` is a valid value of this plain C struct (no
    // address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std documents it), and
    // the kernel only reads through the pointer.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    #[cfg(target_os = "linux")]
    // SAFETY: `msg` points at `bufs.len()` valid iovecs whose buffers stay
    // borrowed for the call; the kernel reads at most their lengths. `fd` is a
    // live descriptor borrowed for the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            libc::c_long::from(fd.as_raw_fd()),
            &msg as *const libc::msghdr,
            libc::c_long::from(SEND_FLAGS),
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above; libc's wrapper takes the same arguments.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, SEND_FLAGS) };
    super::check(n as isize)
}

/// Sets what every connected socket of ours wants: no Nagle delay, and where
/// writes cannot pass `MSG_NOSIGNAL`, no `SIGPIPE`.
pub(crate) fn prepare_stream(fd: BorrowedFd<'_>) {
    let sock = socket2::SockRef::from(&fd);
    let _ = sock.set_nodelay(true);
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    let _ = sock.set_nosigpipe(true);
}

/// A non-blocking listener bound to `addr`, with `SO_REUSEADDR` and (where the OS
/// has it) `SO_REUSEPORT` so that every poller can accept on its own listener.
pub(crate) fn reuseport_listener(
    addr: SocketAddr,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Fails with `AddrInUse` if something listens on `addr` already, even
/// with `SO_REUSEPORT`: a socket without that option cannot bind a port
/// that a listener holds. The probe is closed before returning.
pub(crate) fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// A non-blocking socket connecting to `addr`; the connect completes when the
/// socket becomes writable.
pub(crate) fn start_connect(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    #[cfg(unix)]
    prepare_stream(std::os::fd::AsFd::as_fd(&socket));
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}
