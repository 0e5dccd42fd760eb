//! Continuation's properties, beside the mandate's: a continuation never widens its
//! mandate, and a chain's next link, planned at the chain's instant from what the earlier
//! link left, acts only on images the chain's first plan condemned and the earlier link
//! did not get to; `max_deregistrations` holds over the chain; no retirement stage is
//! advanced twice.

use std::collections::BTreeSet;

use crate::common::*;
use crate::mandate_props::arb_estate;
use ami_sweeper_core::chain::{
    continuation_mandate, hold_advanced, remaining_limit, Chain, ChainTotals,
};
use ami_sweeper_core::mandate::{Ask, Mandate, Scope, Stages};
use ami_sweeper_core::model::{Image, ImageState};
use ami_sweeper_core::planner::{plan, Action, Plan};
use ami_sweeper_core::retire::{DEPRECATED_AT, DISABLED_AT};
use ami_sweeper_core::time::format_instant;
use ami_sweeper_core::Policy;
use proptest::prelude::*;

prop_compose! {
    fn arb_ask()(
        dry_run in any::<bool>(),
        regions in prop::option::of(prop::collection::btree_set(
            prop::sample::select(vec!["us-east-1", "eu-west-1"]), 0..3)),
        stages in prop::option::of(any::<(bool, bool, bool, bool)>()),
        images in prop::option::of(prop::collection::btree_set(0..24usize, 0..4)),
    ) -> Ask {
        Ask {
            dry_run,
            regions: regions.map(|r| r.into_iter().map(str::to_string).collect()),
            accounts: None,
            scope: Scope {
                images: images.map(|s| s.into_iter().map(|i| format!("ami-{i:04}")).collect()),
                ..Scope::default()
            },
            stages: stages.map(|(deregister, retire, reenable, reconcile)| Stages {
                deregister, retire, reenable, reconcile,
            }),
            approved: None,
        }
    }
}

prop_compose! {
    /// Policies with every retirement shape: none, deprecate, disable, both.
    fn arb_policy()(
        keep in 0..3u64,
        min_age in 0..20u64,
        max in prop::option::of(0..6u64),
        deprecate in any::<bool>(),
        disable in prop::option::of(1..10u64),
    ) -> Policy {
        let limits = max.map_or(String::from("{}"), |m| format!(r#"{{"max_deregistrations": {m}}}"#));
        let disable = disable.map_or(String::new(), |d| format!(r#", "disable_for_days": {d}"#));
        policy(&format!(
            r#"{{"dry_run": false, "regions": ["us-east-1"],
                 "retention": {{"min_age_days": {min_age}, "keep_count": {keep}}},
                 "limits": {limits}, "retire": {{"deprecate": {deprecate}{disable}}},
                 "acknowledge": ["no_minimum_age"]}}"#
        ))
    }
}

fn acted(p: &Plan) -> Vec<(String, Action)> {
    p.decisions
        .iter()
        .filter(|d| d.action != Action::Keep)
        .map(|d| (d.image_id.clone(), d.action))
        .collect()
}

/// What a link that stopped after `done` of its plan's actions leaves in the account:
/// deregistered images gone, retirement stages stamped with the plan's instant (as
/// ami-sweeper writes them). Returns the estate and the images deregistered.
fn after_link(
    images: &[Image],
    actions: &[(String, Action)],
    done: usize,
    p: &Plan,
) -> (Vec<Image>, u64) {
    let stamp = format_instant(p.now);
    let mut out: Vec<Image> = images.to_vec();
    let mut deregistered = 0;
    for (id, action) in actions.iter().take(done) {
        let i = out
            .iter()
            .position(|i| &i.id == id)
            .expect("planned images exist");
        match action {
            Action::Deregister => {
                out.remove(i);
                deregistered += 1;
            }
            Action::Deprecate => {
                out[i].tags.insert(DEPRECATED_AT, &stamp);
            }
            Action::Disable => {
                out[i].tags.insert(DISABLED_AT, &stamp);
                out[i].state = ImageState::Disabled;
            }
            Action::Enable => {
                out[i].tags.remove(DISABLED_AT);
                out[i].tags.remove(DEPRECATED_AT);
                out[i].state = ImageState::Available;
            }
            Action::Keep => {}
        }
    }
    (out, deregistered)
}

/// The next link's plan, as `continuation::run_link` makes it.
fn next_link(policy: &Policy, mandate: &Mandate, estate: Vec<Image>, chain: &Chain) -> Plan {
    let mut p = policy.clone();
    p.limits.max_deregistrations = remaining_limit(policy.limits.max_deregistrations, Some(chain));
    let inv = inventory(estate);
    let at = chain.planned_at().expect("a readable instant");
    let mut next = plan(&p, &inv, at);
    continuation_mandate(mandate).restrict(&mut next, &inv);
    hold_advanced(&mut next, &inv, at);
    next
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_continuation_never_widens_its_mandate(policy in arb_policy(), ask in arb_ask()) {
        let ceiling = Mandate::ceiling(&policy, false, Some("us-east-1"));
        let m = ceiling.narrow(&ask);
        let c = continuation_mandate(&m);
        prop_assert!(c.within(&m).is_ok(), "{:?}", c.within(&m));
        prop_assert!(c.within(&ceiling).is_ok(), "{:?}", c.within(&ceiling));
        prop_assert!(m.dry_run <= c.dry_run);
        prop_assert!(c.regions.is_subset(&m.regions));
        // Reconciliation goes on in a continuation (the next link deletes what the last
        // one's deadline left), but only where the link itself reconciled.
        prop_assert_eq!(c.stages.reconcile, m.stages.reconcile);
        // A continuation of a continuation asks for nothing more.
        prop_assert_eq!(continuation_mandate(&c), c);
    }

    #[test]
    fn a_chain_acts_only_on_what_its_first_plan_condemned_and_left(
        images in arb_estate(),
        policy in arb_policy(),
        done in 0..8usize,
    ) {
        let t0 = now();
        let inv = inventory(images.clone());
        let mandate = Mandate::ceiling(&policy, false, Some("us-east-1"));
        let mut first = plan(&policy, &inv, t0);
        mandate.restrict(&mut first, &inv);
        let first_acts = acted(&first);
        // A first link's re-enable is covered too: keep_count counts retiring images, so an
        // image enabled again does not let the next link condemn an older one.
        let (estate, deregistered) = after_link(&images, &first_acts, done, &first);
        let chain = Chain {
            link: 1,
            planned_at: format_instant(t0),
            continues: "reports/r/a/us-east-1.json".into(),
            totals: ChainTotals { deregistered, ..ChainTotals::default() },
        };
        let second = next_link(&policy, &mandate, estate, &chain);
        let condemned: BTreeSet<&String> = first_acts.iter().map(|(id, _)| id).collect();
        let done_ids: BTreeSet<&String> = first_acts.iter().take(done).map(|(id, _)| id).collect();
        for (id, action) in acted(&second) {
            prop_assert!(condemned.contains(&id), "{id} ({action:?}) was not in the chain's plan");
            prop_assert!(!done_ids.contains(&id), "{id} ({action:?}) was advanced twice in one chain");
        }
        if let Some(max) = policy.limits.max_deregistrations {
            let more = acted(&second).iter().filter(|(_, a)| *a == Action::Deregister).count() as u64;
            prop_assert!(deregistered + more <= max, "{deregistered} + {more} > {max}");
        }
    }
}
