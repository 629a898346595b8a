//! Timer tasks: a poller deadline, never a sleeping thread.

use super::{deliver, Series, Step, Task};
use crate::poller::{self, TimerKey};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Callback = Box<dyn FnOnce(&mut TimerTask, &mut Series) + Send>;

#[derive(Debug)]
enum Slot {
    Idle,
    Armed(usize, TimerKey),
    Cancelled,
    Done,
}

/// A task that completes after a duration, or early when cancelled. Made
/// by [`timer`], cancelled through its [`handle`](TimerTask::handle); its
/// callback reads [`cancelled`](TimerTask::cancelled).
pub struct TimerTask {
    duration: Duration,
    callback: Option<Callback>,
    cancelled: bool,
    slot: Arc<Mutex<Slot>>,
}

/// Cancels a timer task from anywhere: it completes at once with
/// [`TimerTask::cancelled`] set.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::{timer, Series};
///
/// let (tx, rx) = mpsc::channel();
/// let nap = timer(Duration::from_secs(3600), move |t, _| {
///     let _ = tx.send(t.cancelled());
/// });
/// let handle = nap.handle();
/// Series::new(nap).start();
/// handle.cancel(); // from this thread or any other
/// assert_eq!(rx.recv()?, true); // at once, not in an hour
/// # Ok::<(), mpsc::RecvError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TimerHandle(Arc<Mutex<Slot>>);

/// A timer task that waits `duration`, then runs `callback`.
///
/// The wait is a deadline on a poller, not a sleeping thread: a million
/// timers cost a million entries in a poller's timer map, and nothing else.
/// The callback runs on a handler thread (or on the poller, with
/// `Settings::handler_threads` at 0), and its series goes on from there.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::{Duration, Instant};
/// use taskweave::{timer, Series};
///
/// let (tx, rx) = mpsc::channel();
/// let start = Instant::now();
/// let wait = timer(Duration::from_millis(20), move |t, _| {
///     let _ = tx.send((t.cancelled(), start.elapsed()));
/// });
/// Series::new(wait).start();
/// let (cancelled, after) = rx.recv()?;
/// assert!(!cancelled);
/// assert!(after >= Duration::from_millis(20)); // never early
/// # Ok::<(), mpsc::RecvError>(())
/// ```
pub fn timer(
    duration: Duration,
    callback: impl FnOnce(&mut TimerTask, &mut Series) + Send + 'static,
) -> TimerTask {
    TimerTask {
        duration,
        callback: Some(Box::new(callback)),
        cancelled: false,
        slot: Arc::new(Mutex::new(Slot::Idle)),
    }
}

impl TimerTask {
    /// Whether the timer was cancelled rather than fired.
    pub fn cancelled(&self) -> bool {
        self.cancelled
    }

    /// The duration it waits.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// A handle that cancels this timer.
    pub fn handle(&self) -> TimerHandle {
        TimerHandle(self.slot.clone())
    }

    fn complete(mut self: Box<Self>, series: &mut Series, cancelled: bool) {
        self.cancelled = cancelled;
        if let Some(cb) = self.callback.take() {
            series.guard(|s| cb(&mut self, s));
        }
    }
}

impl TimerHandle {
    /// Cancels the timer if it has not fired yet.
    pub fn cancel(&self) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *slot, Slot::Cancelled) {
            Slot::Armed(p, key) => poller::cancel_timer(p, key),
            Slot::Done => *slot = Slot::Done,
            Slot::Idle | Slot::Cancelled => {}
        }
    }
}

impl Task for TimerTask {
    fn run(self: Box<Self>, mut series: Box<Series>) -> Step {
        let slot = self.slot.clone();
        if matches!(
            *slot.lock().unwrap_or_else(|e| e.into_inner()),
            Slot::Cancelled
        ) {
            self.complete(&mut series, true);
            return Step::Next(series);
        }
        let at = Instant::now() + self.duration;
        let fire_slot = slot.clone();
        let fire = Box::new(move |_: &mut crate::poller::Core, cancelled: bool| {
            *fire_slot.lock().unwrap_or_else(|e| e.into_inner()) = Slot::Done;
            deliver(series, move |s| self.complete(s, cancelled));
        });
        poller::add_timer(poller::pick(), at, fire, move |p, key| {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            match *s {
                // Cancelled before the poller armed it: cancel now.
                Slot::Cancelled => poller::cancel_timer(p, key),
                Slot::Idle => *s = Slot::Armed(p, key),
                _ => {}
            }
        });
        Step::Pending
    }
}
