//! Adapter bookkeeping: how many AWS calls a run made, per operation, and how many
//! attempts AWS throttled. Every client of a run records into one of these.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counts AWS API calls per operation, and throttled attempts; shared by every
/// adapter of a run.
#[derive(Debug, Default)]
pub struct ApiCalls(
    Mutex<BTreeMap<&'static str, u64>>,
    std::sync::atomic::AtomicU64,
);

impl ApiCalls {
    /// Records one attempt that AWS throttled (and the SDK retried).
    pub fn record_throttle(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Throttled attempts so far.
    pub fn throttles(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records one call.
    pub fn record(&self, operation: &'static str) {
        *self
            .0
            .lock()
            .expect("counter lock")
            .entry(operation)
            .or_default() += 1;
    }

    /// The calls made since an earlier snapshot (a run's own calls, when clients
    /// and their counter outlive the run).
    pub fn since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.snapshot()
            .into_iter()
            .map(|(k, v)| {
                let earlier = before.get(&k).copied().unwrap_or(0);
                (k, v - earlier)
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .expect("counter lock")
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }
}
