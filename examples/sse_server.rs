//! A server-sent events server: rate-limited pushes that lose no event.
//!
//! - `GET /events?topic=T` streams topic `T` (default: `ticker`, which gets
//!   an event every `--tick-ms`); `Last-Event-ID` resumes after that id.
//! - `POST /publish?topic=T` publishes the request body as one event and
//!   answers with its id.
//! - `GET /` is a page whose `EventSource` shows the stream live, with the
//!   rate it sees and any gap (`/?topic=T`).
//! - `GET /metrics`: connections, subscribers per topic, events published,
//!   delivered and dropped, in the Prometheus text format.
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
//! `cargo run --release --example sse_server -- [--port 8090] [--rate N]
//!  [--burst N] [--policy drop-oldest|disconnect|reject] [--queue N]
//!  [--stall-ms N] [--history N] [--heartbeat-ms N] [--tick-ms N]
//!  [--max-subscribers N] [--max-event-bytes N] [--max-rps N]
//!  [--access-log PATH|-|off] [--pollers N] [--handler-threads N]
//!  [--max-connections N]`

#[path = "common/access_log.rs"]
mod access_log;
#[path = "common/args.rs"]
mod args;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use taskweave::comm::{FlowControl, Overflow, RateLimited};
use taskweave::http::sse::{Event, Hub, HubConfig};
use taskweave::http::{Server, ServerTask};
use taskweave::metrics::ServerMetrics;
use taskweave::{timer, Series, Settings};

/// The page at `/`: an `EventSource` view of a topic.
const PAGE: &str = include_str!("sse_page.html");

/// The topic `/events` streams when none is named.
const TICKER: &str = "ticker";

fn main() -> std::io::Result<()> {
    let args = args::Args::parse();
    let port: u16 = args.get("port", 8090);
    let mut settings = Settings::default();
    settings.poller_threads = args.get("pollers", settings.poller_threads);
    settings.handler_threads = args.get("handler-threads", settings.handler_threads);
    settings.apply().map_err(std::io::Error::other)?;

    let hub = Hub::new(hub_config(&args));
    let metrics = Arc::new(ServerMetrics::new());
    let access_log::Chosen { log, writer } =
        access_log::choose(args.raw("access-log"), metrics.clone())?;
    let h = hub.clone();
    let builder = Server::builder()
        .max_connections(args.get("max-connections", 20_000))
        .max_rps(args.get("max-rps", 0))
        .access_log(log);
    let rate_limited = builder.rate_limited();
    let server = builder.serve(
        ("127.0.0.1", port),
        move |task: &mut ServerTask, _: &mut Series| route(&h, &metrics, &rate_limited, task),
    )?;
    eprintln!("sse_server listening on http://{}", server.local_addr());

    let tick_ms: u64 = args.get("tick-ms", 1000);
    if tick_ms > 0 {
        start_ticker(hub, Duration::from_millis(tick_ms));
    }

    taskweave::os::wait_for_shutdown_signal()?;
    eprintln!("sse_server: shutting down");
    server.shutdown(Duration::from_secs(5));
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

fn route(hub: &Hub, metrics: &ServerMetrics, rate_limited: &RateLimited, task: &mut ServerTask) {
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
            match hub.publish(&topic, Event::new(data)) {
                Ok(id) => task.response().set_body(format!("{id}\n")),
                Err(e) => task
                    .response()
                    .set_status(e.status())
                    .set_body(format!("{e}\n")),
            };
        }
        ("GET", "/metrics") => {
            let mut out = String::new();
            metrics.render_prometheus("taskweave", &mut out);
            hub.render_prometheus("taskweave_sse_", &mut out);
            rate_limited.render_prometheus("taskweave", &mut out);
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

/// The value of `key` in a query string, as it is (topic names need no
/// decoding: the hub refuses any byte that would).
fn query_str<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Publishes `tick N <unix ms>` on the ticker topic every `every`, from a
/// series of timer tasks (no thread of its own).
fn start_ticker(hub: Hub, every: Duration) {
    fn tick(hub: Hub, every: Duration, n: u64) -> taskweave::TimerTask {
        timer(every, move |_, series: &mut Series| {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let _ = hub.publish(TICKER, Event::new(format!("tick {n} {ms}")));
            series.push_back(tick(hub, every, n + 1));
        })
    }
    Series::new(tick(hub, every, 1)).start();
}
