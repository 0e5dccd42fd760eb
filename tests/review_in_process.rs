//! Review of `da666b4` (issue 29): the sweep's in-process worker takes a round's jobs only
//! once no other round is reading its facts. Attacks on what that could break that the
//! other tests do not reach: a stop that ends a retry wait while a round reads and jobs
//! wait behind it, a pile of jobs behind a reading round bigger than a round, the
//! freshness of a round formed late, a round that stops holding the others back once its
//! facts are read (read or failed, or with no job to read for). On the in-memory account
//! and the paused clock.

use std::sync::Arc;
use std::time::Duration;

use ami_sweeper::adapters::memory::{MemoryAccount, State};
use ami_sweeper::app::cleanup::RetryPolicy;
use ami_sweeper::app::report::{JobOutcome, JobReport};
use ami_sweeper::app::stop::Stop;
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::model::Timestamp;
use ami_sweeper::orphans::STORAGE_MARK;
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use futures_util::{Stream, StreamExt};

const REGION: &str = "us-east-1";

fn now() -> Timestamp {
    parse_instant(crate::NOW).unwrap()
}

fn policy() -> Policy {
    Policy::from_json(r#"{"dry_run": false, "retention": {"min_age_days": 30}}"#).unwrap()
}

/// An account holding `ids`, each marked as the storage of the deregistered `ami-gone`,
/// and a cleanup job for each.
fn marked(ids: &[String]) -> (MemoryAccount, Vec<CleanupJob>) {
    let mut state = State {
        clock: Some(now()),
        ..State::default()
    };
    let mut jobs = Vec::new();
    for id in ids {
        state
            .snapshots
            .insert(id.clone(), crate::marked_snapshot(id, "ami-gone"));
        let target = JobTarget::DeleteSnapshot {
            snapshot_id: id.clone(),
        };
        jobs.push(CleanupJob::new(REGION, "ami-gone", target));
    }
    (MemoryAccount::new(state), jobs)
}

/// A sweep's in-process worker on `a` in `REGION` under the default policy, its jobs as
/// `jobs` yields them, until `stop`: its reports and the jobs it left for the queue. A
/// worker still running after an hour (paused clock) has stalled: the test fails.
async fn worker_until(
    a: &MemoryAccount,
    jobs: impl Stream<Item = CleanupJob> + Send,
    retry: &RetryPolicy,
    stop: &Stop,
) -> (Vec<JobReport>, Vec<CleanupJob>) {
    worker_with_buckets(a, jobs, retry, stop, &[]).await
}

/// As [`worker_until`], with `buckets` the run's bundle buckets.
async fn worker_with_buckets(
    a: &MemoryAccount,
    jobs: impl Stream<Item = CleanupJob> + Send,
    retry: &RetryPolicy,
    stop: &Stop,
    buckets: &[&str],
) -> (Vec<JobReport>, Vec<CleanupJob>) {
    let p = policy();
    let t = crate::InProcessTest {
        policy: &p,
        buckets,
        retry,
        progress: None,
        now: now(),
        stop,
    };
    let run = crate::run_in_process_until(a, t, jobs);
    tokio::time::timeout(Duration::from_secs(3600), run)
        .await
        .expect("the in-process worker stalled")
}

/// `jobs` as a sweep hands them on: the first at once, each next one `gap` after the one
/// before; `before(i)` runs just before job `i` is handed on.
fn arriving(
    jobs: Vec<CleanupJob>,
    gap: Duration,
    before: impl Fn(usize) + Send + Sync + 'static,
) -> impl Stream<Item = CleanupJob> + Send {
    let before = Arc::new(before);
    futures_util::stream::iter(jobs.into_iter().enumerate()).then(move |(i, job)| {
        let before = before.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            before(i);
            job
        }
    })
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("snap-{i:03}")).collect()
}

