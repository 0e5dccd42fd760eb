//! Reconciliation: finding the storage whose image is gone. Pure, like the planner.
//!
//! Two kinds of snapshot qualify:
//! - **marked**: before deregistering an image, the sweep tags each snapshot it means to
//!   delete with [`STORAGE_MARK`] = the image id (a write-ahead record on the snapshot
//!   itself). Whatever stops the run between `DeregisterImage` and the last delete (a
//!   crash, a kill, a refused delete, a queue that is gone), the next sweep finds the
//!   mark and finishes the job. No policy switch is needed: ami-sweeper decided it.
//! - **foreign**: the description EC2 wrote names an AMI (`CreateImage`/`CopyImage`)
//!   that is no longer registered: an image someone deregistered by hand. These are
//!   reclaimed only when the policy has `cleanup.orphans`, after its minimum age.
//!
//! Either way [`crate::storage::fate`] decides, with the facts this module gathers (the
//! registered images and launch templates that map it, the AMIs its mark and description
//! name that sit in the Recycle Bin): the same rule as the plan's and the worker's.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::inventory::Inventory;
use crate::model::{ImageState, Manifest, Snapshot, Timestamp};
use crate::policy::Policy;
use crate::recycle_bin::BinResource;
use crate::storage::CleanupAction;
use crate::storage::{fate, Facts, Fate, Item, Kind, Rules};

pub use crate::storage::STORAGE_MARK;

/// Why storage whose image is gone stays: the one list of [`crate::storage`].
pub type Keep = crate::storage::StorageReason;

pub use crate::fields::image_named_by;

/// How a snapshot came to be reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// ami-sweeper marked it before deregistering its image; the cleanup was lost.
    Marked,
    /// Its image was deregistered by someone else and the snapshot left behind.
    Foreign,
}

/// The fate of one snapshot whose image is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanDecision {
    /// `snap-...`.
    pub snapshot_id: String,
    /// The image it belonged to (from the mark, else from the description).
    pub image_id: String,
    /// Marked by ami-sweeper or left by someone else.
    pub origin: Origin,
    /// Size in GiB, where reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_gib: Option<u64>,
    /// `delete` or `retain`.
    pub action: CleanupAction,
    /// Why it stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Keep>,
    /// Deferred: the first instant it may go.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::ser_opt_instant"
    )]
    pub until: Option<Timestamp>,
}

/// The fate of one bundle manifest no registered image uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleOrphan {
    /// Bucket.
    pub bucket: String,
    /// Manifest key.
    pub manifest_key: String,
    /// The image it belonged to: ami-sweeper's mark on the manifest, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Marked by ami-sweeper or left by someone else.
    pub origin: Origin,
    /// `delete` or `retain`.
    pub action: CleanupAction,
    /// Why it stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Keep>,
}

/// Every snapshot and bundle of the region whose image is gone, with its fate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Sorted by snapshot id.
    pub decisions: Vec<OrphanDecision>,
    /// Bundle manifests in the deployment's bundle buckets that no registered image uses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<BundleOrphan>,
}

impl Reconciliation {
    /// The snapshots to delete.
    pub fn to_delete(&self) -> impl Iterator<Item = &OrphanDecision> {
        self.decisions
            .iter()
            .filter(|d| d.action == CleanupAction::Delete)
    }

    /// The images whose Recycle Bin membership decides something: those the mark or the
    /// description of a snapshot that would otherwise be deleted names. Empty means the
    /// bin need not be asked.
    pub fn images_to_check_in_bin(&self, snapshots: &[Snapshot]) -> FxHashSet<String> {
        let going: FxHashSet<&str> = self.to_delete().map(|d| d.snapshot_id.as_str()).collect();
        snapshots
            .iter()
            .filter(|s| going.contains(s.id.as_str()))
            .flat_map(named_images)
            .map(str::to_string)
            .collect()
    }

    /// Bundles to delete.
    pub fn bundles_to_delete(&self) -> impl Iterator<Item = &BundleOrphan> {
        self.bundles
            .iter()
            .filter(|b| b.action == CleanupAction::Delete)
    }

