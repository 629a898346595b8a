//! Encoding events and comments by the WHATWG rules for `text/event-stream`.
//!
//! The parser on the other side (a browser's `EventSource`) splits the stream
//! into lines at CRLF, LF or CR, so the encoder must make every line break in
//! the data its own `data:` line, whichever of the three the text uses, and
//! must never let a line break into `id` or `event`, where it would end the
//! field early and start a forged one.

use bytes::Bytes;
use std::time::Duration;

/// A field value that would break the stream's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventError {
    /// `id` or `event` holds CR or LF (or `id` a NUL, which makes browsers
    /// ignore it).
    LineBreak,
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an SSE id or event name must not contain CR, LF or NUL")
    }
}

impl std::error::Error for EventError {}

/// One server-sent event: data, and optionally an id, a type and a
/// reconnection delay.
///
/// ```
/// use taskweave::http::sse::Event;
///
/// let ev = Event::new("line one\r\nline two").with_id("7")?.with_event("note")?;
/// assert_eq!(&ev.encode()[..], b"id: 7\nevent: note\ndata: line one\ndata: line two\n\n");
/// # Ok::<(), taskweave::http::sse::EventError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    data: String,
    id: Option<String>,
    event: Option<String>,
    retry: Option<Duration>,
}

impl Event {
    /// An event carrying `data` (any text: its line breaks, LF, CR or CRLF,
    /// become separate `data:` lines and come back as LF in the browser).
    pub fn new(data: impl Into<String>) -> Event {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    /// Sets the event's id (a client resumes after it with `Last-Event-ID`).
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Event, EventError> {
        let id = id.into();
        if id.contains(['\r', '\n', '\0']) {
            return Err(EventError::LineBreak);
        }
        self.id = Some(id);
        Ok(self)
    }

    /// Sets the event's type (`addEventListener(type, ...)` in a browser).
    pub fn with_event(mut self, name: impl Into<String>) -> Result<Event, EventError> {
        let name = name.into();
        if name.contains(['\r', '\n']) {
            return Err(EventError::LineBreak);
        }
        self.event = Some(name);
        Ok(self)
    }

    /// Tells the client how long to wait before reconnecting.
    pub fn with_retry(mut self, after: Duration) -> Event {
        self.retry = Some(after);
        self
    }

    /// The data.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The id, if set.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The event as it goes on the wire.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.data.len() + 32);
        self.encode_into(self.id.as_deref(), &mut out);
        Bytes::from(out)
    }

    /// Appends the event to `out`, with `id` in place of its own.
    pub(super) fn encode_into(&self, id: Option<&str>, out: &mut Vec<u8>) {
        if let Some(id) = id {
            field(out, "id", id);
        }
        if let Some(event) = &self.event {
            field(out, "event", event);
        }
        if let Some(retry) = self.retry {
            field(out, "retry", itoa::Buffer::new().format(retry.as_millis()));
        }
        for line in lines(&self.data) {
            field(out, "data", line);
        }
        out.push(b'\n');
    }
}

/// A comment: ignored by clients, it keeps a quiet stream alive or tells a
/// person reading the raw stream something. Every line of `text` becomes a
/// comment line; no blank line follows, so it can sit ahead of an event.
pub fn comment(text: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 4);
    for line in lines(text) {
        out.push(b':');
        if !line.is_empty() {
            out.push(b' ');
            out.extend_from_slice(line.as_bytes());
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// `name: value\n`.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// The lines of `text`, split at CRLF, LF or CR as the SSE parser splits
/// them (an empty text is one empty line).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(t)
            }
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a WHATWG parser rebuilds from an encoded event: its data.
    fn parse_data(wire: &[u8]) -> String {
        let text = std::str::from_utf8(wire).unwrap();
        let mut data = Vec::new();
        for line in lines(text) {
            if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        data.join("\n")
    }

    #[test]
    fn every_line_break_style_becomes_data_lines() {
        for (text, want) in [
            ("a\nb", "a\nb"),
            ("a\rb", "a\nb"),
            ("a\r\nb", "a\nb"),
            ("a\r\n\r\nb\n", "a\n\nb\n"),
            ("", ""),
            (" leading space", " leading space"),
            ("\r", "\n"),
        ] {
            let wire = Event::new(text).encode();
            assert_eq!(parse_data(&wire), want, "{text:?}");
            assert!(wire.ends_with(b"\n\n"));
            // No line of the output is anything but a field.
            let body = std::str::from_utf8(&wire[..wire.len() - 1]).unwrap();
            assert!(
                lines(body).all(|l| l.is_empty() || l.starts_with("data: ")),
                "{body:?}"
            );
        }
    }

    #[test]
    fn id_and_event_refuse_line_breaks() {
        assert_eq!(Event::new("x").with_id("1\n2"), Err(EventError::LineBreak));
        assert_eq!(Event::new("x").with_id("1\r"), Err(EventError::LineBreak));
        assert_eq!(Event::new("x").with_id("1\0"), Err(EventError::LineBreak));
        assert_eq!(
            Event::new("x").with_event("a\rb"),
            Err(EventError::LineBreak)
        );
        let ev = Event::new("x")
            .with_id("42")
            .unwrap()
            .with_retry(Duration::from_millis(2500));
        assert_eq!(&ev.encode()[..], b"id: 42\nretry: 2500\ndata: x\n\n");
    }

    #[test]
    fn comments_are_one_line_each() {
        assert_eq!(&comment("a\r\nb")[..], b": a\n: b\n");
        assert_eq!(&comment("")[..], b":\n");
    }
}
