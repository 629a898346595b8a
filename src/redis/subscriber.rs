//! [`Subscriber`]: pub/sub over its own connection, kept subscribed across
//! reconnects.
//!
//! # Why it is built this way
//!
//! A subscribed connection answers nothing but subscriptions and `PING`,
//! and in RESP2 its messages look like ordinary array replies, so it can
//! never be shared with commands: each subscriber has its own client config,
//! hence its own pool of one connection, with a protocol that reads
//! `message` arrays (RESP2) and pushes (RESP3) as pushes.
//!
//! Redis pub/sub keeps no history: what is published while a subscriber is
//! disconnected is lost. So the subscriber notices a lost connection at once
//! (its push handler lives as long as the connection does; its drop is the
//! signal), pings an idle connection so a dead peer cannot go unnoticed,
//! resubscribes to everything with a growing backoff, and reports how long
//! it was away ([`Status::Subscribed`]'s `gap`), so the application can
//! fetch what it missed some other way.

use super::client::Client;
use super::proto::{Redis, Reply, Request, Role};
use super::url::Url;
use super::Value;
use crate::comm::{ClientConfig, ConnConfig, Target};
use crate::error::Error;
use crate::metrics::AccessLog;
use crate::task::{timer, ClientTask, Series};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One pub/sub message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel it was published to.
    pub channel: Bytes,
    /// The pattern it matched, for a pattern subscription.
    pub pattern: Option<Bytes>,
    /// What was published.
    pub payload: Bytes,
}

/// A change in a subscriber's connection.
///
/// Reports come in the order the changes happened; one that a newer
/// change overtook on its way (they are made on different threads) is
/// skipped rather than delivered late, so the last status received is
/// always the subscriber's state.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Status {
    /// Every channel and pattern is subscribed (but those refused). `gap`
    /// is how long the subscriber was not subscribed before this:
    /// messages published meanwhile were not received.
    Subscribed {
        /// Time since the subscription was lost, or since the first
        /// attempt failed; `None` when nothing failed before.
        gap: Option<Duration>,
    },
    /// The server refused a channel or pattern (an ACL's `NOPERM`). It is
    /// dropped from the subscription; the others stay.
    Refused {
        /// The channel or pattern.
        name: Bytes,
        /// Whether it was a pattern.
        pattern: bool,
        /// The server's error message.
        error: String,
    },
    /// The connection was lost or could not be made; the subscriber tries
    /// again after `retry_in`.
    Lost {
        /// What went wrong.
        error: Error,
        /// How long until the next attempt.
        retry_in: Duration,
    },
}

type OnMessage = Box<dyn FnMut(Message) + Send>;
type OnStatus = Box<dyn FnMut(Status) + Send>;

/// A pub/sub subscription to set up, then [`start`](Subscriber::start).
///
/// ```no_run
/// use taskweave::redis::{Status, Subscriber};
///
/// let handle = Subscriber::new("redis://127.0.0.1:6379")?
///     .channels(["news"])
///     .patterns(["events:*"])
///     .on_message(|m| println!("{:?}: {:?}", m.channel, m.payload))
///     .on_status(|s| {
///         if let Status::Subscribed { gap: Some(gap) } = s {
///             eprintln!("resubscribed; missed up to {gap:?} of messages");
///         }
///     })
///     .start();
/// // ... later
/// handle.stop();
/// # Ok::<(), taskweave::Error>(())
/// ```
pub struct Subscriber {
    url: Url,
    channels: Vec<Bytes>,
    patterns: Vec<Bytes>,
    on_message: OnMessage,
    on_status: OnStatus,
    ping_every: Duration,
    reply_timeout: Duration,
    backoff: (Duration, Duration),
    log: Option<Arc<dyn AccessLog>>,
}

impl Subscriber {
    /// A subscriber to the server at `url` (see [`Url`]), with no
    /// subscriptions and no callbacks yet.
    pub fn new(url: &str) -> Result<Subscriber, Error> {
        Ok(Subscriber::from_url(url.parse()?))
    }

