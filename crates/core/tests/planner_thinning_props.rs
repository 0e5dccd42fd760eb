//! The thinning property over simulated years of nightly runs: images are added each
//! night (at any hour since the previous run, so periods split at UTC midnights), some
//! are deleted by hand, some are protected, some carry an expiring exception (the
//! `ami-sweeper:keep-until` tag, or the policy's `exceptions` list) that lapses while the
//! simulation runs, and each night's
//! plan is carried out before the next (deregistrations, and the `retire` stages'
//! deprecations and disables, which the rules must see through). Two rules thin two
//! lineages with their own windows. No image kept by thinning is later condemned by
//! thinning while the same window still covers it, and each period of a window keeps at
//! most one image by thinning (exactly one when the period has no image left in a younger
//! window and no excepted image in the window).
//!
//! The property is also run, over a fixed seed, against two deliberately unstable
//! choices the issue names (the oldest image of a period; the newest of the period's
//! images in the same window, recomputed each night): it must find each one out, and
//! must pass the planner on the same seed.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Timestamp, Usage, UsageKind, UsageRef};
use ami_sweeper_core::planner::{plan, Action, Reason};
use ami_sweeper_core::retire::take_step;
use ami_sweeper_core::thinning::{window_of, Period, Window};
use ami_sweeper_core::time::parse_instant;
use proptest::prelude::*;

const UNITS: [Period; 5] = [
    Period::Day,
    Period::Week,
    Period::Month,
    Period::Quarter,
    Period::Year,
];

/// The two lineages, each decided by its own rule (selected by the `app` tag).
const APPS: [&str; 2] = ["web", "api"];

/// Windows in increasing order of unit, each no shorter than its unit's longest period
/// (the lint's condition for a stable window), optionally ending with `none`.
fn arb_windows() -> impl Strategy<Value = Vec<Window>> {
    (
        prop::sample::subsequence(UNITS.to_vec(), 1..=3),
        prop::collection::vec(0..20u64, 4),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(units, slack, none)| {
            let mut out: Vec<Window> = Vec::new();
            let mut units: Vec<Period> = units;
            if none {
                units.push(Period::None);
            }
            for (k, unit) in units.into_iter().enumerate() {
                let floor = out.last().map_or(1, |w| w.after_days + 1);
                let after_days = floor.max(unit.max_days()) + slack[k.min(3)];
                out.push(Window {
                    after_days,
                    keep_one_per: unit,
                });
            }
            out
        })
}

/// One rule's retention and retirement: its windows, `keep_count`, `min_age_days`, and
/// `retire` (none, deprecate first, or disable for some days).
#[derive(Debug, Clone)]
struct RuleSpec {
    windows: Vec<Window>,
    keep_count: u64,
    min_age: u64,
    retire: &'static str,
}

fn arb_rule() -> impl Strategy<Value = RuleSpec> {
    (
        arb_windows(),
        0..3u64,
        1..10u64,
        prop::sample::select(vec![
            "{}",
            r#"{"deprecate": true}"#,
            r#"{"disable_for_days": 3}"#,
            r#"{"deprecate": true, "disable_for_days": 2}"#,
        ]),
    )
        .prop_map(|(windows, keep_count, min_age, retire)| RuleSpec {
            windows,
            keep_count,
            min_age,
            retire,
        })
}

/// One night: which lineages get an image (and its seconds before the run), whether a
/// person deletes a present image (by position), how new images are protected, whether
/// they carry an exception (the tag, `keep_for` days on; or the policy's `hold` tag), and
/// the run's minutes past its hour.
#[derive(Debug, Clone)]
struct Night {
    add: [bool; 2],
    secs: u32,
    delete: Option<usize>,
    protect: u8,
    keep_for: Option<u8>,
    jitter: u32,
}

