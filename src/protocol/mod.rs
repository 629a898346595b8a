//! Pluggable protocols.
//!
//! `comm` moves bytes; it never knows what they mean. A protocol is a pair of
//! [`Message`] types (what a server reads and what it writes back) plus a few
//! decisions that only the protocol can make: whether the connection stays open
//! after an exchange, and what to write before closing on bad input. Everything a
//! protocol needs to plug into the runtime is in this module, so a user can add
//! their own (see `examples/echo_server.rs`) without touching `comm`.

#![forbid(unsafe_code)]

mod client;
mod message;
mod server;

pub use client::{ClientConfig, ClientTask, Timings};
pub use message::{Message, MessageSizes, Progress, Protocol, ProtocolError};
pub use server::{Server, ServerBuilder, ServerHandle, ServerTask};
