//! Images ami-sweeper is retiring (issue 28, items 3 and 5): what the sweeper did to an
//! image (its `DisableImage`, its deprecation, its tags) never moves it to another rule,
//! and `keep_count` counts the images the sweeper is retiring.

use crate::common::*;
use ami_sweeper_core::model::Image;
use ami_sweeper_core::planner::{plan, Action, Decision, Plan, Reason};
use ami_sweeper_core::retire::{DISABLED_AT, DISABLED_FROM};
use ami_sweeper_core::time::{days_after, format_instant};

fn run(policy_json: &str, images: Vec<Image>) -> Plan {
    plan(&policy(policy_json), &inventory(images), now())
}

fn decision<'a>(p: &'a Plan, id: &str) -> &'a Decision {
    p.decisions
        .iter()
        .find(|d| d.image_id == id)
        .unwrap_or_else(|| panic!("{id} not in plan"))
}

fn days_ago(days: i64) -> String {
    format_instant(ago(days, 0))
}

/// Item 3 (a): `broken` selects disabled images; an image ami-sweeper disabled a day ago
/// under `web` stays `web`'s, waiting its 14 days, and is not deregistered by `broken`.
/// An image disabled by hand (no `disabled-at` tag) is still `broken`'s.
#[test]
fn an_image_the_sweeper_disabled_keeps_the_rule_that_disabled_it() {
    let p = run(
        r#"{"rules": [
            {"name": "broken", "selection": {"match": {"state": "disabled"}},
             "retention": {"min_age_days": 1}},
            {"name": "web", "selection": {"names": ["web-*"]},
             "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 14}}
        ]}"#,
        vec![
            img("ami-ours", "web-1", 100)
                .state("disabled")
                .tag(DISABLED_AT, &days_ago(1))
                .build(),
            img("ami-hand", "web-2", 100).state("disabled").build(),
        ],
    );
    let ours = decision(&p, "ami-ours");
    assert_eq!(ours.rule.as_deref(), Some("web"));
    assert_eq!(
        (ours.action, ours.reason()),
        (Action::Keep, Reason::Retiring)
    );
    assert_eq!(ours.eligible_at, Some(days_after(ago(1, 0), 14)));
    let hand = decision(&p, "ami-hand");
    assert_eq!(hand.rule.as_deref(), Some("broken"));
    assert_eq!(hand.action, Action::Deregister);
}

/// Item 3 (b): a rule that selects `state = available` keeps selecting the image it has
/// just disabled: it waits, it is not `not_selected` and enabled again.
#[test]
fn a_rule_on_available_images_keeps_the_image_it_disabled() {
    let p = run(
        r#"{"rules": [
            {"name": "live", "selection": {"match": {"state": "available"}},
             "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 7}}
        ]}"#,
        vec![img("ami-1", "web-1", 100)
            .state("disabled")
            .tag(DISABLED_AT, &days_ago(1))
            .build()],
    );
    let d = decision(&p, "ami-1");
    assert_eq!(d.rule.as_deref(), Some("live"));
    assert_eq!((d.action, d.reason()), (Action::Keep, Reason::Retiring));
    assert_eq!(d.eligible_at, Some(days_after(ago(1, 0), 7)));
}

/// None of the `ami-sweeper:*` tags is visible to selection, so a policy may not name one
/// anywhere a rule reads tags: it would silently never match (and a later, harsher rule
/// would take the image).
#[test]
fn the_sweepers_own_tags_are_invisible_to_selection() {
    for (json, path) in [
        (
            r#"{"rules": [{"name": "marked", "selection": {"tags": {"ami-sweeper:deprecated-at": "*"}},
                 "retention": {"min_age_days": 1}}]}"#,
            "rules[0].selection.tags",
        ),
        (
            r#"{"rules": [{"name": "unmarked", "selection": {"match": {"not": {"tag": {"key": "ami-sweeper:deprecated-at"}}}},
                 "retention": {"min_age_days": 30}}]}"#,
            "rules[0].selection.match.not.tag.key",
        ),
        (
            r#"{"retention": {"min_age_days": 30, "group_by": {"tags": ["app", "ami-sweeper:x"]}}}"#,
            "retention.group_by.tags[1]",
        ),
    ] {
        let err = ami_sweeper_core::Policy::from_json(json)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(path) && err.contains("ami-sweeper's own"),
            "{err}"
        );
    }
}