fn arb_night() -> impl Strategy<Value = Night> {
    (
        [prop::bool::weighted(0.85), prop::bool::weighted(0.6)],
        // Made since the previous run (whose minutes past the hour are under 7,200 s).
        0..79_200u32,
        prop::option::weighted(0.08, 0..64usize),
        0..40u8,
        prop::option::weighted(0.12, 0..120u8),
        0..7_200u32,
    )
        .prop_map(|(add, secs, delete, protect, keep_for, jitter)| Night {
            add,
            secs,
            delete,
            protect,
            keep_for,
            jitter,
        })
}

/// What the property remembers of an image kept by thinning: the window that kept it.
type KeptIn = BTreeMap<String, u64>;

/// Per period of one lineage and window: images kept by thinning, an image in the window,
/// an image in a younger window, an excepted image in the window.
type PeriodSeen = (usize, bool, bool, bool);

fn check_night(
    planner: Planner,
    rules: &[RuleSpec],
    images: &[Image],
    usage: &Usage,
    now: Timestamp,
    kept_in: &mut KeptIn,
    policy: &ami_sweeper_core::Policy,
) -> Result<Vec<(String, Action, Option<ami_sweeper_core::retire::RetireStep>)>, TestCaseError> {
    let inventory = Inventory::new(images.to_vec(), usage.clone()).unwrap();
    let p = planner(policy, &inventory, now);
    let by_id: BTreeMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
    // Stability: kept by a window once, never condemned by thinning (thinned, or retired
    // in stages towards deregistration) while that window covers it.
    for d in &p.decisions {
        let window = d.thinning.as_ref().map(|n| n.after_days);
        let condemned = matches!(d.reasons[0], Reason::Thinned | Reason::Retiring);
        if let (Some(w), Some(prev)) = (window, kept_in.get(&d.image_id)) {
            prop_assert!(
                !(w == *prev && condemned),
                "{} was kept by the window after {} days and is condemned in it at {now}: {:?}",
                d.image_id,
                w,
                d.reasons
            );
        }
        if d.reasons.contains(&Reason::KeptByThinning) {
            kept_in.insert(d.image_id.clone(), window.unwrap());
        }
    }
    // Per lineage, window and period: at most one kept by thinning; exactly one when no
    // counted image of the period is still in a younger window and none is excepted.
    let counted = |i: &Image| i.tags.get("retain").is_none();
    for (app, rule) in APPS.iter().zip(rules) {
        let windows = &rule.windows;
        for (w, win) in windows.iter().enumerate() {
            let unit = win.keep_one_per;
            if unit == Period::None {
                continue;
            }
            let mut periods: BTreeMap<i64, PeriodSeen> = BTreeMap::new();
            for d in &p.decisions {
                let img = by_id[d.image_id.as_str()];
                if img.tags.get("app") != Some(*app) || !counted(img) {
                    continue;
                }
                let key = unit.key(img.creation_date).unwrap();
                let at = window_of(windows, img.creation_date, now);
                let e = periods.entry(key).or_default();
                if at == Some(w) {
                    e.1 = true;
                    e.0 += usize::from(d.reasons.contains(&Reason::KeptByThinning));
                    e.3 |= d.reasons[0] == Reason::Excepted;
                } else if at.is_none_or(|a| a < w) {
                    e.2 = true;
                }
            }
            for (key, (kept, in_window, younger, excepted)) in periods {
                prop_assert!(kept <= 1, "{app}: period {key} of window {w} keeps {kept}");
                if in_window && !younger && !excepted {
                    prop_assert_eq!(
                        kept,
                        1,
                        "{}: period {} of window {} at {}",
                        app,
                        key,
                        w,
                        now
                    );
                }
            }
        }
    }
    Ok(p.decisions
        .iter()
        .filter(|d| d.action != Action::Keep)
        .map(|d| (d.image_id.clone(), d.action, d.step))
        .collect())
}

