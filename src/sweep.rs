//! The executor: inventory → plan → deregistrations → cleanup jobs, for one region.
//!
//! Every image gets an outcome and one failure never stops the others. The sweep
//! respects a client-side rate limit and a deadline, and only queues the cleanup of
//! storage whose images are all gone.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use crate::error::AwsError;
use crate::jobs::{CleanupJob, JobTarget, JOB_VERSION};
use crate::model::{Inventory, Timestamp};
use crate::planner::{plan, Action, CleanupAction, Decision, Plan, Reason};
use crate::policy::Policy;
use crate::ports::{CleanupSink, Deregistrar, ImageSource, UsageSource};
use crate::progress::{self, Progress, ProgressSink};
use crate::ratelimit::RateLimiter;
use crate::report::{ImageReport, JobOutcome, JobReport, Outcome, RegionReport};

/// How a sweep executes.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Plan and report only.
    pub dry_run: bool,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// `DeregisterImage` bucket: burst.
    pub deregister_burst: u32,
    /// `DeregisterImage` bucket: refill per second.
    pub deregister_per_second: f64,
    /// Launch-permission lookups (`DescribeImageAttribute`, in EC2's shared Describe
    /// bucket of 100, refill 20/s): burst.
    pub describe_burst: u32,
    /// Launch-permission lookups: refill per second.
    pub describe_per_second: f64,
    /// Stop starting new deregistrations after this instant (Lambda's deadline less a margin).
    pub deadline: Option<Instant>,
    /// Act only on the group (lineage) of this image (AMI state change events).
    pub scope_group_of: Option<String>,
    /// Where progress goes (the CLI on a terminal); `None` reports nothing.
    pub progress: Option<ProgressSink>,
}

impl Default for ExecConfig {
    /// Dry run, 8 in flight; deregistrations 20 burst then 5/s, under EC2's
    /// `DeregisterImage` bucket (100, refill 5/s); launch-permission lookups 50 then 15/s,
    /// under the Describe bucket (100, refill 20/s), even when other callers share them.
    fn default() -> Self {
        Self {
            dry_run: true,
            concurrency: 8,
            deregister_burst: 20,
            deregister_per_second: 5.0,
            describe_burst: 50,
            describe_per_second: 15.0,
            deadline: None,
            scope_group_of: None,
            progress: None,
        }
    }
}

/// What the EC2 error on `DeregisterImage` means for the image.
pub fn classify_deregister_error(err: &AwsError) -> Outcome {
    let msg = err.message.to_ascii_lowercase();
    if err.is("InvalidAMIID.NotFound") || err.is("InvalidAMIID.Unavailable") {
        Outcome::AlreadyGone
    } else if err.is("AuthFailure") && msg.contains("backup") {
        Outcome::SkippedBackupManaged
    } else if msg.contains("deregistration protection") {
        Outcome::SkippedProtected
    } else {
        Outcome::Failed
    }
}

/// Plans (narrowed to the configured scope), then fills in launch permissions for the
/// images the plan would deregister, re-planning until every condemned image's sharing
/// is known. A failed lookup keeps the image
/// (as shared) and says why in the warnings.
async fn check_sharing<I: ImageSource>(
    policy: &Policy,
    inventory: &mut Inventory,
    images: &I,
    now: Timestamp,
    cfg: &ExecConfig,
) -> Plan {
    let concurrency = cfg.concurrency;
    let limiter = &RateLimiter::new(cfg.describe_burst, cfg.describe_per_second);
    let mut checked: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut p = plan(policy, inventory, now);
        if let Some(target) = &cfg.scope_group_of {
            if !p.restrict_to_group_of(target) {
                p.warnings.push(format!(
                    "{target} is not among the account's images here; nothing is in scope"
                ));
            }
        }
        if !policy.protection.skip_shared {
            return p;
        }
        let todo: Vec<String> = p
            .decisions
            .iter()
            .filter(|d| d.action == Action::Deregister && !checked.contains(&d.image_id))
            .map(|d| d.image_id.clone())
            .collect();
        if todo.is_empty() {
            return p;
        }
        let results: Vec<(String, Result<Vec<String>, AwsError>)> = stream::iter(todo)
            .map(|id| async move {
                limiter.acquire().await;
                let r = images.launch_permissions(&id).await;
                (id, r)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, r) in results {
            let shared = match r {
                Ok(g) => g,
                Err(e) => {
                    inventory.warnings.push(format!(
                        "{id}: launch permissions unknown ({e}); kept as shared"
                    ));
                    vec![format!(
                        "unknown ({})",
                        e.code.as_deref().unwrap_or("error")
                    )]
                }
            };
            checked.insert(id.clone());
            grants.insert(id, shared);
        }
        inventory.set_shared_with(grants);
    }
}

