//! Timeouts, `max_connections` eviction and refusal, and descriptor exhaustion,
//! on one poller with callbacks inline (so eviction order is deterministic).

#[path = "../examples/common/echo_proto.rs"]
mod echo_proto;
mod support;

use echo_proto::{Echo, Frame};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use support::*;
use taskweave::comm::ClientConfig;
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::task::{ClientTask, Server, ServerBuilder, ServerHandle};
use taskweave::{comm::ConnConfig, Error, Series, Settings, WaitGroup};

fn settings() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let s = Settings {
            poller_threads: 1,
            handler_threads: 0,
            ..Settings::default()
        };
        s.apply().expect("settings applied before any task");
    });
}

fn echo_server(builder: ServerBuilder) -> ServerHandle {
    settings();
    builder
        .serve(("127.0.0.1", 0), Echo, |task, _| {
            let p = task.request().payload().clone();
            task.response().set_payload(p);
        })
        .expect("serve")
}

const SHORT: Duration = Duration::from_millis(200);

#[test]
fn keep_alive_timeout_closes_idle_connections() {
    let log = MemoryLog::new();
    let server = echo_server(
        Server::builder()
            .keep_alive_timeout(SHORT)
            .access_log(log.clone()),
    );
    let mut s = connect(server.local_addr());
    assert_eq!(echo(&mut s, b"x"), b"x");
    assert!(closed_by_peer(&mut s, Duration::from_secs(5)));
    assert_eq!(
        reasons(&records(&log, 1)),
        vec![CloseReason::KeepAliveTimeout]
    );
}

#[test]
fn receive_timeout_closes_a_slow_request_and_a_silent_peer() {
    let log = MemoryLog::new();
    let server = echo_server(
        Server::builder()
            .receive_timeout(SHORT)
            .access_log(log.clone()),
    );
    let mut silent = connect(server.local_addr());
    let mut slow = connect(server.local_addr());
    slow.write_all(&[0, 0, 0, 10, b'a']).unwrap(); // 1 of 10 payload bytes
    assert!(closed_by_peer(&mut silent, Duration::from_secs(5)));
    assert!(closed_by_peer(&mut slow, Duration::from_secs(5)));
    assert_eq!(
        reasons(&records(&log, 2)),
        vec![CloseReason::ReceiveTimeout; 2]
    );
}

#[test]
fn send_timeout_closes_a_peer_that_stops_reading() {
    let log = MemoryLog::new();
    let server = echo_server(
        Server::builder()
            .send_timeout(Duration::from_millis(300))
            .access_log(log.clone()),
    );
    let s = connect(server.local_addr());
    let mut w = s.try_clone().unwrap();
    let big = vec![1u8; 1 << 20];
    // Write in another thread: once the server stops reading, this blocks.
    std::thread::spawn(move || {
        for _ in 0..64 {
            if w.write_all(&frame(&big)).is_err() {
                break;
            }
        }
    });
    let recs = records(&log, 1);
    assert_eq!(reasons(&recs), vec![CloseReason::SendTimeout]);
    assert!(recs[0].write_pauses() >= 1);
    drop(s);
}

