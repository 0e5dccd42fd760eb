//! The executor and the queue worker on the in-memory account
//! (`ami_sweeper::adapters::memory`): ordering, limits, deadlines, marks, the Recycle
//! Bin, shared snapshots, bundles and job verification, each in a few lines. What is
//! about the SDK's shapes and AWS's error codes is in `aws_mocks`.

use std::time::Duration;

use crate::handle_batch;
use ami_sweeper::adapters::memory::{MemoryAccount, State};
use ami_sweeper::app::cleanup::{Attempt, RetryPolicy};
use ami_sweeper::app::progress::ProgressSink;
use ami_sweeper::app::report::{JobOutcome, JobReport, Outcome, RegionReport};
use ami_sweeper::app::stop::{Stop, StopReason};
use ami_sweeper::app::sweep::{sweep_region, ExecConfig};
use ami_sweeper::app::worker::Handled;
use ami_sweeper::jobs::{CleanupJob, JobTarget, JOB_VERSION};
use ami_sweeper::model::{Image, Snapshot, SnapshotRef, Tags, Timestamp};
use ami_sweeper::orphans::{Keep, STORAGE_MARK};
use ami_sweeper::time::parse_instant;
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::Policy;

const REGION: &str = "us-east-1";

fn now() -> Timestamp {
    parse_instant(crate::NOW).unwrap()
}

fn policy(json: &str) -> Policy {
    Policy::from_json(json).unwrap()
}

/// Older than 30 days goes; nothing else is asked.
fn month() -> Policy {
    policy(r#"{"dry_run": false, "retention": {"min_age_days": 30}}"#)
}

/// An image created `created` (RFC 3339) with these snapshots, each 8 GiB.
fn image(id: &str, created: &str, snaps: &[&str]) -> Image {
    let mut i = Image::new(id, id, parse_instant(created).unwrap());
    i.snapshots = snaps
        .iter()
        .map(|s| SnapshotRef {
            id: s.to_string(),
            size_gib: Some(8),
        })
        .collect();
    i
}

fn snapshot(id: &str, description: &str) -> Snapshot {
    Snapshot {
        id: id.into(),
        description: description.into(),
        start_time: Some(parse_instant("2025-01-01T00:00:00Z").unwrap()),
        size_gib: Some(8),
        tags: Tags::new(),
        archived: false,
    }
}

/// An account holding `images` and every snapshot they name.
fn account(images: Vec<Image>) -> MemoryAccount {
    let mut state = State::default();
    for i in images {
        for s in &i.snapshots {
            let desc = format!("Created by CreateImage(i-1) for {}", i.id);
            state.snapshots.insert(s.id.clone(), snapshot(&s.id, &desc));
        }
        state.images.insert(i.id.clone(), i);
    }
    MemoryAccount::new(state)
}

/// Twelve condemned images, `ami-01` (oldest) to `ami-12`, each with its own snapshot.
fn dozen() -> Vec<Image> {
    (1..=12)
        .map(|i| {
            image(
                &format!("ami-{i:02}"),
                &format!("2025-01-{i:02}T00:00:00Z"),
                &[&format!("snap-{i:02}")],
            )
        })
        .collect()
}

fn live() -> ExecConfig {
    ExecConfig {
        dry_run: false,
        concurrency: 1,
        ..Default::default()
    }
}

async fn sweep_with(a: &MemoryAccount, p: &Policy, cfg: &ExecConfig) -> RegionReport {
    sweep_region(p, REGION, now(), a, a, cfg).await
}

/// A live sweep `days` after [`now`].
async fn sweep_on(a: &MemoryAccount, p: &Policy, days: u64) -> RegionReport {
    let at = ami_sweeper::time::days_after(now(), days);
    sweep_region(p, REGION, at, a, a, &live()).await
}

async fn sweep(a: &MemoryAccount, p: &Policy) -> RegionReport {
    sweep_with(a, p, &live()).await
}

fn outcome(r: &RegionReport, id: &str) -> Option<Outcome> {
    r.images.iter().find(|i| i.image_id == id).unwrap().outcome
}

fn queued(a: &MemoryAccount) -> Vec<String> {
    let mut t: Vec<String> = a.queued().iter().map(|j| j.target_label()).collect();
    t.sort();
    t
}

#[tokio::test]
async fn storage_is_marked_before_its_image_is_deregistered_then_queued() {
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    let report = sweep(&a, &month()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    assert_eq!(
        a.log(),
        ["CreateTags snap-1", "DeregisterImage ami-1", "Enqueue 1"]
    );
    let snap = &a.state().snapshots["snap-1"];
    assert_eq!(snap.tags.get(STORAGE_MARK), Some("ami-1"));
    assert_eq!(queued(&a), ["snap-1"]);
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    let dry = ExecConfig {
        dry_run: true,
        ..live()
    };
    let report = sweep_with(&a, &month(), &dry).await;
    assert_eq!(report.images.len(), 1);
    assert!(a.log().is_empty(), "{:?}", a.log());
    assert!(a.state().images.contains_key("ami-1"));
}

#[tokio::test]
async fn progress_reports_the_listing_and_every_deregistration() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &[]),
        image("ami-2", "2025-01-02T00:00:00Z", &[]),
        image("ami-3", "2026-11-25T00:00:00Z", &[]),
    ]);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let cfg = ExecConfig {
        progress: Some(ProgressSink::new(move |p| {
            sink_seen.lock().unwrap().push(p.to_string())
        })),
        ..live()
    };
    sweep_with(&a, &month(), &cfg).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "us-east-1: 3 images listed",
            "us-east-1: deregistered 1/2",
            "us-east-1: deregistered 2/2"
        ]
    );
}

