//! The one rule that decides whether a snapshot or an instance-store bundle may be deleted.
//!
//! Three paths ask it, each gathering the facts it can see: the planner (the storage of
//! an image it condemns), the reconciliation (storage whose image is gone) and the cleanup
//! worker (a queued job, checked against AWS's own records). Whatever the path, the same
//! item with the same facts gets the same [`Fate`], and a kept item the same
//! [`StorageReason`] name in the plan, the reconciliation and the dead-letter queue.
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{Tags, Timestamp};
use crate::policy::{Cleanup, Glob, Policy};
use crate::recycle_bin::DELETE_AFTER;

/// The tag the sweep puts on storage before deregistering its image; its value is the
/// image id. Part of the documented contract: other tools may look for it.
pub const STORAGE_MARK: &str = "ami-sweeper:storage-of";
/// Tag key AWS Backup puts on what it creates.
pub const BACKUP_TAG: &str = "aws:backup:source-resource";
/// Tag key Data Lifecycle Manager puts on the snapshots of its policies.
pub const DLM_TAG: &str = "aws:dlm:lifecycle-policy-id";

/// Why a snapshot or bundle stays (or waits). One name in the plan, the reconciliation
/// and the worker's rejections; docs/decisions.md's "Storage rules" list them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageReason {
    /// AWS Backup owns it (its tag, or the description AWS Backup writes).
    BackupManaged,
    /// A Data Lifecycle Manager policy owns it.
    DlmManaged,
    /// It carries one of the `exclude_tags` of any of the policy's rules: kept on purpose.
    ExcludedByTag,
    /// Its `ami-sweeper:storage-of` or `ami-sweeper:delete-after` tag is not in the form
    /// ami-sweeper writes: someone else wrote it, so nothing is assumed.
    UnreadableTag,
    /// A bundle whose `ImageLocation` is not of the form `bucket/key.manifest.xml`.
    UnrecognisedLocation,
    /// A bundle outside the deployment's bundle buckets.
    BucketNotConfigured,
    /// Nothing ties it to the image it is asked about (no mapping, no mark naming the
    /// image, no description EC2 wrote for it).
    NotTiedToImage,
    /// The image it belongs to is still registered (in any state).
    ImageRegistered,
    /// Another registered image (in any state, disabled included) references it.
    UsedByOtherImage,
    /// A launch template version that counts under `usage.launch_template_versions` maps it.
    NamedByLaunchTemplate,
    /// The policy's `cleanup.snapshots` (or `cleanup.bundles`) is off.
    CleanupDisabled,
    /// Not marked by ami-sweeper, and the policy has no `cleanup.orphans`.
    OrphansOff,
    /// A bundle not marked by ami-sweeper, in a bucket that `cleanup.private_bundle_buckets`
    /// does not list: another account may register images from it, which this account
    /// cannot see.
    BucketNotPrivate,
    /// Not marked by ami-sweeper, and younger than `cleanup.orphans.min_age_days`.
    TooYoung,
    /// An AMI that needs it is in the Recycle Bin (or enters it now) and can still be
    /// restored: it waits until that AMI leaves.
    ImageInRecycleBin,
    /// Its `ami-sweeper:delete-after` instant is still ahead.
    DeferredForRecycleBin,
}

