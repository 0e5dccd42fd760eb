//! The thinning property over simulated years of nightly runs: images are added each
//! night, some are deleted by hand, some are protected, and each night's plan is carried
//! out before the next. No image kept by thinning is later thinned while the same window
//! still covers it, and each period of a window keeps at most one image by thinning
//! (exactly one when the period has no image left in a younger window).

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Timestamp, Usage, UsageKind, UsageRef};
use ami_sweeper_core::planner::{plan, Action, Reason};
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

/// One night: which lineages get an image (and its seconds before the run), whether a
/// person deletes a present image (by position), and how new images are protected.
#[derive(Debug, Clone)]
struct Night {
    add: [bool; 2],
    secs: u32,
    delete: Option<usize>,
    protect: u8,
}

fn arb_night() -> impl Strategy<Value = Night> {
    (
        [prop::bool::weighted(0.85), prop::bool::weighted(0.6)],
        0..40_000u32,
        prop::option::weighted(0.08, 0..64usize),
        0..40u8,
    )
        .prop_map(|(add, secs, delete, protect)| Night {
            add,
            secs,
            delete,
            protect,
        })
}

/// What the property remembers of an image kept by thinning: the window that kept it.
type KeptIn = BTreeMap<String, u64>;

fn check_night(
    windows: &[Window],
    images: &[Image],
    usage: &Usage,
    now: Timestamp,
    kept_in: &mut KeptIn,
    policy: &ami_sweeper_core::Policy,
) -> Result<BTreeSet<String>, TestCaseError> {
    let inventory = Inventory::new(images.to_vec(), usage.clone()).unwrap();
    let p = plan(policy, &inventory, now);
    let by_id: BTreeMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
    // Stability: kept by a window once, never thinned while that window covers it.
    for d in &p.decisions {
        let window = d.thinning.as_ref().map(|n| n.after_days);
        if let (Some(w), Some(prev)) = (window, kept_in.get(&d.image_id)) {
            prop_assert!(
                !(w == *prev && d.reasons[0] == Reason::Thinned),
                "{} was kept by the window after {} days and is thinned in it at {now}",
                d.image_id,
                w
            );
        }
        if d.reasons.contains(&Reason::KeptByThinning) {
            kept_in.insert(d.image_id.clone(), window.unwrap());
        }
    }
    // Per lineage, window and period: at most one kept by thinning; exactly one when no
    // counted image of the period is still in a younger window.
    let counted = |i: &Image| i.tags.get("retain").is_none();
    for app in ["web", "api"] {
        for (w, win) in windows.iter().enumerate() {
            let unit = win.keep_one_per;
            if unit == Period::None {
                continue;
            }
            let mut periods: BTreeMap<i64, (usize, bool, bool)> = BTreeMap::new();
            for d in &p.decisions {
                let img = by_id[d.image_id.as_str()];
                if img.tags.get("app") != Some(app) || !counted(img) {
                    continue;
                }
                let key = unit.key(img.creation_date).unwrap();
                let at = window_of(windows, img.creation_date, now);
                let e = periods.entry(key).or_default();
                if at == Some(w) {
                    e.1 = true;
                    e.0 += usize::from(d.reasons.contains(&Reason::KeptByThinning));
                } else if at.is_none_or(|a| a < w) {
                    e.2 = true;
                }
            }
            for (key, (kept, in_window, younger)) in periods {
                prop_assert!(kept <= 1, "{app}: period {key} of window {w} keeps {kept}");
                if in_window && !younger {
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
        .filter(|d| d.action == Action::Deregister)
        .map(|d| d.image_id.clone())
        .collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn nightly_thinning_is_stable_and_keeps_one_per_period(
        windows in arb_windows(),
        keep_count in 0..3u64,
        min_age in 1..10u64,
        start_day in 0..800i64,
        nights in prop::collection::vec(arb_night(), 420),
    ) {
        let thin = serde_json::to_string(&windows).unwrap();
        let policy = policy(&format!(
            r#"{{"selection": {{"exclude_tags": {{"retain": "*"}}}},
                "retention": {{"min_age_days": {min_age}, "keep_count": {keep_count},
                "group_by": {{"tags": ["app"]}}, "thin": {thin}}}}}"#
        ));
        let start = parse_instant("2026-06-01T12:00:00Z").unwrap() + chrono::TimeDelta::days(start_day);
        let mut images: Vec<Image> = Vec::new();
        let mut usage = Usage::new();
        let mut kept_in = KeptIn::new();
        for (n, night) in nights.iter().enumerate() {
            let now = start + chrono::TimeDelta::days(n as i64);
            for (l, app) in ["web", "api"].iter().enumerate() {
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
                    usage.add(&id, UsageRef { kind: UsageKind::Instance, id: format!("i-{n}") });
                }
                images.push(b.build());
            }
            if let Some(k) = night.delete.filter(|_| !images.is_empty()) {
                images.remove(k % images.len());
            }
            let gone = check_night(&windows, &images, &usage, now, &mut kept_in, &policy)?;
            images.retain(|i| !gone.contains(&i.id));
        }
    }
}
