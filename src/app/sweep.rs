//! The executor: inventory → reconciliation → plan → deregistrations → cleanup jobs,
//! for one region.
//!
//! Every image gets an outcome and one failure never stops the others. The sweep
//! respects client-side rate limits and a stop handle (signal or deadline), and only
//! queues the cleanup of storage whose images are all gone. Before deregistering an
//! image it marks the snapshots it will delete ([`crate::orphans::STORAGE_MARK`]), so
//! that storage is never lost: whatever stops the run, the next sweep reconciles it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use rustc_hash::FxHashMap;

use crate::app::progress::{self, Progress, ProgressSink};
use crate::app::ratelimit::{self, PaceConfig, Pacer, PacerReport};
use crate::app::references::{CheckReport, References};
use crate::app::report::{ImageReport, JobOutcome, JobReport, OrphanCounts, Outcome, RegionReport};
use crate::app::stop::{Stop, StopReason};
use crate::error::AwsError;
use crate::inventory::Inventory;
use crate::jobs::{CleanupJob, JobTarget};
use crate::model::Timestamp;
use crate::orphans::{reconcile, Reconciliation};
use crate::planner::{plan, Action, CleanupAction, Decision, Plan, Reason, RetainReason};
use crate::policy::Policy;
use crate::policy::RecycleBinMode;
use crate::ports::{Account, CleanupSink};
use crate::retire::RetireStep;

/// How a sweep executes.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Plan and report only.
    pub dry_run: bool,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// How hard the pacers draw on EC2's buckets (explicit rates; the policy's
    /// `limits.api_share` is applied when the sweep starts).
    pub pace: PaceConfig,
    /// Stop starting new deregistrations when this says so (signal or deadline).
    pub stop: Stop,
    /// What bounds the run beyond the policy (a trigger's scope and stages); `None`: the
    /// policy's full scope and every stage (the CLI, the nightly sweep).
    pub mandate: Option<Arc<crate::mandate::Mandate>>,
    /// The deployment's bundle buckets: bundles elsewhere are retained, and these are
    /// scanned for bundles whose image is gone. Empty: bundle cleanup is off.
    pub bundle_buckets: BTreeSet<String>,
    /// Where progress goes (the CLI on a terminal); `None` reports nothing.
    pub progress: Option<ProgressSink>,
    /// With `protection.shared: "keep_if_used"`: the usage, in this region, of the other
    /// accounts the sweep can enter. An image shared only with them is kept if one uses
    /// it, and otherwise treated as unshared.
    pub siblings: Option<Arc<BTreeMap<String, crate::model::Usage>>>,
    /// When the run continues a chain: the chain's first instant. Images whose
    /// retirement an earlier link advanced are held ([`crate::chain::hold_advanced`]).
    pub chain_since: Option<Timestamp>,
    /// What `usage.reference_objects` name, read once per run with the deployment's own
    /// role and applied to every region and pair; `Err` (an object that cannot be read)
    /// stops every region unchanged. `None`: not read yet (or no reference objects).
    pub reference_usage: Option<Arc<Result<crate::model::Usage, String>>>,
}

