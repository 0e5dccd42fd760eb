//! The planner: a pure function from policy, inventory and instant to a plan.
//!
//! This is where the safety rules live. It does no I/O and reads no clock, so the
//! same inputs always give the same plan, whatever order the images came in.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use serde::Serialize;

use crate::inventory::Inventory;
use crate::model::{Image, ImageState, RootDevice, Timestamp, UsageRef};
use crate::policy::{ExceptionNote, Policy, RecycleBinMode, Retention, Rule, TemplateVersions};
use crate::recycle_bin::{BinFate, BinResource, SnapshotWait};
use crate::retire::{self, RetireStep, Stage};
use crate::storage::{self, Facts, Fate, Item, Kind, Rules};
use crate::thinning::{Period, ThinNote};
use crate::time::days_before;

/// What happens to an image. Read back from an approved plan ([`crate::approval`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Left alone.
    Keep,
    /// Deregistered, then its storage queued for cleanup.
    Deregister,
    /// Condemned, first stage of `retire`: its `DeprecationTime` is set.
    Deprecate,
    /// Condemned, `retire.disable_for_days`: disabled now, deregistered after the wait.
    Disable,
    /// Disabled by an earlier sweep, and the rules no longer condemn it: enabled again.
    Enable,
}

/// Why an image is kept (or, for [`Reason::Expired`], deregistered), in rule order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Rule 1: no retention rule's `names`/`tags`/`match` select it.
    NotSelected,
    /// Rule 2: it carries an `exclude_tags` tag of the rule that selected it.
    ExcludedByTag,
    /// Rule 2, expiring: an exception holds (its `ami-sweeper:keep-until` tag or an entry
    /// of the policy's `exceptions`) until the decision's `exception.until`.
    Excepted,
    /// Rule 3: AWS Backup manages it.
    BackupManaged,
    /// Rule 4: its state is not available, disabled, failed or error.
    Unsettled,
    /// Rule 5: among the newest `keep_count` available images of its group.
    WithinKeepCount,
    /// Rule 6: younger than `min_age_days`.
    TooYoung,
    /// Rule 7: deregistration protection is on (or in its cooldown).
    DeregistrationProtected,
    /// Rule 8: an instance, launch template version or launch configuration uses it.
    InUse,
    /// Rule 9: public or shared with another account.
    Shared,
    /// Rule 10: launched within `launched_within_days`.
    RecentlyLaunched,
    /// Rule 11: `recycle_bin: "require"` and no Recycle Bin rule would retain it.
    NoRecycleBinRule,
    /// Thinning: younger than its rule's first `retention.thin` window.
    BeforeThinning,
    /// Thinning: the newest image of its calendar period in its window (the decision's
    /// `thinning` names the window and the period).
    KeptByThinning,
    /// Rule 12: past `max_deregistrations` for this run.
    OverLimit,
    /// Rule 13: condemned, and going through `retire`'s stages (deprecated or disabled,
    /// waiting until `eligible_at`).
    Retiring,
    /// Rule 14: nothing keeps it.
    Expired,
    /// Rule 14, under thinning: in a `retention.thin` window and not the newest of its
    /// period there (or in a `none` window); deregistered like an expired image.
    Thinned,
    /// An approved run: condemned (or to be enabled) now, but the approved plan does not
    /// name the image with this action; kept. Today's reasons follow.
    NotApproved,
    /// An approved run: the approved plan names the image, but today's rules keep it
    /// (today's reasons follow).
    ApprovedButKept,
}

impl Reason {
    /// The reason's name as it appears in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotSelected => "not_selected",
            Self::ExcludedByTag => "excluded_by_tag",
            Self::Excepted => "excepted",
            Self::BackupManaged => "backup_managed",
            Self::Unsettled => "unsettled",
            Self::WithinKeepCount => "within_keep_count",
            Self::TooYoung => "too_young",
            Self::DeregistrationProtected => "deregistration_protected",
            Self::InUse => "in_use",
            Self::Shared => "shared",
            Self::RecentlyLaunched => "recently_launched",
            Self::NoRecycleBinRule => "no_recycle_bin_rule",
            Self::BeforeThinning => "before_thinning",
            Self::KeptByThinning => "kept_by_thinning",
            Self::OverLimit => "over_limit",
            Self::Retiring => "retiring",
            Self::Expired => "expired",
            Self::Thinned => "thinned",
            Self::NotApproved => "not_approved",
            Self::ApprovedButKept => "approved_but_kept",
        }
    }

    /// Whether this deciding reason condemns the image (`expired` or `thinned`).
    pub fn condemns(self) -> bool {
        matches!(self, Self::Expired | Self::Thinned)
    }
}

/// Why a snapshot or bundle of a deregistered image stays: the one list of
/// [`crate::storage`], shared with the reconciliation and the worker.
pub use crate::storage::StorageReason as RetainReason;

/// The fate of one snapshot of a deregistered image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotPlan {
    /// `snap-...`.
    pub snapshot_id: String,
    /// Volume size in GiB, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_gib: Option<u64>,
    /// `delete` or `retain`.
    pub action: CleanupAction,
    /// Why it is retained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RetainReason>,
    /// Images that keep it (retained), or other deregistered images that share it
    /// (deleted only after all of them are gone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
    /// The image enters the Recycle Bin (or the snapshot waits for one that is there): the
    /// first instant a sweep may delete it, written on the snapshot as
    /// `ami-sweeper:delete-after` before the image is deregistered (also when another image
    /// keeps it: a restore of this one would need it). Never earlier than the tag it had.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_instant"
    )]
    pub delete_after: Option<Timestamp>,
}

pub use crate::time::ser_opt_instant;

impl SnapshotPlan {
    /// Retained to wait for the Recycle Bin (not merely tagged while something else keeps it).
    pub fn is_deferred(&self) -> bool {
        matches!(
            self.reason,
            Some(RetainReason::ImageInRecycleBin | RetainReason::DeferredForRecycleBin)
        )
    }
}

/// The fate of an instance-store image's S3 bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundlePlan {
    /// `ImageLocation` as EC2 reports it.
    pub location: String,
    /// Bucket parsed from the location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Manifest key parsed from the location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// `delete` or `retain`.
    pub action: CleanupAction,
    /// Why it is retained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RetainReason>,
    /// Other images registered from the same manifest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
    /// A deletion planned without the manifest object's tags (the planner reads none): an
    /// exclude tag there still keeps it, decided when its job is verified at the sweep.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tags_unknown: bool,
}

pub use crate::storage::CleanupAction;

