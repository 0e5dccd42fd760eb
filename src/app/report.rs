//! What a run did: per region, per image and per cleanup job, with totals.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::app::stop::StopReason;
use crate::orphans::{Origin, Reconciliation};
use crate::planner::{Action, Reason, Summary};

/// What happened to an image the plan condemned (kept images have no outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Deregistered by this run.
    Deregistered,
    /// Already gone (`InvalidAMIID.NotFound` / `Unavailable`): nothing to do.
    AlreadyGone,
    /// EC2 refused: the image is managed by AWS Backup.
    SkippedBackupManaged,
    /// EC2 refused: deregistration protection is on.
    SkippedProtected,
    /// Not attempted: a stop, the deadline, `max_deregistrations`, or a cleanup queue
    /// that stopped accepting jobs.
    Deferred,
    /// The call failed; see the error.
    Failed,
    /// Dry run: would be deregistered (or deprecated, disabled, enabled).
    Planned,
    /// Deprecated by this run (its first retirement stage).
    Deprecated,
    /// Disabled by this run; deregistered by a sweep after the wait.
    Disabled,
    /// Enabled again: disabled by an earlier sweep, no longer condemned.
    Enabled,
}

/// One image in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// `ami-...`.
    pub image_id: String,
    /// Name.
    pub name: String,
    /// The retention rule that decided it; `None` when no rule selects it.
    pub rule: Option<String>,
    /// Group key.
    pub group: String,
    /// The plan's action.
    pub action: Action,
    /// The plan's reasons.
    pub reasons: Vec<Reason>,
    /// What happened, for images the plan condemned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The AWS error, for failures and skips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plan's thinning window and period, for images in a `retention.thin` window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinning: Option<crate::thinning::ThinNote>,
}

/// What happened to a cleanup job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Deleted.
    Deleted,
    /// Already gone (`InvalidSnapshot.NotFound`, or no such object).
    AlreadyGone,
    /// Sent to the cleanup queue for the worker.
    Queued,
    /// Not done yet; it will be retried (e.g. `InvalidSnapshot.InUse`).
    Retrying,
    /// Gave up: see the error.
    Failed,
    /// Failed the worker's verification: nothing deleted; sent to the dead-letter queue
    /// with the reason (or left for the redrive policy to move there).
    Rejected,
}

/// One cleanup job in the report.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The image the storage belonged to.
    pub image_id: String,
    /// `delete_snapshot` or `delete_bundle`.
    pub kind: crate::jobs::JobKind,
    /// Snapshot id or `s3://bucket/key`.
    pub target: String,
    /// What happened.
    pub outcome: JobOutcome,
    /// Attempts made in this run.
    pub attempts: u32,
    /// Objects deleted (bundles: the manifest and its parts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted_objects: Vec<String>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One region's run.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    /// Region name.
    pub region: String,
    /// What AWS's reference check did in the region.
    pub reference_check: crate::app::references::CheckReport,
    /// With `keep_if_used`: how many shared images were judged by AWS's usage report and
    /// how many by reading the member accounts' own usage.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_judged_by: BTreeMap<&'static str, usize>,
    /// Set when the region could not be inventoried: nothing was changed there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plan's counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Summary>,
    /// Every image with its decision and outcome.
    pub images: Vec<ImageReport>,
    /// Every cleanup job.
    pub jobs: Vec<JobReport>,
    /// Inventory warnings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// GiB of the snapshots this run deleted (as their images' mappings report them).
    pub snapshot_gib_deleted: u64,
    /// Snapshots whose image is gone: lost cleanups (marked) and foreign orphans.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconciled: Vec<crate::orphans::OrphanDecision>,
    /// Bundle manifests no registered image uses, in the deployment's bundle buckets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconciled_bundles: Vec<crate::orphans::BundleOrphan>,
    /// Counts of `reconciled` to delete, by origin.
    pub orphans: OrphanCounts,
    /// Images deregistered whose cleanup could not be queued: their storage is marked
    /// and the next sweep reconciles it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub awaiting_reconciliation: Vec<String>,
    /// Set when the run stopped early (new deregistrations stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StopReason>,
    /// The estimated monthly saving of what the region deleted (dry run: would delete),
    /// per image and group, with the prices and notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub savings: Option<crate::pricing::Savings>,
    /// Images a sweep within `notify.lookahead_days` will act on (retiring ones falling
    /// due, and ones the policy condemns by then).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coming: Vec<crate::coming::Coming>,
    /// The owner (`notify.owner_tag`) of each image the summary names, where tagged.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub owners: BTreeMap<String, String>,
    /// The region's snapshots in the archive tier (for the saving estimate; the estimate
    /// lists those it deletes).
    #[serde(skip)]
    pub archived_snapshots: rustc_hash::FxHashSet<String>,
    /// Each EC2 bucket's pacer in this (account, Region): throttles met, the rate it
    /// started at and the rate it ended at.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pacing: BTreeMap<&'static str, crate::app::ratelimit::PacerReport>,
    /// The plan behind the report, for rendering tables (not serialized: `images` has it).
    #[serde(skip)]
    pub plan_detail: Option<crate::planner::Plan>,
    /// A dry run's stamp: what an approval of this report checks and approves
    /// ([`crate::approval`]). A live run's report has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::Stamp>,
}

