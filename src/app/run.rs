//! Whole runs: a sweep over the policy's regions, and one drain of the cleanup queue.
//! The CLI and the Lambda handler both call these with clients built once.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::adapters::aws::sqs::{Message, SqsQueue, SQS_BATCH};
use crate::adapters::aws::Clients;
use crate::adapters::local_queue::LocalQueue;
use crate::app::cleanup::{report_of, Attempt, RetryPolicy};
use crate::app::report::JobOutcome;
use crate::app::report::{CleanupReport, JobReport, PacerLine, RegionReport, SweepReport, Totals};
use crate::app::stop::{Stop, StopReason};
use crate::app::sweep::{sweep_region, sweep_region_reading, ExecConfig};
use crate::app::worker::{handle_batch, run_in_process_leaving, Handled, InProcess, Pacing};
use crate::error::AwsError;
use crate::jobs::CleanupJob;
use crate::mandate::{Ask, Mandate};
use crate::model::Timestamp;
use crate::policy::Policy;
use crate::ports::{Account, Cleaner, CleanupSink};
use crate::verify::WorkerRules;
use std::sync::Arc;

/// Where cleanup jobs go.
#[derive(Debug, Clone)]
pub enum QueueMode {
    /// Run them in process after the deregistrations.
    Local(RetryPolicy),
    /// Send them to this SQS queue with this delay in seconds.
    Sqs {
        /// Queue URL.
        url: String,
        /// `DelaySeconds` for each message.
        delay_seconds: u32,
    },
    /// Run them in process as they free up, at the pair's own pacers (a pair sweep holding
    /// its pair's lease), and send to this SQS queue only what is left: jobs the run's stop
    /// ended, and jobs still asking for a retry after the last attempt. The queue is
    /// checked before the first deregistration, as in `Sqs` mode.
    InProcessFirst {
        /// Attempts in process, and the wait between them.
        retry: RetryPolicy,
        /// Queue URL for what is left. Sent with no delay: the deregistrations it waited
        /// for were made before the run ended, and a snapshot still in use comes back after
        /// the queue's visibility timeout.
        url: String,
    },
}

impl QueueMode {
    /// This mode with the deletions run in process first, when jobs would go to a queue:
    /// what a pair sweep holding its pair's lease runs ([`crate::app::continuation`]).
    pub fn in_process_first(self, retry: &RetryPolicy) -> Self {
        match self {
            Self::Sqs { url, .. } => Self::InProcessFirst {
                retry: retry.clone(),
                url,
            },
            other => other,
        }
    }
}

/// Everything a sweep needs besides the policy.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Regions to sweep; empty means the policy's, else the configuration's region.
    pub regions: Vec<String>,
    /// Overrides the policy's `dry_run` to true when set.
    pub force_dry_run: bool,
    /// Where cleanup jobs go.
    pub queue: QueueMode,
    /// Concurrency, rate limit and deadline.
    pub exec: ExecConfig,
    /// The instant ages are measured from.
    pub now: Timestamp,
}

/// The regions a run covers, or an error naming what is missing.
pub fn regions_for(
    policy: &Policy,
    requested: &[String],
    configured: Option<&str>,
) -> Result<Vec<String>, NoRegion> {
    if !requested.is_empty() {
        // A region named twice would be swept twice at once.
        let mut seen = std::collections::BTreeSet::new();
        return Ok(requested
            .iter()
            .filter(|r| seen.insert(r.as_str()))
            .cloned()
            .collect());
    }
    if let Some(r) = &policy.regions {
        return Ok(r.clone());
    }
    configured.map(|r| vec![r.to_string()]).ok_or(NoRegion)
}

/// Neither the request, the policy nor the configuration names a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no region: set `regions` in the policy, pass --region, or configure AWS_REGION")]
pub struct NoRegion;

/// Sweeps every region concurrently and reports. Never panics on AWS failures: a region
/// that cannot be inventoried is reported as failed and nothing is changed there.
pub async fn run_sweep(
    all: &Clients,
    policy: &Policy,
    regions: &[String],
    opts: &SweepOptions,
) -> SweepReport {
    run_sweep_in(all, all, None, policy, regions, opts).await
}

