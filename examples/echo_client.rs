//! Sends frames to an echo server with client tasks and checks every reply.
//!
//! `cargo run --release --example echo_client -- --port 9000 --conns 50 --requests 10000
//!  [--pipeline N]`
//!
//! Runs `--conns × --pipeline` series side by side in a parallel, each sending
//! its share of `--requests` frames one after another, every payload unique.
//! The pool holds at most `--conns` connections to the server, so with
//! `--pipeline N` each connection carries up to N requests at once (the echo
//! protocol pipelines; replies are matched in order). Prints, at the end,
//! throughput and the latency of the echoes that came back right (from each
//! task's creation to its callback): p50, p90, p99 and max, in ms. Exits 1
//! if any reply is missing or wrong.

#[path = "common/args.rs"]
mod args;
#[path = "common/echo_proto.rs"]
mod echo_proto;

use echo_proto::{Echo, Frame};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskweave::comm::ClientConfig;
use taskweave::task::ClientTask;
use taskweave::{Parallel, Series, WaitGroup};

/// What every series shares: the target, and the outcome of each request.
struct Run {
    proto: Arc<Echo>,
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    latencies: Mutex<Vec<Duration>>,
    failures: Mutex<Vec<String>>,
}

/// Sends request `i` of series `s`, then the next one from its callback.
fn send(run: Arc<Run>, s: u64, i: u64, per: u64) -> ClientTask<Echo> {
    let payload = format!("series-{s}-frame-{i}");
    let started = Instant::now();
    let (proto, config, addr) = (run.proto.clone(), run.config.clone(), run.addr);
    ClientTask::new(
        proto,
        addr,
        Frame::new(payload.clone()),
        move |t, series: &mut Series| {
            match t.result() {
                Ok(resp) if resp.payload() == payload.as_bytes() => {
                    run.latencies.lock().unwrap().push(started.elapsed());
                }
                Ok(resp) => run.failures.lock().unwrap().push(format!(
                    "{payload}: got {:?}",
                    String::from_utf8_lossy(resp.payload())
                )),
                Err(e) => run.failures.lock().unwrap().push(format!("{payload}: {e}")),
            }
            if i + 1 < per {
                series.push_back(send(run, s, i + 1, per));
            }
        },
    )
    .with_config(config)
}

/// The `p`-th percentile (0 < p <= 100) of `sorted`, by nearest rank: the
/// smallest latency that at least p% of the requests did not exceed.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// A latency in milliseconds, to the microsecond.
fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The command line this example accepts.
const SPEC: args::Spec = args::Spec {
    usage: "usage: echo_client [--port 9000] [--conns 50] [--requests 10000] [--pipeline N]",
    options: &["port", "conns", "requests", "pipeline"],
    switches: &[],
};

fn main() {
    let args = args::Args::parse(&SPEC);
    let port: u16 = args.get("port", 9000);
    let conns: u64 = args.get("conns", 50).max(1);
    let pipeline: u64 = args
        .get("pipeline", 1)
        .clamp(1, echo_proto::PIPELINE_MAX as u64);
    let requests: u64 = args.get("requests", 10_000);
    let series = conns * pipeline;
    let per = (requests / series).max(1);
    let run = Arc::new(Run {
        proto: Arc::new(Echo),
        config: Arc::new(
            ClientConfig::default()
                .max_per_target(conns as usize)
                .max_waiting(series as usize),
        ),
        addr: ([127, 0, 0, 1], port).into(),
        latencies: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
    });

    let mut par = Parallel::new(|_, _| {});
    for s in 0..series {
        par.add(Series::new(send(run.clone(), s, 0, per)));
    }
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let start = Instant::now();
    Series::new(par).on_done(move |_| done.done()).start();
    wg.wait();
    let secs = start.elapsed().as_secs_f64();

    let mut lat = run.latencies.lock().unwrap().clone();
    lat.sort();
    let failures = run.failures.lock().unwrap();
    let ok = lat.len() as u64;
    println!(
        "{ok}/{} echoes ok over {conns} connections, {pipeline} in flight each, in {secs:.2}s \
         ({:.0} req/s); latency p50 {} p90 {} p99 {} max {}",
        per * series,
        ok as f64 / secs,
        ms(percentile(&lat, 50)),
        ms(percentile(&lat, 90)),
        ms(percentile(&lat, 99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
    for f in failures.iter().take(5) {
        eprintln!("failed: {f}");
    }
    if ok != per * series {
        std::process::exit(1);
    }
}
