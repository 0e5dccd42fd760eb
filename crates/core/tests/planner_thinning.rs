//! Thinning (`retention.thin`): every window boundary and period edge, and how thinning
//! sits among the other rules (protections, keep_count, limits, retire).

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Timestamp, Usage, UsageKind, UsageRef};
use ami_sweeper_core::planner::{plan, Action, Decision, Plan, Reason};
use ami_sweeper_core::thinning::Period;
use ami_sweeper_core::time::parse_instant;

fn t(s: &str) -> Timestamp {
    parse_instant(s).unwrap()
}

/// A one-rule policy: `min_age_days` 1 and these windows (plus `extra` fields).
fn thin_policy(windows: &str, extra: &str) -> String {
    format!(r#"{{"retention": {{"min_age_days": 1, "thin": {windows}}}{extra}}}"#)
}

fn at(id: &str, created: &str) -> Image {
    img(id, id, 0).created(t(created)).build()
}

fn run_at(policy_json: &str, images: Vec<Image>, usage: Usage, now: Timestamp) -> Plan {
    plan(
        &policy(policy_json),
        &Inventory::new(images, usage).unwrap(),
        now,
    )
}

fn get<'a>(p: &'a Plan, id: &str) -> &'a Decision {
    p.decisions
        .iter()
        .find(|d| d.image_id == id)
        .unwrap_or_else(|| panic!("{id} not in plan"))
}

/// Asserts each image's deciding reason and the action it implies.
fn expect(p: &Plan, want: &[(&str, Reason)]) {
    for (id, reason) in want {
        let d = get(p, id);
        assert_eq!(d.reasons[0], *reason, "{id}: {:?}", d.reasons);
        let action = if reason.condemns() {
            Action::Deregister
        } else {
            Action::Keep
        };
        assert_eq!(d.action, action, "{id}");
    }
}

/// Asserts that `id` is in a window of unit `unit` (as on the night before, for a test
/// of what a later night does within the same window).
fn in_window(p: &Plan, id: &str, unit: Period) {
    assert_eq!(
        get(p, id).thinning.as_ref().map(|n| n.keep_one_per),
        Some(unit),
        "the same window covers {id} on both nights"
    );
}

const WEEK_THEN_MONTH: &str = r#"[{"after_days": 14, "keep_one_per": "week"},
    {"after_days": 90, "keep_one_per": "month"}, {"after_days": 365, "keep_one_per": "none"}]"#;

#[test]
fn each_window_begins_exactly_at_its_after_days() {
    let now = t("2026-11-26T00:00:00Z");
    let policy = thin_policy(WEEK_THEN_MONTH, "");
    // Each image alone, so a window keeps it: only its age decides which window.
    for (created, reason, window) in [
        ("2026-11-12T00:00:01Z", Reason::BeforeThinning, None), // 14 days less a second
        (
            "2026-11-12T00:00:00Z",
            Reason::KeptByThinning,
            Some(Period::Week),
        ),
        (
            "2026-08-28T00:00:01Z",
            Reason::KeptByThinning,
            Some(Period::Week),
        ),
        (
            "2026-08-28T00:00:00Z",
            Reason::KeptByThinning,
            Some(Period::Month),
        ), // 90 days
        (
            "2025-11-26T00:00:01Z",
            Reason::KeptByThinning,
            Some(Period::Month),
        ),
        ("2025-11-26T00:00:00Z", Reason::Thinned, Some(Period::None)), // 365 days
    ] {
        let p = run_at(&policy, vec![at("x", created)], Usage::new(), now);
        expect(&p, &[("x", reason)]);
        let note = get(&p, "x").thinning.as_ref();
        assert_eq!(note.map(|n| n.keep_one_per), window, "{created}");
    }
    let p = run_at(
        &policy,
        vec![at("x", "2026-11-12T00:00:00Z")],
        Usage::new(),
        now,
    );
    let note = get(&p, "x").thinning.clone().unwrap();
    assert_eq!((note.after_days, note.period.as_str()), (14, "2026-W46"));
}

