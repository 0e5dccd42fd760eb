//! How EC2's raw fields map into the model, whatever client fetched them: the AWS CLI
//! reader and the live inventory apply the same checks through these, so an offline plan
//! and a sweep judge an image alike. Pure.

use crate::model::{
    Image, ImageAttributes, ImageState, Protection, RootDevice, SnapshotRef, Tags, UsageKind,
    UsageRef,
};
use crate::time::parse_instant;

/// Builds an [`Image`] from the raw fields EC2 reports, whatever client fetched them.
/// Shared by the AWS CLI reader and the live inventory so both apply the same checks.
#[derive(Debug, Default)]
pub struct RawImage {
    /// `ImageId`.
    pub image_id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `CreationDate`.
    pub creation_date: Option<String>,
    /// `State`.
    pub state: Option<String>,
    /// `Tags`.
    pub tags: Vec<(String, String)>,
    /// `Public`.
    pub public: bool,
    /// `DeregistrationProtection`.
    pub deregistration_protection: Option<String>,
    /// `LastLaunchedTime`.
    pub last_launched_time: Option<String>,
    /// `RootDeviceType`.
    pub root_device_type: Option<String>,
    /// `ImageLocation`.
    pub image_location: Option<String>,
    /// `BlockDeviceMappings[].Ebs.(SnapshotId, VolumeSize)`.
    pub snapshots: Vec<(String, Option<u64>)>,
    /// `Description`, `Architecture`, `Platform`, `VirtualizationType`, `BootMode`,
    /// `ImageType`, `SourceImageId`, `SourceImageRegion` (for `selection.match`).
    pub attributes: ImageAttributes,
}

impl RawImage {
    /// Validates and converts; the error names the field.
    pub fn into_image(self) -> Result<Image, String> {
        let id = self.image_id;
        if !id.starts_with("ami-") {
            return Err(format!("ImageId {id:?} is not an AMI id"));
        }
        let created = self
            .creation_date
            .ok_or_else(|| format!("{id}: CreationDate is missing"))?;
        let creation_date = parse_instant(&created)
            .ok_or_else(|| format!("{id}: CreationDate {created:?} is not an ISO 8601 instant"))?;
        let state = self
            .state
            .ok_or_else(|| format!("{id}: State is missing"))?;
        let last_launched = match self.last_launched_time {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(parse_instant(&s).ok_or_else(|| {
                format!("{id}: LastLaunchedTime {s:?} is not an ISO 8601 instant")
            })?),
        };
        let tags: Tags = self.tags.into_iter().collect();
        let mut snapshots: Vec<SnapshotRef> = Vec::new();
        for (snap, size) in self.snapshots {
            if !snapshots.iter().any(|s| s.id == snap) {
                snapshots.push(SnapshotRef {
                    id: snap,
                    size_gib: size,
                });
            }
        }
        Ok(Image {
            name: self.name.unwrap_or_default(),
            creation_date,
            state: ImageState::parse(&state),
            tags,
            public: self.public,
            shared_with: Vec::new(),
            protection: Protection::parse(self.deregistration_protection.as_deref()),
            last_launched,
            root_device: RootDevice::parse(self.root_device_type.as_deref().unwrap_or("ebs")),
            image_location: self.image_location.filter(|l| !l.is_empty()),
            snapshots,
            attributes: present(self.attributes),
            id,
        })
    }
}

/// The attributes with empty strings taken as absent (EC2 and the AWS CLI write `""`
/// for some missing fields), and `Platform` in EC2's wire spelling (lowercase).
fn present(mut a: ImageAttributes) -> ImageAttributes {
    for f in [
        &mut a.description,
        &mut a.architecture,
        &mut a.platform,
        &mut a.virtualization,
        &mut a.boot_mode,
        &mut a.image_type,
        &mut a.source_image_id,
        &mut a.source_region,
    ] {
        if f.as_deref() == Some("") {
            *f = None;
        }
    }
    // DescribeImages writes `windows`; the SDK's enum spells it `Windows`.
    if let Some(p) = a.platform.as_mut() {
        p.make_ascii_lowercase();
    }
    a
}

/// The usage record of an instance, or `None` when it is terminated and uses nothing.
pub fn instance_user(instance_id: &str, state: &str) -> Option<UsageRef> {
    (state != "terminated").then(|| UsageRef {
        kind: UsageKind::Instance,
        id: format!("{instance_id} ({state})"),
    })
}

/// How a launch template version names its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateImage {
    /// A literal `ami-...` id.
    Id(String),
    /// `resolve:ssm:<parameter>`: the id lives in an SSM parameter.
    Ssm(String),
}

impl TemplateImage {
    /// Classifies a launch template's `ImageId` value.
    pub fn parse(value: &str) -> Self {
        match value.strip_prefix("resolve:ssm:") {
            Some(p) => Self::Ssm(p.to_string()),
            None => Self::Id(value.to_string()),
        }
    }
}

pub use crate::model::template_user;

/// A launch configuration's usage record.
pub fn launch_configuration_user(name: &str) -> UsageRef {
    UsageRef {
        kind: UsageKind::LaunchConfiguration,
        id: name.to_string(),
    }
}

