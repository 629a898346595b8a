//! End-to-end tests of `examples/sse_server --redis`: a redis-server of
//! their own on a free port (`support/redis.rs`) and two
//! instances of the example, driven over 127.0.0.1 by raw SSE clients. An
//! event posted to either instance reaches the subscribers of both under
//! one id; ids stay consecutive and ordered under concurrent publishers;
//! `Last-Event-ID` resumes on the other instance; a gap in the feed is
//! announced and a duplicate ignored; with Redis down a publish answers
//! 503 at once, and after Redis comes back (empty) the ids go on from
//! where the instances were.
//!
//! Without redis-server the tests warn and pass, except under `CI=true`,
//! where they fail. Every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::example::Server;
use support::redis::RedisServer;
use support::sse::{self, Client, Item};
use support::wait_until;

/// How long a test waits for one thing that should come at once.
const PROMPT: Duration = Duration::from_secs(5);

/// The channel of topic `t` under the default prefix.
fn channel(t: &str) -> String {
    format!("taskweave:sse:{t}")
}

/// A redis-server and two instances sharing it.
struct Cluster {
    redis: RedisServer,
    a: Server,
    b: Server,
}

impl Cluster {
    /// `None` without a redis-server (see `RedisServer::start`).
    fn start(a_args: &[&str]) -> Option<Cluster> {
        let redis = RedisServer::start()?;
        let url = redis.url("");
        let args = |extra: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = ["--redis", &url, "--access-log", "off", "--tick-ms", "0"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        let (a_args, b_args) = (args(a_args), args(&[]));
        fn refs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let a = Server::start("sse_server", &refs(&a_args));
        let b = Server::start("sse_server", &refs(&b_args));
        Some(Cluster { redis, a, b })
    }
}

/// Opens a stream of `topic` on `addr`, resuming after `last` if given.
fn open(addr: SocketAddr, topic: &str, last: Option<u64>) -> Client {
    let last = last.map(|l| l.to_string());
    let headers: Vec<(&str, &str)> = last.iter().map(|l| ("Last-Event-ID", l.as_str())).collect();
    let c = Client::open(addr, &format!("/events?topic={topic}"), &headers);
    assert_eq!(c.status, 200, "{}", c.head);
    c
}

/// The next `n` items (events and comments) of `c`, as `(id, data)` for an
/// event and `(0, ": comment")` for a comment.
fn take(c: &mut Client, n: usize) -> Vec<(u64, String)> {
    (0..n)
        .map(|i| match c.next(PROMPT) {
            Ok(Item::Event(e)) => (e.num(), e.data),
            Ok(Item::Comment(text)) => (0, format!(": {text}")),
            Ok(other) => panic!("item {i}: unexpected {other:?}"),
            Err(end) => panic!("item {i} of {n}: the stream gave {end:?}"),
        })
        .collect()
}

/// Asserts that `c` sends nothing more within a short while.
fn assert_quiet(c: &mut Client, who: &str) {
    match c.next(Duration::from_millis(300)) {
        Err(sse::End::Timeout) => {}
        other => panic!("{who}: expected nothing more, got {other:?}"),
    }
}

/// A sample of `addr`'s `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = sse::Conn::new(addr).get("/metrics").text();
    sse::metric(&text, name)
}

/// Must-show: an event posted to either instance reaches the clients of
/// both, under the id its POST answered, in order; the ticker of one
/// instance reaches the other's clients too.
#[test]
fn an_event_posted_to_either_instance_reaches_both() {
    let Some(cl) = Cluster::start(&["--tick-ms", "100"]) else {
        return;
    };
    let mut ca = open(cl.a.addr(), "news", None);
    let mut cb = open(cl.b.addr(), "news", None);
    let (mut pa, mut pb) = (sse::Conn::new(cl.a.addr()), sse::Conn::new(cl.b.addr()));
    let mut sent = Vec::new();
    for i in 0..12 {
        let (conn, via) = if i % 3 == 2 {
            (&mut pb, "B")
        } else {
            (&mut pa, "A")
        };
        let text = format!("event {i} via {via}\nsecond line");
        let id = conn.publish("news", text.as_bytes());
        sent.push((id, text));
    }
    let ids: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<u64>>(), "ids from the POSTs");
    assert_eq!(take(&mut ca, 12), sent, "client of A");
    assert_eq!(take(&mut cb, 12), sent, "client of B");
    assert_quiet(&mut ca, "client of A");
    assert_quiet(&mut cb, "client of B");

    // The ticker runs on A only; B's clients get its ticks, numbered alike.
    let mut ta = open(cl.a.addr(), "ticker", None);
    let mut tb = open(cl.b.addr(), "ticker", None);
    let (ticks_a, ticks_b) = (take(&mut ta, 3), take(&mut tb, 3));
    // The two streams began within a tick of each other: line them up.
    let first = ticks_a[0].0.max(ticks_b[0].0);
    let mut a_ids: Vec<u64> = ticks_a.iter().map(|t| t.0).collect();
    a_ids.extend(take(&mut ta, 2).iter().map(|t| t.0));
    let mut b_ids: Vec<u64> = ticks_b.iter().map(|t| t.0).collect();
    b_ids.extend(take(&mut tb, 2).iter().map(|t| t.0));
    for ids in [&mut a_ids, &mut b_ids] {
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ticks {ids:?}");
        ids.retain(|&id| id >= first);
    }
    let common = a_ids.len().min(b_ids.len());
    assert!(common >= 3, "{a_ids:?} {b_ids:?}");
    assert_eq!(a_ids[..common], b_ids[..common]);
    assert!(ticks_b[0].1.starts_with("tick "), "{ticks_b:?}");
}