/// Sweeps one region: the whole path from inventory to queued cleanup jobs.
#[allow(clippy::too_many_arguments)]
pub async fn sweep_region<I, U, D, Q>(
    policy: &Policy,
    region: &str,
    now: Timestamp,
    images: &I,
    usage: &U,
    deregistrar: &D,
    sink: &Q,
    cfg: &ExecConfig,
) -> RegionReport
where
    I: ImageSource,
    U: UsageSource,
    D: Deregistrar,
    Q: CleanupSink,
{
    let mut report = RegionReport {
        region: region.to_string(),
        error: None,
        plan: None,
        images: Vec::new(),
        jobs: Vec::new(),
        warnings: Vec::new(),
        snapshot_gib_deleted: 0,
        plan_detail: None,
    };
    let (listed, used) = tokio::join!(images.list_images(), usage.list_usage());
    let (listed, (used, warnings)) = match (listed, used) {
        (Ok(l), Ok(u)) => (l, u),
        (Err(e), _) | (_, Err(e)) => {
            report.error = Some(format!("inventory failed, nothing was changed: {e}"));
            return report;
        }
    };
    let found = listed.len();
    progress::report(cfg.progress.as_ref(), || Progress::Listed {
        region: region.to_string(),
        images: found,
    });
    let mut inventory = match Inventory::new(listed, used) {
        Ok(i) => i,
        Err(e) => {
            report.error = Some(format!(
                "inventory is inconsistent, nothing was changed: {e}"
            ));
            return report;
        }
    };
    inventory.warnings = warnings;
    let p = check_sharing(policy, &mut inventory, images, now, cfg).await;
    report.warnings = p.warnings.clone();
    report.plan = Some(p.summary.clone());

    let outcomes: BTreeMap<String, (Outcome, Option<String>)> = if cfg.dry_run {
        p.condemned()
            .iter()
            .map(|d| (d.image_id.clone(), (Outcome::Planned, None)))
            .collect()
    } else {
        deregister_all(&p, region, deregistrar, cfg).await
    };

    report.images = p
        .decisions
        .iter()
        .map(|d| {
            let (outcome, error) = match outcomes.get(&d.image_id) {
                Some((o, e)) => (Some(*o), e.clone()),
                None if d.reasons[0] == Reason::OverLimit => (
                    Some(Outcome::Deferred),
                    Some("max_deregistrations reached; left for the next run".to_string()),
                ),
                None => (None, None),
            };
            ImageReport {
                image_id: d.image_id.clone(),
                name: d.name.clone(),
                group: d.group.clone(),
                action: d.action,
                reasons: d.reasons.clone(),
                outcome,
                error,
            }
        })
        .collect();

    if !cfg.dry_run {
        let jobs = cleanup_jobs(region, &p, &outcomes);
        let labels: Vec<(String, &'static str, String)> = jobs
            .iter()
            .map(|j| (j.image_id.clone(), kind_of(j), j.target_label()))
            .collect();
        let failed: BTreeMap<String, AwsError> = sink
            .enqueue(jobs)
            .await
            .into_iter()
            .map(|(j, e)| (j.target_label(), e))
            .collect();
        report.jobs = labels
            .into_iter()
            .map(|(image_id, kind, target)| {
                let error = failed.get(&target).map(|e| e.to_string());
                JobReport {
                    image_id,
                    kind,
                    outcome: if error.is_some() {
                        JobOutcome::Failed
                    } else {
                        JobOutcome::Queued
                    },
                    target,
                    attempts: 0,
                    deleted_objects: Vec::new(),
                    error,
                }
            })
            .collect();
    }
    report.plan_detail = Some(p);
    report
}

/// The job kind's name as the report shows it.
pub fn kind_of(job: &CleanupJob) -> &'static str {
    match job.target {
        JobTarget::DeleteSnapshot { .. } => "delete_snapshot",
        JobTarget::DeleteBundle { .. } => "delete_bundle",
    }
}

