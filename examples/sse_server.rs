//! A server-sent events server: rate-limited pushes that lose no event.
//!
//! - `GET /events?topic=T` streams topic `T` (default: `ticker`, which gets
//!   an event every `--tick-ms`); `Last-Event-ID` resumes after that id.
//! - `POST /publish?topic=T` publishes the request body as one event and
//!   answers with its id.
//! - `GET /` is a page whose `EventSource` shows the stream live, with the
//!   rate it sees and any gap (`/?topic=T`).
//! - `GET /metrics`: connections, requests by status class and their
//!   latency, open streams, subscribers per topic, events published,
//!   delivered and dropped, and how long a publish takes
//!   (`taskweave_publish_seconds`, this example's own histogram), in the
//!   Prometheus text format.
//!
//! Every client gets its own queue of at most `--queue` events, paced at
//! `--rate` events/s (bursts of `--burst`); a client that falls behind gets
//! `--policy`: `drop-oldest` (the next event's id jumps and a comment says
//! how many were dropped), `reject` (the same, as seen by the client; the
//! publisher's count of refusals grows) or `disconnect` (closed with
//! `slow_consumer`; it resumes from the history). Ctrl-C shuts down cleanly:
//! every stream ends with a `retry:` hint and every access-log record is
//! written.
//!
//! With `--redis URL`, instances share their topics through Redis pub/sub:
//! a publish (POST or ticker) runs one Lua script that takes the topic's
//! next id from a Redis counter and publishes the event with it, and every
//! instance feeds what it receives into its hub with that id. So an event
//! posted to any instance reaches the subscribers of all of them under one
//! id, and a client can resume with `Last-Event-ID` on any instance.
//!
//! `cargo run --release --example sse_server -- [--port 8090] [--rate N]
//!  [--burst N] [--policy drop-oldest|disconnect|reject] [--queue N]
//!  [--stall-ms N] [--history N] [--heartbeat-ms N] [--tick-ms N]
//!  [--max-subscribers N] [--max-event-bytes N] [--max-rps N]
//!  [--access-log PATH|-|off] [--pollers N] [--handler-threads N]
//!  [--max-connections N] [--reuse-port] [--redis URL] [--redis-prefix P]
//!  [--redis-timeout-ms N]`

#[path = "common/access_log.rs"]
mod access_log;
#[path = "common/args.rs"]
mod args;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use taskweave::comm::{ConnConfig, FlowControl, Overflow, RateLimited};
use taskweave::http::sse::{Event, Hub, HubConfig, Numbered};
use taskweave::http::{Server, ServerTask};
use taskweave::metrics::{Histogram, ServerMetrics};
use taskweave::redis::{self, Message, Status, Subscriber, SubscriberHandle, Value};
use taskweave::{timer, Series, Settings};

/// The page at `/`: an `EventSource` view of a topic.
const PAGE: &str = include_str!("sse_page.html");

/// The topic `/events` streams when none is named.
const TICKER: &str = "ticker";

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: sse_server [--port 8090] [--rate N] [--burst N]\n       \
[--policy drop-oldest|disconnect|reject] [--queue N] [--stall-ms N]\n       \
[--history N] [--heartbeat-ms N] [--tick-ms N] [--max-subscribers N]\n       \
[--max-event-bytes N] [--max-rps N] [--access-log PATH|-|off|none] [--conn-log-only]\n       \
[--pollers N] [--handler-threads N] [--max-connections N] [--reuse-port]\n       \
[--redis URL] [--redis-prefix P] [--redis-timeout-ms N]",
    options: &[
        "port",
        "rate",
        "burst",
        "policy",
        "queue",
        "stall-ms",
        "history",
        "heartbeat-ms",
        "tick-ms",
        "max-subscribers",
        "max-event-bytes",
        "max-rps",
        "access-log",
        "pollers",
        "handler-threads",
        "max-connections",
        "redis",
        "redis-prefix",
        "redis-timeout-ms",
    ],
    switches: &["reuse-port", "conn-log-only"],
};

