//! The retention policy: a user-facing JSON contract, parsed strictly.
//!
//! Every field is validated on the way in and every error names the field path,
//! because a policy that means something other than what its author thinks is
//! how images get deleted by mistake.

mod document;
mod exceptions;
mod expr;
mod glob;
mod lint;
mod rules;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::strict;
use document::PolicyDoc;
pub use exceptions::{
    Exception, ExceptionNote, Until, KEEP_REASON_TAG, KEEP_UNTIL_TAG, TAG_SOURCE,
};
pub use expr::{
    Architecture, Attribute, BootMode, Condition, DayBounds, ImageType, Platform, RootDeviceType,
    State, TagTest, Virtualization,
};
pub use glob::Glob;
pub use lint::{lint, lint_at, Finding};
pub use rules::{excluded, Rule, DEFAULT_RULE};

/// A whole retention policy, as the planner reads it: an ordered list of retention
/// rules and the policy-wide settings (protections, cleanup, limits, usage, accounts,
/// regions). Made only by [`Policy::from_json`], which validates it.
#[derive(Debug, Clone, Serialize)]
#[serde(into = "PolicyDoc")]
pub struct Policy {
    /// Plan and report only; nothing is changed. Defaults to true: deleting must be asked for.
    pub dry_run: bool,
    /// Regions to sweep; absent means the current region of the AWS configuration.
    pub regions: Option<Vec<String>>,
    /// The retention rules, in order, never empty: the first whose selection an image
    /// satisfies decides it. A policy written without `rules` has one, named `default`.
    pub rules: Vec<Rule>,
    /// Safety checks that can be relaxed (every rule's images).
    pub protection: ProtectionRules,
    /// What to clean up after deregistration.
    pub cleanup: Cleanup,
    /// Caps on a single run.
    pub limits: Limits,
    /// Where ami-sweeper looks for users of an image, beyond its own defaults.
    pub usage: UsageRules,
    /// Sweep these accounts through the member role instead of the deployment's own.
    pub accounts: Option<Accounts>,
    /// The role each member account offers the hub (deployed by `template-member.yaml`).
    pub member_role_name: String,
    /// How the Recycle Bin's retention rules shape deletion.
    pub recycle_bin: RecycleBinMode,
    /// Risks the author accepts by name.
    pub acknowledge: Vec<Acknowledgement>,
    /// Who hears about a sweep.
    pub notify: Notify,
    /// Prices for the estimated monthly saving.
    pub cost: Cost,
    /// Images kept (`excepted`) until an instant, then decided as usual. Left out of
    /// [`crate::mandate::policy_digest`]: an exception can only keep more.
    pub exceptions: Vec<Exception>,
    /// Written with one top-level `selection`/`retention`/`retire` (no `rules`): it
    /// serializes back in that form, so its digest does not change.
    single: bool,
}

/// What the summary messages look ahead to and whom they address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// "Coming": retiring images eligible within this many days, and images the same
    /// policy would condemn this many days from now. Default 7.
    #[serde(default = "default_lookahead", deserialize_with = "non_negative")]
    #[schemars(range(min = 0))]
    pub lookahead_days: u64,
    /// A tag key naming each image's owner (e.g. `owner`): besides the summary, one
    /// message per owner with only that owner's images and an `owner` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_tag: Option<String>,
}

impl Default for Notify {
    fn default() -> Self {
        Self {
            lookahead_days: default_lookahead(),
            owner_tag: None,
        }
    }
}

fn default_lookahead() -> u64 {
    7
}

/// Prices for the saving estimates.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    /// US dollars per GiB-month; each given price replaces the built-in table's for every
    /// region (e.g. a negotiated rate).
    #[serde(default)]
    pub price_per_gib_month: PriceOverride,
}

/// Prices that replace the built-in table's, in US dollars per GiB-month.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    /// EBS snapshots in the standard tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub snapshot_standard: Option<f64>,
    /// EBS snapshots in the archive tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub snapshot_archive: Option<f64>,
    /// S3 Standard (instance-store bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub s3_standard: Option<f64>,
}

