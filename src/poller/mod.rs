//! The event loop: one `mio::Poll` per poller thread.
//!
//! A poller owns a slab of [`Handler`]s (listeners, connections), the deadlines
//! that serve every timeout and timer task, and a scratch read buffer shared by
//! all its connections, so an idle connection holds no buffer of its own. Other
//! threads talk to a poller only through its command queue; pushing a command from
//! the poller's own thread costs no syscall, and from another thread at most one
//! `mio::Waker` write per wake-up however many commands arrive. The poller knows
//! nothing of connections, servers or protocols: it calls handlers, and what a
//! wake-up or a cancellation means is the handler's business.
//!
//! A poller's loop ([`Loop`]: the `Poll`, the handlers, the deadlines) can
//! move between threads: with turn work registered ([`set_turn_work`]), a
//! poller sets its loop aside at the start of a turn to run the jobs its
//! last turn handed over, and if one blocks, another thread takes the loop
//! over ([`take_over`]). Nothing a poller owns is thread-local.
//!
//! A panic that escapes a handler, a command or a timer is caught here, per
//! event: the handler it escaped from is dropped (its `Drop` does its
//! bookkeeping) and the poller goes on with the next event, so one bug or one
//! panicking callback never takes down the other connections on its thread.

#![forbid(unsafe_code)]

mod timeouts;

pub(crate) use timeouts::{QueueKey, TimerFn, TimerKey};

use crate::settings::Settings;
use crossbeam_queue::SegQueue;
use mio::{Events, Poll, Registry, Token, Waker};
use slab::Slab;
use std::any::Any;
use std::cell::Cell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use timeouts::Deadlines;

const WAKER: Token = Token(usize::MAX);
/// Commands handled per loop turn before the poller looks at sockets again.
const COMMANDS_PER_TURN: usize = 4096;
/// Size of the per-poller read buffer.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Readiness reported for a handler's source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The peer shut its side (or the socket has an error): reading will end
    /// with end-of-file or an error, and must go on until it does.
    pub read_closed: bool,
}

/// What a handler wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Stay registered.
    Keep,
    /// Remove me: I have deregistered my source and finished my bookkeeping.
    Remove,
}

/// Something registered with a poller.
pub(crate) trait Handler: Send + 'static {
    /// The source is readable and/or writable.
    fn ready(&mut self, token: usize, core: &mut Core, ready: Ready) -> Flow;
    /// This token's deadline passed.
    fn timeout(&mut self, token: usize, core: &mut Core) -> Flow;
    /// Someone asked this handler to look at its shared state.
    fn wake(&mut self, token: usize, core: &mut Core) -> Flow;
    /// The owner of this registration asks it to end now if it can (a
    /// listener making room evicts the oldest idle connection this way).
    fn cancel(&mut self, token: usize, core: &mut Core) -> Flow;
    /// Prefetches the state `ready` touches first (behind pointers the
    /// handler holds). The poller calls it an event ahead, when the handler
    /// itself is already in cache; see [`run`].
    fn prefetch(&self) {}
}

/// Stands in a slot while its handler is out being called.
struct Placeholder;

impl Handler for Placeholder {
    fn ready(&mut self, _: usize, _: &mut Core, _: Ready) -> Flow {
        Flow::Keep
    }
    fn timeout(&mut self, _: usize, _: &mut Core) -> Flow {
        Flow::Keep
    }
    fn wake(&mut self, _: usize, _: &mut Core) -> Flow {
        Flow::Keep
    }
    fn cancel(&mut self, _: usize, _: &mut Core) -> Flow {
        Flow::Keep
    }
}

struct Slot {
    id: u64,
    in_call: bool,
    handler: Box<dyn Handler>,
}

/// A command for a poller from any thread.
pub(crate) enum Command {
    /// Run a closure on the poller thread with its state.
    Run(Box<dyn FnOnce(&mut Core) + Send>),
    /// Call `wake` on the handler at `token` if it is still the one with `id`.
    Wake { token: usize, id: u64 },
}