#[tokio::test]
async fn a_snapshot_shared_by_two_condemned_images_waits_for_both() {
    let mut tagged = image("ami-1", "2025-01-01T00:00:00Z", &["snap-1", "snap-shared"]);
    tagged.tags.insert("app", "x");
    let a = account(vec![
        tagged,
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2", "snap-shared"]),
    ]);
    a.fail("DeregisterImage", Some("ami-2"), "UnauthorizedOperation");
    let report = sweep(&a, &month()).await;
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Failed));
    // ami-2 still holds snap-shared: only ami-1's own snapshot is queued.
    assert_eq!(queued(&a), ["snap-1"]);
    assert!(a.state().snapshots.contains_key("snap-shared"));
}

#[tokio::test]
async fn a_shared_snapshot_goes_once_its_other_image_is_found_already_gone() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1", "snap-shared"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2", "snap-shared"]),
    ]);
    // Someone else deregistered ami-1 between the listing and our call.
    a.fail("DeregisterImage", Some("ami-1"), "InvalidAMIID.Unavailable");
    let report = sweep(&a, &month()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::AlreadyGone));
    assert_eq!(queued(&a), ["snap-1", "snap-2", "snap-shared"]);
}

#[tokio::test]
async fn marked_storage_of_an_ami_in_the_recycle_bin_waits_and_the_rest_is_reclaimed() {
    let a = account(vec![]);
    a.update(|s| {
        for (snap, ami) in [("snap-a", "ami-gone"), ("snap-b", "ami-inbin")] {
            let mut sn = snapshot(snap, &format!("Created by CreateImage(i-1) for {ami}"));
            sn.tags.insert(STORAGE_MARK, ami);
            s.snapshots.insert(snap.into(), sn);
        }
        s.recycle_bin.insert("ami-inbin".into(), None);
    });
    let report = sweep(&a, &month()).await;
    assert_eq!(report.error, None);
    assert_eq!(queued(&a), ["snap-a"]);
    let held = report
        .reconciled
        .iter()
        .find(|d| d.snapshot_id == "snap-b")
        .unwrap();
    assert_eq!(held.reason, Some(Keep::ImageInRecycleBin));
    assert_eq!((report.orphans.marked, report.orphans.marked_gib), (1, 8));
}

#[tokio::test]
async fn an_unreadable_recycle_bin_stops_the_region_before_any_change() {
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    a.update(|s| {
        let mut sn = snapshot("snap-a", "");
        sn.tags.insert(STORAGE_MARK, "ami-gone");
        s.snapshots.insert("snap-a".into(), sn);
    });
    a.fail("ListImagesInRecycleBin", None, "UnauthorizedOperation");
    let report = sweep(&a, &month()).await;
    let err = report.error.as_deref().unwrap();
    assert!(
        err.starts_with("inventory failed, nothing was changed: ListImagesInRecycleBin"),
        "{err}"
    );
    assert!(a.log().is_empty(), "{:?}", a.log());
}

#[tokio::test]
async fn an_image_whose_storage_cannot_be_marked_is_not_deregistered() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
    ]);
    a.fail("CreateTags", Some("ami-1"), "UnauthorizedOperation");
    let report = sweep(&a, &month()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Failed));
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Deregistered));
    assert!(a.state().images.contains_key("ami-1"));
    assert_eq!(
        queued(&a),
        ["snap-2"],
        "one failure never aborts the others"
    );
}

#[tokio::test]
async fn past_the_deadline_nothing_starts_and_the_rest_is_deferred() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
    ]);
    let cfg = ExecConfig {
        stop: Stop::with_deadline(Some(tokio::time::Instant::now())),
        ..live()
    };
    let report = sweep_with(&a, &month(), &cfg).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deferred));
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Deferred));
    assert_eq!(report.stopped, Some(StopReason::Deadline));
    assert!(a.log().is_empty(), "{:?}", a.log());
    let why = report.images[0].error.as_deref().unwrap();
    assert!(why.contains("deadline"), "{why}");
}

