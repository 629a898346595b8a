//! Request records when answers queue: a request pipelined behind an answer
//! still queued, a stream that ends with output queued, an abandoned stream,
//! refusals and a rejection in a row. Each exchange gets exactly one record
//! of its own (these lost or mixed records before the pending answers kept
//! theirs). Real peers on 127.0.0.1; `request_log_queued_inline.rs` runs
//! the same cases inline.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use taskweave::http::{Server, ServerTask};
use taskweave::metrics::{AccessLog, MemoryLog, ServerMetrics, Tee};
use taskweave::Series;

/// Bytes in `/big`'s body: far more than loopback socket buffers take.
const BIG: usize = 32 << 20;

fn process(task: &mut ServerTask, _series: &mut Series) {
    match task.request().path() {
        "/big" => {
            task.response().set_body(vec![b'x'; BIG]);
        }
        "/bigstream" => {
            let Ok(stream) = task.stream() else { return };
            let _ = stream.send(vec![b'y'; BIG]);
            stream.finish();
        }
        "/abort" => {
            // The head and a piece go out; every handle is dropped unfinished.
            let Ok(stream) = task.stream() else { return };
            let _ = stream.send("piece");
            drop(stream);
        }
        "/fillstream" => {
            // Pieces until the socket stops taking them, then the end: the
            // stream ends with a little output queued (under the high mark).
            let Ok(stream) = task.stream() else { return };
            for _ in 0..10_000 {
                match stream.send(vec![b'z'; 16 << 10]) {
                    Ok(taskweave::comm::SendState::Written) => {}
                    _ => break,
                }
            }
            stream.finish();
        }
        "/small" => {
            task.response().set_status(404).set_body("small");
        }
        _ => {
            task.response().set_status(500);
        }
    }
}

/// A server whose watermarks are high enough that a 32 MiB answer is queued
/// without pausing the reading of the next pipelined request.
fn start(log: impl AccessLog) -> SocketAddr {
    static INLINE: std::sync::Once = std::sync::Once::new();
    if module_path!().starts_with("request_log_queued_inline") {
        INLINE.call_once(|| {
            taskweave::Settings {
                handler_threads: 0,
                ..taskweave::Settings::default()
            }
            .apply()
            .expect("settings apply before any server starts");
        });
    }
    let handle = Server::builder()
        .watermarks(1 << 20, 256 << 20)
        .max_queued(512 << 20)
        .access_log(log)
        .serve("127.0.0.1:0", process)
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    addr
}

/// A log that keeps request records, counted by a `ServerMetrics` too, and
/// the sink that feeds both.
fn counted_log() -> (MemoryLog, Arc<ServerMetrics>, Tee) {
    let log = MemoryLog::new();
    let metrics = Arc::new(ServerMetrics::new());
    let tee = Tee::new(vec![Arc::new(log.clone()), metrics.clone()]);
    (log, metrics, tee)
}

/// Reads everything until `total` bytes came.
fn read_total(s: &mut TcpStream, total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total);
    let mut buf = vec![0u8; 1 << 16];
    while out.len() < total {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early after {} bytes", out.len());
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A reply too large for the socket is queued and flushed later by the
/// poller; the pipelined request behind it is dispatched meanwhile. Each
/// of the three exchanges must get its own record.
#[test]
fn a_request_pipelined_behind_a_queued_reply_keeps_both_records() {
    let log = MemoryLog::new();
    let addr = start(log.clone());
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(
        b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /small HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /small HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    // Let the server dispatch all three while the first answer is queued.
    std::thread::sleep(Duration::from_millis(300));
    let text = read_total(&mut s, BIG + 2 * 100);
    let text = String::from_utf8_lossy(&text);
    let _ = text; // (the answers are all there; the records are the point)
                  // Give the last byte time to leave and the records time to come.
    std::thread::sleep(Duration::from_millis(300));
    let recs = requests_from(&log, port, 3);
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.index, r.path.as_str(), r.status, r.resp_body_bytes))
        .collect();
    assert_eq!(
        got,
        [
            (1, "/big", Some(200), Some(BIG as u64)),
            (2, "/small", Some(404), Some(5)),
            (3, "/small", Some(404), Some(5)),
        ],
        "{recs:#?}"
    );
}

