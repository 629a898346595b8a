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
                Ok(_) => continue,
                Err(e) => panic!("no Subscribed status: {e}"),
            }
        }
    }

    fn next(&self) -> Message {
        self.messages.recv_timeout(WAIT).expect("a message")
    }
}

/// The next status must be `Subscribed`.
fn expect_subscribed(statuses: &Receiver<Status>) {
    match statuses.recv_timeout(WAIT) {
        Ok(Status::Subscribed { .. }) => {}
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

/// Publishes `payload` on `channel` and returns how many received it.
/// Makes user `limited` (password `pw`), who may read only channels
/// `open*`; the URL to connect as it.
fn limited_user(server: &RedisServer) -> String {
    let acl = server.raw().command(&[
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">pw",
        "~*",
        "resetchannels",
        "&open*",
        "+@all",
    ]);
    assert_eq!(acl, "OK");
    format!("redis://limited:pw@127.0.0.1:{}", server.port())
}

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

/// Waits until `publish` on `topic` reaches `want` subscribers, for at most
/// `limit`; whether it did.
fn receivers_become(url: &str, topic: &str, want: i64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if publish(url, topic, "probe") == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `SubscriberHandle`'s docs: "Dropping the handle does not stop it; call
/// stop". Once subscribed, the connection's push handler is what keeps the
/// subscriber alive (it held only a `Weak`, so dropping the handle silently
/// ended delivery while the connection stayed subscribed).
#[test]
fn a_subscriber_whose_handle_is_dropped_keeps_delivering() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    let Watch {
        handle,
        messages,
        statuses,
    } = watch(&url, &["kept"], &[]);
    expect_subscribed(&statuses);
    drop(handle);
    // Let the subscribing task's callback (which holds a strong reference
    // while it runs) finish.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(publish(&url, "kept", "still here"), 1);
    let got = messages.recv_timeout(Duration::from_secs(3));
    assert!(
        matches!(&got, Ok(m) if m.payload == "still here"),
        "the message was not delivered after the handle was dropped: {got:?}"
    );
}

/// A channel added while the first SUBSCRIBE is on its way (phase
/// `Subscribing`) is subscribed too: the attempt in flight was built before
/// it, so it must not wait for a next attempt that may never come.
/// docs/redis.md's own example calls `handle.subscribe` right after
/// `start()`.
#[test]
fn a_channel_added_right_after_start_is_subscribed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    let w = watch(&url, &["first"], &[]);
    w.handle.subscribe(["second"]);
    w.subscribed();
    assert!(w.handle.is_subscribed());
    assert!(
        receivers_become(&url, "second", 1, Duration::from_secs(3)),
        "is_subscribed() is true but nobody is subscribed to \"second\""
    );
    w.handle.stop();
}

/// `stop()` closes the connection with QUIT at once, not at its keep-alive
/// timeout (`ping_every * 3 + reply_timeout`, 35 s by default; the other
/// tests' 200 ms pings make that 1.1 s, which hid a refused QUIT).
#[test]
fn stop_closes_the_connection_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    let (status_tx, statuses) = channel();
    let handle = Subscriber::new(&url)
        .unwrap()
        .channels(["bye"])
        .on_status(move |s| {
            let _ = status_tx.send(s);
        })
        .start();
    expect_subscribed(&statuses);
    assert_eq!(publish(&url, "bye", "before"), 1);
    handle.stop();
    assert!(
        receivers_become(&url, "bye", 0, Duration::from_secs(3)),
        "3 s after stop() the subscriber is still subscribed"
    );
}

/// A subscription the server refuses as a whole (`-NOAUTH`, `-NOPERM`)
/// gets ONE error reply, though the request expects one reply per channel:
/// the loss is reported with the server's error, not as a receive timeout
/// after waiting for replies that never come.
#[test]
fn a_subscription_refused_as_a_whole_reports_the_servers_error() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "secret"]) else {
        return;
    };
    let w = watch(&server.url(""), &["a", "b"], &[]);
    match w.statuses.recv_timeout(WAIT) {
        Ok(Status::Lost { error, .. }) => {
            assert!(error.to_string().contains("NOAUTH"), "lost with: {error}")
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    w.handle.stop();
}

/// The push handler holds the subscriber strongly, so a stopped one must
/// still be freed once its connection closes: its callbacks (and what they
/// hold) are dropped.
#[test]
fn a_stopped_subscriber_is_freed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    let Watch {
        handle,
        messages,
        statuses,
    } = watch(&url, &["freed"], &[]);
    expect_subscribed(&statuses);
    handle.stop();
    drop(handle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match messages.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the stopped subscriber was not freed within 5 s")
            }
            Ok(_) => {}
        }
    }
}

/// `stop()` while the first SUBSCRIBE is on its way quits too (it sent QUIT
/// only when `Subscribed`: the SUBSCRIBE still succeeded, and the
/// connection stayed subscribed until its keep-alive timeout, 35 s by
/// default, receiving every message for nobody).
#[test]
fn stop_right_after_start_leaves_no_subscription_behind() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    let handle = Subscriber::new(&url).unwrap().channels(["early"]).start();
    handle.stop();
    // Give the SUBSCRIBE time to land, then expect it gone soon after.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        receivers_become(&url, "early", 0, Duration::from_secs(3)),
        "3 s after stop() the subscriber's connection is still subscribed"
    );
}

/// `handle.subscribe` of two channels the user may not read: Redis refuses
/// the command with ONE `-NOPERM`. Counted as the first of two replies, it
/// took the next PING's reply as the second; that PING then waited for a
/// reply of its own, timed out when the next ping did not come within the
/// reply timeout (as with the defaults: every 10 s, replies within 5 s),
/// and every resubscription after that (the refused channels included)
/// was refused the same way and timed out: the permitted channel was lost.
#[test]
fn a_refused_subscription_does_not_unsubscribe_the_rest() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = limited_user(&server);
    let (status_tx, statuses) = channel();
    // Pings further apart than the reply timeout, as with the defaults.
    let handle = Subscriber::new(&url)
        .unwrap()
        .channels(["open"])
        .ping_every(Duration::from_millis(1000), Duration::from_millis(300))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .on_status(move |s| {
            let _ = status_tx.send(s);
        })
        .start();
    expect_subscribed(&statuses);
    handle.subscribe(["secret1", "secret2"]);
    // Two ping periods.
    std::thread::sleep(Duration::from_millis(2500));
    let lost: Vec<String> = statuses
        .try_iter()
        .filter_map(|s| match s {
            Status::Lost { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        publish(&server.url(""), "open", "still"),
        1,
        "the permitted channel is no longer subscribed; losses: {lost:?}"
    );
    handle.stop();
}

/// A channel the server refuses in `handle.subscribe` is dropped and
/// reported: after a reconnect the permitted channel is subscribed again
/// (a multi-channel SUBSCRIBE with the refused name would be refused as a
/// whole, again and again).
#[test]
fn a_refused_channel_does_not_block_resubscription() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = limited_user(&server);
    let w = watch(&url, &["open"], &[]);
    w.subscribed();
    w.handle.subscribe(["secret"]);
    match w.statuses.recv_timeout(WAIT) {
        Ok(Status::Refused {
            name,
            pattern,
            error,
        }) => {
            assert_eq!((&name[..], pattern), (&b"secret"[..], false));
            assert!(error.starts_with("NOPERM"), "{error}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let killed = server.raw().command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.contains('1'), "CLIENT KILL answered {killed}");
    assert!(
        receivers_become(&server.url(""), "open", 1, Duration::from_secs(3)),
        "after a reconnect the permitted channel is never subscribed again"
    );
    w.handle.stop();
}