fn main() -> std::io::Result<()> {
    let args = args::Args::parse(&SPEC);
    let port: u16 = args.get("port", 8090);
    let mut settings = Settings::default();
    settings.poller_threads = args.get("pollers", settings.poller_threads);
    settings.handler_threads = args.get("handler-threads", settings.handler_threads);
    settings.apply().map_err(std::io::Error::other)?;
    let metrics = Arc::new(ServerMetrics::new());
    let access_log::Chosen { log, writer } = access_log::from_args(&args, metrics.clone());

    let hub = Hub::new(hub_config(&args));
    let (publisher, subscription) = match args.raw("redis") {
        None => (Publisher::Local, None),
        Some(url) => {
            let bus = Arc::new(Bus::new(&args, url, hub.clone())?);
            let handle = bus.subscribe(url)?;
            (Publisher::Redis(bus), Some(handle))
        }
    };
    let builder = Server::builder()
        .max_connections(args.get("max-connections", 20_000))
        .reuse_port(args.get("reuse-port", false))
        .max_rps(args.get("max-rps", 0))
        .access_log(log);
    let publish_time = metrics
        .histogram(
            "publish_seconds",
            "Time to publish an event that was published: numbering it (a Redis round trip \
             with --redis) and handing it to the hub.",
        )
        .map_err(std::io::Error::other)?;
    let app = Arc::new(App {
        hub: hub.clone(),
        publisher: publisher.clone(),
        metrics,
        publish_time,
        rate_limited: builder.rate_limited(),
    });
    let server = builder.serve(
        ("127.0.0.1", port),
        move |task: &mut ServerTask, series: &mut Series| route(&app, task, series),
    )?;
    eprintln!("sse_server listening on http://{}", server.local_addr());

    let tick_ms: u64 = args.get("tick-ms", 1000);
    if tick_ms > 0 {
        start_ticker(hub, publisher, Duration::from_millis(tick_ms));
    }

    taskweave::os::wait_for_shutdown_signal()?;
    eprintln!("sse_server: shutting down");
    server.shutdown(Duration::from_secs(5));
    if let Some(handle) = subscription {
        handle.stop();
    }
    if let Some(w) = writer {
        w.flush()?;
    }
    Ok(())
}

/// Each subscriber's limits, from the command line.
fn hub_config(args: &args::Args) -> HubConfig {
    let mut flow = FlowControl::new().max_messages(args.get("queue", 1024));
    let rate: u64 = args.get("rate", 0);
    if rate > 0 {
        flow = flow.message_rate(rate, args.get("burst", 1));
    }
    flow = flow.overflow(match args.raw("policy").unwrap_or("drop-oldest") {
        "drop-oldest" => Overflow::DropOldest,
        "reject" => Overflow::Reject,
        "disconnect" => Overflow::Disconnect,
        other => {
            eprintln!("invalid value for --policy: {other} (drop-oldest, reject or disconnect)");
            std::process::exit(2)
        }
    });
    let stall_ms: u64 = args.get("stall-ms", 0);
    if stall_ms > 0 {
        flow = flow.stall_timeout(Duration::from_millis(stall_ms));
    }
    HubConfig::default()
        .flow(flow)
        .history(args.get("history", 1024))
        .heartbeat(Duration::from_millis(args.get("heartbeat-ms", 15_000)))
        .max_subscribers(args.get("max-subscribers", 100_000))
        .max_event_bytes(args.get("max-event-bytes", 64 * 1024))
}

/// What every request's handler shares.
struct App {
    hub: Hub,
    publisher: Publisher,
    metrics: Arc<ServerMetrics>,
    /// How long each `POST /publish` took to number and publish its event.
    publish_time: Arc<Histogram>,
    rate_limited: RateLimited,
}

