//! Name resolution and connecting, through the real resolver: a name with
//! two addresses whose first refuses, every address refusing, the cache's
//! TTL, and a lookup that outlives its timeout.
//!
//! The tests that resolve names run in a child process inside network and
//! mount namespaces that hold only loopback, with `/etc/hosts` and
//! `/etc/resolv.conf` replaced by files of the test's own (`unshare -mn`,
//! `ip`): names come from that hosts file, DNS goes to 127.0.0.1, and no
//! query leaves the machine. Every peer is on 127.0.0.x. A machine that
//! cannot make the sandbox fails these tests: they never pass by skipping.

#[path = "../examples/common/echo_proto.rs"]
mod echo_proto;
mod support;

use echo_proto::{Echo, Frame};
use std::error::Error as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::child;
use taskweave::comm::{ClientConfig, ConnConfig};
use taskweave::http::{self, Server, ServerHandle, ServerTask};
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::task::ClientTask;
use taskweave::{timer, Error, Parallel, Series, Settings, WaitGroup};

/// The first line of every hosts file the sandbox mounts: a child writes
/// `/etc/hosts` only when it begins with this (so only the sandbox's copy).
const HOSTS_MARK: &str = "# taskweave test sandbox hosts file";

/// Runs the `#[ignore]`d test `name` of this binary in a child process, in
/// the sandbox, with `hosts` (lines after the mark) as its `/etc/hosts` and
/// 127.0.0.1 as its DNS server, and asserts that it passed. Panics when the
/// sandbox cannot be made.
fn in_sandbox(name: &str, hosts: &str) {
    for (program, args, what) in [
        (
            "unshare",
            &["-mn", "true"][..],
            "`unshare -mn` (root or user namespaces)",
        ),
        (
            "unshare",
            &["-n", "ip", "link", "set", "lo", "up"][..],
            "`ip link set lo up` in a new network namespace (iproute2)",
        ),
    ] {
        assert!(
            child::works(program, args),
            "this test needs {what} for its DNS sandbox: run it where namespaces can be \
             made (scripts/test.sh installs util-linux and iproute2)"
        );
    }
    let dir = std::env::temp_dir();
    let tag = format!("{}-{name}", std::process::id());
    let conf = dir.join(format!("tw-resolv-{tag}"));
    let hosts_file = dir.join(format!("tw-hosts-{tag}"));
    std::fs::write(
        &conf,
        "nameserver 127.0.0.1\noptions timeout:5 attempts:1\n",
    )
    .unwrap();
    std::fs::write(&hosts_file, format!("{HOSTS_MARK}\n{hosts}")).unwrap();
    let script = "ip link set lo up && mount --bind \"$0\" /etc/resolv.conf && \
                  mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"";
    let outcome = child::run(
        name,
        &[
            "unshare",
            "-mn",
            "sh",
            "-c",
            script,
            conf.to_str().unwrap(),
            hosts_file.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_file(&conf);
    let _ = std::fs::remove_file(&hosts_file);
    assert!(
        outcome.passed(),
        "child {name} ended with {}",
        outcome.describe()
    );
}

/// Replaces the sandbox's `/etc/hosts` with `hosts` (after the mark);
/// refuses to touch a hosts file that is not the sandbox's.
fn rewrite_hosts(hosts: &str) {
    let now = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(
        now.starts_with(HOSTS_MARK),
        "/etc/hosts is not the sandbox's copy; not writing it"
    );
    // In place: the bind mount is of this file, so it cannot be renamed over.
    std::fs::write("/etc/hosts", format!("{HOSTS_MARK}\n{hosts}")).unwrap();
}

/// An HTTP server on `ip` (port `port`, 0 for any) answering `body`.
fn serve_on(ip: &str, port: u16, body: &'static str) -> ServerHandle {
    Server::builder()
        .serve(format!("{ip}:{port}"), move |task: &mut ServerTask, _| {
            task.response().set_body(body);
        })
        .unwrap_or_else(|e| panic!("serve on {ip}:{port}: {e}"))
}

/// What a GET's callback saw.
struct Got {
    result: Result<(u16, String), Error>,
    dns: Option<Duration>,
    took: Duration,
}

/// One GET of `url` with `config`, waited for.
fn get(url: &str, config: Arc<ClientConfig>) -> Got {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let task = http::get(url, move |t, _| {
        let result = t
            .result()
            .map(|r| {
                let body = String::from_utf8_lossy(r.body()).into_owned();
                (r.status(), body)
            })
            .map_err(Clone::clone);
        let _ = tx.send(Got {
            result,
            dns: t.timings().dns,
            took: start.elapsed(),
        });
    })
    .config(config);
    Series::new(task).start();
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("GET {url}: no callback within 30 s"))
}

/// The addresses the system resolver gives for `host`, in its order.
fn resolved(host: &str, port: u16) -> Vec<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolve {host}: {e}"))
        .collect()
}

