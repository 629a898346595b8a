//! The Redis client against a real `redis-server` on 127.0.0.1: every RESP2
//! and RESP3 type, pushes and attributes, connections killed under a
//! pipelined load, a reply that outlives its timeout, a server killed and
//! restarted, the greeting (password, database, protocol), refused
//! commands, and the access log. Each test starts its own server (see
//! `support::redis`) and runs under a deadline, so a hang fails instead of
//! blocking; without `redis-server` the tests warn and pass, except under
//! `CI=true`, where they fail.

mod support;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use support::redis::RedisServer;
use support::{records, wait_until, with_deadline};
use taskweave::comm::ConnConfig;
use taskweave::metrics::{CloseReason, MemoryLog, Side};
use taskweave::redis::{self, Client, RedisTask, Reply, Request, Value};
use taskweave::{Error, Series, WaitGroup};

/// A test's outcome for one task: its replies, or why it failed.
type Outcome = Result<Vec<Value>, Error>;
/// A task's callback, as [`run`] hands it to the code that makes the task.
type Done = Box<dyn FnOnce(&mut RedisTask, &mut Series) + Send>;

/// Runs `body` with at most `limit` to finish; if it hangs, kills `server`
/// (so no process outlives the test) and fails. A panic in `body` is the
/// test's.
fn bounded(server: &RedisServer, limit: Duration, body: impl FnOnce() + Send + 'static) {
    match with_deadline(limit, move || catch_unwind(AssertUnwindSafe(body))) {
        Some(Ok(())) => {}
        Some(Err(panic)) => resume_unwind(panic),
        None => {
            server.stop();
            panic!("the test did not finish within {limit:?}");
        }
    }
}

/// Starts the task `make` builds with the callback it is given, alone in a
/// series, and waits for its outcome.
fn run(make: impl FnOnce(Done) -> RedisTask) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let task = make(Box::new(move |t: &mut RedisTask, _: &mut Series| {
        let _ = tx.send(t.take_values());
    }));
    Series::new(task).start();
    rx.recv_timeout(Duration::from_secs(15))
        .expect("the task's callback ran")
}

/// One command through `client`.
fn cmd(client: &Client, args: &[&str]) -> Outcome {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run(|done| client.command(args, done))
}

/// The single reply to one command that must succeed.
fn one(client: &Client, args: &[&str]) -> Value {
    match cmd(client, args) {
        Ok(mut values) if values.len() == 1 => values.remove(0),
        other => panic!("{args:?}: expected one reply, got {other:?}"),
    }
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.to_string().into())
}

fn simple(s: &str) -> Value {
    Value::SimpleString(s.to_string())
}

fn ints(ns: &[i64]) -> Vec<Value> {
    ns.iter().map(|&n| Value::Integer(n)).collect()
}

/// A client with a config (and so connection pools) of its own.
fn client(url: &str, conn: ConnConfig) -> Client {
    Client::new(url)
        .expect("a good URL")
        .with_config(Arc::new(Client::config(conn)))
}

/// The double `DEBUG PROTOCOL double` sends (not an approximation of pi:
/// the server's own number).
#[allow(clippy::approx_constant)]
const DEBUG_DOUBLE: f64 = 3.141;

const TYPES: [&str; 13] = [
    "string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "push",
    "verbatim", "true", "false",
];

