//! An echo server over the length-prefixed protocol in `common/echo_proto.rs`.
//!
//! `cargo run --release --example echo_server -- --port 9000 [--handler-threads 0]
//!  [--pollers N] [--max-connections N] [--reuse-port] [--access-log PATH|-|off]`
//!
//! Every connection writes one access-log record (JSON Lines) when it closes.

#[path = "common/access_log.rs"]
mod access_log;
#[path = "common/args.rs"]
mod args;
#[path = "common/echo_proto.rs"]
mod echo_proto;

use echo_proto::Echo;
use taskweave::task::Server;
use taskweave::Settings;

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: echo_server [--port 9000] [--pollers N] [--handler-threads N]\n       \
[--max-connections N] [--reuse-port] [--access-log PATH|-|off|none] [--conn-log-only]",
    options: &[
        "port",
        "pollers",
        "handler-threads",
        "max-connections",
        "access-log",
    ],
    switches: &["reuse-port", "conn-log-only"],
};

fn main() -> std::io::Result<()> {
    let args = args::Args::parse(&SPEC);
    let port: u16 = args.get("port", 9000);
    let mut settings = Settings::default();
    settings.poller_threads = args.get("pollers", settings.poller_threads);
    settings.handler_threads = args.get("handler-threads", settings.handler_threads);
    settings.apply().map_err(std::io::Error::other)?;

    let metrics = std::sync::Arc::new(taskweave::metrics::ServerMetrics::new());
    let access_log::Chosen { log, writer } = access_log::from_args(&args, metrics);
    let server = Server::builder()
        .max_connections(args.get("max-connections", 20_000))
        .reuse_port(args.get("reuse-port", false))
        .access_log(log)
        .serve(("127.0.0.1", port), Echo, |task, _series| {
            let payload = task.request().payload().clone();
            task.response().set_payload(payload);
        })?;
    eprintln!("echo_server listening on {}", server.local_addr());
    // Ctrl-C or SIGTERM: finish what is in flight, then flush the log.
    taskweave::os::wait_for_shutdown_signal()?;
    eprintln!("echo_server: shutting down");
    server.shutdown(std::time::Duration::from_secs(5));
    if let Some(w) = writer {
        w.flush()?;
    }
    Ok(())
}
