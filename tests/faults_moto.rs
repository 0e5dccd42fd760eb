//! Faults between ami-sweeper and EC2, and processes killed mid-run, against the local
//! emulator behind `scripts/throttle_proxy.py` (which injects the faults moto cannot
//! produce and answers the Recycle Bin listing moto lacks). After every fault the test
//! asserts what is left in the emulator: nothing wrongly deleted, and after the next
//! run nothing orphaned.

use std::collections::BTreeSet;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::moto::{
    fault_proxy, image_ids, object_keys, seed_image, snapshot_ids, snapshot_of, Moto, Throttle,
};
use serde_json::{json, Value};

const OLD: &str = "2025-01-01T00:00:00.000Z";

/// The cleanup queues' visibility timeout: a message left for redelivery comes back this
/// soon (production uses 720 s; the behaviour is the same, only slower).
const VISIBILITY: u32 = 3;

/// `n` old nightly images whose snapshots say, as EC2 writes it, which AMI they are for.
fn estate(n: usize) -> Value {
    (0..n)
        .map(|i| {
            let id = format!("ami-{:017x}", i + 1);
            let mut img = seed_image(&id, &format!("nightly-{i:03}"), OLD, json!({"app": "web"}));
            img["snapshot_description"] = json!(format!(
                "Created by CreateImage(i-0123456789abcdef0) for {id}"
            ));
            img
        })
        .collect()
}