fn route(app: &App, task: &mut ServerTask, series: &mut Series) {
    let hub = &app.hub;
    let topic = query_str(task.request().query(), "topic").unwrap_or(TICKER);
    let topic = topic.to_owned();
    match (task.request().method(), task.request().path()) {
        ("GET" | "HEAD", "/") => {
            task.response()
                .set_header("Content-Type", "text/html; charset=utf-8")
                .set_body(PAGE);
        }
        ("GET" | "HEAD", "/events") => {
            let _ = hub.subscribe(task, &topic);
        }
        ("POST", "/publish") => {
            let body = task.request_mut().take_body();
            let Ok(data) = String::from_utf8(body.to_vec()) else {
                task.response()
                    .set_status(400)
                    .set_body("the event must be UTF-8 text\n");
                return;
            };
            let event = Event::new(data);
            let start = Instant::now();
            let published = match &app.publisher {
                Publisher::Local => hub.publish(&topic, event),
                Publisher::Redis(bus) => match hub.check_publish(&topic, &event) {
                    // Answered when Redis has numbered the event, as the
                    // series ends.
                    Ok(()) => {
                        let time = app.publish_time.clone();
                        series.push_back(bus.publish(&topic, event.data(), move |res, s| {
                            if res.is_ok() {
                                time.observe(start.elapsed());
                            }
                            if let Some(task) = ServerTask::of_series(s) {
                                answer_publish(task, res);
                            }
                        }));
                        return;
                    }
                    Err(e) => Err(e),
                },
            };
            if published.is_ok() {
                app.publish_time.observe(start.elapsed());
            }
            answer_publish(task, published.map_err(|e| (e.status(), e.to_string())));
        }
        ("GET", "/metrics") => {
            let mut out = String::new();
            app.metrics.render_prometheus("taskweave", &mut out);
            hub.render_prometheus("taskweave_sse_", &mut out);
            app.rate_limited.render_prometheus("taskweave", &mut out);
            if let Publisher::Redis(bus) = &app.publisher {
                bus.render_prometheus("taskweave_sse_redis_", &mut out);
            }
            task.response()
                .set_header("Content-Type", "text/plain; version=0.0.4")
                .set_body(out);
        }
        (_, "/" | "/events" | "/publish" | "/metrics") => {
            task.response()
                .set_status(405)
                .set_body("method not allowed\n");
        }
        _ => {
            task.response().set_status(404).set_body("not found\n");
        }
    }
}

/// Answers a publish with the event's id, or with the status and message of
/// why it failed.
fn answer_publish(task: &mut ServerTask, res: Result<u64, (u16, String)>) {
    match res {
        Ok(id) => task.response().set_body(format!("{id}\n")),
        Err((status, why)) => task
            .response()
            .set_status(status)
            .set_body(format!("{why}\n")),
    };
}

/// The value of `key` in a query string, as it is (topic names need no
/// decoding: the hub refuses any byte that would).
fn query_str<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Publishes `tick N <unix ms>` on the ticker topic every `every`, from a
/// series of timer tasks (no thread of its own); through Redis with
/// `--redis` (every instance runs its own ticker: give all but one
/// `--tick-ms 0`).
fn start_ticker(hub: Hub, publisher: Publisher, every: Duration) {
    fn tick(hub: Hub, publisher: Publisher, every: Duration, n: u64) -> taskweave::TimerTask {
        timer(every, move |_, series: &mut Series| {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let text = format!("tick {n} {ms}");
            match &publisher {
                Publisher::Local => {
                    let _ = hub.publish(TICKER, Event::new(text));
                }
                // The next tick waits for this one's publish (at most the
                // Redis timeout), so ticks never pile up while Redis is away.
                Publisher::Redis(bus) => series.push_back(bus.publish(TICKER, &text, |res, _| {
                    if let Err((_, why)) = res {
                        eprintln!("sse_server: warning: tick not published: {why}");
                    }
                })),
            }
            series.push_back(tick(hub, publisher, every, n + 1));
        })
    }
    Series::new(tick(hub, publisher, every, 1)).start();
}

/// Where a publish goes.
#[derive(Clone)]
enum Publisher {
    /// Into this instance's hub, which numbers it.
    Local,
    /// To Redis, which numbers it and hands it to every instance's hub.
    Redis(Arc<Bus>),
}

/// Takes the topic's next id from the counter `KEYS[1]` and publishes
/// `<id> <data>` on channel `ARGV[1]`, in one step: Redis runs a script
/// alone, so the events of a topic are published in the order of their ids
/// and every subscriber receives them in that order. `ARGV[3]` is the
/// newest id the publishing instance has seen on the topic (received, or
/// returned to a publish of its own): if the counter
/// is behind it (Redis lost its data), it moves past it, so the new event
/// is not taken for a duplicate.
/// Past this many topics with ids of ours on their way, the topics the hub
/// has caught up on are forgotten.
const ISSUED_PRUNE_AT: usize = 1024;

const PUBLISH_SCRIPT: &str = "local id = redis.call('INCR', KEYS[1])\n\
local seen = tonumber(ARGV[3])\n\
if id <= seen then id = seen + 1; redis.call('SET', KEYS[1], id) end\n\
redis.call('PUBLISH', ARGV[1], string.format('%d', id) .. ' ' .. ARGV[2])\n\
return id";

