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
/// ```no_run
/// use taskweave::redis;
/// use taskweave::Series;
///
/// let task = redis::command("redis://127.0.0.1:6379", ["INCR", "visits"], |t, _| {
///     match t.value() {
///         Ok(v) => println!("visits: {:?}", v.as_int()),
///         Err(e) => eprintln!("failed: {e}"),
///     }
/// });
/// Series::new(task).start();
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