/// A lineage: the position of the rule that groups it (`None`: no rule selects it) and
/// its group key's components.
pub type Lineage = (Option<usize>, Vec<String>);

/// The decision for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `ami-...`.
    pub image_id: String,
    /// Image name.
    pub name: String,
    /// The retention rule that decided it (the first whose selection it satisfies); `None`
    /// when no rule selects it (`not_selected`).
    pub rule: Option<String>,
    /// Group (lineage) key, components joined with `/`; `*` when the rule has no `group_by`.
    /// With several rules, lineages are per rule: `<rule>: <key>`, and `(not selected)`
    /// for images no rule takes.
    pub group: String,
    /// The lineage as the planner counts it: the grouping rule's position and the key's
    /// components. `group` is only its display form, which two lineages can share (a
    /// rule name or tag value containing `": "` or `/`): scopes compare this.
    #[serde(skip)]
    pub lineage: Lineage,
    /// Creation instant.
    #[serde(serialize_with = "crate::time::ser_instant")]
    pub creation_date: Timestamp,
    /// EC2 state.
    pub state: ImageState,
    /// Keep or deregister.
    pub action: Action,
    /// The first matching rule first; further applicable keep reasons may follow.
    pub reasons: Vec<Reason>,
    /// What uses it, when anything does (what counts under the policy's
    /// `usage.launch_template_versions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<UsageRef>,
    /// Launch template versions naming it that do not count under the policy's
    /// `usage.launch_template_versions` (listed here, not in `used_by`); with `all`, the
    /// ones `default_and_latest` would not count (they are in `used_by` too), so that the
    /// plan shows what a narrower choice would free.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_versions: Vec<UsageRef>,
    /// For deregistered images: their EBS snapshots.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotPlan>,
    /// For deregistered instance-store images: their S3 bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundlePlan>,
    /// For deregistered images a Recycle Bin rule retains: until when they can be
    /// restored, and whether their snapshots wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recycle_bin: Option<BinFate>,
    /// For retiring images: the first instant a sweep may take the next stage.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_instant"
    )]
    pub eligible_at: Option<Timestamp>,
    /// The retirement call the sweep makes for the action `deprecate`, `disable` or
    /// `enable` (decided here, with the plan, so every path makes the same one).
    #[serde(skip)]
    pub step: Option<RetireStep>,
    /// Under `retention.thin`, for images old enough to be in a window: the window and the
    /// period the image represents (`kept_by_thinning`) or lost in (`thinned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinning: Option<ThinNote>,
    /// For `excepted` images: the exception that keeps them, until when and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionNote>,
}

impl Decision {
    /// The first (deciding) reason.
    pub fn reason(&self) -> Reason {
        self.reasons[0]
    }

    /// `ami-... name: excepted until ... (source: reason)`: how the plan's tail and the
    /// summary messages list an exception (empty after the colon when none keeps it).
    pub fn exception_line(&self) -> String {
        let what = self
            .exception
            .as_ref()
            .map(ExceptionNote::describe)
            .unwrap_or_default();
        format!("{} {}: {what}", self.image_id, self.name)
    }
}

/// Counts over a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Images to deregister.
    pub deregister: usize,
    /// Images to keep.
    pub keep: usize,
    /// Images to deprecate (first retirement stage).
    pub deprecate: usize,
    /// Images to disable (retirement's wait).
    pub disable: usize,
    /// Images disabled earlier that the rules no longer condemn: enabled again.
    pub enable: usize,
    /// Decisions by their first reason.
    pub by_reason: BTreeMap<Reason, usize>,
    /// Decisions by the rule that decided them (images no rule selects are not counted).
    pub by_rule: BTreeMap<String, RuleCounts>,
    /// Distinct snapshots to delete.
    pub snapshots_to_delete: usize,
    /// Distinct snapshots of deregistered images that stay.
    pub snapshots_retained: usize,
    /// GiB of the snapshots to delete (where sizes are known).
    pub snapshot_gib_to_delete: u64,
    /// Bundles to delete.
    pub bundles_to_delete: usize,
    /// Snapshots whose deletion waits for their image to leave the Recycle Bin.
    pub snapshots_deferred: usize,
    /// Images kept in use only by stale launch template versions: what
    /// `usage.launch_template_versions: "default_and_latest"` would free.
    pub kept_only_by_stale_versions: usize,
}

/// What one rule decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounts {
    /// Images the rule decided.
    pub images: usize,
    /// Of them, to deregister.
    pub deregister: usize,
    /// To keep.
    pub keep: usize,
    /// To deprecate or disable (retiring).
    pub retire: usize,
    /// To enable again.
    pub enable: usize,
}

/// The whole plan for one inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The instant ages were measured from.
    #[serde(serialize_with = "crate::time::ser_instant")]
    pub now: Timestamp,
    /// One decision per input image, ordered by group, newest first, then id.
    pub decisions: Vec<Decision>,
    /// Counts.
    pub summary: Summary,
    /// What the inventory could not establish.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Snapshots whose image is gone (offline: with `plan --snapshots`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphans: Option<crate::orphans::Reconciliation>,
}

impl Plan {
    /// Keeps every bundle whose bucket is not in `allowed` (the deployment's bundle
    /// buckets; none: bundle cleanup is off). The worker refuses such jobs anyway, and a
    /// bundle in a bucket the sweep does not scan could not be reconciled if its job were lost.
    pub fn retain_bundles_outside(&mut self, allowed: &std::collections::BTreeSet<String>) {
        let mut changed = false;
        for d in &mut self.decisions {
            if let Some(b) = d.bundle.as_mut() {
                let outside = b
                    .bucket
                    .as_ref()
                    .is_some_and(|bucket| !allowed.contains(bucket));
                if b.action == CleanupAction::Delete && outside {
                    b.action = CleanupAction::Retain;
                    b.reason = Some(RetainReason::BucketNotConfigured);
                    b.tags_unknown = false;
                    changed = true;
                }
            }
        }
        if changed {
            self.summary = summarize(&self.decisions);
        }
    }

    /// The decisions to deregister, oldest first: the order a sweep executes them in.
    pub fn condemned(&self) -> Vec<&Decision> {
        let mut v: Vec<&Decision> = self
            .decisions
            .iter()
            .filter(|d| {
                matches!(
                    d.action,
                    Action::Deregister | Action::Deprecate | Action::Disable
                )
            })
            .collect();
        v.sort_by(|a, b| {
            oldest_first(
                (a.creation_date, a.image_id.as_str()),
                (b.creation_date, b.image_id.as_str()),
            )
        });
        v
    }
}

