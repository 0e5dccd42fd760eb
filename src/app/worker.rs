//! The cleanup worker: verifies cleanup jobs against AWS's own records ([`crate::verify`],
//! with facts read afresh) and runs those that pass, in one function,
//! [`verify_and_run`], that every path calls: the queue's batches (the SQS-triggered
//! Lambda, `ami-sweeper cleanup --queue-url`: [`handle_batch`]) and a sweep's jobs run in
//! process ([`run_in_process`]). So the two can never disagree about a job.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::app::cleanup::{run_job_paced, Attempt};
use crate::app::ratelimit::{self, PaceConfig, Pacer, Pacers};
use crate::app::report::JobOutcome;
use crate::app::stop::Stop;
use crate::error::AwsError;
use crate::jobs::{CleanupJob, JobTarget};
use crate::model::{ImageState, Manifest, Snapshot, Timestamp, Usage};
use crate::policy::TemplateVersions;
use crate::ports::Cleaner;
use crate::recycle_bin::{BinResource, BinRules};
use crate::storage::{self, Facts};
use crate::verify::{Verdict, WorkerRules};

pub use crate::app::cleanup::FACTS_FRESH_FOR;
pub use crate::app::in_process::{
    run_in_process, run_in_process_leaving, InProcess, IN_PROCESS_BATCH, IN_PROCESS_ROUNDS,
};

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

/// How a worker paces its EC2 calls: its long-lived pacers (one per account, Region and
/// bucket), the policy's share of the buckets, and this batch's stop (its deadline).
#[derive(Debug, Clone, Copy)]
pub struct Pacing<'a> {
    /// The worker's pacers, kept from batch to batch.
    pub pacers: &'a Pacers,
    /// The policy's `limits.api_share` (and any explicit rate).
    pub pace: PaceConfig,
    /// When this batch must stop waiting for EC2: a throttled call is retried until then.
    pub stop: &'a Stop,
}

impl Pacing<'_> {
    /// The pacer on `bucket` in (`account`, `region`): one per bucket, shared by whoever
    /// asks for it through these pacers.
    pub(crate) fn pacer(
        &self,
        account: Option<&str>,
        region: &str,
        bucket: ratelimit::Bucket,
    ) -> std::sync::Arc<Pacer> {
        self.pacers
            .get(account, region, bucket, self.pace.pace(bucket), self.stop)
    }
}

/// Where jobs act: the account (`None`: the deployment's own) and the Region.
pub type Place = (Option<String>, String);

/// Verifies and runs a batch of message bodies; the answers come in the same order.
/// A job's account and region are checked before any client is built for them; then
/// each (account, Region)'s jobs go through [`verify_and_run`]. Per region of the batch: one `DescribeSnapshots` for its snapshot jobs, one
/// `DescribeImages` for the jobs' images and one for the images using the snapshots, the
/// owned images' locations and the manifests' tags when it has bundle jobs, and only when
/// some job would otherwise run, one `ListImagesInRecycleBin` and the launch template
/// versions. Each job runs only if [`crate::storage::fate`] clears it with those facts. If
/// they cannot be read, every job of that region is retried later and nothing is deleted.
/// Every EC2 call goes through the (account, Region)'s pacer on its bucket: a throttled
/// call is retried there until the batch's stop, then the job is retried later.
pub async fn handle_batch<C: Cleaner, F>(
    clients: impl Fn(Option<String>, String) -> F,
    rules: &WorkerRules,
    pacing: Pacing<'_>,
    bodies: &[&str],
    now: crate::model::Timestamp,
) -> Vec<Handled>
where
    F: std::future::Future<Output = Result<C, String>>,
{
    handle_batch_locked(clients, &Unlocked, rules, pacing, bodies, now).await
}

/// Who may delete a pair's storage now. A worker runs a pair's queued jobs only while it
/// holds the pair ([`crate::chain::worker_claim`]: the pair's lease, which a chain holds
/// while its pair sweeper deletes the pair's storage in process), so one pair's
/// `DeleteSnapshot` bucket is never paced by two workers at once.
pub trait PairLocks: Sync {
    /// Takes the pair `place` for one batch; `Err(line)`: another holder has it (or the
    /// lease cannot be read), and the pair's jobs are left for later.
    fn take(&self, place: &Place) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Gives back a pair this batch took.
    fn release(&self, place: &Place) -> impl std::future::Future<Output = ()> + Send;
}