/// `n` condemned images, `ami-001`..., each with its own snapshot.
fn many(n: usize) -> Vec<Image> {
    (1..=n)
        .map(|i| {
            let snap = format!("snap-{i:03}");
            image(&format!("ami-{i:03}"), "2025-01-01T00:00:00Z", &[&snap])
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn under_buckets_half_the_assumed_size_every_image_goes_at_the_buckets_refill() {
    const N: usize = 300;
    let a = account(many(N));
    // Other callers hold half of every bucket the sweep draws on.
    a.throttle("DescribeImageAttribute", 50, 10.0);
    a.throttle("CreateTags", 50, 5.0);
    a.throttle("DeregisterImage", 50, 2.5);
    let cfg = ExecConfig {
        dry_run: false,
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let report = sweep_with(&a, &month(), &cfg).await;
    let took = started.elapsed().as_secs_f64();
    let deregistered = report
        .images
        .iter()
        .filter(|i| i.outcome == Some(Outcome::Deregistered))
        .count();
    assert_eq!(
        deregistered,
        N,
        "{:?}",
        report.images.iter().find(|i| i.error.is_some())
    );
    assert!(a.state().images.is_empty());
    assert_eq!(queued(&a).len(), N, "every snapshot queued");
    // EC2 refused some calls (the pacers assumed twice the room), and each was retried.
    let dereg = &report.pacing["deregister_image"];
    assert!(a.throttled("DeregisterImage") > 0);
    assert_eq!(dereg.throttles, a.throttled("DeregisterImage"));
    // The deregistrations settled at the bucket's refill: the floor is (300 - 50) / 2.5
    // = 100 s, and the pacer ends within 20% of 2.5/s.
    let floor = (N as f64 - 50.0) / 2.5;
    assert!(took >= floor && took <= 1.2 * floor, "took {took:.1} s");
    let end = dereg.end_per_second;
    assert!((end - 2.5).abs() <= 0.5, "ended at {end}/s");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_launch_permission_lookup_is_retried_not_taken_for_shared() {
    let a = account(dozen());
    a.fail_times(
        "DescribeImageAttribute",
        Some("ami-01"),
        "RequestLimitExceeded",
        Some(3),
    );
    let report = sweep(&a, &month()).await;
    assert_eq!(outcome(&report, "ami-01"), Some(Outcome::Deregistered));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.pacing["describe"].throttles, 3);
}

#[tokio::test(start_paused = true)]
async fn a_listing_throttled_past_the_sdks_attempts_is_made_again_under_the_describe_pacer() {
    let a = account(dozen());
    // Each listing refused six times in a row: more than the SDK's five attempts.
    for op in ["DescribeImages", "DescribeSnapshots", "DescribeInstances"] {
        a.fail_times(op, None, "RequestLimitExceeded", Some(6));
    }
    let report = sweep(&a, &month()).await;
    assert_eq!(report.error, None);
    assert_eq!(outcome(&report, "ami-01"), Some(Outcome::Deregistered));
    assert!(a.state().images.is_empty());
    assert_eq!(queued(&a).len(), 12, "every snapshot queued");
    // The region's Describe pacer saw every throttle (and slowed down).
    assert_eq!(report.pacing["describe"].throttles, 18);
    assert!(report.pacing["describe"].end_per_second < 20.0);
}

#[tokio::test(start_paused = true)]
async fn a_listing_throttled_until_the_deadline_stops_the_region_with_nothing_changed() {
    let a = account(dozen());
    a.fail_times("DescribeSnapshots", None, "RequestLimitExceeded", None);
    let cfg = ExecConfig {
        dry_run: false,
        stop: Stop::with_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(60))),
        ..Default::default()
    };
    let report = sweep_with(&a, &month(), &cfg).await;
    let error = report.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("nothing was changed") && error.contains("Throttled"),
        "{error}"
    );
    assert_eq!(a.state().images.len(), 12, "nothing was deregistered");
    assert!(queued(&a).is_empty());
}

#[tokio::test(start_paused = true)]
async fn throttled_until_the_deadline_the_images_are_deferred_with_nothing_half_done() {
    let a = account(dozen());
    // Another caller keeps the DeregisterImage bucket empty.
    a.throttle("DeregisterImage", 0, 0.0);
    let cfg = ExecConfig {
        dry_run: false,
        stop: Stop::with_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(60))),
        ..Default::default()
    };
    let report = sweep_with(&a, &month(), &cfg).await;
    assert_eq!(report.stopped, Some(StopReason::Deadline));
    assert_eq!(a.state().images.len(), 12, "nothing was deregistered");
    assert!(
        queued(&a).is_empty(),
        "no storage of a registered image is queued"
    );
    // Throttling is a signal to slow down, never by itself an image's failure: the
    // calls were not done, so the images are deferred (left for the next run or the
    // chain's next link), each saying why; none failed.
    assert!(
        report
            .images
            .iter()
            .all(|i| i.outcome != Some(Outcome::Failed)),
        "{:?}",
        report.images
    );
    let throttled: Vec<_> = report
        .images
        .iter()
        .filter(|i| i.outcome == Some(Outcome::Deferred) && i.error.is_some())
        .filter(|i| i.error.as_deref().unwrap().contains("Throttled"))
        .collect();
    assert!(!throttled.is_empty());
    for i in &throttled {
        let why = i.error.as_deref().unwrap();
        assert!(
            why.contains("Throttled") && why.contains("deadline"),
            "{why}"
        );
    }
    // The rest never started: deferred to the next run.
    for i in report
        .images
        .iter()
        .filter(|i| i.outcome != Some(Outcome::Failed))
    {
        assert_eq!(i.outcome, Some(Outcome::Deferred), "{i:?}");
    }
    assert!(report.pacing["deregister_image"].throttles > 0);
}

