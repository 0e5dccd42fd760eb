//! Stopping cleanly: one handle that says whether a run must stop starting new work, and
//! why. The CLI requests a stop on SIGTERM or Ctrl-C; Lambda gives a deadline instead
//! (it sends no signal before it kills the process). The executor checks the handle
//! before every deregistration, and the in-process worker stops waiting to retry.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// The Lambda invocation's deadline (less a margin) was reached.
    Deadline,
}

#[derive(Debug, Default)]
struct Shared {
    /// 0: running; 1: signal.
    state: AtomicU8,
    notify: Notify,
}

/// A cloneable stop handle; the default never stops.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    shared: Arc<Shared>,
    deadline: Option<Instant>,
}

impl Stop {
    /// A handle that also stops at `deadline`.
    pub fn with_deadline(deadline: Option<Instant>) -> Self {
        Self {
            shared: Arc::default(),
            deadline,
        }
    }

    /// Asks every holder of the handle to stop (a signal arrived).
    pub fn request(&self) {
        self.shared.state.store(1, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
    }

    /// Why the run must stop now, if it must.
    pub fn reason(&self) -> Option<StopReason> {
        if self.shared.state.load(Ordering::SeqCst) == 1 {
            Some(StopReason::Signal)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(StopReason::Deadline)
        } else {
            None
        }
    }

    /// The same stop, also reached at `deadline` if that comes first (a signal still
    /// stops both).
    pub fn sooner(&self, deadline: Instant) -> Self {
        Self {
            shared: self.shared.clone(),
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
        }
    }

    /// Resolves once a stop is requested or the deadline passes.
    pub async fn wait(&self) {
        loop {
            let notified = self.shared.notify.notified();
            if self.reason().is_some() {
                return;
            }
            match self.deadline {
                Some(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(d) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_wakes_waiters_and_a_deadline_passes() {
        let stop = Stop::default();
        assert_eq!(stop.reason(), None);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        tokio::task::yield_now().await;
        stop.request();
        waiter.await.unwrap();
        assert_eq!(stop.reason(), Some(StopReason::Signal));

        let soon = Stop::with_deadline(Some(Instant::now() + Duration::from_millis(20)));
        assert_eq!(soon.reason(), None);
        soon.wait().await;
        assert_eq!(soon.reason(), Some(StopReason::Deadline));
    }
}