/// The run stops (6 s) while a round reads (1 s to 11 s), one job waits to retry (its
/// snapshot was in use at 0 s) and four wait in line behind the reading round, the
/// stream having ended (5 s). Nothing is deleted, every job is reported once and left
/// once for the cleanup queue: none is lost because the round it waited on ended after
/// the stream did, nor because its retry wait was ended by the stop.
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_read_and_a_retry_wait_hands_every_job_on_once() {
    let ids = ids(6);
    let (a, jobs) = marked(&ids);
    a.fail_times(
        "DeleteSnapshot",
        Some(&ids[0]),
        "InvalidSnapshot.InUse",
        Some(1),
    );
    let a2 = a.clone();
    let hold = move |i: usize| {
        if i == 1 {
            a2.hold("DescribeSnapshots", Duration::from_secs(10), 1);
        }
    };
    let stop = Stop::default();
    let signal = tokio::spawn({
        let (stop, a) = (stop.clone(), a.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            stop.request();
            a.calls("DescribeSnapshots")
        }
    });
    let jobs = arriving(jobs, Duration::from_secs(1), hold);
    let (reports, left) = worker_until(&a, jobs, &RetryPolicy::default(), &stop).await;
    assert_eq!(
        signal.await.unwrap(),
        2,
        "the second round was not reading at the stop"
    );
    assert_eq!(a.state().snapshots.len(), 6, "deleted: {:?}", a.log());
    let mut reported: Vec<&str> = reports.iter().map(|r| r.target.as_str()).collect();
    reported.sort();
    assert_eq!(reported, ids, "each job reported once: {reports:?}");
    for r in &reports {
        assert_eq!(r.outcome, JobOutcome::Retrying, "{r:?}");
    }
    let mut handed: Vec<String> = left.iter().map(|j| j.target_label()).collect();
    handed.sort();
    assert_eq!(handed, ids, "each job left for the queue once");
}

/// Jobs that come while a round reads wait for it however many they are, and a round
/// still takes at most `IN_PROCESS_BATCH` of them: the first job alone, then 120 that
/// came while it read go in rounds of 50, 50 and 20 (four reads, not two), all deleted.
#[tokio::test(start_paused = true)]
async fn jobs_piled_up_behind_a_reading_round_go_at_most_a_batch_a_round() {
    use ami_sweeper::app::worker::IN_PROCESS_BATCH;
    let (a, jobs) = marked(&ids(121));
    a.hold("DescribeSnapshots", Duration::from_secs(1), 10);
    let jobs = arriving(jobs, Duration::from_millis(1), |_| ());
    let (reports, left) = worker_until(&a, jobs, &RetryPolicy::default(), &Stop::default()).await;
    assert_eq!(reports.len(), 121);
    assert!(left.is_empty(), "{left:?}");
    assert!(a.state().snapshots.is_empty(), "{reports:?}");
    let rounds = 1 + 120_usize.div_ceil(IN_PROCESS_BATCH) as u64;
    assert_eq!(
        a.calls("DescribeSnapshots"),
        rounds,
        "rounds of more than {IN_PROCESS_BATCH} jobs, or of fewer than were ready"
    );
}

/// A round formed late (its job came while another read) whose own read is held past
/// `FACTS_FRESH_FOR` deletes nothing on those facts: its launch templates were read when
/// its round began, and a template mapping the snapshot since must be seen first. Its
/// freshness counts from its first read, wherever the batch waited before.
#[tokio::test(start_paused = true)]
async fn a_late_rounds_facts_age_from_its_first_read() {
    use ami_sweeper::app::worker::FACTS_FRESH_FOR;
    let ids = ids(2);
    let (a, jobs) = marked(&ids);
    // The first round reads for 5 s; the second (the other job, come at 1 s) from 5 s on,
    // longer than facts stay fresh. A launch template maps its snapshot from 15 s.
    a.hold("DescribeSnapshots", Duration::from_secs(5), 1);
    a.hold(
        "DescribeSnapshots",
        FACTS_FRESH_FOR + Duration::from_secs(10),
        1,
    );
    let operator = tokio::spawn({
        let (a, id) = (a.clone(), ids[1].clone());
        async move {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let version = ami_sweeper::model::TemplateVersion {
                template_id: "lt-1".into(),
                template_name: None,
                version: 1,
                is_default: true,
            };
            a.update(|s| s.template_snapshots.push((id, version)));
        }
    });
    let jobs = arriving(jobs, Duration::from_secs(1), |_| ());
    let (reports, _) = worker_until(&a, jobs, &RetryPolicy::default(), &Stop::default()).await;
    operator.await.unwrap();
    let left = a.state().snapshots;
    assert!(!left.contains_key(&ids[0]), "{reports:?}");
    assert!(
        left.contains_key(&ids[1]),
        "deleted on launch templates read before one mapped it: {reports:?}"
    );
    assert_eq!(
        a.calls("DescribeSnapshots"),
        3,
        "verified once more: {reports:?}"
    );
}