    /// A subscriber for a parsed URL.
    pub fn from_url(url: Url) -> Subscriber {
        Subscriber {
            url,
            channels: Vec::new(),
            patterns: Vec::new(),
            on_message: Box::new(|_| {}),
            on_status: Box::new(|_| {}),
            ping_every: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(5),
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            log: None,
        }
    }

    /// Subscribes to these channels.
    pub fn channels<I>(mut self, names: I) -> Subscriber
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        add_unique(&mut self.channels, names);
        self
    }

    /// Subscribes to these patterns (`PSUBSCRIBE`).
    pub fn patterns<I>(mut self, patterns: I) -> Subscriber
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        add_unique(&mut self.patterns, patterns);
        self
    }

    /// Where messages go. It runs on the connection's poller thread, one
    /// message at a time: hand heavy work on.
    pub fn on_message(mut self, f: impl FnMut(Message) + Send + 'static) -> Subscriber {
        self.on_message = Box::new(f);
        self
    }

    /// Where connection changes go: on a poller or a handler thread, one
    /// at a time, in order (see [`Status`]).
    pub fn on_status(mut self, f: impl FnMut(Status) + Send + 'static) -> Subscriber {
        self.on_status = Box::new(f);
        self
    }

    /// How often an idle connection is pinged, so a dead peer is noticed
    /// (default 10 s), and how long a reply may take (default 5 s).
    pub fn ping_every(mut self, every: Duration, reply_timeout: Duration) -> Subscriber {
        self.ping_every = every.max(Duration::from_millis(10));
        self.reply_timeout = reply_timeout;
        self
    }

    /// The wait before resubscribing: `min` after the first failure,
    /// doubling up to `max` (defaults 50 ms and 5 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Subscriber {
        self.backoff = (min, max.max(min));
        self
    }

    /// Writes a record for each of the subscriber's connections.
    pub fn access_log(mut self, log: impl AccessLog) -> Subscriber {
        self.log = Some(Arc::new(log));
        self
    }

    /// Connects and subscribes; from now on it stays subscribed until
    /// [`stop`](SubscriberHandle::stop).
    pub fn start(self) -> SubscriberHandle {
        let conn = ConnConfig {
            receive_timeout: self.reply_timeout,
            // Pings keep a healthy connection from ever looking idle.
            keep_alive_timeout: self.ping_every * 3 + self.reply_timeout,
            ..ConnConfig::default()
        };
        let mut config = Client::config(conn).max_per_target(1);
        if let Some(log) = self.log {
            config = config.access_log(log);
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let salt = NEXT.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            target: self.url.target(),
            proto: Arc::new(Redis::with_role(self.url, Role::Subscriber, salt)),
            config: Arc::new(config),
            on_message: Mutex::new(self.on_message),
            on_status: Mutex::new((0, self.on_status)),
            stopped: AtomicBool::new(false),
            ping_every: self.ping_every,
            backoff: self.backoff,
            state: Mutex::new(State {
                channels: self.channels,
                patterns: self.patterns,
                generation: 0,
                phase: Phase::Subscribing,
                failures: 0,
                down_since: None,
                reports: 0,
                closed_early: None,
            }),
        });
        inner.attempt();
        inner.schedule_ping();
        SubscriberHandle { inner }
    }
}

/// A running [`Subscriber`]. Dropping the handle does not stop it; call
/// [`stop`](SubscriberHandle::stop).
#[derive(Clone)]
pub struct SubscriberHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SubscriberHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberHandle")
            .field("subscribed", &self.is_subscribed())
            .finish()
    }
}

impl SubscriberHandle {
    /// Subscribes to more channels, now if connected, else on the next
    /// (re)subscription.
    pub fn subscribe<I>(&self, names: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.inner.add(false, names);
    }

    /// Subscribes to more patterns.
    pub fn psubscribe<I>(&self, patterns: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.inner.add(true, patterns);
    }

