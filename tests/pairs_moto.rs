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

/// The keys under `leases/` in the hub's bucket.
async fn leases(config: &aws_config::SdkConfig) -> Vec<String> {
    crate::moto::s3(config)
        .list_objects_v2()
        .bucket("hub-reports")
        .prefix("leases/")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// One worker batch over `bodies` with the pairs' leases in the hub's bucket (`id` the
/// batch's, lapsing in two minutes); each region's EC2 is the memory account given.
async fn leased_batch(
    hub: &ami_sweeper::adapters::aws::Clients,
    id: &str,
    regions: &[(&str, MemoryAccount)],
    bodies: &[String],
) -> Vec<Handled> {
    let p = policy();
    let rules = WorkerRules::new(&p, Some("us-east-1"), Vec::<String>::new());
    let until = chrono::Utc::now() + chrono::Duration::minutes(2);
    let locks = ami_sweeper::app::continuation::WorkerLeases::new(
        hub,
        "hub-reports",
        "123456789012",
        id,
        until,
    );
    let (pacers, stop) = (Pacers::default(), Stop::default());
    let pacing = Pacing {
        pacers: &pacers,
        pace: PaceConfig::default(),
        stop: &stop,
    };
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let clients = |_: Option<String>, r: String| {
        let a = regions.iter().find(|(n, _)| *n == r).unwrap().1.clone();
        async move { Ok::<_, String>(a) }
    };
    handle_batch_locked(clients, &locks, &rules, pacing, &refs, now()).await
}

fn done(h: &Handled) -> bool {
    matches!(h, Handled::Ran(_, Attempt::Done(..)))
}

/// Two warm workers meet the same pair: the first holds the pair's lease while its batch
/// runs (its deletions slowed by a small `DeleteSnapshot` bucket), the second leaves that
/// pair's jobs alone, answered as retries with nothing deleted, and runs its other pair's.
/// The holder's jobs all run, its lease is released, and the left jobs run on their next
/// delivery. A chain's lease keeps every worker off the pair the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pairs_jobs_are_never_paced_by_two_workers() {
    let moto = crate::moto::Moto::start(None);
    let config = moto.config().await;
    crate::moto::s3(&config)
        .create_bucket()
        .bucket("hub-reports")
        .send()
        .await
        .unwrap();
    let hub = Arc::new(ami_sweeper::adapters::aws::Clients::new(config.clone()));
    let (first, second, west) = (ids("a", 6), ids("b", 3), ids("w", 3));
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let east = pair(&all);
    east.throttle("DeleteSnapshot", 1, 3.0);
    let a_west = pair(&west);
    let regions = [("us-east-1", east.clone()), ("us-west-2", a_west.clone())];
    let holder = {
        let (hub, regions, bodies) = (hub.clone(), regions.clone(), jobs("us-east-1", &first));
        tokio::spawn(async move { leased_batch(&hub, "worker-1", &regions, &bodies).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leases(&config).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first worker took no lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mixed: Vec<String> = jobs("us-east-1", &second)
        .into_iter()
        .chain(jobs("us-west-2", &west))
        .collect();
    let answered = leased_batch(&hub, "worker-2", &regions, &mixed).await;
    assert!(
        !holder.is_finished(),
        "the holder's batch was still running"
    );
    for h in &answered[..3] {
        let Handled::Ran(_, Attempt::Retry(why)) = h else {
            panic!("the held pair's job was not left alone: {h:?}")
        };
        assert!(
            why.contains("worker-1") && why.contains("nothing was deleted"),
            "{why}"
        );
    }
    assert!(answered[3..].iter().all(done), "{answered:?}");
    assert!(
        a_west.state().snapshots.is_empty(),
        "the other pair's jobs ran"
    );
    let ran = holder.await.unwrap();
    assert!(ran.iter().all(done), "the holder's jobs all ran: {ran:?}");
    let left: Vec<String> = east.state().snapshots.keys().cloned().collect();
    assert_eq!(left, second, "only the holder deleted the pair's storage");
    assert!(
        leases(&config).await.is_empty(),
        "the holder released the pair"
    );
    // Next delivery: the pair is free, the left jobs run.
    let again = leased_batch(&hub, "worker-2", &regions, &jobs("us-east-1", &second)).await;
    assert!(again.iter().all(done), "{again:?}");
    assert!(east.state().snapshots.is_empty());

    // A chain holds the pair (its pair sweeper deletes the pair's storage itself).
    let late = ids("c", 2);
    let chained = pair(&late);
    let until = chrono::Utc::now() + chrono::Duration::minutes(20);
    let lease = serde_json::json!({"run": "night-1", "link": 0,
                                   "until": ami_sweeper::time::format_instant(until)});
    crate::moto::s3(&config)
        .put_object()
        .bucket("hub-reports")
        .key("leases/123456789012/us-east-1.json")
        .body(lease.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let regions = [("us-east-1", chained.clone())];
    let answered = leased_batch(&hub, "worker-3", &regions, &jobs("us-east-1", &late)).await;
    assert!(answered.iter().all(|h| !done(h)), "{answered:?}");
    assert_eq!(chained.state().snapshots.len(), 2, "nothing was deleted");
    assert_eq!(
        leases(&config).await.len(),
        1,
        "the chain's lease is left in place"
    );
}
