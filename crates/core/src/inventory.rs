//! Everything the planner knows about one region: its images, their users, the Recycle
//! Bin's rules and the account's snapshots. Above [`crate::model`] (the ground floor) and
//! [`crate::recycle_bin`], so the model itself names no Recycle Bin or policy type.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Image, Tags, Timestamp, Usage};

/// Everything the planner knows about one region: its images and their users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    images: Vec<Image>,
    /// Which images are in use.
    pub usage: Usage,
    /// The region's Recycle Bin retention rules (empty: none, or not read).
    pub recycle_bin: crate::recycle_bin::BinRules,
    /// Tags of the account's snapshots, where listed: which snapshot rules retain them.
    pub snapshot_tags: FxHashMap<String, Tags>,
    /// `snapshot_tags` come from a listing of the account's snapshots (a live sweep, or
    /// `plan --snapshots`): a snapshot missing from it has unknown tags.
    pub snapshots_listed: bool,
    /// Per snapshot a registered image uses, the AMIs in the Recycle Bin its mark or
    /// description names, with the instant each leaves the bin (where the bin was asked).
    pub snapshots_in_bin: FxHashMap<String, Vec<(String, Option<Timestamp>)>>,
    /// The account's snapshots in the archive tier, where listed (for the saving estimate).
    pub archived_snapshots: FxHashSet<String>,
    /// Things the inventory could not establish (e.g. an unresolved `resolve:ssm:` id),
    /// carried into the plan so that users see them.
    pub warnings: Vec<String>,
}

/// The inventory broke an invariant the planner relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Two images with one id: the input is corrupt and no plan is safe.
    #[error("image {0} appears more than once in the inventory")]
    DuplicateImage(String),
}

impl Inventory {
    /// Builds an inventory; image ids must be unique.
    pub fn new(images: Vec<Image>, usage: Usage) -> Result<Self, InventoryError> {
        let mut seen = FxHashSet::default();
        seen.reserve(images.len());
        for image in &images {
            if !seen.insert(image.id.as_str()) {
                return Err(InventoryError::DuplicateImage(image.id.clone()));
            }
        }
        Ok(Self {
            images,
            usage,
            recycle_bin: Default::default(),
            snapshot_tags: FxHashMap::default(),
            snapshots_listed: false,
            snapshots_in_bin: FxHashMap::default(),
            archived_snapshots: FxHashSet::default(),
            warnings: Vec::new(),
        })
    }

    /// The images, in the order they were given.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// Records launch-permission grantees learnt after listing (image id → grantees).
    pub fn set_shared_with(&mut self, grants: BTreeMap<String, Vec<String>>) {
        for image in &mut self.images {
            if let Some(g) = grants.get(&image.id) {
                image.shared_with = g.clone();
            }
        }
    }
}
