//! Regression tests for the defects found in review, with the default settings
//! (several pollers, `process` and callbacks on handler threads). Each test
//! asserts the documented behaviour and names its defect when it fails. The
//! inline-mode cases are in `defects_inline.rs`.

mod support;

use bytes::Bytes;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::raw_http;
use support::*;

// The public API these tests use; paths that may move are imported here only.
use taskweave::comm::ClientConfig;
use taskweave::comm::ConnConfig;
use taskweave::http::{self, Server, ServerHandle, ServerTask};
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::{count_by_name, named_counter, Series, WaitGroup};

const MIB: usize = 1 << 20;

/// An HTTP server on 127.0.0.1 with default limits and `process`.
fn serve(process: impl Fn(&mut ServerTask, &mut Series) + Send + Sync + 'static) -> ServerHandle {
    Server::builder()
        .serve("127.0.0.1:0", process)
        .expect("serve")
}

/// A tiny xorshift generator: reproducible pauses without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------
// Defect 1: lost wake-up on the handler-thread write path.

/// Reads replies of `body` bytes on a keep-alive connection to `addr`, in
/// bursts of 1 MiB with a random 5-50 ms pause after each, until `stop`. A
/// read that gets nothing for `stall` is a stall: it stops the run, and the
/// reader returns what it saw.
fn bursty_reader(
    conn: usize,
    addr: SocketAddr,
    body: usize,
    stall: Duration,
    stop: &AtomicBool,
    replies: &AtomicUsize,
) -> Result<(), String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((conn as u64 + 1) << 17));
    let mut buf = vec![0u8; 64 * 1024];
    let mut s = connect(addr);
    s.set_read_timeout(Some(stall)).unwrap();
    let mut reply = 0;
    while !stop.load(Ordering::Relaxed) {
        reply += 1;
        s.write_all(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut read = |buf: &mut [u8], got: usize| {
            let failed = |what: String| {
                stop.store(true, Ordering::Relaxed);
                format!("connection {conn} reply {reply}: {got} of {body} body bytes, then {what}")
            };
            match s.read(buf) {
                Ok(0) => Err(failed("the server closed the connection".into())),
                Ok(n) => Ok(n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Err(failed(format!("nothing for {stall:?}")))
                }
                Err(e) => Err(failed(e.to_string())),
            }
        };
        // The head, and whatever part of the body came with it.
        let mut head = Vec::new();
        let mut got = loop {
            let n = read(&mut buf, 0)?;
            head.extend_from_slice(&buf[..n]);
            if let Some(p) = raw_http::find(&head, b"\r\n\r\n") {
                break head.len() - (p + 4);
            }
        };
        let mut burst = got;
        while got < body {
            let n = read(&mut buf, got)?;
            got += n;
            burst += n;
            if burst >= MIB {
                burst = 0;
                std::thread::sleep(Duration::from_millis(5 + rng.below(46)));
            }
        }
        replies.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Defect 1: a multi-megabyte reply written from a handler thread, to readers
/// that take it in bursts, must never stall: the writable edge that arrives
/// before the poller learns of the queued rest must not be lost. Eight
/// keep-alive connections for about 9 s; a read that waits 3 s is a stall.
#[test]
fn large_replies_from_handler_threads_never_stall() {
    let _serial = exclusive();
    let conns = 8;
    let body_len = 8 * MIB;
    let run = Duration::from_secs(9);
    let stall = Duration::from_secs(3);
    let body = Bytes::from(vec![b'w'; body_len]);
    let server = serve(move |task, _| {
        task.response().set_body(body.clone());
    });
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let readers: Vec<_> = (0..conns)
        .map(|conn| {
            let (stop, replies) = (stop.clone(), replies.clone());
            std::thread::spawn(move || bursty_reader(conn, addr, body_len, stall, &stop, &replies))
        })
        .collect();
    while start.elapsed() < run && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let stalls: Vec<String> = readers
        .into_iter()
        .filter_map(|r| r.join().unwrap().err())
        .collect();
    let replies = replies.load(Ordering::Relaxed);
    assert!(
        stalls.is_empty(),
        "defect 1 (lost wake-up on the handler-thread write path): after {replies} whole \
         replies of {body_len} B in {:?}, {} stalled:\n{}",
        start.elapsed(),
        stalls.len(),
        stalls.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Defect 2: `count_by_name` runs a completed counter's callback while it holds
// the registry lock. Each case runs on a thread of its own with a deadline: a
// deadlock leaves that thread (and the registry) stuck, not the test.

/// Defect 2: a named counter's callback may count another name; counting
/// from a plain thread completes the counter and returns.
#[test]
fn a_named_counter_callback_may_count_by_name() {
    let done = with_deadline(Duration::from_secs(5), || {
        let counted = Arc::new(AtomicUsize::new(0));
        let c = counted.clone();
        Series::new(named_counter("d2-first", 1, move |_, _| {
            c.fetch_add(count_by_name("d2-other", 1) as usize + 1, Ordering::SeqCst);
        }))
        .start();
        let used = count_by_name("d2-first", 1);
        // The callback may run here or on another thread.
        wait_until(Duration::from_secs(2), || {
            counted.load(Ordering::SeqCst) > 0
        });
        (used, counted.load(Ordering::SeqCst))
    });
    assert_eq!(
        done,
        Some((1, 1)),
        "defect 2 (count_by_name deadlock): count_by_name(\"d2-first\") did not return within \
         5 s; its counter's callback called count_by_name(\"d2-other\") under the registry lock"
    );
}

/// Defect 2: a named counter's callback may create the next named counter
/// (chaining steps of a workflow), and that one can be counted in turn.
#[test]
fn a_named_counter_callback_may_create_a_named_counter() {
    let done = with_deadline(Duration::from_secs(5), || {
        let wg = WaitGroup::new(1);
        let finished = wg.clone();
        Series::new(named_counter("d2-step-1", 1, |_, s: &mut Series| {
            s.push_back(named_counter("d2-step-2", 1, |_, _| {}));
        }))
        .on_done(move |_| finished.done())
        .start();
        let first = count_by_name("d2-step-1", 1);
        // The callback may run here or on another thread: count the second
        // step once it exists.
        let second = wait_until(Duration::from_secs(2), || {
            count_by_name("d2-step-2", 1) == 1
        });
        (first, second, wg.wait_timeout(Duration::from_secs(2)))
    });
    assert_eq!(
        done,
        Some((1, true, true)),
        "defect 2 (count_by_name deadlock): a callback that calls named_counter while \
         count_by_name completes its counter did not finish within 5 s (None: deadlocked)"
    );
}

// ---------------------------------------------------------------------------
// Defect 3: `max_queued` is checked against a whole reply before any of it is
// written, so a reply larger than the limit is never sent (and logged `local`).

/// An HTTP server whose replies are `body` bytes, with `config`.
fn serve_bytes(config: ConnConfig, body: usize, log: &MemoryLog) -> ServerHandle {
    let body = Bytes::from(vec![b'q'; body]);
    Server::builder()
        .conn_config(config)
        .access_log(log.clone())
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                task.response().set_body(body.clone());
            },
        )
        .expect("serve")
}

/// Defect 3: `max_queued` bounds what waits in the queue, not the size of a
/// reply: a 4 MiB reply from a server with `max_queued` 1 MiB reaches a
/// reader that keeps up, whole.
#[test]
fn a_reply_larger_than_max_queued_reaches_a_fast_reader_whole() {
    // Serial: its multi-MiB replies would show in the RSS that
    // `a_client_config_per_request_leaves_nothing_behind` measures.
    let _serial = exclusive();
    let log = MemoryLog::new();
    let config = ConnConfig {
        max_queued: MIB,
        ..ConnConfig::default()
    };
    let server = serve_bytes(config, 4 * MIB, &log);
    let reply = raw_http::get_new(server.local_addr(), "/", Duration::from_secs(5));
    assert!(
        reply.is(200) && reply.body == 4 * MIB,
        "defect 3 (replies larger than max_queued are never sent): a 4 MiB reply with \
         max_queued 1 MiB to a fast reader got status {:?}, {} body bytes, ended {:?} (server \
         record: {:?})",
        reply.status,
        reply.body,
        reply.end,
        records(&log, 1)[0].close_reason()
    );
}

/// Defect 3: a reply the server gives up on is logged for what happened: it
/// was refused (`limit_exceeded`) or never read (`send_timeout`), not closed
/// deliberately (`local`). The peer never reads an 8 MiB reply; `max_queued`
/// is 1 MiB.
#[test]
fn a_reply_that_cannot_be_queued_is_not_logged_as_local() {
    // Serial: its multi-MiB replies would show in the RSS that
    // `a_client_config_per_request_leaves_nothing_behind` measures.
    let _serial = exclusive();
    let log = MemoryLog::new();
    let config = ConnConfig {
        max_queued: MIB,
        send_timeout: Duration::from_secs(1),
        ..ConnConfig::default()
    };
    let server = serve_bytes(config, 8 * MIB, &log);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.local_addr().into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let reason = records(&log, 1)[0].close_reason();
    assert!(
        matches!(
            reason,
            Some(CloseReason::LimitExceeded | CloseReason::SendTimeout)
        ),
        "defect 3 (refused reply logged as local): an 8 MiB reply to a peer that never reads, \
         with max_queued 1 MiB, was logged as {reason:?}"
    );
}

// ---------------------------------------------------------------------------
// Defect 4: a `process` or callback that panics loses its series: nothing
// answers the request or closes its connection, and `on_done` never runs.

/// An HTTP server whose `process` panics on `/panic` and answers `ok` else.
fn serve_panicking(max_connections: usize) -> ServerHandle {
    Server::builder()
        .max_connections(max_connections)
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            if task.request().path() == "/panic" {
                panic!("process panics on purpose (defect 4 test)");
            }
            task.response().set_body("ok");
        })
        .expect("serve")
}