/// What `DEBUG PROTOCOL <type>` answers (Redis 7.0), in RESP2 or RESP3, as
/// a [`Value`].
fn debug_protocol_reply(kind: &str, resp3: bool) -> Value {
    let pair = |k: i64, v: bool| (Value::Integer(k), Value::Boolean(v));
    match (kind, resp3) {
        ("string", _) => bulk("Hello World"),
        ("integer", _) => Value::Integer(12345),
        ("double", false) => bulk("3.141"),
        ("double", true) => Value::Double(DEBUG_DOUBLE),
        ("bignum", false) => bulk("1234567999999999999999999999999999999"),
        ("bignum", true) => Value::BigNumber("1234567999999999999999999999999999999".into()),
        ("null", _) => Value::Null,
        ("array", _) => Value::Array(ints(&[0, 1, 2])),
        ("set", false) => Value::Array(ints(&[0, 1, 2])),
        ("set", true) => Value::Set(ints(&[0, 1, 2])),
        ("map", false) => Value::Array(ints(&[0, 0, 1, 1, 2, 0])),
        ("map", true) => Value::Map(vec![pair(0, false), pair(1, true), pair(2, false)]),
        ("attrib", false) => bulk("Some real reply following the attribute"),
        ("attrib", true) => Value::Attribute {
            attrs: vec![(
                bulk("key-popularity"),
                Value::Array(vec![bulk("key:123"), Value::Integer(90)]),
            )],
            value: Box::new(bulk("Some real reply following the attribute")),
        },
        ("push", false) => Value::Error("ERR RESP2 is not supported by this command".into()),
        // The push itself goes to the push handler.
        ("push", true) => bulk("Some real reply following the push reply"),
        ("verbatim", false) => bulk("This is a verbatim\nstring"),
        ("verbatim", true) => Value::VerbatimString {
            format: "txt".into(),
            text: "This is a verbatim\nstring".into(),
        },
        ("true", false) => Value::Integer(1),
        ("false", false) => Value::Integer(0),
        ("true", true) => Value::Boolean(true),
        ("false", true) => Value::Boolean(false),
        _ => unreachable!("{kind}"),
    }
}

/// The push `DEBUG PROTOCOL push` sends ahead of its reply in RESP3.
fn debug_push() -> Value {
    Value::Push(vec![bulk("server-cpu-usage"), Value::Integer(42)])
}

/// Each type as a command of its own, then all of them in one pipeline:
/// every reply is the exact value, in its place.
fn every_type(url: String, resp3: bool) {
    let client = client(&url, ConnConfig::default());
    for kind in TYPES {
        assert_eq!(
            one(&client, &["DEBUG", "PROTOCOL", kind]),
            debug_protocol_reply(kind, resp3),
            "DEBUG PROTOCOL {kind}, RESP{}",
            if resp3 { 3 } else { 2 }
        );
    }
    let mut req = Request::new();
    for kind in TYPES {
        req.add(["DEBUG", "PROTOCOL", kind]);
    }
    let got = run(|done| client.pipeline(req, done)).expect("the pipeline");
    let want: Vec<Value> = TYPES
        .iter()
        .map(|k| debug_protocol_reply(k, resp3))
        .collect();
    assert_eq!(got, want, "one pipeline of every type");
}

#[test]
fn every_resp2_type_through_debug_protocol() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    bounded(&server, Duration::from_secs(20), move || {
        every_type(url, false)
    });
}

#[test]
fn every_resp3_type_through_debug_protocol() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("?protocol=3");
    bounded(&server, Duration::from_secs(20), move || {
        every_type(url, true)
    });
}

/// In RESP3 a push ahead of a reply is not the reply: it reaches the
/// handler the task installed, and the task gets the real reply.
#[test]
fn a_resp3_push_reaches_the_push_handler() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("?protocol=3");
    bounded(&server, Duration::from_secs(20), move || {
        let client = client(&url, ConnConfig::default());
        // Each push: whether it said it was one, and its values.
        type Pushes = Arc<Mutex<Vec<(bool, Vec<Value>)>>>;
        let pushes: Pushes = Arc::default();
        let seen = pushes.clone();
        let got = run(|done| {
            client
                .command(["DEBUG", "PROTOCOL", "push"], done)
                .on_push(move |msg: Reply| {
                    let is_push = msg.is_push();
                    seen.lock().unwrap().push((is_push, msg.into_values()));
                })
        });
        assert_eq!(
            got,
            Ok(vec![bulk("Some real reply following the push reply")])
        );
        assert!(wait_until(Duration::from_secs(5), || !pushes
            .lock()
            .unwrap()
            .is_empty()));
        // The handler stays on the connection: a second push arrives too.
        let got = cmd(&client, &["DEBUG", "PROTOCOL", "push"]);
        assert_eq!(
            got,
            Ok(vec![bulk("Some real reply following the push reply")])
        );
        assert!(wait_until(Duration::from_secs(5), || pushes
            .lock()
            .unwrap()
            .len()
            >= 2));
        assert_eq!(
            *pushes.lock().unwrap(),
            vec![(true, vec![debug_push()]), (true, vec![debug_push()])]
        );
    });
}

