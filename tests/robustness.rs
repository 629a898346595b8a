//! Failure paths a review found in the engines, each reproduced with real
//! peers on 127.0.0.1: a poller stays alive, a peer gets all it was sent, and
//! no task, stream or pool slot waits for ever. One poller, so a test can
//! tell whether the poller thread still runs.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use support::*;
use taskweave::comm::{ClientConfig, ConnConfig, SendState, Stream};
use taskweave::http::{self, Server, ServerHandle, ServerTask};
use taskweave::metrics::{AccessLog, ConnStats};
use taskweave::{
    count_by_name, counter, named_counter, timer, Error, FnTask, Series, Settings, WaitGroup,
};

fn settings() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Settings {
            poller_threads: 1,
            ..Settings::default()
        }
        .apply()
        .expect("settings apply before any task runs");
    });
}

/// A server answering `/N` with N bytes.
fn sized_server() -> ServerHandle {
    settings();
    Server::builder()
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            let n: usize = task.request().path()[1..].parse().unwrap_or(0);
            task.response().set_body(vec![b'x'; n]);
        })
        .unwrap()
}

/// Whether the poller still serves: a new server on it answers.
fn poller_alive() -> bool {
    let server = sized_server();
    let mut s = connect(server.local_addr());
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).is_ok() && buf.ends_with(b"xx")
}

/// Sends pieces until the queue is above the high watermark, then waits
/// for the writable callback, which holds the stream's only handle; notes
/// when a send finds the stream over.
fn pump(stream: Stream, over: Arc<AtomicBool>) {
    loop {
        match stream.send(vec![b'x'; 16 * 1024]) {
            Ok(SendState::AboveHigh) => break,
            Ok(_) => {}
            Err(_) => return over.store(true, Ordering::SeqCst),
        }
    }
    let again = stream.clone();
    drop(stream);
    again.clone().on_writable(move || pump(again, over));
}

/// A shutdown ends a stream whose only handle waits in its writable
/// callback: the callback runs and finds the stream over, and the poller
/// lives on. (The client never reads, so what is queued cannot drain
/// within the grace period, and the rest is closed.)
#[test]
fn shutdown_ends_a_stream_whose_last_handle_is_in_its_writable_callback() {
    settings();
    let over = Arc::new(AtomicBool::new(false));
    let seen = over.clone();
    let server = Server::builder()
        .watermarks(1024, 64 * 1024)
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                if let Ok(stream) = task.stream() {
                    pump(stream, seen.clone());
                }
            },
        )
        .unwrap();
    let mut client = slow_client(server.local_addr());
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // above the high watermark
    let graceful = server.shutdown(Duration::from_millis(500));
    assert!(
        !graceful,
        "a client that never reads cannot drain the queue"
    );
    assert!(
        wait_until(Duration::from_secs(3), || over.load(Ordering::SeqCst)),
        "the writable callback never ran"
    );
    assert!(poller_alive(), "the poller thread is stuck");
}

