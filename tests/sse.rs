//! End-to-end tests of `examples/sse_server`, run as a child process (its
//! debug build; see `support::example`) and driven over 127.0.0.1 by curl,
//! raw sockets and headless Chromium: the stream's headers, slow consumers
//! under each overflow policy in bounded memory, pacing, `Last-Event-ID`
//! resume, multi-line data, bad input, and a graceful shutdown on SIGINT.
//!
//! Every wait is bounded. The tests that load the machine or measure time
//! take `support::exclusive()` so they do not disturb each other.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::example::Server;
use support::sse::{self, Client, End, Item};
use support::*;

const EXAMPLE: &str = "sse_server";

/// How long a test waits for one thing the server should send at once.
const PROMPT: Duration = Duration::from_secs(5);

/// A file path under the target's temporary directory, removed first.
fn tmp_path(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Starts the example with `args`.
fn server(args: &[&str]) -> Server {
    Server::start(EXAMPLE, args)
}

/// The server's `/metrics` text.
fn metrics(addr: SocketAddr) -> String {
    sse::Conn::new(addr).get("/metrics").text()
}

/// The access log's connection records at `path`, once it holds at least `n`
/// (waiting at most 10 s).
fn access_records(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|r: &serde_json::Value| r["kind"] == "conn")
            .collect()
    };
    wait_until(Duration::from_secs(10), || read().len() >= n);
    read()
}

/// The record in `records` of the connection from `peer`.
fn record_of(records: &[serde_json::Value], peer: SocketAddr) -> Option<&serde_json::Value> {
    let peer = peer.to_string();
    records.iter().find(|r| r["peer"] == peer.as_str())
}

/// The events in `items`, in order.
fn events(items: &[Item]) -> Vec<&sse::Event> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The ids of the events in `items`.
fn ids(items: &[Item]) -> Vec<u64> {
    events(items).iter().map(|e| e.num()).collect()
}

