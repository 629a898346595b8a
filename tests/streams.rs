//! Server streams over HTTP, against curl and raw sockets on 127.0.0.1: files
//! streamed as the socket drains, bounded memory for slow and stalled
//! readers, timed chunks, the writable callback, HEAD and HTTP/1.0, path
//! traversal, and a shutdown that ends open streams.

#[path = "../examples/common/streams.rs"]
mod streams;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use taskweave::comm::SendState;
use taskweave::http::{Server, ServerBuilder, ServerHandle, ServerTask};
use taskweave::metrics::{CloseReason, MemoryLog};
use taskweave::Series;

/// A directory of test files under the target directory (removed first).
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a file of `mib` MiB of pseudo-random bytes (each MiB different).
fn write_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// The `http_server` example's stream routes on a server built by `builder`.
fn stream_server(builder: ServerBuilder, dir: PathBuf) -> ServerHandle {
    paced_stream_server(builder, dir, None)
}

/// The same, with `/file` downloads paced as `http_server --limit-rate`
/// paces them.
fn paced_stream_server(
    builder: ServerBuilder,
    dir: PathBuf,
    pace: Option<streams::DownloadRate>,
) -> ServerHandle {
    builder
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, series: &mut Series| {
                let path = task.request().path().to_owned();
                let q = task.request().query().map(str::to_owned);
                if let Some(name) = path.strip_prefix("/file/") {
                    streams::serve_file_paced(task, &dir, name, pace);
                } else if path == "/stream" {
                    let n = streams::query_param(q.as_deref(), "n")
                        .ok()
                        .flatten()
                        .unwrap_or(3);
                    let ms = streams::query_param(q.as_deref(), "ms")
                        .ok()
                        .flatten()
                        .unwrap_or(10);
                    streams::serve_ticks(task, series, n, ms);
                } else {
                    task.response().set_status(404);
                }
            },
        )
        .unwrap()
}

/// A connection with a 4 KiB receive buffer, so that output backs up in the
/// server as soon as this side stops reading.
fn slow_reader(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

fn curl(args: &[&str]) -> std::process::Output {
    let out = Command::new("curl").args(args).output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("curl is needed for this test (scripts/test.sh installs it): {e}"),
    }
}