/// Defect 4: when `process` panics on a handler thread the client gets a 500
/// (or at least a prompt close), and the server goes on serving.
#[test]
fn a_panicking_process_gets_a_500_and_the_server_keeps_serving() {
    let server = serve_panicking(16);
    let mut s = connect(server.local_addr());
    let control = raw_http::get(&mut s, "/", Duration::from_secs(5));
    assert!(control.is(200), "control request: {control:?}");
    let reply = raw_http::get(&mut s, "/panic", Duration::from_secs(5));
    assert!(
        reply.is_500_or_closed(),
        "defect 4 (panicking process): expected a 500 or a close; got status {:?}, ended {:?} \
         after {:?} (the connection hangs with its series lost)",
        reply.status,
        reply.end,
        reply.elapsed
    );
    let after = raw_http::get_new(server.local_addr(), "/", Duration::from_secs(5));
    assert!(
        after.is(200),
        "defect 4: the server stopped serving: {after:?}"
    );
}

/// Defect 4: connections whose `process` panicked are released: more panics
/// than `max_connections` (4) leave the server accepting new clients.
#[test]
fn panics_do_not_use_up_max_connections() {
    let server = serve_panicking(4);
    let addr = server.local_addr();
    for _ in 0..6 {
        // The client gives up after a second either way and closes.
        let _ = raw_http::get_new(addr, "/panic", Duration::from_secs(1));
    }
    let mut last = None;
    let served = wait_until(Duration::from_secs(4), || {
        let r = raw_http::get_new(addr, "/", Duration::from_secs(1));
        let ok = r.is(200);
        last = Some(r);
        ok
    });
    assert!(
        served,
        "defect 4 (panicking process leaks its connection): after 6 panics with \
         max_connections 4, a new client is not served ({:?}); the server reports {} open \
         connections",
        last.map(|r| (r.status, r.end)),
        server.open_connections()
    );
}

