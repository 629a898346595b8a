//! [`Parallel`]: series run side by side, joined when the last one ends.

use super::series::Finisher;
use super::{Series, Step, Task};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Callback = Box<dyn FnOnce(&mut Parallel, &mut Series) + Send>;

/// Several series started together; the task completes when all have ended, and
/// its callback sees each series (with its context) in the order they were added.
///
/// A `Parallel` is a task: put it in a series, and the series goes on after
/// its callback. Each member is a series of its own, so its callbacks see
/// its own context, not the parent's. Here three sums run side by side on
/// the compute pool; the one that finishes first is still reported first
/// only if it was added first:
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::{go, timer, Parallel, Series};
///
/// let (tx, rx) = mpsc::channel();
/// let mut par = Parallel::new(move |par: &mut Parallel, _parent: &mut Series| {
///     let sums: Vec<u64> = par.series_mut().map(|s| *s.context::<u64>()).collect();
///     let _ = tx.send(sums);
/// });
/// for n in [100u64, 10, 1] {
///     // The first member waits a little before it sums, so it ends last.
///     let pause = Duration::from_millis(if n == 100 { 20 } else { 0 });
///     let mut member = Series::with_context(timer(pause, |_, _| {}), 0u64);
///     member.push_back(go(move || (1..=n).sum::<u64>(), |t, s: &mut Series| {
///         *s.context_mut::<u64>() = t.take_output().unwrap_or(0);
///     }));
///     par.add(member);
/// }
/// Series::new(par).start();
/// assert_eq!(rx.recv()?, [5050, 55, 1]);
/// # Ok::<(), mpsc::RecvError>(())
/// ```
pub struct Parallel {
    series: Vec<Series>,
    callback: Option<Callback>,
}

impl Parallel {
    /// An empty parallel whose `callback` runs when every series has ended.
    pub fn new(callback: impl FnOnce(&mut Parallel, &mut Series) + Send + 'static) -> Parallel {
        Parallel {
            series: Vec::new(),
            callback: Some(Box::new(callback)),
        }
    }

    /// Adds a series.
    pub fn add(&mut self, series: Series) {
        self.series.push(series);
    }

    /// Adds a series (builder form).
    pub fn with(mut self, series: Series) -> Parallel {
        self.add(series);
        self
    }

    /// The series, in the order added; after completion each holds its context.
    pub fn series_mut(&mut self) -> impl Iterator<Item = &mut Series> {
        self.series.iter_mut()
    }

    /// How many series it holds.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn complete(mut self: Box<Self>, parent: &mut Series) {
        if let Some(cb) = self.callback.take() {
            parent.guard(|s| cb(&mut self, s));
        }
    }
}

struct Join {
    /// Series still running, plus one held by `run` until it has started them all.
    remaining: AtomicUsize,
    done: Mutex<Vec<Option<Box<Series>>>>,
    parent: Mutex<Option<(Box<Parallel>, Box<Series>)>>,
}

impl Join {
    /// Drops one count; the last one out continues the parent series.
    fn release(self: &Arc<Self>) -> Option<(Box<Parallel>, Box<Series>)> {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        let (mut par, parent) = self.parent.lock().ok()?.take()?;
        let done = std::mem::take(&mut *self.done.lock().ok()?);
        par.series = done.into_iter().flatten().map(|s| *s).collect();
        Some((par, parent))
    }
}

struct Member {
    join: Arc<Join>,
    index: usize,
}

impl Finisher for Member {
    fn finish(self: Box<Self>, series: Box<Series>) {
        if let Ok(mut done) = self.join.done.lock() {
            done[self.index] = Some(series);
        }
        if let Some((par, mut parent)) = self.join.release() {
            par.complete(&mut parent);
            Series::resume(parent);
        }
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Task for Parallel {
    fn run(mut self: Box<Self>, parent: Box<Series>) -> Step {
        let members = std::mem::take(&mut self.series);
        let n = members.len();
        let join = Arc::new(Join {
            remaining: AtomicUsize::new(n + 1),
            done: Mutex::new((0..n).map(|_| None).collect()),
            parent: Mutex::new(Some((self, parent))),
        });
        for (index, s) in members.into_iter().enumerate() {
            let mut s = Box::new(s);
            s.set_finisher(Box::new(Member {
                join: join.clone(),
                index,
            }));
            Series::resume(s);
        }
        // If every member ended synchronously we are the last one out: continue
        // the parent in the caller's loop instead of recursing.
        match join.release() {
            Some((par, mut parent)) => {
                par.complete(&mut parent);
                Step::Next(parent)
            }
            None => Step::Pending,
        }
    }
}
