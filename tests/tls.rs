//! TLS on 127.0.0.1, with certificates this test makes with the `openssl`
//! CLI (scripts/test.sh installs it; under `CI=true` a missing openssl or
//! curl fails the test): curl against `http_server --tls-cert`, our client
//! against our server and against `openssl s_server`, the failures that
//! must close with `tls_error` while the server goes on serving, a TLS
//! client that never reads, and session resumption.
#![cfg(feature = "tls")]

mod support;

use rustls::pki_types::pem::PemObject;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};
use support::child::{missing, works};
use support::{records, wait_until};
use taskweave::comm::{ClientConfig, SendState};
use taskweave::http::{self, Server, ServerHandle, ServerTask};
use taskweave::metrics::{CloseReason, ConnStats, MemoryLog, Side};
use taskweave::{Error, Series};

/// The test's certificates: a CA, and server certificates it signed.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// Makes (once per test binary) a CA; `localhost.pem` for localhost and
/// 127.0.0.1; `other.pem` for other.test; `expired.pem`, for localhost,
/// whose validity ended when it was made. `None` (after `missing`) when
/// openssl is not installed.
fn certs() -> Option<&'static Certs> {
    static CERTS: OnceLock<Option<Certs>> = OnceLock::new();
    CERTS
        .get_or_init(|| {
            if !works("openssl", &["version"]) {
                return None;
            }
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls_certs");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ];
            let mut ca = vec!["req", "-x509"];
            ca.extend(ec);
            ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
            ca.extend(["-subj", "/CN=taskweave test CA"]);
            openssl(&dir, &ca);
            let leaf = |name: &str, san: &str, days: &str| {
                let ext = format!("{name}.ext");
                std::fs::write(
                    dir.join(&ext),
                    format!(
                        "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                         extendedKeyUsage=serverAuth\n"
                    ),
                )
                .unwrap();
                let (key, csr, pem) = (
                    format!("{name}.key"),
                    format!("{name}.csr"),
                    format!("{name}.pem"),
                );
                let mut req = vec!["req"];
                req.extend(ec);
                req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=taskweave test"]);
                openssl(&dir, &req);
                openssl(
                    &dir,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        &csr,
                        "-CA",
                        "ca.pem",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-out",
                        &pem,
                        "-days",
                        days,
                        "-extfile",
                        &ext,
                    ],
                );
            };
            leaf("localhost", "DNS:localhost,IP:127.0.0.1", "2");
            leaf("other", "DNS:other.test", "2");
            // Valid for no time at all: expired a second later.
            leaf("expired", "DNS:localhost,IP:127.0.0.1", "0");
            Some(Certs { dir })
        })
        .as_ref()
        .or_else(|| {
            missing("openssl (the test makes its certificates with it)");
            None
        })
}

/// A TLS server with `cert` (and `more` chosen by SNI): `/` says hello,
/// `/close` answers and closes, `/big` streams 64 MiB as the socket drains.
fn tls_server(certs: &Certs, cert: &str, more: &[&str], log: &MemoryLog) -> ServerHandle {
    let mut builder = Server::builder()
        .access_log(log.clone())
        .watermarks(64 * 1024, 256 * 1024)
        .send_timeout(Duration::from_secs(1))
        .tls(
            certs.path(&format!("{cert}.pem")),
            certs.path(&format!("{cert}.key")),
        );
    for name in more {
        builder = builder.tls(
            certs.path(&format!("{name}.pem")),
            certs.path(&format!("{name}.key")),
        );
    }
    builder
        .serve(
            "127.0.0.1:0",
            |task: &mut ServerTask, _: &mut Series| match task.request().path() {
                "/big" => stream_big(task),
                "/close" => {
                    task.response()
                        .set_header("Connection", "close")
                        .set_body("bye");
                }
                _ => {
                    task.response().set_body("hello over TLS");
                }
            },
        )
        .unwrap()
}

/// 64 MiB in 64 KiB pieces, each sent only while the connection is below
/// its high watermark (the writable callback says when to go on).
fn stream_big(task: &mut ServerTask) {
    task.response()
        .set_framing(http::Framing::Declared(64 << 20));
    let Ok(stream) = task.stream() else { return };
    fn pump(stream: taskweave::comm::Stream, mut left: u32) {
        while left > 0 {
            let piece = big_piece(1024 - left);
            match stream.send(piece) {
                Ok(SendState::AboveHigh) => {
                    left -= 1;
                    let next = stream.clone();
                    stream.on_writable(move || pump(next, left));
                    return;
                }
                Ok(_) => left -= 1,
                Err(_) => return,
            }
        }
        stream.finish();
    }
    pump(stream, 1024);
}

