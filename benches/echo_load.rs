//! Core-runtime benchmark: the echo server's CPU cost per request against a C
//! floor, and its memory per idle connection. See docs/performance.md,
//! "Core runtime: echo".
//!
//! ```text
//! cargo bench --bench echo_load -- --all                # load matrix + idle memory
//! cargo bench --bench echo_load                         # load matrix only
//! cargo bench --bench echo_load -- --idle 10000         # idle memory only
//! cargo bench --bench echo_load -- --serve --port 9000 --handler-threads 0 --pollers 1
//! ```
//!
//! Load options: `--duration S` (10), `--warmup S` (1), `--rounds R` (2),
//! `--conns 50,1000`, `--floor-src PATH`. Idle options: `--idle N` (10,000),
//! `--settle S` (3), `--connect-only` (no request on the idle connections).
//!
//! Processes: the bench re-executes itself under `taskset -c 1` (it is the load
//! generator), and starts every server under `taskset -c 0`: our echo server (this
//! binary with `--serve`) or the floor (`floor_server.c` built with `gcc -O2`).
//! The load generator is one thread on `mio`: a closed loop over N connections,
//! each sending one request and waiting for the whole reply before the next, like
//! wrk. Server CPU time comes from `/proc/PID/stat` (utime + stime) read at the
//! start and end of the measured window. No `unsafe`, 127.0.0.x only, and every
//! loop is bounded by a deadline.

#[path = "../examples/common/args.rs"]
mod args;
#[path = "../examples/common/echo_proto.rs"]
mod echo_proto;

use args::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the environment of the re-executed, pinned load generator.
const PINNED_ENV: &str = "ECHO_LOAD_PINNED";
/// Echo payload per request (the size of the floor's `Hello, World!` body).
const PAYLOAD: &[u8] = b"Hello, World!";
/// What the load generator sends to the floor.
const HTTP_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// The floor's fixed response (`RESP` in floor_server.c).
const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";
/// Connections per load run are opened within this time.
const CONNECT_WITHIN: Duration = Duration::from_secs(15);
/// A load run with no completed request for this long fails.
const STALL: Duration = Duration::from_secs(5);
/// Opening the idle connections must finish within this time.
const IDLE_OPEN_WITHIN: Duration = Duration::from_secs(120);
/// Connects and requests in flight while opening idle connections.
const IDLE_INFLIGHT: usize = 256;
/// Source addresses 127.0.0.1 ..= 127.0.0.SOURCES for the idle connections.
const SOURCES: usize = 4;

fn main() {
    let args = Args::parse();
    let res = if args.raw("serve").is_some() {
        serve(&args)
    } else if std::env::var_os(PINNED_ENV).is_none() {
        reexec_pinned()
    } else {
        orchestrate(&args)
    };
    if let Err(e) = res {
        eprintln!("echo_load: {e}");
        std::process::exit(1);
    }
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Runs the whole bench again under `taskset -c 1`, with the same arguments.
fn reexec_pinned() -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let status = Command::new("taskset")
        .arg("-c")
        .arg("1")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .status()?;
    std::process::exit(status.code().unwrap_or(1));
}

// ---------------------------------------------------------------------------
// Server mode
// ---------------------------------------------------------------------------

/// The echo server, as examples/echo_server.rs, plus `READY <port>` on stdout.
/// Started by the bench (`--exit-on-eof`), it exits when its stdin reaches end of
/// file: the bench closed it, or died. Otherwise it runs until killed.
fn serve(args: &Args) -> io::Result<()> {
    use echo_proto::Echo;
    use taskweave::protocol::Server;
    use taskweave::Settings;

    // Clamped to the hard limit: 20,000 connections need ~20,000 descriptors.
    taskweave::sys::set_nofile_limit(u64::MAX)?;
    let port: u16 = args.get("port", 0);
    Settings {
        poller_threads: args.get("pollers", 1),
        handler_threads: args.get("handler-threads", 0),
        ..Settings::default()
    }
    .apply()
    .map_err(io::Error::other)?;

    let server = Server::builder()
        .max_connections(args.get("max-connections", 20_000))
        .serve(([127, 0, 0, 1], port).into(), Echo, |task, _series| {
            let payload = task.request().payload().clone();
            task.response().set_payload(payload);
        })?;
    let mut out = io::stdout().lock();
    writeln!(out, "READY {}", server.local_addr().port())?;
    out.flush()?;
    drop(out);
    if args.raw("exit-on-eof").is_none() {
        loop {
            std::thread::park();
        }
    }
    let mut sink = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut sink);
    Ok(())
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// A server child process pinned to core 0; stopped when dropped.
struct ServerProc {
    child: Child,
    pid: u32,
    port: u16,
}

