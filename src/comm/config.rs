//! Per-connection limits and timeouts, and the settings of client pools.

use super::tls_config::{client_tls, ClientTls};
use crate::error::Error;
use crate::metrics::{AccessLog, NullLog};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Timeouts and output limits for a connection. Every field has a default and a
/// setter on the server and client builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// How long a name lookup may take before the request fails (the lookup
    /// itself goes on and its answer is cached); never longer than
    /// `connect_timeout`, since a lookup is part of connecting. Default 5 s.
    pub dns_timeout: Duration,
    /// How long a connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// How long queued output may wait without the socket taking any of it
    /// (it restarts on every write that makes progress). Default 30 s.
    pub send_timeout: Duration,
    /// How long a message may take to arrive in full, from its first byte (and,
    /// on a server, from accept to the first request). Default 30 s.
    pub receive_timeout: Duration,
    /// How long an idle keep-alive connection stays open. Default 60 s.
    pub keep_alive_timeout: Duration,
    /// How long a TLS handshake may take, from accept (server) or from the
    /// TCP connect (client); past it the connection closes with
    /// `tls_error`. Default 10 s.
    pub handshake_timeout: Duration,
    /// Queued bytes above which the connection stops reading and producers are
    /// told to slow down. Default 256 KiB.
    pub high_watermark: usize,
    /// Queued bytes below which a paused connection reads again and a stream's
    /// writable callback runs. Default 64 KiB.
    pub low_watermark: usize,
    /// Queued bytes past which a send is refused (`SendError::Full`). A
    /// one-shot reply is always accepted onto a queue below this (its bytes
    /// are in memory already); streams must wait for their writable callback.
    /// Default 16 MiB.
    pub max_queued: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            dns_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            receive_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            high_watermark: 256 * 1024,
            low_watermark: 64 * 1024,
            max_queued: 16 * 1024 * 1024,
        }
    }
}

/// Settings shared by client tasks: timeouts, pool size, queueing, retries,
/// access log. Tasks that share a `ClientConfig` (an `Arc`) share connection
/// pools; a config that is dropped leaves nothing behind once its
/// connections have closed.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use taskweave::comm::{ClientConfig, ConnConfig};
///
/// let config = Arc::new(
///     ClientConfig::new(ConnConfig {
///         connect_timeout: Duration::from_secs(2),
///         ..ConnConfig::default()
///     })
///     .max_per_target(8)
///     .max_waiting(100)
///     .dns_ttl(Duration::from_secs(10)),
/// );
/// assert_eq!(config.conn().connect_timeout, Duration::from_secs(2));
/// ```
pub struct ClientConfig {
    pub(crate) conn: ConnConfig,
    pub(crate) max_per_target: usize,
    pub(crate) max_waiting: usize,
    pub(crate) wait_timeout: Duration,
    pub(crate) retry_max: u32,
    pub(crate) dns_ttl: Duration,
    pub(crate) log: Arc<dyn AccessLog>,
    /// `log` wants a record per request.
    pub(crate) log_requests: bool,
    /// CA certificates (PEM files) trusted besides the Mozilla roots.
    tls_roots: Vec<PathBuf>,
    /// The TLS settings, built at the first `https://` connection and shared
    /// by every connection of this config: sessions resume across them.
    tls: OnceLock<Result<ClientTls, String>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("conn", &self.conn)
            .field("max_per_target", &self.max_per_target)
            .field("max_waiting", &self.max_waiting)
            .field("wait_timeout", &self.wait_timeout)
            .field("retry_max", &self.retry_max)
            .field("dns_ttl", &self.dns_ttl)
            .field("tls_roots", &self.tls_roots)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig::new(ConnConfig::default())
    }
}

impl ClientConfig {
    /// A config with these connection settings, 32 connections per target,
    /// up to 1,024 requests waiting for one for at most 10 s, one retry,
    /// names cached for [`DNS_TTL`](super::DNS_TTL) (60 s) and no access log.
    pub fn new(conn: ConnConfig) -> ClientConfig {
        ClientConfig {
            conn,
            max_per_target: 32,
            max_waiting: 1024,
            wait_timeout: Duration::from_secs(10),
            retry_max: 1,
            dns_ttl: super::DNS_TTL,
            log: Arc::new(NullLog),
            log_requests: false,
            tls_roots: Vec::new(),
            tls: OnceLock::new(),
        }
    }
    /// Most connections open to one target; more requests wait (or are
    /// pipelined, when the protocol allows it). Default 32.
    pub fn max_per_target(mut self, n: usize) -> Self {
        self.max_per_target = n.max(1);
        self
    }
    /// Most requests waiting for a connection to one target; past it a
    /// request fails at once with `Error::LimitExceeded`. Default 1,024.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }
    /// How long a request may wait for a connection before it fails with
    /// `Error::WaitTimeout`. Default 10 s.
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = d;
        self
    }
    /// Retries of a request whose pooled connection failed before any byte
    /// of a reply, when its protocol says the request may be sent again
    /// (`Protocol::may_retry`). Default 1.
    pub fn retry_max(mut self, n: u32) -> Self {
        self.retry_max = n;
        self
    }
    /// How long a resolved name is reused before a new connection looks it
    /// up again. The system resolver does not report record TTLs, so this
    /// stands in for them. The cache is shared by every config: a config
    /// takes an answer younger than its own TTL, and an answer is kept while
    /// some config that asked for it would still take it. `Duration::ZERO`
    /// looks a name up for every new connection (lookups of one name at the
    /// same time still share one query). Default [`DNS_TTL`](super::DNS_TTL),
    /// 60 s.
    pub fn dns_ttl(mut self, ttl: Duration) -> Self {
        self.dns_ttl = ttl;
        self
    }
    /// Where each client connection's record goes when it closes, and each
    /// request's when it ends (if the sink
    /// [wants them](AccessLog::wants_requests)).
    pub fn access_log(mut self, log: impl AccessLog) -> Self {
        self.log_requests = log.wants_requests();
        self.log = Arc::new(log);
        self
    }
    /// Trusts the CA certificates in this PEM file for `https://`, besides
    /// the Mozilla root store that is trusted by default (webpki-roots,
    /// compiled in: the same on every machine, no CA bundle to find). For a
    /// private CA, or a test's own. A file that cannot be read or parsed
    /// fails the first `https://` request with [`Error::Tls`].
    ///
    /// ```
    /// use taskweave::comm::ClientConfig;
    /// let config = ClientConfig::default().tls_root_pem("/etc/my-ca.pem");
    /// # let _ = config;
    /// ```
    pub fn tls_root_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_roots.push(path.into());
        self
    }
    /// The TLS settings of this config's `https://` connections, built once.
    pub(crate) fn tls_config(&self) -> Result<ClientTls, Error> {
        let built = self.tls.get_or_init(|| {
            // HTTP/1.1 is the only protocol with TLS clients here; a config
            // is not tied to one protocol, so no ALPN is asked for (the
            // server then speaks its default, HTTP/1.1).
            client_tls(&self.tls_roots, &[]).map_err(|e| e.to_string())
        });
        built.clone().map_err(Error::Tls)
    }
    /// The connection settings.
    pub fn conn(&self) -> &ConnConfig {
        &self.conn
    }
    /// The shared default config.
    pub fn shared_default() -> Arc<ClientConfig> {
        static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Arc::new(ClientConfig::default()))
            .clone()
    }
}
