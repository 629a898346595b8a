//! `http.rs` again, with `process` running inline on the poller thread
//! (`handler_threads: 0`): the mode in which a finished task is reused for
//! the connection's next request, so every case there also runs on reused
//! requests and responses.

#[path = "http.rs"]
mod http_cases;
