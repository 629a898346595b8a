//! The client engine: pipelined requests over a few connections, replies
//! matched in order, pushes routed aside, exactly the requests in flight
//! failing when a connection breaks, and the bounded wait for a connection.
//! Real peers on 127.0.0.1: our echo server, or a hand-written std server.

#[path = "../examples/common/echo_proto.rs"]
mod echo_proto;
mod support;

use echo_proto::{Echo, Frame};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use taskweave::comm::{ClientConfig, ConnConfig};
use taskweave::metrics::MemoryLog;
use taskweave::protocol::Protocol;
use taskweave::task::{ClientTask, Server};
use taskweave::{Error, Parallel, Series, WaitGroup};

type Outcome = Result<Vec<u8>, Error>;

/// Sends each payload as its own client task, all at once (a parallel of
/// series), and returns each outcome in order.
fn run_frames<P>(
    proto: Arc<P>,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    payloads: Vec<Vec<u8>>,
) -> Vec<Outcome>
where
    P: Protocol<Request = Frame, Response = Frame>,
{
    let n = payloads.len();
    let out: Arc<Mutex<Vec<Option<Outcome>>>> = Arc::new(Mutex::new(vec![None; n]));
    let mut par = Parallel::new(|_, _| {});
    for (i, payload) in payloads.into_iter().enumerate() {
        let slot = out.clone();
        let task = ClientTask::new(proto.clone(), addr, Frame::new(payload), move |t, _| {
            slot.lock().unwrap()[i] = Some(
                t.result()
                    .map(|f| f.payload().to_vec())
                    .map_err(Clone::clone),
            );
        })
        .with_config(config.clone());
        par.add(Series::new(task));
    }
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    Series::new(par).on_done(move |_| done.done()).start();
    assert!(
        wg.wait_timeout(Duration::from_secs(30)),
        "the requests did not all complete"
    );
    let v = out.lock().unwrap().drain(..).collect::<Vec<_>>();
    v.into_iter()
        .map(|o| o.expect("every callback ran"))
        .collect()
}

fn echo_server(log: MemoryLog) -> taskweave::task::ServerHandle {
    Server::builder()
        .access_log(log)
        .serve("127.0.0.1:0", Echo, |task, _| {
            let payload = task.request().payload().clone();
            task.response().set_payload(payload);
        })
        .unwrap()
}

/// 10,000 requests at once over at most 4 connections: each reply is its own
/// request's (every payload is unique), so pipelining matched them in order.
#[test]
fn ten_thousand_pipelined_requests_over_four_connections_all_match() {
    let server_log = MemoryLog::new();
    let server = echo_server(server_log.clone());
    let client_log = MemoryLog::new();
    let config = Arc::new(
        ClientConfig::default()
            .max_per_target(4)
            .max_waiting(10_000)
            .access_log(client_log.clone()),
    );
    let payloads: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("unique-{i:05}").into_bytes())
        .collect();
    let outcomes = run_frames(
        Arc::new(Echo),
        server.local_addr(),
        config,
        payloads.clone(),
    );
    for (i, (got, want)) in outcomes.iter().zip(&payloads).enumerate() {
        match got {
            Ok(p) => assert_eq!(p, want, "request {i} got another request's reply"),
            Err(e) => panic!("request {i} failed: {e}"),
        }
    }
    assert!(server.shutdown(Duration::from_secs(5)));
    let conns = server_log.records();
    assert!(
        !conns.is_empty() && conns.len() <= 4,
        "{} server connections, expected 1 to 4",
        conns.len()
    );
    let requests: u32 = conns.iter().map(|r| r.requests()).sum();
    assert_eq!(requests, 10_000);
    assert!(
        conns.iter().any(|r| r.requests() > 2_500 / 4),
        "no connection carried a share of the pipeline: {:?}",
        conns.iter().map(|r| r.requests()).collect::<Vec<_>>()
    );
}

/// Reads `n` frames from `s`, returning their payloads.
fn read_frames(s: &mut std::net::TcpStream, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| read_frame(s).expect("a request frame"))
        .collect()
}

