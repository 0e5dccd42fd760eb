//! `selection.match`: a small expression tree over an image's attributes, parsed strictly
//! and evaluated by a pure function.
//!
//! A comparison on an attribute the image lacks (Linux images have no `Platform`) is
//! false, so `not` of it is true; `exists` tests presence. Unknown attributes, operators
//! and values are errors with their field path, as everything in the policy.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{opt_non_negative, Glob};
use crate::model::{Image, RootDevice, Timestamp};
use crate::time::days_before;

/// One condition: an object with exactly one key, an operator (`all`, `any`, `not`,
/// `exists`) or an attribute compared with a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every listed condition holds (at least one must be listed).
    All(Vec<Condition>),
    /// At least one listed condition holds (at least one must be listed).
    Any(Vec<Condition>),
    /// The condition does not hold (so `not` of a comparison on a missing attribute holds).
    Not(Box<Condition>),
    /// The image has the attribute at all.
    Exists(Attribute),
    /// The Name matches the glob (an image without a name matches nothing).
    Name(Glob),
    /// The Description matches the glob.
    Description(Glob),
    /// The image carries the tag key, with a value matching `value` when given.
    Tag(TagTest),
    /// `Architecture` equals it.
    Architecture(Architecture),
    /// `Platform` equals it: only Windows images have one.
    Platform(Platform),
    /// `VirtualizationType` equals it.
    Virtualization(Virtualization),
    /// `RootDeviceType` equals it.
    RootDeviceType(RootDeviceType),
    /// `BootMode` equals it.
    BootMode(BootMode),
    /// `Public` equals it.
    Public(bool),
    /// `State` equals it.
    State(State),
    /// `ImageType` equals it.
    ImageType(ImageType),
    /// `SourceImageId` (AMI ancestry) matches the glob.
    SourceImageId(Glob),
    /// `SourceImageRegion` matches the glob.
    SourceRegion(Glob),
    /// The image's age in whole days lies within the bounds.
    AgeDays(DayBounds),
    /// The days since its last launch lie within the bounds (never launched: false).
    LastLaunchedDays(DayBounds),
}

/// The names a condition may have, in the order errors list them.
const CONDITIONS: &str = "`all`, `any`, `not`, `exists`, `name`, `description`, `tag`, \
    `architecture`, `platform`, `virtualization`, `root_device_type`, `boot_mode`, `public`, \
    `state`, `image_type`, `source_image_id`, `source_region`, `age_days`, \
    `last_launched_days`";

impl Condition {
    /// Whether the condition holds for `img` at instant `now` (ages are measured from it).
    pub fn holds(&self, img: &Image, now: Timestamp) -> bool {
        let a = &img.attributes;
        let is = |field: &Option<String>, v: &str| field.as_deref() == Some(v);
        let glob =
            |field: &Option<String>, g: &Glob| field.as_deref().is_some_and(|v| g.matches(v));
        match self {
            Self::All(cs) => cs.iter().all(|c| c.holds(img, now)),
            Self::Any(cs) => cs.iter().any(|c| c.holds(img, now)),
            Self::Not(c) => !c.holds(img, now),
            Self::Exists(attr) => attr.present(img),
            Self::Name(g) => !img.name.is_empty() && g.matches(&img.name),
            Self::Description(g) => glob(&a.description, g),
            Self::Tag(t) => img
                .tags
                .get(&t.key)
                .is_some_and(|v| t.value.as_ref().is_none_or(|g| g.matches(v))),
            Self::Architecture(v) => is(&a.architecture, v.as_str()),
            Self::Platform(v) => is(&a.platform, v.as_str()),
            Self::Virtualization(v) => is(&a.virtualization, v.as_str()),
            Self::RootDeviceType(v) => matches!(
                (&img.root_device, v),
                (RootDevice::Ebs, RootDeviceType::Ebs)
                    | (RootDevice::InstanceStore, RootDeviceType::InstanceStore)
            ),
            Self::BootMode(v) => is(&a.boot_mode, v.as_str()),
            Self::Public(v) => img.public == *v,
            Self::State(v) => img.state.as_str() == v.as_str(),
            Self::ImageType(v) => is(&a.image_type, v.as_str()),
            Self::SourceImageId(g) => glob(&a.source_image_id, g),
            Self::SourceRegion(g) => glob(&a.source_region, g),
            Self::AgeDays(b) => b.contains(img.creation_date, now),
            Self::LastLaunchedDays(b) => img.last_launched.is_some_and(|t| b.contains(t, now)),
        }
    }
}