/// No pair locks: a deployment without a report bucket (no leases), the CLI's drain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlocked;

impl PairLocks for Unlocked {
    async fn take(&self, _: &Place) -> Result<(), String> {
        Ok(())
    }

    async fn release(&self, _: &Place) {}
}

/// As [`handle_batch`], each (account, Region) of the batch run only while this batch
/// holds it in `locks`; a pair another holder has keeps its jobs untouched, answered as
/// retries (the queue redelivers them after its visibility timeout). A batch mixing pairs
/// runs the pairs it can take and returns the others: one held pair never holds up the
/// rest.
pub async fn handle_batch_locked<C: Cleaner, F>(
    clients: impl Fn(Option<String>, String) -> F,
    locks: &impl PairLocks,
    rules: &WorkerRules,
    pacing: Pacing<'_>,
    bodies: &[&str],
    now: crate::model::Timestamp,
) -> Vec<Handled>
where
    F: std::future::Future<Output = Result<C, String>>,
{
    let mut out: Vec<Option<Handled>> = vec![None; bodies.len()];
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
    // The pairs of a batch at once: each at its own pacers, none waiting for another.
    let pairs = by_region
        .into_iter()
        .map(|(place, jobs)| run_pair(&clients, locks, rules, pacing, place, jobs, now));
    for (i, h) in futures_util::future::join_all(pairs)
        .await
        .into_iter()
        .flatten()
    {
        out[i] = Some(h);
    }
    out.into_iter()
        .map(|h| h.expect("every message is handled"))
        .collect()
}

/// One pair's jobs of a batch (`jobs`, with their places in the batch), run only while the
/// batch holds the pair in `locks`: else left untouched, answered as retries.
async fn run_pair<C: Cleaner, F>(
    clients: &impl Fn(Option<String>, String) -> F,
    locks: &impl PairLocks,
    rules: &WorkerRules,
    pacing: Pacing<'_>,
    place: Place,
    jobs: Vec<(usize, CleanupJob)>,
    now: Timestamp,
) -> Vec<(usize, Handled)>
where
    F: std::future::Future<Output = Result<C, String>>,
{
    let retry = |jobs: Vec<(usize, CleanupJob)>, why: String| {
        jobs.into_iter()
            .map(|(i, job)| (i, Handled::Ran(job, Attempt::Retry(why.clone()))))
            .collect()
    };
    if let Err(why) = locks.take(&place).await {
        tracing::info!(account = ?place.0, region = %place.1, reason = %why, "pair held: its jobs are left for later");
        return retry(jobs, format!("{why}; nothing was deleted"));
    }
    let out = match clients(place.0.clone(), place.1.clone()).await {
        Ok(c) => {
            let (at, jobs): (Vec<usize>, Vec<CleanupJob>) = jobs.into_iter().unzip();
            let handled = verify_and_run(&c, rules, pacing, &place, jobs, now, None).await;
            at.into_iter().zip(handled).collect()
        }
        // The account cannot be entered now: every job of it is retried later.
        Err(why) => retry(
            jobs,
            format!("cannot enter the job's account, nothing was deleted: {why}"),
        ),
    };
    locks.release(&place).await;
    out
}

