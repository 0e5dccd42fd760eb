//! Summary messages on the emulator: a real sweep, its report written to the report
//! bucket, its summary and owners' messages published to an SNS topic; SQS queues
//! subscribed with filter policies receive the summary (`kind`) and one owner's part
//! (`owner`), as docs/operations.md's recipe sets them up.

use crate::moto::{s3, seed_image, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::notify::{after_sweep, Delivery};
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use serde_json::json;

/// A queue subscribed to `topic` with `filter` (a filter policy on message attributes).
async fn subscribed_queue(
    config: &aws_config::SdkConfig,
    topic: &str,
    name: &str,
    filter: serde_json::Value,
) -> String {
    let sqs = aws_sdk_sqs::Client::new(config);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
    aws_sdk_sns::Client::new(config)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("FilterPolicy", filter.to_string())
        .send()
        .await
        .unwrap();
    url
}

/// Every message on the queue: the SNS envelope's text and attributes.
async fn received(config: &aws_config::SdkConfig, url: &str) -> Vec<serde_json::Value> {
    let out = aws_sdk_sqs::Client::new(config)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_and_each_owners_part_reach_their_subscribers() {
    let seed = json!([
        seed_image(
            "ami-00000000000000001",
            "web-1",
            "2025-01-01T00:00:00.000Z",
            json!({"owner": "team-a"})
        ),
        seed_image(
            "ami-00000000000000002",
            "web-2",
            "2025-02-01T00:00:00.000Z",
            json!({"owner": "team-b"})
        ),
        seed_image(
            "ami-00000000000000003",
            "web-3",
            "2026-11-01T00:00:00.000Z",
            json!({"owner": "team-a"})
        ),
    ]);
    let moto = Moto::start(Some(seed));
    let config = moto.config().await;
    let topic = aws_sdk_sns::Client::new(&config)
        .create_topic()
        .name("ami-sweeper")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let summaries =
        subscribed_queue(&config, &topic, "summaries", json!({"kind": ["summary"]})).await;
    let team_a = subscribed_queue(&config, &topic, "team-a", json!({"owner": ["team-a"]})).await;
    s3(&config)
        .create_bucket()
        .bucket("reports")
        .send()
        .await
        .unwrap();

    let policy = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30},
            "notify": {"owner_tag": "owner", "lookahead_days": 7}}"#,
    )
    .unwrap();
    let clients = Clients::new(config.clone());
    let opts = SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: false,
        queue: QueueMode::Local(Default::default()),
        exec: ExecConfig::default(),
        now: parse_instant(crate::NOW).unwrap(),
    };
    let report = run_sweep(&clients, &policy, &opts.regions.clone(), &opts).await;
    assert_eq!(report.totals.failures, 0, "{report:?}");
    let d = Delivery {
        topic_arn: Some(&topic),
        report_bucket: Some("reports"),
        account: Some("123456789012"),
        lookahead_days: policy.notify.lookahead_days,
    };
    let errors = after_sweep(&clients, &d, &report).await;
    assert!(errors.is_empty(), "{errors:?}");

    // The full report is in the bucket, and the summary names it.
    let key = format!("reports/{}/123456789012/report.json", crate::NOW);
    let object = s3(&config)
        .get_object()
        .bucket("reports")
        .key(&key)
        .send()
        .await
        .unwrap();
    let body = object.body.collect().await.unwrap().to_vec();
    let stored: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored["totals"]["outcomes"]["deregistered"], 2);

    let got = received(&config, &summaries).await;
    assert_eq!(got.len(), 1, "one summary: {got:?}");
    let text = got[0]["Message"].as_str().unwrap();
    assert!(text.contains("deregistered: 2 images"), "{text}");
    assert!(
        text.contains("coming within 7 days: 1\n  ami-00000000000000003 web-3: condemned"),
        "{text}"
    );
    assert!(
        text.contains(&format!("full report: s3://reports/{key}")),
        "{text}"
    );
    assert_eq!(
        got[0]["MessageAttributes"]["account"]["Value"],
        "123456789012"
    );
    assert_eq!(got[0]["MessageAttributes"]["region"]["Value"], "us-east-1");

    // team-a's queue gets team-a's part only: web-1 gone, web-3 coming; nothing of team-b.
    let got = received(&config, &team_a).await;
    assert_eq!(got.len(), 1, "one message for team-a: {got:?}");
    let text = got[0]["Message"].as_str().unwrap();
    assert!(text.contains("images owned by team-a"), "{text}");
    assert!(text.contains("web-1") && text.contains("web-3"), "{text}");
    assert!(!text.contains("web-2"), "{text}");
    assert_eq!(got[0]["MessageAttributes"]["owner"]["Value"], "team-a");
}