/// What the kill storm saw.
#[derive(Default)]
struct Storm {
    /// SET then GET, both answered, the GET with the value just set.
    pairs: AtomicUsize,
    /// Replies that were not their command's: must stay empty.
    mismatches: Mutex<Vec<String>>,
    /// Failed tasks, by error.
    errors: Mutex<BTreeMap<String, usize>>,
    /// Set once the last `CLIENT KILL` has been answered.
    killing_over: AtomicBool,
    /// Each series' last value set and read back.
    last: Mutex<Vec<Option<String>>>,
    /// Series that stopped at the iteration cap instead of recovering.
    capped: AtomicUsize,
}

/// Series that loop on keys of their own.
const STORM_SERIES: usize = 50;
/// Successful SET/GET pairs each series needs after the kills stopped.
const RECOVERED: u32 = 20;
/// The most iterations a series makes, whatever happens.
const STORM_CAP: u64 = 20_000;

impl Storm {
    fn error(&self, what: &str, e: &Error) {
        let kind = format!("{what}: {e:?}");
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn mismatch(&self, what: String) {
        self.mismatches.lock().unwrap().push(what);
    }
}

/// Series `i`'s iteration `iter`: `SET key_i value`, then (if the SET was
/// answered) `GET key_i`, which must return that value, then the next
/// iteration, until the killing is over and `RECOVERED` pairs have
/// succeeded since.
fn storm_step(client: Client, storm: Arc<Storm>, i: usize, iter: u64, after: u32) -> RedisTask {
    let key = format!("storm:{i}");
    let value = format!("series-{i}-iteration-{iter}");
    let set_args = ["SET".to_string(), key.clone(), value.clone()];
    let next_client = client.clone();
    client.command(set_args, move |t, series| {
        let over = storm.killing_over.load(Ordering::SeqCst);
        let next = |after: u32| -> Option<RedisTask> {
            if over && after >= RECOVERED {
                return None;
            }
            if iter + 1 >= STORM_CAP {
                storm.capped.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            Some(storm_step(
                next_client.clone(),
                storm.clone(),
                i,
                iter + 1,
                after,
            ))
        };
        match t.values() {
            Err(e) => {
                storm.error("SET", e);
                if let Some(task) = next(after) {
                    series.push_back(task);
                }
            }
            Ok(values) if values != [simple("OK")] => {
                storm.mismatch(format!("SET {key} {value} answered {values:?}"));
            }
            Ok(_) => {
                let (storm, client) = (storm.clone(), next_client.clone());
                let get_args = ["GET".to_string(), key.clone()];
                let get = next_client.command(get_args, move |t, series| {
                    let after = match t.values() {
                        Err(e) => {
                            storm.error("GET", e);
                            after
                        }
                        Ok(values) if values != [bulk(&value)] => {
                            storm.mismatch(format!(
                                "GET {key} after SET {value} answered {values:?}"
                            ));
                            return;
                        }
                        Ok(_) => {
                            storm.pairs.fetch_add(1, Ordering::SeqCst);
                            storm.last.lock().unwrap()[i] = Some(value);
                            after + u32::from(over)
                        }
                    };
                    if over && after >= RECOVERED {
                        return;
                    }
                    if iter + 1 >= STORM_CAP {
                        storm.capped.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    series.push_back(storm_step(client, storm, i, iter + 1, after));
                });
                series.push_back(get);
            }
        }
    })
}

/// `CLIENT KILL TYPE normal SKIPME yes` every 200 ms for 3 s while 50
/// series pipeline SET/GET pairs through one client: no reply ever goes to
/// the wrong command, the kills fail some tasks, and once they stop every
/// series and new tasks succeed again.
#[test]
fn client_kill_under_pipelined_load_never_mismatches_replies() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url("");
    kill_storm(&server, url, None);
}

/// The same with a greeting on every new connection (`HELLO 3 AUTH`, then
/// `SELECT 2`): a connection killed around its greeting never lets the
/// greeting's replies reach a command, or a command's reach the greeting.
#[test]
fn client_kill_under_pipelined_load_with_a_greeting_never_mismatches_replies() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "secret"]) else {
        return;
    };
    let url = format!("redis://:secret@127.0.0.1:{}/2?protocol=3", server.port());
    kill_storm(&server, url, Some("secret"));
}

