//! The application layer: drives the ports with bounded concurrency and token buckets,
//! and turns what happened into a report. No SDK types; adapters are passed in.

pub mod cleanup;
pub mod continuation;
pub mod in_process;
pub mod notify;
pub mod org;
pub mod progress;
pub mod ratelimit;
pub mod references;
pub mod report;
pub mod run;
pub mod stop;
pub mod sweep;
pub mod worker;
pub mod written;
