//! Command tasks: [`command`], [`Client`] and [`RedisTask`].

use super::proto::{Redis, Request};
use super::url::Url;
use super::Value;
use crate::comm::{ClientConfig, ConnConfig, Target};
use crate::error::Error;
use crate::task::{ClientTask, Series};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A task that sends one or more Redis commands and holds their replies: a
/// [`ClientTask`] over the [`Redis`] protocol. Start it in a series like any
/// task; its callback reads [`value`](RedisTask::value) or
/// [`values`](RedisTask::values).
///
/// Made by [`command`], [`Client::command`] and [`Client::pipeline`]. Its
/// methods are those of a `ClientTask<Redis>`:
///
/// - Redis's own: [`value`](RedisTask::value), the reply to the first
///   command; [`values`](RedisTask::values), one reply per command;
///   [`take_values`](RedisTask::take_values), the same taken out.
/// - Every client task's: [`result`](ClientTask::result) (the whole
///   [`Reply`](super::Reply), or why there is none),
///   [`take_response`](ClientTask::take_response),
///   [`request`](ClientTask::request) (the [`Request`]),
///   [`timings`](ClientTask::timings), [`reused`](ClientTask::reused),
///   [`retries`](ClientTask::retries) (0: a Redis command is never sent
///   twice), [`peer_addr`](ClientTask::peer_addr); and before it starts,
///   [`with_config`](ClientTask::with_config) and
///   [`on_push`](ClientTask::on_push) (RESP3 pushes on its connection).
///
/// A pipeline of two commands, sent in one write, answered in order (the
/// server here is a stand-in that expects exactly these commands):
///
/// ```
/// # #[path = "doc_stand_in.rs"] mod stand_in;
/// # let mut wire = taskweave::redis::command_bytes(["SET", "greeting", "hello"]);
/// # wire.extend(taskweave::redis::command_bytes(["GET", "greeting"]));
/// # let url = stand_in::stand_in(wire, b"+OK\r\n$5\r\nhello\r\n")?;
/// use std::sync::mpsc;
/// use taskweave::redis::{Client, RedisTask, Request, Value};
/// use taskweave::Series;
///
/// let redis = Client::new(&url)?; // redis://127.0.0.1:6379, say
/// let mut req = Request::new();
/// req.add(["SET", "greeting", "hello"]).add(["GET", "greeting"]);
///
/// let (tx, rx) = mpsc::channel();
/// let task = redis.pipeline(req, move |t: &mut RedisTask, _| {
///     let _ = tx.send(t.take_values());
/// });
/// Series::new(task).start();
///
/// let replies = rx.recv()??;
/// assert_eq!(replies[0].as_str(), Some("OK"));
/// assert_eq!(replies[1], Value::BulkString("hello".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type RedisTask = ClientTask<Redis>;

impl ClientTask<Redis> {
    /// The reply to the task's first (usually only) command. An error
    /// reply (`-ERR ...`) is `Ok` with a [`Value::Error`]: the command ran
    /// and failed; `Err` means it may not have run at all (no connection, a
    /// timeout, a broken reply, a refused command).
    pub fn value(&self) -> Result<&Value, &Error> {
        self.values()?.first().ok_or(&Error::Cancelled)
    }

    /// The replies, one per command of the pipeline, in order.
    pub fn values(&self) -> Result<&[Value], &Error> {
        self.result().map(|r| r.values())
    }

    /// The replies, taken out of the task (without copying).
    pub fn take_values(&mut self) -> Result<Vec<Value>, Error> {
        if let Err(e) = self.result() {
            return Err(e.clone());
        }
        Ok(self
            .take_response()
            .map(|r| r.into_values())
            .unwrap_or_default())
    }
}

/// Connections to one Redis server with one set of credentials, database
/// and protocol version, shared by every task made from it.
///
/// Tasks to one client share a few connections (four by default) and
/// pipeline onto them automatically: a command that finds every connection
/// busy is written behind the others, in the same write as other commands
/// queued meanwhile, and its reply is matched in order. On a timeout or a
/// broken reply the connection is closed and every command in flight on it
/// fails with that error; nothing is sent again behind the caller's back,
/// and the next task connects anew.
///
/// ```no_run
/// use taskweave::redis::Client;
/// use taskweave::{Series, WaitGroup};
///
/// let redis = Client::new("redis://127.0.0.1:6379/0")?;
/// let wg = WaitGroup::new(1);
/// let done = wg.clone();
/// let set = redis.command(["SET", "greeting", "hello"], |t, _| {
///     assert_eq!(t.value().ok().and_then(|v| v.as_str()), Some("OK"));
/// });
/// let get = redis.command(["GET", "greeting"], |t, _| {
///     println!("{:?}", t.value());
/// });
/// let mut series = Series::new(set);
/// series.push_back(get);
/// series.on_done(move |_| done.done()).start();
/// wg.wait();
/// # Ok::<(), taskweave::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    proto: Arc<Redis>,
    target: Target,
    config: Arc<ClientConfig>,
}

