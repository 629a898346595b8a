//! The `--access-log PATH|-|off|none` choice shared by the example servers.

use std::io;
use std::sync::Arc;
use taskweave::metrics::{AccessLog, JsonLines, NullLog, ServerMetrics, Tee};

/// Records feed `metrics`; with `-` (the default) they are also written as JSON
/// Lines to stdout, with a path to that file, with `off` nowhere else, and with
/// `none` not even to `metrics` (the benchmark's baseline).
pub fn access_log(
    arg: Option<&str>,
    metrics: Arc<ServerMetrics>,
) -> io::Result<Arc<dyn AccessLog>> {
    Ok(match arg.unwrap_or("-") {
        "none" => Arc::new(NullLog),
        "off" => metrics,
        "-" => Arc::new(Tee::new(vec![Arc::new(JsonLines::stdout()?), metrics])),
        path => Arc::new(Tee::new(vec![Arc::new(JsonLines::open(path)?), metrics])),
    })
}
