//! Review of issue 14 (58b4a1c): extra handler threads, added while callbacks
//! blocked, are meant to leave after 10 s without work. But every parked
//! thread waits on one condition variable, and `notify_one` wakes the one
//! that has waited longest (futex order): under a light steady load each
//! wake-up goes to the next thread in turn, so none is ever parked for 10 s
//! and the pool keeps the size of its worst moment for as long as any load
//! lasts. Real HTTP over 127.0.0.1; about 15 s.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use taskweave::http::{Server, ServerTask};
use taskweave::Series;

const CORE_THREADS: usize = 2;

#[test]
fn extra_threads_leave_under_a_light_steady_load() {
    support::use_handler_threads(CORE_THREADS);
    let handle = Server::builder()
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            if task.request().path() == "/sleep" {
                std::thread::sleep(Duration::from_millis(500));
            }
            task.response().set_body("done\n");
        })
        .expect("serve");
    let addr = handle.local_addr();
    assert!(support::read_to_end(support::send_get_close(addr, "/")).contains("done"));
    // A spike of blocking callbacks grows the pool.
    let sleepers: Vec<TcpStream> = (0..6)
        .map(|_| support::send_get_close(addr, "/sleep"))
        .collect();
    for s in sleepers {
        assert!(support::read_to_end(s).contains("done"));
    }
    let grown = support::handler_threads();
    assert!(grown > CORE_THREADS, "the pool did not grow: {grown}");
    // Then a light load: one quick request every 40 ms, which one thread
    // serves with ease, for 14 s (the extra threads' idle limit is 10 s).
    let until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < until {
        assert!(support::read_to_end(support::send_get_close(addr, "/")).contains("done"));
        std::thread::sleep(Duration::from_millis(40));
    }
    let now = support::handler_threads();
    eprintln!("handler threads: {grown} after the spike, {now} after 14 s of light load");
    assert!(
        now < grown,
        "no extra thread left in 14 s of light load: {now} handler threads"
    );
}
