//! How EC2's raw fields map into the model, whatever client fetched them: the AWS CLI
//! reader and the live inventory apply the same checks through these, so an offline plan
//! and a sweep judge an image alike. Pure.

use crate::model::{
    Image, ImageAttributes, ImageState, Protection, RootDevice, SnapshotRef, Tags, UsageKind,
    UsageRef,
};
use crate::time::parse_instant;
use std::borrow::Cow;

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

/// Every AMI id in `text`, in order of first appearance, each once: a plain scan for
/// `ami-` followed by 8 or 17 hex digits, with no word character before (but for one
/// ending a backslash escape such as `\n`) or after (ids hide in templates, Terraform
/// state, Packer's `region:ami-…` lists and free text).
pub fn image_ids_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found: Vec<String> = Vec::new();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut from = 0;
    while let Some(at) = text[from..].find("ami-").map(|i| i + from) {
        from = at + 4;
        // A word character before `ami-` joins it to a longer token, unless it ends an
        // escape (`\n`, `\t` in a JSON or YAML string): the id starts a new line there.
        let escaped = at > 1 && bytes[at - 2] == b'\\';
        if at > 0 && word(bytes[at - 1]) && !escaped {
            continue;
        }
        let hex = bytes[at + 4..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let end = at + 4 + hex;
        let bounded = end == bytes.len() || !word(bytes[end]);
        if (hex == 8 || hex == 17) && bounded {
            let id = text[at..end].to_string();
            if !found.contains(&id) {
                found.push(id);
            }
        }
    }
    found
}

/// The SSM parameters a CloudFormation template names by dynamic reference
/// (`{{resolve:ssm:name}}` or `{{resolve:ssm:name:version}}`; `GetParameter` takes both
/// forms), each once. Secure-string references (`ssm-secure`) never hold an image id.
pub fn ssm_dynamic_references(template: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for part in template.split("{{resolve:ssm:").skip(1) {
        let Some(end) = part.find("}}") else { continue };
        let name = part[..end].trim();
        if !name.is_empty() && !found.iter().any(|f| f == name) {
            found.push(name.to_string());
        }
    }
    found
}

/// A CloudFormation stack that can still launch what it names: every stack but a deleted
/// one (`DELETE_COMPLETE`; a failed deletion leaves resources behind).
pub fn stack_is_live(status: &str) -> bool {
    status != "DELETE_COMPLETE"
}

/// The usage record of a stack naming an image through `what` (`parameter ImageId`,
/// `template`, `template resolve:ssm:/golden/web`): `stack web-prod: parameter ImageId`.
pub fn stack_user(stack: &str, what: &str) -> UsageRef {
    UsageRef {
        kind: UsageKind::CloudFormationStack,
        id: format!("stack {stack}: {what}"),
    }
}

/// The images one stack parameter names: the ids in its value and, for SSM-typed
/// parameters, in its resolved value (`List<AWS::EC2::Image::Id>` values are lists, so
/// both are scanned). A `NoEcho` parameter reads `****` and names nothing: a documented
/// limit.
pub fn stack_parameter_images(value: Option<&str>, resolved: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    for text in value.into_iter().chain(resolved) {
        for id in image_ids_in(text) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// The SSM parameter an SSM-typed stack parameter names (`AWS::SSM::Parameter::Value<…>`:
/// its value is the parameter's name, and only such parameters have a resolved value), or
/// `None`. Its resolved value is what it held at the stack's last update; the next update
/// launches what it holds then, so what it holds now keeps its image too.
pub fn stack_parameter_ssm<'a>(value: Option<&'a str>, resolved: Option<&str>) -> Option<&'a str> {
    let name = value?.trim();
    (resolved.is_some() && !name.is_empty() && name != "****" && image_ids_in(name).is_empty())
        .then_some(name)
}

/// What one live stack names, one rule for the live sweep and the offline plan: images
/// (each with its user), and SSM parameters (each with its user) whose value now names
/// an image, to be read before anything is decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StackNames {
    /// Images named directly: `(image id, user)`.
    pub images: Vec<(String, UsageRef)>,
    /// SSM parameters whose current value keeps its image: `(parameter, user)`.
    pub through_ssm: Vec<(String, UsageRef)>,
}