impl Condition {
    /// The first condition in the tree whose truth changes with time alone (`age_days`,
    /// `last_launched_days`), by name: a rule selecting by one takes in or lets go of
    /// images as nights pass, which thinning's stable choice cannot allow.
    pub fn time_dependent(&self) -> Option<&'static str> {
        match self {
            Self::All(cs) | Self::Any(cs) => cs.iter().find_map(Self::time_dependent),
            Self::Not(c) => c.time_dependent(),
            Self::AgeDays(_) => Some("age_days"),
            Self::LastLaunchedDays(_) => Some("last_launched_days"),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ConditionVisitor)
    }
}

struct ConditionVisitor;

impl<'de> Visitor<'de> for ConditionVisitor {
    type Value = Condition;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a condition: an object with one key, such as {\"name\": \"web-*\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
        use Condition as C;
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(format!(
                "a condition needs one key (known conditions: {CONDITIONS})"
            )));
        };
        let listed = |v: Vec<Condition>| {
            if v.is_empty() {
                Err(de::Error::custom(format!(
                    "`{key}` must list at least one condition"
                )))
            } else {
                Ok(v)
            }
        };
        let c = match key.as_str() {
            "all" => C::All(listed(map.next_value()?)?),
            "any" => C::Any(listed(map.next_value()?)?),
            "not" => C::Not(Box::new(map.next_value()?)),
            "exists" => C::Exists(map.next_value()?),
            "name" => C::Name(map.next_value()?),
            "description" => C::Description(map.next_value()?),
            "tag" => C::Tag(map.next_value()?),
            "architecture" => C::Architecture(map.next_value()?),
            "platform" => C::Platform(map.next_value()?),
            "virtualization" => C::Virtualization(map.next_value()?),
            "root_device_type" => C::RootDeviceType(map.next_value()?),
            "boot_mode" => C::BootMode(map.next_value()?),
            "public" => C::Public(map.next_value()?),
            "state" => C::State(map.next_value()?),
            "image_type" => C::ImageType(map.next_value()?),
            "source_image_id" => C::SourceImageId(map.next_value()?),
            "source_region" => C::SourceRegion(map.next_value()?),
            "age_days" => C::AgeDays(map.next_value()?),
            "last_launched_days" => C::LastLaunchedDays(map.next_value()?),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown condition `{other}` (known conditions: {CONDITIONS})"
                )))
            }
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(crate::strict::refuse_key_with(
                &mut map,
                format!(
                    "one key per condition, found `{key}` and `{extra}`; combine conditions \
                     with `all` or `any`"
                ),
            ));
        }
        Ok(c)
    }
}

/// `{"tag": {"key": "env"}}` (the key is present) or `{"tag": {"key": "env", "value":
/// "prod-*"}}` (present with a matching value).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagTest {
    /// The tag key (exact, case-sensitive; not empty).
    pub key: String,
    /// A glob the value must match; absent: any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Glob>,
}

/// Bounds on a number of whole days, both inclusive: `min` days or more, `max` days or
/// fewer; at least one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DayBounds {
    /// At least this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min: Option<u64>,
    /// At most this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max: Option<u64>,
}

impl DayBounds {
    /// Whether the instant `t` lies `min..=max` whole days before `now` (as `min_age_days`
    /// counts: exactly `min` days old is old enough).
    pub fn contains(&self, t: Timestamp, now: Timestamp) -> bool {
        let old_enough = self
            .min
            .is_none_or(|d| days_before(now, d).is_some_and(|cut| t <= cut));
        let young_enough = self
            .max
            .is_none_or(|d| days_before(now, d.saturating_add(1)).is_none_or(|cut| t > cut));
        old_enough && young_enough
    }
}

impl<'de> Deserialize<'de> for DayBounds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default, deserialize_with = "opt_non_negative")]
            min: Option<u64>,
            #[serde(default, deserialize_with = "opt_non_negative")]
            max: Option<u64>,
        }
        let raw = Raw::deserialize(d)?;
        match (raw.min, raw.max) {
            (None, None) => Err(de::Error::custom("give `min`, `max` or both")),
            (Some(lo), Some(hi)) if lo > hi => Err(de::Error::custom(format!(
                "`min` {lo} is more than `max` {hi}: nothing lies between"
            ))),
            (min, max) => Ok(Self { min, max }),
        }
    }
}

