//! Several retention rules in one policy: first match wins, an excluded image never
//! falls through, keep-count groups and retirement are per rule; one case per
//! `selection.match` operator, with the missing-attribute cases; the lint.

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, ImageAttributes, Usage};
use ami_sweeper_core::orphans::reconcile;
use ami_sweeper_core::planner::{plan, Action, Plan, Reason};
use ami_sweeper_core::policy::{lint, Finding};

fn run(policy_json: &str, images: Vec<Image>) -> Plan {
    plan(
        &policy(policy_json),
        &Inventory::new(images, Usage::new()).unwrap(),
        now(),
    )
}

fn decision<'a>(p: &'a Plan, id: &str) -> &'a ami_sweeper_core::planner::Decision {
    p.decisions
        .iter()
        .find(|d| d.image_id == id)
        .unwrap_or_else(|| panic!("{id} not in plan"))
}

/// The four families of the README's example, in rule order.
const FAMILIES: &str = r#"{"rules": [
    {"name": "legacy", "selection": {"names": ["legacy-*"], "exclude_tags": {"family": "*"}},
     "retention": {"min_age_days": 36500}},
    {"name": "golden", "selection": {"tags": {"family": "golden"}},
     "retention": {"min_age_days": 365, "keep_count": 10, "group_by": {"name_regex": "^(.*)-[0-9]+$"}}},
    {"name": "nightly", "selection": {"names": ["app-*"]},
     "retention": {"min_age_days": 30, "keep_count": 5}},
    {"name": "ci", "selection": {"match": {"any": [{"tag": {"key": "ci"}}, {"name": "test-*"}]}},
     "retention": {"min_age_days": 3}}
]}"#;

#[test]
fn the_first_rule_that_selects_an_image_decides_it() {
    let p = run(
        FAMILIES,
        vec![
            // Selected by nightly (name) and ci (tag): nightly comes first.
            img("ami-1", "app-1", 10).tag("ci", "yes").build(),
            // ci only: 10 days is past its 3.
            img("ami-2", "build-1", 10).tag("ci", "yes").build(),
            img("ami-3", "test-9", 2).build(),
            // golden by tag, though its name is an app build's.
            img("ami-4", "app-2", 400).tag("family", "golden").build(),
            img("ami-5", "other-1", 400).build(),
        ],
    );
    let rule = |id| decision(&p, id).rule.clone();
    assert_eq!(rule("ami-1").as_deref(), Some("nightly"));
    assert_eq!(decision(&p, "ami-1").reasons[0], Reason::WithinKeepCount);
    assert_eq!(rule("ami-2").as_deref(), Some("ci"));
    assert_eq!(decision(&p, "ami-2").action, Action::Deregister);
    assert_eq!(decision(&p, "ami-3").reasons, vec![Reason::TooYoung]);
    assert_eq!(rule("ami-4").as_deref(), Some("golden"));
    assert_eq!(decision(&p, "ami-4").reasons[0], Reason::WithinKeepCount);
    assert_eq!(rule("ami-5"), None);
    assert_eq!(decision(&p, "ami-5").reasons, vec![Reason::NotSelected]);
    assert_eq!(decision(&p, "ami-5").group, "(not selected)");
    assert_eq!(decision(&p, "ami-2").group, "ci: *");
    assert_eq!(p.summary.by_rule["ci"].images, 2);
    assert_eq!(p.summary.by_rule["ci"].deregister, 1);
    assert!(!p.summary.by_rule.contains_key("legacy"));
}

/// The wrong deletion the issue names first: an image a rule excludes must not fall
/// through to a later, laxer rule that selects it too.
#[test]
fn an_excluded_image_never_falls_through_to_a_laxer_rule() {
    let p = run(
        r#"{"rules": [
            {"name": "golden", "selection": {"names": ["golden-*"], "exclude_tags": {"retain": "*"}},
             "retention": {"min_age_days": 365}},
            {"name": "everything", "retention": {"min_age_days": 3}}
        ]}"#,
        vec![
            img("ami-1", "golden-1", 100).tag("retain", "yes").build(),
            img("ami-2", "golden-2", 100).build(),
            img("ami-3", "web-1", 100).tag("retain", "yes").build(),
        ],
    );
    let d = decision(&p, "ami-1");
    assert_eq!(
        (d.rule.as_deref(), d.reasons[0]),
        (Some("golden"), Reason::ExcludedByTag)
    );
    assert_eq!(d.action, Action::Keep);
    assert_eq!(decision(&p, "ami-2").reasons[0], Reason::TooYoung);
    // The second rule's selection has no exclude tags: its own images go.
    assert_eq!(decision(&p, "ami-3").action, Action::Deregister);
}

