//! Where callbacks and go tasks run.
//!
//! Handler threads run callbacks and server `process` so a slow callback never
//! stalls a poller (`super::handlers`, built for cheap hand-offs); compute
//! threads run go tasks so long computations never stall callbacks: a
//! fixed-size pool fed by an unbounded channel (the work in it is bounded by
//! the tasks that produced it).

use crate::settings::Settings;
use crossbeam_channel::{unbounded, Sender};
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    tx: Sender<Job>,
}

impl Pool {
    fn start(name: &str, threads: usize) -> Pool {
        let (tx, rx) = unbounded::<Job>();
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tw-{name}-{i}"))
                .spawn(move || {
                    for job in rx {
                        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        if res.is_err() {
                            log::error!("taskweave: a callback panicked; its series is lost");
                        }
                    }
                });
            if let Err(e) = spawned {
                log::error!("taskweave: cannot start {name} thread: {e}");
            }
        }
        Pool { tx }
    }

    fn spawn(&self, job: Job) {
        if let Err(e) = self.tx.send(job) {
            // Only possible if every worker died; run it here rather than lose it.
            (e.into_inner())();
        }
    }
}

static COMPUTE: OnceLock<Pool> = OnceLock::new();

/// Whether callbacks run inline on the poller (`handler_threads == 0`).
pub(crate) fn handlers_inline() -> bool {
    Settings::current().handler_threads == 0
}

/// Runs `job` on a handler thread (or here, in inline mode).
pub(crate) fn spawn_handler(job: impl FnOnce() + Send + 'static) {
    match super::handlers::pool() {
        Some(pool) => pool.push(Box::new(super::handlers::FnJob(job))),
        None => job(),
    }
}

/// Runs `job` on a handler thread, or here in inline mode: for a boxed task
/// that is its own job, handed over without another allocation.
pub(crate) fn spawn_handler_job(job: Box<dyn super::handlers::Job>) {
    match super::handlers::pool() {
        Some(pool) => pool.push(job),
        None => job.run(),
    }
}

/// Runs `job` on a compute thread.
pub(crate) fn spawn_compute(job: impl FnOnce() + Send + 'static) {
    COMPUTE
        .get_or_init(|| Pool::start("compute", Settings::current().compute_threads))
        .spawn(Box::new(job));
}
