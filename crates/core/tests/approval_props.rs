//! Narrowing by an approved plan never widens: whatever a run narrowed by an approved set
//! acts on, the same run without the approval acts on with the same action, and the
//! approved set names it with that action; an image condemned now that the set does not
//! name is kept as `not_approved`; narrowing again only shrinks the set. The checker is
//! also run against two deliberately widening narrowings (a union of approved sets, and
//! approval by image regardless of action) to show that it finds each.

use crate::common::*;
use crate::mandate_props::{arb_estate, arb_policy};
use ami_sweeper_core::mandate::{Approved, ApprovedImage, Ask, Mandate};
use ami_sweeper_core::model::{Image, UsageKind, UsageRef};
use ami_sweeper_core::planner::{plan, Action, Reason};
use ami_sweeper_core::{Inventory, Policy, Usage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const REGION: &str = "us-east-1";
const ACTIONS: [Action; 4] = [
    Action::Deregister,
    Action::Deprecate,
    Action::Disable,
    Action::Enable,
];

/// One case: the estate, the policy, which images became in use after approval, the
/// approved set (drawn from the plan at approval time, plus (image, action)s of other
/// actions) and a second approved set a later hop narrows by.
#[derive(Debug, Clone)]
struct Case {
    images: Vec<Image>,
    policy: Policy,
    in_use_later: Vec<usize>,
    picks: Vec<(usize, usize, bool)>,
    second: Vec<(usize, usize, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    let picks = || prop::collection::vec((0..24usize, 0..4usize, any::<bool>()), 0..16);
    (
        arb_estate(),
        arb_policy(),
        prop::collection::vec(0..24usize, 0..4),
        picks(),
        picks(),
    )
        .prop_map(|(images, policy, in_use_later, picks, second)| Case {
            images,
            policy,
            in_use_later,
            picks,
            second,
        })
}

/// An approved set: each pick names an image and either the action the plan at approval
/// time gave it (`true`) or another action.
fn approved(
    images: &[Image],
    then: &ami_sweeper_core::Plan,
    picks: &[(usize, usize, bool)],
) -> Approved {
    picks
        .iter()
        .map(|&(i, a, planned)| {
            let id = images[i % images.len()].id.clone();
            let at_approval = then
                .decisions
                .iter()
                .find(|d| d.image_id == id)
                .map(|d| d.action)
                .filter(|a| *a != Action::Keep);
            let action = match (planned, at_approval) {
                (true, Some(a)) => a,
                _ => ACTIONS[a],
            };
            ApprovedImage {
                account: None,
                region: REGION.into(),
                image_id: id,
                action,
            }
        })
        .collect()
}

/// A way to narrow a mandate by an ask.
type Narrowing = fn(&Mandate, &Ask) -> Mandate;

/// ami-sweeper's.
fn by_mandate(m: &Mandate, ask: &Ask) -> Mandate {
    m.narrow(ask)
}

/// Deliberately wrong: a later narrowing adds its approved set to the earlier one.
fn by_union(m: &Mandate, ask: &Ask) -> Mandate {
    let mut n = m.narrow(ask);
    if let (Some(mine), Some(asked), Some(n)) = (&m.approved, &ask.approved, n.approved.as_mut()) {
        n.extend(mine.iter().cloned());
        n.extend(asked.iter().cloned());
    }
    n
}

/// Deliberately wrong: approval by image, whatever the action approved.
fn by_image_only(m: &Mandate, ask: &Ask) -> Mandate {
    let mut n = m.narrow(ask);
    if let Some(set) = n.approved.as_mut() {
        let every: Approved = set
            .iter()
            .flat_map(|a| {
                ACTIONS.iter().map(move |&action| ApprovedImage {
                    action,
                    ..a.clone()
                })
            })
            .collect();
        *set = every;
    }
    n
}

fn today(case: &Case) -> Inventory {
    let mut usage = Usage::new();
    for i in &case.in_use_later {
        let id = &case.images[i % case.images.len()].id;
        usage.add(
            id.clone(),
            UsageRef {
                kind: UsageKind::Instance,
                id: "i-later".into(),
            },
        );
    }
    Inventory::new(case.images.clone(), usage).unwrap()
}

/// The property for one case and one way of narrowing.
fn never_widens(narrowing: Narrowing, case: Case) -> Result<(), TestCaseError> {
    let then = plan(&case.policy, &inventory(case.images.clone()), ago(1, 0));
    let first = approved(&case.images, &then, &case.picks);
    let second = approved(&case.images, &then, &case.second);
    let ceiling = Mandate::ceiling(&case.policy, false, Some(REGION));
    let ask = |set: &Approved| Ask {
        approved: Some(set.clone()),
        ..Ask::default()
    };
    let outer = narrowing(&ceiling, &ask(&first));
    let inner = narrowing(&outer, &ask(&second));
    prop_assert!(outer.within(&ceiling).is_ok());
    prop_assert!(inner.within(&outer).is_ok());
    let inventory = today(&case);
    let unapproved = {
        let mut p = plan(&case.policy, &inventory, now());
        ceiling.restrict(&mut p, &inventory);
        p
    };
    for (m, sets) in [(&outer, vec![&first]), (&inner, vec![&first, &second])] {
        let mut p = plan(&case.policy, &inventory, now());
        m.restrict(&mut p, &inventory);
        for d in &p.decisions {
            let was = unapproved
                .decisions
                .iter()
                .find(|u| u.image_id == d.image_id)
                .expect("every image is decided");
            let named = |a: Action| {
                sets.iter().all(|s| {
                    s.contains(&ApprovedImage {
                        account: None,
                        region: REGION.into(),
                        image_id: d.image_id.clone(),
                        action: a,
                    })
                })
            };
            if d.action != Action::Keep {
                prop_assert_eq!(d.action, was.action, "{} widened", &d.image_id);
                prop_assert!(named(d.action), "{} acted on without approval", &d.image_id);
            } else if was.action != Action::Keep {
                // Kept as not approved, unless a set names it with another action too (an
                // id approved for two actions is approved for neither).
                let ambiguous = ACTIONS.iter().filter(|a| named(**a)).count() > 1;
                prop_assert!(
                    !named(was.action) || ambiguous,
                    "{} approved yet kept",
                    &d.image_id
                );
                prop_assert_eq!(d.reasons[0], Reason::NotApproved);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn narrowing_by_an_approved_plan_never_widens(c in case()) {
        never_widens(by_mandate, c)?;
    }
}

/// Runs the checker over a fixed seed; `true` when it finds a counterexample.
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
    runner.run(&case(), |c| never_widens(narrowing, c)).is_err()
}

#[test]
fn the_checker_finds_a_narrowing_that_unites_approved_sets() {
    assert!(finds_counterexample(by_union));
}

#[test]
fn the_checker_finds_an_approval_by_image_regardless_of_action() {
    assert!(finds_counterexample(by_image_only));
}

#[test]
fn the_checker_passes_the_mandates_narrowing_on_the_same_seed() {
    assert!(!finds_counterexample(by_mandate));
}
