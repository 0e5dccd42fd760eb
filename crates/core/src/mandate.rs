//! The mandate: everything that bounds a run, computed once at the edge and carried by
//! every hop the work takes (sweep-queue messages, cleanup jobs), re-checked by each
//! receiver against its own ceiling before any call. Pure.
//!
//! A deployment's ceiling ([`Mandate::ceiling`]) comes from its configuration and its
//! configured policy; a trigger can only narrow it ([`Mandate::narrow`], the one function
//! that narrows). A receiver runs a message's mandate only if it is within its own
//! ceiling ([`Mandate::within`]), so no event, message or hop can widen what is deleted.

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::inventory::Inventory;
use crate::model::Image;
use crate::model::IMAGE_BUILDER_TAG;
use crate::planner::{Action, Plan, Reason};
use crate::policy::{Accounts, Policy};
use crate::strict;

/// Which accounts a run may act in: the configured policy's rule. Read by hand: a key
/// beside the variant's (which serde's enum reading reports as bad JSON) is refused with
/// its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountRule {
    /// Only the deployment's own account (the policy names no `accounts`).
    Own,
    /// These member accounts.
    List(BTreeSet<String>),
    /// The active accounts under these OUs (child OUs included), less the excluded ones,
    /// as Organizations resolves them.
    Organization {
        /// `ou-...` or `r-...` ids.
        ou_ids: BTreeSet<String>,
        /// Accounts under them left alone.
        exclude: BTreeSet<String>,
    },
}

impl<'de> Deserialize<'de> for AccountRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AccountRuleVisitor)
    }
}

/// The names of [`AccountRule`]'s variants, as written.
const ACCOUNT_RULES: &[&str] = &["own", "list", "organization"];

struct AccountRuleVisitor;

impl<'de> Visitor<'de> for AccountRuleVisitor {
    type Value = AccountRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"own\", {\"list\": [...]} or {\"organization\": {...}}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AccountRule, E> {
        match v {
            "own" => Ok(AccountRule::Own),
            _ => Err(E::unknown_variant(v, ACCOUNT_RULES)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AccountRule, A::Error> {
        /// `organization`'s fields.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Org {
            ou_ids: BTreeSet<String>,
            exclude: BTreeSet<String>,
        }
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let rule = match key.as_str() {
            "list" => AccountRule::List(map.next_value()?),
            "organization" => {
                let Org { ou_ids, exclude } = map.next_value()?;
                AccountRule::Organization { ou_ids, exclude }
            }
            _ => return Err(strict::refuse_key(&mut map, &key, &ACCOUNT_RULES[1..])),
        };
        match map.next_key::<String>()? {
            Some(extra) => Err(strict::refuse_key_with(
                &mut map,
                format!("one key per account rule, found `{key}` and `{extra}`"),
            )),
            None => Ok(rule),
        }
    }
}

/// Which images a run may act on, beyond the policy's own selection: every requirement
/// holds at once (a scope can only be narrowed by adding requirements).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Image Builder recipe ARN prefixes (`arn:...:image/<recipe>/`): the image's
    /// `Ec2ImageBuilderArn` tag must start with every one of them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recipes: BTreeSet<String>,
    /// Image ids whose lineage (the policy's `group_by` group) the image must share.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub lineages: BTreeSet<String>,
    /// When set, only these image ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<BTreeSet<String>>,
}

impl Scope {
    /// No requirement beyond the policy's: the full-scope sweep.
    pub fn is_full(&self) -> bool {
        self.recipes.is_empty() && self.lineages.is_empty() && self.images.is_none()
    }

    /// Both scopes' requirements at once.
    fn and(&self, other: &Scope) -> Scope {
        Scope {
            recipes: self.recipes.union(&other.recipes).cloned().collect(),
            lineages: self.lineages.union(&other.lineages).cloned().collect(),
            images: intersect_opt(self.images.as_ref(), other.images.as_ref()),
        }
    }

    /// Whether every image `other` admits, `self` admits too (judged on the requirements:
    /// `other` has each of `self`'s).
    fn covers(&self, other: &Scope) -> bool {
        self.recipes.is_subset(&other.recipes)
            && self.lineages.is_subset(&other.lineages)
            && match (&self.images, &other.images) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs.is_subset(mine),
            }
    }
}

