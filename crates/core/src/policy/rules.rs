//! The policy's retention rules: an ordered list in which the first rule whose names,
//! tags and `match` an image satisfies decides it ("first match wins"). That rule's
//! `exclude_tags` then keep the image; it never falls through to a later rule. Pure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Glob, Policy, Retention, Retire, Selection};
use crate::model::{Image, Tags, Timestamp};

/// The name of the one rule a policy written without `rules` (a top-level `selection`,
/// `retention` and `retire`) has.
pub const DEFAULT_RULE: &str = "default";

/// One retention rule: which images it takes, and how it decides them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the policy; reports, metrics and `ami-sweeper lint` name the rule by it.
    pub name: String,
    /// Which images the rule takes (`names`, `tags`, `match`), and which of those it keeps
    /// whatever their age (`exclude_tags`).
    #[serde(default)]
    pub selection: Selection,
    /// How many and how old the rule's images must be before they go; `keep_count`
    /// groups are the rule's own.
    pub retention: Retention,
    /// The stages the rule's condemned images go through.
    #[serde(default)]
    pub retire: Retire,
}

impl Rule {
    /// Whether the rule's `names`, `tags` and `match` all select `img` (its exclude tags
    /// aside: they keep an image the rule took, see [`Rule::excludes`]).
    pub fn selects(&self, img: &Image, now: Timestamp) -> bool {
        let sel = &self.selection;
        // Tags first: a key lookup rejects most images of other rules before any name glob.
        sel.tags.iter().all(|(k, g)| tag_matches(&img.tags, k, g))
            && (sel.names.is_empty() || sel.names.iter().any(|g| g.matches(&img.name)))
            && sel.matches.as_ref().is_none_or(|c| c.holds(img, now))
    }

    /// Whether `img` carries one of the rule's `exclude_tags` (with a matching value).
    pub fn excludes(&self, img: &Image) -> bool {
        excluded(&self.selection.exclude_tags, &img.tags)
    }
}

/// Whether `tags` has `key` with a value `glob` matches.
fn tag_matches(tags: &Tags, key: &str, glob: &Glob) -> bool {
    tags.get(key).is_some_and(|v| glob.matches(v))
}

/// Whether `tags` carries one of the `exclude` tags (with a matching value).
pub fn excluded(exclude: &BTreeMap<String, Glob>, tags: &Tags) -> bool {
    exclude.iter().any(|(k, g)| tag_matches(tags, k, g))
}

impl Policy {
    /// The index of the rule that decides `img`: the first whose names, tags and `match`
    /// select it (first match wins), or `None` when no rule does (kept, `not_selected`).
    pub fn rule_for(&self, img: &Image, now: Timestamp) -> Option<usize> {
        self.rules.iter().position(|r| r.selects(img, now))
    }

    /// Every rule's `exclude_tags`: storage whose image is gone is kept when any of them
    /// names it, since no rule can be known to have decided that image.
    pub fn every_exclude_tags(&self) -> Vec<&BTreeMap<String, Glob>> {
        self.rules
            .iter()
            .map(|r| &r.selection.exclude_tags)
            .collect()
    }

    /// Whether the policy was written with one top-level rule (no `rules` list).
    pub fn is_single_rule(&self) -> bool {
        self.single
    }
}