impl StackNames {
    /// What the stack's parameters name, given as `(key, value, resolved value)`: the ids
    /// in each (see [`stack_parameter_images`]) and each SSM-typed parameter's parameter
    /// (see [`stack_parameter_ssm`]).
    pub fn of_parameters<'a>(
        stack: &str,
        parameters: impl IntoIterator<Item = (&'a str, Option<&'a str>, Option<&'a str>)>,
    ) -> Self {
        let mut names = Self::default();
        for (key, value, resolved) in parameters {
            let what = format!("parameter {key}");
            for image in stack_parameter_images(value, resolved) {
                names.images.push((image, stack_user(stack, &what)));
            }
            if let Some(p) = stack_parameter_ssm(value, resolved) {
                let user = stack_user(stack, &format!("{what} resolve:ssm:{p}"));
                names.through_ssm.push((p.to_string(), user));
            }
        }
        names
    }

    /// Adds what the stack's template names (`usage.cloudformation_templates`): its
    /// literal ids and its `{{resolve:ssm:…}}` references, `stage` naming the template
    /// read (`template`, or `processed template` for one after its transforms).
    pub fn add_template(&mut self, stack: &str, stage: &str, body: &str) {
        for image in image_ids_in(body) {
            self.images.push((image, stack_user(stack, stage)));
        }
        for p in ssm_dynamic_references(body) {
            let user = stack_user(stack, &format!("{stage} resolve:ssm:{p}"));
            self.through_ssm.push((p, user));
        }
    }
}

/// Whether a template as written declares a transform (`Transform:` at its top, or an
/// `Fn::Transform` / `AWS::Include` inside): its processed stage may then name ids the
/// written one does not (a macro or an included snippet adds them), and must be read too.
pub fn template_has_transform(body: &str) -> bool {
    body.contains("Transform")
}

/// EMR cluster states in which the cluster can still launch nodes from its image.
pub const EMR_LIVE_STATES: [&str; 4] = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"];

/// An EMR cluster in a state that can still launch nodes (see [`EMR_LIVE_STATES`]).
pub fn emr_cluster_is_live(state: &str) -> bool {
    EMR_LIVE_STATES.contains(&state)
}

/// The usage record of an EMR cluster naming an image as `what` (`cluster`, `group
/// Core`, `fleet Task m5.xlarge`): `EMR j-2AXXX (analytics): cluster`.
pub fn emr_user(cluster_id: &str, name: Option<&str>, what: &str) -> UsageRef {
    let label = match name {
        Some(n) => format!("EMR {cluster_id} ({n}): {what}"),
        None => format!("EMR {cluster_id}: {what}"),
    };
    UsageRef {
        kind: UsageKind::EmrCluster,
        id: label,
    }
}

/// The usage record of a Spot Instance request, or `None` when its state (`closed`,
/// `cancelled`, `failed`) means it launches nothing again; `open`, `active` and `disabled`
/// requests keep their image. `sir-0abc (persistent, active)`.
pub fn spot_request_user(request_id: &str, kind: &str, state: &str) -> Option<UsageRef> {
    matches!(state, "open" | "active" | "disabled").then(|| UsageRef {
        kind: UsageKind::SpotRequest,
        id: format!("{request_id} ({kind}, {state})"),
    })
}

/// The largest reference object (`usage.reference_objects`) read: 16 MiB. A bigger one
/// stops the region with an error saying so, rather than being read in part.
pub const REFERENCE_OBJECT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The refusal of a reference object past [`REFERENCE_OBJECT_MAX_BYTES`], or `None`.
pub fn reference_object_too_big(place: &str, size: u64) -> Option<String> {
    (size > REFERENCE_OBJECT_MAX_BYTES).then(|| {
        format!(
            "{place} is {size} bytes, over the {REFERENCE_OBJECT_MAX_BYTES}-byte bound for usage.reference_objects; \
             nothing was changed (keep reference objects smaller, or name a narrower prefix)"
        )
    })
}