    /// Whether every channel and pattern is subscribed right now.
    pub fn is_subscribed(&self) -> bool {
        self.inner.state().phase == Phase::Subscribed
    }

    /// Stops delivering messages, closes the connection (with `QUIT`) and
    /// stops reconnecting.
    pub fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let was = {
            let mut st = self.inner.state();
            st.generation += 1;
            std::mem::replace(&mut st.phase, Phase::Stopped)
        };
        // A SUBSCRIBE on its way gets the QUIT behind it, on its connection.
        if matches!(was, Phase::Subscribed | Phase::Subscribing) {
            let task = self.inner.task(Request::command(["QUIT"]), |_, _| {});
            Series::new(task).start();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A (re)subscription is on its way.
    Subscribing,
    Subscribed,
    /// Waiting out the backoff.
    Waiting,
    Stopped,
}

struct State {
    channels: Vec<Bytes>,
    patterns: Vec<Bytes>,
    /// Counts attempts: a lost connection or a reply of an older attempt
    /// changes nothing.
    generation: u64,
    phase: Phase,
    /// Failures since the last success, for the backoff.
    failures: u32,
    /// When the subscription was lost.
    down_since: Option<Instant>,
    /// Numbers status reports in the order of the changes.
    reports: u64,
    /// An attempt whose connection closed before its reply was handled.
    closed_early: Option<u64>,
}

struct Inner {
    proto: Arc<Redis>,
    target: Target,
    config: Arc<ClientConfig>,
    on_message: Mutex<OnMessage>,
    /// The status callback, with the number of the last report it got.
    on_status: Mutex<(u64, OnStatus)>,
    stopped: AtomicBool,
    ping_every: Duration,
    backoff: (Duration, Duration),
    state: Mutex<State>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn task(
        &self,
        req: Request,
        callback: impl FnOnce(&mut ClientTask<Redis>, &mut Series) + Send + 'static,
    ) -> ClientTask<Redis> {
        ClientTask::new(self.proto.clone(), self.target.clone(), req, callback)
            .with_config(self.config.clone())
    }

    /// Delivers report number `seq` (taken under the state lock when the
    /// change was made), unless a newer one went first.
    fn report(&self, seq: u64, status: Status) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let mut slot = self.on_status.lock().unwrap_or_else(|e| e.into_inner());
        let (last, f) = &mut *slot;
        if seq > *last {
            *last = seq;
            f(status);
        }
    }

    /// Subscribes to everything, on the connection the pool gives (a new
    /// one after a loss).
    fn attempt(self: &Arc<Self>) {
        let (generation, req, names) = {
            let mut st = self.state();
            if st.phase == Phase::Stopped {
                return;
            }
            st.generation += 1;
            st.phase = Phase::Subscribing;
            let mut req = Request::new();
            let names = Names::of(&st);
            names.add_to(&mut req);
            if req.is_empty() {
                req.add(["PING"]);
            }
            (st.generation, req, names)
        };
        let guard = LostGuard {
            inner: self.clone(),
            generation,
        };
        let me = self.clone();
        let task = self
            .task(req, move |t, _| match t.values() {
                Ok(values) => {
                    // Names an ACL refuses go; any other error is the
                    // connection's (NOAUTH, LOADING): try again later.
                    if let Some(err) = me.refused(&names, values) {
                        return me.lost(generation, Error::InvalidRequest(err));
                    }
                    me.subscribed(generation);
                }
                Err(e) => me.lost(generation, e.clone()),
            })
            .on_push(move |reply| guard.deliver(reply));
        Series::new(task).start();
    }

