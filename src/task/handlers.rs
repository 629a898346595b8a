//! The handler pool: where callbacks and server `process` run when
//! `handler_threads > 0`.
//!
//! Handler threads exist so that a callback that blocks cannot stall a
//! poller; what they must not do is make every request pay for that. A
//! hand-off costs the thread it wakes a futex call and, on a shared core, two
//! context switches. So with `Settings::poller_handoff` a poller hands
//! over itself rather than its requests:
//!
//! - **The poller runs its turn's jobs**, at the start of its next turn,
//!   with its loop set aside (`poller::set_turn_work`): no wake-up, no
//!   switch, requests still in cache.
//! - **A watcher replaces a stuck poller.** Every [`STALL`] it looks at the
//!   pollers away from their loops; one still in the same job at two looks,
//!   blocked or running (not only waiting for a CPU), has its loop taken over
//!   by a new thread (`poller::take_over`), and joins the pool as an extra
//!   handler thread when its job returns. It parks while the pollers idle.
//! - **Slow jobs spread**: after one of [`SLOW_JOB`] or more, the poller
//!   wakes a parked handler to help with the rest.
//!
//! Other jobs (pushed from threads that are not pollers), and all of them
//! without the handoff, go to handler threads, and the pool wakes as few as
//! it can:
//!
//! - **One wake-up per poller turn.** A job pushed from a poller thread is on
//!   the queue at once, where any awake handler takes it, but the wake-up, if
//!   one is needed, waits for the end of the turn ([`turn_end`]), so the
//!   requests of one turn go over as one batch.
//! - **A wake-up only when no handler is searching**: a thread that is awake
//!   and not running a job will take the next job without being told. A
//!   handler that takes a job while more wait and none is searching wakes
//!   one more, so a burst spreads over the pool (as tokio's workers do).
//! - **No spinning.** A handler with nothing to do parks at once: on a core it
//!   shares with its poller, spinning only takes time from the thread that
//!   would give it work.
//! - **Batches, not trickles, on a shared CPU.** Pollers and handlers run
//!   under `SCHED_BATCH` (`sys::sched`), so neither preempts the other when
//!   it wakes it; a poller that has handed over [`YIELD_AT`] jobs the woken
//!   handler has not started yields its CPU, so a batch is answered while
//!   its requests are still in cache.
//! - **Blocked threads are replaced, not waited for.** With the wake-ups so
//!   few, a batch can sit behind one callback that blocks. The pollers watch
//!   at each turn's end: when jobs have waited for [`STALL`] and no handler
//!   took one meanwhile, a parked handler is woken or, when all are busy, an
//!   extra thread starts (up to `Settings::max_handler_threads`). Extra
//!   threads leave after [`IDLE_EXIT`] without work, and are woken after the
//!   core ones so that those not needed do leave. So a callback that sleeps
//!   delays other connections by about a millisecond, not by its sleep. The
//!   pollers sleep at most `STALL` only while jobs wait with no thread on its
//!   way to them: a quiet server is not woken every millisecond.
//! - **A handler waiting for a CPU is not blocked.** Where handlers share a
//!   busy CPU (with their poller, under `SCHED_BATCH`, which makes each side
//!   finish its batch first), a handler can go a millisecond without a job
//!   only because it is not running. Another thread would wait too, and only
//!   add context switches; so before adding one, the watchdog asks the
//!   kernel whether the handlers are all runnable and were kept from the CPU
//!   (Linux; elsewhere it adds the thread).

use crate::settings::Settings;
use crossbeam_queue::SegQueue;
use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

/// Work for a handler thread. A boxed task that is its own job (a server
/// task) is handed over without another allocation.
pub(crate) trait Job: Send + 'static {
    /// Runs the job.
    fn run(self: Box<Self>);
}

/// A closure as a job.
pub(crate) struct FnJob<F>(pub F);

impl<F: FnOnce() + Send + 'static> Job for FnJob<F> {
    fn run(self: Box<Self>) {
        (self.0)()
    }
}

/// How long queued jobs may wait with no handler taking one before the pool
/// adds a thread (or wakes a parked one).
pub(crate) const STALL: Duration = Duration::from_millis(1);

