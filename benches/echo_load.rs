//! Core-runtime benchmark: the echo server's CPU cost per request against a C
//! floor, and its memory per idle connection. See docs/performance.md,
//! "Core runtime: echo".
//!
//! ```text
//! cargo bench --bench echo_load -- --all                # load matrix + idle memory
//! cargo bench --bench echo_load                         # load matrix only (or --load)
//! cargo bench --bench echo_load -- --idle 10000         # idle memory only
//! cargo bench --bench echo_load -- --serve --port 9000 --handler-threads 0 --pollers 1
//! ```
//!
//! Load options: `--duration S` (10, measured seconds per server and round),
//! `--warmup S` (1), `--rounds R` (2), `--conns 50,1000`, `--slice S` (2),
//! `--ramp S` (0.25, unmeasured start of each slice), `--floor-src PATH`.
//! Idle options: `--idle N` (10,000), `--settle S` (3), `--connect-only` (no
//! request on the idle connections).
//!
//! Processes: the bench re-executes itself under `taskset -c 1` (it is the load
//! generator), and starts every server under `taskset -c 0`: our echo server (this
//! binary with `--serve`) or the floor (`floor_server.c` built with `gcc -O2`).
//! The load generator is one thread on `mio`: a closed loop over N connections,
//! each sending one request and waiting for the whole reply before the next, like
//! wrk. The three servers of a round run side by side and are driven in turn, in
//! slices, so that the machine's drift affects all alike. Server CPU time comes
//! from `/proc/PID/stat` (utime + stime) read at the start and end of each slice's
//! window. No `unsafe`, 127.0.0.x only, and every loop is bounded by a deadline.

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

/// The command line this bench accepts (see the module docs).
const SPEC: args::Spec = args::Spec {
    usage:
        "usage: echo_load [--all | --load | --idle N | --serve] [--port N] [--pollers N]\n       \
[--handler-threads N] [--max-connections N] [--duration S] [--warmup S] [--rounds R]\n       \
[--conns 50,1000] [--slice S] [--ramp S] [--floor-src PATH] [--settle S] [--connect-only]",
    options: &[
        "port",
        "pollers",
        "handler-threads",
        "max-connections",
        "duration",
        "warmup",
        "rounds",
        "conns",
        "slice",
        "ramp",
        "floor-src",
        "idle",
        "settle",
    ],
    switches: &[
        "bench",
        "all",
        "load",
        "serve",
        "connect-only",
        "exit-on-eof",
    ],
};