/// Verifies jobs against facts read afresh in one (account, Region), `place`, through `c`,
/// and runs those that pass: the one verification of every path that deletes storage. Each
/// job's mandate, account and region are checked ([`WorkerRules::check_place`]; a job for
/// another place than `c`'s is refused), then [`crate::storage::fate`] decides it on the
/// facts, then it runs: no deletion starts more than [`FACTS_FRESH_FOR`] after the first
/// fact read (what is left comes back as a retry, to be verified again). The answers come
/// in the order of `jobs`; nothing is ever `Malformed` here. `facts_read` is answered (or
/// dropped) once the facts are read, before any deletion.
pub async fn verify_and_run<C: Cleaner>(
    c: &C,
    rules: &WorkerRules,
    pacing: Pacing<'_>,
    place: &Place,
    jobs: Vec<CleanupJob>,
    now: Timestamp,
    facts_read: Option<tokio::sync::oneshot::Sender<()>>,
) -> Vec<Handled> {
    let mut out: Vec<Option<Handled>> = vec![None; jobs.len()];
    let mut admitted = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let checked = rules.check_place(&job).and_then(|()| {
            if (&job.account, &job.region) == (&place.0, &place.1) {
                Ok(())
            } else {
                Err("its account and region are not the ones these clients act in".into())
            }
        });
        match checked {
            Err(why) => {
                out[i] = Some(Handled::Rejected(
                    job,
                    format!("{why}; nothing was deleted"),
                ))
            }
            Ok(()) => admitted.push((i, job)),
        }
    }
    if !admitted.is_empty() {
        let pacers = RegionPacers {
            describe: pacing.pacer(place.0.as_deref(), &place.1, ratelimit::DESCRIBE),
            place: place.clone(),
            pacing,
        };
        for (i, handled) in handle_region(c, rules, &pacers, admitted, now, facts_read).await {
            out[i] = Some(handled);
        }
    }
    out.into_iter()
        .map(|h| h.expect("every job is handled"))
        .collect()
}

/// One (account, Region)'s pacers: the Describe bucket for the facts; `DeleteSnapshot`'s
/// for the deletions, taken once the facts are read.
struct RegionPacers<'a> {
    describe: std::sync::Arc<Pacer>,
    place: Place,
    pacing: Pacing<'a>,
}

impl RegionPacers<'_> {
    /// The batch's stop, or the instant the facts whose reading began at `read_from` are
    /// [`FACTS_FRESH_FOR`] old, whichever comes first. (The first fact is the oldest: a
    /// later read slowed by throttling ages it.)
    fn fresh(&self, read_from: tokio::time::Instant) -> Stop {
        self.pacing.stop.sooner(read_from + FACTS_FRESH_FOR)
    }

    /// The `DeleteSnapshot` pacer (each deletion is made under it until its own `fresh`:
    /// batches run in process at once share it, each with its facts' freshness).
    fn delete(&self) -> std::sync::Arc<Pacer> {
        let bucket = ratelimit::DELETE_SNAPSHOT;
        let (account, region) = &self.place;
        let pace = self.pacing.pace.pace(bucket);
        self.pacing
            .pacers
            .get(account.as_deref(), region, bucket, pace, self.pacing.stop)
    }
}

/// What AWS says about a batch's targets (one region of one account).
#[derive(Default)]
struct Known {
    /// The snapshots that exist and are the account's, by id.
    snapshots: BTreeMap<String, Snapshot>,
    /// Those of the jobs' images that are registered.
    registered: FxHashSet<String>,
    /// Registered images referencing each of the batch's snapshots.
    users: BTreeMap<String, Vec<String>>,
    /// Registered images by `ImageLocation` (bundle jobs only).
    locations: BTreeMap<String, Vec<String>>,
    /// The bundle jobs' manifests (`None`: the object is gone).
    manifests: BTreeMap<(String, String), Option<Manifest>>,
    /// AMIs in the Recycle Bin with their exit, once asked.
    in_bin: FxHashMap<String, Option<Timestamp>>,
    /// Launch template versions' snapshot mappings, once asked.
    templates: Option<Usage>,
    /// The Recycle Bin's rules, once asked (for snapshot rules).
    bin_rules: Option<BinRules>,
}

/// The batch's snapshot ids and image ids (only well-formed `ami-` ids are asked about).
fn ids(jobs: &[(usize, CleanupJob)]) -> (Vec<String>, Vec<String>) {
    let snapshot_ids = unique(jobs.iter().filter_map(|(_, j)| match &j.target {
        JobTarget::DeleteSnapshot { snapshot_id } => Some(snapshot_id.clone()),
        JobTarget::DeleteBundle { .. } => None,
    }));
    let image_ids = unique(
        jobs.iter()
            .map(|(_, j)| j.image_id.clone())
            .filter(|i| storage::is_image_id(i)),
    );
    (snapshot_ids, image_ids)
}