/// Defect 4: a client task whose callback panics still ends its series, so
/// `on_done` runs and a `WaitGroup` waiting on it is released.
#[test]
fn a_panicking_client_callback_still_ends_its_series() {
    let server = serve(|task, _| {
        task.response().set_body("ok");
    });
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let task = http::get(&format!("http://{}/", server.local_addr()), |_, _| {
        panic!("a client callback panics on purpose (defect 4 test)");
    });
    Series::new(task).on_done(move |_| done.done()).start();
    assert!(
        wg.wait_timeout(Duration::from_secs(5)),
        "defect 4 (lost series): the client callback panicked and the series' on_done never \
         ran: WaitGroup::wait would hang"
    );
}

// ---------------------------------------------------------------------------
// Defect 5: a failed lookup runs the user's callback on a resolver thread, and
// a lookup has no timeout of its own. These tests resolve names, so they run
// in a child process in network and mount namespaces that hold only loopback,
// with /etc/resolv.conf pointing at 127.0.0.1: no query leaves the machine.

/// Runs the child test `name` in the DNS sandbox; `None` (after a warning) if
/// the sandbox cannot be made here and this is not CI.
fn in_dns_sandbox(name: &str) -> Option<child::Outcome> {
    if !child::works("unshare", &["-mn", "true"]) {
        child::missing("`unshare -mn` (root or user namespaces) for the DNS sandbox");
        return None;
    }
    if !child::works("unshare", &["-n", "ip", "link", "set", "lo", "up"]) {
        child::missing("`ip link set lo up` in a new network namespace (iproute2)");
        return None;
    }
    let conf = std::env::temp_dir().join(format!("tw-resolv-{}-{name}", std::process::id()));
    std::fs::write(&conf, "nameserver 127.0.0.1\n").unwrap();
    let script = "ip link set lo up && mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"";
    let conf_arg = conf.to_str().unwrap();
    let outcome = child::run(
        name,
        &["unshare", "-mn", "sh", "-c", script, conf_arg],
        Duration::from_secs(30),
    );
    let _ = std::fs::remove_file(&conf);
    Some(outcome)
}

