//! Connections: the engines that move bytes for every protocol.
//!
//! This layer owns everything about a connection and nothing about what its
//! bytes mean: listeners and accept (`max_connections`, eviction, EMFILE),
//! the server connection state machine, the client connection engine and its
//! pools, name resolution, every timeout, and the outbound queue with its
//! backpressure. A protocol plugs in through the `protocol` traits; the layer
//! above (`task`) plugs in through the small traits of `service`, so `comm`
//! never imports it.
//!
//! A connection is split in two. The poller side (a `Handler` on the poller
//! that owns it) reads, parses and runs the state machine. The shared
//! `Conn` owns the transport and the outbound queue, so any thread can
//! write to it: a handler thread that finishes a reply writes it at once, a
//! stream's producer sends from wherever it runs, and only what the socket
//! does not take is queued for the poller (the connection is *paused* until
//! the socket drains). Above the high watermark a server connection stops
//! reading and a producer is told to slow down; past the hard limit a send is
//! refused instead of buffering without bound.

#![forbid(unsafe_code)]

mod client;
mod config;
mod conn;
mod dns;
mod flow;
mod listener;
mod pool;
mod ratelimit;
mod reply;
mod server;
mod service;
#[cfg(feature = "tls")]
mod tls;
mod tls_config;
mod transport;

pub use client::{Target, Timings};
pub use config::{ClientConfig, ConnConfig};
pub use conn::{SendError, SendState};
pub use dns::DNS_TTL;
pub use flow::{FlowControl, FlowCounters, Overflow};
pub use ratelimit::RateLimited;
pub use reply::Stream;
pub use server::ServerHandle;

pub(crate) use client::JobInfo;

use crate::metrics::{AccessLog, ConnStats};

/// Hands a closed connection's record to its sink. The sink is user code,
/// called on a poller thread: a panic in it is contained here, after the
/// engine's own bookkeeping is done.
fn log_record(log: &dyn AccessLog, stats: &ConnStats) {
    crate::poller::contain("an access log's record", || log.record(stats));
}

/// Tells a connection's sink that it opened (see [`log_record`]).
fn log_opened(log: &dyn AccessLog) {
    crate::poller::contain("an access log's opened", || log.opened());
}
pub(crate) use pool::submit;
pub(crate) use reply::Reply;
pub(crate) use server::{serve, ServerSpec};
pub(crate) use service::{Exchange, Job, PushHandler, Service};
pub(crate) use tls_config::{server_tls, PemPair};