/// How many days ahead the summaries list the exceptions that lapse.
pub const LAPSING_WITHIN_DAYS: u64 = 14;

impl Plan {
    /// The `excepted` decisions whose exception lapses within `days` of the plan's
    /// instant, soonest first (ties by id): what the summaries list with their reasons.
    pub fn lapsing(&self, days: u64) -> Vec<&Decision> {
        let horizon = crate::time::days_after(self.now, days);
        let mut v: Vec<&Decision> = self
            .decisions
            .iter()
            .filter(|d| {
                d.exception
                    .as_ref()
                    .is_some_and(|e| e.lapses_between(self.now, horizon))
            })
            .collect();
        v.sort_by_key(|d| {
            (
                d.exception.as_ref().and_then(|e| e.until),
                d.image_id.as_str(),
            )
        });
        v
    }

    /// Keeps only the decisions `keep` admits (a run's scope), with the summary recounted.
    pub fn retain_decisions(&mut self, keep: impl FnMut(&Decision) -> bool) {
        self.decisions.retain(keep);
        self.summary = summarize(&self.decisions);
    }

    /// Replaces each decision's action by `action(decision)` (a run that may not perform a
    /// stage keeps those images as they are), with the summary recounted.
    pub fn map_actions(&mut self, mut action: impl FnMut(&Decision) -> Action) {
        for d in &mut self.decisions {
            d.action = action(d);
        }
        self.summary = summarize(&self.decisions);
    }

    /// Changes each decision in place (an approved run's narrowing: action and reasons),
    /// with the summary recounted.
    pub fn map_decisions(&mut self, f: impl FnMut(&mut Decision)) {
        self.decisions.iter_mut().for_each(f);
        self.summary = summarize(&self.decisions);
    }

    /// Narrows the plan to the group (lineage) of `image_id`, as an AMI state change
    /// event asks. Returns false, and empties the plan, when the image is not in it.
    pub fn restrict_to_group_of(&mut self, image_id: &str) -> bool {
        let Some(group) = self
            .decisions
            .iter()
            .find(|d| d.image_id == image_id)
            .map(|d| d.group.clone())
        else {
            self.decisions.clear();
            self.summary = summarize(&self.decisions);
            return false;
        };
        self.decisions.retain(|d| d.group == group);
        self.summary = summarize(&self.decisions);
        true
    }
}

/// Splits an instance-store `ImageLocation` of the documented form
/// `bucket/prefix/name.manifest.xml` into bucket and manifest key. Anything else (a URL
/// such as `s3://bucket/...` or `https://bucket.s3.../...`, a bucket name S3 would not
/// accept) is `None`: the bundle is then retained, never guessed at.
pub fn parse_bundle_location(location: &str) -> Option<(String, String)> {
    let (bucket, key) = location.split_once('/')?;
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    let key_ok = key.ends_with(".manifest.xml")
        && !key.starts_with('/')
        && key.len() > ".manifest.xml".len();
    (bucket_ok && key_ok).then(|| (bucket.to_string(), key.to_string()))
}

/// Oldest first, ties by id: the order a sweep works in and `max_deregistrations` counts in.
fn oldest_first(a: (Timestamp, &str), b: (Timestamp, &str)) -> std::cmp::Ordering {
    a.cmp(&b)
}

