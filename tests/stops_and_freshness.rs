//! Stops and stale facts at the pacers' seams, from an adversarial review of `603a7dc`:
//! the worker's facts are as old as the first of them, a stop during a transient retry
//! is reported as a stop, and the inputs that stop a region change nothing.

use std::time::Duration;

use ami_sweeper::adapters::memory::{MemoryAccount, State};
use ami_sweeper::app::cleanup::Attempt;
use ami_sweeper::app::ratelimit::{PaceConfig, Pacers};
use ami_sweeper::app::report::Outcome;
use ami_sweeper::app::stop::{Stop, StopReason};
use ami_sweeper::app::sweep::{sweep_region, ExecConfig};
use ami_sweeper::app::worker::{Handled, Pacing, FACTS_FRESH_FOR};
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::model::{Image, Snapshot, SnapshotRef, Timestamp};
use ami_sweeper::orphans::STORAGE_MARK;
use ami_sweeper::time::parse_instant;
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::Policy;

const REGION: &str = "us-east-1";

fn now() -> Timestamp {
    parse_instant(crate::NOW).unwrap()
}

fn policy() -> Policy {
    Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30},
            "selection": {"exclude_tags": {"retain": "*"}}}"#,
    )
    .unwrap()
}

fn snapshot(id: &str, tags: &[(&str, &str)]) -> Snapshot {
    Snapshot {
        id: id.into(),
        description: String::new(),
        start_time: Some(parse_instant("2025-01-01T00:00:00Z").unwrap()),
        size_gib: Some(8),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        archived: false,
    }
}

fn image(id: &str, snaps: &[&str]) -> Image {
    let mut i = Image::new(id, id, parse_instant("2025-01-01T00:00:00Z").unwrap());
    i.snapshots = snaps
        .iter()
        .map(|s| SnapshotRef {
            id: s.to_string(),
            size_gib: Some(8),
        })
        .collect();
    i
}

fn account(images: Vec<Image>) -> MemoryAccount {
    let mut state = State::default();
    for i in images {
        for s in &i.snapshots {
            let desc = format!("Created by CreateImage(i-1) for {}", i.id);
            let mut sn = snapshot(&s.id, &[]);
            sn.description = desc;
            state.snapshots.insert(s.id.clone(), sn);
        }
        state.images.insert(i.id.clone(), i);
    }
    MemoryAccount::new(state)
}

fn snapshot_job(snapshot_id: &str, image_id: &str) -> String {
    let target = JobTarget::DeleteSnapshot {
        snapshot_id: snapshot_id.into(),
    };
    CleanupJob::new(REGION, image_id, target).to_json()
}

/// Worker, FACTS_FRESH_FOR: the freshness window counts from the first fact read (the
/// snapshot's tags), not from the last. A Describe call throttled after the tags were read
/// (retried until the batch's stop) must not let the snapshot be deleted on 2-minute-old
/// tags: an exclude tag added meanwhile would not be seen. (It was, before `6bd4441`.)
#[tokio::test(start_paused = true)]
async fn facts_read_before_a_throttled_describe_are_not_older_than_the_freshness_rule() {
    let a = account(vec![]);
    a.update(|s| {
        let sn = snapshot("snap-a", &[(STORAGE_MARK, "ami-gone")]);
        s.snapshots.insert("snap-a".into(), sn);
    });
    // Another caller just took the Describe bucket's only token for DescribeImages; it
    // comes back every 120 s.
    a.throttle("DescribeImages", 1, 1.0 / 120.0);
    let taken = ami_sweeper::ports::JobFacts::registered_images(&a, &[]).await;
    assert!(taken.is_ok());
    // 60 s into the batch, the operator tags the snapshot to keep it.
    let a2 = a.clone();
    let operator = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        a2.update(|s| {
            s.snapshots
                .get_mut("snap-a")
                .unwrap()
                .tags
                .insert("retain", "yes");
        });
    });
    let p = policy();
    let rules = WorkerRules::new(&p, Some(REGION), Vec::<String>::new());
    let (pacers, stop) = (Pacers::default(), Stop::default());
    let pacing = Pacing {
        pacers: &pacers,
        pace: PaceConfig::default(),
        stop: &stop,
    };
    let body = snapshot_job("snap-a", "ami-gone");
    let started = tokio::time::Instant::now();
    let worker = |_, _| async { Ok(a.clone()) };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &[body.as_str()], now())
            .await;
    let took = started.elapsed();
    operator.await.unwrap();
    assert!(
        took > FACTS_FRESH_FOR * 2,
        "the Describe call was throttled: {took:?}"
    );
    assert!(
        a.state().snapshots.contains_key("snap-a"),
        "snap-a was deleted {took:?} after its tags were read (the exclude tag added at 60 s \
         was never seen): {handled:?}"
    );
    assert!(
        !matches!(handled[0], Handled::Ran(_, Attempt::Done(..))),
        "{handled:?}"
    );
}