/// The kill storm against `server`, through a client for `url`; the killer
/// authenticates with `password` if there is one.
fn kill_storm(server: &RedisServer, url: String, password: Option<&'static str>) {
    let srv = server.clone();
    bounded(server, Duration::from_secs(40), move || {
        let client = client(&url, ConnConfig::default());
        let storm = Arc::new(Storm {
            last: Mutex::new(vec![None; STORM_SERIES]),
            ..Storm::default()
        });
        let wg = WaitGroup::new(STORM_SERIES);
        for i in 0..STORM_SERIES {
            let done = wg.clone();
            Series::new(storm_step(client.clone(), storm.clone(), i, 0, 0))
                .on_done(move |_| done.done())
                .start();
        }
        let mut killer = srv.raw();
        if let Some(password) = password {
            assert_eq!(killer.command(&["AUTH", password]), "OK");
        }
        let mut killed = 0;
        for _ in 0..15 {
            std::thread::sleep(Duration::from_millis(200));
            let n = killer.command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
            killed += n.parse::<u64>().expect("CLIENT KILL answers a count");
        }
        storm.killing_over.store(true, Ordering::SeqCst);
        assert!(
            wg.wait_timeout(Duration::from_secs(25)),
            "the series did not all end"
        );
        let mismatches = storm.mismatches.lock().unwrap().clone();
        let errors = storm.errors.lock().unwrap().clone();
        let pairs = storm.pairs.load(Ordering::SeqCst);
        eprintln!("{killed} connections killed, {pairs} SET/GET pairs, errors: {errors:?}");
        assert!(
            mismatches.is_empty(),
            "{} replies went to the wrong command, first: {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
        assert!(killed > 0, "CLIENT KILL found no connection to kill");
        assert!(
            !errors.is_empty(),
            "{killed} kills and no task failed: {pairs} pairs"
        );
        let unexpected: Vec<&String> = errors
            .keys()
            .filter(|k| !(k.contains("PeerClosed") || k.contains("Reset")))
            .collect();
        assert!(
            unexpected.is_empty(),
            "failures other than a closed connection: {unexpected:?}"
        );
        assert_eq!(
            storm.capped.load(Ordering::SeqCst),
            0,
            "series stopped at the cap of {STORM_CAP} iterations"
        );
        // Recovery: every series has had RECOVERED good pairs since the
        // kills; new tasks on the same client read what each series last set.
        let last = storm.last.lock().unwrap().clone();
        let (tx, rx) = mpsc::channel();
        for (i, want) in last.into_iter().enumerate() {
            let want = want.expect("every series set its key");
            let tx = tx.clone();
            let key = format!("storm:{i}");
            Series::new(client.command(["GET", &key], move |t, _| {
                let _ = tx.send((i, want, t.take_values()));
            }))
            .start();
        }
        for _ in 0..STORM_SERIES {
            let (i, want, got) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(
                got,
                Ok(vec![bulk(&want)]),
                "series {i}'s key after the kills"
            );
        }
    });
}

/// A reply slower than the receive timeout fails its task with
/// `ReceiveTimeout`; the commands pipelined behind it on that connection
/// fail too (their replies are never matched to them late), and the next
/// commands succeed with their own replies.
#[test]
fn a_reply_past_the_receive_timeout_fails_what_was_in_flight() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let srv = server.clone();
    bounded(&server, Duration::from_secs(20), move || {
        let config = Client::config(ConnConfig {
            receive_timeout: Duration::from_millis(200),
            ..ConnConfig::default()
        })
        .max_per_target(1);
        assert_eq!(
            config.conn().receive_timeout,
            Duration::from_millis(200),
            "Client::config keeps the receive timeout it is given"
        );
        let redis = Client::new(&srv.url(""))
            .unwrap()
            .with_config(Arc::new(config));
        for j in 0..5 {
            let (k, v) = (format!("behind:{j}"), format!("value-{j}"));
            assert_eq!(one(&redis, &["SET", &k, &v]), simple("OK"));
        }
        // The one connection is open and idle: DEBUG SLEEP goes out first,
        // the GETs are pipelined behind it.
        let (tx, rx) = mpsc::channel();
        let sleeper = tx.clone();
        Series::new(redis.command(["DEBUG", "SLEEP", "1"], move |t, _| {
            let _ = sleeper.send((None, t.take_values()));
        }))
        .start();
        for j in 0..5 {
            let tx = tx.clone();
            let k = format!("behind:{j}");
            Series::new(redis.command(["GET", &k], move |t, _| {
                let _ = tx.send((Some(j), t.take_values()));
            }))
            .start();
        }
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            outcomes.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        for (who, got) in &outcomes {
            match who {
                None => assert_eq!(got, &Err(Error::ReceiveTimeout), "DEBUG SLEEP 1"),
                Some(j) => assert_eq!(
                    got,
                    &Err(Error::ReceiveTimeout),
                    "GET behind:{j}, pipelined behind DEBUG SLEEP"
                ),
            }
        }
        // That connection was closed. Once redis-server is awake (a plain
        // PING waits for it), new commands get their own replies.
        assert_eq!(srv.raw().command(&["PING"]), "PONG");
        for j in 0..5 {
            let k = format!("behind:{j}");
            assert_eq!(one(&redis, &["GET", &k]), bulk(&format!("value-{j}")));
        }
    });
}

