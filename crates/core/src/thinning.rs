//! Thinning (grandfather-father-son retention): a rule's `retention.thin` windows keep one
//! image per calendar period (UTC, by `CreationDate`) once images are old enough.
//!
//! The representative of a period is its newest image among those `keep_count` counts in
//! the lineage, whatever window they are in. Once a period is over nothing newer can join
//! it, so its representative never changes from night to night; an image is thinned only
//! when it enters a coarser window. Pure: the planner gives the instant.

use chrono::{Datelike, NaiveDate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::time::days_before;

/// The calendar unit a thinning window keeps one image per.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A UTC day.
    Day,
    /// An ISO week (Monday to Sunday, UTC; week 1 holds the year's first Thursday).
    Week,
    /// A calendar month.
    Month,
    /// A calendar quarter (January, April, July, October).
    Quarter,
    /// A calendar year.
    Year,
    /// None: every image in the window is deregistered (`thinned`).
    None,
}

impl Period {
    /// The name as the policy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
            Self::None => "none",
        }
    }

    /// The most days one period can span (a leap year, a 92-day quarter): a window whose
    /// `after_days` is shorter may see its representative replaced by a newer image
    /// while the period runs on.
    pub fn max_days(self) -> u64 {
        match self {
            Self::Day => 1,
            Self::Week => 7,
            Self::Month => 31,
            Self::Quarter => 92,
            Self::Year => 366,
            Self::None => 0,
        }
    }

    /// Whether this unit is strictly finer than `coarser` (`none` is the coarsest): a
    /// window after a coarser one can only keep what that one kept.
    pub fn is_finer_than(self, coarser: Period) -> bool {
        self.rank() < coarser.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Self::Day => 0,
            Self::Week => 1,
            Self::Month => 2,
            Self::Quarter => 3,
            Self::Year => 4,
            Self::None => 5,
        }
    }

    /// The period `t` falls in, as a number that orders periods (`None` for `none`).
    pub fn key(self, t: Timestamp) -> Option<i64> {
        let d = t.date_naive();
        let y = i64::from(d.year());
        Some(match self {
            Self::Day => i64::from(d.num_days_from_ce()),
            Self::Week => {
                let w = d.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Self::Month => y * 12 + i64::from(d.month0()),
            Self::Quarter => y * 4 + i64::from(d.month0() / 3),
            Self::Year => y,
            Self::None => return None,
        })
    }

    /// The period `t` falls in, as people write it: `2026-01-31`, `2026-W05`, `2026-01`,
    /// `2026-Q1`, `2026`; empty for `none`.
    pub fn label(self, t: Timestamp) -> String {
        let d: NaiveDate = t.date_naive();
        match self {
            Self::Day => d.format("%Y-%m-%d").to_string(),
            Self::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Self::Month => d.format("%Y-%m").to_string(),
            Self::Quarter => format!("{}-Q{}", d.year(), d.month0() / 3 + 1),
            Self::Year => d.year().to_string(),
            Self::None => String::new(),
        }
    }
}

/// One thinning window: images at least `after_days` old (and younger than the next
/// window's) keep one per `keep_one_per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Images at least this many days old are in this window (until the next one's).
    pub after_days: u64,
    /// `day`, `week` (ISO, Monday, UTC), `month`, `quarter`, `year`, or `none` (deregister
    /// every image of the window).
    pub keep_one_per: Period,
}

impl Window {
    /// `after 14 days: one per week`, as tables print it.
    pub fn describe(&self) -> String {
        match self.keep_one_per {
            Period::None => format!("after {} days: none", self.after_days),
            p => format!("after {} days: one per {}", self.after_days, p.as_str()),
        }
    }
}

/// The window (by position) an image created at `created` is in at `now`: the last whose
/// `after_days` its age has reached; `None` before the first (not yet thinned).
pub fn window_of(windows: &[Window], created: Timestamp, now: Timestamp) -> Option<usize> {
    window_at(&cutoffs(windows, now), created)
}