/// The part of a poller other threads can reach.
struct Shared {
    queue: SegQueue<Command>,
    waker: Waker,
    /// The poller is (about to be) blocked in `poll`.
    polling: AtomicBool,
    /// A wake-up is already on its way.
    wake_pending: AtomicBool,
    /// The loop, set aside while its thread runs turn work (see
    /// [`set_turn_work`]): another thread may take it over from here.
    set_aside: Mutex<Option<Box<Loop>>>,
    /// Odd while the loop is set aside; bumped as it is set aside and as it
    /// is taken back or over.
    away: AtomicU64,
    /// The kernel id of the thread that set the loop aside.
    away_tid: AtomicI32,
}

/// A poller's loop: all its thread holds between turns. It can move to
/// another thread while set aside.
struct Loop {
    poll: Poll,
    core: Core,
    shared: Arc<Shared>,
    events: Events,
    batch: Vec<(usize, Ready)>,
    expired: Vec<usize>,
}

/// Work a poller does at the start of each turn with its loop set aside,
/// registered by the layer above (the handler pool runs the jobs the last
/// turn handed over, on the poller's own thread: no wake-up, no context
/// switch). While it runs, another thread may take the loop over
/// ([`take_over`]), so a job that blocks does not stall the poller's other
/// connections.
pub(crate) struct TurnWork {
    /// Whether there is work (called with the loop still held).
    pub pending: fn() -> bool,
    /// Does the work; should return soon after [`away`] changes (the
    /// loop was taken over), without touching what the poller owns.
    pub run: fn(index: usize),
    /// This thread's loop was taken over while it worked: the thread is
    /// the layer above's now (the handler pool adopts it), and ends when
    /// this returns.
    pub orphaned: fn(),
}

static TURN_WORK: OnceLock<TurnWork> = OnceLock::new();

/// Sets the work every poller does with its loop set aside (once).
pub(crate) fn set_turn_work(work: TurnWork) {
    let _ = TURN_WORK.set(work);
}

/// Poller `index`'s away phase: odd while its loop is set aside, and the
/// kernel id of the thread that set it aside.
pub(crate) fn away(index: usize) -> (u64, i32) {
    let p = pollers();
    let shared = &p.shared[index % p.shared.len()];
    (
        shared.away.load(Ordering::SeqCst),
        shared.away_tid.load(Ordering::Relaxed),
    )
}

/// Takes over poller `index`'s loop if it is still set aside in `phase`
/// (see [`away`]), and runs it on this thread until the loop is taken over
/// from this thread in turn. False if it was not.
pub(crate) fn take_over(index: usize, phase: u64) -> bool {
    let p = pollers();
    let shared = &p.shared[index % p.shared.len()];
    match shared.take_aside(Some(phase)) {
        Some(l) => {
            // Its events first: the jobs the stuck thread left are what
            // waits behind a blocked one, and may block too.
            run(l, false);
            true
        }
        None => false,
    }
}