/// `kill -9` of the server: a task during the outage fails with a
/// connection error, and after a restart on the same port the same client
/// works again.
#[test]
fn the_same_client_works_after_the_server_is_killed_and_restarted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let srv = server.clone();
    bounded(&server, Duration::from_secs(30), move || {
        let redis = client(&srv.url(""), ConnConfig::default());
        assert_eq!(one(&redis, &["SET", "k", "before"]), simple("OK"));
        srv.kill_9();
        // The pooled connection may not have seen the close yet: the first
        // task fails either on it or on connecting anew.
        let first = cmd(&redis, &["GET", "k"]);
        assert!(
            matches!(
                first,
                Err(Error::Connect(_) | Error::PeerClosed | Error::Reset)
            ),
            "during the outage: {first:?}"
        );
        let second = cmd(&redis, &["GET", "k"]);
        assert!(
            matches!(second, Err(Error::Connect(_))),
            "during the outage, with no connection left: {second:?}"
        );
        srv.restart();
        // Nothing was saved: the key is gone, and the client works.
        assert_eq!(one(&redis, &["GET", "k"]), Value::Null);
        assert_eq!(one(&redis, &["SET", "k", "after"]), simple("OK"));
        assert_eq!(one(&redis, &["GET", "k"]), bulk("after"));
    });
}

