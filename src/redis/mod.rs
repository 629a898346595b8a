//! Redis: a client task with automatic pipelining, a subscriber that stays
//! subscribed, and the RESP2/RESP3 codec under them.
//!
//! ```no_run
//! use taskweave::redis;
//! use taskweave::{Series, WaitGroup};
//!
//! let wg = WaitGroup::new(1);
//! let done = wg.clone();
//! let task = redis::command("redis://127.0.0.1:6379", ["INCR", "visits"], |t, _| {
//!     match t.value() {
//!         Ok(v) => println!("visits: {:?}", v.as_int()),
//!         Err(e) => eprintln!("failed: {e}"),
//!     }
//! });
//! Series::new(task).on_done(move |_| done.done()).start();
//! wg.wait();
//! ```
//!
//! # Why it is built this way
//!
//! **A reply never reaches the wrong task.** Redis answers in order, so the
//! client only has to count: a [`Request`] is a pipeline of commands and its
//! [`Reply`] is complete after one value per command. Everything that could
//! make the count wrong is kept off shared connections: commands that change
//! what a connection answers (`SUBSCRIBE`, `MONITOR`, `CLIENT REPLY`) or
//! whose state would leak to the next task (`SELECT`, `AUTH`, an unfinished
//! `MULTI`) are refused before anything is sent, and pushes (RESP3) are set
//! aside wherever they fall. On a timeout or a broken reply the connection
//! is closed and every command in flight on it fails with that error;
//! nothing is sent again behind the caller's back (redis-rs#1252 and
//! fred#338 matched replies to the wrong request after exactly these).
//!
//! **Pipelining is automatic.** Tasks to one [`Client`] share a few
//! connections from `comm`'s pool; once they are open, a new command is
//! written behind those in flight, and every command that queued while a
//! connection was busy goes out in one `writev`. Redis reads such a batch
//! once and answers it with one write, so its cost per command falls as
//! load rises; a [`Request`] of several commands pipelines explicitly.
//!
//! **A connection greets itself.** The [`Url`] carries credentials, the
//! database and the protocol version, and a new connection sends `HELLO`,
//! `AUTH` and `SELECT` before any task's command (a refusal fails the task
//! that caused the connect, with the server's message).
//!
//! **Pub/sub has its own connection and notices loss.** A [`Subscriber`]
//! pings a quiet connection, resubscribes after a loss with a backoff, and
//! reports how long it was away: Redis keeps no history, so the
//! application must know what it may have missed.
//!
//! **The codec is incremental and bounded.** The runtime owns the read
//! buffer, so the parser takes byte slices: [`parse`] answers a whole
//! [`Value`] and the bytes it used, `Ok(None)` when the slice ends inside
//! one, or a [`RespError`] (the connection is out of sync and must be
//! closed); a [`Parser`] keeps the aggregates it began between reads, so a
//! large reply is parsed once, not again on every read. Every length on the
//! wire is checked against [`Limits`] before anything is allocated:
//! nesting depth (the parser is iterative, with its own stack), the element
//! count an aggregate declares, a blob's length (Redis's own
//! `proto-max-bulk-len` by default) and a line's length. Aggregates
//! preallocate only a small capacity, so a reply costs memory in proportion
//! to the bytes that actually arrived. Negative lengths other than the
//! RESP2 null `-1` are errors, and so is every malformed integer, double,
//! boolean or type byte.
//!
//! ```
//! use taskweave::redis::{parse, Limits, Value};
//!
//! let wire = b"*2\r\n$3\r\nfoo\r\n:42\r\n";
//! assert_eq!(parse(&wire[..7], &Limits::default()), Ok(None)); // needs more
//! let (value, used) = parse(wire, &Limits::default()).unwrap().unwrap();
//! assert_eq!(used, wire.len());
//! let items = value.into_array().unwrap();
//! assert_eq!(items[0].as_str(), Some("foo"));
//! assert_eq!(items[1], Value::Integer(42));
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod client;
// `doc_stand_in.rs` is not a module: it is a stand-in for redis-server that
// the doc examples of `command` and `RedisTask` include with `#[path]`, so
// that they run without one.
mod encode;
mod parse;
mod proto;
mod subscriber;
mod url;
mod value;

pub use client::{command, Client, RedisTask};
pub use encode::{command_bytes, encode_command, encode_value};
pub use parse::{parse, Limits, Parser, RespError};
pub use proto::{Redis, Reply, Request, GREETING_REFUSED, MALFORMED_REPLY, REFUSED_COMMAND};
pub use subscriber::{Message, Status, Subscriber, SubscriberHandle};
pub use url::Url;
pub use value::Value;