/// The emulator seeded with `images`, behind the fault proxy, and the environment that
/// points the binary at the proxy. Dropping it stops both.
pub(crate) struct Rig {
    pub(crate) moto: Moto,
    pub(crate) config: aws_config::SdkConfig,
    pub(crate) proxy: Throttle,
    pub(crate) env: Vec<(&'static str, String)>,
}

pub(crate) async fn rig(images: Value) -> Rig {
    let moto = Moto::start(Some(images));
    let config = moto.config().await;
    let proxy = fault_proxy(&moto);
    let env = proxy.env(&moto);
    Rig {
        moto,
        config,
        proxy,
        env,
    }
}

/// A sweep in SQS mode that must succeed, then drains until the queue is empty; asserts
/// that no image and no snapshot is left.
async fn rerun_and_drain_clean(
    config: &aws_config::SdkConfig,
    env: &[(&'static str, String)],
    url: &str,
    policy: &std::path::Path,
) {
    sweep_ok(env, policy, &["--queue-url", url, "--queue-delay", "0"]);
    let drains = drain(config, env, url, policy).await;
    assert!(image_ids(config).await.is_empty());
    assert_no_snapshot_left(config, &drains).await;
}

/// A scratch directory with a policy file.
pub(crate) struct Scratch(std::path::PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str, policy: Value) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("ami-sweeper-faults-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
        Scratch(dir)
    }

    pub(crate) fn policy(&self) -> std::path::PathBuf {
        self.0.join("policy.json")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn real_policy() -> Value {
    json!({"dry_run": false, "retention": {"min_age_days": 30}})
}

fn sweep_command(
    env: &[(&'static str, String)],
    policy: &std::path::Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"));
    cmd.args([
        "sweep",
        "--format",
        "json",
        "--retry-delay",
        "1",
        "--rate",
        "1000",
    ])
    .args(["--describe-rate", "1000", "--policy"])
    .arg(policy)
    .args(extra)
    .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

/// Runs a sweep that must succeed; returns its report.
pub(crate) fn sweep_ok(
    env: &[(&'static str, String)],
    policy: &std::path::Path,
    extra: &[&str],
) -> Value {
    let out = sweep_command(env, policy, extra).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report_of(&out)
}

fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(crate) async fn create_queue(
    config: &aws_config::SdkConfig,
    name: &str,
    visibility: u32,
) -> String {
    aws_sdk_sqs::Client::new(config)
        .create_queue()
        .queue_name(name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// Messages on the queue, visible or in flight.
pub(crate) async fn queued(config: &aws_config::SdkConfig, url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = aws_sdk_sqs::Client::new(config)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().unwrap();
    [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|a| {
        attrs
            .get(a)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}

/// Drains until the queue is empty, visible and in-flight messages alike: a job left for
/// redelivery (a transient error) comes back after the queue's visibility timeout, as in
/// production. Gives up after a minute; returns the drains' reports.
async fn drain(
    config: &aws_config::SdkConfig,
    env: &[(&'static str, String)],
    url: &str,
    policy: &std::path::Path,
) -> Vec<Value> {
    let mut reports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
            .args([
                "cleanup",
                "--format",
                "json",
                "--queue-url",
                url,
                "--policy",
            ])
            .arg(policy)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        reports.push(report_of(&out));
        if queued(config, url).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reports
}

/// Fails with what is left: each snapshot with its tags, and what the drains reported.
async fn assert_no_snapshot_left(config: &aws_config::SdkConfig, drains: &[Value]) {
    let left = aws_sdk_ec2::Client::new(config)
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    let left: Vec<String> = left
        .snapshots()
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {:?}",
                s.snapshot_id().unwrap(),
                s.description(),
                s.tags()
            )
        })
        .collect();
    assert!(
        left.is_empty(),
        "orphans left: {left:#?}\ndrains: {drains:#?}"
    );
}

/// Waits until fewer than `below` images remain, then returns.
async fn wait_for_deregistrations(config: &aws_config::SdkConfig, child: &mut Child, below: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it could be interrupted"
        );
        if image_ids(config).await.len() < below {
            return;
        }
        assert!(Instant::now() < deadline, "the sweep made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slows every `DeregisterImage` so that a run can be interrupted half-way.
fn slow_deregistrations(proxy: &Throttle) {
    proxy.set_faults(json!([{"action": "DeregisterImage", "delay_ms": 150}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_deregisters_nothing_and_the_next_run_leaves_no_orphan() {
    let Rig {
        moto,
        config,
        proxy: _proxy,
        env,
    } = rig(estate(20)).await;
    let before = snapshot_ids(&config).await;
    let scratch = Scratch::new("queue", real_policy());
    let missing = format!("{}/123456789012/no-such-queue", moto.endpoint);
    let out = sweep_command(&env, &scratch.policy(), &["--queue-url", &missing])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    let error = report["regions"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cleanup jobs cannot be queued, nothing was changed"),
        "{error}"
    );
    assert!(error.contains("no-such-queue"), "{error}");
    assert_eq!(image_ids(&config).await.len(), 20, "nothing deregistered");
    assert_eq!(snapshot_ids(&config).await, before);
    assert!(
        report["api_calls"].get("CreateTags").is_none(),
        "nothing marked"
    );

    let url = create_queue(&config, "cleanup", VISIBILITY).await;
    rerun_and_drain_clean(&config, &env, &url, &scratch.policy()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_fails_mid_sweep_stops_deregistrations_and_nothing_is_lost() {
    const N: usize = 60;
    let Rig {
        moto: _moto,
        config,
        proxy,
        env,
    } = rig(estate(N)).await;
    let url = create_queue(&config, "cleanup", VISIBILITY).await;
    let scratch = Scratch::new("enqueue", real_policy());
    // The queue answers GetQueueAttributes, then refuses every batch.
    proxy.set_faults(json!([{"action": "SendMessageBatch", "status": 400,
        "code": "AWS.SimpleQueueService.NonExistentQueue", "message": "queue deleted"}]));
    let out = sweep_command(
        &env,
        &scratch.policy(),
        &["--queue-url", &url, "--queue-delay", "0"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    let region = &report["regions"][0];
    let deregistered = region["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == "deregistered")
        .count();
    assert!(deregistered > 0);
    // Stopped at once: at most the first batch plus what was in flight.
    assert!(
        deregistered < N / 2,
        "{deregistered} deregistered after the queue failed"
    );
    assert!(region["error"]
        .as_str()
        .unwrap()
        .contains("deregistrations stopped"));
    let waiting = region["awaiting_reconciliation"].as_array().unwrap().len();
    assert!(waiting > 0);
    assert_eq!(image_ids(&config).await.len(), N - deregistered);
    assert_eq!(
        snapshot_ids(&config).await.len(),
        N,
        "no snapshot deleted yet"
    );

    proxy.set_faults(json!([]));
    let report = sweep_ok(
        &env,
        &scratch.policy(),
        &["--queue-url", &url, "--queue-delay", "0"],
    );
    assert_eq!(
        report["totals"]["orphans"]["marked"], deregistered,
        "{report}"
    );
    let drains = drain(&config, &env, &url, &scratch.policy()).await;
    assert!(image_ids(&config).await.is_empty());
    assert_no_snapshot_left(&config, &drains).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_snapshot_is_finished_by_the_next_run() {
    let Rig {
        moto: _moto,
        config,
        proxy,
        env,
    } = rig(estate(10)).await;
    let scratch = Scratch::new("denied", real_policy());
    proxy.set_faults(json!([{"action": "DeleteSnapshot", "status": 403,
        "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."}]));
    let out = sweep_command(&env, &scratch.policy(), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    assert_eq!(report["totals"]["outcomes"]["deregistered"], 10);
    assert_eq!(report["totals"]["jobs"]["failed"], 10);
    assert!(image_ids(&config).await.is_empty());
    assert_eq!(snapshot_ids(&config).await.len(), 10);

    proxy.set_faults(json!([]));
    let report = sweep_ok(&env, &scratch.policy(), &[]);
    assert_eq!(report["totals"]["orphans"]["marked"], 10);
    assert_eq!(report["totals"]["jobs"]["deleted"], 10);
    assert_eq!(report["api_calls"]["DeleteSnapshot"], 10);
    assert!(snapshot_ids(&config).await.is_empty(), "orphans left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_killed_in_sqs_mode_leaves_no_orphan_after_a_rerun_and_drain() {
    const N: usize = 60;
    let Rig {
        moto: _moto,
        config,
        proxy,
        env,
    } = rig(estate(N)).await;
    let url = create_queue(&config, "cleanup", VISIBILITY).await;
    let scratch = Scratch::new("kill", real_policy());
    slow_deregistrations(&proxy);
    let mut child = sweep_command(
        &env,
        &scratch.policy(),
        &["--queue-url", &url, "--queue-delay", "0"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Kill it after some deregistrations but before a multiple of the batch is queued.
    wait_for_deregistrations(&config, &mut child, N - 13).await;
    child.kill().unwrap();
    child.wait().unwrap();
    // A call the killed process had sent still lands (the proxy holds it 150 ms, as a
    // remote endpoint may): the next sweep runs after that, as a scheduled one would.
    proxy.set_faults(json!([]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = image_ids(&config).await.len();
    assert!(left > 0 && left < N, "{left} images left");
    rerun_and_drain_clean(&config, &env, &url, &scratch.policy()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_what_happened_exits_non_zero_and_loses_nothing() {
    const N: usize = 60;
    let Rig {
        moto: _moto,
        config,
        proxy,
        env,
    } = rig(estate(N)).await;
    let scratch = Scratch::new("term", real_policy());
    slow_deregistrations(&proxy);
    let mut child = sweep_command(&env, &scratch.policy(), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_deregistrations(&config, &mut child, N - 5).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["stopped"], "signal");
    let outcomes = &report["totals"]["outcomes"];
    let deregistered = outcomes["deregistered"].as_u64().unwrap() as usize;
    assert!((5..N).contains(&deregistered), "{outcomes}");
    assert!(outcomes["deferred"].as_u64().unwrap() > 0, "{outcomes}");
    assert_eq!(image_ids(&config).await.len(), N - deregistered);

    proxy.set_faults(json!([]));
    sweep_ok(&env, &scratch.policy(), &[]);
    assert!(image_ids(&config).await.is_empty());
    assert!(snapshot_ids(&config).await.is_empty(), "orphans left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_on_a_poison_message_and_counts_it_once() {
    let moto = Moto::start(None);
    let config = moto.config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let scratch = Scratch::new("poison", real_policy());
    for visibility in [0, 2] {
        let url = create_queue(&config, &format!("poison-{visibility}"), visibility).await;
        sqs.send_message()
            .queue_url(&url)
            .message_body("this is not a cleanup job")
            .send()
            .await
            .unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
            .args([
                "cleanup",
                "--format",
                "json",
                "--max-seconds",
                "60",
                "--queue-url",
                &url,
                "--policy",
            ])
            .arg(scratch.policy())
            .envs(moto.env())
            .output()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the drain did not end by itself"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "a malformed message is a failure"
        );
        let report = report_of(&out);
        assert_eq!(report["malformed"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["visible_at_start"], 1);
        assert!(
            report["api_calls"]["ReceiveMessage"].as_u64().unwrap() <= 6,
            "{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_orphans_are_left_alone_by_default_and_reclaimed_on_request() {
    let Rig {
        moto: _moto,
        config,
        proxy,
        env,
    } = rig(estate(5)).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    // Someone deregisters three images by hand and leaves their snapshots; one of those
    // is kept on purpose with an exclude tag; one image's AMI sits in the Recycle Bin.
    let mut by_hand = Vec::new();
    for i in 1..=4 {
        let id = format!("ami-{i:017x}");
        by_hand.push(snapshot_of(&config, &id).await);
        ec2.deregister_image().image_id(&id).send().await.unwrap();
    }
    crate::moto::tag(&config, &by_hand[2], &[("retain", "yes")]).await;
    proxy.set_recycle_bin(&[&format!("ami-{:017x}", 4)]);
    let all_before = snapshot_ids(&config).await;
    // A policy that condemns no image: only reconciliation acts.
    let policy = |orphans: Value| {
        json!({"dry_run": false, "selection": {"names": ["nothing-*"], "exclude_tags": {"retain": "*"}},
               "retention": {"min_age_days": 30}, "cleanup": orphans})
    };
    let later = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let scratch = Scratch::new("foreign-off", policy(json!({})));
    let report = sweep_ok(&env, &scratch.policy(), &["--now", &later]);
    assert_eq!(report["totals"]["orphans"]["foreign"], 0);
    let reasons: BTreeSet<String> = report["regions"][0]["reconciled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons.contains("orphans_off"), "{reasons:?}");
    assert_eq!(
        snapshot_ids(&config).await,
        all_before,
        "left alone by default"
    );

    let young = Scratch::new(
        "foreign-young",
        policy(json!({"orphans": {"min_age_days": 7}})),
    );
    sweep_ok(&env, &young.policy(), &["--now", &later]);
    assert_eq!(
        snapshot_ids(&config).await,
        all_before,
        "younger than the minimum age"
    );

    let on = Scratch::new(
        "foreign-on",
        policy(json!({"orphans": {"min_age_days": 1}})),
    );
    let report = sweep_ok(&env, &on.policy(), &["--now", &later]);
    let orphans = &report["totals"]["orphans"];
    assert_eq!(orphans["foreign"], 2, "{report}");
    assert_eq!(orphans["foreign_gib"], 2 * 15, "moto's volumes are 15 GiB");
    let after = snapshot_ids(&config).await;
    assert!(!after.contains(&by_hand[0]) && !after.contains(&by_hand[1]));
    assert!(
        after.contains(&by_hand[2]),
        "the exclude-tagged snapshot stays"
    );
    assert!(
        after.contains(&by_hand[3]),
        "the snapshot of an AMI in the Recycle Bin stays"
    );
    assert_eq!(
        after.len(),
        all_before.len() - 2,
        "registered images keep theirs"
    );
    assert_eq!(image_ids(&config).await.len(), 1);
}

/// Sends raw message bodies to a queue.
async fn send(config: &aws_config::SdkConfig, url: &str, bodies: &[Value]) {
    let sqs = aws_sdk_sqs::Client::new(config);
    for b in bodies {
        sqs.send_message()
            .queue_url(url)
            .message_body(b.to_string())
            .send()
            .await
            .unwrap();
    }
}

/// The messages on a queue with their `reason` attribute.
async fn dead_letters(config: &aws_config::SdkConfig, url: &str) -> Vec<(Value, String)> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let mut out = Vec::new();
    for _ in 0..5 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        if got.messages().is_empty() {
            break;
        }
        for m in got.messages() {
            let reason = m
                .message_attributes()
                .and_then(|a| a.get("reason"))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_string();
            out.push((serde_json::from_str(m.body().unwrap()).unwrap(), reason));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_jobs_delete_nothing_and_reach_the_dead_letter_queue_with_the_reason() {
    let mut images = estate(1);
    let mut bundle = seed_image("ami-00000000000000b01", "legacy", OLD, json!({}));
    bundle["root_device_type"] = json!("instance-store");
    bundle["image_location"] = json!("bundles/legacy/legacy.manifest.xml");
    images.as_array_mut().unwrap().push(bundle);
    let moto = Moto::start(Some(images));
    let config = moto.config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let s3 = aws_sdk_s3::Client::new(&config);
    // A manual snapshot that no AMI ever used.
    let volume = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(8)
        .send()
        .await
        .unwrap();
    let manual = ec2
        .create_snapshot()
        .volume_id(volume.volume_id().unwrap())
        .description("nightly database backup")
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    for bucket in ["bundles", "other"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
        s3.put_object()
            .bucket(bucket)
            .key("legacy/legacy.manifest.xml")
            .body(b"<manifest/>".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let registered_snapshot = snapshot_of(&config, "ami-00000000000000001").await;
    let snapshots_before = snapshot_ids(&config).await;
    let images_before = image_ids(&config).await;
    let queue = create_queue(&config, "cleanup", 30).await;
    let dlq = create_queue(&config, "cleanup-dlq", 30).await;
    let job = |region: &str, image: &str, target: Value| {
        let mut j = json!({"version": 1, "region": region, "image_id": image});
        j.as_object_mut()
            .unwrap()
            .extend(target.as_object().unwrap().clone());
        j
    };
    let snap = |id: &str| json!({"kind": "delete_snapshot", "snapshot_id": id});
    let bundle_in = |bucket: &str| json!({"kind": "delete_bundle", "bucket": bucket, "manifest_key": "legacy/legacy.manifest.xml"});
    let forged = [
        (
            job("us-east-1", "ami-0ffffffffffffffff", snap(&manual)),
            "not_tied_to_image: nothing ties it to ami-0ffffffffffffffff",
        ),
        (
            job(
                "us-east-1",
                "ami-00000000000000001",
                snap(&registered_snapshot),
            ),
            "ami-00000000000000001",
        ),
        (
            job("us-east-1", "ami-00000000000000b01", bundle_in("bundles")),
            "image_registered: its image ami-00000000000000b01 is still registered",
        ),
        (
            job("us-east-1", "ami-00000000000000b01", bundle_in("other")),
            "bucket_not_configured: the bucket is not among the deployment's bundle buckets",
        ),
        (
            job(
                "mars-north-1",
                "ami-00000000000000001",
                snap(&registered_snapshot),
            ),
            "region \"mars-north-1\" is not among the regions this run may act in",
        ),
    ];
    send(
        &config,
        &queue,
        &forged.iter().map(|(j, _)| j.clone()).collect::<Vec<_>>(),
    )
    .await;
    let scratch = Scratch::new("forged", real_policy());
    let drain = |buckets: &str| {
        Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
            .args([
                "cleanup",
                "--format",
                "json",
                "--queue-url",
                &queue,
                "--dead-letter-queue-url",
                &dlq,
            ])
            .arg(format!("--bundle-buckets={buckets}"))
            .arg("--policy")
            .arg(scratch.policy())
            .envs(moto.env())
            .env_remove("AMI_SWEEPER_BUNDLE_BUCKETS")
            .output()
            .unwrap()
    };
    let out = drain("bundles");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["totals"]["rejected"], forged.len(), "{report}");
    assert!(
        report["api_calls"].get("DeleteSnapshot").is_none(),
        "{report}"
    );
    assert!(
        report["api_calls"].get("DeleteObjects").is_none(),
        "{report}"
    );
    // Batched: one DescribeSnapshots for the batch's snapshot jobs, one DescribeImages by
    // the jobs' image ids, one filtered by their snapshots (the front door answers the
    // filter moto lacks), and one listing for its bundle jobs. No job would run, so
    // neither the Recycle Bin nor the launch templates are asked.
    assert_eq!(report["api_calls"]["DescribeSnapshots"], 1, "{report}");
    assert_eq!(report["api_calls"]["DescribeImages"], 3, "{report}");
    assert!(
        report["api_calls"].get("ListImagesInRecycleBin").is_none(),
        "{report}"
    );

    // With bundle cleanup off, even a well-formed bundle job for an allowed bucket is refused.
    send(
        &config,
        &queue,
        &[job(
            "us-east-1",
            "ami-0ffffffffffffffff",
            bundle_in("bundles"),
        )],
    )
    .await;
    let out = drain("");
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    assert_eq!(report["totals"]["rejected"], 1);
    // A bundle-only batch outside the bundle buckets asks only whether its image is registered.
    assert_eq!(report["api_calls"]["DescribeImages"], 1, "{report}");
    assert!(
        report["api_calls"].get("DescribeSnapshots").is_none(),
        "{report}"
    );

    let letters = dead_letters(&config, &dlq).await;
    assert_eq!(letters.len(), forged.len() + 1);
    for (job, why) in &forged {
        let (_, reason) = letters
            .iter()
            .find(|(body, _)| body == job)
            .expect("in the DLQ");
        assert!(reason.contains(why), "{reason} lacks {why}");
        assert!(reason.ends_with("nothing was deleted"), "{reason}");
    }
    assert!(letters
        .iter()
        .any(|(_, r)| r.contains("bundle cleanup is off")));
    // Nothing deleted anywhere; the cleanup queue is empty.
    assert_eq!(snapshot_ids(&config).await, snapshots_before);
    assert_eq!(image_ids(&config).await, images_before);
    for bucket in ["bundles", "other"] {
        let keys = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        assert_eq!(keys.contents().len(), 1, "{bucket}");
    }
    let left = aws_sdk_sqs::Client::new(&config)
        .receive_message()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    assert!(left.messages().is_empty());
}

const BUNDLE_MANIFEST: &str = r#"<?xml version="1.0"?><manifest><image><name>b</name>
<parts count="2"><part index="0"><filename>NAME.part.0</filename></part>
<part index="1"><filename>NAME.part.1</filename></part></parts></image></manifest>"#;

async fn put(s3: &aws_sdk_s3::Client, key: &str, body: &str) {
    s3.put_object()
        .bucket("bundles")
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_never_lost_and_foreign_ones_are_reclaimed_on_request() {
    let mut own = seed_image("ami-00000000000000b01", "legacy", OLD, json!({}));
    own["root_device_type"] = json!("instance-store");
    own["image_location"] = json!("bundles/own/own.manifest.xml");
    let Rig {
        moto: _moto,
        config,
        proxy,
        env,
    } = rig(json!([own])).await;
    let s3 = aws_sdk_s3::Client::new(&config);
    s3.create_bucket().bucket("bundles").send().await.unwrap();
    // Our image's bundle, a bundle nobody registers any more, and an unrelated object.
    for name in ["own", "foreign"] {
        put(
            &s3,
            &format!("{name}/{name}.manifest.xml"),
            &BUNDLE_MANIFEST.replace("NAME", name),
        )
        .await;
        for p in 0..2 {
            put(&s3, &format!("{name}/{name}.part.{p}"), "x").await;
        }
    }
    put(&s3, "own/README.txt", "keep me").await;
    let all = object_keys(&config, "bundles").await;
    let with_buckets = ["--bundle-buckets", "bundles"];

    // S3 refuses DeleteObjects: the image goes, its bundle stays (marked).
    proxy.set_faults(
        json!([{"id": "?delete", "status": 403, "code": "AccessDenied",
                             "message": "Access Denied"}]),
    );
    let scratch = Scratch::new("bundles", real_policy());
    let out = sweep_command(&env, &scratch.policy(), &with_buckets)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(image_ids(&config).await.is_empty());
    assert_eq!(
        object_keys(&config, "bundles").await,
        all,
        "nothing deleted while S3 refuses"
    );
    let tags = s3
        .get_object_tagging()
        .bucket("bundles")
        .key("own/own.manifest.xml")
        .send()
        .await
        .unwrap();
    assert!(tags
        .tag_set()
        .iter()
        .any(|t| t.key() == ami_sweeper::orphans::STORAGE_MARK
            && t.value() == "ami-00000000000000b01"));

    // The next sweep finishes it; the foreign bundle is left alone by default.
    proxy.set_faults(json!([]));
    let report = sweep_ok(&env, &scratch.policy(), &with_buckets);
    let bundles = report["regions"][0]["reconciled_bundles"]
        .as_array()
        .unwrap();
    let fate = |key: &str| {
        bundles
            .iter()
            .find(|b| b["manifest_key"] == key)
            .map(|b| (b["origin"].clone(), b["reason"].clone()))
            .unwrap()
    };
    assert_eq!(fate("own/own.manifest.xml"), (json!("marked"), Value::Null));
    assert_eq!(
        fate("foreign/foreign.manifest.xml"),
        (json!("foreign"), json!("orphans_off"))
    );
    let after: BTreeSet<String> = object_keys(&config, "bundles").await;
    assert!(
        after.iter().all(|k| !k.starts_with("own/own.")),
        "{after:?}"
    );
    assert!(after.contains("own/README.txt"));
    assert_eq!(
        after.iter().filter(|k| k.starts_with("foreign/")).count(),
        3
    );

    // With cleanup.orphans, past its age, the foreign bundle still stays while its bucket
    // is not declared private: another account may register from it, unseen.
    let later = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let orphans = |private: Value| {
        json!({"dry_run": false, "retention": {"min_age_days": 30},
               "cleanup": {"orphans": {"min_age_days": 1}, "private_bundle_buckets": private}})
    };
    let shared = Scratch::new("bundles-shared", orphans(json!([])));
    let args = ["--bundle-buckets", "bundles", "--now", &later];
    let report = sweep_ok(&env, &shared.policy(), &args);
    let reason = &report["regions"][0]["reconciled_bundles"][0]["reason"];
    assert_eq!(reason, "bucket_not_private", "{report}");
    assert_eq!(
        object_keys(&config, "bundles").await.len(),
        4,
        "the foreign bundle and README stay"
    );
    // Declared private, the foreign bundle goes too, exactly its files.
    let on = Scratch::new("bundles-on", orphans(json!(["bundles"])));
    let report = sweep_ok(&env, &on.policy(), &args);
    assert_eq!(report["totals"]["orphans"]["bundles"], 1);
    assert_eq!(
        object_keys(&config, "bundles").await,
        BTreeSet::from(["own/README.txt".to_string()])
    );
}