#[test]
fn iso_week_53_is_one_period_across_the_new_year() {
    // 2026-12-28 (Monday) to 2027-01-03 (Sunday) is ISO week 53 of 2026.
    let now = t("2027-03-01T00:00:00Z");
    let images = vec![
        at("sun-w52", "2026-12-27T23:59:59Z"),
        at("mon-w53", "2026-12-28T00:00:00Z"),
        at("thu-w53", "2026-12-31T12:00:00Z"),
        at("sun-w53", "2027-01-03T23:59:59Z"),
        at("mon-w01", "2027-01-04T00:00:00Z"),
    ];
    let policy = thin_policy(r#"[{"after_days": 14, "keep_one_per": "week"}]"#, "");
    let p = run_at(&policy, images, Usage::new(), now);
    expect(
        &p,
        &[
            ("sun-w52", Reason::KeptByThinning),
            ("mon-w53", Reason::Thinned),
            ("thu-w53", Reason::Thinned),
            ("sun-w53", Reason::KeptByThinning),
            ("mon-w01", Reason::KeptByThinning),
        ],
    );
    assert_eq!(
        get(&p, "thu-w53").thinning.as_ref().unwrap().period,
        "2026-W53"
    );
}

#[test]
fn month_ends_quarters_and_years_split_at_utc_midnight() {
    let now = t("2027-06-01T00:00:00Z");
    let images = vec![
        at("jan-first", "2026-01-01T00:00:00Z"),
        at("jan-last", "2026-01-31T23:59:59Z"),
        at("feb-first", "2026-02-01T00:00:00Z"),
        at("mar-last", "2026-03-31T23:59:59Z"),
        at("apr-first", "2026-04-01T00:00:00Z"),
        at("dec-last", "2026-12-31T23:59:59Z"),
    ];
    let month = thin_policy(r#"[{"after_days": 31, "keep_one_per": "month"}]"#, "");
    let p = run_at(&month, images.clone(), Usage::new(), now);
    expect(
        &p,
        &[
            ("jan-first", Reason::Thinned),
            ("jan-last", Reason::KeptByThinning),
            ("feb-first", Reason::KeptByThinning),
            ("mar-last", Reason::KeptByThinning),
            ("apr-first", Reason::KeptByThinning),
        ],
    );
    let quarter = thin_policy(r#"[{"after_days": 92, "keep_one_per": "quarter"}]"#, "");
    let p = run_at(&quarter, images.clone(), Usage::new(), now);
    expect(
        &p,
        &[
            ("jan-last", Reason::Thinned),
            ("feb-first", Reason::Thinned),
            ("mar-last", Reason::KeptByThinning),
            ("apr-first", Reason::KeptByThinning),
        ],
    );
    assert_eq!(
        get(&p, "mar-last").thinning.as_ref().unwrap().period,
        "2026-Q1"
    );
    let year = thin_policy(r#"[{"after_days": 366, "keep_one_per": "year"}]"#, "");
    let p = run_at(&year, images, Usage::new(), t("2028-06-01T00:00:00Z"));
    expect(
        &p,
        &[
            ("apr-first", Reason::Thinned),
            ("dec-last", Reason::KeptByThinning),
        ],
    );
}

#[test]
fn a_leap_day_is_a_day_of_its_own() {
    let now = t("2028-04-01T00:00:00Z");
    let images = vec![
        at("feb28", "2028-02-28T23:59:59Z"),
        at("feb29-early", "2028-02-29T00:00:00Z"),
        at("feb29-late", "2028-02-29T23:59:59Z"),
        at("mar01", "2028-03-01T00:00:00Z"),
    ];
    let policy = thin_policy(r#"[{"after_days": 7, "keep_one_per": "day"}]"#, "");
    let p = run_at(&policy, images, Usage::new(), now);
    expect(
        &p,
        &[
            ("feb28", Reason::KeptByThinning),
            ("feb29-early", Reason::Thinned),
            ("feb29-late", Reason::KeptByThinning),
            ("mar01", Reason::KeptByThinning),
        ],
    );
    assert_eq!(
        get(&p, "feb29-late").thinning.as_ref().unwrap().period,
        "2028-02-29"
    );
}

#[test]
fn ties_in_a_period_go_to_the_lowest_id_as_keep_count_ranks_them() {
    let now = t("2026-11-26T00:00:00Z");
    let images = vec![
        at("ami-b", "2026-10-01T00:00:00Z"),
        at("ami-a", "2026-10-01T00:00:00Z"),
    ];
    let policy = thin_policy(r#"[{"after_days": 14, "keep_one_per": "month"}]"#, "");
    let p = run_at(&policy, images, Usage::new(), now);
    expect(
        &p,
        &[
            ("ami-a", Reason::KeptByThinning),
            ("ami-b", Reason::Thinned),
        ],
    );
}

#[test]
fn a_period_keeps_its_newest_counted_image_whatever_window_it_is_in() {
    // Week 48 of 2026 runs 2026-11-23..29; at now = 2026-12-08, the 23rd is 15 days old
    // (week window), the 25th 13 days (not yet thinned) and newer, so the 23rd goes.
    let now = t("2026-12-08T00:00:00Z");
    let images = vec![
        at("nov23", "2026-11-23T00:00:00Z"),
        at("nov25", "2026-11-25T00:00:00Z"),
    ];
    let policy = thin_policy(r#"[{"after_days": 14, "keep_one_per": "week"}]"#, "");
    let p = run_at(&policy, images, Usage::new(), now);
    expect(
        &p,
        &[
            ("nov23", Reason::Thinned),
            ("nov25", Reason::BeforeThinning),
        ],
    );
}

#[test]
fn protections_keep_besides_thinning_and_excluded_images_do_not_count() {
    let now = t("2026-11-26T00:00:00Z");
    let images = vec![
        at("oct01", "2026-10-01T00:00:00Z"),
        at("oct10-used", "2026-10-10T00:00:00Z"),
        at("sep01", "2026-09-01T00:00:00Z"),
        img("sep20-retain", "sep20-retain", 0)
            .created(t("2026-09-20T00:00:00Z"))
            .tag("retain", "audit")
            .build(),
        img("aug20-public", "aug20-public", 0)
            .created(t("2026-08-20T00:00:00Z"))
            .public()
            .build(),
        at("aug01", "2026-08-01T00:00:00Z"),
    ];
    let mut usage = Usage::new();
    usage.add(
        "oct10-used",
        UsageRef {
            kind: UsageKind::Instance,
            id: "i-1".into(),
        },
    );
    let policy = r#"{"selection": {"exclude_tags": {"retain": "*"}},
        "retention": {"min_age_days": 1, "thin": [{"after_days": 14, "keep_one_per": "month"}]}}"#;
    let p = run_at(policy, images, usage, now);
    expect(
        &p,
        &[
            // The used image is October's newest: it represents the month, and its own
            // protection keeps it too; October's other image goes.
            ("oct10-used", Reason::InUse),
            ("oct01", Reason::Thinned),
            // An excluded image is not counted: September's newest counted one stays.
            ("sep20-retain", Reason::ExcludedByTag),
            ("sep01", Reason::KeptByThinning),
            // A shared image is counted (as keep_count counts it) and represents August.
            ("aug20-public", Reason::Shared),
            ("aug01", Reason::Thinned),
        ],
    );
    assert_eq!(
        get(&p, "oct10-used").reasons,
        vec![Reason::InUse, Reason::KeptByThinning]
    );
    assert_eq!(
        get(&p, "aug20-public").reasons,
        vec![Reason::Shared, Reason::KeptByThinning]
    );
}

#[test]
fn keep_count_and_min_age_keep_before_thinning_and_lineages_are_separate() {
    let now = t("2026-11-26T00:00:00Z");
    let web = |id: &str, c: &str| img(id, id, 0).created(t(c)).tag("app", "web").build();
    let api = |id: &str, c: &str| img(id, id, 0).created(t(c)).tag("app", "api").build();
    let images = vec![
        web("web-oct01", "2026-10-01T00:00:00Z"),
        web("web-oct02", "2026-10-02T00:00:00Z"),
        api("api-oct01", "2026-10-01T00:00:00Z"),
    ];
    let policy = r#"{"retention": {"min_age_days": 1, "keep_count": 1,
        "group_by": {"tags": ["app"]},
        "thin": [{"after_days": 14, "keep_one_per": "day"}, {"after_days": 30, "keep_one_per": "none"}]}}"#;
    let p = run_at(policy, images, Usage::new(), now);
    expect(
        &p,
        &[
            ("web-oct02", Reason::WithinKeepCount),
            ("web-oct01", Reason::Thinned),
            ("api-oct01", Reason::WithinKeepCount),
        ],
    );
    // min_age_days keeps whatever the windows say.
    let young = thin_policy(r#"[{"after_days": 1, "keep_one_per": "none"}]"#, "");
    let young = young.replace(r#""min_age_days": 1"#, r#""min_age_days": 60"#);
    let p = run_at(
        &young,
        vec![at("x", "2026-10-01T00:00:00Z")],
        Usage::new(),
        now,
    );
    assert_eq!(get(&p, "x").reasons, vec![Reason::TooYoung]);
}

#[test]
fn thinned_images_are_held_by_the_limit_and_retired_in_stages() {
    let now = t("2026-11-26T00:00:00Z");
    let images = vec![
        at("a", "2026-10-01T00:00:00Z"),
        at("b", "2026-10-02T00:00:00Z"),
        at("c", "2026-10-03T00:00:00Z"),
    ];
    let windows = r#"[{"after_days": 14, "keep_one_per": "month"}]"#;
    let limited = thin_policy(windows, r#", "limits": {"max_deregistrations": 1}"#);
    let p = run_at(&limited, images.clone(), Usage::new(), now);
    expect(
        &p,
        &[
            ("a", Reason::Thinned),
            ("b", Reason::OverLimit),
            ("c", Reason::KeptByThinning),
        ],
    );
    assert_eq!(p.summary.by_reason.get(&Reason::Thinned), Some(&1));
    let staged = thin_policy(windows, r#", "retire": {"deprecate": true}"#);
    let p = run_at(&staged, images, Usage::new(), now);
    assert_eq!(get(&p, "a").action, Action::Deprecate);
    assert_eq!(get(&p, "a").reasons[0], Reason::Retiring);
    assert_eq!(get(&p, "c").action, Action::Keep);
}

#[test]
fn a_condemned_thinned_image_plans_its_storage_like_an_expired_one() {
    let now = t("2026-11-26T00:00:00Z");
    let images = vec![
        img("a", "a", 0)
            .created(t("2026-10-01T00:00:00Z"))
            .snap("snap-a", 8)
            .build(),
        at("b", "2026-10-02T00:00:00Z"),
    ];
    let policy = thin_policy(r#"[{"after_days": 14, "keep_one_per": "month"}]"#, "");
    let p = run_at(&policy, images, Usage::new(), now);
    assert_eq!(get(&p, "a").snapshots.len(), 1);
    assert_eq!(p.summary.snapshots_to_delete, 1);
    assert_eq!(p.condemned().len(), 1);
}

#[test]
fn windows_must_strictly_increase() {
    for windows in [
        r#"[{"after_days": 14, "keep_one_per": "week"}, {"after_days": 14, "keep_one_per": "month"}]"#,
        r#"[{"after_days": 90, "keep_one_per": "week"}, {"after_days": 30, "keep_one_per": "month"}]"#,
    ] {
        let e = ami_sweeper_core::Policy::from_json(&thin_policy(windows, "")).unwrap_err();
        assert_eq!(e.path, "retention.thin[1].after_days", "{e}");
    }
    let bad_unit = thin_policy(r#"[{"after_days": 14, "keep_one_per": "fortnight"}]"#, "");
    let e = ami_sweeper_core::Policy::from_json(&bad_unit).unwrap_err();
    assert!(e.path.starts_with("retention.thin[0]"), "{e}");
    let unknown = thin_policy(
        r#"[{"after_days": 14, "keep_one_per": "week", "keep": 2}]"#,
        "",
    );
    assert!(ami_sweeper_core::Policy::from_json(&unknown).is_err());
    let rules = r#"{"rules": [{"name": "r", "retention": {"min_age_days": 1,
        "thin": [{"after_days": 5, "keep_one_per": "day"}, {"after_days": 4, "keep_one_per": "week"}]}}]}"#;
    let e = ami_sweeper_core::Policy::from_json(rules).unwrap_err();
    assert_eq!(e.path, "rules[0].retention.thin[1].after_days");
}

#[test]
fn the_schema_describes_thinning_windows() {
    let schema = serde_json::to_string(&ami_sweeper_core::Policy::json_schema()).unwrap();
    for word in ["after_days", "keep_one_per", "quarter"] {
        assert!(schema.contains(word), "{word}");
    }
}

#[test]
fn lint_finds_windows_that_keep_nothing_overlap_or_shift() {
    use ami_sweeper_core::policy::{lint, Finding};
    let rules = r#"{"rules": [
        {"name": "good", "selection": {"names": ["good-*"]}, "retention": {"min_age_days": 7,
            "thin": [{"after_days": 14, "keep_one_per": "week"}, {"after_days": 90, "keep_one_per": "month"},
                     {"after_days": 400, "keep_one_per": "none"}]}},
        {"name": "after-none", "selection": {"names": ["a-*"]}, "retention": {"min_age_days": 1,
            "thin": [{"after_days": 30, "keep_one_per": "none"}, {"after_days": 60, "keep_one_per": "month"}]}},
        {"name": "young", "selection": {"names": ["y-*"]}, "retention": {"min_age_days": 40,
            "thin": [{"after_days": 10, "keep_one_per": "day"}, {"after_days": 40, "keep_one_per": "month"}]}},
        {"name": "overlap", "selection": {"names": ["o-*"]}, "retention": {"min_age_days": 1,
            "thin": [{"after_days": 40, "keep_one_per": "month"}, {"after_days": 90, "keep_one_per": "week"}]}},
        {"name": "short", "selection": {"names": ["s-*"]}, "retention": {"min_age_days": 1,
            "thin": [{"after_days": 3, "keep_one_per": "week"}]}}
    ]}"#;
    let found = lint(&policy(rules));
    let of = |name: &str| -> Vec<&Finding> {
        found
            .iter()
            .filter(|f| serde_json::to_value(f).unwrap()["rule"] == name)
            .collect()
    };
    assert!(of("good").is_empty(), "{:?}", of("good"));
    assert!(matches!(
        of("after-none")[..],
        [Finding::WindowNeverKeeps { window: 1, .. }]
    ));
    assert!(matches!(
        of("young")[..],
        [
            Finding::MinAgeBeyondFirstWindow { .. },
            Finding::WindowNeverKeeps { window: 0, .. }
        ]
    ));
    assert!(matches!(
        of("overlap")[..],
        [Finding::WindowNotCoarser {
            window: 1,
            earlier: 0,
            ..
        }]
    ));
    assert!(matches!(
        of("short")[..],
        [Finding::WindowShorterThanPeriod { window: 0, .. }]
    ));
    assert!(found
        .iter()
        .all(|f| !f.is_error() && !f.message().is_empty()));
    assert!(found[0].message().contains("retention.thin["));
}

#[test]
fn an_exception_changes_only_its_own_image_so_its_lapse_moves_no_representative() {
    // Week 41 of 2026 runs 2026-10-05..11. `mon` and `fri` are both in the week window
    // (after 14 days) on both nights and stay there (the month window starts at 90).
    // `fri` carries an exception until 2026-11-15. An excepted image still takes its
    // place among its period's images: `fri` is week 41's newest, so `mon` is thinned on
    // the first night exactly as without the exception, and when the exception lapses
    // `fri` is kept by thinning: nothing but time changed, and no representative moved.
    // (Were excepted images left out, `mon` would represent week 41 while `fri` is
    // excepted and be thinned the night the exception lapses, in the same window.)
    let mon = at("mon", "2026-10-05T12:00:00Z");
    let plain = at("fri", "2026-10-09T12:00:00Z");
    let mut fri = plain.clone();
    fri.tags.insert("ami-sweeper:keep-until", "2026-11-15");
    let policy = thin_policy(WEEK_THEN_MONTH, "");
    let night1 = t("2026-11-01T02:00:00Z");
    let with = run_at(
        &policy,
        vec![mon.clone(), fri.clone()],
        Usage::new(),
        night1,
    );
    expect(
        &with,
        &[("mon", Reason::Thinned), ("fri", Reason::Excepted)],
    );
    let without = run_at(&policy, vec![mon.clone(), plain], Usage::new(), night1);
    expect(
        &without,
        &[("mon", Reason::Thinned), ("fri", Reason::KeptByThinning)],
    );
    let night2 = run_at(
        &policy,
        vec![mon, fri],
        Usage::new(),
        t("2026-11-16T02:00:00Z"),
    );
    in_window(&night2, "fri", Period::Week);
    expect(
        &night2,
        &[("mon", Reason::Thinned), ("fri", Reason::KeptByThinning)],
    );
    // A policy exception behaves as the tag does.
    let listed = thin_policy(
        WEEK_THEN_MONTH,
        r#", "exceptions": [{"image_ids": ["ami-0000000f"], "until": "2026-11-15", "reason": "INC-1"}]"#,
    );
    let images = vec![
        at("ami-0000000a", "2026-10-05T12:00:00Z"),
        at("ami-0000000f", "2026-10-09T12:00:00Z"),
    ];
    let p = run_at(&listed, images, Usage::new(), night1);
    expect(
        &p,
        &[
            ("ami-0000000a", Reason::Thinned),
            ("ami-0000000f", Reason::Excepted),
        ],
    );
}

#[test]
fn a_thinned_lineage_must_not_be_chosen_by_age_or_last_launch() {
    // Were rule `old` (images 30 days or older, thinned one per week after 14 days)
    // allowed: on 2026-11-05 only `mon` (2026-10-05, 31 days) is `old`'s and represents
    // week 41; on 2026-11-09 `fri` (2026-10-09) turns 31 days, joins `old` as week 41's
    // newest, and `mon` is thinned though the same window covers it on both nights. A
    // lineage that time changes has no stable representative: the policy is refused.
    let own = r#"{"rules": [
        {"name": "old", "selection": {"match": {"all": [{"name": "web-*"},
            {"not": {"age_days": {"max": 29}}}]}},
         "retention": {"min_age_days": 1, "thin": [{"after_days": 14, "keep_one_per": "week"},
            {"after_days": 90, "keep_one_per": "month"}]}},
        {"name": "young", "retention": {"min_age_days": 30}}]}"#;
    let e = ami_sweeper_core::Policy::from_json(own).unwrap_err();
    assert_eq!(e.path, "rules[0].selection.match", "{e}");
    assert!(e.message.contains("age_days"), "{e}");
    // Images leaving an earlier rule as they age (or as launches stop) join the thinned
    // lineage late, with the same effect.
    let earlier = r#"{"rules": [
        {"name": "launched", "selection": {"match": {"last_launched_days": {"max": 30}}},
         "retention": {"min_age_days": 3650}},
        {"name": "nightly", "retention": {"min_age_days": 1,
            "thin": [{"after_days": 14, "keep_one_per": "week"}]}}]}"#;
    let e = ami_sweeper_core::Policy::from_json(earlier).unwrap_err();
    assert_eq!(e.path, "rules[1].retention.thin", "{e}");
    assert!(
        e.message.contains("rules[0]") && e.message.contains("launched_within_days"),
        "{e}"
    );
    // The same rules without thinning, or with the time test after the thinned rule,
    // are accepted.
    let after = r#"{"rules": [
        {"name": "nightly", "selection": {"names": ["web-*"]}, "retention": {"min_age_days": 1,
            "thin": [{"after_days": 14, "keep_one_per": "week"}]}},
        {"name": "launched", "selection": {"match": {"last_launched_days": {"max": 30}}},
         "retention": {"min_age_days": 3650}}]}"#;
    ami_sweeper_core::Policy::from_json(after).unwrap();
    let plain = r#"{"rules": [
        {"name": "launched", "selection": {"match": {"age_days": {"max": 30}}},
         "retention": {"min_age_days": 3650}},
        {"name": "rest", "retention": {"min_age_days": 90}}]}"#;
    ami_sweeper_core::Policy::from_json(plain).unwrap();
}

