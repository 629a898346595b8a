//! `request_log_queued.rs` again, with the handlers inline on the poller
//! thread (`handler_threads: 0`).

#[path = "request_log_queued.rs"]
mod request_log_queued_cases;