#[test]
fn max_connections_evicts_the_oldest_idle_then_refuses() {
    let log = MemoryLog::new();
    let server = echo_server(Server::builder().max_connections(3).access_log(log.clone()));
    let addr = server.local_addr();
    let mut a = connect(addr);
    assert_eq!(echo(&mut a, b"a"), b"a");
    let mut b = connect(addr);
    assert_eq!(echo(&mut b, b"b"), b"b");
    let mut c = connect(addr);
    assert_eq!(echo(&mut c, b"c"), b"c");
    assert!(wait_until(Duration::from_secs(2), || server
        .open_connections()
        == 3));
    // A fourth connection evicts `a`, the oldest idle keep-alive connection.
    let mut d = connect(addr);
    assert_eq!(echo(&mut d, b"d"), b"d");
    assert!(closed_by_peer(&mut a, Duration::from_secs(5)));
    assert_eq!(echo(&mut b, b"b2"), b"b2");
    assert_eq!(reasons(&records(&log, 1)), vec![CloseReason::Evicted]);
    // Make b, c and d non-idle (mid-request): nothing can be evicted, so the next
    // connection is refused.
    for s in [&mut b, &mut c, &mut d] {
        s.write_all(&[0, 0, 0, 5]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut e = connect(addr);
    assert!(closed_by_peer(&mut e, Duration::from_secs(5)));
    let recs = records(&log, 2);
    assert_eq!(reasons(&recs)[1], CloseReason::LimitExceeded);
    // b still works once its request completes.
    b.write_all(b"hello").unwrap();
    assert_eq!(read_frame(&mut b).unwrap(), b"hello");
}

fn run_client(task: ClientTask<Echo>) -> Result<Vec<u8>, Error> {
    settings();
    let out = Arc::new(Mutex::new(None));
    let slot = out.clone();
    let wg = WaitGroup::new(1);
    let done = wg.clone();
    let task = ClientTask::new(
        task_proto(),
        task.target().clone(),
        Frame::new(task.request().payload().clone()),
        move |t, _| {
            *slot.lock().unwrap() = Some(
                t.result()
                    .map(|r| r.payload().to_vec())
                    .map_err(Clone::clone),
            );
        },
    )
    .with_config(task_config(&task));
    Series::new(task).on_done(move |_| done.done()).start();
    assert!(
        wg.wait_timeout(Duration::from_secs(10)),
        "client task never completed"
    );
    let r = out.lock().unwrap().take().unwrap();
    r
}

fn task_proto() -> Arc<Echo> {
    Arc::new(Echo)
}

thread_local! {
    static CONFIG: std::cell::RefCell<Option<Arc<ClientConfig>>> = const { std::cell::RefCell::new(None) };
}

fn task_config(_t: &ClientTask<Echo>) -> Arc<ClientConfig> {
    CONFIG
        .with(|c| c.borrow().clone())
        .unwrap_or_else(ClientConfig::shared_default)
}

fn client_with(
    conn: ConnConfig,
    log: &MemoryLog,
    target: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    let config = Arc::new(ClientConfig::new(conn).access_log(log.clone()));
    CONFIG.with(|c| *c.borrow_mut() = Some(config));
    run_client(ClientTask::new(
        task_proto(),
        target,
        Frame::new(payload.to_vec()),
        |_, _| {},
    ))
}

#[test]
fn client_receive_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _keep = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let log = MemoryLog::new();
    let conn = ConnConfig {
        receive_timeout: SHORT,
        ..ConnConfig::default()
    };
    assert_eq!(
        client_with(conn, &log, addr, b"hi"),
        Err(Error::ReceiveTimeout)
    );
    assert_eq!(
        reasons(&records(&log, 1)),
        vec![CloseReason::ReceiveTimeout]
    );
}

#[test]
fn client_send_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _keep = std::thread::spawn(move || {
        let conn = listener.accept(); // accept, never read
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let log = MemoryLog::new();
    let conn = ConnConfig {
        send_timeout: SHORT,
        max_queued: 64 << 20,
        ..ConnConfig::default()
    };
    // Far more than loopback socket buffers hold, within max_queued.
    let payload = vec![0u8; 32 << 20];
    assert_eq!(
        client_with(conn, &log, addr, &payload),
        Err(Error::SendTimeout)
    );
    assert_eq!(reasons(&records(&log, 1)), vec![CloseReason::SendTimeout]);
}

#[test]
fn client_connect_timeout() {
    // A listener that never accepts, with its accept queue filled: further SYNs
    // are dropped, so a connect can only time out.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let log = MemoryLog::new();
    let conn = ConnConfig {
        connect_timeout: SHORT,
        ..ConnConfig::default()
    };
    assert_eq!(
        client_with(conn, &log, addr, b"hi"),
        Err(Error::ConnectTimeout)
    );
    assert_eq!(
        reasons(&records(&log, 1)),
        vec![CloseReason::ConnectTimeout]
    );
}

#[test]
fn client_connect_refused_is_an_error_not_a_hang() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed at once
    let log = MemoryLog::new();
    let res = client_with(ConnConfig::default(), &log, addr, b"hi");
    assert!(matches!(res, Err(Error::Connect(_))), "{res:?}");
}

#[test]
fn client_reuses_pooled_connections_and_retries_a_stale_one() {
    let log = MemoryLog::new();
    let server = echo_server(
        Server::builder()
            .keep_alive_timeout(Duration::from_millis(300))
            .access_log(log.clone()),
    );
    let client_log = MemoryLog::new();
    let config = Arc::new(
        ClientConfig::default()
            .max_per_target(1)
            .access_log(client_log.clone()),
    );
    let reused = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        if i == 2 {
            // The server closes the idle pooled connection; the next request finds
            // it stale and retries on a fresh one.
            std::thread::sleep(Duration::from_millis(600));
        }
        let r = reused.clone();
        let wg = WaitGroup::new(1);
        let done = wg.clone();
        let t = ClientTask::new(
            Arc::new(Echo),
            server.local_addr(),
            Frame::new(&b"p"[..]),
            move |t, _| {
                assert_eq!(t.result().unwrap().payload(), &b"p"[..]);
                r.lock().unwrap().push(t.reused());
            },
        )
        .with_config(config.clone());
        Series::new(t).on_done(move |_| done.done()).start();
        assert!(wg.wait_timeout(Duration::from_secs(10)));
    }
    assert_eq!(*reused.lock().unwrap(), vec![false, true, false]);
}