/// How many jobs may wait, at a poller turn's end or pause, for a handler
/// that was woken but has not run, before the poller yields its CPU. Under
/// `SCHED_BATCH` a handler that shares its poller's CPU runs only once the
/// poller blocks, and a poller with a thousand busy connections may read
/// for milliseconds first: the requests then wait long and go cold in the
/// cache before they are answered. A yield bounds the batch; where the
/// handler runs on a CPU of its own, it costs one system call that returns
/// at once.
pub(crate) const YIELD_AT: usize = 32;

/// How long an extra handler thread waits for work before it leaves.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The handler pool (see the module docs).
pub(crate) struct Handlers {
    queue: SegQueue<Box<dyn Job>>,
    /// Threads awake and about to take a job (not running one, not parked):
    /// each takes a queued job without a wake-up. A waker counts the thread
    /// it wakes here at once, so one job never wakes two.
    searching: AtomicUsize,
    /// Threads parked, as last written under `sleep`'s lock: a hint that
    /// lets a handler skip the lock when there is nobody to wake.
    parked: AtomicUsize,
    /// Jobs taken so far: the watchdog's measure of progress.
    taken: AtomicU64,
    /// Threads alive, the core ones included.
    threads: AtomicUsize,
    core: usize,
    max: usize,
    sleep: Mutex<Sleep>,
    /// Where parked threads wait: core threads at `[CORE]`, extra ones at
    /// `[EXTRA]`, so that a wake-up goes to a core thread first and an
    /// extra thread not needed stays parked long enough to leave (a
    /// condition variable wakes the thread that has waited longest).
    wake: [Condvar; 2],
    /// A job from a thread that is not a poller found no handler to wake: a
    /// poller must run the watchdog soon, whatever its own events.
    watch_needed: AtomicBool,
    /// A poller found no job waiting without a thread on its way to it,
    /// since the watchdog last timed a wait: a wait it sees now began at
    /// most then.
    no_wait_seen: AtomicBool,
    watch: Mutex<Watch>,
    /// The handler threads' kernel ids, for the watchdog's look at whether
    /// they are blocked (empty where the kernel does not say).
    tids: Mutex<Vec<i32>>,
    /// Handler threads run under `SCHED_BATCH` (`Settings::batch_scheduling`).
    batch: bool,
    /// Pollers run their turns' jobs themselves (`Settings::poller_handoff`,
    /// and the pollers' watcher started: without it there is no handoff).
    watching: AtomicBool,
    /// The pollers' watcher is parked: the next poller to set its loop aside
    /// wakes it (under `watcher`'s lock).
    watcher_parked: AtomicBool,
    watcher: Mutex<()>,
    watcher_wake: Condvar,
    /// Jobs each poller has run with its loop set aside: the watcher takes
    /// a loop over only from a thread that is still in the job it was in
    /// at the last look.
    progress: OnceLock<Box<[AtomicU64]>>,
}

/// The parked threads, under the pool's lock, core ones at `[CORE]`, extra
/// ones at `[EXTRA]`.
#[derive(Default)]
struct Sleep {
    parked: [usize; 2],
    /// Wake-ups given and not yet taken by a parked thread.
    notified: [usize; 2],
}

const CORE: usize = 0;
const EXTRA: usize = 1;

/// What the watchdog saw last.
struct Watch {
    taken: u64,
    since: Instant,
    /// When the current wait was last suspected of a stall, and the CPU
    /// time the handler threads had had then.
    sampled: Option<(Instant, Duration)>,
}

thread_local! {
    /// This poller thread pushed jobs in its current turn and has not yet
    /// made sure a handler is on its way.
    static TURN_PUSHED: Cell<bool> = const { Cell::new(false) };
}

static POOL: OnceLock<Handlers> = OnceLock::new();
static STARTED: Once = Once::new();

