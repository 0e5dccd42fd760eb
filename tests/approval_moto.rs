//! Approved plans through the binary on the emulator (issue 30, item 3): a dry run's
//! report is the plan; `sweep --approved-plan` acts only on images condemned both now and
//! in the plan, and refuses a plan of another policy, account or region, too old, or dated
//! in the future, with the reason and nothing changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::moto::{image_ids, seed_image, Moto};
use aws_sdk_ec2::types::InstanceType;
use serde_json::{json, Value};

/// Four old `web` builds, all past the policy's minimum age at [`crate::NOW`].
fn seed() -> Value {
    json!((1..=4)
        .map(|i| seed_image(
            &format!("ami-0000000000000000{i}"),
            &format!("web-2025010{i}"),
            &format!("2025-01-0{i}T00:00:00.000Z"),
            json!({"app": "web"}),
        ))
        .collect::<Vec<_>>())
}

fn id(i: u32) -> String {
    format!("ami-0000000000000000{i}")
}

const POLICY: &str = r#"{"dry_run": false, "recycle_bin": "ignore",
    "retention": {"min_age_days": 30}}"#;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ami-sweeper-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("policy.json"), POLICY).unwrap();
        Dir(d)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `ami-sweeper sweep --format json --policy P ARGS...` against the emulator.
fn sweep(moto: &Moto, policy: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
        .args(["sweep", "--format", "json", "--policy"])
        .arg(policy)
        .args(args)
        .envs(moto.env())
        .env_remove("CLEANUP_QUEUE_URL")
        .env_remove("AMI_SWEEPER_ACCOUNT_ID")
        .env_remove("AMI_SWEEPER_APPROVAL_ONLY")
        .output()
        .unwrap()
}

fn report(out: &Output) -> Value {
    crate::json_report(out)
}