impl StorageReason {
    /// The reason's name as reports and dead-letter messages give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackupManaged => "backup_managed",
            Self::DlmManaged => "dlm_managed",
            Self::ExcludedByTag => "excluded_by_tag",
            Self::UnreadableTag => "unreadable_tag",
            Self::UnrecognisedLocation => "unrecognised_location",
            Self::BucketNotConfigured => "bucket_not_configured",
            Self::NotTiedToImage => "not_tied_to_image",
            Self::ImageRegistered => "image_registered",
            Self::UsedByOtherImage => "used_by_other_image",
            Self::NamedByLaunchTemplate => "named_by_launch_template",
            Self::CleanupDisabled => "cleanup_disabled",
            Self::OrphansOff => "orphans_off",
            Self::BucketNotPrivate => "bucket_not_private",
            Self::TooYoung => "too_young",
            Self::ImageInRecycleBin => "image_in_recycle_bin",
            Self::DeferredForRecycleBin => "deferred_for_recycle_bin",
        }
    }

    /// Every reason, in rule order (for documentation and exhaustive tests).
    pub const ALL: [StorageReason; 16] = [
        Self::BackupManaged,
        Self::DlmManaged,
        Self::ExcludedByTag,
        Self::UnreadableTag,
        Self::UnrecognisedLocation,
        Self::BucketNotConfigured,
        Self::NotTiedToImage,
        Self::ImageRegistered,
        Self::UsedByOtherImage,
        Self::NamedByLaunchTemplate,
        Self::CleanupDisabled,
        Self::OrphansOff,
        Self::BucketNotPrivate,
        Self::TooYoung,
        Self::ImageInRecycleBin,
        Self::DeferredForRecycleBin,
    ];

    /// Reasons that say someone else owns or guards the storage: ami-sweeper writes no
    /// tag on it.
    pub fn hands_off(self) -> bool {
        matches!(
            self,
            Self::BackupManaged | Self::DlmManaged | Self::ExcludedByTag | Self::UnreadableTag
        )
    }
}

impl std::fmt::Display for StorageReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may happen to a piece of storage now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Nothing needs it: it may be deleted.
    Delete,
    /// Kept, for this reason, until the facts change.
    Retain(StorageReason),
    /// Kept until this instant (the latest of every deferral that applies), then judged
    /// again.
    DeferUntil(Timestamp, StorageReason),
}

impl Fate {
    /// The reason it stays, if it does.
    pub fn reason(&self) -> Option<StorageReason> {
        match self {
            Self::Delete => None,
            Self::Retain(r) | Self::DeferUntil(_, r) => Some(*r),
        }
    }
}

/// A snapshot or a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An EBS snapshot.
    Snapshot,
    /// An instance-store bundle (its manifest object's tags and age).
    Bundle,
}

/// The storage asked about, as the asking path sees it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Snapshot or bundle.
    pub kind: Kind,
    /// The image it is judged for: the condemned image (plan), the one its mark or
    /// description names (reconciliation), the job's (worker).
    pub image_id: &'a str,
    /// The image's own block device mappings (or `ImageLocation`) name it: the planner
    /// knows this from the inventory. Otherwise it is tied by its tags or description.
    pub mapped: bool,
    /// Its tags (a snapshot's, or the manifest object's).
    pub tags: &'a Tags,
    /// Whether `tags` are its tags as read: `false` when they could not be (a mapped
    /// snapshot missing from the listing), and then nothing is assumed: it is kept.
    pub tags_known: bool,
    /// The description EC2 wrote (snapshots; empty for bundles).
    pub description: &'a str,
    /// `StartTime` or `LastModified`; `None` when unknown (then never old enough).
    pub born: Option<Timestamp>,
    /// Bundles: the bucket, when the location was understood (`None`: it was not).
    pub bucket: Option<&'a str>,
}

/// What the asking path knows about who still needs the item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Registered images (any state but deregistered, disabled included) that reference
    /// it: their block device mappings, or for a bundle their `ImageLocation`. The
    /// planner leaves out the images it condemns with it (their jobs wait for all).
    pub registered: Vec<String>,
    /// Launch template versions that map it and count under the policy's
    /// `usage.launch_template_versions` (their usage records).
    pub templates: Vec<String>,
    /// AMIs that need it and are in the Recycle Bin (or, for the planner, enter it with
    /// this deregistration), with the instant they leave it (`None`: unknown).
    pub in_bin: Vec<(String, Option<Timestamp>)>,
    /// A snapshot rule would keep it restorable until this instant if it were deleted now.
    pub restorable_if_deleted: Option<Timestamp>,
}

