//! The sweep's own retirement step never changes how the rules judge an image (issue 28,
//! item 3): over random multi-rule policies with `retire` stages (some rules selecting
//! on `state`, `public` or ami-sweeper's own tags), taking the step each decision asks
//! for (deprecate, disable, with the tags the sweep writes and what EC2 does) and
//! planning again at the same instant leaves every image with the rule and lineage that
//! decided it, every other image's decision as it was, and moves no `eligible_at` earlier.

use std::collections::BTreeMap;

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Usage};
use ami_sweeper_core::planner::{plan, Action, Decision, Reason};
use ami_sweeper_core::retire::{self, DEPRECATED_AT, DISABLED_AT, DISABLED_FROM};
use ami_sweeper_core::Policy;
use proptest::prelude::*;

prop_compose! {
    /// An image, some already in retirement (deprecated or disabled by ami-sweeper), some
    /// disabled by hand.
    fn arb_image(i: usize)(
        lineage in 0..3usize,
        age_days in 0..120i64,
        state in prop::sample::select(vec!["available", "available", "available", "disabled", "failed"]),
        app in prop::option::of(0..2usize),
        retain in prop::bool::weighted(0.1),
        public in prop::bool::weighted(0.3),
        retiring in 0..5usize,
        since in 0..20i64,
    ) -> Image {
        let mut b = img(
            &format!("ami-{i:04}"),
            &format!("{}-{}", ["web", "api", "batch"][lineage], 1000 - age_days),
            age_days,
        )
        .state(state);
        if let Some(a) = app { b = b.tag("app", ["web", "api"][a]); }
        if retain { b = b.tag("retain", "yes"); }
        if public { b = b.public(); }
        let at = ami_sweeper_core::time::format_instant(ago(since, 0));
        match retiring {
            1 => b = b.tag(DEPRECATED_AT, &at),
            2 => {
                b = b.tag(DEPRECATED_AT, &at).tag(DISABLED_AT, &at).state("disabled");
                if public { b = b.tag(DISABLED_FROM, "available public"); }
            }
            3 => {
                // Disabled by hand; ami-sweeper started its wait.
                b = b.tag(DISABLED_AT, &at).tag(DISABLED_FROM, "disabled").state("disabled");
            }
            _ => {}
        }
        let mut image = b.build();
        if retiring == 2 {
            image.public = false;
        }
        image
    }
}

prop_compose! {
    /// A rule `r<i>` with `retire` stages and, often, a `match` on what the sweep's own
    /// calls change: the state, `public`, ami-sweeper's tags.
    fn arb_rule(i: usize)(
        names in prop::sample::select(vec![r#"[]"#, r#"["web-*"]"#, r#"["api-*", "batch-*"]"#]),
        matches in prop::sample::select(vec![
            "",
            r#", "match": {"state": "disabled"}"#,
            r#", "match": {"state": "available"}"#,
            r#", "match": {"not": {"state": "disabled"}}"#,
            r#", "match": {"public": true}"#,
            r#", "match": {"all": [{"public": false}, {"state": "available"}]}"#,
            r#", "match": {"tag": {"key": "app"}}"#,
            r#", "match": {"not": {"tag": {"key": "retain"}}}"#,
            r#", "match": {"age_days": {"min": 30}}"#,
        ]),
        tags in prop::sample::select(vec![r#"{}"#, r#"{"app": "*"}"#, r#"{"team": "*"}"#]),
        exclude in prop::sample::select(vec![r#"{}"#, r#"{"retain": "*"}"#, r#"{"hold": "*"}"#]),
        min_age in 0..60u64,
        keep in 0..3u64,
        group in prop::sample::select(vec!["null", r#"{"tags": ["app"]}"#]),
        retire in prop::sample::select(vec![
            "{}".to_string(),
            r#"{"deprecate": true}"#.to_string(),
            r#"{"disable_for_days": 7}"#.to_string(),
            r#"{"deprecate": true, "disable_for_days": 14}"#.to_string(),
            r#"{"disable_for_days": 1}"#.to_string(),
        ]),
    ) -> String {
        let mut retention = format!(r#""min_age_days": {min_age}, "keep_count": {keep}"#);
        if group != "null" { retention.push_str(&format!(r#", "group_by": {group}"#)); }
        format!(
            r#"{{"name": "r{i}", "selection": {{"names": {names}, "tags": {tags}, "exclude_tags": {exclude}{matches}}},
                 "retention": {{{retention}}}, "retire": {retire}}}"#
        )
    }
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        (1..5usize).prop_flat_map(|n| (0..n).map(arb_rule).collect::<Vec<_>>()),
        prop::bool::ANY,
    )
        .prop_map(|(rules, skip_shared)| {
            policy(&format!(
                r#"{{"rules": [{}], "protection": {{"skip_shared": {skip_shared}}},
                    "acknowledge": ["no_minimum_age"]}}"#,
                rules.join(", ")
            ))
        })
}

fn arb_images() -> impl Strategy<Value = Vec<Image>> {
    (1..14usize).prop_flat_map(|n| (0..n).map(arb_image).collect::<Vec<_>>())
}

/// What the sweep is asked to do to an image that goes on retiring: its next step.
fn retiring_step(d: &Decision) -> bool {
    matches!(d.action, Action::Deprecate | Action::Disable)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn the_sweeps_own_retirement_step_never_moves_an_image_to_another_rule_or_nearer_its_end(
        images in arb_images(),
        policy in arb_policy(),
    ) {
        let before = plan(&policy, &Inventory::new(images.clone(), Usage::new()).unwrap(), now());
        let mut after_images = images.clone();
        let mut stepped = BTreeMap::new();
        for d in before.decisions.iter().filter(|d| retiring_step(d)) {
            let step = d.step.expect("a retirement action carries its call");
            let image = after_images.iter_mut().find(|i| i.id == d.image_id).unwrap();
            retire::take_step(image, step, now());
            stepped.insert(d.image_id.clone(), d);
        }
        let after = plan(&policy, &Inventory::new(after_images, Usage::new()).unwrap(), now());
        let by_id: BTreeMap<&str, &Decision> =
            before.decisions.iter().map(|d| (d.image_id.as_str(), d)).collect();
        for d in &after.decisions {
            let was = by_id[d.image_id.as_str()];
            prop_assert_eq!(&d.rule, &was.rule, "{}: its rule changed", &d.image_id);
            prop_assert_eq!(&d.lineage, &was.lineage, "{}: its lineage changed", &d.image_id);
            let Some(was) = stepped.get(&d.image_id) else {
                prop_assert_eq!(
                    (d.action, &d.reasons, d.eligible_at),
                    (was.action, &was.reasons, was.eligible_at),
                    "{}: another image's step changed its decision", &d.image_id
                );
                continue;
            };
            // Still condemned, in its next stage: never enabled again, never deregistered
            // before its wait is over.
            prop_assert!(
                matches!(d.reason(), Reason::Retiring | Reason::Expired),
                "{}: {:?} after {:?}", &d.image_id, d.reasons, was.action
            );
            if let Some(eligible) = was.eligible_at {
                prop_assert_eq!(d.action, Action::Keep, "{} waits", &d.image_id);
                prop_assert!(
                    d.eligible_at.is_some_and(|e| e >= eligible),
                    "{}: eligible {:?}, was {:?}", &d.image_id, d.eligible_at, eligible
                );
            }
        }
    }
}