impl Default for ExecConfig {
    /// Dry run, 16 images in flight (the pacers, not this, keep the calls under EC2's
    /// buckets; more in flight only hides round trips); each pacer at its share of EC2's bucket
    /// ([`crate::app::ratelimit`]): deregistrations 80 burst then 5/s, marks 80 then
    /// 10/s, launch-permission lookups 50 then 15/s.
    fn default() -> Self {
        Self {
            dry_run: true,
            concurrency: 16,
            pace: PaceConfig::default(),
            stop: Stop::default(),
            mandate: None,
            siblings: None,
            chain_since: None,
            reference_usage: None,
            bundle_buckets: BTreeSet::new(),
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

/// Plans with the whole policy, then narrows to the run's mandate: a scope only removes
/// images from the plan, and stages the mandate does not perform keep their images.
fn scoped_plan(policy: &Policy, inventory: &Inventory, now: Timestamp, cfg: &ExecConfig) -> Plan {
    let mut p = plan(policy, inventory, now);
    p.retain_bundles_outside(&cfg.bundle_buckets);
    if let Some(m) = &cfg.mandate {
        let mut warnings = m.restrict(&mut p, inventory);
        p.warnings.append(&mut warnings);
    }
    if let Some(since) = cfg.chain_since {
        let mut held = crate::chain::hold_advanced(&mut p, inventory, since);
        p.warnings.append(&mut held);
    }
    p
}

/// Whether the run may queue the cleanup of storage whose image is gone: only the
/// full-scope sweep reconciles.
fn reconciles(cfg: &ExecConfig) -> bool {
    cfg.mandate.as_ref().is_none_or(|m| m.stages.reconcile)
}

/// What happened to one condemned image in the pipeline.
enum Step<'p> {
    /// Its launch permissions name other accounts: keep it.
    Shared(String, Vec<String>, Option<BTreeMap<String, u64>>),
    /// Its launch permissions could not be read: keep it as if shared.
    Unknown(String, AwsError),
    /// Processed: deregistered, planned (dry run) or not, with the error if any.
    Done(&'p Decision, Outcome, Option<String>),
    /// Not deregistered: held back (deferred to the next run).
    Held(&'p Decision, Hold),
    /// Cut short by the run's stop: a call throttled until the stop (not done: deferred,
    /// throttling is never by itself an image's failure), or one that failed transiently
    /// with the stop before its retry (made, its effect unknown: failed).
    Throttled(&'p Decision, StopReason, String, Outcome),
}

/// Everything the executor did in a region.
struct Executed {
    plan: Plan,
    outcomes: BTreeMap<String, (Outcome, Option<String>)>,
    jobs: Vec<JobReport>,
    stopped: Option<StopReason>,
    /// The first error of a cleanup queue that stopped accepting jobs.
    queue_failed: Option<String>,
    /// Why the region stopped early, if it did.
    error: Option<String>,
    /// What AWS's reference check did.
    references: CheckReport,
    /// How shared images were judged (`keep_if_used`).
    shared_judged_by: BTreeMap<&'static str, usize>,
    /// What each pacer did, by bucket.
    pacing: BTreeMap<&'static str, PacerReport>,
}

/// Why an image cleared for deregistration is held back.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// The cleanup queue refused jobs: deregistering more would strand more storage.
    QueueFailed,
    /// A signal or the deadline.
    Stop(StopReason),
}

impl Hold {
    fn now(cfg: &ExecConfig, halted: &AtomicBool) -> Option<Self> {
        if halted.load(Ordering::SeqCst) {
            return Some(Self::QueueFailed);
        }
        cfg.stop.reason().map(Self::Stop)
    }

    fn why(self) -> &'static str {
        match self {
            Self::QueueFailed => "the cleanup queue stopped accepting jobs; left for the next run",
            Self::Stop(StopReason::Signal) => "stopped by a signal; left for the next run",
            Self::Stop(StopReason::Deadline) => {
                "the run's deadline was reached; left for the next run"
            }
        }
    }
}

/// The shared state of one pass of the pipeline.
struct Pipeline<'a, A: Account> {
    account: &'a A,
    cfg: &'a ExecConfig,
    region: &'a str,
    /// The inventory's listings, launch-permission lookups, usage reports, reference
    /// checks: the Describe bucket.
    describe: Arc<Pacer>,
    /// The write-ahead marks: the `CreateTags` bucket.
    tags: Pacer,
    deregister: Pacer,
    /// Retirement calls (`DisableImage`, `EnableImage*`): the default mutating bucket.
    mutating: Pacer,
    halted: AtomicBool,
    done: AtomicUsize,
    now: Timestamp,
}

impl<A: Account> Pipeline<'_, A> {
    /// One condemned image: launch permissions, then (for real) the write-ahead mark on
    /// the storage it will free, then `DeregisterImage`.
    async fn step<'d>(&self, d: &'d Decision, check_shared: bool, total: usize) -> Step<'d> {
        if check_shared {
            if let Some(step) = self.launch_check(d).await {
                return step;
            }
        }
        if self.cfg.dry_run {
            return Step::Done(d, Outcome::Planned, None);
        }
        if let Some(h) = Hold::now(self.cfg, &self.halted) {
            return Step::Held(d, h);
        }
        if let Some(step) = retire_step(d) {
            return self.retire_now(d, step).await;
        }
        if let Err(step) = self.mark_storage(d).await {
            return step;
        }
        if let Some(h) = Hold::now(self.cfg, &self.halted) {
            return Step::Held(d, h);
        }
        self.deregister_now(d, total).await
    }

    /// The step of an image whose paced call failed with `e`: held when the run stopped
    /// before the call; deferred, with the run stopped, when EC2 throttled it until the
    /// stop (the call was not done); failed, with the run stopped, when the stop came
    /// before a transient failure could be retried; else failed.
    fn failed<'d>(&self, d: &'d Decision, e: &AwsError, why: String) -> Step<'d> {
        let stop = self.cfg.stop.reason().unwrap_or(StopReason::Signal);
        if e.is(ratelimit::STOPPED) {
            Step::Held(d, Hold::Stop(stop))
        } else if e.is(ratelimit::THROTTLED) {
            Step::Throttled(d, stop, why, Outcome::Deferred)
        } else if ratelimit::cut_short(e, &self.cfg.stop) {
            Step::Throttled(d, stop, why, Outcome::Failed)
        } else {
            Step::Done(d, Outcome::Failed, Some(why))
        }
    }

    /// A retirement stage instead of deregistration: deprecate, disable or enable.
    async fn retire_now<'d>(&self, d: &'d Decision, step: RetireStep) -> Step<'d> {
        let retire = || self.account.retire(&d.image_id, step, self.now);
        match self.mutating.call("RetireImage", retire).await {
            Ok(()) => {
                let done = match step {
                    RetireStep::Deprecate => Outcome::Deprecated,
                    RetireStep::Disable { .. } => Outcome::Disabled,
                    RetireStep::Enable { .. } => Outcome::Enabled,
                };
                Step::Done(d, done, None)
            }
            Err(e) => {
                tracing::warn!(image_id = %d.image_id, error = %e, ?step, "retirement step failed");
                self.failed(d, &e, e.to_string())
            }
        }
    }

    /// Reads the image's launch permissions: `None` when it is shared with nobody (go on),
    /// else the step that ends its turn (shared, unknown, or already gone).
    async fn launch_check<'d>(&self, d: &'d Decision) -> Option<Step<'d>> {
        let lookup = || self.account.launch_permissions(&d.image_id);
        match self.describe.call("DescribeImageAttribute", lookup).await {
            Ok(g) if g.is_empty() => None,
            Ok(g) => {
                // keep_if_used: AWS's usage report first, when every grantee can be judged.
                let judged = self
                    .cfg
                    .siblings
                    .as_ref()
                    .is_some_and(|s| g.iter().all(|a| s.contains_key(a)));
                let report = if judged && self.describe.acquire().await.is_ok() {
                    self.account.usage_report(&d.image_id, &g).await
                } else {
                    None
                };
                Some(Step::Shared(d.image_id.clone(), g, report))
            }
            // Deregistered since the listing (by someone else, or by a run that was
            // killed with the call in flight): gone is gone, its storage is freed.
            Err(e)
                if !self.cfg.dry_run && classify_deregister_error(&e) == Outcome::AlreadyGone =>
            {
                if let Err(m) = self.mark_snapshots(d).await {
                    tracing::warn!(image_id = %d.image_id, error = %m, "could not mark the storage of a vanished image");
                }
                Some(Step::Done(d, Outcome::AlreadyGone, Some(e.to_string())))
            }
            // A stop (or throttling until it) before the lookup was answered: not known,
            // so not touched.
            Err(e) if ratelimit::cut_short(&e, &self.cfg.stop) => {
                Some(self.failed(d, &e, format!("launch permissions not read: {e}")))
            }
            Err(e) => Some(Step::Unknown(d.image_id.clone(), e)),
        }
    }

    /// Tags the snapshots the plan deletes with the write-ahead mark; those that wait for
    /// the Recycle Bin also with the instant each may go (one request per distinct instant:
    /// every snapshot gets its own date); those another image keeps while this one enters
    /// the bin with that instant only.
    async fn mark_snapshots(&self, d: &Decision) -> Result<(), AwsError> {
        let (marked, dated) = snapshot_tags(d);
        for (when, ids) in marked {
            let mark = || self.account.mark_snapshots(&d.image_id, &ids, when);
            self.tags.call("CreateTags", mark).await?;
        }
        for (when, ids) in dated {
            let defer = || self.account.defer_snapshots(&ids, when);
            self.tags.call("CreateTags", defer).await?;
        }
        Ok(())
    }

    /// The write-ahead mark on everything the image's deregistration frees: its snapshots
    /// and its bundle's manifest. An error is the image's step: why it must not be
    /// deregistered.
    async fn mark_storage<'d>(&self, d: &'d Decision) -> Result<(), Step<'d>> {
        if let Err(e) = self.mark_snapshots(d).await {
            let why = format!("its storage could not be marked, so it was not deregistered: {e}");
            return Err(self.failed(d, &e, why));
        }
        let bundle = d
            .bundle
            .as_ref()
            .and_then(|b| match (b.action, &b.bucket, &b.manifest_key) {
                (CleanupAction::Delete, Some(bucket), Some(key)) => Some((bucket, key)),
                _ => None,
            });
        if let Some((bucket, key)) = bundle {
            if let Err(e) = self.account.mark_manifest(bucket, key, &d.image_id).await {
                let why =
                    format!("its bundle could not be marked, so it was not deregistered: {e}");
                return Err(Step::Done(d, Outcome::Failed, Some(why)));
            }
        }
        Ok(())
    }

    /// `DeregisterImage`, its outcome, and the progress line.
    async fn deregister_now<'d>(&self, d: &'d Decision, total: usize) -> Step<'d> {
        let deregister = || self.account.deregister(&d.image_id);
        let step = match self.deregister.call("DeregisterImage", deregister).await {
            Ok(()) => Step::Done(d, Outcome::Deregistered, None),
            Err(e) if ratelimit::cut_short(&e, &self.cfg.stop) => {
                return self.failed(d, &e, e.to_string());
            }
            Err(e) => {
                let o = classify_deregister_error(&e);
                tracing::warn!(image_id = %d.image_id, error = %e, outcome = ?o, "deregister did not succeed");
                Step::Done(d, o, Some(e.to_string()))
            }
        };
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        progress::report(self.cfg.progress.as_ref(), || Progress::Deregistered {
            region: self.region.to_string(),
            done: n,
            total,
        });
        step
    }
}

