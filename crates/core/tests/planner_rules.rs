//! One table of cases per decision rule, in rule order, with the boundaries.

use std::collections::BTreeMap;

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Usage, UsageKind, UsageRef};
use ami_sweeper_core::planner::{plan, Action, CleanupAction, Plan, Reason, RetainReason};

const BASE: &str = r#"{"retention": {"min_age_days": 30}}"#;

fn run(policy_json: &str, images: Vec<Image>, usage: Usage) -> Plan {
    plan(
        &policy(policy_json),
        &Inventory::new(images, usage).unwrap(),
        now(),
    )
}

fn reasons(p: &Plan) -> BTreeMap<String, Vec<Reason>> {
    p.decisions
        .iter()
        .map(|d| (d.image_id.clone(), d.reasons.clone()))
        .collect()
}

fn first(p: &Plan, id: &str) -> Reason {
    p.decisions
        .iter()
        .find(|d| d.image_id == id)
        .unwrap_or_else(|| panic!("{id} not in plan"))
        .reasons[0]
}

fn check(policy_json: &str, images: Vec<Image>, usage: Usage, expected: &[(&str, Reason)]) {
    let p = run(policy_json, images, usage);
    for (id, want) in expected {
        assert_eq!(first(&p, id), *want, "{id}: {:?}", reasons(&p)[*id]);
        let d = p.decisions.iter().find(|d| d.image_id == *id).unwrap();
        let action = if *want == Reason::Expired {
            Action::Deregister
        } else {
            Action::Keep
        };
        assert_eq!(d.action, action, "{id}");
    }
}

#[test]
fn rule1_selection_by_name_globs_and_required_tags() {
    let p = r#"{"selection": {"names": ["web-*", "api-?-*"], "tags": {"team": "payments", "env": "*"}},
               "retention": {"min_age_days": 30}}"#;
    let pay = |b: crate::common::ImageBuilder| b.tag("team", "payments").tag("env", "prod");
    check(
        p,
        vec![
            pay(img("ami-1", "web-1", 40)).build(),
            pay(img("ami-2", "api-a-1", 40)).build(),
            pay(img("ami-3", "api-ab-1", 40)).build(),
            pay(img("ami-4", "Web-1", 40)).build(),
            img("ami-5", "web-2", 40).tag("team", "payments").build(),
            img("ami-6", "web-3", 40)
                .tag("team", "search")
                .tag("env", "prod")
                .build(),
            img("ami-7", "web-4", 40)
                .tag("team", "payments")
                .tag("env", "")
                .build(),
            pay(img("ami-8", "", 40)).build(),
        ],
        Usage::new(),
        &[
            ("ami-1", Reason::Expired),
            ("ami-2", Reason::Expired),
            ("ami-3", Reason::NotSelected),
            ("ami-4", Reason::NotSelected),
            ("ami-5", Reason::NotSelected),
            ("ami-6", Reason::NotSelected),
            ("ami-7", Reason::Expired),
            ("ami-8", Reason::NotSelected),
        ],
    );
    // Empty `names` selects every name, including the empty one.
    check(
        BASE,
        vec![
            img("ami-9", "", 40).build(),
            img("ami-10", "anything", 40).build(),
        ],
        Usage::new(),
        &[("ami-9", Reason::Expired), ("ami-10", Reason::Expired)],
    );
}

#[test]
fn rule2_exclude_tags_need_the_key_with_a_matching_value() {
    let p = r#"{"selection": {"exclude_tags": {"retain": "*", "stage": "gold*"}},
               "retention": {"min_age_days": 30}}"#;
    check(
        p,
        vec![
            img("ami-1", "a", 40).tag("retain", "").build(),
            img("ami-2", "b", 40).tag("stage", "golden").build(),
            img("ami-3", "c", 40).tag("stage", "silver").build(),
            img("ami-4", "d", 40).tag("Retain", "yes").build(),
            img("ami-5", "e", 40).build(),
        ],
        Usage::new(),
        &[
            ("ami-1", Reason::ExcludedByTag),
            ("ami-2", Reason::ExcludedByTag),
            ("ami-3", Reason::Expired),
            ("ami-4", Reason::Expired),
            ("ami-5", Reason::Expired),
        ],
    );
    // Selection comes first: an unselected, excluded image reports not_selected.
    let p2 = r#"{"selection": {"names": ["web-*"], "exclude_tags": {"retain": "*"}},
                "retention": {"min_age_days": 30}}"#;
    check(
        p2,
        vec![img("ami-6", "api-1", 40).tag("retain", "x").build()],
        Usage::new(),
        &[("ami-6", Reason::NotSelected)],
    );
}

#[test]
fn rule3_backup_managed_by_tag_key_or_name_prefix() {
    check(
        BASE,
        vec![
            img("ami-1", "web-1", 400)
                .tag("aws:backup:source-resource", "")
                .build(),
            img("ami-2", "AwsBackup_web-1", 400).build(),
            img("ami-3", "awsbackup_web-1", 400).build(),
            img("ami-4", "web-AwsBackup_", 400).build(),
        ],
        Usage::new(),
        &[
            ("ami-1", Reason::BackupManaged),
            ("ami-2", Reason::BackupManaged),
            ("ami-3", Reason::Expired),
            ("ami-4", Reason::Expired),
        ],
    );
}

