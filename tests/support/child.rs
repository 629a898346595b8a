//! Tests that need a process of their own: this test binary re-run with one
//! `#[ignore]`d test selected, optionally under a wrapper such as `unshare`.
//! The parent test judges the child by how it ended (exit code or signal) and
//! shows its output.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set, to the test's name, in the environment of a child run by [`run`].
const CHILD: &str = "TW_TEST_CHILD";

/// Whether this process is the child started to run the test `name`. Child
/// tests are `#[ignore]`d and return at once when this is false, so a plain
/// `cargo test -- --ignored` does not run them in a shared process.
pub fn is_child(name: &str) -> bool {
    let child = std::env::var(CHILD).is_ok_and(|v| v == name);
    if child {
        eprintln!(); // ends the harness's "test ... " line: the output is ours
    }
    child
}

/// Whether the environment says this is CI (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test cannot run here because `what` is missing. Under CI that fails the
/// test; elsewhere it prints a warning and the caller returns.
pub fn missing(what: &str) {
    assert!(
        !under_ci(),
        "CI=true, but this test cannot run here: {what}"
    );
    eprintln!("WARNING: test skipped (not under CI): {what}");
}

/// How a child ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// It was still running after the time limit and was killed.
    pub timed_out: bool,
    /// Its stdout and stderr.
    pub output: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether its test passed (exit code 0).
    pub fn passed(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// How it ended and what it said, for a failing assertion's message.
    pub fn describe(&self) -> String {
        let how = match (self.code, self.signal) {
            (_, Some(sig)) => format!("signal {sig}"),
            (Some(code), None) => format!("exit code {code}"),
            _ => "no status".into(),
        };
        let limit = if self.timed_out {
            " (killed: time limit)"
        } else {
            ""
        };
        format!("{how}{limit} after {:?}:\n{}", self.elapsed, self.summary())
    }

    /// The lines of the output that matter: ours and the panic message, not
    /// the test harness's.
    pub fn summary(&self) -> String {
        self.output
            .lines()
            .filter(|l| {
                let harness = [
                    "running ",
                    "test ",
                    "note: ",
                    "successes:",
                    "failures:",
                    "    ",
                ];
                !l.is_empty() && !harness.iter().any(|h| l.starts_with(h))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the `#[ignore]`d test `name` of this binary alone in a child process,
/// after `wrapper` (a command that ends by executing its arguments, e.g.
/// `["unshare", "-n"]`; empty for none). Kills it after `limit`.
pub fn run(name: &str, wrapper: &[&str], limit: Duration) -> Outcome {
    let exe = std::env::current_exe().expect("the test binary's path");
    let args = [
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let start = Instant::now();
    let mut child = cmd
        .args(args)
        .env(CHILD, name)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {wrapper:?} {}: {e}", exe.display()));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break st;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for the killed child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let output = out.join().unwrap_or_default() + &err.join().unwrap_or_default();
    Outcome {
        code: status.code(),
        signal: if timed_out { None } else { status.signal() },
        timed_out,
        output,
        elapsed,
    }
}

/// Whether `program args` runs and exits 0 (to probe for a capability).
pub fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
