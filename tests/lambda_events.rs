//! Every sample event in events/ driven through the Lambda handler (`ami-sweeper
//! invoke`, the same code path the runtime calls) against the local EC2 emulator.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::moto::{image_ids, seed_image, snapshot_ids, snapshot_of, Moto};
use serde_json::{json, Value};

const POLICY: &str = r#"{"dry_run": false, "retention": {"min_age_days": 30, "keep_count": 2, "group_by": {"tags": ["app"]}}}"#;

fn id(prefix: char, n: u32) -> String {
    format!("ami-0000000000000{prefix}{n:03}")
}

/// Four lineages: `web` (a), Image Builder recipe `golden-web` (b), recipe
/// `golden-api` (c) and `api` (d), monthly builds in 2025.
fn seed() -> Value {
    let mut images = Vec::new();
    let recipe = |r: &str, n: u32| {
        format!("arn:aws:imagebuilder:us-east-1:123456789012:image/{r}/1.0.0/{n}")
    };
    for n in 1..=5 {
        images.push(seed_image(
            &id('a', n),
            &format!("web-2025{n:02}01"),
            &format!("2025-{n:02}-01T00:00:00.000Z"),
            json!({"app": "web"}),
        ));
    }
    for n in 1..=4 {
        images.push(seed_image(
            &id('b', n),
            &format!("golden-web-1.0.0-{n}"),
            &format!("2025-{n:02}-02T00:00:00.000Z"),
            json!({"app": "golden", "Ec2ImageBuilderArn": recipe("golden-web", n), "CreatedBy": "EC2 Image Builder"}),
        ));
    }
    for n in 1..=2 {
        images.push(seed_image(
            &id('c', n),
            &format!("golden-api-1.0.0-{n}"),
            &format!("2025-{n:02}-03T00:00:00.000Z"),
            json!({"app": "golden", "Ec2ImageBuilderArn": recipe("golden-api", n)}),
        ));
    }
    for n in 1..=3 {
        images.push(seed_image(
            &id('d', n),
            &format!("api-2025{n:02}04"),
            &format!("2025-{n:02}-04T00:00:00.000Z"),
            json!({"app": "api"}),
        ));
    }
    json!(images)
}

fn event_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name)
}

fn invoke(moto: &Moto, event: &std::path::Path) -> (Option<i32>, Value, String) {
    invoke_with(moto, event, &[("AMI_SWEEPER_POLICY", POLICY)])
}

/// Runs `invoke` with the deployment's configuration given as environment variables.
fn invoke_with(
    moto: &Moto,
    event: &std::path::Path,
    config: &[(&str, &str)],
) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .arg("invoke")
        .arg(event)
        .envs(moto.env())
        .env_remove("AMI_SWEEPER_POLICY")
        .env_remove("AMI_SWEEPER_ALLOW_EVENT_POLICY")
        .env_remove("AMI_SWEEPER_ACCOUNT_ID")
        .env_remove("AMI_SWEEPER_DRY_RUN")
        .env_remove("AMI_SWEEPER_POLICY_PARAMETER")
        .env_remove("AMI_SWEEPER_BUNDLE_BUCKETS")
        .env_remove("CLEANUP_QUEUE_URL")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .envs(config.iter().copied())
        .output()
        .unwrap();
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        stdout,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn with_outcome(report: &Value, outcome: &str) -> BTreeSet<String> {
    report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == outcome)
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(list: &[(char, u32)]) -> BTreeSet<String> {
    list.iter().map(|(p, n)| id(*p, *n)).collect()
}