/// Each window's start at `now`: images created at or before it have reached the window
/// (`None`: no image can be that old). Computed once per plan and rule.
pub fn cutoffs(windows: &[Window], now: Timestamp) -> Vec<Option<Timestamp>> {
    windows
        .iter()
        .map(|w| days_before(now, w.after_days))
        .collect()
}

/// [`window_of`] with the windows' [`cutoffs`] computed beforehand.
pub fn window_at(cutoffs: &[Option<Timestamp>], created: Timestamp) -> Option<usize> {
    cutoffs
        .iter()
        .rposition(|c| c.is_some_and(|cutoff| created <= cutoff))
}

/// What the thinning step said about an image, for the plan: the window it is in and the
/// period it represents (or lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThinNote {
    /// The window's `after_days`.
    pub after_days: u64,
    /// The window's unit.
    pub keep_one_per: Period,
    /// The image's period in that unit (`2026-W05`); absent under `none`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub period: String,
}

impl ThinNote {
    /// The note for an image created at `created` in window `w`.
    pub fn new(w: &Window, created: Timestamp) -> Self {
        Self {
            after_days: w.after_days,
            keep_one_per: w.keep_one_per,
            period: w.keep_one_per.label(created),
        }
    }

    /// The window without the period: alike runs of a table fold on it.
    pub fn window(&self) -> String {
        Window {
            after_days: self.after_days,
            keep_one_per: self.keep_one_per,
        }
        .describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn t(s: &str) -> Timestamp {
        parse_instant(s).unwrap()
    }

    #[test]
    fn iso_weeks_cross_years_and_reach_53() {
        // 2026-12-31 is a Thursday: week 53 of 2026; 2027-01-03 (Sunday) still is.
        for day in ["2026-12-28", "2026-12-31", "2027-01-03"] {
            let at = t(&format!("{day}T12:00:00Z"));
            assert_eq!(Period::Week.label(at), "2026-W53", "{day}");
        }
        assert_eq!(Period::Week.label(t("2027-01-04T00:00:00Z")), "2027-W01");
        // 2024-12-30 (Monday) is in week 1 of 2025.
        assert_eq!(Period::Week.label(t("2024-12-30T00:00:00Z")), "2025-W01");
        assert_ne!(
            Period::Week.key(t("2027-01-03T23:59:59Z")),
            Period::Week.key(t("2027-01-04T00:00:00Z"))
        );
    }

    #[test]
    fn month_quarter_and_year_edges_are_utc_midnights() {
        let (a, b) = (t("2028-02-29T23:59:59Z"), t("2028-03-01T00:00:00Z"));
        for p in [Period::Day, Period::Month] {
            assert_ne!(p.key(a), p.key(b), "{p:?}");
        }
        assert_eq!(Period::Quarter.key(a), Period::Quarter.key(b));
        assert_eq!(Period::Quarter.label(t("2026-03-31T23:59:59Z")), "2026-Q1");
        assert_eq!(Period::Quarter.label(t("2026-04-01T00:00:00Z")), "2026-Q2");
        assert_ne!(
            Period::Year.key(t("2026-12-31T23:59:59Z")),
            Period::Year.key(t("2027-01-01T00:00:00Z"))
        );
        assert_eq!(Period::Day.label(a), "2028-02-29");
        assert_eq!(Period::None.key(a), None);
    }

    #[test]
    fn an_image_is_in_the_last_window_its_age_has_reached() {
        let ws = [
            Window {
                after_days: 14,
                keep_one_per: Period::Week,
            },
            Window {
                after_days: 90,
                keep_one_per: Period::Month,
            },
        ];
        let now = t("2026-11-26T00:00:00Z");
        assert_eq!(window_of(&ws, t("2026-11-12T00:00:01Z"), now), None);
        assert_eq!(window_of(&ws, t("2026-11-12T00:00:00Z"), now), Some(0));
        assert_eq!(window_of(&ws, t("2026-08-28T00:00:01Z"), now), Some(0));
        assert_eq!(window_of(&ws, t("2026-08-28T00:00:00Z"), now), Some(1));
        assert_eq!(window_of(&ws, t("1970-01-01T00:00:00Z"), now), Some(1));
    }
}
