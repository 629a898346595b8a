//! [`Hub`]: topics, their bounded histories, and the fan-out of each
//! published event to every subscriber's own queue.

use super::{comment, flow, start, Event, HEARTBEAT};
use crate::comm::{FlowControl, FlowCounters, SendError, Stream};
use crate::http::ServerTask;
use bytes::Bytes;
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest topic name.
const MAX_TOPIC_LEN: usize = 128;

/// A hub's limits and what each subscriber's stream gets. Every field has a
/// default and a setter.
#[derive(Debug, Clone)]
pub struct HubConfig {
    flow: FlowControl,
    heartbeat: Duration,
    history: usize,
    history_bytes: usize,
    max_topics: usize,
    max_subscribers: usize,
    max_event_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            flow: FlowControl::new(),
            heartbeat: HEARTBEAT,
            history: 1024,
            history_bytes: 1 << 20,
            max_topics: 10_000,
            max_subscribers: 100_000,
            max_event_bytes: 64 * 1024,
        }
    }
}

impl HubConfig {
    /// Each subscriber's rate, queue bound and overflow policy (the hub adds
    /// SSE's heartbeat, gap note and farewell). Default: no rate limit, 1,024
    /// events and 1 MiB queued, drop-oldest.
    pub fn flow(mut self, flow: FlowControl) -> Self {
        self.flow = flow;
        self
    }

    /// How long a stream may be silent before a heartbeat comment. Default
    /// 15 s.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Events each topic keeps for clients resuming with `Last-Event-ID`.
    /// Default 1,024.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events;
        self
    }

    /// Bytes of encoded events each topic's history keeps at most (the
    /// oldest go first). Default 1 MiB: with `max_topics`, this bounds the
    /// memory publishers can make the hub hold.
    pub fn history_bytes(mut self, n: usize) -> Self {
        self.history_bytes = n;
        self
    }

    /// Topics the hub holds at most. A new topic past this takes the place
    /// of one that has no subscribers (its history goes with it); if every
    /// topic has subscribers, the publish or subscribe fails with 503.
    /// Default 10,000.
    pub fn max_topics(mut self, n: usize) -> Self {
        self.max_topics = n;
        self
    }

    /// Subscribers over all topics at most; past this a subscribe fails with
    /// 503. Default 100,000.
    pub fn max_subscribers(mut self, n: usize) -> Self {
        self.max_subscribers = n;
        self
    }

    /// Largest event data accepted by `publish` (413 past it). Default 64 KiB.
    pub fn max_event_bytes(mut self, n: usize) -> Self {
        self.max_event_bytes = n;
        self
    }
}

/// Why a subscribe or a publish failed; [`status`](HubError::status) is the
/// HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The topic name is empty, longer than 128 bytes, or holds a byte other
    /// than ASCII letters, digits and `_ . - : /`.
    BadTopic,
    /// `Last-Event-ID` is not a decimal event id of this hub.
    BadLastEventId,
    /// The event's data is larger than `max_event_bytes`.
    EventTooLarge,
    /// The hub holds `max_topics` topics already.
    TooManyTopics,
    /// The hub has `max_subscribers` subscribers already.
    TooManySubscribers,
    /// The connection closed (or the task had answered) before the stream
    /// could start.
    Closed,
}

impl HubError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            HubError::BadTopic | HubError::BadLastEventId => 400,
            HubError::EventTooLarge => 413,
            HubError::TooManyTopics | HubError::TooManySubscribers | HubError::Closed => 503,
        }
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HubError::BadTopic => "bad topic: use 1 to 128 ASCII letters, digits and _ . - : /",
            HubError::BadLastEventId => "Last-Event-ID must be a decimal event id",
            HubError::EventTooLarge => "event data too large",
            HubError::TooManyTopics => "too many topics",
            HubError::TooManySubscribers => "too many subscribers",
            HubError::Closed => "connection closed",
        })
    }
}

impl std::error::Error for HubError {}

/// What [`Hub::publish_with_id`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbered {
    /// Published: its id follows the topic's newest (or it is the topic's
    /// first).
    Next,
    /// Published after a jump: `missed` ids between the topic's newest and
    /// this one never came. The history was cleared (a replay cannot
    /// bridge the gap), and subscribers were told ahead of the event.
    AfterGap {
        /// Ids skipped.
        missed: u64,
    },
    /// Not above the topic's newest id: ignored.
    Duplicate,
}

