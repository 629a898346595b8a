//! # taskweave
//!
//! An embeddable task-flow networking framework in the style of Sogou's Workflow:
//! a poller of our own (on `mio`: epoll on Linux, kqueue on BSD/macOS) drives
//! *series* of composable tasks that share a typed *series context*. Network I/O,
//! timers and computation are all tasks; a callback runs when each ends.
//!
//! ```
//! use std::sync::mpsc;
//! use std::time::Duration;
//! use taskweave::{timer, Series};
//!
//! let first = timer(Duration::from_millis(5), |_t, s: &mut Series| {
//!     *s.context_mut::<u32>() += 1;
//!     s.push_back(timer(Duration::from_millis(5), |_t, s: &mut Series| {
//!         *s.context_mut::<u32>() += 1;
//!     }));
//! });
//! let (tx, rx) = mpsc::channel();
//! Series::with_context(first, 0u32)
//!     .on_done(move |s| {
//!         let _ = tx.send(*s.context::<u32>());
//!     })
//!     .start();
//! assert_eq!(rx.recv()?, 2);
//! # Ok::<(), mpsc::RecvError>(())
//! ```
//!
//! # Where to start
//!
//! Each item named here has an example in its docs, run as a doctest
//! (those that need a real Redis server are only compiled).
//!
//! - **Tasks and series:** [`Series`] (and [`FnTask`], a closure as a
//!   task), [`Parallel`], [`timer`], [`go`] (the compute pool), [`counter`]
//!   and [`named_counter`]; a plain thread waits for series with a
//!   [`WaitGroup`]. A task of your own implements [`Task`].
//! - **HTTP:** [`http::Server`] gives each request an [`http::ServerTask`];
//!   [`http::get`] and [`http::request`] make an [`http::ClientTask`]. An
//!   answer can be a [`task::Stream`] (see
//!   [`ServerTask::stream`](task::ServerTask::stream)), and
//!   [`http::sse::Hub`] fans server-sent events out to subscribers.
//! - **Redis:** [`redis::command`] for a command or two, a
//!   [`redis::Client`] for many (each makes a [`redis::RedisTask`]), a
//!   [`redis::Subscriber`] for pub/sub.
//! - **A protocol of your own:** implement [`protocol::Message`] and
//!   [`protocol::Protocol`]; [`task::Server`] serves it and
//!   [`task::ClientTask`] sends it.
//!
//! # Layers
//!
//! Bottom up; each uses only the layers below it (`scripts/check_layers.sh`
//! holds the code to this in CI):
//!
//! | layer | owns |
//! |---|---|
//! | `sys` (private) | every `unsafe` and libc call; [`os`] re-exports the few process helpers benches need |
//! | `poller` (private) | one event loop per thread on `mio`: handlers, deadlines, timers, wake-ups |
//! | [`comm`] | connections: accept, the server and client engines, pools, DNS, timeouts, backpressure, streams |
//! | [`task`] | [`Series`], [`Parallel`], timers, counters, go tasks, and the server and client tasks over any protocol |
//! | [`http`] | HTTP/1.1 messages and framing, its server and client tasks |
//! | [`redis`] | RESP2/RESP3 values, an incremental bounded parser and an encoder (the client tasks come later) |
//!
//! Beside them, plain traits and data that import no runtime layer:
//! [`protocol`] (what a protocol implements) and [`metrics`] (per-connection
//! stats and the access log). See `docs/architecture.md` for the why.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod comm;
mod error;
pub mod http;
pub mod metrics;
pub mod os;
mod poller;
pub mod protocol;
pub mod redis;
mod settings;
#[allow(unsafe_code)] // the one module allowed unsafe; each block has a SAFETY comment
mod sys;
pub mod task;

pub use error::{ConnectError, Error};

/// The `bytes` crate, re-exported: messages are encoded into [`bytes::Bytes`]
/// and bodies are `Bytes`, so a protocol of your own (see
/// [`protocol::Message`]) needs no dependency of its own to implement one.
pub use bytes;

/// The README's examples, compiled (and the runnable one run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use settings::{AlreadyStarted, Settings};
pub use task::{
    count_by_name, counter, go, named_counter, timer, CounterTask, FnTask, GoTask, Parallel,
    Series, Step, Task, TimerTask, WaitGroup,
};