#[test]
fn keep_count_groups_are_per_rule() {
    // Both rules group everything into one group (`*`); each keeps its own newest two.
    let p = run(
        r#"{"rules": [
            {"name": "a", "selection": {"names": ["a-*"]}, "retention": {"min_age_days": 1, "keep_count": 2}},
            {"name": "b", "selection": {"names": ["b-*"]}, "retention": {"min_age_days": 1, "keep_count": 2}}
        ]}"#,
        (1..=4)
            .flat_map(|i| {
                [
                    img(&format!("ami-a{i}"), &format!("a-{i}"), 10 * i).build(),
                    img(&format!("ami-b{i}"), &format!("b-{i}"), 10 * i + 5).build(),
                ]
            })
            .collect(),
    );
    for id in ["ami-a1", "ami-a2", "ami-b1", "ami-b2"] {
        assert_eq!(decision(&p, id).reasons[0], Reason::WithinKeepCount, "{id}");
    }
    for id in ["ami-a3", "ami-a4", "ami-b3", "ami-b4"] {
        assert_eq!(decision(&p, id).action, Action::Deregister, "{id}");
    }
    // The table lists rule a's images, then rule b's.
    let order: Vec<&str> = p.decisions.iter().map(|d| d.group.as_str()).collect();
    assert_eq!(
        order,
        ["a: *"; 4]
            .into_iter()
            .chain(["b: *"; 4])
            .collect::<Vec<_>>()
    );
}

#[test]
fn retirement_is_per_rule() {
    let p = run(
        r#"{"rules": [
            {"name": "staged", "selection": {"names": ["s-*"]}, "retention": {"min_age_days": 1},
             "retire": {"deprecate": true}},
            {"name": "direct", "retention": {"min_age_days": 1}}
        ]}"#,
        vec![
            img("ami-1", "s-1", 10).build(),
            img("ami-2", "d-1", 10).build(),
        ],
    );
    assert_eq!(decision(&p, "ami-1").action, Action::Deprecate);
    assert_eq!(decision(&p, "ami-2").action, Action::Deregister);
}

#[test]
fn a_single_rule_policy_written_as_rules_decides_as_the_top_level_form() {
    let images = || {
        vec![
            img("ami-1", "web-1", 40).tag("app", "web").build(),
            img("ami-2", "web-2", 20).tag("app", "web").build(),
            img("ami-3", "api-1", 40).tag("retain", "x").build(),
            img("ami-4", "db-1", 40).build(),
        ]
    };
    let body = r#""selection": {"names": ["web-*", "api-*"], "exclude_tags": {"retain": "*"}},
        "retention": {"min_age_days": 30, "keep_count": 1, "group_by": {"tags": ["app"]}}"#;
    let top = run(&format!("{{{body}}}"), images());
    let listed = run(
        &format!(r#"{{"rules": [{{"name": "default", {body}}}]}}"#),
        images(),
    );
    assert_eq!(top, listed);
    assert_eq!(decision(&top, "ami-1").rule.as_deref(), Some("default"));
    // Unselected images of a single-rule policy keep their group, as before rules.
    assert_eq!(decision(&top, "ami-4").group, "");
}

/// Storage whose image is gone: the exclude tags of every rule keep it, not only the
/// first rule's.
#[test]
fn orphan_storage_is_kept_by_any_rules_exclude_tag() {
    use ami_sweeper_core::model::{Snapshot, Tags};
    let p = policy(
        r#"{"rules": [
            {"name": "a", "selection": {"names": ["a-*"], "exclude_tags": {"keep-a": "*"}},
             "retention": {"min_age_days": 1}},
            {"name": "b", "selection": {"names": ["b-*"], "exclude_tags": {"keep-b": "*"}},
             "retention": {"min_age_days": 1}}
        ], "cleanup": {"orphans": {"min_age_days": 1}}}"#,
    );
    let snap = |id: &str, tag: Option<&str>| {
        let mut tags = Tags::new();
        tags.insert("ami-sweeper:storage-of", "ami-0000gone");
        if let Some(t) = tag {
            tags.insert(t, "yes");
        }
        Snapshot {
            id: id.into(),
            description: String::new(),
            start_time: Some(ago(40, 0)),
            size_gib: Some(8),
            tags,
            archived: false,
        }
    };
    let inv = inventory(vec![]);
    let r = reconcile(
        &p,
        &inv,
        &[
            snap("snap-a", Some("keep-a")),
            snap("snap-b", Some("keep-b")),
            snap("snap-c", None),
        ],
        &Default::default(),
        now(),
    );
    let deleted: Vec<&str> = r.to_delete().map(|o| o.snapshot_id.as_str()).collect();
    assert_eq!(deleted, ["snap-c"]);
}

