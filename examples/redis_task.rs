//! A small redis-cli on `redis::Client`, and a SET/GET load generator.
//!
//! ```text
//! redis_task [URL] [--resp3] CMD [ARG...]
//! redis_task [URL] [--resp3] --bench N [--clients C] [--pipeline P] [--conns K]
//!            [--keys client|unique] [--pollers T] [--handler-threads H]
//! ```
//!
//! URL defaults to `redis://127.0.0.1:6379`. A command prints its reply the
//! way redis-cli prints one on a terminal (pushes that arrive before it too)
//! and exits 1 on an error reply or a failure, 2 on bad usage. Options come
//! before the command; everything from the command name on is the command.
//!
//! `--bench N` runs N SET/GET pairs with unique values from C series side by
//! side (default 50), each doing its share one request after another, and
//! checks that every GET returns what its SET wrote. Each series overwrites
//! a key of its own (`key:client:7`), as redis-benchmark overwrites one key;
//! `--keys unique` gives every pair a new key (`key:000000000042`), so each
//! SET inserts and the server works harder. `--pipeline 1` (the default) sends one command per task and lets
//! the client pipeline them onto its connections; `--pipeline P` (even) sends
//! P/2 SET+GET pairs per `Request`. `--conns K` caps the connections
//! (`max_per_target`, default the client's 4). The bench runs the callbacks
//! inline on one poller thread unless told otherwise. It prints ops/s
//! (every SET and every GET is one op, as redis-benchmark counts), latency
//! per request (per command, or per pipeline) and the CPU it used; it exits
//! 1 on any mismatch or error.

#[path = "common/redis_fmt.rs"]
mod redis_fmt;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskweave::comm::ConnConfig;
use taskweave::redis::{Client, Request, Url, Value};
use taskweave::{Parallel, Series, Settings, WaitGroup};

const USAGE: &str = "usage: redis_task [redis://HOST:PORT[/DB]] [--resp3] CMD [ARG...]\n       \
    redis_task [URL] [--resp3] --bench N [--clients C] [--pipeline P] [--conns K] \
    [--keys client|unique] [--pollers T] [--handler-threads H]";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Cli {
    url: Url,
    command: Vec<Vec<u8>>,
    bench: Option<Bench>,
}

/// The load `--bench` runs.
#[derive(Debug, PartialEq)]
struct Bench {
    pairs: u64,
    clients: u64,
    pipeline: u64,
    conns: Option<usize>,
    /// Every pair a new key, rather than one key per series.
    unique_keys: bool,
    pollers: usize,
    handler_threads: usize,
}

/// Reads the arguments (without the program name). Options are read until
/// the command name; a first argument starting with `redis://` is the URL.
fn parse_cli(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    let mut url = "redis://127.0.0.1:6379".to_string();
    let mut resp3 = false;
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut command = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_str().unwrap_or("");
        match text {
            "--" => {
                command.extend(it.by_ref().map(OsString::into_vec));
                break;
            }
            "--resp3" => resp3 = true,
            "-h" | "--help" => return Err(String::new()),
            t if t.starts_with("--") => {
                let name = &t[2..];
                if ![
                    "bench",
                    "clients",
                    "pipeline",
                    "conns",
                    "keys",
                    "pollers",
                    "handler-threads",
                ]
                .contains(&name)
                {
                    return Err(format!("unknown option {t}"));
                }
                let value = it.next().ok_or(format!("{t} needs a value"))?;
                opts.push((name.to_string(), value.to_string_lossy().into_owned()));
            }
            t if t.contains("://") && command.is_empty() && opts.is_empty() => {
                url = t.to_string();
            }
            _ => {
                command.push(arg.into_vec());
                command.extend(it.by_ref().map(OsString::into_vec));
                break;
            }
        }
    }
    let url = url
        .parse::<Url>()
        .map_err(|e| e.to_string())?
        .with_resp3(resp3);
    let get = |name: &str, default: u64| -> Result<u64, String> {
        match opts.iter().rev().find(|(n, _)| n == name) {
            None => Ok(default),
            Some((_, v)) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v}")),
        }
    };
    let bench = if opts.iter().any(|(n, _)| n == "bench") {
        if !command.is_empty() {
            return Err("--bench takes no command".into());
        }
        let pipeline = get("pipeline", 1)?;
        if pipeline == 0 || (pipeline > 1 && pipeline % 2 == 1) {
            return Err("--pipeline must be 1 or even (SET+GET pairs)".into());
        }
        let conns = opts.iter().any(|(n, _)| n == "conns");
        let unique_keys = match opts.iter().rev().find(|(n, _)| n == "keys") {
            None => false,
            Some((_, v)) if v == "client" => false,
            Some((_, v)) if v == "unique" => true,
            Some((_, v)) => return Err(format!("--keys: client or unique, not {v}")),
        };
        Some(Bench {
            pairs: get("bench", 0)?,
            clients: get("clients", 50)?.max(1),
            pipeline,
            conns: conns
                .then(|| get("conns", 4).map(|k| k.max(1) as usize))
                .transpose()?,
            unique_keys,
            pollers: get("pollers", 1)?.max(1) as usize,
            handler_threads: get("handler-threads", 0)? as usize,
        })
    } else {
        if let Some((n, _)) = opts.first() {
            return Err(format!("--{n} goes with --bench"));
        }
        if command.is_empty() {
            return Err("no command".into());
        }
        None
    };
    Ok(Cli {
        url,
        command,
        bench,
    })
}

