//! `flow.rs` again, with `process` and callbacks running inline on the poller
//! threads (`handler_threads: 0`): a producer that sends from `process` then
//! holds the poller that releases its pieces, and writable and close
//! callbacks run on the poller.

#[path = "flow.rs"]
mod flow_cases;