/// Must-show 1: `curl -N` sees an event stream's headers and the ticker's
/// events.
#[test]
fn curl_sees_the_stream_headers_and_ticker_events() {
    let srv = server(&["--tick-ms", "50", "--access-log", "off"]);
    let out = Command::new("curl")
        .args(["-sS", "-N", "-i", "--max-time", "1.5"])
        .arg(format!("http://{}/events", srv.addr()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("curl is needed (scripts/test.sh installs it): {e}"));
    // curl ends by its time limit (exit 28): the stream never ends itself.
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let status = head.lines().next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 200"), "{head}");
    let header = |name: &str| raw_http::header(head.as_bytes(), name);
    assert_eq!(header("Content-Type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("Cache-Control").as_deref(), Some("no-cache"));
    assert_eq!(header("X-Accel-Buffering").as_deref(), Some("no"));
    assert_eq!(header("Content-Length"), None, "{head}");
    // curl -N shows the body de-chunked: `id: N` / `data: tick N <ms>`
    // blocks (the last may be cut by the time limit: only whole ones count).
    let whole = &body[..body.rfind("\n\n").unwrap_or(0)];
    let blocks: Vec<&str> = whole.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert!(blocks.len() >= 5, "few events in 1.5 s at 50 ms: {body:?}");
    let mut last = 0;
    for block in &blocks {
        let lines: Vec<&str> = block.lines().collect();
        let [id, data] = lines[..] else {
            panic!("not an `id` and a `data` line: {block:?}")
        };
        let id: u64 = id
            .strip_prefix("id: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{block:?}"));
        let tick: Vec<&str> = data.split(' ').collect();
        let ["data:", "tick", n, ms] = tick[..] else {
            panic!("not `data: tick N MS`: {block:?}")
        };
        assert_eq!(n, id.to_string(), "the tick counts as the id: {block:?}");
        assert!(ms.parse::<u64>().is_ok(), "{block:?}");
        assert!(last == 0 || id == last + 1, "{last} then {id}");
        last = id;
    }
}

/// What one publisher did.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    events: u64,
    bytes: u64,
    last_id: u64,
}

/// Publishes `rate` x `span` events of `size` bytes on `topic`, at `rate` a
/// second, pipelined over one keep-alive connection (a batch every 10 ms; at
/// most 2,000 unanswered), then waits for the last answers. A publisher that
/// falls behind (a busy machine) may go on for half as long again.
fn publish_at_rate(
    addr: SocketAddr,
    topic: &str,
    rate: u64,
    size: usize,
    span: Duration,
) -> Published {
    let mut w = TcpStream::connect(addr).expect("connect the publisher");
    w.set_nodelay(true).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let last_id = Arc::new(AtomicU64::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut r = std::io::BufReader::new(w.try_clone().unwrap());
    let (a, l, stop) = (answered.clone(), last_id.clone(), stopping.clone());
    // Reads answers until the writer, having seen them all, shuts the
    // socket (a read error then is the end, not a failure).
    let reader = std::thread::spawn(move || -> Result<(), String> {
        loop {
            let reply = match sse::read_reply(&mut r) {
                Ok(reply) => reply,
                Err(_) if stop.load(Ordering::SeqCst) => return Ok(()),
                Err(e) => {
                    let n = a.load(Ordering::Relaxed);
                    return Err(format!("no answer to publish {}: {e}", n + 1));
                }
            };
            if reply.status != 200 {
                return Err(format!(
                    "publish answered {}: {}",
                    reply.status,
                    reply.text()
                ));
            }
            let id = reply.text().trim().parse().map_err(|_| reply.text())?;
            l.store(id, Ordering::Relaxed);
            a.fetch_add(1, Ordering::SeqCst);
        }
    });
    let req = sse::request(
        "POST",
        &format!("/publish?topic={topic}"),
        &[],
        &vec![b'e'; size],
    );
    let start = Instant::now();
    let total = rate * span.as_secs();
    let mut sent = 0u64;
    while sent < total && start.elapsed() < span * 3 / 2 && !reader.is_finished() {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let room = (answered.load(Ordering::SeqCst) + 2000).saturating_sub(sent);
        let n = due.saturating_sub(sent).min(room);
        if n > 0 {
            w.write_all(&req.repeat(n as usize)).expect("publish");
            sent += n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let all = wait_until(Duration::from_secs(20), || {
        answered.load(Ordering::SeqCst) >= sent || reader.is_finished()
    });
    stopping.store(true, Ordering::SeqCst);
    let _ = w.shutdown(std::net::Shutdown::Both);
    let read = reader.join().expect("the publisher's reader");
    let got = answered.load(Ordering::SeqCst);
    read.unwrap_or_else(|e| panic!("publisher to {addr}, {got} of {sent} answered: {e}"));
    assert!(
        all && got == sent,
        "publisher to {addr}: {got} of {sent} answered"
    );
    Published {
        events: sent,
        bytes: sent * size as u64,
        last_id: last_id.load(Ordering::Relaxed),
    }
}

/// Samples the RSS of `pids` every 20 ms until stopped; returns the peaks.
struct RssPeaks {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl RssPeaks {
    fn start(pids: Vec<u32>) -> RssPeaks {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0; pids.len()];
            while !s.load(Ordering::Relaxed) {
                for (peak, &pid) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(example::rss_kib_of(pid));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peaks
        });
        RssPeaks { stop, thread }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the RSS sampler")
    }
}

/// A short form of `items[i]` and its neighbours, for a failure message.
fn around(items: &[Item], i: usize) -> String {
    let lo = i.saturating_sub(3);
    let hi = (i + 4).min(items.len());
    let show = |it: &Item| match it {
        Item::Event(e) => format!("id {}", e.id.as_deref().unwrap_or("-")),
        Item::Comment(c) => format!(": {c}"),
        Item::Retry(r) => format!("retry {r}"),
    };
    items[lo..hi]
        .iter()
        .map(show)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Checks what a resumed reader got against the gap contract: ids strictly
/// increasing, the last one `last`, and each jump right after a `: N events
/// dropped` comment with N the number skipped, and no such comment anywhere
/// else. Returns the events skipped.
fn check_gaps_announced(policy: &str, items: &[Item], last: u64) -> u64 {
    let mut prev = 0u64;
    let mut note: Option<u64> = None;
    let (mut skipped, mut announced) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Comment(c) => {
                let n = c
                    .strip_suffix(" events dropped")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{policy}: unexpected comment {c:?}"));
                assert!(
                    note.is_none(),
                    "{policy}: two notes in a row: {}",
                    around(items, i)
                );
                note = Some(n);
                announced += n;
            }
            Item::Event(e) => {
                let id = e.num();
                assert!(id > prev, "{policy}: id {id} after {prev}");
                let jump = id - prev - 1;
                let noted = note.take().unwrap_or(0);
                assert!(
                    noted == jump,
                    "{policy}: id {id} after {prev} ({jump} skipped) right after a note of \
                     {noted}: {}",
                    around(items, i)
                );
                skipped += jump;
                prev = id;
            }
            Item::Retry(r) => panic!("{policy}: unexpected retry {r}"),
        }
    }
    assert_eq!(prev, last, "{policy}: the last published id arrives");
    assert_eq!(
        announced, skipped,
        "{policy}: events announced as dropped vs skipped"
    );
    skipped
}

/// A server whose subscriber to topic `t` read nothing while events were
/// published.
struct Stalled {
    policy: &'static str,
    server: Server,
    log: PathBuf,
    sub: Client,
    /// RSS before publishing, and its peak while publishing, in KiB.
    before_kib: u64,
    peak_kib: u64,
    published: Published,
}

/// Starts a server for each of `policies` (`--queue 64 --tick-ms 0`), each
/// with a subscriber whose receive buffer is 4 KiB, which reads the head and
/// stops; then publishes 1 KiB events to all of them at once, 2,500 a
/// second each for `span` (see [`publish_at_rate`]), sampling their RSS.
fn stall(policies: &[&'static str], span: Duration) -> Vec<Stalled> {
    let servers: Vec<(&'static str, Server, PathBuf)> = policies
        .iter()
        .map(|&p| {
            let log = tmp_path(&format!("sse_stalled_{p}.jsonl"));
            let args = ["--queue", "64", "--tick-ms", "0", "--policy", p];
            let srv = server(&[&args[..], &["--access-log", log.to_str().unwrap()]].concat());
            (p, srv, log)
        })
        .collect();
    let subs: Vec<Client> = servers
        .iter()
        .map(|(_, s, _)| {
            let sock = sse::connect(s.addr(), "/events?topic=t", &[], Some(4096)).unwrap();
            let c = Client::read_head(sock);
            assert_eq!(c.status, 200, "{}", c.head);
            c
        })
        .collect();
    let before: Vec<u64> = servers.iter().map(|(_, s, _)| s.rss_kib()).collect();
    let peaks = RssPeaks::start(servers.iter().map(|(_, s, _)| s.pid()).collect());
    let publishers: Vec<_> = servers
        .iter()
        .map(|(_, s, _)| {
            let addr = s.addr();
            std::thread::spawn(move || publish_at_rate(addr, "t", 2500, 1024, span))
        })
        .collect();
    let published: Vec<Published> = publishers
        .into_iter()
        .map(|p| p.join().expect("a publisher"))
        .collect();
    let peaks = peaks.stop();
    servers
        .into_iter()
        .zip(subs)
        .enumerate()
        .map(|(i, ((policy, server, log), sub))| Stalled {
            policy,
            server,
            log,
            sub,
            before_kib: before[i],
            peak_kib: peaks[i],
            published: published[i],
        })
        .collect()
}

/// The stalled reader of `run` resumes: reads until the last published
/// event, and checks the gaps (see [`check_gaps_announced`]). Under
/// `reject` the newest events were the refused ones, so one more event,
/// published once the reader has caught up, is the last, and must carry the
/// note for them. Returns the events skipped.
fn resume(run: &mut Stalled) -> u64 {
    let policy = run.policy;
    let mut last = run.published.last_id;
    let mut items = Vec::new();
    if policy == "reject" {
        let (got, end) = run.sub.drain(Duration::from_secs(2));
        assert_eq!(end, End::Timeout, "reject: the stream ended");
        items = got;
        last = sse::Conn::new(run.server.addr()).publish("t", b"one more");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match run.sub.next(PROMPT) {
            Ok(item) => {
                let done = matches!(&item, Item::Event(e) if e.num() >= last);
                items.push(item);
                if done {
                    break;
                }
            }
            Err(end) => panic!(
                "{policy}: the stream ended ({end:?}) before id {last}: {}",
                around(&items, items.len().saturating_sub(1))
            ),
        }
        assert!(Instant::now() < deadline, "{policy}: too slow to drain");
    }
    let skipped = check_gaps_announced(policy, &items, last);
    let got = events(&items).len();
    eprintln!("{policy}: the reader got {got} events, {skipped} announced as dropped");
    assert!(
        skipped > 0,
        "{policy}: nothing was dropped: the reader did not stall"
    );
    skipped
}

/// Waits (at most 10 s) for the access-log record at `path` of the
/// connection from `peer`.
fn record_from(path: &Path, peer: SocketAddr) -> serde_json::Value {
    let mut records = Vec::new();
    let found = wait_until(Duration::from_secs(10), || {
        records = access_records(path, 0);
        record_of(&records, peer).is_some()
    });
    assert!(
        found,
        "no record from {peer} in {}: {records:?}",
        path.display()
    );
    record_of(&records, peer).unwrap().clone()
}

/// Must-show 2: a subscriber that reads nothing for 10 s (up to 15 s on a
/// busy machine) while ~25 MB of 1 KiB events are published: each server's
/// memory stays bounded, and the client gets its policy's outcome (`--queue
/// 64`; the three servers run at once).
///
/// The bound on RSS growth: the subscriber's queue (64 events), one released
/// batch in the connection's queue (64 more) and the topic's history (1,024
/// events), each held once as ~1,100 bytes (1 KiB of data, its `id:` and
/// `data:` framing, the chunk header and the allocation), plus 4 MiB of slack
/// for the allocator's per-thread arenas and request buffers: about 5.2 MiB,
/// against ~25 MB published (the publisher must manage at least twice the
/// bound for the check to mean anything). Growth measured here: 2.0-2.4 MiB.
#[test]
fn a_stalled_subscriber_gets_its_policy_in_bounded_memory() {
    let _x = exclusive();
    const EVENT_BYTES: u64 = 1100;
    const BOUND_KIB: u64 = (64 + 64 + 1024) * EVENT_BYTES / 1024 + 4 * 1024;
    let mut runs = stall(
        &["drop-oldest", "reject", "disconnect"],
        Duration::from_secs(10),
    );
    for run in &runs {
        let (policy, p) = (run.policy, run.published);
        let growth = run.peak_kib.saturating_sub(run.before_kib);
        eprintln!(
            "{policy}: published {} events ({} KiB, last id {}); RSS {} KiB -> peak {} KiB \
             (+{growth} KiB, bound {BOUND_KIB} KiB)",
            p.events,
            p.bytes / 1024,
            p.last_id,
            run.before_kib,
            run.peak_kib
        );
        assert!(
            p.bytes / 1024 >= 2 * BOUND_KIB,
            "{policy}: only {} KiB published: too little to tell a bound",
            p.bytes / 1024
        );
        assert!(
            growth <= BOUND_KIB,
            "{policy}: RSS grew by {growth} KiB (bound {BOUND_KIB} KiB) for {} KiB published",
            p.bytes / 1024
        );
    }
    let [drop_oldest, reject, disconnect] = &mut runs[..] else {
        unreachable!()
    };
    // drop-oldest and reject: every gap announced right before it, up to
    // the last id; the refusals are counted.
    resume(drop_oldest);
    resume(reject);
    let m = metrics(reject.server.addr());
    let dropped = sse::metric(&m, "taskweave_sse_events_dropped_total{topic=\"t\"}");
    assert!(
        dropped.is_some_and(|d| d > 0.0),
        "reject: dropped_total {dropped:?}:\n{m}"
    );
    // disconnect: the server closed the stream; what arrived before it has
    // no gap; the access log says why.
    let (items, end) = disconnect.sub.drain(PROMPT);
    assert!(
        matches!(end, End::Eof | End::Reset),
        "disconnect: the stream ended by {end:?}"
    );
    let got = ids(&items);
    assert!(
        !got.is_empty() && got.iter().copied().eq(1..=got.len() as u64),
        "disconnect: ids with a gap or a note: {}",
        around(&items, 0)
    );
    let peer = disconnect.sub.socket().local_addr().unwrap();
    let rec = record_from(&disconnect.log, peer);
    assert_eq!(rec["close_reason"], "slow_consumer", "{rec}");
    for run in &mut runs {
        run.server.assert_running();
        let _ = std::fs::remove_file(&run.log);
    }
}

/// Must-show 3: `--rate 20 --burst 1` with a ticker at 100 events/s: the
/// reader gets 20 events/s (within 10%), counted over the 5 s after the
/// first event (which the burst lets go at once).
#[test]
fn the_subscriber_rate_holds_over_five_seconds() {
    let _x = exclusive();
    let srv = server(&[
        "--rate",
        "20",
        "--burst",
        "1",
        "--tick-ms",
        "10",
        "--access-log",
        "off",
    ]);
    let mut c = Client::open(srv.addr(), "/events", &[]);
    assert_eq!(c.status, 200, "{}", c.head);
    let first = c.next_event(PROMPT).expect("a first event");
    let t0 = Instant::now();
    let window = Duration::from_secs(5);
    let mut n = 0u64;
    let mut last = first.num();
    loop {
        let left = (t0 + window).saturating_duration_since(Instant::now());
        match c.next_event(left) {
            Ok(e) if t0.elapsed() <= window => {
                assert_eq!(
                    e.num(),
                    last + 1,
                    "no gap: the queue (1,024) never fills in 5 s"
                );
                last = e.num();
                n += 1;
            }
            Ok(_) | Err(End::Timeout) => break,
            Err(end) => panic!("the stream ended: {end:?}"),
        }
    }
    eprintln!("{n} events in the 5 s after the first (20/s: 100)");
    assert!((90..=110).contains(&n), "{n} events in 5 s at --rate 20");
}

/// The ids and data of the events in `items`, and its comments.
fn summary(items: &[Item]) -> (Vec<(u64, String)>, Vec<String>) {
    let evs = events(items)
        .iter()
        .map(|e| (e.num(), e.data.clone()))
        .collect();
    let comments = items
        .iter()
        .filter_map(|i| match i {
            Item::Comment(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    (evs, comments)
}

/// Reads items until the event with id `last` (at most 5 s for each).
fn read_until_id(c: &mut Client, last: u64) -> Vec<Item> {
    let mut items = Vec::new();
    loop {
        match c.next(PROMPT) {
            Ok(item) => {
                let done = matches!(&item, Item::Event(e) if e.num() >= last);
                items.push(item);
                if done {
                    return items;
                }
            }
            Err(end) => panic!("ended ({end:?}) before id {last}: {items:?}"),
        }
    }
}

/// `(id, "e{id}")` for each id in `ids`.
fn numbered(ids: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    ids.map(|i| (i, format!("e{i}"))).collect()
}

/// Publishes `e{i}` for each `i` of `ids` on `topic`, checking the ids the
/// server gives.
fn publish_numbered(p: &mut sse::Conn, topic: &str, ids: std::ops::RangeInclusive<u64>) {
    for i in ids {
        assert_eq!(p.publish(topic, format!("e{i}").as_bytes()), i);
    }
}

/// Must-show 4: `Last-Event-ID` resumes with no gap and no duplicate; a
/// non-numeric one gets 400.
#[test]
fn last_event_id_resumes_without_gap_or_duplicate() {
    let srv = server(&["--tick-ms", "0", "--access-log", "off"]);
    let addr = srv.addr();
    let mut p = sse::Conn::new(addr);
    let mut c = Client::open(addr, "/events?topic=r", &[]);
    assert_eq!(c.status, 200);
    publish_numbered(&mut p, "r", 1..=50);
    let (evs, comments) = summary(&read_until_id(&mut c, 30));
    assert_eq!(evs, numbered(1..=30));
    assert!(comments.is_empty(), "{comments:?}");
    drop(c);
    publish_numbered(&mut p, "r", 51..=80);
    let mut c = Client::open(addr, "/events?topic=r", &[("Last-Event-ID", "30")]);
    assert_eq!(c.status, 200, "{}", c.head);
    let (evs, comments) = summary(&read_until_id(&mut c, 80));
    assert_eq!(evs, numbered(31..=80), "the history after 30, whole");
    assert!(comments.is_empty(), "{comments:?}");
    publish_numbered(&mut p, "r", 81..=85);
    let (evs, comments) = summary(&read_until_id(&mut c, 85));
    assert_eq!(evs, numbered(81..=85), "then live ones");
    assert!(comments.is_empty(), "{comments:?}");
    let (more, end) = c.drain(Duration::from_millis(300));
    assert!(
        more.is_empty() && end == End::Timeout,
        "nothing more: {more:?} {end:?}"
    );
    // A non-numeric id.
    for bad in ["abc", "-1", "1.5", "99999999999999999999"] {
        let mut s = sse::connect(addr, "/events?topic=r", &[("Last-Event-ID", bad)], None).unwrap();
        let reply = raw_http::read_reply(&mut s, PROMPT, Instant::now());
        assert!(reply.is(400), "Last-Event-ID {bad}: {reply:?}");
    }
}

/// Must-show 4, continued: with `--history 10`, an id older than the
/// history gets `: N events missed` (N right) and then the history; an id
/// ahead of the topic gets a comment and then live events.
#[test]
fn last_event_id_past_the_history_or_ahead_is_announced() {
    let srv = server(&["--tick-ms", "0", "--history", "10", "--access-log", "off"]);
    let addr = srv.addr();
    let mut p = sse::Conn::new(addr);
    publish_numbered(&mut p, "h", 1..=50);
    // Resuming after 5: 6..=40 are gone (35), the history is 41..=50.
    let mut c = Client::open(addr, "/events?topic=h", &[("Last-Event-ID", "5")]);
    assert_eq!(c.status, 200);
    let items = read_until_id(&mut c, 50);
    let Some(Item::Comment(note)) = items.first() else {
        panic!("no comment first: {items:?}")
    };
    assert!(note.starts_with("35 events missed"), "{note:?}");
    let (evs, comments) = summary(&items[1..]);
    assert_eq!(evs, numbered(41..=50));
    assert!(comments.is_empty(), "{comments:?}");
    publish_numbered(&mut p, "h", 51..=51);
    let (evs, _) = summary(&read_until_id(&mut c, 51));
    assert_eq!(evs, numbered(51..=51));
    // Resuming right at the oldest kept id's predecessor: no note.
    let mut c = Client::open(addr, "/events?topic=h", &[("Last-Event-ID", "41")]);
    let (evs, comments) = summary(&read_until_id(&mut c, 51));
    assert_eq!(evs, numbered(42..=51));
    assert!(comments.is_empty(), "{comments:?}");
    // Ahead of the topic (the server restarted, say): a comment, then live.
    let mut c = Client::open(addr, "/events?topic=h", &[("Last-Event-ID", "1000")]);
    assert_eq!(c.status, 200);
    let first = c.next(PROMPT).expect("a comment");
    let Item::Comment(note) = &first else {
        panic!("not a comment: {first:?}")
    };
    assert!(note.contains("ahead"), "{note:?}");
    assert!(note.contains("1000") && note.contains("51"), "{note:?}");
    publish_numbered(&mut p, "h", 52..=53);
    let (evs, comments) = summary(&read_until_id(&mut c, 53));
    assert_eq!(evs, numbered(52..=53));
    assert!(comments.is_empty(), "{comments:?}");
}

/// A resume owed more events than the subscriber's queue holds gets the
/// newest that fit (its queue less one, for the note) and a note counting the
/// rest, instead of meeting its own overflow policy (here `disconnect`,
/// which would close it at once and have it reconnect forever).
#[test]
fn a_resume_longer_than_the_queue_gets_what_fits_and_a_note() {
    let srv = server(&[
        "--tick-ms",
        "0",
        "--history",
        "100",
        "--queue",
        "8",
        "--policy",
        "disconnect",
        "--access-log",
        "off",
    ]);
    let addr = srv.addr();
    let mut p = sse::Conn::new(addr);
    publish_numbered(&mut p, "q", 1..=50);
    // Owed 11..=50 (40); the queue holds 8: 7 events and the note.
    let mut c = Client::open(addr, "/events?topic=q", &[("Last-Event-ID", "10")]);
    assert_eq!(c.status, 200);
    let items = read_until_id(&mut c, 50);
    let Some(Item::Comment(note)) = items.first() else {
        panic!("no comment first: {items:?}")
    };
    assert_eq!(note, "33 events missed: resuming at id 44");
    let (evs, comments) = summary(&items[1..]);
    assert_eq!(evs, numbered(44..=50));
    assert!(comments.is_empty(), "{comments:?}");
    // Still subscribed: the next event arrives.
    publish_numbered(&mut p, "q", 51..=51);
    let (evs, _) = summary(&read_until_id(&mut c, 51));
    assert_eq!(evs, numbered(51..=51));
}

/// The multi-line bodies of the issue and what a WHATWG parser must make of
/// each: line breaks of any style come back as LF.
const MULTI_LINE: [(&str, &str); 4] = [
    ("a\nb", "a\nb"),
    ("a\rb", "a\nb"),
    ("a\r\nb", "a\nb"),
    ("x\r\n\r\ny\n", "x\n\ny\n"),
];

/// Must-show 5: data with LF, CR and CRLF line breaks round-trips (parsed
/// by the WHATWG rules), and so do a leading space and empty data.
#[test]
fn multi_line_data_round_trips() {
    let srv = server(&["--tick-ms", "0", "--access-log", "off"]);
    let mut c = Client::open(srv.addr(), "/events?topic=ml", &[]);
    assert_eq!(c.status, 200);
    let mut p = sse::Conn::new(srv.addr());
    let extra = [(" lead", " lead"), ("", ""), ("\r", "\n"), ("\n\n", "\n\n")];
    let cases: Vec<(&str, &str)> = MULTI_LINE.iter().chain(&extra).copied().collect();
    for (body, _) in &cases {
        p.publish("ml", body.as_bytes());
    }
    let items = read_until_id(&mut c, cases.len() as u64);
    let (evs, comments) = summary(&items);
    assert!(comments.is_empty(), "{comments:?}");
    let want: Vec<(u64, String)> = (1..)
        .zip(cases.iter().map(|(_, w)| w.to_string()))
        .collect();
    assert_eq!(evs, want, "(id, data) of each event");
}

/// A client that has the stream's head is subscribed: an event published
/// right after the head arrived reaches it (300 fresh topics; before the
/// hub added the subscriber ahead of writing the head, a few percent missed
/// it).
#[test]
fn an_event_published_once_the_head_arrived_is_delivered() {
    let srv = server(&["--tick-ms", "0", "--access-log", "off"]);
    let mut p = sse::Conn::new(srv.addr());
    let mut missed = Vec::new();
    for i in 0..300 {
        let topic = format!("race{i}");
        let mut c = Client::open(srv.addr(), &format!("/events?topic={topic}"), &[]);
        assert_eq!(c.status, 200);
        assert_eq!(p.publish(&topic, b"first"), 1);
        match c.next_event(Duration::from_secs(1)) {
            Ok(e) if e.num() == 1 => {}
            other => missed.push((i, other)),
        }
        if missed.len() >= 3 {
            break;
        }
    }
    assert!(
        missed.is_empty(),
        "missed (round, what came instead): {missed:?}"
    );
}

/// Headless Chromium in a process group of its own, killed with the group
/// when dropped.
struct Browser {
    child: std::process::Child,
    profile: PathBuf,
    output: PathBuf,
}

impl Browser {
    /// Whether `chromium` runs here.
    fn available() -> bool {
        child::works("chromium", &["--version"])
    }

    /// Opens `url` in headless Chromium with a fresh profile. Every host but
    /// 127.0.0.1 resolves to nothing and any other traffic goes to a dead
    /// proxy, and background services are off, so it talks to our server
    /// only.
    fn open(url: &str) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tmp_path("sse_chromium_profile");
        let output = tmp_path("sse_chromium_output.txt");
        let out = std::fs::File::create(&output).unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                &format!("--user-data-dir={}", profile.display()),
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-dev-shm-usage",
                "--proxy-server=127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        Browser {
            child,
            profile,
            output,
        }
    }

    /// The end of what Chromium printed, for a failure message.
    fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) of the process group our child leads (it was
            // started with process_group(0) and is not reaped yet).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(&self.output);
    }
}

/// Milliseconds since the Unix epoch (the browser's `Date.now()` clock).
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Must-show 6: the page's `EventSource` in headless Chromium gets the
/// multi-line events LF-normalized, with no gap or duplicate, at the
/// server's rate.
///
/// The server paces each subscriber at 10 events/s with a burst of 1, and
/// the test publishes 50/s, so the browser's queue never runs dry (nor
/// fills: 1,024). The page reports `events` and, by its own clock, when it
/// started and how long after that it reported; the test notes (same wall
/// clock) when it published the first event. The burst lets the first event
/// go at once, then one goes every 100 ms: so the rate is `(events - 1) /
/// (report time - first publish time)`, which must be within 10% of 10/s.
/// (Events over the page's own `elapsed_ms` would count the page's loading
/// and subscribing, before any event, as time at rate 0.)
#[test]
fn chromium_event_source_sees_the_stream() {
    let _x = exclusive();
    if !Browser::available() {
        child::missing("chromium (scripts/test.sh installs it)");
        return;
    }
    let srv = server(&[
        "--rate",
        "10",
        "--burst",
        "1",
        "--tick-ms",
        "0",
        "--access-log",
        "off",
    ]);
    let addr = srv.addr();
    let mut reports = Client::open(addr, "/events?topic=browser-report", &[]);
    assert_eq!(reports.status, 200);
    let browser = Browser::open(&format!("http://{addr}/?topic=ml&report=5"));
    let subscribed = wait_until(Duration::from_secs(30), || {
        sse::metric(&metrics(addr), "taskweave_sse_subscribers{topic=\"ml\"}") == Some(1.0)
    });
    assert!(
        subscribed,
        "the browser never subscribed to ml; chromium said:\n{}",
        browser.output_tail()
    );
    let mut p = sse::Conn::new(addr);
    let first_ms = wall_ms();
    for (body, _) in MULTI_LINE {
        p.publish("ml", body.as_bytes());
    }
    // One event every 20 ms until the report comes (the page sends it 5 s
    // after it started).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    let report = loop {
        assert!(
            Instant::now() < deadline,
            "no report from the page; chromium said:\n{}",
            browser.output_tail()
        );
        n += 1;
        p.publish("ml", format!("live {n}").as_bytes());
        match reports.next_event(Duration::from_millis(20)) {
            Ok(e) => break e,
            Err(End::Timeout) => {}
            Err(end) => panic!("the report stream ended: {end:?}"),
        }
    };
    drop(browser);
    let r: serde_json::Value = serde_json::from_str(&report.data)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}): {:?}", report.data));
    eprintln!("the page reported {r}");
    let data: Vec<&str> = r["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d.as_str().expect("a string"))
        .collect();
    let want: Vec<&str> = MULTI_LINE.iter().map(|(_, w)| *w).collect();
    assert!(data.len() >= 4, "{r}");
    assert_eq!(data[..4], want[..], "the first four events' data");
    assert_eq!(r["first_id"], 1, "{r}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    let events = r["events"].as_f64().expect("events");
    let report_ms = r["started_ms"].as_f64().expect("started_ms")
        + r["elapsed_ms"].as_f64().expect("elapsed_ms");
    let span = (report_ms - first_ms) / 1000.0;
    let rate = (events - 1.0) / span;
    eprintln!("{events} events, the first at once, the rest over {span:.2} s: {rate:.2}/s");
    assert!(
        span > 1.0,
        "too little time between the first event and the report: {span} s"
    );
    assert!(
        (9.0..=11.0).contains(&rate),
        "{rate:.2} events/s at --rate 10: {r}"
    );
}

/// Must-show 7: bad input gets 4xx or 503 and breaks nothing: a topic too
/// long or with a byte outside its alphabet (400), an event over
/// `--max-event-bytes` (413), a body that is not UTF-8 (400), subscribers
/// past `--max-subscribers` (503); the server then still answers.
#[test]
fn bad_input_is_refused_and_the_server_stays_up() {
    let mut srv = server(&[
        "--tick-ms",
        "0",
        "--max-subscribers",
        "50",
        "--max-event-bytes",
        "1000",
        "--access-log",
        "off",
    ]);
    let addr = srv.addr();
    let mut p = sse::Conn::new(addr);
    let long = "t".repeat(129);
    let ok = "t".repeat(128);
    let status = |p: &mut sse::Conn, method: &str, path: &str, body: &[u8]| {
        p.send(method, path, &[], body).status
    };
    assert_eq!(
        status(&mut p, "POST", &format!("/publish?topic={ok}"), b"x"),
        200
    );
    for path in [
        format!("/publish?topic={long}"),
        "/publish?topic=a%01b".into(),
        "/publish?topic=a%20b".into(),
        "/publish?topic=".into(),
    ] {
        assert_eq!(status(&mut p, "POST", &path, b"x"), 400, "{path}");
    }
    for path in [
        format!("/events?topic={long}"),
        "/events?topic=a%01b".into(),
        "/events?topic=a%20b".into(),
        "/events?topic=".into(),
    ] {
        assert_eq!(status(&mut p, "GET", &path, b""), 400, "{path}");
    }
    // A raw control byte in the request target, on a socket of its own.
    for raw in [
        &b"GET /events?topic=a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /publish?topic=a\x01b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(raw).unwrap();
        let reply = raw_http::read_reply(&mut s, PROMPT, Instant::now());
        assert_eq!(
            reply.status,
            Some(400),
            "{:?}: {reply:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Event size.
    assert_eq!(
        status(&mut p, "POST", "/publish?topic=s", &[b'x'; 1000]),
        200
    );
    assert_eq!(
        status(&mut p, "POST", "/publish?topic=s", &[b'x'; 1001]),
        413
    );
    // Not UTF-8.
    assert_eq!(status(&mut p, "POST", "/publish?topic=s", b"caf\xe9"), 400);
    assert_eq!(status(&mut p, "POST", "/publish?topic=s", b"\xff\xfe"), 400);
    // 80 subscribers against a limit of 50.
    let socks: Vec<TcpStream> = (0..80)
        .map(|_| sse::connect(addr, "/events?topic=s", &[], None).unwrap())
        .collect();
    let clients: Vec<Client> = socks.into_iter().map(Client::read_head).collect();
    let count = |code| clients.iter().filter(|c| c.status == code).count();
    assert_eq!(
        (count(200), count(503)),
        (50, 30),
        "200s and 503s of 80 streams"
    );
    let m = metrics(addr);
    assert_eq!(
        sse::metric(&m, "taskweave_sse_subscribers{topic=\"s\"}"),
        Some(50.0),
        "{m}"
    );
    // The open ones are live streams.
    let id = p.publish("s", b"to all");
    for mut c in clients.into_iter().filter(|c| c.status == 200) {
        let e = c.next_event(PROMPT).expect("an event on an open stream");
        assert_eq!((e.num(), e.data.as_str()), (id, "to all"));
    }
    // Closed, they free their places.
    let freed = wait_until(Duration::from_secs(10), || {
        sse::metric(&metrics(addr), "taskweave_sse_subscribers{topic=\"s\"}") == Some(0.0)
    });
    assert!(freed, "subscribers left after closing: {}", metrics(addr));
    let c = Client::open(addr, "/events?topic=s", &[]);
    assert_eq!(c.status, 200);
    // Still up, and no panic was reported.
    assert_eq!(sse::Conn::new(addr).get("/metrics").status, 200);
    srv.assert_running();
    assert!(!srv.stderr().contains("panicked"), "{}", srv.stderr());
}

/// Must-show 8: SIGINT shuts the server down gracefully: an open stream
/// gets `: server shutting down`, `retry: 3000` and the last chunk; the
/// process exits 0 within a few seconds; the access log has a record of
/// every connection, the stream's with the events it sent.
#[test]
fn sigint_ends_streams_cleanly_and_logs_every_connection() {
    let log = tmp_path("sse_sigint.jsonl");
    let mut srv = server(&["--tick-ms", "50", "--access-log", log.to_str().unwrap()]);
    let addr = srv.addr();
    let mut peers = Vec::new();
    // 1: a stream of the ticker, three events read.
    let mut stream = Client::open(addr, "/events", &[]);
    assert_eq!(stream.status, 200);
    peers.push(stream.socket().local_addr().unwrap());
    let mut seen = 0;
    while seen < 3 {
        stream.next_event(PROMPT).expect("a tick");
        seen += 1;
    }
    // 2: two publishes on one connection, closed.
    let mut p = sse::Conn::new(addr);
    p.publish("x", b"one");
    p.publish("x", b"two");
    peers.push(p.socket().local_addr().unwrap());
    drop(p);
    // 3: a 404, closed.
    let mut q = sse::Conn::new(addr);
    assert_eq!(q.get("/nope").status, 404);
    peers.push(q.socket().local_addr().unwrap());
    drop(q);
    // 4: a 400, closed by us after the reply.
    let mut s = sse::connect(addr, "/events?topic=a%20b", &[], None).unwrap();
    assert!(raw_http::read_reply(&mut s, PROMPT, Instant::now()).is(400));
    peers.push(s.local_addr().unwrap());
    drop(s);
    // 5: metrics, left open and idle.
    let mut idle = sse::Conn::new(addr);
    assert_eq!(idle.get("/metrics").status, 200);
    peers.push(idle.socket().local_addr().unwrap());

    let t0 = Instant::now();
    srv.signal(libc::SIGINT);
    let (items, end) = stream.drain(PROMPT);
    let tail: Vec<&Item> = items
        .iter()
        .filter(|i| !matches!(i, Item::Event(_)))
        .collect();
    assert_eq!(
        tail,
        [
            &Item::Comment("server shutting down".into()),
            &Item::Retry("3000".into())
        ],
        "the farewell: {items:?}"
    );
    assert!(
        matches!(items.last(), Some(Item::Retry(_))),
        "nothing after the farewell: {items:?}"
    );
    assert_eq!(end, End::LastChunk, "the stream's end");
    seen += events(&items).len();
    let status = srv.wait_exit(Duration::from_secs(8));
    let took = t0.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running 8 s after SIGINT: {}", srv.stderr()));
    eprintln!("exited {status} {took:?} after SIGINT");
    assert!(status.success(), "{status}: {}", srv.stderr());
    assert!(took < Duration::from_secs(5), "took {took:?} to exit");
    // The idle connection was closed too.
    let mut rest = Vec::new();
    let _ = idle.socket().set_read_timeout(Some(PROMPT));
    let mut sock = idle.socket();
    let closed = sock.read_to_end(&mut rest).is_ok();
    assert!(closed && rest.is_empty(), "the idle connection: {rest:?}");
    // Every connection has its record (the log is flushed before exit).
    let records = access_records(&log, 0);
    assert_eq!(records.len(), peers.len(), "records: {records:?}");
    for peer in &peers {
        assert!(
            record_of(&records, *peer).is_some(),
            "no record from {peer}: {records:?}"
        );
    }
    let rec = record_of(&records, peers[0]).unwrap();
    let sent = rec["events_sent"].as_u64().expect("events_sent");
    assert!(
        sent >= seen as u64 && sent > 0,
        "events_sent {sent}, seen {seen}: {rec}"
    );
    assert_eq!(rec["close_reason"], "server_shutdown", "{rec}");
    let _ = std::fs::remove_file(&log);
}