/// Snapshots whose image is gone that a run deletes (or, dry, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrphanCounts {
    /// Marked by an earlier ami-sweeper run whose cleanup was lost.
    pub marked: usize,
    /// Their GiB.
    pub marked_gib: u64,
    /// Left behind by others (only with `cleanup.orphans`).
    pub foreign: usize,
    /// Their GiB.
    pub foreign_gib: u64,
    /// Instance-store bundles whose image is gone (marked or foreign).
    pub bundles: usize,
}

impl OrphanCounts {
    /// The counts of a reconciliation.
    pub fn of(r: &Reconciliation) -> Self {
        let (marked, marked_gib) = r.count(Origin::Marked);
        let (foreign, foreign_gib) = r.count(Origin::Foreign);
        Self {
            marked,
            marked_gib,
            foreign,
            foreign_gib,
            bundles: r.bundles_to_delete().count(),
        }
    }
}

impl RegionReport {
    /// The cleanup queue stopped accepting jobs (`error`): deregistrations stopped, and
    /// the images whose jobs failed to queue are listed for the next reconciliation.
    pub fn halt_on_queue_failure(&mut self, error: &str) {
        self.awaiting_reconciliation = self
            .jobs
            .iter()
            .filter(|j| j.outcome == JobOutcome::Failed)
            .map(|j| j.image_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.error = Some(format!(
            "cleanup jobs could not be queued ({error}); deregistrations stopped; the storage \
             of {} deregistered images is marked and the next sweep reconciles it",
            self.awaiting_reconciliation.len()
        ));
    }

    /// An empty report for `region`.
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            reference_check: Default::default(),
            shared_judged_by: BTreeMap::new(),
            error: None,
            plan: None,
            images: Vec::new(),
            jobs: Vec::new(),
            warnings: Vec::new(),
            snapshot_gib_deleted: 0,
            reconciled: Vec::new(),
            reconciled_bundles: Vec::new(),
            orphans: OrphanCounts::default(),
            awaiting_reconciliation: Vec::new(),
            stopped: None,
            savings: None,
            coming: Vec::new(),
            owners: BTreeMap::new(),
            archived_snapshots: Default::default(),
            pacing: BTreeMap::new(),
            plan_detail: None,
            approval: None,
        }
    }

    /// Stamps a dry run's region report as a plan to approve: the policy digest, the
    /// account (`None`: the deployment's own, filled in by the edge), the instant and each
    /// image's action. A region that failed is not stamped: it planned nothing.
    pub fn stamp(
        &mut self,
        policy_digest: &str,
        account: Option<&str>,
        now: crate::model::Timestamp,
    ) {
        if self.error.is_some() {
            return;
        }
        let region = self.region.as_str();
        let images = self
            .images
            .iter()
            .map(|i| (region, i.image_id.as_str(), i.action));
        self.approval = Some(crate::approval::Stamp::new(
            policy_digest,
            account,
            [region.to_string()],
            now,
            images,
        ));
    }

    /// Estimates the monthly saving at `overrides` over the region's list prices: the
    /// storage of the images deregistered (dry run: planned), each snapshot once.
    pub fn price(&mut self, overrides: &crate::policy::PriceOverride) {
        let Some(plan) = &self.plan_detail else {
            return;
        };
        let prices = crate::pricing::Prices::for_region(&self.region, overrides);
        let archived = &self.archived_snapshots;
        let mut s = crate::pricing::estimate(plan, &prices, &|id| archived.contains(id));
        let gone: std::collections::HashMap<&str, &str> = self
            .images
            .iter()
            .filter(|i| matches!(i.outcome, Some(Outcome::Deregistered | Outcome::Planned)))
            .map(|i| (i.image_id.as_str(), i.group.as_str()))
            .collect();
        s.by_image.retain(|id, _| gone.contains_key(id.as_str()));
        s.by_group.clear();
        for (id, i) in &s.by_image {
            *s.by_group.entry(gone[id.as_str()].to_string()).or_default() += i.monthly;
        }
        s.monthly = s.by_image.values().map(|i| i.monthly).sum();
        s.monthly_deferred = s.by_image.values().map(|i| i.monthly_deferred).sum();
        self.savings = Some(s);
    }

    /// Adds up the sizes of the snapshots whose deletion succeeded (sizes saturate:
    /// a corrupt size never panics the report).
    pub fn count_freed_storage(&mut self) {
        let mut sizes: std::collections::HashMap<&str, u64> = self
            .reconciled
            .iter()
            .filter_map(|d| d.size_gib.map(|g| (d.snapshot_id.as_str(), g)))
            .collect();
        if let Some(plan) = &self.plan_detail {
            sizes.extend(
                plan.decisions
                    .iter()
                    .flat_map(|d| &d.snapshots)
                    .filter_map(|s| s.size_gib.map(|g| (s.snapshot_id.as_str(), g))),
            );
        }
        self.snapshot_gib_deleted = self
            .jobs
            .iter()
            .filter(|j| {
                j.kind == crate::jobs::JobKind::DeleteSnapshot && j.outcome == JobOutcome::Deleted
            })
            .filter_map(|j| sizes.get(j.target.as_str()))
            .fold(0u64, |a, b| a.saturating_add(*b));
    }
}