#[tokio::test]
async fn max_deregistrations_defers_the_newest_and_a_snapshot_of_a_kept_image_survives() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1", "snap-common"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
        image("ami-3", "2026-11-20T00:00:00Z", &["snap-3", "snap-common"]),
    ]);
    let limited = policy(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "limits": {"max_deregistrations": 1}}"#,
    );
    let report = sweep(&a, &limited).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Deferred));
    assert_eq!(outcome(&report, "ami-3"), None);
    // snap-common is still used by ami-3 (kept, too young): only snap-1 goes.
    assert_eq!(queued(&a), ["snap-1"]);
}

#[tokio::test]
async fn cleanup_jobs_reach_the_queue_in_batches_while_deregistrations_go_on() {
    let a = account(dozen());
    sweep(&a, &month()).await;
    let log: Vec<String> = a
        .log()
        .into_iter()
        .filter(|l| !l.starts_with("CreateTags"))
        .collect();
    // Oldest first; the first full batch of ten is handed over before the eleventh
    // deregistration, the rest at the end.
    let enqueue_at = log.iter().position(|l| l == "Enqueue 10").unwrap();
    assert_eq!(log[enqueue_at - 1], "DeregisterImage ami-10");
    assert_eq!(log[enqueue_at + 1], "DeregisterImage ami-11");
    assert_eq!(log.last().unwrap(), "Enqueue 2");
    assert_eq!(a.queued().len(), 12);
}

#[tokio::test]
async fn an_image_found_shared_makes_room_under_the_limit_for_the_next_oldest() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
        image("ami-3", "2025-01-03T00:00:00Z", &["snap-3"]),
    ]);
    a.update(|s| {
        s.launch_permissions
            .insert("ami-1".into(), vec!["111122223333".into()]);
    });
    let limited = policy(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "limits": {"max_deregistrations": 1}}"#,
    );
    let report = sweep(&a, &limited).await;
    let img = |id: &str| report.images.iter().find(|i| i.image_id == id).unwrap();
    assert_eq!(img("ami-1").reasons[0].as_str(), "shared");
    assert_eq!(img("ami-1").outcome, None);
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Deregistered));
    assert_eq!(outcome(&report, "ami-3"), Some(Outcome::Deferred));
    assert_eq!(queued(&a), ["snap-2"]);
}

#[tokio::test]
async fn a_queue_that_cannot_be_reached_stops_the_region_with_nothing_changed() {
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    a.fail(
        "GetQueueAttributes",
        None,
        "AWS.SimpleQueueService.NonExistentQueue",
    );
    let report = sweep(&a, &month()).await;
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .starts_with("cleanup jobs cannot be queued, nothing was changed"));
    assert!(a.log().is_empty(), "{:?}", a.log());
}

#[tokio::test]
async fn when_enqueueing_fails_deregistrations_stop_and_the_storage_stays_marked() {
    let a = account(dozen());
    a.fail("SendMessageBatch", None, "ServiceUnavailable");
    let report = sweep(&a, &month()).await;
    let deregistered = a
        .log()
        .iter()
        .filter(|l| l.starts_with("Deregister"))
        .count();
    assert_eq!(deregistered, 10, "{:?}", a.log());
    assert_eq!(outcome(&report, "ami-11"), Some(Outcome::Deferred));
    // What was deregistered keeps its mark: the next sweep's reconciliation finds it.
    let state = a.state();
    assert_eq!(state.snapshots.len(), 12);
    for i in 1..=10 {
        let s = &state.snapshots[&format!("snap-{i:02}")];
        assert_eq!(
            s.tags.get(STORAGE_MARK),
            Some(format!("ami-{i:02}").as_str())
        );
    }
    // The jobs that could not be queued are listed for the next sweep to reconcile.
    assert_eq!(
        report.awaiting_reconciliation.len(),
        10,
        "{:?}",
        report.awaiting_reconciliation
    );
}

fn bundle_job(key: &str) -> CleanupJob {
    CleanupJob {
        version: JOB_VERSION,
        account: None,
        region: REGION.into(),
        image_id: "ami-1".into(),
        target: JobTarget::DeleteBundle {
            bucket: "b".into(),
            manifest_key: key.into(),
        },
        mandate: None,
    }
}

