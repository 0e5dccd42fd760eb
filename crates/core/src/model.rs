//! Our own model of an account's images and of what uses them.
//!
//! The planner reasons only about these types, never about SDK or AWS CLI shapes:
//! adapters (the AWS CLI JSON reader, the live EC2 inventory) map into them.

use std::collections::BTreeSet;
use std::fmt;

use rustc_hash::{FxHashMap, FxHashSet};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::time::Timestamp;

/// Tag EC2 Image Builder puts on the AMIs it distributes: the image build version ARN.
pub const IMAGE_BUILDER_TAG: &str = "Ec2ImageBuilderArn";

/// The prefix of every tag ami-sweeper writes on images and storage. The rules never see
/// such tags on an image, and a policy may not name one.
pub const OWN_TAG_PREFIX: &str = "ami-sweeper:";

/// Lifecycle state of an AMI as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageState {
    /// Being created or copied; not usable yet.
    Pending,
    /// Usable.
    Available,
    /// Not usable; EC2 gives no further reason.
    Invalid,
    /// Deregistered (EC2 lists it for a while afterwards).
    Deregistered,
    /// Changing state.
    Transient,
    /// Creation failed; it still holds whatever storage was made.
    Failed,
    /// In error.
    Error,
    /// Disabled: cannot launch, still holds its storage, can be re-enabled.
    Disabled,
    /// A state this version does not know; treated as unsettled (never deregistered).
    Other(String),
}

impl ImageState {
    /// Maps EC2's state string; unknown strings are kept verbatim as [`ImageState::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "available" => Self::Available,
            "invalid" => Self::Invalid,
            "deregistered" => Self::Deregistered,
            "transient" => Self::Transient,
            "failed" => Self::Failed,
            "error" => Self::Error,
            "disabled" => Self::Disabled,
            other => Self::Other(other.to_string()),
        }
    }

    /// EC2's spelling of the state.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Available => "available",
            Self::Invalid => "invalid",
            Self::Deregistered => "deregistered",
            Self::Transient => "transient",
            Self::Failed => "failed",
            Self::Error => "error",
            Self::Disabled => "disabled",
            Self::Other(s) => s,
        }
    }

    /// Settled states are the only ones a sweep may deregister; the others are in flux.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Self::Available | Self::Disabled | Self::Failed | Self::Error
        )
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ImageState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where the image's root volume lives, which decides what cleanup means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootDevice {
    /// EBS-backed: the image holds EBS snapshots.
    Ebs,
    /// Instance-store-backed: the image's bundle lives in S3 at `ImageLocation`.
    InstanceStore,
    /// Anything else EC2 (or an emulator) reports, e.g. `standard`.
    Other(String),
}

impl RootDevice {
    /// Maps EC2's `RootDeviceType` string.
    pub fn parse(s: &str) -> Self {
        match s {
            "ebs" => Self::Ebs,
            "instance-store" => Self::InstanceStore,
            other => Self::Other(other.to_string()),
        }
    }
}

/// EC2 deregistration protection, as the `DeregistrationProtection` field reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Absent or `disabled`.
    Disabled,
    /// `enabled`.
    Enabled,
    /// `enabled-with-cooldown`.
    EnabledWithCooldown,
    /// `disabled after <instant>`: protection with cooldown was switched off and
    /// still applies until that instant.
    DisabledAfter(Timestamp),
    /// A value we cannot read; treated as protected, because guessing wrong deletes.
    Unrecognised(String),
}

impl Protection {
    /// Parses the field; `None` (field absent) means unprotected.
    pub fn parse(value: Option<&str>) -> Self {
        let Some(raw) = value else {
            return Self::Disabled;
        };
        let v = raw.trim();
        match v {
            "" | "disabled" => Self::Disabled,
            "enabled" => Self::Enabled,
            "enabled-with-cooldown" => Self::EnabledWithCooldown,
            _ => match v.strip_prefix("disabled after ") {
                Some(instant) => match crate::time::parse_instant(instant.trim()) {
                    Some(t) => Self::DisabledAfter(t),
                    None => Self::Unrecognised(raw.to_string()),
                },
                None => Self::Unrecognised(raw.to_string()),
            },
        }
    }