impl ServerProc {
    /// Our echo server (`--serve`), one poller, `handlers` handler threads.
    fn ours(handlers: usize) -> io::Result<ServerProc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(exe)
            .args(["--serve", "--exit-on-eof", "--port", "0", "--pollers", "1"])
            .args(["--handler-threads", &handlers.to_string()])
            .args(["--max-connections", "20000"])
            .env_remove(PINNED_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| other("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut proc = ServerProc {
            child,
            pid,
            port: 0,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| other("echo server did not report READY"))?;
        proc.port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| other(format!("unexpected server output {line:?}")))?;
        Ok(proc)
    }

    /// The floor (a built floor_server.c) on a free port.
    fn floor(binary: &Path) -> io::Result<ServerProc> {
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(binary)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let proc = ServerProc {
            pid: child.id(),
            child,
            port,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                return Err(other("floor server did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(proc)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Our server exits on stdin EOF; the floor has to be killed.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Field 2 (comm) may contain spaces; fields after it start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| other("bad /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| other("bad /proc stat field"))
    };
    Ok(field(14)? + field(15)?)
}

/// Context switches (voluntary + involuntary) of every thread of `pid`.
fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = std::fs::read_to_string(task?.path().join("status")) else {
            continue; // the thread exited
        };
        total += text
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// Busy and total ticks of cpu0 and cpu1, from /proc/stat.
fn core_ticks() -> io::Result<[(u64, u64); 2]> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let mut out = [(0, 0); 2];
    for (i, name) in ["cpu0", "cpu1"].iter().enumerate() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .ok_or_else(|| other(format!("no {name} in /proc/stat")))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        // idle and iowait are fields 4 and 5.
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        out[i] = (total - idle, total);
    }
    Ok(out)
}

/// What is read at the start and end of the measured window.
struct Snapshot {
    at: Instant,
    server_ticks: u64,
    server_switches: u64,
    own_cpu: Duration,
    cores: [(u64, u64); 2],
}

impl Snapshot {
    fn take(server_pid: u32) -> io::Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            server_ticks: cpu_ticks(server_pid)?,
            server_switches: context_switches(server_pid)?,
            own_cpu: taskweave::sys::process_cpu_time()?,
            cores: core_ticks()?,
        })
    }
}

/// `getconf CLK_TCK`.
fn clock_ticks_per_second() -> io::Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| other("getconf CLK_TCK failed"))
}

/// Selected `/proc/PID/status` values in KiB (or a count for `Threads`).
fn proc_status(pid: u32) -> io::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if matches!(k, "VmRSS" | "RssAnon" | "RssFile" | "VmHWM" | "Threads") {
            if let Some(n) = v.split_whitespace().next().and_then(|n| n.parse().ok()) {
                map.insert(k.to_string(), n);
            }
        }
    }
    Ok(map)
}

// ---------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------

/// What one connection sends, and the exact reply it expects.
#[derive(Clone, Copy)]
struct Wire {
    request: &'static [u8],
    reply: &'static [u8],
}

fn echo_frame() -> &'static [u8] {
    static FRAME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FRAME.get_or_init(|| {
        let mut f = (PAYLOAD.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(PAYLOAD);
        f
    })
}

impl Wire {
    fn echo() -> Wire {
        Wire {
            request: echo_frame(),
            reply: echo_frame(),
        }
    }
    fn http() -> Wire {
        Wire {
            request: HTTP_REQUEST,
            reply: HTTP_RESPONSE,
        }
    }
}

struct Client {
    stream: TcpStream,
    connected: bool,
    written: usize,
    got: usize,
    sent_at: Instant,
}

