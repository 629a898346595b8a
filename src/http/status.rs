//! Status codes: reason phrases and which statuses never carry a body.
//!
//! The phrases are the ones RFC 9110 §15 registers; they are only used when a
//! response does not set its own. Which statuses have no body is a framing
//! rule (RFC 9112 §6.3), so both the encoder and the response parser ask here.

// One table for the phrases and the ready-made status lines.
macro_rules! statuses {
    ($(($code:literal, $reason:literal),)*) => {
        /// The reason phrase registered for `code`, if there is one.
        pub fn reason_phrase(code: u16) -> Option<&'static str> {
            match code {
                $($code => Some($reason),)*
                _ => None,
            }
        }

        /// `HTTP/1.1 <code> <phrase>\r\n` for a registered code, so encoding
        /// the usual status line is a single copy.
        pub(crate) fn status_line(code: u16) -> Option<&'static [u8]> {
            match code {
                $($code => Some(concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n").as_bytes()),)*
                _ => None,
            }
        }
    };
}

statuses! {
    (100, "Continue"),
    (101, "Switching Protocols"),
    (103, "Early Hints"),
    (200, "OK"),
    (201, "Created"),
    (202, "Accepted"),
    (203, "Non-Authoritative Information"),
    (204, "No Content"),
    (205, "Reset Content"),
    (206, "Partial Content"),
    (300, "Multiple Choices"),
    (301, "Moved Permanently"),
    (302, "Found"),
    (303, "See Other"),
    (304, "Not Modified"),
    (307, "Temporary Redirect"),
    (308, "Permanent Redirect"),
    (400, "Bad Request"),
    (401, "Unauthorized"),
    (402, "Payment Required"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (405, "Method Not Allowed"),
    (406, "Not Acceptable"),
    (407, "Proxy Authentication Required"),
    (408, "Request Timeout"),
    (409, "Conflict"),
    (410, "Gone"),
    (411, "Length Required"),
    (412, "Precondition Failed"),
    (413, "Content Too Large"),
    (414, "URI Too Long"),
    (415, "Unsupported Media Type"),
    (416, "Range Not Satisfiable"),
    (417, "Expectation Failed"),
    (421, "Misdirected Request"),
    (422, "Unprocessable Content"),
    (425, "Too Early"),
    (426, "Upgrade Required"),
    (428, "Precondition Required"),
    (429, "Too Many Requests"),
    (431, "Request Header Fields Too Large"),
    (500, "Internal Server Error"),
    (501, "Not Implemented"),
    (502, "Bad Gateway"),
    (503, "Service Unavailable"),
    (504, "Gateway Timeout"),
    (505, "HTTP Version Not Supported"),
}

/// Whether a response with this status never has a body (1xx, 204, 304).
pub(crate) const fn has_no_body(code: u16) -> bool {
    (code >= 100 && code < 200) || code == 204 || code == 304
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases() {
        assert_eq!(reason_phrase(200), Some("OK"));
        assert_eq!(status_line(200), Some(&b"HTTP/1.1 200 OK\r\n"[..]));
        assert_eq!(status_line(299), None);
        assert_eq!(reason_phrase(431), Some("Request Header Fields Too Large"));
        assert_eq!(reason_phrase(299), None);
    }

    #[test]
    fn bodiless_statuses() {
        for code in [100, 101, 199, 204, 304] {
            assert!(has_no_body(code), "{code}");
        }
        for code in [99, 200, 205, 301, 404, 500] {
            assert!(!has_no_body(code), "{code}");
        }
    }
}