/// The first round of facts: one `DescribeSnapshots` by id, one `DescribeImages` by the
/// jobs' image ids, one `DescribeImages` filtered by the snapshots; for bundle jobs the
/// owned images' locations and each manifest's tags.
async fn first_facts<C: Cleaner>(
    c: &C,
    describe: &Pacer,
    rules: &WorkerRules,
    jobs: &[(usize, CleanupJob)],
) -> Result<Known, AwsError> {
    let (snapshot_ids, image_ids) = ids(jobs);
    let mut k = Known::default();
    // The reads are independent: made at once, and ahead of the callers waiting at the
    // pair's Describe pacer (a sweep's launch-permission lookups, queued well ahead of its
    // deregistrations), taking every other token while both wait: deletions wait on
    // these, the lookups only on their turn.
    let none = snapshot_ids.is_empty();
    let snapshots = unless(none, || {
        describe.call_ahead("DescribeSnapshots", || c.owned_snapshots(&snapshot_ids))
    });
    let users = unless(none, || {
        describe.call_ahead("DescribeImages", || c.images_using_snapshots(&snapshot_ids))
    });
    let registered = unless(image_ids.is_empty(), || {
        describe.call_ahead("DescribeImages", || c.registered_images(&image_ids))
    });
    let (found, users, registered) = tokio::join!(snapshots, users, registered);
    k.snapshots = found?.into_iter().map(|s| (s.id.clone(), s)).collect();
    k.registered = registered?;
    {
        for img in users? {
            for s in img
                .snapshots
                .iter()
                .filter(|s| snapshot_ids.contains(&s.id))
            {
                k.users
                    .entry(s.id.clone())
                    .or_default()
                    .push(img.id.clone());
            }
        }
    }
    bundle_facts(c, describe, rules, jobs, &mut k).await?;
    Ok(k)
}

/// The answer of `read`, unless `skip` (nothing to ask): then the empty answer, with no
/// call made.
async fn unless<T: Default, F: Future<Output = Result<T, AwsError>>>(
    skip: bool,
    read: impl FnOnce() -> F,
) -> Result<T, AwsError> {
    match skip {
        true => Ok(T::default()),
        false => read().await,
    }
}