/// Sweep: a stop that comes during the pacer's backoff after a transient error of
/// DeregisterImage: the image fails with its own error (the call may have taken effect)
/// and the region's report says the run stopped.
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_transient_retry_is_reported_as_stopped() {
    let a = account(vec![image("ami-1", &["snap-1"])]);
    a.fail_times("DeregisterImage", Some("ami-1"), "InternalError", Some(1));
    let cfg = ExecConfig {
        dry_run: false,
        concurrency: 1,
        stop: Stop::with_deadline(Some(
            tokio::time::Instant::now() + Duration::from_millis(100),
        )),
        ..Default::default()
    };
    let report = sweep_region(&policy(), REGION, now(), &a, &a, &cfg).await;
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
        image("ami-1", &["snap-1"]),
        image("ami-2", &["snap-2"]),
    ]);
    a.throttle("CreateTags", 0, 0.0);
    let cfg = ExecConfig {
        dry_run: false,
        stop: Stop::with_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(20))),
        ..Default::default()
    };
    let report = sweep_region(&policy(), REGION, now(), &a, &a, &cfg).await;
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
/// region stops with nothing changed (the concurrent join in 603a7dc).
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
        let a = account(vec![image("ami-1", &["snap-1"])]);
        a.update(|s| {
            s.snapshots.insert(
                "snap-o".into(),
                snapshot("snap-o", &[(STORAGE_MARK, "ami-gone")]),
            );
        });
        a.fail(op, None, code);
        let cfg = ExecConfig {
            dry_run: false,
            ..Default::default()
        };
        let report = sweep_region(&policy(), REGION, now(), &a, &a, &cfg).await;
        let err = report.error.as_deref().unwrap_or_default();
        assert!(
            err.contains("nothing was changed") && !err.contains('\n'),
            "{op}: {err}"
        );
        assert!(a.log().is_empty(), "{op}: {:?}", a.log());
        assert!(a.queued().is_empty(), "{op}");
    }
}

/// Control for the freshness test: the same exclude tag, present when the facts are read,
/// keeps the snapshot (so the deletion above is only the stale facts' doing).
#[tokio::test(start_paused = true)]
async fn control_an_exclude_tag_seen_in_the_facts_keeps_the_snapshot() {
    let a = account(vec![]);
    a.update(|s| {
        let sn = snapshot("snap-a", &[(STORAGE_MARK, "ami-gone"), ("retain", "yes")]);
        s.snapshots.insert("snap-a".into(), sn);
    });
    let p = policy();
    let rules = WorkerRules::new(&p, Some(REGION), Vec::<String>::new());
    let body = snapshot_job("snap-a", "ami-gone");
    let worker = |_, _| async { Ok(a.clone()) };
    let handled = crate::handle_batch(worker, &rules, &[body.as_str()], now()).await;
    assert!(a.state().snapshots.contains_key("snap-a"), "{handled:?}");
    assert!(matches!(handled[0], Handled::Rejected(..)), "{handled:?}");
}
