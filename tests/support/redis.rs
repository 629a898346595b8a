//! A real `redis-server` as a child process: started on a free 127.0.0.1
//! port with nothing persisted and `DEBUG` allowed from localhost, ready once
//! it answers `PING` (asked over a plain `TcpStream`, not the library under
//! test), killed when the last handle to it is dropped. It can be killed
//! with SIGKILL and started again on the same port.
//!
//! Without `redis-server` installed, [`RedisServer::start`] returns `None`
//! after [`child::missing`]: a failure under `CI=true`, a warning elsewhere.

use super::child;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROGRAM: &str = "redis-server";
/// How long a starting server may take to answer `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running `redis-server`. Clones are handles to the same process; the
/// process is killed when the last one is dropped (or at [`stop`]).
///
/// [`stop`]: RedisServer::stop
#[derive(Clone)]
pub struct RedisServer {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    extra: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// A server with the test settings only; `None` (after a warning) when
    /// `redis-server` is not installed and this is not CI.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// A server with `extra` arguments too (such as
    /// `["--requirepass", "secret"]`).
    pub fn start_with(extra: &[&str]) -> Option<RedisServer> {
        if !child::works(PROGRAM, &["--version"]) {
            child::missing("redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // A free port can be taken between our probe and the server's bind
        // (by any socket, even an outgoing one): try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let inner = Inner {
                port,
                extra: extra.clone(),
                log: std::env::temp_dir()
                    .join(format!("taskweave-redis-{}-{port}.log", std::process::id())),
                child: Mutex::new(None),
            };
            match inner.launch() {
                Ok(()) => {
                    return Some(RedisServer {
                        inner: Arc::new(inner),
                    })
                }
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.inner.port))
    }

    /// `redis://127.0.0.1:PORT` followed by `rest` (`""`, `"/3"`,
    /// `"?protocol=3"`...).
    pub fn url(&self, rest: &str) -> String {
        format!("redis://127.0.0.1:{}{rest}", self.inner.port)
    }

    /// Kills the server with SIGKILL (no shutdown, no goodbye to clients)
    /// and reaps it. Its port is free afterwards.
    pub fn kill_9(&self) {
        self.inner.kill();
    }

    /// Starts it again on the same port (killing it first if it runs) and
    /// waits until it answers.
    pub fn restart(&self) {
        self.inner.kill();
        // The port is ours; the bind may still fail for a moment while the
        // kernel tears the old listener down.
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match self.inner.launch() {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    panic!(
                        "redis-server did not restart on port {}: {why}",
                        self.port()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Kills it now, whoever else holds a handle (a test that hung).
    pub fn stop(&self) {
        self.inner.kill();
    }

    /// A plain connection to it, for commands the test sends itself.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.addr())
    }
}

impl Inner {
    /// Starts the process and waits for its `PONG` (or `NOAUTH`: it
    /// answers, it just wants a password). `Err` if it exits or stays
    /// silent.
    fn launch(&self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = std::env::temp_dir();
        let mut cmd = Command::new(PROGRAM);
        cmd.args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&self.log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {PROGRAM}: {e}"))?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{PROGRAM} on port {port} exited ({status}):\n{}",
                    self.log_tail()
                ));
            }
            if answers_ping(self.port) {
                *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{PROGRAM} on port {port} did not answer PING within {START_LIMIT:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log, to say why it did not start.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Whether a server on `port` answers an inline `PING` at all (`+PONG`, or
/// `-NOAUTH` when it wants a password).
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// A plain connection to a Redis server: sends commands as RESP arrays and
/// reads replies of one line (`+`, `-`, `:`) or one blob (`$`).
pub struct RawConn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let s = TcpStream::connect(addr).expect("connect to redis-server");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        RawConn { s, buf: Vec::new() }
    }

    /// Sends one command and returns its reply's text: the line after the
    /// type byte (`OK`, `ERR ...`, `3`), or a blob's contents.
    pub fn command(&mut self, args: &[&str]) -> String {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.s.write_all(&out).expect("write to redis-server");
        let line = self.line();
        match line.split_first() {
            Some((b'$', len)) => {
                let len: i64 = std::str::from_utf8(len).unwrap().parse().unwrap();
                if len < 0 {
                    return String::new();
                }
                let blob = self.take(len as usize + 2);
                String::from_utf8_lossy(&blob[..len as usize]).into_owned()
            }
            Some((b'+' | b'-' | b':', text)) => String::from_utf8_lossy(text).into_owned(),
            _ => panic!(
                "an unexpected reply to {args:?}: {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }

    /// One line, without its CRLF.
    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return line;
            }
            self.fill();
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.s.read(&mut chunk).expect("read from redis-server");
        assert!(n > 0, "redis-server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}