/// One topic's numbers, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// Subscribers now.
    pub subscribers: usize,
    /// Events published.
    pub published: u64,
    /// Messages released to subscribers' sockets: events, history replays
    /// and resume comments (not heartbeats or gap notes).
    pub delivered: u64,
    /// Event deliveries dropped or refused by subscribers' overflow policies.
    pub dropped: u64,
}

/// Topics of server-sent events: `publish` from any thread, `subscribe` from
/// a server task. Cloning a hub is cheap and shares it.
///
/// A publish numbers the event (ids are per topic, from 1), encodes it once,
/// keeps it in the topic's history and enqueues the one `Bytes` on every
/// subscriber's stream; each subscriber's poller writes it at that
/// subscriber's rate. Publishing never waits for a subscriber. Where ids
/// are assigned elsewhere (several hubs fed from one ordered source, as
/// `examples/sse_server --redis` does), [`publish_with_id`](Hub::publish_with_id)
/// takes them as they come. See the [module docs](super) for the guarantees
/// and a server that publishes what it is sent.
///
/// Here a client that saw event 1 before it lost its connection comes back
/// with `Last-Event-ID: 1`: it gets event 2 from the topic's history, then
/// event 3 as it is published, and never event 1 again.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use taskweave::http::sse::{Event, Hub, HubConfig};
/// use taskweave::http::{Server, ServerTask};
/// use taskweave::Series;
///
/// /// The stream's lines up to `last`.
/// fn lines_until(stream: &mut impl BufRead, last: &str) -> std::io::Result<Vec<String>> {
///     let mut lines = Vec::new();
///     while lines.last().map(String::as_str) != Some(last) {
///         let mut line = String::new();
///         if stream.read_line(&mut line)? == 0 {
///             return Err(std::io::ErrorKind::UnexpectedEof.into());
///         }
///         lines.push(line);
///     }
///     Ok(lines)
/// }
///
/// let hub = Hub::new(HubConfig::default().history(100));
/// hub.publish("news", Event::new("first"))?;
/// hub.publish("news", Event::new("second"))?;
///
/// let subscriptions = hub.clone();
/// let server = Server::builder().serve("127.0.0.1:0", move |task: &mut ServerTask, _: &mut Series| {
///     let _ = subscriptions.subscribe(task, "news");
/// })?;
///
/// let mut conn = TcpStream::connect(server.local_addr())?;
/// conn.set_read_timeout(Some(Duration::from_secs(5)))?;
/// conn.write_all(b"GET /news HTTP/1.1\r\nHost: example\r\nLast-Event-ID: 1\r\n\r\n")?;
/// let mut stream = BufReader::new(conn);
///
/// let replayed = lines_until(&mut stream, "data: second\n")?;
/// assert!(replayed.contains(&"id: 2\n".to_string()));
/// assert!(!replayed.contains(&"data: first\n".to_string()));
///
/// assert_eq!(hub.subscribers(), 1);
/// hub.publish("news", Event::new("third"))?;
/// let live = lines_until(&mut stream, "data: third\n")?;
/// assert!(live.contains(&"id: 3\n".to_string()));
///
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HubConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    subscribers: AtomicUsize,
    next_subscriber: AtomicU64,
}

#[derive(Debug)]
struct Topic {
    name: String,
    state: Mutex<TopicState>,
    counters: Arc<FlowCounters>,
    /// Every subscriber's flow control, built once: the subscribers share
    /// its spec.
    flow: FlowControl,
    published: AtomicU64,
}

#[derive(Debug)]
struct TopicState {
    /// The id the next event gets.
    next_id: u64,
    /// The last events, oldest first, with consecutive ids.
    history: VecDeque<(u64, Bytes)>,
    /// Bytes of the events in `history`.
    history_bytes: usize,
    /// The buffer of the last event to leave the history, when nothing
    /// else held it: the next event is encoded into it (see
    /// [`Hub::frame_buffer`]).
    spare: Option<Vec<u8>>,
    /// Subscribers by key, each with the hub-wide id that guards its key
    /// against reuse.
    subscribers: Slab<(u64, Stream)>,
    /// The topic was evicted from the hub to make room for another: whoever
    /// holds it looks the name up again.
    evicted: bool,
}

