//! A minimal redis-server for tests (to be reconciled with the fuller
//! `support/redis.rs` of another branch): started on a free port of
//! 127.0.0.1 with no persistence, killed when dropped, and a raw RESP
//! `command` to drive it. Included with `#[path]` by the tests that use it.
//!
//! [`RedisServer::start`] returns `None` when there is no redis-server here
//! (after `child::missing`, which fails the test under `CI=true`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where redis-server may be.
const CANDIDATES: [&str; 3] = [
    "/usr/bin/redis-server",
    "/usr/local/bin/redis-server",
    "redis-server",
];

/// A running redis-server, killed (SIGKILL) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits (at most 10 s) until
    /// it answers `PING`; `None` if there is none to start here.
    pub fn start() -> Option<RedisServer> {
        let Some(bin) = find() else {
            crate::support::child::missing(
                "redis-server (install redis-server, or put it on PATH)",
            );
            return None;
        };
        // A port found free may be taken before redis-server binds it: try
        // again on another.
        for _ in 0..5 {
            let port = free_port();
            let mut srv = RedisServer {
                child: None,
                bin: bin.clone(),
                port,
            };
            if srv.spawn() {
                return Some(srv);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (after [`kill`]).
    ///
    /// [`kill`]: RedisServer::kill
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Starts the process and waits for its `PONG`; false if it exited.
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new(&self.bin)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", env!("CARGO_TARGET_TMPDIR")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if self.try_command(&["PING"]).is_ok_and(|r| r == "PONG") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Sends one command and returns its reply as text: a simple string or
    /// a bulk string's content, an integer's digits, `-ERR ...` for an
    /// error, `(nil)` for a null (panics on anything else or on failure).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(line.len().min(1));
        Ok(match kind {
            "+" | ":" => rest.to_string(),
            "-" => line.to_string(),
            "$" if rest == "-1" => "(nil)".to_string(),
            "$" => {
                let n: usize = rest.parse().map_err(std::io::Error::other)?;
                let mut body = vec![0; n + 2];
                std::io::Read::read_exact(&mut r, &mut body)?;
                String::from_utf8_lossy(&body[..n]).into_owned()
            }
            _ => return Err(std::io::Error::other(format!("unexpected reply {line:?}"))),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The redis-server binary, if there is one.
fn find() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| {
        Command::new(p)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
