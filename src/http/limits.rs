//! Size limits for incoming messages.
//!
//! Every buffer the parsers keep grows only up to one of these limits, so a peer
//! cannot make a connection hold more memory than the limits allow, whatever it
//! sends. Each limit names the status a server answers with when it is exceeded;
//! the parsers turn the excess into a [`ProtocolError`](crate::protocol::ProtocolError)
//! carrying that status. Timeouts are the runtime's concern, not this module's.

/// Size limits applied while parsing a message.
///
/// Built with [`Limits::default`] (or [`Limits::new`]) and adjusted with the
/// `with_*` setters:
///
/// ```
/// use taskweave::http::Limits;
/// let limits = Limits::new().with_max_body(1 << 20).with_max_headers(50);
/// assert_eq!(limits.max_body(), 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_head: usize,
    max_headers: usize,
    max_target: usize,
    max_body: u64,
    max_chunk_ext: usize,
    max_trailer: usize,
}

impl Limits {
    /// The defaults: 64 KiB head, 100 header fields, 8 KiB request target,
    /// 16 MiB body, 4 KiB of chunk extensions and 8 KiB of trailer section per
    /// message.
    pub const fn new() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 100,
            max_target: 8 * 1024,
            max_body: 16 * 1024 * 1024,
            max_chunk_ext: 4 * 1024,
            max_trailer: 8 * 1024,
        }
    }

    /// Largest head (start line, header fields and the empty line) in bytes;
    /// more is answered with 431.
    pub const fn max_head(&self) -> usize {
        self.max_head
    }

    /// Most header fields in one head; more is answered with 431.
    pub const fn max_headers(&self) -> usize {
        self.max_headers
    }

    /// Longest request target in bytes; longer is answered with 414.
    pub const fn max_target(&self) -> usize {
        self.max_target
    }

    /// Largest body (decoded payload) in bytes; larger is answered with 413.
    /// A client applies it to response bodies too.
    pub const fn max_body(&self) -> u64 {
        self.max_body
    }

    /// Most bytes of chunk extensions in one chunked body, all chunks together;
    /// more is answered with 400.
    pub const fn max_chunk_ext(&self) -> usize {
        self.max_chunk_ext
    }

    /// Largest trailer section of a chunked body in bytes; larger is answered
    /// with 400.
    pub const fn max_trailer(&self) -> usize {
        self.max_trailer
    }

    /// Sets [`max_head`](Self::max_head).
    pub const fn with_max_head(mut self, bytes: usize) -> Self {
        self.max_head = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    pub const fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets [`max_target`](Self::max_target).
    pub const fn with_max_target(mut self, bytes: usize) -> Self {
        self.max_target = bytes;
        self
    }

    /// Sets [`max_body`](Self::max_body).
    pub const fn with_max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets [`max_chunk_ext`](Self::max_chunk_ext).
    pub const fn with_max_chunk_ext(mut self, bytes: usize) -> Self {
        self.max_chunk_ext = bytes;
        self
    }

    /// Sets [`max_trailer`](Self::max_trailer).
    pub const fn with_max_trailer(mut self, bytes: usize) -> Self {
        self.max_trailer = bytes;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let l = Limits::default();
        assert_eq!(l.max_head(), 65536);
        assert_eq!(l.max_headers(), 100);
        assert_eq!(l.max_target(), 8192);
        assert_eq!(l.max_body(), 16 << 20);
        assert_eq!(l.max_chunk_ext(), 4096);
        assert_eq!(l.max_trailer(), 8192);
    }

    #[test]
    fn setters_change_only_their_field() {
        let l = Limits::new()
            .with_max_head(1)
            .with_max_headers(2)
            .with_max_target(3)
            .with_max_body(4)
            .with_max_chunk_ext(5)
            .with_max_trailer(6);
        assert_eq!(
            (
                l.max_head(),
                l.max_headers(),
                l.max_target(),
                l.max_body(),
                l.max_chunk_ext(),
                l.max_trailer()
            ),
            (1, 2, 3, 4, 5, 6)
        );
        assert_ne!(l, Limits::default());
    }
}