/// A marked bundle of the gone `ami-gone` in `bundles` (manifest and two parts), beside
/// the snapshots of [`marked`]; its cleanup job.
fn with_marked_bundle(a: &MemoryAccount) -> CleanupJob {
    let manifest = br#"<manifest><image><parts count="2"><part><filename>app-1.part.0</filename></part><part><filename>app-1.part.1</filename></part></parts></image></manifest>"#;
    a.update(|s| {
        let mut put = |k: &str, body: &[u8], mark: bool| {
            let mut tags = ami_sweeper::model::Tags::new();
            if mark {
                tags.insert(STORAGE_MARK, "ami-gone");
            }
            s.objects
                .insert(("bundles".into(), k.into()), (body.to_vec(), tags));
        };
        put("app/app-1.manifest.xml", manifest, true);
        put("app/app-1.part.0", b"0", false);
        put("app/app-1.part.1", b"1", false);
    });
    let target = JobTarget::DeleteBundle {
        bucket: "bundles".into(),
        manifest_key: "app/app-1.manifest.xml".into(),
    };
    CleanupJob::new(REGION, "ami-gone", target)
}

/// The run stops (5 s) while a bundle job's round reads its manifest's tags (0 s to 10 s)
/// and three snapshot jobs wait behind it: the read answers after the stop and clears the
/// bundle, but no `DeleteObjects` is made, nothing is deleted, and all four jobs are left
/// for the queue, once each.
#[tokio::test(start_paused = true)]
async fn a_stop_while_a_bundle_round_reads_makes_no_delete_objects() {
    let ids = ids(3);
    let (a, snapshot_jobs) = marked(&ids);
    let mut jobs = vec![with_marked_bundle(&a)];
    jobs.extend(snapshot_jobs);
    a.hold("GetObjectTagging", Duration::from_secs(10), 1);
    let stop = Stop::default();
    let signal = tokio::spawn({
        let (stop, a) = (stop.clone(), a.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.request();
            (a.calls("GetObjectTagging"), a.calls("DescribeSnapshots"))
        }
    });
    let jobs = arriving(jobs, Duration::from_secs(1), |_| ());
    let retry = RetryPolicy::default();
    let (reports, left) = worker_with_buckets(&a, jobs, &retry, &stop, &["bundles"]).await;
    let at_stop = signal.await.unwrap();
    assert_eq!(
        at_stop,
        (1, 0),
        "the bundle's round was not the one reading at the stop"
    );
    assert_eq!(a.calls("DeleteObjects"), 0, "{:?}", a.log());
    let state = a.state();
    assert_eq!(state.objects.len(), 3, "{:?}", a.log());
    assert_eq!(state.snapshots.len(), 3, "{:?}", a.log());
    assert_eq!(reports.len(), 4, "{reports:?}");
    for r in &reports {
        assert_eq!(r.outcome, JobOutcome::Retrying, "{r:?}");
    }
    let mut handed: Vec<String> = left.iter().map(|j| j.target_label()).collect();
    handed.sort();
    handed.dedup();
    assert_eq!((left.len(), handed.len()), (4, 4), "{left:?}");
}

