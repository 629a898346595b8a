//! An echo server over the length-prefixed protocol in `common/echo_proto.rs`.
//!
//! `cargo run --release --example echo_server -- --port 9000 [--handler-threads 0]`

#[path = "common/args.rs"]
mod args;
#[path = "common/echo_proto.rs"]
mod echo_proto;

use echo_proto::Echo;
use taskweave::protocol::Server;
use taskweave::Settings;

fn main() -> std::io::Result<()> {
    let args = args::Args::parse();
    let port: u16 = args.get("port", 9000);
    let mut settings = Settings::default();
    settings.poller_threads = args.get("pollers", settings.poller_threads);
    settings.handler_threads = args.get("handler-threads", settings.handler_threads);
    settings.apply().map_err(std::io::Error::other)?;

    let server = Server::builder()
        .max_connections(args.get("max-connections", 20_000))
        .serve(([127, 0, 0, 1], port).into(), Echo, |task, _series| {
            let payload = task.request().payload().clone();
            task.response().set_payload(payload);
        })?;
    eprintln!("echo_server listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