/// A stream that ends with its tail still queued, then a pipelined request:
/// the stream's record must still come, and `streams_open` go back to 0.
#[test]
fn a_stream_ended_with_output_queued_then_a_request_leaves_no_stream_open() {
    let (log, metrics, tee) = counted_log();
    let addr = start(tee);
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(
        b"GET /bigstream HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /small HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = read_total(&mut s, BIG + 100);
    std::thread::sleep(Duration::from_millis(300));
    let recs = requests_from(&log, port, 2);
    assert_eq!(metrics.streams_started(), 1);
    assert_eq!(
        metrics.streams_open(),
        0,
        "the stream ended, yet the gauge still counts it open: {recs:#?}"
    );
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.index, r.path.as_str(), r.streamed, r.status))
        .collect();
    assert_eq!(
        got,
        [
            (1, "/bigstream", true, Some(200)),
            (2, "/small", false, Some(404))
        ],
        "{recs:#?}"
    );
}

/// A stream abandoned without `finish` (its head and a piece went out) is a
/// stream cut short: docs/access-log.md says it keeps its head's status (with
/// an `error`), and ServerMetrics counts a stream whose head went out by its
/// status.
#[test]
fn an_aborted_stream_keeps_its_heads_status() {
    let (log, metrics, tee) = counted_log();
    let addr = start(tee);
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("piece"),
        "{text}"
    );
    let r = requests_from(&log, port, 1).remove(0);
    assert!(r.streamed, "{r:?}");
    assert!(r.error.is_some(), "{r:?}");
    assert_eq!(
        (r.status, r.resp_body_bytes),
        (Some(200), Some(5)),
        "the head went out with 200 and 5 body bytes: {r:?}"
    );
    assert_eq!(
        metrics.requests_of(taskweave::metrics::StatusClass::Success),
        1
    );
}

/// Pipelined requests over the request rate (429s, answered on the poller)
/// and a bad request at the end (400): one record each, in order.
#[test]
fn refusals_and_a_rejection_each_get_one_record() {
    let log = MemoryLog::new();
    // (A server of its own: the rate is server-wide.)
    let handle = Server::builder()
        .max_rps(1)
        .access_log(log.clone())
        .serve("127.0.0.1:0", process)
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    let mut batch = Vec::new();
    for _ in 0..5 {
        batch.extend_from_slice(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    batch.extend_from_slice(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n");
    s.write_all(&batch).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 6, "{text}");
    let recs = requests_from(&log, port, 6);
    std::thread::sleep(Duration::from_millis(100));
    let recs2 = requests_from(&log, port, 6);
    assert_eq!(recs.len(), recs2.len());
    let idx: Vec<u32> = recs.iter().map(|r| r.index).collect();
    assert_eq!(idx, [1, 2, 3, 4, 5, 6], "{recs:#?}");
    let statuses: Vec<_> = recs.iter().map(|r| r.status).collect();
    assert_eq!(statuses[5], Some(400), "{statuses:?}");
    assert!(
        statuses[1..5].iter().all(|s| *s == Some(429)),
        "{statuses:?}"
    );
}

/// With the default watermarks: a stream that ends with some output queued
/// (the socket full, the queue under the high watermark), and a request
/// pipelined behind it. The stream's record is lost and `streams_open`
/// stays at 1 for good.
#[test]
fn default_config_a_stream_ending_queued_then_a_pipelined_request() {
    let (log, metrics, tee) = counted_log();
    let handle = Server::builder()
        .access_log(tee)
        .serve("127.0.0.1:0", process)
        .expect("serve");
    let addr = handle.local_addr();
    std::mem::forget(handle);
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(
        b"GET /fillstream HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /small HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Read until the second answer's body.
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !all.ends_with(b"small") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0);
        all.extend_from_slice(&buf[..n]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let recs = requests_from(&log, port, 2);
    assert_eq!(
        metrics.streams_open(),
        0,
        "both exchanges are over, yet a stream counts as open: {recs:#?}"
    );
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.index, r.path.as_str(), r.streamed))
        .collect();
    assert_eq!(
        got,
        [(1, "/fillstream", true), (2, "/small", false)],
        "{recs:#?}"
    );
}
/// An answer queued whole behind another answer's tail: none of its bytes
/// can be written before the earlier answer's last byte, which the client
/// holds back for 300 ms. `first_byte_us` ("start → first response byte
/// written") must not be a few microseconds.
#[test]
fn first_byte_of_an_answer_queued_behind_another_is_when_it_was_written() {
    let log = MemoryLog::new();
    let addr = start(log.clone());
    let mut s = connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(
        b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /small HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = read_total(&mut s, BIG + 150);
    std::thread::sleep(Duration::from_millis(200));
    let recs = requests_from(&log, port, 2);
    let small = recs
        .iter()
        .find(|r| r.path.as_str() == "/small")
        .expect("the /small record");
    let fb = small.first_byte_us.expect("a first byte");
    assert!(
        fb >= 250_000,
        "/small's first byte was written after /big's last (>= 300 ms), yet first_byte_us = {fb}, total_us = {}",
        small.total_us
    );
}
