//! Issue 14: with handler threads and `Settings::poller_handoff`, a poller
//! runs the callbacks of its turn itself, with its loop set aside, and a
//! watcher thread hands the loop to a new thread when a callback blocks or
//! runs long. What that
//! must keep: a callback that sleeps, or one that computes for long, holds
//! up no other connection; a callback that panics costs only its own
//! request; and the thread that was stuck ends up in the handler pool.
//! Real HTTP over 127.0.0.1.

mod support;

use std::net::SocketAddr;
use std::sync::Once;
use std::time::{Duration, Instant};
use taskweave::http::{Server, ServerTask};
use taskweave::Series;

const CORE_THREADS: usize = 2;

fn start() -> SocketAddr {
    static SETTINGS: Once = Once::new();
    SETTINGS.call_once(|| {
        taskweave::Settings {
            poller_threads: 1,
            handler_threads: CORE_THREADS,
            poller_handoff: true,
            ..taskweave::Settings::default()
        }
        .apply()
        .expect("settings");
    });
    let handle = Server::builder()
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            match task.request().path() {
                "/sleep" => std::thread::sleep(Duration::from_millis(800)),
                "/spin" => {
                    let until = Instant::now() + Duration::from_millis(800);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
                "/panic" => panic!("a callback that panics"),
                _ => {}
            }
            task.response().set_body("done\n");
        })
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

/// How long a quick request on a new connection takes while `slow` is in
/// its callback; then checks that `slow` was answered too.
fn quick_request_beside(addr: SocketAddr, slow: &str) -> Duration {
    assert!(support::read_to_end(support::send_get_close(addr, "/")).contains("done"));
    let slow = support::send_get_close(addr, slow);
    // Let the slow request reach its callback.
    std::thread::sleep(Duration::from_millis(50));
    let asked = Instant::now();
    let fast = support::read_to_end(support::send_get_close(addr, "/"));
    let waited = asked.elapsed();
    assert!(fast.contains("done"), "{fast}");
    assert!(support::read_to_end(slow).contains("done"));
    waited
}

/// A quick request beside the slow callback at `slow` is not held up by it.
fn is_not_held_up_beside(slow: &str) {
    let _serial = support::exclusive();
    let waited = quick_request_beside(start(), slow);
    eprintln!("beside {slow}, a quick request took {waited:?}");
    // Without the handoff it would wait 750 ms; the watcher looks every
    // millisecond. The bound leaves room for a loaded machine.
    assert!(waited < Duration::from_millis(300), "waited {waited:?}");
}

#[test]
fn a_sleeping_callback_hands_the_loop_over() {
    is_not_held_up_beside("/sleep");
}

#[test]
fn a_spinning_callback_hands_the_loop_over() {
    is_not_held_up_beside("/spin");
}

#[test]
fn a_panicking_callback_costs_only_its_request() {
    let _serial = support::exclusive();
    let addr = start();
    let answer = support::read_to_end(support::send_get_close(addr, "/panic"));
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    for _ in 0..3 {
        assert!(support::read_to_end(support::send_get_close(addr, "/")).contains("done"));
    }
}

#[test]
fn the_stuck_thread_joins_the_pool_and_leaves_it() {
    let _serial = support::exclusive();
    let addr = start();
    // The other tests of this binary may have left extra threads, on their
    // way out.
    let before = support::handler_threads();
    quick_request_beside(addr, "/sleep");
    // The thread the loop was taken from goes on as a handler thread, named
    // so, and leaves after 10 s without work like any extra thread.
    assert!(
        support::wait_until(Duration::from_secs(5), || support::handler_threads()
            > before),
        "{} handler threads after a handoff",
        support::handler_threads()
    );
    support::assert_extra_threads_leave(CORE_THREADS, Duration::from_secs(25), addr, "done");
}