/// A connection with a 4 KiB receive buffer.
fn slow_client(addr: std::net::SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// A peer that shuts its side after its request (HTTP/1.0 tools do) still
/// gets the whole reply, however much of it was queued when the end-of-file
/// arrived.
#[test]
fn a_half_closed_peer_gets_the_whole_reply() {
    let server = sized_server();
    for i in 0..24 {
        let size = (1 << 20) * (1 + i % 6) + 12_345 * i;
        let mut s = connect(server.local_addr());
        write!(s, "GET /{size} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let body = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| buf.len() - p - 4);
        assert_eq!(body, size, "reply {i} cut short");
    }
}

/// With a low watermark of 0 a stream's writable callback still runs once
/// the queue is empty, and the whole body arrives.
#[test]
fn a_zero_low_watermark_still_resumes_a_stream() {
    settings();
    const TOTAL: usize = 8 << 20;
    let server = Server::builder()
        .watermarks(0, 64 * 1024)
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            fn more(stream: Stream, left: usize) {
                let mut left = left;
                while left > 0 {
                    let n = left.min(64 * 1024);
                    left -= n;
                    match stream.send(vec![b'x'; n]) {
                        Ok(SendState::AboveHigh) => {
                            let s = stream.clone();
                            stream.on_writable(move || more(s, left));
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
                stream.finish();
            }
            task.response()
                .set_framing(http::Framing::Declared(TOTAL as u64));
            if let Ok(stream) = task.stream() {
                more(stream, TOTAL);
            }
        })
        .unwrap();
    let mut s = slow_client(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let p = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(buf.len() - p - 4, TOTAL, "the stream stalled");
}

/// User code inside `ReplyHandle::with` may let the series end (here by
/// counting its last task): the answer goes out when `with` returns.
#[test]
fn the_series_may_end_inside_reply_handle_with() {
    settings();
    let server = Server::builder()
        .serve(
            "127.0.0.1:0",
            |task: &mut ServerTask, series: &mut Series| {
                let handle = task.reply_handle();
                let last = counter(1, |_, _| {});
                let count = last.handle();
                series.push_back(last);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    handle.with(|t| {
                        t.response().set_body("filled");
                        count.count();
                    });
                });
            },
        )
        .unwrap();
    let mut s = connect(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("an answer");
    assert!(
        buf.ends_with(b"filled"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// A named counter whose series was cancelled before it ran leaves the
/// registry: a count by that name reaches the live counter.
#[test]
fn a_named_counter_that_never_ran_takes_no_counts() {
    settings();
    let wg = WaitGroup::new(2);
    let (a, b) = (wg.clone(), wg.clone());
    let mut dead = Series::new(FnTask(|s: &mut Series| s.cancel()));
    dead.push_back(named_counter("robustness-job", 1, |_, _| {}));
    dead.on_done(move |_| a.done()).start();
    Series::new(named_counter("robustness-job", 1, |_, _| {}))
        .on_done(move |_| b.done())
        .start();
    assert_eq!(count_by_name("robustness-job", 1), 1);
    assert!(
        wg.wait_timeout(Duration::from_secs(5)),
        "the count went to a counter that never ran"
    );
}

/// An access log that panics (user code) neither loses the request whose
/// connection it was logging nor keeps the pool's only slot.
#[test]
fn a_panicking_access_log_keeps_no_pool_slot() {
    struct PanicOnce(AtomicBool);
    impl AccessLog for PanicOnce {
        fn record(&self, _: &ConnStats) {
            if !self.0.swap(true, Ordering::SeqCst) {
                panic!("access log bug, on purpose");
            }
        }
    }
    settings();
    let server = Server::builder()
        .serve(
            "127.0.0.1:0",
            |task: &mut ServerTask, series: &mut Series| {
                if task.request().path() == "/slow" {
                    series.push_back(timer(Duration::from_secs(5), |_, _| {}));
                }
            },
        )
        .unwrap();
    let config = Arc::new(
        ClientConfig::new(ConnConfig {
            receive_timeout: Duration::from_millis(300),
            ..ConnConfig::default()
        })
        .max_per_target(1)
        .wait_timeout(Duration::from_secs(2))
        .access_log(PanicOnce(AtomicBool::new(false))),
    );
    let base = format!("http://{}", server.local_addr());
    let get = |path: &str| -> Option<Result<u16, Error>> {
        let out = Arc::new(Mutex::new(None));
        let (o, wg) = (out.clone(), WaitGroup::new(1));
        let done = wg.clone();
        let task = http::get(&format!("{base}{path}"), move |t, _| {
            *o.lock().unwrap() = Some(t.result().map(|r| r.status()).map_err(Clone::clone));
        })
        .config(config.clone());
        Series::new(task).on_done(move |_| done.done()).start();
        wg.wait_timeout(Duration::from_secs(5))
            .then(|| out.lock().unwrap().take())
            .flatten()
    };
    let first = get("/slow");
    assert!(
        matches!(first, Some(Err(Error::ReceiveTimeout))),
        "the request whose close panicked the log: {first:?}"
    );
    assert_eq!(
        get("/fast").and_then(Result::ok),
        Some(200),
        "the slot was kept"
    );
}

/// `max_waiting(0)` refuses only what would have to wait: a request that
/// finds a connection at once goes out.
#[test]
fn max_waiting_zero_still_sends_what_need_not_wait() {
    let server = sized_server();
    let config = Arc::new(ClientConfig::default().max_waiting(0));
    let out = Arc::new(Mutex::new(None));
    let (o, wg) = (out.clone(), WaitGroup::new(1));
    let done = wg.clone();
    let task = http::get(&format!("http://{}/3", server.local_addr()), move |t, _| {
        *o.lock().unwrap() = Some(t.result().map(|r| r.body().len()).map_err(Clone::clone));
    })
    .config(config);
    Series::new(task).on_done(move |_| done.done()).start();
    assert!(wg.wait_timeout(Duration::from_secs(5)));
    assert_eq!(*out.lock().unwrap(), Some(Ok(3)));
}

/// Connects that fail at once (a broadcast address is unreachable): each
/// request fails with the connect error and the poller lives on. (When many
/// requests wait behind a slow first attempt, each such failure once
/// recursed into the next attempt, deep enough to overflow the poller's
/// stack; the pool now goes on from a command instead.)
#[test]
fn connects_that_fail_at_once_fail_each_request_and_the_poller_lives() {
    settings();
    const N: usize = 1500;
    let config = Arc::new(ClientConfig::default().max_per_target(1).max_waiting(N));
    let failed = Arc::new(AtomicUsize::new(0));
    let wg = WaitGroup::new(N);
    for _ in 0..N {
        let (f, done) = (failed.clone(), wg.clone());
        let task = http::get("http://255.255.255.255:9/", move |t, _| {
            if t.result().is_err() {
                f.fetch_add(1, Ordering::SeqCst);
            }
        })
        .config(config.clone());
        Series::new(task).on_done(move |_| done.done()).start();
    }
    assert!(wg.wait_timeout(Duration::from_secs(20)), "requests hung");
    assert_eq!(failed.load(Ordering::SeqCst), N);
    assert!(poller_alive(), "the poller died");
}
