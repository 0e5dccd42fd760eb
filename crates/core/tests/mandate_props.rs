//! The mandate's properties: narrowing only narrows, and what a trigger condemns is a
//! subset of what the nightly sweep of the same policy at the same instant condemns.
//! The subset checker is also run against two deliberately wrong narrowings (the
//! mistakes `scope_to_recipe` once made) to show that it finds each.

use std::collections::BTreeSet;

use crate::common::*;
use ami_sweeper_core::events::IMAGE_BUILDER_TAG;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::mandate::{AccountRule, Ask, Mandate, Scope, Stages};
use ami_sweeper_core::model::{Image, Timestamp};
use ami_sweeper_core::planner::{plan, Action, Plan};
use ami_sweeper_core::retire::DISABLED_AT;
use ami_sweeper_core::Policy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const RECIPES: [&str; 2] = ["web", "db"];
const ENVS: [&str; 2] = ["prod", "dev"];

fn recipe_prefix(recipe: &str) -> String {
    format!("arn:aws:imagebuilder:us-east-1:123456789012:image/{recipe}/")
}

prop_compose! {
    fn arb_image(i: usize)(
        recipe in 0..3usize,
        env in 0..2usize,
        age_days in 0..60i64,
        disabled_by_us in prop::bool::weighted(0.15),
    ) -> Image {
        let mut b = img(&format!("ami-{i:04}"), &format!("build-{i}"), age_days)
            .tag("env", ENVS[env]);
        if let Some(r) = RECIPES.get(recipe) {
            b = b.tag(IMAGE_BUILDER_TAG, &format!("{}1.0.{i}/1", recipe_prefix(r)));
        }
        if disabled_by_us {
            b = b.state("disabled").tag(DISABLED_AT, "2026-11-01T00:00:00Z");
        }
        b.build()
    }
}

pub(crate) fn arb_estate() -> impl Strategy<Value = Vec<Image>> {
    (1..24usize).prop_flat_map(|n| (0..n).map(arb_image).collect::<Vec<_>>())
}

