//! Expiring exceptions: the `ami-sweeper:keep-until` tag and the policy's `exceptions`
//! keep an image as `excepted` until their instant (a date: through the end of that UTC
//! day), then it is decided as usual; an unreadable date keeps it and says so; neither
//! counts toward `keep_count`; `limits.max_exception_days` refuses a policy entry and
//! reports a tag; the digest ignores exceptions; the lapsing list.

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::mandate::policy_digest;
use ami_sweeper_core::model::{Image, Timestamp};
use ami_sweeper_core::planner::{plan, Action, Decision, Plan, Reason, LAPSING_WITHIN_DAYS};
use ami_sweeper_core::policy::Policy;
use ami_sweeper_core::time::parse_instant;

fn t(s: &str) -> Timestamp {
    parse_instant(s).unwrap()
}

const BASE: &str = r#""retention": {"min_age_days": 30}"#;

/// A one-rule policy (`min_age_days` 30) with these extra top-level fields.
fn with(extra: &str) -> Policy {
    policy(&format!("{{{BASE}{extra}}}"))
}

/// An image a year old at 2027-03-31: nothing but an exception keeps it.
fn old(id: &str) -> ami_sweeper_core::model::Image {
    img(id, id, 0).created(t("2026-03-01T00:00:00Z")).build()
}

fn tagged(id: &str, until: &str) -> Image {
    let mut i = old(id);
    i.tags.insert("ami-sweeper:keep-until", until);
    i
}

fn run(p: &Policy, images: Vec<Image>, now: &str) -> Plan {
    plan(
        p,
        &Inventory::new(images, Default::default()).unwrap(),
        t(now),
    )
}

fn get<'a>(p: &'a Plan, id: &str) -> &'a Decision {
    p.decisions.iter().find(|d| d.image_id == id).unwrap()
}

/// The deciding reason and action of `id` at each instant.
fn reasons_at(p: &Policy, images: &[Image], id: &str, instants: &[&str]) -> Vec<(Reason, Action)> {
    instants
        .iter()
        .map(|now| {
            let plan = run(p, images.to_vec(), now);
            let d = get(&plan, id);
            (d.reason(), d.action)
        })
        .collect()
}

const KEPT: (Reason, Action) = (Reason::Excepted, Action::Keep);
const GONE: (Reason, Action) = (Reason::Expired, Action::Deregister);

#[test]
fn a_tag_date_keeps_through_the_end_of_its_utc_day_then_the_image_is_decided_as_usual() {
    let images = [tagged("ami-1", "2027-03-31")];
    let got = reasons_at(
        &with(""),
        &images,
        "ami-1",
        &[
            "2027-03-01T00:00:00Z",
            "2027-03-31T23:59:59Z",
            "2027-04-01T00:00:00Z",
            "2027-04-02T00:00:00Z",
        ],
    );
    assert_eq!(got, [KEPT, KEPT, GONE, GONE]);
    let p = run(&with(""), images.to_vec(), "2027-03-31T12:00:00Z");
    let note = get(&p, "ami-1").exception.clone().unwrap();
    assert_eq!(note.source, "tag");
    assert_eq!(note.until, Some(t("2027-04-01T00:00:00Z")));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn a_tag_instant_keeps_until_that_instant_and_not_at_it() {
    let mut i = tagged("ami-1", "2027-03-31T12:00:00+02:00");
    i.tags.insert("ami-sweeper:keep-reason", "OPS-12 audit");
    let images = [i];
    let got = reasons_at(
        &with(""),
        &images,
        "ami-1",
        &[
            "2027-03-31T09:59:59Z",
            "2027-03-31T10:00:00Z",
            "2027-03-31T10:00:01Z",
        ],
    );
    assert_eq!(got, [KEPT, GONE, GONE]);
    let p = run(&with(""), images.to_vec(), "2027-03-31T09:00:00Z");
    let note = get(&p, "ami-1").exception.clone().unwrap();
    assert_eq!(note.reason.as_deref(), Some("OPS-12 audit"));
    assert_eq!(note.until, Some(t("2027-03-31T10:00:00Z")));
}

#[test]
fn an_unreadable_tag_keeps_the_image_and_the_plan_says_so() {
    for bad in ["31/03/2027", "2027-02-30", "next week", ""] {
        let p = run(
            &with(""),
            vec![tagged("ami-1", bad), old("ami-2")],
            "2030-01-01T00:00:00Z",
        );
        let d = get(&p, "ami-1");
        assert_eq!((d.reason(), d.action), KEPT, "{bad:?}");
        let note = d.exception.as_ref().unwrap();
        assert_eq!(note.until, None);
        assert!(note.problem.as_ref().unwrap().contains("kept"), "{note:?}");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].starts_with("ami-1: ami-sweeper:keep-until"));
        assert_eq!(get(&p, "ami-2").reason(), Reason::Expired);
    }
}