/// As [`run_sweep`], in a member account: `all` are its clients, `hub` the deployment's
/// own (whose cleanup queue receives the jobs, each naming `account`).
pub async fn run_sweep_in(
    hub: &Clients,
    all: &Clients,
    account: Option<&str>,
    policy: &Policy,
    regions: &[String],
    opts: &SweepOptions,
) -> SweepReport {
    let started = Instant::now();
    let calls_before = all.calls().snapshot();
    let throttles_before = all.calls().throttles();
    let mut exec = opts.exec.clone();
    let mandate = exec
        .mandate
        .get_or_insert_with(|| Arc::new(mandate_of(policy, regions, opts)));
    exec.dry_run = policy.dry_run || opts.force_dry_run || mandate.dry_run;
    // An exception beyond `limits.max_exception_days` from the run's instant refuses the
    // policy: nothing is read or changed.
    if let Err(e) = policy.check_exceptions_at(opts.now) {
        let why = format!("the policy is refused at the run's instant, nothing was changed: {e}");
        return failed_run(regions, &exec, opts, &why, started);
    }
    if exec.reference_usage.is_none() {
        exec.reference_usage = crate::app::written::reference_usage(hub, policy, &exec).await;
    }
    let bucket_regions = match bucket_regions(all, regions, &exec.bundle_buckets).await {
        Ok(b) => b,
        Err(e) => {
            let why =
                format!("the bundle buckets' regions cannot be read, nothing was changed: {e}");
            return failed_run(regions, &exec, opts, &why, started);
        }
    };
    let per_region = regions.iter().map(|region| {
        let clients = all.region(region);
        let mut exec = in_region(&exec, region);
        // Each bundle bucket is scanned from its own region only.
        exec.bundle_buckets
            .retain(|b| bucket_regions.get(b).is_some_and(|r| r == region));
        let place = (account.map(str::to_string), region.clone());
        async move { region_sweep(hub, policy, place, clients, opts, exec).await }
    });
    let mut regions: Vec<RegionReport> = futures_util::future::join_all(per_region).await;
    let digest = exec.mandate.as_ref().map(|m| m.policy_digest.as_str());
    for r in &mut regions {
        r.count_freed_storage();
        r.price(&policy.cost.price_per_gib_month);
        if exec.dry_run {
            r.stamp(digest.unwrap_or_default(), account, opts.now);
        }
    }
    let mut report = SweepReport {
        dry_run: exec.dry_run,
        now: crate::time::format_instant(opts.now),
        regions,
        totals: Totals::default(),
        api_calls: all.calls().since(&calls_before),
        throttles: all.calls().throttles() - throttles_before,
        elapsed_ms: started.elapsed().as_millis() as u64,
        stopped: None,
    };
    report.total();
    if report.stopped.is_none() && exec.stop.reason() == Some(StopReason::Signal) {
        // A signal during cleanup alone (after the last deregistration) still stopped work.
        report.stopped = Some(StopReason::Signal);
    }
    log_finished(&report);
    report
}

/// The run's configuration for one region: an approved run's mandate narrowed to the
/// region, so it carries that region's approved images only.
fn in_region(exec: &ExecConfig, region: &str) -> ExecConfig {
    let mut exec = exec.clone();
    if let Some(m) = exec.mandate.as_ref().filter(|m| m.approved.is_some()) {
        let ask = Ask {
            regions: Some([region.to_string()].into()),
            ..Ask::default()
        };
        exec.mandate = Some(Arc::new(m.narrow(&ask)));
    }
    exec
}

/// One region of a run, `place`, its jobs where `opts.queue` says: queued, in process, or
/// in process first with what is left queued.
async fn region_sweep(
    hub: &Clients,
    policy: &Policy,
    place: crate::app::worker::Place,
    clients: crate::adapters::aws::RegionClients,
    opts: &SweepOptions,
    exec: ExecConfig,
) -> RegionReport {
    let sqs = |url: &str, delay_seconds| InAccount {
        inner: hub.queue(url, delay_seconds),
        account: place.0.clone(),
        mandate: exec.mandate.as_deref().cloned(),
    };
    let local = |retry, later| Local {
        place: &place,
        retry,
        later,
    };
    match &opts.queue {
        QueueMode::Local(retry) => {
            let local = local(retry, None::<&InAccount<SqsQueue>>);
            sweep_with_local_queue(policy, local, opts.now, &clients, &exec).await
        }
        QueueMode::InProcessFirst { retry, url } => {
            let later = sqs(url, 0);
            let local = local(retry, Some(&later));
            sweep_with_local_queue(policy, local, opts.now, &clients, &exec).await
        }
        QueueMode::Sqs { url, delay_seconds } => {
            let sqs = sqs(url, *delay_seconds);
            sweep_region(policy, &place.1, opts.now, &clients, &sqs, &exec).await
        }
    }
}

