//! Issue 29, item 2: storage deleted per pair, at the pair's own buckets. Two pairs' jobs
//! never share a pacer (in memory); one pair's jobs are never run by two workers at once
//! (the pairs' leases on the emulator's S3, the pairs' EC2 in memory); a pair sweep with a
//! cleanup queue deletes its storage in process and queues only what its deadline left;
//! a worker killed mid-batch on one pair leaves the other pairs' work going and nothing
//! orphaned after the next run (the binary under the Runtime API emulator).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ami_sweeper::adapters::memory::{MemoryAccount, State};
use ami_sweeper::app::cleanup::Attempt;
use ami_sweeper::app::ratelimit::{PaceConfig, Pacers};
use ami_sweeper::app::stop::Stop;
use ami_sweeper::app::worker::{handle_batch_locked, Handled, Pacing, Unlocked};
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::model::Timestamp;
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
            s.snapshots
                .insert(id.clone(), crate::marked_snapshot(id, "ami-gone"));
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

/// The killed worker's pair and the other pair: two Regions of the emulator's account.
const PAIR_A: &str = "us-east-1";
const PAIR_B: &str = "us-west-2";

/// The killed worker's invocation timeout: its lease on pair A lapses at that deadline.
const A_TIMEOUT: Duration = Duration::from_secs(25);

/// The cleanup queue's visibility timeout: the killed worker's messages come back this
/// soon, while its lease still holds (production: 720 s against the worker's 120 s, so
/// they come back after it lapsed; here the lease is tested while it still holds too).
const KILL_VISIBILITY: u32 = 15;

/// The hub's account in `region`: its snapshots and images, as the emulator has them.
async fn pair_state(
    config: &aws_config::SdkConfig,
    region: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let c = config
        .to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build();
    (
        crate::moto::snapshot_ids(&c).await,
        crate::moto::image_ids(&c).await,
    )
}

/// Per Region, five old images to condemn and one kept by its `retain` tag; the kept
/// image's snapshot and the condemned images' snapshots.
async fn kill_estate(config: &aws_config::SdkConfig, region: &str) -> (String, BTreeSet<String>) {
    let c = config
        .to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build();
    let (images, _) = crate::moto::bake(&c, "ami-00000000000000bbb", 6).await;
    crate::moto::tag(&c, &images[0], &[("retain", "yes")]).await;
    let kept = crate::moto::snapshot_of(&c, &images[0]).await;
    let mut condemned = crate::moto::snapshot_ids(&c).await;
    condemned.remove(&kept);
    (kept, condemned)
}

/// The hub's pair lease of `region`, if any.
async fn pair_lease(config: &aws_config::SdkConfig, region: &str) -> Option<serde_json::Value> {
    let got = crate::moto::s3(config)
        .get_object()
        .bucket("hub-reports")
        .key(format!("leases/123456789012/{region}.json"))
        .send()
        .await
        .ok()?;
    let body = got.body.collect().await.unwrap().into_bytes();
    Some(serde_json::from_slice(&body).unwrap())
}

/// Every message on the queue that is visible now (up to `n`), received for the queue's
/// visibility timeout.
async fn receive(
    config: &aws_config::SdkConfig,
    url: &str,
    n: usize,
) -> Vec<aws_sdk_sqs::types::Message> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n && std::time::Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() && !got.is_empty() {
            break;
        }
        got.extend(out.messages().iter().cloned());
    }
    got
}

/// The pair (Region) of a cleanup job's message.
fn region_of(m: &aws_sdk_sqs::types::Message) -> String {
    let job: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
    job["region"].as_str().unwrap().to_string()
}