    /// Whether EC2 would refuse to deregister the image at `now`.
    pub fn is_protected_at(&self, now: Timestamp) -> bool {
        match self {
            Self::Disabled => false,
            Self::Enabled | Self::EnabledWithCooldown | Self::Unrecognised(_) => true,
            Self::DisabledAfter(until) => *until > now,
        }
    }
}

/// An image's tags: a small sorted list, far lighter than a map for the handful of
/// tags an image carries (this matters at 100,000 images).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    /// No tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of tag `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Whether tag `key` is present (with any value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets tag `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1 = value.into(),
            Err(i) => self.0.insert(i, (key, value.into())),
        }
    }

    /// Removes tag `key`, if present.
    pub fn remove(&mut self, key: &str) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            self.0.remove(i);
        }
    }

    /// The tags in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Tags {
    /// Later duplicates of a key win, as EC2 never reports two.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut v: Vec<(String, String)> = iter.into_iter().collect();
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v.shrink_to_fit();
        Self(v)
    }
}

/// One EBS snapshot an image's block device mappings reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// `snap-...`.
    pub id: String,
    /// The mapping's `VolumeSize` in GiB, where reported.
    pub size_gib: Option<u64>,
}

/// An AMI the account owns, reduced to what the safety rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `ami-...`.
    pub id: String,
    /// The AMI name; empty when EC2 reports none.
    pub name: String,
    /// When the image was created.
    pub creation_date: Timestamp,
    /// Lifecycle state.
    pub state: ImageState,
    /// Tags as key → value.
    pub tags: Tags,
    /// Launchable by everyone.
    pub public: bool,
    /// Launch-permission grantees other than "all" (accounts, organizations, OUs).
    /// Filled by the live inventory; empty when unknown or unshared.
    pub shared_with: Vec<String>,
    /// Deregistration protection.
    pub protection: Protection,
    /// Last time an instance was launched from it (EC2 may lag by up to a day).
    pub last_launched: Option<Timestamp>,
    /// EBS or instance store.
    pub root_device: RootDevice,
    /// `ImageLocation`; for instance-store images `bucket/prefix/name.manifest.xml`.
    pub image_location: Option<String>,
    /// EBS snapshots of its block device mappings, in mapping order, without repeats.
    pub snapshots: Vec<SnapshotRef>,
    /// What `selection.match` conditions may test beyond the fields above.
    pub attributes: ImageAttributes,
}

/// The descriptive fields of an image that only `selection.match` reads, as EC2 spells
/// them; `None` where DescribeImages leaves the field out (Linux images have no
/// `Platform`, older ones no `BootMode` or ancestry), so a condition on it is false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageAttributes {
    /// `Description` (an empty one counts as absent).
    pub description: Option<String>,
    /// `Architecture`: `i386`, `x86_64`, `arm64`, `x86_64_mac`, `arm64_mac`.
    pub architecture: Option<String>,
    /// `Platform`: `windows`, and absent for every other image.
    pub platform: Option<String>,
    /// `VirtualizationType`: `hvm` or `paravirtual`.
    pub virtualization: Option<String>,
    /// `BootMode`: `legacy-bios`, `uefi` or `uefi-preferred`.
    pub boot_mode: Option<String>,
    /// `ImageType`: `machine`, `kernel` or `ramdisk`.
    pub image_type: Option<String>,
    /// `SourceImageId`: the AMI it was created or copied from (AMI ancestry).
    pub source_image_id: Option<String>,
    /// `SourceImageRegion`: that AMI's Region.
    pub source_region: Option<String>,
}

impl Image {
    /// A minimal available EBS image; tests and adapters fill in the rest.
    pub fn new(id: impl Into<String>, name: impl Into<String>, creation_date: Timestamp) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            creation_date,
            state: ImageState::Available,
            tags: Tags::new(),
            public: false,
            shared_with: Vec::new(),
            protection: Protection::Disabled,
            last_launched: None,
            root_device: RootDevice::Ebs,
            image_location: None,
            snapshots: Vec::new(),
            attributes: ImageAttributes::default(),
        }
    }

    /// AWS Backup manages the image: EC2 refuses to deregister it.
    pub fn is_backup_managed(&self) -> bool {
        self.tags.contains_key("aws:backup:source-resource") || self.name.starts_with("AwsBackup_")
    }

    /// Public, or its launch permissions name another account, organization or OU.
    pub fn is_shared(&self) -> bool {
        self.public || !self.shared_with.is_empty()
    }
}

