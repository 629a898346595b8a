//! Helpers shared by the integration tests: raw frame I/O over std sockets and
//! bounded waiting; raw HTTP in [`raw_http`], child processes in [`child`], a
//! real `redis-server` in [`redis`], a tiny upstream HTTP server in
//! [`upstream`].
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use taskweave::metrics::{CloseReason, ConnStats, MemoryLog, RequestRecord, Side};

pub mod child;
pub mod example;
pub mod raw_http;
pub mod redis;
pub mod sse;
pub mod upstream;

/// Applies the settings of the handler-pool tests: one poller and
/// `handler_threads` core handler threads, the rest as by default.
pub fn use_handler_threads(handler_threads: usize) {
    taskweave::Settings {
        poller_threads: 1,
        handler_threads,
        ..taskweave::Settings::default()
    }
    .apply()
    .expect("settings");
}

/// This process's handler threads (`tw-handler-N`), counted from `/proc`
/// (a thread takes its name as it starts).
pub fn handler_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("tw-handler"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits up to `within` for the pool's extra threads to leave (after 10 s
/// without work), back to its `core` threads, then checks that the server
/// at `addr` still answers `GET /` with a body holding `answer`.
pub fn assert_extra_threads_leave(core: usize, within: Duration, addr: SocketAddr, answer: &str) {
    assert!(
        wait_until(within, || handler_threads() == core),
        "extra handler threads did not leave: {}",
        handler_threads()
    );
    assert!(read_to_end(send_get_close(addr, "/")).contains(answer));
}

/// This process's runtime threads that run callbacks: handler threads and
/// pollers (`tw-handler-N`, `tw-poller-N`). A poller whose callback blocks
/// hands its loop to a new thread (named as its poller) and goes on as a
/// handler thread once the callback returns.
pub fn callback_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("tw-handler") || name.starts_with("tw-poller"))
                .count()
        })
        .unwrap_or(0)
}

/// Sends `GET path` with `Connection: close` on a new connection to `addr`,
/// for the response to be read later with [`read_to_end`].
pub fn send_get_close(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// Everything `s` receives until the peer closes.
pub fn read_to_end(mut s: TcpStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// Raises the soft descriptor limit to the hard one (tests open thousands).
pub fn raise_fd_limit() {
    if let Ok((_, hard)) = taskweave::os::nofile_limit() {
        let _ = taskweave::os::set_nofile_limit(hard);
    }
}

/// A length-prefixed frame on the wire.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads one frame's payload.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Connects with a read timeout so a broken server fails the test instead of
/// hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends one frame and returns the echoed payload.
pub fn echo(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    s.write_all(&frame(payload)).unwrap();
    read_frame(s).unwrap()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// The server's request records for the connection whose client port is
/// `port`, once there are `n` of them (or what there is after 5 s).
pub fn requests_from(log: &MemoryLog, port: u16, n: usize) -> Vec<RequestRecord> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), || {
        got = log
            .requests()
            .into_iter()
            .filter(|r| r.side == Side::Server && r.peer.map(|p| p.port()) == Some(port))
            .collect();
        got.len() >= n
    });
    got
}

/// Waits for at least `n` records and returns them all.
pub fn records(log: &MemoryLog, n: usize) -> Vec<ConnStats> {
    assert!(
        wait_until(Duration::from_secs(10), || log.len() >= n),
        "expected {n} access-log records, got {}: {:?}",
        log.len(),
        log.records()
            .iter()
            .map(|r| r.close_reason())
            .collect::<Vec<_>>()
    );
    log.records()
}

/// The close reasons of `records`.
pub fn reasons(records: &[ConnStats]) -> Vec<CloseReason> {
    records.iter().filter_map(|r| r.close_reason()).collect()
}

/// Whether the peer has closed `s` (EOF or reset) within `timeout`.
pub fn closed_by_peer(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Serializes the tests of one binary that measure time or memory, or load
/// the machine, so they do not disturb each other. Survives a poisoned lock
/// (a failed test).
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a thread of its own and waits at most `limit` for its result;
/// `None` if it has not returned by then (the thread is left behind).
pub fn with_deadline<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// This process's resident set size in KiB (Linux), or 0 if unknown.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Samples this process's RSS every 10 ms until stopped; returns the peak.
pub struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    pub fn start() -> RssWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib()));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                p.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    pub fn peak(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The most a server with the default watermarks may queue for one client of
/// [`pipelined_peak_queued`]: the high watermark (256 KiB) plus one 64 KiB
/// reply and its head.
pub const WATERMARK_BOUND: u64 = 256 * 1024 + 64 * 1024 + 1024;

/// One client pipelines 1,000 `GET /` requests in a single write and never
/// reads, against a new server answering each with 64 KiB. Returns the
/// server's peak queued bytes for that connection.
pub fn pipelined_peak_of_64k_replies() -> u64 {
    use taskweave::http::{Server, ServerTask};
    let log = MemoryLog::new();
    let server = Server::builder()
        .access_log(log.clone())
        .serve(
            "127.0.0.1:0",
            |task: &mut ServerTask, _: &mut taskweave::Series| {
                task.response().set_body(vec![b'r'; 64 * 1024]);
            },
        )
        .expect("serve");
    pipelined_peak_queued(server.local_addr(), &log)
}

/// One client pipelines 1,000 requests in a single write and never reads;
/// after a while it resets the connection. Returns the server's peak queued
/// bytes for it, from its record in `log` (the server's only connection).
pub fn pipelined_peak_queued(addr: SocketAddr, log: &MemoryLog) -> u64 {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    let requests = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    s.write_all(&requests).unwrap();
    // Give the server time to answer all it will (it should stop at the
    // watermark); this is not a measure of speed.
    std::thread::sleep(Duration::from_millis(1500));
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    records(log, 1)[0].peak_queued_bytes()
}