#[test]
fn rule4_only_settled_states_can_go() {
    let states = [
        ("available", Reason::Expired),
        ("disabled", Reason::Expired),
        ("failed", Reason::Expired),
        ("error", Reason::Expired),
        ("pending", Reason::Unsettled),
        ("invalid", Reason::Unsettled),
        ("deregistered", Reason::Unsettled),
        ("transient", Reason::Unsettled),
        ("some-new-state", Reason::Unsettled),
    ];
    let images = states
        .iter()
        .enumerate()
        .map(|(i, (s, _))| img(&format!("ami-{i}"), "x", 400).state(s).build())
        .collect();
    let expected: Vec<(String, Reason)> = states
        .iter()
        .enumerate()
        .map(|(i, (_, r))| (format!("ami-{i}"), *r))
        .collect();
    let expected: Vec<(&str, Reason)> = expected.iter().map(|(i, r)| (i.as_str(), *r)).collect();
    check(BASE, images, Usage::new(), &expected);
}

#[test]
fn rule5_keep_count_ranks_available_images_per_group_newest_first() {
    let p = r#"{"retention": {"min_age_days": 0, "keep_count": 2,
                              "group_by": {"tags": ["app"], "name_regex": "^(.*)-[0-9]+$"}}}"#;
    let t = ago(50, 0);
    check(
        p,
        vec![
            // web: ami-b and ami-a tie on creation date; the lower id ranks first.
            img("ami-c", "web-3", 10).tag("app", "w").build(),
            img("ami-b", "web-2", 0).created(t).tag("app", "w").build(),
            img("ami-a", "web-1", 0).created(t).tag("app", "w").build(),
            // A newer disabled image does not take a keep slot; a newer pending one neither.
            img("ami-d", "web-4", 5)
                .tag("app", "w")
                .state("disabled")
                .build(),
            img("ami-e", "web-5", 1)
                .tag("app", "w")
                .state("pending")
                .build(),
            // Same name lineage, other app tag: its own group.
            img("ami-f", "web-9", 100).tag("app", "other").build(),
            // Missing tag counts as the empty string; a regex miss keys on the whole name.
            img("ami-g", "web-latest", 100).build(),
            img("ami-h", "web-latest", 200).build(),
            img("ami-i", "web-latest", 300).build(),
            // Excluded images do not count towards the group.
            img("ami-j", "web-8", 1)
                .tag("app", "w")
                .tag("aws:backup:source-resource", "x")
                .build(),
        ],
        Usage::new(),
        &[
            ("ami-c", Reason::WithinKeepCount),
            ("ami-a", Reason::WithinKeepCount),
            ("ami-b", Reason::Expired),
            ("ami-d", Reason::Expired),
            ("ami-e", Reason::Unsettled),
            ("ami-f", Reason::WithinKeepCount),
            ("ami-g", Reason::WithinKeepCount),
            ("ami-h", Reason::WithinKeepCount),
            ("ami-i", Reason::Expired),
            ("ami-j", Reason::BackupManaged),
        ],
    );
    let plan = run(
        p,
        vec![
            img("ami-1", "web-1", 1).tag("app", "w").build(),
            img("ami-2", "web-latest", 1).build(),
        ],
        Usage::new(),
    );
    let groups: BTreeMap<_, _> = plan
        .decisions
        .iter()
        .map(|d| (d.image_id.as_str(), d.group.as_str()))
        .collect();
    assert_eq!(groups["ami-1"], "w/web");
    assert_eq!(groups["ami-2"], "/web-latest");
}

#[test]
fn rule5_without_group_by_everything_is_one_group() {
    let p = r#"{"retention": {"min_age_days": 0, "keep_count": 1}}"#;
    let plan = run(
        p,
        vec![
            img("ami-1", "web-1", 3).build(),
            img("ami-2", "api-1", 2).build(),
        ],
        Usage::new(),
    );
    assert_eq!(first(&plan, "ami-2"), Reason::WithinKeepCount);
    assert_eq!(first(&plan, "ami-1"), Reason::Expired);
    assert!(plan.decisions.iter().all(|d| d.group == "*"));
}

#[test]
fn rule6_min_age_boundary_is_inclusive_of_expiry() {
    check(
        BASE,
        vec![
            img("ami-exact", "a", 30).build(),
            img("ami-second-short", "b", 0)
                .created(ago(30, 0) + chrono::TimeDelta::seconds(1))
                .build(),
            img("ami-older", "c", 30).created(ago(30, 1)).build(),
            img("ami-future", "d", 0)
                .created(now() + chrono::TimeDelta::days(1))
                .build(),
        ],
        Usage::new(),
        &[
            ("ami-exact", Reason::Expired),
            ("ami-second-short", Reason::TooYoung),
            ("ami-older", Reason::Expired),
            ("ami-future", Reason::TooYoung),
        ],
    );
    // A min age beyond the calendar keeps everything instead of overflowing.
    check(
        r#"{"retention": {"min_age_days": 18446744073709551615}}"#,
        vec![img("ami-1", "a", 100_000).build()],
        Usage::new(),
        &[("ami-1", Reason::TooYoung)],
    );
    // Zero days: everything not in the future is old enough.
    check(
        r#"{"retention": {"min_age_days": 0}, "acknowledge": ["no_minimum_age"]}"#,
        vec![img("ami-1", "a", 0).build()],
        Usage::new(),
        &[("ami-1", Reason::Expired)],
    );
}