/// Newest first, ties by id: the order `keep_count` ranks in and tables list.
fn newest_first(a: (Timestamp, &str), b: (Timestamp, &str)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

fn by_age(img: &Image) -> (Timestamp, &str) {
    (img.creation_date, img.id.as_str())
}

/// Decides every image's fate under `policy` at instant `now`: each image goes to the
/// first rule that selects it (first match wins; none: rule 1); rules 1-4 give a single
/// reason, rules 5-10 every keep reason that applies, rules 11-12 decide the rest.
pub fn plan(policy: &Policy, inventory: &Inventory, now: Timestamp) -> Plan {
    let images = inventory.images();
    // Rules 1-10 judge each image as it was before ami-sweeper's own calls; the
    // retirement stages and the storage read it as it is.
    let seen: Vec<Cow<'_, Image>> = images.iter().map(retire::as_it_was).collect();
    let rule_of: Vec<Option<usize>> = seen.iter().map(|i| policy.rule_for(i, now)).collect();
    // Exceptions read the image as it is: `ami-sweeper:keep-until` is one of its own tags.
    let mut exceptions: Vec<Option<ExceptionNote>> = images
        .iter()
        .zip(&rule_of)
        .map(|(img, r)| r.and_then(|_| policy.exception_for(img, now)))
        .collect();
    let groups: Vec<Vec<&str>> = seen
        .iter()
        .zip(&rule_of)
        .map(|(img, r)| group_key(grouping_rule(policy, *r), img))
        .collect();
    let early: Vec<Option<Reason>> = seen
        .iter()
        .zip(&rule_of)
        .zip(&exceptions)
        .map(|((img, r), e)| early_reason(policy, *r, img, e.is_some()))
        .collect();
    // Only the exceptions that decide are reported (an excluded image keeps its reason).
    for (e, r) in exceptions.iter_mut().zip(&early) {
        if *r != Some(Reason::Excepted) {
            *e = None;
        }
    }
    let kept = kept_by_count(policy, &seen, &rule_of, &early, &groups);
    let cutoffs: Vec<Cutoffs> = policy
        .rules
        .iter()
        .map(|r| Cutoffs::new(&r.retention, now))
        .collect();
    let mut reasons: Vec<Vec<Reason>> = seen
        .iter()
        .enumerate()
        .map(|(i, img)| match (early[i], rule_of[i]) {
            (None, Some(rule)) => keep_reasons(policy, inventory, img, kept[i], &cutoffs[rule]),
            (r, _) => vec![r.unwrap_or(Reason::NotSelected)],
        })
        .collect();
    let thin = apply_thinning(policy, &seen, &rule_of, &early, &groups, &mut reasons, now);
    apply_limit(policy, images, &mut reasons);
    let stages = apply_retirement(policy, images, &rule_of, &mut reasons, now);
    thin.name_thinned(&mut reasons);
    let ctx = DecideContext {
        policy,
        inventory,
        rule_of: &rule_of,
        groups: &groups,
        stages: &stages,
        notes: thin.notes,
        exceptions,
        now,
    };
    let decisions = decide(ctx, reasons);
    let summary = summarize(&decisions);
    let warnings = plan_warnings(inventory, &decisions);
    Plan {
        now,
        decisions,
        summary,
        warnings,
        orphans: None,
    }
}

/// Rules 1-4: not selected by any rule, excluded by the deciding rule's tags (it never
/// falls through to a later rule) or by an exception that holds (`excepted`), AWS
/// Backup-managed, unsettled. None of these counts toward `keep_count`.
fn early_reason(
    policy: &Policy,
    rule: Option<usize>,
    img: &Image,
    excepted: bool,
) -> Option<Reason> {
    let Some(rule) = rule.map(|r| &policy.rules[r]) else {
        return Some(Reason::NotSelected);
    };
    if rule.excludes(img) {
        Some(Reason::ExcludedByTag)
    } else if excepted {
        Some(Reason::Excepted)
    } else if img.is_backup_managed() {
        Some(Reason::BackupManaged)
    } else if !img.state.is_settled() {
        Some(Reason::Unsettled)
    } else {
        None
    }
}

/// Rule 5: the newest `keep_count` available images of each group that passed rules 1-4,
/// groups being per rule (two rules never share a lineage) and counts the rule's own.
/// `images` are as the rules see them ([`retire::as_it_was`]): an image the sweeper is
/// retiring counts as available, one disabled by hand or by someone else does not.
fn kept_by_count(
    policy: &Policy,
    images: &[Cow<'_, Image>],
    rule_of: &[Option<usize>],
    early: &[Option<Reason>],
    groups: &[Vec<&str>],
) -> Vec<bool> {
    let mut kept = vec![false; images.len()];
    if policy.rules.iter().all(|r| r.retention.keep_count == 0) {
        return kept;
    }
    let mut by_group: HashMap<(usize, &[&str]), Vec<usize>> = HashMap::default();
    for (i, img) in images.iter().enumerate() {
        if let (true, Some(rule)) = (counted(img, early[i]), rule_of[i]) {
            if policy.rules[rule].retention.keep_count > 0 {
                by_group
                    .entry((rule, groups[i].as_slice()))
                    .or_default()
                    .push(i);
            }
        }
    }
    for ((rule, _), members) in by_group.iter_mut() {
        let keep = usize::try_from(policy.rules[*rule].retention.keep_count).unwrap_or(usize::MAX);
        members.sort_by(|&a, &b| newest_first(by_age(&images[a]), by_age(&images[b])));
        for &i in members.iter().take(keep) {
            kept[i] = true;
        }
    }
    kept
}

/// Whether `keep_count` (and thinning's choice of a period's newest) counts an image that
/// a rule selects: it passed rules 1-4 and is available as the rules see it
/// ([`retire::as_it_was`]: an image the sweeper is retiring counts).
fn counted(img: &Image, early: Option<Reason>) -> bool {
    early.is_none() && img.state == ImageState::Available
}

/// What the thinning step decided: each image's window note, and which images it
/// condemns (left without a keep reason, for rule 12 to take or hold).
struct Thinning {
    notes: Vec<Option<ThinNote>>,
    thinned: Vec<bool>,
}

impl Thinning {
    /// Names the deciding reason of the images thinning condemned: `thinned`, not
    /// `expired` (held ones stay `over_limit`, retiring ones `retiring`).
    fn name_thinned(&self, reasons: &mut [Vec<Reason>]) {
        for (r, thinned) in reasons.iter_mut().zip(&self.thinned) {
            if *thinned && r[0] == Reason::Expired {
                r[0] = Reason::Thinned;
            }
        }
    }
}

/// A period of one lineage in one unit: the lineage's number (its rule and group key,
/// numbered once per plan, so the key hashes integers only), the unit and the period.
type PeriodKey = (u32, Period, i64);

/// An image's thinned lineage: its rule and the lineage's number in the plan.
type ThinLineage = (usize, u32);

/// What thinning needs of one rule, computed once per plan: its windows, their distinct
/// units and their starts at the plan's instant.
struct RuleThin<'p> {
    windows: &'p [crate::thinning::Window],
    units: Vec<Period>,
    cutoffs: Vec<Option<Timestamp>>,
}

/// Thinning (`retention.thin`), for images of a rule with windows that passed rules 1-4:
/// younger than the first window, `before_thinning`; in a window, `kept_by_thinning` when
/// it is the newest of its calendar period among its lineage's counted images (whatever
/// window those are in; an excepted image among them, as if unexcepted), else thinned;
/// under `none`, thinned. Protections and rules 5-10
/// still keep a thinned image; its note says which window it is in.
fn apply_thinning<'a>(
    policy: &Policy,
    images: &'a [Cow<'a, Image>],
    rule_of: &[Option<usize>],
    early: &[Option<Reason>],
    groups: &'a [Vec<&'a str>],
    reasons: &mut [Vec<Reason>],
    now: Timestamp,
) -> Thinning {
    let mut out = Thinning {
        notes: vec![None; images.len()],
        thinned: vec![false; images.len()],
    };
    let rules: Vec<Option<RuleThin<'_>>> = policy
        .rules
        .iter()
        .map(|r| {
            let windows = r.retention.thin.as_slice();
            let mut units: Vec<Period> = windows.iter().map(|w| w.keep_one_per).collect();
            units.sort_unstable();
            units.dedup();
            let cutoffs = crate::thinning::cutoffs(windows, now);
            (!windows.is_empty()).then_some(RuleThin {
                windows,
                units,
                cutoffs,
            })
        })
        .collect();
    if rules.iter().all(Option::is_none) {
        return out;
    }
    let (lineage, newest) = period_newest(policy, images, rule_of, early, groups, &rules);
    for (i, img) in images.iter().enumerate() {
        // An excepted image takes its place among its period's images but is kept.
        let Some((rule, id)) = lineage[i].filter(|_| early[i].is_none()) else {
            continue;
        };
        let Some(r) = rules[rule].as_ref() else {
            continue;
        };
        let Some(w) =
            crate::thinning::window_at(&r.cutoffs, img.creation_date).map(|w| &r.windows[w])
        else {
            reasons[i].push(Reason::BeforeThinning);
            continue;
        };
        out.notes[i] = Some(ThinNote::new(w, img.creation_date));
        let unit = w.keep_one_per;
        let representative = unit
            .key(img.creation_date)
            .is_some_and(|period| newest.get(&(id, unit, period)) == Some(&i));
        if representative {
            reasons[i].push(Reason::KeptByThinning);
        } else {
            out.thinned[i] = true;
        }
    }
    out
}

