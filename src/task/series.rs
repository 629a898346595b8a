//! [`Series`], the [`Task`] trait and the loop that runs them.

use crate::error::Error;
use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What [`Task::run`] did with the series.
pub enum Step {
    /// The task finished (its callback has run); continue with this series.
    Next(Box<Series>),
    /// The task kept the series; it calls [`Series::resume`] when it completes.
    Pending,
}

/// A unit of work in a series.
///
/// Implement it for your own tasks: do the work, run your callback with
/// `&mut Series`, and return [`Step::Next`]; or start asynchronous work that owns
/// the series and calls [`Series::resume`] when done, and return [`Step::Pending`].
/// Run user callbacks through [`Series::guard`], so that a panic in one ends
/// the series with an error instead of losing it.
///
/// A task that finishes at once, and one that completes on a thread of its
/// own and hands the series back:
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{Series, Step, Task};
///
/// struct Add(u32);
///
/// impl Task for Add {
///     fn run(self: Box<Self>, mut series: Box<Series>) -> Step {
///         series.guard(|s| *s.context_mut::<u32>() += self.0);
///         Step::Next(series)
///     }
/// }
///
/// struct TimesTenElsewhere;
///
/// impl Task for TimesTenElsewhere {
///     fn run(self: Box<Self>, mut series: Box<Series>) -> Step {
///         std::thread::spawn(move || {
///             series.guard(|s| *s.context_mut::<u32>() *= 10);
///             Series::resume(series); // runs the tasks after this one
///         });
///         Step::Pending
///     }
/// }
///
/// let (tx, rx) = mpsc::channel();
/// let mut series = Series::with_context(Add(4), 0u32);
/// series.push_back(TimesTenElsewhere);
/// series.push_back(Add(2));
/// series.on_done(move |s| { let _ = tx.send(*s.context::<u32>()); }).start();
/// assert_eq!(rx.recv()?, 42);
/// # Ok::<(), mpsc::RecvError>(())
/// ```
pub trait Task: Send + 'static {
    /// Runs the task as the current task of `series`.
    fn run(self: Box<Self>, series: Box<Series>) -> Step;
}

/// Runs when a series ends, after its `on_done` callback: the runtime uses it for
/// a server task's reply and for a parallel's bookkeeping.
pub(crate) trait Finisher: Send + 'static {
    /// The series has ended.
    fn finish(self: Box<Self>, series: Box<Series>);
    /// Access to the concrete type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

type OnDone = Box<dyn FnOnce(&mut Series) + Send>;

/// Tasks run one after another, sharing a typed context.
///
/// Callbacks get `&mut Series` and can [`push_back`](Series::push_back) more work,
/// read or change the [context](Series::context_mut), or [`cancel`](Series::cancel)
/// the rest. [`start`](Series::start) runs it: tasks that finish at once run
/// on the caller's thread, and the series moves to other threads as its
/// tasks complete there. Its [`on_done`](Series::on_done) callback runs
/// last, whatever happened; a plain thread waits for that with a
/// [`WaitGroup`](crate::WaitGroup) or a channel.
///
/// Here the context is a log each task writes to, and a callback adds a
/// task at the end while the series runs:
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{go, FnTask, Series};
///
/// type Log = Vec<String>;
///
/// let mut series = Series::with_context(
///     FnTask(|s: &mut Series| s.context_mut::<Log>().push("start".into())),
///     Log::new(),
/// );
/// series.push_back(go(|| 6 * 7, |t, s: &mut Series| {
///     let answer = t.take_output().unwrap_or(0);
///     s.context_mut::<Log>().push(format!("computed {answer}"));
///     s.push_back(FnTask(|s: &mut Series| s.context_mut::<Log>().push("pushed".into())));
/// }));
/// series.push_back(FnTask(|s: &mut Series| s.context_mut::<Log>().push("third".into())));
///
/// let (tx, rx) = mpsc::channel();
/// series.on_done(move |s| { let _ = tx.send(s.take_context::<Log>()); }).start();
/// assert_eq!(rx.recv()?.unwrap_or_default(), ["start", "computed 42", "third", "pushed"]);
/// # Ok::<(), mpsc::RecvError>(())
/// ```
///
/// [`cancel`](Series::cancel) drops the tasks not started yet; `on_done`
/// still runs, and here on this very thread, since every task finishes at
/// once:
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{FnTask, Series};
///
/// let mut series = Series::with_context(FnTask(|s: &mut Series| s.cancel()), "not run");
/// series.push_back(FnTask(|s: &mut Series| *s.context_mut::<&str>() = "ran"));
///
/// let (tx, rx) = mpsc::channel();
/// series.on_done(move |s| { let _ = tx.send((s.is_cancelled(), *s.context::<&str>())); }).start();
/// assert_eq!(rx.try_recv(), Ok((true, "not run")));
/// ```
pub struct Series {
    /// The next task, kept apart so that a series of one task (every server
    /// request starts as one) allocates no queue.
    next: Option<Box<dyn Task>>,
    /// The tasks after `next`.
    tasks: VecDeque<Box<dyn Task>>,
    context: Option<Box<dyn Any + Send>>,
    on_done: Option<OnDone>,
    finisher: Option<Box<dyn Finisher>>,
    cancelled: bool,
    /// Why the series ended early (a callback panicked).
    error: Option<Box<Error>>,
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Series")
            .field("pending_tasks", &self.len())
            .field("has_context", &self.context.is_some())
            .field("cancelled", &self.cancelled)
            .field("error", &self.error)
            .finish()
    }
}