/// A risk a policy's author accepts explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acknowledgement {
    /// `min_age_days` 0 with no `keep_count`: images, even the newest of a lineage, may
    /// be deregistered the moment they are made.
    NoMinimumAge,
}

/// Where users of an image are looked for.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRules {
    /// AWS's own reference check (`DescribeImageReferences`) on the condemned images:
    /// `required` (default: where it is denied, the region stops with nothing changed) or
    /// `optional` (where it is denied, ami-sweeper's own sources alone decide, with a
    /// warning). Where the API does not exist, the own sources decide either way.
    #[serde(default)]
    pub aws_references: AwsReferences,
    /// SSM parameter paths (searched recursively) whose `String` parameters holding an AMI
    /// id keep that image. Parameters of data type `aws:ec2:image` count wherever they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssm_paths: Vec<String>,
    /// Which launch template versions keep their image: `all` (default), `default_and_latest`,
    /// or `referenced` (also versions named by an Auto Scaling group, EC2 Fleet, Spot Fleet
    /// or Batch compute environment).
    #[serde(default)]
    pub launch_template_versions: TemplateVersions,
    /// Also read each CloudFormation stack's template as written (`GetTemplate`, one call
    /// per stack, paced) for literal image ids and `{{resolve:ssm:…}}` references. Off by
    /// default: stacks' parameters are always read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloudformation_templates: bool,
    /// S3 places (`s3://bucket/prefix/`) holding Terraform state, Packer manifests or
    /// released templates: every AMI id in an object there keeps its image. Read once per
    /// run with the deployment's own role; empty by default.
    #[serde(
        default,
        deserialize_with = "s3_places",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reference_objects: Vec<String>,
}

/// The bucket and prefix of an `s3://bucket/prefix` place, or `None` when it is not one.
pub fn s3_place(place: &str) -> Option<(&str, &str)> {
    let rest = place.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    ok.then_some((bucket, prefix))
}

fn s3_places<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let places = Vec::<String>::deserialize(d)?;
    if let Some(bad) = places.iter().find(|p| s3_place(p).is_none()) {
        return Err(serde::de::Error::custom(format!(
            "{bad:?} is not an s3://bucket/prefix/ place"
        )));
    }
    Ok(places)
}

/// The stages a condemned image goes through before it is deregistered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retire {
    /// Set a condemned image's `DeprecationTime` first (describe-images and the console then
    /// warn anyone launching it); it goes on at the next sweep.
    #[serde(default)]
    pub deprecate: bool,
    /// Disable a condemned image (it can no longer launch; `EnableImage` undoes it) and
    /// deregister it only after this many days, if the rules still condemn it then.
    #[serde(
        default,
        deserialize_with = "opt_non_negative",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub disable_for_days: Option<u64>,
}

/// How the Recycle Bin's rules shape deletion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecycleBinMode {
    /// Snapshots of an image entering the bin wait until it can no longer be restored.
    #[default]
    Respect,
    /// As `respect`, and an image no AMI rule retains is kept (`no_recycle_bin_rule`).
    Require,
    /// The bin is not consulted (rules are not read).
    Ignore,
}

/// Whether AWS's reference check must succeed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AwsReferences {
    /// A denied check stops the region (nothing is deregistered there).
    #[default]
    Required,
    /// A denied check is a warning; the own sources decide.
    Optional,
}

pub use crate::model::TemplateVersions;

/// Which images are considered.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Name globs; an image is selected when its Name matches any. Empty selects every name.
    #[serde(default)]
    pub names: Vec<Glob>,
    /// Required tags: for every key, the image must carry the tag with a value matching the glob.
    #[serde(default, deserialize_with = "unique_keys")]
    pub tags: BTreeMap<String, Glob>,
    /// A condition over the image's attributes (`all`/`any`/`not`, `exists`, name,
    /// description, tag, architecture, platform, virtualization, root device type, boot
    /// mode, public, state, image type, source image and region, age and last-launched
    /// days). A comparison on an attribute the image lacks is false.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Condition>,
    /// Excluding tags: an image carrying any of these keys with a matching value is kept.
    #[serde(default, deserialize_with = "unique_keys")]
    pub exclude_tags: BTreeMap<String, Glob>,
}