/// What the event source mapping does with a batch's answer: deletes the messages not
/// listed as failures (they are done), leaves the rest for redelivery. The ids left.
async fn settle_batch(
    config: &aws_config::SdkConfig,
    url: &str,
    batch: &[aws_sdk_sqs::types::Message],
    answer: &serde_json::Value,
) -> BTreeSet<String> {
    let failed: BTreeSet<String> = answer["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not a batch response: {answer}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    let sqs = aws_sdk_sqs::Client::new(config);
    for m in batch
        .iter()
        .filter(|m| !failed.contains(m.message_id().unwrap()))
    {
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    failed
}

/// The answer to invocation `id`, polled without blocking the runtime; panics with `what`
/// when none came within `limit`.
async fn answer_of(
    api: &crate::lambda_runtime::RuntimeApi,
    id: &str,
    limit: Duration,
    what: &str,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(answer) = api.answer(id, Duration::ZERO) {
            return answer.unwrap_or_else(|e| panic!("{what}: the invocation failed: {e}"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no answer after {} s",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 29: a cleanup worker killed mid-batch on one pair leaves the other pairs' work
/// going and nothing orphaned after the next run. The real binary in Lambda mode as the
/// CleanupFunction (`AMI_SWEEPER_FUNCTION=worker`, the report bucket's pair leases), each
/// process behind a Runtime API of its own that sends its invocation's deadline; the test
/// plays the SQS event source mapping. A sweep in SQS mode queues five jobs per pair; one
/// worker takes pair A's batch (its `DeleteSnapshot`s held 1.5 s each at the fault
/// proxy), another pair B's (1 s each); A's worker is SIGKILLed after its first deletion.
/// B's worker finishes B's jobs after that; A's jobs come back after the queue's
/// visibility timeout and are left alone while the dead worker's lease holds (until its
/// invocation's deadline), then a fresh worker takes the lapsed lease and deletes what is
/// left. In the end every condemned image's snapshot is gone, the kept images' are there,
/// the queue, the dead-letter queue and the leases are empty. What the product relies on
/// for the next run is the queue's redelivery to a worker (the sweep's reconciliation is
/// the second net, not needed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_on_one_pair_leaves_the_others_going_and_no_orphan() {
    use crate::faults_moto::{create_queue, queued, rig, sweep_ok, Scratch};
    use crate::lambda_runtime::{sqs_batch, start_function, RuntimeApi};
    let rig = rig(serde_json::json!([])).await;
    let config = &rig.config;
    crate::moto::s3(config)
        .create_bucket()
        .bucket("hub-reports")
        .send()
        .await
        .unwrap();
    let (kept_a, condemned_a) = kill_estate(config, PAIR_A).await;
    let (kept_b, condemned_b) = kill_estate(config, PAIR_B).await;
    let url = create_queue(config, "cleanup", KILL_VISIBILITY).await;
    let dlq = create_queue(config, "cleanup-dlq", KILL_VISIBILITY).await;
    let policy = serde_json::json!({"dry_run": false, "regions": [PAIR_A, PAIR_B],
        "selection": {"exclude_tags": {"retain": "*"}}, "retention": {"min_age_days": 30}});
    let scratch = Scratch::new("worker-kill", policy.clone());
    let later = (chrono::Utc::now() + chrono::Duration::days(60)).to_rfc3339();
    let args = ["--queue-url", &url, "--queue-delay", "0", "--now", &later];
    let report = sweep_ok(&rig.env, &scratch.policy(), &args);
    assert_eq!(report["totals"]["outcomes"]["deregistered"], 10, "{report}");
    let jobs = receive(config, &url, 10).await;
    assert_eq!(jobs.len(), 10, "the sweep queued one job per snapshot");
    let (batch_a, batch_b): (Vec<_>, Vec<_>) =
        jobs.into_iter().partition(|m| region_of(m) == PAIR_A);
    assert_eq!((batch_a.len(), batch_b.len()), (5, 5));

    let mut env = rig.env.clone();
    env.extend([
        ("AMI_SWEEPER_FUNCTION", "worker".to_string()),
        ("AMI_SWEEPER_POLICY", policy.to_string()),
        ("AMI_SWEEPER_REPORT_BUCKET", "hub-reports".to_string()),
        ("AMI_SWEEPER_ACCOUNT_ID", "123456789012".to_string()),
        ("CLEANUP_DLQ_URL", dlq.clone()),
    ]);
    // Staggered: a round's deletions are made at once, so each snapshot's answer comes
    // `ms` after the one before it, and the kill finds some done and some not.
    let delay = |ids: &BTreeSet<String>, ms: u64| {
        ids.iter()
            .zip(1..)
            .map(|(id, k)| {
                serde_json::json!({"action": "DeleteSnapshot", "id": id, "delay_ms": ms * k})
            })
            .collect::<Vec<_>>()
    };
    let faults: Vec<_> = delay(&condemned_a, 1500)
        .into_iter()
        .chain(delay(&condemned_b, 1000))
        .collect();
    rig.proxy.set_faults(serde_json::Value::Array(faults));
    // Three execution environments: A's (killed), B's, and a fresh one for redeliveries.
    let (api_a, api_b, api_c) = (
        RuntimeApi::start(),
        RuntimeApi::start(),
        RuntimeApi::start(),
    );
    let mut worker_a = start_function(api_a.port, &env);
    let _worker_b = start_function(api_b.port, &env);
    let _worker_c = start_function(api_c.port, &env);
    let invoked_a = api_a.invoke(&sqs_batch(&batch_a, "cleanup"), A_TIMEOUT);
    let invoked_b = api_b.invoke(&sqs_batch(&batch_b, "cleanup"), Duration::from_secs(60));

    // A's worker mid-batch: it has deleted some of A's snapshots, not all.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (left, _) = pair_state(config, PAIR_A).await;
        if left.len() < 6 {
            assert!(
                left.len() > 1,
                "A's worker finished before it could be killed"
            );
            break;
        }
        if let Some(answer) = api_a.answer(&invoked_a, Duration::ZERO) {
            panic!("A's worker answered before it deleted anything: {answer:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A's worker deleted nothing within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker_a.0.kill().unwrap();
    worker_a.0.wait().unwrap();
    let (b_left, _) = pair_state(config, PAIR_B).await;
    assert!(
        b_left.intersection(&condemned_b).count() > 0,
        "B's worker had finished before A's was killed: the test shows nothing"
    );

    // B's worker finishes B's jobs while A's worker is dead and A's lease holds.
    let answer = answer_of(&api_b, &invoked_b, Duration::from_secs(30), "B's worker").await;
    let failed = settle_batch(config, &url, &batch_b, &answer).await;
    assert!(failed.is_empty(), "B's jobs were left: {answer}");
    let (snapshots, images) = pair_state(config, PAIR_B).await;
    assert_eq!(snapshots, BTreeSet::from([kept_b.clone()]), "B's storage");
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(
        pair_lease(config, PAIR_B).await.is_none(),
        "B's worker released B"
    );
    let (a_now, _) = pair_state(config, PAIR_A).await;
    assert!(
        a_now.contains(&kept_a),
        "the kept image's snapshot of A was deleted"
    );
    let Some(dead) = pair_lease(config, PAIR_A).await else {
        panic!(
            "the dead worker holds no lease on A: {:?}",
            leases(config).await
        )
    };
    assert_eq!(dead["worker"], true, "{dead}");
    let until = ami_sweeper::time::parse_instant(dead["until"].as_str().unwrap()).unwrap();
    assert!(
        chrono::Utc::now() < until,
        "B finished only after A's lease lapsed"
    );

    // The next run: A's messages come back after the visibility timeout and go to a fresh
    // environment; left alone while the dead worker's lease holds, run once it lapsed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut held, mut ran_after) = (0, 0);
    while queued(config, &url).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "A's jobs still queued after 60 s; lease {:?}, A's snapshots {:?}",
            pair_lease(config, PAIR_A).await,
            pair_state(config, PAIR_A).await.0
        );
        let batch = receive(config, &url, 10).await;
        if batch.is_empty() {
            continue;
        }
        assert!(
            batch.iter().all(|m| region_of(m) == PAIR_A),
            "only A's are left"
        );
        let (before, _) = pair_state(config, PAIR_A).await;
        let at = chrono::Utc::now();
        let invoked = api_c.invoke(&sqs_batch(&batch, "cleanup"), Duration::from_secs(60));
        let answer = answer_of(
            &api_c,
            &invoked,
            Duration::from_secs(30),
            "the fresh worker",
        )
        .await;
        let failed = settle_batch(config, &url, &batch, &answer).await;
        if at + chrono::Duration::seconds(1) < until {
            assert_eq!(
                failed.len(),
                batch.len(),
                "run under the dead worker's lease: {answer}"
            );
            assert_eq!(
                pair_state(config, PAIR_A).await.0,
                before,
                "deleted under its lease"
            );
            held += 1;
        } else if at > until {
            assert!(failed.is_empty(), "left after the lease lapsed: {answer}");
            ran_after += 1;
        }
    }
    assert!(
        held >= 1,
        "no redelivery came while the dead worker's lease held"
    );
    assert!(ran_after >= 1, "A's jobs ran only before its lease lapsed");
    assert!(
        api_a.answer(&invoked_a, Duration::ZERO).is_none(),
        "the killed worker never answered"
    );
    // Nothing orphaned, nothing wrongly deleted; nothing queued, refused or held.
    for (region, kept) in [(PAIR_A, &kept_a), (PAIR_B, &kept_b)] {
        let (snapshots, images) = pair_state(config, region).await;
        assert_eq!(
            snapshots,
            BTreeSet::from([kept.clone()]),
            "{region}: orphans"
        );
        assert_eq!(images.len(), 1, "{region}: {images:?}");
    }
    assert_eq!(queued(config, &dlq).await, 0, "nothing refused");
    assert!(leases(config).await.is_empty(), "every lease released");
}