/// Totals over all regions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Images evaluated.
    pub images: usize,
    /// Images by outcome.
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Jobs by outcome.
    pub jobs: BTreeMap<JobOutcome, usize>,
    /// Failed images, failed jobs and failed regions.
    pub failures: usize,
    /// GiB of snapshots deleted.
    pub snapshot_gib_deleted: u64,
    /// Snapshots whose image was gone, deleted or to delete, by origin.
    pub orphans: OrphanCounts,
    /// Estimated monthly saving (US dollars) of the storage deleted (dry run: to delete).
    pub monthly_saving: crate::pricing::Usd,
    /// Estimated monthly saving once the Recycle Bin releases the snapshots that wait.
    pub monthly_saving_deferred: crate::pricing::Usd,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// Whether anything could have been changed.
    pub dry_run: bool,
    /// The instant ages were measured from.
    pub now: String,
    /// Per region.
    pub regions: Vec<RegionReport>,
    /// Totals.
    pub totals: Totals,
    /// AWS API calls made, per operation.
    pub api_calls: BTreeMap<String, u64>,
    /// Attempts AWS throttled (`RequestLimitExceeded`, `SlowDown`, ...) that were retried.
    pub throttles: u64,
    /// Wall time of the run in milliseconds.
    pub elapsed_ms: u64,
    /// Set when the run stopped early: new deregistrations were not started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StopReason>,
}

