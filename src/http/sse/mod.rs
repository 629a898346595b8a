//! Server-sent events: the `text/event-stream` encoding, paced streams, and a
//! [`Hub`] of topics that fans events out to subscribers.
//!
//! # Why it is built this way
//!
//! **A slow subscriber must cost nobody else anything.** Each subscriber is a
//! stream under [`FlowControl`]: a publish only enqueues the event (one
//! shared, already encoded `Bytes`) on each subscriber's own bounded queue,
//! and each subscriber's poller writes it, at that subscriber's rate, as many
//! queued events per `writev` as the socket takes. What a subscriber that
//! falls behind gets is its overflow policy's outcome, never the publisher's
//! time or unbounded memory: `drop-oldest` drops whole events and says so in a
//! comment ahead of the next one (whose id jumps), `reject` refuses the event
//! for that subscriber (the gap is announced the same way), `disconnect`
//! closes it with `slow_consumer` so it resumes from the history.
//!
//! **No event is lost by reconnecting.** Every topic keeps a bounded history
//! of its last events. A client that reconnects with `Last-Event-ID` first
//! gets exactly the events after that id, then the live ones, with no gap and
//! no duplicate: the history is read and the subscriber added under the
//! topic's lock, the same lock a publish takes to number its event. When the
//! history no longer reaches back far enough, or the client is owed more
//! than its queue holds (it gets the newest that fit), it is told how many
//! events it missed.
//!
//! **Streams end cleanly.** A silent stream gets a heartbeat comment (every
//! 15 s by default), which keeps proxies from timing it out and finds peers
//! that vanished. A graceful server shutdown ends every stream with a comment
//! and a `retry:` hint, so browsers come back after the restart instead of
//! hanging on a dead stream.
//!
//! A server with a topic to subscribe to and one to publish on, a
//! subscriber reading the raw stream, and a publish through the server:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//! use std::sync::mpsc;
//! use std::time::Duration;
//! use taskweave::http::sse::{Event, Hub, HubConfig};
//! use taskweave::http::{self, Server, ServerTask};
//! use taskweave::Series;
//!
//! let hub = Hub::new(HubConfig::default());
//! let server = Server::builder().serve("127.0.0.1:0", move |task: &mut ServerTask, _: &mut Series| {
//!     match task.request().path() {
//!         // `curl -N http://ADDR/events` and watch.
//!         "/events" => {
//!             let _ = hub.subscribe(task, "news");
//!         }
//!         // `curl -d 'hello' http://ADDR/publish`
//!         "/publish" => {
//!             let body = String::from_utf8_lossy(task.request().body()).into_owned();
//!             match hub.publish("news", Event::new(body)) {
//!                 Ok(id) => task.response().set_body(id.to_string()),
//!                 Err(e) => task.response().set_status(e.status()).set_body(e.to_string()),
//!             };
//!         }
//!         _ => {
//!             task.response().set_status(404);
//!         }
//!     }
//! })?;
//! let addr = server.local_addr();
//!
//! // Subscribe, and read the head: a client that has it is subscribed.
//! let mut conn = TcpStream::connect(addr)?;
//! conn.set_read_timeout(Some(Duration::from_secs(5)))?;
//! conn.write_all(b"GET /events HTTP/1.1\r\nHost: example\r\n\r\n")?;
//! let mut events = BufReader::new(conn);
//! let mut line = String::new();
//! while line != "\r\n" {
//!     line.clear();
//!     if events.read_line(&mut line)? == 0 {
//!         return Err("closed before the head's end".into());
//!     }
//! }
//!
//! // Publish, and wait for the event's id.
//! let (tx, rx) = mpsc::channel();
//! let publish = http::request("POST", &format!("http://{addr}/publish"), move |t, _| {
//!     let _ = tx.send(t.take_response().map(|r| r.body().clone()));
//! })
//! .body("hello");
//! Series::new(publish).start();
//! assert_eq!(rx.recv()?.as_deref(), Some(b"1".as_slice()));
//!
//! // The event, in a chunk: "id: 1\ndata: hello\n\n".
//! let mut got = Vec::new();
//! while got.last().map(String::as_str) != Some("data: hello\n") {
//!     line.clear();
//!     if events.read_line(&mut line)? == 0 {
//!         return Err("closed before the event".into());
//!     }
//!     got.push(line.clone());
//! }
//! assert!(got.contains(&"id: 1\n".to_string()));
//!
//! server.shutdown(Duration::from_secs(1)); // ends the stream with a `retry:` hint
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod event;
mod hub;

pub use event::{comment, Event, EventError};
pub use hub::{Hub, HubConfig, HubError, Numbered, TopicStats};

use super::ServerTask;
use crate::comm::{FlowControl, SendError, Stream};
use bytes::Bytes;
use std::time::Duration;

/// How often a silent stream gets a heartbeat comment, by default.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The reconnection delay a shutdown's farewell asks clients for.
pub const RETRY_AFTER_SHUTDOWN: Duration = Duration::from_secs(3);

/// Flow control with SSE's pieces: `base` plus a heartbeat comment every
/// `heartbeat`, a comment announcing dropped events ahead of the next one,
/// a farewell comment with a `retry:` hint for a server shutdown, and the
/// stream's end as soon as the client shuts its side.
pub fn flow(base: FlowControl, heartbeat: Duration) -> FlowControl {
    let retry = RETRY_AFTER_SHUTDOWN.as_millis();
    base.heartbeat(heartbeat, ":\n\n")
        .end_on_peer_shutdown()
        .gap_note(|n| comment(&format!("{n} events dropped")))
        .farewell(Bytes::from(format!(
            ": server shutting down\nretry: {retry}\n\n"
        )))
}

/// Answers `task` with an event stream under `flow` (see [`flow`] for SSE's
/// heartbeat, gap note and farewell): status 200, `Content-Type:
/// text/event-stream`, `Cache-Control: no-cache`, `X-Accel-Buffering: no` (so
/// nginx does not buffer it), no length (HTTP/1.1 chunked). Send encoded
/// events ([`Event::encode`]) on the returned stream from any thread.
///
/// This is the stream of one client, without a [`Hub`]: here three
/// progress events and the end.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use taskweave::comm::FlowControl;
/// use taskweave::http::sse::{self, Event};
/// use taskweave::http::{self, Server, ServerTask};
/// use taskweave::Series;
///
/// let server = Server::builder().serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
///     let Ok(stream) = sse::start(task, sse::flow(FlowControl::new(), sse::HEARTBEAT)) else {
///         return; // the client is gone
///     };
///     for step in 1..=3 {
///         stream.send(Event::new(format!("step {step}")).encode()).ok();
///     }
///     stream.finish();
/// })?;
///
/// let (tx, rx) = mpsc::channel();
/// let get = http::get(&format!("http://{}/progress", server.local_addr()), move |t, _| {
///     let _ = tx.send(t.take_response());
/// });
/// Series::new(get).start();
/// let resp = rx.recv()?.ok_or("no response")?;
/// assert_eq!(resp.header("content-type"), Some(&b"text/event-stream"[..]));
/// assert_eq!(&resp.body()[..], b"data: step 1\n\ndata: step 2\n\ndata: step 3\n\n");
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn start(task: &mut ServerTask, flow: FlowControl) -> Result<Stream, SendError> {
    let resp = task.response();
    resp.set_status(200)
        .set_header("Content-Type", "text/event-stream")
        .set_header("Cache-Control", "no-cache")
        .set_header("X-Accel-Buffering", "no");
    task.stream_with(flow)
}
