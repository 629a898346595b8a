// A stand-in for redis-server, for the doc examples that would otherwise
// need one: not a module of the crate (see the note in `redis/mod.rs`).
use std::io::{Read, Write};
use std::net::TcpListener;

/// Listens on a free port for one connection, reads the `request` it
/// expects and writes `answer` (an error reply if the request differs).
/// Returns the `redis://` URL that reaches it.
pub fn stand_in(request: Vec<u8>, answer: &'static [u8]) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("redis://{}", listener.local_addr()?);
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        let mut got = vec![0; request.len()];
        conn.read_exact(&mut got)?;
        if got == request {
            conn.write_all(answer)
        } else {
            conn.write_all(b"-ERR not the request the stand-in expected\r\n")
        }
    });
    Ok(url)
}
