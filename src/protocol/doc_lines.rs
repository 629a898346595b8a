// A line protocol: every message is one line of text ended by "\n".
use taskweave::bytes::Bytes;
use taskweave::protocol::{Message, Progress, Protocol, ProtocolError};

/// One line, without its "\n".
#[derive(Debug, Default)]
pub struct Line {
    text: Vec<u8>,
}

impl Line {
    /// The longest line a parser accepts.
    pub const MAX: usize = 1024;

    pub fn new(text: impl Into<Vec<u8>>) -> Line {
        Line { text: text.into() }
    }

    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.text)
    }
}

impl Message for Line {
    fn append(&mut self, data: &[u8]) -> Result<Progress, ProtocolError> {
        // `data` is the runtime's read buffer: copy what we keep.
        let (used, done) = match data.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (data.len(), false),
        };
        self.text.extend_from_slice(&data[..used]);
        if self.text.len() > Line::MAX {
            return Err(ProtocolError::new(413, "line too long"));
        }
        if !done {
            return Ok(Progress::NeedMore(used));
        }
        // Drop the "\n"; bytes after it are the next message's.
        self.text.pop();
        Ok(Progress::Complete(used))
    }

    fn encode(&mut self, out: &mut Vec<Bytes>) {
        let mut wire = Vec::with_capacity(self.text.len() + 1);
        wire.extend_from_slice(&self.text);
        wire.push(b'\n');
        out.push(Bytes::from(wire));
    }
}

/// The protocol: a line in, a line back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lines;

impl Protocol for Lines {
    type Request = Line;
    type Response = Line;

    fn name(&self) -> &'static str {
        "lines"
    }

    fn new_request(&self) -> Line {
        Line::default()
    }

    fn new_response(&self, _req: &Line) -> Line {
        Line::default()
    }

    // A line that fails to parse is answered before the connection closes.
    fn reject(&self, err: &ProtocolError) -> Option<Line> {
        Some(Line::new(format!("error {}: {}", err.code, err.reason)))
    }

    // Replies come back in order, so a client may pipeline requests.
    fn max_in_flight(&self) -> usize {
        16
    }
}
