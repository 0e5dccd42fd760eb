//! The organization sweep's Lambda path on the emulator: the scheduled event makes the
//! dispatcher send one sweep-queue message per (account, region) pair; those messages,
//! delivered as an SQS event, sweep each pair in its member account and write its report
//! to the hub's bucket. In process with `invoke`, and under the Runtime API emulator.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::lambda_runtime::{invoke, sqs_batch, start_emulator, start_function};
use crate::moto::{bake, image_ids, member_config, public_ami, s3, tag, Moto, OrgBuilder};
use serde_json::{json, Value};

struct Hub {
    queue_url: String,
    images: Vec<(String, aws_config::SdkConfig)>,
    policy: String,
    /// An account of another OU, with the member role and one old image: never swept.
    outsider: (String, aws_config::SdkConfig),
}

/// Two member accounts under an OU, each with one old unused image in us-east-1; the
/// hub's sweep queue and report bucket.
async fn hub(moto: &Moto) -> Hub {
    let hub = moto.config().await;
    let base = public_ami(&hub).await;
    let org = OrgBuilder::create(&hub).await;
    let ou = org.ou(&org.root, "workloads").await;
    let mut images = Vec::new();
    for name in ["a", "b"] {
        let id = org.account(name, &ou).await;
        let member = member_config(&hub, &id, "us-east-1").await;
        let (baked, _) = bake(&member, &base, 1).await;
        let image = baked[0].clone();
        images.push((image, member));
    }
    let sandbox = org.ou(&org.root, "sandbox").await;
    let outsider = org.account("c", &sandbox).await;
    let outsider_config = member_config(&hub, &outsider, "us-east-1").await;
    bake(&outsider_config, &base, 1).await;
    let queue_url = aws_sdk_sqs::Client::new(&hub)
        .create_queue()
        .queue_name("sweep-requests")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    s3(&hub)
        .create_bucket()
        .bucket("hub-reports")
        .send()
        .await
        .unwrap();
    // Images are made now: the policy's minimum age is 0 (acknowledged) with keep_count 0.
    let policy = json!({
        "dry_run": false,
        "retention": {"min_age_days": 0},
        "acknowledge": ["no_minimum_age"],
        "recycle_bin": "ignore",
        "accounts": {"organization": {"ou_ids": [ou]}}
    })
    .to_string();
    Hub {
        queue_url,
        images,
        policy,
        outsider: (outsider, outsider_config),
    }
}

fn config(moto: &Moto, hub: &Hub) -> Vec<(&'static str, String)> {
    let mut env = moto.env();
    env.extend([
        ("AMI_SWEEPER_POLICY", hub.policy.clone()),
        ("SWEEP_QUEUE_URL", hub.queue_url.clone()),
        ("AMI_SWEEPER_REPORT_BUCKET", "hub-reports".to_string()),
    ]);
    env
}