impl SweepReport {
    /// Names the account its stamps were planned in, where they name none (a sweep of
    /// the deployment's own account, which the run itself does not know).
    pub fn stamp_account(&mut self, account: &str) {
        for s in self.regions.iter_mut().filter_map(|r| r.approval.as_mut()) {
            s.account.get_or_insert_with(|| account.to_string());
        }
    }

    /// Recomputes the totals from the regions.
    pub fn total(&mut self) {
        let mut t = Totals::default();
        for r in &self.regions {
            if r.error.is_some() {
                t.failures += 1;
            }
            t.images += r.images.len();
            t.snapshot_gib_deleted = t
                .snapshot_gib_deleted
                .saturating_add(r.snapshot_gib_deleted);
            t.orphans.marked += r.orphans.marked;
            t.orphans.marked_gib = t.orphans.marked_gib.saturating_add(r.orphans.marked_gib);
            t.orphans.foreign += r.orphans.foreign;
            t.orphans.foreign_gib = t.orphans.foreign_gib.saturating_add(r.orphans.foreign_gib);
            t.orphans.bundles += r.orphans.bundles;
            if let Some(s) = &r.savings {
                t.monthly_saving += s.monthly;
                t.monthly_saving_deferred += s.monthly_deferred;
            }
            self.stopped = self.stopped.or(r.stopped);
            for i in &r.images {
                if let Some(o) = i.outcome {
                    *t.outcomes.entry(o).or_default() += 1;
                    if o == Outcome::Failed {
                        t.failures += 1;
                    }
                }
            }
            for j in &r.jobs {
                *t.jobs.entry(j.outcome).or_default() += 1;
                if matches!(j.outcome, JobOutcome::Failed | JobOutcome::Rejected) {
                    t.failures += 1;
                }
            }
        }
        self.totals = t;
    }
}

impl SweepReport {
    /// The report as one CloudWatch Embedded Metric Format line, so users can graph and
    /// alarm on sweeps from the function's logs without extra permissions.
    pub fn emf_line(&self, timestamp_ms: u64) -> String {
        self.emf_line_with(timestamp_ms, &[])
    }

