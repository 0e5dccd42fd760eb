//! ami-sweeper behind EC2's token buckets: the emulator never throttles, so these tests
//! put `scripts/throttle_proxy.py` in front of it, which answers `503
//! RequestLimitExceeded` in EC2's shape when an action's bucket is empty.

use std::process::Command;

use crate::moto::{image_ids, seed_image, snapshot_ids, Moto, Throttle};
use serde_json::json;

fn estate(images: usize) -> serde_json::Value {
    (0..images)
        .map(|i| {
            seed_image(
                &format!("ami-{:017x}", i + 1),
                &format!("nightly-{i:03}"),
                "2025-01-01T00:00:00.000Z",
                json!({"app": "web"}),
            )
        })
        .collect()
}

/// Runs a real sweep of every image through `proxy` with these rate flags.
fn sweep(moto: &Moto, proxy: &Throttle, rates: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!(
        "ami-sweeper-throttled-{}-{}",
        std::process::id(),
        proxy.endpoint.rsplit(':').next().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        json!({"dry_run": false, "retention": {"min_age_days": 30}}).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .args([
            "sweep",
            "--format",
            "json",
            "--retry-delay",
            "1",
            "--policy",
        ])
        .arg(&policy)
        .args(rates)
        .envs(proxy.env(moto))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn throttled(stats: &serde_json::Value) -> u64 {
    stats["actions"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| a["throttled"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_calls_are_throttled_retried_and_counted_and_nothing_fails() {
    const IMAGES: usize = 40;
    let moto = Moto::start(Some(estate(IMAGES)));
    let config = moto.config().await;
    // Buckets of 2 refilled at 20/s, and a client that does not pace itself: its first
    // 8 calls in flight already overflow them. EC2 refuses some calls, and the SDK's
    // retries (five attempts, jittered backoff) must still get every one through.
    let proxy = Throttle::start(
        &moto,
        &[
            "--bucket",
            "describe=2/20",
            "--bucket",
            "deregister_image=2/20",
            "--bucket",
            "delete_snapshot=2/20",
        ],
    );
    let report = sweep(
        &moto,
        &proxy,
        &["--rate", "1000", "--describe-rate", "1000"],
    );
    let stats = proxy.stats();
    assert!(
        throttled(&stats) > 0,
        "the proxy throttled nothing: {stats}"
    );
    assert_eq!(report["totals"]["failures"], 0, "{report}");
    assert_eq!(report["totals"]["outcomes"]["deregistered"], IMAGES);
    assert_eq!(report["totals"]["jobs"]["deleted"], IMAGES);
    // Every refusal the proxy sent was seen and counted by the client.
    assert_eq!(report["throttles"].as_u64().unwrap(), throttled(&stats));
    assert_eq!(
        stats["actions"]["DeregisterImage"]["accepted"], IMAGES,
        "one accepted call per image: {stats}"
    );
    assert!(image_ids(&config).await.is_empty());
    assert!(snapshot_ids(&config).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_at_the_buckets_rates_nothing_is_throttled() {
    // More images than EC2's buckets hold (100), so the run must rely on its pacing.
    const IMAGES: usize = 150;
    let moto = Moto::start(Some(estate(IMAGES)));
    let config = moto.config().await;
    // EC2's buckets with refill rates x10, and the client's default rates x10.
    let proxy = Throttle::start(&moto, &["--scale", "10"]);
    let report = sweep(&moto, &proxy, &["--rate", "50", "--describe-rate", "150"]);
    let stats = proxy.stats();
    assert_eq!(report["totals"]["failures"], 0, "{report}");
    assert_eq!(report["totals"]["outcomes"]["deregistered"], IMAGES);
    assert_eq!(throttled(&stats), 0, "{stats}");
    assert_eq!(report["throttles"], 0);
    assert!(image_ids(&config).await.is_empty());
    assert!(snapshot_ids(&config).await.is_empty());
}