/// Runs one event against a fresh emulator; returns the report and the images left.
async fn run_event(name: &str) -> (Value, BTreeSet<String>, BTreeSet<String>, String) {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    let (code, report, stderr) = invoke(&moto, &event_path(name));
    assert_eq!(code, Some(0), "{name}: {stderr}");
    let after = image_ids(&config).await;
    (report, before, after, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_schedule_sweeps_every_lineage() {
    let (report, before, after, stderr_lines) = run_event("schedule.json").await;
    // Both recipes carry app=golden: one group under the policy, the two newest stay.
    let gone = ids(&[
        ('a', 1),
        ('a', 2),
        ('a', 3),
        ('b', 1),
        ('b', 2),
        ('c', 1),
        ('c', 2),
        ('d', 1),
    ]);
    assert_eq!(with_outcome(&report, "deregistered"), gone);
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        gone
    );
    assert_eq!(report["totals"]["failures"], 0);
    assert_eq!(report["totals"]["jobs"]["deleted"], 8, "one snapshot each");
    // The metrics line (stderr under invoke, stdout in Lambda) matches the report.
    let emf: Value = stderr_lines
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("_aws").is_some())
        })
        .expect("an EMF line");
    assert_eq!(emf["ImagesDeregistered"], 8);
    assert_eq!(emf["SnapshotsDeleted"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_dry_run_changes_nothing() {
    let (report, before, after, _) = run_event("manual-dry-run.json").await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(with_outcome(&report, "planned").len(), 8);
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_policy_is_used_as_given_when_the_deployment_allows_it() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    let (code, report, stderr) = invoke_with(
        &moto,
        &event_path("manual-policy.json"),
        &[
            ("AMI_SWEEPER_POLICY", POLICY),
            ("AMI_SWEEPER_ALLOW_EVENT_POLICY", "true"),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let after = image_ids(&config).await;
    assert_eq!(report["dry_run"], true);
    // names web-*: only the web lineage, keep_count 2.
    assert_eq!(
        with_outcome(&report, "planned"),
        ids(&[('a', 1), ('a', 2), ('a', 3)])
    );
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builder_available_sweeps_only_that_recipe() {
    let (report, before, after, _) = run_event("imagebuilder-available.json").await;
    let gone = ids(&[('b', 1), ('b', 2)]);
    assert_eq!(with_outcome(&report, "deregistered"), gone);
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        gone
    );
    // golden-api shares the app tag (and so the group) but not the recipe: out of scope,
    // untouched and not listed; the recipe's images were judged within their group.
    let listed: BTreeSet<String> = report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, (1..=4).map(|n| id('b', n)).collect());
    let reason = |image: &str| {
        report["regions"][0]["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["image_id"] == image)
            .map(|i| i["reasons"][0].clone())
            .unwrap()
    };
    assert_eq!(reason(&id('b', 4)), "within_keep_count");
}

/// An Image Builder event for `recipe` of account 123456789012 in us-east-1.
fn recipe_event(recipe: &str) -> PathBuf {
    event_file(
        &format!("recipe-{recipe}.json"),
        json!({
            "version": "0", "id": "1", "detail-type": "EC2 Image Builder Image State Change",
            "source": "aws.imagebuilder", "account": "123456789012",
            "time": "2026-11-26T02:14:07Z", "region": "us-east-1",
            "resources": [format!("arn:aws:imagebuilder:us-east-1:123456789012:image/{recipe}/1.0.0/9")],
            "detail": {"previous-state": {"status": "DISTRIBUTING"}, "state": {"status": "AVAILABLE"}}
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_recipe_the_policy_does_not_select_deregisters_nothing() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    // The deployment selects the golden-web recipe only.
    let web_only = r#"{"dry_run": false, "retention": {"min_age_days": 30, "keep_count": 1},
        "selection": {"tags": {"Ec2ImageBuilderArn": "arn:aws:imagebuilder:us-east-1:123456789012:image/golden-web/*"}}}"#;
    let (code, report, stderr) = invoke_with(
        &moto,
        &recipe_event("golden-api"),
        &[("AMI_SWEEPER_POLICY", web_only)],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(with_outcome(&report, "deregistered").is_empty(), "{report}");
    assert_eq!(image_ids(&config).await, before);
}

/// `db-old` (recipe db, env prod, 2024) and recipe web's builds in two envs, three each.
fn envs_seed() -> Value {
    let recipe = |r: &str, n: u32| {
        format!("arn:aws:imagebuilder:us-east-1:123456789012:image/{r}/1.0.0/{n}")
    };
    let mut images = vec![seed_image(
        &id('e', 0),
        "db-old",
        "2024-06-01T00:00:00.000Z",
        json!({"env": "prod", "Ec2ImageBuilderArn": recipe("db", 1)}),
    )];
    for (k, env) in [(1u32, "prod"), (2, "dev")] {
        for n in 1..=3 {
            images.push(seed_image(
                &id('e', k * 10 + n),
                &format!("web-{env}-{n}"),
                &format!("2025-0{}-01T00:00:00.000Z", (k - 1) * 3 + n),
                json!({"env": env, "Ec2ImageBuilderArn": recipe("web", k * 10 + n)}),
            ));
        }
    }
    json!(images)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_count_groups_and_max_deregistrations_hold_under_an_event() {
    let per_env = |extra: &str| {
        format!(
            r#"{{"dry_run": false, "retention": {{"min_age_days": 30, "keep_count": 2,
                "group_by": {{"tags": ["env"]}}}}{extra}}}"#
        )
    };
    // keep_count 2 per env: the web event takes the oldest web build of each env, as
    // the nightly sweep of the same policy does; never a third or fourth.
    let moto = Moto::start(Some(envs_seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    let (code, report, stderr) = invoke_with(
        &moto,
        &recipe_event("web"),
        &[("AMI_SWEEPER_POLICY", per_env("").as_str())],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let gone: BTreeSet<String> = [id('e', 11), id('e', 21)].into();
    assert_eq!(with_outcome(&report, "deregistered"), gone, "{report}");
    assert_eq!(
        before
            .difference(&image_ids(&config).await)
            .cloned()
            .collect::<BTreeSet<_>>(),
        gone
    );
    // max_deregistrations counts on the whole plan: the one deregistration the nightly
    // sweep may make is db-old's, out of the web event's scope, so the event makes none.
    let moto = Moto::start(Some(envs_seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    let limited = per_env(r#", "limits": {"max_deregistrations": 1}"#);
    let (code, report, stderr) = invoke_with(
        &moto,
        &recipe_event("web"),
        &[("AMI_SWEEPER_POLICY", limited.as_str())],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(with_outcome(&report, "deregistered").is_empty(), "{report}");
    assert_eq!(image_ids(&config).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builder_other_statuses_are_ignored() {
    let (report, before, after, _) = run_event("imagebuilder-building.json").await;
    assert!(report["ignored"].as_str().unwrap().contains("BUILDING"));
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_available_sweeps_only_that_images_group() {
    let (report, before, after, _) = run_event("ami-available.json").await;
    let gone = ids(&[('a', 1), ('a', 2), ('a', 3)]);
    assert_eq!(with_outcome(&report, "deregistered"), gone);
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        gone
    );
    let listed: BTreeSet<String> = report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        (1..=5).map(|n| id('a', n)).collect(),
        "only the web group is in scope"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_batch_reports_only_the_snapshot_still_in_use() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    // The first job's image is deregistered; the second's is still registered.
    let gone_snapshot = snapshot_of(&config, &id('a', 1)).await;
    let busy_snapshot = snapshot_of(&config, &id('a', 2)).await;
    // As a sweep does before it deregisters: the write-ahead mark ties each snapshot to
    // its image (the worker checks it).
    for (snapshot, image) in [(&gone_snapshot, id('a', 1)), (&busy_snapshot, id('a', 2))] {
        ec2.create_tags()
            .resources(snapshot)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(ami_sweeper::orphans::STORAGE_MARK)
                    .value(image)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    ec2.deregister_image()
        .image_id(id('a', 1))
        .send()
        .await
        .unwrap();

    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(event_path("sqs-cleanup.json")).unwrap())
            .unwrap();
    let records = event["Records"].as_array_mut().unwrap();
    for (record, snapshot) in records.iter_mut().zip([&gone_snapshot, &busy_snapshot]) {
        let mut job: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        job["snapshot_id"] = json!(snapshot);
        record["body"] = json!(job.to_string());
    }
    let busy_message = records[1]["messageId"].as_str().unwrap().to_string();
    let path = std::env::temp_dir().join(format!("ami-sweeper-sqs-{}.json", std::process::id()));
    std::fs::write(&path, event.to_string()).unwrap();
    let (code, response, stderr) = invoke(&moto, &path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": busy_message}]})
    );
    let snapshots = snapshot_ids(&config).await;
    assert!(!snapshots.contains(&gone_snapshot));
    assert!(snapshots.contains(&busy_snapshot));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_is_rejected_without_any_aws_call() {
    // No emulator at all: any AWS call would fail, but none is made.
    let path =
        std::env::temp_dir().join(format!("ami-sweeper-unknown-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"detail-type": "Object Created", "source": "aws.s3", "detail": {}}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .arg("invoke")
        .arg(&path)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AMI_SWEEPER_POLICY", POLICY)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "ami-sweeper: unrecognised event: EventBridge event from \"aws.s3\" of type \"Object Created\"; nothing was done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_region_fails_the_invocation_and_still_reports() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    // The queue the deployment names does not exist: the region must stop unchanged,
    // and the invocation must count as failed (Lambda's Errors alarm), report included.
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .arg("invoke")
        .arg(event_path("schedule.json"))
        .envs(moto.env())
        .env("AMI_SWEEPER_POLICY", POLICY)
        .env(
            "CLEANUP_QUEUE_URL",
            format!("{}/123456789012/gone", moto.endpoint),
        )
        .env_remove("AMI_SWEEPER_DRY_RUN")
        .env_remove("AMI_SWEEPER_POLICY_PARAMETER")
        .env_remove("AMI_SWEEPER_BUNDLE_BUCKETS")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["regions"][0]["error"]
        .as_str()
        .unwrap()
        .contains("cleanup jobs cannot be queued"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failures; see the report"));
    assert_eq!(image_ids(&config).await, before);
}

/// Writes an event file into a scratch directory.
fn event_file(name: &str, event: Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ami-sweeper-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, event.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_can_loosen_the_deployments_policy() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    // The deployment: a dry run, 30 days. The event: act now, on everything.
    let configured = r#"{"dry_run": true, "retention": {"min_age_days": 30}}"#;
    let loosen = event_file(
        "loosen.json",
        json!({"policy": {"dry_run": false, "retention": {"min_age_days": 0},
                          "acknowledge": ["no_minimum_age"]}}),
    );
    let (code, _, stderr) = invoke_with(&moto, &loosen, &[("AMI_SWEEPER_POLICY", configured)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("an event-supplied policy is refused"),
        "{stderr}"
    );
    assert_eq!(image_ids(&config).await, before);

    // Allowed by the operator, the configured ForceDryRun still holds...
    let (code, report, stderr) = invoke_with(
        &moto,
        &loosen,
        &[
            ("AMI_SWEEPER_POLICY", configured),
            ("AMI_SWEEPER_ALLOW_EVENT_POLICY", "true"),
            ("AMI_SWEEPER_DRY_RUN", "true"),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(image_ids(&config).await, before);

    // ...and so do the configured regions.
    let elsewhere = event_file(
        "elsewhere.json",
        json!({"policy": {"regions": ["eu-west-1"], "retention": {"min_age_days": 30}}}),
    );
    let (code, _, stderr) = invoke_with(
        &moto,
        &elsewhere,
        &[
            ("AMI_SWEEPER_POLICY", configured),
            ("AMI_SWEEPER_ALLOW_EVENT_POLICY", "true"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("region eu-west-1, outside the deployment's regions [us-east-1]"),
        "{stderr}"
    );
    assert_eq!(image_ids(&config).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_another_account_or_region_are_ignored() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(event_path("imagebuilder-available.json")).unwrap(),
    )
    .unwrap();
    let cases = [
        // The image ARN names another account than the event came from.
        (
            "111122223333",
            "123456789012",
            "us-east-1",
            "Image Builder image of account 111122223333 in an event from account 123456789012",
        ),
        // Consistent, but not this deployment's account.
        (
            "111122223333",
            "111122223333",
            "us-east-1",
            "this deployment sweeps account 123456789012",
        ),
        // This account, a region the policy does not sweep.
        (
            "123456789012",
            "123456789012",
            "eu-west-1",
            "region eu-west-1, outside the policy's regions",
        ),
    ];
    for (arn_account, event_account, region, why) in cases {
        event["account"] = json!(event_account);
        event["region"] = json!(region);
        event["resources"] = json!([format!(
            "arn:aws:imagebuilder:{region}:{arn_account}:image/golden-web/1.0.0/7"
        )]);
        let path = event_file("ib.json", event.clone());
        let (code, report, stderr) = invoke_with(
            &moto,
            &path,
            &[
                ("AMI_SWEEPER_POLICY", POLICY),
                ("AMI_SWEEPER_ACCOUNT_ID", "123456789012"),
            ],
        );
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            report["ignored"].as_str().unwrap().contains(why),
            "{report}"
        );
    }
    let mut ami: Value =
        serde_json::from_str(&std::fs::read_to_string(event_path("ami-available.json")).unwrap())
            .unwrap();
    ami["region"] = json!("ap-south-1");
    let path = event_file("ami.json", ami);
    let (code, report, stderr) = invoke(&moto, &path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        report["ignored"]
            .as_str()
            .unwrap()
            .contains("region ap-south-1"),
        "{report}"
    );
    assert_eq!(image_ids(&config).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_sends_a_forged_job_to_the_dead_letter_queue_and_deletes_nothing() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let dlq = sqs
        .create_queue()
        .queue_name("cleanup-dlq")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let before = snapshot_ids(&config).await;
    // A well-formed job for the snapshot of an image that is still registered.
    let victim = snapshot_of(&config, &id('a', 1)).await;
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(event_path("sqs-cleanup.json")).unwrap())
            .unwrap();
    let records = event["Records"].as_array_mut().unwrap();
    records.truncate(1);
    let forged = json!({"version": 1, "region": "us-east-1", "image_id": id('a', 1),
                        "kind": "delete_snapshot", "snapshot_id": victim});
    records[0]["body"] = json!(forged.to_string());
    let path = event_file("forged-sqs.json", event);
    let (code, response, stderr) = invoke_with(
        &moto,
        &path,
        &[
            ("AMI_SWEEPER_POLICY", POLICY),
            ("CLEANUP_DLQ_URL", dlq.as_str()),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    // Refused and moved to the DLQ: not a failure to redeliver.
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(snapshot_ids(&config).await, before, "nothing deleted");
    let got = sqs
        .receive_message()
        .queue_url(&dlq)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let letter = &got.messages()[0];
    assert_eq!(letter.body().unwrap(), forged.to_string());
    let reason = letter.message_attributes().unwrap()["reason"]
        .string_value()
        .unwrap();
    assert!(reason.contains("nothing was deleted"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_read_from_a_hierarchical_ssm_parameter() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    aws_sdk_ssm::Client::new(&config)
        .put_parameter()
        .name("/ami-sweeper/policy")
        .value(r#"{"dry_run": true, "retention": {"min_age_days": 30}}"#)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let (code, report, stderr) = invoke_with(
        &moto,
        &event_path("schedule.json"),
        &[("AMI_SWEEPER_POLICY_PARAMETER", "/ami-sweeper/policy")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    // The parameter's policy, not another: a dry run with no grouping.
    assert_eq!(report["dry_run"], true);
    let groups: BTreeSet<&str> = report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, BTreeSet::from(["*"]));

    // A parameter that does not exist fails the invocation with the AWS error code.
    let (code, _, stderr) = invoke_with(
        &moto,
        &event_path("schedule.json"),
        &[("AMI_SWEEPER_POLICY_PARAMETER", "/ami-sweeper/missing")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("GetParameter: ParameterNotFound"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_worker_refuses_every_trigger_but_cleanup_jobs() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let before = image_ids(&config).await;
    let worker = [
        ("AMI_SWEEPER_POLICY", POLICY),
        ("AMI_SWEEPER_FUNCTION", "worker"),
    ];
    for event in [
        "schedule.json",
        "imagebuilder-available.json",
        "ami-available.json",
    ] {
        let (code, _, stderr) = invoke_with(&moto, &event_path(event), &worker);
        assert_eq!(code, Some(2), "{event}: {stderr}");
        assert!(stderr.contains("runs cleanup jobs only"), "{stderr}");
    }
    assert_eq!(
        image_ids(&config).await,
        before,
        "the worker's role never sweeps"
    );
}

/// Review (issue 29 item 2): a worker that holds pairs' leases (it knows the report
/// bucket) named its batch's lease after the first record, and an SQS event with no
/// records made it panic instead of answering an empty batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leasing_worker_answers_an_empty_batch_without_panicking() {
    let moto = Moto::start(Some(seed()));
    let path = std::env::temp_dir().join(format!(
        "ami-sweeper-empty-batch-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, json!({"Records": []}).to_string()).unwrap();
    let worker = [
        ("AMI_SWEEPER_POLICY", POLICY),
        ("AMI_SWEEPER_FUNCTION", "worker"),
        ("AMI_SWEEPER_REPORT_BUCKET", "hub-reports"),
        ("AMI_SWEEPER_ACCOUNT_ID", "123456789012"),
    ];
    let (code, stdout, stderr) = invoke_with(&moto, &path, &worker);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, json!({"batchItemFailures": []}), "{stderr}");
}