/// The greeting the URL asks for, against `--requirepass secret`.
#[test]
fn the_greeting_authenticates_selects_and_speaks_resp3() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "secret"]) else {
        return;
    };
    let srv = server.clone();
    bounded(&server, Duration::from_secs(20), move || {
        let port = srv.port();
        // No password: the server answers the command with NOAUTH, an error
        // reply in the command's place (the greeting is empty).
        let none = cmd(&client(&srv.url(""), ConnConfig::default()), &["GET", "k"]);
        match &none {
            Ok(values) => assert!(
                matches!(&values[..], [Value::Error(e)] if e.starts_with("NOAUTH")),
                "no password: {values:?}"
            ),
            Err(e) => panic!("no password: the task failed ({e}) instead of a NOAUTH reply"),
        }
        // A wrong password: the greeting fails the task, with the server's words.
        for wrong in [
            format!("redis://:wrong@127.0.0.1:{port}"),
            format!("redis://:wrong@127.0.0.1:{port}?protocol=3"),
            format!("redis://nobody:secret@127.0.0.1:{port}"),
        ] {
            match cmd(&client(&wrong, ConnConfig::default()), &["GET", "k"]) {
                Err(Error::Protocol(e)) => {
                    assert_eq!(e.code, redis::GREETING_REFUSED, "{wrong}: {e}");
                    assert!(e.reason.contains("WRONGPASS"), "{wrong}: {e}");
                }
                other => panic!("{wrong}: expected a refused greeting, got {other:?}"),
            }
        }
        // The right one, in RESP2 and RESP3 (HELLO 3 AUTH default secret).
        let good = client(
            &format!("redis://:secret@127.0.0.1:{port}"),
            ConnConfig::default(),
        );
        assert_eq!(one(&good, &["SET", "k", "v0"]), simple("OK"));
        assert_eq!(one(&good, &["GET", "k"]), bulk("v0"));
        assert_eq!(
            one(&good, &["DEBUG", "PROTOCOL", "double"]),
            bulk("3.141"),
            "RESP2"
        );
        for user in ["", "default"] {
            let resp3_url = format!("redis://{user}:secret@127.0.0.1:{port}?protocol=3");
            let resp3 = client(&resp3_url, ConnConfig::default());
            assert_eq!(
                one(&resp3, &["DEBUG", "PROTOCOL", "double"]),
                Value::Double(DEBUG_DOUBLE),
                "{resp3_url}"
            );
            assert_eq!(one(&resp3, &["GET", "k"]), bulk("v0"), "{resp3_url}");
        }
        // /3 selects database 3, in RESP2 and RESP3.
        for rest in ["/3", "/3?protocol=3"] {
            let db3 = client(
                &format!("redis://:secret@127.0.0.1:{port}{rest}"),
                ConnConfig::default(),
            );
            let info = one(&db3, &["CLIENT", "INFO"]);
            let info = info.as_str().expect("CLIENT INFO is text");
            assert!(
                info.split_whitespace().any(|f| f == "db=3"),
                "{rest}: {info}"
            );
            assert_eq!(one(&db3, &["GET", "k"]), Value::Null, "{rest}: db 3");
        }
        let db3 = client(
            &format!("redis://:secret@127.0.0.1:{port}/3"),
            ConnConfig::default(),
        );
        assert_eq!(one(&db3, &["SET", "k", "in-3"]), simple("OK"));
        assert_eq!(one(&good, &["GET", "k"]), bulk("v0"), "db 0 is untouched");
    });
}