/// Runs `jobs` as a sweep runs them in process: each verified first (bucket `b` is the
/// deployment's), then run.
async fn in_process(a: &MemoryAccount, jobs: Vec<CleanupJob>) -> Vec<JobReport> {
    crate::run_in_process(a, &month(), &["b"], &fast_retry(), None, jobs, now()).await
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(5),
        ..Default::default()
    }
}

/// Objects in bucket `b`; each manifest carries the sweep's mark for `ami-1`, gone.
fn with_objects(objects: &[(&str, &[u8])]) -> MemoryAccount {
    let a = account(vec![]);
    a.update(|s| {
        for (k, body) in objects {
            let mut tags = Tags::new();
            if k.ends_with(".manifest.xml") {
                tags.insert(STORAGE_MARK, "ami-1");
            }
            s.objects
                .insert(("b".into(), k.to_string()), (body.to_vec(), tags));
        }
    });
    a
}

#[tokio::test]
async fn bundles_delete_exactly_the_parts_then_the_manifest() {
    let manifest: &[u8] = b"<manifest><image><parts count=\"2\"><part><filename>x.part.0</filename></part><part><filename>x.part.1</filename></part></parts></image></manifest>";
    let a = with_objects(&[
        ("p/x.manifest.xml", manifest),
        ("p/x.part.0", b"0"),
        ("p/x.part.1", b"1"),
        ("p/x.part.2", b"not listed"),
        ("p/other.part.0", b"another bundle"),
    ]);
    let reports = in_process(&a, vec![bundle_job("p/x.manifest.xml")]).await;
    assert_eq!(reports[0].outcome, JobOutcome::Deleted, "{:?}", reports[0]);
    assert_eq!(
        a.log(),
        [
            "DeleteObjects b/p/x.part.0",
            "DeleteObjects b/p/x.part.1",
            "DeleteObjects b/p/x.manifest.xml"
        ]
    );
    let left: Vec<String> = a.state().objects.keys().map(|(_, k)| k.clone()).collect();
    assert_eq!(left, ["p/other.part.0", "p/x.part.2"]);
}

#[tokio::test]
async fn a_malformed_manifest_deletes_nothing() {
    let bad: &[u8] = b"<manifest><image><parts count=\"2\"><part><filename>x.part.0</filename></part></parts></image></manifest>";
    let a = with_objects(&[("p/x.manifest.xml", bad), ("p/x.part.0", b"0")]);
    let reports = in_process(&a, vec![bundle_job("p/x.manifest.xml")]).await;
    assert_eq!(reports[0].outcome, JobOutcome::Failed);
    let err = reports[0].error.as_deref().unwrap();
    assert!(err.contains("declares 2 parts but lists 1"), "{err}");
    assert_eq!(reports[0].attempts, 1, "a bad manifest is not retried");
    assert!(a.log().is_empty());
    assert_eq!(a.state().objects.len(), 2);
}

fn snapshot_job(snapshot: &str, image: &str) -> String {
    CleanupJob {
        version: JOB_VERSION,
        account: None,
        region: REGION.into(),
        image_id: image.into(),
        target: JobTarget::DeleteSnapshot {
            snapshot_id: snapshot.into(),
        },
        mandate: None,
    }
    .to_json()
}

#[tokio::test]
async fn the_worker_deletes_only_what_it_can_prove_is_storage_of_a_gone_image() {
    let a = account(vec![image(
        "ami-kept",
        "2025-01-01T00:00:00Z",
        &["snap-kept"],
    )]);
    a.update(|s| {
        let mut marked = snapshot("snap-gone", "Created by CreateImage(i-1) for ami-gone");
        marked.tags.insert(STORAGE_MARK, "ami-gone");
        s.snapshots.insert("snap-gone".into(), marked);
        s.snapshots
            .insert("snap-other".into(), snapshot("snap-other", "a backup"));
    });
    let rules = WorkerRules::new(&month(), Some(REGION), Vec::<String>::new());
    let bodies = [
        snapshot_job("snap-gone", "ami-gone"),
        // Forged: the image is registered and uses the snapshot.
        snapshot_job("snap-kept", "ami-kept"),
        // Forged: the snapshot has nothing to do with the named image.
        snapshot_job("snap-other", "ami-gone"),
        snapshot_job("snap-missing", "ami-gone"),
        "not a job".to_string(),
    ];
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let handled = handle_batch(|_, _| async { Ok(a.clone()) }, &rules, &refs, now()).await;
    assert!(matches!(
        &handled[0],
        Handled::Ran(_, Attempt::Done(JobOutcome::Deleted, _))
    ));
    assert!(
        matches!(&handled[1], Handled::Rejected(..)),
        "{:?}",
        handled[1]
    );
    assert!(
        matches!(&handled[2], Handled::Rejected(..)),
        "{:?}",
        handled[2]
    );
    assert!(matches!(
        &handled[3],
        Handled::Ran(_, Attempt::Done(JobOutcome::AlreadyGone, _))
    ));
    assert!(matches!(&handled[4], Handled::Malformed(_)));
    assert_eq!(a.log(), ["DeleteSnapshot snap-gone"]);
}

