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
    /// Dry run, 8 in flight; deregistrations 80 burst then 5/s, EC2's own
    /// `DeregisterImage` rate, leaving a fifth of its bucket of 100 to other callers;
    /// launch-permission lookups 50 then 15/s, under the Describe bucket (100, refill
    /// 20/s) that every Describe call in the account shares.
    fn default() -> Self {
        Self {
            dry_run: true,
            concurrency: 8,
            deregister_burst: 80,
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

/// Plans, narrowed to the configured scope.
fn scoped_plan(policy: &Policy, inventory: &Inventory, now: Timestamp, cfg: &ExecConfig) -> Plan {
    let mut p = plan(policy, inventory, now);
    if let Some(target) = &cfg.scope_group_of {
        if !p.restrict_to_group_of(target) {
            p.warnings.push(format!(
                "{target} is not among the account's images here; nothing is in scope"
            ));
        }
    }
    p
}

/// What happened to one condemned image in the pipeline.
enum Step<'p> {
    /// Its launch permissions name other accounts: keep it.
    Shared(String, Vec<String>),
    /// Its launch permissions could not be read: keep it as if shared.
    Unknown(String, AwsError),
    /// Processed: deregistered, planned (dry run) or not, with the error if any.
    Done(&'p Decision, Outcome, Option<String>),
}

/// Everything the executor did in a region.
struct Executed {
    plan: Plan,
    outcomes: BTreeMap<String, (Outcome, Option<String>)>,
    jobs: Vec<JobReport>,
}

/// Works through the condemned images oldest first. Each one's launch permissions are
/// read (when the policy skips shared images) and, if it is shared with nobody, it is
/// deregistered at once, so lookups and deregistrations overlap under their own rate
/// limits. Cleanup jobs go to `sink` as soon as every image using their storage is
/// gone. An image found shared is kept; that can only free room under
/// `max_deregistrations`, so the plan is made again with the new knowledge and the
/// newly condemned images go through the same steps. Images already deregistered stay
/// condemned in every later plan (sharing only removes images from the candidates).
#[allow(clippy::too_many_arguments)]
async fn execute<I: ImageSource, D: Deregistrar, Q: CleanupSink>(
    policy: &Policy,
    region: &str,
    inventory: &mut Inventory,
    now: Timestamp,
    images: &I,
    deregistrar: &D,
    sink: &Q,
    cfg: &ExecConfig,
) -> Executed {
    let describe = &RateLimiter::new(cfg.describe_burst, cfg.describe_per_second);
    let deregister = &RateLimiter::new(cfg.deregister_burst, cfg.deregister_per_second);
    let check = policy.protection.skip_shared;
    let mut processed: BTreeSet<String> = BTreeSet::new();
    let mut outcomes = BTreeMap::new();
    let mut queue = JobQueue::new(sink);
    let done = &std::sync::atomic::AtomicUsize::new(0);
    loop {
        let p = scoped_plan(policy, inventory, now, cfg);
        let todo: Vec<&Decision> = p
            .condemned()
            .into_iter()
            .filter(|d| !processed.contains(&d.image_id))
            .collect();
        if todo.is_empty() {
            return Executed {
                plan: p,
                outcomes,
                jobs: queue.finish().await,
            };
        }
        let total = processed.len() + todo.len();
        processed.extend(todo.iter().map(|d| d.image_id.clone()));
        let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut steps = stream::iter(todo)
            .map(|d: &Decision| async move {
                if check {
                    describe.acquire().await;
                    match images.launch_permissions(&d.image_id).await {
                        Ok(g) if g.is_empty() => {}
                        Ok(g) => return Step::Shared(d.image_id.clone(), g),
                        Err(e) => return Step::Unknown(d.image_id.clone(), e),
                    }
                }
                if cfg.dry_run {
                    return Step::Done(d, Outcome::Planned, None);
                }
                deregister.acquire().await;
                if cfg.deadline.is_some_and(|dl| Instant::now() >= dl) {
                    let why = "the run's deadline was reached".to_string();
                    return Step::Done(d, Outcome::Deferred, Some(why));
                }
                let step = match deregistrar.deregister(&d.image_id).await {
                    Ok(()) => Step::Done(d, Outcome::Deregistered, None),
                    Err(e) => {
                        let o = classify_deregister_error(&e);
                        tracing::warn!(image_id = %d.image_id, error = %e, outcome = ?o, "deregister did not succeed");
                        Step::Done(d, o, Some(e.to_string()))
                    }
                };
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress::report(cfg.progress.as_ref(), || Progress::Deregistered {
                    region: region.to_string(),
                    done: n,
                    total,
                });
                step
            })
            .buffer_unordered(cfg.concurrency.max(1));
        while let Some(step) = steps.next().await {
            match step {
                Step::Shared(id, g) => {
                    grants.insert(id, g);
                }
                Step::Unknown(id, e) => {
                    inventory.warnings.push(format!(
                        "{id}: launch permissions unknown ({e}); kept as shared"
                    ));
                    let code = e.code.as_deref().unwrap_or("error");
                    grants.insert(id, vec![format!("unknown ({code})")]);
                }
                Step::Done(d, outcome, error) => {
                    outcomes.insert(d.image_id.clone(), (outcome, error));
                    if outcome == Outcome::Deregistered {
                        let jobs = ready_jobs(region, d, &outcomes, &mut queue.seen);
                        queue.push(jobs).await;
                    }
                }
            }
        }
        drop(steps);
        if grants.is_empty() {
            // Nothing new is known: this plan is final.
            return Executed {
                plan: p,
                outcomes,
                jobs: queue.finish().await,
            };
        }
        inventory.set_shared_with(grants);
    }
}

/// Hands jobs to the sink in batches of its size and keeps the report line of each.
struct JobQueue<'q, Q: CleanupSink> {
    sink: &'q Q,
    pending: Vec<CleanupJob>,
    seen: BTreeSet<String>,
    reports: Vec<JobReport>,
}

impl<'q, Q: CleanupSink> JobQueue<'q, Q> {
    fn new(sink: &'q Q) -> Self {
        Self {
            sink,
            pending: Vec::new(),
            seen: BTreeSet::new(),
            reports: Vec::new(),
        }
    }

    async fn push(&mut self, jobs: Vec<CleanupJob>) {
        self.pending.extend(jobs);
        if self.pending.len() >= self.sink.batch_size().max(1) {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.pending);
        let labels: Vec<(String, &'static str, String)> = jobs
            .iter()
            .map(|j| (j.image_id.clone(), kind_of(j), j.target_label()))
            .collect();
        let failed: BTreeMap<String, AwsError> = self
            .sink
            .enqueue(jobs)
            .await
            .into_iter()
            .map(|(j, e)| (j.target_label(), e))
            .collect();
        self.reports
            .extend(labels.into_iter().map(|(image_id, kind, target)| {
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
            }));
    }

    async fn finish(mut self) -> Vec<JobReport> {
        self.flush().await;
        self.reports
            .sort_by(|a, b| (&a.image_id, &a.target).cmp(&(&b.image_id, &b.target)));
        self.reports
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
    let Executed {
        plan: p,
        outcomes,
        jobs,
    } = execute(
        policy,
        region,
        &mut inventory,
        now,
        images,
        deregistrar,
        sink,
        cfg,
    )
    .await;
    report.warnings = p.warnings.clone();
    report.plan = Some(p.summary.clone());
    report.jobs = jobs;

    report.images = p
        .decisions
        .iter()
        .map(|d| {
            let (outcome, error) = match outcomes.get(&d.image_id) {
                Some((o, e)) if d.action == Action::Deregister => (Some(*o), e.clone()),
                _ if d.reasons[0] == Reason::OverLimit => (
                    Some(Outcome::Deferred),
                    Some("max_deregistrations reached; left for the next run".to_string()),
                ),
                _ => (None, None),
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

/// The cleanup jobs that `d`'s deregistration makes ready: each snapshot or bundle of
/// `d` the plan deletes, once every other image using it is deregistered too, and
/// never twice (`seen` holds what was already queued).
fn ready_jobs(
    region: &str,
    d: &Decision,
    outcomes: &BTreeMap<String, (Outcome, Option<String>)>,
    seen: &mut BTreeSet<String>,
) -> Vec<CleanupJob> {
    let gone = |id: &str| matches!(outcomes.get(id), Some((Outcome::Deregistered, _)));
    let job = |target| CleanupJob {
        version: JOB_VERSION,
        region: region.to_string(),
        image_id: d.image_id.clone(),
        target,
    };
    let mut jobs = Vec::new();
    for s in &d.snapshots {
        if s.action == CleanupAction::Delete
            && s.shared_with.iter().all(|o| gone(o))
            && seen.insert(s.snapshot_id.clone())
        {
            jobs.push(job(JobTarget::DeleteSnapshot {
                snapshot_id: s.snapshot_id.clone(),
            }));
        }
    }
    if let Some(b) = &d.bundle {
        if let (CleanupAction::Delete, Some(bucket), Some(key)) =
            (b.action, &b.bucket, &b.manifest_key)
        {
            if b.shared_with.iter().all(|o| gone(o)) && seen.insert(b.location.clone()) {
                jobs.push(job(JobTarget::DeleteBundle {
                    bucket: bucket.clone(),
                    manifest_key: key.clone(),
                }));
            }
        }
    }
    jobs
}