fn main() {
    let args = Args::parse(&SPEC);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this binary with
    // no arguments, and a multi-minute load test is not a test.
    let asked = ["bench", "all", "load", "idle", "serve"]
        .iter()
        .any(|flag| args.raw(flag).is_some());
    if !asked {
        println!("echo_load: nothing to test; run `cargo bench --bench echo_load` or pass --load");
        return;
    }
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
    use taskweave::task::Server;
    use taskweave::Settings;

    // Clamped to the hard limit: 20,000 connections need ~20,000 descriptors.
    taskweave::os::set_nofile_limit(u64::MAX)?;
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
        .serve(("127.0.0.1", port), Echo, |task, _series| {
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
            own_cpu: taskweave::os::process_cpu_time()?,
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
    /// A request is outstanding (or about to be sent).
    in_flight: bool,
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

/// What a measured stretch of load gave.
#[derive(Default)]
struct Tally {
    requests: u64,
    seconds: f64,
    server_cpu_s: f64,
    loadgen_cpu_s: f64,
    /// CPU time on cores 0 and 1 used by neither the server nor the load
    /// generator (other processes, interrupts): a sign of a disturbed sample.
    other_cpu_s: f64,
    /// Server context switches (all threads).
    server_switches: u64,
    /// Send-to-last-byte latency of each request, in nanoseconds.
    latencies: Vec<u64>,
}

impl Tally {
    fn between(a: &Snapshot, b: &Snapshot, tck: u64) -> Tally {
        let busy_ticks: u64 = (0..2).map(|i| b.cores[i].0 - a.cores[i].0).sum();
        let server_cpu_s = b.server_ticks.saturating_sub(a.server_ticks) as f64 / tck as f64;
        let loadgen_cpu_s = b.own_cpu.saturating_sub(a.own_cpu).as_secs_f64();
        Tally {
            seconds: b.at.duration_since(a.at).as_secs_f64(),
            server_cpu_s,
            loadgen_cpu_s,
            other_cpu_s: (busy_ticks as f64 / tck as f64 - server_cpu_s - loadgen_cpu_s).max(0.0),
            server_switches: b.server_switches.saturating_sub(a.server_switches),
            ..Tally::default()
        }
    }

    fn add(&mut self, t: Tally) {
        self.requests += t.requests;
        self.seconds += t.seconds;
        self.server_cpu_s += t.server_cpu_s;
        self.loadgen_cpu_s += t.loadgen_cpu_s;
        self.other_cpu_s += t.other_cpu_s;
        self.server_switches += t.server_switches;
        self.latencies.extend(t.latencies);
    }

    fn us_per_req(&self) -> f64 {
        if self.requests == 0 {
            return f64::NAN;
        }
        self.server_cpu_s * 1e6 / self.requests as f64
    }

    /// The `p`th percentile latency in ms; sorts the latencies.
    fn percentile_ms(&mut self, p: usize) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i] as f64 / 1e6
    }
}

/// Closed-loop connections to one server: each sends a request, reads the whole
/// reply, sends the next. Between [`Driver::drive`] calls they are all idle.
struct Driver {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    wire: Wire,
    server_pid: u32,
    tck: u64,
    scratch: Vec<u8>,
    /// The server's name, for errors.
    label: &'static str,
}

impl Driver {
    /// Opens `conns` connections to `addr` and waits until all are established.
    fn connect(
        label: &'static str,
        addr: SocketAddr,
        wire: Wire,
        conns: usize,
        server_pid: u32,
        tck: u64,
    ) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let now = Instant::now();
        let mut clients = Vec::with_capacity(conns);
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
                in_flight: false,
                written: 0,
                got: 0,
                sent_at: now,
            });
        }
        let mut d = Driver {
            poll,
            events: Events::with_capacity(1024),
            clients,
            wire,
            server_pid,
            tck,
            scratch: vec![0u8; 64 * 1024],
            label,
        };
        let deadline = now + CONNECT_WITHIN;
        let mut connected = 0;
        while connected < conns {
            if Instant::now() >= deadline {
                return Err(other(format!(
                    "{label}: only {connected} of {conns} connections opened"
                )));
            }
            match d.poll.poll(&mut d.events, Some(Duration::from_millis(100))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in d.events.iter() {
                let c = &mut d.clients[ev.token().0];
                if !c.connected && c.check_connected()? {
                    c.connected = true;
                    c.stream.set_nodelay(true)?;
                    connected += 1;
                }
            }
        }
        Ok(d)
    }

    /// Runs the closed loop for `ramp` (not measured), then `window` (measured),
    /// then lets the requests in flight finish so the next call starts idle.
    fn drive(&mut self, ramp: Duration, window: Duration) -> io::Result<Tally> {
        let wire = self.wire;
        let start = Instant::now();
        for c in &mut self.clients {
            c.in_flight = true;
            c.start(wire.request, start)?;
        }
        let mut in_flight = self.clients.len();
        let mut first: Option<Snapshot> = None;
        let mut last: Option<Snapshot> = None;
        let mut end = start + ramp;
        let mut latencies = Vec::new();
        let mut last_progress = start;
        while in_flight > 0 {
            let now = Instant::now();
            if now.duration_since(last_progress) > STALL {
                return Err(other(format!(
                    "{}: no reply for 5 s ({in_flight} of {} requests outstanding)",
                    self.label,
                    self.clients.len()
                )));
            }
            if last.is_none() && now >= end {
                if first.is_none() {
                    let snap = Snapshot::take(self.server_pid)?;
                    end = snap.at + window;
                    first = Some(snap);
                    latencies.reserve((window.as_secs_f64() * 250_000.0) as usize);
                } else {
                    last = Some(Snapshot::take(self.server_pid)?);
                }
                continue;
            }
            let wait = if last.is_some() {
                Duration::from_millis(50)
            } else {
                end.saturating_duration_since(now)
                    .min(Duration::from_millis(50))
            };
            match self.poll.poll(&mut self.events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let measuring = first.is_some() && last.is_none();
            let stopping = last.is_some();
            for ev in self.events.iter() {
                let c = &mut self.clients[ev.token().0];
                if !c.in_flight {
                    continue;
                }
                if ev.is_writable() && c.written < wire.request.len() {
                    c.push(wire.request)?;
                }
                if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                    continue;
                }
                loop {
                    match c.stream.read(&mut self.scratch) {
                        Ok(0) => return Err(other("server closed a connection")),
                        Ok(n) => {
                            expect_bytes(wire.reply, c.got, &self.scratch[..n])?;
                            c.got += n;
                            if c.got < wire.reply.len() {
                                continue;
                            }
                            let done = Instant::now();
                            last_progress = done;
                            if measuring {
                                latencies.push(done.duration_since(c.sent_at).as_nanos() as u64);
                            }
                            if stopping {
                                c.in_flight = false;
                                c.got = 0;
                                in_flight -= 1;
                            } else {
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
        let (Some(a), Some(b)) = (first, last) else {
            return Err(other("load stopped before its window"));
        };
        let mut tally = Tally::between(&a, &b, self.tck);
        tally.requests = latencies.len() as u64;
        tally.latencies = latencies;
        Ok(tally)
    }
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
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/floor/floor_server.c"),
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

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One CSV line for a server's round; `ratio` is empty for the floor.
fn print_round(label: &str, conns: usize, t: &mut Tally, ratio: Option<f64>) {
    let ratio = ratio.map_or(String::new(), |r| format!("{r:.3}"));
    let (p50, p99) = (t.percentile_ms(50), t.percentile_ms(99));
    println!(
        "{label},{conns},{:.0},{:.2},{:.2},{p50:.3},{p99:.3},{:.0},{:.0},{:.0},{:.3},{ratio}",
        t.requests as f64 / t.seconds,
        t.server_cpu_s,
        t.us_per_req(),
        100.0 * t.server_cpu_s / t.seconds,
        100.0 * t.loadgen_cpu_s / t.seconds,
        100.0 * t.other_cpu_s / t.seconds,
        t.server_switches as f64 / t.requests.max(1) as f64,
    );
    let other_pct = 100.0 * t.other_cpu_s / t.seconds;
    if other_pct > 20.0 {
        println!(
            "# warning: other processes used {other_pct:.0}% of a core during {label} at \
             {conns}: the machine was busy, numbers are unreliable"
        );
    }
}

/// What the summary keeps per (connections, server).
#[derive(Default)]
struct Summary {
    req_per_s: Vec<f64>,
    us: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// One per slice: our CPU per request over the floor's around it.
    ratios: Vec<f64>,
}

const KINDS: [Kind; 3] = [Kind::Floor, Kind::Inline, Kind::Handlers];

/// For each round and connection count: starts the floor and our two servers
/// (all pinned to core 0), connects to all three, warms each up, then drives them
/// in turn in short slices (floor, inline, handlers, floor, ...) until each has
/// had `duration` of measured load. The machine's speed drifts (by up to ~25%,
/// over seconds to minutes), so each of our slices is compared with the mean of
/// the floor slices just before and after it, and the ratio reported is the
/// median over slices.
fn load_matrix(args: &Args) -> io::Result<()> {
    let secs = |name: &str, default: f64| Duration::from_secs_f64(args.get(name, default));
    let rounds: usize = args.get("rounds", 2);
    let warmup = secs("warmup", 1.0);
    let duration = secs("duration", 10.0);
    let slice = secs("slice", 2.0).max(Duration::from_millis(100));
    let ramp = secs("ramp", 0.25);
    let conns_list: Vec<usize> = args
        .raw("conns")
        .unwrap_or("50,1000")
        .split(',')
        .map(|c| c.trim().parse().map_err(|_| other("bad --conns")))
        .collect::<io::Result<_>>()?;
    let slices = (duration.as_secs_f64() / slice.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let tck = clock_ticks_per_second()?;
    let floor_bin = build_floor(args)?;
    let _cleanup = RemoveOnDrop(floor_bin.clone());
    taskweave::os::set_nofile_limit(u64::MAX)?;

    println!(
        "label,conns,req_per_s,server_cpu_s,us_cpu_per_req,p50_ms,p99_ms,server_cpu_pct,\
         loadgen_cpu_pct,other_cpu_pct,server_cs_per_req,ratio_to_floor"
    );
    let mut summary: BTreeMap<(usize, Kind), Summary> = BTreeMap::new();
    for _round in 0..rounds {
        for &conns in &conns_list {
            let servers = [
                ServerProc::floor(&floor_bin)?,
                ServerProc::ours(0)?,
                ServerProc::ours(2)?,
            ];
            let mut drivers = Vec::with_capacity(3);
            for (kind, server) in KINDS.iter().zip(&servers) {
                let wire = if *kind == Kind::Floor {
                    Wire::http()
                } else {
                    Wire::echo()
                };
                drivers.push(Driver::connect(
                    kind.label(),
                    server.addr(),
                    wire,
                    conns,
                    server.pid,
                    tck,
                )?);
            }
            for d in &mut drivers {
                d.drive(warmup, Duration::ZERO)?;
            }
            let mut totals: [Tally; 3] = Default::default();
            let mut per_slice: Vec<[f64; 3]> = Vec::with_capacity(slices);
            for _ in 0..slices {
                let mut us = [0.0; 3];
                for (i, d) in drivers.iter_mut().enumerate() {
                    let t = d.drive(ramp, slice)?;
                    us[i] = t.us_per_req();
                    totals[i].add(t);
                }
                per_slice.push(us);
            }
            drop(drivers);
            drop(servers);

            let mut round_ratios: [Vec<f64>; 3] = Default::default();
            for (s, us) in per_slice.iter().enumerate() {
                let floor = match per_slice.get(s + 1) {
                    Some(next) => (us[0] + next[0]) / 2.0,
                    None => us[0],
                };
                for (k, ratios) in round_ratios.iter_mut().enumerate() {
                    // A slice with no completed request (a starved machine) has none.
                    let ratio = us[k] / floor;
                    if ratio.is_finite() {
                        ratios.push(ratio);
                    }
                }
            }
            for (k, kind) in KINDS.iter().enumerate() {
                let t = &mut totals[k];
                let ratio = (k > 0).then(|| median(&mut round_ratios[k].clone()));
                print_round(kind.label(), conns, t, ratio);
                let entry = summary.entry((conns, *kind)).or_default();
                entry.req_per_s.push(t.requests as f64 / t.seconds);
                entry.us.push(t.us_per_req());
                entry.p50.push(t.percentile_ms(50));
                entry.p99.push(t.percentile_ms(99));
                entry.ratios.extend(&round_ratios[k]);
            }
        }
    }

    println!();
    println!(
        "summary,label,conns,req_per_s,us_cpu_per_req,us_min,us_max,\
         ratio_to_floor_median,ratio_min,ratio_max,slices,p50_ms,p99_ms"
    );
    for (&(conns, kind), sm) in &mut summary {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let lo = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "summary,{},{},{:.0},{:.2},{:.2},{:.2},{:.3},{:.3},{:.3},{},{:.3},{:.3}",
            kind.label(),
            conns,
            mean(&sm.req_per_s),
            mean(&sm.us),
            lo(&sm.us),
            hi(&sm.us),
            median(&mut sm.ratios),
            lo(&sm.ratios),
            hi(&sm.ratios),
            sm.ratios.len(),
            mean(&sm.p50),
            mean(&sm.p99),
        );
    }
    Ok(())
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
    taskweave::os::set_nofile_limit(n as u64 + 256)?;
    let (soft, hard) = taskweave::os::nofile_limit()?;
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