/// Asserts that a connect to `addr` is refused (nothing listens there).
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("a connect to {addr} should be refused, got {other:?}"),
    }
}

/// A port on 127.0.0.1 with nothing listening on it (it was free a moment
/// ago; in the sandbox nothing else runs, so it stays free).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// A name with two addresses, the first refusing.

const TWO: &str = "127.0.0.1 two.test\n127.0.0.2 two.test\n";

/// `two.test` is 127.0.0.1 then 127.0.0.2; the server listens only on the
/// second. A GET, and 200 pipelined echo requests that queue behind the
/// connect, all reach the second address.
#[test]
fn a_name_whose_first_address_refuses_is_reached_at_the_second() {
    in_sandbox("child_falls_back_to_the_second_address", TWO);
}

#[test]
#[ignore = "run by a_name_whose_first_address_refuses_is_reached_at_the_second, in a sandbox"]
fn child_falls_back_to_the_second_address() {
    if !child::is_child("child_falls_back_to_the_second_address") {
        return;
    }
    let http_server = serve_on("127.0.0.2", 0, "second");
    let port = http_server.local_addr().port();
    let first = SocketAddr::from(([127, 0, 0, 1], port));
    let second = SocketAddr::from(([127, 0, 0, 2], port));
    assert_eq!(
        resolved("two.test", port),
        vec![first, second],
        "the premise: the resolver gives the refusing address first"
    );
    assert_refused(first);

    let log = MemoryLog::new();
    let got = get(
        &format!("http://two.test:{port}/"),
        Arc::new(ClientConfig::default().access_log(log.clone())),
    );
    match &got.result {
        Ok((200, body)) if body == "second" => {}
        other => panic!("GET http://two.test:{port}/: {other:?} (want 200 \"second\")"),
    }
    assert!(got.dns.is_some(), "the name was looked up");
    // The refused attempt left its record (the second is still open).
    let records = support::records(&log, 1);
    let refused: Vec<_> = records
        .iter()
        .map(|r| (r.peer(), r.close_reason()))
        .collect();
    assert_eq!(refused, vec![(first, Some(CloseReason::Reset))]);

    // Many requests at once over at most two connections: they wait on the
    // connects, and every one moves on with its connection.
    let echo = taskweave::task::Server::builder()
        .serve("127.0.0.2:0", Echo, |task, _| {
            let payload = task.request().payload().clone();
            task.response().set_payload(payload);
        })
        .expect("echo server on 127.0.0.2");
    let echo_port = echo.local_addr().port();
    assert_refused(SocketAddr::from(([127, 0, 0, 1], echo_port)));
    let config = Arc::new(ClientConfig::default().max_per_target(2));
    let (tx, rx) = mpsc::channel();
    let mut par = Parallel::new(|_, _| {});
    for i in 0..200 {
        let tx = tx.clone();
        let payload = format!("frame {i}");
        let task = ClientTask::new(
            Arc::new(Echo),
            ("two.test", echo_port),
            Frame::new(payload.clone()),
            move |t, _| {
                let res = t.result().map(|f| f.payload().to_vec());
                let ok = res.as_ref().is_ok_and(|p| p == payload.as_bytes());
                let _ = tx.send((i, ok, format!("{res:?}"), t.peer_addr()));
            },
        )
        .with_config(config.clone());
        par.add(Series::new(task));
    }
    Series::new(par).start();
    let echo_second = SocketAddr::from(([127, 0, 0, 2], echo_port));
    for _ in 0..200 {
        let (i, ok, res, peer) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("every echo request completes");
        assert!(ok, "echo request {i}: {res}");
        assert_eq!(peer, Some(echo_second), "echo request {i} went to {peer:?}");
    }
}

