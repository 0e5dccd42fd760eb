//! Recycle Bin retention rules, and what they mean for an image about to be deregistered:
//! whether it will enter the bin, until when it can be restored, and whether its snapshots
//! must wait for it (a restore needs them; AWS warns that snapshots leaving before their
//! AMI make the AMI unrecoverable). Pure: the rules are read by an adapter or from files.

use serde::Serialize;

use crate::model::{Tags, Timestamp};

/// The tag that defers a snapshot's deletion until the AMI it belonged to has left the
/// Recycle Bin: `ami-sweeper:delete-after` = an RFC 3339 instant. Part of the documented
/// contract: every sweep deletes marked snapshots whose instant has passed, and none before.
pub const DELETE_AFTER: &str = "ami-sweeper:delete-after";

/// What a retention rule retains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinResource {
    /// `EC2_IMAGE`: deregistered EBS-backed AMIs.
    Image,
    /// `EBS_SNAPSHOT`: deleted snapshots.
    Snapshot,
}

impl BinResource {
    /// From the API's `ResourceType`; `None` for a type ami-sweeper does not know.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "EC2_IMAGE" => Some(Self::Image),
            "EBS_SNAPSHOT" => Some(Self::Snapshot),
            _ => None,
        }
    }
}

/// A tag a rule names: the key, and the value unless any value matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagMatch {
    /// `ResourceTagKey`.
    pub key: String,
    /// `ResourceTagValue`; `None` matches any value.
    pub value: Option<String>,
}

impl TagMatch {
    fn on(&self, tags: &Tags) -> bool {
        tags.get(&self.key)
            .is_some_and(|v| self.value.as_deref().is_none_or(|want| want == v))
    }
}

/// One retention rule, as `rbin:GetRule` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinRule {
    /// `Identifier`.
    pub id: String,
    /// `ResourceType`.
    pub resource: BinResource,
    /// `RetentionPeriod` in days.
    pub retention_days: u32,
    /// `ResourceTags`: a tag-level rule retains resources with any of them; empty for a
    /// region-level rule, which retains every resource of its type.
    pub resource_tags: Vec<TagMatch>,
    /// `ExcludeResourceTags`: resources with any of them are not retained.
    pub exclude_tags: Vec<TagMatch>,
    /// `LockState` is `locked` (the rule cannot be deleted or shortened at will).
    pub locked: bool,
}

impl BinRule {
    /// Whether the rule retains a resource of its type with these tags.
    pub fn retains(&self, tags: &Tags) -> bool {
        if self.exclude_tags.iter().any(|m| m.on(tags)) {
            return false;
        }
        self.resource_tags.is_empty() || self.resource_tags.iter().any(|m| m.on(tags))
    }
}

/// A region's retention rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinRules(pub Vec<BinRule>);

impl BinRules {
    /// The days a deleted resource of `kind` with `tags` stays restorable: the longest
    /// period of the rules that retain it (`None`: it does not enter the bin). Tags not
    /// known (`None`) match only region-level rules without exclusions: a resource whose
    /// tags are unknown is never assumed to be retained by a rule that might exclude it.
    pub fn retention(&self, kind: BinResource, tags: Option<&Tags>) -> Option<u32> {
        self.0
            .iter()
            .filter(|r| r.resource == kind)
            .filter(|r| match tags {
                Some(t) => r.retains(t),
                None => r.resource_tags.is_empty() && r.exclude_tags.is_empty(),
            })
            .map(|r| r.retention_days)
            .max()
    }

    /// Whether any rule retains images at all (`recycle_bin: "require"` needs one that
    /// retains the image in question).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the Recycle Bin does for one condemned image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinFate {
    /// Until when the deregistered image can be restored.
    #[serde(serialize_with = "crate::time::ser_instant")]
    pub restorable_until: Timestamp,
    /// What happens to its snapshots meanwhile.
    pub snapshots: SnapshotWait,
}

/// Why the snapshots of an image entering the bin wait, or need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotWait {
    /// They are tagged `ami-sweeper:delete-after` and deleted by the first sweep after
    /// `restorable_until`.
    Deferred,
    /// A snapshot rule retains each of them at least as long as the image: they are
    /// deleted now and stay restorable from the bin.
    RetainedBySnapshotRule,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        kind: BinResource,
        days: u32,
        tags: &[(&str, Option<&str>)],
        exclude: &[(&str, Option<&str>)],
    ) -> BinRule {
        let m = |t: &[(&str, Option<&str>)]| {
            t.iter()
                .map(|(k, v)| TagMatch {
                    key: k.to_string(),
                    value: v.map(str::to_string),
                })
                .collect()
        };
        BinRule {
            id: format!("r-{days}"),
            resource: kind,
            retention_days: days,
            resource_tags: m(tags),
            exclude_tags: m(exclude),
            locked: false,
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        let mut t = Tags::new();
        for (k, v) in pairs {
            t.insert(*k, *v);
        }
        t
    }

    #[test]
    fn the_longest_matching_rule_wins_and_exclusions_and_tags_decide_the_match() {
        use BinResource::{Image, Snapshot};
        let rules = BinRules(vec![
            rule(Image, 7, &[], &[("scratch", None)]),
            rule(Image, 30, &[("env", Some("prod"))], &[]),
            rule(Image, 90, &[("keep-long", None)], &[]),
            rule(Snapshot, 14, &[], &[]),
        ]);
        assert_eq!(rules.retention(Image, Some(&tags(&[]))), Some(7));
        assert_eq!(
            rules.retention(Image, Some(&tags(&[("env", "prod")]))),
            Some(30)
        );
        assert_eq!(
            rules.retention(Image, Some(&tags(&[("env", "dev")]))),
            Some(7)
        );
        assert_eq!(
            rules.retention(Image, Some(&tags(&[("env", "prod"), ("keep-long", "")]))),
            Some(90)
        );
        // Excluded from the region-level rule, and no tag-level rule matches.
        assert_eq!(
            rules.retention(Image, Some(&tags(&[("scratch", "1")]))),
            None
        );
        assert_eq!(rules.retention(Snapshot, Some(&tags(&[]))), Some(14));
        // Unknown tags: only region-level rules without exclusions count.
        assert_eq!(rules.retention(Image, None), None);
        assert_eq!(rules.retention(Snapshot, None), Some(14));
        assert_eq!(BinRules::default().retention(Image, Some(&tags(&[]))), None);
    }
}
