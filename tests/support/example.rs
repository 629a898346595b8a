//! An example server run as a child process: its debug binary is found (and
//! built when missing or older than the sources), it is started on a port
//! of its own choosing (`--port 0`; it reports the address it bound), and it
//! is killed when dropped. Its resident memory is read from `/proc`. An
//! example that runs to its end (a client, or a bad command line) is
//! [`run`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a starting server may take to say where it listens.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The package's root (where `Cargo.toml` is).
fn package_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The profile directory the running test binary was built into
/// (`target/debug`: the binary is in its `deps`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's directory");
    deps.parent().expect("the profile directory").to_path_buf()
}

/// The newest modification time of the files under `dir` (recursively).
fn newest_under(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_under(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Whether `bin` is missing or older than the sources it is built from.
fn stale(bin: &Path) -> bool {
    let Some(built) = bin.metadata().ok().and_then(|m| m.modified().ok()) else {
        return true;
    };
    let root = package_root();
    let sources = [
        newest_under(&root.join("src")),
        newest_under(&root.join("examples")),
        root.join("Cargo.toml")
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok()),
    ];
    sources.into_iter().flatten().any(|t| t > built)
}

/// The debug binary of example `name`, built with `$CARGO build --example
/// name` if it is missing or stale (`cargo test --test X` alone builds no
/// example). Built once per test process.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let bin = profile_dir().join("examples").join(name);
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) && stale(&bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("building example {name} ({cargo} build --example {name})");
        let status = Command::new(&cargo)
            .args(["build", "--example", name])
            .current_dir(package_root())
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(status.success(), "{cargo} build --example {name}: {status}");
        built.push(name.to_string());
    }
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

/// Runs example `name` with `args` to its end and returns what it wrote.
/// It must end within [`RUN_LIMIT`]: past it, it is killed and the test
/// fails.
pub fn run(name: &str, args: &[&str]) -> Output {
    let child = Command::new(binary(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    match super::with_deadline(RUN_LIMIT, move || child.wait_with_output()) {
        Some(out) => out.expect("the example's output"),
        None => {
            // SAFETY: kill(2) on our own child, not yet reaped (the thread
            // waiting for it reaps it once it is killed); no memory shared.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL)
            };
            panic!("{name} {args:?} still running after {RUN_LIMIT:?}")
        }
    }
}

/// How long [`run`] lets an example run.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A running example server; killed (SIGKILL) when dropped unless it has
/// exited.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    name: String,
}

impl Server {
    /// Starts example `name` with `args` and `--port 0`, and waits until it
    /// says it listens (`... listening on http://ADDR` on stderr). Its stdout
    /// is discarded (pass `--access-log PATH` or `off` to keep records).
    pub fn start(name: &str, args: &[&str]) -> Server {
        let bin = binary(name);
        let mut child = Command::new(&bin)
            .args(args)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let text = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let addr = addr.trim().trim_start_matches("http://");
                    let addr = addr.trim_start_matches("https://");
                    let _ = tx.send(addr.trim_end_matches('/').to_string());
                }
                let mut t = text.lock().unwrap_or_else(|e| e.into_inner());
                t.push_str(&line);
                t.push('\n');
            }
        });
        let addr = match rx.recv_timeout(START_LIMIT) {
            Ok(a) => a
                .parse()
                .unwrap_or_else(|e| panic!("{name} said {a:?}: {e}")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name} {args:?} did not say where it listens within {START_LIMIT:?}:\n{}",
                    stderr.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        Server {
            child,
            addr,
            stderr,
            name: name.to_string(),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Its resident set size in KiB (`VmRSS` in `/proc/PID/status`), or 0
    /// once it has gone.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid())
    }

    /// Sends it `signal` (e.g. `libc::SIGINT`).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill(2) with our own child's pid (not yet reaped: we
        // hold the Child), no memory is shared.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits at most `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panics, with its stderr, if it is no longer running (it crashed).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The resident set size of process `pid` in KiB, or 0 if it is gone.
pub fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
