//! HTTP/1.1 messages (RFC 9112): incremental parsers and zero-copy encoders.
//!
//! # Why it is built this way
//!
//! **Strict, because framing disagreements are attacks.** Request smuggling
//! and response splitting happen when two HTTP implementations on one path
//! disagree about where a message ends. Every input that some implementation
//! could frame differently (both `Content-Length` and `Transfer-Encoding`,
//! conflicting lengths, bare LF line endings, obs-fold, odd chunk sizes, ...)
//! is rejected with the status to answer, and a parser that failed stays
//! failed, so nothing after a bad request is ever served. The rules and their
//! statuses are listed, with RFC sections, in `docs/http.md`.
//!
//! **Incremental, because the runtime owns the read buffer.** The runtime
//! hands [`Message::append`](crate::protocol::Message::append) whatever one
//! read returned, in its own scratch buffer. A head that arrives whole is
//! parsed straight from that slice and copied once; only a head split across
//! reads is buffered, and only until it is complete, so an idle connection
//! holds no buffer. Every buffer is bounded by [`Limits`].
//!
//! **Cheap, because a request should cost little more than its syscalls.**
//! Parsing a request allocates the head copy and, if there is one, the body;
//! header fields are offsets into the head. Encoding a response allocates one
//! exactly-sized head buffer; the body goes out as its own `Bytes`, uncopied;
//! the `Date` value is reformatted at most once a second per thread.
//!
//! # Roles
//!
//! * Server: [`Request::parser`] parses requests; [`Response::for_request`]
//!   builds the answer; [`Response::from_error`] answers a parse error.
//! * Client: [`Request::new`] builds a request that is always framed;
//!   [`Response::parser_for`] parses the answer (it needs the method, because a
//!   response to HEAD has no body).
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

mod body;
mod bufpool;
mod chunked;
mod date;
mod framing;
mod head;
mod headers;
mod limits;
mod request;
mod response;
mod status;
mod syntax;
mod version;

#[cfg(test)]
mod tests;

mod client;
#[cfg(feature = "http")]
pub mod interop;
mod server;
pub mod sse;
mod url;

pub use client::{get, request, ClientProto, ClientTask};
pub use server::{ReplyHandle, Server, ServerBuilder, ServerHandle, ServerProto, ServerTask};
pub use url::Url;

pub use chunked::{encode_chunk, encode_last_chunk, ChunkedDecoder};
pub use date::{http_date, DATE_LEN};
pub use framing::Framing;
pub use headers::{BuildError, HeaderIter, Headers};
pub use limits::Limits;
pub use request::Request;
pub use response::Response;
pub use status::reason_phrase;
pub use version::Version;
