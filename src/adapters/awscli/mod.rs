//! Reads the JSON the AWS CLI prints (`describe-images`, `describe-instances`,
//! `describe-launch-template-versions`, `describe-launch-configurations`) into our model.
//!
//! Fields AWS adds later are ignored; fields the safety rules need are checked, and a
//! bad value is an error naming the file, the image and the field: a plan built on a
//! misread input is not a plan to act on. Each file must be the command's own output
//! (see [`documents`]): its top-level key, complete, UTF-8, several documents at most.

mod documents;
mod sources;
mod written;

pub use sources::{
    parse_auto_scaling_groups, parse_compute_environments, parse_fleets, parse_image_recipes,
    parse_image_references, parse_recycle_bin_rules, parse_spot_fleet_requests,
    parse_ssm_parameters,
};
pub use written::{
    parse_emr_clusters, parse_reference_object, parse_spot_instance_requests, parse_stacks,
    StackTemplates,
};

use serde::Deserialize;

pub use documents::{decode, documents, Kind};

use crate::fields::{instance_user, launch_configuration_user, RawImage, TemplateImage};

use crate::inventory::Inventory;
use crate::model::{Image, Snapshot, TemplateVersion, Usage};
use crate::policy::UsageRules;
use crate::time::parse_instant;

/// An input document that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct InputError {
    /// Which input (usually the file name).
    pub source_name: String,
    /// What is wrong, naming the element and field.
    pub message: String,
}

/// The `Images` list, converted element by element as it is read, so the raw shapes of
/// all images never coexist with the model (half the peak memory at 100,000 images).
struct ModelImages(Result<Vec<Image>, String>);

impl<'de> Deserialize<'de> for ModelImages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        images_as_model(d).map(ModelImages)
    }
}

