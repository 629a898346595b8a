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
