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
        .args(["--now", crate::NOW])
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
    assert_eq!(v["now"], crate::NOW);
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
    // The plan cannot read the manifest's tags: the job's verification decides.
    let bundle = decisions
        .iter()
        .find_map(|d| d.get("bundle"))
        .expect("the instance-store image's bundle");
    assert_eq!(bundle["action"], "delete");
    assert_eq!(bundle["tags_unknown"], true);
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
    assert!(text.contains("web/web (20 images: 13 keep, 7 deregister; saves $"));
    assert!(text.contains(&format!(
        "plan at {}: 28 images, 7 to deregister, 21 to keep",
        crate::NOW
    )));
    assert!(
        text.contains("storage: 4 snapshots to delete (32 GiB), 1 retained; 1 bundle to delete")
    );
    assert!(text.contains("used by i-0aaa1111bbbb2222c (stopped)"));
    assert!(text.contains(
        "deletes bundle s3://payments-ami-bundles/web/web-20250901.manifest.xml\n        \
         (tags unknown: decided at the sweep)"
    ));
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

fn recorded(name: &str) -> PathBuf {
    root().join("tests/recorded").join(name)
}

/// `plan` with the recorded files (or variants of them) given as flag → path pairs.
fn plan_recorded(inputs: &[(&str, &Path)]) -> Output {
    // One file per call: tests run in parallel, and a file rewritten while another test's
    // process reads it reads empty.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let policy = std::env::temp_dir().join(format!(
        "ami-sweeper-recorded-{}-{n}.json",
        std::process::id()
    ));
    std::fs::write(&policy, r#"{"retention": {"min_age_days": 30}}"#).unwrap();
    let mut cmd = bin();
    cmd.args(["plan", "--format", "json", "--now", crate::NOW, "--policy"])
        .arg(&policy);
    for (flag, path) in inputs {
        cmd.arg(flag).arg(path);
    }
    cmd.output().unwrap()
}