/// The sweep-queue messages, as the SQS event Lambda would deliver them.
async fn delivered(moto: &Moto, hub: &Hub) -> Value {
    let sqs = aws_sdk_sqs::Client::new(&moto.config().await);
    let out = sqs
        .receive_message()
        .queue_url(&hub.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    sqs_batch(out.messages(), "sweep-requests")
}

async fn reports(moto: &Moto) -> BTreeSet<String> {
    s3(&moto.config().await)
        .list_objects_v2()
        .bucket("hub-reports")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

async fn images_left(hub: &Hub) -> usize {
    let mut n = 0;
    for (_, member) in &hub.images {
        n += image_ids(member).await.len();
    }
    n
}

fn schedule() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/events/schedule.json")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_fans_out_pairs_and_each_pair_reports_to_the_hub_bucket() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let env = config(&moto, &hub);
    let run = |event: String| {
        let path =
            std::env::temp_dir().join(format!("ami-sweeper-org-{}.json", std::process::id()));
        std::fs::write(&path, event).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
            .arg("invoke")
            .arg(&path)
            .env_remove("CLEANUP_QUEUE_URL")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let dispatched = run(schedule());
    assert_eq!(dispatched["dispatched"], 2, "{dispatched}");
    assert_eq!(
        images_left(&hub).await,
        2,
        "the dispatcher itself sweeps nothing"
    );
    let batch = delivered(&moto, &hub).await;
    assert_eq!(batch["Records"].as_array().unwrap().len(), 2);
    let answer = run(batch.to_string());
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(images_left(&hub).await, 0);
    let keys = reports(&moto).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let run_name = dispatched["run"].as_str().unwrap();
    for account in dispatched["accounts"].as_array().unwrap() {
        let key = format!(
            "reports/{run_name}/{}/us-east-1.json",
            account.as_str().unwrap()
        );
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }

    // A forged sweep request for a region outside the deployment's is refused, not run.
    let forged = json!({"Records": [{
        "messageId": "m-forged", "receiptHandle": "r", "body":
            json!({"sweep": {"account": dispatched["accounts"][0], "region": "eu-west-1", "run": "x"}}).to_string(),
        "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sweep-requests", "awsRegion": "us-east-1"
    }]});
    let answer = run(forged.to_string());
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": "m-forged"}])
    );
    assert_eq!(
        reports(&moto).await.len(),
        2,
        "no report for a refused pair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_runtime_api_the_same_fan_out_works() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let (port, _emulator) = start_emulator();
    let _function = start_function(port, &config(&moto, &hub));
    let out = invoke(port, &schedule());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dispatched: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dispatched["dispatched"], 2, "{dispatched}");
    let batch = delivered(&moto, &hub).await;
    let out = invoke(port, &batch.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let keys = reports(&moto).await;
    assert_eq!(keys.len(), 2);
    let first = s3(&moto.config().await)
        .get_object()
        .bucket("hub-reports")
        .key(keys.iter().next().unwrap())
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let report: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(images_left(&hub).await, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_the_same_fan_out_in_process() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let policy =
        std::env::temp_dir().join(format!("ami-sweeper-org-cli-{}.json", std::process::id()));
    std::fs::write(&policy, &hub.policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .args(["sweep", "--format", "json", "--account-concurrency", "2"])
        .args(["--report-bucket", "hub-reports", "--policy"])
        .arg(&policy)
        .envs(moto.env())
        .env_remove("CLEANUP_QUEUE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failures"], 0);
    assert_eq!(report["accounts"].as_object().unwrap().len(), 2, "{report}");
    for (_, line) in report["accounts"].as_object().unwrap() {
        assert_eq!(line["deregistered"], 1);
    }
    assert_eq!(images_left(&hub).await, 0);
    assert_eq!(reports(&moto).await.len(), 2);
}

/// Runs `invoke` on `event` with the hub's configuration and `extra` variables.
fn invoke_hub(moto: &Moto, hub: &Hub, event: &Value, extra: &[(&str, &str)]) -> Value {
    let path = std::env::temp_dir().join(format!(
        "ami-sweeper-org-{}-{}.json",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, event.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .arg("invoke")
        .arg(&path)
        .env_remove("CLEANUP_QUEUE_URL")
        .envs(config(moto, hub).iter().map(|(k, v)| (*k, v.as_str())))
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn queue(moto: &Moto, name: &str) -> String {
    aws_sdk_sqs::Client::new(&moto.config().await)
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// Asserts that a message in the dead-letter queue at `url` was refused with `why`.
async fn refused_with(moto: &Moto, url: &str, why: &str) {
    let reasons = reasons_in(moto, url).await;
    assert!(reasons.iter().any(|r| r.contains(why)), "{reasons:?}");
}

/// The reasons of the messages in a dead-letter queue.
async fn reasons_in(moto: &Moto, url: &str) -> Vec<String> {
    let out = aws_sdk_sqs::Client::new(&moto.config().await)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .filter_map(|m| m.message_attributes()?.get("reason")?.string_value())
        .map(str::to_string)
        .collect()
}

fn sqs_event(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({
                "messageId": format!("m-{i}"), "receiptHandle": "r", "body": body,
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sweep-requests",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

fn bodies(batch: &Value) -> Vec<String> {
    batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_dispatch_stays_a_dry_run_in_every_pair() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let dispatched = invoke_hub(&moto, &hub, &json!({"dry_run": true}), &[]);
    assert_eq!(dispatched["dispatched"], 2, "{dispatched}");
    assert_eq!(dispatched["dry_run"], true);
    let batch = delivered(&moto, &hub).await;
    let answer = invoke_hub(&moto, &hub, &batch, &[]);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(
        images_left(&hub).await,
        2,
        "a dry run changes nothing anywhere"
    );
    let keys = reports(&moto).await;
    assert_eq!(keys.len(), 2);
    for key in keys {
        let pair = pair_report(&moto, &key).await;
        assert_eq!(pair["report"]["dry_run"], true, "{pair}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_scope_and_a_lineage_survive_the_fan_out() {
    let moto = Moto::start_with_public_amis();
    let mut hub = hub(&moto).await;
    hub.policy = hub.policy.replace(
        r#""retention":{"min_age_days":0}"#,
        r#""retention":{"min_age_days":0,"group_by":{"tags":["app"]}}"#,
    );
    assert!(hub.policy.contains("group_by"), "{}", hub.policy);
    let (web, member) = hub.images[0].clone();
    let account = dispatched_account(&member).await;
    let arn = |recipe: &str, n: u32| {
        format!("arn:aws:imagebuilder:us-east-1:{account}:image/{recipe}/1.0.0/{n}")
    };
    tag(
        &member,
        &web,
        &[("app", "web"), ("Ec2ImageBuilderArn", &arn("web", 1))],
    )
    .await;
    let base = public_ami(&moto.config().await).await;
    let (more, _) = bake(&member, &base, 2).await;
    tag(
        &member,
        &more[0],
        &[("app", "db"), ("Ec2ImageBuilderArn", &arn("db", 1))],
    )
    .await;
    tag(
        &member,
        &more[1],
        &[("app", "db"), ("Ec2ImageBuilderArn", &arn("db", 2))],
    )
    .await;
    // Image Builder made a new web image in account a: one pair, that account, that recipe.
    let event = json!({
        "version": "0", "id": "1", "detail-type": "EC2 Image Builder Image State Change",
        "source": "aws.imagebuilder", "account": account, "time": "2026-11-26T02:14:07Z",
        "region": "us-east-1", "resources": [arn("web", 9)],
        "detail": {"previous-state": {"status": "DISTRIBUTING"}, "state": {"status": "AVAILABLE"}}
    });
    let dispatched = invoke_hub(&moto, &hub, &event, &[]);
    assert_eq!(dispatched["dispatched"], 1, "{dispatched}");
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &[]);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let left = image_ids(&member).await;
    assert!(!left.contains(&web), "the recipe's image goes");
    assert!(
        left.contains(&more[0]) && left.contains(&more[1]),
        "db stays"
    );
    assert_eq!(
        image_ids(&hub.images[1].1).await.len(),
        1,
        "account b untouched"
    );
    // An AMI state change for a db image: its lineage (app=db) in its account only.
    let event = json!({
        "version": "0", "id": "2", "detail-type": "EC2 AMI State Change", "source": "aws.ec2",
        "account": account, "time": "2026-11-26T04:10:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1::image/{}", more[1])],
        "detail": {"RequestId": "r", "ImageId": more[1], "State": "available", "ErrorMessage": ""}
    });
    let dispatched = invoke_hub(&moto, &hub, &event, &[]);
    assert_eq!(dispatched["dispatched"], 1, "{dispatched}");
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &[]);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert!(image_ids(&member).await.is_empty(), "both db images go");
    assert_eq!(
        image_ids(&hub.images[1].1).await.len(),
        1,
        "account b untouched"
    );
    assert_eq!(image_ids(&hub.outsider.1).await.len(), 1);
}

/// The account a member configuration acts as.
async fn dispatched_account(member: &aws_config::SdkConfig) -> String {
    aws_sdk_sts::Client::new(member)
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .account()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_naming_an_account_outside_the_ous_are_refused_by_the_pair_sweeper_and_the_worker()
{
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let sweep_dlq = queue(&moto, "sweep-dlq").await;
    let cleanup_dlq = queue(&moto, "cleanup-dlq").await;
    let dlqs = [
        ("SWEEP_DLQ_URL", sweep_dlq.as_str()),
        ("CLEANUP_DLQ_URL", cleanup_dlq.as_str()),
    ];
    let (outsider, outsider_config) = hub.outsider.clone();
    // A genuine request, re-addressed to the outsider (which has the member role too).
    invoke_hub(&moto, &hub, &schedule_value(), &[]);
    let genuine = bodies(&delivered(&moto, &hub).await);
    let mut forged: Value = serde_json::from_str(&genuine[0]).unwrap();
    forged["sweep"]["account"] = json!(outsider);
    forged["sweep"]["mandate"]["only_accounts"] = json!([outsider]);
    let answer = invoke_hub(&moto, &hub, &sqs_event(&[forged.to_string()]), &dlqs);
    assert_eq!(
        answer["batchItemFailures"],
        json!([]),
        "refused to the DLQ: {answer}"
    );
    refused_with(&moto, &sweep_dlq, "is not one this deployment sweeps").await;
    assert_eq!(
        image_ids(&outsider_config).await.len(),
        1,
        "the outsider is untouched"
    );
    // The worker: a job for the outsider's snapshot, whose image is gone, is refused too.
    let image = image_ids(&outsider_config)
        .await
        .into_iter()
        .next()
        .unwrap();
    let snapshot = crate::moto::snapshot_of(&outsider_config, &image).await;
    aws_sdk_ec2::Client::new(&outsider_config)
        .deregister_image()
        .image_id(&image)
        .send()
        .await
        .unwrap();
    let job = json!({"version": 1, "region": "us-east-1", "account": outsider,
        "image_id": image, "kind": "delete_snapshot", "snapshot_id": snapshot});
    let answer = invoke_hub(&moto, &hub, &sqs_event(&[job.to_string()]), &dlqs);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    refused_with(&moto, &cleanup_dlq, "is not one this deployment sweeps").await;
    assert!(crate::moto::snapshot_ids(&outsider_config)
        .await
        .contains(&snapshot));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_policy_that_changed_since_dispatch_is_refused() {
    let moto = Moto::start_with_public_amis();
    let mut hub = hub(&moto).await;
    let sweep_dlq = queue(&moto, "sweep-dlq").await;
    invoke_hub(&moto, &hub, &schedule_value(), &[]);
    let batch = delivered(&moto, &hub).await;
    // The policy changes between dispatch and receipt.
    hub.policy = hub
        .policy
        .replace(r#""min_age_days":0"#, r#""min_age_days":1"#);
    let answer = invoke_hub(
        &moto,
        &hub,
        &batch,
        &[("SWEEP_DLQ_URL", sweep_dlq.as_str())],
    );
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let reasons = reasons_in(&moto, &sweep_dlq).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("policy changed")),
        "{reasons:?}"
    );
    assert_eq!(images_left(&hub).await, 2);
    assert!(reports(&moto).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_pairs_make_no_s3_call_with_member_credentials() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    s3(&moto.config().await)
        .create_bucket()
        .bucket("hub-bundles")
        .send()
        .await
        .unwrap();
    let buckets = [("AMI_SWEEPER_BUNDLE_BUCKETS", "hub-bundles")];
    invoke_hub(&moto, &hub, &schedule_value(), &buckets);
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &buckets);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(images_left(&hub).await, 0);
    for key in reports(&moto).await {
        let pair = pair_report(&moto, &key).await;
        assert!(pair.get("error").is_none(), "{pair}");
        let calls = pair["report"]["api_calls"].as_object().unwrap();
        for s3_call in ["ListObjectsV2", "GetBucketLocation", "GetObjectTagging"] {
            assert!(!calls.contains_key(s3_call), "{s3_call} in {calls:?}");
        }
    }
}

fn schedule_value() -> Value {
    serde_json::from_str(&schedule()).unwrap()
}

/// A pair's report, as the hub's bucket holds it.
async fn pair_report(moto: &Moto, key: &str) -> Value {
    let body = s3(&moto.config().await)
        .get_object()
        .bucket("hub-reports")
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// A continuation of the first delivered pair, as a pair sweeper stopped by its deadline
/// writes it: the same pair and run, the mandate narrowed for a continuation, link 1 of a
/// chain that began at `planned_at`.
fn continuation_of(body: &str, planned_at: &str) -> (String, String) {
    use ami_sweeper::app::org::SweepRequest;
    use ami_sweeper::chain::{continuation_mandate, Chain, ChainTotals};
    let first = SweepRequest::from_json(body).unwrap().unwrap();
    let next = SweepRequest {
        mandate: Some(continuation_mandate(first.mandate.as_ref().unwrap())),
        chain: Some(Chain {
            link: 1,
            planned_at: planned_at.to_string(),
            continues: first.report_key(),
            totals: ChainTotals {
                deregistered: 0,
                ..ChainTotals::default()
            },
        }),
        ..first.clone()
    };
    (next.to_json(), first.report_key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_under_a_policy_changed_since_its_chain_began_is_refused() {
    let moto = Moto::start_with_public_amis();
    let mut hub = hub(&moto).await;
    let sweep_dlq = queue(&moto, "sweep-dlq").await;
    invoke_hub(&moto, &hub, &schedule_value(), &[]);
    let batch = delivered(&moto, &hub).await;
    let now = ami_sweeper::time::format_instant(chrono::Utc::now());
    let (next, continues) = continuation_of(&bodies(&batch)[0], &now);
    let dlq = [("SWEEP_DLQ_URL", sweep_dlq.as_str())];

    // The policy changes while the chain runs: its continuation is refused, with the reason.
    let configured = hub.policy.clone();
    hub.policy = configured.replace(r#""min_age_days":0"#, r#""min_age_days":1"#);
    let answer = invoke_hub(&moto, &hub, &sqs_event(std::slice::from_ref(&next)), &dlq);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let reasons = reasons_in(&moto, &sweep_dlq).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("policy changed"), "{reasons:?}");
    assert_eq!(images_left(&hub).await, 2, "nothing was swept");
    assert!(reports(&moto).await.is_empty());

    // Under the policy it was made from, the same continuation sweeps its pair as link 1,
    // its report names the link it continues, and its chain ends there (lease released).
    hub.policy = configured;
    let answer = invoke_hub(&moto, &hub, &sqs_event(&[next]), &dlq);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(images_left(&hub).await, 1);
    let keys = reports(&moto).await;
    let link = continues.replace(".json", ".link-1.json");
    assert_eq!(keys, [link.clone()].into(), "{keys:?}");
    let report = pair_report(&moto, &link).await;
    assert_eq!(report["chain"]["link"], 1, "{report}");
    assert_eq!(report["chain"]["continues"], continues.as_str(), "{report}");
    assert_eq!(report["chain"]["totals"]["deregistered"], 1, "{report}");
    assert!(report["chain"].get("continued_by").is_none(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_skips_a_pair_whose_chain_still_runs() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let dispatched = invoke_hub(&moto, &hub, &schedule_value(), &[]);
    let held = dispatched["accounts"][0].as_str().unwrap().to_string();
    let until = chrono::Utc::now() + chrono::Duration::minutes(20);
    let lease = json!({"run": "last-night", "link": 3,
                       "until": ami_sweeper::time::format_instant(until)});
    s3(&moto.config().await)
        .put_object()
        .bucket("hub-reports")
        .key(format!("leases/{held}/us-east-1.json"))
        .body(lease.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &[]);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(images_left(&hub).await, 1, "the held pair is left alone");
    let run = dispatched["run"].as_str().unwrap();
    let skipped = pair_report(&moto, &format!("reports/{run}/{held}/us-east-1.json")).await;
    assert!(
        skipped["skipped"].as_str().unwrap().contains("last-night"),
        "{skipped}"
    );
    assert!(skipped.get("report").is_none(), "{skipped}");
    // The other pair took its lease for its run and released it when its chain ended.
    let keys = reports(&moto).await;
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("leases/")).count(),
        1,
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_request_with_an_unknown_key_is_refused_with_its_path() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let sweep_dlq = queue(&moto, "sweep-dlq").await;
    invoke_hub(&moto, &hub, &schedule_value(), &[]);
    let batch = delivered(&moto, &hub).await;
    // A mistyped key beside the pair's account: dropped, the pair would run as dispatched.
    let mistyped: Vec<String> = bodies(&batch)
        .into_iter()
        .map(|b| {
            let mut v: Value = serde_json::from_str(&b).unwrap();
            v["sweep"]["acount"] = v["sweep"]["account"].clone();
            v.to_string()
        })
        .collect();
    let answer = invoke_hub(
        &moto,
        &hub,
        &sqs_event(&mistyped),
        &[("SWEEP_DLQ_URL", sweep_dlq.as_str())],
    );
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let reasons = reasons_in(&moto, &sweep_dlq).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("sweep.acount: unknown field")),
        "{reasons:?}"
    );
    assert_eq!(images_left(&hub).await, 2);
    assert!(reports(&moto).await.is_empty());
}

/// Approval only (issue 30, items 3 and 4): the schedule's fan-out is a dry run whose
/// pair reports, under the run's prefix, are the plan; the approved plan's event narrows
/// the run's mandate, and the narrowing reaches every pair, each message carrying its own
/// pair's approved images only. An image baked after the plan is condemned yet kept
/// (`not_approved`); a pair message stripped of its approval is refused; a plan outside
/// the stack's report bucket is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_organization_dry_run_narrows_every_pair_through_the_fan_out() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let sweep_dlq = queue(&moto, "sweep-dlq").await;
    let only = [("AMI_SWEEPER_APPROVAL_ONLY", "true")];
    let dispatched = invoke_hub(&moto, &hub, &schedule_value(), &only);
    assert_eq!(dispatched["dry_run"], true, "{dispatched}");
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &only);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(images_left(&hub).await, 2, "the schedule only plans");
    let planned = dispatched["run"].as_str().unwrap().to_string();
    // After the plan, account a bakes one more image: condemned now, never approved.
    let (approved_a, member_a) = hub.images[0].clone();
    let base = public_ami(&moto.config().await).await;
    let late = bake(&member_a, &base, 1).await.0.remove(0);
    // Run names are instants to the second: the approved run gets its own.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let event = json!({"approved_plan": format!("s3://hub-reports/reports/{planned}/")});
    let dispatched = invoke_hub(&moto, &hub, &event, &only);
    assert_eq!(dispatched["dispatched"], 2, "{dispatched}");
    assert_eq!(dispatched["dry_run"], false);
    let batch = delivered(&moto, &hub).await;
    let messages = bodies(&batch);
    for body in &messages {
        let m: Value = serde_json::from_str(body).unwrap();
        let (sweep, approved) = (&m["sweep"], &m["sweep"]["mandate"]["approved"]);
        assert_eq!(approved.as_array().map(Vec::len), Some(1), "{m}");
        assert_eq!(approved[0]["account"], sweep["account"], "{m}");
        assert_eq!(approved[0]["region"], sweep["region"], "{m}");
        assert_eq!(approved[0]["action"], "deregister", "{m}");
    }
    // A pair message stripped of its approval acts on nothing.
    let mut stripped: Value = serde_json::from_str(&messages[0]).unwrap();
    stripped["sweep"]["mandate"]
        .as_object_mut()
        .unwrap()
        .remove("approved");
    let dlq = [only[0], ("SWEEP_DLQ_URL", sweep_dlq.as_str())];
    let answer = invoke_hub(&moto, &hub, &sqs_event(&[stripped.to_string()]), &dlq);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    refused_with(&moto, &sweep_dlq, "without an approved plan").await;
    assert_eq!(images_left(&hub).await, 3, "nothing changed");
    let answer = invoke_hub(&moto, &hub, &batch, &only);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let left_a = image_ids(&member_a).await;
    assert!(
        !left_a.contains(&approved_a) && left_a.contains(&late),
        "{left_a:?}"
    );
    assert!(image_ids(&hub.images[1].1).await.is_empty());
    assert_eq!(image_ids(&hub.outsider.1).await.len(), 1);
    let account_a = dispatched_account(&member_a).await;
    let run = dispatched["run"].as_str().unwrap();
    let pair = pair_report(&moto, &format!("reports/{run}/{account_a}/us-east-1.json")).await;
    let kept = pair["report"]["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == late.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        kept["reasons"],
        json!(["not_approved", "expired"]),
        "{kept}"
    );
    // A plan anywhere but the stack's report bucket is refused, whatever it says.
    let path = std::env::temp_dir().join(format!("ami-sweeper-elsewhere-{}.json", rand_suffix()));
    let elsewhere = json!({"approved_plan": format!("s3://other-bucket/reports/{planned}/")});
    std::fs::write(&path, elsewhere.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .arg("invoke")
        .arg(&path)
        .env_remove("CLEANUP_QUEUE_URL")
        .envs(config(&moto, &hub).iter().map(|(k, v)| (*k, v.as_str())))
        .envs(only.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("from the stack's report bucket (hub-reports) only, not other-bucket"),
        "{stderr}"
    );
    assert_eq!(images_left(&hub).await, 1);
}

/// The single-account sweeper (no `accounts` in the policy, no queue of its own): a sweep
/// stopped by its invocation's deadline with condemned images left starts its successor
/// through the sweep queue, as a continuation of its (own account, region) pair that the
/// pair sweeper runs with the same mandate, lease and limits; the chain finishes the
/// night's plan and only it (an image made after the chain began stays), and the summary
/// is sent once, when the chain ends, with the chain's totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_account_sweep_stopped_by_its_deadline_continues_and_its_chain_finishes_the_plan()
{
    let moto = Moto::start_with_public_amis();
    let hub = moto.config().await;
    let base = public_ami(&hub).await;
    let (planned, _) = bake(&hub, &base, 3).await;
    let queue_url = queue(&moto, "sweep-requests").await;
    s3(&hub)
        .create_bucket()
        .bucket("hub-reports")
        .send()
        .await
        .unwrap();
    let sns = aws_sdk_sns::Client::new(&hub);
    let topic = sns
        .create_topic()
        .name("sweeps")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let summaries = queue(&moto, "summaries").await;
    let summaries_arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        summaries.rsplit('/').next().unwrap()
    );
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(summaries_arn)
        .attributes("FilterPolicy", json!({"kind": ["summary"]}).to_string())
        .send()
        .await
        .unwrap();
    let policy = json!({
        "dry_run": false,
        "retention": {"min_age_days": 0},
        "acknowledge": ["no_minimum_age"],
        "recycle_bin": "ignore",
        "regions": ["us-east-1"]
    })
    .to_string();
    let mut env = moto.env();
    env.extend([
        ("AMI_SWEEPER_POLICY", policy),
        ("SWEEP_QUEUE_URL", queue_url.clone()),
        ("AMI_SWEEPER_REPORT_BUCKET", "hub-reports".to_string()),
        ("AMI_SWEEPER_NOTIFY_TOPIC_ARN", topic),
        ("AMI_SWEEPER_ACCOUNT_ID", "123456789012".to_string()),
    ]);
    let summaries_sent = || async {
        let sqs = aws_sdk_sqs::Client::new(&moto.config().await);
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&summaries)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        attrs
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .map_or(0, |n| n.parse::<usize>().unwrap())
    };

    // The first link: its deadline has come, so every condemned image is deferred.
    let first = handle_on_big_stack(&env, schedule_value(), Some(Duration::ZERO));
    assert_eq!(first["stopped"], "deadline", "{first}");
    let before: BTreeSet<String> = image_ids(&hub).await.into_iter().collect();
    assert!(
        planned.iter().all(|id| before.contains(id)),
        "nothing deregistered yet"
    );
    assert_eq!(
        summaries_sent().await,
        0,
        "no summary before the chain ends"
    );
    let batch = {
        let sqs = aws_sdk_sqs::Client::new(&moto.config().await);
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let bodies: Vec<String> = out
            .messages()
            .iter()
            .map(|m| m.body().unwrap().to_string())
            .collect();
        assert_eq!(bodies.len(), 1, "one continuation: {bodies:?}");
        sqs_event(&bodies)
    };
    let body = bodies(&batch).remove(0);
    let request: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["sweep"]["account"], "123456789012", "{body}");
    assert_eq!(request["sweep"]["region"], "us-east-1", "{body}");
    assert_eq!(request["sweep"]["chain"]["link"], 1, "{body}");

    // An image made after the chain began is not in the night's plan.
    let (late, _) = bake(&hub, &base, 1).await;

    // The pair sweeper runs the link with an invocation's time: the chain ends.
    let answer = handle_on_big_stack(&env, batch, Some(Duration::from_secs(900)));
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let left: BTreeSet<String> = image_ids(&hub).await.into_iter().collect();
    for id in &planned {
        assert!(
            !left.contains(id),
            "{id} of the night's plan is deregistered"
        );
    }
    assert!(left.contains(&late[0]), "the late image stays: {left:?}");
    let run = request["sweep"]["run"].as_str().unwrap();
    let link = pair_report(
        &moto,
        &format!("reports/{run}/123456789012/us-east-1.link-1.json"),
    )
    .await;
    assert_eq!(link["chain"]["totals"]["deregistered"], 3, "{link}");
    assert_eq!(
        summaries_sent().await,
        1,
        "the summary is sent once, at the chain's end"
    );
}

/// One invocation of the Lambda handler in process, built from `env` on a thread of its
/// own with a large stack (as the runtime's; a debug build's handler futures are deep),
/// with `deadline` from now.
fn handle_on_big_stack(
    env: &[(&'static str, String)],
    event: Value,
    deadline: Option<Duration>,
) -> Value {
    use ami_sweeper::edges::{config::Config, lambda::Handler};
    let var = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(s, || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_stack_size(64 << 20)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
                        .endpoint_url(var("AWS_ENDPOINT_URL").unwrap())
                        .region(aws_config::Region::new("us-east-1"))
                        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                            "testing", "testing", None, None, "moto",
                        ))
                        .load()
                        .await;
                    let handler = Handler::new(base, Config::from_vars(var).unwrap());
                    let at = deadline.map(|d| tokio::time::Instant::now() + d);
                    let answer = handler.handle(event, at).await;
                    answer.unwrap_or_else(|e| panic!("the invocation failed: {e}"))
                })
            })
            .unwrap()
            .join()
            .unwrap()
    })
}

/// Messages waiting in a queue, delayed ones included.
async fn waiting(moto: &Moto, url: &str) -> u64 {
    let attrs = aws_sdk_sqs::Client::new(&moto.config().await)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let n = |k: aws_sdk_sqs::types::QueueAttributeName| -> u64 {
        attrs
            .attributes()
            .and_then(|a| a.get(&k))
            .map_or(0, |v| v.parse().unwrap())
    };
    use aws_sdk_sqs::types::QueueAttributeName as A;
    n(A::ApproximateNumberOfMessages)
        + n(A::ApproximateNumberOfMessagesDelayed)
        + n(A::ApproximateNumberOfMessagesNotVisible)
}

/// Each member's baked image's snapshot, before the sweep.
async fn baked_snapshots(hub: &Hub) -> Vec<(String, aws_config::SdkConfig)> {
    let mut out = Vec::new();
    for (image, member) in &hub.images {
        out.push((
            crate::moto::snapshot_of(member, image).await,
            member.clone(),
        ));
    }
    out
}

async fn snapshots_left(baked: &[(String, aws_config::SdkConfig)]) -> usize {
    let mut n = 0;
    for (id, member) in baked {
        n += usize::from(crate::moto::snapshot_ids(member).await.contains(id));
    }
    n
}

/// Issue 29: a pair sweep with a cleanup queue configured deletes its pair's storage
/// itself, in process, right after its deregistrations: nothing waits in the queue (its
/// delay, its worker pool) when every deletion went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_sweep_with_a_cleanup_queue_deletes_its_storage_in_process() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let cleanup = queue(&moto, "cleanup").await;
    let baked = baked_snapshots(&hub).await;
    assert_eq!(snapshots_left(&baked).await, 2);
    invoke_hub(&moto, &hub, &schedule_value(), &[]);
    let batch = delivered(&moto, &hub).await;
    let with_queue = [("CLEANUP_QUEUE_URL", cleanup.as_str())];
    let answer = invoke_hub(&moto, &hub, &batch, &with_queue);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(images_left(&hub).await, 0);
    let keys = reports(&moto).await;
    let key = keys.iter().find(|k| k.starts_with("reports/")).unwrap();
    let first = pair_report(&moto, key).await;
    let left = snapshots_left(&baked).await;
    assert_eq!(left, 0, "the storage went in process: {first:#}");
    assert_eq!(waiting(&moto, &cleanup).await, 0, "no job was queued");
    for key in reports(&moto)
        .await
        .iter()
        .filter(|k| k.starts_with("reports/"))
    {
        let report = pair_report(&moto, key).await;
        let jobs = &report["report"]["regions"][0]["jobs"];
        assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{report}");
        assert_eq!(jobs[0]["outcome"], "deleted", "{report}");
    }
}

/// One link of `body`'s pair, run in process as the pair sweeper runs it, with a cleanup
/// queue and a deadline `secs` away.
async fn link_in_process(
    moto: &Moto,
    hub: &Hub,
    cleanup: &str,
    body: &str,
    secs: u64,
) -> ami_sweeper::app::continuation::Linked {
    use ami_sweeper::app::{cleanup::RetryPolicy, continuation, org::SweepRequest, run};
    let request = SweepRequest::from_json(body).unwrap().unwrap();
    let clients = ami_sweeper::adapters::aws::Clients::new(moto.config().await);
    let policy = ami_sweeper::Policy::from_json(&hub.policy).unwrap();
    let stop = ami_sweeper::app::stop::Stop::with_deadline(Some(
        tokio::time::Instant::now() + std::time::Duration::from_secs(secs),
    ));
    let opts = run::SweepOptions {
        regions: vec![request.region.clone()],
        force_dry_run: false,
        queue: run::QueueMode::Sqs {
            url: cleanup.to_string(),
            delay_seconds: 60,
        },
        exec: ami_sweeper::app::sweep::ExecConfig {
            stop,
            ..Default::default()
        },
        now: chrono::Utc::now(),
    };
    let at = continuation::Place {
        hub: &clients,
        bucket: Some("hub-reports"),
        queue: Some(&hub.queue_url),
        retry: &RetryPolicy::default(),
    };
    // Boxed: two links joined in one test would overflow the test thread's stack.
    Box::pin(continuation::run_link(at, &policy, &request, &[], &opts)).await
}

fn in_use() -> Value {
    json!([{"action": "DeleteSnapshot", "status": 400,
            "code": "InvalidSnapshot.InUse", "message": "The snapshot is in use"}])
}

/// The first delivered pair's first link, run in process with an 8 s deadline while EC2
/// answers every `DeleteSnapshot` `InvalidSnapshot.InUse`: the hub, the cleanup queue,
/// the baked snapshots, the pair's message and the link.
async fn a_link_refused_its_deletions(
    moto: &Moto,
) -> (
    Hub,
    String,
    Vec<(String, aws_config::SdkConfig)>,
    String,
    ami_sweeper::app::continuation::Linked,
) {
    let hub = hub(moto).await;
    let cleanup = queue(moto, "cleanup").await;
    let baked = baked_snapshots(&hub).await;
    invoke_hub(moto, &hub, &schedule_value(), &[]);
    let body = bodies(&delivered(moto, &hub).await).remove(0);
    moto.front().set_faults(in_use());
    let linked = link_in_process(moto, &hub, &cleanup, &body, 8).await;
    (hub, cleanup, baked, body, linked)
}

/// Issue 29: what a pair sweep's deadline leaves of its in-process deletions (here a
/// snapshot EC2 keeps answering `InvalidSnapshot.InUse`, retried in process until the
/// stop) goes to the cleanup queue, the durable path; the worker finishes it once EC2
/// lets go, with the pair free again (the chain released its lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_sweep_stopped_by_its_deadline_queues_the_storage_left() {
    let moto = Moto::start_with_public_amis();
    let (hub, cleanup, baked, _, linked) = a_link_refused_its_deletions(&moto).await;
    let report = serde_json::to_value(&linked.pair).unwrap();
    assert!(linked.ended.is_some(), "{report:#}");
    assert_eq!(
        images_left(&hub).await,
        1,
        "the pair's image was deregistered"
    );
    assert_eq!(snapshots_left(&baked).await, 2, "EC2 refused the deletion");
    let jobs = received(&moto, &cleanup).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}\n{report:#}");
    assert_eq!(jobs[0]["account"], report["account"], "{jobs:?}");
    let job = &report["report"]["regions"][0]["jobs"][0];
    assert_eq!(job["outcome"], "queued", "{report:#}");
    assert!(job["attempts"].as_u64().unwrap() >= 1, "{report:#}");

    // EC2 lets go; the worker runs the queued job, the pair being free again.
    moto.front().set_faults(json!([]));
    let event = sqs_event(&jobs.iter().map(Value::to_string).collect::<Vec<_>>());
    let worker = [("AMI_SWEEPER_FUNCTION", "worker")];
    let answer = invoke_hub(&moto, &hub, &event, &worker);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(snapshots_left(&baked).await, 1, "the queued job ran");
    let keys = reports(&moto).await;
    assert!(!keys.iter().any(|k| k.starts_with("leases/")), "{keys:?}");
}