impl Default for Series {
    fn default() -> Self {
        Series::empty()
    }
}

impl Series {
    /// A series with no tasks yet.
    pub fn empty() -> Series {
        Series {
            next: None,
            tasks: VecDeque::new(),
            context: None,
            on_done: None,
            finisher: None,
            cancelled: false,
            error: None,
        }
    }

    /// A series whose first task is `first`.
    pub fn new(first: impl Task) -> Series {
        let mut s = Series::empty();
        s.push_back(first);
        s
    }

    /// Starts a series whose first task is already boxed, in a box this
    /// thread kept (see [`recycle`](Self::recycle)) when there is one.
    pub(crate) fn start_boxed(first: Box<dyn Task>) {
        let mut series = spare().unwrap_or_else(|| Box::new(Series::empty()));
        series.next = Some(first);
        Series::resume(series);
    }

    /// A series whose first task is `first`, with a context the tasks share.
    pub fn with_context<C: Any + Send>(first: impl Task, context: C) -> Series {
        let mut s = Series::new(first);
        s.set_context(context);
        s
    }

    /// Adds a task at the end.
    pub fn push_back(&mut self, task: impl Task) {
        self.push_back_boxed(Box::new(task));
    }

    /// Adds a task to run next.
    pub fn push_front(&mut self, task: impl Task) {
        if let Some(next) = self.next.take() {
            self.tasks.push_front(next);
        }
        self.next = Some(Box::new(task));
    }

    /// Adds an already boxed task at the end.
    pub fn push_back_boxed(&mut self, task: Box<dyn Task>) {
        if self.next.is_none() && self.tasks.is_empty() {
            self.next = Some(task);
        } else {
            self.tasks.push_back(task);
        }
    }

    fn pop_front(&mut self) -> Option<Box<dyn Task>> {
        self.next.take().or_else(|| self.tasks.pop_front())
    }

    /// Tasks still waiting to run.
    pub fn len(&self) -> usize {
        usize::from(self.next.is_some()) + self.tasks.len()
    }

    /// Whether no task is waiting.
    pub fn is_empty(&self) -> bool {
        self.next.is_none() && self.tasks.is_empty()
    }

    /// Sets the callback run when the series ends (builder form).
    pub fn on_done(mut self, f: impl FnOnce(&mut Series) + Send + 'static) -> Series {
        self.on_done = Some(Box::new(f));
        self
    }

    /// Sets the callback run when the series ends.
    pub fn set_on_done(&mut self, f: impl FnOnce(&mut Series) + Send + 'static) {
        self.on_done = Some(Box::new(f));
    }

    /// Replaces the context.
    pub fn set_context<C: Any + Send>(&mut self, context: C) {
        self.context = Some(Box::new(context));
    }

    /// The context, if it is a `C`.
    pub fn try_context_mut<C: Any + Send>(&mut self) -> Option<&mut C> {
        self.context.as_mut()?.downcast_mut()
    }

    /// The context as a `C`.
    ///
    /// # Panics
    /// When the series has no context of type `C`: that is a bug in the program
    /// that built the series, never something a peer can cause. Use
    /// [`try_context_mut`](Series::try_context_mut) to test instead.
    pub fn context_mut<C: Any + Send>(&mut self) -> &mut C {
        match self.try_context_mut() {
            Some(c) => c,
            None => panic!(
                "series context is not a {} (set it with Series::with_context)",
                std::any::type_name::<C>()
            ),
        }
    }

    /// The context as a `C`, read-only; panics like [`context_mut`](Series::context_mut).
    pub fn context<C: Any + Send>(&self) -> &C {
        match self.context.as_ref().and_then(|c| c.downcast_ref()) {
            Some(c) => c,
            None => panic!("series context is not a {}", std::any::type_name::<C>()),
        }
    }

    /// Removes and returns the context, if it is a `C`.
    pub fn take_context<C: Any + Send>(&mut self) -> Option<C> {
        match self.context.take()?.downcast::<C>() {
            Ok(c) => Some(*c),
            Err(other) => {
                self.context = Some(other);
                None
            }
        }
    }