    /// As [`SweepReport::emf_line`], with extra dimensions (an organization sweep's pair:
    /// `Account`, `Region`).
    pub fn emf_line_with(&self, timestamp_ms: u64, dims: &[(&str, &str)]) -> String {
        let mut fields = serde_json::Map::new();
        let mut metrics = Vec::new();
        for (name, value, unit) in self.metrics() {
            metrics.push(serde_json::json!({"Name": name, "Unit": unit}));
            fields.insert(name, serde_json::json!(value));
        }
        // Money in dollars (a fraction), beside the counts.
        metrics.push(serde_json::json!({"Name": "EstimatedMonthlySavingUSD", "Unit": "None"}));
        fields.insert(
            "EstimatedMonthlySavingUSD".into(),
            serde_json::json!(self.totals.monthly_saving.dollars()),
        );
        for (name, value, unit) in self.pacing_metrics() {
            metrics.push(serde_json::json!({"Name": name, "Unit": unit}));
            fields.insert(name, serde_json::json!(value));
        }
        fields.insert("DryRun".into(), serde_json::json!(self.dry_run.to_string()));
        let mut dimensions = vec!["DryRun".to_string()];
        for (k, v) in dims {
            fields.insert(k.to_string(), serde_json::json!(v));
            dimensions.push(k.to_string());
        }
        // A pair's figures also roll up under `DryRun` alone, so that one alarm and one
        // graph see every pair's failures without knowing the accounts.
        let mut dimension_sets = vec![dimensions];
        if !dims.is_empty() {
            dimension_sets.push(vec!["DryRun".to_string()]);
        }
        fields.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "ami-sweeper",
                    "Dimensions": dimension_sets,
                    "Metrics": metrics,
                }]
            }),
        );
        serde_json::Value::Object(fields).to_string()
    }

    /// One EMF line per retention rule that decided an image: the rule's counts
    /// (`ImagesEvaluated`, `ImagesKept`, `ImagesCondemned`, `ImagesDeregistered`) under
    /// the dimension set `[DryRun, Rule]` (with `dims` after them, e.g. a pair's
    /// `Account` and `Region`). A second dimension set beside [`SweepReport::emf_line`]'s,
    /// which the alarms watch and which stays as it is.
    pub fn emf_rule_lines(&self, timestamp_ms: u64, dims: &[(&str, &str)]) -> Vec<String> {
        let mut by_rule: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for i in self.regions.iter().flat_map(|r| &r.images) {
            let Some(rule) = &i.rule else { continue };
            let c = by_rule.entry(rule).or_default();
            c[0] += 1;
            match i.action {
                Action::Keep | Action::Enable => c[1] += 1,
                Action::Deregister | Action::Deprecate | Action::Disable => c[2] += 1,
            }
            if i.outcome == Some(Outcome::Deregistered) {
                c[3] += 1;
            }
        }
        let names = [
            "ImagesEvaluated",
            "ImagesKept",
            "ImagesCondemned",
            "ImagesDeregistered",
        ];
        by_rule
            .into_iter()
            .map(|(rule, counts)| {
                let mut fields = serde_json::Map::new();
                for (name, n) in names.iter().zip(counts) {
                    fields.insert((*name).into(), serde_json::json!(n));
                }
                fields.insert("DryRun".into(), serde_json::json!(self.dry_run.to_string()));
                fields.insert("Rule".into(), serde_json::json!(rule));
                let mut dimensions = vec!["DryRun".to_string(), "Rule".to_string()];
                for (k, v) in dims {
                    fields.insert(k.to_string(), serde_json::json!(v));
                    dimensions.push(k.to_string());
                }
                let metrics: Vec<_> = names
                    .iter()
                    .map(|n| serde_json::json!({"Name": n, "Unit": "Count"}))
                    .collect();
                fields.insert(
                    "_aws".into(),
                    serde_json::json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": "ami-sweeper",
                            "Dimensions": [dimensions],
                            "Metrics": metrics,
                        }]
                    }),
                );
                serde_json::Value::Object(fields).to_string()
            })
            .collect()
    }

    /// Per EC2 bucket: `PacerThrottles_<bucket>`, the throttles its pacers met (summed over
    /// regions), and `PacerEndRate_<bucket>`, the lowest rate one ended at (calls/s).
    fn pacing_metrics(&self) -> Vec<(String, f64, &'static str)> {
        let mut by: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
        for (bucket, p) in self.regions.iter().flat_map(|r| &r.pacing) {
            let e = by.entry(bucket).or_insert((0, f64::INFINITY));
            e.0 += p.throttles;
            e.1 = e.1.min(p.end_per_second);
        }
        by.into_iter()
            .flat_map(|(b, (throttles, rate))| {
                [
                    (format!("PacerThrottles_{b}"), throttles as f64, "Count"),
                    (format!("PacerEndRate_{b}"), rate, "Count/Second"),
                ]
            })
            .collect()
    }

    /// The run's metrics: name, value, CloudWatch unit; `Kept_<reason>` per keep reason.
    fn metrics(&self) -> Vec<(String, u64, &'static str)> {
        let count = |o: Outcome| self.totals.outcomes.get(&o).copied().unwrap_or(0) as u64;
        let snapshots_deleted = self
            .regions
            .iter()
            .flat_map(|r| &r.jobs)
            .filter(|j| {
                j.kind == crate::jobs::JobKind::DeleteSnapshot && j.outcome == JobOutcome::Deleted
            })
            .count() as u64;
        let orphans = self.totals.orphans.marked + self.totals.orphans.foreign;
        let snapshots_deferred = self
            .regions
            .iter()
            .filter_map(|r| r.plan.as_ref())
            .map(|p| p.snapshots_deferred as u64)
            .sum();
        let mut out: Vec<(String, u64, &'static str)> = [
            ("ImagesEvaluated", self.totals.images as u64),
            ("ImagesDeregistered", count(Outcome::Deregistered)),
            ("ImagesFailed", count(Outcome::Failed)),
            ("ImagesDeferred", count(Outcome::Deferred)),
            ("ImagesDeprecated", count(Outcome::Deprecated)),
            ("ImagesDisabled", count(Outcome::Disabled)),
            ("SnapshotsDeleted", snapshots_deleted),
            ("SnapshotsDeferred", snapshots_deferred),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v, "Count"))
        .collect();
        out.push((
            "SnapshotGiBFreed".into(),
            self.totals.snapshot_gib_deleted,
            "Gigabytes",
        ));
        out.push(("Failures".into(), self.totals.failures as u64, "Count"));
        out.push(("OrphanSnapshotsReclaimed".into(), orphans as u64, "Count"));
        out.push(("ApiThrottles".into(), self.throttles, "Count"));
        let mut kept: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (reason, n) in self
            .regions
            .iter()
            .filter_map(|r| r.plan.as_ref())
            .flat_map(|p| &p.by_reason)
        {
            if !reason.condemns() {
                *kept.entry(reason.as_str()).or_default() += *n as u64;
            }
        }
        out.extend(
            kept.into_iter()
                .map(|(r, n)| (format!("Kept_{r}"), n, "Count")),
        );
        out
    }
}

