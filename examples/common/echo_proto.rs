//! A length-prefixed echo protocol: the example of plugging a protocol into
//! taskweave without touching its core. A frame is a 4-byte big-endian length
//! followed by that many bytes.
//!
//! A client pipelines up to [`PIPELINE_MAX`] requests per connection (replies
//! come back in order), may send a request again after a stale pooled
//! connection (an echo is harmless to repeat), and treats a frame whose
//! payload starts with `push:` as a push from the server, not a reply.
//!
//! Shared by the echo examples, tests and benches; each uses part of it.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use taskweave::protocol::{Message, MessageSizes, Progress, Protocol, ProtocolError};

/// Largest frame accepted; a bigger length prefix is a protocol error.
pub const MAX_FRAME: usize = 1 << 20;

/// Most requests in flight on one client connection.
pub const PIPELINE_MAX: usize = 1024;

/// What starts the payload of a push frame.
pub const PUSH_PREFIX: &[u8] = b"push:";

/// One frame, parsed incrementally.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    header: [u8; 4],
    header_len: usize,
    body: BytesMut,
    payload: Bytes,
}

impl Frame {
    /// A frame carrying `payload`.
    pub fn new(payload: impl Into<Bytes>) -> Frame {
        Frame {
            payload: payload.into(),
            ..Frame::default()
        }
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Replaces the payload.
    pub fn set_payload(&mut self, payload: impl Into<Bytes>) {
        self.payload = payload.into();
    }

    fn body_len(&self) -> usize {
        u32::from_be_bytes(self.header) as usize
    }
}

impl Message for Frame {
    fn append(&mut self, data: &[u8]) -> Result<Progress, ProtocolError> {
        let mut used = 0;
        if self.header_len < 4 {
            let take = (4 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            used += take;
            if self.header_len < 4 {
                return Ok(Progress::NeedMore(used));
            }
            if self.body_len() > MAX_FRAME {
                return Err(ProtocolError::new(413, "frame too large"));
            }
            self.body.reserve(self.body_len());
        }
        let want = self.body_len() - self.body.len();
        let take = want.min(data.len() - used);
        self.body.extend_from_slice(&data[used..used + take]);
        used += take;
        if self.body.len() == self.body_len() {
            self.payload = std::mem::take(&mut self.body).freeze();
            Ok(Progress::Complete(used))
        } else {
            Ok(Progress::NeedMore(used))
        }
    }

    fn encode(&mut self, out: &mut Vec<Bytes>) {
        let len = (self.payload.len() as u32).to_be_bytes();
        out.push(Bytes::copy_from_slice(&len));
        if !self.payload.is_empty() {
            out.push(self.payload.clone());
        }
    }

    fn sizes(&self) -> Option<MessageSizes> {
        Some(MessageSizes {
            head: 4,
            body: self.payload.len() as u64,
        })
    }
}

/// The echo protocol: a frame in, a frame out, connections kept alive.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Protocol for Echo {
    type Request = Frame;
    type Response = Frame;

    fn name(&self) -> &'static str {
        "echo"
    }

    fn new_request(&self) -> Frame {
        Frame::default()
    }

    fn new_response(&self, _req: &Frame) -> Frame {
        Frame::default()
    }

    fn max_in_flight(&self) -> usize {
        PIPELINE_MAX
    }

    fn is_push(&self, msg: &Frame) -> bool {
        msg.payload().starts_with(PUSH_PREFIX)
    }

    fn new_unsolicited(&self) -> Option<Frame> {
        Some(Frame::default())
    }

    fn may_retry(&self, _req: &Frame) -> bool {
        true
    }
}