/// A variant of a file written to the temporary directory.
fn variant(name: &str, bytes: Vec<u8>) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ami-sweeper-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn decisions(out: &Output) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["image_id"].as_str().unwrap().to_string(),
                d["reasons"][0].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn recorded_aws_responses_are_read_or_refused_as_the_rules_say() {
    let images = recorded("own-images.json");
    let lts = recorded("aws-cli-describe-launch-template-versions.json");
    let lcs = recorded("aws-cli-describe-launch-configurations.json");
    let snaps = recorded("aws-cli-describe-snapshots.json");
    let fleets = recorded("aws-cli-describe-fleets.json");
    let spot = recorded("aws-cli-describe-spot-fleet-requests.json");
    let groups = recorded("aws-cli-describe-auto-scaling-groups.json");
    let recipes = recorded("aws-cli-list-image-recipes.json");
    let out = plan_recorded(&[
        ("--images", &images),
        ("--launch-templates", &lts),
        ("--launch-configurations", &lcs),
        ("--snapshots", &snaps),
        ("--fleets", &fleets),
        ("--spot-fleet-requests", &spot),
        ("--auto-scaling-groups", &groups),
        ("--image-recipes", &recipes),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = decisions(&out);
    got.sort();
    let want: Vec<(String, String)> = [
        ("ami-0528a5175983e7f28", "in_use"),
        ("ami-0c0ffee0000000001", "expired"),
        ("ami-1a2b3c4d", "in_use"),
        ("ami-6057e21a", "in_use"),
        ("ami-aabbcc11", "in_use"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        plan["orphans"]["decisions"].as_array().unwrap().is_empty(),
        "{plan}"
    );

    // The documented examples that are not usable are refused, with one line saying why.
    let refused = [
        (
            "--images",
            recorded("aws-cli-describe-images.json"),
            "Images[0]: ami-5731123e: CreationDate is missing",
        ),
        (
            "--instances",
            recorded("aws-cli-describe-instances.txt"),
            "found while parsing a string at line 5 column 46",
        ),
        (
            "--ssm-parameters",
            recorded("aws-cli-get-parameters-by-path.txt"),
            "Parameters[2]: expected value at line 19 column 9",
        ),
    ];
    for (flag, path, why) in &refused {
        let mut inputs = vec![("--images", images.as_path())];
        if *flag == "--images" {
            inputs.clear();
        }
        inputs.push((flag, path.as_path()));
        let out = plan_recorded(&inputs);
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(why) && err.contains(&*path.display().to_string()),
            "{err}"
        );
    }

    // Variants every reader must handle, derived from the recorded files.
    let lt_text = std::fs::read(&lts).unwrap();
    let twice = variant(
        "lt-twice.json",
        [lt_text.clone(), b"\n".to_vec(), lt_text.clone()].concat(),
    );
    let out = plan_recorded(&[("--images", &images), ("--launch-templates", &twice)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        decisions(&out)
            .iter()
            .filter(|(_, r)| r == "in_use")
            .count(),
        2
    );
    let with_bom = variant(
        "lt-bom.json",
        [b"\xEF\xBB\xBF".to_vec(), lt_text.clone()].concat(),
    );
    let out = plan_recorded(&[("--images", &images), ("--launch-templates", &with_bom)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let text = String::from_utf8(lt_text).unwrap();
    let truncated = variant(
        "lt-truncated.json",
        text.trim_end()
            .strip_suffix('}')
            .map(|t| format!("{t}, \"NextToken\": \"eyJ2IjoxfQ==\"}}"))
            .unwrap()
            .into_bytes(),
    );
    let garbage = variant(
        "lt-garbage.json",
        format!("{text}\nAn error occurred (ExpiredToken) when calling the DescribeLaunchTemplateVersions operation").into_bytes(),
    );
    let utf16 = variant(
        "lt-utf16.json",
        [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
    );
    let cases: [(&str, &Path, &str); 5] = [
        ("--launch-templates", &truncated, "the output is truncated (it has a NextToken)"),
        ("--launch-templates", &garbage, "unexpected content after the JSON document"),
        ("--launch-templates", &utf16, "the file is UTF-16"),
        ("--instances", &lts, "this looks like describe-launch-template-versions output; --instances expects describe-instances output"),
        ("--launch-templates", &lcs, "this looks like describe-launch-configurations output; --launch-templates expects describe-launch-template-versions output"),
    ];
    for (flag, path, why) in cases {
        let out = plan_recorded(&[("--images", &images), (flag, path)]);
        assert_eq!(out.status.code(), Some(2), "{flag} {}", path.display());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
    }
}

/// `plan` on the usage samples (`samples/usage/`) with `launch_template_versions` set.
fn plan_usage_samples(which: &str) -> Output {
    let dir = root().join("samples/usage");
    let policy = variant(
        &format!("usage-policy-{which}.json"),
        format!(
            r#"{{"retention": {{"min_age_days": 30}}, "usage": {{"ssm_paths": ["/golden"],
                "launch_template_versions": "{which}", "cloudformation_templates": true}}}}"#
        )
        .into_bytes(),
    );
    let mut cmd = bin();
    cmd.args(["plan", "--format", "json", "--now", crate::NOW, "--policy"])
        .arg(&policy);
    for (flag, file) in [
        ("--images", "images.json"),
        ("--image-references", "image-references.json"),
        ("--ssm-parameters", "ssm-parameters.json"),
        ("--launch-templates", "launch-template-versions.json"),
        ("--auto-scaling-groups", "auto-scaling-groups.json"),
        ("--fleets", "fleets.json"),
        (
            "--batch-compute-environments",
            "batch-compute-environments.json",
        ),
        ("--image-recipes", "image-recipes.json"),
        ("--cloudformation-stacks", "cloudformation-stacks.json"),
        ("--cloudformation-templates", "cloudformation-templates"),
        ("--emr-clusters", "emr-clusters.json"),
        ("--spot-instance-requests", "spot-instance-requests.json"),
        ("--reference-object", "reference-prod.tfstate"),
    ] {
        cmd.arg(flag).arg(dir.join(file));
    }
    cmd.output().unwrap()
}

#[test]
fn every_usage_source_is_read_offline_as_a_sweep_reads_it() {
    let out = plan_usage_samples("all");
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kind_of = |n: u32| -> Vec<String> {
        let id = format!("ami-0000000000000a{n:03}");
        let d = plan["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["image_id"] == id.as_str())
            .unwrap();
        d["used_by"]
            .as_array()
            .map(|u| {
                u.iter()
                    .map(|u| u["kind"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(kind_of(1), ["instance"], "AWS's reference check");
    assert_eq!(kind_of(2), ["ssm_parameter"], "aws:ec2:image anywhere");
    assert_eq!(
        kind_of(3),
        ["ssm_parameter", "cloudformation_stack"],
        "String under usage.ssm_paths, and what web-prod's SSM-typed parameter holds now"
    );
    // resolve:ssm:/golden/lt resolved through the parameters file (and the parameter
    // itself, under /golden, counts too).
    assert_eq!(kind_of(4), ["launch_template_version", "ssm_parameter"]);
    assert_eq!(kind_of(5), ["launch_template_version"]);
    assert_eq!(kind_of(6), ["launch_template_version"]);
    assert_eq!(kind_of(7), ["fleet"]);
    assert_eq!(kind_of(8), ["batch_compute_environment"]);
    assert_eq!(
        kind_of(9),
        Vec::<String>::new(),
        "a String outside ssm_paths keeps nothing"
    );
    assert_eq!(kind_of(10), ["image_recipe"]);
    assert_eq!(
        kind_of(11),
        Vec::<String>::new(),
        "a deleted fleet keeps nothing"
    );
    // The users written down: an SSM-typed stack parameter's resolved value, an EMR
    // cluster's instance group, an open persistent Spot request, a Terraform state file.
    assert_eq!(kind_of(12), ["cloudformation_stack"]);
    assert_eq!(kind_of(13), ["emr_cluster"]);
    assert_eq!(kind_of(14), ["spot_request"]);
    assert_eq!(kind_of(15), ["reference_object"]);
    // web-prod's template (usage.cloudformation_templates) names image 17 literally.
    assert_eq!(kind_of(17), ["cloudformation_stack"]);
    assert_eq!(
        kind_of(16),
        Vec::<String>::new(),
        "a deleted stack, a terminated cluster and a closed request keep nothing"
    );
    // v2 is neither $Default nor $Latest: only it keeps image 6, which a narrower
    // choice would free (under `referenced` the group naming it keeps it).
    assert_eq!(plan["summary"]["kept_only_by_stale_versions"], 1);
    assert!(
        plan["warnings"].as_array().is_none_or(|w| w.is_empty()),
        "{plan}"
    );
}

#[test]
fn launch_template_version_choices_free_what_they_say_offline() {
    let reason = |out: &Output, n: u32| -> String {
        let id = format!("ami-0000000000000a{n:03}");
        decisions(out)
            .into_iter()
            .find(|(i, _)| *i == id)
            .unwrap()
            .1
    };
    // v1 is $Default, v3 (resolve:ssm: to image 4) is $Latest, v2 is named by the group.
    let referenced = plan_usage_samples("referenced");
    assert!(referenced.status.success(), "{}", stderr(&referenced));
    assert_eq!(reason(&referenced, 6), "in_use");
    let default_and_latest = plan_usage_samples("default_and_latest");
    assert_eq!(reason(&default_and_latest, 6), "expired");
    assert_eq!(reason(&default_and_latest, 5), "in_use");
    assert_eq!(reason(&default_and_latest, 4), "in_use");
    let v: serde_json::Value = serde_json::from_slice(&default_and_latest.stdout).unwrap();
    let d6 = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["image_id"] == "ami-0000000000000a006")
        .unwrap();
    assert_eq!(d6["stale_versions"][0]["id"], "lt-0abc (web) v2");
}

#[test]
fn describe_parameters_output_is_refused_not_read_as_no_parameters() {
    let images = root().join("samples/usage/images.json");
    let metadata = variant(
        "describe-parameters.json",
        br#"{"Parameters": [{"Name": "/app/golden", "Type": "String", "DataType": "aws:ec2:image", "Version": 3}]}"#
            .to_vec(),
    );
    let out = plan_recorded(&[("--images", &images), ("--ssm-parameters", &metadata)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Parameters[0]") && err.contains("Value"),
        "{err}"
    );
    // A fleets file given where Spot Fleet requests are expected is named for what it is.
    let fleets = root().join("samples/usage/fleets.json");
    let out = plan_recorded(&[("--images", &images), ("--spot-fleet-requests", &fleets)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("this looks like describe-fleets output"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn recycle_bin_rules_offline_show_restorable_until_and_the_deferred_snapshots() {
    let rules = root().join("samples/usage/recycle-bin-rules.json");
    let images = root().join("samples/usage/images.json");
    let out = plan_recorded(&[("--images", &images), ("--recycle-bin-rules", &rules)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &plan["decisions"][0];
    assert_eq!(d["action"], "deregister");
    // The 7-day AMI rule (the pending 365-day snapshot rule retains nothing yet).
    assert_eq!(d["recycle_bin"]["restorable_until"], "2026-12-03T00:00:00Z");
    assert_eq!(d["recycle_bin"]["snapshots"], "deferred");
    assert_eq!(d["snapshots"][0]["reason"], "image_in_recycle_bin");
    assert_eq!(d["snapshots"][0]["delete_after"], "2026-12-03T00:00:00Z");
    // Every image of the sample goes (nothing uses them here): each one's snapshot waits.
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&images).unwrap()).unwrap();
    let count = listed["Images"].as_array().unwrap().len();
    assert_eq!(plan["summary"]["snapshots_deferred"], count);
    assert_eq!(plan["summary"]["snapshots_to_delete"], 0);

    // Concatenated get-rule outputs read the same; a list-rules summary is refused.
    let text = std::fs::read_to_string(&rules).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let joined = variant(
        "rules-concatenated.json",
        v.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    );
    let out = plan_recorded(&[("--images", &images), ("--recycle-bin-rules", &joined)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = variant(
        "list-rules.json",
        br#"{"Rules": [{"Identifier": "x", "RetentionPeriod": {"RetentionPeriodValue": 7, "RetentionPeriodUnit": "DAYS"}}]}"#.to_vec(),
    );
    let out = plan_recorded(&[("--images", &images), ("--recycle-bin-rules", &summary)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("get-rule"), "{}", stderr(&out));
}

#[test]
fn images_an_earlier_sweep_disabled_show_as_retiring_or_due_offline() {
    let images = variant(
        "disabled-images.json",
        br#"{"Images": [
          {"ImageId": "ami-0000000000000b001", "Name": "w1", "CreationDate": "2025-01-01T00:00:00.000Z",
           "State": "disabled", "RootDeviceType": "ebs",
           "Tags": [{"Key": "ami-sweeper:disabled-at", "Value": "2026-11-24T00:00:00Z"}]},
          {"ImageId": "ami-0000000000000b002", "Name": "w2", "CreationDate": "2025-01-01T00:00:00.000Z",
           "State": "disabled", "RootDeviceType": "ebs",
           "Tags": [{"Key": "ami-sweeper:disabled-at", "Value": "2026-11-10T00:00:00Z"}]},
          {"ImageId": "ami-0000000000000b003", "Name": "w3", "CreationDate": "2025-01-01T00:00:00.000Z",
           "State": "available", "RootDeviceType": "ebs"}
        ]}"#
            .to_vec(),
    );
    let policy = variant(
        "retire-policy.json",
        br#"{"retention": {"min_age_days": 30}, "retire": {"disable_for_days": 7}}"#.to_vec(),
    );
    let out = bin()
        .args(["plan", "--format", "json", "--now", crate::NOW, "--policy"])
        .arg(&policy)
        .arg("--images")
        .arg(&images)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = |id: &str| {
        plan["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["image_id"] == id)
            .unwrap()
            .clone()
    };
    let waiting = d("ami-0000000000000b001");
    assert_eq!(
        (waiting["action"].as_str(), waiting["reasons"][0].as_str()),
        (Some("keep"), Some("retiring"))
    );
    assert_eq!(waiting["eligible_at"], "2026-12-01T00:00:00Z");
    assert_eq!(
        d("ami-0000000000000b002")["action"],
        "deregister",
        "its wait is over"
    );
    let fresh = d("ami-0000000000000b003");
    assert_eq!(fresh["action"], "disable");
    assert_eq!(fresh["eligible_at"], "2026-12-03T00:00:00Z");
}

#[test]
fn archived_snapshots_are_priced_as_archived_and_carry_the_ninety_day_note() {
    let dir = std::env::temp_dir().join(format!("ami-sweeper-tier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let images = write(
        "images.json",
        r#"{"Images": [{"ImageId": "ami-1", "Name": "old", "State": "available",
            "CreationDate": "2025-01-01T00:00:00.000Z", "RootDeviceType": "ebs",
            "BlockDeviceMappings": [
              {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-std", "VolumeSize": 100}},
              {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": "snap-arc", "VolumeSize": 100}}]}]}"#,
    );
    let snapshots = write(
        "snapshots.json",
        r#"{"Snapshots": [
            {"SnapshotId": "snap-std", "Description": "", "VolumeSize": 100, "StorageTier": "standard"},
            {"SnapshotId": "snap-arc", "Description": "", "VolumeSize": 100, "StorageTier": "archive"}]}"#,
    );
    let policy = write(
        "policy.json",
        r#"{"retention": {"min_age_days": 30},
            "cost": {"price_per_gib_month": {"snapshot_archive": 0.01}}}"#,
    );
    let out = bin()
        .args(["plan", "--policy"])
        .arg(&policy)
        .arg("--images")
        .arg(&images)
        .arg("--snapshots")
        .arg(&snapshots)
        .args([
            "--region",
            "eu-central-1",
            "--now",
            crate::NOW,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["savings"];
    // 100 GiB at eu-central-1's standard $0.054, 100 GiB archived at the policy's $0.01.
    assert_eq!(s["monthly"], 6.4);
    assert_eq!(
        s["by_image"]["ami-1"]["archived_snapshots"],
        serde_json::json!(["snap-arc"])
    );
    assert!(
        s["notes"]
            .to_string()
            .contains("within 90 days of archiving"),
        "{s}"
    );
    // The plan's own fields are unchanged beside it.
    assert_eq!(v["decisions"][0]["image_id"], "ami-1");
    assert_eq!(v["summary"]["snapshot_gib_to_delete"], 200);
}

/// `plan` on the offline sample in `samples/<dir>/` (its policy and images).
fn plan_sample(dir: &str, format: &str) -> Output {
    bin()
        .args(["plan", "--policy", &sample(&format!("{dir}/policy.json"))])
        .args(["--images", &sample(&format!("{dir}/images.json"))])
        .args(["--now", crate::NOW, "--format", format])
        .output()
        .unwrap()
}

#[test]
fn the_policy_pages_four_family_plan_is_what_the_rules_sample_prints() {
    let out = plan_sample("rules", "table");
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(root().join("docs/policy.md")).unwrap();
    assert!(
        page.contains(&stdout(&out)),
        "docs/policy.md's samples/rules plan is stale; it prints:\n{}",
        stdout(&out)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&plan_sample("rules", "json").stdout).unwrap();
    let rule_of = |name: &str| {
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["rule"].clone())
            .unwrap()
    };
    // First match wins: the CI rule comes before the nightly one.
    assert_eq!(rule_of("nightly-web-ci-4720"), "ci");
    assert_eq!(rule_of("legacy-erp-2024"), "legacy");
    assert_eq!(rule_of("scratch-experiment-7"), serde_json::Value::Null);
    assert_eq!(v["summary"]["by_rule"]["legacy"]["deregister"], 0);
    assert_eq!(v["summary"]["by_rule"]["nightly"]["images"], 60);
}

#[test]
fn the_policy_pages_thinned_lineage_is_what_the_thinning_sample_prints() {
    let out = plan_sample("thinning", "table");
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(root().join("docs/policy.md")).unwrap();
    assert!(
        page.contains(&stdout(&out)),
        "docs/policy.md's samples/thinning plan is stale; it prints:\n{}",
        stdout(&out)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&plan_sample("thinning", "json").stdout).unwrap();
    let decisions = v["decisions"].as_array().unwrap();
    let kept_in = |unit: &str| -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d["reasons"][0] == "kept_by_thinning")
            .filter(|d| d["thinning"]["keep_one_per"] == unit)
            .map(|d| d["thinning"]["period"].as_str().unwrap().to_string())
            .collect()
    };
    // One per ISO week, one per month, each period once.
    for (unit, n) in [("week", 11), ("month", 9)] {
        let periods = kept_in(unit);
        let distinct: std::collections::BTreeSet<_> = periods.iter().collect();
        assert_eq!(
            (periods.len(), distinct.len()),
            (n, n),
            "{unit}: {periods:?}"
        );
    }
    let oldest = decisions.last().unwrap();
    assert_eq!(oldest["reasons"][0], "thinned");
    assert_eq!(oldest["thinning"]["keep_one_per"], "none");
    assert_eq!(v["summary"]["by_reason"]["thinned"], 370);
}

#[test]
fn lint_lists_rules_that_can_never_match_and_fails() {
    let dir = std::env::temp_dir().join(format!("ami-sweeper-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"rules": [
            {"name": "all-web", "selection": {"names": ["web-*"]}, "retention": {"min_age_days": 3}},
            {"name": "web-prod", "selection": {"names": ["web-prod-*"]}, "retention": {"min_age_days": 90}}
        ]}"#,
    )
    .unwrap();
    let out = bin()
        .args(["lint", "--policy"])
        .arg(&policy)
        .args(["--format", "table"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("rules, first match wins: all-web, web-prod\n"),
        "{text}"
    );
    assert!(
        text.contains("error: rule \"web-prod\" can never match"),
        "{text}"
    );
    assert_eq!(stderr(&out), "ami-sweeper: 1 rule can never match\n");
    let ok = bin()
        .args([
            "lint",
            "--policy",
            &sample("rules/policy.json"),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        v["rules"],
        serde_json::json!(["legacy", "golden", "ci", "nightly"])
    );
    assert_eq!(
        v["findings"],
        serde_json::json!([{"kind": "incomparable_retention", "rule": "nightly", "other": "golden"}])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_policy_pages_exceptions_are_what_the_exceptions_sample_prints() {
    let out = plan_sample("exceptions", "table");
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(root().join("docs/policy.md")).unwrap();
    assert!(
        page.contains(&stdout(&out)),
        "docs/policy.md's samples/exceptions plan is stale; it prints:\n{}",
        stdout(&out)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&plan_sample("exceptions", "json").stdout).unwrap();
    let by_name = |name: &str| {
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap()
    };
    let tagged = by_name("app-20260801");
    assert_eq!(tagged["reasons"], serde_json::json!(["excepted"]));
    assert_eq!(
        tagged["exception"],
        serde_json::json!({"source": "tag", "until": "2026-12-02T00:00:00Z",
                           "reason": "CHG-91: team web migrates off it"})
    );
    assert_eq!(
        by_name("app-20260601")["reasons"][0],
        "expired",
        "lapsed tag"
    );
    assert_eq!(
        by_name("app-20250615")["exception"]["source"],
        "exceptions[1]"
    );
    let unreadable = by_name("app-20260701");
    assert_eq!(unreadable["exception"]["until"], serde_json::Value::Null);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);
    assert_eq!(v["summary"]["by_reason"]["excepted"], 5);
}

#[test]
fn a_policy_exception_beyond_the_horizon_is_refused_by_plan_and_reported_by_lint() {
    let dir = std::env::temp_dir().join(format!("ami-sweeper-exc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"retention": {"min_age_days": 30}, "limits": {"max_exception_days": 30},
            "exceptions": [
              {"image_ids": ["ami-0000000000000e003"], "until": "2026-11-01", "reason": "old"},
              {"tags": {"release": "*"}, "until": "2027-01-31", "reason": "too far"}]}"#,
    )
    .unwrap();
    let images = sample("exceptions/images.json");
    let plan = |now: &str| {
        bin()
            .args(["plan", "--policy"])
            .arg(&policy)
            .args(["--images", &images, "--now", now, "--format", "json"])
            .output()
            .unwrap()
    };
    let refused = plan(crate::NOW);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(refused.stdout.is_empty());
    assert!(
        stderr(&refused).starts_with(
            "ami-sweeper: exceptions[1].until: \"2027-01-31\" is more than \
             limits.max_exception_days (30) after the run's instant 2026-11-26T00:00:00Z"
        ),
        "{}",
        stderr(&refused)
    );
    // The horizon counts from the run's instant: a week later the entry is within it.
    assert!(plan("2027-01-02T00:00:00Z").status.success());
    let lint = |now: &str| {
        bin()
            .args(["lint", "--policy"])
            .arg(&policy)
            .args(["--now", now, "--format", "json"])
            .output()
            .unwrap()
    };
    let out = lint(crate::NOW);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["findings"],
        serde_json::json!([
            {"kind": "exception_lapsed", "exception": 0, "until": "2026-11-01"},
            {"kind": "exception_beyond_horizon", "exception": 1, "max_days": 30}
        ])
    );
    assert_eq!(
        stderr(&out),
        "ami-sweeper: 1 exception beyond limits.max_exception_days\n"
    );
    assert!(lint("2027-01-02T00:00:00Z").status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_as_markdown_is_a_comment_with_the_tables_folds() {
    let out = plan_sample("rules", "markdown");
    assert!(out.status.success(), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(
        md.starts_with("### ami-sweeper plan at 2026-11-26T00:00:00Z\n"),
        "{md}"
    );
    // One <details> block per group, each group's folded runs one row each.
    let table = stdout(&plan_sample("rules", "table"));
    let groups = table.lines().filter(|l| l.contains(" images: ")).count();
    assert_eq!(md.matches("<details><summary>").count(), groups, "{md}");
    assert!(md.contains("| 15 images | | DEREG | expired | nightly-api-20261026 to nightly-api-20260928; saves $6.00/month |"), "{md}");
    assert!(md.len() <= 65_536);
    // Not for the commands whose output has no markdown form.
    let lint = bin()
        .args([
            "lint",
            "--policy",
            &sample("rules/policy.json"),
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    assert_eq!(lint.status.code(), Some(2), "{}", stderr(&lint));
}

#[test]
fn an_environment_value_this_build_cannot_read_stops_it_at_start_up() {
    for (var, value) in [
        ("AMI_SWEEPER_DRY_RUN", "yes"),
        ("AMI_SWEEPER_DRY_RUN", "1"),
        ("AMI_SWEEPER_FUNCTION", "Worker"),
    ] {
        let out = bin().env(var, value).arg("schema").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value}: {}",
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "{var}={value}: printed {}",
            stdout(&out)
        );
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("ami-sweeper: {var}={value:?}: ")) && err.lines().count() == 1,
            "{err}"
        );
    }
    let out = bin()
        .env("AMI_SWEEPER_DRY_RUN", "FALSE")
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The AWS CLI prints a JSON template as an object (`TemplateBody: {…}`), a YAML one as a
/// string: the recorded `get-template` output, verbatim, names no image and the image
/// goes; with an id in its `Mappings`, the stack keeps that image.
#[test]
fn a_recorded_template_is_read_as_the_cli_prints_it() {
    use ami_sweeper::adapters::awscli::{load_inventory, InventoryFiles};
    let recorded_template: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(recorded("aws-cli-get-template.json")).unwrap(),
    )
    .unwrap();
    let policy = ami_sweeper::Policy::from_json(
        r#"{"retention": {"min_age_days": 30}, "usage": {"cloudformation_templates": true}}"#,
    )
    .unwrap();
    let stacks = variant(
        "stacks-myteststack.json",
        br#"{"Stacks": [{"StackName": "myteststack", "StackStatus": "CREATE_COMPLETE"}]}"#.to_vec(),
    );
    let decide = |template: &serde_json::Value, dir: &str| -> String {
        let dir = std::env::temp_dir().join(format!("ami-sweeper-{}-{dir}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("myteststack.json"), template.to_string()).unwrap();
        let files = InventoryFiles {
            images: recorded("own-images.json"),
            cloudformation_stacks: Some(stacks.clone()),
            cloudformation_templates: Some(dir),
            ..Default::default()
        };
        let inventory = load_inventory(&files, &policy.usage).unwrap();
        let now = ami_sweeper::time::parse_instant(crate::NOW).unwrap();
        let plan = ami_sweeper::plan(&policy, &inventory, now);
        let d = plan
            .decisions
            .iter()
            .find(|d| d.image_id == "ami-1a2b3c4d")
            .unwrap();
        let used: Vec<&str> = d.used_by.iter().map(|u| u.id.as_str()).collect();
        format!("{} {used:?}", d.reasons[0].as_str())
    };
    assert_eq!(decide(&recorded_template, "verbatim"), "expired []");
    let mut pinned = recorded_template.clone();
    pinned["TemplateBody"]["Mappings"] = serde_json::json!({"AMI": {"us-east-1": "ami-1a2b3c4d"}});
    assert_eq!(
        decide(&pinned, "pinned"),
        r#"in_use ["stack myteststack: template"]"#
    );
}