/// The pool, started with the settings in force on first use; `None` when
/// callbacks run inline (`handler_threads == 0`).
pub(crate) fn pool() -> Option<&'static Handlers> {
    let settings = Settings::current();
    if settings.handler_threads == 0 {
        return None;
    }
    let pool = POOL.get_or_init(|| {
        let core = settings.handler_threads;
        let mut pool = Handlers::new(core, settings.max_handler_threads.max(core));
        pool.batch = settings.batch_scheduling;
        pool
    });
    STARTED.call_once(|| {
        for _ in 0..pool.core {
            pool.start_thread();
        }
        crate::poller::set_turn_end(turn_end);
        if settings.pollers_run_jobs() {
            // Without a watcher, a poller stuck in a job would stay stuck:
            // no handoff then.
            let spawned = std::thread::Builder::new()
                .name("tw-watcher".into())
                .spawn(move || pool.watch_pollers());
            match spawned {
                Ok(_) => {
                    pool.watching.store(true, Ordering::SeqCst);
                    crate::poller::set_turn_work(crate::poller::TurnWork {
                        pending: || {
                            POOL.get()
                                .is_some_and(|p| p.hands_off() && !p.queue.is_empty())
                        },
                        run: run_turn_jobs,
                        orphaned: || {
                            if let Some(pool) = POOL.get() {
                                pool.adopt_this_thread();
                            }
                        },
                    });
                }
                Err(e) => log::error!(
                    "taskweave: cannot start the pollers' watcher, so pollers hand jobs over: {e}"
                ),
            }
        }
    });
    Some(pool)
}

impl Handlers {
    fn new(core: usize, max: usize) -> Handlers {
        Handlers {
            queue: SegQueue::new(),
            searching: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            threads: AtomicUsize::new(0),
            core,
            max,
            sleep: Mutex::new(Sleep::default()),
            wake: [Condvar::new(), Condvar::new()],
            watch_needed: AtomicBool::new(false),
            no_wait_seen: AtomicBool::new(true),
            watch: Mutex::new(Watch {
                taken: 0,
                since: Instant::now(),
                sampled: None,
            }),
            tids: Mutex::new(Vec::new()),
            batch: false,
            watching: AtomicBool::new(false),
            watcher_parked: AtomicBool::new(false),
            watcher: Mutex::new(()),
            watcher_wake: Condvar::new(),
            progress: OnceLock::new(),
        }
    }