/// The policy-wide storage rules: the `cleanup` switches, the exclude tags, and the
/// deployment's bundle buckets.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// `cleanup`: snapshots, bundles, orphans.
    pub cleanup: &'a Cleanup,
    /// The `selection.exclude_tags` of every retention rule: storage carrying any of them
    /// is kept, whichever rule decided (or would have decided) its image, because once
    /// the image is gone no rule can be known to have decided it.
    pub exclude_tags: Vec<&'a BTreeMap<String, Glob>>,
    /// The deployment's bundle buckets; `None` when the asking path does not know them
    /// (an offline plan without `--bundle-buckets`).
    pub bundle_buckets: Option<&'a BTreeSet<String>>,
}

impl<'a> Rules<'a> {
    /// The rules of a policy, with the bundle buckets if known.
    pub fn of(policy: &'a Policy, bundle_buckets: Option<&'a BTreeSet<String>>) -> Self {
        Self {
            cleanup: &policy.cleanup,
            exclude_tags: policy.every_exclude_tags(),
            bundle_buckets,
        }
    }
}

/// An `ami-...` id: what `ami-sweeper:storage-of` must hold (EC2 writes lowercase hex;
/// letters and digits are accepted, anything else is not an id).
pub fn is_image_id(v: &str) -> bool {
    v.strip_prefix("ami-").is_some_and(|h| {
        !h.is_empty() && h.len() <= 32 && h.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The sweeper's own tags, parsed strictly: `Err` when one is present but not in the
/// form ami-sweeper writes.
fn own_tags(tags: &Tags) -> Result<(Option<&str>, Option<Timestamp>), ()> {
    let mark = match tags.get(STORAGE_MARK) {
        None => None,
        Some(v) if is_image_id(v) => Some(v),
        Some(_) => return Err(()),
    };
    let after = match tags.get(DELETE_AFTER) {
        None => None,
        Some(v) => Some(crate::time::parse_instant(v).ok_or(())?),
    };
    Ok((mark, after))
}

/// Decides one snapshot or bundle. The rules in order (the first that applies decides,
/// except the Recycle Bin deferrals, which take the latest instant of all):
/// someone else owns or guards it; it is not tied to its image; something registered
/// or a launch template still needs it; the policy keeps it; an AMI that needs it can
/// still be restored from the Recycle Bin. Otherwise it may go.
pub fn fate(item: &Item<'_>, facts: &Facts, rules: &Rules<'_>, now: Timestamp) -> Fate {
    use StorageReason as R;
    if item.tags.contains_key(BACKUP_TAG) || item.description.contains("AWS Backup service") {
        return Fate::Retain(R::BackupManaged);
    }
    if item.tags.contains_key(DLM_TAG) {
        return Fate::Retain(R::DlmManaged);
    }
    let excluded = rules
        .exclude_tags
        .iter()
        .any(|tags| crate::policy::excluded(tags, item.tags));
    if excluded {
        return Fate::Retain(R::ExcludedByTag);
    }
    let Ok((mark, delete_after)) = own_tags(item.tags) else {
        return Fate::Retain(R::UnreadableTag);
    };
    if !item.tags_known {
        return Fate::Retain(R::UnreadableTag);
    }
    if item.kind == Kind::Bundle {
        let Some(bucket) = item.bucket else {
            return Fate::Retain(R::UnrecognisedLocation);
        };
        if rules.bundle_buckets.is_some_and(|b| !b.contains(bucket)) {
            return Fate::Retain(R::BucketNotConfigured);
        }
    }
    let marked = item.mapped || mark == Some(item.image_id);
    let foreign = !marked
        && match item.kind {
            Kind::Snapshot => {
                crate::fields::image_named_by(item.description) == Some(item.image_id)
            }
            Kind::Bundle => mark.is_none(),
        };
    if !marked && !foreign {
        return Fate::Retain(R::NotTiedToImage);
    }
    if facts.registered.iter().any(|i| i == item.image_id) {
        return Fate::Retain(R::ImageRegistered);
    }
    if !facts.registered.is_empty() {
        return Fate::Retain(R::UsedByOtherImage);
    }
    if !facts.templates.is_empty() {
        return Fate::Retain(R::NamedByLaunchTemplate);
    }
    let on = match item.kind {
        Kind::Snapshot => rules.cleanup.snapshots,
        Kind::Bundle => rules.cleanup.bundles,
    };
    if !on {
        return Fate::Retain(R::CleanupDisabled);
    }
    if foreign {
        let Some(orphans) = &rules.cleanup.orphans else {
            return Fate::Retain(R::OrphansOff);
        };
        // Another account may register from a manifest it can read, and this account
        // sees only its own images: only a bucket declared private lets a foreign go.
        let private = |b: &str| rules.cleanup.private_bundle_buckets.contains(b);
        if item.kind == Kind::Bundle && !item.bucket.is_some_and(private) {
            return Fate::Retain(R::BucketNotPrivate);
        }
        let limit = crate::time::days_before(now, orphans.min_age_days);
        if !matches!((item.born, limit), (Some(t), Some(l)) if t <= l) {
            return Fate::Retain(R::TooYoung);
        }
    }
    deferral(facts, delete_after, now)
}

/// The Recycle Bin rules: the latest instant among the AMIs in the bin that need the item
/// and its own `delete-after` tag, unless a snapshot rule keeps it restorable at least as
/// long. An AMI in the bin whose exit is unknown keeps it.
fn deferral(facts: &Facts, delete_after: Option<Timestamp>, now: Timestamp) -> Fate {
    use StorageReason as R;
    let mut latest: Option<(Timestamp, StorageReason)> = None;
    for (_, exit) in &facts.in_bin {
        // Listed in the bin with no exit, or one already past: still restorable.
        let Some(exit) = exit.filter(|t| *t > now) else {
            return Fate::Retain(R::ImageInRecycleBin);
        };
        if latest.is_none_or(|(t, _)| exit > t) {
            latest = Some((exit, R::ImageInRecycleBin));
        }
    }
    if let Some(t) = delete_after.filter(|t| *t > now) {
        if latest.is_none_or(|(l, _)| t > l) {
            latest = Some((t, R::DeferredForRecycleBin));
        }
    }
    match latest {
        None => Fate::Delete,
        Some((t, _)) if facts.restorable_if_deleted.is_some_and(|r| r >= t) => Fate::Delete,
        Some((t, r)) => Fate::DeferUntil(t, r),
    }
}

/// The latest of an existing `delete-after` tag (if readable) and `until`: what a sweep
/// writes, so that a shorter deferral never overwrites a longer one.
pub fn later_delete_after(tags: Option<&Tags>, until: Timestamp) -> Timestamp {
    tags.and_then(|t| t.get(DELETE_AFTER))
        .and_then(crate::time::parse_instant)
        .map_or(until, |t| t.max(until))
}

/// Whether a piece of storage is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupAction {
    /// Queued for deletion once the image is deregistered.
    Delete,
    /// Left in place.
    Retain,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{days_after, parse_instant};
    use StorageReason as R;

    fn at(s: &str) -> Timestamp {
        parse_instant(s).unwrap()
    }

    fn now() -> Timestamp {
        at("2026-11-26T00:00:00Z")
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One row: what differs from a plain marked snapshot of `ami-1` that nothing needs.
    struct Case {
        name: &'static str,
        kind: Kind,
        mapped: bool,
        tags: Tags,
        description: &'static str,
        born: Option<Timestamp>,
        bucket: Option<&'static str>,
        facts: Facts,
        cleanup: Cleanup,
        expect: Fate,
    }

    fn marked() -> Case {
        Case {
            name: "",
            kind: Kind::Snapshot,
            mapped: false,
            tags: tags(&[(STORAGE_MARK, "ami-1")]),
            description: "",
            born: Some(at("2026-11-25T00:00:00Z")),
            bucket: None,
            facts: Facts::default(),
            cleanup: Cleanup::default(),
            expect: Fate::Delete,
        }
    }

    fn foreign(born: Timestamp, orphan_days: Option<u64>) -> Case {
        Case {
            tags: Tags::new(),
            description: "Created by CreateImage(i-1) for ami-1 from vol-1",
            born: Some(born),
            cleanup: Cleanup {
                orphans: orphan_days.map(|d| crate::policy::Orphans { min_age_days: d }),
                ..Cleanup::default()
            },
            ..marked()
        }
    }

    fn bundle(bucket: Option<&'static str>, tags_: Tags) -> Case {
        Case {
            kind: Kind::Bundle,
            bucket,
            tags: tags_,
            ..marked()
        }
    }

    fn with(name: &'static str, expect: Fate, c: Case) -> Case {
        Case { name, expect, ..c }
    }

    fn cases() -> Vec<Case> {
        let t = |d: u64| days_after(now(), d);
        let second = chrono::TimeDelta::try_seconds(1).unwrap();
        let (just_before, just_after) = (now() - second, now() + second);
        let mark_and = |k: &'static str, v: &'static str| tags(&[(STORAGE_MARK, "ami-1"), (k, v)]);
        let in_bin = |exit: Option<Timestamp>| Facts {
            in_bin: vec![("ami-1".into(), exit)],
            ..Facts::default()
        };
        let thirty_days_ago = crate::time::days_before(now(), 30).unwrap();
        vec![
            with("nothing needs it", Fate::Delete, marked()),
            with(
                "backup tag",
                Fate::Retain(R::BackupManaged),
                Case {
                    tags: mark_and(BACKUP_TAG, "x"),
                    ..marked()
                },
            ),
            with(
                "backup description",
                Fate::Retain(R::BackupManaged),
                Case {
                    description: "This snapshot is created by the AWS Backup service.",
                    ..marked()
                },
            ),
            with(
                "dlm tag",
                Fate::Retain(R::DlmManaged),
                Case {
                    tags: mark_and(DLM_TAG, "p"),
                    ..marked()
                },
            ),
            with(
                "exclude tag",
                Fate::Retain(R::ExcludedByTag),
                Case {
                    tags: mark_and("retain", "audit"),
                    ..marked()
                },
            ),
            with(
                "mark not an image id",
                Fate::Retain(R::UnreadableTag),
                Case {
                    tags: tags(&[(STORAGE_MARK, "my-image")]),
                    ..marked()
                },
            ),
            with(
                "delete-after not an instant",
                Fate::Retain(R::UnreadableTag),
                Case {
                    tags: mark_and(DELETE_AFTER, "next week"),
                    ..marked()
                },
            ),
            with(
                "bundle location not understood",
                Fate::Retain(R::UnrecognisedLocation),
                bundle(None, tags(&[(STORAGE_MARK, "ami-1")])),
            ),
            with(
                "bundle outside the buckets",
                Fate::Retain(R::BucketNotConfigured),
                bundle(Some("elsewhere"), tags(&[(STORAGE_MARK, "ami-1")])),
            ),
            with(
                "bundle in a bucket",
                Fate::Delete,
                bundle(Some("bundles"), tags(&[(STORAGE_MARK, "ami-1")])),
            ),
            with(
                "mark names another image",
                Fate::Retain(R::NotTiedToImage),
                Case {
                    tags: tags(&[(STORAGE_MARK, "ami-2")]),
                    ..marked()
                },
            ),
            with(
                "bundle marked for another image",
                Fate::Retain(R::NotTiedToImage),
                bundle(Some("bundles"), tags(&[(STORAGE_MARK, "ami-2")])),
            ),
            with(
                "description names another image",
                Fate::Retain(R::NotTiedToImage),
                Case {
                    description: "Created by CreateImage(i-1) for ami-2 from vol-1",
                    ..foreign(thirty_days_ago, Some(0))
                },
            ),
            with(
                "mapped by the condemned image (plan)",
                Fate::Delete,
                Case {
                    mapped: true,
                    tags: Tags::new(),
                    ..marked()
                },
            ),
            with(
                "its image is registered",
                Fate::Retain(R::ImageRegistered),
                Case {
                    facts: Facts {
                        registered: vec!["ami-1".into()],
                        ..Facts::default()
                    },
                    ..marked()
                },
            ),
            with(
                "another image uses it",
                Fate::Retain(R::UsedByOtherImage),
                Case {
                    facts: Facts {
                        registered: vec!["ami-2".into()],
                        ..Facts::default()
                    },
                    ..marked()
                },
            ),
            with(
                "a launch template maps it",
                Fate::Retain(R::NamedByLaunchTemplate),
                Case {
                    facts: Facts {
                        templates: vec!["lt-1 v1".into()],
                        ..Facts::default()
                    },
                    ..marked()
                },
            ),
            with(
                "snapshot cleanup off",
                Fate::Retain(R::CleanupDisabled),
                Case {
                    cleanup: Cleanup {
                        snapshots: false,
                        ..Cleanup::default()
                    },
                    ..marked()
                },
            ),
            with(
                "bundle cleanup off",
                Fate::Retain(R::CleanupDisabled),
                Case {
                    cleanup: Cleanup {
                        bundles: false,
                        ..Cleanup::default()
                    },
                    ..bundle(Some("bundles"), tags(&[(STORAGE_MARK, "ami-1")]))
                },
            ),
            with(
                "foreign, orphans off",
                Fate::Retain(R::OrphansOff),
                foreign(thirty_days_ago, None),
            ),
            with(
                "foreign bundle, orphans off",
                Fate::Retain(R::OrphansOff),
                Case {
                    cleanup: Cleanup::default(),
                    ..bundle(Some("bundles"), Tags::new())
                },
            ),
            // Age: exactly min_age_days old goes, a second younger stays, unknown stays.
            with(
                "foreign, exactly old enough",
                Fate::Delete,
                foreign(thirty_days_ago, Some(30)),
            ),
            with(
                "foreign, a second too young",
                Fate::Retain(R::TooYoung),
                foreign(thirty_days_ago + second, Some(30)),
            ),
            with(
                "foreign, age unknown",
                Fate::Retain(R::TooYoung),
                Case {
                    born: None,
                    ..foreign(thirty_days_ago, Some(30))
                },
            ),
            with(
                "foreign bundle, old enough, in a private bucket",
                Fate::Delete,
                Case {
                    born: Some(thirty_days_ago),
                    cleanup: Cleanup {
                        orphans: Some(crate::policy::Orphans { min_age_days: 30 }),
                        private_bundle_buckets: ["bundles".to_string()].into(),
                        ..Cleanup::default()
                    },
                    ..bundle(Some("bundles"), Tags::new())
                },
            ),
            with(
                "foreign bundle, old enough, in a bucket not declared private",
                Fate::Retain(R::BucketNotPrivate),
                Case {
                    born: Some(thirty_days_ago),
                    cleanup: Cleanup {
                        orphans: Some(crate::policy::Orphans { min_age_days: 30 }),
                        private_bundle_buckets: ["elsewhere".to_string()].into(),
                        ..Cleanup::default()
                    },
                    ..bundle(Some("bundles"), Tags::new())
                },
            ),
            with(
                "marked bundle in a bucket not declared private",
                Fate::Delete,
                Case {
                    cleanup: Cleanup {
                        orphans: Some(crate::policy::Orphans { min_age_days: 30 }),
                        ..Cleanup::default()
                    },
                    ..bundle(Some("bundles"), tags(&[(STORAGE_MARK, "ami-1")]))
                },
            ),
            // Bin exit: ahead defers until it; listed with an exit past or unknown keeps.
            with(
                "AMI in the bin, exit ahead",
                Fate::DeferUntil(just_after, R::ImageInRecycleBin),
                Case {
                    facts: in_bin(Some(just_after)),
                    ..marked()
                },
            ),
            with(
                "AMI still listed in the bin, exit just past",
                Fate::Retain(R::ImageInRecycleBin),
                Case {
                    facts: in_bin(Some(just_before)),
                    ..marked()
                },
            ),
            with(
                "AMI in the bin, exit unknown",
                Fate::Retain(R::ImageInRecycleBin),
                Case {
                    facts: in_bin(None),
                    ..marked()
                },
            ),
            with(
                "snapshot rule keeps it as long as the AMI",
                Fate::Delete,
                Case {
                    facts: Facts {
                        restorable_if_deleted: Some(t(7)),
                        ..in_bin(Some(t(7)))
                    },
                    ..marked()
                },
            ),
            with(
                "snapshot rule a day shorter than the AMI",
                Fate::DeferUntil(t(7), R::ImageInRecycleBin),
                Case {
                    facts: Facts {
                        restorable_if_deleted: Some(t(6)),
                        ..in_bin(Some(t(7)))
                    },
                    ..marked()
                },
            ),
            // delete-after: ahead defers, at now or before goes.
            with(
                "delete-after a second ahead",
                Fate::DeferUntil(just_after, R::DeferredForRecycleBin),
                Case {
                    tags: tags(&[
                        (STORAGE_MARK, "ami-1"),
                        (DELETE_AFTER, "2026-11-26T00:00:01Z"),
                    ]),
                    ..marked()
                },
            ),
            with(
                "delete-after now",
                Fate::Delete,
                Case {
                    tags: mark_and(DELETE_AFTER, "2026-11-26T00:00:00Z"),
                    ..marked()
                },
            ),
            // The latest deferral wins, whichever gives it.
            with(
                "delete-after later than the bin exit",
                Fate::DeferUntil(t(30), R::DeferredForRecycleBin),
                Case {
                    tags: mark_and(DELETE_AFTER, "2026-12-26T00:00:00Z"),
                    facts: in_bin(Some(t(7))),
                    ..marked()
                },
            ),
            with(
                "bin exit later than delete-after",
                Fate::DeferUntil(t(40), R::ImageInRecycleBin),
                Case {
                    tags: mark_and(DELETE_AFTER, "2026-12-26T00:00:00Z"),
                    facts: Facts {
                        in_bin: vec![("ami-1".into(), Some(t(7))), ("ami-2".into(), Some(t(40)))],
                        ..Facts::default()
                    },
                    ..marked()
                },
            ),
        ]
    }

    #[test]
    fn every_storage_rule_decides_on_its_side_of_each_boundary() {
        let exclude: BTreeMap<String, Glob> = [("retain".to_string(), Glob::new("*"))]
            .into_iter()
            .collect();
        let buckets: BTreeSet<String> = ["bundles".to_string()].into_iter().collect();
        let all = cases();
        for c in &all {
            let rules = Rules {
                cleanup: &c.cleanup,
                exclude_tags: vec![&exclude],
                bundle_buckets: Some(&buckets),
            };
            let item = Item {
                kind: c.kind,
                image_id: "ami-1",
                mapped: c.mapped,
                tags: &c.tags,
                tags_known: true,
                description: c.description,
                born: c.born,
                bucket: c.bucket,
            };
            assert_eq!(fate(&item, &c.facts, &rules, now()), c.expect, "{}", c.name);
        }
        // Every reason has a row.
        for r in StorageReason::ALL {
            assert!(
                all.iter().any(|c| c.expect.reason() == Some(r)),
                "no case for {r}"
            );
        }
    }

    #[test]
    fn a_later_delete_after_is_never_shortened() {
        let long = tags(&[(DELETE_AFTER, "2026-12-26T00:00:00Z")]);
        let short = days_after(now(), 7);
        assert_eq!(
            later_delete_after(Some(&long), short),
            at("2026-12-26T00:00:00Z")
        );
        assert_eq!(later_delete_after(None, short), short);
        assert_eq!(
            later_delete_after(Some(&long), days_after(now(), 60)),
            days_after(now(), 60)
        );
    }
}