#[tokio::test]
async fn a_job_with_a_mistyped_account_is_malformed_not_run_in_the_hubs_account() {
    let a = account(vec![]);
    a.update(|s| {
        let mut marked = snapshot("snap-gone", "Created by CreateImage(i-1) for ami-gone");
        marked.tags.insert(STORAGE_MARK, "ami-gone");
        s.snapshots.insert("snap-gone".into(), marked);
    });
    let rules = WorkerRules::new(&month(), Some(REGION), Vec::<String>::new());
    // Meant for a member account; `acount` would be dropped and the job run in the hub's.
    let mut job: serde_json::Value =
        serde_json::from_str(&snapshot_job("snap-gone", "ami-gone")).unwrap();
    job["acount"] = serde_json::json!("444455556666");
    let body = job.to_string();
    let handled = handle_batch(|_, _| async { Ok(a.clone()) }, &rules, &[&body], now()).await;
    match &handled[0] {
        Handled::Malformed(why) => assert!(why.contains("acount: unknown field"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(a.log().is_empty(), "{:?}", a.log());
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_read_the_facts_deletes_nothing_and_retries() {
    use ami_sweeper::app::ratelimit::{Pacers, THROTTLED};
    use ami_sweeper::app::stop::Stop;
    use ami_sweeper::app::worker::Pacing;
    let a = account(vec![]);
    a.update(|s| {
        let mut marked = snapshot("snap-gone", "");
        marked.tags.insert(STORAGE_MARK, "ami-gone");
        s.snapshots.insert("snap-gone".into(), marked);
    });
    let rules = WorkerRules::new(&month(), Some(REGION), Vec::<String>::new());
    let body = snapshot_job("snap-gone", "ami-gone");
    // Denied: the job goes back to the queue at once.
    a.fail_times("DescribeImages", None, "UnauthorizedOperation", Some(1));
    let worker = |_, _| async { Ok(a.clone()) };
    let handled = handle_batch(worker, &rules, &[body.as_str()], now()).await;
    assert!(
        matches!(&handled[0], Handled::Ran(_, Attempt::Retry(e)) if e.contains("UnauthorizedOperation")),
        "{:?}",
        handled[0]
    );
    // Throttled without end: retried under the pacer until the batch's deadline, then
    // the job goes back to the queue, and nothing was deleted either way.
    a.fail("DescribeImages", None, "RequestLimitExceeded");
    let (pacers, stop) = (
        Pacers::default(),
        Stop::with_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(20))),
    );
    let pacing = Pacing {
        pacers: &pacers,
        pace: Default::default(),
        stop: &stop,
    };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &[body.as_str()], now())
            .await;
    assert!(
        matches!(&handled[0], Handled::Ran(_, Attempt::Retry(e)) if e.contains(THROTTLED)),
        "{:?}",
        handled[0]
    );
    assert!(pacers.reports().iter().any(|(_, r)| r.throttles > 1));
    assert!(a.log().is_empty());
}

#[tokio::test]
async fn an_image_entering_the_recycle_bin_keeps_its_snapshots_marked_until_the_day_after() {
    use ami_sweeper::recycle_bin::{BinResource, BinRule, BinRules, DELETE_AFTER};
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    a.update(|s| {
        s.bin_rules = BinRules(vec![BinRule {
            id: "r".into(),
            resource: BinResource::Image,
            retention_days: 7,
            resource_tags: Vec::new(),
            exclude_tags: Vec::new(),
            locked: true,
        }])
    });
    let report = sweep(&a, &month()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    assert!(a.queued().is_empty(), "nothing to delete yet");
    let snap = &a.state().snapshots["snap-1"];
    assert_eq!(snap.tags.get(STORAGE_MARK), Some("ami-1"));
    assert_eq!(snap.tags.get(DELETE_AFTER), Some("2026-12-03T00:00:00Z"));
    // The mark (both tags, one call) came before the deregistration.
    assert_eq!(a.log()[..2], ["CreateTags snap-1", "DeregisterImage ami-1"]);

    let later = |days| {
        let now = ami_sweeper::time::days_after(now(), days);
        let (a, p) = (&a, month());
        async move { sweep_region(&p, REGION, now, a, a, &live()).await }
    };
    let report = later(6).await;
    assert_eq!(
        report.reconciled[0].reason,
        Some(Keep::DeferredForRecycleBin)
    );
    assert!(a.queued().is_empty());
    later(7).await;
    assert_eq!(queued(&a), ["snap-1"], "due on day 7");
}

#[tokio::test]
async fn staged_retirement_disables_waits_re_checks_and_only_then_deregisters() {
    use ami_sweeper::model::{ImageState, UsageRef};
    use ami_sweeper::retire::DISABLED_AT;
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
    ]);
    let staged = policy(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 7}}"#,
    );
    let on = |days| sweep_on(&a, &staged, days);
    // Day 0: both are disabled (tag first), none deregistered, nothing queued.
    let report = on(0).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Disabled));
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Disabled));
    let state = a.state();
    assert_eq!(state.images["ami-1"].state, ImageState::Disabled);
    assert_eq!(
        state.images["ami-1"].tags.get(DISABLED_AT),
        Some("2026-11-26T00:00:00Z")
    );
    assert!(a.queued().is_empty());
    // Day 3: waiting; ami-2 gains a user meanwhile and is enabled again.
    a.update(|s| {
        s.usage.add(
            "ami-2",
            UsageRef {
                kind: ami_sweeper::model::UsageKind::Instance,
                id: "i-9 (running)".into(),
            },
        )
    });
    let report = on(3).await;
    let d1 = report
        .images
        .iter()
        .find(|i| i.image_id == "ami-1")
        .unwrap();
    assert_eq!(d1.reasons[0].as_str(), "retiring");
    assert_eq!(d1.outcome, None);
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Enabled));
    assert_eq!(a.state().images["ami-2"].state, ImageState::Available);
    // Day 7: the wait is over and the rules still condemn ami-1: deregistered, storage queued.
    let report = on(7).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    assert_eq!(queued(&a), ["snap-1"]);
    assert!(a.state().images.contains_key("ami-2"), "in use: stays");
    let log = a.log();
    let disable = log.iter().position(|l| l == "DisableImage ami-1").unwrap();
    let dereg = log
        .iter()
        .position(|l| l == "DeregisterImage ami-1")
        .unwrap();
    assert!(disable < dereg);
}

