//! Helpers shared by the integration tests: raw frame I/O over std sockets and
//! bounded waiting.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use taskweave::metrics::{CloseReason, ConnStats, MemoryLog};

/// Raises the soft descriptor limit to the hard one (tests open thousands).
pub fn raise_fd_limit() {
    if let Ok((_, hard)) = taskweave::os::nofile_limit() {
        let _ = taskweave::os::set_nofile_limit(hard);
    }
}

/// A length-prefixed frame on the wire.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads one frame's payload.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Connects with a read timeout so a broken server fails the test instead of
/// hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends one frame and returns the echoed payload.
pub fn echo(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    s.write_all(&frame(payload)).unwrap();
    read_frame(s).unwrap()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Waits for at least `n` records and returns them all.
pub fn records(log: &MemoryLog, n: usize) -> Vec<ConnStats> {
    assert!(
        wait_until(Duration::from_secs(10), || log.len() >= n),
        "expected {n} access-log records, got {}: {:?}",
        log.len(),
        log.records()
            .iter()
            .map(|r| r.close_reason())
            .collect::<Vec<_>>()
    );
    log.records()
}

/// The close reasons of `records`.
pub fn reasons(records: &[ConnStats]) -> Vec<CloseReason> {
    records.iter().filter_map(|r| r.close_reason()).collect()
}

/// Whether the peer has closed `s` (EOF or reset) within `timeout`.
pub fn closed_by_peer(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}
