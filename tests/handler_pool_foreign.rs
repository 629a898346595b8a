//! Review of issue 14 (58b4a1c): jobs pushed on the handler pool from a
//! thread that is not a poller (here a stream's callbacks, deferred from the
//! test's own thread) must not wait behind a callback that blocks while other
//! handler threads sit parked.
//!
//! `Handlers::push` from a non-poller thread wakes a handler only when none is
//! *searching*; a handler woken for an earlier job counts as searching until it
//! has taken a job. So two quick pushes wake one thread: it takes the first
//! job, which blocks, and the second job waits for it, with the other handler
//! parked and no poller told to run the watchdog (`watch_needed` is set only
//! when nobody could be woken). Real HTTP over 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use taskweave::comm::Stream;
use taskweave::http::{Server, ServerTask};
use taskweave::Series;

#[test]
fn a_second_foreign_job_does_not_wait_behind_a_blocking_one() {
    support::use_handler_threads(2);
    let (give, streams) = mpsc::channel::<Stream>();
    let give = Mutex::new(give);
    let handle = Server::builder()
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                if let Ok(stream) = task.stream() {
                    let _ = give.lock().unwrap().send(stream);
                }
            },
        )
        .expect("serve");
    let mut client = TcpStream::connect(handle.local_addr()).expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let stream = streams
        .recv_timeout(Duration::from_secs(5))
        .expect("the stream");

    for round in 0..3 {
        // Let every handler thread park.
        std::thread::sleep(Duration::from_millis(200));
        // Two callbacks made due at once, from this (non-poller) thread: the
        // first blocks for a second, the second only reports when it ran.
        let (ran, has_run) = mpsc::channel();
        stream.on_writable(|| std::thread::sleep(Duration::from_secs(1)));
        let asked = Instant::now();
        stream.on_writable(move || {
            let _ = ran.send(asked.elapsed());
        });
        let waited = has_run
            .recv_timeout(Duration::from_secs(5))
            .expect("the second callback ran");
        eprintln!("round {round}: the second callback waited {waited:?}");
        assert!(
            waited < Duration::from_millis(300),
            "round {round}: the second callback waited {waited:?} behind a \
             blocking one while a handler thread was parked"
        );
        // Let the blocking one end before the next round.
        std::thread::sleep(Duration::from_millis(1100));
    }

    assert!(stream.finish());
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = client.read(&mut buf).expect("the stream's end");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(handle.shutdown(Duration::from_secs(2)));
}