/// Instances sharing their topics through Redis: topic `T` is channel
/// `<prefix>T`, and its ids come from the counter key `<prefix>id:T`.
struct Bus {
    client: redis::Client,
    prefix: String,
    hub: Hub,
    /// Whether the subscription is up now.
    subscribed: AtomicBool,
    /// Per topic, the newest id a publish of ours got from the script and
    /// the hub has not yet received back through the subscription: a publish
    /// counts it as seen, so that if Redis loses its data before the event
    /// comes back, its id is still not given out again. Entries go once the
    /// hub has caught up, so this holds only ids on their way.
    issued: Mutex<HashMap<String, u64>>,
    /// Messages handed to the hub, duplicates ignored, events missed (a
    /// topic's id jumped), messages that were not ours to read, publishes
    /// that failed.
    received: AtomicU64,
    duplicates: AtomicU64,
    missed: AtomicU64,
    malformed: AtomicU64,
    publish_failures: AtomicU64,
}

impl Bus {
    fn new(args: &args::Args, url: &str, hub: Hub) -> std::io::Result<Bus> {
        let timeout = Duration::from_millis(args.get("redis-timeout-ms", 2000));
        let config = redis::Client::config(ConnConfig {
            connect_timeout: timeout,
            dns_timeout: timeout,
            receive_timeout: timeout,
            ..ConnConfig::default()
        })
        .wait_timeout(timeout);
        let client = redis::Client::new(url)
            .map_err(|e| bad_arg("redis", &e.to_string()))?
            .with_config(Arc::new(config));
        Ok(Bus {
            client,
            prefix: args
                .raw("redis-prefix")
                .unwrap_or("taskweave:sse:")
                .to_string(),
            hub,
            subscribed: AtomicBool::new(false),
            issued: Mutex::new(HashMap::new()),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
        })
    }

    /// A task publishing `data` on `topic` through the script; `done` gets
    /// the event's id, or a 503 and why.
    fn publish(
        self: &Arc<Self>,
        topic: &str,
        data: &str,
        done: impl FnOnce(Result<u64, (u16, String)>, &mut Series) + Send + 'static,
    ) -> redis::RedisTask {
        let key = format!("{}id:{topic}", self.prefix);
        let channel = format!("{}{topic}", self.prefix);
        let seen = self.seen(topic).to_string();
        let args: [&[u8]; 7] = [
            b"EVAL",
            PUBLISH_SCRIPT.as_bytes(),
            b"1",
            key.as_bytes(),
            channel.as_bytes(),
            data.as_bytes(),
            seen.as_bytes(),
        ];
        let bus = self.clone();
        let topic = topic.to_string();
        self.client.command(args, move |t, s| {
            let res = match t.value() {
                Ok(Value::Integer(id)) if *id > 0 => {
                    bus.note_issued(&topic, id.unsigned_abs());
                    Ok(id.unsigned_abs())
                }
                Ok(Value::Error(e)) => Err(format!("redis refused the publish: {e}")),
                Ok(other) => Err(format!("redis answered the publish with {other:?}")),
                Err(e) => Err(format!("redis unavailable: {e}")),
            };
            if res.is_err() {
                bus.publish_failures.fetch_add(1, Relaxed);
            }
            done(res.map_err(|why| (503, why)), s)
        })
    }

    /// The newest id of `topic` this instance knows of: received, or given
    /// to a publish of its own.
    fn seen(&self, topic: &str) -> u64 {
        let received = self.hub.last_id(topic);
        let issued = self.lock_issued().get(topic).copied().unwrap_or(0);
        received.max(issued)
    }

    /// A publish of ours got `id` on `topic`.
    fn note_issued(&self, topic: &str, id: u64) {
        let mut issued = self.lock_issued();
        let newest = issued.entry(topic.to_string()).or_insert(0);
        *newest = (*newest).max(id);
        if issued.len() > ISSUED_PRUNE_AT {
            issued.retain(|topic, id| *id > self.hub.last_id(topic));
        }
    }

