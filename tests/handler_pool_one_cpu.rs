//! Issue 14: on one CPU, handler threads that take no job for a while are
//! only waiting for the CPU, not blocked. Before the watchdog asked the
//! kernel, it read a millisecond without progress as a blocked callback and
//! added threads under any load that kept the poller busy: at 50 and 1,000
//! wrk connections the pool grew to three threads, each adding context
//! switches to every batch. Here the whole process is pinned to one CPU
//! (`taskset`, util-linux) and 200 keep-alive connections keep the server
//! busy for 2 s; the pool must stay at its one core thread. With the
//! poller handoff (the default), the poller runs the callbacks itself, and
//! the watcher must not mistake its waits for the CPU for a stuck callback:
//! no thread takes its loop over either. Linux only.

#![cfg(target_os = "linux")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::child;
use taskweave::http::{Server, ServerTask};
use taskweave::Series;

const CLIENTS: usize = 4;
const CONNS_PER_CLIENT: usize = 50;
const LOAD: Duration = Duration::from_secs(2);

#[test]
fn a_busy_cpu_adds_no_handler_threads() {
    if Command::new("taskset").arg("-V").output().is_err() {
        child::missing("taskset (util-linux)");
        return;
    }
    support::use_handler_threads(1);
    let handle = Server::builder()
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            task.response().set_body("ok\n");
        })
        .expect("serve");
    let addr = handle.local_addr();
    assert!(support::read_to_end(support::send_get_close(addr, "/")).contains("ok"));
    assert_eq!(support::handler_threads(), 1);

    // Every thread of this process, the runtime's and those to come, on CPU 0.
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .output()
        .expect("run taskset");
    assert!(pinned.status.success(), "taskset: {pinned:?}");

    let answered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + LOAD;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let answered = answered.clone();
            std::thread::spawn(move || keep_busy(addr, deadline, &answered))
        })
        .collect();
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered > 1000, "only {answered} requests answered");
    assert_eq!(
        support::handler_threads(),
        1,
        "the pool grew under load alone ({answered} requests answered)"
    );
    // The poller and its one handler: a take-over would have added a thread.
    assert_eq!(
        support::callback_threads(),
        2,
        "a thread took the poller's loop over under load alone"
    );
    handle.shutdown(Duration::from_secs(1));
}

/// Sends a request on each of its connections, then reads each answer,
/// until `deadline`.
fn keep_busy(addr: SocketAddr, deadline: Instant, answered: &AtomicU64) {
    let mut conns: Vec<TcpStream> = (0..CONNS_PER_CLIENT)
        .map(|_| support::connect(addr))
        .collect();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        for s in &mut conns {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
        }
        for s in &mut conns {
            // The answer is small: it ends with its "ok\n" body.
            let mut got = Vec::new();
            while !got.ends_with(b"ok\n") {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "the server closed a keep-alive connection");
                got.extend_from_slice(&buf[..n]);
            }
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
