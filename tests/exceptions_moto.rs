//! Expiring exceptions against the local EC2 emulator: an image tagged
//! `ami-sweeper:keep-until` is kept by a live sweep before its instant and deregistered
//! (its snapshot deleted) by one after it; a policy entry beyond `max_exception_days`
//! stops the run with nothing changed.

use std::process::Command;

use crate::moto::{image_ids, seed_image, snapshot_ids, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::cleanup::RetryPolicy;
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use serde_json::json;

const KEPT: &str = "ami-0000000000000e001";
const PLAIN: &str = "ami-0000000000000e002";

fn seed() -> serde_json::Value {
    json!([
        seed_image(
            KEPT,
            "app-20250101",
            "2025-01-01T00:00:00.000Z",
            json!({"ami-sweeper:keep-until": "2026-12-31", "ami-sweeper:keep-reason": "INC-7"}),
        ),
        seed_image(PLAIN, "app-20250102", "2025-01-02T00:00:00.000Z", json!({})),
    ])
}

/// A live sweep through the binary at `now`: its JSON report.
fn sweep_at(moto: &Moto, policy: &std::path::Path, now: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .args(["sweep", "--format", "json", "--now", now, "--policy"])
        .arg(policy)
        .envs(moto.env())
        .output()
        .unwrap();
    crate::json_report(&out)
}

fn image<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_image_is_kept_live_until_its_date_and_deregistered_after_it() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let snapshots = snapshot_ids(&config).await;
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");

    // A policy entry beyond the horizon stops the run before anything is read or changed.
    let refused = Policy::from_json(
        &json!({"dry_run": false, "retention": {"min_age_days": 30},
                "limits": {"max_exception_days": 30},
                "exceptions": [{"image_ids": [PLAIN], "until": "2027-06-30", "reason": "x"}]})
        .to_string(),
    )
    .unwrap();
    let opts = SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: false,
        queue: QueueMode::Local(RetryPolicy::default()),
        exec: Default::default(),
        now: parse_instant(crate::NOW).unwrap(),
    };
    let report = run_sweep(
        &Clients::new(config.clone()),
        &refused,
        &["us-east-1".into()],
        &opts,
    )
    .await;
    let error = report.regions[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("exceptions[0].until") && error.contains("nothing was changed"),
        "{error}"
    );
    assert!(report.api_calls.is_empty(), "{:?}", report.api_calls);
    assert_eq!(image_ids(&config).await.len(), 2);

    let dir = std::env::temp_dir().join(format!("ami-sweeper-exc-moto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        json!({"dry_run": false, "regions": ["us-east-1"], "retention": {"min_age_days": 30}})
            .to_string(),
    )
    .unwrap();

    // Before the date: the tagged image is excepted, its neighbour goes.
    let before = sweep_at(&moto, &policy, crate::NOW);
    let kept = image(&before, KEPT);
    assert_eq!(kept["reasons"], json!(["excepted"]), "{kept}");
    assert_eq!(kept["exception"]["until"], "2027-01-01T00:00:00Z");
    assert_eq!(kept["exception"]["reason"], "INC-7");
    assert_eq!(image(&before, PLAIN)["outcome"], "deregistered");
    assert_eq!(
        image_ids(&config).await,
        [KEPT.to_string()].into_iter().collect()
    );

    // The last second of its day: still kept.
    let last = sweep_at(&moto, &policy, "2026-12-31T23:59:59Z");
    assert_eq!(image(&last, KEPT)["reasons"][0], "excepted");
    assert!(image(&last, KEPT).get("outcome").is_none());

    // After it: decided as usual, deregistered, its snapshot deleted.
    let after = sweep_at(&moto, &policy, "2027-01-01T00:00:00Z");
    let gone = image(&after, KEPT);
    assert_eq!(gone["reasons"][0], "expired", "{gone}");
    assert_eq!(gone["outcome"], "deregistered");
    assert!(image_ids(&config).await.is_empty());
    assert!(snapshot_ids(&config).await.is_empty());
    std::fs::remove_dir_all(&dir).ok();
}