fn main() {
    let cli = match parse_cli(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("redis_task: {why}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let client = Client::from_url(cli.url);
    let code = match cli.bench {
        Some(bench) => run_bench(client, &bench),
        None => run_command(&client, cli.command),
    };
    std::process::exit(code);
}

/// Sends one command and prints its reply; the exit status.
fn run_command(client: &Client, command: Vec<Vec<u8>>) -> i32 {
    let code = Arc::new(AtomicI32::new(1));
    let wg = WaitGroup::new(1);
    let (status, done) = (code.clone(), wg.clone());
    let task = client
        .command(command, move |t, _| match t.value() {
            Ok(v) => {
                print!("{}", redis_fmt::format_reply(v));
                status.store(i32::from(v.is_error()), Ordering::SeqCst);
            }
            Err(e) => eprintln!("redis_task: {e}"),
        })
        // Pushes (RESP3) that arrive before the reply, as redis-cli shows them.
        .on_push(|push| {
            for v in push.values() {
                print!("{}", redis_fmt::format_reply(v));
            }
        });
    Series::new(task).on_done(move |_| done.done()).start();
    wg.wait();
    code.load(Ordering::SeqCst)
}

/// One series' share of the bench: pairs `next..end`, and what it saw.
struct Share {
    next: u64,
    end: u64,
    /// SET+GET pairs per request (0: one command per task).
    pairs_per_request: u64,
    /// The series' own key, or `None` for a new key per pair.
    own_key: Option<String>,
    latencies_ns: Vec<u64>,
    mismatches: u64,
    errors: u64,
    first_failure: Option<String>,
}

impl Share {
    /// Pair `n`'s key.
    fn key(&self, n: u64) -> String {
        match &self.own_key {
            Some(k) => k.clone(),
            None => format!("key:{n:012}"),
        }
    }

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
    fn check(&mut self, n: u64, is_get: bool, got: Result<&Value, String>) {
        match (got, is_get) {
            (Ok(Value::SimpleString(ok)), false) if ok == "OK" => {}
            (Ok(Value::BulkString(b)), true) if b[..] == *value(n).as_bytes() => {}
            (Ok(v), _) => self.fail(
                !v.is_error(),
                format!(
                    "{} {}: got {v:?}",
                    if is_get { "GET" } else { "SET" },
                    self.key(n)
                ),
            ),
            (Err(e), _) => self.fail(false, format!("{}: {e}", self.key(n))),
        }
    }
}

fn value(n: u64) -> String {
    format!("v{n}")
}

/// Sends the series' next request: SET n, whose callback sends GET n, or a
/// pipeline of SET+GET pairs.
fn send_next(client: &Client, series: &mut Series) {
    let share = series.context_mut::<Share>();
    if share.next >= share.end {
        return;
    }
    let (c, started) = (client.clone(), Instant::now());
    if share.pairs_per_request == 0 {
        let n = share.next;
        let key = share.key(n);
        series.push_back(client.command(["SET".into(), key, value(n)], move |t, s| {
            let share = s.context_mut::<Share>();
            share.record(started);
            share.check(n, false, t.value().map_err(|e| e.to_string()));
            send_get(&c, s, n);
        }));
        return;
    }
    let (first, end) = (
        share.next,
        (share.next + share.pairs_per_request).min(share.end),
    );
    let mut req = Request::new();
    for n in first..end {
        let key = share.key(n);
        req.add(["SET", &key, &value(n)]);
        req.add(["GET", &key]);
    }
    series.push_back(client.pipeline(req, move |t, s| {
        let share = s.context_mut::<Share>();
        share.record(started);
        match t.values() {
            Ok(values) => {
                for (i, n) in (first..end).enumerate() {
                    let reply = |j: usize| values.get(j).ok_or_else(|| "no reply".to_string());
                    share.check(n, false, reply(2 * i));
                    share.check(n, true, reply(2 * i + 1));
                }
            }
            Err(e) => {
                let what = format!("pipeline from {}: {e}", share.key(first));
                share.fail(false, what);
            }
        }
        share.next = end;
        send_next(&c, s);
    }));
}

fn send_get(client: &Client, series: &mut Series, n: u64) {
    let (c, started) = (client.clone(), Instant::now());
    let key = series.context_mut::<Share>().key(n);
    series.push_back(client.command(["GET".into(), key], move |t, s| {
        let share = s.context_mut::<Share>();
        share.record(started);
        share.check(n, true, t.value().map_err(|e| e.to_string()));
        share.next = n + 1;
        send_next(&c, s);
    }));
}

/// What a bench run measured.
struct Outcome {
    /// SETs plus GETs sent.
    ops: u64,
    secs: f64,
    cpu_secs: f64,
    /// Per request, sorted.
    latencies_ns: Vec<u64>,
    mismatches: u64,
    errors: u64,
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n - 1) as f64 * p).round() as usize] as f64 / 1e6,
    }
}