    /// Drops the tasks that have not started; the series ends after the current
    /// task, and its `on_done` still runs.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.next = None;
        self.tasks.clear();
    }

    /// Whether [`cancel`](Series::cancel) was called (or the series failed).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Why the series ended early, if it did: a callback in it panicked
    /// ([`Error::Panic`]). `on_done` sees it.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// Ends the series with `err`: the tasks not started are dropped, and
    /// `on_done` still runs (and sees [`error`](Series::error)).
    pub fn fail(&mut self, err: Error) {
        self.cancel();
        self.error.get_or_insert_with(|| Box::new(err));
    }

    /// Runs user code `f` on the series, containing a panic: it is caught and
    /// logged once, and the series ends with [`Error::Panic`] (its remaining
    /// tasks are dropped; `on_done` still runs). Every built-in task runs its
    /// callback this way; a custom [`Task`] should too. (So is a failed
    /// `assert!` in a callback: a test checks what its callbacks found on
    /// the thread that waits, as these examples do.)
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use taskweave::{Error, FnTask, Series};
    ///
    /// let (tx, rx) = mpsc::channel();
    /// Series::new(FnTask(|_: &mut Series| panic!("oops")))
    ///     .on_done(move |s| {
    ///         let _ = tx.send(s.error().cloned());
    ///     })
    ///     .start();
    /// assert!(matches!(rx.recv()?, Some(Error::Panic(_))));
    /// # Ok::<(), mpsc::RecvError>(())
    /// ```
    pub fn guard(&mut self, f: impl FnOnce(&mut Series)) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(self))) {
            let msg = crate::poller::panic_message(&*payload).to_owned();
            log::error!("taskweave: a callback panicked: {msg}; its series ends");
            self.fail(Error::Panic(msg));
        }
    }

    /// Starts the series on this thread: tasks that finish at once run here.
    pub fn start(self) {
        Series::resume(boxed(self));
    }

    /// Gives an ended series' box back to this thread's cache (a server
    /// starts a series per request; reusing the box saves an allocation).
    pub(crate) fn recycle(mut self: Box<Self>) {
        if !self.is_empty()
            || self.context.is_some()
            || self.on_done.is_some()
            || self.error.is_some()
        {
            return; // not a plain ended series: just drop it
        }
        self.finisher = None;
        self.cancelled = false;
        if self.tasks.capacity() > 0 {
            self.tasks = VecDeque::new();
        }
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < SPARE_MAX {
                    spare.push(self);
                }
            }
        });
    }

    /// Continues a series whose current task has completed. Runs tasks until one
    /// goes asynchronous or the series ends. Custom asynchronous tasks call this.
    pub fn resume(mut series: Box<Series>) {
        loop {
            let Some(task) = series.pop_front() else {
                series.end();
                return;
            };
            match task.run(series) {
                Step::Next(s) => series = s,
                Step::Pending => return,
            }
        }
    }

    fn end(mut self: Box<Self>) {
        if let Some(f) = self.on_done.take() {
            self.guard(f);
            if !self.is_empty() {
                // on_done pushed more work: keep going.
                return Series::resume(self);
            }
        }
        if let Some(fin) = self.finisher.take() {
            fin.finish(self);
        }
    }

    pub(crate) fn set_finisher(&mut self, f: Box<dyn Finisher>) {
        self.finisher = Some(f);
    }

    /// The finisher, if it is a `T` (the server task waiting to reply).
    pub(crate) fn finisher_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.finisher.as_mut()?.as_any_mut().downcast_mut()
    }
}

/// Boxes kept per thread for [`Series::recycle`].
const SPARE_MAX: usize = 64;

thread_local! {
    // Boxes, not values: the point is to keep their allocations.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Series>>> = const { RefCell::new(Vec::new()) };
}

/// `series` in a box, reusing one from this thread's cache when it has one.
/// An empty series' box kept by [`Series::recycle`], if there is one.
fn spare() -> Option<Box<Series>> {
    SPARE
        .try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
}

fn boxed(series: Series) -> Box<Series> {
    match spare() {
        Some(mut b) => {
            *b = series;
            b
        }
        None => Box::new(series),
    }
}

/// A plain closure is a task that finishes at once: a step of a
/// [`Series`] that only reads or changes its context, or decides what to
/// push next. The [`Series`] example uses a few.
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{FnTask, Series};
///
/// let mut series = Series::with_context(FnTask(|s: &mut Series| *s.context_mut::<u32>() += 1), 0u32);
/// series.push_back(FnTask(|s: &mut Series| *s.context_mut::<u32>() *= 10));
///
/// let (tx, rx) = mpsc::channel();
/// series.on_done(move |s| { let _ = tx.send(*s.context::<u32>()); }).start();
/// assert_eq!(rx.try_recv(), Ok(10)); // it all ran here, before `start` returned
/// ```
pub struct FnTask<F>(pub F);

impl<F: FnOnce(&mut Series) + Send + 'static> Task for FnTask<F> {
    fn run(self: Box<Self>, mut series: Box<Series>) -> Step {
        series.guard(self.0);
        Step::Next(series)
    }
}
