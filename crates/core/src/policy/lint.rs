//! `ami-sweeper lint`: what can be said about a policy's rules from the policy alone.
//! Pure; judged on the patterns, never on an inventory.
//!
//! A rule can never match when an earlier rule with no `match` takes every image it
//! could take: the earlier rule's name globs include each of the later rule's (or it has
//! none), and its tag requirements are a subset of the later rule's (each value glob
//! including the later one's). The judgement is conservative: a finding is always true,
//! but an unreachable rule the patterns do not prove so is not reported. Two rules'
//! retentions cannot be compared when they group lineages differently (`group_by`). A
//! rule that selects on `state` in a policy where a rule retires images is noted: the
//! rules judge an image the sweeper is retiring as it was before its own calls, so that
//! condition never sees the sweeper's own `DisableImage`. The policy's `exceptions` are
//! judged against an instant ([`lint_at`]): one beyond `limits.max_exception_days` (a run
//! then refuses the policy), one whose `until` has passed (it keeps nothing any more).

use serde::Serialize;

use super::{Condition, GroupBy, Policy, Rule};
use crate::thinning::Period;

/// One thing the lint found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// `rule` can never match: `shadowed_by`, earlier, takes every image it could.
    NeverMatches {
        /// The rule that never matches.
        rule: String,
        /// The earlier rule that takes its images.
        shadowed_by: String,
    },
    /// `rule` and `other` keep counts over different lineages (`group_by`), so neither
    /// retention is stricter than the other.
    IncomparableRetention {
        /// The later rule.
        rule: String,
        /// The earlier rule.
        other: String,
    },
    /// `rule` selects on `state`, and `retiring` (perhaps `rule` itself) retires images:
    /// the condition sees images as they were before ami-sweeper's own calls.
    SelectsOnRetirementState {
        /// The rule whose `match` tests `state`.
        rule: String,
        /// The first rule with `retire` stages.
        retiring: String,
    },
    /// A `retention.thin` window of `rule` that can never keep anything by thinning:
    /// every image reaching it was already deregistered by an earlier `none` window, or
    /// `min_age_days` keeps every image while it is in the window.
    WindowNeverKeeps {
        /// The rule.
        rule: String,
        /// The window's position in `thin`.
        window: usize,
        /// Why, in a few words.
        why: String,
    },
    /// A window of `rule` whose unit is not coarser than an earlier window's: its periods
    /// overlap that window's, so it can keep nothing the earlier one did not.
    WindowNotCoarser {
        /// The rule.
        rule: String,
        /// The window's position in `thin`.
        window: usize,
        /// The earlier window's position.
        earlier: usize,
    },
    /// A window of `rule` shorter than its longest period: an image it keeps can be
    /// thinned later in the same window, when a newer image of the still-running period
    /// comes (after a gap in the lineage).
    WindowShorterThanPeriod {
        /// The rule.
        rule: String,
        /// The window's position in `thin`.
        window: usize,
    },
    /// `min_age_days` of `rule` is larger than its first window's `after_days`: images
    /// enter that window while they are still kept as too young.
    MinAgeBeyondFirstWindow {
        /// The rule.
        rule: String,
    },
    /// `exceptions[exception]` lasts beyond `limits.max_exception_days` from the instant:
    /// a run at that instant refuses the policy.
    ExceptionBeyondHorizon {
        /// The entry's position in `exceptions`.
        exception: usize,
        /// `limits.max_exception_days`.
        max_days: u64,
    },
    /// `exceptions[exception]`'s `until` has passed: it keeps nothing any more.
    ExceptionLapsed {
        /// The entry's position in `exceptions`.
        exception: usize,
        /// Its `until`, as written.
        until: String,
    },
}

impl Finding {
    /// Whether the finding is an error (a rule that never matches, an exception a run
    /// would refuse), not a note.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Self::NeverMatches { .. } | Self::ExceptionBeyondHorizon { .. }
        )
    }

    /// One line for people.
    pub fn message(&self) -> String {
        match self {
            Self::NeverMatches { rule, shadowed_by } => format!(
                "rule {rule:?} can never match: the earlier rule {shadowed_by:?} has no \
                 `match`, its names include every one of {rule:?}'s and its tags are a \
                 subset of {rule:?}'s, so it takes every image {rule:?} could"
            ),
            Self::IncomparableRetention { rule, other } => format!(
                "rules {other:?} and {rule:?} cannot be compared: they group lineages \
                 differently (group_by), so their keep counts count different things"
            ),
            Self::SelectsOnRetirementState { rule, retiring } => format!(
                "rule {rule:?} selects on `state` while rule {retiring:?} retires images: \
                 the rules judge an image ami-sweeper is retiring as it was before its own \
                 calls (an image it disabled reads `available` and stays with the rule that \
                 disabled it), so {rule:?}'s `state` sees only what others did"
            ),
            Self::WindowNeverKeeps { rule, window, why } => {
                format!("rule {rule:?}: retention.thin[{window}] can never keep anything: {why}")
            }
            Self::WindowNotCoarser {
                rule,
                window,
                earlier,
            } => format!(
                "rule {rule:?}: retention.thin[{window}] keeps one per a unit no coarser than \
                 retention.thin[{earlier}]'s, so its periods overlap that window's and it keeps \
                 nothing more"
            ),
            Self::WindowShorterThanPeriod { rule, window } => format!(
                "rule {rule:?}: retention.thin[{window}].after_days is shorter than its \
                 longest period, so an image it keeps may be thinned later in the same window \
                 when a newer image of the running period comes"
            ),
            Self::MinAgeBeyondFirstWindow { rule } => format!(
                "rule {rule:?}: min_age_days is larger than retention.thin[0].after_days, so \
                 images enter thinning while they are kept as too young"
            ),
            Self::ExceptionBeyondHorizon {
                exception,
                max_days,
            } => format!(
                "exceptions[{exception}] lasts more than limits.max_exception_days \
                 ({max_days}) from now: a sweep or plan refuses the policy until it is shortened"
            ),
            Self::ExceptionLapsed { exception, until } => format!(
                "exceptions[{exception}] lapsed ({until:?} has passed): it keeps nothing any \
                 more and can be removed"
            ),
        }
    }
}