/// Review of `da666b4` (moved here from the second reviewer's file): a round stops
/// holding the others back once its facts are read, not once its deletions are done.
/// Behind a `DeleteSnapshot` bucket of one call per 5 s, the first round deletes for
/// seconds; a job that came meanwhile is read (and deleted) beside it, in the second
/// round `IN_PROCESS_ROUNDS` allows. (Caught the facts' signal kept until the round ended.)
#[tokio::test(start_paused = true)]
async fn the_next_round_reads_while_the_last_one_deletes() {
    let (a, mut jobs) = marked(&ids(4));
    a.throttle("DeleteSnapshot", 1, 0.2);
    let last = jobs.pop().unwrap();
    // Three at once, the fourth 1 s later.
    let jobs = futures_util::stream::iter(jobs).chain(futures_util::stream::once(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last
    }));
    let watch = tokio::spawn({
        let a = a.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (a.calls("DescribeSnapshots"), a.state().snapshots.len())
        }
    });
    let (reports, left) = worker_until(&a, jobs, &RetryPolicy::default(), &Stop::default()).await;
    let (reads, undeleted) = watch.await.unwrap();
    assert!(
        undeleted >= 2,
        "the first round's deletions were not slow: {undeleted}"
    );
    assert_eq!(reads, 2, "the fourth job's round had not read by 2 s");
    assert!(a.state().snapshots.is_empty(), "{reports:?}");
    assert!(left.is_empty(), "{left:?}");
}

/// Review of `da666b4`: a round whose facts cannot be read (the read fails after a
/// second) holds the jobs that came meanwhile no longer than its read: they are read and
/// deleted at once, while its own job waits out `retry.delay` and then goes too.
#[tokio::test(start_paused = true)]
async fn a_round_whose_facts_cannot_be_read_lets_the_waiting_jobs_read() {
    let ids = ids(4);
    let (a, jobs) = marked(&ids);
    a.hold("DescribeSnapshots", Duration::from_secs(1), 1);
    a.fail_times("DescribeSnapshots", None, "UnauthorizedOperation", Some(1));
    let watch = tokio::spawn({
        let a = a.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            a.state().snapshots.into_keys().collect::<Vec<_>>()
        }
    });
    let jobs = arriving(jobs, Duration::from_millis(100), |_| {});
    let (reports, left) = worker_until(&a, jobs, &RetryPolicy::default(), &Stop::default()).await;
    assert_eq!(
        watch.await.unwrap(),
        [ids[0].clone()],
        "the jobs behind the failed read were not run at once"
    );
    assert!(a.state().snapshots.is_empty(), "{reports:?}");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert_eq!(r.outcome, JobOutcome::Deleted, "{r:?}");
        let attempts = if r.target == ids[0] { 2 } else { 1 };
        assert_eq!(r.attempts, attempts, "{r:?}");
    }
}

/// Review of `da666b4`: a round whose jobs are all refused before any read (another
/// Region's) never reads, and holds nothing back: the jobs after it run.
#[tokio::test(start_paused = true)]
async fn a_round_of_refused_jobs_holds_no_other_back() {
    let ids = ids(3);
    let (a, mut jobs) = marked(&ids);
    jobs[0].region = "eu-west-1".into();
    let jobs = arriving(jobs, Duration::from_millis(100), |_| {});
    let (reports, left) = worker_until(&a, jobs, &RetryPolicy::default(), &Stop::default()).await;
    assert_eq!(reports.len(), 3);
    for r in &reports {
        let expected = if r.target == ids[0] {
            JobOutcome::Rejected
        } else {
            JobOutcome::Deleted
        };
        assert_eq!(r.outcome, expected, "{r:?}");
    }
    assert_eq!(
        a.state().snapshots.into_keys().collect::<Vec<_>>(),
        [ids[0].clone()]
    );
    assert!(left.is_empty(), "{left:?}");
}

