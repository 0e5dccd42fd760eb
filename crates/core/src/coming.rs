//! What is coming: the images a sweep within the lookahead will act on, from tonight's
//! plan and the same policy's plan at the end of the lookahead. Pure, so the summary
//! (`app/notify`) and the report (`app/report`) share it without importing each other.

use serde::Serialize;

use crate::model::Timestamp;
use crate::planner::{Action, Plan};
use crate::time::format_instant;

/// An image a sweep within the lookahead will act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coming {
    /// `ami-...`.
    pub image_id: String,
    /// Name.
    pub name: String,
    /// `retiring` (its next stage falls due) or `condemned` (the policy condemns it by then).
    pub why: &'static str,
    /// Retiring: its `eligible_at`; condemned: the end of the lookahead.
    pub at: String,
}

/// Images a sweep before `until` will act on: retiring images whose `eligible_at` falls
/// within it, and images `later` (the same policy's plan at `until`) condemns that `plan`
/// (now's) keeps.
pub fn coming(plan: &Plan, later: &Plan, until: Timestamp) -> Vec<Coming> {
    let mut out: Vec<Coming> = plan
        .decisions
        .iter()
        .filter_map(|d| {
            let t = d.eligible_at.filter(|t| *t > plan.now && *t <= until)?;
            Some(Coming {
                image_id: d.image_id.clone(),
                name: d.name.clone(),
                why: "retiring",
                at: format_instant(t),
            })
        })
        .collect();
    let kept_now: rustc_hash::FxHashSet<&str> = plan
        .decisions
        .iter()
        .filter(|d| d.action == Action::Keep && d.eligible_at.is_none())
        .map(|d| d.image_id.as_str())
        .collect();
    out.extend(
        later
            .decisions
            .iter()
            .filter(|d| d.action != Action::Keep && kept_now.contains(d.image_id.as_str()))
            .map(|d| Coming {
                image_id: d.image_id.clone(),
                name: d.name.clone(),
                why: "condemned",
                at: format_instant(until),
            }),
    );
    out
}