impl Shared {
    /// Takes the loop out of its slot (if it is still away in `phase`, when
    /// given), ending the away phase. Its clock is read again: the jobs run
    /// meanwhile took time (a blocked one, until the take-over), and the
    /// poll's timeout is reckoned from it.
    fn take_aside(&self, phase: Option<u64>) -> Option<Box<Loop>> {
        let mut slot = lock(&self.set_aside);
        if phase.is_some_and(|p| p != self.away.load(Ordering::SeqCst)) {
            return None;
        }
        let mut l = slot.take()?;
        self.away.fetch_add(1, Ordering::SeqCst);
        drop(slot);
        l.core.now = Instant::now();
        Some(l)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A poller's state, handed to handlers while they run.
pub(crate) struct Core {
    index: usize,
    registry: Registry,
    slots: Slab<Slot>,
    deadlines: Deadlines,
    scratch: Vec<u8>,
    now: Instant,
}

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Run by every poller at the end of each turn, before it sleeps, and after
/// every [`EVENTS_PER_PAUSE`] events of a long turn: the layer above's chance
/// to finish what the turn's handlers began (the handler pool wakes one
/// thread for all the jobs handed over, and may yield the CPU to it). Returns
/// the longest the poller may sleep (ignored within a turn). Set once; one
/// atomic load a turn when unset.
static TURN_END: OnceLock<fn(Instant) -> Option<Duration>> = OnceLock::new();

/// A turn with more ready events than this pauses after each this many (runs
/// `TURN_END`): with a thousand busy connections a turn can read for
/// milliseconds, and what its first events handed over would wait that long.
const EVENTS_PER_PAUSE: usize = 32;

/// Ready events taken per poll; more wait in the kernel for the next.
const EVENTS_PER_POLL: usize = 1024;

/// Ready events taken per poll with the handoff (`Settings::poller_handoff`).
/// A turn's jobs run at the start of the next turn, after all its events
/// were read: the fewer events a turn takes, the more of their requests are
/// still in cache when their callbacks run. At 1,000 busy connections, 32
/// instead of 1,024 cost about 5% less CPU a request (see
/// `docs/performance.md`); what it adds is an `epoll_wait` per 32 events.
const EVENTS_PER_POLL_HANDOFF: usize = EVENTS_PER_PAUSE;

/// Sets the function every poller runs at the end of each turn and at each
/// pause of a long one (once; later calls are ignored).
pub(crate) fn set_turn_end(f: fn(Instant) -> Option<Duration>) {
    let _ = TURN_END.set(f);
}

/// A process-unique id for connections and registrations.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed) as u64
}

/// The index of the poller running on this thread, if any.
pub(crate) fn current() -> Option<usize> {
    let c = CURRENT.with(|c| c.get());
    (c != usize::MAX).then_some(c)
}

struct Pollers {
    shared: Vec<Arc<Shared>>,
    round_robin: AtomicUsize,
}

static POLLERS: OnceLock<Pollers> = OnceLock::new();

fn pollers() -> &'static Pollers {
    POLLERS.get_or_init(|| {
        let n = Settings::current().poller_threads.max(1);
        let shared = (0..n)
            .map(|i| spawn(i).unwrap_or_else(|e| panic!("taskweave: cannot start poller {i}: {e}")))
            .collect();
        Pollers {
            shared,
            round_robin: AtomicUsize::new(0),
        }
    })
}

/// How many pollers run.
pub(crate) fn count() -> usize {
    pollers().shared.len()
}

/// The poller to use for new work: this thread's poller, or the next in turn.
pub(crate) fn pick() -> usize {
    current().unwrap_or_else(|| {
        let p = pollers();
        p.round_robin.fetch_add(1, Ordering::Relaxed) % p.shared.len()
    })
}

/// Queues a command for poller `index` and wakes it if it may be sleeping.
pub(crate) fn send(index: usize, cmd: Command) {
    let p = pollers();
    let shared = &p.shared[index % p.shared.len()];
    shared.queue.push(cmd);
    if current() == Some(index) {
        return; // the poller drains its queue before it sleeps again
    }
    if shared.polling.load(Ordering::SeqCst) && !shared.wake_pending.swap(true, Ordering::SeqCst) {
        if let Err(e) = shared.waker.wake() {
            log::error!("taskweave: poller wake failed: {e}");
        }
    }
}

/// Runs `f` on poller `index`.
pub(crate) fn run_on(index: usize, f: impl FnOnce(&mut Core) + Send + 'static) {
    send(index, Command::Run(Box::new(f)));
}

