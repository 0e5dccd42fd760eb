//! Issue 28, items 1 and 4, on the emulator (moto holds S3 objects and their tags): a
//! bundle job is verified alike whether the sweep runs it in process or the queue's worker
//! does, with its manifest's tags read fresh; and no `DeleteObjects` starts more than
//! [`FACTS_FRESH_FOR`] after its facts began to be read, in either path.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::moto::{object_keys, s3, seed_image, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::cleanup::{Attempt, RetryPolicy};
use ami_sweeper::app::report::{JobOutcome, JobReport, Outcome, SweepReport};
use ami_sweeper::app::run::{drain_queue, run_sweep, DrainLimits, QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::app::worker::{Handled, FACTS_FRESH_FOR};
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::time::parse_instant;
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::Policy;
use aws_sdk_s3::types::{Tag, Tagging};
use serde_json::json;

const REGION: &str = "us-east-1";
const IMAGE: &str = "ami-00000000000000b01";
const MANIFEST: &str = "app/app-1.manifest.xml";
const BODY: &str = r#"<?xml version="1.0"?><manifest><image><name>app-1</name>
<parts count="2"><part index="0"><filename>app-1.part.0</filename></part>
<part index="1"><filename>app-1.part.1</filename></part></parts></image></manifest>"#;

/// The condemned instance-store image, registered from `bundles/app/app-1.manifest.xml`.
fn seeded() -> serde_json::Value {
    let mut image = seed_image(IMAGE, "app-1", "2025-01-01T00:00:00.000Z", json!({}));
    image["root_device_type"] = json!("instance-store");
    image["image_location"] = json!(format!("bundles/{MANIFEST}"));
    json!([image])
}

/// The bundle (manifest and both parts) in `bundles`, the manifest tagged with `tags`.
async fn furnish(config: &aws_config::SdkConfig, tags: &[(&str, &str)]) -> BTreeSet<String> {
    let s3 = s3(config);
    s3.create_bucket().bucket("bundles").send().await.unwrap();
    for (key, body) in [
        (MANIFEST, BODY),
        ("app/app-1.part.0", "part0"),
        ("app/app-1.part.1", "part1"),
    ] {
        s3.put_object()
            .bucket("bundles")
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    if !tags.is_empty() {
        let set = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
            .collect();
        s3.put_object_tagging()
            .bucket("bundles")
            .key(MANIFEST)
            .tagging(Tagging::builder().set_tag_set(Some(set)).build().unwrap())
            .send()
            .await
            .unwrap();
    }
    object_keys(config, "bundles").await
}

fn policy() -> Policy {
    Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30},
            "selection": {"exclude_tags": {"retain": "*"}}}"#,
    )
    .unwrap()
}

fn options(queue: QueueMode) -> SweepOptions {
    SweepOptions {
        regions: vec![REGION.into()],
        force_dry_run: false,
        queue,
        exec: ExecConfig {
            bundle_buckets: ["bundles".to_string()].into_iter().collect(),
            ..Default::default()
        },
        now: parse_instant(crate::NOW).unwrap(),
    }
}

fn in_process(attempts: u32) -> QueueMode {
    QueueMode::Local(RetryPolicy {
        attempts,
        delay: Duration::from_millis(100),
        ..Default::default()
    })
}

fn deregistered(report: &SweepReport) -> bool {
    let region = &report.regions[0];
    assert_eq!(region.error, None);
    region
        .images
        .iter()
        .any(|i| i.image_id == IMAGE && i.outcome == Some(Outcome::Deregistered))
}

fn bundle_job(jobs: &[JobReport]) -> &JobReport {
    jobs.iter()
        .find(|j| j.target == format!("s3://bundles/{MANIFEST}"))
        .unwrap_or_else(|| panic!("no bundle job: {jobs:?}"))
}

fn worker_rules() -> WorkerRules {
    WorkerRules::new(&policy(), Some(REGION), ["bundles".to_string()])
}

/// Item 1, without a queue: the job the sweep runs in process reads the manifest's tags
/// afresh and refuses it, as the worker would. (Before: deleted, manifest and parts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_manifest_survives_a_sweep_without_a_queue() {
    let moto = Moto::start(Some(seeded()));
    let config = moto.config().await;
    let all = furnish(&config, &[("retain", "audit")]).await;
    let clients = Clients::new(config.clone());
    let opts = options(in_process(5));
    let report = run_sweep(&clients, &policy(), &opts.regions, &opts).await;
    assert!(deregistered(&report), "{:?}", report.regions[0].images);
    assert_eq!(object_keys(&config, "bundles").await, all);
    let job = bundle_job(&report.regions[0].jobs);
    assert_eq!(job.outcome, JobOutcome::Rejected, "{job:?}");
    let why = job.error.as_deref().unwrap_or_default();
    assert!(why.contains("excluded_by_tag"), "{why}");
}

