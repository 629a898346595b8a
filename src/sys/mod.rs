//! The operating-system layer: every `unsafe` block and raw libc call lives here.
//!
//! Above this module the crate is `#![forbid(unsafe_code)]`. What is here is
//! deliberately thin: resource limits, the spare descriptor kept for EMFILE,
//! listener sockets with `SO_REUSEPORT`, raw `recv`/`send`, a cache prefetch
//! hint, and process CPU time for benches.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

/// Reads the soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Sets the soft `RLIMIT_NOFILE` (clamped to the hard limit). Tests use it to make
/// a child process run out of descriptors on purpose.
pub fn set_nofile_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `lim` is a valid `rlimit`; setrlimit only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> io::Result<Duration> {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// Asks the CPU to bring the cache line holding `p` into its caches: a hint
/// that lets a cache miss overlap other work. It never faults and has no
/// visible effect, so any pointer will do, dangling or not.
#[inline(always)]
pub fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache: it does not fault, even on an
    // invalid address, and changes no memory or register the program can see.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Receives into `buf` from the connected socket `fd` (non-blocking).
///
/// The raw system call: glibc's `recv` is a thread-cancellation point and
/// brackets every call with two atomic updates of the thread's cancel state,
/// which cost as much as our whole deadline bookkeeping on the request path.
/// We never cancel threads.
#[cfg(target_os = "linux")]
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of
    // the call and the kernel writes at most that many; null address arguments
    // ask for no peer address. An invalid `fd` only makes the call fail.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(fd),
            buf.as_mut_ptr(),
            buf.len(),
            0 as libc::c_long,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Sends `buf` on the connected socket `fd` (non-blocking, no `SIGPIPE`);
/// the raw system call, for the reason given at [`recv`].
#[cfg(target_os = "linux")]
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of
    // the call; a null address with length 0 means the connected peer. An
    // invalid `fd` only makes the call fail.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(fd),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(libc::MSG_NOSIGNAL),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::c_long,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Receives into `buf` from the connected socket `fd` (non-blocking).
#[cfg(not(target_os = "linux"))]
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Sends `buf` on the connected socket `fd` (Rust programs start with
/// `SIGPIPE` ignored, so a closed peer is an `EPIPE` error here).
#[cfg(not(target_os = "linux"))]
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Whole seconds since the Unix epoch from the coarse real-time clock: a read
/// of the vDSO's last tick, with no timer access, for values such as the
/// `Date` header that need only the second. It may lag the precise clock by
/// one scheduler tick.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn coarse_unix_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid and writable for the call; the clock id is a constant
    // this platform defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return precise_unix_secs();
    }
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

/// Whole seconds since the Unix epoch (no coarse clock on this platform).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn coarse_unix_secs() -> u64 {
    precise_unix_secs()
}

fn precise_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One descriptor held in reserve so that a listener hit by EMFILE can free it,
/// accept the waiting connection, close it at once and take the spare back,
/// instead of spinning on a backlog it can never drain.
static SPARE_FD: Mutex<Option<File>> = Mutex::new(None);

/// Makes sure the spare descriptor is held. Called when a server starts.
pub fn reserve_spare_fd() {
    if let Ok(mut spare) = SPARE_FD.lock() {
        if spare.is_none() {
            *spare = File::open("/dev/null").ok();
        }
    }
}

/// Releases the spare descriptor, runs `f`, then takes the spare back. Returns
/// `None` when no spare was held.
pub fn with_spare_fd_released<R>(f: impl FnOnce() -> R) -> Option<R> {
    let mut spare = SPARE_FD.lock().ok()?;
    spare.take()?;
    let out = f();
    *spare = File::open("/dev/null").ok();
    Some(out)
}

/// A non-blocking listener bound to `addr`, with `SO_REUSEADDR` and (where the OS
/// has it) `SO_REUSEPORT` so that every poller can accept on its own listener.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
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

/// A non-blocking socket connecting to `addr`; the connect completes when the
/// socket becomes writable.
pub fn start_connect(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Whether an accept error means the process or system is out of descriptors.
pub fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
