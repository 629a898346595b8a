//! Sends frames to an echo server with client tasks and checks every reply.
//!
//! `cargo run --release --example echo_client -- --port 9000 --conns 50 --requests 10000`
//! Runs `--conns` series side by side in a parallel; each sends `--requests /
//! --conns` frames one after another over the pooled connections.

#[path = "common/args.rs"]
mod args;
#[path = "common/echo_proto.rs"]
mod echo_proto;

use echo_proto::{Echo, Frame};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use taskweave::comm::ClientConfig;
use taskweave::task::ClientTask;
use taskweave::{Parallel, Series, WaitGroup};

fn send_next(
    proto: Arc<Echo>,
    config: Arc<ClientConfig>,
    addr: std::net::SocketAddr,
    left: u64,
    ok: Arc<AtomicU64>,
) -> ClientTask<Echo> {
    let payload = format!("frame-{left}");
    ClientTask::new(
        proto.clone(),
        addr,
        Frame::new(payload.clone()),
        move |t, s: &mut Series| {
            match t.result() {
                Ok(resp) if resp.payload() == payload.as_bytes() => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => eprintln!("mismatched echo"),
                Err(e) => eprintln!("request failed: {e}"),
            }
            if left > 1 {
                s.push_back(
                    send_next(proto, config.clone(), addr, left - 1, ok).with_config(config),
                );
            }
        },
    )
}

fn main() {
    let args = args::Args::parse();
    let port: u16 = args.get("port", 9000);
    let conns: u64 = args.get("conns", 50);
    let requests: u64 = args.get("requests", 10_000);
    let addr = ([127, 0, 0, 1], port).into();
    let proto = Arc::new(Echo);
    let config = Arc::new(ClientConfig::default().max_per_target(conns as usize));
    let ok = Arc::new(AtomicU64::new(0));
    let per = (requests / conns).max(1);

    let mut par = Parallel::new(|_, _| {});
    for _ in 0..conns {
        let task = send_next(proto.clone(), config.clone(), addr, per, ok.clone());
        par.add(Series::new(task.with_config(config.clone())));
    }
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let start = Instant::now();
    Series::new(par).on_done(move |_| done.done()).start();
    wg.wait();
    let secs = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        "{n}/{} echoes ok in {secs:.2}s ({:.0} req/s)",
        per * conns,
        n as f64 / secs
    );
    if n != per * conns {
        std::process::exit(1);
    }
}
