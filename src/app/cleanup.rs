//! The cleanup worker: runs queued jobs. The same code serves the in-process queue of a
//! local sweep, `ami-sweeper cleanup --queue-url`, and the SQS-triggered Lambda.

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::stream::{Stream, StreamExt};
use tokio::sync::Semaphore;

use crate::app::progress::{Progress, ProgressSink};
use crate::app::ratelimit::{PaceConfig, Pacer};
use crate::app::report::{JobOutcome, JobReport};
use crate::app::stop::Stop;
use crate::error::AwsError;
use crate::jobs::{CleanupJob, JobTarget};
use crate::manifest::part_keys;
use crate::ports::{BundleStore, SnapshotDeleter};

/// S3's `DeleteObjects` takes at most this many keys per request.
const DELETE_OBJECTS_MAX: usize = 1000;

/// The result of one attempt at a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Finished: deleted or already gone, with the objects deleted (bundles).
    Done(JobOutcome, Vec<String>),
    /// Try again later (e.g. `InvalidSnapshot.InUse` right after deregistration).
    Retry(String),
    /// Will not succeed by retrying (e.g. a malformed manifest); nothing was deleted.
    Fail(String),
}

fn transient(e: &AwsError) -> bool {
    e.code.is_none()
        || e.is(crate::app::ratelimit::THROTTLED)
        || e.is(crate::app::ratelimit::STOPPED)
        || e.is("RequestLimitExceeded")
        || e.is("Throttling")
        || e.is("SlowDown")
        || e.is("InternalError")
        || e.is("ServiceUnavailable")
}

/// Runs one job once.
pub async fn run_job<S: SnapshotDeleter, B: BundleStore>(
    job: &CleanupJob,
    snapshots: &S,
    bundles: &B,
) -> Attempt {
    run_job_paced(job, snapshots, bundles, None).await
}

/// As [`run_job`], with `DeleteSnapshot` under its (account, Region)'s pacer when given:
/// throttled attempts are retried there until the run stops, and a call the stop ended
/// is a retry for later (the snapshot carries the sweep's mark).
pub async fn run_job_paced<S: SnapshotDeleter, B: BundleStore>(
    job: &CleanupJob,
    snapshots: &S,
    bundles: &B,
    pacer: Option<&Pacer>,
) -> Attempt {
    match &job.target {
        JobTarget::DeleteSnapshot { snapshot_id } => {
            let delete = || snapshots.delete_snapshot(snapshot_id);
            let deleted = match pacer {
                Some(p) => p.call("DeleteSnapshot", delete).await,
                None => delete().await,
            };
            match deleted {
                Ok(()) => Attempt::Done(JobOutcome::Deleted, Vec::new()),
                Err(e) if e.is("InvalidSnapshot.NotFound") => {
                    Attempt::Done(JobOutcome::AlreadyGone, Vec::new())
                }
                Err(e) if e.is("InvalidSnapshot.InUse") || transient(&e) => {
                    Attempt::Retry(e.to_string())
                }
                Err(e) => Attempt::Fail(e.to_string()),
            }
        }
        JobTarget::DeleteBundle {
            bucket,
            manifest_key,
        } => delete_bundle(bucket, manifest_key, bundles).await,
    }
}