/// `DisableImage` makes a public image private; the sweep records that it was public
/// (`ami-sweeper:disabled-from` = `available public`), and a rule on `public` keeps selecting it.
#[test]
fn a_public_image_the_sweeper_disabled_is_judged_as_public() {
    let rules = r#"{"protection": {"skip_shared": false}, "rules": [
        {"name": "public", "selection": {"match": {"public": true}},
         "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 7}}
    ]}"#;
    let p = run(
        rules,
        vec![
            img("ami-ours", "web-1", 100)
                .state("disabled")
                .tag(DISABLED_AT, &days_ago(1))
                .tag(DISABLED_FROM, "available public")
                .build(),
            // Private, never public: no rule selects it.
            img("ami-private", "web-2", 100).build(),
        ],
    );
    let d = decision(&p, "ami-ours");
    assert_eq!(d.rule.as_deref(), Some("public"));
    assert_eq!((d.action, d.reason()), (Action::Keep, Reason::Retiring));
    assert_eq!(decision(&p, "ami-private").reason(), Reason::NotSelected);
}

/// Item 5: images the sweeper is retiring count for `keep_count`; one that falls inside
/// it again (the newest was deregistered by hand) is enabled. An image disabled by hand
/// keeps today's meaning: it is not counted.
#[test]
fn keep_count_counts_the_images_the_sweeper_is_retiring() {
    let p = run(
        r#"{"retention": {"min_age_days": 30, "keep_count": 2},
            "retire": {"disable_for_days": 14}}"#,
        vec![
            img("ami-3", "web-3", 40).build(),
            img("ami-2", "web-2", 50)
                .state("disabled")
                .tag(DISABLED_AT, &days_ago(2))
                .build(),
            img("ami-1", "web-1", 60)
                .state("disabled")
                .tag(DISABLED_AT, &days_ago(2))
                .build(),
        ],
    );
    assert_eq!(decision(&p, "ami-3").reason(), Reason::WithinKeepCount);
    let two = decision(&p, "ami-2");
    assert_eq!(
        (two.action, two.reason()),
        (Action::Enable, Reason::WithinKeepCount)
    );
    let one = decision(&p, "ami-1");
    assert_eq!((one.action, one.reason()), (Action::Keep, Reason::Retiring));

    let by_hand = run(
        r#"{"retention": {"min_age_days": 30, "keep_count": 2},
            "retire": {"disable_for_days": 14}}"#,
        vec![
            img("ami-3", "web-3", 40).build(),
            img("ami-2", "web-2", 50).state("disabled").build(),
            img("ami-1", "web-1", 60).build(),
        ],
    );
    assert_ne!(
        decision(&by_hand, "ami-2").reason(),
        Reason::WithinKeepCount,
        "disabled by hand: not counted, as before"
    );
    assert_eq!(
        decision(&by_hand, "ami-1").reason(),
        Reason::WithinKeepCount
    );
}

/// An image someone else disabled, whose wait ami-sweeper started (`disabled-from` =
/// `disabled`), is not one the sweeper is retiring: `keep_count` does not count it, and a
/// rule that no longer condemns it does not enable it.
#[test]
fn an_image_disabled_by_hand_stays_disabled_to_the_rules_and_is_never_enabled() {
    let by_hand = || {
        img("ami-2", "web-2", 50)
            .state("disabled")
            .tag(DISABLED_AT, &days_ago(2))
            .tag(DISABLED_FROM, "disabled")
    };
    let p = run(
        r#"{"retention": {"min_age_days": 30, "keep_count": 2},
            "retire": {"disable_for_days": 14}}"#,
        vec![
            img("ami-3", "web-3", 40).build(),
            by_hand().build(),
            img("ami-1", "web-1", 60).build(),
        ],
    );
    let two = decision(&p, "ami-2");
    assert_eq!((two.action, two.reason()), (Action::Keep, Reason::Retiring));
    assert_eq!(decision(&p, "ami-1").reason(), Reason::WithinKeepCount);
    // Excluded now: its deprecation is not ami-sweeper's, nor its disable: tags go only.
    let p = run(
        r#"{"selection": {"exclude_tags": {"keep": "*"}},
            "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 14}}"#,
        vec![by_hand().tag("keep", "yes").build()],
    );
    let d = decision(&p, "ami-2");
    assert_eq!(d.action, Action::Enable);
    assert_eq!(
        d.step,
        Some(ami_sweeper_core::retire::RetireStep::Enable {
            disabled: false,
            deprecated: false
        })
    );
}