#[test]
fn a_pending_newest_image_of_a_period_holds_its_kept_image_until_it_is_available() {
    // Week 41 of 2026 runs Monday 2026-10-05 to Sunday 2026-10-11. `mon` is made early on
    // Monday; `sun` late on Sunday, and it is still `pending` (a large volume, a copy) when
    // the sweep runs just after midnight a week later. Only available images are counted,
    // so `mon` is the week's newest counted image and is kept by thinning: were `sun`
    // counted while pending, `mon` would be thinned before anyone knows `sun` will become
    // available, and a week whose `sun` then fails would keep nothing. Once `sun` is
    // available it is the week's newest and `mon` is thinned: the one case where a kept
    // image is thinned later in the same window (docs/policy.md says so); if `sun` fails
    // instead, `mon` stays the week's image.
    let mon = at("mon", "2026-10-05T00:10:00Z");
    let sun = img("sun", "sun", 0)
        .created(t("2026-10-11T23:50:00Z"))
        .state("pending")
        .build();
    let policy = thin_policy(r#"[{"after_days": 7, "keep_one_per": "week"}]"#, "");
    assert!(
        ami_sweeper_core::policy::lint(&super::common::policy(&policy)).is_empty(),
        "a window as long as its unit is the stable form the lint accepts"
    );
    let night1 = run_at(
        &policy,
        vec![mon.clone(), sun.clone()],
        Usage::new(),
        t("2026-10-12T00:30:00Z"),
    );
    expect(
        &night1,
        &[("mon", Reason::KeptByThinning), ("sun", Reason::Unsettled)],
    );
    let night2 = t("2026-10-19T00:30:00Z");
    let mut settled = sun.clone();
    settled.state = ami_sweeper_core::model::ImageState::Available;
    let p = run_at(&policy, vec![mon.clone(), settled], Usage::new(), night2);
    in_window(&p, "mon", Period::Week);
    expect(
        &p,
        &[("mon", Reason::Thinned), ("sun", Reason::KeptByThinning)],
    );
    let mut failed = sun;
    failed.state = ami_sweeper_core::model::ImageState::Failed;
    let p = run_at(&policy, vec![mon, failed], Usage::new(), night2);
    expect(&p, &[("mon", Reason::KeptByThinning)]);
}