/// Where each bundle bucket lives: a bucket is scanned, and its bundles deleted, only by
/// the sweep of its own region, against that region's images.
async fn bucket_regions(
    all: &Clients,
    regions: &[String],
    buckets: &std::collections::BTreeSet<String>,
) -> Result<BTreeMap<String, String>, AwsError> {
    let mut out = BTreeMap::new();
    let Some(first) = regions.first() else {
        return Ok(out);
    };
    let s3 = all.region(first).s3;
    for b in buckets {
        out.insert(b.clone(), s3.bucket_region(b).await?);
    }
    Ok(out)
}

/// The report of a run that could not start: every region failed with `why`, nothing
/// changed.
fn failed_run(
    regions: &[String],
    exec: &ExecConfig,
    opts: &SweepOptions,
    why: &str,
    started: Instant,
) -> SweepReport {
    let regions = regions
        .iter()
        .map(|r| {
            let mut report = RegionReport::new(r);
            report.error = Some(why.to_string());
            report
        })
        .collect();
    let mut report = SweepReport {
        dry_run: exec.dry_run,
        now: crate::time::format_instant(opts.now),
        regions,
        totals: Totals::default(),
        api_calls: Default::default(),
        throttles: 0,
        elapsed_ms: started.elapsed().as_millis() as u64,
        stopped: None,
    };
    report.total();
    report
}

/// The mandate of a run that no trigger narrowed (the CLI's, the nightly sweep's): the
/// policy's ceiling over the run's regions, or the one its options carry.
pub fn mandate_of(policy: &Policy, regions: &[String], opts: &SweepOptions) -> Mandate {
    if let Some(m) = &opts.exec.mandate {
        return (**m).clone();
    }
    let mut m = Mandate::ceiling(policy, opts.force_dry_run, None);
    m.regions = regions.iter().cloned().collect();
    m
}

/// A cleanup sink whose jobs name the member account their storage is in, and carry the
/// run's mandate (the worker runs them only within its own ceiling).
struct InAccount<Q> {
    inner: Q,
    account: Option<String>,
    mandate: Option<crate::mandate::Mandate>,
}

impl<Q: CleanupSink> CleanupSink for InAccount<Q> {
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    async fn check(&self) -> Result<(), AwsError> {
        self.inner.check().await
    }

    async fn enqueue(&self, mut jobs: Vec<CleanupJob>) -> Vec<(CleanupJob, AwsError)> {
        for j in &mut jobs {
            j.account.clone_from(&self.account);
            j.mandate = self.mandate.as_ref().map(|m| m.for_job(&j.image_id));
        }
        self.inner.enqueue(jobs).await
    }
}

/// Where a region's in-process worker acts, how it retries, and the queue that takes
/// what it leaves (`None`: nothing is handed on; the next sweep reconciles it).
struct Local<'a, Q> {
    place: &'a crate::app::worker::Place,
    retry: &'a RetryPolicy,
    later: Option<&'a Q>,
}

/// The in-process queue's sink, checked as the queue that takes what is left: a sweep
/// never deregisters when that queue cannot be reached.
struct CheckedBy<'a, L, Q> {
    inner: L,
    later: Option<&'a Q>,
}

impl<L: CleanupSink, Q: CleanupSink> CleanupSink for CheckedBy<'_, L, Q> {
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    async fn check(&self) -> Result<(), AwsError> {
        match self.later {
            Some(q) => q.check().await,
            None => self.inner.check().await,
        }
    }

    async fn enqueue(&self, jobs: Vec<CleanupJob>) -> Vec<(CleanupJob, AwsError)> {
        self.inner.enqueue(jobs).await
    }
}

