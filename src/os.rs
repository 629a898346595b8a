//! Process-level helpers for benches, tests and servers that open many
//! connections: the descriptor limit and the process's CPU time.
//!
//! These are the only pieces of the OS layer (`sys`, private) that are
//! public, each on purpose: a server that holds 10,000 connections must raise
//! its descriptor limit, and the benches measure CPU per request.

#![forbid(unsafe_code)]

use std::io;
use std::time::Duration;

/// The soft and hard `RLIMIT_NOFILE` (open descriptors).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    crate::sys::process::nofile_limit()
}

/// Sets the soft `RLIMIT_NOFILE`, clamped to the hard limit.
///
/// ```
/// let (soft, hard) = taskweave::os::nofile_limit()?;
/// taskweave::os::set_nofile_limit(hard)?;
/// assert!(taskweave::os::nofile_limit()?.0 >= soft);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_nofile_limit(soft: u64) -> io::Result<()> {
    crate::sys::process::set_nofile_limit(soft)
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> io::Result<Duration> {
    crate::sys::process::cpu_time()
}

/// Blocks until the process gets SIGINT (Ctrl-C) or SIGTERM, and returns
/// that signal's number, so a server can shut down gracefully instead of
/// dying with records unwritten. A second SIGINT or SIGTERM after that exits
/// the process at once (status 1), for a shutdown that takes too long.
///
/// ```no_run
/// use std::time::Duration;
/// use taskweave::http::{Server, ServerTask};
/// use taskweave::Series;
///
/// let server = Server::builder().serve("127.0.0.1:8080", |_: &mut ServerTask, _: &mut Series| {})?;
/// taskweave::os::wait_for_shutdown_signal()?;
/// server.shutdown(Duration::from_secs(5));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn wait_for_shutdown_signal() -> io::Result<i32> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let second = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&second))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let sig = signals.forever().next().unwrap_or(SIGTERM);
    second.store(true, Ordering::SeqCst);
    Ok(sig)
}