/// `total_connections_received` from `INFO stats`.
fn connections_received(server: &RedisServer) -> u64 {
    let info = server.raw().command(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

/// Commands that would break a shared connection fail with
/// `InvalidRequest` before anything is sent (no connection is even made); a
/// whole transaction in one pipeline works; a bad URL fails its task.
#[test]
fn refused_commands_fail_before_anything_is_sent() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let srv = server.clone();
    bounded(&server, Duration::from_secs(20), move || {
        let redis = client(&srv.url(""), ConnConfig::default());
        let before = connections_received(&srv);
        let mut refused: Vec<Request> = [
            &["SUBSCRIBE", "news"][..],
            &["select", "1"],
            &["MULTI"],
            &["AUTH", "x"],
            &["MONITOR"],
        ]
        .iter()
        .map(|args| Request::command(args.iter()))
        .collect();
        let mut open_multi = Request::new();
        open_multi.add(["MULTI"]).add(["INCR", "n"]);
        refused.push(open_multi);
        let mut select_inside = Request::new();
        select_inside.add(["GET", "n"]).add(["SELECT", "2"]);
        refused.push(select_inside);
        for req in refused {
            let wire = String::from_utf8_lossy(req.wire()).into_owned();
            let got = run(|done| redis.pipeline(req, done));
            assert!(
                matches!(got, Err(Error::InvalidRequest(_))),
                "{wire:?}: {got:?}"
            );
        }
        // Each INFO above made one connection (counted by the next one):
        // the client made none.
        assert_eq!(connections_received(&srv), before + 1, "nothing was sent");
        let mut tx = Request::new();
        tx.add(["MULTI"])
            .add(["INCR", "n"])
            .add(["INCR", "n"])
            .add(["EXEC"]);
        let got = run(|done| redis.pipeline(tx, done));
        assert_eq!(
            got,
            Ok(vec![
                simple("OK"),
                simple("QUEUED"),
                simple("QUEUED"),
                Value::Array(ints(&[1, 2])),
            ])
        );
        for bad in [
            "http://127.0.0.1:6379",
            "redis://127.0.0.1:port",
            "redis://127.0.0.1/db",
        ] {
            let got = run(|done| redis::command(bad, ["PING"], done));
            assert!(
                matches!(got, Err(Error::InvalidRequest(_))),
                "{bad}: {got:?}"
            );
        }
    });
}

/// A client config's access log gets each connection's record, as a
/// `redis` client connection to the server.
#[test]
fn the_access_log_records_redis_connections() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let srv = server.clone();
    bounded(&server, Duration::from_secs(20), move || {
        let log = MemoryLog::new();
        let config = Client::config(ConnConfig {
            keep_alive_timeout: Duration::from_millis(100),
            ..ConnConfig::default()
        })
        .max_per_target(1)
        .access_log(log.clone());
        let redis = Client::new(&srv.url(""))
            .unwrap()
            .with_config(Arc::new(config));
        assert_eq!(one(&redis, &["SET", "k", "v"]), simple("OK"));
        assert_eq!(one(&redis, &["GET", "k"]), bulk("v"));
        assert_eq!(one(&redis, &["DEL", "k"]), Value::Integer(1));
        // The idle connection closes after the keep-alive timeout.
        let recs = records(&log, 1);
        assert_eq!(recs.len(), 1, "one connection");
        let r = &recs[0];
        assert_eq!(r.proto(), "redis");
        assert_eq!(r.side(), Side::Client);
        assert_eq!(r.peer(), srv.addr());
        assert_eq!(r.requests(), 3);
        assert_eq!(r.close_reason(), Some(CloseReason::KeepAliveTimeout));
    });
}

/// Whether `buf` holds `needle`.
fn holds(buf: &[u8], needle: &[u8]) -> bool {
    buf.windows(needle.len()).any(|w| w == needle)
}

