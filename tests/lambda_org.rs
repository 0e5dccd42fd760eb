//! The organization sweep's Lambda path on the emulator: the scheduled event makes the
//! dispatcher send one sweep-queue message per (account, region) pair; those messages,
//! delivered as an SQS event, sweep each pair in its member account and write its report
//! to the hub's bucket. In process with `invoke`, and under the Runtime API emulator.

use std::collections::BTreeSet;
use std::process::Command;

use crate::lambda_runtime::{invoke, start_emulator, start_function};
use crate::moto::{bake, image_ids, member_config, public_ami, s3, Moto, OrgBuilder};
use serde_json::{json, Value};

struct Hub {
    queue_url: String,
    images: Vec<(String, aws_config::SdkConfig)>,
    policy: String,
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
    let records: Vec<Value> = out
        .messages()
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id().unwrap(),
                "receiptHandle": m.receipt_handle().unwrap(),
                "body": m.body().unwrap(),
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sweep-requests",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
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
