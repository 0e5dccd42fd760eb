//! The `ami-sweeper` binary as users run it: exit codes, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ami-sweeper"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(name: &str) -> String {
    root().join("samples").join(name).display().to_string()
}

fn plan_samples(extra: &[&str]) -> Output {
    bin()
        .args([
            "plan",
            "--policy",
            &sample("policy.json"),
            "--images",
            &sample("images.json"),
        ])
        .args(["--instances", &sample("instances.json")])
        .args(["--launch-templates", &sample("launch-templates.json")])
        .args([
            "--launch-configurations",
            &sample("launch-configurations.json"),
        ])
        .args(["--now", "2026-11-26T00:00:00Z"])
        .args(extra)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn every_bad_policy_exits_2_with_its_message_and_no_output() {
    let dir = root().join("tests/bad_policies");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    for policy in entries {
        let expected = std::fs::read_to_string(policy.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", policy.display()));
        let out = bin()
            .args(["plan", "--policy"])
            .arg(&policy)
            .args(["--images", &sample("images.json"), "--format", "json"])
            .output()
            .unwrap();
        let name = policy.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}: printed {}", stdout(&out));
        assert_eq!(stderr(&out), format!("ami-sweeper: {}", expected), "{name}");
        assert_eq!(stderr(&out).lines().count(), 1, "{name}: one line");
        checked += 1;
    }
    assert!(checked >= 20, "corpus has only {checked} files");
}

#[test]
fn plan_json_is_one_object_matching_the_samples() {
    let out = plan_samples(&["--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["now"], "2026-11-26T00:00:00Z");
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 28);
    let deregister: Vec<&str> = decisions
        .iter()
        .filter(|d| d["action"] == "deregister")
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        deregister,
        [
            "web-20261020",
            "web-20261013",
            "web-20261006",
            "web-20260728",
            "web-20260401",
            "web-20260301",
            "web-20250901"
        ]
    );
    let reason_of = |name: &str| {
        decisions
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["reasons"][0].as_str().unwrap().to_string())
            .unwrap()
    };
    // Stopped instance, old launch template version, launch configuration.
    assert_eq!(reason_of("web-20260929"), "in_use");
    assert_eq!(reason_of("web-20260915"), "in_use");
    assert_eq!(reason_of("api-a-20260823"), "in_use");
    // A terminated instance does not protect its image; keep_count does here.
    assert_eq!(reason_of("api-a-20260917"), "within_keep_count");
    assert_eq!(reason_of("web-20260110"), "backup_managed");
    assert_eq!(reason_of("web-20260501"), "shared");
    assert_eq!(reason_of("web-20260818"), "deregistration_protected");
    assert_eq!(reason_of("api-a-20260719"), "deregistration_protected");
    assert_eq!(reason_of("web-20260901"), "recently_launched");
    assert_eq!(v["summary"]["deregister"], 7);
    assert_eq!(v["summary"]["keep"], 21);
    assert_eq!(v["summary"]["bundles_to_delete"], 1);
    assert_eq!(v["summary"]["snapshots_retained"], 1);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn plan_table_fits_80_columns_and_ends_with_the_summary() {
    let out = plan_samples(&["--format", "table"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    assert!(text.contains("web/web (20 images: 13 keep, 7 deregister)"));
    assert!(text.contains("plan at 2026-11-26T00:00:00Z: 28 images, 7 to deregister, 21 to keep"));
    assert!(
        text.contains("storage: 4 snapshots to delete (32 GiB), 1 retained; 1 bundle to delete")
    );
    assert!(text.contains("used by i-0aaa1111bbbb2222c (stopped)"));
}

#[test]
fn default_format_off_a_terminal_is_json() {
    let out = plan_samples(&[]);
    assert!(out.status.success());
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json when piped");
}

#[test]
fn bad_inputs_are_named_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("ami-sweeper-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let images = write(
        "images.json",
        r#"{"Images": [{"ImageId": "ami-1", "State": "available", "CreationDate": "last tuesday"}]}"#,
    );
    let dup = write(
        "dup.json",
        r#"{"Images": [{"ImageId": "ami-1", "State": "available", "CreationDate": "2026-01-01T00:00:00Z"},
                       {"ImageId": "ami-1", "State": "available", "CreationDate": "2026-01-01T00:00:00Z"}]}"#,
    );
    let instances = write(
        "instances.json",
        r#"{"Reservations": [{"Instances": [{"InstanceId": "i-1"}]}]}"#,
    );
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--images".into(), images.display().to_string()],
            format!(
                "{}: Images[0]: ami-1: CreationDate \"last tuesday\" is not an ISO 8601 instant",
                images.display()
            ),
        ),
        (
            vec!["--images".into(), dup.display().to_string()],
            format!(
                "{}: image ami-1 appears more than once in the inventory",
                dup.display()
            ),
        ),
        (
            vec![
                "--images".into(),
                sample("images.json"),
                "--instances".into(),
                instances.display().to_string(),
            ],
            format!(
                "{}: Reservations[0].Instances[0]: missing field `State` at line 1 column 54",
                instances.display()
            ),
        ),
        (
            vec![
                "--images".into(),
                sample("images.json"),
                "--now".into(),
                "tomorrow".into(),
            ],
            "--now: \"tomorrow\" is not an RFC 3339 instant".into(),
        ),
        (
            vec![
                "--images".into(),
                Path::new("/nonexistent/images.json").display().to_string(),
            ],
            "/nonexistent/images.json: cannot read: No such file or directory (os error 2)".into(),
        ),
    ];
    for (args, expected) in cases {
        let out = bin()
            .args(["plan", "--policy", &sample("policy.json")])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert_eq!(stderr(&out).trim_end(), format!("ami-sweeper: {expected}"));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn schema_is_published_and_describes_the_policy() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "ami-sweeper policy");
    assert_eq!(v["additionalProperties"], false);
    let retention = &v["$defs"]["Retention"];
    assert_eq!(retention["required"], serde_json::json!(["min_age_days"]));
    assert_eq!(retention["properties"]["keep_count"]["minimum"], 0);
}

#[test]
fn absurd_rates_are_refused_before_anything_runs() {
    for rate in ["1e-300", "0", "-1", "NaN", "inf"] {
        let out = bin()
            .args(["sweep", "--policy", &sample("policy.json")])
            .arg(format!("--rate={rate}"))
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{rate}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "ami-sweeper: --rate: must be a number of calls per second, at least 0.01\n",
            "{rate}"
        );
    }
}