fn images_as_model<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Result<Vec<Image>, String>, D::Error> {
    struct Seq;
    impl<'de> serde::de::Visitor<'de> for Seq {
        type Value = Result<Vec<Image>, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of images")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            // JSON gives no length; start big enough that a large estate grows a few times only.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1024));
            while let Some(c) = seq.next_element::<CliImage>()? {
                match c.into_raw().into_image() {
                    Ok(img) => out.push(img),
                    Err(m) => {
                        let i = out.len();
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        return Ok(Err(format!("Images[{i}]: {m}")));
                    }
                }
            }
            Ok(Ok(out))
        }
    }
    d.deserialize_seq(Seq)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliImage {
    image_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    creation_date: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    tags: Vec<CliTag>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    deregistration_protection: Option<String>,
    #[serde(default)]
    last_launched_time: Option<String>,
    #[serde(default)]
    root_device_type: Option<String>,
    #[serde(default)]
    image_location: Option<String>,
    #[serde(default)]
    block_device_mappings: Vec<CliMapping>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    virtualization_type: Option<String>,
    #[serde(default)]
    boot_mode: Option<String>,
    #[serde(default)]
    image_type: Option<String>,
    #[serde(default)]
    source_image_id: Option<String>,
    #[serde(default)]
    source_image_region: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliTag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliMapping {
    #[serde(default)]
    ebs: Option<CliEbs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliEbs {
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    volume_size: Option<u64>,
}

pub(crate) fn err(source: &str, message: String) -> InputError {
    InputError {
        source_name: source.to_string(),
        message,
    }
}

/// Parses `aws ec2 describe-images` output (`{"Images": [...]}`, one or several documents).
pub fn parse_images(source: &str, text: &str) -> Result<Vec<Image>, InputError> {
    let docs: Vec<ModelImages> = documents(source, text, Kind::Images)?;
    let several = docs.len() > 1;
    let mut images = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        let found = doc.0.map_err(|m| {
            let at = if several {
                format!("document {}: ", n + 1)
            } else {
                String::new()
            };
            err(source, format!("{at}{m}"))
        })?;
        if images.is_empty() {
            images = found;
        } else {
            images.extend(found);
        }
    }
    images.shrink_to_fit();
    Ok(images)
}

impl CliImage {
    fn into_raw(self) -> RawImage {
        RawImage {
            image_id: self.image_id,
            name: self.name,
            creation_date: self.creation_date,
            state: self.state,
            tags: self.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            public: self.public,
            deregistration_protection: self.deregistration_protection,
            last_launched_time: self.last_launched_time,
            root_device_type: self.root_device_type,
            image_location: self.image_location,
            snapshots: self
                .block_device_mappings
                .into_iter()
                .filter_map(|m| m.ebs)
                .filter_map(|e| e.snapshot_id.map(|s| (s, e.volume_size)))
                .collect(),
            attributes: crate::model::ImageAttributes {
                description: self.description,
                architecture: self.architecture,
                platform: self.platform,
                virtualization: self.virtualization_type,
                boot_mode: self.boot_mode,
                image_type: self.image_type,
                source_image_id: self.source_image_id,
                source_region: self.source_image_region,
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reservation {
    #[serde(default)]
    instances: Vec<CliInstance>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliInstance {
    instance_id: String,
    #[serde(default)]
    image_id: Option<String>,
    state: CliInstanceState,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliInstanceState {
    name: String,
}

/// Parses `aws ec2 describe-instances` output: every instance not `terminated` uses its image.
pub fn parse_instances(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<Reservation>> = documents(source, text, Kind::Instances)?;
    let mut usage = Usage::new();
    for inst in docs.into_iter().flatten().flat_map(|r| r.instances) {
        if let Some(image) = inst.image_id {
            if let Some(user) = instance_user(&inst.instance_id, &inst.state.name) {
                usage.add(image, user);
            }
        }
    }
    Ok(usage)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliLtVersion {
    #[serde(default)]
    launch_template_id: Option<String>,
    #[serde(default)]
    launch_template_name: Option<String>,
    #[serde(default)]
    version_number: Option<i64>,
    #[serde(default)]
    default_version: bool,
    #[serde(default)]
    launch_template_data: Option<CliLtData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliLtData {
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    block_device_mappings: Vec<CliMapping>,
}

/// Parses `aws ec2 describe-launch-template-versions` output (all versions: the latest is
/// the highest number seen). `resolve:ssm:` ids are resolved through `parameters` (the
/// `--ssm-parameters` file) where it has them; any other becomes a warning in the plan.
pub fn parse_launch_template_versions(
    source: &str,
    text: &str,
    parameters: &std::collections::BTreeMap<String, String>,
) -> Result<(Usage, Vec<String>), InputError> {
    let docs: Vec<Vec<CliLtVersion>> = documents(source, text, Kind::LaunchTemplateVersions)?;
    let mut usage = Usage::new();
    let mut warnings = Vec::new();
    for v in docs.into_iter().flatten() {
        let Some(data) = v.launch_template_data else {
            continue;
        };
        let version = TemplateVersion {
            template_id: v
                .launch_template_id
                .unwrap_or_else(|| "launch-template".to_string()),
            template_name: v.launch_template_name,
            version: v.version_number.unwrap_or_default(),
            is_default: v.default_version,
        };
        for m in data.block_device_mappings {
            if let Some(snap) = m.ebs.and_then(|e| e.snapshot_id) {
                usage.add_snapshot_version(snap, version.clone());
            }
        }
        let Some(image) = data.image_id else {
            continue;
        };
        match TemplateImage::parse(&image) {
            TemplateImage::Id(id) => usage.add_template_version(id, version),
            TemplateImage::Ssm(param) => match parameters.get(&param) {
                Some(id) => usage.add_template_version(id.clone(), version),
                None => warnings.push(format!(
                    "{} uses resolve:ssm:{param}, which this offline plan cannot resolve \
                     (pass the parameter in --ssm-parameters); the image it names is not \
                     protected by this plan (a live sweep resolves it)",
                    version.user().id
                )),
            },
        }
    }
    Ok((usage, warnings))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliLaunchConfiguration {
    launch_configuration_name: String,
    #[serde(default)]
    image_id: Option<String>,
}

/// Parses `aws autoscaling describe-launch-configurations` output.
pub fn parse_launch_configurations(source: &str, text: &str) -> Result<Usage, InputError> {
    let docs: Vec<Vec<CliLaunchConfiguration>> =
        documents(source, text, Kind::LaunchConfigurations)?;
    let mut usage = Usage::new();
    for lc in docs.into_iter().flatten() {
        if let Some(image) = lc.image_id {
            usage.add(
                image,
                launch_configuration_user(&lc.launch_configuration_name),
            );
        }
    }
    Ok(usage)
}

/// Paths of the AWS CLI documents that make up an offline inventory.
#[derive(Debug, Clone, Default)]
pub struct InventoryFiles {
    /// `describe-images` output (required).
    pub images: std::path::PathBuf,
    /// `describe-instances` output.
    pub instances: Option<std::path::PathBuf>,
    /// `describe-launch-template-versions` output.
    pub launch_templates: Option<std::path::PathBuf>,
    /// `describe-launch-configurations` output.
    pub launch_configurations: Option<std::path::PathBuf>,
    /// `describe-image-references` output.
    pub image_references: Option<std::path::PathBuf>,
    /// `get-parameters-by-path --recursive` (or `get-parameters`) output.
    pub ssm_parameters: Option<std::path::PathBuf>,
    /// `describe-fleets` output.
    pub fleets: Option<std::path::PathBuf>,
    /// `describe-spot-fleet-requests` output.
    pub spot_fleet_requests: Option<std::path::PathBuf>,
    /// `describe-auto-scaling-groups` output.
    pub auto_scaling_groups: Option<std::path::PathBuf>,
    /// `batch describe-compute-environments` output.
    pub batch_compute_environments: Option<std::path::PathBuf>,
    /// `imagebuilder list-image-recipes` output.
    pub image_recipes: Option<std::path::PathBuf>,
    /// `rbin get-rule` outputs (an array, or several one after the other).
    pub recycle_bin_rules: Option<std::path::PathBuf>,
    /// `cloudformation describe-stacks` output.
    pub cloudformation_stacks: Option<std::path::PathBuf>,
    /// A directory of `cloudformation get-template` outputs, `<stack name>.json` each.
    pub cloudformation_templates: Option<std::path::PathBuf>,
    /// `emr describe-cluster` outputs, one per cluster.
    pub emr_clusters: Option<std::path::PathBuf>,
    /// `ec2 describe-spot-instance-requests` output.
    pub spot_instance_requests: Option<std::path::PathBuf>,
    /// Local copies of reference objects (Terraform state, Packer manifests, templates).
    pub reference_objects: Vec<std::path::PathBuf>,
}

fn read(path: &std::path::Path) -> Result<(String, String), InputError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| err(&name, format!("cannot read: {e}")))?;
    let text = decode(&name, bytes)?;
    Ok((name, text))
}

/// Reads and combines the files into one inventory. Each file's text is dropped as soon
/// as it is parsed, so peak memory is one document plus the model.
pub fn load_inventory(files: &InventoryFiles, rules: &UsageRules) -> Result<Inventory, InputError> {
    let images_name = files.images.display().to_string();
    let images = {
        let (name, text) = read(&files.images)?;
        parse_images(&name, &text)?
    };
    let mut usage = Usage::new();
    let mut warnings = Vec::new();
    let mut parameters = std::collections::BTreeMap::new();
    if let Some(p) = &files.ssm_parameters {
        let (name, text) = read(p)?;
        let (u, params) = parse_ssm_parameters(&name, &text, &rules.ssm_paths)?;
        usage.extend(u);
        parameters.extend(params);
    }
    if let Some(p) = &files.launch_templates {
        let (name, text) = read(p)?;
        let (u, w) = parse_launch_template_versions(&name, &text, &parameters)?;
        usage.extend(u);
        warnings.extend(w);
    }
    if let Some(p) = &files.cloudformation_stacks {
        let (name, text) = read(p)?;
        let templates = match (
            &files.cloudformation_templates,
            rules.cloudformation_templates,
        ) {
            (_, false) => StackTemplates::Off,
            (Some(dir), true) => StackTemplates::In(dir),
            (None, true) => StackTemplates::Missing,
        };
        usage.extend(parse_stacks(&name, &text, &parameters, templates)?);
    }
    let readers: [(&Option<std::path::PathBuf>, Reader); 10] = [
        (&files.emr_clusters, parse_emr_clusters),
        (&files.spot_instance_requests, parse_spot_instance_requests),
        (&files.instances, parse_instances),
        (&files.launch_configurations, parse_launch_configurations),
        (&files.image_references, parse_image_references),
        (&files.fleets, parse_fleets),
        (&files.spot_fleet_requests, parse_spot_fleet_requests),
        (&files.auto_scaling_groups, parse_auto_scaling_groups),
        (
            &files.batch_compute_environments,
            parse_compute_environments,
        ),
        (&files.image_recipes, parse_image_recipes),
    ];
    for (path, parse) in readers {
        if let Some(p) = path {
            let (name, text) = read(p)?;
            usage.extend(parse(&name, &text)?);
        }
    }
    for p in &files.reference_objects {
        let name = p.display().to_string();
        let bytes = std::fs::read(p).map_err(|e| err(&name, format!("cannot read: {e}")))?;
        usage.extend(parse_reference_object(&name, &bytes)?);
    }
    let mut inventory =
        Inventory::new(images, usage).map_err(|e| err(&images_name, e.to_string()))?;
    inventory.warnings = warnings;
    if let Some(p) = &files.recycle_bin_rules {
        let (name, text) = read(p)?;
        inventory.recycle_bin = parse_recycle_bin_rules(&name, &text)?;
    }
    Ok(inventory)
}

/// A reader of one usage file: its name and text in, usage out.
type Reader = fn(&str, &str) -> Result<Usage, InputError>;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliSnapshot {
    snapshot_id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    volume_size: Option<u64>,
    #[serde(default)]
    tags: Vec<CliTag>,
    /// `standard` or `archive`.
    #[serde(default)]
    storage_tier: Option<String>,
}

/// Parses `aws ec2 describe-snapshots --owner-ids self` output (`{"Snapshots": [...]}`).
pub fn parse_snapshots(source: &str, text: &str) -> Result<Vec<Snapshot>, InputError> {
    let docs: Vec<Vec<CliSnapshot>> = documents(source, text, Kind::Snapshots)?;
    docs.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| {
            let start_time = match s.start_time {
                None => None,
                Some(t) => Some(parse_instant(&t).ok_or_else(|| {
                    err(
                        source,
                        format!(
                            "Snapshots[{i}]: {}: StartTime {t:?} is not an ISO 8601 instant",
                            s.snapshot_id
                        ),
                    )
                })?),
            };
            Ok(Snapshot {
                id: s.snapshot_id,
                description: s.description,
                start_time,
                size_gib: s.volume_size,
                tags: s.tags.into_iter().map(|t| (t.key, t.value)).collect(),
                archived: s.storage_tier.as_deref() == Some("archive"),
            })
        })
        .collect()
}

/// Reads a `describe-snapshots` file.
pub fn load_snapshots(path: &std::path::Path) -> Result<Vec<Snapshot>, InputError> {
    let (name, text) = read(path)?;
    parse_snapshots(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protection, UsageKind};

    #[test]
    fn snapshots_keep_what_reconciliation_needs() {
        let text = r#"{"Snapshots": [{"SnapshotId": "snap-1", "OwnerId": "123456789012",
            "Description": "Created by CreateImage(i-1) for ami-1", "StartTime": "2026-01-01T00:00:00.000Z",
            "VolumeSize": 8, "State": "completed", "Tags": [{"Key": "keep", "Value": "yes"}]}]}"#;
        let s = &parse_snapshots("s.json", text).unwrap()[0];
        assert_eq!(s.size_gib, Some(8));
        assert_eq!(s.tags.get("keep"), Some("yes"));
        assert!(s.start_time.is_some());
        let bad = r#"{"Snapshots": [{"SnapshotId": "snap-1", "StartTime": "soon"}]}"#;
        assert_eq!(
            parse_snapshots("s.json", bad).unwrap_err().to_string(),
            "s.json: Snapshots[0]: snap-1: StartTime \"soon\" is not an ISO 8601 instant"
        );
    }

    #[test]
    fn reads_the_attributes_conditions_need() {
        let text = r#"{"Images": [
            {"ImageId": "ami-1", "CreationDate": "2026-01-01T00:00:00.000Z", "State": "available",
             "Description": "ERP host", "Architecture": "x86_64", "Platform": "windows",
             "VirtualizationType": "hvm", "BootMode": "uefi", "ImageType": "machine",
             "SourceImageId": "ami-0source", "SourceImageRegion": "eu-west-1"},
            {"ImageId": "ami-2", "CreationDate": "2026-01-01T00:00:00.000Z", "State": "available",
             "Description": "", "Architecture": "arm64"}]}"#;
        let images = parse_images("i.json", text).unwrap();
        let a = &images[0].attributes;
        assert_eq!(a.description.as_deref(), Some("ERP host"));
        assert_eq!(a.platform.as_deref(), Some("windows"));
        assert_eq!(a.boot_mode.as_deref(), Some("uefi"));
        assert_eq!(a.source_image_id.as_deref(), Some("ami-0source"));
        assert_eq!(a.source_region.as_deref(), Some("eu-west-1"));
        let b = &images[1].attributes;
        // An empty Description is no description; a Linux image has no Platform.
        assert_eq!((b.description.as_ref(), b.platform.as_ref()), (None, None));
        assert_eq!(b.architecture.as_deref(), Some("arm64"));
    }

    #[test]
    fn reads_the_fields_the_rules_need() {
        let text = r#"{"Images": [{
            "ImageId": "ami-1", "Name": "web-1", "CreationDate": "2026-01-01T00:00:00.000Z",
            "State": "available", "Public": true, "RootDeviceType": "ebs",
            "DeregistrationProtection": "disabled after 2026-12-01T00:00:00Z",
            "LastLaunchedTime": "2026-11-01T00:00:00Z",
            "Tags": [{"Key": "app", "Value": "web"}],
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8}},
                {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
                {"DeviceName": "/dev/sdc", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8}}
            ],
            "SomeFutureField": {"x": 1}
        }]}"#;
        let images = parse_images("images.json", text).unwrap();
        let img = &images[0];
        assert_eq!(img.tags.get("app"), Some("web"));
        assert!(img.public);
        assert!(matches!(img.protection, Protection::DisabledAfter(_)));
        assert_eq!(img.snapshots.len(), 1, "repeated snapshot ids collapse");
        assert_eq!(img.snapshots[0].size_gib, Some(8));
        assert!(img.last_launched.is_some());
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                r#"{"Images": [{"ImageId": "ami-1", "State": "available"}]}"#,
                "images.json: Images[0]: ami-1: CreationDate is missing",
            ),
            (
                r#"{"Images": [{"ImageId": "ami-1", "State": "available", "CreationDate": "soon"}]}"#,
                "images.json: Images[0]: ami-1: CreationDate \"soon\" is not an ISO 8601 instant",
            ),
            (
                r#"{"Images": [{"Name": "x"}]}"#,
                "images.json: Images[0]: missing field `ImageId` at line 1 column 25",
            ),
            (
                r#"{"images": []}"#,
                "images.json: the document has keys [images]; --images expects describe-images \
                 output (an object with \"Images\")",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_images("images.json", text).unwrap_err().to_string(),
                expected
            );
        }
    }

    #[test]
    fn terminated_instances_use_nothing() {
        let text = r#"{"Reservations": [{"Instances": [
            {"InstanceId": "i-1", "ImageId": "ami-1", "State": {"Code": 80, "Name": "stopped"}},
            {"InstanceId": "i-2", "ImageId": "ami-2", "State": {"Code": 48, "Name": "terminated"}},
            {"InstanceId": "i-3", "ImageId": "ami-3", "State": {"Code": 32, "Name": "shutting-down"}}
        ]}]}"#;
        let usage = parse_instances("instances.json", text).unwrap();
        assert!(usage.is_used("ami-1"));
        assert!(!usage.is_used("ami-2"));
        assert!(usage.is_used("ami-3"));
        assert_eq!(usage.users("ami-1")[0].id, "i-1 (stopped)");
    }

    #[test]
    fn every_launch_template_version_counts_and_ssm_ids_warn() {
        let text = r#"{"LaunchTemplateVersions": [
            {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "web", "VersionNumber": 1,
             "DefaultVersion": false, "LaunchTemplateData": {"ImageId": "ami-old"}},
            {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "web", "VersionNumber": 2,
             "DefaultVersion": true, "LaunchTemplateData": {"ImageId": "resolve:ssm:/golden/web"}},
            {"LaunchTemplateId": "lt-2", "VersionNumber": 1, "LaunchTemplateData": {}}
        ]}"#;
        let none = Default::default();
        let (usage, warnings) = parse_launch_template_versions("lt.json", text, &none).unwrap();
        assert_eq!(usage.users("ami-old")[0].id, "lt-1 (web) v1");
        assert_eq!(usage.image_count(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("resolve:ssm:/golden/web"));
        // With the parameter's value at hand, the id is resolved and no warning is left.
        let params = [("/golden/web".to_string(), "ami-new".to_string())].into();
        let (usage, warnings) = parse_launch_template_versions("lt.json", text, &params).unwrap();
        assert_eq!(usage.users("ami-new")[0].id, "lt-1 (web) v2");
        assert!(warnings.is_empty());
    }

    #[test]
    fn launch_configurations_use_their_image() {
        let text = r#"{"LaunchConfigurations": [{"LaunchConfigurationName": "web-lc", "ImageId": "ami-9"}]}"#;
        let usage = parse_launch_configurations("lc.json", text).unwrap();
        assert_eq!(usage.users("ami-9")[0].kind, UsageKind::LaunchConfiguration);
    }
}