#[test]
fn rule7_deregistration_protection_and_cooldown_instants() {
    let in_an_hour = (now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let an_hour_ago = (now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let exactly_now = now().to_rfc3339();
    check(
        BASE,
        vec![
            img("ami-1", "a", 40).protection("enabled").build(),
            img("ami-2", "b", 40)
                .protection("enabled-with-cooldown")
                .build(),
            img("ami-3", "c", 40)
                .protection(&format!("disabled after {in_an_hour}"))
                .build(),
            img("ami-4", "d", 40)
                .protection(&format!("disabled after {an_hour_ago}"))
                .build(),
            img("ami-5", "e", 40)
                .protection(&format!("disabled after {exactly_now}"))
                .build(),
            img("ami-6", "f", 40).protection("disabled").build(),
            img("ami-7", "g", 40).build(),
            img("ami-8", "h", 40)
                .protection("disabled after soon")
                .build(),
            img("ami-9", "i", 40).protection("locked").build(),
        ],
        Usage::new(),
        &[
            ("ami-1", Reason::DeregistrationProtected),
            ("ami-2", Reason::DeregistrationProtected),
            ("ami-3", Reason::DeregistrationProtected),
            ("ami-4", Reason::Expired),
            ("ami-5", Reason::Expired),
            ("ami-6", Reason::Expired),
            ("ami-7", Reason::Expired),
            ("ami-8", Reason::DeregistrationProtected),
            ("ami-9", Reason::DeregistrationProtected),
        ],
    );
}

#[test]
fn rule8_in_use_by_any_kind_of_user_unless_allowed() {
    let mut usage = Usage::new();
    for (image, kind, id) in [
        ("ami-1", UsageKind::Instance, "i-1 (stopped)"),
        ("ami-2", UsageKind::LaunchTemplateVersion, "lt-1 v1"),
        ("ami-3", UsageKind::LaunchConfiguration, "lc"),
    ] {
        usage.add(
            image,
            UsageRef {
                kind,
                id: id.into(),
            },
        );
    }
    let images = || {
        vec![
            img("ami-1", "a", 40).build(),
            img("ami-2", "b", 40).build(),
            img("ami-3", "c", 40).build(),
            img("ami-4", "d", 40).build(),
        ]
    };
    check(
        BASE,
        images(),
        usage.clone(),
        &[
            ("ami-1", Reason::InUse),
            ("ami-2", Reason::InUse),
            ("ami-3", Reason::InUse),
            ("ami-4", Reason::Expired),
        ],
    );
    let plan = run(BASE, images(), usage.clone());
    let d = plan
        .decisions
        .iter()
        .find(|d| d.image_id == "ami-1")
        .unwrap();
    assert_eq!(d.used_by[0].id, "i-1 (stopped)");
    check(
        r#"{"retention": {"min_age_days": 30}, "protection": {"skip_in_use": false}}"#,
        images(),
        usage,
        &[("ami-1", Reason::Expired), ("ami-3", Reason::Expired)],
    );
}

#[test]
fn rule9_shared_images_unless_allowed() {
    let images = || {
        vec![
            img("ami-1", "a", 40).public().build(),
            img("ami-2", "b", 40).shared_with("111122223333").build(),
            img("ami-3", "c", 40).build(),
        ]
    };
    check(
        BASE,
        images(),
        Usage::new(),
        &[
            ("ami-1", Reason::Shared),
            ("ami-2", Reason::Shared),
            ("ami-3", Reason::Expired),
        ],
    );
    check(
        r#"{"retention": {"min_age_days": 30}, "protection": {"skip_shared": false}}"#,
        images(),
        Usage::new(),
        &[("ami-1", Reason::Expired), ("ami-2", Reason::Expired)],
    );
}

#[test]
fn rule10_recently_launched_boundary() {
    let p = r#"{"retention": {"min_age_days": 30, "launched_within_days": 14}}"#;
    check(
        p,
        vec![
            img("ami-1", "a", 40).launched(ago(13, 0)).build(),
            img("ami-2", "b", 40).launched(ago(14, 0)).build(),
            img("ami-3", "c", 40).launched(ago(14, -1)).build(),
            img("ami-4", "d", 40).launched(ago(200, 0)).build(),
            img("ami-5", "e", 40).build(),
        ],
        Usage::new(),
        &[
            ("ami-1", Reason::RecentlyLaunched),
            ("ami-2", Reason::Expired),
            ("ami-3", Reason::RecentlyLaunched),
            ("ami-4", Reason::Expired),
            ("ami-5", Reason::Expired),
        ],
    );
    // Without launched_within_days, launch times do not matter.
    check(
        BASE,
        vec![img("ami-1", "a", 40).launched(ago(0, 0)).build()],
        Usage::new(),
        &[("ami-1", Reason::Expired)],
    );
}

#[test]
fn rule11_max_deregistrations_takes_the_oldest_first() {
    let p = r#"{"retention": {"min_age_days": 30}, "limits": {"max_deregistrations": 2}}"#;
    let t = ago(100, 0);
    check(
        p,
        vec![
            img("ami-4", "d", 40).build(),
            img("ami-3", "c", 50).build(),
            img("ami-2", "b", 0).created(t).build(),
            img("ami-1", "a", 0).created(t).build(),
            img("ami-0", "young", 1).build(),
        ],
        Usage::new(),
        &[
            ("ami-1", Reason::Expired),
            ("ami-2", Reason::Expired),
            ("ami-3", Reason::OverLimit),
            ("ami-4", Reason::OverLimit),
            ("ami-0", Reason::TooYoung),
        ],
    );
    check(
        r#"{"retention": {"min_age_days": 30}, "limits": {"max_deregistrations": 0}}"#,
        vec![img("ami-1", "a", 40).build()],
        Usage::new(),
        &[("ami-1", Reason::OverLimit)],
    );
}

#[test]
fn first_reason_wins_and_other_keep_reasons_follow_in_rule_order() {
    let mut usage = Usage::new();
    usage.add(
        "ami-1",
        UsageRef {
            kind: UsageKind::Instance,
            id: "i-1 (running)".into(),
        },
    );
    let p = r#"{"retention": {"min_age_days": 30, "keep_count": 1, "launched_within_days": 5}}"#;
    let plan = run(
        p,
        vec![img("ami-1", "a", 1)
            .protection("enabled")
            .public()
            .launched(ago(0, 0))
            .build()],
        usage,
    );
    assert_eq!(
        plan.decisions[0].reasons,
        vec![
            Reason::WithinKeepCount,
            Reason::TooYoung,
            Reason::DeregistrationProtected,
            Reason::InUse,
            Reason::Shared,
            Reason::RecentlyLaunched
        ]
    );
}

#[test]
fn snapshots_shared_with_a_kept_image_are_retained() {
    let p = r#"{"selection": {"names": ["old-*"]}, "retention": {"min_age_days": 30}}"#;
    let plan = run(
        p,
        vec![
            img("ami-1", "old-1", 40)
                .snap("snap-own", 8)
                .snap("snap-shared-kept", 20)
                .snap("snap-shared-gone", 30)
                .build(),
            img("ami-2", "keep-me", 40)
                .snap("snap-shared-kept", 20)
                .build(),
            img("ami-3", "old-2", 50)
                .snap("snap-shared-gone", 30)
                .build(),
        ],
        Usage::new(),
    );
    let d = plan
        .decisions
        .iter()
        .find(|d| d.image_id == "ami-1")
        .unwrap();
    let by_id: BTreeMap<_, _> = d
        .snapshots
        .iter()
        .map(|s| (s.snapshot_id.as_str(), s))
        .collect();
    assert_eq!(by_id["snap-own"].action, CleanupAction::Delete);
    assert_eq!(by_id["snap-shared-kept"].action, CleanupAction::Retain);
    assert_eq!(
        by_id["snap-shared-kept"].reason,
        Some(RetainReason::UsedByOtherImage)
    );
    assert_eq!(by_id["snap-shared-kept"].shared_with, vec!["ami-2"]);
    assert_eq!(by_id["snap-shared-gone"].action, CleanupAction::Delete);
    assert_eq!(by_id["snap-shared-gone"].shared_with, vec!["ami-3"]);
    // Kept images list no storage.
    let kept = plan
        .decisions
        .iter()
        .find(|d| d.image_id == "ami-2")
        .unwrap();
    assert!(kept.snapshots.is_empty());
    assert_eq!(plan.summary.snapshots_to_delete, 2);
    assert_eq!(plan.summary.snapshot_gib_to_delete, 38);
    assert_eq!(plan.summary.snapshots_retained, 1);
}

#[test]
fn a_snapshot_kept_by_a_disabled_or_unsettled_image_is_retained() {
    let plan = run(
        r#"{"selection": {"names": ["old-*"]}, "retention": {"min_age_days": 30}}"#,
        vec![
            img("ami-1", "old-1", 40).snap("snap-1", 8).build(),
            img("ami-2", "old-2", 40)
                .snap("snap-1", 8)
                .state("pending")
                .build(),
        ],
        Usage::new(),
    );
    let d = plan
        .decisions
        .iter()
        .find(|d| d.image_id == "ami-1")
        .unwrap();
    assert_eq!(d.snapshots[0].action, CleanupAction::Retain);
}

#[test]
fn cleanup_switches_retain_storage() {
    let images = || {
        vec![
            img("ami-1", "a", 40).snap("snap-1", 8).build(),
            img("ami-2", "b", 40)
                .instance_store("bucket/web/b.manifest.xml")
                .build(),
        ]
    };
    let plan = run(
        r#"{"retention": {"min_age_days": 30}, "cleanup": {"snapshots": false, "bundles": false}}"#,
        images(),
        Usage::new(),
    );
    assert_eq!(plan.summary.deregister, 2);
    assert_eq!(plan.summary.snapshots_to_delete, 0);
    assert_eq!(plan.summary.bundles_to_delete, 0);
    for d in &plan.decisions {
        for s in &d.snapshots {
            assert_eq!(s.reason, Some(RetainReason::CleanupDisabled));
        }
        if let Some(b) = &d.bundle {
            assert_eq!(b.reason, Some(RetainReason::CleanupDisabled));
        }
    }
    let plan = run(BASE, images(), Usage::new());
    let b = plan
        .decisions
        .iter()
        .find_map(|d| d.bundle.as_ref())
        .unwrap();
    assert_eq!(b.action, CleanupAction::Delete);
    assert_eq!(b.bucket.as_deref(), Some("bucket"));
    assert_eq!(b.manifest_key.as_deref(), Some("web/b.manifest.xml"));
    assert_eq!(plan.summary.bundles_to_delete, 1);
}

#[test]
fn bundles_shared_or_unparseable_are_retained() {
    let plan = run(
        r#"{"selection": {"names": ["old-*"]}, "retention": {"min_age_days": 30}}"#,
        vec![
            img("ami-1", "old-1", 40)
                .instance_store("bucket/shared.manifest.xml")
                .build(),
            img("ami-2", "keep", 40)
                .instance_store("bucket/shared.manifest.xml")
                .build(),
            img("ami-3", "old-3", 40).instance_store("no-slash").build(),
            img("ami-4", "old-4", 40)
                .instance_store("bucket/not-a-manifest.tar")
                .build(),
        ],
        Usage::new(),
    );
    let bundle = |id: &str| {
        plan.decisions
            .iter()
            .find(|d| d.image_id == id)
            .unwrap()
            .bundle
            .clone()
            .unwrap()
    };
    assert_eq!(bundle("ami-1").reason, Some(RetainReason::UsedByOtherImage));
    assert_eq!(
        bundle("ami-3").reason,
        Some(RetainReason::UnrecognisedLocation)
    );
    assert_eq!(
        bundle("ami-4").reason,
        Some(RetainReason::UnrecognisedLocation)
    );
    assert_eq!(plan.summary.bundles_to_delete, 0);
}

#[test]
fn summary_counts_every_decision_once() {
    let plan = run(
        r#"{"retention": {"min_age_days": 30, "keep_count": 1}}"#,
        vec![
            img("ami-1", "a", 1).build(),
            img("ami-2", "b", 40).build(),
            img("ami-3", "c", 50).state("pending").build(),
        ],
        Usage::new(),
    );
    assert_eq!(plan.summary.keep, 2);
    assert_eq!(plan.summary.deregister, 1);
    assert_eq!(plan.summary.by_reason[&Reason::WithinKeepCount], 1);
    assert_eq!(plan.summary.by_reason[&Reason::Unsettled], 1);
    assert_eq!(plan.summary.by_reason[&Reason::Expired], 1);
    assert_eq!(plan.condemned()[0].image_id, "ami-2");
}

#[test]
fn duplicate_image_ids_are_rejected() {
    let err = Inventory::new(
        vec![img("ami-1", "a", 1).build(), img("ami-1", "b", 2).build()],
        Usage::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "image ami-1 appears more than once in the inventory"
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let plan = run(
        r#"{"retention": {"min_age_days": 30, "keep_count": 1, "group_by": {"name_regex": "^(.*)-[0-9]+$"}}}"#,
        vec![
            img("ami-1", "web-1", 40).snap("snap-1", 8).build(),
            img("ami-2", "web-2", 35).build(),
        ],
        Usage::new(),
    );
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["now"], "2026-11-26T00:00:00Z");
    assert_eq!(v["summary"]["deregister"], 1);
    assert_eq!(v["summary"]["keep"], 1);
    let d0 = &v["decisions"][0];
    assert_eq!(d0["image_id"], "ami-2");
    assert_eq!(d0["group"], "web");
    assert_eq!(d0["action"], "keep");
    assert_eq!(d0["reasons"], serde_json::json!(["within_keep_count"]));
    let d1 = &v["decisions"][1];
    assert_eq!(d1["action"], "deregister");
    assert_eq!(d1["reasons"], serde_json::json!(["expired"]));
    assert_eq!(d1["snapshots"][0]["snapshot_id"], "snap-1");
    assert_eq!(d1["snapshots"][0]["action"], "delete");
}

#[test]
fn snapshot_sizes_saturate_instead_of_overflowing() {
    let p = run(
        r#"{"retention": {"min_age_days": 30}}"#,
        vec![
            img("ami-1", "a", 100).snap("snap-1", u64::MAX - 1).build(),
            img("ami-2", "b", 100).snap("snap-2", u64::MAX - 1).build(),
        ],
        Usage::new(),
    );
    assert_eq!(p.summary.snapshots_to_delete, 2);
    assert_eq!(p.summary.snapshot_gib_to_delete, u64::MAX);
}

#[test]
fn only_bucket_slash_key_locations_plan_a_bundle_deletion_and_others_warn() {
    let p = run(
        r#"{"retention": {"min_age_days": 30}}"#,
        vec![
            img("ami-1", "a", 100)
                .instance_store("s3://bundles/a.manifest.xml")
                .build(),
            img("ami-2", "b", 100)
                .instance_store("bundles/b.manifest.xml")
                .build(),
        ],
        Usage::new(),
    );
    let bundle = |id: &str| {
        p.decisions
            .iter()
            .find(|d| d.image_id == id)
            .unwrap()
            .bundle
            .clone()
            .unwrap()
    };
    assert_eq!(
        bundle("ami-1").reason,
        Some(RetainReason::UnrecognisedLocation)
    );
    assert_eq!(bundle("ami-2").action, CleanupAction::Delete);
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("s3://bundles/a.manifest.xml"));
}

#[test]
fn a_region_listed_twice_is_swept_once() {
    let p = policy(
        r#"{"regions": ["eu-west-1", "us-east-1", "eu-west-1"], "retention": {"min_age_days": 30}}"#,
    );
    assert_eq!(p.regions.unwrap(), ["eu-west-1", "us-east-1"]);
}

/// Template `lt-1` (`web`): v1 `$Default` → ami-d, v2 named by a group → ami-n,
/// v3 stale → ami-s, v4 `$Latest` → ami-l; an instance also uses ami-i.
fn template_usage() -> Usage {
    use ami_sweeper_core::model::TemplateVersion;
    let mut u = Usage::new();
    for (v, image, default) in [
        (1, "ami-d", true),
        (2, "ami-n", false),
        (3, "ami-s", false),
        (4, "ami-l", false),
    ] {
        u.add_template_version(
            image,
            TemplateVersion {
                template_id: "lt-1".into(),
                template_name: Some("web".into()),
                version: v,
                is_default: default,
            },
        );
    }
    // Groups name templates by id or by name; `$Latest` adds nothing (it always counts).
    u.add_template_reference("web", Some("2"));
    u.add_template_reference("lt-1", Some("$Latest"));
    u.add(
        "ami-i",
        UsageRef {
            kind: UsageKind::Instance,
            id: "i-1 (running)".into(),
        },
    );
    u
}

#[test]
fn rule7_launch_template_versions_count_as_the_policy_says() {
    let images = || {
        ["ami-d", "ami-n", "ami-s", "ami-l", "ami-i", "ami-x"]
            .iter()
            .map(|id| img(id, id, 100).build())
            .collect::<Vec<_>>()
    };
    let with = |which: &str| {
        format!(
            r#"{{"retention": {{"min_age_days": 30}}, "usage": {{"launch_template_versions": "{which}"}}}}"#
        )
    };
    use Reason::{Expired, InUse};
    check(
        &with("all"),
        images(),
        template_usage(),
        &[
            ("ami-d", InUse),
            ("ami-n", InUse),
            ("ami-s", InUse),
            ("ami-l", InUse),
            ("ami-i", InUse),
            ("ami-x", Expired),
        ],
    );
    check(
        &with("referenced"),
        images(),
        template_usage(),
        &[
            ("ami-d", InUse),
            ("ami-n", InUse),
            ("ami-s", Expired),
            ("ami-l", InUse),
            ("ami-i", InUse),
            ("ami-x", Expired),
        ],
    );
    check(
        &with("default_and_latest"),
        images(),
        template_usage(),
        &[
            ("ami-d", InUse),
            ("ami-n", Expired),
            ("ami-s", Expired),
            ("ami-l", InUse),
            ("ami-i", InUse),
            ("ami-x", Expired),
        ],
    );
    // Under `all`, the plan names what a narrower choice would free.
    let p = run(&with("all"), images(), template_usage());
    assert_eq!(p.summary.kept_only_by_stale_versions, 2);
    let d = p.decisions.iter().find(|d| d.image_id == "ami-s").unwrap();
    assert_eq!(d.stale_versions[0].id, "lt-1 (web) v3");
    // Under a narrower choice the uncounted version is listed, not among the users.
    let p = run(&with("default_and_latest"), images(), template_usage());
    let d = p.decisions.iter().find(|d| d.image_id == "ami-n").unwrap();
    assert!(d.used_by.is_empty());
    assert_eq!(d.stale_versions[0].id, "lt-1 (web) v2");
}

#[test]
fn a_snapshot_shared_by_images_entering_the_bin_waits_for_the_longest_retention() {
    use ami_sweeper_core::recycle_bin::{BinResource, BinRule, BinRules, SnapshotWait, TagMatch};
    let rule = |days, tags: Vec<TagMatch>| BinRule {
        id: format!("r-{days}"),
        resource: BinResource::Image,
        retention_days: days,
        resource_tags: tags,
        exclude_tags: Vec::new(),
        locked: false,
    };
    let images = vec![
        img("ami-a", "a", 100)
            .tag("app", "web")
            .snap("snap-a", 8)
            .snap("snap-s", 8)
            .build(),
        img("ami-b", "b", 100).snap("snap-s", 8).build(),
        img("ami-c", "c", 100)
            .tag("nobin", "1")
            .snap("snap-c", 8)
            .build(),
    ];
    let mut inv = Inventory::new(images, Usage::new()).unwrap();
    inv.recycle_bin = BinRules(vec![
        rule(7, Vec::new()),
        rule(
            30,
            vec![TagMatch {
                key: "app".into(),
                value: Some("web".into()),
            }],
        ),
    ]);
    inv.recycle_bin.0[0].exclude_tags = vec![TagMatch {
        key: "nobin".into(),
        value: None,
    }];
    let p = plan(
        &policy(r#"{"retention": {"min_age_days": 30}}"#),
        &inv,
        now(),
    );
    let d = |id: &str| p.decisions.iter().find(|d| d.image_id == id).unwrap();
    let until = |days| ami_sweeper_core::time::days_after(now(), days);
    assert_eq!(
        d("ami-a").recycle_bin.as_ref().unwrap().restorable_until,
        until(30)
    );
    assert_eq!(
        d("ami-b").recycle_bin.as_ref().unwrap().restorable_until,
        until(7)
    );
    assert_eq!(
        d("ami-b").recycle_bin.as_ref().unwrap().snapshots,
        SnapshotWait::Deferred
    );
    for image in ["ami-a", "ami-b"] {
        let s = d(image)
            .snapshots
            .iter()
            .find(|s| s.snapshot_id == "snap-s")
            .unwrap();
        assert_eq!(s.action, CleanupAction::Retain);
        assert_eq!(
            s.delete_after,
            Some(until(30)),
            "{image}: the longest of the two"
        );
    }
    // Excluded from every rule: it does not enter the bin, its snapshot goes at once.
    assert!(d("ami-c").recycle_bin.is_none());
    assert_eq!(d("ami-c").snapshots[0].action, CleanupAction::Delete);
    assert_eq!(
        p.summary.snapshots_deferred, 2,
        "snap-a and snap-s, each once"
    );
}

#[test]
fn rule13_retiring_images_go_through_their_stages_and_a_disabled_one_in_use_is_enabled() {
    use ami_sweeper_core::retire::{DEPRECATED_AT, DISABLED_AT};
    let staged = r#"{"retention": {"min_age_days": 30}, "retire": {"deprecate": true, "disable_for_days": 7}}"#;
    let images = vec![
        img("ami-new", "a", 100).build(),
        img("ami-dep", "b", 100)
            .tag(DEPRECATED_AT, "2026-11-25T00:00:00Z")
            .build(),
        img("ami-wait", "c", 100)
            .tag(DEPRECATED_AT, "2026-11-10T00:00:00Z")
            .tag(DISABLED_AT, "2026-11-20T00:00:00Z")
            .state("disabled")
            .build(),
        img("ami-due", "d", 100)
            .tag(DEPRECATED_AT, "2026-11-10T00:00:00Z")
            .tag(DISABLED_AT, "2026-11-19T00:00:00Z")
            .state("disabled")
            .build(),
        img("ami-back", "e", 100)
            .tag(DEPRECATED_AT, "2026-11-10T00:00:00Z")
            .tag(DISABLED_AT, "2026-11-20T00:00:00Z")
            .state("disabled")
            .build(),
    ];
    let mut usage = Usage::new();
    usage.add(
        "ami-back",
        UsageRef {
            kind: UsageKind::Instance,
            id: "i-1 (stopped)".into(),
        },
    );
    let p = run(staged, images, usage);
    let d = |id: &str| p.decisions.iter().find(|d| d.image_id == id).unwrap();
    assert_eq!(
        (d("ami-new").action, d("ami-new").reason()),
        (Action::Deprecate, Reason::Retiring)
    );
    assert_eq!(
        (d("ami-dep").action, d("ami-dep").reason()),
        (Action::Disable, Reason::Retiring)
    );
    assert_eq!(
        d("ami-dep").eligible_at,
        Some(ami_sweeper_core::time::days_after(now(), 7))
    );
    assert_eq!(
        (d("ami-wait").action, d("ami-wait").reason()),
        (Action::Keep, Reason::Retiring)
    );
    assert_eq!(
        d("ami-wait")
            .eligible_at
            .map(ami_sweeper_core::time::format_instant)
            .as_deref(),
        Some("2026-11-27T00:00:00Z")
    );
    assert_eq!(
        (d("ami-due").action, d("ami-due").reason()),
        (Action::Deregister, Reason::Expired)
    );
    assert_eq!(
        (d("ami-back").action, d("ami-back").reason()),
        (Action::Enable, Reason::InUse)
    );
    assert_eq!(
        p.summary.deprecate + p.summary.disable + p.summary.enable,
        3
    );
    // Only deregistrations plan storage: retiring images keep theirs.
    assert!(d("ami-wait").snapshots.is_empty() && d("ami-dep").snapshots.is_empty());
}

/// Issue 20: a snapshot a launch template's default version maps (as an extra volume) is
/// kept when its image is deregistered; a version that does not count under
/// `usage.launch_template_versions` does not keep it.
#[test]
fn a_snapshot_a_launch_template_maps_survives_its_image() {
    use ami_sweeper_core::model::TemplateVersion;
    let images = vec![img("ami-a", "a", 100)
        .snap("snap-root", 8)
        .snap("snap-free", 8)
        .build()];
    let version = |v, is_default| TemplateVersion {
        template_id: "lt-1".into(),
        template_name: Some("web".into()),
        version: v,
        is_default,
    };
    let mut usage = Usage::new();
    usage.add_snapshot_version("snap-root", version(1, true));
    usage.add_snapshot_version("snap-free", version(2, false));
    usage.add_snapshot_version("snap-free", version(1, true));
    let mut old = Usage::new();
    old.add_snapshot_version("snap-free", version(1, false));
    old.add_snapshot_version("snap-root", version(2, true));
    old.add_snapshot_version("snap-other", version(3, false));
    let inv = Inventory::new(images.clone(), usage).unwrap();
    let p = plan(
        &policy(r#"{"retention": {"min_age_days": 30}}"#),
        &inv,
        now(),
    );
    let snaps = &p.decisions[0].snapshots;
    assert_eq!(p.decisions[0].action, Action::Deregister);
    for s in snaps {
        assert_eq!(s.action, CleanupAction::Retain, "{}", s.snapshot_id);
        assert_eq!(s.reason, Some(RetainReason::NamedByLaunchTemplate));
    }
    // Version 1 of snap-free is stale under default_and_latest (v3 is latest, v2 default).
    let inv = Inventory::new(images, old).unwrap();
    let p = plan(
        &policy(
            r#"{"retention": {"min_age_days": 30}, "usage": {"launch_template_versions": "default_and_latest"}}"#,
        ),
        &inv,
        now(),
    );
    let fate = |id: &str| {
        let s = p.decisions[0]
            .snapshots
            .iter()
            .find(|s| s.snapshot_id == id)
            .unwrap();
        (s.action, s.reason)
    };
    assert_eq!(fate("snap-free"), (CleanupAction::Delete, None));
    assert_eq!(
        fate("snap-root"),
        (
            CleanupAction::Retain,
            Some(RetainReason::NamedByLaunchTemplate)
        )
    );
}

/// Issue 20: a snapshot tagged `delete-after` by an image that entered the bin waits for
/// that instant when another image that shares it is condemned; an image entering the
/// bin dates each of its snapshots on its own, and tags those another image keeps too.
#[test]
fn bin_deferrals_are_per_snapshot_and_never_shortened() {
    use ami_sweeper_core::recycle_bin::{BinResource, BinRule, BinRules, TagMatch, DELETE_AFTER};
    let until = |days| ami_sweeper_core::time::days_after(now(), days);
    let images = vec![
        // No bin rule retains ami-a; snap-s carries ami-b's deferral from an earlier sweep.
        img("ami-a", "a", 100)
            .tag("nobin", "1")
            .snap("snap-s", 8)
            .build(),
        // ami-c enters the bin for 7 days; snap-long is shared with ami-d (30 days).
        img("ami-c", "c", 100)
            .snap("snap-own", 8)
            .snap("snap-long", 8)
            .snap("snap-kept", 8)
            .build(),
        img("ami-d", "d", 100)
            .tag("long", "1")
            .snap("snap-long", 8)
            .build(),
        // Stays (young): keeps snap-kept.
        img("ami-e", "e", 1).snap("snap-kept", 8).build(),
    ];
    let mut inv = Inventory::new(images, Usage::new()).unwrap();
    let rule = |days, tags: Vec<TagMatch>, exclude: Vec<TagMatch>| BinRule {
        id: format!("r-{days}"),
        resource: BinResource::Image,
        retention_days: days,
        resource_tags: tags,
        exclude_tags: exclude,
        locked: false,
    };
    let tag = |k: &str| TagMatch {
        key: k.into(),
        value: None,
    };
    inv.recycle_bin = BinRules(vec![
        rule(7, Vec::new(), vec![tag("nobin")]),
        rule(30, vec![tag("long")], Vec::new()),
    ]);
    let mut earlier = ami_sweeper_core::model::Tags::new();
    earlier.insert(DELETE_AFTER, "2026-12-20T00:00:00Z");
    inv.snapshot_tags.insert("snap-s".into(), earlier.clone());
    inv.snapshot_tags.insert("snap-kept".into(), {
        let mut t = earlier.clone();
        t.insert(DELETE_AFTER, "2027-01-20T00:00:00Z");
        t
    });
    let p = plan(
        &policy(r#"{"retention": {"min_age_days": 30}}"#),
        &inv,
        now(),
    );
    let snap = |image: &str, id: &str| {
        let d = p.decisions.iter().find(|d| d.image_id == image).unwrap();
        d.snapshots
            .iter()
            .find(|s| s.snapshot_id == id)
            .unwrap()
            .clone()
    };
    let s = snap("ami-a", "snap-s");
    assert_eq!(s.action, CleanupAction::Retain);
    assert_eq!(s.reason, Some(RetainReason::DeferredForRecycleBin));
    assert_eq!(
        s.delete_after,
        ami_sweeper_core::time::parse_instant("2026-12-20T00:00:00Z")
    );
    assert_eq!(snap("ami-c", "snap-own").delete_after, Some(until(7)));
    assert_eq!(snap("ami-c", "snap-long").delete_after, Some(until(30)));
    let kept = snap("ami-c", "snap-kept");
    assert_eq!(kept.reason, Some(RetainReason::UsedByOtherImage));
    // Tagged for ami-c's restore, but its longer date stays.
    assert_eq!(
        kept.delete_after,
        ami_sweeper_core::time::parse_instant("2027-01-20T00:00:00Z")
    );
    assert_eq!(p.summary.snapshots_deferred, 3);
}

#[test]
fn a_mapped_snapshot_missing_from_the_snapshot_listing_is_kept_its_tags_unknown() {
    let p = policy(r#"{"dry_run": false, "retention": {"min_age_days": 30}}"#);
    let mut inv = inventory(vec![img("ami-1", "web-1", 100)
        .snap("snap-1", 8)
        .snap("snap-2", 8)
        .build()]);
    inv.snapshot_tags
        .insert("snap-1".into(), ami_sweeper_core::model::Tags::new());
    let listed_fate = |inv: &ami_sweeper_core::Inventory| {
        let plan = ami_sweeper_core::plan(&p, inv, now());
        plan.decisions[0]
            .snapshots
            .iter()
            .map(|s| (s.snapshot_id.clone(), s.reason))
            .collect::<Vec<_>>()
    };
    // Offline without a listing, tags are simply not part of the question.
    assert_eq!(
        listed_fate(&inv),
        vec![("snap-1".to_string(), None), ("snap-2".to_string(), None)]
    );
    // Listed, and snap-2 is not in the listing: its tags (Backup, DLM, exclude, the
    // sweeper's own) are unknown, so it is kept.
    inv.snapshots_listed = true;
    assert_eq!(
        listed_fate(&inv),
        vec![
            ("snap-1".to_string(), None),
            ("snap-2".to_string(), Some(RetainReason::UnreadableTag))
        ]
    );
}