/// Age and count rules.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Images younger than this many days are kept. Required.
    #[serde(deserialize_with = "non_negative")]
    #[schemars(range(min = 0))]
    pub min_age_days: u64,
    /// The newest this many available images of each group are kept.
    #[serde(default, deserialize_with = "non_negative")]
    #[schemars(range(min = 0))]
    pub keep_count: u64,
    /// How images are grouped into lineages for `keep_count`; absent means one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
    /// Images launched within this many days are kept.
    #[serde(
        default,
        deserialize_with = "opt_non_negative",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub launched_within_days: Option<u64>,
    /// Thinning windows by age, `after_days` strictly increasing: an image at least a
    /// window's `after_days` old (and younger than the next's) is kept only if it is the
    /// newest of its calendar period (`keep_one_per`: `day`, `week`, `month`, `quarter`,
    /// `year`; `none` keeps none) in its lineage; otherwise it goes as `thinned`. Refused
    /// under a `match` (this rule's or an earlier one's) testing `age_days` or
    /// `last_launched_days`: the lineage must not change with time alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thin: Vec<crate::thinning::Window>,
}

/// The group (lineage) key of an image.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBy {
    /// Tag keys whose values form part of the key; a missing tag counts as the empty string.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Regex over the Name (unanchored search); its first capture group forms part
    /// of the key, or the whole Name when it does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_regex: Option<NameRegex>,
}

/// Protections that a policy may relax.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectionRules {
    /// Keep images used by instances (any state but terminated), launch template versions
    /// or launch configurations.
    #[serde(default = "default_true")]
    pub skip_in_use: bool,
    /// Keep public images and images shared with other accounts, organizations or OUs.
    #[serde(default = "default_true")]
    pub skip_shared: bool,
    /// How a shared image is judged: `keep` (default: always kept) or `keep_if_used` (an
    /// image shared only with accounts the sweep can enter is kept if one of them uses it,
    /// and otherwise treated as unshared).
    #[serde(default)]
    pub shared: SharedRule,
}

impl Default for ProtectionRules {
    fn default() -> Self {
        Self {
            skip_in_use: true,
            skip_shared: true,
            shared: SharedRule::Keep,
        }
    }
}

/// How a shared image is judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedRule {
    /// Always kept (`shared`).
    #[default]
    Keep,
    /// Kept if an account it is shared with (and the sweep can enter) uses it.
    KeepIfUsed,
}

/// The accounts a sweep covers besides (or instead of) its own. Read by hand (serde's
/// `untagged` drops unknown keys): a key beside `organization` is refused with its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(deny_unknown_fields)]
pub enum Accounts {
    /// These account ids.
    List(Vec<String>),
    /// The accounts of these organizational units (and their child OUs).
    Organization {
        /// Where to look.
        organization: OrgScope,
    },
}

impl<'de> Deserialize<'de> for Accounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AccountsVisitor;
        impl<'de> Visitor<'de> for AccountsVisitor {
            type Value = Accounts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of account ids or {\"organization\": {\"ou_ids\": [...]}}")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Accounts, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(Accounts::List(ids))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Accounts, A::Error> {
                const KNOWN: &[&str] = &["organization"];
                let mut organization = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "organization" if organization.is_none() => {
                            organization = Some(map.next_value()?)
                        }
                        "organization" => return Err(de::Error::duplicate_field("organization")),
                        _ => return Err(strict::refuse_key(&mut map, &key, KNOWN)),
                    }
                }
                let organization =
                    organization.ok_or_else(|| de::Error::missing_field("organization"))?;
                Ok(Accounts::Organization { organization })
            }
        }
        d.deserialize_any(AccountsVisitor)
    }
}

/// Organizational units to sweep.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgScope {
    /// `ou-...` or `r-...` ids; child OUs are included.
    pub ou_ids: Vec<String>,
    /// Accounts under them to leave alone.
    #[serde(default)]
    pub exclude_accounts: Vec<String>,
}

fn default_member_role() -> String {
    "ami-sweeper-member".into()
}

