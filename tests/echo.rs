//! Echo round trips over loopback with the default settings (several pollers,
//! handler threads): concurrency, backpressure, resets, graceful shutdown.

#[path = "../examples/common/echo_proto.rs"]
mod echo_proto;
mod support;

use echo_proto::{Echo, Frame};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use taskweave::comm::ClientConfig;
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::task::{ClientTask, Server, ServerHandle};
use taskweave::{timer, Parallel, Series, WaitGroup};

fn echo_server(builder: taskweave::task::ServerBuilder) -> ServerHandle {
    builder
        .serve(("127.0.0.1", 0), Echo, |task, _| {
            let p = task.request().payload().clone();
            task.response().set_payload(p);
        })
        .expect("serve")
}

#[test]
fn two_thousand_concurrent_connections_round_trip() {
    raise_fd_limit();
    const CONNS: usize = 2000;
    const ROUNDS: usize = 3;
    let log = MemoryLog::new();
    // First-round replies wait 300 ms, so all 2,000 first requests are in flight
    // at once and the pool cannot reuse a connection: it must open 2,000.
    let server = Server::builder()
        .max_connections(5000)
        .access_log(log.clone())
        .serve(("127.0.0.1", 0), Echo, |task, series| {
            let p = task.request().payload().clone();
            if p.ends_with(format!("round {ROUNDS}").as_bytes()) {
                series.push_back(timer(
                    Duration::from_millis(300),
                    move |_, s: &mut Series| {
                        if let Some(t) = taskweave::task::ServerTask::<Echo>::of_series(s) {
                            t.response().set_payload(p);
                        }
                    },
                ));
            } else {
                task.response().set_payload(p);
            }
        })
        .expect("serve");
    let addr = server.local_addr();
    let config = Arc::new(ClientConfig::default().max_per_target(CONNS));
    let ok = Arc::new(AtomicUsize::new(0));

    // Each series holds its connection busy for a timer tick between rounds, so
    // all 2,000 connections are open at once.
    fn round(
        addr: std::net::SocketAddr,
        config: Arc<ClientConfig>,
        id: usize,
        left: usize,
        ok: Arc<AtomicUsize>,
    ) -> ClientTask<Echo> {
        let payload = format!("conn {id} round {left}");
        let cfg = config.clone();
        ClientTask::new(
            Arc::new(Echo),
            addr,
            Frame::new(payload.clone()),
            move |t, s: &mut Series| {
                if let Ok(r) = t.result() {
                    if r.payload() == payload.as_bytes() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if left > 1 {
                    let next = round(addr, cfg.clone(), id, left - 1, ok);
                    s.push_back(timer(
                        Duration::from_millis(20),
                        move |_, s: &mut Series| s.push_back(next),
                    ));
                }
            },
        )
        .with_config(config)
    }

    let mut par = Parallel::new(|_, _| {});
    for id in 0..CONNS {
        par.add(Series::new(round(
            addr,
            config.clone(),
            id,
            ROUNDS,
            ok.clone(),
        )));
    }
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    Series::new(par).on_done(move |_| done.done()).start();
    assert!(
        wg.wait_timeout(Duration::from_secs(60)),
        "echo rounds did not finish"
    );
    assert_eq!(ok.load(Ordering::Relaxed), CONNS * ROUNDS);
    assert_eq!(
        server.open_connections(),
        CONNS,
        "all connections open at once and kept alive"
    );
    assert!(server.shutdown(Duration::from_secs(5)));
    let recs = records(&log, CONNS);
    assert_eq!(recs.len(), CONNS);
    assert!(recs
        .iter()
        .all(|r| r.close_reason() == Some(CloseReason::ServerShutdown)));
    let served: u32 = recs.iter().map(|r| r.requests()).sum();
    assert_eq!(served as usize, CONNS * ROUNDS);
}

#[test]
fn a_peer_that_never_reads_pauses_the_writer_and_gets_everything_later() {
    const FRAME: usize = 64 * 1024;
    const FRAMES: usize = 400; // 25.6 MB: far more than loopback socket buffers hold
    const HIGH: usize = 256 * 1024;
    let log = MemoryLog::new();
    let server = echo_server(
        Server::builder()
            .watermarks(64 * 1024, HIGH)
            .send_timeout(Duration::from_secs(30))
            .access_log(log.clone()),
    );
    let mut s = connect(server.local_addr());
    let mut writer = s.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let payload: Vec<u8> = (0..FRAME).map(|i| (i % 251) as u8).collect();
    let frame_bytes = frame(&payload);
    let wthread = std::thread::spawn(move || {
        for _ in 0..FRAMES {
            if writer.write_all(&frame_bytes).is_err() {
                break;
            }
            w.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The server stops reading once its queue passes the high watermark, so the
    // writer blocks: it cannot get all frames out while we do not read.
    std::thread::sleep(Duration::from_millis(1500));
    let stalled_at = written.load(Ordering::SeqCst);
    assert!(
        stalled_at < FRAMES,
        "server kept reading from a peer that never reads"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        written.load(Ordering::SeqCst),
        stalled_at,
        "writer should stay blocked"
    );

    // Now read: every frame arrives, intact and in order.
    for i in 0..FRAMES {
        let got = read_frame(&mut s).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(got.len(), FRAME);
        assert!(got == payload, "frame {i} corrupted");
    }
    wthread.join().unwrap();
    drop(s);
    let recs = records(&log, 1);
    let r = &recs[0];
    assert_eq!(r.requests() as usize, FRAMES);
    assert!(r.write_pauses() >= 1, "the writer never paused");
    // Bounded by the watermark plus the one reply that crossed it.
    assert!(
        r.peak_queued_bytes() as usize <= HIGH + FRAME + 4,
        "queue grew to {} bytes",
        r.peak_queued_bytes()
    );
    assert_eq!(r.bytes_out() as usize, FRAMES * (FRAME + 4));
}

#[test]
fn a_peer_reset_mid_write_is_recorded_and_harmless() {
    let log = MemoryLog::new();
    let server = echo_server(Server::builder().access_log(log.clone()));
    let s = connect(server.local_addr());
    let mut w = s.try_clone().unwrap();
    let big = vec![7u8; 512 * 1024];
    for _ in 0..8 {
        w.write_all(&frame(&big)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(w);
    drop(s); // RST with replies still queued on the server
    let recs = records(&log, 1);
    assert!(
        matches!(
            recs[0].close_reason(),
            Some(CloseReason::Reset) | Some(CloseReason::PeerClosed)
        ),
        "{:?}",
        recs[0].close_reason()
    );
    // The server is fine afterwards.
    let mut c = connect(server.local_addr());
    assert_eq!(echo(&mut c, b"still here"), b"still here");
}

#[test]
fn a_bad_frame_closes_only_its_connection() {
    let log = MemoryLog::new();
    let server = echo_server(Server::builder().access_log(log.clone()));
    let mut good = connect(server.local_addr());
    assert_eq!(echo(&mut good, b"one"), b"one");
    let mut bad = connect(server.local_addr());
    bad.write_all(&u32::MAX.to_be_bytes()).unwrap(); // a frame far over the limit
    assert!(closed_by_peer(&mut bad, Duration::from_secs(5)));
    assert_eq!(echo(&mut good, b"two"), b"two");
    let recs = records(&log, 1);
    assert_eq!(reasons(&recs), vec![CloseReason::ProtocolError]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = echo_server(Server::builder());
    let mut s = connect(server.local_addr());
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend(frame(format!("req-{i}").as_bytes()));
    }
    s.write_all(&batch).unwrap();
    for i in 0..500 {
        assert_eq!(read_frame(&mut s).unwrap(), format!("req-{i}").as_bytes());
    }
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let log = MemoryLog::new();
    let server = Server::builder()
        .access_log(log.clone())
        .serve(("127.0.0.1", 0), Echo, |task, series| {
            let p = task.request().payload().clone();
            // Reply only after a timer: the request is in flight during shutdown.
            series.push_back(timer(
                Duration::from_millis(300),
                move |_, s: &mut Series| {
                    if let Some(t) = taskweave::task::ServerTask::<Echo>::of_series(s) {
                        t.response().set_payload(p);
                    }
                },
            ));
        })
        .unwrap();
    let addr = server.local_addr();
    let mut idle = connect(addr);
    let mut busy = connect(addr);
    busy.write_all(&frame(b"in flight")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let stopper = std::thread::spawn(move || server.shutdown(Duration::from_secs(5)));
    // The in-flight request is answered, then the connection closes.
    assert_eq!(read_frame(&mut busy).unwrap(), b"in flight");
    assert!(closed_by_peer(&mut busy, Duration::from_secs(5)));
    assert!(closed_by_peer(&mut idle, Duration::from_secs(5)));
    assert!(stopper.join().unwrap(), "shutdown was not graceful");
    // No longer accepting.
    std::thread::sleep(Duration::from_millis(50));
    match std::net::TcpStream::connect(addr) {
        Err(_) => {}
        Ok(mut s) => assert!(closed_by_peer(&mut s, Duration::from_secs(2))),
    }
    let recs = records(&log, 2);
    assert!(
        reasons(&recs)
            .iter()
            .all(|r| *r == CloseReason::ServerShutdown),
        "{:?}",
        reasons(&recs)
    );
    let mut buf = [0u8; 1];
    let _ = idle.read(&mut buf);
}

#[test]
fn a_blocking_callback_does_not_stall_other_connections() {
    // Default settings: callbacks run on handler threads, so one that blocks
    // holds its own connection only.
    let server = Server::builder()
        .serve(("127.0.0.1", 0), Echo, |task, _| {
            let p = task.request().payload().clone();
            if p == "slow" {
                std::thread::sleep(Duration::from_millis(500));
            }
            task.response().set_payload(p);
        })
        .unwrap();
    let mut slow = connect(server.local_addr());
    slow.write_all(&frame(b"slow")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut fast = connect(server.local_addr());
    for i in 0..20 {
        assert_eq!(
            echo(&mut fast, format!("f{i}").as_bytes()),
            format!("f{i}").as_bytes()
        );
    }
    // All twenty fast round trips finished while the slow reply is still pending.
    slow.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let pending = matches!(slow.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    slow.set_nonblocking(false).unwrap();
    assert!(pending, "the slow reply should still be pending");
    assert_eq!(read_frame(&mut slow).unwrap(), b"slow");
}