/// The result line (`bench/redis_rs` prints the same one, and
/// `scripts/bench_redis.sh` reads its `ops/s`).
fn summary(label: &str, o: &Outcome, clients: u64, pipeline: u64, conns: &str) -> String {
    let lat = &o.latencies_ns;
    format!(
        "{label} SET+GET: {} ops in {:.3} s, {:.0} ops/s; {clients} clients, pipeline {pipeline}, \
         conns {conns}; latency p50 {:.3} ms p99 {:.3} ms max {:.3} ms; cpu {:.2} s, {:.2} us/op; \
         mismatches {}, errors {}",
        o.ops,
        o.secs,
        o.ops as f64 / o.secs.max(1e-9),
        percentile_ms(lat, 0.50),
        percentile_ms(lat, 0.99),
        percentile_ms(lat, 1.0),
        o.cpu_secs,
        o.cpu_secs * 1e6 / o.ops.max(1) as f64,
        o.mismatches,
        o.errors,
    )
}

/// Runs the SET/GET load; the exit status.
fn run_bench(client: Client, b: &Bench) -> i32 {
    let settings = Settings {
        poller_threads: b.pollers,
        handler_threads: b.handler_threads,
        ..Settings::default()
    };
    if settings.apply().is_err() {
        eprintln!("redis_task: the runtime had started; using its settings");
    }
    let client = match b.conns {
        Some(k) => client.with_config(Arc::new(
            Client::config(ConnConfig::default()).max_per_target(k),
        )),
        None => client,
    };
    // One round trip first: is the server there?
    let ping = run_command_quiet(&client);
    if let Err(e) = ping {
        eprintln!("redis_task: PING failed: {e}");
        return 1;
    }

    let totals = Arc::new(Mutex::new(Vec::<Share>::new()));
    let mut par = Parallel::new(|_, _| {});
    let (per, extra) = (b.pairs / b.clients, b.pairs % b.clients);
    let mut next = 0;
    for s in 0..b.clients {
        let count = per + u64::from(s < extra);
        if count == 0 {
            continue;
        }
        let pairs_per_request = if b.pipeline == 1 { 0 } else { b.pipeline / 2 };
        let requests = if b.pipeline == 1 {
            2 * count
        } else {
            count.div_ceil(b.pipeline / 2)
        };
        let mut series = Series::empty();
        series.set_context(Share {
            next,
            end: next + count,
            pairs_per_request,
            own_key: (!b.unique_keys).then(|| format!("key:client:{s}")),
            latencies_ns: Vec::with_capacity(requests as usize),
            mismatches: 0,
            errors: 0,
            first_failure: None,
        });
        next += count;
        send_next(&client, &mut series);
        let totals = totals.clone();
        series.set_on_done(move |s| {
            if let Some(share) = s.take_context::<Share>() {
                totals.lock().unwrap().push(share);
            }
        });
        par.add(series);
    }
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let cpu0 = taskweave::os::process_cpu_time().unwrap_or_default();
    let start = Instant::now();
    Series::new(par).on_done(move |_| done.done()).start();
    wg.wait();
    let secs = start.elapsed().as_secs_f64();
    let cpu = taskweave::os::process_cpu_time().unwrap_or_default() - cpu0;

    let shares = std::mem::take(&mut *totals.lock().unwrap());
    let mut outcome = Outcome {
        ops: 2 * b.pairs,
        secs,
        cpu_secs: cpu.as_secs_f64(),
        latencies_ns: Vec::new(),
        mismatches: 0,
        errors: 0,
    };
    for share in &shares {
        outcome.latencies_ns.extend_from_slice(&share.latencies_ns);
        outcome.mismatches += share.mismatches;
        outcome.errors += share.errors;
    }
    outcome.latencies_ns.sort_unstable();
    let conns = b.conns.map_or("4 (default)".to_string(), |k| k.to_string());
    println!(
        "{}",
        summary("redis_task", &outcome, b.clients, b.pipeline, &conns)
    );
    for why in shares
        .iter()
        .filter_map(|s| s.first_failure.as_ref())
        .take(5)
    {
        eprintln!("redis_task: {why}");
    }
    i32::from(outcome.mismatches + outcome.errors > 0)
}