/// Each image's thinned lineage (its rule and lineage number; `None`: thinning does not
/// see it) and the newest counted image of every period of every lineage. An image an
/// exception keeps is seen as it would be without the exception, so the lapse of an
/// exception moves no period's representative: an exception changes its own image only.
fn period_newest<'a>(
    policy: &Policy,
    images: &'a [Cow<'a, Image>],
    rule_of: &[Option<usize>],
    early: &[Option<Reason>],
    groups: &'a [Vec<&'a str>],
    rules: &[Option<RuleThin<'_>>],
) -> (Vec<Option<ThinLineage>>, HashMap<PeriodKey, usize>) {
    let seen: Vec<Option<Reason>> = early
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Some(Reason::Excepted) => early_reason(policy, rule_of[i], &images[i], false),
            e => *e,
        })
        .collect();
    let mut lineages: HashMap<(usize, &'a [&'a str]), u32> = HashMap::default();
    let lineage: Vec<Option<ThinLineage>> = (0..images.len())
        .map(|i| {
            let rule = rule_of[i].filter(|r| seen[i].is_none() && rules[*r].is_some())?;
            let next = u32::try_from(lineages.len()).unwrap_or(u32::MAX);
            Some((
                rule,
                *lineages.entry((rule, groups[i].as_slice())).or_insert(next),
            ))
        })
        .collect();
    let mut newest: HashMap<PeriodKey, usize> = HashMap::default();
    for (i, img) in images.iter().enumerate() {
        let Some((rule, id)) = lineage[i].filter(|_| counted(img, seen[i])) else {
            continue;
        };
        for &unit in rules[rule].as_ref().map_or(&[][..], |r| r.units.as_slice()) {
            let Some(period) = unit.key(img.creation_date) else {
                continue;
            };
            let slot = newest.entry((id, unit, period)).or_insert(i);
            if newest_first(by_age(img), by_age(&images[*slot])).is_lt() {
                *slot = i;
            }
        }
    }
    (lineage, newest)
}

/// The instants rules 6 and 10 compare against, computed once per rule and plan.
struct Cutoffs {
    now: Timestamp,
    /// Created after this is too young (`None`: everything is).
    min_age: Option<Timestamp>,
    /// Launched after this is recent (`None`: no such rule; `Some(None)`: every launch).
    launched: Option<Option<Timestamp>>,
}

impl Cutoffs {
    fn new(ret: &Retention, now: Timestamp) -> Self {
        Self {
            now,
            min_age: days_before(now, ret.min_age_days),
            launched: ret.launched_within_days.map(|d| days_before(now, d)),
        }
    }
}

/// Rules 5-10: every keep reason that applies to an image that passed rules 1-4, under
/// its rule's cutoffs and the policy-wide protections.
fn keep_reasons(
    policy: &Policy,
    inventory: &Inventory,
    img: &Image,
    kept_by_count: bool,
    cut: &Cutoffs,
) -> Vec<Reason> {
    let mut r = Vec::new();
    if kept_by_count {
        r.push(Reason::WithinKeepCount);
    }
    if cut.min_age.is_none_or(|cutoff| img.creation_date > cutoff) {
        r.push(Reason::TooYoung);
    }
    if img.protection.is_protected_at(cut.now) {
        r.push(Reason::DeregistrationProtected);
    }
    if policy.protection.skip_in_use
        && inventory
            .usage
            .is_used_under(&img.id, policy.usage.launch_template_versions)
    {
        r.push(Reason::InUse);
    }
    if policy.protection.skip_shared && img.is_shared() {
        r.push(Reason::Shared);
    }
    if let Some(cutoff) = cut.launched {
        let recent = match (img.last_launched, cutoff) {
            (Some(_), None) => true,
            (Some(t), Some(c)) => t > c,
            (None, _) => false,
        };
        if recent {
            r.push(Reason::RecentlyLaunched);
        }
    }
    if policy.recycle_bin == RecycleBinMode::Require && bin_retention(inventory, img).is_none() {
        r.push(Reason::NoRecycleBinRule);
    }
    r
}

/// The days a Recycle Bin rule keeps this image restorable once deregistered (only
/// EBS-backed images enter the bin).
fn bin_retention(inventory: &Inventory, img: &Image) -> Option<u32> {
    (img.root_device != RootDevice::InstanceStore)
        .then(|| {
            inventory
                .recycle_bin
                .retention(BinResource::Image, Some(&img.tags))
        })
        .flatten()
}

/// For a condemned image a Recycle Bin rule retains: until when it is restorable, and
/// whether its snapshots wait for it (each snapshot's own fate says until when).
fn bin_fate(
    img: &Image,
    snapshots: &[SnapshotPlan],
    exits: &HashMap<&str, Timestamp>,
) -> Option<BinFate> {
    let restorable_until = *exits.get(img.id.as_str())?;
    let deferred = snapshots.iter().any(|s| s.is_deferred());
    Some(BinFate {
        restorable_until,
        snapshots: if deferred {
            SnapshotWait::Deferred
        } else {
            SnapshotWait::RetainedBySnapshotRule
        },
    })
}

/// Rules 11-12: the images nothing keeps go oldest first, up to `max_deregistrations`.
fn apply_limit(policy: &Policy, images: &[Image], reasons: &mut [Vec<Reason>]) {
    let mut candidates: Vec<usize> = (0..images.len())
        .filter(|&i| reasons[i].is_empty())
        .collect();
    candidates.sort_by(|&a, &b| oldest_first(by_age(&images[a]), by_age(&images[b])));
    let limit = policy
        .limits
        .max_deregistrations
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    for (n, &i) in candidates.iter().enumerate() {
        reasons[i].push(if n < limit {
            Reason::Expired
        } else {
            Reason::OverLimit
        });
    }
}

/// A retirement stage an image takes in this plan: its action, when it may go on, and the
/// call the sweep makes (none while it waits).
type Staged = (Action, Option<Timestamp>, Option<RetireStep>);

/// Rules 13 and the retirement stages: a condemned image goes through its rule's `retire` stages
/// (its action and when it may go on); one disabled by an earlier sweep that the rules no
/// longer condemn is enabled again. `None`: the action follows from the reasons.
fn apply_retirement(
    policy: &Policy,
    images: &[Image],
    rule_of: &[Option<usize>],
    reasons: &mut [Vec<Reason>],
    now: Timestamp,
) -> Vec<Option<Staged>> {
    images
        .iter()
        .zip(rule_of)
        .zip(reasons.iter_mut())
        .map(|((img, rule), r)| {
            let disabled = img.state == ImageState::Disabled;
            let (Reason::Expired, Some(rule)) = (r[0], rule) else {
                let held = matches!(r[0], Reason::OverLimit);
                let enable = !held && retire::retired_by_us(&img.tags);
                let undo = retire::undo(&img.tags, disabled);
                return enable.then_some((Action::Enable, None, Some(undo)));
            };
            let retire = &policy.rules[*rule].retire;
            let staged = match retire::stage(retire, &img.tags, disabled, now) {
                Stage::Deregister => return None,
                Stage::Deprecate => (Action::Deprecate, None, Some(RetireStep::Deprecate)),
                Stage::Disable { eligible } => {
                    let step = RetireStep::Disable {
                        from: retire::Before::of(img),
                    };
                    (Action::Disable, Some(eligible), Some(step))
                }
                Stage::Wait { eligible } => (Action::Keep, Some(eligible), None),
            };
            r[0] = Reason::Retiring;
            Some(staged)
        })
        .collect()
}