async fn delete_bundle<B: BundleStore>(bucket: &str, manifest_key: &str, store: &B) -> Attempt {
    let xml = match store.get_object(bucket, manifest_key).await {
        Ok(x) => x,
        Err(e) if e.is("NoSuchKey") => return Attempt::Done(JobOutcome::AlreadyGone, Vec::new()),
        Err(e) if transient(&e) => return Attempt::Retry(e.to_string()),
        Err(e) => return Attempt::Fail(e.to_string()),
    };
    let parts = match part_keys(manifest_key, &xml) {
        Ok(p) => p,
        Err(m) => {
            return Attempt::Fail(format!(
                "s3://{bucket}/{manifest_key}: {m}; nothing was deleted"
            ))
        }
    };
    // Parts first, manifest last: if a run stops half-way, the manifest still says
    // what is left and the job can be run again.
    let mut deleted = Vec::new();
    for chunk in parts.chunks(DELETE_OBJECTS_MAX) {
        match store.delete_objects(bucket, chunk).await {
            Ok(failed) if failed.is_empty() => deleted.extend(chunk.iter().cloned()),
            Ok(failed) => {
                let (key, e) = &failed[0];
                return Attempt::Retry(format!(
                    "{} of {} parts not deleted (first: {key}: {e})",
                    failed.len(),
                    chunk.len()
                ));
            }
            Err(e) => return Attempt::Retry(e.to_string()),
        }
    }
    match store
        .delete_objects(bucket, &[manifest_key.to_string()])
        .await
    {
        Ok(failed) if failed.is_empty() => {
            deleted.push(manifest_key.to_string());
            Attempt::Done(JobOutcome::Deleted, deleted)
        }
        Ok(failed) => Attempt::Retry(format!("manifest not deleted: {}", failed[0].1)),
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

/// How the in-process queue retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per job, the first included.
    pub attempts: u32,
    /// Wait before each retry of a job.
    pub delay: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// How hard the `DeleteSnapshot` pacer draws on EC2's bucket (explicit `--rate`; the
    /// policy's `limits.api_share` is applied when the sweep starts).
    pub pace: PaceConfig,
}

impl Default for RetryPolicy {
    /// Five attempts 15 s apart: `InvalidSnapshot.InUse` after a deregistration clears
    /// within seconds. Deletions at their share of EC2's `DeleteSnapshot` bucket: 80
    /// burst then 5/s.
    fn default() -> Self {
        Self {
            attempts: 5,
            delay: Duration::from_secs(15),
            concurrency: 8,
            pace: PaceConfig::default(),
        }
    }
}

/// Runs jobs in process as they arrive, retrying what asks for it, and reports each
/// one. A job waiting to be retried holds no call slot: `retry.concurrency` bounds the
/// calls in flight, and `pacer` (the (account, Region)'s `DeleteSnapshot` bucket) paces
/// the snapshot deletions. When `stop` fires, no
/// job waits for another retry: it is reported `retrying`, and since its snapshot
/// carries the sweep's mark, the next sweep reconciles it.
pub async fn run_local<S: SnapshotDeleter, B: BundleStore>(
    jobs: impl Stream<Item = CleanupJob> + Send,
    snapshots: &S,
    bundles: &B,
    retry: &RetryPolicy,
    pacer: &Pacer,
    progress: Option<&ProgressSink>,
    stop: &Stop,
) -> Vec<JobReport> {
    let slots = &Semaphore::new(retry.concurrency.max(1));
    let queued = &AtomicUsize::new(0);
    let finished = &AtomicUsize::new(0);
    let mut done: Vec<JobReport> = jobs
        .inspect(|_| {
            queued.fetch_add(1, Ordering::Relaxed);
        })
        .map(|job| async move {
            let mut attempts = 0;
            let report = loop {
                attempts += 1;
                let attempt = {
                    let _slot = slots.acquire().await.expect("semaphore is never closed");
                    run_job_paced(&job, snapshots, bundles, Some(pacer)).await
                };
                match attempt {
                    Attempt::Done(o, d) => break report_of(&job, o, attempts, d, None),
                    Attempt::Retry(e) if stop.reason().is_some() => {
                        let e = format!("{e}; stopped before the next attempt");
                        break report_of(&job, JobOutcome::Retrying, attempts, Vec::new(), Some(e));
                    }
                    Attempt::Retry(e) if attempts < retry.attempts => {
                        tokio::select! {
                            _ = tokio::time::sleep(retry.delay) => {}
                            _ = stop.wait() => {
                                let e = format!("{e}; stopped before the next attempt");
                                break report_of(&job, JobOutcome::Retrying, attempts, Vec::new(), Some(e));
                            }
                        }
                    }
                    Attempt::Retry(e) | Attempt::Fail(e) => {
                        break report_of(&job, JobOutcome::Failed, attempts, Vec::new(), Some(e))
                    }
                }
            };
            let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
            crate::app::progress::report(progress, || Progress::JobsDone {
                region: job.region.clone(),
                done: n,
                queued: queued.load(Ordering::Relaxed),
            });
            report
        })
        .buffer_unordered(usize::MAX)
        .collect()
        .await;
    done.sort_by(|a, b| (&a.image_id, &a.target).cmp(&(&b.image_id, &b.target)));
    done
}

/// A report line for a job.
pub fn report_of(
    job: &CleanupJob,
    outcome: JobOutcome,
    attempts: u32,
    deleted_objects: Vec<String>,
    error: Option<String>,
) -> JobReport {
    JobReport {
        image_id: job.image_id.clone(),
        kind: job.target.kind(),
        target: job.target_label(),
        outcome,
        attempts,
        deleted_objects,
        error,
    }
}
