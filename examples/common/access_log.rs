//! The `--access-log PATH|-|off|none` choice shared by the example servers.

use std::io;
use std::sync::Arc;
use taskweave::metrics::{AccessLog, JsonLines, NullLog, ServerMetrics, Tee};

/// The sink chosen, and its JSON Lines writer if it has one.
pub struct Chosen {
    /// Where records go.
    pub log: Arc<dyn AccessLog>,
    /// To flush at shutdown, so no record is lost.
    pub writer: Option<Arc<JsonLines>>,
}

/// The sink for `--access-log`. Records feed `metrics`; with `-` (the
/// default) they are also written as JSON Lines to stdout, with a path to
/// that file, with `off` nowhere else, and with `none` not even to
/// `metrics` (the benchmark's baseline). The JSON Lines writer is kept apart
/// too, to flush at shutdown. It writes a line per request and one per
/// connection, or with `requests` false (`--conn-log-only`) only the
/// connections'. A file that cannot be opened is an error that names it.
pub fn choose(
    arg: Option<&str>,
    requests: bool,
    metrics: Arc<ServerMetrics>,
) -> io::Result<Chosen> {
    let only = |log: Arc<dyn AccessLog>| Chosen { log, writer: None };
    let writer = match arg.unwrap_or("-") {
        "none" => return Ok(only(Arc::new(NullLog))),
        "off" => return Ok(only(metrics)),
        "-" => Arc::new(JsonLines::builder().requests(requests).stdout()?),
        path => Arc::new(
            JsonLines::builder()
                .requests(requests)
                .open(path)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot open --access-log {path}: {e}"))
                })?,
        ),
    };
    let log = Arc::new(Tee::new(vec![writer.clone(), metrics]));
    Ok(Chosen {
        log,
        writer: Some(writer),
    })
}

/// The sink the command line asks for (`--access-log`, `--conn-log-only`):
/// a file that cannot be opened is a usage error that names it.
pub fn from_args(args: &crate::args::Args, metrics: Arc<ServerMetrics>) -> Chosen {
    choose(args.raw("access-log"), !args.has("conn-log-only"), metrics)
        .unwrap_or_else(|e| args.fail(e))
}
