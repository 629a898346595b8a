//! Pluggable protocols: the traits a protocol implements, nothing else.
//!
//! `comm` moves bytes and never knows what they mean. A protocol is a pair of
//! [`Message`] types (what a server reads and writes back; what a client
//! writes and reads) plus the decisions only the protocol can make: whether a
//! connection stays open after an exchange, what to answer on bad input, how
//! many requests a client may pipeline, whether a message is a push rather than
//! a reply, whether a failed request may be sent again, and how the pieces of a
//! streamed message are framed. This module depends on `bytes` alone, so a
//! user adds a protocol (see `examples/common/echo_proto.rs`) without touching
//! the runtime, and the runtime's layers all build on the same contract.

#![forbid(unsafe_code)]

mod message;

pub use message::{
    Message, MessageSizes, PieceFramer, Progress, Protocol, ProtocolError, RawPieces,
};
