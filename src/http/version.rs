//! The protocol version of a message.
//!
//! Only HTTP/1.0 and HTTP/1.1 are spoken here (RFC 9112 §2.3). The version of a
//! request decides its persistence defaults (RFC 9112 §9.3) and whether it may
//! use `Transfer-Encoding` at all (§6.1); encoders always write `HTTP/1.1`.

use std::fmt;

/// The HTTP version of a parsed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// `HTTP/1.0`: connections close after each exchange unless asked otherwise.
    Http10,
    /// `HTTP/1.1`: connections persist unless `Connection: close` is sent.
    #[default]
    Http11,
}

impl Version {
    /// The version as written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    /// The version from the minor digit `httparse` reports.
    pub(crate) const fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Version::Http10.to_string(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
        assert_eq!(Version::from_minor(0), Version::Http10);
        assert_eq!(Version::from_minor(1), Version::Http11);
        assert_eq!(Version::default(), Version::Http11);
    }
}