    /// Queues `job`. From a poller thread the wake-up waits for the end of
    /// the turn; from any other thread a parked handler is woken now if no
    /// handler is searching.
    pub(crate) fn push(&self, job: Box<dyn Job>) {
        self.queue.push(job);
        if crate::poller::current().is_some() {
            TURN_PUSHED.with(|p| p.set(true));
            return;
        }
        // Pairs with the fence in `park`: either that thread sees this job,
        // or this one sees it no longer searching.
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) == 0 && self.wake_one() {
            return;
        }
        // No thread was woken for this job: every handler is busy, or the
        // one searching (say, woken for the job before this one) may take
        // another job and block. Have a poller's watchdog look soon.
        if !self.watch_needed.swap(true, Ordering::SeqCst) {
            crate::poller::run_on(0, |_| {});
        }
    }

    /// Wakes one parked handler, counting it as searching. False when none
    /// is parked.
    fn wake_one(&self) -> bool {
        let mut sleep = self.lock_sleep();
        let Some(class) = [CORE, EXTRA]
            .into_iter()
            .find(|&c| sleep.parked[c] > sleep.notified[c])
        else {
            return false;
        };
        sleep.notified[class] += 1;
        self.parked.fetch_sub(1, Ordering::Relaxed);
        self.searching.fetch_add(1, Ordering::SeqCst);
        drop(sleep);
        self.wake[class].notify_one();
        true
    }

    fn lock_sleep(&self) -> MutexGuard<'_, Sleep> {
        lock(&self.sleep)
    }

    /// Starts a handler thread, counted as searching until it parks.
    fn start_thread(&'static self) {
        let index = self.threads.fetch_add(1, Ordering::SeqCst);
        self.searching.fetch_add(1, Ordering::SeqCst);
        let extra = index >= self.core;
        let spawned = std::thread::Builder::new()
            .name(format!("tw-handler-{index}"))
            .spawn(move || self.run(extra));
        if let Err(e) = spawned {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            self.searching.fetch_sub(1, Ordering::SeqCst);
            log::error!("taskweave: cannot start a handler thread: {e}");
        }
    }

    /// A handler thread's life: run jobs while there are any, park when
    /// there are none; an extra thread leaves after `IDLE_EXIT` parked. It
    /// stops counting as searching before it looks for a job, so a thread
    /// counted as searching always has a job still to take.
    fn run(&self, extra: bool) {
        if self.batch {
            if let Err(e) = crate::sys::sched::run_as_batch() {
                log::debug!("taskweave: a handler thread keeps its scheduling policy: {e}");
            }
        }
        let tid = crate::sys::sched::thread_id();
        if let Some(tid) = tid {
            lock(&self.tids).push(tid);
        }
        self.serve(extra);
        if let Some(tid) = tid {
            lock(&self.tids).retain(|&t| t != tid);
        }
    }

    /// Runs jobs until an extra thread has waited `IDLE_EXIT` for one.
    fn serve(&self, extra: bool) {
        loop {
            self.searching.fetch_sub(1, Ordering::SeqCst);
            let Some(job) = self.queue.pop() else {
                if !self.park(extra) {
                    return;
                }
                continue;
            };
            {
                // A burst of short callbacks runs on as many threads as the
                // pool has, not one after the other.
                self.wake_helper();
                self.run_job(job);
                self.searching.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Parks (entered not searching) until woken, and returns counted as
    /// searching; or returns false when an extra thread has waited
    /// `IDLE_EXIT` for nothing and left the pool. A push that finds no
    /// thread searching wakes under the same lock, so it sees this thread
    /// parked, or this thread sees its job.
    fn park(&self, extra: bool) -> bool {
        let mut sleep = self.lock_sleep();
        // Pairs with the fence in `push`.
        fence(Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.searching.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        let class = if extra { EXTRA } else { CORE };
        sleep.parked[class] += 1;
        self.parked.fetch_add(1, Ordering::Relaxed);
        while sleep.notified[class] == 0 {
            if !extra {
                sleep = self.wake[CORE]
                    .wait(sleep)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let (s, waited) = self.wake[EXTRA]
                .wait_timeout(sleep, IDLE_EXIT)
                .unwrap_or_else(|e| e.into_inner());
            sleep = s;
            if waited.timed_out() && sleep.notified[EXTRA] == 0 {
                sleep.parked[EXTRA] -= 1;
                self.parked.fetch_sub(1, Ordering::Relaxed);
                self.threads.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
        }
        // The waker counted us as searching.
        sleep.notified[class] -= 1;
        sleep.parked[class] -= 1;
        true
    }

    /// The watchdog, run by pollers at the end of their turns: adds a
    /// handler when jobs have waited `STALL` and none was taken meanwhile.
    /// Returns how soon it must look again, while jobs wait with no thread
    /// on its way to them.
    fn watchdog(&'static self, now: Instant) -> Option<Duration> {
        // Cleared before the queue is looked at: a push that found the flag
        // still set (and so nudged no poller) is seen below.
        if self.watch_needed.load(Ordering::Relaxed) {
            self.watch_needed.store(false, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        if self.queue.len() <= self.searching.load(Ordering::SeqCst) {
            // Every queued job has a thread on its way to it.
            if !self.no_wait_seen.load(Ordering::Relaxed) {
                self.no_wait_seen.store(true, Ordering::Relaxed);
            }
            return None;
        }
        // Another poller is looking.
        let Ok(mut watch) = self.watch.try_lock() else {
            return Some(STALL);
        };
        let taken = self.taken.load(Ordering::Relaxed);
        let fresh = self.no_wait_seen.swap(false, Ordering::Relaxed);
        if fresh || taken != watch.taken || self.searching.load(Ordering::SeqCst) > 0 {
            watch.taken = taken;
            watch.since = now;
            watch.sampled = None;
        } else if now.saturating_duration_since(watch.since) >= STALL {
            if self.waiting_for_cpu(&mut watch) {
                // Look again in half a stall.
                watch.since = now.checked_sub(STALL / 2).unwrap_or(now);
                return Some(STALL / 2);
            }
            watch.since = now;
            watch.sampled = None;
            if !self.wake_one() && self.threads.load(Ordering::SeqCst) < self.max {
                self.start_thread();
            }
        }
        Some(STALL)
    }

    /// Whether the handlers' lack of progress may be only a wait for a
    /// CPU: every handler thread is runnable (none is blocked in a callback,
    /// none parked) and together they ran for less than half the time since
    /// the last look. When the last look is missing or older than two
    /// stalls, the decision is put off to compare with a fresh one. False
    /// where the kernel does not say: then a thread is added at once.
    fn waiting_for_cpu(&self, watch: &mut Watch) -> bool {
        let mut ran = Duration::ZERO;
        {
            let tids = lock(&self.tids);
            if tids.is_empty() {
                return false;
            }
            for &tid in tids.iter() {
                match crate::sys::sched::sample_thread(tid) {
                    Some(sample) if sample.runnable => ran += sample.ran,
                    _ => {
                        watch.sampled = None;
                        return false;
                    }
                }
            }
        }
        // Without a recent look to compare with, decide at the next one.
        ran_most_of_the_time(&mut watch.sampled, ran) != Some(true)
    }
}

/// A job a poller ran for this long or longer makes it wake a parked
/// handler to help with the rest of its turn's jobs: a quick request's
/// callback, its reply's system call included, takes a few microseconds.
const SLOW_JOB: Duration = Duration::from_micros(100);

/// The longest a poller runs jobs before it looks at its events again (it
/// runs the rest after its next poll).
const WORK_BUDGET: Duration = Duration::from_micros(500);

/// How many looks at idle pollers (a [`STALL`] apart) before the watcher
/// parks until a poller sets its loop aside again.
const WATCHER_IDLE_LOOKS: u32 = 100;

impl Handlers {
    /// Runs one job, containing a panic (its series is lost).
    fn run_job(&self, job: Box<dyn Job>) {
        self.taken.fetch_add(1, Ordering::Relaxed);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
        if let Err(payload) = res {
            log::error!("taskweave: a callback panicked; its series is lost");
            // A payload whose drop panics must not end this thread once it
            // counts as searching (nobody would be woken).
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload)));
            if let Err(again) = dropped {
                std::mem::forget(again);
            }
        }
    }

    /// More jobs wait and nobody else will take them: wakes one more
    /// thread, if one is parked.
    fn wake_helper(&self) {
        if self.searching.load(Ordering::SeqCst) == 0
            && self.parked.load(Ordering::Relaxed) > 0
            && !self.queue.is_empty()
        {
            self.wake_one();
        }
    }

    /// Whether pollers run their turns' jobs now: with the handoff, while
    /// a stuck one can still be replaced (each replacement adds a thread to
    /// the pool, up to `max`). At the cap, jobs go to handler threads.
    fn hands_off(&self) -> bool {
        self.watching.load(Ordering::Relaxed) && self.threads.load(Ordering::Relaxed) < self.max
    }

    /// Counts one more pool thread if the pool is below `max`.
    fn reserve_thread(&self) -> bool {
        self.threads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A poller thread whose loop was taken over joins the pool as an
    /// extra thread (it leaves after `IDLE_EXIT` without work). The rescue
    /// that took its loop counted it already.
    fn adopt_this_thread(&self) {
        let index = self.threads.load(Ordering::SeqCst);
        crate::sys::sched::name_this_thread(&format!("tw-handler-{index}"));
        self.searching.fetch_add(1, Ordering::SeqCst);
        self.run(true);
    }

    /// The pollers' watcher: every [`STALL`] it looks at each poller, and
    /// a poller that has had its loop set aside since the last look, with
    /// its thread blocked or running one job all that time, gets its loop
    /// taken over by a new thread. It parks after a while with no poller
    /// away.
    fn watch_pollers(&'static self) {
        let n = crate::poller::count();
        let progress = self.progress();
        let mut seen = vec![(0u64, 0u64); n];
        let mut samples: Vec<Option<(Instant, Duration)>> = vec![None; n];
        // The away phase each poller was last rescued in.
        let mut rescued = vec![0u64; n];
        let mut quiet = 0;
        loop {
            if quiet >= WATCHER_IDLE_LOOKS {
                self.park_watcher(n);
                quiet = 0;
            } else {
                std::thread::sleep(STALL);
            }
            let mut active = false;
            for i in 0..n {
                let (phase, tid) = crate::poller::away(i);
                let look = (phase, progress[i].load(Ordering::Relaxed));
                if look != seen[i] {
                    seen[i] = look;
                    samples[i] = None;
                    active = true;
                    continue;
                }
                if phase % 2 == 0 {
                    continue;
                }
                active = true;
                // Looked at again after the sample: a thread seen blocked
                // may have been back in its poll already.
                if rescued[i] != phase
                    && stuck(tid, &mut samples[i])
                    && crate::poller::away(i).0 == phase
                {
                    samples[i] = None;
                    rescued[i] = phase;
                    self.rescue(i, phase);
                }
            }
            quiet = if active { 0 } else { quiet + 1 };
        }
    }

    /// Jobs run by each poller with its loop set aside.
    fn progress(&self) -> &[AtomicU64] {
        self.progress.get_or_init(|| {
            (0..crate::poller::count())
                .map(|_| AtomicU64::new(0))
                .collect()
        })
    }

    /// Parks the watcher until a poller sets its loop aside.
    fn park_watcher(&self, pollers: usize) {
        let mut guard = lock(&self.watcher);
        self.watcher_parked.store(true, Ordering::SeqCst);
        // Pairs with `run_turn_jobs`: a poller away now is seen here, or it
        // sees the watcher parked and wakes it.
        if (0..pollers).any(|i| crate::poller::away(i).0 % 2 == 1) {
            self.watcher_parked.store(false, Ordering::SeqCst);
            return;
        }
        while self.watcher_parked.load(Ordering::SeqCst) {
            guard = self
                .watcher_wake
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Starts a thread that takes poller `index`'s loop over, if it is
    /// still away in `phase`.
    /// The stuck thread joins the pool when its job returns, so a rescue
    /// counts it at once: at most `max` threads, as when the watchdog adds
    /// them. The jobs it left queued go to parked handlers.
    fn rescue(&'static self, index: usize, phase: u64) {
        if !self.reserve_thread() {
            return;
        }
        let batch = self.batch;
        let spawned = std::thread::Builder::new()
            .name(format!("tw-poller-{index}"))
            .spawn(move || {
                if batch {
                    let _ = crate::sys::sched::run_as_batch();
                }
                if crate::poller::take_over(index, phase) {
                    self.adopt_this_thread();
                } else {
                    self.threads.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if let Err(e) = spawned {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            log::error!("taskweave: cannot start a thread to take over poller {index}: {e}");
            return;
        }
        while self.queue.len() > self.searching.load(Ordering::SeqCst) && self.wake_one() {}
    }
}

/// Whether the thread `tid`, away from its poller since the last look, is
/// stuck in a job: blocked, or running (not only waiting for a CPU) for at
/// least half the time between two looks. Where the kernel does not say,
/// a poller away a whole look is stuck.
fn stuck(tid: i32, sampled: &mut Option<(Instant, Duration)>) -> bool {
    let Some(sample) = crate::sys::sched::sample_thread(tid) else {
        return true;
    };
    if !sample.runnable {
        return true;
    }
    ran_most_of_the_time(sampled, sample.ran) == Some(true)
}

/// Whether threads that have had `ran` of CPU time so far ran for at least
/// half the time since the look in `sampled` (which this look replaces);
/// `None` without a look of the last two stalls to compare with. Sampled
/// now, not at a turn's start: the turn may have been long.
fn ran_most_of_the_time(sampled: &mut Option<(Instant, Duration)>, ran: Duration) -> Option<bool> {
    let now = Instant::now();
    match sampled.replace((now, ran)) {
        Some((then, before)) if now.saturating_duration_since(then) <= 2 * STALL => {
            Some(ran.saturating_sub(before) * 2 >= now.saturating_duration_since(then))
        }
        _ => None,
    }
}

/// The turn's work of a poller (see `poller::TurnWork`): runs the jobs
/// queued when it starts, here on the poller's thread, and stops early if
/// the loop is taken over meanwhile.
fn run_turn_jobs(index: usize) {
    let Some(pool) = POOL.get() else { return };
    let (phase, _) = crate::poller::away(index);
    if pool.watcher_parked.load(Ordering::SeqCst) {
        let _guard = lock(&pool.watcher);
        pool.watcher_parked.store(false, Ordering::SeqCst);
        pool.watcher_wake.notify_one();
    }
    let progress = &pool.progress()[index];
    let phase_start = Instant::now();
    let mut started = phase_start;
    for _ in 0..pool.queue.len() {
        let Some(job) = pool.queue.pop() else { break };
        pool.run_job(job);
        if crate::poller::away(index).0 != phase {
            return; // taken over: the loop is another thread's now
        }
        progress.fetch_add(1, Ordering::Relaxed);
        // Slow jobs spread over the pool, as a handler spreads a burst (see
        // `serve`): after one, a parked handler helps with the rest.
        let now = Instant::now();
        if now.saturating_duration_since(started) >= SLOW_JOB {
            pool.wake_helper();
        }
        started = now;
        // The poller's own events wait meanwhile: what is left runs after
        // its next poll.
        if now.saturating_duration_since(phase_start) >= WORK_BUDGET {
            return;
        }
    }
}

/// Locks a mutex that guards plain counters and lists: a panic cannot leave
/// them torn.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run by each poller at the end of each turn (registered with
/// `poller::set_turn_end`): one wake-up for the jobs the turn handed over,
/// then the watchdog. Returns the longest the poller may sleep.
fn turn_end(now: Instant) -> Option<Duration> {
    let pool = POOL.get()?;
    // With the handoff, the poller runs its turn's jobs itself.
    if TURN_PUSHED.with(|p| p.replace(false)) && !pool.hands_off() {
        // Pairs with the fence in `park`.
        fence(Ordering::SeqCst);
        if pool.searching.load(Ordering::SeqCst) == 0 {
            pool.wake_one();
        }
        if pool.queue.len() >= YIELD_AT && pool.searching.load(Ordering::Relaxed) > 0 {
            // A batch waits for a handler that is woken but has not run:
            // where it shares this CPU, let it run now (see `YIELD_AT`).
            std::thread::yield_now();
        }
    }
    pool.watchdog(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A private pool (not the process's), its core threads started and
    /// parked.
    fn parked_pool(core: usize) -> &'static Handlers {
        let pool: &'static Handlers = Box::leak(Box::new(Handlers::new(core, core)));
        for _ in 0..core {
            pool.start_thread();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.lock_sleep().parked[CORE] < core {
            assert!(Instant::now() < deadline, "the handlers did not park");
            std::thread::sleep(Duration::from_millis(1));
        }
        pool
    }

    /// A panic payload whose drop panics too.
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's drop panicked");
        }
    }

    /// A job whose panic payload panics when dropped kills its handler
    /// thread after the thread counted itself as searching again: the
    /// count stays at 1 for ever, so no push wakes a parked handler and the
    /// watchdog (which takes `searching > 0` for progress) never adds one.
    #[test]
    fn a_payload_that_panics_on_drop_does_not_stop_the_pool() {
        let pool = parked_pool(2);
        pool.push(Box::new(FnJob(|| std::panic::panic_any(Bomb))));
        // Let the first job end its thread, and the other park again.
        std::thread::sleep(Duration::from_millis(200));
        let (ran, has_run) = mpsc::channel();
        pool.push(Box::new(FnJob(move || {
            let _ = ran.send(());
        })));
        assert!(
            has_run.recv_timeout(Duration::from_secs(2)).is_ok(),
            "a job waits with a handler parked (searching = {}, threads = {})",
            pool.searching.load(Ordering::SeqCst),
            pool.threads.load(Ordering::SeqCst),
        );
    }
}
