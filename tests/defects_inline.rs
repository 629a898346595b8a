//! Regression tests for the defects found in review that show with `process`
//! and callbacks running inline on the poller threads (`handler_threads: 0`).
//! Settings are process-wide, so these live apart from `defects.rs`.

mod support;

use std::sync::Once;
use std::time::Duration;
use support::raw_http;
use support::*;

// The public API these tests use; paths that may move are imported here only.
use taskweave::http::{Server, ServerTask};
use taskweave::{timer, Series, Settings, WaitGroup};

/// Inline mode, with the default number of pollers.
fn inline() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Settings {
            handler_threads: 0,
            ..Settings::default()
        }
        .apply()
        .expect("settings apply before any task runs");
    });
}

// ---------------------------------------------------------------------------
// Defect 4, inline: a panic in `process` unwinds through the poller's loop and
// ends the poller thread, with every connection, listener and timer on it.

/// Defect 4: when `process` panics inline, the poller thread survives: the
/// client gets a 500 (or at least a close), keep-alive connections opened
/// before keep working, and timers still fire. It runs in a child process,
/// because today the panic kills pollers for every other test in the process.
#[test]
fn a_panicking_inline_process_does_not_kill_its_poller() {
    let name = "inline_panic_child";
    let outcome = child::run(name, &[], Duration::from_secs(30));
    assert!(
        outcome.passed(),
        "defect 4 (inline: a panicking process kills its poller thread): the child ended with {}",
        outcome.describe()
    );
}

#[test]
#[ignore = "run by a_panicking_inline_process_does_not_kill_its_poller"]
fn inline_panic_child() {
    if !child::is_child("inline_panic_child") {
        return;
    }
    inline();
    let server = Server::builder()
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            if task.request().path() == "/panic" {
                panic!("process panics on purpose (defect 4 test)");
            }
            task.response().set_body("ok");
        })
        .expect("serve");
    let addr = server.local_addr();
    let wait = Duration::from_secs(2);
    // Keep-alive connections, spread over the pollers by SO_REUSEPORT.
    let mut before: Vec<_> = (0..8).map(|_| connect(addr)).collect();
    for s in &mut before {
        let r = raw_http::get(s, "/", wait);
        assert!(r.is(200), "before any panic: {r:?}");
    }
    let mut failures = Vec::new();
    // Four panics, so that each poller most likely gets one.
    for i in 0..4 {
        let r = raw_http::get_new(addr, "/panic", wait);
        if !r.is_500_or_closed() {
            failures.push(format!(
                "panic {i}: no 500 and no close: {:?} after {:?}",
                r.end, r.elapsed
            ));
        }
    }
    let dead: Vec<_> = before
        .iter_mut()
        .map(|s| raw_http::get(s, "/", wait))
        .filter(|r| !r.is(200))
        .map(|r| r.end)
        .collect();
    if !dead.is_empty() {
        failures.push(format!(
            "{} of 8 keep-alive connections opened before the panics no longer answer: {dead:?}",
            dead.len()
        ));
    }
    // Timers go to each poller in turn.
    let wg = WaitGroup::new(10);
    for _ in 0..10 {
        let done = wg.clone();
        Series::new(timer(Duration::from_millis(10), |_, _| {}))
            .on_done(move |_| done.done())
            .start();
    }
    if !wg.wait_timeout(wait) {
        failures.push("timers of 10 ms did not all fire within 2 s".to_string());
    }
    let fresh = (0..8)
        .filter(|_| !raw_http::get_new(addr, "/", wait).is(200))
        .count();
    if fresh > 0 {
        failures.push(format!("{fresh} of 8 new connections were not served"));
    }
    assert!(
        failures.is_empty(),
        "after process panicked inline:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Defect 9: inline, pipelined requests that were already read are answered
// one after another regardless of the high watermark.

/// Defect 9 (the backpressure contract): a client that pipelines 1,000
/// requests for 64 KiB replies and never reads makes the server queue no
/// more than the high watermark (256 KiB) plus one reply.
#[test]
fn a_pipelining_client_that_never_reads_stays_within_the_watermark() {
    inline();
    let peak = pipelined_peak_of_64k_replies();
    assert!(
        peak <= WATERMARK_BOUND,
        "defect 9 (inline: pipelining bypasses the high watermark): the server queued {peak} B \
         for one client that never reads (bound: {WATERMARK_BOUND} B)"
    );
}