impl Client {
    /// A client for `url` (see [`Url`]) with the shared default
    /// [`config`](Client::default_config).
    pub fn new(url: &str) -> Result<Client, Error> {
        Ok(Client::from_url(url.parse()?))
    }

    /// A client for a parsed URL.
    pub fn from_url(url: Url) -> Client {
        Client::with_protocol(Redis::new(url))
    }

    /// A client with a protocol set up by hand (limits, in-flight depth).
    pub fn with_protocol(proto: Redis) -> Client {
        Client {
            target: proto.url().target(),
            proto: Arc::new(proto),
            config: Client::default_config(),
        }
    }

    /// Uses `config` (timeouts, connections per server, queueing, access
    /// log) instead of the shared default. Clients with different configs
    /// never share connections.
    pub fn with_config(mut self, config: Arc<ClientConfig>) -> Client {
        self.config = config;
        self
    }

    /// The shared default config: four connections per server, up to
    /// 10,000 tasks waiting for room for at most 10 s, a 10 s connect and
    /// reply timeout, and no retries.
    pub fn default_config() -> Arc<ClientConfig> {
        static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Arc::new(Client::config(ConnConfig {
                    connect_timeout: Duration::from_secs(10),
                    receive_timeout: Duration::from_secs(10),
                    ..ConnConfig::default()
                }))
            })
            .clone()
    }

    /// A config with the Redis defaults (four connections per server, up to
    /// 10,000 tasks waiting, no retries) and these connection settings,
    /// timeouts included.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskweave::comm::ConnConfig;
    /// use taskweave::redis::Client;
    ///
    /// let config = Client::config(ConnConfig {
    ///     receive_timeout: Duration::from_millis(200),
    ///     ..ConnConfig::default()
    /// });
    /// assert_eq!(config.conn().receive_timeout, Duration::from_millis(200));
    /// ```
    pub fn config(conn: ConnConfig) -> ClientConfig {
        ClientConfig::new(conn)
            .max_per_target(4)
            .max_waiting(10_000)
            .retry_max(0)
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        self.proto.url()
    }

    /// A task sending one command (its name, then its arguments).
    pub fn command<I>(
        &self,
        args: I,
        callback: impl FnOnce(&mut RedisTask, &mut Series) + Send + 'static,
    ) -> RedisTask
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.pipeline(Request::command(args), callback)
    }

    /// A task sending every command of `req` in one write; its callback
    /// gets one reply per command.
    ///
    /// ```no_run
    /// use taskweave::redis::{Client, Request};
    /// use taskweave::Series;
    ///
    /// let redis = Client::new("redis://127.0.0.1")?;
    /// let mut req = Request::new();
    /// req.add(["MULTI"]).add(["INCR", "hits"]).add(["EXPIRE", "hits", "60"]).add(["EXEC"]);
    /// let task = redis.pipeline(req, |t, _| {
    ///     if let Ok(replies) = t.values() {
    ///         println!("EXEC answered {:?}", replies.last());
    ///     }
    /// });
    /// Series::new(task).start();
    /// # Ok::<(), taskweave::Error>(())
    /// ```
    pub fn pipeline(
        &self,
        req: Request,
        callback: impl FnOnce(&mut RedisTask, &mut Series) + Send + 'static,
    ) -> RedisTask {
        ClientTask::new(self.proto.clone(), self.target.clone(), req, callback)
            .with_config(self.config.clone())
    }
}

/// A task sending one command to the server at `url`: the short way, for a
/// few commands. A program that sends many makes one [`Client`] and keeps
/// it (this parses the URL each time). A bad URL fails the task with
/// `Error::InvalidRequest` when it runs.
///
/// ```
/// # #[path = "doc_stand_in.rs"] mod stand_in;
/// # let url = stand_in::stand_in(taskweave::redis::command_bytes(["INCR", "visits"]), b":1\r\n")?;
/// use std::sync::mpsc;
/// use taskweave::redis;
/// use taskweave::Series;
///
/// // `url` is "redis://127.0.0.1:6379", say; here, a stand-in that answers 1.
/// let (tx, rx) = mpsc::channel();
/// let task = redis::command(&url, ["INCR", "visits"], move |t, _| {
///     match t.value() {
///         Ok(v) => println!("visits: {:?}", v.as_int()),
///         Err(e) => eprintln!("failed: {e}"),
///     }
///     let _ = tx.send(t.value().ok().and_then(|v| v.as_int()));
/// });
/// Series::new(task).start();
/// assert_eq!(rx.recv()?, Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn command<I>(
    url: &str,
    args: I,
    callback: impl FnOnce(&mut RedisTask, &mut Series) + Send + 'static,
) -> RedisTask
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    match Client::new(url) {
        Ok(client) => client.command(args, callback),
        Err(e) => {
            let client = Client::from_url(Url::new("0.0.0.0", 0));
            client.pipeline(Request::invalid(e.to_string()), callback)
        }
    }
}