impl Topic {
    fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hub {
    /// A hub with no topics yet.
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                config,
                topics: Mutex::new(HashMap::new()),
                subscribers: AtomicUsize::new(0),
                next_subscriber: AtomicU64::new(1),
            }),
        }
    }

    /// Answers `task` with an event stream subscribed to `topic`. A
    /// `Last-Event-ID` request header resumes after that id: the events of
    /// the topic's history after it come first, then live ones, with no gap
    /// and no duplicate; if the history no longer reaches back that far, a
    /// comment says how many events were missed; an id ahead of the topic
    /// (the server restarted, say) resumes live, with a comment. On error the
    /// task's response is set to the error's status and message. A `HEAD`
    /// request gets the stream's headers only.
    pub fn subscribe(&self, task: &mut ServerTask, topic: &str) -> Result<(), HubError> {
        let res = self.try_subscribe(task, topic);
        if let Err(e) = &res {
            if !task.is_answered() {
                task.response()
                    .set_status(e.status())
                    .set_header("Content-Type", "text/plain")
                    .set_body(format!("{e}\n"));
            }
        }
        res
    }

    fn try_subscribe(&self, task: &mut ServerTask, name: &str) -> Result<(), HubError> {
        check_topic(name)?;
        let last_id = match task.request().header("Last-Event-ID") {
            None | Some(b"") => None,
            Some(v) => Some(parse_id(v).ok_or(HubError::BadLastEventId)?),
        };
        if task.request().is_head() {
            task.response()
                .set_header("Content-Type", "text/event-stream")
                .set_header("Cache-Control", "no-cache");
            return Ok(());
        }
        let inner = &self.inner;
        if inner.subscribers.fetch_add(1, Relaxed) >= inner.config.max_subscribers {
            inner.subscribers.fetch_sub(1, Relaxed);
            return Err(HubError::TooManySubscribers);
        }
        let id = inner.next_subscriber.fetch_add(1, Relaxed);
        // The head goes out under the topic's lock, with the subscriber
        // added before the lock is released: a client that has the head is
        // subscribed, so an event published once it has it reaches it. (The
        // lock order is a publish's: topic, then connection.)
        let joined = self.with_topic(name, |topic, state| {
            let stream = start(task, topic.flow.clone()).ok()?;
            replay(state, &stream, last_id, &topic.flow);
            let key = state.subscribers.insert((id, stream.clone()));
            Some((topic.clone(), key, stream))
        });
        let Ok(Some((topic, key, stream))) = joined else {
            inner.subscribers.fetch_sub(1, Relaxed);
            return Err(joined.err().unwrap_or(HubError::Closed));
        };
        // Registered outside the topic's lock: on a stream that is over
        // already it runs at once, and takes that lock.
        let hub = self.clone();
        stream.on_close(move || hub.remove(&topic, key, id));
        Ok(())
    }

    /// Publishes `event` on `topic` (created if new) and returns its id. The
    /// event's own id, if any, is replaced by the topic's next one.
    pub fn publish(&self, topic: &str, event: Event) -> Result<u64, HubError> {
        self.check_publish(topic, &event)?;
        let mut gone = Vec::new();
        let (topic, id) = self.with_topic(topic, |topic, state| {
            let id = state.next_id;
            self.append(state, id, &event, None, &mut gone);
            (topic.clone(), id)
        })?;
        self.published(&topic, gone);
        Ok(id)
    }

    /// Publishes `event` on `topic` (created if new) with the id `id`
    /// assigned elsewhere, e.g. by a shared counter that several hubs (one
    /// per server instance) take their events from. Ids must come in
    /// increasing order, as one ordered feed delivers them; then every hub
    /// holds the same events under the same ids, so a client can resume on
    /// any of them with `Last-Event-ID`.
    ///
    /// - `id` directly after the topic's newest, or any id for a topic
    ///   with no event yet: published ([`Numbered::Next`]).
    /// - `id` further on (events were lost on the way, e.g. while the feed
    ///   was disconnected): published, and since the history must hold
    ///   consecutive ids for a replay, it is cleared first: a client resuming
    ///   from before the gap is told how many events it missed. Subscribers
    ///   get the same note ahead of the event ([`Numbered::AfterGap`]).
    /// - `id` not above the topic's newest: a duplicate, ignored
    ///   ([`Numbered::Duplicate`]). So are 0 and `u64::MAX` (out of range).
    ///
    /// The event's own id, if any, is replaced by `id`. Do not mix
    /// [`publish`](Hub::publish) and `publish_with_id` on one topic: the
    /// former numbers after the newest id, which the next `id` would then
    /// repeat.
    ///
    /// ```
    /// use taskweave::http::sse::{Event, Hub, HubConfig, Numbered};
    ///
    /// let hub = Hub::new(HubConfig::default());
    /// assert_eq!(hub.publish_with_id("news", 41, Event::new("a")), Ok(Numbered::Next));
    /// assert_eq!(hub.publish_with_id("news", 42, Event::new("b")), Ok(Numbered::Next));
    /// assert_eq!(hub.publish_with_id("news", 42, Event::new("b")), Ok(Numbered::Duplicate));
    /// assert_eq!(
    ///     hub.publish_with_id("news", 50, Event::new("c")),
    ///     Ok(Numbered::AfterGap { missed: 7 })
    /// );
    /// ```
    pub fn publish_with_id(
        &self,
        topic: &str,
        id: u64,
        event: Event,
    ) -> Result<Numbered, HubError> {
        self.check_publish(topic, &event)?;
        let mut gone = Vec::new();
        let (topic, numbered) = self.with_topic(topic, |topic, state| {
            if id == 0 || id == u64::MAX || id < state.next_id {
                return (topic.clone(), Numbered::Duplicate);
            }
            // A topic that never had an event starts at `id` (this hub came
            // later than the feed, or the topic is new to it).
            let missed = if state.next_id > 1 {
                id - state.next_id
            } else {
                0
            };
            if missed == 0 {
                self.append(state, id, &event, None, &mut gone);
                return (topic.clone(), Numbered::Next);
            }
            state.history.clear();
            state.history_bytes = 0;
            let note = comment(&format!("{missed} events missed: resuming at id {id}"));
            self.append(state, id, &event, Some(note), &mut gone);
            (topic.clone(), Numbered::AfterGap { missed })
        })?;
        if numbered != Numbered::Duplicate {
            self.published(&topic, gone);
        }
        Ok(numbered)
    }

    /// Whether [`publish`](Hub::publish) would refuse `event` on `topic`
    /// for its name or size (a full hub is found out only by publishing):
    /// lets a caller that numbers events elsewhere refuse before it takes a
    /// number.
    pub fn check_publish(&self, topic: &str, event: &Event) -> Result<(), HubError> {
        check_topic(topic)?;
        if event.data().len() > self.inner.config.max_event_bytes {
            return Err(HubError::EventTooLarge);
        }
        Ok(())
    }

    /// Adds event `id` (not below the topic's next) to the topic's history
    /// and enqueues it, after `note` if any, on every subscriber; the
    /// subscribers found closed go to `gone`. Under the topic's lock.
    fn append(
        &self,
        state: &mut TopicState,
        id: u64,
        event: &Event,
        note: Option<Bytes>,
        gone: &mut Vec<(u64, Stream)>,
    ) {
        state.next_id = id + 1;
        let mut buf = Self::frame_buffer(state.spare.take(), event.data().len() + 32);
        event.encode_into(Some(itoa::Buffer::new().format(id)), &mut buf);
        let bytes = Bytes::from(buf);
        let config = &self.inner.config;
        // Trimmed from the front only, so the ids it holds stay
        // consecutive up to the newest (what a replay counts on).
        if config.history > 0 {
            state.history_bytes += bytes.len();
            state.history.push_back((id, bytes.clone()));
            while state.history.len() > config.history || state.history_bytes > config.history_bytes
            {
                if let Some((_, old)) = state.history.pop_front() {
                    state.history_bytes -= old.len();
                    // Unique: no subscriber's queue holds it any more.
                    if let Ok(old) = old.try_into_mut() {
                        state.spare = Some(old.into());
                    }
                }
            }
        }
        let dead: Vec<usize> = state
            .subscribers
            .iter()
            .filter(|(_, (_, stream))| {
                if let Some(note) = &note {
                    let _ = stream.send(note.clone());
                }
                // Full: refused by a `reject` policy, which counted it.
                matches!(
                    stream.send(bytes.clone()),
                    Err(SendError::Closed | SendError::Invalid)
                )
            })
            .map(|(key, _)| key)
            .collect();
        for key in dead {
            gone.push(state.subscribers.remove(key));
        }
    }

    /// The buffer to encode an event of about `size` bytes into: `spare`
    /// (a frame that left the history) when it fits without wasting more
    /// than it holds, else a new one. With a full history, a steady stream
    /// of events of one size then allocates nothing: the history's memory
    /// stays in the buffers it has, whichever thread publishes. (Each
    /// thread allocates from its own arena in glibc's malloc: when the
    /// publishing thread changes, fresh buffers would fill a second arena
    /// while the first still holds the old history.)
    fn frame_buffer(spare: Option<Vec<u8>>, size: usize) -> Vec<u8> {
        match spare {
            Some(mut buf) if (size..=2 * size).contains(&buf.capacity()) => {
                buf.clear();
                buf
            }
            _ => Vec::with_capacity(size),
        }
    }

    /// Counts a publish on `topic` and forgets the subscribers it found
    /// closed (dropped here, outside the topic's lock: a last handle's drop
    /// may run callbacks that take it).
    fn published(&self, topic: &Topic, gone: Vec<(u64, Stream)>) {
        topic.published.fetch_add(1, Relaxed);
        self.inner.subscribers.fetch_sub(gone.len(), Relaxed);
        drop(gone);
    }

    /// The id of the newest event on `topic`; 0 if it has none or the hub
    /// does not hold it. A publisher that numbers events elsewhere can pass
    /// it on, so the numbering never falls behind what subscribers have
    /// seen (if the counter it keeps is lost, say).
    ///
    /// ```
    /// use taskweave::http::sse::{Event, Hub, HubConfig};
    ///
    /// let hub = Hub::new(HubConfig::default());
    /// assert_eq!(hub.last_id("news"), 0);
    /// hub.publish_with_id("news", 41, Event::new("a"))?;
    /// assert_eq!(hub.last_id("news"), 41);
    /// # Ok::<(), taskweave::http::sse::HubError>(())
    /// ```
    pub fn last_id(&self, topic: &str) -> u64 {
        let topic = self.topics_lock().get(topic).cloned();
        topic.map_or(0, |t| t.lock().next_id - 1)
    }

    /// Subscribers over all topics.
    pub fn subscribers(&self) -> usize {
        self.inner.subscribers.load(Relaxed)
    }

    /// Each topic's numbers, sorted by name.
    pub fn topics(&self) -> Vec<TopicStats> {
        let topics: Vec<Arc<Topic>> = self.topics_lock().values().cloned().collect();
        let mut stats: Vec<TopicStats> = topics
            .iter()
            .map(|t| TopicStats {
                name: t.name.clone(),
                subscribers: t.lock().subscribers.len(),
                published: t.published.load(Relaxed),
                delivered: t.counters.sent(),
                dropped: t.counters.dropped(),
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// Appends the hub's metrics in the Prometheus text format, each name
    /// starting with `prefix` (e.g. `taskweave_sse_`): subscribers per topic
    /// (a gauge), events published, delivered and dropped per topic
    /// (counters).
    pub fn render_prometheus(&self, prefix: &str, out: &mut String) {
        let topics = self.topics();
        /// Name, type, help, and the value of one topic.
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&TopicStats) -> u64,
        );
        let families: [Family; 4] = [
            ("subscribers", "gauge", "Subscribers now.", |t| {
                t.subscribers as u64
            }),
            (
                "events_published_total",
                "counter",
                "Events published.",
                |t| t.published,
            ),
            (
                "events_delivered_total",
                "counter",
                "Event deliveries written to subscribers.",
                |t| t.delivered,
            ),
            (
                "events_dropped_total",
                "counter",
                "Event deliveries dropped by overflow policies.",
                |t| t.dropped,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {prefix}{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}{name} {kind}");
            for t in &topics {
                // Topic names are checked to need no escaping.
                let _ = writeln!(out, "{prefix}{name}{{topic=\"{}\"}} {}", t.name, value(t));
            }
        }
    }

    fn topics_lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Topic>>> {
        self.inner.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topic called `name`, created if there is room.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, HubError> {
        let mut topics = self.topics_lock();
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        if topics.len() >= self.inner.config.max_topics {
            // Make room by evicting a topic nobody listens to (a rare path:
            // it looks at every topic).
            let idle = topics.iter().find_map(|(name, t)| {
                let mut state = t.lock();
                state.subscribers.is_empty().then(|| {
                    state.evicted = true;
                    name.clone()
                })
            });
            match idle {
                Some(name) => topics.remove(&name),
                None => return Err(HubError::TooManyTopics),
            };
        }
        let counters = Arc::new(FlowCounters::new());
        let topic = Arc::new(Topic {
            name: name.to_string(),
            state: Mutex::new(TopicState {
                next_id: 1,
                history: VecDeque::new(),
                spare: None,
                history_bytes: 0,
                subscribers: Slab::new(),
                evicted: false,
            }),
            flow: flow(self.inner.config.flow.clone(), self.inner.config.heartbeat)
                .counters(counters.clone()),
            counters,
            published: AtomicU64::new(0),
        });
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Runs `f` on topic `name` (created if new) under its lock; a topic
    /// evicted between the lookup and the lock is looked up again.
    fn with_topic<R>(
        &self,
        name: &str,
        mut f: impl FnMut(&Arc<Topic>, &mut TopicState) -> R,
    ) -> Result<R, HubError> {
        loop {
            let topic = self.topic(name)?;
            let mut state = topic.lock();
            if !state.evicted {
                return Ok(f(&topic, &mut state));
            }
        }
    }

    /// Forgets subscriber `id` at `key` of `topic` (its stream is over).
    fn remove(&self, topic: &Topic, key: usize, id: u64) {
        let removed = {
            let mut state = topic.lock();
            let ours = state.subscribers.get(key).is_some_and(|(i, _)| *i == id);
            ours.then(|| state.subscribers.remove(key))
        };
        if removed.is_some() {
            self.inner.subscribers.fetch_sub(1, Relaxed);
        }
    }
}

/// Room a replay leaves in the subscriber's queue for the comment ahead of
/// it, in bytes.
const NOTE_ROOM: usize = 128;

/// Sends a resuming subscriber what it missed after `last_id` (under the
/// topic's lock, so nothing is published in between): as many of the newest
/// events it is owed as its queue (`flow`'s bound) holds, so the replay never
/// meets its own overflow policy, and ahead of them a comment counting those
/// it will not get (older than the history, or more than its queue holds).
fn replay(state: &TopicState, stream: &Stream, last_id: Option<u64>, flow: &FlowControl) {
    let Some(last) = last_id else { return };
    let newest = state.next_id - 1;
    if last > newest {
        let note = format!(
            "Last-Event-ID {last} is ahead of this topic (last id {newest}); resuming live"
        );
        let _ = stream.send(comment(&note));
        return;
    }
    let oldest = state.history.front().map_or(state.next_id, |(id, _)| *id);
    let skip = usize::try_from((last + 1).saturating_sub(oldest)).unwrap_or(usize::MAX);
    let owed = state.history.len().saturating_sub(skip);
    let (mut room, mut bytes) = (flow.message_limit().saturating_sub(1), flow.byte_limit());
    bytes = bytes.saturating_sub(NOTE_ROOM);
    let mut sent = 0;
    for (_, event) in state.history.iter().rev().take(owed) {
        if room == 0 || event.len() > bytes {
            break;
        }
        room -= 1;
        bytes -= event.len();
        sent += 1;
    }
    // The first id replayed (or the next one published, if none is).
    let first = state.next_id - sent as u64;
    if first > last + 1 {
        let note = format!("{} events missed: resuming at id {first}", first - last - 1);
        let _ = stream.send(comment(&note));
    }
    for (_, event) in state.history.iter().skip(state.history.len() - sent) {
        let _ = stream.send(event.clone());
    }
}

/// Checks a topic name: 1 to 128 bytes of ASCII letters, digits and
/// `_ . - : /` (safe in a URL, a log line and a Prometheus label).
fn check_topic(name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HubError::BadTopic)
    }
}

/// A decimal event id (at most 19 digits, so it fits a u64).
fn parse_id(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for ok in ["a", "news/eu", "x.y-z_1:2", &"t".repeat(128)] {
            assert_eq!(check_topic(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a\nb", "é", "a\"b", &"t".repeat(129), "a\0"] {
            assert_eq!(check_topic(bad), Err(HubError::BadTopic), "{bad:?}");
        }
    }

    #[test]
    fn last_event_ids_are_decimal() {
        assert_eq!(parse_id(b"0"), Some(0));
        assert_eq!(parse_id(b"18446744073709551615"), None); // 20 digits
        assert_eq!(
            parse_id(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [&b"-1"[..], b"1.5", b" 1", b"abc", b"0x10"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn publish_numbers_events_and_bounds_the_history() {
        let hub = Hub::new(HubConfig::default().history(3));
        for i in 1..=5 {
            assert_eq!(hub.publish("t", Event::new(format!("e{i}"))), Ok(i));
        }
        let topic = hub.topic("t").unwrap();
        let state = topic.lock();
        let ids: Vec<u64> = state.history.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(&state.history[2].1[..], b"id: 5\ndata: e5\n\n");
    }

    /// The address of the frame of event `id` in topic `name`'s history.
    fn frame_at(hub: &Hub, name: &str, id: u64) -> *const u8 {
        let topic = hub.topic(name).unwrap();
        let state = topic.lock();
        let (_, frame) = state.history.iter().find(|(i, _)| *i == id).unwrap();
        frame.as_ptr()
    }

    #[test]
    fn a_frame_that_leaves_the_history_unheld_carries_a_later_event() {
        let hub = Hub::new(HubConfig::default().history(2));
        for i in 1..=2 {
            hub.publish("t", Event::new(format!("e{i}"))).unwrap();
        }
        let first = frame_at(&hub, "t", 1);
        // 3 pushes 1 out, and nothing else holds it: 4 is written into it.
        hub.publish("t", Event::new("e3")).unwrap();
        hub.publish("t", Event::new("e4")).unwrap();
        assert_eq!(frame_at(&hub, "t", 4), first);
        let topic = hub.topic("t").unwrap();
        assert_eq!(&topic.lock().history[1].1[..], b"id: 4\ndata: e4\n\n");
        // A frame still held elsewhere (a subscriber's queue, say) is left
        // to its holder; so is one far too large for the next event.
        let held = topic.lock().history[0].1.clone();
        hub.publish("t", Event::new("e5")).unwrap();
        hub.publish("t", Event::new("e6")).unwrap();
        assert_ne!(frame_at(&hub, "t", 6), held.as_ptr());
        assert_eq!(&held[..], b"id: 3\ndata: e3\n\n");
        hub.publish("t", Event::new("x".repeat(200))).unwrap();
        let large = frame_at(&hub, "t", 7);
        hub.publish("t", Event::new("e8")).unwrap();
        hub.publish("t", Event::new("e9")).unwrap(); // 7 leaves
        hub.publish("t", Event::new("e10")).unwrap();
        assert_ne!(frame_at(&hub, "t", 10), large);
    }

    #[test]
    fn history_is_bounded_in_bytes_too() {
        let hub = Hub::new(HubConfig::default().history(100).history_bytes(100));
        for i in 1..=10 {
            hub.publish("t", Event::new(format!("event {i:02}")))
                .unwrap();
        }
        let topic = hub.topic("t").unwrap();
        let state = topic.lock();
        // Each is 25 bytes ("id: N\ndata: event NN\n\n"): the newest 4 fit.
        let ids: Vec<u64> = state.history.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [7, 8, 9, 10]);
        assert_eq!(
            state.history_bytes,
            state.history.iter().map(|(_, b)| b.len()).sum::<usize>()
        );
    }

    #[test]
    fn a_new_topic_past_the_limit_takes_an_idle_ones_place() {
        let hub = Hub::new(HubConfig::default().max_topics(2));
        hub.publish("a", Event::new("1")).unwrap();
        hub.publish("b", Event::new("1")).unwrap();
        let a = hub.topic("a").unwrap();
        assert_eq!(hub.publish("c", Event::new("1")), Ok(1));
        let names: Vec<String> = hub.topics().into_iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"c".to_string()), "{names:?}");
        // Whoever still holds an evicted topic sees the mark and looks again.
        let evicted = ["a", "b"]
            .iter()
            .find(|n| !names.contains(&n.to_string()))
            .unwrap();
        let held = if *evicted == "a" {
            a
        } else {
            hub.inner.topics.lock().unwrap()["a"].clone()
        };
        assert_eq!(held.lock().evicted, *evicted == "a");
    }

    #[test]
    fn publish_refuses_what_it_cannot_hold() {
        let hub = Hub::new(HubConfig::default().max_topics(1).max_event_bytes(4));
        assert_eq!(hub.publish("a b", Event::new("x")), Err(HubError::BadTopic));
        assert_eq!(
            hub.publish("a", Event::new("12345")),
            Err(HubError::EventTooLarge)
        );
        assert_eq!(hub.publish("a", Event::new("1234")), Ok(1));
        // "a" has no subscriber: "b" takes its place.
        assert_eq!(hub.publish("b", Event::new("1")), Ok(1));
        let mut out = String::new();
        hub.render_prometheus("sse_", &mut out);
        assert!(
            out.contains("sse_events_published_total{topic=\"b\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("sse_subscribers{topic=\"b\"} 0\n"), "{out}");
        assert!(!out.contains("topic=\"a\""), "{out}");
    }

    /// The ids in topic `name`'s history, and the id its next event gets.
    fn history_ids(hub: &Hub, name: &str) -> (Vec<u64>, u64) {
        let topic = hub.topic(name).unwrap();
        let state = topic.lock();
        let ids = state.history.iter().map(|(id, _)| *id).collect();
        (ids, state.next_id)
    }

    #[test]
    fn publish_with_id_keeps_ids_increasing_and_the_history_consecutive() {
        let hub = Hub::new(HubConfig::default().history(4));
        let publish = |id: u64| hub.publish_with_id("t", id, Event::new(format!("e{id}")));
        // A topic new to this hub starts wherever the feed is.
        assert_eq!(publish(7), Ok(Numbered::Next));
        assert_eq!(publish(8), Ok(Numbered::Next));
        assert_eq!(publish(9), Ok(Numbered::Next));
        assert_eq!(history_ids(&hub, "t"), (vec![7, 8, 9], 10));
        assert_eq!(hub.last_id("t"), 9);
        // Duplicates (and what is out of range) change nothing.
        for dup in [9, 8, 1, 0, u64::MAX] {
            assert_eq!(publish(dup), Ok(Numbered::Duplicate), "{dup}");
        }
        assert_eq!(history_ids(&hub, "t"), (vec![7, 8, 9], 10));
        // A jump clears the history: what it holds stays consecutive.
        assert_eq!(publish(13), Ok(Numbered::AfterGap { missed: 3 }));
        assert_eq!(history_ids(&hub, "t"), (vec![13], 14));
        for id in 14..=18 {
            assert_eq!(publish(id), Ok(Numbered::Next));
        }
        assert_eq!(history_ids(&hub, "t"), (vec![15, 16, 17, 18], 19));
        let topic = hub.topic("t").unwrap();
        let state = topic.lock();
        assert_eq!(&state.history[3].1[..], b"id: 18\ndata: e18\n\n");
        assert_eq!(
            state.history_bytes,
            state.history.iter().map(|(_, b)| b.len()).sum::<usize>()
        );
        drop(state);
        // Only what was published is counted.
        assert_eq!(hub.topics()[0].published, 9);
        assert_eq!(hub.last_id("t"), 18);
        assert_eq!(hub.last_id("unknown"), 0);
        assert_eq!(hub.topics().len(), 1, "last_id creates no topic");
    }

    #[test]
    fn publish_with_id_checks_like_publish() {
        let hub = Hub::new(HubConfig::default().max_event_bytes(4));
        assert_eq!(
            hub.publish_with_id("a b", 1, Event::new("x")),
            Err(HubError::BadTopic)
        );
        assert_eq!(
            hub.publish_with_id("a", 1, Event::new("12345")),
            Err(HubError::EventTooLarge)
        );
        assert_eq!(
            hub.check_publish("a", &Event::new("12345")),
            Err(HubError::EventTooLarge)
        );
        assert_eq!(hub.check_publish("a", &Event::new("1234")), Ok(()));
        // The event's own id is replaced.
        let ev = Event::new("x").with_id("99").unwrap();
        assert_eq!(hub.publish_with_id("a", 5, ev), Ok(Numbered::Next));
        let topic = hub.topic("a").unwrap();
        assert_eq!(&topic.lock().history[0].1[..], b"id: 5\ndata: x\n\n");
    }
}