/// The stages of a sweep a run may perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// Deregister condemned images (and queue the storage they free).
    pub deregister: bool,
    /// Deprecate and disable condemned images (`retire`).
    pub retire: bool,
    /// Enable again, or undo the deprecation of, images the rules no longer condemn.
    pub reenable: bool,
    /// Queue the cleanup of storage whose image is gone (reconciliation).
    pub reconcile: bool,
}

impl Stages {
    /// Every stage.
    pub const ALL: Stages = Stages {
        deregister: true,
        retire: true,
        reenable: true,
        reconcile: true,
    };

    fn and(self, o: Stages) -> Stages {
        Stages {
            deregister: self.deregister && o.deregister,
            retire: self.retire && o.retire,
            reenable: self.reenable && o.reenable,
            reconcile: self.reconcile && o.reconcile,
        }
    }

    fn covers(self, o: Stages) -> bool {
        (self.deregister || !o.deregister)
            && (self.retire || !o.retire)
            && (self.reenable || !o.reenable)
            && (self.reconcile || !o.reconcile)
    }
}

/// One image an approved plan names, where it is, with the action approved for it:
/// approval is per (image, action), so an image approved for `deprecate` is never
/// deregistered on that approval.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ApprovedImage {
    /// The account the plan was made in (`None`: the deployment's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The region.
    pub region: String,
    /// `ami-...`.
    pub image_id: String,
    /// The action approved.
    pub action: Action,
}

/// The images an approved plan acts on; `None` in a mandate: no approval narrows the run.
pub type Approved = BTreeSet<ApprovedImage>;

/// What a trigger asks for; [`Mandate::narrow`] intersects it with the ceiling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// A dry run (a trigger can ask for one, never lift the deployment's).
    pub dry_run: bool,
    /// Only these regions.
    pub regions: Option<BTreeSet<String>>,
    /// Only these accounts.
    pub accounts: Option<BTreeSet<String>>,
    /// Only images in this scope.
    pub scope: Scope,
    /// Only these stages (`None`: whatever the ceiling allows).
    pub stages: Option<Stages>,
    /// Only these (image, action)s: an approved plan ([`crate::approval`]).
    pub approved: Option<Approved>,
}

/// Everything that bounds a run. See the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mandate {
    /// Plan and report only.
    pub dry_run: bool,
    /// The regions it may act in.
    pub regions: BTreeSet<String>,
    /// The configured policy's account rule.
    pub accounts: AccountRule,
    /// Narrowed to these accounts (a dispatched pair names its own); `None`: the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_accounts: Option<BTreeSet<String>>,
    /// Which images, beyond the policy's selection.
    #[serde(default)]
    pub scope: Scope,
    /// Which stages.
    pub stages: Stages,
    /// [`policy_digest`] of the configured policy it was derived from.
    pub policy_digest: String,
    /// An approved run: only these (image, action)s are acted on, each decided again from
    /// live facts ([`Mandate::restrict`]); `None`: no approval narrows the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approved>,
}

/// The digest of a configured policy: SHA-256 of its canonical JSON, in hex. A message
/// derived from a policy with another digest was meant for another policy.
pub fn policy_digest(policy: &Policy) -> String {
    let text = serde_json::to_string(policy).expect("policies serialize");
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn intersect_opt(
    a: Option<&BTreeSet<String>>,
    b: Option<&BTreeSet<String>>,
) -> Option<BTreeSet<String>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (Some(x), Some(y)) => Some(x.intersection(y).cloned().collect()),
    }
}

/// Whether `inner` admits no more than `outer` (`None` admits everything).
fn subset_opt(inner: Option<&BTreeSet<String>>, outer: Option<&BTreeSet<String>>) -> bool {
    match (inner, outer) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(i), Some(o)) => i.is_subset(o),
    }
}