/// For bundle jobs in an allowed bucket: every registered image's location, each
/// manifest's tags, and (for an unmarked manifest, when orphans are on) its age.
async fn bundle_facts<C: Cleaner>(
    c: &C,
    describe: &Pacer,
    rules: &WorkerRules,
    jobs: &[(usize, CleanupJob)],
    k: &mut Known,
) -> Result<(), AwsError> {
    let bundles: Vec<(&String, &String)> = jobs
        .iter()
        .filter_map(|(_, j)| match &j.target {
            JobTarget::DeleteBundle {
                bucket,
                manifest_key,
            } => Some((bucket, manifest_key)),
            JobTarget::DeleteSnapshot { .. } => None,
        })
        .filter(|(b, _)| rules.bundle_buckets.contains(*b))
        .collect();
    if bundles.is_empty() {
        return Ok(());
    }
    for i in describe
        .call_ahead("DescribeImages", || c.list_images())
        .await?
    {
        if let (Some(loc), true) = (&i.image_location, i.state != ImageState::Deregistered) {
            k.locations
                .entry(loc.clone())
                .or_default()
                .push(i.id.clone());
        }
    }
    for (bucket, key) in bundles {
        let tags = match c.object_tags(bucket, key).await {
            Ok(t) => t,
            Err(e) if e.is("NoSuchKey") => {
                k.manifests.insert((bucket.clone(), key.clone()), None);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut m = Manifest {
            bucket: bucket.clone(),
            key: key.clone(),
            last_modified: None,
            tags,
        };
        if !m.tags.contains_key(storage::STORAGE_MARK) && rules.cleanup.orphans.is_some() {
            m.last_modified = c.manifest_modified(bucket, key).await?;
        }
        k.manifests.insert((bucket.clone(), key.clone()), Some(m));
    }
    Ok(())
}

/// The AMIs that may need a job's storage from the Recycle Bin: the job's image, and the
/// ones a snapshot's mark and description name.
fn bin_candidates(k: &Known, job: &CleanupJob) -> Vec<String> {
    let mut out = vec![job.image_id.clone()];
    if let JobTarget::DeleteSnapshot { snapshot_id } = &job.target {
        if let Some(s) = k.snapshots.get(snapshot_id) {
            out.extend(crate::orphans::named_images(s).map(str::to_string));
        }
    }
    out.retain(|i| storage::is_image_id(i));
    out
}

impl Known {
    /// The storage facts of one job, from what is known so far.
    fn facts(&self, rules: &WorkerRules, job: &CleanupJob, now: Timestamp) -> Facts {
        let mut registered: Vec<String> = match &job.target {
            JobTarget::DeleteSnapshot { snapshot_id } => {
                self.users.get(snapshot_id).cloned().unwrap_or_default()
            }
            JobTarget::DeleteBundle {
                bucket,
                manifest_key,
            } => self
                .locations
                .get(&format!("{bucket}/{manifest_key}"))
                .cloned()
                .unwrap_or_default(),
        };
        if self.registered.contains(&job.image_id) {
            registered.push(job.image_id.clone());
        }
        let snapshot = match &job.target {
            JobTarget::DeleteSnapshot { snapshot_id } => self.snapshots.get(snapshot_id),
            JobTarget::DeleteBundle { .. } => None,
        };
        // The worker reads launch templates, not what names their versions (Auto Scaling
        // groups, fleets, Batch): under `referenced` every version counts, never fewer.
        let which = match rules.templates {
            TemplateVersions::Referenced => TemplateVersions::All,
            other => other,
        };
        let templates = match (snapshot, &self.templates) {
            (Some(s), Some(u)) => u.snapshot_users(&s.id, which),
            _ => Vec::new(),
        };
        let restorable_if_deleted = match (snapshot, &self.bin_rules) {
            (Some(s), Some(r)) => r
                .retention(BinResource::Snapshot, Some(&s.tags))
                .map(|d| crate::time::days_after(now, u64::from(d))),
            _ => None,
        };
        Facts {
            registered,
            templates,
            in_bin: bin_candidates(self, job)
                .into_iter()
                .filter_map(|i| self.in_bin.get(&i).map(|exit| (i, *exit)))
                .collect(),
            restorable_if_deleted,
        }
    }

    /// The worker's decision about one job with what is known.
    fn verdict(&self, rules: &WorkerRules, job: &CleanupJob, now: Timestamp) -> Verdict {
        let facts = self.facts(rules, job, now);
        match &job.target {
            JobTarget::DeleteSnapshot { snapshot_id } => rules.snapshot_job(
                snapshot_id,
                &job.image_id,
                self.snapshots.get(snapshot_id),
                &facts,
                now,
            ),
            JobTarget::DeleteBundle {
                bucket,
                manifest_key,
            } => {
                let empty = Manifest {
                    bucket: bucket.clone(),
                    key: manifest_key.clone(),
                    last_modified: None,
                    tags: Default::default(),
                };
                match self.manifests.get(&(bucket.clone(), manifest_key.clone())) {
                    Some(None) => Verdict::Gone,
                    Some(Some(m)) => {
                        rules.bundle_job(bucket, manifest_key, &job.image_id, m, &facts, now)
                    }
                    // Not read: outside the bundle buckets (the rule refuses it).
                    None => {
                        rules.bundle_job(bucket, manifest_key, &job.image_id, &empty, &facts, now)
                    }
                }
            }
        }
    }
}

/// Every job's verdict. Jobs the first facts clear are checked further: the Recycle Bin
/// (`ListImagesInRecycleBin`) for the AMIs that may need their storage, the launch
/// template versions (snapshot jobs), and the bin's rules when an AMI is in the bin. The
/// templates, which need no fact, are read beside the first facts; the bin only after
/// them.
async fn verdicts<C: Cleaner>(
    c: &C,
    describe: &Pacer,
    rules: &WorkerRules,
    jobs: &[(usize, CleanupJob)],
    now: Timestamp,
) -> Result<Vec<Verdict>, AwsError> {
    // The launch templates are read beside the first facts (one wait at the pacer, not
    // two in turn) whenever a snapshot job may need them.
    let snapshot_jobs = jobs
        .iter()
        .any(|(_, j)| matches!(j.target, JobTarget::DeleteSnapshot { .. }));
    let templates = unless(!snapshot_jobs, || async {
        let read = describe.call_ahead("DescribeLaunchTemplateVersions", || c.template_snapshots());
        read.await.map(Some)
    });
    let (k, templates) = tokio::join!(first_facts(c, describe, rules, jobs), templates);
    let mut k = k?;
    let first: Vec<Verdict> = jobs.iter().map(|(_, j)| k.verdict(rules, j, now)).collect();
    let cleared: Vec<&CleanupJob> = jobs
        .iter()
        .zip(&first)
        .filter(|(_, v)| **v == Verdict::Proceed)
        .map(|((_, j), _)| j)
        .collect();
    if cleared.is_empty() {
        return Ok(first);
    }
    // The Recycle Bin is read once `DescribeImages` has answered, never beside it: an image
    // deregistered into the bin between the two reads would be in neither answer
    // (registered when the bin was read, gone when the images were).
    let asked: FxHashSet<String> = cleared.iter().flat_map(|j| bin_candidates(&k, j)).collect();
    k.in_bin = c.images_in_recycle_bin(&asked).await?;
    k.templates = templates?;
    if !k.in_bin.is_empty() {
        k.bin_rules = Some(c.bin_rules().await?);
    }
    Ok(jobs.iter().map(|(_, j)| k.verdict(rules, j, now)).collect())
}

async fn handle_region<C: Cleaner>(
    c: &C,
    rules: &WorkerRules,
    pacers: &RegionPacers<'_>,
    jobs: Vec<(usize, CleanupJob)>,
    now: Timestamp,
    facts_read: Option<tokio::sync::oneshot::Sender<()>>,
) -> Vec<(usize, Handled)> {
    let read_from = tokio::time::Instant::now();
    let verdicts = verdicts(c, &pacers.describe, rules, &jobs, now).await;
    drop(facts_read);
    let verdicts = match verdicts {
        Ok(v) => v,
        Err(e) => {
            let why = format!("cannot verify the jobs, nothing was deleted: {e}");
            return jobs
                .into_iter()
                .map(|(i, j)| (i, Handled::Ran(j, Attempt::Retry(why.clone()))))
                .collect();
        }
    };
    let fresh = pacers.fresh(read_from);
    let delete = pacers.delete();
    // The cleared jobs' deletions are made at once: each waits its turn at the pair's
    // `DeleteSnapshot` pacer (not behind the round trip of the one before it), and none
    // starts once the facts are no longer fresh. Jobs naming the same storage (a job
    // redelivered, or sent again) run one after another: the later finds it gone, so the
    // storage is deleted and reported once.
    let (delete, fresh) = (&delete, &fresh);
    let mut by_target: BTreeMap<String, Vec<(Placed, Verdict)>> = BTreeMap::new();
    for (job, verdict) in jobs.into_iter().zip(verdicts) {
        let target = job.1.target_label();
        by_target.entry(target).or_default().push((job, verdict));
    }
    let targets = by_target.into_values().map(|same| async move {
        let mut out = Vec::with_capacity(same.len());
        for ((i, job), verdict) in same {
            out.push((i, handle_job(c, job, verdict, delete, fresh).await));
        }
        out
    });
    let handled = futures_util::future::join_all(targets).await;
    handled.into_iter().flatten().collect()
}

/// A job with its place in the round.
type Placed = (usize, CleanupJob);

/// One job with its verdict: refused, already gone, or run under `delete` until `fresh`.
async fn handle_job<C: Cleaner>(
    c: &C,
    job: CleanupJob,
    verdict: Verdict,
    delete: &Pacer,
    fresh: &Stop,
) -> Handled {
    match verdict {
        Verdict::Reject(why) => {
            tracing::warn!(target = %job.target_label(), reason = %why, "job rejected");
            Handled::Rejected(job, why)
        }
        Verdict::Gone => Handled::Ran(job, Attempt::Done(JobOutcome::AlreadyGone, Vec::new())),
        Verdict::Proceed => {
            let attempt = run_job_paced(&job, c, c, delete, fresh).await;
            Handled::Ran(job, attempt)
        }
    }
}

fn unique(ids: impl Iterator<Item = String>) -> Vec<String> {
    ids.collect::<BTreeSet<_>>().into_iter().collect()
}
