//! The policy document as written, and how it becomes a [`Policy`]: one rule at the top
//! level (`selection`, `retention`, `retire`) or a `rules` list, never both. A single-rule
//! document serializes back as it was written, so its digest does not change.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    default_member_role, default_true, Accounts, Acknowledgement, Cleanup, Cost, Exception, Limits,
    Notify, Policy, PolicyError, ProtectionRules, RecycleBinMode, Retention, Retire, Rule,
    Selection, UsageRules, DEFAULT_RULE,
};

/// The policy document as written: either one rule at the top level (`selection`,
/// `retention`, `retire`) or a `rules` list; [`Policy::from_json`] turns it into a
/// [`Policy`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "ami-sweeper policy",
    extend("oneOf" = [{"required": ["retention"]}, {"required": ["rules"]}])
)]
pub(super) struct PolicyDoc {
    /// Plan and report only; nothing is changed. Defaults to true: deleting must be asked for.
    #[serde(default = "default_true")]
    dry_run: bool,
    /// Regions to sweep; absent means the current region of the AWS configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regions: Option<Vec<String>>,
    /// A policy of one rule: which images it applies to at all. With `rules`, each rule
    /// has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    selection: Option<Selection>,
    /// A policy of one rule: how many and how old images must be before they go.
    /// Required unless `rules` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention: Option<Retention>,
    /// Several retention rules, in order: each image is decided by the first rule whose
    /// `names`, `tags` and `match` it satisfies (first match wins); that rule's
    /// `exclude_tags` then keep it, and an image no rule takes is kept (`not_selected`).
    /// Replaces the top-level `selection`, `retention` and `retire`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rules: Option<Vec<Rule>>,
    /// Safety checks that can be relaxed.
    #[serde(default)]
    protection: ProtectionRules,
    /// What to clean up after deregistration.
    #[serde(default)]
    cleanup: Cleanup,
    /// Caps on a single run.
    #[serde(default)]
    limits: Limits,
    /// Where ami-sweeper looks for users of an image, beyond its own defaults.
    #[serde(default)]
    usage: UsageRules,
    /// Sweep these accounts through the member role (`member_role_name`) instead of the
    /// deployment's own: a list of ids, or `{"organization": {"ou_ids": [...]}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accounts: Option<Accounts>,
    /// The role each member account offers the hub (deployed by `template-member.yaml`).
    #[serde(default = "default_member_role")]
    member_role_name: String,
    /// A policy of one rule: retire in stages instead of deregistering at once: deprecate
    /// first, and/or disable for some days; a later sweep deregisters what the rules still
    /// condemn then. With `rules`, each rule has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire: Option<Retire>,
    /// How the Recycle Bin's retention rules shape deletion: `respect` (default: an image
    /// a rule retains keeps its snapshots until it can no longer be restored), `require`
    /// (also: never deregister an image no rule retains) or `ignore`.
    #[serde(default)]
    recycle_bin: RecycleBinMode,
    /// Risks the author accepts by name; a policy that takes one without naming it is
    /// refused. Known: `no_minimum_age` (`min_age_days` 0 with no `keep_count`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    acknowledge: Vec<Acknowledgement>,
    /// Who hears about a sweep: what is coming within `lookahead_days`, and which tag
    /// names an image's owner (for per-owner messages).
    #[serde(default)]
    notify: Notify,
    /// Prices for the estimated monthly saving, replacing the built-in list prices.
    #[serde(default)]
    cost: Cost,
    /// Images kept (`excepted`) until a date or instant, then decided as usual, each with
    /// its reason: `[{"image_ids": [...]} or {"tags": {...}}, "until": "2027-03-31",
    /// "reason": "..."]`. Like the `ami-sweeper:keep-until` tag; not part of the policy
    /// digest (an exception can only keep more).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exceptions: Vec<Exception>,
}

impl PolicyDoc {
    /// The document's rules: its `rules`, or its top-level one named `default`. Both, or
    /// neither, is an error naming the field.
    pub(super) fn into_policy(self) -> Result<Policy, PolicyError> {
        let single = self.rules.is_none();
        let rules = match self.rules {
            Some(rules) => {
                let beside = [
                    ("selection", self.selection.is_some()),
                    ("retention", self.retention.is_some()),
                    ("retire", self.retire.is_some()),
                ];
                if let Some((field, _)) = beside.iter().find(|(_, given)| *given) {
                    return Err(PolicyError::new(
                        *field,
                        "not allowed beside `rules`: each rule has its own selection, \
                         retention and retire",
                    ));
                }
                rules
            }
            None => vec![Rule {
                name: DEFAULT_RULE.to_string(),
                selection: self.selection.unwrap_or_default(),
                retention: self
                    .retention
                    .ok_or_else(|| PolicyError::new("retention", "missing required field"))?,
                retire: self.retire.unwrap_or_default(),
            }],
        };
        Ok(Policy {
            dry_run: self.dry_run,
            regions: self.regions,
            rules,
            protection: self.protection,
            cleanup: self.cleanup,
            limits: self.limits,
            usage: self.usage,
            accounts: self.accounts,
            member_role_name: self.member_role_name,
            recycle_bin: self.recycle_bin,
            acknowledge: self.acknowledge,
            notify: self.notify,
            cost: self.cost,
            exceptions: self.exceptions,
            single,
        })
    }
}

impl From<Policy> for PolicyDoc {
    /// Back to the form it was written in: a single-rule policy serializes as before
    /// `rules` existed (the same canonical JSON, so the same digest).
    fn from(p: Policy) -> Self {
        let (selection, retention, retire, rules) = match (p.single, p.rules.as_slice()) {
            (true, [one]) => (
                Some(one.selection.clone()),
                Some(one.retention.clone()),
                Some(one.retire.clone()),
                None,
            ),
            _ => (None, None, None, Some(p.rules)),
        };
        Self {
            dry_run: p.dry_run,
            regions: p.regions,
            selection,
            retention,
            rules,
            protection: p.protection,
            cleanup: p.cleanup,
            limits: p.limits,
            usage: p.usage,
            accounts: p.accounts,
            member_role_name: p.member_role_name,
            retire,
            recycle_bin: p.recycle_bin,
            acknowledge: p.acknowledge,
            notify: p.notify,
            cost: p.cost,
            exceptions: p.exceptions,
        }
    }
}
