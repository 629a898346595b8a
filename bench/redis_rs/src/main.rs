//! The SET/GET load of `redis_task --bench`, on redis-rs: C tokio tasks share
//! one multiplexed connection (redis-rs's recommended async connection),
//! each doing its share of N SET/GET pairs one request after another, and
//! every GET is checked against what its SET wrote.
//!
//! ```text
//! redis_rs_bench [--url redis://127.0.0.1:6379] --bench N [--clients C]
//!                [--pipeline P] [--threads T] [--keys client|unique]
//! ```
//!
//! `--pipeline 1` (the default) awaits each command on its own (the
//! multiplexed connection pipelines the tasks' commands); `--pipeline P`
//! (even) sends P/2 SET+GET pairs per `redis::pipe()`. The runtime is tokio's
//! current-thread one (the whole client on one thread, as `redis_task
//! --bench` runs on one poller thread) unless `--threads T` asks for a
//! multi-thread runtime. Prints the same line as `redis_task --bench`.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, Value};
use std::time::{Duration, Instant};

struct Opts {
    url: String,
    pairs: u64,
    clients: u64,
    pipeline: u64,
    threads: usize,
    /// Every pair a new key, rather than one key per task.
    unique_keys: bool,
}

fn usage(why: &str) -> ! {
    eprintln!("redis_rs_bench: {why}");
    eprintln!(
        "usage: redis_rs_bench [--url redis://127.0.0.1:6379] --bench N [--clients C] \
         [--pipeline P] [--threads T] [--keys client|unique]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        url: "redis://127.0.0.1:6379".into(),
        pairs: 0,
        clients: 50,
        pipeline: 1,
        threads: 0,
        unique_keys: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{name} needs a value")));
        let num = || -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{name}: not a number: {value}")))
        };
        match name.as_str() {
            "--url" => o.url = value.clone(),
            "--bench" => o.pairs = num(),
            "--clients" => o.clients = num().max(1),
            "--pipeline" => o.pipeline = num(),
            "--threads" => o.threads = num() as usize,
            "--keys" => {
                o.unique_keys = match value.as_str() {
                    "client" => false,
                    "unique" => true,
                    _ => usage("--keys: client or unique"),
                }
            }
            _ => usage(&format!("unknown option {name}")),
        }
    }
    if o.pipeline == 0 || (o.pipeline > 1 && o.pipeline % 2 == 1) {
        usage("--pipeline must be 1 or even (SET+GET pairs)");
    }
    o
}

/// Pair `n`'s key: the task's own (`key:client:C`, overwritten as
/// redis-benchmark overwrites one key), or a new one per pair.
fn key(own: &Option<String>, n: u64) -> String {
    match own {
        Some(k) => k.clone(),
        None => format!("key:{n:012}"),
    }
}

fn value(n: u64) -> String {
    format!("v{n}")
}

/// What one task saw.
#[derive(Default)]
struct Share {
    own: Option<String>,
    latencies_ns: Vec<u64>,
    mismatches: u64,
    errors: u64,
    first_failure: Option<String>,
}

impl Share {
    fn record(&mut self, started: Instant) {
        self.latencies_ns.push(started.elapsed().as_nanos() as u64);
    }

    fn fail(&mut self, mismatch: bool, what: String) {
        if mismatch {
            self.mismatches += 1;
        } else {
            self.errors += 1;
        }
        self.first_failure.get_or_insert(what);
    }

    /// Checks a SET's reply, or a GET's against pair `n`'s value.
    fn check(&mut self, n: u64, is_get: bool, got: &Value) {
        match (got, is_get) {
            (Value::Okay, false) => {}
            (Value::BulkString(b), true) if b[..] == *value(n).as_bytes() => {}
            (v, _) => self.fail(
                !matches!(v, Value::ServerError(_)),
                format!(
                    "{} {}: got {v:?}",
                    if is_get { "GET" } else { "SET" },
                    key(&self.own, n)
                ),
            ),
        }
    }
}

