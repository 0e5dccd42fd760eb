//! Issue 29, item 2: storage deleted per pair, at the pair's own buckets. Two pairs' jobs
//! never share a pacer (in memory); one pair's jobs are never run by two workers at once
//! (the pairs' leases on the emulator's S3, the pairs' EC2 in memory); a pair sweep with a
//! cleanup queue deletes its storage in process and queues only what its deadline left;
//! a worker killed mid-batch on one pair leaves the other pairs' work going and nothing
//! orphaned after the next run (the binary under the Runtime API emulator).

use std::sync::Arc;
use std::time::Duration;

use ami_sweeper::adapters::memory::{MemoryAccount, State};
use ami_sweeper::app::cleanup::Attempt;
use ami_sweeper::app::ratelimit::{PaceConfig, Pacers};
use ami_sweeper::app::stop::Stop;
use ami_sweeper::app::worker::{handle_batch_locked, Handled, Pacing, Unlocked};
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::model::{Snapshot, Timestamp};
use ami_sweeper::orphans::STORAGE_MARK;
use ami_sweeper::time::parse_instant;
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::Policy;

fn now() -> Timestamp {
    parse_instant(crate::NOW).unwrap()
}

fn policy() -> Policy {
    Policy::from_json(
        r#"{"dry_run": false, "regions": ["us-east-1", "us-west-2"],
            "retention": {"min_age_days": 30}}"#,
    )
    .unwrap()
}

/// A pair's account in memory: `ids` marked as the storage of the deregistered `ami-gone`.
fn pair(ids: &[String]) -> MemoryAccount {
    let a = MemoryAccount::new(State::default());
    a.update(|s| {
        for id in ids {
            let sn = Snapshot {
                id: id.clone(),
                description: String::new(),
                start_time: parse_instant("2025-01-01T00:00:00Z"),
                size_gib: Some(8),
                tags: [(STORAGE_MARK.to_string(), "ami-gone".to_string())]
                    .into_iter()
                    .collect(),
                archived: false,
            };
            s.snapshots.insert(id.clone(), sn);
        }
    });
    a
}

fn jobs(region: &str, ids: &[String]) -> Vec<String> {
    ids.iter()
        .map(|i| {
            let target = JobTarget::DeleteSnapshot {
                snapshot_id: i.clone(),
            };
            CleanupJob::new(region, "ami-gone", target).to_json()
        })
        .collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("snap-{prefix}{i:02}")).collect()
}

/// Two pairs in one batch: us-east-1's `DeleteSnapshot` bucket is held empty by another
/// caller, us-west-2's is free. us-west-2's deletions are done within the first second
/// while us-east-1's pacer is still backing off; the pacers are one per (account, Region),
/// and only us-east-1's met a throttle.
#[tokio::test(start_paused = true)]
async fn two_pairs_jobs_never_share_a_pacer() {
    let (east, west) = (ids("e", 6), ids("w", 6));
    let (a_east, a_west) = (pair(&east), pair(&west));
    a_east.throttle("DeleteSnapshot", 0, 0.0);
    let p = policy();
    let rules = WorkerRules::new(&p, Some("us-east-1"), Vec::<String>::new());
    let bodies: Vec<String> = jobs("us-east-1", &east)
        .into_iter()
        .chain(jobs("us-west-2", &west))
        .collect();
    let pacers = Arc::new(Pacers::default());
    let (ae, aw, pc) = (a_east.clone(), a_west.clone(), pacers.clone());
    let batch = tokio::spawn(async move {
        let stop = Stop::default();
        let pacing = Pacing {
            pacers: &pc,
            pace: PaceConfig::default(),
            stop: &stop,
        };
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let clients = |_: Option<String>, r: String| {
            let a = if r == "us-east-1" {
                ae.clone()
            } else {
                aw.clone()
            };
            async move { Ok::<_, String>(a) }
        };
        handle_batch_locked(clients, &Unlocked, &rules, pacing, &refs, now()).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        a_west.state().snapshots.is_empty(),
        "us-west-2 waited for us-east-1's throttled bucket: {:?}",
        a_west.state().snapshots.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        a_east.state().snapshots.len(),
        6,
        "us-east-1's bucket is empty"
    );
    let handled = batch.await.unwrap();
    let (done, retried) = handled
        .iter()
        .partition::<Vec<_>, _>(|h| matches!(h, Handled::Ran(_, Attempt::Done(..))));
    assert_eq!((done.len(), retried.len()), (6, 6), "{handled:?}");
    let reports = pacers.reports();
    let delete = |region: &str| {
        reports
            .iter()
            .find(|((_, r, b), _)| r == region && *b == "delete_snapshot")
            .map(|(_, rep)| rep.throttles)
    };
    assert!(delete("us-east-1").is_some_and(|t| t > 0), "{reports:?}");
    assert_eq!(delete("us-west-2"), Some(0), "{reports:?}");
}
