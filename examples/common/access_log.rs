//! The `--access-log PATH|-|off|none` choice shared by the example servers.

use std::io;
use std::sync::Arc;
use taskweave::metrics::{AccessLog, JsonLines, NullLog, ServerMetrics, Tee};

/// Records feed `metrics`; with `-` (the default) they are also written as JSON
/// Lines to stdout, with a path to that file, with `off` nowhere else, and with
/// `none` not even to `metrics` (the benchmark's baseline).
#[allow(dead_code)]
pub fn access_log(
    arg: Option<&str>,
    metrics: Arc<ServerMetrics>,
) -> io::Result<Arc<dyn AccessLog>> {
    Ok(access_log_with_writer(arg, metrics)?.0)
}

/// As [`access_log`], and also the JSON Lines writer (if any), to flush at
/// shutdown so no record is lost.
pub fn access_log_with_writer(
    arg: Option<&str>,
    metrics: Arc<ServerMetrics>,
) -> io::Result<(Arc<dyn AccessLog>, Option<Arc<JsonLines>>)> {
    let writer = match arg.unwrap_or("-") {
        "none" => return Ok((Arc::new(NullLog), None)),
        "off" => return Ok((metrics, None)),
        "-" => Arc::new(JsonLines::stdout()?),
        path => Arc::new(JsonLines::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open access log {path}: {e}"))
        })?),
    };
    let log = Arc::new(Tee::new(vec![writer.clone(), metrics]));
    Ok((log, Some(writer)))
}
