//! The queue worker: runs the cleanup jobs of one batch of queue messages, after checking
//! each against AWS's own records ([`crate::verify`]). Shared by the SQS-triggered Lambda
//! and `ami-sweeper cleanup --queue-url`. (Jobs a sweep runs in process are not
//! re-verified: they never leave the process that planned them.)

use std::collections::{BTreeMap, BTreeSet};

use crate::app::cleanup::{run_job, Attempt};
use crate::app::report::JobOutcome;
use crate::jobs::{CleanupJob, JobTarget};
use crate::model::ImageState;
use crate::ports::Cleaner;
use crate::verify::{Verdict, WorkerRules};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Not a cleanup job.
    Malformed(String),
    /// Failed verification: nothing was deleted.
    Rejected(CleanupJob, String),
    /// Verified (or the storage is gone) and run once.
    Ran(CleanupJob, Attempt),
}

impl Handled {
    /// The report outcome and error of a handled job (`None` for malformed messages).
    pub fn outcome(&self) -> Option<(JobOutcome, Option<String>)> {
        match self {
            Self::Malformed(_) => None,
            Self::Rejected(_, why) => Some((JobOutcome::Rejected, Some(why.clone()))),
            Self::Ran(_, Attempt::Done(o, _)) => Some((*o, None)),
            Self::Ran(_, Attempt::Retry(e)) => Some((JobOutcome::Retrying, Some(e.clone()))),
            Self::Ran(_, Attempt::Fail(e)) => Some((JobOutcome::Failed, Some(e.clone()))),
        }
    }
}

/// Verifies and runs a batch of message bodies; the answers come in the same order.
/// Per region of the batch: one `DescribeSnapshots` for its snapshot jobs, one
/// `DescribeImages` for their images, and the owned images' locations when it has
/// bundle jobs. If those facts cannot be read, every job of that region is retried
/// later and nothing is deleted.
pub async fn handle_batch<C: Cleaner, F>(
    clients: impl Fn(Option<String>, String) -> F,
    rules: &WorkerRules,
    bodies: &[&str],
    now: crate::model::Timestamp,
) -> Vec<Handled>
where
    F: std::future::Future<Output = Result<C, String>>,
{
    let mut out: Vec<Option<Handled>> = vec![None; bodies.len()];
    type Place = (Option<String>, String);
    let mut by_region: BTreeMap<Place, Vec<(usize, CleanupJob)>> = BTreeMap::new();
    for (i, body) in bodies.iter().enumerate() {
        match CleanupJob::from_json(body) {
            Err(e) => out[i] = Some(Handled::Malformed(e.to_string())),
            Ok(job) => match rules.check_place(&job) {
                // Checked before any client exists: a made-up region costs nothing.
                Err(why) => {
                    out[i] = Some(Handled::Rejected(
                        job,
                        format!("{why}; nothing was deleted"),
                    ))
                }
                Ok(()) => by_region
                    .entry((job.account.clone(), job.region.clone()))
                    .or_default()
                    .push((i, job)),
            },
        }
    }
    for ((account, name), jobs) in by_region {
        match clients(account, name).await {
            Ok(c) => {
                for (i, handled) in handle_region(&c, rules, jobs, now).await {
                    out[i] = Some(handled);
                }
            }
            // The account cannot be entered now: every job of it is retried later.
            Err(why) => {
                for (i, job) in jobs {
                    let why = format!("cannot enter the job's account, nothing was deleted: {why}");
                    out[i] = Some(Handled::Ran(job, Attempt::Retry(why)));
                }
            }
        }
    }
    out.into_iter()
        .map(|h| h.expect("every message is handled"))
        .collect()
}

/// What AWS says about a batch's targets: the snapshots that exist, the images still
/// registered, and (for bundle jobs) the locations of every registered image.
struct Facts {
    snapshots: Vec<crate::model::Snapshot>,
    registered: rustc_hash::FxHashSet<String>,
    locations: BTreeSet<String>,
}

/// One `DescribeSnapshots` for the snapshot jobs, one `DescribeImages` for their images,
/// and the owned images' locations only when there are bundle jobs.
async fn facts<C: Cleaner>(
    c: &C,
    jobs: &[(usize, CleanupJob)],
) -> Result<Facts, crate::error::AwsError> {
    let snapshot_ids: Vec<String> = unique(jobs.iter().filter_map(|(_, j)| match &j.target {
        JobTarget::DeleteSnapshot { snapshot_id } => Some(snapshot_id.clone()),
        JobTarget::DeleteBundle { .. } => None,
    }));
    // Only snapshot jobs ask whether their image is registered; bundle jobs check the
    // manifest against every registered image's location instead.
    let image_ids: Vec<String> = unique(jobs.iter().filter_map(|(_, j)| match j.target {
        JobTarget::DeleteSnapshot { .. } => Some(j.image_id.clone()),
        JobTarget::DeleteBundle { .. } => None,
    }));
    let any_bundle = jobs
        .iter()
        .any(|(_, j)| matches!(j.target, JobTarget::DeleteBundle { .. }));
    let snapshots = if snapshot_ids.is_empty() {
        Vec::new()
    } else {
        c.owned_snapshots(&snapshot_ids).await?
    };
    let registered = if image_ids.is_empty() {
        Default::default()
    } else {
        c.registered_images(&image_ids).await?
    };
    let locations: BTreeSet<String> = if any_bundle {
        c.list_images()
            .await?
            .into_iter()
            .filter(|i| i.state != ImageState::Deregistered)
            .filter_map(|i| i.image_location)
            .collect()
    } else {
        BTreeSet::new()
    };
    Ok(Facts {
        snapshots,
        registered,
        locations,
    })
}

async fn handle_region<C: Cleaner>(
    c: &C,
    rules: &WorkerRules,
    jobs: Vec<(usize, CleanupJob)>,
    now: crate::model::Timestamp,
) -> Vec<(usize, Handled)> {
    let Facts {
        snapshots,
        registered,
        locations,
    } = match facts(c, &jobs).await {
        Ok(f) => f,
        Err(e) => {
            let why = format!("cannot verify the jobs, nothing was deleted: {e}");
            return jobs
                .into_iter()
                .map(|(i, j)| (i, Handled::Ran(j, Attempt::Retry(why.clone()))))
                .collect();
        }
    };
    let by_id: BTreeMap<&str, &crate::model::Snapshot> =
        snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut out = Vec::with_capacity(jobs.len());
    for (i, job) in jobs {
        let verdict = match &job.target {
            JobTarget::DeleteSnapshot { snapshot_id } => rules.snapshot_job(
                snapshot_id,
                &job.image_id,
                by_id.get(snapshot_id.as_str()).copied(),
                registered.contains(&job.image_id),
                now,
            ),
            JobTarget::DeleteBundle {
                bucket,
                manifest_key,
            } => rules.bundle_job(bucket, manifest_key, &locations),
        };
        let handled = match verdict {
            Verdict::Reject(why) => {
                tracing::warn!(target = %job.target_label(), reason = %why, "job rejected");
                Handled::Rejected(job, why)
            }
            Verdict::Gone => Handled::Ran(job, Attempt::Done(JobOutcome::AlreadyGone, Vec::new())),
            Verdict::Proceed => {
                let attempt = run_job(&job, c, c).await;
                Handled::Ran(job, attempt)
            }
        };
        out.push((i, handled));
    }
    out
}

fn unique(ids: impl Iterator<Item = String>) -> Vec<String> {
    ids.collect::<BTreeSet<_>>().into_iter().collect()
}
