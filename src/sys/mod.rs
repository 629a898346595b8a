//! The operating-system layer: every `unsafe` block and raw libc call lives here.
//!
//! Above this module the crate is `#![forbid(unsafe_code)]`. What is here is
//! deliberately thin and private to the crate: socket calls on borrowed
//! descriptors ([`socket`]), process limits and the spare descriptor kept for
//! EMFILE ([`process`]), two CPU-level helpers, a cache prefetch hint and
//! the coarse clock ([`cpu`]), and our threads' scheduling policy and what
//! the kernel says of them ([`sched`]). The few things benches and tests
//! need from it are re-exported on purpose by [`crate::os`].

pub(crate) mod cpu;
pub(crate) mod process;
pub(crate) mod sched;
pub(crate) mod socket;

use std::io;

/// Turns a system call's return value into a `Result`: a negative value means
/// the call failed and `errno` says why (mio's `syscall!` idea, as a function).
fn check(rc: isize) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}