/// Review of `c758076`: a sweep's lookups (in turn) and its in-process worker's reads
/// (ahead) at the pair's one Describe pacer, the lookups refused in a Describe bucket
/// emptied at the start (their retries go first within their side and alternate with the
/// reads) and the worker's reads refused too (their retries, ahead): the run ends (no
/// stall), every condemned image and its own snapshot go, and the snapshot a kept image
/// still uses is not deleted.
#[tokio::test(start_paused = true)]
async fn lookups_and_reads_refused_at_one_describe_pacer_stall_nothing_and_keep_what_is_used() {
    use ami_sweeper::app::ratelimit::{PaceConfig, Pacers, DESCRIBE};
    use ami_sweeper::app::report::Outcome;
    use ami_sweeper::app::sweep::{sweep_region_reading, ExecConfig};
    use ami_sweeper::app::worker::{run_in_process_leaving, InProcess, Pacing};
    use ami_sweeper::model::{Image, Snapshot, SnapshotRef};
    let image = |id: &str, created: &str, snap: &str| {
        let mut i = Image::new(id, id, parse_instant(created).unwrap());
        i.snapshots = vec![SnapshotRef {
            id: snap.to_string(),
            size_gib: Some(8),
        }];
        i
    };
    let snapshot = |id: &str, of: &str| Snapshot {
        id: id.to_string(),
        description: format!("Created by CreateImage(i-1) for {of}"),
        start_time: parse_instant("2025-01-01T00:00:00Z"),
        size_gib: Some(8),
        tags: Default::default(),
        archived: false,
    };
    let mut state = State {
        clock: Some(now()),
        ..State::default()
    };
    let old: Vec<String> = (0..24).map(|i| format!("ami-{i:03}")).collect();
    for (i, id) in old.iter().enumerate() {
        let snap = format!("snap-{i:03}");
        state
            .images
            .insert(id.clone(), image(id, "2025-01-01T00:00:00Z", &snap));
        state.snapshots.insert(snap.clone(), snapshot(&snap, id));
    }
    // A condemned image and a young one (kept) on one snapshot: it stays.
    state.images.insert(
        "ami-old-shared".into(),
        image("ami-old-shared", "2025-01-01T00:00:00Z", "snap-shared"),
    );
    state.images.insert(
        "ami-young".into(),
        image("ami-young", "2026-11-20T00:00:00Z", "snap-shared"),
    );
    state.snapshots.insert(
        "snap-shared".into(),
        snapshot("snap-shared", "ami-old-shared"),
    );
    let a = MemoryAccount::new(state);
    // Other callers emptied the Describe bucket: the first lookups are refused, and the
    // worker's reads meet refusals too.
    a.throttle("DescribeImageAttribute", 2, 3.0);
    a.throttle("DescribeSnapshots", 1, 0.5);
    let p = policy();
    let stop = Stop::default();
    let pacers = Pacers::default();
    let pace = PaceConfig::default();
    let describe = pacers.get(None, REGION, DESCRIBE, pace.pace(DESCRIBE), &stop);
    let mandate = ami_sweeper::mandate::Mandate::ceiling(&p, false, Some(REGION));
    let rules =
        ami_sweeper::verify::WorkerRules::in_process(&p, &mandate, None, Vec::<String>::new());
    let place = (None, REGION.to_string());
    let retry = RetryPolicy::default();
    let w = InProcess {
        rules: &rules,
        place: &place,
        pacing: Pacing {
            pacers: &pacers,
            pace,
            stop: &stop,
        },
        retry: &retry,
        progress: None,
        now: now(),
    };
    let cfg = ExecConfig {
        dry_run: false,
        ..ExecConfig::default()
    };
    let (queue, jobs) = ami_sweeper::adapters::local_queue::LocalQueue::channel();
    let sweep = async {
        let report = sweep_region_reading(&p, REGION, now(), &a, &queue, &cfg, describe).await;
        drop(queue);
        report
    };
    let run = async { tokio::join!(sweep, run_in_process_leaving(jobs, &a, w)) };
    let (report, (reports, left)) = tokio::time::timeout(Duration::from_secs(3600), run)
        .await
        .expect("the sweep and its worker stalled at their shared Describe pacer");
    assert!(
        a.throttled("DescribeImageAttribute") > 0 && a.throttled("DescribeSnapshots") > 0,
        "the attack needs refusals on both sides"
    );
    for id in old.iter().chain([&"ami-old-shared".to_string()]) {
        let i = report.images.iter().find(|i| &i.image_id == id).unwrap();
        assert_eq!(i.outcome, Some(Outcome::Deregistered), "{i:?}");
    }
    let s = a.state();
    assert!(s.images.contains_key("ami-young"));
    assert!(
        s.snapshots.contains_key("snap-shared"),
        "a snapshot a kept image uses was deleted: {reports:?}"
    );
    assert_eq!(
        s.snapshots.keys().collect::<Vec<_>>(),
        ["snap-shared"],
        "{reports:?} {left:?}"
    );
    assert!(!a.log().contains(&"DeleteSnapshot snap-shared".to_string()));
}