/// How a shared image is judged under `keep_if_used`.
enum Shared {
    /// Not judged (the rule is `keep`, or a grantee cannot be entered): kept `shared`.
    Keep,
    /// Every grantee can be entered and none uses it: treated as unshared.
    Unused,
    /// These users in the accounts it is shared with keep it `in_use`; the way they were
    /// found (`usage_report` or `member_accounts`).
    UsedBy(Vec<crate::model::UsageRef>, &'static str),
}

/// Judges a shared image by its grantees' usage: only when every grantee is an account
/// the sweep can enter (public images, organization and OU grants stay `shared`).
/// AWS's usage report, when there is one, is the cheaper first look: a grantee it shows
/// using the image keeps it. Showing none proves less (it counts only instances and launch
/// templates), so the grantees' own usage, read through their member roles, decides then.
fn judge_shared(
    siblings: Option<&BTreeMap<String, crate::model::Usage>>,
    image_id: &str,
    grantees: &[String],
    report: Option<&BTreeMap<String, u64>>,
) -> Shared {
    let Some(siblings) = siblings else {
        return Shared::Keep;
    };
    if grantees.is_empty() || !grantees.iter().all(|g| siblings.contains_key(g)) {
        return Shared::Keep;
    }
    let reported: Vec<crate::model::UsageRef> = report
        .into_iter()
        .flatten()
        .filter(|(a, n)| **n > 0 && grantees.contains(a))
        .map(|(a, n)| crate::model::UsageRef {
            kind: crate::model::UsageKind::SharedAccount,
            id: format!("{a}: {n} instances or launch templates (usage report)"),
        })
        .collect();
    if !reported.is_empty() {
        return Shared::UsedBy(reported, "usage_report");
    }
    let users: Vec<crate::model::UsageRef> = grantees
        .iter()
        .flat_map(|g| {
            siblings[g]
                .users(image_id)
                .into_iter()
                .map(move |u| crate::model::UsageRef {
                    kind: crate::model::UsageKind::SharedAccount,
                    id: format!("{g}: {}", u.id),
                })
        })
        .collect();
    if users.is_empty() {
        Shared::Unused
    } else {
        Shared::UsedBy(users, "member_accounts")
    }
}

/// What the executor has learnt so far in a region.
#[derive(Default)]
struct Known {
    /// Launch-permission grantees found this round (images now known to be shared).
    grants: BTreeMap<String, Vec<String>>,
    /// Each processed image's outcome and error.
    outcomes: BTreeMap<String, (Outcome, Option<String>)>,
    /// Why the run stopped, if it did.
    stopped: Option<StopReason>,
    /// Launch permissions that could not be read.
    warnings: Vec<String>,
    /// Why the region stopped before its plan was done (e.g. a failed reference check).
    error: Option<String>,
    /// Shared images judged unused by every account they are shared with: unshared.
    cleared: BTreeSet<String>,
    /// Users found in sibling accounts of shared images (`keep_if_used`).
    sibling_users: Vec<(String, crate::model::UsageRef)>,
    /// How shared images were judged: `usage_report` or `member_accounts`, each a count.
    judged_by: BTreeMap<&'static str, usize>,
}

impl Known {
    /// Folds one step in; storage an image's step freed goes to the queue at once, and a
    /// queue that refuses it halts further deregistrations.
    async fn absorb<Q: CleanupSink>(
        &mut self,
        step: Step<'_>,
        region: &str,
        queue: &mut JobQueue<'_, Q>,
        halted: &AtomicBool,
        siblings: Option<&BTreeMap<String, crate::model::Usage>>,
    ) {
        match step {
            Step::Shared(id, g, report) => match judge_shared(siblings, &id, &g, report.as_ref()) {
                Shared::Keep => {
                    self.grants.insert(id, g);
                }
                Shared::Unused => {
                    *self.judged_by.entry("member_accounts").or_default() += 1;
                    self.cleared.insert(id);
                }
                Shared::UsedBy(users, way) => {
                    *self.judged_by.entry(way).or_default() += 1;
                    self.sibling_users
                        .extend(users.into_iter().map(|u| (id.clone(), u)));
                }
            },
            Step::Unknown(id, e) => {
                self.warnings.push(format!(
                    "{id}: launch permissions unknown ({e}); kept as shared"
                ));
                let code = e.code.as_deref().unwrap_or("error");
                self.grants.insert(id, vec![format!("unknown ({code})")]);
            }
            Step::Throttled(d, r, why, outcome) => {
                self.stopped.get_or_insert(r);
                self.outcomes
                    .insert(d.image_id.clone(), (outcome, Some(why)));
            }
            Step::Held(d, h) => {
                if let Hold::Stop(r) = h {
                    self.stopped.get_or_insert(r);
                }
                let why = Some(h.why().to_string());
                self.outcomes
                    .insert(d.image_id.clone(), (Outcome::Deferred, why));
            }
            Step::Done(d, outcome, error) => {
                self.outcomes.insert(d.image_id.clone(), (outcome, error));
                if is_gone(outcome) {
                    let jobs = ready_jobs(region, d, &self.outcomes, &mut queue.seen);
                    queue.push(jobs).await;
                    if queue.failed.is_some() {
                        halted.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

/// Works through the condemned images oldest first. Each one's launch permissions are
/// read (when the policy skips shared images) and, if it is shared with nobody, its
/// storage is marked and it is deregistered at once, so lookups and deregistrations
/// overlap under their own rate limits. Cleanup jobs go to `queue` as soon as every
/// image using their storage is gone. An image found shared is kept; that can only
/// free room under `max_deregistrations`, so the plan is made again with the new
/// knowledge and the newly condemned images go through the same steps. Images already
/// deregistered stay condemned in every later plan (sharing only removes images from
/// the candidates). When the queue refuses jobs, no further image is deregistered.
async fn execute<A: Account, Q: CleanupSink>(
    policy: &Policy,
    inventory: &mut Inventory,
    pipeline: Pipeline<'_, A>,
    mut queue: JobQueue<'_, Q>,
) -> Executed {
    let (cfg, region) = (pipeline.cfg, pipeline.region);
    let mut known = Known::default();
    let mut references = References::new(policy);
    let p = plan_rounds(
        policy,
        inventory,
        &pipeline,
        &mut queue,
        &mut known,
        &mut references,
    )
    .await;
    // Images an earlier sweep disabled that the rules no longer condemn: enabled again.
    for d in p.decisions.iter().filter(|d| d.action == Action::Enable) {
        let step = if cfg.dry_run {
            Step::Done(d, Outcome::Planned, None)
        } else {
            match retire_step(d) {
                Some(step) => pipeline.retire_now(d, step).await,
                None => continue,
            }
        };
        known
            .absorb(step, region, &mut queue, &pipeline.halted, None)
            .await;
    }
    let (jobs, queue_failed) = queue.finish().await;
    let pacing = [
        &*pipeline.describe,
        &pipeline.tags,
        &pipeline.deregister,
        &pipeline.mutating,
    ]
    .into_iter()
    .map(|p| (p.bucket(), p.report()))
    .collect();
    Executed {
        pacing,
        plan: p,
        outcomes: known.outcomes,
        jobs,
        stopped: known.stopped,
        queue_failed,
        error: known.error,
        references: references.report,
        shared_judged_by: known.judged_by,
    }
}

/// Plans, runs AWS's reference check on the newly condemned, takes them through the
/// pipeline, and plans again while a round learns something (sharing, sibling users).
/// Returns the final plan.
async fn plan_rounds<A: Account, Q: CleanupSink>(
    policy: &Policy,
    inventory: &mut Inventory,
    pipeline: &Pipeline<'_, A>,
    queue: &mut JobQueue<'_, Q>,
    known: &mut Known,
    references: &mut References,
) -> Plan {
    let (cfg, region, now) = (pipeline.cfg, pipeline.region, pipeline.now);
    let mut processed: BTreeSet<String> = BTreeSet::new();
    loop {
        let p = scoped_plan(policy, inventory, now, cfg);
        let todo: Vec<&Decision> = p
            .condemned()
            .into_iter()
            .filter(|d| !processed.contains(&d.image_id))
            .collect();
        if todo.is_empty() {
            return p;
        }
        // AWS's reference check on the newly condemned, before any of them is touched.
        let ids: Vec<String> = todo.iter().map(|d| d.image_id.clone()).collect();
        let describe = &pipeline.describe;
        match references
            .check(pipeline.account, describe, region, &ids, inventory)
            .await
        {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                known.error = Some(e);
                return p;
            }
        }
        let total = processed.len() + todo.len();
        processed.extend(todo.iter().map(|d| d.image_id.clone()));
        let cleared_before = known.cleared.clone();
        let check = policy.protection.skip_shared;
        let mut steps = stream::iter(todo)
            .map(|d| pipeline.step(d, check && !cleared_before.contains(&d.image_id), total))
            .buffer_unordered(cfg.concurrency.max(1));
        let siblings = cfg.siblings.as_deref();
        while let Some(step) = steps.next().await {
            known
                .absorb(step, region, queue, &pipeline.halted, siblings)
                .await;
        }
        drop(steps);
        if !known.learn(inventory, &cleared_before, &mut processed) {
            // Nothing new is known: this plan is final.
            return p;
        }
    }
}

impl Known {
    /// Folds what a round learnt into the inventory: warnings, users in sibling accounts
    /// (in use), images judged unused there (unshared: they go through again without the
    /// launch-permission lookup), grants. False when nothing new is known.
    fn learn(
        &mut self,
        inventory: &mut Inventory,
        cleared_before: &BTreeSet<String>,
        processed: &mut BTreeSet<String>,
    ) -> bool {
        inventory.warnings.append(&mut self.warnings);
        let users = std::mem::take(&mut self.sibling_users);
        let newly_cleared: Vec<String> = self.cleared.difference(cleared_before).cloned().collect();
        for id in &newly_cleared {
            processed.remove(id);
        }
        let learnt_users = !users.is_empty();
        for (image, user) in users {
            inventory.usage.add(image, user);
        }
        if self.grants.is_empty() && newly_cleared.is_empty() && !learnt_users {
            return false;
        }
        inventory.set_shared_with(std::mem::take(&mut self.grants));
        true
    }
}

/// Hands jobs to the sink in batches of its size and keeps the report line of each.
/// The first refusal is kept: the executor stops deregistering when it sees one.
struct JobQueue<'q, Q: CleanupSink> {
    sink: &'q Q,
    pending: Vec<CleanupJob>,
    seen: BTreeSet<String>,
    reports: Vec<JobReport>,
    failed: Option<String>,
}

impl<'q, Q: CleanupSink> JobQueue<'q, Q> {
    fn new(sink: &'q Q) -> Self {
        Self {
            sink,
            pending: Vec::new(),
            seen: BTreeSet::new(),
            reports: Vec::new(),
            failed: None,
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
        let labels: Vec<(String, crate::jobs::JobKind, String)> = jobs
            .iter()
            .map(|j| (j.image_id.clone(), j.target.kind(), j.target_label()))
            .collect();
        let failed: BTreeMap<String, AwsError> = self
            .sink
            .enqueue(jobs)
            .await
            .into_iter()
            .map(|(j, e)| (j.target_label(), e))
            .collect();
        if let Some(e) = failed.values().next() {
            self.failed.get_or_insert_with(|| e.to_string());
        }
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

    async fn finish(mut self) -> (Vec<JobReport>, Option<String>) {
        self.flush().await;
        self.reports
            .sort_by(|a, b| (&a.image_id, &a.target).cmp(&(&b.image_id, &b.target)));
        (self.reports, self.failed)
    }
}

/// The region's storage whose image is gone, with the Recycle Bin asked (once) only about
/// the images of snapshots that would otherwise be deleted and the gone images that the
/// snapshots of registered images name (what the plan needs: `snapshots_in_bin`).
async fn reconciliation<A: Account>(
    policy: &Policy,
    inventory: &mut Inventory,
    snapshots: &[crate::model::Snapshot],
    account: &A,
    now: Timestamp,
) -> Result<Reconciliation, AwsError> {
    let first = reconcile(policy, inventory, snapshots, &FxHashMap::default(), now);
    let mut check = first.images_to_check_in_bin(snapshots);
    let named = crate::orphans::named_gone_images(inventory, snapshots);
    check.extend(
        named
            .iter()
            .flat_map(|(_, g)| g.iter().map(|i| i.to_string())),
    );
    if check.is_empty() {
        return Ok(first);
    }
    let in_bin = account.images_in_recycle_bin(&check).await?;
    for (snap, gone) in named {
        let there: Vec<(String, Option<Timestamp>)> = gone
            .into_iter()
            .filter_map(|i| in_bin.get(i).map(|exit| (i.to_string(), *exit)))
            .collect();
        if !there.is_empty() {
            inventory.snapshots_in_bin.insert(snap.to_string(), there);
        }
    }
    Ok(reconcile(policy, inventory, snapshots, &in_bin, now))
}

/// The deployment's bundle buckets' manifests that no registered image uses, decided:
/// one listing per bucket, and the tags of the unreferenced manifests only.
async fn bundle_reconciliation<A: Account>(
    policy: &Policy,
    inventory: &Inventory,
    account: &A,
    now: Timestamp,
    cfg: &ExecConfig,
) -> Result<Vec<crate::orphans::BundleOrphan>, AwsError> {
    let mut listed = Vec::new();
    for bucket in &cfg.bundle_buckets {
        listed.extend(account.list_manifests(bucket).await?);
    }
    let mut candidates = Vec::new();
    for m in crate::orphans::unreferenced_manifests(inventory, &listed) {
        let mut m = m.clone();
        m.tags = account.object_tags(&m.bucket, &m.key).await?;
        candidates.push(m);
    }
    Ok(crate::orphans::reconcile_bundles(policy, &candidates, now))
}

/// Lists images, usage and snapshots, and reconciles. `Err` is the region's one-line
/// error: nothing may change in a region whose inventory is incomplete.
async fn inventory<A: Account>(
    policy: &Policy,
    region: &str,
    now: Timestamp,
    account: &A,
    cfg: &ExecConfig,
) -> Result<(Inventory, Reconciliation), String> {
    // The Recycle Bin's rules are read beside the listings: each is a round trip before
    // the first deregistration otherwise.
    let bin_rules = async {
        match policy.recycle_bin {
            RecycleBinMode::Ignore => Ok(None),
            _ => account.bin_rules().await.map(Some),
        }
    };
    let (listed, used, snapshots, rules) = tokio::join!(
        account.list_images(),
        account.list_usage(&policy.usage),
        account.list_snapshots(),
        bin_rules
    );
    let failed = |e: AwsError| format!("inventory failed, nothing was changed: {e}");
    let (listed, (used, warnings), snapshots, rules) = match (listed, used, snapshots, rules) {
        (Ok(l), Ok(u), Ok(s), Ok(r)) => (l, u, s, r),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return Err(failed(e)),
    };
    let mut used = used;
    match cfg.reference_usage.as_deref() {
        Some(Ok(named)) => used.extend(named.clone()),
        Some(Err(e)) => return Err(format!("inventory failed, nothing was changed: {e}")),
        None => {}
    }
    let found = listed.len();
    progress::report(cfg.progress.as_ref(), || Progress::Listed {
        region: region.to_string(),
        images: found,
    });
    let mut inventory = Inventory::new(listed, used)
        .map_err(|e| format!("inventory is inconsistent, nothing was changed: {e}"))?;
    inventory.warnings = warnings;
    if let Some(rules) = rules {
        inventory.recycle_bin = rules;
    }
    inventory.snapshot_tags = snapshots
        .iter()
        .map(|s| (s.id.clone(), s.tags.clone()))
        .collect();
    inventory.snapshots_listed = true;
    inventory.archived_snapshots = snapshots
        .iter()
        .filter(|s| s.archived)
        .map(|s| s.id.clone())
        .collect();
    let mut rec = reconciliation(policy, &mut inventory, &snapshots, account, now)
        .await
        .map_err(failed)?;
    rec.bundles = bundle_reconciliation(policy, &inventory, account, now, cfg)
        .await
        .map_err(failed)?;
    Ok((inventory, rec))
}

/// Jobs for the storage reconciliation condemned (each snapshot and bundle once).
fn reconciliation_jobs(
    region: &str,
    rec: &Reconciliation,
    seen: &mut BTreeSet<String>,
) -> Vec<CleanupJob> {
    let snapshots = rec
        .to_delete()
        .filter(|o| seen.insert(o.snapshot_id.clone()))
        .map(|o| {
            let target = JobTarget::DeleteSnapshot {
                snapshot_id: o.snapshot_id.clone(),
            };
            CleanupJob::new(region, &o.image_id, target)
        })
        .collect::<Vec<_>>();
    let bundles = rec
        .bundles_to_delete()
        .filter(|b| seen.insert(format!("{}/{}", b.bucket, b.manifest_key)))
        .map(|b| {
            let target = JobTarget::DeleteBundle {
                bucket: b.bucket.clone(),
                manifest_key: b.manifest_key.clone(),
            };
            CleanupJob::new(region, b.image_id.as_deref().unwrap_or("unknown"), target)
        })
        .collect::<Vec<_>>();
    snapshots.into_iter().chain(bundles).collect()
}

/// A region's pacer on `bucket`, at the policy's share (or the operator's rate).
fn region_pacer(policy: &Policy, cfg: &ExecConfig, bucket: ratelimit::Bucket) -> Pacer {
    let pace = cfg.pace.with_share(policy.limits.api_share);
    Pacer::new(bucket, pace.pace(bucket), cfg.stop.clone())
}

/// Sweeps one region: the whole path from inventory to queued cleanup jobs.
pub async fn sweep_region<A: Account, Q: CleanupSink>(
    policy: &Policy,
    region: &str,
    now: Timestamp,
    account: &A,
    sink: &Q,
    cfg: &ExecConfig,
) -> RegionReport {
    // One Describe pacer for the region: the listings' pages, then the lookups and checks.
    let describe = Arc::new(region_pacer(policy, cfg, ratelimit::DESCRIBE));
    sweep_region_reading(policy, region, now, account, sink, cfg, describe).await
}

/// As [`sweep_region`], its reads at `describe`: the pair's one Describe pacer, which an
/// in-process worker deleting right behind the sweep shares (two pacers on one bucket
/// would each learn its limit alone, and together exceed it).
pub async fn sweep_region_reading<A: Account, Q: CleanupSink>(
    policy: &Policy,
    region: &str,
    now: Timestamp,
    account: &A,
    sink: &Q,
    cfg: &ExecConfig,
    describe: Arc<Pacer>,
) -> RegionReport {
    let mut report = RegionReport::new(region);
    // The other services' usage sources: a pacer per service, on their own limits.
    let services =
        [ratelimit::CLOUDFORMATION, ratelimit::EMR].map(|b| Arc::new(region_pacer(policy, cfg, b)));
    let meters = crate::ports::ServiceMeters {
        cloudformation: services[0].clone(),
        emr: services[1].clone(),
    };
    let metered = account.metered(describe.clone()).service_metered(&meters);
    let account = &metered;
    // The queue is checked while the inventory is read (one round trip less before the
    // first deregistration); an incomplete inventory is still the region's first error.
    let check = async {
        match cfg.dry_run {
            true => Ok(()),
            false => sink.check().await,
        }
    };
    let (found, checked) = tokio::join!(inventory(policy, region, now, account, cfg), check);
    let (mut inventory, rec) = match found {
        Ok(found) => found,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let mut queue = JobQueue::new(sink);
    if !cfg.dry_run {
        // Never deregister what cannot then be cleaned up.
        if let Err(e) = checked {
            report.error = Some(format!(
                "cleanup jobs cannot be queued, nothing was changed: {e}"
            ));
            return report;
        }
        if reconciles(cfg) {
            let orphan_jobs = reconciliation_jobs(region, &rec, &mut queue.seen);
            queue.push(orphan_jobs).await;
        }
    }
    report.orphans = OrphanCounts::of(&rec);
    report.reconciled = rec.decisions;
    report.reconciled_bundles = rec.bundles;
    let pacer = |bucket| region_pacer(policy, cfg, bucket);
    let pipeline = Pipeline {
        account,
        cfg,
        region,
        describe,
        tags: pacer(ratelimit::TAGS),
        deregister: pacer(ratelimit::DEREGISTER_IMAGE),
        mutating: pacer(ratelimit::MUTATING),
        halted: AtomicBool::new(queue.failed.is_some()),
        done: AtomicUsize::new(0),
        now,
    };
    let ex = execute(policy, &mut inventory, pipeline, queue).await;
    let plan = record_executed(&mut report, ex);
    report_service_pacing(&mut report, &services);
    let until = crate::time::days_after(now, policy.notify.lookahead_days);
    let later = scoped_plan(policy, &inventory, until, cfg);
    report.coming = crate::coming::coming(&plan, &later, until);
    report.plan_detail = Some(plan);
    report.archived_snapshots = std::mem::take(&mut inventory.archived_snapshots);
    if let Some(tag) = &policy.notify.owner_tag {
        report.owners = crate::app::notify::owners(&inventory, tag, &report);
    }
    report
}

/// The other services' pacers in the report, where they met a throttle (an estate
/// without those users never calls them).
fn report_service_pacing(report: &mut RegionReport, services: &[Arc<Pacer>]) {
    for p in services.iter().filter(|p| p.report().throttles > 0) {
        report.pacing.insert(p.bucket(), p.report());
    }
}

/// Records in the region's report what the executor did; its plan back.
fn record_executed(report: &mut RegionReport, ex: Executed) -> Plan {
    report.warnings = ex.plan.warnings.clone();
    report.plan = Some(ex.plan.summary.clone());
    report.jobs = ex.jobs;
    report.stopped = ex.stopped;
    if let Some(e) = ex.queue_failed {
        report.halt_on_queue_failure(&e);
    }
    report.reference_check = ex.references;
    report.shared_judged_by = ex.shared_judged_by;
    report.pacing.extend(ex.pacing);
    if let Some(e) = ex.error {
        report.error = Some(e);
    }
    report.images = image_reports(&ex.plan, &ex.outcomes);
    ex.plan
}

/// One report line per decision, with the outcome of condemned images.
fn image_reports(
    p: &Plan,
    outcomes: &BTreeMap<String, (Outcome, Option<String>)>,
) -> Vec<ImageReport> {
    p.decisions
        .iter()
        .map(|d| {
            let (outcome, error) = match outcomes.get(&d.image_id) {
                Some((o, e)) if d.action != Action::Keep => (Some(*o), e.clone()),
                _ if d.reasons[0] == Reason::OverLimit => (
                    Some(Outcome::Deferred),
                    Some("max_deregistrations reached; left for the next run".to_string()),
                ),
                _ => (None, None),
            };
            ImageReport {
                image_id: d.image_id.clone(),
                name: d.name.clone(),
                rule: d.rule.clone(),
                group: d.group.clone(),
                action: d.action,
                reasons: d.reasons.clone(),
                outcome,
                error,
                thinning: d.thinning.clone(),
                exception: d.exception.clone(),
            }
        })
        .collect()
}

/// The retirement call the plan decided for a decision's action, if any (a run that may
/// not retire has turned the action into `keep`).
fn retire_step(d: &Decision) -> Option<RetireStep> {
    match d.action {
        Action::Deprecate | Action::Disable | Action::Enable => d.step,
        Action::Keep | Action::Deregister => None,
    }
}

/// Snapshot ids of `d` grouped by the tags the sweep writes before deregistering it:
/// the write-ahead mark (with its `delete-after` instant, if it waits for the Recycle Bin),
/// and `delete-after` alone on those another image or the policy keeps.
type SnapshotTags = (
    BTreeMap<Option<Timestamp>, Vec<String>>,
    BTreeMap<Timestamp, Vec<String>>,
);

fn snapshot_tags(d: &Decision) -> SnapshotTags {
    let mut marked: BTreeMap<Option<Timestamp>, Vec<String>> = BTreeMap::new();
    let mut dated: BTreeMap<Timestamp, Vec<String>> = BTreeMap::new();
    for s in &d.snapshots {
        let id = s.snapshot_id.clone();
        match (s.action, s.delete_after) {
            (CleanupAction::Delete, _) => marked.entry(None).or_default().push(id),
            (CleanupAction::Retain, Some(t)) if s.is_deferred() => {
                marked.entry(Some(t)).or_default().push(id)
            }
            (CleanupAction::Retain, Some(t)) => dated.entry(t).or_default().push(id),
            // Kept only because a launch template maps it: marked, so that once the
            // template lets go the reconciliation finds it (the mark is all that ties it
            // to its image; the storage rule keeps it while a template names it).
            (CleanupAction::Retain, None)
                if s.reason == Some(RetainReason::NamedByLaunchTemplate) =>
            {
                marked.entry(None).or_default().push(id)
            }
            (CleanupAction::Retain, None) => {}
        }
    }
    (marked, dated)
}

/// Gone is gone: deregistered by this run or found already gone, the image no longer
/// holds its storage.
fn is_gone(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Deregistered | Outcome::AlreadyGone)
}

/// The cleanup jobs that `d`'s departure makes ready: each snapshot or bundle of `d`
/// the plan deletes, once every other image using it is gone too (whoever removed
/// it), and never twice (`seen` holds what was already queued).
fn ready_jobs(
    region: &str,
    d: &Decision,
    outcomes: &BTreeMap<String, (Outcome, Option<String>)>,
    seen: &mut BTreeSet<String>,
) -> Vec<CleanupJob> {
    let gone = |id: &str| outcomes.get(id).is_some_and(|(o, _)| is_gone(*o));
    let job = |target| CleanupJob::new(region, &d.image_id, target);
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