/// Item 1, with a queue: the same estate, the same answer from the SQS worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_manifest_survives_the_queue_and_its_worker() {
    let moto = Moto::start(Some(seeded()));
    let config = moto.config().await;
    let all = furnish(&config, &[("retain", "audit")]).await;
    let url = aws_sdk_sqs::Client::new(&config)
        .create_queue()
        .queue_name("cleanup")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let clients = Clients::new(config.clone());
    let opts = options(QueueMode::Sqs {
        url: url.clone(),
        delay_seconds: 0,
    });
    let report = run_sweep(&clients, &policy(), &opts.regions, &opts).await;
    assert!(deregistered(&report));
    let drained = drain_queue(
        &clients,
        &url,
        &worker_rules(),
        None,
        DrainLimits::default(),
    )
    .await
    .unwrap();
    let job = bundle_job(&drained.jobs);
    assert_eq!(job.outcome, JobOutcome::Rejected, "{job:?}");
    assert!(job.error.as_deref().unwrap().contains("excluded_by_tag"));
    assert_eq!(object_keys(&config, "bundles").await, all);
}

/// Item 4, the queue's worker: the manifest's tags take 35 s to read, so its facts are
/// older than [`FACTS_FRESH_FOR`] before the first `DeleteObjects` could start: the job
/// goes back to the queue with nothing deleted. (Before: deleted 36 s after the first read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_bundle_job_whose_facts_went_stale_goes_back_to_the_queue() {
    // The image is gone; its bundle carries the sweep's mark.
    let moto = Moto::start(None);
    let config = moto.config().await;
    let all = furnish(&config, &[(ami_sweeper::orphans::STORAGE_MARK, IMAGE)]).await;
    let hold = FACTS_FRESH_FOR + Duration::from_secs(5);
    moto.front().set_faults(json!([
        {"id": "tagging", "delay_ms": hold.as_millis() as u64, "times": 1}
    ]));
    let clients = Clients::new(config.clone());
    let target = JobTarget::DeleteBundle {
        bucket: "bundles".into(),
        manifest_key: MANIFEST.into(),
    };
    let body = CleanupJob::new(REGION, IMAGE, target).to_json();
    let work = || async {
        let clients = |_, r: String| {
            let c = clients.region(&r);
            async move { Ok(c) }
        };
        let now = parse_instant(crate::NOW).unwrap();
        crate::handle_batch(clients, &worker_rules(), &[body.as_str()], now).await
    };
    let started = std::time::Instant::now();
    let handled = work().await;
    assert!(started.elapsed() >= hold);
    match &handled[0] {
        Handled::Ran(_, Attempt::Retry(why)) => assert!(why.contains("30 s"), "{why}"),
        other => panic!("run on stale facts: {other:?}"),
    }
    assert_eq!(object_keys(&config, "bundles").await, all);
    // Verified again with fresh facts, it runs.
    let handled = work().await;
    assert!(
        matches!(
            &handled[0],
            Handled::Ran(_, Attempt::Done(JobOutcome::Deleted, _))
        ),
        "{handled:?}"
    );
    assert!(object_keys(&config, "bundles").await.is_empty());
}

/// Item 4, in process: the same hold on the job's tag read (the sweep's own mark reads and
/// writes the tags first) sends the job back to be verified again; the second attempt,
/// on fresh facts, deletes it. (Before: the job was never verified and ran at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_bundle_job_whose_facts_went_stale_is_verified_again() {
    let moto = Moto::start(Some(seeded()));
    let config = moto.config().await;
    furnish(&config, &[]).await;
    let hold = FACTS_FRESH_FOR + Duration::from_secs(5);
    // The mark's read and write pass; the job's first read is held.
    moto.front().set_faults(json!([
        {"id": "tagging", "times": 2},
        {"id": "tagging", "delay_ms": hold.as_millis() as u64, "times": 1}
    ]));
    let clients = Clients::new(config.clone());
    let opts = options(in_process(2));
    let started = std::time::Instant::now();
    let report = run_sweep(&clients, &policy(), &opts.regions, &opts).await;
    assert!(started.elapsed() >= hold);
    assert!(deregistered(&report));
    let job = bundle_job(&report.regions[0].jobs);
    assert_eq!(job.outcome, JobOutcome::Deleted, "{job:?}");
    assert_eq!(
        job.attempts, 2,
        "the stale attempt deleted nothing: {job:?}"
    );
    assert!(object_keys(&config, "bundles").await.is_empty());
}