/// A PING through `client`, waited for.
fn run_command_quiet(client: &Client) -> Result<(), String> {
    let result = Arc::new(Mutex::new(Err("no reply".to_string())));
    let wg = WaitGroup::new(1);
    let (slot, done) = (result.clone(), wg.clone());
    let task = client.command(["PING"], move |t, _| {
        *slot.lock().unwrap() = match t.value() {
            Ok(v) if !v.is_error() => Ok(()),
            Ok(v) => Err(redis_fmt::format_reply(v).trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        };
    });
    Series::new(task).on_done(move |_| done.done()).start();
    if !wg.wait_timeout(Duration::from_secs(15)) {
        return Err("no reply in 15 s".into());
    }
    let r = result.lock().unwrap().clone();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, String> {
        parse_cli(args.iter().map(OsString::from))
    }

    #[test]
    fn a_command_with_or_without_a_url() {
        let c = cli(&["GET", "k"]).unwrap();
        assert_eq!(c.url.to_string(), "redis://127.0.0.1:6379");
        assert_eq!(c.command, vec![b"GET".to_vec(), b"k".to_vec()]);
        let c = cli(&["redis://127.0.0.1:7000/2", "--resp3", "HELLO"]).unwrap();
        assert_eq!(c.url.to_string(), "redis://127.0.0.1:7000/2?protocol=3");
        // After the command name, everything is an argument.
        let c = cli(&["SET", "k", "--resp3"]).unwrap();
        assert_eq!(c.command[2], b"--resp3".to_vec());
        assert!(!c.url.resp3());
        let c = cli(&["--", "--weird"]).unwrap();
        assert_eq!(c.command, vec![b"--weird".to_vec()]);
    }

    #[test]
    fn bench_options() {
        let c = cli(&["--bench", "1000", "--clients", "8", "--pipeline", "16"]).unwrap();
        let b = c.bench.unwrap();
        assert_eq!(
            (b.pairs, b.clients, b.pipeline, b.conns),
            (1000, 8, 16, None)
        );
        assert_eq!((b.pollers, b.handler_threads), (1, 0));
        let b = cli(&["redis://h:1", "--bench", "5", "--conns", "1"])
            .unwrap()
            .bench
            .unwrap();
        assert_eq!((b.clients, b.pipeline, b.conns), (50, 1, Some(1)));
    }

    #[test]
    fn bad_usage() {
        for args in [
            &[][..],
            &["--bench"],
            &["--bench", "x"],
            &["--bench", "10", "--pipeline", "3"],
            &["--bench", "10", "GET", "k"],
            &["--clients", "3", "GET", "k"],
            &["--nope", "GET"],
            &["http://h", "GET"],
        ] {
            assert!(cli(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_summary_line() {
        let o = Outcome {
            ops: 200_000,
            secs: 2.0,
            cpu_secs: 1.0,
            latencies_ns: (1..=100).map(|i| i * 10_000).collect(),
            mismatches: 0,
            errors: 0,
        };
        assert_eq!(
            summary("redis_task", &o, 50, 1, "4"),
            "redis_task SET+GET: 200000 ops in 2.000 s, 100000 ops/s; 50 clients, pipeline 1, \
             conns 4; latency p50 0.510 ms p99 0.990 ms max 1.000 ms; cpu 1.00 s, 5.00 us/op; \
             mismatches 0, errors 0"
        );
    }
}