/// Starts a GET of `url` (with `config`, if any). The receiver gets the
/// callback's thread name, the status or error, and the time since the start.
fn get_reporting(
    url: &str,
    config: Option<Arc<ClientConfig>>,
) -> std::sync::mpsc::Receiver<(String, Result<u16, String>, Duration)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let mut task = http::get(url, move |t, _| {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let res = t.result().map(|r| r.status()).map_err(|e| e.to_string());
        let _ = tx.send((thread, res, start.elapsed()));
    });
    if let Some(c) = config {
        task = task.config(c);
    }
    Series::new(task).start();
    rx
}

fn assert_child_passed(defect: &str, name: &str, outcome: &child::Outcome) {
    assert!(
        outcome.passed(),
        "{defect}: child {name} ended with {}",
        outcome.describe()
    );
}

/// Defect 5: the callback of a GET whose name lookup failed runs where other
/// callbacks run, never on a DNS resolver thread (`tw-resolver-*`).
#[test]
fn a_failed_lookup_does_not_call_back_on_a_resolver_thread() {
    let _serial = exclusive();
    let name = "dns_child_failed_lookup";
    if let Some(outcome) = in_dns_sandbox(name) {
        assert_child_passed("defect 5 (callback on a resolver thread)", name, &outcome);
    }
}