/// Run as a child process with a low descriptor limit (see the next test).
#[test]
fn emfile_child() {
    if std::env::var_os("TW_EMFILE_CHILD").is_none() {
        return;
    }
    taskweave::os::set_nofile_limit(48).unwrap();
    let server = echo_server(Server::builder().max_connections(1000));
    println!("PORT {}", server.local_addr().port());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn fd_exhaustion_neither_spins_nor_wedges_the_listener() {
    raise_fd_limit();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "emfile_child", "--nocapture", "--test-threads=1"])
        .env("TW_EMFILE_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("child printed its port").unwrap();
        // The harness may print "test emfile_child ... " on the same line.
        if let Some(i) = line.find("PORT ") {
            break line[i + 5..].trim().parse().unwrap();
        }
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Hold far more connections than the child has descriptors.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // Clock ticks are 1/100 s: a spinning accept loop would use ~100 per second.
    assert!(
        used < 30,
        "server used {used} ticks of CPU in 1 s while out of descriptors"
    );
    let live = held
        .iter_mut()
        .filter_map(|s| {
            s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            s.write_all(&frame(b"ping")).ok()?;
            read_frame(s).ok()
        })
        .count();
    assert!(live > 0 && live < 100, "{live} of 100 connections served");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    // Recovered: new connections are served again.
    let mut s = connect(addr);
    assert_eq!(echo(&mut s, b"after"), b"after");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn keep_alive_timeout_restarts_after_every_request() {
    let log = MemoryLog::new();
    let server = echo_server(
        Server::builder()
            .keep_alive_timeout(Duration::from_millis(300))
            .access_log(log.clone()),
    );
    let mut s = connect(server.local_addr());
    // Ten requests 100 ms apart: never 300 ms idle, so never closed.
    for i in 0..10 {
        assert_eq!(
            echo(&mut s, format!("r{i}").as_bytes()),
            format!("r{i}").as_bytes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        log.is_empty(),
        "closed while active: {:?}",
        reasons(&log.records())
    );
    assert!(closed_by_peer(&mut s, Duration::from_secs(5)));
    assert_eq!(
        reasons(&records(&log, 1)),
        vec![CloseReason::KeepAliveTimeout]
    );
}

/// A short read ends reading until the next readiness edge; a peer's shutdown
/// must still be seen at once, whether it arrives with the last request or
/// after the reply (inline mode, where the reply is written before the server
/// reads again). Linux: the test corks its socket with `TCP_CORK`.
#[cfg(target_os = "linux")]
#[test]
fn a_peer_shutdown_is_seen_at_once_after_a_short_read() {
    let log = MemoryLog::new();
    let server = echo_server(Server::builder().access_log(log.clone()));
    let addr = server.local_addr();
    let expect_eof = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut rest = Vec::new();
        let n = std::io::Read::read_to_end(s, &mut rest).expect("EOF before the read timeout");
        assert_eq!(n, 0, "nothing after the reply");
    };

    // The shutdown arrives with the request: corked, the data and the FIN
    // leave in one segment and raise one readiness event.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.set_cork(true).unwrap();
    let mut a: std::net::TcpStream = sock.into();
    // Let the server accept and find nothing to read first.
    std::thread::sleep(Duration::from_millis(100));
    a.write_all(&frame(b"with")).unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_frame(&mut a).unwrap(), b"with");
    expect_eof(&mut a);

    // The shutdown arrives after the reply.
    let mut b = connect(addr);
    assert_eq!(echo(&mut b, b"before"), b"before");
    std::thread::sleep(Duration::from_millis(100));
    b.shutdown(std::net::Shutdown::Write).unwrap();
    expect_eof(&mut b);

    let closed = records(&log, 2);
    assert!(closed
        .iter()
        .all(|r| r.close_reason() == Some(CloseReason::PeerClosed)));
    server.shutdown(Duration::from_secs(1));
}