/// One region with the in-process queue: the sweep hands jobs to a worker running
/// alongside, which verifies each as the queue's worker would (the same code, on facts it
/// reads itself) and deletes as storage frees up, at the region's own pacers; the report
/// carries the jobs' ends. The jobs name the place's account and carry the run's mandate,
/// as queued ones do. What the worker leaves (the stop came first, or a snapshot stayed in
/// use) goes to `local.later` when there is one.
async fn sweep_with_local_queue<R: Account + Cleaner, Q: CleanupSink>(
    policy: &Policy,
    local: Local<'_, Q>,
    now: Timestamp,
    clients: &R,
    exec: &ExecConfig,
) -> RegionReport {
    let (place, retry) = (local.place, local.retry);
    let region = place.1.as_str();
    let mandate = match &exec.mandate {
        Some(m) => (**m).clone(),
        None => Mandate::ceiling(policy, exec.dry_run, Some(region)),
    };
    let (queue, jobs) = LocalQueue::channel();
    let sink = CheckedBy {
        inner: InAccount {
            inner: queue,
            account: place.0.clone(),
            mandate: Some(mandate.clone()),
        },
        later: local.later,
    };
    let buckets = exec.bundle_buckets.iter().cloned();
    let rules = WorkerRules::in_process(policy, &mandate, place.0.as_deref(), buckets);
    let pacers = crate::app::ratelimit::Pacers::default();
    let pacing = Pacing {
        pacers: &pacers,
        pace: retry.pace.with_share(policy.limits.api_share),
        stop: &exec.stop,
    };
    // The sweep reads at the worker's Describe pacer: one pacer for the pair's bucket.
    let describe = pacing.pacer(place.0.as_deref(), region, crate::app::ratelimit::DESCRIBE);
    let sweep = async {
        let report =
            sweep_region_reading(policy, region, now, clients, &sink, exec, describe).await;
        // Dropping the queue ends the worker's stream of jobs.
        drop(sink);
        report
    };
    let w = InProcess {
        rules: &rules,
        place,
        pacing,
        retry,
        progress: exec.progress.as_ref(),
        now,
    };
    let (mut report, (done, left)) = tokio::join!(sweep, run_in_process_leaving(jobs, clients, w));
    if !done.is_empty() {
        report.jobs = done;
    }
    if let Some(q) = local.later {
        hand_on(q, left, &mut report.jobs).await;
    }
    // The worker's pacers beside the sweep's: the Describe pacer is the one both read at
    // (its report now holds both's throttles); another bucket both drew on counts both's.
    for ((_, _, bucket), r) in pacers.reports() {
        if bucket == crate::app::ratelimit::DESCRIBE.name {
            report.pacing.insert(bucket, r);
            continue;
        }
        report
            .pacing
            .entry(bucket)
            .and_modify(|p| p.throttles += r.throttles)
            .or_insert(r);
    }
    report
}

/// Sends the jobs the in-process worker left to the cleanup queue, and marks their report
/// lines `queued` (with what kept them in process). A job the queue refuses keeps its
/// line: its storage carries the sweep's mark, so the next sweep reconciles it.
async fn hand_on<Q: CleanupSink>(queue: &Q, left: Vec<CleanupJob>, reports: &mut [JobReport]) {
    if left.is_empty() {
        return;
    }
    let labels: std::collections::BTreeSet<(String, String)> = left
        .iter()
        .map(|j| (j.image_id.clone(), j.target_label()))
        .collect();
    let mut refused = std::collections::BTreeSet::new();
    for chunk in left.chunks(queue.batch_size().max(1)) {
        for (j, e) in queue.enqueue(chunk.to_vec()).await {
            tracing::warn!(target = %j.target_label(), error = %e, "a job left in process could not be queued; the next sweep reconciles it");
            refused.insert(j.target_label());
        }
    }
    tracing::info!(
        jobs = labels.len(),
        refused = refused.len(),
        "jobs left in process handed to the cleanup queue"
    );
    for r in reports.iter_mut() {
        let key = (r.image_id.clone(), r.target.clone());
        if labels.contains(&key) && !refused.contains(&r.target) {
            r.outcome = JobOutcome::Queued;
            r.error = r
                .error
                .take()
                .map(|e| format!("queued for the cleanup worker after: {e}"));
        }
    }
}

fn log_finished(report: &SweepReport) {
    tracing::info!(
        dry_run = report.dry_run,
        images = report.totals.images,
        failures = report.totals.failures,
        outcomes = ?report.totals.outcomes,
        jobs = ?report.totals.jobs,
        api_calls = ?report.api_calls,
        elapsed_ms = report.elapsed_ms,
        stopped = ?report.stopped,
        "sweep finished"
    );
}

/// Deletes a finished message from the queue; a rejected or malformed one goes to the
/// dead-letter queue (then is deleted) when there is one, else stays for the redrive
/// policy; jobs to retry stay for SQS to redeliver.
async fn settle(
    queue: &SqsQueue,
    dlq: Option<&SqsQueue>,
    m: &Message,
    handled: &Handled,
) -> Result<(), AwsError> {
    let finished = match handled {
        Handled::Ran(_, Attempt::Done(..)) => true,
        Handled::Malformed(why) | Handled::Rejected(_, why) => match dlq {
            Some(dlq) => {
                dlq.forward(&m.body, why).await?;
                true
            }
            None => false,
        },
        Handled::Ran(..) => false,
    };
    if finished {
        queue.delete(&m.receipt_handle).await?;
    }
    Ok(())
}

