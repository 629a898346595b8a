//! The Redis subscriber against a real `redis-server` on 127.0.0.1: channel
//! and pattern messages in RESP2 and RESP3, pushes beside replies, more
//! channels while subscribed, and a server killed with `kill -9` and
//! restarted: the subscriber resubscribes and reports the gap. Each test
//! starts its own server and waits with deadlines, never forever.

mod support;

use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};
use support::redis::RedisServer;
use taskweave::redis::{self, Message, Status, Subscriber, SubscriberHandle};
use taskweave::Series;

const WAIT: Duration = Duration::from_secs(10);

/// A started subscriber and what it reports.
struct Watch {
    handle: SubscriberHandle,
    messages: Receiver<Message>,
    statuses: Receiver<Status>,
}

fn watch(url: &str, channels: &[&str], patterns: &[&str]) -> Watch {
    let (msg_tx, messages) = channel();
    let (status_tx, statuses) = channel();
    let handle = Subscriber::new(url)
        .expect("url")
        .channels(channels)
        .patterns(patterns)
        .ping_every(Duration::from_millis(200), Duration::from_millis(500))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .on_message(move |m| {
            let _ = msg_tx.send(m);
        })
        .on_status(move |s| {
            let _ = status_tx.send(s);
        })
        .start();
    Watch {
        handle,
        messages,
        statuses,
    }
}

impl Watch {
    /// Waits for `Subscribed`; returns its gap.
    fn subscribed(&self) -> Option<Duration> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.statuses.recv_timeout(left) {
                Ok(Status::Subscribed { gap }) => return gap,
                Ok(Status::Lost { .. }) => continue,
                Err(e) => panic!("no Subscribed status: {e}"),
            }
        }
    }

    fn next(&self) -> Message {
        self.messages.recv_timeout(WAIT).expect("a message")
    }
}

/// Publishes `payload` on `channel` and returns how many received it.
fn publish(url: &str, topic: &str, payload: &str) -> i64 {
    let (tx, rx) = channel();
    let task = redis::command(url, ["PUBLISH", topic, payload], move |t, _| {
        let _ = tx.send(t.value().ok().and_then(|v| v.as_int()).unwrap_or(-1));
    });
    Series::new(task).start();
    rx.recv_timeout(WAIT).expect("PUBLISH answered")
}

fn messages_in_both_protocols(query: &str) {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url(query);
    let w = watch(&url, &["news"], &["ev:*"]);
    assert_eq!(w.subscribed(), None);
    assert!(w.handle.is_subscribed());
    assert_eq!(publish(&url, "news", "one"), 1);
    let m = w.next();
    assert_eq!(
        (&m.channel[..], m.pattern.as_deref(), &m.payload[..]),
        (&b"news"[..], None, &b"one"[..])
    );
    assert_eq!(publish(&url, "ev:7", "two"), 1);
    let m = w.next();
    assert_eq!(m.channel, "ev:7");
    assert_eq!(m.pattern.as_deref(), Some(&b"ev:*"[..]));
    assert_eq!(m.payload, "two");
    // Binary payloads arrive as sent.
    assert_eq!(publish(&url, "news", "a\r\n\0b"), 1);
    assert_eq!(w.next().payload, "a\r\n\0b");
    // More channels while subscribed.
    w.handle.subscribe(["late"]);
    let deadline = Instant::now() + WAIT;
    while publish(&url, "late", "x") == 0 {
        assert!(
            Instant::now() < deadline,
            "SUBSCRIBE late never took effect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.next().channel, "late");
    // Pings go on beside the messages without taking their place.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(publish(&url, "news", "after pings"), 1);
    assert_eq!(w.next().payload, "after pings");
    w.handle.stop();
    // After stop, the connection is gone: nobody receives.
    let deadline = Instant::now() + WAIT;
    while publish(&url, "news", "gone") != 0 {
        assert!(Instant::now() < deadline, "the subscriber did not leave");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(w.messages.try_iter().all(|m| m.payload != "gone"));
}

#[test]
fn channel_and_pattern_messages_resp2() {
    messages_in_both_protocols("");
}

#[test]
fn channel_and_pattern_messages_resp3() {
    messages_in_both_protocols("?protocol=3");
}

fn resubscribes_after_kill_9(query: &str) {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url(query);
    let w = watch(&url, &["c"], &["p:*"]);
    w.subscribed();
    assert_eq!(publish(&url, "c", "before"), 1);
    assert_eq!(w.next().payload, "before");

    server.kill_9();
    // The loss is reported (a reset or close, then refused connects).
    match w.statuses.recv_timeout(WAIT) {
        Ok(Status::Lost { .. }) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(!w.handle.is_subscribed());
    std::thread::sleep(Duration::from_millis(300));
    server.restart();

    // Resubscribed to the channel and the pattern, with the gap reported.
    let gap = w.subscribed().expect("a gap after a reconnect");
    assert!(gap >= Duration::from_millis(300), "gap {gap:?}");
    assert_eq!(publish(&url, "c", "after"), 1);
    assert_eq!(w.next().payload, "after");
    assert_eq!(publish(&url, "p:1", "pattern after"), 1);
    assert_eq!(w.next().payload, "pattern after");
    w.handle.stop();
}

#[test]
fn resubscribes_after_kill_9_resp2() {
    resubscribes_after_kill_9("");
}

#[test]
fn resubscribes_after_kill_9_resp3() {
    resubscribes_after_kill_9("?protocol=3");
}

#[test]
fn a_client_killed_by_the_server_resubscribes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    let w = watch(&url, &["k"], &[]);
    w.subscribed();
    let killed = server.raw().command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.contains('1'), "CLIENT KILL answered {killed}");
    assert!(w.subscribed().is_some());
    assert_eq!(publish(&url, "k", "v"), 1);
    assert_eq!(w.next().payload, "v");
    w.handle.stop();
}

#[test]
fn a_wrong_password_is_reported_and_retried() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "secret"]) else {
        return;
    };
    let port = server.port();
    let wrong = watch(&format!("redis://:nope@127.0.0.1:{port}"), &["c"], &[]);
    match wrong.statuses.recv_timeout(WAIT) {
        Ok(Status::Lost { error, .. }) => {
            assert!(error.to_string().contains("WRONGPASS"), "{error}")
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    wrong.handle.stop();
    let right = watch(&format!("redis://:secret@127.0.0.1:{port}"), &["c"], &[]);
    right.subscribed();
    right.handle.stop();
}

#[test]
fn a_bad_url_fails_at_once() {
    assert!(Subscriber::new("http://nope").is_err());
    assert!(Subscriber::new("redis://h/x").is_err());
}
