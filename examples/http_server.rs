//! An HTTP/1.1 server: `/` says hello, `/echo` echoes the body, `/delay?ms=N`
//! answers after a timer task, `/stream?n=N&ms=M` streams N chunks M ms
//! apart, `/file/NAME` serves a file of `--dir DIR` as a stream (read as the
//! socket drains), `/metrics` shows the server's counters in Prometheus
//! format: live requests by status class (`taskweave_requests_total`),
//! request latency (`taskweave_request_duration_seconds`), open connections
//! and streams, and two of this example's own, registered on the same
//! `ServerMetrics` (`taskweave_echo_bytes_total`, `taskweave_delays_waiting`).
//! Every request writes an access-log record when its answer is out, and
//! every connection one when it closes.
//!
//! `--max-rps N` answers requests beyond N a second (over the whole server)
//! with `429 Too Many Requests` and `Retry-After`, counted in `/metrics` as
//! `taskweave_requests_rate_limited_total`. `--limit-rate RATE` paces
//! `/file` downloads to RATE bytes a second after the first
//! `--limit-rate-after SIZE` bytes (nginx's `limit_rate` and
//! `limit_rate_after`; sizes like `1m`, `500k` or plain bytes; 0: no limit).
//!
//! `--handler-threads 0` runs callbacks on the poller (inline);
//! `--no-poller-handoff` hands every callback to a handler thread instead
//! of letting the poller run them with its loop set aside
//! (`Settings::poller_handoff`).
//!
//! `--tls-cert FILE --tls-key FILE` serves HTTPS with that certificate chain
//! and key (PEM); both flags may be given several times, in pairs, for
//! several certificates chosen by SNI.
//!
//! `cargo run --release --example http_server -- --port 8080 [--pollers N]
//!  [--handler-threads N] [--no-poller-handoff] [--max-connections N] [--reuse-port] [--access-log PATH|-|off]
//!  [--dir DIR] [--max-rps N] [--limit-rate RATE] [--limit-rate-after SIZE]
//!  [--tls-cert FILE --tls-key FILE]`

#[path = "common/access_log.rs"]
mod access_log;
#[path = "common/args.rs"]
mod args;
#[path = "common/streams.rs"]
mod streams;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use taskweave::http::{Server, ServerTask};
use taskweave::metrics::ServerMetrics;
use taskweave::{timer, Series, Settings};

/// The paths this server answers (matched before the response is borrowed).
enum Route {
    Hello,
    Echo,
    Delay,
    Stream,
    File,
    Metrics,
    NotFound,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/" => Route::Hello,
            "/echo" => Route::Echo,
            "/delay" => Route::Delay,
            "/stream" => Route::Stream,
            "/metrics" => Route::Metrics,
            _ if path.starts_with("/file/") => Route::File,
            _ => Route::NotFound,
        }
    }
}

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: http_server [--port 8080] [--pollers N] [--handler-threads N]\n       \
[--max-connections N] [--reuse-port] [--access-log PATH|-|off|none] [--conn-log-only]\n       \
[--no-poller-handoff]\n       \
[--dir DIR] [--max-rps N] [--limit-rate RATE] [--limit-rate-after SIZE]\n       \
[--tls-cert FILE --tls-key FILE]",
    options: &[
        "port",
        "pollers",
        "handler-threads",
        "max-connections",
        "access-log",
        "dir",
        "max-rps",
        "limit-rate",
        "limit-rate-after",
        "tls-cert",
        "tls-key",
    ],
    switches: &["reuse-port", "conn-log-only", "no-poller-handoff"],
};