    /// Drops and reports the names the server refused with `NOPERM` in
    /// `values` (one reply per name of `names`); returns the first other
    /// error, if any.
    fn refused(&self, names: &Names, values: &[Value]) -> Option<String> {
        let mut other = None;
        let mut reports = Vec::new();
        {
            let mut st = self.state();
            for ((name, pattern), value) in names.iter().zip(values) {
                if !value.is_error() {
                    continue;
                }
                let error = super::proto::error_text(value);
                if !error.starts_with("NOPERM") {
                    other.get_or_insert(error);
                    continue;
                }
                let list = if pattern {
                    &mut st.patterns
                } else {
                    &mut st.channels
                };
                list.retain(|n| n != name);
                st.reports += 1;
                let status = Status::Refused {
                    name: name.clone(),
                    pattern,
                    error,
                };
                reports.push((st.reports, status));
            }
        }
        for (seq, status) in reports {
            self.report(seq, status);
        }
        other
    }

    fn subscribed(self: &Arc<Self>, generation: u64) {
        let gap = {
            let mut st = self.state();
            if st.generation != generation || st.phase != Phase::Subscribing {
                return;
            }
            if st.closed_early == Some(generation) {
                drop(st);
                return self.lost(generation, Error::PeerClosed);
            }
            st.phase = Phase::Subscribed;
            st.failures = 0;
            st.reports += 1;
            (st.reports, st.down_since.take().map(|t| t.elapsed()))
        };
        self.report(gap.0, Status::Subscribed { gap: gap.1 });
    }

    /// The connection of attempt `generation` is gone, or the attempt
    /// failed: try again after the backoff.
    fn lost(self: &Arc<Self>, generation: u64, error: Error) {
        let retry_in = {
            let mut st = self.state();
            let live = matches!(st.phase, Phase::Subscribing | Phase::Subscribed);
            if st.generation != generation || !live {
                return;
            }
            st.phase = Phase::Waiting;
            st.down_since.get_or_insert_with(Instant::now);
            let (min, max) = self.backoff;
            let delay = min.saturating_mul(1 << st.failures.min(16)).min(max);
            st.failures = st.failures.saturating_add(1);
            st.reports += 1;
            (st.reports, delay)
        };
        let (seq, retry_in) = retry_in;
        self.report(seq, Status::Lost { error, retry_in });
        let me = self.clone();
        Series::new(timer(retry_in, move |_, _| me.attempt())).start();
    }

    /// Pings every `ping_every` while subscribed; a dead connection fails
    /// the ping's reply timeout and closes, which resubscribes.
    fn schedule_ping(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let tick = timer(self.ping_every, move |_, _| {
            let Some(me) = me.upgrade() else { return };
            if me.stopped.load(Ordering::SeqCst) {
                return;
            }
            if me.state().phase == Phase::Subscribed {
                Series::new(me.task(Request::command(["PING"]), |_, _| {})).start();
            }
            me.schedule_ping();
        });
        Series::new(tick).start();
    }

    fn add<I>(self: &Arc<Self>, pattern: bool, names: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut fresh = Names::default();
        let subscribed = {
            let mut st = self.state();
            let all = if pattern {
                &mut st.patterns
            } else {
                &mut st.channels
            };
            for name in names {
                let name = Bytes::copy_from_slice(name.as_ref());
                if !all.contains(&name) {
                    all.push(name.clone());
                    fresh.0.push((name, pattern));
                }
            }
            // An attempt on its way was built before these names: they go
            // out behind it, on its connection (the pool has one).
            matches!(st.phase, Phase::Subscribed | Phase::Subscribing)
        };
        // Waiting out a backoff: the next attempt includes them.
        if subscribed && !fresh.0.is_empty() {
            let mut req = Request::new();
            fresh.add_to(&mut req);
            let me = self.clone();
            let task = self.task(req, move |t, _| {
                if let Ok(values) = t.values() {
                    // Other errors are the connection's: the next attempt
                    // sends these names again.
                    let _ = me.refused(&fresh, values);
                }
            });
            Series::new(task).start();
        }
    }
}

/// Channels and patterns (`true`) to subscribe, one command each, so that
/// the server's answer to each is its own: an ACL that refuses one name
/// refuses a whole multi-name `SUBSCRIBE`.
#[derive(Debug, Default)]
struct Names(Vec<(Bytes, bool)>);