/// Issue 28, item 3: what the sweep did to an image never moves it to another rule.
/// (a) `broken` selects disabled images: the image `web` disabled on night 0 is not
/// deregistered by `broken` the next night, but after `web`'s 14 days. (b) A rule on
/// `state = available` keeps the image it disabled: no enable-and-disable-again loop. A
/// public image disabled (made private by `DisableImage`) stays its `public` rule's.
#[tokio::test]
async fn an_image_the_sweep_disabled_keeps_its_rule_through_the_wait() {
    use ami_sweeper::model::ImageState;
    let mut public = image("ami-3", "2025-01-03T00:00:00Z", &["snap-3"]);
    public.name = "pub-3".into();
    public.public = true;
    let mut images = vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
        public,
    ];
    images[0].name = "web-1".into();
    images[1].name = "live-2".into();
    let a = account(images);
    let rules = policy(
        r#"{"dry_run": false, "recycle_bin": "ignore", "protection": {"skip_shared": false}, "rules": [
            {"name": "broken", "selection": {"match": {"state": "disabled"}},
             "retention": {"min_age_days": 1}},
            {"name": "public", "selection": {"match": {"public": true}},
             "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 14}},
            {"name": "web", "selection": {"names": ["web-*"]},
             "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 14}},
            {"name": "live", "selection": {"match": {"state": "available"}},
             "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 14}}
        ]}"#,
    );
    let on = |days| sweep_on(&a, &rules, days);
    let report = on(0).await;
    for id in ["ami-1", "ami-2", "ami-3"] {
        assert_eq!(outcome(&report, id), Some(Outcome::Disabled), "{id}");
    }
    assert!(
        !a.state().images["ami-3"].public,
        "DisableImage makes it private"
    );
    for night in 1..14 {
        let report = on(night).await;
        for id in ["ami-1", "ami-2", "ami-3"] {
            let i = report.images.iter().find(|i| i.image_id == id).unwrap();
            assert_eq!(
                (i.outcome, i.reasons[0].as_str()),
                (None, "retiring"),
                "night {night}: {id} {i:?}"
            );
            assert_eq!(a.state().images[id].state, ImageState::Disabled, "{id}");
        }
    }
    let log = a.log();
    assert!(!log.iter().any(|l| l.starts_with("EnableImage")), "{log:?}");
    let report = on(14).await;
    for id in ["ami-1", "ami-2", "ami-3"] {
        assert_eq!(outcome(&report, id), Some(Outcome::Deregistered), "{id}");
    }
}

/// Issue 28, item 5: an image the sweep is retiring still counts for `keep_count`: when
/// the newest of the lineage is deregistered by hand, the disabled one that falls inside
/// the count again is enabled, and the lineage keeps two images.
#[tokio::test]
async fn keep_count_rescues_an_image_the_sweep_is_retiring() {
    use ami_sweeper::model::ImageState;
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
        image("ami-3", "2025-01-03T00:00:00Z", &["snap-3"]),
        image("ami-4", "2025-01-04T00:00:00Z", &["snap-4"]),
    ]);
    let staged = policy(
        r#"{"dry_run": false, "recycle_bin": "ignore",
            "retention": {"min_age_days": 30, "keep_count": 2}, "retire": {"disable_for_days": 7}}"#,
    );
    let on = |days| sweep_on(&a, &staged, days);
    let report = on(0).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Disabled));
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Disabled));
    // Night 1: the newest image is deregistered by hand.
    a.update(|s| {
        s.images.remove("ami-4");
    });
    let report = on(1).await;
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Enabled));
    assert_eq!(a.state().images["ami-2"].state, ImageState::Available);
    let report = on(7).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    let left: Vec<String> = a.state().images.keys().cloned().collect();
    assert_eq!(left, ["ami-2", "ami-3"]);
}