/// The findings for `policy`, in rule order: each rule that can never match (with the
/// first earlier rule that shadows it), then each pair of rules that both keep a count
/// but group lineages differently, then each rule that selects on `state` beside a rule
/// that retires.
pub fn lint(policy: &Policy) -> Vec<Finding> {
    let rules = &policy.rules;
    let mut out = Vec::new();
    for (j, later) in rules.iter().enumerate() {
        if let Some(earlier) = rules[..j].iter().find(|e| shadows(e, later)) {
            out.push(Finding::NeverMatches {
                rule: later.name.clone(),
                shadowed_by: earlier.name.clone(),
            });
        }
    }
    for (j, later) in rules.iter().enumerate() {
        for earlier in &rules[..j] {
            let counts = later.retention.keep_count > 0 && earlier.retention.keep_count > 0;
            let same = same_grouping(
                earlier.retention.group_by.as_ref(),
                later.retention.group_by.as_ref(),
            );
            if counts && !same {
                out.push(Finding::IncomparableRetention {
                    rule: later.name.clone(),
                    other: earlier.name.clone(),
                });
            }
        }
    }
    if let Some(retiring) = rules
        .iter()
        .find(|r| r.retire.deprecate || r.retire.disable_for_days.is_some())
    {
        for r in rules {
            if r.selection.matches.as_ref().is_some_and(tests_state) {
                out.push(Finding::SelectsOnRetirementState {
                    rule: r.name.clone(),
                    retiring: retiring.name.clone(),
                });
            }
        }
    }
    for rule in rules {
        thin_findings(rule, &mut out);
    }
    out
}

/// [`lint`]'s findings, then those about the policy's `exceptions` at `now`: each entry
/// beyond `limits.max_exception_days` (an error: a run at `now` refuses the policy) and
/// each whose `until` has passed (a note).
pub fn lint_at(policy: &Policy, now: crate::model::Timestamp) -> Vec<Finding> {
    let mut out = lint(policy);
    for (i, e) in policy.exceptions.iter().enumerate() {
        if e.until.at <= now {
            out.push(Finding::ExceptionLapsed {
                exception: i,
                until: e.until.text.clone(),
            });
        } else if let Some(max_days) = policy.beyond_horizon(e.until.at, now) {
            out.push(Finding::ExceptionBeyondHorizon {
                exception: i,
                max_days,
            });
        }
    }
    out
}

/// Whether a condition tests `state` anywhere in it.
fn tests_state(c: &Condition) -> bool {
    match c {
        Condition::State(_) => true,
        Condition::All(cs) | Condition::Any(cs) => cs.iter().any(tests_state),
        Condition::Not(c) => tests_state(c),
        _ => false,
    }
}

/// The findings about one rule's `retention.thin` windows, in window order.
fn thin_findings(rule: &Rule, out: &mut Vec<Finding>) {
    let ret = &rule.retention;
    let (ws, name) = (&ret.thin, || rule.name.clone());
    if ws.first().is_some_and(|w| ret.min_age_days > w.after_days) {
        out.push(Finding::MinAgeBeyondFirstWindow { rule: name() });
    }
    for (k, w) in ws.iter().enumerate() {
        let until = ws.get(k + 1).map(|n| n.after_days);
        let why = if ws[..k].iter().any(|e| e.keep_one_per == Period::None) {
            Some("an earlier `none` window deregisters every image before it gets here")
        } else if until.is_some_and(|u| u <= ret.min_age_days) {
            Some("min_age_days keeps every image for as long as it is in this window")
        } else {
            None
        };
        if let Some(why) = why.filter(|_| w.keep_one_per != Period::None) {
            out.push(Finding::WindowNeverKeeps {
                rule: name(),
                window: k,
                why: why.to_string(),
            });
            continue;
        }
        if let Some(e) = ws[..k].iter().rposition(|e| {
            e.keep_one_per != Period::None && !e.keep_one_per.is_finer_than(w.keep_one_per)
        }) {
            out.push(Finding::WindowNotCoarser {
                rule: name(),
                window: k,
                earlier: e,
            });
        }
        if w.after_days < w.keep_one_per.max_days() {
            out.push(Finding::WindowShorterThanPeriod {
                rule: name(),
                window: k,
            });
        }
    }
}

/// Whether `earlier` takes every image `later` could (syntactically, conservatively).
fn shadows(earlier: &Rule, later: &Rule) -> bool {
    let (e, l) = (&earlier.selection, &later.selection);
    if e.matches.is_some() {
        return false;
    }
    let names = e.names.is_empty()
        || (!l.names.is_empty()
            && l.names
                .iter()
                .all(|ln| e.names.iter().any(|en| en.includes(ln))));
    let tags = e
        .tags
        .iter()
        .all(|(k, eg)| l.tags.get(k).is_some_and(|lg| eg.includes(lg)));
    names && tags
}

/// Whether two `group_by`s form the same lineages (absent: one group).
fn same_grouping(a: Option<&GroupBy>, b: Option<&GroupBy>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.tags == y.tags
                && x.name_regex.as_ref().map(|r| r.as_str())
                    == y.name_regex.as_ref().map(|r| r.as_str())
        }
        _ => false,
    }
}