// ---------------------------------------------------------------------------
// Every address refusing.

/// `two.test` resolves to two addresses and neither listens: the task fails
/// with `Error::Connect`, which names both, and whose `source()` is the
/// `io::Error` (ConnectionRefused, with its OS error).
#[test]
fn every_address_refusing_fails_with_an_error_naming_each() {
    in_sandbox("child_every_address_refuses", TWO);
}

#[test]
#[ignore = "run by every_address_refusing_fails_with_an_error_naming_each, in a sandbox"]
fn child_every_address_refuses() {
    if !child::is_child("child_every_address_refuses") {
        return;
    }
    let port = closed_port();
    let addrs = resolved("two.test", port);
    assert_eq!(addrs.len(), 2, "the premise: two addresses, {addrs:?}");
    for &addr in &addrs {
        assert_refused(addr);
    }
    let got = get(
        &format!("http://two.test:{port}/"),
        Arc::new(ClientConfig::default()),
    );
    let err = match got.result {
        Err(e) => e,
        Ok(ok) => panic!("GET of a name whose addresses all refuse succeeded: {ok:?}"),
    };
    assert_connect_refused(&err, &addrs);
}

/// `err` is a refused connect that tried `addrs`, in order, and says so.
fn assert_connect_refused(err: &Error, addrs: &[SocketAddr]) {
    let Error::Connect(connect) = err else {
        panic!("want Error::Connect, got {err:?}");
    };
    let tried: Vec<SocketAddr> = connect.attempts().map(|(a, _)| a).collect();
    assert_eq!(tried, addrs, "the addresses tried, in order");
    for (addr, e) in connect.attempts() {
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{addr}: {e}");
    }
    let text = err.to_string();
    for addr in addrs {
        assert!(
            text.contains(&addr.to_string()),
            "the message names {addr}: {text}"
        );
    }
    let source = err.source().expect("Error::Connect has a source");
    let io = source
        .downcast_ref::<io::Error>()
        .unwrap_or_else(|| panic!("the source is an io::Error, not {source:?}"));
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED), "{io:?}");
    assert_eq!(connect.kind(), io::ErrorKind::ConnectionRefused);
}

/// Without a name (no sandbox needed): a refused connect to an address is
/// `Error::Connect` naming it, with the `io::Error` as its source.
#[test]
fn a_refused_address_keeps_its_io_error() {
    let addr = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let got = get(
        &format!("http://{addr}/"),
        Arc::new(ClientConfig::default()),
    );
    let err = got.result.expect_err("nothing listens there");
    assert_connect_refused(&err, &[addr]);
}

// ---------------------------------------------------------------------------
// The cache's TTL.

/// A name is reused for the config's `dns_ttl` and looked up again after:
/// `ttl.test` moves from 127.0.0.2 to 127.0.0.3 in the hosts file, and
/// requests follow it once the TTL has passed, not before. A config with a
/// zero TTL looks the name up for every connection.
#[test]
fn a_name_is_looked_up_again_once_its_ttl_has_passed() {
    in_sandbox("child_ttl", "127.0.0.2 ttl.test\n");
}

