//! Global settings, fixed before the first task runs (as in Workflow).
//!
//! The runtime starts lazily on first use with these values; a program that never
//! calls [`Settings::apply`] gets the defaults.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

/// Thread counts and other process-wide choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Poller threads: all socket syscalls and parsing. Default: min(CPUs, 4).
    pub poller_threads: usize,
    /// Handler threads run callbacks and server `process`. `0` runs them inline on
    /// the poller thread: fastest, for callbacks that never block. Default: CPUs.
    pub handler_threads: usize,
    /// The most handler threads there may be. When callbacks block, so that
    /// requests have waited a millisecond with no handler thread free, the
    /// pool adds a thread, up to this many; extra threads leave after 10 s
    /// without work. Default: 256.
    pub max_handler_threads: usize,
    /// Compute threads run go tasks. Default: CPUs.
    pub compute_threads: usize,
    /// On Linux, when handler threads are in use, pollers and handler
    /// threads run under `SCHED_BATCH`: a thread woken for work does not
    /// preempt the one running on its CPU (it still starts at once on an
    /// idle CPU). Where a poller and its handlers share a CPU, each then
    /// finishes its batch before the other starts: two context switches
    /// per batch, not per few requests. Turn it off when the server shares
    /// busy CPUs with work whose wake-up latency matters more. Default: on.
    pub batch_scheduling: bool,
    /// With handler threads, a poller runs the callbacks of its turn itself
    /// (no hand-off, no context switch), with its loop set aside; when one
    /// blocks or runs long (a millisecond or two), a watcher thread hands
    /// the loop to a new thread, and the old one goes on as a handler
    /// thread. A callback that blocks still stalls no other connection,
    /// and slow callbacks still spread over the handler threads. Off, every
    /// callback goes to a handler thread: a wake-up and, on a shared CPU,
    /// two context switches per batch. Default: on.
    pub poller_handoff: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Settings {
            poller_threads: cpus.clamp(1, 4),
            handler_threads: cpus,
            max_handler_threads: 256,
            compute_threads: cpus,
            batch_scheduling: true,
            poller_handoff: true,
        }
    }
}

/// The runtime has already started; settings can no longer change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyStarted;

impl std::fmt::Display for AlreadyStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("taskweave settings must be applied before the first task runs")
    }
}

impl std::error::Error for AlreadyStarted {}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

impl Settings {
    /// Makes these the process-wide settings. Fails once the runtime has started
    /// (or settings were already applied).
    pub fn apply(self) -> Result<(), AlreadyStarted> {
        let mut s = self;
        s.poller_threads = s.poller_threads.max(1);
        s.compute_threads = s.compute_threads.max(1);
        SETTINGS.set(s).map_err(|_| AlreadyStarted)
    }

    /// The settings in force (the defaults if none were applied).
    pub fn current() -> &'static Settings {
        SETTINGS.get_or_init(Settings::default)
    }

    /// Whether pollers run their turns' callbacks themselves: the handoff,
    /// which needs handler threads to hand the rest to.
    pub(crate) fn pollers_run_jobs(&self) -> bool {
        self.handler_threads > 0 && self.poller_handoff
    }
}