/// One case per condition: the policy selects with `match` alone, so an image the
/// condition holds for is the rule's and any other is not selected.
fn holds(condition: &str, image: Image) -> bool {
    let p = run(
        &format!(
            r#"{{"rules": [{{"name": "r", "selection": {{"match": {condition}}},
                "retention": {{"min_age_days": 1}}}}]}}"#
        ),
        vec![image],
    );
    let d = &p.decisions[0];
    assert_eq!(
        d.rule.is_none(),
        d.reasons[0] == Reason::NotSelected,
        "{condition}"
    );
    d.rule.is_some()
}

fn with(f: impl FnOnce(&mut ImageAttributes)) -> Image {
    let mut i = img("ami-1", "web-1", 40).build();
    f(&mut i.attributes);
    i
}

fn linux() -> Image {
    img("ami-1", "web-1", 40).build()
}

#[test]
fn each_condition_operator() {
    let windows = || with(|a| a.platform = Some("windows".into()));
    let cases: Vec<(&str, Image, bool)> = vec![
        (r#"{"name": "web-*"}"#, linux(), true),
        (r#"{"name": "api-*"}"#, linux(), false),
        (r#"{"name": "*"}"#, img("ami-1", "", 40).build(), false),
        (
            r#"{"description": "*nightly*"}"#,
            with(|a| a.description = Some("a nightly build".into())),
            true,
        ),
        (r#"{"description": "*"}"#, linux(), false),
        (
            r#"{"tag": {"key": "env"}}"#,
            img("ami-1", "w", 40).tag("env", "").build(),
            true,
        ),
        (
            r#"{"tag": {"key": "env", "value": "prod-*"}}"#,
            img("ami-1", "w", 40).tag("env", "prod-1").build(),
            true,
        ),
        (
            r#"{"tag": {"key": "env", "value": "prod-*"}}"#,
            img("ami-1", "w", 40).tag("env", "dev").build(),
            false,
        ),
        (r#"{"tag": {"key": "env"}}"#, linux(), false),
        (
            r#"{"architecture": "arm64"}"#,
            with(|a| a.architecture = Some("arm64".into())),
            true,
        ),
        (
            r#"{"architecture": "arm64"}"#,
            with(|a| a.architecture = Some("x86_64".into())),
            false,
        ),
        (r#"{"platform": "windows"}"#, windows(), true),
        (r#"{"platform": "Windows"}"#, windows(), true),
        (
            r#"{"virtualization": "hvm"}"#,
            with(|a| a.virtualization = Some("hvm".into())),
            true,
        ),
        (
            r#"{"virtualization": "paravirtual"}"#,
            with(|a| a.virtualization = Some("hvm".into())),
            false,
        ),
        (r#"{"root_device_type": "ebs"}"#, linux(), true),
        (
            r#"{"root_device_type": "instance-store"}"#,
            img("ami-1", "w", 40)
                .instance_store("b/p/x.manifest.xml")
                .build(),
            true,
        ),
        (r#"{"root_device_type": "instance-store"}"#, linux(), false),
        (
            r#"{"boot_mode": "uefi"}"#,
            with(|a| a.boot_mode = Some("uefi".into())),
            true,
        ),
        (
            r#"{"boot_mode": "uefi"}"#,
            with(|a| a.boot_mode = Some("uefi-preferred".into())),
            false,
        ),
        (
            r#"{"public": true}"#,
            img("ami-1", "w", 40).public().build(),
            true,
        ),
        (r#"{"public": false}"#, linux(), true),
        (r#"{"state": "available"}"#, linux(), true),
        (
            r#"{"state": "failed"}"#,
            img("ami-1", "w", 40).state("failed").build(),
            true,
        ),
        (
            r#"{"image_type": "machine"}"#,
            with(|a| a.image_type = Some("machine".into())),
            true,
        ),
        (
            r#"{"image_type": "kernel"}"#,
            with(|a| a.image_type = Some("machine".into())),
            false,
        ),
        (
            r#"{"source_image_id": "ami-0abc*"}"#,
            with(|a| a.source_image_id = Some("ami-0abc123".into())),
            true,
        ),
        (
            r#"{"source_region": "eu-*"}"#,
            with(|a| a.source_region = Some("eu-west-1".into())),
            true,
        ),
        (
            r#"{"source_region": "eu-*"}"#,
            with(|a| a.source_region = Some("us-east-1".into())),
            false,
        ),
        (r#"{"age_days": {"min": 40}}"#, linux(), true),
        (r#"{"age_days": {"min": 41}}"#, linux(), false),
        (r#"{"age_days": {"max": 40}}"#, linux(), true),
        (r#"{"age_days": {"max": 39}}"#, linux(), false),
        (
            r#"{"last_launched_days": {"max": 7}}"#,
            img("ami-1", "w", 40).launched(ago(3, 0)).build(),
            true,
        ),
        (
            r#"{"last_launched_days": {"min": 7}}"#,
            img("ami-1", "w", 40).launched(ago(3, 0)).build(),
            false,
        ),
        (
            r#"{"all": [{"name": "web-*"}, {"public": false}]}"#,
            linux(),
            true,
        ),
        (
            r#"{"all": [{"name": "web-*"}, {"public": true}]}"#,
            linux(),
            false,
        ),
        (
            r#"{"any": [{"name": "api-*"}, {"public": false}]}"#,
            linux(),
            true,
        ),
        (
            r#"{"any": [{"name": "api-*"}, {"public": true}]}"#,
            linux(),
            false,
        ),
        (r#"{"not": {"name": "web-*"}}"#, linux(), false),
        (
            r#"{"exists": "description"}"#,
            with(|a| a.description = Some("d".into())),
            true,
        ),
        (r#"{"exists": "last_launched"}"#, linux(), false),
        (r#"{"exists": "name"}"#, linux(), true),
    ];
    for (condition, image, want) in cases {
        assert_eq!(holds(condition, image), want, "{condition}");
    }
}

/// A comparison on an attribute the image lacks is false, `not` of it true, and
/// `exists` tells them apart: the README's example.
#[test]
fn a_missing_attribute_compares_false_and_its_negation_true() {
    let cases: Vec<(&str, Image, bool)> = vec![
        (r#"{"platform": "windows"}"#, linux(), false),
        (r#"{"not": {"platform": "windows"}}"#, linux(), true),
        (r#"{"exists": "platform"}"#, linux(), false),
        (
            r#"{"not": {"platform": "windows"}}"#,
            with(|a| a.platform = Some("windows".into())),
            false,
        ),
        (r#"{"architecture": "x86_64"}"#, linux(), false),
        (r#"{"not": {"boot_mode": "uefi"}}"#, linux(), true),
        (r#"{"source_image_id": "*"}"#, linux(), false),
        (r#"{"last_launched_days": {"max": 100000}}"#, linux(), false),
        (
            r#"{"not": {"last_launched_days": {"max": 30}}}"#,
            linux(),
            true,
        ),
    ];
    for (condition, image, want) in cases {
        assert_eq!(holds(condition, image), want, "{condition}");
    }
}

#[test]
fn the_lint_finds_rules_an_earlier_one_shadows() {
    let p = policy(
        r#"{"rules": [
            {"name": "web", "selection": {"names": ["web-*"], "tags": {"team": "*"}},
             "retention": {"min_age_days": 30, "keep_count": 3, "group_by": {"tags": ["app"]}}},
            {"name": "web-prod", "selection": {"names": ["web-prod-*"], "tags": {"team": "pay*", "env": "prod"}},
             "retention": {"min_age_days": 90}},
            {"name": "web-or-api", "selection": {"names": ["web-*", "api-*"], "tags": {"team": "*"}},
             "retention": {"min_age_days": 1}},
            {"name": "web-arm", "selection": {"names": ["web-*"], "tags": {"team": "x"},
             "match": {"architecture": "arm64"}},
             "retention": {"min_age_days": 1}},
            {"name": "rest", "retention": {"min_age_days": 60, "keep_count": 2}}
        ]}"#,
    );
    let found = lint(&p);
    let never: Vec<(&str, &str)> = found
        .iter()
        .filter_map(|f| match f {
            Finding::NeverMatches { rule, shadowed_by } => {
                Some((rule.as_str(), shadowed_by.as_str()))
            }
            _ => None,
        })
        .collect();
    // web-or-api can still take api images; web-arm's own match narrows, but web takes
    // every web image with a team tag first.
    assert_eq!(never, [("web-prod", "web"), ("web-arm", "web")]);
    assert!(found.contains(&Finding::IncomparableRetention {
        rule: "rest".into(),
        other: "web".into()
    }));
    assert!(found
        .iter()
        .all(|f| !matches!(f, Finding::IncomparableRetention { rule, .. } if rule == "web-prod")));
    // An earlier rule with a match never shadows.
    let q = policy(
        r#"{"rules": [
            {"name": "arm", "selection": {"match": {"architecture": "arm64"}}, "retention": {"min_age_days": 1}},
            {"name": "rest", "retention": {"min_age_days": 1}}
        ]}"#,
    );
    assert!(lint(&q).is_empty());
}

#[test]
fn a_plan_over_every_family_gives_each_image_one_decision() {
    let images: Vec<Image> = (0..40)
        .map(|i| {
            let b = img(
                &format!("ami-{i:03}"),
                &format!("{}-{i}", ["legacy", "app", "test", "golden", "misc"][i % 5]),
                (i * 13 % 500) as i64,
            );
            if i % 5 == 3 {
                b.tag("family", "golden").build()
            } else {
                b.build()
            }
        })
        .collect();
    let p = run(FAMILIES, images.clone());
    assert_eq!(p.decisions.len(), images.len());
    let mut ids: Vec<&str> = p.decisions.iter().map(|d| d.image_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), images.len());
    // legacy images are never touched: excluded or far too young.
    for d in p
        .decisions
        .iter()
        .filter(|d| d.rule.as_deref() == Some("legacy"))
    {
        assert_eq!(d.action, Action::Keep);
    }
}

#[test]
/// Found by the adversarial review: two (rule, lineage) pairs that print alike (a rule
/// name and a tag value containing ": ") were one lineage to a trigger's scope.
fn a_trigger_lineage_never_reaches_another_rules_lineage_that_prints_alike() {
    use ami_sweeper_core::mandate::{Ask, Mandate, Scope};
    let policy = policy(
        r#"{"dry_run": false, "rules": [
        {"name": "builds", "selection": {"tags": {"family": "builds"}},
         "retention": {"min_age_days": 30, "keep_count": 1, "group_by": {"tags": ["app"]}}},
        {"name": "builds: payments", "selection": {"tags": {"family": "payments"}},
         "retention": {"min_age_days": 30, "keep_count": 1, "group_by": {"tags": ["app"]}}}
    ]}"#,
    );
    let images = vec![
        // The event's image: rule `builds`, lineage app = "payments: api".
        img("ami-new", "builds-2", 0)
            .tag("family", "builds")
            .tag("app", "payments: api")
            .build(),
        // Rule `builds: payments`, lineage app = "api": another rule's lineage.
        img("ami-pay-new", "pay-2", 1)
            .tag("family", "payments")
            .tag("app", "api")
            .build(),
        img("ami-pay-old", "pay-1", 400)
            .tag("family", "payments")
            .tag("app", "api")
            .build(),
    ];
    let inventory = Inventory::new(images, Usage::new()).unwrap();
    let ceiling = Mandate::ceiling(&policy, false, Some("us-east-1"));
    let mandate = ceiling.narrow(&Ask {
        scope: Scope {
            lineages: ["ami-new".to_string()].into(),
            ..Scope::default()
        },
        ..Ask::default()
    });
    let mut p = plan(&policy, &inventory, now());
    assert_eq!(decision(&p, "ami-pay-old").action, Action::Deregister);
    mandate.restrict(&mut p, &inventory);
    let in_scope: Vec<(&str, Action)> = p
        .decisions
        .iter()
        .map(|d| (d.image_id.as_str(), d.action))
        .collect();
    assert!(
        p.decisions
            .iter()
            .all(|d| d.rule.as_deref() == Some("builds")),
        "the event for ami-new (rule builds) reaches another rule's lineage: {in_scope:?}"
    );
}