/// Cleanup switches applied after a successful deregistration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Delete the image's EBS snapshots that no remaining image references.
    #[serde(default = "default_true")]
    pub snapshots: bool,
    /// Delete instance-store bundles: the manifest and exactly the parts it lists.
    #[serde(default = "default_true")]
    pub bundles: bool,
    /// Also reclaim snapshots left behind by images deregistered outside ami-sweeper.
    /// Absent: such snapshots are reported, never touched (some teams keep them on purpose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphans: Option<Orphans>,
    /// Bundle buckets from which no other account registers images. ami-sweeper sees only
    /// its own account's images, so an unmarked (foreign) bundle is reclaimed under
    /// `orphans` only in a bucket listed here; elsewhere another account may still launch
    /// from it, and it is kept (`bucket_not_private`). Marked bundles are not affected.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub private_bundle_buckets: std::collections::BTreeSet<String>,
}

/// Reclaiming storage that other tools or people left behind (see `crate::orphans`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Orphans {
    /// A foreign orphan must be at least this many days old before it is deleted.
    #[serde(deserialize_with = "non_negative")]
    #[schemars(range(min = 0))]
    pub min_age_days: u64,
}

impl Default for Cleanup {
    fn default() -> Self {
        Self {
            snapshots: true,
            bundles: true,
            orphans: None,
            private_bundle_buckets: std::collections::BTreeSet::new(),
        }
    }
}

/// Caps on one run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many deregistrations per run (per region); the oldest go first.
    #[serde(
        default,
        deserialize_with = "opt_non_negative",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub max_deregistrations: Option<u64>,
    /// The share of EC2's request buckets (per account and Region) a sweep may draw on,
    /// more than 0 and at most 1 (default 1: its pacers start at their share of each
    /// bucket, leaving a fifth of its size to other callers). It multiplies every pacer's
    /// burst and refill, for accounts whose other callers (CI, Terraform, Auto Scaling)
    /// need more room. Explicit `--rate` / `--describe-rate` flags override it.
    #[serde(default = "full_share", deserialize_with = "share")]
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub api_share: f64,
    /// The longest an exception may keep an image, in days from the run's instant: a
    /// policy `exceptions` entry beyond it is refused when the run starts; an
    /// `ami-sweeper:keep-until` tag beyond it still keeps its image and is reported.
    #[serde(
        default,
        deserialize_with = "opt_non_negative",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub max_exception_days: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_deregistrations: None,
            api_share: full_share(),
            max_exception_days: None,
        }
    }
}

fn full_share() -> f64 {
    1.0
}

/// A share in (0, 1].
fn share<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is not a share: more than 0 and at most 1"
        )))
    }
}

/// A compiled `group_by.name_regex`, guaranteed to have a capture group.
#[derive(Clone)]
pub struct NameRegex(Regex);

impl NameRegex {
    /// Compiles and checks a pattern; the error is one line, fit for a field-path message.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let re = Regex::new(pattern).map_err(|e| {
            let detail = e.to_string();
            let last = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ")
                .to_string();
            format!("invalid regex {pattern:?}: {last}")
        })?;
        if re.captures_len() < 2 {
            return Err(format!(
                "regex {pattern:?} has no capture group; wrap the lineage part in (...)"
            ));
        }
        Ok(Self(re))
    }

    /// The first capture group of the first match, or the whole name when it does not match.
    pub fn key<'a>(&self, name: &'a str) -> &'a str {
        match self.0.captures(name) {
            Some(c) => c.get(1).map_or("", |m| m.as_str()),
            None => name,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for NameRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameRegex({:?})", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for NameRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NameRegex::new(&s).map_err(de::Error::custom)
    }
}

impl Serialize for NameRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl JsonSchema for NameRegex {
    fn schema_name() -> Cow<'static, str> {
        "NameRegex".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Rust regex syntax, unanchored search, with at least one capture group."
        })
    }
}

fn default_true() -> bool {
    true
}

const NON_NEGATIVE: &str = "expected a non-negative integer";

struct NonNegative;

impl<'de> Visitor<'de> for NonNegative {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{NON_NEGATIVE}, found {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!("{NON_NEGATIVE}, found {v}")))
    }
}