async fn deregister_all<D: Deregistrar>(
    p: &Plan,
    region: &str,
    deregistrar: &D,
    cfg: &ExecConfig,
) -> BTreeMap<String, (Outcome, Option<String>)> {
    let limiter = RateLimiter::new(cfg.deregister_burst, cfg.deregister_per_second);
    let limiter = &limiter;
    let condemned = p.condemned();
    let total = condemned.len();
    let done = &std::sync::atomic::AtomicUsize::new(0);
    stream::iter(condemned)
        .map(|d: &Decision| async move {
            limiter.acquire().await;
            if cfg.deadline.is_some_and(|dl| Instant::now() >= dl) {
                return (
                    d.image_id.clone(),
                    (
                        Outcome::Deferred,
                        Some("the run's deadline was reached".to_string()),
                    ),
                );
            }
            let result = match deregistrar.deregister(&d.image_id).await {
                Ok(()) => (Outcome::Deregistered, None),
                Err(e) => {
                    let o = classify_deregister_error(&e);
                    tracing::warn!(image_id = %d.image_id, error = %e, outcome = ?o, "deregister did not succeed");
                    (o, Some(e.to_string()))
                }
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress::report(cfg.progress.as_ref(), || Progress::Deregistered {
                region: region.to_string(),
                done: n,
                total,
            });
            (d.image_id.clone(), result)
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await
}

/// Cleanup jobs for what was actually deregistered: a snapshot or bundle is queued
/// once, and only when every deregistered image that shared it is gone too.
pub fn cleanup_jobs(
    region: &str,
    p: &Plan,
    outcomes: &BTreeMap<String, (Outcome, Option<String>)>,
) -> Vec<CleanupJob> {
    let gone = |id: &str| matches!(outcomes.get(id), Some((Outcome::Deregistered, _)));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut jobs = Vec::new();
    for d in p.condemned() {
        if !gone(&d.image_id) {
            continue;
        }
        for s in &d.snapshots {
            if s.action == CleanupAction::Delete
                && s.shared_with.iter().all(|o| gone(o))
                && seen.insert(s.snapshot_id.clone())
            {
                jobs.push(CleanupJob {
                    version: JOB_VERSION,
                    region: region.to_string(),
                    image_id: d.image_id.clone(),
                    target: JobTarget::DeleteSnapshot {
                        snapshot_id: s.snapshot_id.clone(),
                    },
                });
            }
        }
        if let Some(b) = &d.bundle {
            if let (CleanupAction::Delete, Some(bucket), Some(key)) =
                (b.action, &b.bucket, &b.manifest_key)
            {
                if b.shared_with.iter().all(|o| gone(o)) && seen.insert(b.location.clone()) {
                    jobs.push(CleanupJob {
                        version: JOB_VERSION,
                        region: region.to_string(),
                        image_id: d.image_id.clone(),
                        target: JobTarget::DeleteBundle {
                            bucket: bucket.clone(),
                            manifest_key: key.clone(),
                        },
                    });
                }
            }
        }
    }
    jobs
}
