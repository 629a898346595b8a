//! Workflow's proxy tutorial: a server whose `process` runs an HTTP client task
//! to a backend and answers with what came back. The series context carries the
//! request's start time so the reply can say how long the backend took.
//!
//! Header fields go through both ways, except the hop-by-hop ones (RFC 9110
//! §7.6.1), which describe one connection, not the message; each forwarded
//! message gets a `Via` field naming the proxy (§7.6.3). Every request a
//! client sends writes an access-log record when its answer is out, and
//! every client connection one when it closes.
//!
//! The backend may be `https://` (checked against the Mozilla root store;
//! `--cacert FILE` trusts the CA certificates in FILE as well).
//!
//! `cargo run --example http_proxy -- --port 8081 --backend http://127.0.0.1:8080
//!  [--handler-threads N] [--access-log PATH|-|off] [--conn-log-only] [--cacert FILE]`

#[path = "common/access_log.rs"]
mod access_log;
#[path = "common/args.rs"]
mod args;

use std::sync::Arc;
use std::time::Instant;
use taskweave::comm::ClientConfig;
use taskweave::http::{self, Framing, Headers, Server, ServerTask, Version};
use taskweave::metrics::ServerMetrics;
use taskweave::{Series, Settings};

/// What the proxy keeps in each request's series.
struct ProxyContext {
    started: Instant,
}

/// Fields that belong to one connection and are never forwarded (RFC 9110
/// §7.6.1 and the older list of RFC 2616 §13.5.1), with any field that a
/// message's `Connection` names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request fields the proxy does not copy either: the client task writes
/// `Host` (the backend's) and `Content-Length`; `Expect: 100-continue` was
/// already met (the server answered it and read the whole body).
const REQUEST_OWN: &[&str] = &["host", "content-length", "expect"];

/// Response fields the proxy does not copy: the server writes
/// `Content-Length` for the body it sends.
const RESPONSE_OWN: &[&str] = &["content-length"];

/// The fields of `headers` to forward: all but the hop-by-hop ones and `own`.
fn end_to_end<'a>(
    headers: &'a Headers,
    own: &'a [&str],
) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
    headers.iter().filter(move |(name, _)| {
        let listed = |list: &[&str]| list.iter().any(|h| name.eq_ignore_ascii_case(h));
        !listed(HOP_BY_HOP) && !listed(own) && !headers.contains_token("connection", name)
    })
}

/// The `Via` entry for a message received with `version`: `1.1 taskweave`.
fn via(version: Version) -> String {
    format!("{} taskweave", version.as_str().trim_start_matches("HTTP/"))
}

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: http_proxy [--port 8081] [--backend http[s]://127.0.0.1:8080] [--handler-threads N]\n       \
[--access-log PATH|-|off] [--conn-log-only] [--cacert FILE]",
    options: &["port", "backend", "handler-threads", "access-log", "cacert"],
    switches: &["conn-log-only"],
};

fn main() -> std::io::Result<()> {
    let args = args::Args::parse(&SPEC);
    let port: u16 = args.get("port", 8081);
    let backend = args
        .raw("backend")
        .unwrap_or("http://127.0.0.1:8080")
        .trim_end_matches('/')
        .to_string();
    let mut settings = Settings::default();
    settings.handler_threads = args.get("handler-threads", settings.handler_threads);
    settings.apply().map_err(std::io::Error::other)?;
    // No /metrics here (every path goes to the backend): `off` keeps no record.
    let metrics = Arc::new(ServerMetrics::new());
    let access_log::Chosen { log, writer } = access_log::from_args(&args, metrics);
    // One client config for every forwarded request: one pool per backend,
    // and TLS sessions to an https:// backend resume across connections.
    let mut client = ClientConfig::default();
    if let Some(ca) = args.raw("cacert") {
        client = client.tls_root_pem(ca);
    }
    let client = Arc::new(client);

    let server = Server::builder().access_log(log).serve(
        ("127.0.0.1", port),
        move |task: &mut ServerTask, series: &mut Series| {
            series.set_context(ProxyContext {
                started: Instant::now(),
            });
            let body = task.request_mut().take_body();
            let req = task.request();
            let url = format!("{backend}{}", req.target());
            let is_head = req.is_head();
            // The reply is sent when this series ends, after the client task below.
            let mut forward =
                http::request(req.method(), &url, move |t: &mut http::ClientTask, s| {
                    let took = s.context_mut::<ProxyContext>().started.elapsed();
                    let error = t.result().err().map(|e| e.to_string());
                    let backend = t.take_response();
                    let Some(reply) = ServerTask::of_series(s) else {
                        return;
                    };
                    let resp = reply.response();
                    match (backend, error) {
                        (Some(mut b), None) => {
                            resp.set_status(b.status());
                            for (name, value) in end_to_end(b.headers(), RESPONSE_OWN) {
                                // A field that cannot be sent is left out.
                                let _ = resp.try_append_header(name, value);
                            }
                            resp.append_header("Via", via(b.version()));
                            resp.set_header("X-Backend-Time-Us", took.as_micros().to_string());
                            // A HEAD answer has no body but says how long it would be.
                            let length = b
                                .header("content-length")
                                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                            if let (true, Some(n)) = (is_head, length) {
                                resp.set_framing(Framing::Declared(n));
                            }
                            resp.set_body(b.take_body());
                        }
                        (_, e) => {
                            resp.set_status(502)
                                .set_body(format!("backend failed: {}\n", e.unwrap_or_default()));
                        }
                    }
                })
                .body(body)
                .config(client.clone());
            for (name, value) in end_to_end(req.headers(), REQUEST_OWN) {
                forward = forward.header(name, value);
            }
            series.push_back(forward.header("Via", via(req.version())));
        },
    )?;
    eprintln!("http_proxy listening on http://{}", server.local_addr());
    eprintln!(
        "http_proxy forwarding to {}",
        args.raw("backend").unwrap_or("http://127.0.0.1:8080")
    );
    // Ctrl-C or SIGTERM: requests in flight get their answers, then the
    // log is flushed, so no record is lost.
    taskweave::os::wait_for_shutdown_signal()?;
    eprintln!("http_proxy: shutting down");
    server.shutdown(std::time::Duration::from_secs(5));
    if let Some(w) = writer {
        w.flush()?;
    }
    Ok(())
}