/// Adds a handled message to the drain's report.
fn record(jobs: &mut Vec<JobReport>, malformed: &mut Vec<String>, id: &str, handled: Handled) {
    match (handled.outcome(), handled) {
        (_, Handled::Malformed(e)) => {
            tracing::error!(message_id = %id, error = %e, "malformed cleanup message");
            malformed.push(format!("{id}: {e}"));
        }
        (Some((o, _)), Handled::Ran(job, Attempt::Done(_, deleted))) => {
            jobs.push(report_of(&job, o, 1, deleted, None));
        }
        (Some((o, e)), Handled::Ran(job, _) | Handled::Rejected(job, _)) => {
            jobs.push(report_of(&job, o, 1, Vec::new(), e));
        }
        (None, _) => {}
    }
}

/// How much one drain may do.
#[derive(Debug, Clone, Copy)]
pub struct DrainLimits {
    /// Seconds `ReceiveMessage` waits for the first message of a batch.
    pub wait_seconds: i32,
    /// The drain ends after this long, whatever is left; a throttled call is retried
    /// until then.
    pub max_time: std::time::Duration,
    /// How hard the worker's pacers draw on EC2's buckets (the policy's share).
    pub pace: crate::app::ratelimit::PaceConfig,
}

impl Default for DrainLimits {
    /// One second's wait per receive; five minutes at most.
    fn default() -> Self {
        Self {
            wait_seconds: 1,
            max_time: std::time::Duration::from_secs(300),
            pace: Default::default(),
        }
    }
}

/// Receives for at most one pass over the messages visible at the start, and verifies and
/// runs each message once ([`crate::app::worker`]). Finished jobs are deleted from the queue;
/// jobs to retry and failed jobs stay, so SQS redelivers them after the visibility
/// timeout and its redrive policy moves poison messages to the DLQ. Jobs that fail
/// verification and malformed messages go straight to `dead_letter` with the reason
/// when it is given. The drain ends when the queue is empty, when a batch brings nothing
/// new (only redeliveries), after three receives per batch of the messages visible at
/// the start (plus three), or after `max_time`.
pub async fn drain_queue(
    clients: &Clients,
    queue_url: &str,
    rules: &WorkerRules,
    dead_letter: Option<&str>,
    limits: DrainLimits,
) -> Result<CleanupReport, AwsError> {
    let started = Instant::now();
    let calls_before = clients.calls().snapshot();
    let queue = clients.queue(queue_url, 0);
    let dlq = dead_letter.map(|url| clients.queue(url, 0));
    let visible = queue.visible_messages().await?;
    let budget = visible.div_ceil(SQS_BATCH as u64) * 3 + 3;
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut redelivered = 0;
    let mut jobs = Vec::new();
    let mut malformed = Vec::new();
    let mut receives = 0;
    let pacers = crate::app::ratelimit::Pacers::default();
    let stop = Stop::with_deadline(Some(tokio::time::Instant::now() + limits.max_time));
    let pacing = crate::app::worker::Pacing {
        pacers: &pacers,
        pace: limits.pace,
        stop: &stop,
    };
    let ended = loop {
        if receives >= budget {
            break "receive_budget";
        }
        if started.elapsed() >= limits.max_time {
            break "time_budget";
        }
        receives += 1;
        let batch = queue.receive(limits.wait_seconds).await?;
        if batch.is_empty() {
            break "empty";
        }
        let before = batch.len();
        let fresh: Vec<_> = batch
            .into_iter()
            .filter(|m| seen.insert(m.id.clone()))
            .collect();
        redelivered += before - fresh.len();
        if fresh.is_empty() {
            break "no_new_messages";
        }
        let bodies: Vec<&str> = fresh.iter().map(|m| m.body.as_str()).collect();
        let handled = handle_batch(
            |a, r| async move { clients.place(a.as_deref(), &r, &rules.member_role).await },
            rules,
            pacing,
            &bodies,
            chrono::Utc::now(),
        )
        .await;
        for (m, handled) in fresh.iter().zip(handled) {
            settle(&queue, dlq.as_ref(), m, &handled).await?;
            record(&mut jobs, &mut malformed, &m.id, handled);
        }
    };
    let mut totals = BTreeMap::new();
    for j in &jobs {
        *totals.entry(j.outcome).or_default() += 1;
    }
    Ok(CleanupReport {
        jobs,
        totals,
        malformed,
        redelivered,
        visible_at_start: visible,
        ended,
        api_calls: clients.calls().since(&calls_before),
        elapsed_ms: started.elapsed().as_millis() as u64,
        pacing: pacer_lines(&pacers),
    })
}

/// The drain's pacers, one report line each.
fn pacer_lines(pacers: &crate::app::ratelimit::Pacers) -> Vec<PacerLine> {
    pacers
        .reports()
        .into_iter()
        .map(|((account, region, bucket), r)| PacerLine {
            account,
            region,
            bucket,
            report: r,
        })
        .collect()
}