/// Adds a timer on poller `index`. `f(false)` runs when it fires, `f(true)` if
/// it is cancelled. `armed` receives the key to cancel with.
pub(crate) fn add_timer(
    index: usize,
    at: Instant,
    f: TimerFn,
    armed: impl FnOnce(usize, TimerKey) + Send + 'static,
) {
    run_on(index, move |core| {
        let key = core.deadlines.add_timer(at, f);
        armed(core.index, key);
    });
}

/// Cancels a timer on poller `index`; it runs its function with `true`.
pub(crate) fn cancel_timer(index: usize, key: TimerKey) {
    run_on(index, move |core| {
        if let Some(f) = core.deadlines.cancel_timer(key) {
            f(core, true);
        }
    });
}

/// Wakes every handler on every poller: each looks at its shared state (a
/// server that is shutting down reaches all its connections this way).
pub(crate) fn wake_all() {
    for index in 0..count() {
        run_on(index, Core::wake_all);
    }
}

/// The text of a panic's payload, for the one log line it gets.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic payload)"
    }
}

/// Runs `f`, catching a panic and logging it once as escaping `what`.
pub(crate) fn contain<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            log::error!(
                "taskweave: a panic escaped {what}: {}",
                panic_message(&*payload)
            );
            None
        }
    }
}

impl Core {
    fn new(index: usize, registry: Registry) -> Core {
        Core {
            index,
            registry,
            slots: Slab::new(),
            deadlines: Deadlines::new(),
            scratch: vec![0; SCRATCH_BYTES],
            now: Instant::now(),
        }
    }

    /// A core with no thread behind it, for unit tests of what runs on one.
    #[cfg(test)]
    pub(crate) fn for_test() -> Core {
        let poll = Poll::new().expect("poll");
        Core::new(usize::MAX, poll.registry().try_clone().expect("registry"))
    }
}

fn spawn(index: usize) -> io::Result<Arc<Shared>> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let registry = poll.registry().try_clone()?;
    let shared = Arc::new(Shared {
        queue: SegQueue::new(),
        waker,
        polling: AtomicBool::new(false),
        wake_pending: AtomicBool::new(false),
        set_aside: Mutex::new(None),
        away: AtomicU64::new(0),
        away_tid: AtomicI32::new(0),
    });
    let settings = Settings::current();
    let per_poll = if settings.pollers_run_jobs() {
        EVENTS_PER_POLL_HANDOFF
    } else {
        EVENTS_PER_POLL
    };
    let l = Box::new(Loop {
        poll,
        core: Core::new(index, registry),
        shared: shared.clone(),
        events: Events::with_capacity(per_poll),
        batch: Vec::with_capacity(per_poll),
        expired: Vec::new(),
    });
    std::thread::Builder::new()
        .name(format!("tw-poller-{index}"))
        .spawn(move || {
            if settings.batch_scheduling && settings.handler_threads > 0 {
                // Handlers this poller wakes do not preempt it (see `sys::sched`).
                if let Err(e) = crate::sys::sched::run_as_batch() {
                    log::debug!("taskweave: poller {index} keeps its scheduling policy: {e}");
                }
            }
            run(l, true);
            // The loop was taken over: this thread is the layer above's now.
            if let Some(work) = TURN_WORK.get() {
                (work.orphaned)();
            }
        })?;
    Ok(shared)
}

/// Sets the loop aside and does the turn work; returns the loop, or `None`
/// if another thread took it over meanwhile.
fn work_away(l: Box<Loop>, work: &TurnWork) -> Option<Box<Loop>> {
    let shared = l.shared.clone();
    let index = l.core.index;
    if let Some(tid) = crate::sys::sched::thread_id() {
        shared.away_tid.store(tid, Ordering::Relaxed);
    }
    {
        let mut slot = lock(&shared.set_aside);
        *slot = Some(l);
        shared.away.fetch_add(1, Ordering::SeqCst);
    }
    CURRENT.with(|c| c.set(usize::MAX));
    contain("the turn's work", || (work.run)(index));
    let back = shared.take_aside(None);
    if back.is_some() {
        CURRENT.with(|c| c.set(index));
    }
    back
}