impl Names {
    /// Everything the subscriber subscribes to.
    fn of(st: &State) -> Names {
        let channels = st.channels.iter().map(|c| (c.clone(), false));
        let patterns = st.patterns.iter().map(|p| (p.clone(), true));
        Names(channels.chain(patterns).collect())
    }

    fn add_to(&self, req: &mut Request) {
        for (name, pattern) in &self.0 {
            let command: &[u8] = if *pattern {
                b"PSUBSCRIBE"
            } else {
                b"SUBSCRIBE"
            };
            req.add([command, &name[..]]);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Bytes, bool)> {
        self.0.iter().map(|(n, p)| (n, *p))
    }
}

/// Lives in the push handler of one attempt's connection: delivers its
/// messages, and when the connection closes (the handler is dropped with
/// it), starts the next attempt. It holds the subscriber strongly: while
/// subscribed, nothing else does (the handle may be gone: dropping it does
/// not stop the subscriber), and the connection closes after `stop`.
struct LostGuard {
    inner: Arc<Inner>,
    generation: u64,
}

impl LostGuard {
    fn deliver(&self, reply: Reply) {
        let inner = &self.inner;
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        for value in reply.into_values() {
            if let Some(msg) = message(value) {
                let mut f = inner.on_message.lock().unwrap_or_else(|e| e.into_inner());
                f(msg);
            }
        }
    }
}

impl Drop for LostGuard {
    fn drop(&mut self) {
        let inner = &self.inner;
        {
            let mut st = inner.state();
            if st.generation == self.generation && st.phase == Phase::Subscribing {
                // The attempt's own outcome is on its way, with the precise
                // error if it failed; a success must not count.
                st.closed_early = Some(self.generation);
                return;
            }
        }
        inner.lost(self.generation, Error::PeerClosed);
    }
}

/// A `message`, `pmessage` or `smessage` push as a [`Message`]; `None` for
/// anything else (confirmations, invalidations).
fn message(value: Value) -> Option<Message> {
    let (Value::Push(items) | Value::Array(items)) = value else {
        return None;
    };
    let mut it = items.into_iter();
    let kind = it.next()?;
    let kind = kind.as_bytes()?;
    let mut blob = || match it.next()? {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        _ => None,
    };
    if kind.eq_ignore_ascii_case(b"message") || kind.eq_ignore_ascii_case(b"smessage") {
        let channel = blob()?;
        let payload = blob()?;
        return Some(Message {
            channel,
            pattern: None,
            payload,
        });
    }
    if kind.eq_ignore_ascii_case(b"pmessage") {
        let pattern = blob()?;
        let channel = blob()?;
        let payload = blob()?;
        return Some(Message {
            channel,
            pattern: Some(pattern),
            payload,
        });
    }
    None
}

fn add_unique<I>(list: &mut Vec<Bytes>, names: I)
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    for name in names {
        let name = Bytes::copy_from_slice(name.as_ref());
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn messages_from_resp2_arrays_and_resp3_pushes() {
        let m = message(Value::Array(vec![bulk("message"), bulk("c"), bulk("p")])).unwrap();
        assert_eq!(
            (m.channel, m.pattern, m.payload),
            ("c".into(), None, "p".into())
        );
        let m = message(Value::Push(vec![
            bulk("pmessage"),
            bulk("e:*"),
            bulk("e:1"),
            bulk("x"),
        ]))
        .unwrap();
        assert_eq!(m.pattern, Some(Bytes::from("e:*")));
        assert_eq!(m.channel, Bytes::from("e:1"));
        assert!(message(Value::Push(vec![
            bulk("subscribe"),
            bulk("c"),
            Value::Integer(1)
        ]))
        .is_none());
        assert!(message(Value::Push(vec![bulk("message"), bulk("c")])).is_none());
    }
}