/// What the decisions of one plan are made from, besides the reasons.
struct DecideContext<'a> {
    policy: &'a Policy,
    inventory: &'a Inventory,
    rule_of: &'a [Option<usize>],
    groups: &'a [Vec<&'a str>],
    stages: &'a [Option<Staged>],
    /// Thinning's window notes, taken into the decisions.
    notes: Vec<Option<ThinNote>>,
    /// The exceptions that keep `excepted` images, taken into the decisions.
    exceptions: Vec<Option<ExceptionNote>>,
    now: Timestamp,
}

/// One decision per image, in display order, with the storage plans of condemned ones.
fn decide(dc: DecideContext<'_>, mut reasons: Vec<Vec<Reason>>) -> Vec<Decision> {
    let DecideContext {
        policy,
        inventory,
        rule_of,
        groups,
        stages,
        mut notes,
        mut exceptions,
        now,
    } = dc;
    let images = inventory.images();
    let condemned: Vec<bool> = reasons.iter().map(|r| r[0].condemns()).collect();
    let storage = StorageIndex::new(images);
    // Until when each condemned image entering the Recycle Bin stays restorable, by id.
    let exits: HashMap<&str, Timestamp> = images
        .iter()
        .zip(&condemned)
        .filter(|(_, c)| **c && policy.recycle_bin != RecycleBinMode::Ignore)
        .filter_map(|(i, _)| {
            bin_retention(inventory, i)
                .map(|d| (i.id.as_str(), crate::time::days_after(now, u64::from(d))))
        })
        .collect();
    let ctx = StorageContext {
        policy,
        inventory,
        condemned: &condemned,
        exits: &exits,
        now,
    };
    let mut group_names: Vec<String> = groups
        .iter()
        .zip(rule_of)
        .map(|(g, r)| display_group(policy, *r, g))
        .collect();
    let sections: Vec<usize> = rule_of.iter().map(|r| section(policy, *r)).collect();
    display_order(images, &sections, &group_names)
        .into_iter()
        .map(|i| {
            let img = &images[i];
            let reasons = std::mem::take(&mut reasons[i]);
            let deregister = reasons[0].condemns();
            let (action, eligible_at, step) = match stages[i] {
                Some(staged) => staged,
                None if deregister => (Action::Deregister, None, None),
                None => (Action::Keep, None, None),
            };
            let (usage, which) = (&inventory.usage, policy.usage.launch_template_versions);
            let users = usage.users(&img.id);
            let snapshots = if deregister {
                storage.snapshot_plans(&ctx, img)
            } else {
                Vec::new()
            };
            let recycle_bin = deregister
                .then(|| bin_fate(img, &snapshots, &exits))
                .flatten();
            Decision {
                image_id: img.id.clone(),
                name: img.name.clone(),
                rule: rule_of[i].map(|r| policy.rules[r].name.clone()),
                group: std::mem::take(&mut group_names[i]),
                lineage: (
                    grouping_index(policy, rule_of[i]),
                    groups[i].iter().map(|k| k.to_string()).collect(),
                ),
                creation_date: img.creation_date,
                state: img.state.clone(),
                action,
                eligible_at,
                step,
                used_by: users
                    .iter()
                    .filter(|u| usage.counts(u, which))
                    .cloned()
                    .collect(),
                stale_versions: users
                    .iter()
                    .filter(|u| !usage.counts(u, stale_under(which)))
                    .cloned()
                    .collect(),
                snapshots,
                bundle: if deregister {
                    storage.bundle_plan(&ctx, img)
                } else {
                    None
                },
                recycle_bin,
                reasons,
                thinning: notes[i].take(),
                exception: exceptions[i].take(),
            }
        })
        .collect()
}

/// The inventory's warnings plus one per bundle whose location is not understood and one
/// per exception tag that is unreadable or beyond `limits.max_exception_days`.
fn plan_warnings(inventory: &Inventory, decisions: &[Decision]) -> Vec<String> {
    let mut warnings = inventory.warnings.clone();
    for d in decisions {
        if let Some(problem) = d.exception.as_ref().and_then(|e| e.problem.as_ref()) {
            warnings.push(format!("{}: {problem}", d.image_id));
        }
        if let Some(b) = d
            .bundle
            .as_ref()
            .filter(|b| b.reason == Some(RetainReason::UnrecognisedLocation))
        {
            warnings.push(format!(
                "{}: ImageLocation {:?} is not of the form bucket/prefix/name.manifest.xml; \
                 its bundle is retained",
                d.image_id, b.location
            ));
        }
    }
    warnings.sort();
    warnings.dedup();
    warnings
}

/// The rule whose `group_by` forms an image's lineage: its deciding rule; for an image no
/// rule selects, the only rule of a single-rule policy (as before rules existed), else none.
fn grouping_rule(policy: &Policy, rule: Option<usize>) -> Option<&Rule> {
    grouping_index(policy, rule).map(|r| &policy.rules[r])
}

/// The position of the rule whose groups an image is counted in: its deciding rule; with
/// one rule, that rule even for images it does not select (as before rules existed).
fn grouping_index(policy: &Policy, rule: Option<usize>) -> Option<usize> {
    match rule {
        Some(r) => Some(r),
        None if policy.rules.len() == 1 => Some(0),
        None => None,
    }
}

fn group_key<'a>(rule: Option<&Rule>, img: &'a Image) -> Vec<&'a str> {
    let Some(g) = rule.and_then(|r| r.retention.group_by.as_ref()) else {
        return Vec::new();
    };
    let mut key: Vec<&str> = g
        .tags
        .iter()
        .map(|k| img.tags.get(k).unwrap_or(""))
        .collect();
    if let Some(re) = &g.name_regex {
        key.push(re.key(&img.name));
    }
    key
}

/// The label images no rule selects are grouped under when a policy has several rules.
pub const NOT_SELECTED_GROUP: &str = "(not selected)";