/// Issue 29 row (b): a link's leftovers (a snapshot still in use at its deadline) were
/// queued, and the cleanup worker, finding the chain holding the pair, left them for the
/// queue's redelivery (720 s) while the chain's next links ran: the backlog's storage
/// trailed its deregistrations by the visibility timeout. The next link reconciles what
/// the sweep marked and deletes it in process, at the pair's own pacers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_leftover_storage_is_deleted_by_the_next_link_of_its_chain() {
    let moto = Moto::start_with_public_amis();
    let planned_at = ami_sweeper::time::format_instant(chrono::Utc::now());
    let (hub, cleanup, baked, body, first) = a_link_refused_its_deletions(&moto).await;
    let body = &body;
    let report = serde_json::to_value(&first.pair).unwrap();
    assert_eq!(snapshots_left(&baked).await, 2, "EC2 refused the deletion");
    assert_eq!(received(&moto, &cleanup).await.len(), 1, "{report:#}");
    // The chain goes on (as if condemned images were left); EC2 lets go.
    moto.front().set_faults(json!([]));
    let (next, _) = continuation_of(body, &planned_at);
    let second = link_in_process(&moto, &hub, &cleanup, &next, 30).await;
    let report = serde_json::to_value(&second.pair).unwrap();
    assert_eq!(
        snapshots_left(&baked).await,
        1,
        "the next link deleted its chain's leftover in process: {report:#}"
    );
}