/// `lint` warns about a rule that selects on `state` in a policy where a rule retires
/// (the retiring rule itself included), wherever the condition sits in the `match`.
#[test]
fn the_lint_warns_about_state_conditions_beside_retirement() {
    use ami_sweeper_core::policy::{lint, Finding};
    let found = lint(&policy(
        r#"{"rules": [
            {"name": "broken", "selection": {"match": {"any": [{"name": "x-*"}, {"not": {"state": "available"}}]}},
             "retention": {"min_age_days": 1}},
            {"name": "web", "selection": {"names": ["web-*"]},
             "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 14}}
        ]}"#,
    ));
    assert_eq!(
        found,
        [Finding::SelectsOnRetirementState {
            rule: "broken".into(),
            retiring: "web".into()
        }]
    );
    assert!(!found[0].is_error());
    assert!(
        found[0].message().contains("state"),
        "{}",
        found[0].message()
    );
    let itself = lint(&policy(
        r#"{"rules": [{"name": "live", "selection": {"match": {"state": "available"}},
            "retention": {"min_age_days": 30}, "retire": {"deprecate": true}}]}"#,
    ));
    assert_eq!(
        itself,
        [Finding::SelectsOnRetirementState {
            rule: "live".into(),
            retiring: "live".into()
        }]
    );
    let no_retirement = lint(&policy(
        r#"{"rules": [{"name": "live", "selection": {"match": {"state": "available"}},
            "retention": {"min_age_days": 30}}]}"#,
    ));
    assert!(no_retirement.is_empty(), "{no_retirement:?}");
}

/// Thinning counts what `keep_count` counts: an image the sweeper is retiring (thinned
/// while a newer image of its month was there) is its month's representative again once
/// that newer image is deregistered by hand, and is enabled, not left to its wait.
#[test]
fn thinning_counts_the_images_the_sweeper_is_retiring() {
    let thin = r#"{"retention": {"min_age_days": 1,
                     "thin": [{"after_days": 14, "keep_one_per": "month"}]},
                   "retire": {"disable_for_days": 14}}"#;
    let october = |id: &str, day: u32| {
        let created = ami_sweeper_core::time::parse_instant(&format!("2026-10-{day:02}T12:00:00Z"));
        img(id, id, 0).created(created.unwrap())
    };
    let p = run(
        thin,
        vec![october("ami-old", 5)
            .state("disabled")
            .tag(DISABLED_AT, &days_ago(2))
            .build()],
    );
    let d = decision(&p, "ami-old");
    assert_eq!(
        (d.action, d.reason()),
        (Action::Enable, Reason::KeptByThinning),
        "the month's only image, retiring, is its representative again"
    );
    let by_hand = run(
        thin,
        vec![
            october("ami-new", 20).build(),
            october("ami-old", 5).state("disabled").build(),
        ],
    );
    assert_eq!(
        decision(&by_hand, "ami-new").reason(),
        Reason::KeptByThinning
    );
}

/// An exclude tag in ami-sweeper's own namespace (`ami-sweeper:keep`, the name a team
/// would pick for "ami-sweeper, keep this") was accepted and silently dropped: the rules
/// never see `ami-sweeper:*` tags, so the image it protects was deregistered. Such a
/// policy is refused, with the field.
#[test]
fn an_exclude_tag_in_the_sweepers_namespace_is_never_silently_dropped() {
    let json = r#"{"rules": [
        {"name": "web", "selection": {"names": ["web-*"], "exclude_tags": {"ami-sweeper:keep": "*"}},
         "retention": {"min_age_days": 30}}
    ]}"#;
    let err = match ami_sweeper_core::Policy::from_json(json) {
        Err(e) => e.to_string(),
        Ok(policy) => {
            let p = plan(
                &policy,
                &inventory(vec![img("ami-1", "web-1", 100)
                    .tag("ami-sweeper:keep", "legal-hold")
                    .build()]),
                now(),
            );
            panic!("accepted; ami-1 decided {:?}", decision(&p, "ami-1").action);
        }
    };
    assert!(
        err.starts_with("rules[0].selection.exclude_tags: \"ami-sweeper:keep\""),
        "{err}"
    );
}