#[test]
#[ignore = "run by a_failed_lookup_does_not_call_back_on_a_resolver_thread, in a sandbox"]
fn dns_child_failed_lookup() {
    if !child::is_child("dns_child_failed_lookup") {
        return;
    }
    // Nothing listens on 127.0.0.1:53, so the lookup fails at once.
    let (thread, res, took) = get_reporting("http://no-such-host.test/", None)
        .recv_timeout(Duration::from_secs(10))
        .expect("the callback of a failed lookup never ran");
    eprintln!("callback on {thread:?}: {res:?} after {took:?}");
    assert!(
        res.is_err(),
        "the lookup of no-such-host.test succeeded: {res:?}"
    );
    assert!(
        !thread.starts_with("tw-resolver"),
        "the callback of a failed lookup ran on the resolver thread {thread:?}"
    );
}

/// Defect 5: a lookup that gets no answer fails within the client's timeouts
/// (connect timeout 1 s: a GET fails within 3 s), and while two such names
/// wait, a name from /etc/hosts (`localhost`) is served at once.
#[test]
fn a_silent_dns_server_neither_hangs_lookups_nor_delays_other_names() {
    let _serial = exclusive();
    let name = "dns_child_silent_server";
    if let Some(outcome) = in_dns_sandbox(name) {
        assert_child_passed("defect 5 (no DNS timeout)", name, &outcome);
    }
}

#[test]
#[ignore = "run by a_silent_dns_server_neither_hangs_lookups_nor_delays_other_names, in a sandbox"]
fn dns_child_silent_server() {
    if !child::is_child("dns_child_silent_server") {
        return;
    }
    // A DNS server that reads queries and never answers.
    let dns = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 in the sandbox");
    let queries = Arc::new(AtomicUsize::new(0));
    let q = queries.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while dns.recv_from(&mut buf).is_ok() {
            q.fetch_add(1, Ordering::SeqCst);
        }
    });
    let server = serve(|task, _| {
        task.response().set_body("ok");
    });
    let port = server.local_addr().port();
    let config = Arc::new(ClientConfig::new(ConnConfig {
        connect_timeout: Duration::from_secs(1),
        ..ConnConfig::default()
    }));
    let start = Instant::now();
    let slow: Vec<_> = ["slow-one.test", "slow-two.test"]
        .iter()
        .map(|host| {
            (
                host,
                get_reporting(&format!("http://{host}:{port}/"), Some(config.clone())),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100)); // both lookups are under way
    let local = get_reporting(&format!("http://localhost:{port}/"), Some(config.clone()));
    let local = local.recv_timeout(Duration::from_secs(3));
    let mut failures = Vec::new();
    match local {
        Ok((_, Ok(200), took)) if took < Duration::from_secs(1) => {}
        Ok((_, res, took)) => failures.push(format!(
            "GET http://localhost:{port}/ (an /etc/hosts name) while two lookups hang: \
             {res:?} after {took:?} (want 200 within 1 s)"
        )),
        Err(_) => failures.push(format!(
            "GET http://localhost:{port}/ (an /etc/hosts name) while two lookups hang: no \
             callback within 3 s (want 200 within 1 s)"
        )),
    }
    for (host, rx) in slow {
        let left = (start + Duration::from_millis(3500)).saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Err(_), took)) if took < Duration::from_secs(3) => {}
            Ok((_, res, took)) => failures.push(format!(
                "GET http://{host}/ with no DNS answer and connect_timeout 1 s: {res:?} after \
                 {took:?} (want an error within 3 s)"
            )),
            Err(_) => failures.push(format!(
                "GET http://{host}/ with no DNS answer and connect_timeout 1 s: no callback \
                 within {:?} (want an error within 3 s)",
                start.elapsed()
            )),
        }
    }
    eprintln!(
        "{} queries reached the silent DNS server",
        queries.load(Ordering::SeqCst)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Defect 6: every `ClientConfig` leaves a connection pool entry and deadline
// queues behind on a poller, which scans them all on every turn.

/// One GET of `url` with `config`; returns how long it took.
fn timed_get(url: &str, config: Arc<ClientConfig>) -> Duration {
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let status = Arc::new(Mutex::new(None));
    let slot = status.clone();
    let start = Instant::now();
    let task = http::get(url, move |t, _| {
        *slot.lock().unwrap() = Some(t.result().map(|r| r.status()).map_err(|e| e.to_string()));
    })
    .header("Connection", "close")
    .config(config);
    Series::new(task).on_done(move |_| done.done()).start();
    assert!(
        wg.wait_timeout(Duration::from_secs(10)),
        "GET {url} never completed"
    );
    let took = start.elapsed();
    let status = status.lock().unwrap().take();
    assert_eq!(status, Some(Ok(200)), "GET {url}");
    took
}

/// The `q` quantile of `v` (0.5: the median).
fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q) as usize]
}