/// The bodies of the messages a queue holds now (received, left for redelivery).
async fn received(moto: &Moto, url: &str) -> Vec<Value> {
    let out = aws_sdk_sqs::Client::new(&moto.config().await)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

/// Review (issue 30 item 3): an approved organization dry run is its pairs' reports under
/// the run's prefix, and a pair that did not run (skipped: another run held its lease)
/// has no stamp and approves nothing. The Lambda refused the whole prefix for that one
/// report, so a single skipped or failed pair made a night's plan unapprovable; the
/// pairs that planned are acted on, the skipped pair is not swept at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_pair_in_an_approved_organization_dry_run_approves_nothing() {
    let moto = Moto::start_with_public_amis();
    let hub = hub(&moto).await;
    let only = [("AMI_SWEEPER_APPROVAL_ONLY", "true")];
    let dispatched = invoke_hub(&moto, &hub, &schedule_value(), &only);
    assert_eq!(dispatched["dry_run"], true, "{dispatched}");
    let planned = dispatched["run"].as_str().unwrap().to_string();
    // Another run holds account b's pair while the dry run's pairs run: b is skipped.
    let member_b = hub.images[1].1.clone();
    let account_b = dispatched_account(&member_b).await;
    let until = chrono::Utc::now() + chrono::Duration::minutes(20);
    let lease = json!({"run": "another-run", "link": 0,
                       "until": ami_sweeper::time::format_instant(until)});
    s3(&moto.config().await)
        .put_object()
        .bucket("hub-reports")
        .key(format!("leases/{account_b}/us-east-1.json"))
        .body(lease.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &only);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let skipped = pair_report(
        &moto,
        &format!("reports/{planned}/{account_b}/us-east-1.json"),
    )
    .await;
    assert!(skipped["skipped"].is_string(), "{skipped}");
    assert_eq!(images_left(&hub).await, 2, "the schedule only plans");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let event = json!({"approved_plan": format!("s3://hub-reports/reports/{planned}/")});
    let dispatched = invoke_hub(&moto, &hub, &event, &only);
    assert_eq!(dispatched["dispatched"], 1, "only a's pair: {dispatched}");
    assert_eq!(dispatched["dry_run"], false);
    let answer = invoke_hub(&moto, &hub, &delivered(&moto, &hub).await, &only);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert!(
        image_ids(&hub.images[0].1).await.is_empty(),
        "a's approved image"
    );
    assert_eq!(image_ids(&member_b).await.len(), 1, "b approved nothing");
}