/// Runs an instance of `image`, so it is in use.
async fn launch(config: &aws_config::SdkConfig, image: &str) -> String {
    let out = aws_sdk_ec2::Client::new(config)
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

fn image<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["regions"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {report:#}"))
}

fn reasons(report: &Value, id: &str) -> Vec<String> {
    image(report, id)["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_plan_acts_only_on_images_condemned_now_and_in_the_plan() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let dir = Dir::new("approved");
    let policy = dir.path("policy.json");
    // At planning time web-4 is in use: the plan keeps it.
    let user = launch(&config, &id(4)).await;
    let plan = report(&sweep(&moto, &policy, &["--dry-run", "--now", crate::NOW]));
    let stamp = &plan["regions"][0]["approval"];
    assert_eq!(stamp["account"], "123456789012", "{plan:#}");
    assert_eq!(stamp["regions"], json!(["us-east-1"]));
    assert_eq!(stamp["images"].as_array().unwrap().len(), 3, "{stamp:#}");
    std::fs::write(dir.path("plan.json"), plan.to_string()).unwrap();
    // After approval: web-1 comes into use, web-4's user goes.
    launch(&config, &id(1)).await;
    aws_sdk_ec2::Client::new(&config)
        .terminate_instances()
        .instance_ids(user)
        .send()
        .await
        .unwrap();
    let plan_path = dir.path("plan.json");
    let applied = report(&sweep(
        &moto,
        &policy,
        &[
            "--approved-plan",
            plan_path.to_str().unwrap(),
            "--now",
            "2026-11-27T00:00:00Z",
        ],
    ));
    assert_eq!(applied["dry_run"], false);
    let left = image_ids(&config).await;
    assert_eq!(
        left,
        [id(1), id(4)].into(),
        "only web-2 and web-3 (approved and condemned now) go: {applied:#}"
    );
    assert_eq!(image(&applied, &id(2))["outcome"], "deregistered");
    assert_eq!(reasons(&applied, &id(1)), ["approved_but_kept", "in_use"]);
    assert_eq!(image(&applied, &id(4))["action"], "keep");
    assert_eq!(reasons(&applied, &id(4)), ["not_approved", "expired"]);
    assert!(
        applied["regions"][0].get("approval").is_none(),
        "a live run's report is no plan to approve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_of_another_policy_account_or_region_too_old_or_dated_in_the_future_are_refused() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let dir = Dir::new("refused");
    let policy = dir.path("policy.json");
    let plan = report(&sweep(&moto, &policy, &["--dry-run", "--now", crate::NOW]));
    let write = |name: &str, doc: &Value| {
        let p = dir.path(name);
        std::fs::write(&p, doc.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let genuine = write("plan.json", &plan);
    let mut other_account = plan.clone();
    other_account["regions"][0]["approval"]["account"] = json!("999999999999");
    let other_account = write("other-account.json", &other_account);
    let other_policy = dir.path("other-policy.json");
    std::fs::write(&other_policy, POLICY.replace("30", "31")).unwrap();
    let before = image_ids(&config).await;
    let refused = |policy: &Path, args: &[&str], why: &str| {
        let out = sweep(&moto, policy, args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("the approved plan is refused"), "{stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    };
    let day = |d: &str| format!("2026-{d}T00:00:00Z");
    let next_day = day("11-27");
    refused(
        &other_policy,
        &["--approved-plan", &genuine, "--now", &next_day],
        "another policy",
    );
    refused(
        &policy,
        &["--approved-plan", &other_account, "--now", &next_day],
        "made in account 999999999999, this run acts in 123456789012",
    );
    refused(
        &policy,
        &[
            "--approved-plan",
            &genuine,
            "--now",
            &next_day,
            "--region",
            "eu-west-1",
        ],
        "made for region us-east-1; this run sweeps [eu-west-1]",
    );
    refused(
        &policy,
        &["--approved-plan", &genuine, "--now", &day("12-04")],
        "made 8 days ago",
    );
    refused(
        &policy,
        &["--approved-plan", &genuine, "--now", "2026-11-25T23:00:00Z"],
        "dated in the future",
    );
    assert_eq!(image_ids(&config).await, before, "nothing changed");
    // The bound is a flag: an 8-day-old plan within a 10-day bound is accepted (dry run).
    let dry = report(&sweep(
        &moto,
        &policy,
        &[
            "--approved-plan",
            &genuine,
            "--now",
            &day("12-04"),
            "--approved-plan-max-age-days",
            "10",
            "--dry-run",
        ],
    ));
    assert_eq!(dry["totals"]["outcomes"]["planned"], 4, "{dry:#}");
    // An unknown key in the stamp is refused with its path.
    let mut forged = plan.clone();
    forged["regions"][0]["approval"]["images"][0]["also"] = json!("ami-x");
    let forged = write("forged.json", &forged);
    let out = sweep(
        &moto,
        &policy,
        &["--approved-plan", &forged, "--now", &next_day],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("regions[0].approval.images[0].also: unknown field"),
        "{stderr}"
    );
    assert_eq!(image_ids(&config).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_approval_only_a_sweep_is_a_dry_run_until_a_plan_is_approved() {
    let moto = Moto::start(Some(seed()));
    let config = moto.config().await;
    let dir = Dir::new("approval-only");
    let policy = dir.path("policy.json");
    let plan = report(&sweep(
        &moto,
        &policy,
        &["--approval-only", "--now", crate::NOW],
    ));
    assert_eq!(plan["dry_run"], true, "{plan:#}");
    assert_eq!(image_ids(&config).await.len(), 4);
    let path = dir.path("plan.json");
    std::fs::write(&path, plan.to_string()).unwrap();
    let applied = report(&sweep(
        &moto,
        &policy,
        &[
            "--approval-only",
            "--approved-plan",
            path.to_str().unwrap(),
            "--now",
            crate::NOW,
        ],
    ));
    assert_eq!(applied["dry_run"], false);
    assert!(image_ids(&config).await.is_empty(), "{applied:#}");
}