/// Runs a poller's loop on this thread, from its turn work unless not
/// `work_first`. Returns once another thread took the loop over (see
/// [`TurnWork`]); never otherwise.
fn run(mut l: Box<Loop>, mut work_first: bool) {
    CURRENT.with(|c| c.set(l.core.index));
    loop {
        let work_now = std::mem::replace(&mut work_first, true);
        if let Some(work) = TURN_WORK.get().filter(|_| work_now) {
            if (work.pending)() {
                match work_away(l, work) {
                    Some(back) => l = back,
                    None => return,
                }
            }
        }
        let Loop {
            poll,
            core,
            shared,
            events,
            batch,
            expired,
        } = &mut *l;
        // One clock read per turn: handlers and deadlines use `core.now`, taken
        // when `poll` returned. A timeout computed from it can only be late by
        // the time the turn took, never early.
        let mut timeout = core.deadlines.next_timeout(core.now);
        if let Some(turn_end) = TURN_END.get() {
            if let Some(wait) = contain("the turn's end", || turn_end(core.now)).flatten() {
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
        }
        shared.polling.store(true, Ordering::SeqCst);
        if !shared.queue.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        let res = poll.poll(events, timeout);
        shared.polling.store(false, Ordering::SeqCst);
        shared.wake_pending.store(false, Ordering::SeqCst);
        if let Err(e) = res {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("taskweave: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        core.now = Instant::now();
        batch.clear();
        batch.extend(events.iter().filter(|ev| ev.token() != WAKER).map(|ev| {
            let ready = Ready {
                readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                read_closed: ev.is_read_closed() || ev.is_error(),
            };
            (ev.token().0, ready)
        }));
        // Each event's handler state is cold: the kernel work of the events
        // before it has pushed it out of cache. Loading it an event or two
        // ahead, as prefetches, overlaps those misses with the work in between.
        let token_at = |i: usize| batch.get(i).map(|&(token, _)| token);
        core.prefetch_slot(token_at(0));
        core.prefetch_slot(token_at(1));
        core.prefetch_handler(token_at(0));
        for (i, &(token, ready)) in batch.iter().enumerate() {
            core.prefetch_slot(token_at(i + 2));
            core.prefetch_handler(token_at(i + 1));
            core.call(token, |h, core| h.ready(token, core, ready));
            if (i + 1) % EVENTS_PER_PAUSE == 0 && i + 1 < batch.len() {
                if let Some(turn_end) = TURN_END.get() {
                    contain("the turn's end", || turn_end(core.now));
                }
            }
        }
        for _ in 0..COMMANDS_PER_TURN {
            match shared.queue.pop() {
                Some(Command::Run(f)) => {
                    contain("a poller command", || f(core));
                }
                Some(Command::Wake { token, id }) => {
                    if core.slots.get(token).is_some_and(|s| s.id == id) {
                        core.call(token, |h, core| h.wake(token, core));
                    }
                }
                None => break,
            }
        }
        core.deadlines.expired(core.now, expired);
        for token in expired.drain(..) {
            core.call(token, |h, core| h.timeout(token, core));
        }
        while let Some(f) = core.deadlines.pop_due_timer(core.now) {
            contain("a timer", || f(core, false));
        }
    }
}

impl Core {
    /// This poller's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The time `poll` last returned (no clock read).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The registry, to register and deregister sources.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Borrows the scratch read buffer; give it back with [`Core::put_scratch`].
    pub fn take_scratch(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.scratch);
        if buf.len() < SCRATCH_BYTES {
            buf.resize(SCRATCH_BYTES, 0);
        }
        buf
    }

    /// Returns the scratch buffer.
    pub fn put_scratch(&mut self, buf: Vec<u8>) {
        self.scratch = buf;
    }

    /// Adds a timer on this poller: `f(core, false)` runs at `at`, or
    /// `f(core, true)` if it is cancelled first.
    pub fn add_timer(&mut self, at: Instant, f: TimerFn) -> TimerKey {
        self.deadlines.add_timer(at, f)
    }

    /// Cancels a timer of this poller; its function runs with `true`.
    pub fn cancel_timer(&mut self, key: TimerKey) {
        if let Some(f) = self.deadlines.cancel_timer(key) {
            f(self, true);
        }
    }

    /// Arms `token`'s deadline for `key.dur` from now (replacing any other).
    pub fn arm(&mut self, token: usize, key: QueueKey) {
        self.deadlines.arm(token, key, self.now);
    }

    /// Clears `token`'s deadline.
    pub fn disarm(&mut self, token: usize) {
        self.deadlines.disarm(token);
    }

    /// The oldest token whose deadline was armed with `key`.
    pub fn oldest(&self, key: QueueKey) -> Option<usize> {
        self.deadlines.oldest(key)
    }

    /// Inserts a handler built by `make(token)`; returns its token.
    pub fn insert(
        &mut self,
        id: u64,
        make: impl FnOnce(usize, &Registry) -> io::Result<Box<dyn Handler>>,
    ) -> io::Result<usize> {
        let entry = self.slots.vacant_entry();
        let token = entry.key();
        let handler = make(token, &self.registry)?;
        entry.insert(Slot {
            id,
            in_call: false,
            handler,
        });
        Ok(token)
    }

    /// The id stored with `token`, if the slot is in use.
    pub fn id_of(&self, token: usize) -> Option<u64> {
        self.slots.get(token).map(|s| s.id)
    }

    /// Asks the handler at `token` to end now (see [`Handler::cancel`]).
    pub fn cancel(&mut self, token: usize) {
        self.call(token, |h, core| h.cancel(token, core));
    }

    /// Wakes the handler at `token` now, on this thread.
    pub fn wake(&mut self, token: usize) {
        self.call(token, |h, core| h.wake(token, core));
    }

    /// Wakes every handler on this poller.
    pub fn wake_all(&mut self) {
        let tokens: Vec<usize> = self.slots.iter().map(|(t, _)| t).collect();
        for token in tokens {
            self.wake(token);
        }
    }

    /// Prefetches `token`'s handler and deadline link (reading its slot).
    fn prefetch_slot(&self, token: Option<usize>) {
        let Some(token) = token else { return };
        if let Some(slot) = self.slots.get(token) {
            crate::sys::cpu::prefetch(&*slot.handler);
        }
        self.deadlines.prefetch_link(token);
    }

    /// Lets `token`'s handler prefetch what it points to.
    fn prefetch_handler(&self, token: Option<usize>) {
        if let Some(slot) = token.and_then(|t| self.slots.get(t)) {
            slot.handler.prefetch();
        }
    }

    /// Calls `f` with the handler at `token` and the core, then applies the flow.
    pub fn call(&mut self, token: usize, f: impl FnOnce(&mut dyn Handler, &mut Core) -> Flow) {
        let Some(slot) = self.slots.get_mut(token) else {
            return;
        };
        if slot.in_call {
            return;
        }
        slot.in_call = true;
        let mut handler = std::mem::replace(&mut slot.handler, Box::new(Placeholder));
        // A handler a panic escaped from may be half-way through a change:
        // it is dropped (its `Drop` closes what it owns) and removed.
        let flow =
            contain("a connection handler", || f(&mut *handler, self)).unwrap_or(Flow::Remove);
        match flow {
            Flow::Keep => {
                if let Some(slot) = self.slots.get_mut(token) {
                    slot.handler = handler;
                    slot.in_call = false;
                }
            }
            Flow::Remove => {
                self.deadlines.disarm(token);
                self.slots.try_remove(token);
                drop(handler);
            }
        }
    }
}