/// Piece `i` of `/big`: 64 KiB of one byte that changes from piece to piece,
/// so a piece lost, repeated or reordered shows.
fn big_piece(i: u32) -> bytes::Bytes {
    bytes::Bytes::from(vec![(i % 251) as u8; 64 * 1024])
}

/// A client config that trusts the test CA.
fn client(certs: &Certs) -> Arc<ClientConfig> {
    Arc::new(ClientConfig::default().tls_root_pem(certs.ca()))
}

/// One `GET` of `url` with `config`: the status and body, or the error.
fn get(url: &str, config: &Arc<ClientConfig>) -> Result<(u16, String), Error> {
    let (tx, rx) = mpsc::channel();
    let task = http::get(url, move |t: &mut http::ClientTask, _: &mut Series| {
        let out = t
            .result()
            .map(|r| (r.status(), String::from_utf8_lossy(r.body()).into_owned()))
            .map_err(Clone::clone);
        let _ = tx.send(out);
    })
    .config(config.clone());
    Series::new(task).start();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the request ended within 10 s")
}

fn curl(args: &[&str]) -> Option<std::process::Output> {
    if !works("curl", &["--version"]) {
        missing("curl");
        return None;
    }
    Some(Command::new("curl").args(args).output().expect("curl runs"))
}

/// The server-side records, once there are `n`.
fn server_records(log: &MemoryLog, n: usize) -> Vec<ConnStats> {
    let all = records(log, n);
    all.into_iter()
        .filter(|r| r.side() == Side::Server)
        .collect()
}

/// Waits for a server-side record that closed with `reason`.
fn closed_with(log: &MemoryLog, reason: CloseReason) -> ConnStats {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = log
            .records()
            .into_iter()
            .find(|r| r.side() == Side::Server && r.close_reason() == Some(reason));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {reason} record: {:?}", log.records()))
}

/// curl, checking the chain with `--cacert`, against `http_server
/// --tls-cert --tls-key`: TLS 1.3, the body, and the handshake in the
/// access log.
#[test]
fn curl_with_cacert_against_http_server_over_tls() {
    let Some(certs) = certs() else { return };
    let (cert, key) = (certs.path("localhost.pem"), certs.path("localhost.key"));
    let log = certs.path("http_server.log");
    let _ = std::fs::remove_file(&log);
    let mut server = support::example::Server::start(
        "http_server",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let url = format!("https://localhost:{}/", server.addr().port());
    let ca = certs.ca();
    let Some(out) = curl(&[
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "|%{ssl_verify_result}|%{time_appconnect}",
        &url,
    ]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let mut parts = text.split('|');
    assert_eq!(parts.next(), Some("Hello, World!"), "{text}");
    assert_eq!(parts.next(), Some("0"), "curl verified the chain: {text}");
    let appconnect: f64 = parts.next().unwrap().parse().unwrap();
    assert!(appconnect > 0.0, "{text}");
    // Plain HTTP is refused, and the server goes on.
    let plain = curl(&["-sS", "--max-time", "5", &url.replace("https", "http")]).unwrap();
    assert!(!plain.status.success(), "{plain:?}");
    let again = curl(&[
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca.to_str().unwrap(),
        &url,
    ])
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout), "Hello, World!");
    server.assert_running();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || lines()
            .matches("\"kind\":\"conn\"")
            .count()
            >= 3),
        "{}",
        lines()
    );
    let text = lines();
    assert!(text.contains("\"tls_version\":\"TLSv1.3\""), "{text}");
    assert!(text.contains("\"close_reason\":\"tls_error\""), "{text}");
}