/// The refusal of a reference place (`s3://bucket/prefix/`) that lists no object, or
/// `None`. The place was named to keep the images its files name: an empty listing is a
/// typo in the prefix or a bucket emptied, not "nothing in use", so the regions stop.
pub fn reference_place_empty(place: &str, objects: usize) -> Option<String> {
    (objects == 0).then(|| {
        format!(
            "{place} holds no object (a typo in the prefix, or the files moved?); \
             nothing was changed (name the place that holds the files, or remove it from \
             usage.reference_objects)"
        )
    })
}

/// The images one reference object names, each with its usage record: every `ami-` id in
/// the text keeps its image (a plain scan, so no id is missed whatever the format), and
/// JSON-aware labels say where it was found: Terraform state (`resources[]`: the
/// resource's address, e.g. `s3://b/env.tfstate (aws_instance.web)`) and Packer manifests
/// (`builds[]`: the build's name); other ids are labelled by the object alone. `Err` when
/// the object is over the size bound or compressed (see [`reference_object_text`]).
pub fn reference_object_images(
    place: &str,
    body: &[u8],
) -> Result<Vec<(String, UsageRef)>, String> {
    if let Some(e) = reference_object_too_big(place, body.len() as u64) {
        return Err(e);
    }
    let text = reference_object_text(place, body)?;
    let label = |what: Option<String>| UsageRef {
        kind: UsageKind::ReferenceObject,
        id: match what {
            Some(w) => format!("{place} ({w})"),
            None => place.to_string(),
        },
    };
    let mut out: Vec<(String, UsageRef)> = Vec::new();
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) {
        for (what, part) in labelled_parts(&doc) {
            for id in image_ids_in(&part.to_string()) {
                if !out.iter().any(|(i, _)| *i == id) {
                    out.push((id, label(Some(what.clone()))));
                }
            }
        }
    }
    for id in image_ids_in(&text) {
        if !out.iter().any(|(i, _)| *i == id) {
            out.push((id, label(None)));
        }
    }
    Ok(out)
}

