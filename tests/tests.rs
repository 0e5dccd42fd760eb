//! The one integration-test binary (ripgrep's pattern): every suite below is a module of
//! it, so the SDK is linked once, not once per file. `make test-unit` runs the suites that
//! need no emulator (`cargo test --test tests -- cli:: aws_mocks:: ...`); `make test` runs all.
//! The planner's own rules and properties live with the core (`crates/core/tests`).

/// The instant every suite measures ages from (the samples and fixtures are dated to it).
pub const NOW: &str = "2026-11-26T00:00:00Z";

mod moto;

mod approval_moto;
mod aws_mocks;
mod bundles_moto;
mod cli;
mod docs;
mod exceptions_moto;
mod executor;
mod faults_moto;
mod lambda_events;
mod lambda_org;
mod lambda_runtime;
mod notify_moto;
mod org_moto;
mod pairs_moto;
mod retire_moto;
mod review_in_process;
mod storage_memory;
mod storage_moto;
mod storage_props;
mod sweep_moto;
mod throttled_moto;
mod unknown_keys;
mod usage_moto;
mod written_mocks;
mod written_moto;

/// The worker's batch as a fresh worker runs it: new pacers at the whole share, no stop.
pub async fn handle_batch<C, F>(
    clients: impl Fn(Option<String>, String) -> F,
    rules: &ami_sweeper::verify::WorkerRules,
    bodies: &[&str],
    now: ami_sweeper::model::Timestamp,
) -> Vec<ami_sweeper::app::worker::Handled>
where
    C: ami_sweeper::ports::Cleaner,
    F: std::future::Future<Output = Result<C, String>>,
{
    let pacers = ami_sweeper::app::ratelimit::Pacers::default();
    handle_batch_at(&pacers, clients, rules, bodies, now).await
}

/// [`handle_batch`] at `pacers` (the caller reads what they did), at the whole share, no
/// stop.
pub async fn handle_batch_at<C, F>(
    pacers: &ami_sweeper::app::ratelimit::Pacers,
    clients: impl Fn(Option<String>, String) -> F,
    rules: &ami_sweeper::verify::WorkerRules,
    bodies: &[&str],
    now: ami_sweeper::model::Timestamp,
) -> Vec<ami_sweeper::app::worker::Handled>
where
    C: ami_sweeper::ports::Cleaner,
    F: std::future::Future<Output = Result<C, String>>,
{
    let stop = ami_sweeper::app::stop::Stop::default();
    let pacing = ami_sweeper::app::worker::Pacing {
        pacers,
        pace: Default::default(),
        stop: &stop,
    };
    ami_sweeper::app::worker::handle_batch(clients, rules, pacing, bodies, now).await
}

/// The JSON report on a successful run's stdout (its stderr in the failure otherwise).
pub fn json_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A sweep's in-process worker as a fresh sweep in us-east-1 runs it, in the
/// deployment's own account: every job verified by `policy` (the run's mandate its
/// ceiling, `buckets` its bundle buckets), new pacers at the whole share, no stop.
pub async fn run_in_process<C: ami_sweeper::ports::Cleaner>(
    c: &C,
    policy: &ami_sweeper::Policy,
    buckets: &[&str],
    retry: &ami_sweeper::app::cleanup::RetryPolicy,
    progress: Option<&ami_sweeper::app::progress::ProgressSink>,
    jobs: Vec<ami_sweeper::jobs::CleanupJob>,
    now: ami_sweeper::model::Timestamp,
) -> Vec<ami_sweeper::app::report::JobReport> {
    // Through the channel a sweep hands its jobs on, closed once they are all in (as the
    // sweep's end closes it): the worker sees the stream end as it does in a sweep.
    let (queue, stream) = ami_sweeper::adapters::local_queue::LocalQueue::channel();
    assert!(
        ami_sweeper::ports::CleanupSink::enqueue(&queue, jobs)
            .await
            .is_empty(),
        "the channel takes every job"
    );
    drop(queue);
    run_in_process_from(c, policy, buckets, retry, progress, stream, now).await
}