#[tokio::test]
async fn a_failed_disable_deregisters_nothing_and_is_retried_next_time() {
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    a.fail_times(
        "DisableImage",
        Some("ami-1"),
        "UnauthorizedOperation",
        Some(1),
    );
    let staged = policy(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "retire": {"deprecate": true, "disable_for_days": 1}}"#,
    );
    // Day 0: deprecated (first stage). Day 1: the disable fails. Day 2: disabled.
    let report = sweep_region(&staged, REGION, now(), &a, &a, &live()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deprecated));
    let day = |n| ami_sweeper::time::days_after(now(), n);
    let report = sweep_region(&staged, REGION, day(1), &a, &a, &live()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Failed));
    assert!(a.state().images.contains_key("ami-1"));
    let report = sweep_region(&staged, REGION, day(2), &a, &a, &live()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Disabled));
    let report = sweep_region(&staged, REGION, day(3), &a, &a, &live()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
}

/// Sweep: a stop that comes during the pacer's backoff after a transient error of
/// DeregisterImage: the image fails with its own error (the call may have taken effect)
/// and the region's report says the run stopped.
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_transient_retry_is_reported_as_stopped() {
    let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
    a.fail_times("DeregisterImage", Some("ami-1"), "InternalError", Some(1));
    let cfg = ExecConfig {
        dry_run: false,
        concurrency: 1,
        stop: Stop::with_deadline(Some(
            tokio::time::Instant::now() + Duration::from_millis(100),
        )),
        ..Default::default()
    };
    let report = sweep_with(&a, &month(), &cfg).await;
    let img = report
        .images
        .iter()
        .find(|i| i.image_id == "ami-1")
        .unwrap();
    assert!(a.state().images.contains_key("ami-1"));
    // The call was made and failed: whether it took effect is unknown, so the image is
    // failed with its own error, not deferred as if nothing had been tried.
    assert_eq!(img.outcome, Some(Outcome::Failed));
    let why = img.error.as_deref().unwrap_or_default();
    assert!(
        why.contains("InternalError") && why.contains("not retried"),
        "{why}"
    );
    assert_eq!(
        report.stopped,
        Some(StopReason::Deadline),
        "the run stopped at its deadline, the report says {:?}; ami-1: {:?} {:?}",
        report.stopped,
        img.outcome,
        img.error
    );
}

/// Sweep: the write-ahead mark throttled until the deadline: not deregistered, nothing
/// queued, the report says stopped.
#[tokio::test(start_paused = true)]
async fn a_mark_throttled_until_the_deadline_deregisters_nothing() {
    let a = account(vec![
        image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"]),
        image("ami-2", "2025-01-02T00:00:00Z", &["snap-2"]),
    ]);
    a.throttle("CreateTags", 0, 0.0);
    let cfg = ExecConfig {
        dry_run: false,
        stop: Stop::with_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(20))),
        ..Default::default()
    };
    let report = sweep_with(&a, &month(), &cfg).await;
    assert_eq!(a.state().images.len(), 2);
    assert!(a.queued().is_empty());
    assert_eq!(report.stopped, Some(StopReason::Deadline));
    for i in &report.images {
        assert!(
            matches!(i.outcome, Some(Outcome::Failed) | Some(Outcome::Deferred)),
            "{i:?}"
        );
    }
}

/// Sweep: unreadable rbin rules, or an unreachable queue, while the other is fine: the
/// region stops with nothing changed (both are read beside the inventory).
#[tokio::test]
async fn unreadable_bin_rules_or_queue_change_nothing() {
    for (op, code) in [
        ("ListRules", "AccessDeniedException"),
        (
            "GetQueueAttributes",
            "AWS.SimpleQueueService.NonExistentQueue",
        ),
        ("DescribeSnapshots", "UnauthorizedOperation"),
    ] {
        let a = account(vec![image("ami-1", "2025-01-01T00:00:00Z", &["snap-1"])]);
        a.update(|s| {
            let mut orphan = snapshot("snap-o", "");
            orphan.tags.insert(STORAGE_MARK, "ami-gone");
            s.snapshots.insert("snap-o".into(), orphan);
        });
        a.fail(op, None, code);
        let cfg = ExecConfig {
            dry_run: false,
            ..Default::default()
        };
        let report = sweep_with(&a, &month(), &cfg).await;
        let err = report.error.as_deref().unwrap_or_default();
        assert!(
            err.contains("nothing was changed") && !err.contains('\n'),
            "{op}: {err}"
        );
        assert!(a.log().is_empty(), "{op}: {:?}", a.log());
        assert!(a.queued().is_empty(), "{op}");
    }
}