/// The policy: one thinned rule per lineage, a `retain` exclude tag, and an exception
/// for images tagged `hold` until `hold_until`.
fn policy_of(rules: &[RuleSpec], hold_until: &str) -> ami_sweeper_core::Policy {
    let rules: Vec<String> = APPS
        .iter()
        .zip(rules)
        .map(|(app, r)| {
            format!(
                r#"{{"name": "{app}", "selection": {{"tags": {{"app": "{app}"}},
                    "exclude_tags": {{"retain": "*"}}}},
                    "retention": {{"min_age_days": {}, "keep_count": {},
                    "group_by": {{"tags": ["app"]}}, "thin": {}}}, "retire": {}}}"#,
                r.min_age,
                r.keep_count,
                serde_json::to_string(&r.windows).unwrap(),
                r.retire
            )
        })
        .collect();
    policy(&format!(
        r#"{{"rules": [{}], "exceptions": [{{"tags": {{"hold": "*"}}, "until": "{hold_until}",
            "reason": "the simulation's hold"}}]}}"#,
        rules.join(", ")
    ))
}

/// One simulated estate: the two rules, the first night, the night the `hold` exception
/// lapses, and the nights.
type Case = (Vec<RuleSpec>, i64, i64, Vec<Night>);

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(arb_rule(), 2),
        0..800i64,
        0..420i64,
        prop::collection::vec(arb_night(), 420),
    )
}

/// Makes a plan: the planner's, or a deliberately wrong one.
type Planner =
    fn(&ami_sweeper_core::Policy, &Inventory, Timestamp) -> ami_sweeper_core::planner::Plan;