#[test]
fn a_policy_entry_keeps_the_images_it_names_until_its_date() {
    let p = with(
        r#", "exceptions": [
            {"image_ids": ["ami-0a"], "until": "2027-03-31", "reason": "OPS-1"},
            {"tags": {"retain": "audit-*"}, "until": "2027-04-15T00:00:00Z", "reason": "OPS-2"}]"#,
    );
    let mut by_tag = old("ami-0b");
    by_tag.tags.insert("retain", "audit-2026");
    let mut other_tag = old("ami-0c");
    other_tag.tags.insert("retain", "forever");
    let images = [old("ami-0a"), by_tag, other_tag];
    let instants = [
        "2027-03-31T23:59:59Z",
        "2027-04-01T00:00:00Z",
        "2027-04-14T23:59:59Z",
        "2027-04-15T00:00:00Z",
    ];
    assert_eq!(
        reasons_at(&p, &images, "ami-0a", &instants),
        [KEPT, GONE, GONE, GONE]
    );
    assert_eq!(
        reasons_at(&p, &images, "ami-0b", &instants),
        [KEPT, KEPT, KEPT, GONE]
    );
    assert_eq!(
        reasons_at(&p, &images, "ami-0c", &instants),
        [GONE, GONE, GONE, GONE],
        "the glob does not match"
    );
    let plan = run(&p, images.to_vec(), "2027-03-01T00:00:00Z");
    let note = get(&plan, "ami-0b").exception.clone().unwrap();
    assert_eq!(note.source, "exceptions[1]");
    assert_eq!(note.reason.as_deref(), Some("OPS-2"));
}

#[test]
fn exception_tags_match_like_exclude_tags() {
    // Any listed key with a matching value, the same globs (`*`, `?`, literal).
    let p = with(
        r#", "exceptions": [{"tags": {"ticket": "OPS-?", "hold": "*"},
            "until": "2027-04-01", "reason": "hold"}]"#,
    );
    let cases = [
        (vec![("ticket", "OPS-1")], true),
        (vec![("ticket", "OPS-12")], false),
        (vec![("hold", "")], true),
        (vec![("Hold", "x")], false),
        (vec![("other", "OPS-1")], false),
    ];
    for (tags, kept) in cases {
        let mut i = old("ami-1");
        for (k, v) in &tags {
            i.tags.insert(*k, *v);
        }
        let d = run(&p, vec![i], "2027-03-01T00:00:00Z");
        assert_eq!(
            get(&d, "ami-1").reason() == Reason::Excepted,
            kept,
            "{tags:?}"
        );
    }
}

#[test]
fn the_exception_that_holds_longest_decides() {
    let p = with(
        r#", "exceptions": [{"image_ids": ["ami-1"], "until": "2027-05-01", "reason": "OPS-3"}]"#,
    );
    let images = vec![tagged("ami-1", "2027-04-01")];
    let d = run(&p, images.clone(), "2027-03-01T00:00:00Z");
    let note = get(&d, "ami-1").exception.clone().unwrap();
    assert_eq!(
        (note.source.as_str(), note.until),
        ("exceptions[0]", Some(t("2027-05-02T00:00:00Z")))
    );
    // After the tag lapsed the policy entry still holds.
    let d = run(&p, images, "2027-04-15T00:00:00Z");
    assert_eq!(get(&d, "ami-1").reason(), Reason::Excepted);
}

#[test]
fn excepted_images_do_not_count_toward_keep_count() {
    let p = policy(r#"{"retention": {"min_age_days": 30, "keep_count": 1}}"#);
    let newest = img("ami-new", "app-3", 100)
        .tag("ami-sweeper:keep-until", "2099-01-01")
        .build();
    let images = vec![
        newest,
        img("ami-mid", "app-2", 200).build(),
        img("ami-old", "app-1", 300).build(),
    ];
    let d = plan(&p, &inventory(images), now());
    assert_eq!(get(&d, "ami-new").reason(), Reason::Excepted);
    assert_eq!(get(&d, "ami-mid").reason(), Reason::WithinKeepCount);
    assert_eq!(get(&d, "ami-old").reason(), Reason::Expired);
}

#[test]
fn an_exclude_tag_decides_before_an_exception_and_no_rule_means_not_selected() {
    let p = policy(
        r#"{"selection": {"names": ["app-*"], "exclude_tags": {"retain": "*"}},
            "retention": {"min_age_days": 30}}"#,
    );
    let images = vec![
        img("ami-1", "app-1", 300)
            .tag("retain", "yes")
            .tag("ami-sweeper:keep-until", "2099-01-01")
            .build(),
        img("ami-2", "other-1", 300)
            .tag("ami-sweeper:keep-until", "2099-01-01")
            .build(),
    ];
    let d = plan(&p, &inventory(images), now());
    assert_eq!(get(&d, "ami-1").reason(), Reason::ExcludedByTag);
    assert!(get(&d, "ami-1").exception.is_none());
    assert_eq!(get(&d, "ami-2").reason(), Reason::NotSelected);
}

