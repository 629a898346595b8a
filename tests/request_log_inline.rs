//! `request_log.rs` again, with `process` running inline on the poller
//! thread (`handler_threads: 0`), where an answer records its exchange under
//! the lock the reply takes anyway.

#[path = "request_log.rs"]
mod request_log_cases;
