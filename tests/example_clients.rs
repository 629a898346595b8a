//! The example clients as a user meets them, against real peers on
//! 127.0.0.1: `http_client` and redirects, `echo_client` and its latency
//! percentiles.

mod support;

use std::time::Instant;
use support::example::{run, Server};
use support::upstream::{path_of, Upstream};

/// An upstream where `/start` redirects (302) to `/final`, which answers
/// `final body`.
fn redirecting_upstream() -> Upstream {
    Upstream::start(|request| match path_of(request) {
        "/start" => "HTTP/1.1 302 Found\r\nLocation: /final\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
            .to_string(),
        "/final" => "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n\
                     final body\n"
            .to_string(),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    })
}

#[test]
fn http_client_follows_redirects_when_asked() {
    let up = redirecting_upstream();
    let out = run(
        "http_client",
        &[&up.url("/start"), "--redirects", "5", "--body"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("HTTP/1.1 200 OK\n"), "{stdout}");
    assert!(stdout.contains("\nfinal body\n"), "{stdout}");
    assert!(stdout.contains("redirects: 1"), "{stdout}");
    let final_url = format!("final URL:  {}", up.url("/final"));
    assert!(stdout.contains(&final_url), "{stdout}");
    assert_eq!(path_of(&up.received()), "/start");
    assert_eq!(path_of(&up.received()), "/final");
}

#[test]
fn http_client_shows_a_redirect_by_default() {
    // The library's default, `redirect_max` 0: the 302 is the answer.
    let up = redirecting_upstream();
    let out = run("http_client", &[&up.url("/start"), "--body"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("HTTP/1.1 302 Found\n"), "{stdout}");
    assert!(stdout.contains("\nLocation: /final\n"), "{stdout}");
    assert!(stdout.contains("redirects: 0"), "{stdout}");
    assert!(!stdout.contains("final body"), "{stdout}");
}

#[test]
fn http_client_stops_at_the_redirect_limit() {
    // Every path redirects to the next: with --redirects 2 the third 302 is
    // the answer.
    let up = Upstream::start(|request| {
        let n: u32 = path_of(request)
            .trim_start_matches('/')
            .parse()
            .unwrap_or(0);
        format!(
            "HTTP/1.1 302 Found\r\nLocation: /{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            n + 1
        )
    });
    let out = run("http_client", &[&up.url("/0"), "--redirects", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("HTTP/1.1 302 Found\n"), "{stdout}");
    assert!(stdout.contains("\nLocation: /3\n"), "{stdout}");
    assert!(stdout.contains("redirects: 2"), "{stdout}");
}

/// The number after `key` in `line` (`p50 0.562 ms` gives 0.562 for `p50`).
fn number_after(line: &str, key: &str) -> f64 {
    let mut words = line.split_whitespace().skip_while(|w| *w != key);
    words
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn echo_client_prints_latency_percentiles() {
    let server = Server::start("echo_server", &["--access-log", "off"]);
    let port = server.addr().port().to_string();
    let started = Instant::now();
    let out = run(
        "echo_client",
        &[
            "--port",
            &port,
            "--conns",
            "4",
            "--pipeline",
            "4",
            "--requests",
            "800",
        ],
    );
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("800/800 echoes ok"), "{stdout}");
    let line = stdout.lines().last().unwrap_or_default();
    let tail = line.split("latency ").nth(1).expect("a latency part");
    assert!(tail.ends_with(" ms"), "in ms: {line}");
    let [p50, p90, p99, max] = ["p50", "p90", "p99", "max"].map(|k| number_after(tail, k));
    // Ordered, above zero (a round trip takes some microseconds), and
    // none longer than the whole run.
    assert!(0.0 < p50, "{line}");
    assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{line}");
    assert!(
        max < wall_ms,
        "max {max} ms, the run took {wall_ms:.3} ms: {line}"
    );
}
