//! Go tasks: a closure run on the compute pool.

use super::{spawn_compute, Series, Step, Task};

type Callback<R> = Box<dyn FnOnce(&mut GoTask<R>, &mut Series) + Send>;

/// A task that runs a computation on a compute thread; its callback (also on
/// that thread) sees the result. Made by [`go`]; the callback reads the
/// result with [`output`](GoTask::output) or
/// [`take_output`](GoTask::take_output).
pub struct GoTask<R> {
    work: Option<Box<dyn FnOnce() -> R + Send>>,
    output: Option<R>,
    callback: Option<Callback<R>>,
}

/// A go task running `work` on the compute pool, then `callback`.
///
/// Use it for work that would hold up a poller or a handler thread: hashing,
/// compression, a blocking call. A panic in `work` is contained: the
/// callback still runs, and finds no output.
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{go, Series};
///
/// let (tx, rx) = mpsc::channel();
/// let sum = go(|| (1..=1_000u64).sum::<u64>(), move |t, _| {
///     let _ = tx.send(t.take_output());
/// });
/// Series::new(sum).start();
/// assert_eq!(rx.recv()?, Some(500_500));
/// # Ok::<(), mpsc::RecvError>(())
/// ```
pub fn go<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
    callback: impl FnOnce(&mut GoTask<R>, &mut Series) + Send + 'static,
) -> GoTask<R> {
    GoTask {
        work: Some(Box::new(work)),
        output: None,
        callback: Some(Box::new(callback)),
    }
}

impl<R> GoTask<R> {
    /// The result; `None` if the computation panicked.
    pub fn output(&mut self) -> Option<&mut R> {
        self.output.as_mut()
    }

    /// Takes the result out.
    pub fn take_output(&mut self) -> Option<R> {
        self.output.take()
    }
}

impl<R: Send + 'static> Task for GoTask<R> {
    fn run(mut self: Box<Self>, mut series: Box<Series>) -> Step {
        spawn_compute(move || {
            if let Some(work) = self.work.take() {
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                self.output = res.ok();
            }
            if let Some(cb) = self.callback.take() {
                series.guard(|s| cb(&mut self, s));
            }
            Series::resume(series);
        });
        Step::Pending
    }
}