fn sha256(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// 256 MiB through a 1 MiB send queue to curl: the body arrives intact
/// (checksum), and the server's memory grows by a small fraction of the file,
/// because the file is read only as the socket drains.
#[test]
fn a_large_file_streams_intact_through_a_small_queue_in_bounded_memory() {
    let dir = test_dir("streams_large");
    let file = dir.join("big.bin");
    write_file(&file, 256);
    let log = MemoryLog::new();
    let server = stream_server(
        Server::builder()
            .watermarks(256 * 1024, 1024 * 1024)
            .max_queued(1024 * 1024)
            .access_log(log.clone()),
        dir.clone(),
    );
    let url = format!("http://{}/file/big.bin", server.local_addr());
    let before = rss_kib();
    let watch = RssWatch::start();
    let got = sha256(&format!("curl -sS --max-time 120 {url} | sha256sum"));
    let peak = watch.peak();
    let want = sha256(&format!("sha256sum {}", file.display()));
    assert_eq!(got, want, "the body differs from the file");
    let growth = peak.saturating_sub(before);
    eprintln!("server RSS {before} KiB -> peak {peak} KiB (+{growth} KiB) for 256 MiB");
    assert!(growth < 32 * 1024, "server RSS grew by {growth} KiB");
    let record = &records(&log, 1)[0];
    assert_eq!(record.response_body_bytes(), Some(256 << 20));
    assert!(record.peak_queued_bytes() <= 1024 * 1024 + 2 * streams::FILE_PIECE as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that asks for a 100 MiB file and never reads: the server's memory
/// stays bounded by its queue, and the connection closes at the send timeout.
#[test]
fn a_client_that_never_reads_a_file_is_closed_at_the_send_timeout() {
    let dir = test_dir("streams_stalled");
    write_file(&dir.join("big.bin"), 100);
    let log = MemoryLog::new();
    let server = stream_server(
        Server::builder()
            .send_timeout(Duration::from_millis(500))
            .access_log(log.clone()),
        dir.clone(),
    );
    let before = rss_kib();
    let watch = RssWatch::start();
    let mut s = slow_reader(server.local_addr());
    s.write_all(b"GET /file/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let record = &records(&log, 1)[0];
    let peak = watch.peak();
    assert_eq!(record.close_reason(), Some(CloseReason::SendTimeout));
    let growth = peak.saturating_sub(before);
    eprintln!("server RSS +{growth} KiB; record {record:?}");
    assert!(growth < 16 * 1024, "server RSS grew by {growth} KiB");
    assert!(
        record.bytes_out() < 50 << 20,
        "most of the file was never read"
    );
    assert!(record.peak_queued_bytes() < 1024 * 1024);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Downloads `url` with curl into `to`; returns curl's `size_download`,
/// `time_total` and `time_starttransfer`.
fn curl_download(url: &str, to: &Path) -> (u64, f64, f64) {
    let out = curl(&[
        "-sS",
        "--max-time",
        "30",
        "-o",
        &to.display().to_string(),
        "-w",
        "%{size_download} %{time_total} %{time_starttransfer}",
        url,
    ]);
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    let mut next = || it.next().unwrap_or_default().to_string();
    let parsed = (next().parse(), next().parse(), next().parse());
    match parsed {
        (Ok(size), Ok(total), Ok(start)) => (size, total, start),
        _ => panic!("curl -w said {text:?}"),
    }
}

/// The must-show, as `http_server --limit-rate 1m
/// --limit-rate-after 256k` serves it: a 3 MiB file arrives whole, the
/// bytes after the first 256 KiB at 1 MiB/s within 10%, and the record's
/// `ratelimit_delay_us` is not zero. The same file without the limit
/// arrives whole at once, with no delay recorded.
#[test]
fn a_file_with_limit_rate_arrives_at_the_set_rate() {
    let dir = test_dir("streams_limit_rate");
    let file = dir.join("three.bin");
    write_file(&file, 3);
    let want = std::fs::read(&file).unwrap();
    let size = want.len() as u64;
    let pace = streams::DownloadRate {
        rate: streams::parse_size("1m").unwrap(),
        after: streams::parse_size("256k").unwrap(),
    };
    let got_path = dir.join("got.bin");

    let log = MemoryLog::new();
    let server = paced_stream_server(
        Server::builder().access_log(log.clone()),
        dir.clone(),
        Some(pace),
    );
    let url = format!("http://{}/file/three.bin", server.local_addr());
    let (got, total, start) = curl_download(&url, &got_path);
    let rate = (got - pace.after) as f64 / total;
    eprintln!(
        "--limit-rate 1m --limit-rate-after 256k: {got} bytes in {total:.3} s \
         (first byte at {start:.4} s): {rate:.0} B/s after the free bytes, \
         {:+.1}% from the rate",
        (rate / pace.rate as f64 - 1.0) * 100.0
    );
    assert_eq!(got, size);
    assert!(
        std::fs::read(&got_path).unwrap() == want,
        "the body differs"
    );
    assert!(
        (rate - pace.rate as f64).abs() <= pace.rate as f64 * 0.10,
        "{rate:.0} B/s, not within 10% of {} B/s",
        pace.rate
    );
    let record = &records(&log, 1)[0];
    assert_eq!(record.response_body_bytes(), Some(size));
    assert_eq!(record.close_reason(), Some(CloseReason::PeerClosed));
    assert!(
        record.ratelimit_delay() > Duration::ZERO,
        "no rate-limit delay in {record:?}"
    );

    let log = MemoryLog::new();
    let server = paced_stream_server(Server::builder().access_log(log.clone()), dir.clone(), None);
    let url = format!("http://{}/file/three.bin", server.local_addr());
    let (got, fast, _) = curl_download(&url, &got_path);
    eprintln!("without the limit: {got} bytes in {fast:.3} s");
    assert_eq!(got, size);
    assert!(
        std::fs::read(&got_path).unwrap() == want,
        "the body differs"
    );
    assert!(fast < total / 2.0, "{fast} s without the limit");
    let record = &records(&log, 1)[0];
    assert_eq!(record.ratelimit_delay(), Duration::ZERO);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sizes for `--limit-rate` and `--limit-rate-after`, as nginx writes them.
#[test]
fn sizes_parse_like_nginx() {
    for (text, want) in [
        ("1m", Some(1 << 20)),
        ("500k", Some(500 << 10)),
        ("256K", Some(256 << 10)),
        ("2g", Some(2 << 30)),
        ("1234", Some(1234)),
        ("0", Some(0)),
        ("", None),
        ("k", None),
        ("1.5m", None),
        ("-1", None),
        ("10x", None),
        ("1 m", None),
        ("99999999999999999999", None),
    ] {
        assert_eq!(streams::parse_size(text), want, "{text:?}");
    }
    // A piece (and burst) of about a sixteenth of a second, 4 to 64 KiB.
    let piece = |rate| streams::DownloadRate { rate, after: 0 }.piece();
    assert_eq!(piece(1 << 20), 64 << 10);
    assert_eq!(piece(100 << 20), 64 << 10);
    assert_eq!(piece(160 << 10), 10 << 10);
    assert_eq!(piece(1), 4 << 10);
}

/// Names that climb out of the directory, encoded or not, absolute, or
/// through a symlink, get 404; a name inside gets the file.
#[test]
fn path_traversal_gets_404() {
    let dir = test_dir("streams_traversal");
    std::fs::write(dir.join("ok.txt"), "inside\n").unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/deep.txt"), "deeper\n").unwrap();
    let _ = std::os::unix::fs::symlink("/etc/passwd", dir.join("out"));
    let server = stream_server(Server::builder(), dir.clone());
    let base = format!("http://{}/file/", server.local_addr());
    let status = |path: &str| {
        let out = curl(&[
            "-s",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(status("ok.txt"), "200");
    assert_eq!(status("sub/deep.txt"), "200");
    assert_eq!(status("sub/../ok.txt"), "200");
    for bad in [
        "../streams_large/big.bin",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2fetc%2fpasswd",
        "out",
        "sub",
        "missing.txt",
        "ok.txt%00.png",
    ] {
        assert_eq!(status(bad), "404", "{bad}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads a chunked body from `s` after its head, noting when each chunk's
/// data arrived; returns the chunks and whether the last chunk came.
fn read_chunks(s: &mut TcpStream) -> (Vec<(Instant, String)>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunks = Vec::new();
    let mut tmp = [0u8; 4096];
    let mut body_at = None;
    loop {
        if body_at.is_none() {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..p + 4);
                body_at = Some(());
            }
        }
        if body_at.is_some() {
            // Parse whole chunks from the front of `buf`.
            while let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(std::str::from_utf8(&buf[..p]).unwrap(), 16).unwrap();
                if size == 0 {
                    return (chunks, buf.len() >= p + 4);
                }
                if buf.len() < p + 2 + size + 2 {
                    break;
                }
                let data = String::from_utf8(buf[p + 2..p + 2 + size].to_vec()).unwrap();
                chunks.push((Instant::now(), data));
                buf.drain(..p + 2 + size + 2);
            }
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return (chunks, false),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// `/stream?n=5&ms=100`: five chunks, each at least a timer period after the
/// one before, then the last chunk; the access log counts every byte.
#[test]
fn stream_chunks_arrive_spaced_by_the_timer() {
    let log = MemoryLog::new();
    let server = stream_server(
        Server::builder().access_log(log.clone()),
        test_dir("streams_ticks"),
    );
    let mut s = connect(server.local_addr());
    s.write_all(b"GET /stream?n=5&ms=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (chunks, ended) = read_chunks(&mut s);
    assert!(ended, "the stream ended with the last chunk");
    let texts: Vec<&str> = chunks.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "chunk 1\n",
            "chunk 2\n",
            "chunk 3\n",
            "chunk 4\n",
            "chunk 5\n"
        ]
    );
    for pair in chunks.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_millis(80), "chunks {gap:?} apart");
    }
    let record = &records(&log, 1)[0];
    assert_eq!(record.response_body_bytes(), Some(5 * 8));
    assert_eq!(record.requests(), 1);
}

/// A producer that fills the queue past the high watermark waits for the
/// writable callback; a reader that starts late drains the queue, the
/// callback fires, and the whole body arrives.
#[test]
fn the_writable_callback_fires_after_a_slow_reader_drains() {
    const PIECE: usize = 32 * 1024;
    let fired_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let fired = fired_at.clone();
    let server = Server::builder()
        .watermarks(64 * 1024, 256 * 1024)
        .serve(
            "127.0.0.1:0",
            move |task: &mut ServerTask, _: &mut Series| {
                let stream = task.stream().unwrap();
                let mut sent = 0;
                while !matches!(stream.send(vec![b'x'; PIECE]), Ok(SendState::AboveHigh)) {
                    sent += 1;
                    assert!(
                        sent < 10_000,
                        "the queue never went above the high watermark"
                    );
                }
                let s = stream.clone();
                let fired = fired.clone();
                stream.on_writable(move || {
                    *fired.lock().unwrap() = Some(Instant::now());
                    s.send(b"end".to_vec()).unwrap();
                    s.finish();
                });
            },
        )
        .unwrap();
    let mut s = slow_reader(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fired_at.lock().unwrap().is_none(),
        "fired before anyone read"
    );
    let reading = Instant::now();
    let (chunks, ended) = read_chunks(&mut s);
    assert!(ended);
    let at = fired_at
        .lock()
        .unwrap()
        .expect("the writable callback fired");
    assert!(at >= reading, "fired after the reader drained the queue");
    assert_eq!(chunks.last().map(|(_, t)| t.as_str()), Some("end"));
}

/// `HEAD` of a streamed file gets its head (with the length) and no body;
/// an HTTP/1.0 client gets a close-delimited stream.
#[test]
fn head_and_http_1_0_streams() {
    let dir = test_dir("streams_head");
    std::fs::write(dir.join("f.txt"), "0123456789").unwrap();
    let server = stream_server(Server::builder(), dir.clone());
    let mut s = connect(server.local_addr());
    s.write_all(b"HEAD /file/f.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /file/f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("Content-Length: 10\r\n").count(), 2, "{all}");
    assert!(all.ends_with("\r\n\r\n0123456789"), "{all}");
    assert_eq!(
        all.matches("0123456789").count(),
        1,
        "HEAD had no body: {all}"
    );

    let mut s = connect(server.local_addr());
    s.write_all(b"GET /stream?n=2&ms=5 HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(!all.contains("Transfer-Encoding"), "{all}");
    assert!(all.contains("Connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nchunk 1\nchunk 2\n"), "{all}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Graceful shutdown with 100 streams open: each gets its last chunk and a
/// close, and the shutdown finishes within its grace period.
#[test]
fn shutdown_ends_a_hundred_open_streams_within_its_deadline() {
    let log = MemoryLog::new();
    let server = stream_server(
        Server::builder().access_log(log.clone()),
        test_dir("streams_shutdown"),
    );
    let addr: SocketAddr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /stream?n=100000&ms=50 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // Every stream is open: its first chunk has arrived.
    for s in clients.iter_mut() {
        let mut got = Vec::new();
        let mut tmp = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("chunk 1\n") {
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0, "closed before the first chunk");
            got.extend_from_slice(&tmp[..n]);
        }
    }
    let started = Instant::now();
    assert!(
        server.shutdown(Duration::from_secs(5)),
        "shutdown ran past its grace"
    );
    let took = started.elapsed();
    for s in clients.iter_mut() {
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.ends_with(b"0\r\n\r\n"),
            "the stream ended with its last chunk"
        );
    }
    let records = records(&log, 100);
    assert!(records
        .iter()
        .all(|r| r.close_reason() == Some(CloseReason::ServerShutdown)));
    eprintln!("shutdown with 100 open streams took {took:?}");
}
