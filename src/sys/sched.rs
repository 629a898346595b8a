//! What the scheduler is told about our threads, and what it tells us.
//!
//! Handler threads exist so that a callback that blocks cannot stall a poller;
//! on a busy CPU they share it with the poller. Two things keep that sharing
//! cheap (see `task::handlers`):
//!
//! - **`SCHED_BATCH`** ([`run_as_batch`]): a thread woken for work does not
//!   preempt the one running on its CPU. A poller then reads every request
//!   that is there before the handler it woke answers them, and the handler
//!   answers all it was given before the poller reads again: two context
//!   switches a batch instead of two a few requests. Wake-up placement is
//!   unchanged, so a woken thread still goes straight to an idle CPU.
//! - **Thread samples** ([`sample_thread`]): whether a handler that took no
//!   job for a while is blocked (another thread would help) or only waiting
//!   for a CPU (another thread would only wait too).
//!
//! Both are Linux's; elsewhere they do nothing and know nothing. So is
//! [`name_this_thread`], for a thread that changes roles.

use std::io;
use std::time::Duration;

/// Puts the calling thread under `SCHED_BATCH` (Linux; no privilege needed).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn run_as_batch() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the duration of the call;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    super::check(rc as isize).map(drop)
}

/// No batch policy on this platform: the thread keeps its policy.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn run_as_batch() -> io::Result<()> {
    Ok(())
}

/// Renames the calling thread as the kernel shows it (`/proc`, `top`): a
/// poller thread whose loop another thread took over goes on as a handler
/// thread, and says so. At most 15 bytes are kept.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn name_this_thread(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: `buf` is a NUL-terminated string of at most 16 bytes that
    // outlives the call, as PR_SET_NAME requires; the kernel copies it.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr());
    }
}

/// Threads keep their names on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn name_this_thread(_name: &str) {}

/// The calling thread's kernel id, for [`sample_thread`]: a system call
/// the first time on each thread, then kept.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn thread_id() -> Option<i32> {
    thread_local! {
        static TID: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
    }
    let tid = TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid takes no arguments and cannot fail.
            t.set(unsafe { libc::gettid() });
        }
        t.get()
    });
    Some(tid)
}

/// No thread ids to look up on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn thread_id() -> Option<i32> {
    None
}

/// What the kernel says of a thread of this process: whether it is
/// runnable (running, or waiting for a CPU) rather than blocked, and the CPU
/// time it has had (exact while it does not run; while it runs, as of its
/// CPU's last tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadSample {
    pub runnable: bool,
    pub ran: Duration,
}

/// Samples the thread `tid` of this process; `None` when the kernel does not
/// say (or the thread is gone).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn sample_thread(tid: i32) -> Option<ThreadSample> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // hold anything, parentheses included.
    let state = stat
        .get(stat.rfind(')')? + 1..)?
        .split_ascii_whitespace()
        .next()?;
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ran = schedstat.split_ascii_whitespace().next()?.parse().ok()?;
    Some(ThreadSample {
        runnable: state == "R",
        ran: Duration::from_nanos(ran),
    })
}

/// The kernel does not say on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn sample_thread(_tid: i32) -> Option<ThreadSample> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_running_thread_samples_itself_as_runnable() {
        let tid = thread_id().expect("Linux has thread ids");
        let sample = sample_thread(tid).expect("the kernel says");
        assert!(sample.runnable);
        assert_eq!(sample_thread(-1), None);
        // Its CPU time is brought up to date when it is switched out.
        std::thread::sleep(Duration::from_millis(2));
        assert!(sample_thread(tid).expect("the kernel says").ran > Duration::ZERO);
    }

    #[test]
    fn a_sleeping_thread_samples_as_blocked() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (_release, wait) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            let _ = tx.send(thread_id());
            let _ = wait.recv();
        });
        let tid = rx.recv().ok().flatten().expect("Linux has thread ids");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sample_thread(tid).expect("the kernel says").runnable {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread never blocked"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(_release);
        let _ = sleeper.join();
    }
}