impl Mandate {
    /// The deployment's ceiling: its configured policy (dry run, regions, accounts; the
    /// regions fall back to `default_region`, the function's own) and the configuration's
    /// `ForceDryRun`. Full scope, every stage.
    pub fn ceiling(policy: &Policy, force_dry_run: bool, default_region: Option<&str>) -> Self {
        let regions = match &policy.regions {
            Some(r) => r.iter().cloned().collect(),
            None => default_region.into_iter().map(str::to_string).collect(),
        };
        let accounts = match &policy.accounts {
            None => AccountRule::Own,
            Some(Accounts::List(ids)) => AccountRule::List(ids.iter().cloned().collect()),
            Some(Accounts::Organization { organization }) => AccountRule::Organization {
                ou_ids: organization.ou_ids.iter().cloned().collect(),
                exclude: organization.exclude_accounts.iter().cloned().collect(),
            },
        };
        Self {
            dry_run: policy.dry_run || force_dry_run,
            regions,
            accounts,
            only_accounts: None,
            scope: Scope::default(),
            stages: Stages::ALL,
            policy_digest: policy_digest(policy),
            approved: None,
        }
    }

    /// The one function that narrows: the intersection of this mandate and what a trigger
    /// asks for. It can only narrow; a scoped run (recipe, lineage, images) neither
    /// reconciles orphans nor re-enables: those stages belong to the full-scope sweep.
    pub fn narrow(&self, ask: &Ask) -> Mandate {
        let scope = self.scope.and(&ask.scope);
        let mut stages = self.stages.and(ask.stages.unwrap_or(Stages::ALL));
        if !scope.is_full() {
            stages.reconcile = false;
            stages.reenable = false;
        }
        let regions = match &ask.regions {
            Some(r) => self.regions.intersection(r).cloned().collect(),
            None => self.regions.clone(),
        };
        let only_accounts = intersect_opt(self.only_accounts.as_ref(), ask.accounts.as_ref());
        let approved = match (&self.approved, &ask.approved) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (Some(a), Some(b)) => Some(a.intersection(b).cloned().collect()),
        }
        .map(|a| approved_within(a, &regions, only_accounts.as_ref()));
        Mandate {
            dry_run: self.dry_run || ask.dry_run,
            regions,
            accounts: self.accounts.clone(),
            only_accounts,
            scope,
            stages,
            policy_digest: self.policy_digest.clone(),
            approved,
        }
    }

    /// The mandate a cleanup job of `image_id`'s storage carries: this one, with an
    /// approved set narrowed to that image's entries (a job never needs the others, and a
    /// queue message stays small).
    pub fn for_job(&self, image_id: &str) -> Mandate {
        match &self.approved {
            None => self.clone(),
            Some(a) => self.narrow(&Ask {
                approved: Some(
                    a.iter()
                        .filter(|e| e.image_id == image_id)
                        .cloned()
                        .collect(),
                ),
                ..Ask::default()
            }),
        }
    }

    /// `Ok` when this mandate (a message's) asks for no more than `ceiling` (the
    /// receiver's own); else why it is refused.
    pub fn within(&self, ceiling: &Mandate) -> Result<(), String> {
        let refuse = |why: String| Err(format!("the message's mandate {why}; nothing was done"));
        if self.policy_digest != ceiling.policy_digest {
            return refuse(format!(
                "was derived from another policy (digest {}, this deployment's is {}): the \
                 policy changed between dispatch and receipt",
                short(&self.policy_digest),
                short(&ceiling.policy_digest)
            ));
        }
        if ceiling.dry_run && !self.dry_run {
            return refuse("asks for changes where this deployment is a dry run".into());
        }
        if let Some(r) = self.regions.difference(&ceiling.regions).next() {
            return refuse(format!("names region {r}, outside the deployment's"));
        }
        if self.accounts != ceiling.accounts {
            return refuse("names another account rule than the deployment's policy".into());
        }
        if !subset_opt(self.only_accounts.as_ref(), ceiling.only_accounts.as_ref()) {
            return refuse("names accounts beyond the deployment's".into());
        }
        if !ceiling.scope.covers(&self.scope) {
            return refuse("is wider than the deployment's scope".into());
        }
        if !ceiling.stages.covers(self.stages) {
            return refuse("asks for stages the deployment does not perform".into());
        }
        if !self.scope.is_full() && (self.stages.reconcile || self.stages.reenable) {
            return refuse("is scoped yet asks to reconcile or re-enable".into());
        }
        if let Some(ceiling) = &ceiling.approved {
            match &self.approved {
                None => return refuse("acts beyond the approved plan".into()),
                Some(mine) if !mine.is_subset(ceiling) => {
                    return refuse("names images or actions the approved plan does not".into())
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Whether the run may act in `region`.
    pub fn admits_region(&self, region: &str) -> Result<(), String> {
        if self.regions.contains(region) {
            Ok(())
        } else {
            Err(format!(
                "region {region:?} is not among the regions this run may act in [{}]",
                self.regions.iter().cloned().collect::<Vec<_>>().join(", ")
            ))
        }
    }

    /// Whether resolving the account rule needs Organizations (the OU members).
    pub fn needs_members(&self) -> bool {
        matches!(self.accounts, AccountRule::Organization { .. })
    }

    /// Whether the run may act in `account` (`None`: the deployment's own). `members` are
    /// the active accounts under the rule's OUs, as Organizations lists them (child OUs
    /// included; the management account only when a listed OU or root contains it); an
    /// organization rule without them admits no member account (fail closed).
    pub fn admits_account(
        &self,
        account: Option<&str>,
        members: Option<&BTreeSet<String>>,
    ) -> Result<(), String> {
        let Some(a) = account else {
            return if matches!(self.accounts, AccountRule::Own) {
                Ok(())
            } else {
                Err("the deployment's own account is not among the policy's accounts".into())
            };
        };
        let by_rule = match &self.accounts {
            AccountRule::Own => false,
            AccountRule::List(ids) => ids.contains(a),
            AccountRule::Organization { exclude, .. } => {
                !exclude.contains(a) && members.is_some_and(|m| m.contains(a))
            }
        };
        let narrowed = self.only_accounts.as_ref().is_none_or(|o| o.contains(a));
        if by_rule && narrowed {
            Ok(())
        } else {
            Err(format!("account {a} is not one this deployment sweeps"))
        }
    }

    /// The receiver's one check of a message (a sweep request or a cleanup job), with
    /// `self` its own ceiling: the mandate the message carries is within it, and the
    /// message's account and region are admitted by both.
    pub fn admits_message(
        &self,
        carried: Option<&Mandate>,
        account: Option<&str>,
        region: &str,
        members: Option<&BTreeSet<String>>,
    ) -> Result<(), String> {
        if let Some(m) = carried {
            m.within(self)?;
            m.admits_account(account, members)?;
            m.admits_region(region)?;
        }
        self.admits_account(account, members)?;
        self.admits_region(region)
    }

    /// Narrows a plan to the mandate: decisions of images outside the scope leave the plan
    /// (as out of this run's reach, not as kept), and actions of stages the mandate does
    /// not perform become `keep`. The plan is made with the unscoped policy first, so
    /// `keep_count`, `group_by` and `max_deregistrations` count as the full sweep does:
    /// a scope can only remove images from the condemned set. An approved run then keeps
    /// every condemned image its approved set does not name with that action (the
    /// mandate's regions pick the set's entries: a region's sweep carries its own
    /// region). Returns warnings.
    pub fn restrict(&self, plan: &mut Plan, inventory: &Inventory) -> Vec<String> {
        let mut warnings = Vec::new();
        // The groups of the lineage images; `None` when one of them is not here (then
        // nothing is in scope).
        let mut groups: Option<BTreeSet<&crate::planner::Lineage>> = Some(BTreeSet::new());
        for id in &self.scope.lineages {
            match plan.decisions.iter().find(|d| &d.image_id == id) {
                Some(d) => {
                    if let Some(g) = groups.as_mut() {
                        g.insert(&d.lineage);
                    }
                }
                None => {
                    groups = None;
                    warnings.push(format!(
                        "{id} is not among the account's images here; nothing is in scope"
                    ));
                }
            }
        }
        // Lineages compare by rule and key components, never by their display string.
        let groups: Option<BTreeSet<crate::planner::Lineage>> =
            groups.map(|gs| gs.into_iter().cloned().collect());
        let lineage_ok = |lineage: &crate::planner::Lineage| {
            groups
                .as_ref()
                .is_some_and(|gs| gs.iter().all(|g| g == lineage))
        };
        let scope = &self.scope;
        let in_scope = |image: Option<&Image>, id: &str, lineage: &crate::planner::Lineage| {
            let recipe = image.and_then(|i| i.tags.get(IMAGE_BUILDER_TAG));
            scope
                .recipes
                .iter()
                .all(|p| recipe.is_some_and(|r| r.starts_with(p.as_str())))
                && lineage_ok(lineage)
                && scope.images.as_ref().is_none_or(|ids| ids.contains(id))
        };
        let by_id: rustc_hash::FxHashMap<&str, &Image> = inventory
            .images()
            .iter()
            .map(|i| (i.id.as_str(), i))
            .collect();
        let stages = self.stages;
        plan.retain_decisions(|d| {
            in_scope(
                by_id.get(d.image_id.as_str()).copied(),
                &d.image_id,
                &d.lineage,
            )
        });
        plan.map_actions(|d| match d.action {
            Action::Enable if !stages.reenable => Action::Keep,
            Action::Deregister if !stages.deregister => Action::Keep,
            Action::Deprecate | Action::Disable if !stages.retire => Action::Keep,
            other => other,
        });
        if let Some(approved) = &self.approved {
            keep_unapproved(plan, approved, &self.regions);
        }
        warnings
    }
}

/// The approved images a mandate of these regions and accounts may act on.
fn approved_within(
    approved: Approved,
    regions: &BTreeSet<String>,
    accounts: Option<&BTreeSet<String>>,
) -> Approved {
    approved
        .into_iter()
        .filter(|a| regions.contains(&a.region))
        .filter(|a| match (&a.account, accounts) {
            (Some(acc), Some(only)) => only.contains(acc),
            _ => true,
        })
        .collect()
}

/// An approved run's narrowing of a plan: a decision that condemns (or enables) keeps
/// its action only when the approved set names the image with that action, else it is
/// kept as `not_approved`; an approved image today's rules keep says `approved_but_kept`.
/// An id approved with two actions (two regions' plans) is approved for neither.
fn keep_unapproved(plan: &mut Plan, approved: &Approved, regions: &BTreeSet<String>) {
    let mut by_id: rustc_hash::FxHashMap<&str, Option<Action>> = Default::default();
    for a in approved.iter().filter(|a| regions.contains(&a.region)) {
        by_id
            .entry(a.image_id.as_str())
            .and_modify(|seen| {
                if *seen != Some(a.action) {
                    *seen = None;
                }
            })
            .or_insert(Some(a.action));
    }
    plan.map_decisions(|d| {
        let approved = by_id.get(d.image_id.as_str()).copied();
        if d.action == Action::Keep {
            if approved.is_some() {
                d.reasons.insert(0, Reason::ApprovedButKept);
            }
        } else if approved != Some(Some(d.action)) {
            d.action = Action::Keep;
            d.reasons.insert(0, Reason::NotApproved);
        }
    });
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Policy {
        Policy::from_json(&format!(
            r#"{{"dry_run": false, "retention": {{"min_age_days": 1}}{extra}}}"#
        ))
        .unwrap()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_ceiling_follows_the_policy_and_the_configuration() {
        let p = policy(r#", "regions": ["us-east-1", "eu-west-1"], "accounts": ["111111111111"]"#);
        let c = Mandate::ceiling(&p, false, Some("ap-south-1"));
        assert!(!c.dry_run);
        assert_eq!(c.regions, set(&["eu-west-1", "us-east-1"]));
        assert_eq!(c.accounts, AccountRule::List(set(&["111111111111"])));
        assert!(
            Mandate::ceiling(&p, true, None).dry_run,
            "ForceDryRun holds"
        );
        let own = Mandate::ceiling(&policy(""), false, Some("ap-south-1"));
        assert_eq!(own.regions, set(&["ap-south-1"]));
        assert_eq!(own.accounts, AccountRule::Own);
        assert_ne!(policy_digest(&p), policy_digest(&policy("")));
        assert_eq!(policy_digest(&p), policy_digest(&p.clone()));
    }

    #[test]
    fn narrowing_intersects_and_a_scope_drops_reconcile_and_reenable() {
        let p = policy(
            r#", "regions": ["us-east-1", "eu-west-1"], "accounts": ["111111111111", "222222222222"]"#,
        );
        let c = Mandate::ceiling(&p, false, None);
        let n = c.narrow(&Ask {
            dry_run: true,
            regions: Some(set(&["eu-west-1", "mars-1"])),
            accounts: Some(set(&["222222222222", "333333333333"])),
            scope: Scope {
                recipes: set(&["arn:x:image/web/"]),
                ..Scope::default()
            },
            stages: None,
            approved: None,
        });
        assert!(n.dry_run);
        assert_eq!(n.regions, set(&["eu-west-1"]));
        assert_eq!(
            n.only_accounts,
            Some(set(&["222222222222", "333333333333"]))
        );
        assert!(n.admits_account(Some("222222222222"), None).is_ok());
        assert!(
            n.admits_account(Some("333333333333"), None).is_err(),
            "not in the list"
        );
        assert!(
            n.admits_account(Some("111111111111"), None).is_err(),
            "narrowed away"
        );
        assert!(!n.stages.reconcile && !n.stages.reenable);
        assert!(n.stages.deregister && n.stages.retire);
        assert!(n.within(&c).is_ok());
        assert!(
            c.within(&n).is_err(),
            "the ceiling is wider than the narrowed"
        );
        // Narrowing again never widens.
        let again = n.narrow(&Ask::default());
        assert_eq!(again, n);
    }

    #[test]
    fn a_receiver_refuses_what_its_ceiling_does_not_cover() {
        let p = policy(r#", "regions": ["us-east-1"], "accounts": ["111111111111"]"#);
        let c = Mandate::ceiling(&p, false, None);
        let mut m = c.clone();
        m.policy_digest = "0".repeat(64);
        assert!(m.within(&c).unwrap_err().contains("policy changed"));
        let mut m = c.clone();
        m.regions.insert("eu-west-1".into());
        assert!(m.within(&c).unwrap_err().contains("eu-west-1"));
        let dry = Mandate::ceiling(&p, true, None);
        assert!(c.within(&dry).unwrap_err().contains("dry run"));
        assert!(dry.within(&c).is_ok(), "a dry run is always within");
        let mut m = c.clone();
        m.accounts = AccountRule::List(set(&["111111111111", "999999999999"]));
        assert!(m.within(&c).is_err());
        let scoped = c.narrow(&Ask {
            scope: Scope {
                lineages: set(&["ami-1"]),
                ..Scope::default()
            },
            ..Ask::default()
        });
        let mut wider = scoped.clone();
        wider.stages.reenable = true;
        assert!(wider.within(&scoped).is_err());
        assert!(wider.within(&c).unwrap_err().contains("scoped yet"));
        let text = serde_json::to_string(&scoped).unwrap();
        let widened = text.replacen('{', r#"{"future_narrowing": 1, "#, 1);
        assert!(
            serde_json::from_str::<Mandate>(&widened).is_err(),
            "a field this build does not know is refused, not dropped"
        );
        assert!(
            c.within(&scoped).is_err(),
            "full scope is wider than a lineage"
        );
    }

    #[test]
    fn organization_accounts_need_their_members_and_exclusions_hold() {
        let p = policy(
            r#", "accounts": {"organization": {"ou_ids": ["ou-1"], "exclude_accounts": ["333333333333"]}}"#,
        );
        let c = Mandate::ceiling(&p, false, Some("us-east-1"));
        assert!(c.needs_members());
        let members = set(&["111111111111", "333333333333"]);
        assert!(c
            .admits_account(Some("111111111111"), Some(&members))
            .is_ok());
        assert!(
            c.admits_account(Some("222222222222"), Some(&members))
                .is_err(),
            "other OU"
        );
        assert!(
            c.admits_account(Some("333333333333"), Some(&members))
                .is_err(),
            "excluded"
        );
        assert!(
            c.admits_account(Some("111111111111"), None).is_err(),
            "fail closed"
        );
        assert!(
            c.admits_account(None, Some(&members)).is_err(),
            "not the hub"
        );
        let own = Mandate::ceiling(&policy(""), false, Some("us-east-1"));
        assert!(own.admits_account(None, None).is_ok());
        assert!(own.admits_account(Some("111111111111"), None).is_err());
        assert!(own.admits_region("us-east-1").is_ok());
        assert!(own.admits_region("eu-west-1").is_err());
    }

    #[test]
    fn mandates_round_trip_as_json() {
        let c = Mandate::ceiling(
            &policy(r#", "accounts": ["111111111111"]"#),
            false,
            Some("us-east-1"),
        )
        .narrow(&Ask {
            scope: Scope {
                recipes: set(&["arn:r/"]),
                ..Scope::default()
            },
            ..Ask::default()
        });
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Mandate>(&text).unwrap(), c);
    }
}