#[test]
fn max_exception_days_refuses_a_longer_policy_entry_at_the_runs_instant() {
    let p = with(
        r#", "limits": {"max_exception_days": 90},
            "exceptions": [{"image_ids": ["ami-1"], "until": "2027-03-31", "reason": "OPS-4"}]"#,
    );
    // Through the end of 2027-03-31 is 2027-04-01T00:00Z: 90 days after 2027-01-01.
    assert!(p.check_exceptions_at(t("2027-01-01T00:00:00Z")).is_ok());
    let err = p
        .check_exceptions_at(t("2026-12-31T23:59:59Z"))
        .unwrap_err();
    assert_eq!(err.path, "exceptions[0].until");
    assert!(
        err.message.contains("max_exception_days (90)"),
        "{}",
        err.message
    );
    // Without the limit any horizon is accepted.
    let unbounded =
        with(r#", "exceptions": [{"image_ids": ["ami-1"], "until": "2099-01-01", "reason": "x"}]"#);
    assert!(unbounded
        .check_exceptions_at(t("2027-01-01T00:00:00Z"))
        .is_ok());
}

#[test]
fn a_tag_beyond_max_exception_days_still_keeps_its_image_and_is_reported() {
    let p = with(r#", "limits": {"max_exception_days": 30}"#);
    let images = vec![
        tagged("ami-far", "2027-06-01"),
        tagged("ami-near", "2027-03-20"),
    ];
    let d = run(&p, images, "2027-03-01T00:00:00Z");
    for id in ["ami-far", "ami-near"] {
        assert_eq!(get(&d, id).reason(), Reason::Excepted, "{id}");
    }
    let far = get(&d, "ami-far").exception.clone().unwrap();
    assert!(far.problem.unwrap().contains("max_exception_days (30)"));
    assert!(get(&d, "ami-near")
        .exception
        .as_ref()
        .unwrap()
        .problem
        .is_none());
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].starts_with("ami-far: "));
}

#[test]
fn the_lapsing_list_holds_exceptions_ending_within_fourteen_days_soonest_first() {
    let p = with(
        r#", "exceptions": [{"image_ids": ["ami-3"], "until": "2027-03-05", "reason": "OPS-5"}]"#,
    );
    let images = vec![
        tagged("ami-1", "2027-03-15T00:00:00Z"), // exactly 14 days: listed
        tagged("ami-2", "2027-03-15T00:00:01Z"), // a second later: not yet
        old("ami-3"),
        tagged("ami-4", "bad date"), // never lapses by itself
    ];
    let d = run(&p, images, "2027-03-01T00:00:00Z");
    let ids: Vec<&str> = d
        .lapsing(LAPSING_WITHIN_DAYS)
        .iter()
        .map(|d| d.image_id.as_str())
        .collect();
    assert_eq!(ids, ["ami-3", "ami-1"]);
}

