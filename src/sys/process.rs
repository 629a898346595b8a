//! Process-wide resources: the descriptor limit, CPU time, and the spare
//! descriptor that lets a listener shed connections when descriptors run out.

use std::fs::File;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

/// Reads the soft and hard `RLIMIT_NOFILE`.
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
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

/// Sets the soft `RLIMIT_NOFILE` (clamped to the hard limit).
pub(crate) fn set_nofile_limit(soft: u64) -> io::Result<()> {
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
pub(crate) fn cpu_time() -> io::Result<Duration> {
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

/// One descriptor held in reserve so that a listener hit by EMFILE can free it,
/// accept the waiting connection, close it at once and take the spare back,
/// instead of spinning on a backlog it can never drain.
static SPARE_FD: Mutex<Option<File>> = Mutex::new(None);

/// Makes sure the spare descriptor is held. Called when a server starts.
pub(crate) fn reserve_spare_fd() {
    if let Ok(mut spare) = SPARE_FD.lock() {
        if spare.is_none() {
            *spare = File::open("/dev/null").ok();
        }
    }
}

/// Releases the spare descriptor, runs `f`, then takes the spare back. Returns
/// `None` when no spare was held.
pub(crate) fn with_spare_fd_released<R>(f: impl FnOnce() -> R) -> Option<R> {
    let mut spare = SPARE_FD.lock().ok()?;
    spare.take()?;
    let out = f();
    *spare = File::open("/dev/null").ok();
    Some(out)
}

/// Whether an accept error means the process or system is out of descriptors.
pub(crate) fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