/// Runs the nights of `case` under `planner`, checking each night's plan.
fn simulate(planner: Planner, case: Case) -> Result<(), TestCaseError> {
    let (rules, start_day, hold_night, nights) = case;
    let start = parse_instant("2026-06-01T12:00:00Z").unwrap() + chrono::TimeDelta::days(start_day);
    let hold_until = (start + chrono::TimeDelta::days(hold_night))
        .format("%Y-%m-%d")
        .to_string();
    let policy = policy_of(&rules, &hold_until);
    let mut images: Vec<Image> = Vec::new();
    let mut usage = Usage::new();
    let mut kept_in = KeptIn::new();
    for (n, night) in nights.iter().enumerate() {
        let now = start
            + chrono::TimeDelta::days(n as i64)
            + chrono::TimeDelta::seconds(i64::from(night.jitter));
        for (l, app) in APPS.iter().enumerate() {
            if !night.add[l] {
                continue;
            }
            let id = format!("ami-{app}-{n:04}");
            let created = now - chrono::TimeDelta::seconds(i64::from(night.secs));
            let mut b = img(&id, &id, 0).created(created).tag("app", app);
            if night.protect == 0 {
                b = b.tag("retain", "audit");
            }
            if night.protect == 1 {
                usage.add(
                    &id,
                    UsageRef {
                        kind: UsageKind::Instance,
                        id: format!("i-{n}"),
                    },
                );
            }
            if night.protect == 2 {
                b = b.tag("hold", "OPS-1");
            }
            if let Some(days) = night.keep_for {
                let until = now + chrono::TimeDelta::days(i64::from(days));
                b = b.tag(
                    "ami-sweeper:keep-until",
                    &until.format("%Y-%m-%d").to_string(),
                );
            }
            images.push(b.build());
        }
        if let Some(k) = night.delete.filter(|_| !images.is_empty()) {
            images.remove(k % images.len());
        }
        let acted = check_night(planner, &rules, &images, &usage, now, &mut kept_in, &policy)?;
        // Carry the plan out: deregistered images go, retirement steps are taken.
        let mut gone = BTreeSet::new();
        for (id, action, step) in acted {
            match (action, step) {
                (Action::Deregister, _) => {
                    gone.insert(id);
                }
                (_, Some(step)) => {
                    let i = images.iter_mut().find(|i| i.id == id).unwrap();
                    take_step(i, step, now);
                }
                (_, None) => {}
            }
        }
        images.retain(|i| !gone.contains(&i.id));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn nightly_thinning_is_stable_and_keeps_one_per_period(c in case()) {
        simulate(plan, c)?;
    }
}

/// Which image a deliberately wrong thinning keeps of a period.
#[derive(Clone, Copy)]
enum Wrong {
    /// The oldest of the period's images its rule counts, whatever window they are in.
    OldestOfPeriod,
    /// The newest of the period's images in the same window, recomputed each night (the
    /// period's images still in a younger window are left out).
    NewestInWindow,
}

/// The planner's plan with thinning's choice of representative replaced by `wrong`:
/// each image of a window that thinning decided (kept by thinning, or thinned and kept
/// by nothing else) is kept if `wrong` picks it, else thinned and deregistered.
fn rethin(wrong: Wrong, mut p: ami_sweeper_core::planner::Plan) -> ami_sweeper_core::planner::Plan {
    let early = |r: Reason| {
        matches!(
            r,
            Reason::NotSelected
                | Reason::ExcludedByTag
                | Reason::Excepted
                | Reason::BackupManaged
                | Reason::Unsettled
        )
    };
    let snapshot = p.decisions.clone();
    for d in &mut p.decisions {
        let Some(note) = d.thinning.clone() else {
            continue;
        };
        let unit = note.keep_one_per;
        if unit == Period::None {
            continue;
        }
        let key = unit.key(d.creation_date);
        let peers = snapshot.iter().filter(|e| {
            e.rule == d.rule
                && !early(e.reasons[0])
                && unit.key(e.creation_date) == key
                && match wrong {
                    Wrong::OldestOfPeriod => true,
                    Wrong::NewestInWindow => e
                        .thinning
                        .as_ref()
                        .is_some_and(|n| n.after_days == note.after_days),
                }
        });
        let age = |e: &&ami_sweeper_core::planner::Decision| (e.creation_date, e.image_id.clone());
        let pick = match wrong {
            Wrong::OldestOfPeriod => peers.min_by_key(age),
            Wrong::NewestInWindow => {
                peers.max_by_key(|e| (e.creation_date, std::cmp::Reverse(e.image_id.clone())))
            }
        };
        let kept = pick.is_some_and(|e| e.image_id == d.image_id);
        // Thinning's own reasons go (a thinned image's retirement stage with them), and
        // the wrong choice decides with whatever else keeps the image.
        d.reasons.retain(|r| {
            !matches!(
                r,
                Reason::KeptByThinning | Reason::Thinned | Reason::Retiring
            )
        });
        if kept {
            d.reasons.push(Reason::KeptByThinning);
        } else if d.reasons.is_empty() {
            d.reasons.push(Reason::Thinned);
        }
        if d.reasons[0] == Reason::Thinned {
            d.action = Action::Deregister;
        } else {
            d.action = Action::Keep;
        }
        d.step = None;
    }
    p
}

/// Runs the property over a fixed seed (a few estates, no shrinking: each is a year of
/// nights); `true` when it finds a counterexample.
fn finds_counterexample(planner: Planner) -> bool {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 12,
            max_shrink_iters: 0,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner.run(&case(), |c| simulate(planner, c)).is_err()
}

#[test]
fn the_property_catches_the_oldest_image_of_a_period_as_its_representative() {
    assert!(finds_counterexample(|policy, inventory, now| {
        rethin(Wrong::OldestOfPeriod, plan(policy, inventory, now))
    }));
}

#[test]
fn the_property_catches_a_representative_recomputed_from_the_windows_current_newest() {
    assert!(finds_counterexample(|policy, inventory, now| {
        rethin(Wrong::NewestInWindow, plan(policy, inventory, now))
    }));
}

#[test]
fn the_property_passes_the_planner_on_the_same_seed() {
    assert!(!finds_counterexample(plan));
}