fn main() -> std::io::Result<()> {
    let args = args::Args::parse(&SPEC);
    let port: u16 = args.get("port", 8080);
    let mut settings = Settings::default();
    settings.poller_threads = args.get("pollers", settings.poller_threads);
    settings.handler_threads = args.get("handler-threads", settings.handler_threads);
    settings.poller_handoff = !args.has("no-poller-handoff");
    settings.apply().map_err(std::io::Error::other)?;

    let metrics = Arc::new(ServerMetrics::new());
    let access_log::Chosen { log, writer } = access_log::from_args(&args, metrics.clone());
    let m = metrics.clone();
    // Metrics of this example's own, rendered after the built-in ones.
    let echoed = metrics
        .counter("echo_bytes_total", "Request body bytes echoed by /echo.")
        .map_err(std::io::Error::other)?;
    let waiting = metrics
        .gauge("delays_waiting", "/delay requests waiting for their timer.")
        .map_err(std::io::Error::other)?;
    let dir: Option<PathBuf> = args.raw("dir").map(PathBuf::from);
    let size = |name| {
        args.raw(name).map_or(0, |v| {
            streams::parse_size(v).unwrap_or_else(|| {
                eprintln!("invalid size for --{name}: {v} (bytes, or with k, m or g)");
                std::process::exit(2)
            })
        })
    };
    let pace = match size("limit-rate") {
        0 => None,
        rate => Some(streams::DownloadRate {
            rate,
            after: size("limit-rate-after"),
        }),
    };
    let mut builder = Server::builder()
        .max_connections(args.get("max-connections", 10_000))
        .reuse_port(args.get("reuse-port", false))
        .max_rps(args.get("max-rps", 0))
        .access_log(log);
    let (certs, keys) = (args.all("tls-cert"), args.all("tls-key"));
    if certs.len() != keys.len() {
        eprintln!("--tls-cert and --tls-key go in pairs\n{}", SPEC.usage);
        std::process::exit(2);
    }
    for (cert, key) in certs.iter().zip(&keys) {
        builder = builder.tls(cert, key);
    }
    let rate_limited = builder.rate_limited();
    let server = builder.serve(
        ("127.0.0.1", port),
        move |task: &mut ServerTask, series: &mut Series| {
            let param =
                |task: &ServerTask, key| streams::query_param::<u64>(task.request().query(), key);
            match Route::of(task.request().path()) {
                Route::Hello => {
                    task.response().set_header("Content-Type", "text/plain");
                    task.response().set_body("Hello, World!");
                }
                Route::Echo => {
                    let body = task.request_mut().take_body();
                    echoed.add(body.len() as u64);
                    task.response().set_body(body);
                }
                Route::Delay => {
                    let ms = match param(task, "ms") {
                        Ok(ms) => ms.unwrap_or(0).min(60_000),
                        Err(why) => return bad_request(task, why),
                    };
                    waiting.inc();
                    let waiting = waiting.clone();
                    series.push_back(timer(
                        Duration::from_millis(ms),
                        move |_, s: &mut Series| {
                            waiting.dec();
                            if let Some(t) = ServerTask::of_series(s) {
                                t.response().set_body(format!("waited {ms} ms\n"));
                            }
                        },
                    ));
                }
                Route::Stream => {
                    let (n, ms) = match (param(task, "n"), param(task, "ms")) {
                        (Ok(n), Ok(ms)) => (n.unwrap_or(10).min(100_000) as u32, ms),
                        (Err(why), _) | (_, Err(why)) => return bad_request(task, why),
                    };
                    let ms = ms.unwrap_or(100).min(60_000);
                    streams::serve_ticks(task, series, n, ms);
                }
                Route::File => match &dir {
                    Some(dir) => {
                        let path = task.request().path();
                        let name = path.trim_start_matches("/file/").to_owned();
                        streams::serve_file_paced(task, dir, &name, pace);
                    }
                    None => {
                        task.response().set_status(404).set_body("no --dir given\n");
                    }
                },
                Route::Metrics => {
                    let mut out = String::new();
                    m.render_prometheus("taskweave", &mut out);
                    rate_limited.render_prometheus("taskweave", &mut out);
                    task.response()
                        .set_header("Content-Type", "text/plain; version=0.0.4");
                    task.response().set_body(out);
                }
                Route::NotFound => {
                    task.response().set_status(404).set_body("not found\n");
                }
            }
        },
    )?;
    let scheme = if certs.is_empty() { "http" } else { "https" };
    eprintln!(
        "http_server listening on {scheme}://{}",
        server.local_addr()
    );
    // Ctrl-C or SIGTERM: answers in flight go out whole, open streams get
    // their end, then the log is flushed, so no record is lost.
    taskweave::os::wait_for_shutdown_signal()?;
    eprintln!("http_server: shutting down");
    server.shutdown(Duration::from_secs(5));
    if let Some(w) = writer {
        w.flush()?;
    }
    Ok(())
}

/// Answers 400 with `why` (a query parameter that does not parse).
fn bad_request(task: &mut ServerTask, why: String) {
    task.response().set_status(400).set_body(why);
}