/// What kind of resource keeps an image in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    /// An EC2 instance in any state but terminated.
    Instance,
    /// Any version of a launch template.
    LaunchTemplateVersion,
    /// An Auto Scaling launch configuration.
    LaunchConfiguration,
    /// A launch template, as AWS's reference check names it (no version).
    LaunchTemplate,
    /// An SSM parameter holding the image id (`aws:ec2:image`, or under `usage.ssm_paths`).
    SsmParameter,
    /// An EC2 Fleet's launch template override.
    Fleet,
    /// A Spot Fleet request's launch specification.
    SpotFleet,
    /// An AWS Batch compute environment (`imageId`, `imageIdOverride`).
    BatchComputeEnvironment,
    /// An EC2 Image Builder image recipe whose parent image it is.
    ImageRecipe,
    /// An EC2 Image Builder container recipe (AWS's reference check).
    ContainerRecipe,
    /// A resource of a type AWS's reference check names that ami-sweeper does not know yet.
    OtherReference,
    /// A user in an account the image is shared with (`keep_if_used`): `account: user`.
    SharedAccount,
    /// A CloudFormation stack whose parameter (or, with `usage.cloudformation_templates`,
    /// template) names the image: its next update or scale-out launches it.
    #[serde(rename = "cloudformation_stack")]
    CloudFormationStack,
    /// An EMR cluster that can still launch nodes (`CustomAmiId`, its own or a group's).
    EmrCluster,
    /// A Spot Instance request (`open`, `active` or `disabled`) whose launch specification
    /// names the image.
    SpotRequest,
    /// An object under `usage.reference_objects` (Terraform state, Packer manifest,
    /// released template) that names the image.
    ReferenceObject,
}

impl UsageKind {
    /// The snake_case name used in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::LaunchTemplateVersion => "launch_template_version",
            Self::LaunchConfiguration => "launch_configuration",
            Self::LaunchTemplate => "launch_template",
            Self::SsmParameter => "ssm_parameter",
            Self::Fleet => "fleet",
            Self::SpotFleet => "spot_fleet",
            Self::BatchComputeEnvironment => "batch_compute_environment",
            Self::ImageRecipe => "image_recipe",
            Self::ContainerRecipe => "container_recipe",
            Self::OtherReference => "other_reference",
            Self::SharedAccount => "shared_account",
            Self::CloudFormationStack => "cloudformation_stack",
            Self::EmrCluster => "emr_cluster",
            Self::SpotRequest => "spot_request",
            Self::ReferenceObject => "reference_object",
        }
    }
}

/// A launch template version that names an image: what decides whether it counts under
/// `usage.launch_template_versions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateVersion {
    /// `lt-...`.
    pub template_id: String,
    /// The template's name, where reported.
    pub template_name: Option<String>,
    /// The version number.
    pub version: i64,
    /// Whether it is the template's `$Default` version.
    pub is_default: bool,
}

impl TemplateVersion {
    /// Its usage record, e.g. `lt-0abc (web) v3`.
    pub fn user(&self) -> UsageRef {
        template_user(
            &self.template_id,
            self.template_name.as_deref(),
            Some(self.version),
        )
    }
}

/// One resource that uses an image, e.g. `i-0123 (stopped)` or `lt-0abc v3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct UsageRef {
    /// The kind of user.
    pub kind: UsageKind,
    /// A human-readable identifier of the user.
    pub id: String,
}