/// A server that answers the first 3 of the pipelined requests on its first
/// connection, then closes it: exactly the requests in flight on it fail
/// (bytes of replies had arrived, so none is re-sent), and the next requests
/// connect again and succeed.
#[test]
fn a_server_closing_mid_pipeline_fails_exactly_the_requests_in_flight() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        // First connection: take 8 requests, answer 3, close.
        let (mut s, _) = listener.accept().unwrap();
        count.fetch_add(1, Ordering::SeqCst);
        let reqs = read_frames(&mut s, 8);
        for r in &reqs[..3] {
            s.write_all(&frame(r)).unwrap();
        }
        drop(s);
        // Later connections: echo everything.
        for s in listener.incoming() {
            let mut s = s.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                while let Ok(p) = read_frame(&mut s) {
                    if s.write_all(&frame(&p)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = Arc::new(ClientConfig::default().max_per_target(1));
    let first: Vec<Vec<u8>> = (0..8).map(|i| format!("first-{i}").into_bytes()).collect();
    let outcomes = run_frames(Arc::new(Echo), addr, config.clone(), first.clone());
    for (i, o) in outcomes.iter().enumerate() {
        if i < 3 {
            assert_eq!(o.as_ref().ok(), Some(&first[i]), "request {i} was answered");
        } else {
            assert!(
                matches!(o, Err(Error::PeerClosed | Error::Reset)),
                "request {i} was in flight when the server closed: {o:?}"
            );
        }
    }
    let next: Vec<Vec<u8>> = (0..5).map(|i| format!("next-{i}").into_bytes()).collect();
    let outcomes = run_frames(Arc::new(Echo), addr, config, next.clone());
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(
            o.as_ref().ok(),
            Some(&next[i]),
            "request {i} after the close"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one reconnect");
}

/// Push frames sent before, between and after replies go to the push
/// handler, never to a request; replies still match their requests.
#[test]
fn pushes_go_to_the_push_handler_not_to_a_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&frame(b"push:hello")).unwrap();
        while let Ok(p) = read_frame(&mut s) {
            let mut out = frame(b"push:before");
            out.extend(frame(&p));
            out.extend(frame(b"push:after"));
            if s.write_all(&out).is_err() {
                return;
            }
        }
    });
    let pushes = Arc::new(Mutex::new(Vec::new()));
    let seen = pushes.clone();
    let replies = Arc::new(Mutex::new(Vec::new()));
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let config = Arc::new(ClientConfig::default().max_per_target(1));
    let r1 = replies.clone();
    let r2 = replies.clone();
    let second = ClientTask::new(Arc::new(Echo), addr, Frame::new("two"), move |t, _| {
        r2.lock()
            .unwrap()
            .push(t.result().map(|f| f.payload().to_vec()).ok());
    })
    .with_config(config.clone());
    let first = ClientTask::new(Arc::new(Echo), addr, Frame::new("one"), move |t, s| {
        r1.lock()
            .unwrap()
            .push(t.result().map(|f| f.payload().to_vec()).ok());
        s.push_back(second);
    })
    .with_config(config)
    .on_push(move |f: Frame| seen.lock().unwrap().push(f.payload().to_vec()));
    Series::new(first).on_done(move |_| done.done()).start();
    assert!(wg.wait_timeout(Duration::from_secs(10)));
    assert_eq!(
        *replies.lock().unwrap(),
        vec![Some(b"one".to_vec()), Some(b"two".to_vec())]
    );
    assert!(wait_until(Duration::from_secs(5), || pushes
        .lock()
        .unwrap()
        .len()
        >= 5));
    assert_eq!(
        *pushes.lock().unwrap(),
        [
            &b"push:hello"[..],
            b"push:before",
            b"push:after",
            b"push:before",
            b"push:after"
        ]
        .map(<[u8]>::to_vec)
    );
}

/// The echo frames, one request per connection at a time (no pipelining):
/// requests beyond the pool's connections wait for one.
#[derive(Debug, Clone, Copy)]
struct Serial;

impl Protocol for Serial {
    type Request = Frame;
    type Response = Frame;
    fn name(&self) -> &'static str {
        "serial"
    }
    fn new_request(&self) -> Frame {
        Frame::default()
    }
    fn new_response(&self, _: &Frame) -> Frame {
        Frame::default()
    }
}

/// With one connection to a server that never answers, one request is in
/// flight, `max_waiting` more wait, the rest are refused at once, and the
/// waiting ones fail when the wait timeout passes.
#[test]
fn requests_waiting_for_a_connection_are_bounded_and_time_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s); // accepted, never answered
        }
    });
    let config = Arc::new(
        ClientConfig::new(ConnConfig {
            receive_timeout: Duration::from_secs(5),
            ..ConnConfig::default()
        })
        .max_per_target(1)
        .max_waiting(2)
        .wait_timeout(Duration::from_millis(300)),
    );
    let payloads: Vec<Vec<u8>> = (0..6).map(|i| vec![b'0' + i]).collect();
    let outcomes = run_frames(Arc::new(Serial), addr, config, payloads);
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            Err(Error::ReceiveTimeout) => "in flight",
            Err(Error::WaitTimeout) => "waited",
            Err(Error::LimitExceeded(_)) => "refused",
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(
        (count("in flight"), count("waited"), count("refused")),
        (1, 2, 3),
        "{kinds:?}"
    );
}
