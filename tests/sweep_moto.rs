//! End-to-end sweeps against the local EC2 emulator (moto server on loopback).

use std::collections::BTreeSet;
use std::process::Command;

use crate::moto::{image_ids, object_keys, seed_image, snapshot_ids, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::cleanup::RetryPolicy;
use ami_sweeper::app::report::{JobOutcome, Outcome, SweepReport};
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use serde_json::json;

const MANIFEST: &str = r#"<?xml version="1.0"?><manifest><image><name>old</name>
<parts count="2"><part index="0"><filename>old.part.0</filename></part>
<part index="1"><filename>old.part.1</filename></part></parts></image></manifest>"#;

/// The estate: five old `web` builds, an AWS Backup copy, and two `legacy` builds:
/// the older is instance-store, its bundle beside an unrelated object.
fn seed() -> serde_json::Value {
    let mut images: Vec<serde_json::Value> = (1..=5)
        .map(|i| {
            seed_image(
                &format!("ami-0000000000000000{i}"),
                &format!("web-2025010{i}"),
                &format!("2025-01-0{i}T00:00:00.000Z"),
                json!({"app": "web"}),
            )
        })
        .collect();
    images.push(seed_image(
        "ami-00000000000000006",
        "web-backup",
        "2024-06-01T00:00:00.000Z",
        json!({"app": "backup", "aws:backup:source-resource": "arn:aws:ec2:us-east-1::image/ami-1"}),
    ));
    let mut bundle = seed_image(
        "ami-00000000000000007",
        "legacy-20240101",
        "2024-01-01T00:00:00.000Z",
        json!({"app": "legacy"}),
    );
    bundle["root_device_type"] = json!("instance-store");
    bundle["image_location"] = json!("bundles/legacy/old.manifest.xml");
    images.push(bundle);
    images.push(seed_image(
        "ami-00000000000000008",
        "legacy-20240601",
        "2024-06-01T00:00:00.000Z",
        json!({"app": "legacy"}),
    ));
    json!(images)
}

fn policy(dry_run: bool) -> Policy {
    Policy::from_json(
        &json!({
            "dry_run": dry_run,
            "retention": {"min_age_days": 30, "keep_count": 1, "group_by": {"tags": ["app"]}}
        })
        .to_string(),
    )
    .unwrap()
}

struct Estate {
    snapshots_by_image: std::collections::BTreeMap<String, Vec<String>>,
}

/// Puts users on web-2 (stopped instance), web-3 (old launch template version) and
/// web-4 (launch configuration), and the bundle files in S3.
async fn furnish(config: &aws_config::SdkConfig) -> Estate {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let run = ec2
        .run_instances()
        .image_id("ami-00000000000000002")
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    ec2.stop_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    ec2.create_launch_template()
        .launch_template_name("web")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-00000000000000003")
                .build(),
        )
        .send()
        .await
        .unwrap();
    ec2.create_launch_template_version()
        .launch_template_name("web")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-00000000000000005")
                .build(),
        )
        .send()
        .await
        .unwrap();
    aws_sdk_autoscaling::Client::new(config)
        .create_launch_configuration()
        .launch_configuration_name("web-lc")
        .image_id("ami-00000000000000004")
        .instance_type("t3.micro")
        .send()
        .await
        .unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket("bundles").send().await.unwrap();
    for (key, body) in [
        ("legacy/old.manifest.xml", MANIFEST),
        ("legacy/old.part.0", "part0"),
        ("legacy/old.part.1", "part1"),
        (
            "legacy/other.manifest.xml",
            "another bundle in the same prefix",
        ),
    ] {
        s3.put_object()
            .bucket("bundles")
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let snapshots_by_image = images
        .images()
        .iter()
        .map(|i| {
            (
                i.image_id().unwrap().to_string(),
                i.block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
                    .map(str::to_string)
                    .collect(),
            )
        })
        .collect();
    Estate { snapshots_by_image }
}

fn options(queue: QueueMode) -> SweepOptions {
    SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: false,
        queue,
        exec: ExecConfig {
            bundle_buckets: ["bundles".to_string()].into_iter().collect(),
            ..Default::default()
        },
        now: parse_instant(crate::NOW).unwrap(),
    }
}

fn local() -> QueueMode {
    QueueMode::Local(RetryPolicy {
        delay: std::time::Duration::from_millis(200),
        ..Default::default()
    })
}