    /// (snapshots, GiB) to delete of one origin.
    pub fn count(&self, origin: Origin) -> (usize, u64) {
        self.to_delete()
            .filter(|d| d.origin == origin)
            .fold((0, 0), |(n, g), d| {
                (n + 1, g.saturating_add(d.size_gib.unwrap_or(0)))
            })
    }
}

/// The listed manifests no registered image (in any state but deregistered) launches
/// from: only these need their tags read.
pub fn unreferenced_manifests<'a>(
    inventory: &Inventory,
    listed: &'a [Manifest],
) -> Vec<&'a Manifest> {
    let used: FxHashSet<&str> = inventory
        .images()
        .iter()
        .filter(|i| i.state != ImageState::Deregistered)
        .filter_map(|i| i.image_location.as_deref())
        .collect();
    listed
        .iter()
        .filter(|m| !used.contains(m.location().as_str()))
        .collect()
}

/// Decides every unreferenced manifest (with its tags read) by [`crate::storage::fate`]:
/// a marked one is ami-sweeper's lost cleanup; any other is a foreign orphan, reclaimed
/// only with `cleanup.orphans` and past its minimum age (by `LastModified`: an upload not
/// yet registered is young).
pub fn reconcile_bundles(
    policy: &Policy,
    unreferenced: &[Manifest],
    now: Timestamp,
) -> Vec<BundleOrphan> {
    let rules = Rules::of(policy, None);
    let mut out: Vec<BundleOrphan> = unreferenced
        .iter()
        .map(|m| {
            let image_id = m.tags.get(STORAGE_MARK).map(str::to_string);
            let origin = if image_id.is_some() {
                Origin::Marked
            } else {
                Origin::Foreign
            };
            let item = Item {
                kind: Kind::Bundle,
                image_id: image_id.as_deref().unwrap_or(""),
                mapped: false,
                tags: &m.tags,
                tags_known: true,
                description: "",
                born: m.last_modified,
                bucket: Some(&m.bucket),
            };
            let reason = fate(&item, &Facts::default(), &rules, now).reason();
            BundleOrphan {
                bucket: m.bucket.clone(),
                manifest_key: m.key.clone(),
                image_id,
                origin,
                action: action_of(reason),
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.bucket, &a.manifest_key).cmp(&(&b.bucket, &b.manifest_key)));
    out
}

/// Delete unless there is a reason to keep.
fn action_of(reason: Option<Keep>) -> CleanupAction {
    if reason.is_some() {
        CleanupAction::Retain
    } else {
        CleanupAction::Delete
    }
}

/// The AMIs a snapshot's mark and description name: those that may need it from the
/// Recycle Bin (`ListImagesInRecycleBin` reports no block device mappings).
pub fn named_images(s: &Snapshot) -> impl Iterator<Item = &str> {
    let mark = s.tags.get(STORAGE_MARK);
    let described = image_named_by(&s.description).filter(|d| Some(*d) != mark);
    mark.into_iter().chain(described)
}

/// For each listed snapshot a registered image uses, the AMIs its mark and description
/// name that are not registered: the ones the Recycle Bin may hold (a plan asks the bin
/// about them before it lets the snapshot go with its last registered user).
pub fn named_gone_images<'a>(
    inventory: &Inventory,
    snapshots: &'a [Snapshot],
) -> Vec<(&'a str, Vec<&'a str>)> {
    let users = snapshot_users(inventory);
    let registered: FxHashSet<&str> = inventory
        .images()
        .iter()
        .filter(|i| i.state != ImageState::Deregistered)
        .map(|i| i.id.as_str())
        .collect();
    snapshots
        .iter()
        .filter(|s| users.contains_key(s.id.as_str()))
        .map(|s| {
            let gone: Vec<&str> = named_images(s)
                .filter(|i| !registered.contains(i))
                .collect();
            (s.id.as_str(), gone)
        })
        .filter(|(_, gone)| !gone.is_empty())
        .collect()
}

