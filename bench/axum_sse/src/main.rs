//! An SSE server written the way a competent axum user would write it, on one
//! thread (a current-thread tokio runtime), the way the benchmark pins every
//! server to one core. It speaks the interface `scripts/bench_sse.sh` drives:
//!
//! - `GET /events?topic=T`: an `Sse` stream of `id: N\ndata: ...\n\n` events,
//!   with a `:` heartbeat every 15 s. A `Last-Event-ID: K` header first replays
//!   the topic's history after K (the last 1024 events), then the live events.
//! - `POST /publish?topic=T`: the body is the event's data; answers its id.
//! - `GET /stats`: how many events lagging subscribers skipped (`lagged N`).
//!
//! Each topic is a `tokio::sync::broadcast` channel plus a bounded history.
//! Publishing appends to the history and sends under the history's lock, and a
//! subscriber copies the history and subscribes under the same lock, so a
//! resumed stream has neither a gap nor a duplicate where the two meet. A
//! subscriber that falls more than the channel's capacity behind skips what it
//! missed (as axum users do); the skipped events are counted.
//!
//! `axum_sse --port PORT`

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

/// Events kept per topic for `Last-Event-ID` resumes.
const HISTORY: usize = 1024;
/// Capacity of each topic's broadcast channel.
const CHANNEL: usize = 1024;

type Message = (u64, String);

struct Topic {
    tx: broadcast::Sender<Message>,
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    last_id: u64,
    events: VecDeque<Message>,
}

#[derive(Default)]
struct AppState {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Events skipped by subscribers that lagged behind their channel.
    lagged: AtomicU64,
}

impl AppState {
    fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Topic {
                    tx: broadcast::channel(CHANNEL).0,
                    history: Mutex::new(History::default()),
                })
            })
            .clone()
    }
}

#[derive(Deserialize)]
struct TopicQuery {
    topic: String,
}

async fn events(
    State(app): State<Arc<AppState>>,
    Query(q): Query<TopicQuery>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_seen: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let topic = app.topic(&q.topic);
    let (backlog, rx) = {
        let history = topic.history.lock().unwrap();
        let backlog: Vec<Message> = match last_seen {
            Some(k) => history.events.iter().filter(|(id, _)| *id > k).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, topic.tx.subscribe())
    };
    let live = BroadcastStream::new(rx).filter_map(move |msg| match msg {
        Ok(msg) => Some(msg),
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            app.lagged.fetch_add(n, Ordering::Relaxed);
            None
        }
    });
    let stream = tokio_stream::iter(backlog)
        .chain(live)
        .map(|(id, data)| Ok(Event::default().id(id.to_string()).data(data)));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn publish(
    State(app): State<Arc<AppState>>,
    Query(q): Query<TopicQuery>,
    body: String,
) -> String {
    let topic = app.topic(&q.topic);
    let mut history = topic.history.lock().unwrap();
    history.last_id += 1;
    let id = history.last_id;
    if history.events.len() == HISTORY {
        history.events.pop_front();
    }
    history.events.push_back((id, body.clone()));
    // An error only means nobody is subscribed right now.
    let _ = topic.tx.send((id, body));
    id.to_string()
}

async fn stats(State(app): State<Arc<AppState>>) -> String {
    format!("lagged {}\n", app.lagged.load(Ordering::Relaxed))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut port: u16 = 8092;
    while let Some(arg) = args.next() {
        if arg == "--port" {
            port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port);
        }
    }
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .route("/stats", get(stats))
        .with_state(Arc::new(AppState::default()));
    // Small event writes go out at once (taskweave and the hyper hello server do too).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await
}
