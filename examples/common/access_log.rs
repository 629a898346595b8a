//! The `--access-log PATH|-|off` choice shared by the example servers.

use std::io;
use std::sync::Arc;
use taskweave::metrics::{AccessLog, JsonLines, ServerMetrics, Tee};

/// Records always feed `metrics`; with `-` (the default) they are also written as
/// JSON Lines to stdout, with a path to that file, and with `off` nowhere else.
pub fn access_log(
    arg: Option<&str>,
    metrics: Arc<ServerMetrics>,
) -> io::Result<Arc<dyn AccessLog>> {
    Ok(match arg.unwrap_or("-") {
        "off" => metrics,
        "-" => Arc::new(Tee::new(vec![Arc::new(JsonLines::stdout()?), metrics])),
        path => Arc::new(Tee::new(vec![Arc::new(JsonLines::open(path)?), metrics])),
    })
}
