//! Pluggable protocols: the traits a protocol implements, nothing else.
//!
//! `comm` moves bytes and never knows what they mean. A protocol is a pair of
//! [`Message`] types (what a server reads and writes back; what a client
//! writes and reads) plus the decisions only the protocol can make: whether a
//! connection stays open after an exchange, what to answer on bad input, how
//! many requests a client may pipeline, whether a message is a push rather than
//! a reply, whether a failed request may be sent again, and how the pieces of a
//! streamed message are framed. This module depends on `bytes` alone, so a
//! user adds a protocol without touching the runtime, and the runtime's
//! layers all build on the same contract. [`Protocol`]'s docs implement a
//! line protocol in full and serve it; `examples/common/echo_proto.rs` is a
//! length-prefixed one that pipelines and has pushes.

#![forbid(unsafe_code)]

mod message;
// `doc_lines.rs` is not a module: it is the line protocol that the doc
// examples of `Message` and `Protocol` show in full and other doc examples
// include with `#[path]`, so that every example runs against one real
// protocol.

pub use message::{
    Message, MessageSizes, PieceFramer, Progress, Protocol, ProtocolError, RawPieces,
};