/// Our client against our server: the body, the TLS phase in the client's
/// timings, and the version and cipher on both sides' records. A second
/// connection resumes the first one's session (both sides say so).
#[test]
fn our_client_against_our_server_resumes_on_a_second_connection() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = tls_server(certs, "localhost", &[], &log);
    let client_log = MemoryLog::new();
    let config = Arc::new(
        ClientConfig::default()
            .tls_root_pem(certs.ca())
            .access_log(client_log.clone()),
    );
    let port = server.local_addr().port();
    // `/close`: the server closes, so the next request needs a new connection.
    for _ in 0..2 {
        let got = get(&format!("https://localhost:{port}/close"), &config);
        assert_eq!(got, Ok((200, "bye".to_string())));
    }
    let (tx, rx) = mpsc::channel();
    let task = http::get(
        &format!("https://127.0.0.1:{port}/"),
        move |t: &mut http::ClientTask, _: &mut Series| {
            let _ = tx.send((t.result().is_ok(), t.timings()));
        },
    )
    .config(config.clone());
    Series::new(task).start();
    let (ok, timings) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(ok);
    assert!(timings.tls.is_some(), "{timings:?}");
    let servers = server_records(&log, 2);
    assert_eq!(servers.len(), 2, "{servers:?}");
    for r in &servers {
        assert_eq!(r.tls_version(), Some("TLSv1.3"), "{r:?}");
        assert!(
            r.tls_cipher().is_some_and(|c| c.starts_with("TLS13_")),
            "{r:?}"
        );
        assert!(r.tls_time().is_some(), "{r:?}");
    }
    let resumed: Vec<_> = servers.iter().map(|r| r.tls_resumed()).collect();
    assert_eq!(
        resumed,
        [Some(false), Some(true)],
        "the second connection resumed"
    );
    let clients = records(&client_log, 2);
    let resumed: Vec<_> = clients.iter().map(|r| r.tls_resumed()).collect();
    assert_eq!(resumed, [Some(false), Some(true)], "{clients:?}");
    server.shutdown(Duration::from_secs(1));
}

/// Our client against `openssl s_server -www` (whose page describes the
/// session it served).
#[test]
fn our_client_against_openssl_s_server() {
    let Some(certs) = certs() else { return };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s_server = KillOnDrop(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certs.path("localhost.pem"))
            .arg("-key")
            .arg(certs.path("localhost.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_ok()),
        "s_server did not listen"
    );
    let got = get(&format!("https://localhost:{port}/"), &client(certs));
    let (status, page) = got.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    assert!(page.contains("TLSv1.3"), "{page}");
    assert!(
        s_server.0.try_wait().unwrap().is_none(),
        "s_server still runs"
    );
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 64 MiB over TLS to curl reading at a limited rate, so the socket fills and
/// drains again and again: the body arrives whole and in order (the records
/// that waited on the socket went out once, before anything after them).
#[test]
fn a_large_stream_arrives_intact_through_backpressure() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = tls_server(certs, "localhost", &[], &log);
    let out = certs.path("big.out");
    let ca = certs.ca();
    let url = format!("https://localhost:{}/big", server.local_addr().port());
    let Some(got) = curl(&[
        "-sS",
        "--max-time",
        "60",
        "--limit-rate",
        "40M",
        "--cacert",
        ca.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-w",
        "%{size_download}",
        &url,
    ]) else {
        return;
    };
    assert!(got.status.success(), "{got:?}");
    let body = std::fs::read(&out).unwrap();
    assert_eq!(body.len(), 64 << 20);
    for (i, piece) in body.chunks(64 * 1024).enumerate() {
        assert!(piece == &big_piece(i as u32)[..], "piece {i} differs");
    }
    let _ = std::fs::remove_file(&out);
    let r = &server_records(&log, 1)[0];
    assert!(r.write_pauses() > 0, "the socket never filled: {r:?}");
    assert!(r.peak_queued_bytes() <= 256 * 1024 + 2 * 64 * 1024, "{r:?}");
}

/// A name the server has no certificate for (curl sends it as SNI): refused
/// with `tls_error`, and the server goes on serving the names it has, over
/// TLS 1.3 and 1.2.
#[test]
fn a_wrong_sni_closes_with_tls_error_and_the_server_goes_on() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = tls_server(certs, "localhost", &["other"], &log);
    let port = server.local_addr().port();
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let resolve = |name: &str| format!("{name}:{port}:127.0.0.1");
    let Some(wrong) = curl(&[
        "-sS",
        "--max-time",
        "5",
        "--cacert",
        ca,
        "--resolve",
        &resolve("wrong.test"),
        &format!("https://wrong.test:{port}/"),
    ]) else {
        return;
    };
    assert!(!wrong.status.success(), "{wrong:?}");
    let r = closed_with(&log, CloseReason::TlsError);
    assert_eq!(r.tls_version(), None);
    // TLS 1.2 too (the `tls12` feature of rustls), with an ECDHE-ECDSA suite.
    let old = curl(&[
        "-sS",
        "--max-time",
        "5",
        "--cacert",
        ca,
        "--tls-max",
        "1.2",
        "--resolve",
        &resolve("localhost"),
        &format!("https://localhost:{port}/"),
    ])
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&old.stdout),
        "hello over TLS",
        "{old:?}"
    );
    let mut tls12 = None;
    wait_until(Duration::from_secs(5), || {
        tls12 = log
            .records()
            .into_iter()
            .find(|r| r.tls_version() == Some("TLSv1.2"));
        tls12.is_some()
    });
    let tls12 = tls12.expect("a TLSv1.2 record");
    assert!(
        tls12
            .tls_cipher()
            .is_some_and(|c| c.starts_with("TLS_ECDHE_ECDSA_")),
        "{tls12:?}"
    );
    // Both certificates are served, each for its own name.
    for name in ["localhost", "other.test"] {
        let ok = curl(&[
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            ca,
            "--resolve",
            &resolve(name),
            &format!("https://{name}:{port}/"),
        ])
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout),
            "hello over TLS",
            "{ok:?}"
        );
    }
}