/// A map whose keys must be unique: JSON allows a repeated key and serde would keep the
/// last value, which could silently drop an exclusion (`{"retain": "*", "retain": "x"}`).
fn unique_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Glob>, D::Error> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = BTreeMap<String, Glob>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of tag key to glob")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                let value: Glob = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(NonNegative)
}

fn opt_non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(NonNegative).map(Some)
}

/// A policy that cannot be used, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "policy" } else { path.as_str() })]
pub struct PolicyError {
    /// Dotted field path, e.g. `retention.keep_count`; empty for the whole document.
    pub path: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl From<strict::FieldError> for PolicyError {
    fn from(e: strict::FieldError) -> Self {
        Self::new(e.path, e.message)
    }
}

impl PolicyError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        if text.trim().is_empty() {
            return Err(PolicyError::new("", "the document is empty"));
        }
        let starts_object = text.trim_start().starts_with('{');
        let mut de = serde_json::Deserializer::from_str(text);
        let doc: PolicyDoc = match serde_path_to_error::deserialize(&mut de) {
            // serde accepts a struct as an array of its fields, in order.
            Ok(_) if !starts_object => {
                return Err(PolicyError::new("", "must be a JSON object"));
            }
            Ok(p) => p,
            Err(e) => {
                if !starts_object && !e.inner().is_syntax() {
                    return Err(PolicyError::new("", "must be a JSON object"));
                }
                return Err(strict::translate(e).into());
            }
        };
        de.end()
            .map_err(|e| PolicyError::new("", strict::strip_position(&e)))?;
        let mut policy = doc.into_policy()?;
        policy.validate()?;
        Ok(policy)
    }

    /// The checks serde's shapes cannot express; repeated regions are dropped (a region
    /// listed twice would be swept twice at once).
    fn validate(&mut self) -> Result<(), PolicyError> {
        self.validate_rules()?;
        self.validate_exceptions()?;
        if let Some(regions) = &mut self.regions {
            let mut seen = std::collections::BTreeSet::new();
            regions.retain(|r| seen.insert(r.clone()));
        }
        if let Some(regions) = &self.regions {
            if regions.is_empty() {
                return Err(PolicyError::new(
                    "regions",
                    "must list at least one region (omit it to use the current region)",
                ));
            }
            for (i, r) in regions.iter().enumerate() {
                let ok = !r.is_empty()
                    && r.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok {
                    return Err(PolicyError::new(
                        format!("regions[{i}]"),
                        format!("{r:?} is not a region name like \"us-east-1\""),
                    ));
                }
            }
        }
        let is_account = |a: &str| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit());
        let listed = match &self.accounts {
            Some(Accounts::List(ids)) => ("accounts", ids.as_slice()),
            Some(Accounts::Organization { organization }) => {
                if organization.ou_ids.is_empty() {
                    return Err(PolicyError::new(
                        "accounts.organization.ou_ids",
                        "must name at least one OU (or the root)",
                    ));
                }
                (
                    "accounts.organization.exclude_accounts",
                    organization.exclude_accounts.as_slice(),
                )
            }
            None => ("accounts", &[][..]),
        };
        if let Some((i, a)) = listed.1.iter().enumerate().find(|(_, a)| !is_account(a)) {
            return Err(PolicyError::new(
                format!("{}[{i}]", listed.0),
                format!("{a:?} is not a 12-digit account id"),
            ));
        }
        if matches!(&self.accounts, Some(Accounts::List(ids)) if ids.is_empty()) {
            return Err(PolicyError::new(
                "accounts",
                "must list at least one account",
            ));
        }
        if self.member_role_name.is_empty()
            || !self
                .member_role_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(PolicyError::new(
                "member_role_name",
                "is not an IAM role name",
            ));
        }
        for (i, path) in self.usage.ssm_paths.iter().enumerate() {
            if !path.starts_with('/') || path.contains("//") {
                return Err(PolicyError::new(
                    format!("usage.ssm_paths[{i}]"),
                    format!("{path:?} is not an SSM parameter path like \"/golden-amis\""),
                ));
            }
        }
        self.validate_notify_and_cost()
    }

    /// Each rule's own checks, with its field paths (`rules[i].` in front; none for a
    /// policy of one top-level rule): a name that is unique, an acknowledged zero minimum
    /// age, tag keys that are not empty.
    fn validate_rules(&self) -> Result<(), PolicyError> {
        if self.rules.is_empty() {
            return Err(PolicyError::new("rules", "must list at least one rule"));
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| {
                if self.single {
                    field.to_string()
                } else {
                    format!("rules[{i}].{field}")
                }
            };
            if !self.single {
                if rule.name.trim().is_empty() {
                    return Err(PolicyError::new(at("name"), "must not be empty"));
                }
                if let Some(j) = seen.get(rule.name.as_str()) {
                    return Err(PolicyError::new(
                        at("name"),
                        format!(
                            "{:?} is also the name of rules[{j}]; rule names must be unique",
                            rule.name
                        ),
                    ));
                }
                seen.insert(&rule.name, i);
            }
            let ret = &rule.retention;
            if ret.min_age_days == 0
                && ret.keep_count == 0
                && !self.acknowledge.contains(&Acknowledgement::NoMinimumAge)
            {
                return Err(PolicyError::new(
                    at("retention.min_age_days"),
                    "0 with no keep_count deregisters images the moment they are made, even \
                     the newest of each lineage; set keep_count or min_age_days, or add \
                     \"acknowledge\": [\"no_minimum_age\"]",
                ));
            }
            self.validate_thinned_lineage(i, &at)?;
            for (j, pair) in ret.thin.windows(2).enumerate() {
                if pair[1].after_days <= pair[0].after_days {
                    return Err(PolicyError::new(
                        at(&format!("retention.thin[{}].after_days", j + 1)),
                        format!(
                            "{} is not more than the window before it ({}); after_days must \
                             strictly increase",
                            pair[1].after_days, pair[0].after_days
                        ),
                    ));
                }
            }
            for (field, map) in [
                ("selection.tags", &rule.selection.tags),
                ("selection.exclude_tags", &rule.selection.exclude_tags),
            ] {
                if map.contains_key("") {
                    return Err(PolicyError::new(at(field), "tag keys must not be empty"));
                }
                if let Some(k) = map.keys().find(|k| is_own_tag(k)) {
                    return Err(PolicyError::new(at(field), own_tag_error(k)));
                }
            }
            if let Some(m) = rule.selection.matches.as_ref() {
                if let Some(path) = tag_key_where(m, &str::is_empty) {
                    return Err(PolicyError::new(
                        at(&format!("selection.match{path}")),
                        "tag keys must not be empty",
                    ));
                }
                if let Some(path) = tag_key_where(m, &is_own_tag) {
                    return Err(PolicyError::new(
                        at(&format!("selection.match{path}")),
                        own_tag_error("this key"),
                    ));
                }
            }
            if let Some(g) = &ret.group_by {
                if let Some(k) = g.tags.iter().position(|t| t.is_empty()) {
                    return Err(PolicyError::new(
                        at(&format!("retention.group_by.tags[{k}]")),
                        "tag keys must not be empty",
                    ));
                }
                if let Some(k) = g.tags.iter().position(|t| is_own_tag(t)) {
                    return Err(PolicyError::new(
                        at(&format!("retention.group_by.tags[{k}]")),
                        own_tag_error(&g.tags[k]),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `notify.owner_tag` names a tag; prices are amounts of money.
    /// A rule with `retention.thin` must take a lineage that time alone does not change:
    /// neither its own `match` nor an earlier rule's (whose images would fall through to
    /// it as they age) may test `age_days` or `last_launched_days`, or an image joining
    /// late would replace the representative of a period that is over.
    fn validate_thinned_lineage(
        &self,
        i: usize,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(), PolicyError> {
        if self.rules[i].retention.thin.is_empty() {
            return Ok(());
        }
        let test = |r: &Rule| {
            r.selection
                .matches
                .as_ref()
                .and_then(|m| m.time_dependent())
        };
        if let Some(name) = test(&self.rules[i]) {
            return Err(PolicyError::new(
                at("selection.match"),
                format!(
                    "tests {name}, so images join or leave this thinned lineage as time \
                     passes and a period's kept image could be thinned later in the same \
                     window; let retention (min_age_days, launched_within_days, thin's \
                     after_days) judge age instead"
                ),
            ));
        }
        if let Some((j, name)) = self.rules[..i]
            .iter()
            .enumerate()
            .find_map(|(j, r)| test(r).map(|n| (j, n)))
        {
            return Err(PolicyError::new(
                at("retention.thin"),
                format!(
                    "rules[{j}] ({:?}) selects by {name}, so its images fall through to this \
                     thinned rule as time passes and a period's kept image could be thinned \
                     later in the same window; give rules[{j}] no time test (use \
                     retention.launched_within_days or min_age_days) or put it after this rule",
                    self.rules[j].name
                ),
            ));
        }
        Ok(())
    }

    fn validate_notify_and_cost(&self) -> Result<(), PolicyError> {
        if self.notify.owner_tag.as_deref() == Some("") {
            return Err(PolicyError::new(
                "notify.owner_tag",
                "tag keys must not be empty",
            ));
        }
        let p = &self.cost.price_per_gib_month;
        for (field, price) in [
            ("snapshot_standard", p.snapshot_standard),
            ("snapshot_archive", p.snapshot_archive),
            ("s3_standard", p.s3_standard),
        ] {
            if price.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(PolicyError::new(
                    format!("cost.price_per_gib_month.{field}"),
                    "must be a non-negative number of US dollars per GiB-month",
                ));
            }
        }
        Ok(())
    }

    /// The JSON Schema of the policy document, as published by `ami-sweeper schema`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(PolicyDoc)).expect("schema serializes")
    }
}

/// The path (below `match`) of the first `tag` condition with an empty key.
fn tag_key_where(c: &Condition, bad: &dyn Fn(&str) -> bool) -> Option<String> {
    match c {
        Condition::All(cs) | Condition::Any(cs) => {
            let (name, list) = match c {
                Condition::All(_) => ("all", cs),
                _ => ("any", cs),
            };
            list.iter()
                .enumerate()
                .find_map(|(i, c)| tag_key_where(c, bad).map(|p| format!(".{name}[{i}]{p}")))
        }
        Condition::Not(inner) => tag_key_where(inner, bad).map(|p| format!(".not{p}")),
        Condition::Tag(t) if bad(&t.key) => Some(".tag.key".to_string()),
        _ => None,
    }
}

/// A key in ami-sweeper's own tag namespace (`ami-sweeper:`): the rules never see such
/// tags (`retire::as_it_was`), so a policy naming one would silently drop it
/// (an exclude tag that keeps nothing, a selection that falls through to a later rule).
fn is_own_tag(key: &str) -> bool {
    key.starts_with(crate::model::OWN_TAG_PREFIX)
}

fn own_tag_error(key: &str) -> String {
    format!(
        "{key:?}: `ami-sweeper:` tags are ami-sweeper's own and invisible to the rules, so a \
         rule on one would never match and an exclude tag would keep nothing; use a key \
         outside that namespace (e.g. `retain`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_safe_ones() {
        let p = Policy::from_json(r#"{"retention": {"min_age_days": 30}}"#).unwrap();
        assert!(p.dry_run);
        assert!(p.regions.is_none());
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].name, "default");
        assert!(p.rules[0].selection.names.is_empty());
        assert_eq!(p.rules[0].retention.keep_count, 0);
        assert!(p.rules[0].retention.group_by.is_none());
        assert!(p.protection.skip_in_use && p.protection.skip_shared);
        assert!(p.cleanup.snapshots && p.cleanup.bundles);
        assert!(p.limits.max_deregistrations.is_none());
    }

    #[test]
    fn a_single_rule_policy_serializes_as_written_so_its_digest_holds() {
        let p = Policy::from_json(r#"{"retention": {"min_age_days": 30}}"#).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert!(v.get("rules").is_none(), "{v}");
        assert_eq!(v["retention"]["min_age_days"], 30);
        assert!(v.get("selection").is_some() && v.get("retire").is_some());
        let again = Policy::from_json(&v.to_string()).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), v);
        let listed =
            Policy::from_json(r#"{"rules": [{"name": "a", "retention": {"min_age_days": 30}}]}"#)
                .unwrap();
        let v = serde_json::to_value(&listed).unwrap();
        assert_eq!(v["rules"][0]["name"], "a");
        assert!(v.get("retention").is_none());
    }

    #[test]
    fn notify_and_cost_default_and_parse() {
        let p = Policy::from_json(r#"{"retention": {"min_age_days": 30}}"#).unwrap();
        assert_eq!(p.notify.lookahead_days, 7);
        assert!(p.notify.owner_tag.is_none());
        assert_eq!(p.cost.price_per_gib_month, PriceOverride::default());
        let p = Policy::from_json(
            r#"{"retention": {"min_age_days": 30}, "notify": {"lookahead_days": 14,
                "owner_tag": "owner"}, "cost": {"price_per_gib_month": {"snapshot_archive": 0.01}}}"#,
        )
        .unwrap();
        assert_eq!(p.notify.lookahead_days, 14);
        assert_eq!(p.notify.owner_tag.as_deref(), Some("owner"));
        assert_eq!(p.cost.price_per_gib_month.snapshot_archive, Some(0.01));
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../../../samples/policy.json");
        let p = Policy::from_json(text).unwrap();
        assert!(p.rules[0].retention.group_by.is_some());
    }

    #[test]
    fn name_regex_takes_the_first_capture_or_the_whole_name() {
        let re = NameRegex::new(r"^(.*)-[0-9]+$").unwrap();
        assert_eq!(re.key("web-2026"), "web");
        assert_eq!(re.key("web-latest"), "web-latest");
        let optional = NameRegex::new(r"^web(-x)?").unwrap();
        assert_eq!(optional.key("web-1"), "");
    }

    #[test]
    fn error_messages_name_the_field() {
        let cases = [
            (
                r#"{"retention": {"min_age_days": 1, "keep_count": -1}}"#,
                "retention.keep_count: expected a non-negative integer, found -1",
            ),
            (
                r#"{"retention": {}}"#,
                "retention.min_age_days: missing required field",
            ),
            (r#"{}"#, "retention: missing required field"),
            (
                r#"{"retention": {"min_age_days": 1}, "selection": {"nmes": []}}"#,
                "selection.nmes: unknown field (known fields: `names`, `tags`, `match`, `exclude_tags`)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Policy::from_json(text).unwrap_err().to_string(),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn api_share_defaults_to_the_whole_share_and_must_lie_in_zero_to_one() {
        let base = |limits: &str| format!(r#"{{"retention": {{"min_age_days": 1}}{limits}}}"#);
        assert_eq!(Policy::from_json(&base("")).unwrap().limits.api_share, 1.0);
        let told = Policy::from_json(&base(r#", "limits": {"api_share": 0.2}"#)).unwrap();
        assert_eq!(told.limits.api_share, 0.2);
        assert_eq!(told.limits.max_deregistrations, None);
        for bad in ["0", "-0.5", "1.5"] {
            let text = base(&format!(r#", "limits": {{"api_share": {bad}}}"#));
            let err = Policy::from_json(&text).unwrap_err().to_string();
            assert!(
                err.starts_with("limits.api_share: ") && err.contains("not a share"),
                "{bad}: {err}"
            );
        }
        let schema = Policy::json_schema().to_string();
        assert!(schema.contains("api_share") && schema.contains("exclusiveMinimum"));
    }

    #[test]
    fn schema_forbids_unknown_fields_and_requires_min_age() {
        let schema = Policy::json_schema();
        assert_eq!(schema["additionalProperties"], false);
        // `retention` (one rule) or `rules` (several) is required.
        assert_eq!(
            schema["oneOf"],
            serde_json::json!([{"required": ["retention"]}, {"required": ["rules"]}])
        );
        let text = schema.to_string();
        assert!(text.contains("min_age_days"));
        // `rules` and the `match` conditions are described.
        for word in [
            "\"rules\"",
            "\"match\"",
            "last_launched_days",
            "source_region",
            "x86_64_mac",
        ] {
            assert!(text.contains(word), "schema lacks {word}");
        }
    }
}
