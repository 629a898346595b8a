//! Workflow's proxy tutorial: a server whose `process` runs an HTTP client task
//! to a backend and answers with what came back. The series context carries the
//! request's start time so the reply can say how long the backend took.
//!
//! `cargo run --example http_proxy -- --port 8081 --backend http://127.0.0.1:8080`

#[path = "common/args.rs"]
mod args;

use std::time::Instant;
use taskweave::http::{self, Server, ServerTask};
use taskweave::{Series, Settings};

/// What the proxy keeps in each request's series.
struct ProxyContext {
    started: Instant,
}

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage:
        "usage: http_proxy [--port 8081] [--backend http://127.0.0.1:8080] [--handler-threads N]",
    options: &["port", "backend", "handler-threads"],
    switches: &[],
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

    let server = Server::builder().serve(
        ("127.0.0.1", port),
        move |task: &mut ServerTask, series: &mut Series| {
            series.set_context(ProxyContext {
                started: Instant::now(),
            });
            let url = format!("{backend}{}", task.request().target());
            let method = task.request().method().to_string();
            let body = task.request_mut().take_body();
            // The reply is sent when this series ends, after the client task below.
            series.push_back(
                http::request(&method, &url, |t: &mut http::ClientTask, s: &mut Series| {
                    let took = s.context_mut::<ProxyContext>().started.elapsed();
                    let error = t.result().err().map(|e| e.to_string());
                    let backend = t.take_response();
                    let Some(reply) = ServerTask::of_series(s) else {
                        return;
                    };
                    let resp = reply.response();
                    match (backend, error) {
                        (Some(b), None) => {
                            resp.set_status(b.status());
                            if let Some(ct) = b.header("content-type") {
                                resp.set_header("Content-Type", ct);
                            }
                            resp.set_header("X-Backend-Time-Us", took.as_micros().to_string());
                            resp.set_body(b.body().clone());
                        }
                        (_, e) => {
                            resp.set_status(502)
                                .set_body(format!("backend failed: {}\n", e.unwrap_or_default()));
                        }
                    }
                })
                .body(body),
            );
        },
    )?;
    eprintln!("http_proxy listening on http://{}", server.local_addr());
    eprintln!(
        "http_proxy forwarding to {}",
        args.raw("backend").unwrap_or("http://127.0.0.1:8080")
    );
    // Ctrl-C or SIGTERM: requests in flight get their answers, then exit.
    taskweave::os::wait_for_shutdown_signal()?;
    eprintln!("http_proxy: shutting down");
    server.shutdown(std::time::Duration::from_secs(5));
    Ok(())
}