/// Pairs `first..end`, one command per await.
async fn one_by_one(
    mut conn: MultiplexedConnection,
    own: Option<String>,
    first: u64,
    end: u64,
) -> Share {
    let mut share = Share {
        own: own.clone(),
        latencies_ns: Vec::with_capacity(2 * (end - first) as usize),
        ..Share::default()
    };
    for n in first..end {
        let started = Instant::now();
        match conn.set::<_, _, Value>(key(&own, n), value(n)).await {
            Ok(v) => share.check(n, false, &v),
            Err(e) => share.fail(false, format!("SET {}: {e}", key(&own, n))),
        }
        share.record(started);
        let started = Instant::now();
        match conn.get::<_, Value>(key(&own, n)).await {
            Ok(v) => share.check(n, true, &v),
            Err(e) => share.fail(false, format!("GET {}: {e}", key(&own, n))),
        }
        share.record(started);
    }
    share
}

/// Pairs `first..end`, `per` pairs to a pipeline.
async fn pipelined(
    mut conn: MultiplexedConnection,
    own: Option<String>,
    first: u64,
    end: u64,
    per: u64,
) -> Share {
    let mut share = Share {
        own: own.clone(),
        latencies_ns: Vec::with_capacity((end - first).div_ceil(per) as usize),
        ..Share::default()
    };
    let mut from = first;
    while from < end {
        let to = (from + per).min(end);
        let started = Instant::now();
        let mut pipe = redis::pipe();
        for n in from..to {
            pipe.set(key(&own, n), value(n)).get(key(&own, n));
        }
        match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Ok(values) if values.len() == 2 * (to - from) as usize => {
                for (i, n) in (from..to).enumerate() {
                    share.check(n, false, &values[2 * i]);
                    share.check(n, true, &values[2 * i + 1]);
                }
            }
            Ok(values) => share.fail(
                false,
                format!("{} replies to {}", values.len(), 2 * (to - from)),
            ),
            Err(e) => share.fail(false, format!("pipeline from {}: {e}", key(&own, from))),
        }
        share.record(started);
        from = to;
    }
    share
}

/// This process's CPU time (user + system), from `/proc/self/stat` (in
/// clock ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the line; 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n - 1) as f64 * p).round() as usize] as f64 / 1e6,
    }
}

async fn run(o: &Opts) -> i32 {
    let client = redis::Client::open(o.url.as_str()).unwrap_or_else(|e| usage(&e.to_string()));
    // Timeouts like taskweave's Client (redis-rs's default reply timeout is 0.5 s).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let conn = match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("redis_rs_bench: connect failed: {e}");
            return 1;
        }
    };
    let (per, extra) = (o.pairs / o.clients, o.pairs % o.clients);
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut next = 0;
    for c in 0..o.clients {
        let count = per + u64::from(c < extra);
        if count == 0 {
            continue;
        }
        let (first, end, conn) = (next, next + count, conn.clone());
        let own = (!o.unique_keys).then(|| format!("key:client:{c}"));
        next = end;
        tasks.push(if o.pipeline == 1 {
            tokio::spawn(one_by_one(conn, own, first, end))
        } else {
            tokio::spawn(pipelined(conn, own, first, end, o.pipeline / 2))
        });
    }
    let mut shares = Vec::new();
    for t in tasks {
        shares.push(t.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;

    let mut lat: Vec<u64> = shares
        .iter()
        .flat_map(|s| s.latencies_ns.iter().copied())
        .collect();
    lat.sort_unstable();
    let mismatches: u64 = shares.iter().map(|s| s.mismatches).sum();
    let errors: u64 = shares.iter().map(|s| s.errors).sum();
    let ops = 2 * o.pairs;
    println!(
        "redis-rs SET+GET: {ops} ops in {secs:.3} s, {:.0} ops/s; {} clients, pipeline {}, \
         conns 1; latency p50 {:.3} ms p99 {:.3} ms max {:.3} ms; cpu {cpu:.2} s, {:.2} us/op; \
         mismatches {mismatches}, errors {errors}",
        ops as f64 / secs.max(1e-9),
        o.clients,
        o.pipeline,
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
        cpu * 1e6 / ops.max(1) as f64,
    );
    for why in shares
        .iter()
        .filter_map(|s| s.first_failure.as_ref())
        .take(5)
    {
        eprintln!("redis_rs_bench: {why}");
    }
    i32::from(mismatches + errors > 0)
}

fn main() {
    let o = parse_opts();
    let rt = if o.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(o.threads)
            .enable_all()
            .build()
    };
    let code = rt.expect("a tokio runtime").block_on(run(&o));
    std::process::exit(code);
}
