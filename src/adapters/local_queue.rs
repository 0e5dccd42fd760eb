//! The in-process cleanup queue: an adapter of the `CleanupSink` port for a sweep without
//! `--queue-url`, so the local worker deletes storage while the sweep still deregisters.

use futures_util::stream::{self, Stream};
use tokio::sync::mpsc;

use crate::error::AwsError;
use crate::jobs::CleanupJob;
use crate::ports::CleanupSink;

/// The in-process queue of a sweep without `--queue-url`: a channel to the worker,
/// which deletes storage while the sweep is still deregistering, with the same retry
/// rules as the SQS worker. The stream of jobs ends when the queue is dropped.
#[derive(Debug)]
pub struct LocalQueue(mpsc::UnboundedSender<CleanupJob>);

impl LocalQueue {
    /// A queue and the stream of the jobs it is given.
    pub fn channel() -> (Self, impl Stream<Item = CleanupJob> + Send) {
        let (tx, rx) = mpsc::unbounded_channel();
        let jobs = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) });
        (Self(tx), jobs)
    }
}

impl CleanupSink for LocalQueue {
    async fn enqueue(&self, jobs: Vec<CleanupJob>) -> Vec<(CleanupJob, AwsError)> {
        let mut failed = Vec::new();
        for job in jobs {
            if let Err(mpsc::error::SendError(job)) = self.0.send(job) {
                let message = "the local cleanup worker has stopped".to_string();
                failed.push((
                    job,
                    AwsError {
                        operation: "Enqueue",
                        code: None,
                        message,
                    },
                ));
            }
        }
        failed
    }
}