/// A command written while the greeting's reply is still owed must not
/// make the client forget the greeting: its reply is the greeting's, and
/// each command gets its own. A hand-written server makes the order
/// certain: it answers nothing until it has read the greeting and the
/// first command, then lets the test send a second command, and answers
/// all three once that one has arrived too.
#[test]
fn a_command_pipelined_behind_an_unanswered_greeting_gets_its_own_reply() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (first_read, first_arrived) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut told = false;
        while !holds(&seen, b"$1\r\nb\r\n") {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed");
            seen.extend_from_slice(&chunk[..n]);
            if !told && holds(&seen, b"SELECT") && holds(&seen, b"$1\r\na\r\n") {
                told = true;
                first_read.send(()).unwrap();
            }
        }
        // SELECT 2, GET a, GET b.
        s.write_all(b"+OK\r\n$1\r\nA\r\n$1\r\nB\r\n").unwrap();
        let _ = s.read(&mut chunk); // hold the connection open
    });
    let outcome = with_deadline(Duration::from_secs(20), move || {
        let redis = Client::new(&format!("redis://127.0.0.1:{port}/2"))
            .unwrap()
            .with_config(Arc::new(
                Client::config(ConnConfig::default()).max_per_target(1),
            ));
        let (tx, rx) = mpsc::channel();
        let (ta, tb) = (tx.clone(), tx);
        Series::new(redis.command(["GET", "a"], move |t, _| {
            let _ = ta.send(("a", t.take_values()));
        }))
        .start();
        first_arrived
            .recv_timeout(Duration::from_secs(10))
            .expect("the server read the greeting and GET a");
        Series::new(redis.command(["GET", "b"], move |t, _| {
            let _ = tb.send(("b", t.take_values()));
        }))
        .start();
        let mut got: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort_by_key(|(k, _)| *k);
        got
    })
    .expect("both commands completed");
    assert_eq!(
        outcome,
        vec![("a", Ok(vec![bulk("A")])), ("b", Ok(vec![bulk("B")]))],
        "GET a got the greeting's reply and GET b got GET a's: the greeting was forgotten"
    );
}

/// A request that does not fit the send queue (`SendError::Full`) is
/// refused alone: "those already written stay in flight"
/// (`comm/client.rs` `write_pending`), also while the reply to a greeting
/// written earlier is still owed (it failed every request on the
/// connection, since it checked whether the greeting was `Sent`, not
/// whether it was part of the refused write). A hand-written server that
/// reads nothing until the second request has failed makes the order
/// certain.
#[test]
fn a_full_send_queue_behind_an_unanswered_greeting_refuses_only_the_new_request() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let big = vec![b'x'; 32 << 20];
    let expected = redis::command_bytes(["AUTH", "pw"]).len()
        + redis::command_bytes([&b"SET"[..], b"k", &big]).len();
    let (second_done, go_on) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Read nothing until the second request has its outcome.
        let _ = go_on.recv_timeout(Duration::from_secs(10));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0;
        let mut chunk = vec![0u8; 1 << 16];
        while got < expected {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return, // the client gave up
                Ok(n) => got += n,
            }
        }
        // AUTH, then SET.
        let _ = s.write_all(b"+OK\r\n+OK\r\n");
        let _ = s.read(&mut chunk); // hold the connection open
    });
    let outcome = with_deadline(Duration::from_secs(30), move || {
        let redis = Client::new(&format!("redis://:pw@127.0.0.1:{port}"))
            .unwrap()
            .with_config(Arc::new(
                Client::config(ConnConfig {
                    max_queued: 1 << 16,
                    ..ConnConfig::default()
                })
                .max_per_target(1),
            ));
        let (tx, rx) = mpsc::channel();
        let (t1, t2) = (tx.clone(), tx);
        Series::new(redis.command([&b"SET"[..], b"k", &big], move |t, _| {
            let _ = t1.send(("set", t.take_values()));
        }))
        .start();
        // The greeting and the SET are written (mostly queued) by now.
        std::thread::sleep(Duration::from_millis(300));
        Series::new(redis.command(["GET", "b"], move |t, _| {
            let _ = t2.send(("get", t.take_values()));
        }))
        .start();
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let _ = second_done.send(());
        let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let mut got = vec![first, second];
        got.sort_by_key(|(k, _)| *k);
        got
    })
    .expect("both commands completed");
    assert!(
        matches!(&outcome[0], ("get", Err(Error::LimitExceeded(_)))),
        "{:?}",
        outcome[0]
    );
    assert_eq!(
        outcome[1],
        ("set", Ok(vec![simple("OK")])),
        "the SET, written before the queue filled, was failed with the GET"
    );
}