    fn lock_issued(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to every topic's channel (a pattern on the prefix) and
    /// feeds the hub. Waits up to 5 s for the subscription, so an instance
    /// that says it listens receives what is published from then on; if
    /// Redis is not there yet, it goes on (and keeps trying).
    fn subscribe(self: &Arc<Self>, url: &str) -> std::io::Result<SubscriberHandle> {
        let (up_tx, up_rx) = mpsc::channel();
        let (on_msg, on_status) = (self.clone(), self.clone());
        let handle = Subscriber::new(url)
            .map_err(|e| bad_arg("redis", &e.to_string()))?
            .patterns([glob_escape(&self.prefix) + "*"])
            .on_message(move |m| on_msg.received(m))
            .on_status(move |st| {
                on_status.status(st);
                let _ = up_tx.send(());
            })
            .start();
        if up_rx.recv_timeout(Duration::from_secs(5)).is_err() || !handle.is_subscribed() {
            eprintln!(
                "sse_server: warning: not subscribed to {url} yet; publishing answers 503 \
                 until Redis answers"
            );
        }
        Ok(handle)
    }

    /// One message from Redis: `<id> <data>` on `<prefix><topic>`.
    fn received(&self, m: Message) {
        self.received.fetch_add(1, Relaxed);
        let parsed = (|| {
            let topic =
                std::str::from_utf8(m.channel.strip_prefix(self.prefix.as_bytes())?).ok()?;
            let space = m.payload.iter().position(|&b| b == b' ')?;
            let id: u64 = std::str::from_utf8(&m.payload[..space])
                .ok()?
                .parse()
                .ok()?;
            let data = std::str::from_utf8(&m.payload[space + 1..]).ok()?;
            Some((topic, id, data))
        })();
        let Some((topic, id, data)) = parsed else {
            self.malformed.fetch_add(1, Relaxed);
            eprintln!(
                "sse_server: warning: ignored a message on {:?} that is not `<id> <data>`",
                String::from_utf8_lossy(&m.channel)
            );
            return;
        };
        match self.hub.publish_with_id(topic, id, Event::new(data)) {
            Ok(Numbered::Next) => {}
            Ok(Numbered::Duplicate) => {
                // Pub/sub never delivers twice: the counter went back.
                self.duplicates.fetch_add(1, Relaxed);
                eprintln!(
                    "sse_server: warning: topic {topic}: id {id} is not above the newest \
                     ({}); ignored (did Redis lose its counters?)",
                    self.hub.last_id(topic)
                );
            }
            Ok(Numbered::AfterGap { missed }) => {
                self.missed.fetch_add(missed, Relaxed);
                eprintln!(
                    "sse_server: warning: topic {topic}: {missed} events missed before id {id} \
                     (clients resuming from before them are told)"
                );
            }
            Err(e) => {
                self.malformed.fetch_add(1, Relaxed);
                eprintln!("sse_server: warning: event {id} on {topic:?} refused: {e}");
            }
        }
    }

    fn status(&self, status: Status) {
        match status {
            Status::Subscribed { gap } => {
                self.subscribed.store(true, Relaxed);
                match gap {
                    None => eprintln!("sse_server: subscribed to Redis"),
                    Some(gap) => eprintln!(
                        "sse_server: warning: resubscribed to Redis after {gap:?}: events \
                         published meanwhile did not reach this instance"
                    ),
                }
            }
            Status::Lost { error, retry_in } => {
                self.subscribed.store(false, Relaxed);
                eprintln!(
                    "sse_server: warning: Redis subscription lost ({error}); retrying in \
                     {retry_in:?}"
                );
            }
            other => eprintln!("sse_server: warning: Redis subscription: {other:?}"),
        }
    }

    fn render_prometheus(&self, prefix: &str, out: &mut String) {
        let families: [(&str, &str, &str, u64); 6] = [
            (
                "subscribed",
                "gauge",
                "Whether the Redis subscription is up.",
                self.subscribed.load(Relaxed).into(),
            ),
            (
                "messages_total",
                "counter",
                "Messages received from Redis.",
                self.received.load(Relaxed),
            ),
            (
                "duplicates_total",
                "counter",
                "Messages ignored as duplicates.",
                self.duplicates.load(Relaxed),
            ),
            (
                "missed_total",
                "counter",
                "Events that never reached this instance (ids skipped).",
                self.missed.load(Relaxed),
            ),
            (
                "malformed_total",
                "counter",
                "Messages that were not events of ours.",
                self.malformed.load(Relaxed),
            ),
            (
                "publish_failures_total",
                "counter",
                "Publishes Redis did not number (answered 503).",
                self.publish_failures.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {prefix}{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}{name} {kind}");
            let _ = writeln!(out, "{prefix}{name} {value}");
        }
    }
}

/// `s` with Redis's glob characters escaped, for a pattern matching it
/// literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bad_arg(name: &str, why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--{name}: {why}"))
}