/// A reference object's text: UTF-8 (invalid bytes replaced), or UTF-16 by its byte-order
/// mark. A compressed or archived object (gzip, bzip2, xz, zstd, zip) is refused: the ids
/// in it cannot be seen, and reading it as naming nothing would let its images go.
fn reference_object_text<'a>(place: &str, body: &'a [u8]) -> Result<Cow<'a, str>, String> {
    let compressed = [
        (&b"\x1f\x8b"[..], "gzip"),
        (b"BZh", "bzip2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"PK\x03\x04", "zip"),
    ];
    if let Some((_, format)) = compressed.iter().find(|(m, _)| body.starts_with(m)) {
        return Err(format!(
            "{place} is {format}-compressed: the AMI ids in it cannot be read, so nothing was \
             changed (store reference objects uncompressed, or name a prefix without it)"
        ));
    }
    let utf16 = |rest: &[u8], from: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = rest
            .chunks(2)
            .map(|c| from([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        Cow::Owned(String::from_utf16_lossy(&units))
    };
    Ok(match body {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        _ => String::from_utf8_lossy(body),
    })
}

/// The labelled parts of a JSON reference object: a Terraform state's resources (by
/// address) and a Packer manifest's builds (by name).
fn labelled_parts(doc: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    let mut parts = Vec::new();
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if doc.get("terraform_version").is_some() {
        for r in doc
            .get("resources")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
        {
            let address = [text(r, "module"), text(r, "type"), text(r, "name")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(".");
            parts.push((address, r));
        }
    }
    for b in doc
        .get("builds")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        if b.get("artifact_id").is_some() {
            let name = text(b, "name").unwrap_or_else(|| "build".to_string());
            parts.push((format!("packer build {name}"), b));
        }
    }
    parts
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

    #[test]
    fn image_ids_are_found_in_any_text_once_each() {
        let text = r#"{"artifact_id": "us-east-1:ami-0123456789abcdef0,eu-west-1:ami-1a2b3c4d",
            "ami": "ami-0123456789abcdef0", "x": "ami-1a2b3c4d5", "y": "xami-1a2b3c4e",
            "z": "ami-zzzzzzzz", "w": "ami-1a2b3c4f_x"}"#;
        assert_eq!(
            image_ids_in(text),
            ["ami-0123456789abcdef0", "ami-1a2b3c4d"]
        );
        assert_eq!(image_ids_in("ImageId: ami-0abcdef1"), ["ami-0abcdef1"]);
        assert!(image_ids_in("no images here").is_empty());
    }

    #[test]
    fn image_ids_after_an_escape_are_found() {
        // JSON and YAML write a newline or tab inside a string as `\n`, `\t`: the id after
        // it is still an id (a Terraform output `join("\n", …)`, a template's `Fn::Sub`).
        let tfstate = r#"{"outputs": {"amis": {"value": "ami-1a2b3c4d\nami-0123456789abcdef0\tami-1a2b3c4e"}}}"#;
        assert_eq!(
            image_ids_in(tfstate),
            ["ami-1a2b3c4d", "ami-0123456789abcdef0", "ami-1a2b3c4e"]
        );
        let found = reference_object_images("s3://b/x.tfstate", tfstate.as_bytes()).unwrap();
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn reference_objects_not_plain_text_are_decoded_or_refused() {
        // UTF-16 (PowerShell's `>` writes it, with a byte-order mark): decoded and scanned.
        for big_endian in [false, true] {
            let text = "Default: ami-1a2b3c4d";
            let mut body: Vec<u8> = if big_endian {
                vec![0xFE, 0xFF]
            } else {
                vec![0xFF, 0xFE]
            };
            for u in text.encode_utf16() {
                let b = if big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                };
                body.extend(b);
            }
            let found = reference_object_images("s3://b/t.yaml", &body).unwrap();
            assert_eq!(found.len(), 1, "big endian: {big_endian}");
            assert_eq!(found[0].0, "ami-1a2b3c4d");
        }
        // Compressed (gzip's magic number): its ids cannot be seen, so it is refused,
        // never read as naming nothing.
        let gz = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];
        let e = reference_object_images("s3://b/state.tfstate.gz", &gz).unwrap_err();
        assert!(
            e.contains("s3://b/state.tfstate.gz") && e.contains("gzip"),
            "{e}"
        );
    }

    #[test]
    fn stack_parameters_name_images_by_value_or_resolved_value() {
        let id = "ami-0123456789abcdef0";
        assert_eq!(stack_parameter_images(Some(id), None), [id]);
        assert_eq!(
            stack_parameter_images(Some("/golden/web"), Some(id)),
            [id],
            "an SSM-typed parameter names its resolved value"
        );
        assert_eq!(
            stack_parameter_images(Some("ami-1a2b3c4d,ami-1a2b3c4e"), None).len(),
            2
        );
        assert!(stack_parameter_images(Some("****"), None).is_empty());
        assert_eq!(
            stack_parameter_ssm(Some("/golden/web"), Some(id)),
            Some("/golden/web")
        );
        assert_eq!(stack_parameter_ssm(Some("/golden/web"), None), None);
        assert_eq!(stack_parameter_ssm(Some(id), Some(id)), None);
        assert_eq!(
            ssm_dynamic_references("ImageId: '{{resolve:ssm:/golden/web:3}}' {{resolve:ssm-secure:x}} {{resolve:ssm:/golden/web:3}}"),
            ["/golden/web:3"]
        );
        assert!(stack_is_live("UPDATE_ROLLBACK_COMPLETE") && stack_is_live("DELETE_FAILED"));
        assert!(!stack_is_live("DELETE_COMPLETE"));
    }

    #[test]
    fn an_empty_reference_place_is_refused() {
        let e = reference_place_empty("s3://b/prdo/", 0).unwrap();
        assert!(e.starts_with("s3://b/prdo/ holds no object"), "{e}");
        assert_eq!(reference_place_empty("s3://b/prod/", 1), None);
    }

    #[test]
    fn a_stack_names_images_and_ssm_parameters_with_where() {
        let id = "ami-0123456789abcdef0";
        let mut names = StackNames::of_parameters(
            "web",
            [
                ("ImageId", Some("/golden/web"), Some(id)),
                ("Size", Some("m7g.large"), None),
                ("Secret", Some("****"), None),
            ],
        );
        names.add_template(
            "web",
            "template",
            "Fallback: ami-1a2b3c4d {{resolve:ssm:/x}}",
        );
        let ids = |v: &[(String, UsageRef)]| -> Vec<(String, String)> {
            v.iter().map(|(a, u)| (a.clone(), u.id.clone())).collect()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            ids(&names.images),
            [
                pair(id, "stack web: parameter ImageId"),
                pair("ami-1a2b3c4d", "stack web: template")
            ]
        );
        assert_eq!(
            ids(&names.through_ssm),
            [
                pair(
                    "/golden/web",
                    "stack web: parameter ImageId resolve:ssm:/golden/web"
                ),
                pair("/x", "stack web: template resolve:ssm:/x")
            ]
        );
        assert!(template_has_transform(
            "Transform: AWS::Serverless-2016-10-31"
        ));
        assert!(template_has_transform(
            r#"{"Fn::Transform": {"Name": "AWS::Include"}}"#
        ));
        assert!(!template_has_transform("Resources: {}"));
    }

    #[test]
    fn reference_objects_name_their_images_with_where_they_were_found() {
        let tfstate = r#"{"version": 4, "terraform_version": "1.9.0", "resources": [
            {"mode": "managed", "type": "aws_instance", "name": "web",
             "instances": [{"attributes": {"ami": "ami-0123456789abcdef0"}}]},
            {"module": "module.batch", "mode": "managed", "type": "aws_launch_template", "name": "lt",
             "instances": [{"attributes": {"image_id": "ami-1a2b3c4d"}}]}],
            "outputs": {"golden": {"value": "ami-1a2b3c4e"}}}"#;
        let found = reference_object_images("s3://b/prod.tfstate", tfstate.as_bytes()).unwrap();
        let ids: Vec<(&str, &str)> = found
            .iter()
            .map(|(i, u)| (i.as_str(), u.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                (
                    "ami-0123456789abcdef0",
                    "s3://b/prod.tfstate (aws_instance.web)"
                ),
                (
                    "ami-1a2b3c4d",
                    "s3://b/prod.tfstate (module.batch.aws_launch_template.lt)"
                ),
                ("ami-1a2b3c4e", "s3://b/prod.tfstate"),
            ]
        );
        let packer = r#"{"builds": [{"name": "web", "artifact_id": "us-east-1:ami-1a2b3c4d,eu-west-1:ami-1a2b3c4e"}]}"#;
        let found =
            reference_object_images("s3://b/packer-manifest.json", packer.as_bytes()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1].1.id,
            "s3://b/packer-manifest.json (packer build web)"
        );
        assert_eq!(found[1].1.kind, UsageKind::ReferenceObject);
        // Not JSON at all: a plain scan still finds the id.
        let yaml = b"Parameters:
  ImageId:
    Default: ami-1a2b3c4d
";
        assert_eq!(
            reference_object_images("s3://b/t.yaml", yaml).unwrap()[0].0,
            "ami-1a2b3c4d"
        );
        let big = vec![b' '; REFERENCE_OBJECT_MAX_BYTES as usize + 1];
        let e = reference_object_images("s3://b/huge.tfstate", &big).unwrap_err();
        assert!(
            e.contains("s3://b/huge.tfstate") && e.contains("bound"),
            "{e}"
        );
    }

    #[test]
    fn emr_clusters_and_spot_requests_keep_while_they_can_launch() {
        for s in ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"] {
            assert!(emr_cluster_is_live(s), "{s}");
        }
        for s in ["TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"] {
            assert!(!emr_cluster_is_live(s), "{s}");
        }
        for s in ["open", "active", "disabled"] {
            assert!(spot_request_user("sir-1", "persistent", s).is_some(), "{s}");
        }
        for s in ["closed", "cancelled", "failed"] {
            assert!(spot_request_user("sir-1", "one-time", s).is_none(), "{s}");
        }
        assert_eq!(
            spot_request_user("sir-1", "persistent", "open").unwrap().id,
            "sir-1 (persistent, open)"
        );
    }
}