/// The AMI a snapshot's description says it was made for: `Created by
/// CreateImage(i-…) for ami-…` or `Copied for DestinationAmi ami-… from SourceAmi …`.
pub fn image_named_by(description: &str) -> Option<&str> {
    let ami_at = |rest: &str| -> Option<usize> {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        (end > 4 && rest.starts_with("ami-")).then_some(end)
    };
    if let Some(rest) = description.strip_prefix("Created by CreateImage(") {
        let after = rest.split_once(") for ")?.1;
        return ami_at(after).map(|end| &after[..end]);
    }
    if let Some(rest) = description.strip_prefix("Copied for DestinationAmi ") {
        return ami_at(rest).map(|end| &rest[..end]);
    }
    None
}

/// Whether `value` is an AMI id (`ami-` and 8 or 17 hex digits).
pub fn is_image_id(value: &str) -> bool {
    value.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// An SSM parameter's usage record: `aws:ec2:image` ones always; `String` ones under one
/// of `paths` whose value is an AMI id. `None` when the parameter does not name an image.
pub fn ssm_parameter_user(
    name: &str,
    data_type: Option<&str>,
    kind: Option<&str>,
    value: &str,
    paths: &[String],
) -> Option<UsageRef> {
    let typed = data_type == Some("aws:ec2:image");
    let under = |p: &String| {
        let p = p.trim_end_matches('/');
        name.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    let listed = kind == Some("String") && paths.iter().any(under);
    ((typed || listed) && is_image_id(value)).then(|| UsageRef {
        kind: UsageKind::SsmParameter,
        id: name.to_string(),
    })
}

/// An EC2 Fleet still able to launch (not `deleted`, `deleted_terminating` or `failed`).
pub fn fleet_is_live(state: &str) -> bool {
    !matches!(state, "deleted" | "deleted_terminating" | "failed")
}

/// A Spot Fleet request still able to launch (not `cancelled`, `cancelled_terminating` or
/// `failed`).
pub fn spot_fleet_is_live(state: &str) -> bool {
    !matches!(state, "cancelled" | "cancelled_terminating" | "failed")
}

/// A usage record of `kind` for the resource `id`.
pub fn user(kind: UsageKind, id: &str) -> UsageRef {
    UsageRef {
        kind,
        id: id.to_string(),
    }
}

/// The usage record of one `DescribeImageReferences` entry: the resource type maps to
/// its kind and the ARN names it. Unknown (future) resource types still keep the image.
pub fn reference_user(resource_type: &str, arn: &str) -> UsageRef {
    let kind = match resource_type {
        "ec2:Instance" => UsageKind::Instance,
        "ec2:LaunchTemplate" => UsageKind::LaunchTemplate,
        "ssm:Parameter" => UsageKind::SsmParameter,
        "imagebuilder:ImageRecipe" => UsageKind::ImageRecipe,
        "imagebuilder:ContainerRecipe" => UsageKind::ContainerRecipe,
        _ => UsageKind::OtherReference,
    };
    let id = if kind == UsageKind::OtherReference {
        format!("{arn} ({resource_type})")
    } else {
        arn.to_string()
    };
    UsageRef { kind, id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_ids_are_told_from_other_values() {
        assert!(is_image_id("ami-1a2b3c4d"));
        assert!(is_image_id("ami-0123456789abcdef0"));
        for v in [
            "ami-",
            "ami-xyz12345",
            "ami-1234567",
            "resolve:ssm:/x",
            "Floor 2",
            "AMI-1a2b3c4d",
        ] {
            assert!(!is_image_id(v), "{v}");
        }
    }

    #[test]
    fn ssm_parameters_count_by_data_type_or_by_path() {
        let paths = ["/golden".to_string(), "/team/amis/".to_string()];
        let id = "ami-0123456789abcdef0";
        let user =
            |name, data_type, kind, value| ssm_parameter_user(name, data_type, kind, value, &paths);
        assert!(user("/anywhere", Some("aws:ec2:image"), Some("String"), id).is_some());
        assert!(user("/golden/web", Some("text"), Some("String"), id).is_some());
        assert!(user("/team/amis/x", None, Some("String"), id).is_some());
        // A sibling path that merely starts with the same letters is not under it.
        assert!(user("/goldenrod/web", Some("text"), Some("String"), id).is_none());
        // Only String parameters under a path count; values must be AMI ids.
        assert!(user("/golden/list", Some("text"), Some("StringList"), id).is_none());
        assert!(user("/golden/web", Some("text"), Some("String"), "latest").is_none());
        assert!(user("/anywhere", Some("aws:ec2:image"), Some("String"), "latest").is_none());
    }

    #[test]
    fn fleets_that_can_no_longer_launch_keep_nothing() {
        assert!(
            fleet_is_live("active")
                && fleet_is_live("modifying")
                && fleet_is_live("deleted_running")
        );
        assert!(!fleet_is_live("deleted") && !fleet_is_live("failed"));
        assert!(spot_fleet_is_live("submitted") && spot_fleet_is_live("cancelled_running"));
        assert!(!spot_fleet_is_live("cancelled") && !spot_fleet_is_live("cancelled_terminating"));
    }
}