/// Which registered images (any state but deregistered) reference each snapshot.
pub fn snapshot_users(inventory: &Inventory) -> FxHashMap<&str, Vec<String>> {
    let mut users: FxHashMap<&str, Vec<String>> = FxHashMap::default();
    for i in inventory
        .images()
        .iter()
        .filter(|i| i.state != ImageState::Deregistered)
    {
        for s in &i.snapshots {
            users.entry(s.id.as_str()).or_default().push(i.id.clone());
        }
    }
    users
}

/// Decides every snapshot whose image is gone by [`crate::storage::fate`]. `in_bin` holds
/// the AMIs the Recycle Bin holds, with the instant each leaves it (ask it about
/// [`Reconciliation::images_to_check_in_bin`] after a first call with an empty map, then
/// call again).
pub fn reconcile(
    policy: &Policy,
    inventory: &Inventory,
    snapshots: &[Snapshot],
    in_bin: &FxHashMap<String, Option<Timestamp>>,
    now: Timestamp,
) -> Reconciliation {
    let registered: FxHashSet<&str> = inventory
        .images()
        .iter()
        .filter(|i| i.state != ImageState::Deregistered)
        .map(|i| i.id.as_str())
        .collect();
    let users = snapshot_users(inventory);
    let rules = Rules::of(policy, None);
    let which = policy.usage.launch_template_versions;
    let mut decisions = Vec::new();
    for s in snapshots {
        let (image_id, origin) = match s.tags.get(STORAGE_MARK) {
            Some(id) => (id, Origin::Marked),
            None => match image_named_by(&s.description) {
                Some(id) => (id, Origin::Foreign),
                None => continue,
            },
        };
        if registered.contains(image_id) {
            continue;
        }
        let facts = Facts {
            registered: users.get(s.id.as_str()).cloned().unwrap_or_default(),
            templates: inventory.usage.snapshot_users(&s.id, which),
            in_bin: named_images(s)
                .filter_map(|i| in_bin.get(i).map(|exit| (i.to_string(), *exit)))
                .collect(),
            restorable_if_deleted: inventory
                .recycle_bin
                .retention(BinResource::Snapshot, Some(&s.tags))
                .map(|d| crate::time::days_after(now, u64::from(d))),
        };
        let item = Item {
            kind: Kind::Snapshot,
            image_id,
            mapped: false,
            tags: &s.tags,
            tags_known: true,
            description: &s.description,
            born: s.start_time,
            bucket: None,
        };
        let decided = fate(&item, &facts, &rules, now);
        decisions.push(OrphanDecision {
            snapshot_id: s.id.clone(),
            image_id: image_id.to_string(),
            origin,
            size_gib: s.size_gib,
            action: action_of(decided.reason()),
            reason: decided.reason(),
            until: match decided {
                Fate::DeferUntil(t, _) => Some(t),
                _ => None,
            },
        });
    }
    decisions.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    Reconciliation {
        decisions,
        bundles: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Image, SnapshotRef, Usage};
    use crate::storage::{BACKUP_TAG, DLM_TAG};
    use crate::time::parse_instant;

    fn at(s: &str) -> Timestamp {
        parse_instant(s).unwrap()
    }

    fn snap(id: &str, description: &str, tags: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            id: id.into(),
            description: description.into(),
            start_time: Some(at("2026-01-01T00:00:00Z")),
            size_gib: Some(8),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            archived: false,
        }
    }

    fn policy(extra: &str) -> Policy {
        Policy::from_json(&format!(
            r#"{{"retention": {{"min_age_days": 30}}, "selection": {{"exclude_tags": {{"keep": "*"}}}}{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn descriptions_name_the_image_for_create_and_copy_only() {
        assert_eq!(
            image_named_by("Created by CreateImage(i-0abc) for ami-0123 from vol-9"),
            Some("ami-0123")
        );
        assert_eq!(
            image_named_by("Copied for DestinationAmi ami-0dst from SourceAmi ami-0src for SourceSnapshot snap-1. Task created on 1."),
            Some("ami-0dst")
        );
        for none in [
            "",
            "my backup",
            "Created by CreateImage(i-0abc) for ",
            "This snapshot is created by the AWS Backup service.",
            "Auto-created snapshot for AMI ami-1",
        ] {
            assert_eq!(image_named_by(none), None, "{none}");
        }
    }

    #[test]
    fn each_condition_keeps_a_snapshot_whose_image_is_gone() {
        let created = |ami: &str| format!("Created by CreateImage(i-1) for {ami}");
        let mut live = Image::new("ami-live", "live", at("2026-01-01T00:00:00Z"));
        live.snapshots.push(SnapshotRef {
            id: "snap-shared".into(),
            size_gib: Some(8),
        });
        let mut usage = Usage::new();
        usage.add_snapshot("snap-lt");
        let inventory = Inventory::new(vec![live], usage).unwrap();
        let snapshots = vec![
            snap("snap-live", &created("ami-live"), &[]),
            snap("snap-mine", "", &[(STORAGE_MARK, "ami-gone1")]),
            snap("snap-backup", &created("ami-gone2"), &[(BACKUP_TAG, "x")]),
            snap("snap-dlm", &created("ami-gone3"), &[(DLM_TAG, "p")]),
            snap("snap-kept", &created("ami-gone4"), &[("keep", "yes")]),
            snap("snap-shared", &created("ami-gone5"), &[]),
            snap("snap-lt", &created("ami-gone6"), &[]),
            snap("snap-bin", &created("ami-inbin"), &[]),
            snap("snap-foreign", &created("ami-gone7"), &[]),
            snap("snap-manual", "my backup", &[]),
        ];
        let in_bin: FxHashMap<String, Option<Timestamp>> =
            [("ami-inbin".to_string(), None)].into_iter().collect();
        let now = at("2026-11-26T00:00:00Z");
        let fate = |r: &Reconciliation| -> Vec<(String, Option<Keep>)> {
            r.decisions
                .iter()
                .map(|d| (d.snapshot_id.clone(), d.reason))
                .collect()
        };
        let off = reconcile(&policy(""), &inventory, &snapshots, &in_bin, now);
        let expected_off = vec![
            ("snap-backup".to_string(), Some(Keep::BackupManaged)),
            // Foreign with orphans off: kept by the policy before the bin is looked at.
            ("snap-bin".into(), Some(Keep::OrphansOff)),
            ("snap-dlm".into(), Some(Keep::DlmManaged)),
            ("snap-foreign".into(), Some(Keep::OrphansOff)),
            ("snap-kept".into(), Some(Keep::ExcludedByTag)),
            ("snap-lt".into(), Some(Keep::NamedByLaunchTemplate)),
            ("snap-mine".into(), None),
            ("snap-shared".into(), Some(Keep::UsedByOtherImage)),
        ];
        assert_eq!(fate(&off), expected_off);
        assert_eq!(off.count(Origin::Marked), (1, 8));
        assert_eq!(off.count(Origin::Foreign), (0, 0));

        let on = reconcile(
            &policy(r#", "cleanup": {"orphans": {"min_age_days": 30}}"#),
            &inventory,
            &snapshots,
            &in_bin,
            now,
        );
        let deleted: Vec<&str> = on.to_delete().map(|d| d.snapshot_id.as_str()).collect();
        let bin = on.decisions.iter().find(|d| d.snapshot_id == "snap-bin");
        assert_eq!(bin.unwrap().reason, Some(Keep::ImageInRecycleBin));
        assert_eq!(deleted, ["snap-foreign", "snap-mine"]);
        assert_eq!(on.count(Origin::Foreign), (1, 8));

        let young = reconcile(
            &policy(r#", "cleanup": {"orphans": {"min_age_days": 400}}"#),
            &inventory,
            &snapshots,
            &in_bin,
            now,
        );
        let foreign = young
            .decisions
            .iter()
            .find(|d| d.snapshot_id == "snap-foreign")
            .unwrap();
        assert_eq!(foreign.reason, Some(Keep::TooYoung));
        // The mark is ami-sweeper's own decision: no age applies.
        assert_eq!(young.count(Origin::Marked), (1, 8));

        let no_cleanup = reconcile(
            &policy(r#", "cleanup": {"snapshots": false}"#),
            &inventory,
            &snapshots,
            &in_bin,
            now,
        );
        assert_eq!(no_cleanup.to_delete().count(), 0);
    }

    #[test]
    fn bundles_nobody_launches_from_are_reclaimed_by_the_same_rules() {
        let mut live = Image::new("ami-live", "live", at("2026-01-01T00:00:00Z"));
        live.image_location = Some("bundles/live.manifest.xml".into());
        let inventory = Inventory::new(vec![live], Usage::new()).unwrap();
        let manifest = |key: &str, tags: &[(&str, &str)], modified: &str| Manifest {
            bucket: "bundles".into(),
            key: key.into(),
            last_modified: Some(at(modified)),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let listed = vec![
            manifest("live.manifest.xml", &[], "2026-01-01T00:00:00Z"),
            manifest(
                "mine.manifest.xml",
                &[(STORAGE_MARK, "ami-1")],
                "2026-11-25T00:00:00Z",
            ),
            manifest("old.manifest.xml", &[], "2025-01-01T00:00:00Z"),
            manifest("new.manifest.xml", &[], "2026-11-25T00:00:00Z"),
            manifest(
                "kept.manifest.xml",
                &[("keep", "1")],
                "2025-01-01T00:00:00Z",
            ),
        ];
        let unreferenced: Vec<Manifest> = unreferenced_manifests(&inventory, &listed)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(
            unreferenced.len(),
            4,
            "the live image's manifest is not a candidate"
        );
        let now = at("2026-11-26T00:00:00Z");
        let fate = |p: &Policy| -> Vec<(String, Option<Keep>)> {
            reconcile_bundles(p, &unreferenced, now)
                .into_iter()
                .map(|b| (b.manifest_key, b.reason))
                .collect()
        };
        assert_eq!(
            fate(&policy("")),
            vec![
                ("kept.manifest.xml".to_string(), Some(Keep::ExcludedByTag)),
                ("mine.manifest.xml".into(), None),
                ("new.manifest.xml".into(), Some(Keep::OrphansOff)),
                ("old.manifest.xml".into(), Some(Keep::OrphansOff)),
            ]
        );
        // Orphans on: a foreign bundle goes only from a bucket declared private (another
        // account may register from the others, unseen); a marked one goes either way.
        assert_eq!(
            fate(&policy(r#", "cleanup": {"orphans": {"min_age_days": 30}}"#)),
            vec![
                ("kept.manifest.xml".to_string(), Some(Keep::ExcludedByTag)),
                ("mine.manifest.xml".into(), None),
                ("new.manifest.xml".into(), Some(Keep::BucketNotPrivate)),
                ("old.manifest.xml".into(), Some(Keep::BucketNotPrivate)),
            ]
        );
        assert_eq!(
            fate(&policy(
                r#", "cleanup": {"orphans": {"min_age_days": 30},
                                  "private_bundle_buckets": ["bundles"]}"#
            )),
            vec![
                ("kept.manifest.xml".to_string(), Some(Keep::ExcludedByTag)),
                ("mine.manifest.xml".into(), None),
                ("new.manifest.xml".into(), Some(Keep::TooYoung)),
                ("old.manifest.xml".into(), None),
            ]
        );
    }

    #[test]
    fn a_deregistered_state_counts_as_gone_and_bin_checks_only_what_would_go() {
        let mut gone = Image::new("ami-1", "x", at("2026-01-01T00:00:00Z"));
        gone.state = ImageState::Deregistered;
        gone.snapshots.push(SnapshotRef {
            id: "snap-1".into(),
            size_gib: None,
        });
        let inventory = Inventory::new(vec![gone], Usage::new()).unwrap();
        let snapshots = vec![
            snap("snap-1", "", &[(STORAGE_MARK, "ami-1")]),
            snap("snap-2", "", &[(STORAGE_MARK, "ami-2"), ("keep", "1")]),
        ];
        let now = at("2026-11-26T00:00:00Z");
        let r = reconcile(
            &policy(""),
            &inventory,
            &snapshots,
            &FxHashMap::default(),
            now,
        );
        assert_eq!(r.to_delete().count(), 1);
        let check = r.images_to_check_in_bin(&snapshots);
        assert_eq!(check.len(), 1);
        assert!(check.contains("ami-1"));
    }
}
