//! Tasks and the series that run them: Workflow's model.
//!
//! A [`Series`] is a queue of tasks run one after another, with a typed context
//! they share. A task either finishes at once (its callback runs and the series
//! moves on in the same loop, so a series of a million synchronous tasks uses no
//! more stack than one) or takes the series with it and hands it back through
//! [`Series::resume`] when its work completes on another thread. Callbacks of
//! tasks that complete on a poller thread run on the handler pool, or inline on the
//! poller when `Settings::handler_threads` is `0`.
//!
//! Network tasks live here too, over any `Protocol`: a [`Server`] turns each
//! request into a [`ServerTask`] at the head of a new series, and a
//! [`ClientTask`] sends one request over `comm`'s pooled connections. A panic
//! in any callback is contained by its series ([`Series::guard`]): the series
//! ends with an error, its `on_done` runs, a server answers 500.

#![forbid(unsafe_code)]

mod client;
mod counter;
mod go;
mod handlers;
mod parallel;
mod pool;
mod series;
mod server;
mod timer;
mod wait_group;

pub use counter::{count_by_name, counter, named_counter, CounterHandle, CounterTask};
pub use go::{go, GoTask};
pub use parallel::Parallel;
pub use series::{FnTask, Series, Step, Task};
pub use timer::{timer, TimerHandle, TimerTask};
pub use wait_group::WaitGroup;

pub use crate::comm::{ServerHandle, Stream, Timings};
pub use client::ClientTask;
pub use server::{ReplyHandle, Server, ServerBuilder, ServerTask};

pub(crate) use pool::{handlers_inline, spawn_compute, spawn_handler, spawn_handler_job};
pub(crate) use series::Finisher;

/// Runs the callback `f` on the series (a panic in it ends the series, see
/// [`Series::guard`]) and then continues it: on the handler pool when called
/// from a poller thread and handler threads are configured, otherwise right
/// here.
pub(crate) fn deliver(mut series: Box<Series>, f: impl FnOnce(&mut Series) + Send + 'static) {
    if crate::poller::current().is_some() && !handlers_inline() {
        spawn_handler(move || {
            series.guard(f);
            Series::resume(series);
        });
    } else {
        series.guard(f);
        Series::resume(series);
    }
}
