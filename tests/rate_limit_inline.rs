//! `rate_limit.rs` again, with `process` running inline on the poller thread
//! (`handler_threads: 0`): a refused request's task is then kept and reused
//! for the next request, so every case there also runs on reused tasks.

#[path = "rate_limit.rs"]
mod rate_limit_cases;
