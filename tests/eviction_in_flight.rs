//! Review of issue 14 (58b4a1c): eviction at `max_connections` with requests
//! in flight on handler threads.
//!
//! A request dispatched to a handler thread now waits in the keep-alive queue
//! (`Wait::Answer`, armed at the dispatch), the queue eviction takes the
//! oldest from. An accept at the limit asks at most `EVICTION_TRIES` (4) of
//! the oldest to close: requests still in flight refuse (and leave the queue),
//! so with four older requests in flight an idle keep-alive connection behind
//! them is never reached and the new connection is refused. Before, requests
//! in flight had no deadline and were never in that queue.
//!
//! And a connection whose answer has just woken the poller (it came later than
//! the quiet window, its wake-up not yet handled) is evicted as if idle since
//! its dispatch, although it is the most recently active one.
//!
//! Real HTTP over 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;
use taskweave::http::{Server, ServerBuilder, ServerTask};
use taskweave::metrics::{AccessLog, CloseReason, ConnStats, MemoryLog};
use taskweave::Series;

/// The tests share one poller, which the second one holds: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn settings() {
    static SETTINGS: Once = Once::new();
    SETTINGS.call_once(|| support::use_handler_threads(2));
}

fn start(builder: ServerBuilder, sleep: Duration) -> SocketAddr {
    settings();
    let handle = builder
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                if task.request().path() == "/sleep" {
                    std::thread::sleep(sleep);
                }
                task.response().set_body("done\n");
            },
        )
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

fn ask(s: &mut TcpStream, path: &str) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
}

/// Reads one response (ending in "done\n"); `None` if the server closed
/// (or reset) the connection first.
fn response(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"done\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn an_idle_connection_behind_four_requests_in_flight_is_evicted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let log = MemoryLog::new();
    let addr = start(
        Server::builder().max_connections(5).access_log(log.clone()),
        Duration::from_millis(1500),
    );
    // Four requests that take 1.5 s, dispatched first: their keep-alive
    // deadlines (Wait::Answer) are the oldest.
    let mut sleepers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = support::connect(addr);
            ask(&mut s, "/sleep");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // One idle keep-alive connection: answered, then silent.
    let mut idle = support::connect(addr);
    ask(&mut idle, "/");
    assert!(response(&mut idle).is_some());
    std::thread::sleep(Duration::from_millis(50));
    // At the limit (5): the idle one should make room for this one.
    let mut newcomer = support::connect(addr);
    ask(&mut newcomer, "/");
    let got = response(&mut newcomer);
    let refused = log
        .records()
        .iter()
        .filter(|r| r.close_reason() == Some(CloseReason::LimitExceeded))
        .count();
    assert!(
        got.is_some(),
        "the newcomer was refused ({refused} refused) although an idle \
         keep-alive connection was open"
    );
    for s in &mut sleepers {
        assert!(response(s).is_some());
    }
}

/// An access log whose `opened` holds the poller while `hold` is set: what
/// the test uses to have an accept and a wake-up handled in the same turn.
struct Holding {
    inner: MemoryLog,
    opened: AtomicUsize,
    hold_at: usize,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl AccessLog for Holding {
    fn record(&self, stats: &ConnStats) {
        self.inner.record(stats);
    }
    fn opened(&self) {
        if self.opened.fetch_add(1, Ordering::SeqCst) + 1 == self.hold_at {
            let (lock, cv) = &*self.gate;
            let mut released = lock.lock().unwrap();
            let mut waited = Duration::ZERO;
            while !*released && waited < Duration::from_secs(5) {
                released = cv
                    .wait_timeout(released, Duration::from_millis(50))
                    .unwrap()
                    .0;
                waited += Duration::from_millis(50);
            }
        }
    }
}

#[test]
fn a_connection_answered_late_is_not_evicted_as_idle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let log = MemoryLog::new();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    // Keep-alive 3.2 s: the quiet window is 50 ms; the slow request's answer
    // comes after 300 ms, so it wakes the poller.
    let addr = start(
        Server::builder()
            .max_connections(2)
            .keep_alive_timeout(Duration::from_millis(3200))
            .access_log(Holding {
                inner: log.clone(),
                opened: AtomicUsize::new(0),
                hold_at: 2,
                gate: gate.clone(),
            }),
        Duration::from_millis(300),
    );
    // A: a slow request, dispatched to a handler thread.
    let mut a = support::connect(addr);
    ask(&mut a, "/sleep");
    std::thread::sleep(Duration::from_millis(50));
    // B: its accept holds the poller (in the access log's `opened`).
    let _b = support::connect(addr);
    // A's answer is written by the handler thread meanwhile; it wakes the
    // poller (late), which is held.
    assert!(response(&mut a).is_some(), "A's answer");
    // C arrives at the limit while the poller is still held: its accept is
    // handled in the same turn as B's, before A's wake-up.
    let mut c = support::connect(addr);
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    // A has just been answered: the oldest idle connection it is not. Its
    // next request is served.
    ask(&mut a, "/");
    let again = response(&mut a);
    if again.is_none() {
        support::wait_until(Duration::from_secs(2), || !log.records().is_empty());
    }
    let closed = log
        .records()
        .iter()
        .map(|r| r.close_reason())
        .collect::<Vec<_>>();
    assert!(
        again.is_some(),
        "A, answered a moment ago, was closed: records {closed:?}"
    );
    // C was refused (nothing idle to evict).
    let mut buf = [0u8; 16];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
}
