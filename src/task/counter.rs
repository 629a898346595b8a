//! Counter tasks: complete after being counted a target number of times, from
//! any thread, by handle or by name (Workflow's `count_by_name`).

use super::{deliver, Series, Step, Task};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

type Callback = Box<dyn FnOnce(&mut CounterTask, &mut Series) + Send>;

struct Inner {
    count: u32,
    target: u32,
    waiting: Option<(Box<CounterTask>, Box<Series>)>,
}

type Shared = Arc<Mutex<Inner>>;

/// A task that completes once it has been counted `target` times: a series
/// that waits for events from elsewhere. Made by [`counter`] (counted
/// through a [`CounterHandle`]) or [`named_counter`] (counted by name with
/// [`count_by_name`]).
pub struct CounterTask {
    shared: Shared,
    callback: Option<Callback>,
    /// The name it is registered under, until it runs (a named counter
    /// dropped before it ran leaves the registry, so counts go elsewhere).
    name: Option<String>,
}

/// Counts a counter task from any thread; see [`counter`]. Clones count
/// the same task.
#[derive(Clone)]
pub struct CounterHandle(Shared);

impl std::fmt::Debug for CounterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CounterHandle")
    }
}

/// An anonymous counter task; count it through [`CounterTask::handle`].
///
/// A series that goes on once three other threads have counted it (counts
/// that come before the task runs count too):
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{counter, Series};
///
/// let (tx, rx) = mpsc::channel();
/// let all_in = counter(3, move |_, _| {
///     let _ = tx.send("all three counted");
/// });
/// let handle = all_in.handle();
/// Series::new(all_in).start();
/// for _ in 0..3 {
///     let handle = handle.clone();
///     std::thread::spawn(move || handle.count());
/// }
/// assert_eq!(rx.recv()?, "all three counted");
/// # Ok::<(), mpsc::RecvError>(())
/// ```
pub fn counter(
    target: u32,
    callback: impl FnOnce(&mut CounterTask, &mut Series) + Send + 'static,
) -> CounterTask {
    CounterTask {
        shared: Arc::new(Mutex::new(Inner {
            count: 0,
            target,
            waiting: None,
        })),
        callback: Some(Box::new(callback)),
        name: None,
    }
}

fn registry() -> &'static Mutex<HashMap<String, VecDeque<Shared>>> {
    static NAMED: OnceLock<Mutex<HashMap<String, VecDeque<Shared>>>> = OnceLock::new();
    NAMED.get_or_init(Default::default)
}

/// A counter task registered under `name`, counted by [`count_by_name`]:
/// whoever counts needs only the name, not a handle (Workflow's
/// `WFTaskFactory::create_counter_task(name, ...)`).
///
/// ```
/// use std::sync::mpsc;
/// use taskweave::{count_by_name, named_counter, Series};
///
/// let (tx, rx) = mpsc::channel();
/// Series::new(named_counter("config-loaded", 1, move |_, _| {
///     let _ = tx.send(());
/// }))
/// .start();
///
/// // Anywhere else in the program:
/// assert_eq!(count_by_name("config-loaded", 1), 1); // one count found a counter
/// rx.recv()?;
/// assert_eq!(count_by_name("config-loaded", 1), 0); // it reached its target and left
/// # Ok::<(), mpsc::RecvError>(())
/// ```
pub fn named_counter(
    name: &str,
    target: u32,
    callback: impl FnOnce(&mut CounterTask, &mut Series) + Send + 'static,
) -> CounterTask {
    let mut task = counter(target, callback);
    if target > 0 {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.entry(name.to_owned())
            .or_default()
            .push_back(task.shared.clone());
        task.name = Some(name.to_owned());
    }
    task
}

/// Counts `n` times towards the counters named `name`, oldest first: each count
/// goes to the oldest counter that has not reached its target. Returns how many
/// counts found a counter.
///
/// The registry's lock is never held while a callback runs, so a counter's
/// callback may itself count or create counters by name.
pub fn count_by_name(name: &str, n: u32) -> u32 {
    let mut used = 0;
    let mut reached = Vec::new();
    {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = reg.get_mut(name) else {
            return 0;
        };
        while used < n {
            let Some(front) = queue.front() else {
                break;
            };
            used += 1;
            if let Some(ready) = add_one(front) {
                queue.pop_front();
                reached.extend(ready);
            }
        }
        if queue.is_empty() {
            reg.remove(name);
        }
    }
    for (task, series) in reached {
        deliver(series, move |s| task.complete(s));
    }
    used
}

/// A counter that reached its target and the series waiting on it, if any.
type Reached = Option<(Box<CounterTask>, Box<Series>)>;

/// Counts once. `Some` once the counter has reached its target, with the
/// waiting task to complete (outside any lock).
fn add_one(shared: &Shared) -> Option<Reached> {
    let mut inner = shared.lock().unwrap_or_else(|e| e.into_inner());
    inner.count = inner.count.saturating_add(1);
    (inner.count >= inner.target).then(|| inner.waiting.take())
}

/// Counts once; returns whether the counter has reached its target.
fn count(shared: &Shared) -> bool {
    match add_one(shared) {
        Some(ready) => {
            if let Some((task, series)) = ready {
                deliver(series, move |s| task.complete(s));
            }
            true
        }
        None => false,
    }
}

impl CounterHandle {
    /// Counts once; returns whether the target is reached.
    pub fn count(&self) -> bool {
        count(&self.0)
    }
}

impl CounterTask {
    /// A handle that counts this task.
    pub fn handle(&self) -> CounterHandle {
        CounterHandle(self.shared.clone())
    }

    fn complete(mut self: Box<Self>, series: &mut Series) {
        if let Some(cb) = self.callback.take() {
            series.guard(|s| cb(&mut self, s));
        }
    }
}

impl Drop for CounterTask {
    /// A named counter that never ran (its series was cancelled, or failed,
    /// before it) leaves the registry: counts by name go to live counters.
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = reg.get_mut(&name) {
            queue.retain(|s| !Arc::ptr_eq(s, &self.shared));
            if queue.is_empty() {
                reg.remove(&name);
            }
        }
    }
}

impl Task for CounterTask {
    fn run(mut self: Box<Self>, mut series: Box<Series>) -> Step {
        self.name = None; // it runs: it stays registered until counted
        let shared = self.shared.clone();
        let mut inner = shared.lock().unwrap_or_else(|e| e.into_inner());
        if inner.count >= inner.target {
            drop(inner);
            self.complete(&mut series);
            return Step::Next(series);
        }
        inner.waiting = Some((self, series));
        Step::Pending
    }
}