/// An expired certificate: our client refuses it (`Error::Tls`), the server
/// records `tls_error`, and goes on serving.
#[test]
fn an_expired_certificate_is_refused_and_the_server_records_tls_error() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = tls_server(certs, "expired", &[], &log);
    let port = server.local_addr().port();
    let config = client(certs);
    // `expired.pem` expired within a second of being made.
    std::thread::sleep(Duration::from_millis(1100));
    let err = get(&format!("https://localhost:{port}/"), &config).unwrap_err();
    assert!(
        matches!(&err, Error::Tls(why) if why.contains("expired")),
        "{err}"
    );
    closed_with(&log, CloseReason::TlsError);
    let good = tls_server(certs, "localhost", &[], &MemoryLog::new());
    let url = format!("https://localhost:{}/", good.local_addr().port());
    assert_eq!(get(&url, &config), Ok((200, "hello over TLS".to_string())));
}

/// Plain HTTP to the TLS port: `tls_error`, the client sees the close (and
/// a TLS alert, not an HTTP answer), and TLS clients are served after it.
#[test]
fn plain_http_to_the_tls_port_closes_with_tls_error() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = tls_server(certs, "localhost", &[], &log);
    let mut s = support::connect(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
    assert_eq!(got.first(), Some(&0x15), "a TLS alert record: {got:?}");
    closed_with(&log, CloseReason::TlsError);
    let url = format!("https://localhost:{}/", server.local_addr().port());
    assert_eq!(
        get(&url, &client(certs)),
        Ok((200, "hello over TLS".to_string()))
    );
}

/// A TLS client that asks for 64 MiB and never reads: the server's queue
/// stays within its bound (the TLS records waiting count in it), its memory
/// does not grow with the response, and the send timeout closes the
/// connection.
#[test]
fn a_tls_client_that_never_reads_keeps_the_queue_bounded() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = tls_server(certs, "localhost", &[], &log);
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(certs.ca()).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = support::connect(server.local_addr());
    let before = support::rss_kib();
    let watch = support::RssWatch::start();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    let start = Instant::now();
    // Never read: the server's socket fills, its queue rises to the high
    // watermark, and the send timeout (1 s) ends it.
    let r = closed_with(&log, CloseReason::SendTimeout);
    let growth = watch.peak().saturating_sub(before);
    eprintln!(
        "closed after {:?}, RSS +{growth} KiB: {r:?}",
        start.elapsed()
    );
    // The queue's bound and what the allocator keeps around it, not the
    // 64 MiB asked for (the producer sends only below the high watermark).
    assert!(growth < 16 * 1024, "the server's RSS grew by {growth} KiB");
    assert!(
        r.peak_queued_bytes() <= 256 * 1024 + 2 * 64 * 1024,
        "peak queued {} bytes",
        r.peak_queued_bytes()
    );
    assert!(r.bytes_out() < 16 << 20, "{r:?}");
    assert_eq!(r.tls_version(), Some("TLSv1.3"));
    drop(tls);
}

/// A connection that never finishes its handshake is closed at the
/// handshake timeout with `tls_error`.
#[test]
fn a_stalled_handshake_closes_at_the_handshake_timeout() {
    let Some(certs) = certs() else { return };
    let log = MemoryLog::new();
    let server = Server::builder()
        .access_log(log.clone())
        .handshake_timeout(Duration::from_millis(300))
        .tls(certs.path("localhost.pem"), certs.path("localhost.key"))
        .serve("127.0.0.1:0", |task: &mut ServerTask, _: &mut Series| {
            task.response().set_body("x");
        })
        .unwrap();
    let s = support::connect(server.local_addr());
    let start = Instant::now();
    let r = closed_with(&log, CloseReason::TlsError);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.bytes_in(), 0);
    drop(s);
}