impl Client {
    /// Starts (or continues) writing the request; returns at `WouldBlock`.
    fn push(&mut self, request: &[u8]) -> io::Result<()> {
        while self.written < request.len() {
            match self.stream.write(&request[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn start(&mut self, request: &[u8], now: Instant) -> io::Result<()> {
        self.written = 0;
        self.got = 0;
        self.sent_at = now;
        self.push(request)
    }

    /// Whether a pending non-blocking connect has completed.
    fn check_connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Checks `data` against the next bytes of the expected reply.
fn expect_bytes(reply: &[u8], got: usize, data: &[u8]) -> io::Result<()> {
    match reply.get(got..got + data.len()) {
        Some(want) if want == data => Ok(()),
        _ => Err(other("unexpected reply bytes")),
    }
}

struct LoadResult {
    requests: u64,
    seconds: f64,
    server_cpu_s: f64,
    loadgen_cpu_s: f64,
    /// CPU time on cores 0 and 1 used by neither the server nor the load
    /// generator (other processes, interrupts): a sign of a disturbed run.
    other_cpu_s: f64,
    /// Server context switches (all threads) in the window.
    server_switches: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One closed-loop run: `conns` connections, `warmup` then `duration` measured.
fn run_load(
    addr: SocketAddr,
    wire: Wire,
    conns: usize,
    warmup: Duration,
    duration: Duration,
    server_pid: u32,
    tck: u64,
) -> io::Result<LoadResult> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut clients = Vec::with_capacity(conns);
    let now = Instant::now();
    for i in 0..conns {
        let mut stream = TcpStream::connect(addr)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        clients.push(Client {
            stream,
            connected: false,
            written: 0,
            got: 0,
            sent_at: now,
        });
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let mut latencies: Vec<u64> = Vec::with_capacity(4 << 20);
    let mut connected = 0usize;
    let connect_deadline = Instant::now() + CONNECT_WITHIN;
    // Set once every connection is up.
    let mut warm_end: Option<Instant> = None;
    let mut window: Option<Snapshot> = None;
    let mut end = connect_deadline + warmup + duration;
    let mut measured = 0u64;
    let mut last_progress = Instant::now();

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if warm_end.is_none() && now >= connect_deadline {
            return Err(other(format!(
                "only {connected} of {conns} connections opened"
            )));
        }
        if window.is_none() && warm_end.is_some_and(|w| now >= w) {
            let snap = Snapshot::take(server_pid)?;
            end = snap.at + duration;
            window = Some(snap);
        }
        if now.duration_since(last_progress) > STALL {
            return Err(other("no reply for 5 s"));
        }
        let wait = (end - now).min(Duration::from_millis(50));
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let measuring = window.is_some();
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            if !c.connected {
                if !c.check_connected()? {
                    continue;
                }
                c.connected = true;
                c.stream.set_nodelay(true)?;
                c.start(wire.request, Instant::now())?;
                connected += 1;
                if connected == conns {
                    warm_end = Some(Instant::now() + warmup);
                    last_progress = Instant::now();
                }
                continue;
            }
            if ev.is_writable() && c.written < wire.request.len() {
                c.push(wire.request)?;
            }
            if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                continue;
            }
            loop {
                match c.stream.read(&mut scratch) {
                    Ok(0) => return Err(other("server closed a connection")),
                    Ok(n) => {
                        expect_bytes(wire.reply, c.got, &scratch[..n])?;
                        c.got += n;
                        if c.got == wire.reply.len() {
                            let done = Instant::now();
                            last_progress = done;
                            if measuring {
                                measured += 1;
                                latencies.push(done.duration_since(c.sent_at).as_nanos() as u64);
                            }
                            c.start(wire.request, done)?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let a = window.ok_or_else(|| other("never reached the window"))?;
    let b = Snapshot::take(server_pid)?;
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    let busy_ticks: u64 = (0..2).map(|i| b.cores[i].0 - a.cores[i].0).sum();
    let server_cpu_s = b.server_ticks.saturating_sub(a.server_ticks) as f64 / tck as f64;
    let loadgen_cpu_s = (b.own_cpu - a.own_cpu).as_secs_f64();
    drop(clients);
    latencies.sort_unstable();
    let pct = |p: usize| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = (latencies.len() * p / 100).min(latencies.len() - 1);
        latencies[i] as f64 / 1e6
    };
    Ok(LoadResult {
        requests: measured,
        seconds,
        server_cpu_s,
        loadgen_cpu_s,
        other_cpu_s: (busy_ticks as f64 / tck as f64 - server_cpu_s - loadgen_cpu_s).max(0.0),
        server_switches: b.server_switches.saturating_sub(a.server_switches),
        p50_ms: pct(50),
        p99_ms: pct(99),
    })
}

// ---------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------

fn orchestrate(args: &Args) -> io::Result<()> {
    let all = args.raw("all").is_some();
    let idle = args.raw("idle");
    if all || idle.is_none() {
        load_matrix(args)?;
    }
    if all || idle.is_some() {
        let n = match idle {
            None | Some("true") => 10_000,
            Some(v) => v.parse().map_err(|_| other("bad --idle value"))?,
        };
        idle_memory(args, n)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Floor,
    Inline,
    Handlers,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Floor => "floor_c",
            Kind::Inline => "taskweave_inline",
            Kind::Handlers => "taskweave_handlers2",
        }
    }
}

/// Builds floor_server.c into a private temporary file.
fn build_floor(args: &Args) -> io::Result<PathBuf> {
    let src = args.raw("floor-src").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/floor_server.c"),
        PathBuf::from,
    );
    let out = std::env::temp_dir().join(format!("echo_load_floor_{}", std::process::id()));
    let status = Command::new("gcc")
        .arg("-O2")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()?;
    if !status.success() {
        return Err(other(format!("gcc failed on {}", src.display())));
    }
    Ok(out)
}

/// Settings shared by every sample of the load matrix.
struct Matrix {
    floor_bin: PathBuf,
    warmup: Duration,
    duration: Duration,
    probe: Duration,
    tck: u64,
}

impl Matrix {
    /// Starts a fresh server of `kind`, drives it, stops it.
    fn sample(&self, kind: Kind, conns: usize, probe: bool) -> io::Result<LoadResult> {
        let (server, wire) = match kind {
            Kind::Floor => (ServerProc::floor(&self.floor_bin)?, Wire::http()),
            Kind::Inline => (ServerProc::ours(0)?, Wire::echo()),
            Kind::Handlers => (ServerProc::ours(2)?, Wire::echo()),
        };
        let (warmup, duration) = if probe {
            (self.warmup / 2, self.probe)
        } else {
            (self.warmup, self.duration)
        };
        let r = run_load(
            server.addr(),
            wire,
            conns,
            warmup,
            duration,
            server.pid,
            self.tck,
        )?;
        drop(server);
        Ok(r)
    }
}

/// A measured sample; for ours, its ratio to the floor around it and how much
/// the floor moved across it.
struct Sample {
    r: LoadResult,
    ratio: f64,
    drift: f64,
}

/// One CSV line; `ratio` and `drift` are empty for floor samples.
fn print_sample(label: &str, conns: usize, r: &LoadResult, ratio: Option<(f64, f64)>) {
    let (ratio, drift) = ratio.map_or((String::new(), String::new()), |(ratio, drift)| {
        (format!("{ratio:.3}"), format!("{:.1}", 100.0 * drift))
    });
    println!(
        "{label},{conns},{:.0},{:.2},{:.2},{:.3},{:.3},{:.0},{:.0},{:.0},{:.3},{ratio},{drift}",
        r.requests as f64 / r.seconds,
        r.server_cpu_s,
        us_per_req(r),
        r.p50_ms,
        r.p99_ms,
        100.0 * r.server_cpu_s / r.seconds,
        100.0 * r.loadgen_cpu_s / r.seconds,
        100.0 * r.other_cpu_s / r.seconds,
        r.server_switches as f64 / r.requests.max(1) as f64,
    );
}

/// For each round and connection count: the floor, ours inline, a short floor
/// probe, ours with handler threads, another probe. Each of our samples is
/// compared with the mean of the floor samples just before and just after it, so
/// that the machine's drift (its speed changes by up to ~25% from one minute to
/// the next) cancels out; `floor_drift_pct` says how much the floor moved across it.
fn load_matrix(args: &Args) -> io::Result<()> {
    let secs = |name: &str, default: f64| Duration::from_secs_f64(args.get(name, default));
    let rounds: usize = args.get("rounds", 2);
    let conns_list: Vec<usize> = args
        .raw("conns")
        .unwrap_or("50,1000")
        .split(',')
        .map(|c| c.trim().parse().map_err(|_| other("bad --conns")))
        .collect::<io::Result<_>>()?;
    let floor_bin = build_floor(args)?;
    let _cleanup = RemoveOnDrop(floor_bin.clone());
    let m = Matrix {
        floor_bin,
        warmup: secs("warmup", 1.0),
        duration: secs("duration", 10.0),
        probe: secs("probe", 2.0),
        tck: clock_ticks_per_second()?,
    };

    println!(
        "label,conns,req_per_s,server_cpu_s,us_cpu_per_req,p50_ms,p99_ms,server_cpu_pct,\
         loadgen_cpu_pct,other_cpu_pct,server_cs_per_req,ratio_to_floor,floor_drift_pct"
    );
    // Per (conns, kind): each round's sample.
    let mut results: BTreeMap<(usize, Kind), Vec<Sample>> = BTreeMap::new();
    for _round in 0..rounds {
        for &conns in &conns_list {
            let floor = m.sample(Kind::Floor, conns, false)?;
            print_sample(Kind::Floor.label(), conns, &floor, None);
            let mut before = us_per_req(&floor);
            results
                .entry((conns, Kind::Floor))
                .or_default()
                .push(Sample {
                    r: floor,
                    ratio: 1.0,
                    drift: 0.0,
                });
            for kind in [Kind::Inline, Kind::Handlers] {
                let r = m.sample(kind, conns, false)?;
                let probe = m.sample(Kind::Floor, conns, true)?;
                let after = us_per_req(&probe);
                let ratio = us_per_req(&r) / ((before + after) / 2.0);
                let drift = after / before - 1.0;
                print_sample(kind.label(), conns, &r, Some((ratio, drift)));
                print_sample("floor_c_probe", conns, &probe, None);
                results
                    .entry((conns, kind))
                    .or_default()
                    .push(Sample { r, ratio, drift });
                before = after;
            }
        }
    }

    println!();
    println!(
        "summary,label,conns,req_per_s,us_cpu_per_req,us_min,us_max,\
         ratio_to_floor,ratio_min,ratio_max,max_floor_drift_pct,p50_ms,p99_ms"
    );
    for (&(conns, kind), runs) in &results {
        let mean = |f: &dyn Fn(&Sample) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        let range = |f: &dyn Fn(&Sample) -> f64| {
            runs.iter()
                .map(f)
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        let (us_lo, us_hi) = range(&|x| us_per_req(&x.r));
        let (ratio_lo, ratio_hi) = range(&|x| x.ratio);
        let (_, drift) = range(&|x| x.drift.abs());
        println!(
            "summary,{},{},{:.0},{:.2},{:.2},{:.2},{:.3},{:.3},{:.3},{:.1},{:.3},{:.3}",
            kind.label(),
            conns,
            mean(&|x| x.r.requests as f64 / x.r.seconds),
            mean(&|x| us_per_req(&x.r)),
            us_lo,
            us_hi,
            mean(&|x| x.ratio),
            ratio_lo,
            ratio_hi,
            100.0 * drift,
            mean(&|x| x.r.p50_ms),
            mean(&|x| x.r.p99_ms),
        );
    }
    Ok(())
}

fn us_per_req(r: &LoadResult) -> f64 {
    if r.requests == 0 {
        return f64::NAN;
    }
    r.server_cpu_s * 1e6 / r.requests as f64
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Idle memory
// ---------------------------------------------------------------------------

enum IdleState {
    Connecting,
    Replying { written: usize, got: usize },
    Idle,
}

struct IdleConn {
    stream: TcpStream,
    state: IdleState,
}

/// A non-blocking connect to `addr` from 127.0.0.`source` (an ephemeral port).
fn connect_from(source: u8, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket
        .bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, source), 0)).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Opens `n` connections, sends one echo frame on each and reads its reply
/// (unless `connect_only`), at most `IDLE_INFLIGHT` in progress at once.
fn open_idle(addr: SocketAddr, n: usize, connect_only: bool) -> io::Result<Vec<IdleConn>> {
    let frame = echo_frame();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<IdleConn> = Vec::with_capacity(n);
    let mut in_flight = 0usize;
    let mut idle = 0usize;
    let mut scratch = [0u8; 256];
    let deadline = Instant::now() + IDLE_OPEN_WITHIN;
    while idle < n {
        if Instant::now() >= deadline {
            return Err(other(format!("only {idle} of {n} idle connections opened")));
        }
        while conns.len() < n && in_flight < IDLE_INFLIGHT {
            let i = conns.len();
            let mut stream = connect_from(1 + (i % SOURCES) as u8, addr)?;
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(IdleConn {
                stream,
                state: IdleState::Connecting,
            });
            in_flight += 1;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if let IdleState::Connecting = c.state {
                if let Some(e) = c.stream.take_error()? {
                    return Err(e);
                }
                match c.stream.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                    Err(e) => return Err(e),
                }
                c.state = IdleState::Replying { written: 0, got: 0 };
            }
            if let IdleState::Replying { written, got } = &mut c.state {
                if connect_only {
                    *got = frame.len();
                }
                while *written < frame.len() && !connect_only {
                    match c.stream.write(&frame[*written..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(k) => *written += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                while *got < frame.len() {
                    match c.stream.read(&mut scratch) {
                        Ok(0) => return Err(other("server closed an idle connection")),
                        Ok(k) => {
                            expect_bytes(frame, *got, &scratch[..k])?;
                            *got += k;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if *got == frame.len() {
                    poll.registry().deregister(&mut c.stream)?;
                    c.state = IdleState::Idle;
                    in_flight -= 1;
                    idle += 1;
                }
            }
        }
    }
    Ok(conns)
}

/// How many of `conns` are still open: a peek finds no data and no end of file.
fn count_alive(conns: &[IdleConn]) -> usize {
    let mut probe = [0u8; 1];
    conns
        .iter()
        .filter(|c| match c.stream.peek(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(k) => k > 0,
        })
        .count()
}

fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Opens `n` idle connections, measures the server's RSS growth, closes them,
/// then opens `n` again on the same server: the second round should reuse what
/// the first freed (no growth means nothing per connection leaked).
fn idle_memory(args: &Args, n: usize) -> io::Result<()> {
    let settle = Duration::from_secs_f64(args.get("settle", 3.0));
    let connect_only = args.raw("connect-only").is_some();
    taskweave::sys::set_nofile_limit(n as u64 + 256)?;
    let (soft, hard) = taskweave::sys::nofile_limit()?;
    if soft < n as u64 + 64 {
        return Err(other(format!(
            "RLIMIT_NOFILE {soft} (hard {hard}) too small for {n} connections"
        )));
    }
    let server = ServerProc::ours(0)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = proc_status(server.pid)?;
    let t0 = Instant::now();
    let conns = open_idle(server.addr(), n, connect_only)?;
    let open_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let after = proc_status(server.pid)?;
    let server_fds = fd_count(server.pid)?;
    let alive = count_alive(&conns);
    drop(conns);
    std::thread::sleep(Duration::from_secs(1));
    let closed = proc_status(server.pid)?;
    let fds_closed = fd_count(server.pid)?;
    let conns = open_idle(server.addr(), n, connect_only)?;
    std::thread::sleep(settle);
    let reopened = proc_status(server.pid)?;
    let alive_reopened = count_alive(&conns);
    drop(conns);
    drop(server);

    let rss = |m: &BTreeMap<String, u64>| m.get("VmRSS").copied().unwrap_or(0);
    let anon = |m: &BTreeMap<String, u64>| m.get("RssAnon").copied().unwrap_or(0);
    let delta = rss(&after) as f64 - rss(&before) as f64;
    println!();
    println!(
        "idle,conns,request_sent,open_s,alive,server_fds,rss_before_kib,rss_after_kib,\
         rss_anon_delta_kib,kib_per_conn,bytes_per_conn,rss_after_close_kib,\
         server_fds_after_close,rss_reopened_kib,alive_reopened"
    );
    println!(
        "idle,{n},{},{open_s:.2},{alive},{server_fds},{},{},{},{:.3},{:.0},{},{fds_closed},{},{alive_reopened}",
        !connect_only,
        rss(&before),
        rss(&after),
        anon(&after) as i64 - anon(&before) as i64,
        delta / n as f64,
        delta * 1024.0 / n as f64,
        rss(&closed),
        rss(&reopened),
    );
    if alive != n || alive_reopened != n {
        return Err(other(format!(
            "idle connections were closed: {alive} and {alive_reopened} of {n} alive"
        )));
    }
    Ok(())
}
