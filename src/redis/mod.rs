//! Redis serialization protocol (RESP2 and RESP3): an incremental parser and
//! an encoder, with no runtime in them.
//!
//! # Why it is built this way
//!
//! **Incremental, because the runtime owns the read buffer.** A reply arrives
//! in whatever pieces the socket hands over, and the runtime, not the codec,
//! decides where those bytes live. So [`parse`] takes a plain byte slice and
//! answers one of three things: a whole [`Value`] and how many bytes it used
//! (the caller drops exactly those), `Ok(None)` when the slice ends inside a
//! value (the caller reads more and calls again with the longer slice), or a
//! [`RespError`] (the connection is out of sync and must be closed). It keeps
//! no state between calls, so a split anywhere, even inside a `\r\n`, gives
//! the same value as the whole buffer.
//!
//! **Bounded, because a hostile or broken server must get an error, not a
//! stack overflow or an allocation of its choosing.** Every length on the wire
//! is checked against [`Limits`] before anything is allocated: nesting depth
//! (the parser is iterative, with its own stack, and refuses to go deeper than
//! [`Limits::max_depth`]), the element count an aggregate declares, the length
//! a blob declares (the default is Redis's own `proto-max-bulk-len`), and the
//! length of a line. Aggregates preallocate only a small capacity however many
//! elements they announce, so a reply costs memory in proportion to the bytes
//! that actually arrived. Negative lengths other than the RESP2 null `-1` are
//! errors, and so is every malformed integer, double, boolean or type byte.
//!
//! **Plain data, because every layer above needs it.** [`Value`] is an enum to
//! match on, with helpers for the common shapes; [`encode_command`] writes a
//! command as the array of blob strings servers expect.
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
