//! Streamed answers for `http_server` (and its tests): files from a directory,
//! read in pieces as the socket drains (optionally paced, like nginx's
//! `limit_rate`), and timed chunks from poller timers.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use taskweave::comm::{FlowControl, Overflow, SendState, Stream};
use taskweave::http::{Framing, ServerTask};
use taskweave::{timer, Series};

/// Bytes read from a file per piece.
pub const FILE_PIECE: usize = 64 * 1024;

/// The smallest piece of a paced download.
pub const MIN_PACED_PIECE: usize = 4 * 1024;

/// A download's pace, as nginx's `limit_rate` and `limit_rate_after`: the
/// first `after` bytes go as fast as the socket takes them, the rest at
/// `rate` bytes a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadRate {
    /// Bytes a second after the free allowance; at least 1.
    pub rate: u64,
    /// Bytes sent before the rate applies.
    pub after: u64,
}

impl DownloadRate {
    /// The size of the pieces read from the file, which is also the burst:
    /// about a sixteenth of a second of the rate, between 4 KiB and
    /// [`FILE_PIECE`] (so 64 KiB from 1 MiB/s up). The pacer releases whole
    /// pieces, so a burst below one piece would pace no finer (a piece goes
    /// whole, into debt), and a larger one would only let more than a piece
    /// go at full speed after the free bytes; with both equal a piece goes
    /// every sixteenth of a second or so, and a download runs ahead of the
    /// rate by at most one piece.
    pub fn piece(&self) -> usize {
        let sixteenth = usize::try_from(self.rate / 16).unwrap_or(FILE_PIECE);
        sixteenth.clamp(MIN_PACED_PIECE, FILE_PIECE)
    }

    /// The flow control for a download at this pace. Pieces are never
    /// dropped: the producer stops at the high watermark anyway, and a piece
    /// the held queue would not take is refused (the download then ends
    /// short, and the connection closes), never silently left out.
    pub fn flow(&self) -> FlowControl {
        FlowControl::new()
            .byte_rate(self.rate, self.piece() as u64)
            .free_bytes(self.after)
            .overflow(Overflow::Reject)
    }
}

/// A size as nginx writes it: plain bytes, or with `k` (KiB), `m` (MiB) or
/// `g` (GiB), either case; `None` for anything else.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Percent-decodes a path segment; `None` when it is malformed or decodes to
/// something no file name holds (a NUL).
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (!out.contains(&0)).then_some(out)
}

/// The file under `dir` that `name` (the rest of `/file/NAME`, still
/// percent-encoded) names, if it is a regular file inside `dir` once every
/// `..` and symlink is resolved. Anything else (absolute paths, `..` that
/// climbs out, encoded or not, symlinks that lead out, directories) is `None`.
pub fn resolve(dir: &Path, name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let decoded = percent_decode(name)?;
    let rel = Path::new(std::ffi::OsStr::from_bytes(&decoded));
    if rel.is_absolute() || decoded.is_empty() {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let path = root.join(rel).canonicalize().ok()?;
    (path.starts_with(&root) && path.is_file()).then_some(path)
}

/// Answers `GET`/`HEAD /file/NAME` from `dir`: `Content-Length` from the
/// file's size, the body streamed in pieces of [`FILE_PIECE`] as the socket
/// drains, never the whole file in memory; 404 for anything outside `dir`.
pub fn serve_file(task: &mut ServerTask, dir: &Path, name: &str) {
    serve_file_paced(task, dir, name, None);
}

/// [`serve_file`], paced by `pace` when given: the stream's flow control
/// releases the pieces at its rate (see [`DownloadRate`]).
pub fn serve_file_paced(task: &mut ServerTask, dir: &Path, name: &str, pace: Option<DownloadRate>) {
    let opened = resolve(dir, name).and_then(|p| {
        let file = File::open(p).ok()?;
        let len = file.metadata().ok()?.len();
        Some((file, len))
    });
    let Some((file, len)) = opened else {
        task.response().set_status(404).set_body("not found\n");
        return;
    };
    task.response()
        .set_header("Content-Type", "application/octet-stream");
    task.response().set_framing(Framing::Declared(len));
    let stream = match pace {
        Some(pace) => task.stream_with(pace.flow()),
        None => task.stream(),
    };
    let Ok(stream) = stream else { return };
    if task.request().is_head() {
        stream.finish();
        return;
    }
    let piece = pace.map_or(FILE_PIECE, |p| p.piece());
    pump_file(stream, file, piece);
}

/// Sends pieces of `piece` bytes of `file` until the connection's output
/// (with what a paced stream holds) goes above its high watermark, then
/// waits for it to drain below the low one.
fn pump_file(stream: Stream, mut file: File, piece_len: usize) {
    loop {
        let mut piece = vec![0; piece_len];
        let n = match file.read(&mut piece) {
            Ok(0) => {
                stream.finish();
                return;
            }
            Ok(n) => n,
            Err(e) => {
                eprintln!("file read failed: {e}");
                return; // dropping the stream aborts it: the peer sees a cut
            }
        };
        piece.truncate(n);
        match stream.send(piece) {
            Ok(SendState::Written | SendState::Queued) => {}
            Ok(SendState::AboveHigh) => {
                let next = stream.clone();
                stream.on_writable(move || pump_file(next, file, piece_len));
                return;
            }
            // The peer is gone, or a piece was refused: dropping the stream
            // ends it short, and the connection closes.
            Err(_) => return,
        }
    }
}

/// Answers `/stream?n=N&ms=M`: `N` chunks (`chunk i`), `M` ms apart, from
/// timer tasks in the request's series.
pub fn serve_ticks(task: &mut ServerTask, series: &mut Series, n: u32, ms: u64) {
    task.response().set_header("Content-Type", "text/plain");
    let Ok(stream) = task.stream() else { return };
    if n == 0 {
        stream.finish();
        return;
    }
    series.push_back(tick(stream, 1, n, Duration::from_millis(ms)));
}

fn tick(stream: Stream, i: u32, n: u32, every: Duration) -> taskweave::TimerTask {
    timer(every, move |_, s: &mut Series| {
        if stream.send(format!("chunk {i}\n")).is_err() {
            return; // the peer is gone
        }
        if i >= n {
            stream.finish();
        } else {
            s.push_back(tick(stream, i + 1, n, every));
        }
    })
}

/// The value of `key` in a query string, parsed.
pub fn query_param<T: std::str::FromStr>(
    query: Option<&str>,
    key: &str,
) -> Result<Option<T>, String> {
    let Some(raw) = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }) else {
        return Ok(None);
    };
    raw.parse()
        .map(Some)
        .map_err(|_| format!("bad value for {key}: {raw:?}\n"))
}
