//! Binding: a port something listens on already is an error, unless every
//! server on it opts in to sharing (`reuse_port(true)`), and then the kernel
//! spreads connections over them.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use taskweave::http::{Server, ServerHandle};

fn hello(
    builder: taskweave::http::ServerBuilder,
    port: u16,
    body: &'static str,
) -> std::io::Result<ServerHandle> {
    builder.serve(("127.0.0.1", port), move |t, _| {
        t.response().set_body(body);
    })
}

fn get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_busy_port_is_addr_in_use() {
    let first = hello(Server::builder(), 0, "first").expect("serve");
    let port = first.local_addr().port();
    let second = hello(Server::builder(), port, "second");
    assert_eq!(
        second.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AddrInUse)
    );
    // The first server is untouched.
    assert!(get(first.local_addr()).ends_with("first"));
    // A port held by a listener of another program is refused the same way.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let err = hello(Server::builder(), port, "x").err().map(|e| e.kind());
    assert_eq!(err, Some(std::io::ErrorKind::AddrInUse));
    first.shutdown(Duration::from_secs(1));
}

#[test]
fn reuse_port_lets_servers_share_a_port() {
    let first = hello(Server::builder().reuse_port(true), 0, "first").expect("serve");
    let addr = first.local_addr();
    let second = hello(Server::builder().reuse_port(true), addr.port(), "second")
        .expect("a second server that opts in shares the port");
    // The kernel spreads new connections over both groups of listeners.
    let mut seen = (false, false);
    for _ in 0..200 {
        let reply = get(addr);
        seen.0 |= reply.ends_with("first");
        seen.1 |= reply.ends_with("second");
        if seen == (true, true) {
            break;
        }
    }
    assert_eq!(seen, (true, true), "both servers answer on the shared port");
    first.shutdown(Duration::from_secs(1));
    second.shutdown(Duration::from_secs(1));
}