/// Which images are in use and by what, and which snapshots launch templates name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    by_image: FxHashMap<String, BTreeSet<UsageRef>>,
    /// The launch template versions among the users, by their usage record.
    versions: FxHashMap<UsageRef, TemplateVersion>,
    /// Each template's latest version number, by template id.
    latest: FxHashMap<String, i64>,
    /// Versions named by number by an Auto Scaling group, fleet or compute environment:
    /// (template id or name, version).
    named_versions: FxHashSet<(String, i64)>,
    /// Snapshots named by launch template versions' block device mappings (launching the
    /// template creates a volume from them), with the versions that name each (`None`: a
    /// version not known, which counts under every setting).
    snapshots_named: FxHashMap<String, Vec<Option<TemplateVersion>>>,
    /// Each template's latest version number among those naming snapshots.
    snapshot_latest: FxHashMap<String, i64>,
}

impl Usage {
    /// An empty usage map: nothing in use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `user` uses `image_id`.
    pub fn add(&mut self, image_id: impl Into<String>, user: UsageRef) {
        self.by_image
            .entry(image_id.into())
            .or_default()
            .insert(user);
    }

    /// Records that a launch template version names `image_id`.
    pub fn add_template_version(&mut self, image_id: impl Into<String>, v: TemplateVersion) {
        let user = v.user();
        let latest = self
            .latest
            .entry(v.template_id.clone())
            .or_insert(v.version);
        *latest = (*latest).max(v.version);
        self.add(image_id, user.clone());
        self.versions.insert(user, v);
    }

    /// Records that something launches `template` (an id or a name) at `version`
    /// (`$Default`, `$Latest` or a number; only numbers add anything, the other two count
    /// under every setting).
    pub fn add_template_reference(&mut self, template: &str, version: Option<&str>) {
        if let Some(n) = version.and_then(|v| v.parse::<i64>().ok()) {
            self.named_versions.insert((template.to_string(), n));
        }
    }

    /// Whether `user` keeps its image under the policy's launch template setting: every
    /// user does, except launch template versions that are stale for `which`.
    pub fn counts(&self, user: &UsageRef, which: TemplateVersions) -> bool {
        match self.versions.get(user) {
            None => true,
            Some(v) => match which {
                TemplateVersions::All => true,
                TemplateVersions::DefaultAndLatest => !self.is_stale(v, false),
                TemplateVersions::Referenced => !self.is_stale(v, true),
            },
        }
    }

    /// Neither `$Default` nor `$Latest` (nor, with `referenced`, named by number).
    fn is_stale(&self, v: &TemplateVersion, referenced: bool) -> bool {
        let latest = self.latest.get(&v.template_id) == Some(&v.version);
        let named = referenced
            && (self
                .named_versions
                .contains(&(v.template_id.clone(), v.version))
                || v.template_name
                    .as_ref()
                    .is_some_and(|n| self.named_versions.contains(&(n.clone(), v.version))));
        !(v.is_default || latest || named)
    }

    /// Merges another usage map into this one.
    pub fn extend(&mut self, other: Usage) {
        for (image, users) in other.by_image {
            self.by_image.entry(image).or_default().extend(users);
        }
        for (t, n) in other.latest {
            let latest = self.latest.entry(t).or_insert(n);
            *latest = (*latest).max(n);
        }
        self.versions.extend(other.versions);
        self.named_versions.extend(other.named_versions);
        for (snap, versions) in other.snapshots_named {
            self.snapshots_named
                .entry(snap)
                .or_default()
                .extend(versions);
        }
        for (t, n) in other.snapshot_latest {
            let latest = self.snapshot_latest.entry(t).or_insert(n);
            *latest = (*latest).max(n);
        }
    }

    /// Records that a launch template version (not known which) maps `snapshot_id`: it
    /// counts under every `usage.launch_template_versions` setting.
    pub fn add_snapshot(&mut self, snapshot_id: impl Into<String>) {
        self.snapshots_named
            .entry(snapshot_id.into())
            .or_default()
            .push(None);
    }

    /// Records that launch template version `v`'s block device mappings name `snapshot_id`.
    pub fn add_snapshot_version(&mut self, snapshot_id: impl Into<String>, v: TemplateVersion) {
        let latest = self
            .snapshot_latest
            .entry(v.template_id.clone())
            .or_insert(v.version);
        *latest = (*latest).max(v.version);
        self.snapshots_named
            .entry(snapshot_id.into())
            .or_default()
            .push(Some(v));
    }