/// The result of one drain of the cleanup queue.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    /// One line per message handled (each message once per drain).
    pub jobs: Vec<JobReport>,
    /// Jobs by outcome.
    pub totals: BTreeMap<JobOutcome, usize>,
    /// Messages that were not jobs (left for the dead-letter queue).
    pub malformed: Vec<String>,
    /// Receipts of messages this drain had already handled (SQS redelivered them after
    /// their visibility timeout); not counted again.
    pub redelivered: usize,
    /// Messages visible when the drain started (`ApproximateNumberOfMessages`).
    pub visible_at_start: u64,
    /// Why the drain ended: `empty`, `no_new_messages`, `receive_budget` or `time_budget`.
    pub ended: &'static str,
    /// AWS API calls made, per operation.
    pub api_calls: BTreeMap<String, u64>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// What each of the worker's pacers did: throttles met and the rate it ended at.
    pub pacing: Vec<PacerLine>,
}

/// One pacer of a worker, where it belongs and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct PacerLine {
    /// The account (`None`: the deployment's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The Region.
    pub region: String,
    /// EC2's bucket.
    pub bucket: &'static str,
    /// Throttles, share and end rate.
    #[serde(flatten)]
    pub report: crate::app::ratelimit::PacerReport,
}

impl CleanupReport {
    /// Failed and rejected jobs plus malformed messages.
    pub fn failures(&self) -> usize {
        let n = |o| self.totals.get(&o).copied().unwrap_or(0);
        n(JobOutcome::Failed) + n(JobOutcome::Rejected) + self.malformed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_every_metric_it_sets() {
        let mut report = SweepReport {
            dry_run: false,
            now: "2026-11-26T00:00:00Z".into(),
            regions: vec![RegionReport {
                images: vec![ImageReport {
                    image_id: "ami-1".into(),
                    name: "a".into(),
                    rule: Some("default".into()),
                    group: "*".into(),
                    action: Action::Deregister,
                    reasons: vec![Reason::Expired],
                    outcome: Some(Outcome::Deregistered),
                    error: None,
                    thinning: None,
                }],
                jobs: vec![JobReport {
                    image_id: "ami-1".into(),
                    kind: crate::jobs::JobKind::DeleteSnapshot,
                    target: "snap-1".into(),
                    outcome: JobOutcome::Deleted,
                    attempts: 1,
                    deleted_objects: vec![],
                    error: None,
                }],
                snapshot_gib_deleted: 8,
                ..RegionReport::new("us-east-1")
            }],
            totals: Totals::default(),
            api_calls: BTreeMap::new(),
            throttles: 2,
            elapsed_ms: 1,
            stopped: None,
        };
        report.total();
        let line: serde_json::Value =
            serde_json::from_str(&report.emf_line(1_795_665_600_000)).unwrap();
        assert_eq!(line["ImagesDeregistered"], 1);
        assert_eq!(line["SnapshotsDeleted"], 1);
        assert_eq!(line["SnapshotGiBFreed"], 8);
        assert_eq!(line["DryRun"], "false");
        assert_eq!(line["ApiThrottles"], 2);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_795_665_600_000u64);
        for m in directive["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} declared but not set");
        }
        assert_eq!(directive["Dimensions"][0][0], "DryRun");
        assert_eq!(directive["Dimensions"].as_array().unwrap().len(), 1);
        assert!(line["EstimatedMonthlySavingUSD"].is_number());
    }

    #[test]
    fn each_rule_has_its_own_line_under_dry_run_and_rule() {
        let image = |id: &str, rule: Option<&str>, action, outcome| ImageReport {
            image_id: id.into(),
            name: id.into(),
            rule: rule.map(str::to_string),
            group: "*".into(),
            action,
            reasons: vec![Reason::Expired],
            outcome,
            error: None,
            thinning: None,
        };
        let mut report = SweepReport {
            dry_run: false,
            now: "2026-11-26T00:00:00Z".into(),
            regions: vec![RegionReport {
                images: vec![
                    image(
                        "ami-1",
                        Some("ci"),
                        Action::Deregister,
                        Some(Outcome::Deregistered),
                    ),
                    image("ami-2", Some("ci"), Action::Keep, None),
                    image("ami-3", Some("golden"), Action::Keep, None),
                    image("ami-4", None, Action::Keep, None),
                ],
                ..RegionReport::new("us-east-1")
            }],
            totals: Totals::default(),
            api_calls: BTreeMap::new(),
            throttles: 0,
            elapsed_ms: 1,
            stopped: None,
        };
        report.total();
        // The run's own line keeps its one dimension set (the alarms watch it).
        let run: serde_json::Value = serde_json::from_str(&report.emf_line(1)).unwrap();
        assert_eq!(
            run["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["DryRun"]])
        );
        let lines: Vec<serde_json::Value> = report
            .emf_rule_lines(1, &[])
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "one line per rule; unselected images in none"
        );
        let ci = &lines[0];
        assert_eq!(ci["Rule"], "ci");
        assert_eq!(
            ci["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["DryRun", "Rule"]])
        );
        assert_eq!(
            (ci["ImagesEvaluated"].as_u64(), ci["ImagesKept"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(
            (
                ci["ImagesCondemned"].as_u64(),
                ci["ImagesDeregistered"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(lines[1]["Rule"], "golden");
        assert_eq!(lines[1]["ImagesKept"], 1);
        let paired = report.emf_rule_lines(1, &[("Account", "111111111111")]);
        let paired: serde_json::Value = serde_json::from_str(&paired[0]).unwrap();
        assert_eq!(
            paired["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["DryRun", "Rule", "Account"]])
        );
    }

    #[test]
    fn a_pairs_failures_also_roll_up_under_dry_run_alone() {
        let mut report = SweepReport {
            dry_run: false,
            now: "2026-11-26T00:00:00Z".into(),
            regions: vec![RegionReport {
                error: Some("AccessDenied".into()),
                ..RegionReport::new("eu-west-1")
            }],
            totals: Totals::default(),
            api_calls: BTreeMap::new(),
            throttles: 0,
            elapsed_ms: 1,
            stopped: None,
        };
        report.total();
        let line: serde_json::Value = serde_json::from_str(
            &report.emf_line_with(1, &[("Account", "111111111111"), ("Region", "eu-west-1")]),
        )
        .unwrap();
        let sets = &line["_aws"]["CloudWatchMetrics"][0]["Dimensions"];
        assert_eq!(sets[0], serde_json::json!(["DryRun", "Account", "Region"]));
        // The alarm on Failures{DryRun} sees this pair.
        assert_eq!(sets[1], serde_json::json!(["DryRun"]));
        assert_eq!(line["Failures"], 1);
    }
}
