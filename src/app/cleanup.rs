//! Running one cleanup job once: the deletion calls, and what an AWS error means for the
//! job. Every path runs jobs through [`crate::app::worker::verify_and_run`], which verifies
//! each first (the in-process queue of a local sweep, `ami-sweeper cleanup --queue-url`,
//! and the SQS-triggered Lambda alike); the retry policy of the in-process queue is here.

use std::time::Duration;

use crate::app::ratelimit::{PaceConfig, Pacer};
use crate::app::report::{JobOutcome, JobReport};
use crate::app::stop::Stop;
use crate::error::AwsError;
use crate::jobs::{CleanupJob, JobTarget};
use crate::manifest::part_keys;
use crate::ports::{BundleStore, SnapshotDeleter};

/// S3's `DeleteObjects` takes at most this many keys per request.
const DELETE_OBJECTS_MAX: usize = 1000;

/// How long after its facts began to be read a job may still start a deletion: a deletion
/// throttled or held up past this goes back to the queue and is verified afresh, so nothing
/// is deleted on facts that a launch template or a new image could have changed meanwhile.
/// For every kind of storage: no `DeleteSnapshot` and no `DeleteObjects` starts later.
pub const FACTS_FRESH_FOR: Duration = Duration::from_secs(30);

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

/// Runs one job once, verified already: `DeleteSnapshot` under `pacer`, the (account,
/// Region)'s, whose stop is `fresh` (throttled attempts are retried there until then, and
/// a call the stop ended is a retry for later); a bundle's `DeleteObjects` calls only
/// until `fresh`, the run's stop or the end of its facts' freshness, whichever is first.
/// Crate-private: a job runs only through [`crate::app::worker::verify_and_run`].
pub(crate) async fn run_job_paced<S: SnapshotDeleter, B: BundleStore>(
    job: &CleanupJob,
    snapshots: &S,
    bundles: &B,
    pacer: &Pacer,
    fresh: &Stop,
) -> Attempt {
    match &job.target {
        JobTarget::DeleteSnapshot { snapshot_id } => {
            let delete = || snapshots.delete_snapshot(snapshot_id);
            let deleted = pacer.call_until("DeleteSnapshot", fresh, delete).await;
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
        } => delete_bundle(bucket, manifest_key, bundles, fresh).await,
    }
}

/// The manifest's parts, then the manifest, each `DeleteObjects` started only while
/// `fresh` has not fired; what is left then goes back to be verified again.
async fn delete_bundle<B: BundleStore>(
    bucket: &str,
    manifest_key: &str,
    store: &B,
    fresh: &Stop,
) -> Attempt {
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
    let total = parts.len() + 1;
    let stale = |deleted: &[String]| {
        Attempt::Retry(format!(
            "s3://{bucket}/{manifest_key}: {} of {total} objects deleted, then no DeleteObjects \
             was started: the run stopped, or its facts were read more than {} s ago; the \
             rest (manifest last) is verified again",
            deleted.len(),
            FACTS_FRESH_FOR.as_secs()
        ))
    };
    let mut deleted = Vec::new();
    for chunk in parts.chunks(DELETE_OBJECTS_MAX) {
        if fresh.reason().is_some() {
            return stale(&deleted);
        }
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
    if fresh.reason().is_some() {
        return stale(&deleted);
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
    /// Batches of jobs being verified and run at once (a batch waiting to retry holds no
    /// slot).
    pub concurrency: usize,
    /// How hard the worker's pacers (`DeleteSnapshot`, and Describe for its facts) draw on EC2's bucket (explicit `--rate`; the
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