    /// Whether any launch template version names the snapshot.
    pub fn names_snapshot(&self, snapshot_id: &str) -> bool {
        self.snapshots_named.contains_key(snapshot_id)
    }

    /// The launch template versions naming the snapshot that count under `which` (their
    /// usage records; `launch template` for a version not known). A version is stale as for
    /// images, with `$Latest` the highest version seen naming an image or a snapshot.
    pub fn snapshot_users(&self, snapshot_id: &str, which: TemplateVersions) -> Vec<String> {
        let mut out: Vec<String> = self
            .snapshots_named
            .get(snapshot_id)
            .into_iter()
            .flatten()
            .filter(|v| match (v, which) {
                (None, _) | (Some(_), TemplateVersions::All) => true,
                (Some(v), TemplateVersions::DefaultAndLatest) => !self.snapshot_stale(v, false),
                (Some(v), TemplateVersions::Referenced) => !self.snapshot_stale(v, true),
            })
            .map(|v| {
                v.as_ref()
                    .map_or("launch template".to_string(), |v| v.user().id)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn snapshot_stale(&self, v: &TemplateVersion, referenced: bool) -> bool {
        let latest = [&self.latest, &self.snapshot_latest]
            .iter()
            .filter_map(|m| m.get(&v.template_id))
            .max()
            .is_some_and(|l| *l <= v.version);
        !latest && self.is_stale(v, referenced)
    }

    /// The users of an image, sorted; empty when unused.
    pub fn users(&self, image_id: &str) -> Vec<UsageRef> {
        self.by_image
            .get(image_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether anything uses the image.
    pub fn is_used(&self, image_id: &str) -> bool {
        self.by_image.get(image_id).is_some_and(|s| !s.is_empty())
    }

    /// Whether anything that counts under `which` uses the image.
    pub fn is_used_under(&self, image_id: &str, which: TemplateVersions) -> bool {
        self.by_image
            .get(image_id)
            .is_some_and(|s| s.iter().any(|u| self.counts(u, which)))
    }

    /// Number of distinct images in use.
    pub fn image_count(&self) -> usize {
        self.by_image.len()
    }
}

/// One EBS snapshot the account owns, as `DescribeSnapshots` reports it: what the
/// reconciliation of lost and orphaned storage looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `snap-...`.
    pub id: String,
    /// The description EC2 wrote (it names the AMI for `CreateImage` and `CopyImage`).
    pub description: String,
    /// When the snapshot was started; `None` when not reported (then never "old enough").
    pub start_time: Option<Timestamp>,
    /// Size in GiB, where reported.
    pub size_gib: Option<u64>,
    /// Tags.
    pub tags: Tags,
    /// In the archive tier (`StorageTier` `archive`): priced as such, and billed for at
    /// least 90 days from archiving even if deleted sooner.
    pub archived: bool,
}

/// An instance-store bundle manifest found in one of the deployment's bundle buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Bucket.
    pub bucket: String,
    /// Key of the `.manifest.xml` object.
    pub key: String,
    /// When the object was last written; `None` when not reported (never "old enough").
    pub last_modified: Option<Timestamp>,
    /// The object's tags (ami-sweeper's mark, exclude tags).
    pub tags: Tags,
}

impl Manifest {
    /// The `ImageLocation` an image registered from this manifest has.
    pub fn location(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }
}

/// Which launch template versions count as users of their image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateVersions {
    /// Every version (Terraform and CloudFormation never prune them): safest.
    #[default]
    All,
    /// Each template's `$Default` and `$Latest` versions.
    DefaultAndLatest,
    /// `$Default`, `$Latest`, and versions named by an Auto Scaling group, EC2 Fleet, Spot
    /// Fleet or Batch compute environment.
    Referenced,
}

/// A launch template version's label for reports: `lt-0abc (web) v3`.
pub fn template_user(id: &str, name: Option<&str>, version: Option<i64>) -> UsageRef {
    let mut label = id.to_string();
    if let Some(n) = name {
        label.push_str(&format!(" ({n})"));
    }
    if let Some(v) = version {
        label.push_str(&format!(" v{v}"));
    }
    UsageRef {
        kind: UsageKind::LaunchTemplateVersion,
        id: label,
    }
}
