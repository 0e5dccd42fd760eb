//! What a run did: per region, per image and per cleanup job, with totals.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

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
    /// Not attempted: the deadline or `max_deregistrations` was reached.
    Deferred,
    /// The call failed; see the error.
    Failed,
    /// Dry run: would be deregistered.
    Planned,
}

/// One image in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// `ami-...`.
    pub image_id: String,
    /// Name.
    pub name: String,
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
}

/// One cleanup job in the report.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The image the storage belonged to.
    pub image_id: String,
    /// `delete_snapshot` or `delete_bundle`.
    pub kind: &'static str,
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
    /// Wall time of the run in milliseconds.
    pub elapsed_ms: u64,
}

impl SweepReport {
    /// Recomputes the totals from the regions.
    pub fn total(&mut self) {
        let mut t = Totals::default();
        for r in &self.regions {
            if r.error.is_some() {
                t.failures += 1;
            }
            t.images += r.images.len();
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
                if j.outcome == JobOutcome::Failed {
                    t.failures += 1;
                }
            }
        }
        self.totals = t;
    }
}

/// Counts AWS API calls per operation; shared by every adapter of a run.
#[derive(Debug, Default)]
pub struct ApiCalls(Mutex<BTreeMap<&'static str, u64>>);

impl ApiCalls {
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