#[test]
fn the_policy_digest_leaves_out_exceptions() {
    let plain = with("");
    let one =
        with(r#", "exceptions": [{"image_ids": ["ami-1"], "until": "2027-03-31", "reason": "a"}]"#);
    let other = with(
        r#", "exceptions": [{"tags": {"retain": "*"}, "until": "2030-01-01", "reason": "b"},
            {"image_ids": ["ami-2"], "until": "2027-01-01T00:00:00Z", "reason": "c"}]"#,
    );
    assert_eq!(policy_digest(&plain), policy_digest(&one));
    assert_eq!(policy_digest(&plain), policy_digest(&other));
    // Anything else still changes it.
    let limited = with(r#", "limits": {"max_exception_days": 30}"#);
    assert_ne!(policy_digest(&plain), policy_digest(&limited));
    // The exceptions themselves still serialize (the report and lint show them).
    let v = serde_json::to_value(&other).unwrap();
    assert_eq!(v["exceptions"][0]["until"], "2030-01-01");
}

#[test]
fn a_bad_exception_entry_is_refused_with_its_path() {
    let cases = [
        (
            r#"{"until": "2027-03-31", "reason": "x"}"#,
            "exceptions[0]: names no image",
        ),
        (
            r#"{"image_ids": ["ami-1"], "tags": {"a": "b"}, "until": "2027-03-31", "reason": "x"}"#,
            "exceptions[0]: give `image_ids` or `tags`, not both",
        ),
        (
            r#"{"image_ids": ["i-123"], "until": "2027-03-31", "reason": "x"}"#,
            "exceptions[0].image_ids[0]: \"i-123\" is not an AMI id",
        ),
        (
            r#"{"image_ids": ["ami-1"], "until": "2027-31-03", "reason": "x"}"#,
            "exceptions[0].until: \"2027-31-03\" is neither an ISO date",
        ),
        (
            r#"{"image_ids": ["ami-1"], "until": "2027-03-31", "reason": " "}"#,
            "exceptions[0].reason: must say why",
        ),
        (
            r#"{"image_ids": ["ami-1"], "until": "2027-03-31"}"#,
            "exceptions[0].reason: missing required field",
        ),
        (
            r#"{"tags": {"ami-sweeper:keep-until": "*"}, "until": "2027-03-31", "reason": "x"}"#,
            "exceptions[0].tags: \"ami-sweeper:keep-until\": `ami-sweeper:` tags",
        ),
        (
            r#"{"tags": {"": "*"}, "until": "2027-03-31", "reason": "x"}"#,
            "exceptions[0].tags: tag keys must not be empty",
        ),
    ];
    for (entry, want) in cases {
        let text = format!(r#"{{{BASE}, "exceptions": [{entry}]}}"#);
        let err = Policy::from_json(&text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{entry}: {err}");
    }
}

#[test]
fn lint_reports_exceptions_past_the_horizon_and_lapsed_ones_at_its_instant() {
    use ami_sweeper_core::policy::{lint, lint_at, Finding};
    let p = with(
        r#", "limits": {"max_exception_days": 30}, "exceptions": [
            {"image_ids": ["ami-1"], "until": "2027-03-10", "reason": "a"},
            {"image_ids": ["ami-2"], "until": "2027-06-01", "reason": "b"},
            {"image_ids": ["ami-3"], "until": "2027-02-28T00:00:00Z", "reason": "c"}]"#,
    );
    let found = lint_at(&p, t("2027-03-01T00:00:00Z"));
    assert_eq!(
        found,
        [
            Finding::ExceptionBeyondHorizon {
                exception: 1,
                max_days: 30
            },
            Finding::ExceptionLapsed {
                exception: 2,
                until: "2027-02-28T00:00:00Z".into()
            },
        ]
    );
    assert!(found[0].is_error() && !found[1].is_error());
    assert!(found[0].message().contains("exceptions[1]"));
    // The same instant a run would refuse the policy at.
    assert_eq!(
        p.check_exceptions_at(t("2027-03-01T00:00:00Z"))
            .unwrap_err()
            .path,
        "exceptions[1].until"
    );
    assert!(lint(&p).is_empty(), "the rules alone have nothing to say");
    // An exception lapses at its instant, not a moment later.
    let at_end = lint_at(&p, t("2027-03-11T00:00:00Z"));
    assert!(at_end.contains(&Finding::ExceptionLapsed {
        exception: 0,
        until: "2027-03-10".into()
    }));
}

#[test]
fn an_exception_image_id_in_upper_case_is_refused_not_silently_unmatched() {
    // AMI ids are lower-case hex: `ami-0A` would validate yet name no image, so the
    // image it was meant to keep would be deregistered.
    let text = format!(
        r#"{{{BASE}, "exceptions": [{{"image_ids": ["ami-0A"], "until": "2027-03-31", "reason": "x"}}]}}"#
    );
    match Policy::from_json(&text) {
        Err(e) => assert!(
            e.to_string().starts_with("exceptions[0].image_ids[0]"),
            "{e}"
        ),
        Ok(p) => assert_eq!(
            reasons_at(&p, &[old("ami-0a")], "ami-0a", &["2027-03-01T00:00:00Z"]),
            [KEPT],
            "an accepted id must name the image"
        ),
    }
}

#[test]
fn keep_until_odd_forms_keep_the_image_and_never_read_as_lapsed() {
    for v in [
        "2027-03-31t12:00:00z",
        "2027-03-31 12:00:00Z",
        "2027-03-31T12:00:00+14:00",
        " 2027-03-31\n",
        "2027-02-30",
        "9999-12-31",
        "",
        "  ",
        "2027-03-31T12:00Z",
        "20270331",
        "2027-W13",
        "+2027-3-31",
        "2027-3-31 ",
        "２０２７-03-31",
    ] {
        let images = [tagged("ami-1", v)];
        let got = reasons_at(&with(""), &images, "ami-1", &["2027-03-01T00:00:00Z"]);
        assert_eq!(got, [KEPT], "{v:?}");
    }
}