prop_compose! {
    pub(crate) fn arb_policy()(
        selects in prop::option::of(0..2usize),
        keep in 0..3u64,
        grouped in any::<bool>(),
        min_age in 0..20u64,
        max in prop::option::of(0..6u64),
        disable in prop::option::of(1..10u64),
    ) -> Policy {
        let tags = selects.map_or(String::from("{}"), |r| {
            format!(r#"{{"{IMAGE_BUILDER_TAG}": "{}*"}}"#, recipe_prefix(RECIPES[r]))
        });
        let group = if grouped { r#", "group_by": {"tags": ["env"]}"# } else { "" };
        let limits = max.map_or(String::from("{}"), |m| format!(r#"{{"max_deregistrations": {m}}}"#));
        let retire = disable.map_or(String::from("{}"), |d| format!(r#"{{"disable_for_days": {d}}}"#));
        policy(&format!(
            r#"{{"dry_run": false, "selection": {{"tags": {tags}}},
                 "retention": {{"min_age_days": {min_age}, "keep_count": {keep}{group}}},
                 "limits": {limits}, "retire": {retire}, "acknowledge": ["no_minimum_age"]}}"#
        ))
    }
}

/// What a trigger asks: an Image Builder recipe, or the lineage of one image.
#[derive(Debug, Clone)]
enum Event {
    Recipe(usize),
    Lineage(usize),
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..2usize).prop_map(Event::Recipe),
        (0..24usize).prop_map(Event::Lineage)
    ]
}

fn scope_of(event: &Event, images: &[Image]) -> Scope {
    match event {
        Event::Recipe(r) => Scope {
            recipes: [recipe_prefix(RECIPES[*r])].into(),
            ..Scope::default()
        },
        Event::Lineage(i) => Scope {
            lineages: [images[i % images.len()].id.clone()].into(),
            ..Scope::default()
        },
    }
}

/// A way to make a trigger's plan from the configured policy and the trigger's scope.
type Narrowing = fn(&Policy, &Inventory, &Scope, Timestamp) -> Plan;

/// ami-sweeper's: the unscoped plan, restricted by the narrowed mandate.
fn by_mandate(policy: &Policy, inventory: &Inventory, scope: &Scope, now: Timestamp) -> Plan {
    let ceiling = Mandate::ceiling(policy, false, Some("us-east-1"));
    let mandate = ceiling.narrow(&Ask {
        scope: scope.clone(),
        ..Ask::default()
    });
    let mut p = plan(policy, inventory, now);
    mandate.restrict(&mut p, inventory);
    p
}

/// Deliberately wrong: the recipe requirement *replaces* the policy's own
/// `Ec2ImageBuilderArn` selection (the first mistake of the old `scope_to_recipe`).
fn replacing_the_selection(
    policy: &Policy,
    inventory: &Inventory,
    scope: &Scope,
    now: Timestamp,
) -> Plan {
    let mut p = policy.clone();
    for prefix in &scope.recipes {
        p.rules[0].selection.tags.insert(
            IMAGE_BUILDER_TAG.to_string(),
            ami_sweeper_core::policy::Glob::new(&format!("{prefix}*")),
        );
    }
    let lineage_only = Scope {
        recipes: BTreeSet::new(),
        ..scope.clone()
    };
    by_mandate(&p, inventory, &lineage_only, now)
}

/// Deliberately wrong: the scope drops `group_by`, so `keep_count` counts across the
/// whole recipe (the second mistake of the old `scope_to_recipe`).
fn dropping_the_groups(
    policy: &Policy,
    inventory: &Inventory,
    scope: &Scope,
    now: Timestamp,
) -> Plan {
    let mut p = policy.clone();
    if !scope.recipes.is_empty() {
        p.rules[0].retention.group_by = None;
    }
    by_mandate(&p, inventory, scope, now)
}

fn condemning(a: Action) -> bool {
    matches!(a, Action::Deregister | Action::Deprecate | Action::Disable)
}

/// The subset property for one case: every image the trigger's plan condemns (or
/// enables), the nightly plan condemns (or enables) with the same action.
fn subset(
    narrowing: Narrowing,
    (images, policy, event): (Vec<Image>, Policy, Event),
) -> Result<(), TestCaseError> {
    let inventory = inventory(images.clone());
    let nightly = plan(&policy, &inventory, now());
    let scope = scope_of(&event, &images);
    let triggered = narrowing(&policy, &inventory, &scope, now());
    for d in &triggered.decisions {
        if condemning(d.action) || d.action == Action::Enable {
            let full = nightly
                .decisions
                .iter()
                .find(|n| n.image_id == d.image_id)
                .expect("every image is decided");
            prop_assert_eq!(
                full.action,
                d.action,
                "{} is {:?} under the trigger but {:?} at night",
                &d.image_id,
                d.action,
                full.action
            );
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = (Vec<Image>, Policy, Event)> {
    (arb_estate(), arb_policy(), arb_event())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_trigger_condemns_a_subset_of_the_nightly_sweep(c in case()) {
        subset(by_mandate, c)?;
    }

    #[test]
    fn a_scoped_run_never_enables(c in case()) {
        let (images, policy, event) = c;
        let inventory = inventory(images.clone());
        let p = by_mandate(&policy, &inventory, &scope_of(&event, &images), now());
        prop_assert!(p.decisions.iter().all(|d| d.action != Action::Enable));
    }
}

/// Runs the subset checker over a fixed seed; `true` when it finds a counterexample.
fn finds_counterexample(narrowing: Narrowing) -> bool {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner.run(&case(), |c| subset(narrowing, c)).is_err()
}

#[test]
fn the_checker_finds_a_recipe_scope_that_replaces_the_selection() {
    assert!(finds_counterexample(replacing_the_selection));
}

#[test]
fn the_checker_finds_a_recipe_scope_that_drops_the_groups() {
    assert!(finds_counterexample(dropping_the_groups));
}

#[test]
fn the_checker_passes_the_mandates_narrowing_on_the_same_seed() {
    assert!(!finds_counterexample(by_mandate));
}

// Narrowing only narrows: whatever a narrowed mandate admits (account, region, stage,
// image and action), the mandate it came from admits.

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{i}").repeat(12)).collect()
}

prop_compose! {
    fn arb_ask()(
        dry_run in any::<bool>(),
        regions in prop::option::of(prop::sample::subsequence(vec!["us-east-1", "eu-west-1", "ap-south-1"], 0..3)),
        accounts in prop::option::of(prop::sample::subsequence(ids(5), 0..5)),
        recipe in prop::option::of(0..2usize),
        lineage in prop::option::of(0..24usize),
        images in prop::option::of(prop::collection::btree_set(0..24usize, 0..6)),
        stages in prop::option::of((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())),
    ) -> Ask {
        Ask {
            dry_run,
            regions: regions.map(|r| r.into_iter().map(str::to_string).collect()),
            accounts: accounts.map(|a| a.into_iter().collect()),
            scope: Scope {
                recipes: recipe.map(|r| recipe_prefix(RECIPES[r])).into_iter().collect(),
                lineages: lineage.map(|i| format!("ami-{i:04}")).into_iter().collect(),
                images: images.map(|s| s.into_iter().map(|i| format!("ami-{i:04}")).collect()),
            },
            stages: stages.map(|(deregister, retire, reenable, reconcile)| Stages {
                deregister, retire, reenable, reconcile,
            }),
            approved: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn narrowing_never_admits_what_the_input_did_not(
        images in arb_estate(),
        policy in arb_policy(),
        first in arb_ask(),
        second in arb_ask(),
        force_dry_run in any::<bool>(),
    ) {
        let mut policy = policy;
        policy.regions = Some(vec!["us-east-1".into(), "eu-west-1".into()]);
        policy.accounts = Some(ami_sweeper_core::policy::Accounts::List(ids(3)));
        let ceiling = Mandate::ceiling(&policy, force_dry_run, None);
        let outer = ceiling.narrow(&first);
        let inner = outer.narrow(&second);
        prop_assert!(inner.within(&outer).is_ok());
        prop_assert!(outer.within(&ceiling).is_ok());
        prop_assert!(inner.dry_run || !outer.dry_run);
        for r in ["us-east-1", "eu-west-1", "ap-south-1"] {
            prop_assert!(inner.admits_region(r).is_err() || outer.admits_region(r).is_ok());
        }
        for a in ids(5).iter().map(String::as_str).map(Some).chain([None]) {
            prop_assert!(inner.admits_account(a, None).is_err() || outer.admits_account(a, None).is_ok());
        }
        prop_assert!(matches!(inner.accounts, AccountRule::List(_)));
        let inventory = inventory(images);
        let mut wide = plan(&policy, &inventory, now());
        let mut narrow = wide.clone();
        outer.restrict(&mut wide, &inventory);
        inner.restrict(&mut narrow, &inventory);
        for d in narrow.decisions.iter().filter(|d| d.action != Action::Keep) {
            let w = wide.decisions.iter().find(|w| w.image_id == d.image_id);
            prop_assert_eq!(w.map(|w| w.action), Some(d.action), "{} widened", &d.image_id);
        }
    }
}

// Several rules: a trigger's scope narrows the plan the whole policy made, so it never
// moves an image to another rule (and so to another retention).

prop_compose! {
    /// Two rules: images of one recipe, then every other image, each with its own
    /// retention.
    fn arb_rules_policy()(
        recipe in 0..2usize,
        keep in (0..3u64, 0..3u64),
        min_age in (0..20u64, 0..20u64),
        grouped in any::<bool>(),
        max in prop::option::of(0..6u64),
    ) -> Policy {
        let group = if grouped { r#", "group_by": {"tags": ["env"]}"# } else { "" };
        let limits = max.map_or(String::from("{}"), |m| format!(r#"{{"max_deregistrations": {m}}}"#));
        policy(&format!(
            r#"{{"dry_run": false, "rules": [
                 {{"name": "built", "selection": {{"tags": {{"{IMAGE_BUILDER_TAG}": "{}*"}}}},
                   "retention": {{"min_age_days": {}, "keep_count": {}{group}}}}},
                 {{"name": "rest", "retention": {{"min_age_days": {}, "keep_count": {}{group}}}}}],
                 "limits": {limits}, "acknowledge": ["no_minimum_age"]}}"#,
            recipe_prefix(RECIPES[recipe]), min_age.0, keep.0, min_age.1, keep.1
        ))
    }
}

fn rules_case() -> impl Strategy<Value = (Vec<Image>, Policy, Event)> {
    (arb_estate(), arb_rules_policy(), arb_event())
}

/// The subset property, and every image the trigger's plan decides carries the rule the
/// nightly plan gives it.
fn same_rules(
    narrowing: Narrowing,
    (images, policy, event): (Vec<Image>, Policy, Event),
) -> Result<(), TestCaseError> {
    subset(narrowing, (images.clone(), policy.clone(), event.clone()))?;
    let inventory = inventory(images.clone());
    let nightly = plan(&policy, &inventory, now());
    let triggered = narrowing(&policy, &inventory, &scope_of(&event, &images), now());
    for d in &triggered.decisions {
        let full = nightly
            .decisions
            .iter()
            .find(|n| n.image_id == d.image_id)
            .unwrap();
        prop_assert_eq!(
            &d.rule,
            &full.rule,
            "{} moved from rule {:?} to {:?} under the trigger",
            &d.image_id,
            &full.rule,
            &d.rule
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_trigger_never_moves_an_image_to_another_rule(c in rules_case()) {
        same_rules(by_mandate, c)?;
    }
}

fn finds_rule_counterexample(narrowing: Narrowing) -> bool {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(&rules_case(), |c| same_rules(narrowing, c))
        .is_err()
}

/// Narrowing by rewriting the first rule's selection (the recipe requirement replacing
/// its own) moves the scope's images out of the rule that decides them at night.
#[test]
fn the_rule_checker_finds_a_scope_that_rewrites_a_rules_selection() {
    assert!(finds_rule_counterexample(replacing_the_selection));
}

#[test]
fn the_rule_checker_passes_the_mandates_narrowing_on_the_same_seed() {
    assert!(!finds_rule_counterexample(by_mandate));
}