/// The group as reports show it: the key (`*` without `group_by`), prefixed with the rule
/// when the policy has several (lineages are per rule).
fn display_group(policy: &Policy, rule: Option<usize>, key: &[&str]) -> String {
    let single = policy.rules.len() == 1;
    let Some(r) = grouping_rule(policy, rule) else {
        return NOT_SELECTED_GROUP.to_string();
    };
    let key = if r.retention.group_by.is_none() {
        "*".to_string()
    } else {
        key.join("/")
    };
    if single {
        key
    } else {
        format!("{}: {key}", r.name)
    }
}

/// Where an image's section comes in a report: its rule's position; images no rule
/// selects last (with one rule: among that rule's, as before rules existed).
fn section(policy: &Policy, rule: Option<usize>) -> usize {
    match rule {
        Some(r) => r,
        None if policy.rules.len() == 1 => 0,
        None => policy.rules.len(),
    }
}

/// Indices of `images` in report order: by rule section, group name, newest first, then id.
fn display_order(images: &[Image], sections: &[usize], group_names: &[String]) -> Vec<usize> {
    // Rank each distinct group name once, so the sort compares integers.
    let mut distinct: Vec<&str> = group_names.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rank: HashMap<&str, usize> = distinct.iter().enumerate().map(|(i, g)| (*g, i)).collect();
    let ranks: Vec<usize> = group_names.iter().map(|g| rank[g.as_str()]).collect();
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        (sections[a], ranks[a])
            .cmp(&(sections[b], ranks[b]))
            .then_with(|| newest_first(by_age(&images[a]), by_age(&images[b])))
    });
    order
}

/// Which images (by index) reference each snapshot and each bundle manifest.
struct StorageIndex<'a> {
    images: &'a [Image],
    snapshot_users: HashMap<&'a str, Vec<usize>>,
    location_users: HashMap<&'a str, Vec<usize>>,
}

impl<'a> StorageIndex<'a> {
    fn new(images: &'a [Image]) -> Self {
        let mut snapshot_users: HashMap<&str, Vec<usize>> = HashMap::default();
        let mut location_users: HashMap<&str, Vec<usize>> = HashMap::default();
        for (i, img) in images.iter().enumerate() {
            for s in &img.snapshots {
                snapshot_users.entry(&s.id).or_default().push(i);
            }
            if img.root_device == RootDevice::InstanceStore {
                if let Some(loc) = &img.image_location {
                    location_users.entry(loc).or_default().push(i);
                }
            }
        }
        Self {
            images,
            snapshot_users,
            location_users,
        }
    }

    /// Splits the other users of a piece of storage into those that stay (in any state: a
    /// listed image is never assumed gone) and those that go in this plan, as sorted ids.
    fn others(
        &self,
        users: Option<&Vec<usize>>,
        me: &Image,
        condemned: &[bool],
    ) -> (Vec<String>, Vec<String>) {
        let mut staying = Vec::new();
        let mut going = Vec::new();
        for &u in users.into_iter().flatten() {
            let other = &self.images[u];
            if other.id == me.id {
                continue;
            }
            if condemned[u] {
                going.push(other.id.clone());
            } else {
                staying.push(other.id.clone());
            }
        }
        for v in [&mut staying, &mut going] {
            v.sort_unstable();
            v.dedup();
        }
        (staying, going)
    }

    /// Each snapshot of a condemned image, decided by [`storage::fate`]: images that stay
    /// and launch templates keep it, the condemned ones that share it go with it (its job
    /// waits for all of them), and those entering the Recycle Bin defer it.
    fn snapshot_plans(&self, ctx: &StorageContext<'_>, img: &Image) -> Vec<SnapshotPlan> {
        let (policy, inventory) = (ctx.policy, ctx.inventory);
        let rules = Rules::of(policy, None);
        let no_tags = crate::model::Tags::new();
        img.snapshots
            .iter()
            .map(|s| {
                let (staying, going) =
                    self.others(self.snapshot_users.get(s.id.as_str()), img, ctx.condemned);
                let tags = inventory.snapshot_tags.get(&s.id);
                let entering: Vec<(String, Option<Timestamp>)> = std::iter::once(&img.id)
                    .chain(&going)
                    .filter_map(|i| ctx.exits.get(i.as_str()).map(|t| (i.clone(), Some(*t))))
                    .collect();
                let bin_until = entering.iter().filter_map(|(_, t)| *t).max();
                // AMIs already in the bin that its mark or description names.
                let mut in_bin = entering;
                if let Some(there) = inventory.snapshots_in_bin.get(&s.id) {
                    in_bin.extend(there.iter().cloned());
                }
                let facts = Facts {
                    registered: staying.clone(),
                    templates: inventory
                        .usage
                        .snapshot_users(&s.id, policy.usage.launch_template_versions),
                    in_bin,
                    restorable_if_deleted: inventory
                        .recycle_bin
                        .retention(BinResource::Snapshot, tags)
                        .map(|d| crate::time::days_after(ctx.now, u64::from(d))),
                };
                let item = Item {
                    kind: Kind::Snapshot,
                    image_id: &img.id,
                    mapped: true,
                    tags: tags.unwrap_or(&no_tags),
                    // Listed and not found: its tags are unknown, so it is kept.
                    tags_known: tags.is_some() || !inventory.snapshots_listed,
                    description: "",
                    born: None,
                    bucket: None,
                };
                let fate = storage::fate(&item, &facts, &rules, ctx.now);
                // Kept by another image or the policy while this image enters the bin: the
                // tag still records when a restore of this image no longer needs it.
                let delete_after = match fate {
                    Fate::Delete => None,
                    Fate::DeferUntil(t, _) => Some(t),
                    Fate::Retain(r) if r.hands_off() => None,
                    Fate::Retain(_) => bin_until.map(|t| storage::later_delete_after(tags, t)),
                };
                let retained_by_others = fate.reason() == Some(RetainReason::UsedByOtherImage);
                SnapshotPlan {
                    snapshot_id: s.id.clone(),
                    size_gib: s.size_gib,
                    action: action_of(&fate),
                    reason: fate.reason(),
                    shared_with: if retained_by_others { staying } else { going },
                    delete_after,
                }
            })
            .collect()
    }