/// Defect 6: creating a `ClientConfig` per request must not leave anything
/// behind: over 12,000 sequential GETs (`Connection: close`), each with a new
/// config, memory stays flat and the last requests are as fast as the first.
/// (Today the loop is cut at 8 s, at about 9,000 configs.)
#[test]
fn a_client_config_per_request_leaves_nothing_behind() {
    let _serial = exclusive();
    const CONFIGS: usize = 12_000;
    const WINDOW: usize = 1000;
    const BUDGET: Duration = Duration::from_secs(8);
    let server = serve(|task, _| {
        task.response().set_body("ok");
    });
    let url = format!("http://{}/", server.local_addr());
    let fresh = || Arc::new(ClientConfig::new(ConnConfig::default()));
    // Warm up threads, allocator and the server.
    for _ in 0..200 {
        timed_get(&url, fresh());
    }
    let mut took = vec![Duration::ZERO; CONFIGS]; // touched before RSS is read
    let rss_before = rss_kib();
    let start = Instant::now();
    let mut n = 0;
    while n < CONFIGS && (n < 2 * WINDOW || start.elapsed() < BUDGET) {
        took[n] = timed_get(&url, fresh());
        n += 1;
    }
    let grown = rss_kib().saturating_sub(rss_before);
    let first = took[..WINDOW].to_vec();
    let last = took[n - WINDOW..n].to_vec();
    // The lower quartile: the cost every request pays, not the noise of others.
    let (first, last) = (quantile(first, 0.25), quantile(last, 0.25));
    let ratio = last.as_secs_f64() / first.as_secs_f64();
    eprintln!(
        "{n} configs in {:?}: RSS +{grown} KiB; GET p25 {first:?} (first {WINDOW}), {last:?} (last {WINDOW})",
        start.elapsed()
    );
    assert!(
        grown < 1024 && ratio < 2.0,
        "defect 6 (unbounded growth per ClientConfig): after {n} GETs, each with a new \
         ClientConfig, RSS grew by {grown} KiB ({} B per config; limit 1 MiB in all) and the \
         lower-quartile GET time went from {first:?} to {last:?} ({ratio:.1}x; limit 2x)",
        grown * 1024 / n as u64
    );
}

// ---------------------------------------------------------------------------
// Defect 7: writes of several chunks (`writev`) can raise SIGPIPE. Rust
// ignores SIGPIPE before `main`, but a host that does not (a C program, or a
// Rust program that restores the default) is killed. Each case runs in a
// child process that restores the default action first.

/// Runs the child test `name` and fails if it was killed by SIGPIPE.
fn survives_sigpipe(name: &str) {
    let outcome = child::run(name, &[], Duration::from_secs(30));
    assert!(
        outcome.signal != Some(libc::SIGPIPE),
        "defect 7 (SIGPIPE from writev): child {name} was killed by SIGPIPE after {:?}:\n{}",
        outcome.elapsed,
        outcome.summary()
    );
    assert_child_passed("defect 7 (SIGPIPE from writev)", name, &outcome);
}

/// In the child `name`: restores the default SIGPIPE action (death), as a C
/// host has it. False in any other process.
fn sigpipe_child(name: &str) -> bool {
    if !child::is_child(name) {
        return false;
    }
    // SAFETY: sets a signal's disposition to the default, before any thread of
    // ours depends on it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    true
}