#[test]
#[ignore = "run by a_name_is_looked_up_again_once_its_ttl_has_passed, in a sandbox"]
fn child_ttl() {
    if !child::is_child("child_ttl") {
        return;
    }
    let a = serve_on("127.0.0.2", 0, "a");
    let port = a.local_addr().port();
    let _b = serve_on("127.0.0.3", port, "b");
    let url = format!("http://ttl.test:{port}/");
    let ttl = Duration::from_millis(800);
    // A config of its own per request: a new pool, so a new connection and
    // a lookup (or a cache hit) each time.
    let fresh = |ttl| Arc::new(ClientConfig::default().dns_ttl(ttl));
    let body = |got: &Got| match &got.result {
        Ok((200, body)) => body.clone(),
        other => panic!("GET {url}: {other:?}"),
    };

    let looked_up = Instant::now();
    let got = get(&url, fresh(ttl));
    assert_eq!(body(&got), "a");
    assert!(got.dns.is_some(), "the first request looks the name up");

    rewrite_hosts("127.0.0.3 ttl.test\n");
    let got = get(&url, fresh(ttl));
    assert!(
        looked_up.elapsed() < ttl,
        "too slow to check the cache: {:?}",
        looked_up.elapsed()
    );
    assert_eq!(body(&got), "a", "within the TTL the cached address is used");
    assert_eq!(got.dns, None, "within the TTL no lookup is made");

    std::thread::sleep((looked_up + ttl + Duration::from_millis(100)) - Instant::now());
    let got = get(&url, fresh(ttl));
    assert_eq!(body(&got), "b", "past the TTL the name is looked up again");
    assert!(got.dns.is_some());
    let got = get(&url, fresh(ttl));
    assert_eq!(
        (body(&got).as_str(), got.dns),
        ("b", None),
        "and cached again"
    );

    rewrite_hosts("127.0.0.2 ttl.test\n");
    for _ in 0..2 {
        let got = get(&url, fresh(Duration::ZERO));
        assert_eq!(body(&got), "a", "a zero TTL looks the name up every time");
        assert!(got.dns.is_some());
    }
}

// ---------------------------------------------------------------------------
// A lookup that outlives its timeout.

/// With a DNS server that never answers, a GET fails with
/// `Error::DnsTimeout` at `dns_timeout` (300 ms), long before glibc gives up
/// (5 s here), and the one poller keeps time meanwhile: timers due every
/// 20 ms fire on time.
#[test]
fn a_lookup_past_its_timeout_fails_the_task_and_not_the_poller() {
    in_sandbox("child_dns_timeout", "");
}

#[test]
#[ignore = "run by a_lookup_past_its_timeout_fails_the_task_and_not_the_poller, in a sandbox"]
fn child_dns_timeout() {
    if !child::is_child("child_dns_timeout") {
        return;
    }
    Settings {
        poller_threads: 1,
        ..Settings::default()
    }
    .apply()
    .expect("settings before the first task");
    // A DNS server that reads queries and never answers.
    let dns = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while dns.recv_from(&mut buf).is_ok() {}
    });
    let config = Arc::new(ClientConfig::new(ConnConfig {
        dns_timeout: Duration::from_millis(300),
        ..ConnConfig::default()
    }));

    // Timers on the one poller while the lookup hangs: 40 of 20 ms.
    let ticks = WaitGroup::new(1);
    let ticked = ticks.clone();
    let start = Instant::now();
    let mut series = Series::new(timer(Duration::from_millis(20), |_, _| {}));
    for _ in 1..40 {
        series.push_back(timer(Duration::from_millis(20), |_, _| {}));
    }
    series.on_done(move |_| ticked.done()).start();

    let got = get("http://silent.test/", config);
    match &got.result {
        Err(Error::DnsTimeout(what)) if what.contains("silent.test") => {}
        other => panic!("GET http://silent.test/ with no DNS answer: {other:?}"),
    }
    let msg = got.result.as_ref().unwrap_err().to_string();
    assert!(msg.starts_with("DNS timeout"), "{msg}");
    assert!(
        got.took >= Duration::from_millis(300) && got.took < Duration::from_millis(1500),
        "failed after {:?}; want the 300 ms DNS timeout",
        got.took
    );
    assert!(
        got.dns.is_some_and(|d| d >= Duration::from_millis(300)),
        "{:?}",
        got.dns
    );
    assert!(
        ticks.wait_timeout(Duration::from_secs(5)),
        "the timers never finished"
    );
    let ticking = start.elapsed();
    assert!(
        ticking < Duration::from_millis(1600),
        "40 timers of 20 ms took {ticking:?}: the poller was held up"
    );
}
