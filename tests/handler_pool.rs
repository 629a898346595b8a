//! Issue 14: handler threads keep their promise that a callback that blocks
//! does not stall other connections, now that hand-offs wake as few threads
//! as they can. With two handler threads, four callbacks that sleep a second
//! each on four connections must not hold up a fifth connection's quick
//! request by more than a few milliseconds: the pool adds threads when work
//! waits with none free, and the extra threads leave once idle. And an
//! answer from a handler thread that no longer wakes the poller still
//! restarts the keep-alive clock, which still closes an idle connection.
//! Real HTTP over 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Once;
use std::time::{Duration, Instant};
use taskweave::http::{Server, ServerBuilder, ServerTask};
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::Series;

const CORE_THREADS: usize = 2;
const SLEEPERS: usize = 4;

fn start(builder: ServerBuilder) -> SocketAddr {
    static SETTINGS: Once = Once::new();
    SETTINGS.call_once(|| support::use_handler_threads(CORE_THREADS));
    let handle = builder
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            if task.request().path() == "/sleep" {
                std::thread::sleep(Duration::from_secs(1));
            }
            task.response().set_body("done\n");
        })
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

#[test]
fn four_sleeping_callbacks_do_not_delay_a_fifth_connection() {
    let addr = start(Server::builder());
    // Warm up, so the pool's core threads exist.
    assert!(support::read_to_end(support::send_get_close(addr, "/")).contains("done"));
    // A thread takes its name as it starts.
    assert!(
        support::wait_until(Duration::from_secs(5), || support::handler_threads()
            == CORE_THREADS),
        "{} handler threads",
        support::handler_threads()
    );

    let sleepers: Vec<TcpStream> = (0..SLEEPERS)
        .map(|_| support::send_get_close(addr, "/sleep"))
        .collect();
    // Let all four reach their callbacks.
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let fast = support::read_to_end(support::send_get_close(addr, "/"));
    let waited = asked.elapsed();
    assert!(fast.starts_with("HTTP/1.1 200"), "{fast}");
    eprintln!("the fifth connection's request took {waited:?}");
    // Without more threads it would wait for a sleeper: 900 ms or more. A
    // few milliseconds is the design (the pool's watchdog looks every
    // millisecond); the bound leaves room for a loaded machine.
    assert!(
        waited < Duration::from_millis(300),
        "the quick request waited {waited:?} behind the sleeping callbacks"
    );
    // More threads run callbacks now: the poller's thread, stuck in a
    // sleeping callback, handed its loop to a new one (one poller here).
    assert!(
        support::callback_threads() > CORE_THREADS + 1,
        "no thread was added: {} threads run callbacks",
        support::callback_threads()
    );
    for s in sleepers {
        assert!(support::read_to_end(s).starts_with("HTTP/1.1 200"));
    }
    // Extra threads leave after 10 s without work; the core ones stay, and
    // the pool still answers.
    support::assert_extra_threads_leave(CORE_THREADS, Duration::from_secs(20), addr, "done");
}

/// GETs `/` on a keep-alive connection and reads the whole response.
fn get(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"done\n") {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn keep_alive_restarts_with_each_answer_from_a_handler_thread() {
    let log = MemoryLog::new();
    let keep_alive = Duration::from_millis(400);
    let addr = start(
        Server::builder()
            .keep_alive_timeout(keep_alive)
            .access_log(log.clone()),
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let opened = Instant::now();
    // Four requests 250 ms apart: a second after the first, the connection
    // is still open only if each answer restarted the keep-alive clock.
    for _ in 0..4 {
        get(&mut s);
        std::thread::sleep(Duration::from_millis(250));
    }
    get(&mut s);
    assert!(opened.elapsed() > 2 * keep_alive);
    // Then idle: the server closes it.
    let idle = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).expect("a close, not a timeout"), 0);
    let waited = idle.elapsed();
    eprintln!("closed after {waited:?} idle (keep-alive {keep_alive:?})");
    assert!(
        waited >= keep_alive - keep_alive / 32,
        "closed after {waited:?} idle"
    );
    assert!(support::wait_until(Duration::from_secs(5), || !log
        .records()
        .is_empty()));
    assert_eq!(
        log.records()[0].close_reason(),
        Some(CloseReason::KeepAliveTimeout)
    );
}