/// A server whose replies have an 8 MiB body (written as head + body, with
/// `writev`); `/slow` waits 200 ms first.
fn serve_large() -> ServerHandle {
    let body = Bytes::from(vec![b'p'; 8 * MIB]);
    serve(move |task, _| {
        if task.request().path() == "/slow" {
            std::thread::sleep(Duration::from_millis(200));
        }
        task.response().set_body(body.clone());
    })
}

/// Closes `s` with a reset (SO_LINGER 0).
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// Defect 7: a server survives peers that half-close after their request and
/// then reset in the middle of a large reply.
#[test]
fn a_server_survives_half_closed_peers_that_reset_mid_reply() {
    let _serial = exclusive();
    survives_sigpipe("sigpipe_child_half_close_then_reset");
}

#[test]
#[ignore = "run by a_server_survives_half_closed_peers_that_reset_mid_reply"]
fn sigpipe_child_half_close_then_reset() {
    if !sigpipe_child("sigpipe_child_half_close_then_reset") {
        return;
    }
    let server = serve_large();
    for _ in 0..10 {
        let mut s = connect(server.local_addr());
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = s.read(&mut buf);
        reset(s);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server serves on.
    std::thread::sleep(Duration::from_millis(300));
    let after = raw_http::get_new(server.local_addr(), "/", Duration::from_secs(5));
    assert!(after.is(200), "after the resets: {after:?}");
}

/// Defect 7: a server survives a peer that is gone (half-closed, then reset)
/// before its large reply is written.
#[test]
fn a_server_survives_a_peer_gone_before_a_large_reply() {
    let _serial = exclusive();
    survives_sigpipe("sigpipe_child_gone_before_reply");
}

#[test]
#[ignore = "run by a_server_survives_a_peer_gone_before_a_large_reply"]
fn sigpipe_child_gone_before_reply() {
    if !sigpipe_child("sigpipe_child_gone_before_reply") {
        return;
    }
    let server = serve_large();
    for _ in 0..3 {
        let mut s = connect(server.local_addr());
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        reset(s);
        std::thread::sleep(Duration::from_millis(400)); // the reply is written meanwhile
    }
    let after = raw_http::get_new(server.local_addr(), "/", Duration::from_secs(5));
    assert!(after.is(200), "after the peers left: {after:?}");
}

/// Defect 7: a client survives a server that reads the head of a large
/// upload, then shuts its side and closes with the body unread.
#[test]
fn a_client_survives_a_server_that_aborts_an_upload() {
    let _serial = exclusive();
    survives_sigpipe("sigpipe_child_upload_aborted");
}

#[test]
#[ignore = "run by a_client_survives_a_server_that_aborts_an_upload"]
fn sigpipe_child_upload_aborted() {
    if !sigpipe_child("sigpipe_child_upload_aborted") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while raw_http::find(&head, b"\r\n\r\n").is_none() {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            std::thread::sleep(Duration::from_millis(20));
            let _ = s.shutdown(std::net::Shutdown::Write); // FIN
            drop(s); // the unread body turns the close into a reset
        }
    });
    let body = Bytes::from(vec![b'u'; 8 * MIB]);
    for i in 0..20 {
        eprintln!("upload {i}");
        let wg = WaitGroup::new(1);
        let done = wg.clone();
        let task =
            http::request("POST", &format!("http://{addr}/upload"), |_, _| {}).body(body.clone());
        Series::new(task).on_done(move |_| done.done()).start();
        assert!(
            wg.wait_timeout(Duration::from_secs(10)),
            "upload {i} never completed"
        );
    }
}

// ---------------------------------------------------------------------------
// Defect 8d: graceful shutdown closes a connection whose reply is still being
// written, cutting the reply off.

