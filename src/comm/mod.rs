//! Connections: accepting, connecting, reading, writing with backpressure.
//!
//! A connection is split in two. The poller-side handler (in `protocol`) owns the
//! read path and the connection's state machine. The shared `Conn` owns the
//! socket and the outbound queue, so any thread can write to it: a handler thread
//! that finishes a response writes it at once with `writev`, and only what the
//! socket does not take is queued for the poller (the connection is *paused*
//! until the socket drains). Above the high watermark the owner stops reading;
//! past the hard limit a send fails instead of buffering without bound.

#![forbid(unsafe_code)]

mod config;
mod conn;
mod listener;

pub use config::ConnConfig;
pub use conn::SendState;

pub(crate) use conn::{inline_dispatch, take_inline_reply, Arrival, Conn, Done, SendError};
pub(crate) use listener::{Acceptor, Listener};
