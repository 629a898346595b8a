//! `review_request_log.rs` again, with the handlers inline on the poller
//! thread (`handler_threads: 0`).

#[path = "review_request_log.rs"]
mod review_request_log_cases;