/// An attribute `exists` can test: the ones an image may lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// A non-empty Name.
    Name,
    /// A non-empty Description.
    Description,
    /// `Architecture`.
    Architecture,
    /// `Platform` (Windows images only).
    Platform,
    /// `VirtualizationType`.
    Virtualization,
    /// `BootMode`.
    BootMode,
    /// `ImageType`.
    ImageType,
    /// `SourceImageId`.
    SourceImageId,
    /// `SourceImageRegion`.
    SourceRegion,
    /// `LastLaunchedTime`.
    LastLaunched,
}

impl Attribute {
    /// Whether `img` has it.
    pub fn present(self, img: &Image) -> bool {
        let a = &img.attributes;
        match self {
            Self::Name => !img.name.is_empty(),
            Self::Description => a.description.is_some(),
            Self::Architecture => a.architecture.is_some(),
            Self::Platform => a.platform.is_some(),
            Self::Virtualization => a.virtualization.is_some(),
            Self::BootMode => a.boot_mode.is_some(),
            Self::ImageType => a.image_type.is_some(),
            Self::SourceImageId => a.source_image_id.is_some(),
            Self::SourceRegion => a.source_region.is_some(),
            Self::LastLaunched => img.last_launched.is_some(),
        }
    }
}

/// An enum of EC2's values for one attribute, spelled as DescribeImages spells them.
macro_rules! ec2_values {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),+
        }

        impl $name {
            /// EC2's spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $s),+
                }
            }
        }
    };
}

ec2_values!(
    /// `Architecture`.
    Architecture {
        /// 32-bit x86.
        I386 = "i386",
        /// 64-bit x86.
        X86_64 = "x86_64",
        /// 64-bit Arm.
        Arm64 = "arm64",
        /// x86 Mac.
        X86_64Mac = "x86_64_mac",
        /// Arm Mac.
        Arm64Mac = "arm64_mac",
    }
);

ec2_values!(
    /// `Platform`: EC2 sets it on Windows images only; Linux images have none.
    Platform {
        /// Windows (`Windows` is accepted too).
        #[serde(alias = "Windows")]
        Windows = "windows",
    }
);

ec2_values!(
    /// `VirtualizationType`.
    Virtualization {
        /// Hardware virtual machine.
        Hvm = "hvm",
        /// Paravirtual.
        Paravirtual = "paravirtual",
    }
);

ec2_values!(
    /// `RootDeviceType`.
    RootDeviceType {
        /// EBS-backed.
        Ebs = "ebs",
        /// Instance-store-backed.
        InstanceStore = "instance-store",
    }
);

ec2_values!(
    /// `BootMode`.
    BootMode {
        /// Legacy BIOS.
        LegacyBios = "legacy-bios",
        /// UEFI.
        Uefi = "uefi",
        /// UEFI where the instance type supports it.
        UefiPreferred = "uefi-preferred",
    }
);

ec2_values!(
    /// `State`.
    State {
        /// Being created.
        Pending = "pending",
        /// Usable.
        Available = "available",
        /// Not usable.
        Invalid = "invalid",
        /// Deregistered.
        Deregistered = "deregistered",
        /// Changing state.
        Transient = "transient",
        /// Creation failed.
        Failed = "failed",
        /// In error.
        Error = "error",
        /// Disabled.
        Disabled = "disabled",
    }
);

ec2_values!(
    /// `ImageType`.
    ImageType {
        /// A machine image.
        Machine = "machine",
        /// A kernel image.
        Kernel = "kernel",
        /// A RAM disk image.
        Ramdisk = "ramdisk",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    #[test]
    fn day_bounds_count_whole_days_like_min_age_days() {
        let now = parse_instant("2026-11-26T00:00:00Z").unwrap();
        let at = |s: &str| parse_instant(s).unwrap();
        let b = DayBounds {
            min: Some(3),
            max: Some(5),
        };
        assert!(!b.contains(at("2026-11-23T00:00:01Z"), now), "2.99 days");
        assert!(
            b.contains(at("2026-11-23T00:00:00Z"), now),
            "exactly 3 days"
        );
        assert!(
            b.contains(at("2026-11-20T00:00:01Z"), now),
            "5.99 days is 5 whole days"
        );
        assert!(!b.contains(at("2026-11-20T00:00:00Z"), now), "6 days");
        let open = DayBounds {
            min: None,
            max: Some(u64::MAX / 2),
        };
        assert!(open.contains(at("1970-01-01T00:00:00Z"), now));
    }
}