    /// The bundle of a condemned instance-store image, decided by [`storage::fate`] on
    /// what the inventory holds: no manifest tags (an offline plan cannot read them, and
    /// the sweep reads them when it marks the manifest), so a deletion is planned with
    /// `tags_unknown` and the job's verification, on fresh tags, decides it.
    fn bundle_plan(&self, ctx: &StorageContext<'_>, img: &Image) -> Option<BundlePlan> {
        if img.root_device != RootDevice::InstanceStore {
            return None;
        }
        let location = img.image_location.clone()?;
        let (staying, going) = self.others(
            self.location_users.get(location.as_str()),
            img,
            ctx.condemned,
        );
        let parsed = parse_bundle_location(&location);
        let no_tags = crate::model::Tags::new();
        let item = Item {
            kind: Kind::Bundle,
            image_id: &img.id,
            mapped: true,
            tags: &no_tags,
            tags_known: true,
            description: "",
            born: None,
            bucket: parsed.as_ref().map(|(b, _)| b.as_str()),
        };
        let facts = Facts {
            registered: staying.clone(),
            ..Facts::default()
        };
        let fate = storage::fate(&item, &facts, &Rules::of(ctx.policy, None), ctx.now);
        let shared_with = match fate.reason() {
            Some(RetainReason::UsedByOtherImage) => staying,
            Some(RetainReason::UnrecognisedLocation) => Vec::new(),
            _ => going,
        };
        let (bucket, manifest_key) = parsed.unzip();
        Some(BundlePlan {
            location,
            bucket,
            manifest_key,
            action: action_of(&fate),
            reason: fate.reason(),
            shared_with,
            tags_unknown: fate == Fate::Delete,
        })
    }
}

/// What the storage decisions of one plan share.
struct StorageContext<'a> {
    policy: &'a Policy,
    inventory: &'a Inventory,
    /// Whether each image (by index) is condemned.
    condemned: &'a [bool],
    /// Condemned images entering the Recycle Bin: until when they are restorable.
    exits: &'a HashMap<&'a str, Timestamp>,
    now: Timestamp,
}

/// Delete, or retain (kept or deferred).
fn action_of(fate: &Fate) -> CleanupAction {
    match fate {
        Fate::Delete => CleanupAction::Delete,
        Fate::Retain(_) | Fate::DeferUntil(..) => CleanupAction::Retain,
    }
}

/// The setting whose uncounted versions a plan lists as stale: the policy's own, or under
/// `all` (where every version counts) the narrowest, to show what it would free.
fn stale_under(which: TemplateVersions) -> TemplateVersions {
    match which {
        TemplateVersions::All => TemplateVersions::DefaultAndLatest,
        other => other,
    }
}

/// Counts one decision of `rule`. Decisions come grouped by rule, so the last rule
/// counted is tried first.
fn count_rule<'a>(by_rule: &mut Vec<(&'a str, RuleCounts)>, rule: &'a str, action: Action) {
    let i = match by_rule.iter().rposition(|(r, _)| *r == rule) {
        Some(i) => i,
        None => {
            by_rule.push((rule, RuleCounts::default()));
            by_rule.len() - 1
        }
    };
    let c = &mut by_rule[i].1;
    c.images += 1;
    match action {
        Action::Deregister => c.deregister += 1,
        Action::Keep => c.keep += 1,
        Action::Deprecate | Action::Disable => c.retire += 1,
        Action::Enable => c.enable += 1,
    }
}

fn summarize(decisions: &[Decision]) -> Summary {
    let mut s = Summary::default();
    let mut by_rule: Vec<(&str, RuleCounts)> = Vec::new();
    let mut delete: HashMap<&str, Option<u64>> = HashMap::default();
    let mut retained: HashSet<&str> = HashSet::default();
    let mut deferred: HashSet<&str> = HashSet::default();
    for d in decisions {
        match d.action {
            Action::Deregister => s.deregister += 1,
            Action::Keep => s.keep += 1,
            Action::Deprecate => s.deprecate += 1,
            Action::Disable => s.disable += 1,
            Action::Enable => s.enable += 1,
        }
        *s.by_reason.entry(d.reason()).or_default() += 1;
        if let Some(rule) = &d.rule {
            count_rule(&mut by_rule, rule, d.action);
        }
        if d.reasons.contains(&Reason::InUse)
            && !d.used_by.is_empty()
            && d.used_by.iter().all(|u| d.stale_versions.contains(u))
        {
            s.kept_only_by_stale_versions += 1;
        }
        for snap in &d.snapshots {
            match snap.action {
                CleanupAction::Delete => {
                    delete.insert(&snap.snapshot_id, snap.size_gib);
                }
                CleanupAction::Retain => {
                    retained.insert(&snap.snapshot_id);
                    if snap.is_deferred() {
                        deferred.insert(&snap.snapshot_id);
                    }
                }
            }
        }
        if d.bundle
            .as_ref()
            .is_some_and(|b| b.action == CleanupAction::Delete && b.shared_with.is_empty())
        {
            s.bundles_to_delete += 1;
        }
    }
    // A bundle shared only by deregistered images counts once.
    let mut shared_bundles: HashSet<&str> = HashSet::default();
    for d in decisions {
        if let Some(b) = &d.bundle {
            if b.action == CleanupAction::Delete && !b.shared_with.is_empty() {
                shared_bundles.insert(&b.location);
            }
        }
    }
    s.bundles_to_delete += shared_bundles.len();
    for (rule, counts) in by_rule {
        let total = s.by_rule.entry(rule.to_string()).or_default();
        total.images += counts.images;
        total.deregister += counts.deregister;
        total.keep += counts.keep;
        total.retire += counts.retire;
        total.enable += counts.enable;
    }
    s.snapshots_to_delete = delete.len();
    // Sizes come from the inventory; a corrupt one must not overflow (it saturates).
    s.snapshot_gib_to_delete = delete
        .values()
        .flatten()
        .fold(0u64, |a, b| a.saturating_add(*b));
    s.snapshots_retained = retained.len();
    s.snapshots_deferred = deferred.len();
    s
}

#[cfg(test)]
mod tests {
    use super::parse_bundle_location;

    #[test]
    fn only_the_documented_location_form_plans_a_bundle_deletion() {
        assert_eq!(
            parse_bundle_location("legacy-bundles/a/b.manifest.xml"),
            Some(("legacy-bundles".into(), "a/b.manifest.xml".into()))
        );
        for bad in [
            "s3://bucket/a.manifest.xml",
            "https://bucket.s3.amazonaws.com/a.manifest.xml",
            "Bucket/a.manifest.xml",
            "b/a.manifest.xml",
            "bucket/.manifest.xml",
            "bucket//a.manifest.xml",
            "bucket/a.manifest.xml.bak",
            "-bucket/a.manifest.xml",
            "bucket",
        ] {
            assert_eq!(parse_bundle_location(bad), None, "{bad}");
        }
    }
}