fn outcome(report: &SweepReport, id: &str) -> Option<Outcome> {
    report.regions[0]
        .images
        .iter()
        .find(|i| i.image_id == id)
        .unwrap_or_else(|| panic!("{id} missing from report"))
        .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_sweep_deletes_exactly_the_plan_and_a_second_run_is_a_no_op() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let estate = furnish(&config).await;
    let before_snapshots = snapshot_ids(&config).await;
    // One set of clients for both runs, as in a warm Lambda: each report counts its own calls.
    let clients = Clients::new(config.clone());

    let report = run_sweep(
        &clients,
        &policy(false),
        &["us-east-1".into()],
        &options(local()),
    )
    .await;
    let region = &report.regions[0];
    assert!(region.error.is_none(), "{:?}", region.error);
    assert!(!report.dry_run);

    // The oldest unused web build and the instance-store image go; users, the newest
    // web build and the AWS Backup copy stay.
    let gone: BTreeSet<String> = ["ami-00000000000000001", "ami-00000000000000007"]
        .into_iter()
        .map(String::from)
        .collect();
    for id in &gone {
        assert_eq!(outcome(&report, id), Some(Outcome::Deregistered), "{id}");
    }
    let reason = |id: &str| {
        region
            .images
            .iter()
            .find(|i| i.image_id == id)
            .unwrap()
            .reasons[0]
            .as_str()
    };
    assert_eq!(reason("ami-00000000000000002"), "in_use");
    assert_eq!(reason("ami-00000000000000003"), "in_use");
    assert_eq!(reason("ami-00000000000000004"), "in_use");
    assert_eq!(reason("ami-00000000000000005"), "within_keep_count");
    assert_eq!(reason("ami-00000000000000006"), "backup_managed");
    assert_eq!(reason("ami-00000000000000008"), "within_keep_count");

    let remaining = image_ids(&config).await;
    let expected: BTreeSet<String> = [2, 3, 4, 5, 6, 8]
        .iter()
        .map(|i| format!("ami-0000000000000000{i}"))
        .collect();
    assert_eq!(remaining, expected);

    // Exactly the deregistered images' snapshots are deleted.
    let after_snapshots = snapshot_ids(&config).await;
    let deleted: BTreeSet<String> = before_snapshots
        .difference(&after_snapshots)
        .cloned()
        .collect();
    let expected_deleted: BTreeSet<String> = gone
        .iter()
        .flat_map(|id| estate.snapshots_by_image[id].clone())
        .collect();
    assert!(!expected_deleted.is_empty());
    assert_eq!(deleted, expected_deleted);
    for job in &region.jobs {
        assert!(matches!(job.outcome, JobOutcome::Deleted), "{job:?}");
    }

    // The bundle loses exactly its manifest and parts.
    assert_eq!(
        object_keys(&config, "bundles").await,
        BTreeSet::from(["legacy/other.manifest.xml".to_string()])
    );
    assert_eq!(report.totals.failures, 0);
    // The table wraps at 80 columns; compare its words.
    let table = ami_sweeper::edges::render::sweep_table(&report)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        table.contains("sweep: 8 images evaluated; deregistered 2;"),
        "{table}"
    );
    assert!(table.contains("throttled attempts (retried): 0"), "{table}");
    // No call per kept image: one launch-permission lookup per condemned image.
    assert_eq!(report.api_calls["DescribeImageAttribute"], 2);
    assert_eq!(report.api_calls["DeregisterImage"], 2);

    let again = run_sweep(
        &clients,
        &policy(false),
        &["us-east-1".into()],
        &options(local()),
    )
    .await;
    assert_eq!(again.totals.failures, 0);
    assert!(again.regions[0].images.iter().all(|i| i.outcome.is_none()));
    assert!(again.regions[0].jobs.is_empty());
    assert!(!again.api_calls.contains_key("DeregisterImage"));
    assert!(!again.api_calls.contains_key("DeleteSnapshot"));
    assert_eq!(again.api_calls["DescribeImages"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_through_the_binary_changes_nothing() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    furnish(&config).await;
    let images = image_ids(&config).await;
    let snapshots = snapshot_ids(&config).await;
    let dir = std::env::temp_dir().join(format!("ami-sweeper-dry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy_path = dir.join("policy.json");
    // The policy says dry_run false; --dry-run overrides it.
    std::fs::write(
        &policy_path,
        json!({"dry_run": false, "retention": {"min_age_days": 30, "keep_count": 1, "group_by": {"tags": ["app"]}}}).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .args([
            "sweep",
            "--dry-run",
            "--format",
            "json",
            "--now",
            crate::NOW,
            "--policy",
        ])
        .arg(&policy_path)
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["totals"]["outcomes"]["planned"], 2);
    assert!(report["api_calls"].get("DeregisterImage").is_none());
    assert!(report["api_calls"].get("DeleteSnapshot").is_none());
    assert_eq!(image_ids(&config).await, images);
    assert_eq!(snapshot_ids(&config).await, snapshots);
    assert_eq!(object_keys(&config, "bundles").await.len(), 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_mode_queues_jobs_and_cleanup_drains_them() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let estate = furnish(&config).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name("ami-sweeper-cleanup")
        // Refused messages (no DLQ here) are visible again at once, for the second drain.
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "0",
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let report = run_sweep(
        &Clients::new(config.clone()),
        &policy(false),
        &["us-east-1".into()],
        &options(QueueMode::Sqs {
            url: url.clone(),
            delay_seconds: 0,
        }),
    )
    .await;
    let jobs = &report.regions[0].jobs;
    assert!(!jobs.is_empty());
    assert!(
        jobs.iter().all(|j| j.outcome == JobOutcome::Queued),
        "{jobs:?}"
    );
    assert_eq!(report.api_calls["SendMessageBatch"], 1);
    // Nothing deleted yet: the worker has not run.
    let web1_snapshots = &estate.snapshots_by_image["ami-00000000000000001"];
    let snaps = snapshot_ids(&config).await;
    assert!(web1_snapshots.iter().all(|s| snaps.contains(s)));

    // The jobs carry the sweep's mandate: a worker with another policy refuses them (they
    // stay marked, and go to a DLQ when one is given), one with the same policy runs them.
    let drain = |policy: &Policy| {
        let policy_path =
            std::env::temp_dir().join(format!("ami-sweeper-sqs-{}.json", std::process::id()));
        std::fs::write(&policy_path, serde_json::to_string(policy).unwrap()).unwrap();
        Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
            .args([
                "cleanup",
                "--format",
                "json",
                "--queue-url",
                &url,
                "--policy",
            ])
            .arg(&policy_path)
            .env("AMI_SWEEPER_BUNDLE_BUCKETS", "bundles")
            .envs(moto.env())
            .output()
            .unwrap()
    };
    let other = Policy::from_json(
        &json!({"dry_run": false, "retention": {"min_age_days": 30}}).to_string(),
    )
    .unwrap();
    let refused: serde_json::Value = serde_json::from_slice(&drain(&other).stdout).unwrap();
    assert!(
        refused["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["outcome"] == "rejected"
                && j["error"].as_str().unwrap().contains("policy changed")),
        "{refused}"
    );
    let snaps = snapshot_ids(&config).await;
    assert!(web1_snapshots.iter().all(|s| snaps.contains(s)));
    let out = drain(&policy(false));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drained["jobs"].as_array().unwrap().len(), jobs.len());
    assert_eq!(
        drained["totals"]["deleted"].as_u64().unwrap() as usize,
        jobs.len()
    );
    let snaps = snapshot_ids(&config).await;
    assert!(web1_snapshots.iter().all(|s| !snaps.contains(s)));
    assert_eq!(object_keys(&config, "bundles").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_bucket_is_swept_from_its_own_region_only() {
    let moto = Moto::start(None);
    let config = moto.config().await;
    let s3 = crate::moto::s3(&config);
    s3.create_bucket().bucket("bundles").send().await.unwrap();
    let manifest = r#"<?xml version="1.0"?><manifest><image><parts count="1">
<part index="0"><filename>web.part.0</filename></part></parts></image></manifest>"#;
    for (key, body) in [
        ("lost/web.manifest.xml", manifest),
        ("lost/web.part.0", "0"),
    ] {
        s3.put_object()
            .bucket("bundles")
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    // A lost cleanup: the manifest carries the sweeper's mark, its image is gone.
    s3.put_object_tagging()
        .bucket("bundles")
        .key("lost/web.manifest.xml")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key(ami_sweeper::orphans::STORAGE_MARK)
                        .value("ami-00000000000000099")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let regions: Vec<String> = vec!["us-east-1".into(), "eu-west-1".into()];
    let mut opts = options(local());
    opts.regions = regions.clone();
    let policy = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "regions": ["us-east-1", "eu-west-1"]}"#,
    )
    .unwrap();
    let report = run_sweep(&Clients::new(config.clone()), &policy, &regions, &opts).await;
    let by_region = |r: &str| {
        report
            .regions
            .iter()
            .find(|x| x.region == r)
            .unwrap()
            .reconciled_bundles
            .len()
    };
    assert_eq!(report.totals.failures, 0, "{:?}", report.regions);
    assert_eq!(
        by_region("us-east-1"),
        1,
        "the bucket's own region reclaims it"
    );
    assert_eq!(
        by_region("eu-west-1"),
        0,
        "another region never scans the bucket"
    );
    assert!(object_keys(&config, "bundles").await.is_empty());
}