/// As [`run_in_process`], with the jobs as `jobs` yields them (a sweep's, as its
/// deregistrations are made).
pub async fn run_in_process_from<C: ami_sweeper::ports::Cleaner>(
    c: &C,
    policy: &ami_sweeper::Policy,
    buckets: &[&str],
    retry: &ami_sweeper::app::cleanup::RetryPolicy,
    progress: Option<&ami_sweeper::app::progress::ProgressSink>,
    jobs: impl futures_util::Stream<Item = ami_sweeper::jobs::CleanupJob> + Send,
    now: ami_sweeper::model::Timestamp,
) -> Vec<ami_sweeper::app::report::JobReport> {
    let stop = ami_sweeper::app::stop::Stop::default();
    let w = InProcessTest {
        policy,
        buckets,
        retry,
        progress,
        now,
        stop: &stop,
    };
    run_in_process_until(c, w, jobs).await.0
}

/// What a test's in-process worker runs under, besides its account and its jobs.
pub struct InProcessTest<'a> {
    /// The run's policy (its mandate the ceiling).
    pub policy: &'a ami_sweeper::Policy,
    /// The run's bundle buckets.
    pub buckets: &'a [&'a str],
    /// Attempts per job and the wait between them.
    pub retry: &'a ami_sweeper::app::cleanup::RetryPolicy,
    /// Where progress goes.
    pub progress: Option<&'a ami_sweeper::app::progress::ProgressSink>,
    /// The instant the storage rules judge at.
    pub now: ami_sweeper::model::Timestamp,
    /// The run's stop.
    pub stop: &'a ami_sweeper::app::stop::Stop,
}

/// A sweep's in-process worker as a sweep of us-east-1 in the deployment's own account
/// runs it under `t` (new pacers at the whole share), its jobs as `jobs` yields them: the
/// reports and the jobs left for the cleanup queue.
pub async fn run_in_process_until<C: ami_sweeper::ports::Cleaner>(
    c: &C,
    t: InProcessTest<'_>,
    jobs: impl futures_util::Stream<Item = ami_sweeper::jobs::CleanupJob> + Send,
) -> (
    Vec<ami_sweeper::app::report::JobReport>,
    Vec<ami_sweeper::jobs::CleanupJob>,
) {
    use ami_sweeper::app::worker::{InProcess, Pacing};
    let region = "us-east-1";
    let mandate = ami_sweeper::mandate::Mandate::ceiling(t.policy, false, Some(region));
    let buckets = t.buckets.iter().map(|b| b.to_string());
    let rules = ami_sweeper::verify::WorkerRules::in_process(t.policy, &mandate, None, buckets);
    let pacers = ami_sweeper::app::ratelimit::Pacers::default();
    let place = (None, region.to_string());
    let w = InProcess {
        rules: &rules,
        place: &place,
        pacing: Pacing {
            pacers: &pacers,
            pace: Default::default(),
            stop: t.stop,
        },
        retry: t.retry,
        progress: t.progress,
        now: t.now,
    };
    ami_sweeper::app::worker::run_in_process_leaving(jobs, c, w).await
}

/// A snapshot of 8 GiB from 2025 carrying the sweep's write-ahead mark for `image` (its
/// image deregistered, its storage to be deleted).
pub fn marked_snapshot(id: &str, image: &str) -> ami_sweeper::model::Snapshot {
    ami_sweeper::model::Snapshot {
        id: id.to_string(),
        description: String::new(),
        start_time: ami_sweeper::time::parse_instant("2025-01-01T00:00:00Z"),
        size_gib: Some(8),
        tags: [(
            ami_sweeper::orphans::STORAGE_MARK.to_string(),
            image.to_string(),
        )]
        .into_iter()
        .collect(),
        archived: false,
    }
}