/// Defect 8d: `ServerHandle::shutdown(grace)` lets a reply that is still
/// being written (8 MiB to a slow reader, a quarter of it read) finish within
/// the grace period.
#[test]
fn graceful_shutdown_lets_a_reply_being_written_finish() {
    let _serial = exclusive();
    let log = MemoryLog::new();
    let body_len = 8 * MIB;
    let server = serve_bytes(ConnConfig::default(), body_len, &log);
    let mut s = connect(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // A slow but steady reader, 64 KiB every 2 ms; the shutdown starts once a
    // quarter of the reply has arrived (the server has queued the rest).
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let mut server = Some(server);
    let mut shutdown = None;
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(n) => got += n,
            Err(e) => break e.to_string(),
        }
        if got >= body_len / 4 {
            if let Some(server) = server.take() {
                shutdown = Some(std::thread::spawn(move || {
                    server.shutdown(Duration::from_secs(10))
                }));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let graceful = shutdown.map(|t| t.join().unwrap());
    let reason = records(&log, 1)[0].close_reason();
    assert!(
        got > body_len,
        "defect 8d (graceful shutdown cuts off a reply being written): the reader got {got} \
         bytes of an {body_len} B body (plus head) before {ended}; shutdown returned \
         {graceful:?}, the record says {reason:?}"
    );
    assert_eq!(graceful, Some(true), "shutdown(10 s) was not graceful");
}

// ---------------------------------------------------------------------------
// Defect 8e: the client's send timeout never restarts on progress.

/// Defect 8e: the client's send timeout (1 s) restarts whenever the socket
/// takes data: a 14 MB upload to a peer that steadily reads 64 KiB every
/// 10 ms (about 2 s in all) succeeds.
#[test]
fn the_client_send_timeout_restarts_on_progress() {
    let _serial = exclusive();
    const BODY: usize = 14_000_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let read_total = Arc::new(AtomicUsize::new(0));
    let total = read_total.clone();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut head = Vec::new();
        let mut body = None;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            total.fetch_add(n, Ordering::SeqCst);
            match body.as_mut() {
                Some(b) => *b += n,
                None => {
                    head.extend_from_slice(&buf[..n]);
                    if let Some(p) = raw_http::find(&head, b"\r\n\r\n") {
                        body = Some(head.len() - (p + 4));
                    }
                }
            }
            if body.is_some_and(|b| b >= BODY) {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let config = Arc::new(ClientConfig::new(ConnConfig {
        send_timeout: Duration::from_secs(1),
        ..ConnConfig::default()
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let task = http::request("POST", &format!("http://{addr}/upload"), move |t, _| {
        let _ = tx.send(t.result().map(|r| r.status()).map_err(|e| e.to_string()));
    })
    .body(vec![b'e'; BODY])
    .config(config);
    Series::new(task).start();
    let res = rx.recv_timeout(Duration::from_secs(15));
    let took = start.elapsed();
    assert_eq!(
        res,
        Ok(Ok(200)),
        "defect 8e (send timeout never restarts): a {BODY} B upload with send_timeout 1 s to a \
         peer reading steadily ended after {took:?} with {res:?}; the peer had read {} B",
        read_total.load(Ordering::SeqCst)
    );
}

// ---------------------------------------------------------------------------
// Defect 9 (checked here with handler threads; `defects_inline.rs` has the
// inline case, where it fails): pipelined requests must respect the high
// watermark.

/// The backpressure contract: a client that pipelines 1,000 requests for
/// 64 KiB replies and never reads makes the server queue no more than the
/// high watermark (256 KiB) plus one reply.
#[test]
fn a_pipelining_client_that_never_reads_stays_within_the_watermark() {
    let _serial = exclusive();
    let peak = pipelined_peak_of_64k_replies();
    assert!(
        peak <= WATERMARK_BOUND,
        "defect 9 (pipelining bypasses the high watermark): the server queued {peak} B for \
         one client that never reads (bound: {WATERMARK_BOUND} B)"
    );
}