/// Must-show: publishers posting at once to both instances get distinct,
/// consecutive ids, and every client of either sees the same sequence, in
/// id order, each event under the id its POST answered.
#[test]
fn concurrent_publishers_on_both_instances_keep_one_order() {
    let Some(cl) = Cluster::start(&[]) else {
        return;
    };
    let mut clients = [
        open(cl.a.addr(), "race", None),
        open(cl.b.addr(), "race", None),
        open(cl.b.addr(), "race", None),
    ];
    const EACH: usize = 40;
    let publishers: Vec<_> = [cl.a.addr(), cl.b.addr(), cl.a.addr()]
        .into_iter()
        .enumerate()
        .map(|(p, addr)| {
            std::thread::spawn(move || {
                let mut conn = sse::Conn::new(addr);
                (0..EACH)
                    .map(|i| {
                        let text = format!("publisher {p} event {i}");
                        (conn.publish("race", text.as_bytes()), text)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut sent: Vec<(u64, String)> = publishers
        .into_iter()
        .flat_map(|h| h.join().expect("a publisher thread"))
        .collect();
    sent.sort();
    let ids: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=3 * EACH as u64).collect::<Vec<u64>>());
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(take(c, 3 * EACH), sent, "client {i}");
    }
}

/// Must-show: a client of B that reconnects to A with `Last-Event-ID` gets
/// exactly the events after it, then the live ones; and the other way
/// round (id 10 from A, resumed on B: 11.. from B).
#[test]
fn last_event_id_resumes_on_the_other_instance() {
    let Some(cl) = Cluster::start(&[]) else {
        return;
    };
    // A watcher on each instance: once it has an event, so has the hub.
    let mut wa = open(cl.a.addr(), "r", None);
    let mut wb = open(cl.b.addr(), "r", None);
    let mut cb = open(cl.b.addr(), "r", None);
    let mut pa = sse::Conn::new(cl.a.addr());
    let mut sent = Vec::new();
    for i in 1..=10u64 {
        let text = format!("e{i}");
        assert_eq!(pa.publish("r", text.as_bytes()), i);
        sent.push((i, text));
    }
    assert_eq!(take(&mut wa, 10), sent);
    assert_eq!(take(&mut wb, 10), sent);
    // B's client read up to id 6, then its connection dropped.
    assert_eq!(take(&mut cb, 6), sent[..6]);
    drop(cb);
    let mut ca = open(cl.a.addr(), "r", Some(6));
    assert_eq!(take(&mut ca, 4), sent[6..], "resumed on A after 6");
    assert_quiet(&mut ca, "resumed on A");
    // Live ones follow, from either instance.
    let id = sse::Conn::new(cl.b.addr()).publish("r", b"e11");
    assert_eq!(id, 11);
    sent.push((11, "e11".into()));
    assert_eq!(take(&mut ca, 1), sent[10..]);

    // The brief's case: id 10 from A; events 11..15 while away; resumed on
    // B with `Last-Event-ID: 10`: 11.. from B.
    for i in 12..=15u64 {
        let text = format!("e{i}");
        assert_eq!(pa.publish("r", text.as_bytes()), i);
        sent.push((i, text));
    }
    assert_eq!(take(&mut wb, 5), sent[10..], "B has them all");
    let mut cb = open(cl.b.addr(), "r", Some(10));
    assert_eq!(take(&mut cb, 5), sent[10..], "resumed on B after 10");
    assert_quiet(&mut cb, "resumed on B");
}

/// A jump in the feed (events lost on the way) is announced to live
/// clients and to a client resuming from before it; an id already seen is
/// ignored; the next publish is numbered past what the instances saw even
/// though the Redis counter is behind.
#[test]
fn a_gap_in_the_feed_is_announced_and_a_duplicate_ignored() {
    let Some(cl) = Cluster::start(&[]) else {
        return;
    };
    let mut ca = open(cl.a.addr(), "g", None);
    let mut cb = open(cl.b.addr(), "g", None);
    let mut pa = sse::Conn::new(cl.a.addr());
    for i in 1..=3u64 {
        assert_eq!(pa.publish("g", format!("e{i}").as_bytes()), i);
    }
    for c in [&mut ca, &mut cb] {
        assert_eq!(take(c, 3).last(), Some(&(3, "e3".to_string())));
    }
    // Published straight to Redis, past the script: a duplicate, then a
    // jump from 3 to 8.
    let ch = channel("g");
    assert_eq!(cl.redis.raw().command(&["PUBLISH", &ch, "2 again"]), "2");
    assert_eq!(
        cl.redis.raw().command(&["PUBLISH", &ch, "8 after the gap"]),
        "2"
    );
    let note = ": 4 events missed: resuming at id 8".to_string();
    for c in [&mut ca, &mut cb] {
        assert_eq!(
            take(c, 2),
            [(0, note.clone()), (8, "after the gap".to_string())]
        );
    }
    // The counter says 3; B has seen 8: the script numbers past it.
    assert_eq!(sse::Conn::new(cl.b.addr()).publish("g", b"e9"), 9);
    for c in [&mut ca, &mut cb] {
        assert_eq!(take(c, 1), [(9, "e9".to_string())]);
    }
    // The history does not bridge the gap: resuming from before it says so.
    let mut r = open(cl.a.addr(), "g", Some(2));
    assert_eq!(
        take(&mut r, 3),
        [
            (0, ": 5 events missed: resuming at id 8".to_string()),
            (8, "after the gap".to_string()),
            (9, "e9".to_string())
        ]
    );
    assert_quiet(&mut r, "resumed from before the gap");
    for srv in [&cl.a, &cl.b] {
        let m = |n: &str| metric(srv.addr(), &format!("taskweave_sse_redis_{n}"));
        assert_eq!(m("duplicates_total"), Some(1.0));
        assert_eq!(m("missed_total"), Some(4.0));
        assert_eq!(m("messages_total"), Some(6.0));
    }
}

/// With Redis down, a publish answers 503 at once and the instances stay
/// up; once Redis is back (empty), they resubscribe and the ids go on from
/// where the instances were.
#[test]
fn redis_down_answers_503_and_recovery_keeps_ids_increasing() {
    let Some(mut cl) = Cluster::start(&[]) else {
        return;
    };
    let mut cb = open(cl.b.addr(), "d", None);
    let mut pa = sse::Conn::new(cl.a.addr());
    assert_eq!(pa.publish("d", b"one"), 1);
    assert_eq!(pa.publish("d", b"two"), 2);
    assert_eq!(take(&mut cb, 2)[1], (2, "two".to_string()));

    cl.redis.kill_9();
    let t = Instant::now();
    let reply = pa.send("POST", "/publish?topic=d", &[], b"lost");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains("redis unavailable"),
        "{}",
        reply.text()
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    for srv in [&cl.a, &cl.b] {
        let down = wait_until(PROMPT, || {
            metric(srv.addr(), "taskweave_sse_redis_subscribed") == Some(0.0)
        });
        assert!(down, "the subscription should be reported down");
    }
    cl.a.assert_running();
    cl.b.assert_running();

    cl.redis.restart();
    for srv in [&cl.a, &cl.b] {
        // The backoff between attempts is at most 5 s.
        let up = wait_until(Duration::from_secs(15), || {
            metric(srv.addr(), "taskweave_sse_redis_subscribed") == Some(1.0)
        });
        assert!(up, "no resubscription:\n{}", srv.stderr());
        assert!(srv.stderr().contains("resubscribed to Redis after"));
    }
    // The counter is gone; A has seen 2: the script numbers past it.
    assert_eq!(pa.publish("d", b"three"), 3);
    assert_eq!(take(&mut cb, 1), [(3, "three".to_string())]);
    assert_quiet(&mut cb, "client of B");
}
