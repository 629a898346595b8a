//! Per-connection limits and timeouts.

use std::time::Duration;

/// Timeouts and output limits for a connection. Every field has a default and a
/// setter on the server and client builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// How long a connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// How long queued output may wait without the socket taking any of it.
    /// Default 30 s.
    pub send_timeout: Duration,
    /// How long a message may take to arrive in full, from its first byte (and,
    /// on a server, from accept to the first request). Default 30 s.
    pub receive_timeout: Duration,
    /// How long an idle keep-alive connection stays open. Default 60 s.
    pub keep_alive_timeout: Duration,
    /// Queued bytes above which the connection stops reading and producers are
    /// told to slow down. Default 256 KiB.
    pub high_watermark: usize,
    /// Queued bytes below which a paused connection reads again. Default 64 KiB.
    pub low_watermark: usize,
    /// Queued bytes past which a send fails. Default 16 MiB.
    pub max_queued: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            receive_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            high_watermark: 256 * 1024,
            low_watermark: 64 * 1024,
            max_queued: 16 * 1024 * 1024,
        }
    }
}
