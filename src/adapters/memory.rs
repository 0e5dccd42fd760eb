//! An in-memory account: every port over plain collections, behaving as EC2 and S3 do
//! where the application depends on it (a snapshot a registered image uses is in use; a
//! deregistered image is gone). The executor's and the worker's tests run on it, so they
//! say what they mean in a few lines; what is about the SDK's shapes and AWS's error codes
//! stays with the mocked SDK clients and the emulator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::AwsError;
use crate::jobs::CleanupJob;
use crate::model::{Image, Manifest, Snapshot, Tags, Usage, UsageRef};
use crate::orphans::STORAGE_MARK;
use crate::policy::UsageRules;
use crate::ports::{
    BundleInventory, BundleStore, CleanupSink, Deregistrar, ImageRetirer, ImageSource, JobFacts,
    RecycleBin, RecycleBinRules, ReferenceCheck, SnapshotDeleter, SnapshotSource, StorageMarker,
    UsageSource,
};

/// What the account holds.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Registered images by id.
    pub images: BTreeMap<String, Image>,
    /// Launch-permission grantees by image id (missing: none).
    pub launch_permissions: BTreeMap<String, Vec<String>>,
    /// What uses images.
    pub usage: Usage,
    /// Snapshots by id.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Deregistered images the Recycle Bin holds, with the instant each leaves it (`None`:
    /// not reported). With [`State::clock`] set, a deregistration puts an image a bin
    /// rule retains here, and an image whose instant has passed is no longer listed.
    pub recycle_bin: BTreeMap<String, Option<crate::model::Timestamp>>,
    /// The account's clock, for the Recycle Bin (`None`: images enter the bin only when a
    /// test puts them there).
    pub clock: Option<crate::model::Timestamp>,
    /// S3 objects by (bucket, key): bytes and tags.
    pub objects: BTreeMap<(String, String), (Vec<u8>, Tags)>,
    /// When objects were last written, where a test says (missing: not reported).
    pub modified: BTreeMap<(String, String), crate::model::Timestamp>,
    /// What AWS's reference check answers, by image id.
    pub references: BTreeMap<String, Vec<UsageRef>>,
    /// What Image Builder recipes use (the reference check's fallback).
    pub recipes: Usage,
    /// The region's Recycle Bin retention rules.
    pub bin_rules: crate::recycle_bin::BinRules,
    /// AWS's usage reports: image → account → users; an image missing: no report.
    pub usage_reports: BTreeMap<String, BTreeMap<String, u64>>,
    /// Snapshots launch template versions map (added to [`State::usage`] when read).
    pub template_snapshots: Vec<(String, crate::model::TemplateVersion)>,
    /// Deliberately wrong behaviours, for the tests that prove the storage property
    /// test catches each mistake.
    pub distortions: Distortions,
}

/// Deliberately wrong behaviours of the account's ports: each reproduces a mistake the
/// storage rules once made, so that a test can show the property test finds it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Distortions {
    /// Launch template snapshot mappings are left out of what every path reads: the
    /// sweep's usage listing and the worker's facts (the storage rules ignoring launch
    /// templates, in the plan and in every job's verification alike).
    pub hide_template_snapshots: bool,
    /// Every `delete-after` written for an image's snapshots is the first one written for
    /// that image (one date for all of an image's snapshots).
    pub one_delete_after_per_image: bool,
}

impl State {
    /// What launch templates and other users use, with the template snapshot mappings.
    fn usage_with_templates(&self) -> Usage {
        let mut u = self.usage.clone();
        for (snap, v) in &self.template_snapshots {
            u.add_snapshot_version(snap.clone(), v.clone());
        }
        u
    }
}

/// An injected failure: `operation` (e.g. `DeregisterImage`) fails with `error` for
/// `id` (or for every id when `None`), `times` times (`None`: always).
#[derive(Debug, Clone)]
struct Fault {
    operation: &'static str,
    id: Option<String>,
    error: AwsError,
    times: Option<u32>,
}

/// An account held in memory, with injected faults and a log of the calls that change
/// something (`DeregisterImage ami-1`, `CreateTags snap-1`, `DeleteSnapshot snap-1`,
/// `DeleteObjects bucket/key`, `Enqueue N`). Clones share the account, as two clients
/// of one AWS account do.
#[derive(Debug, Default, Clone)]
pub struct MemoryAccount(Arc<Inner>, Option<Arc<dyn crate::ports::PageMeter>>);

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<String>>,
    queued: Mutex<Vec<CleanupJob>>,
    /// The first `delete-after` written per image ([`Distortions`]).
    first_until: Mutex<BTreeMap<String, crate::model::Timestamp>>,
    buckets: Mutex<BTreeMap<&'static str, Bucket>>,
    /// Calls held before they are answered: (operation, how long, how many more times).
    holds: Mutex<Vec<(&'static str, std::time::Duration, u32)>>,
    /// Calls made so far of the operations that can be held, by operation.
    made: Mutex<BTreeMap<&'static str, u64>>,
}

/// An emulated EC2 token bucket (see [`MemoryAccount::throttle`]), on tokio's clock.
#[derive(Debug)]
struct Bucket {
    size: f64,
    per_second: f64,
    tokens: f64,
    last: tokio::time::Instant,
    throttled: u64,
}

impl MemoryAccount {
    /// An account holding `state`.
    pub fn new(state: State) -> Self {
        Self(
            Arc::new(Inner {
                state: Mutex::new(state),
                ..Inner::default()
            }),
            None,
        )
    }

    /// Makes `operation` fail with `code` for `id` (every id when `None`), every time.
    pub fn fail(&self, operation: &'static str, id: Option<&str>, code: &str) {
        self.fail_times(operation, id, code, None);
    }

    /// Makes `operation` fail with `code` for `id`, the next `times` times (`None`: always).
    pub fn fail_times(
        &self,
        operation: &'static str,
        id: Option<&str>,
        code: &str,
        times: Option<u32>,
    ) {
        self.0.faults.lock().unwrap().push(Fault {
            operation,
            id: id.map(str::to_string),
            error: AwsError::new(operation, code, "injected"),
            times,
        });
    }

    /// Puts `operation` behind a token bucket of `size` refilled at `per_second`, full at
    /// first, as EC2 does: an empty bucket answers `RequestLimitExceeded` and the refused
    /// call takes no token.
    pub fn throttle(&self, operation: &'static str, size: u32, per_second: f64) {
        self.0.buckets.lock().unwrap().insert(
            operation,
            Bucket {
                size: f64::from(size),
                per_second,
                tokens: f64::from(size),
                last: tokio::time::Instant::now(),
                throttled: 0,
            },
        );
    }

    /// Holds the next `times` calls of `operation` for `hold` (on tokio's clock) before
    /// they are answered: a slow read, answered with what the account holds by then.
    pub fn hold(&self, operation: &'static str, hold: std::time::Duration, times: u32) {
        self.0.holds.lock().unwrap().push((operation, hold, times));
    }

    /// Calls of `operation` made so far, answered or not, for the operations [`Self::hold`]
    /// can hold (`DescribeSnapshots`, `DescribeImages`, `GetObjectTagging`, `DeleteObjects`).
    pub fn calls(&self, operation: &str) -> u64 {
        self.0
            .made
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Counts a call of `operation`, then waits as long as a hold on it says, if one is left.
    async fn held(&self, operation: &'static str) {
        *self.0.made.lock().unwrap().entry(operation).or_default() += 1;
        let wait = {
            let mut holds = self.0.holds.lock().unwrap();
            let hit = holds
                .iter_mut()
                .find(|(op, _, times)| *op == operation && *times > 0);
            hit.map(|(_, d, times)| {
                *times -= 1;
                *d
            })
        };
        if let Some(d) = wait {
            tokio::time::sleep(d).await;
        }
    }

    /// Calls of `operation` its bucket refused so far.
    pub fn throttled(&self, operation: &str) -> u64 {
        self.0
            .buckets
            .lock()
            .unwrap()
            .get(operation)
            .map_or(0, |b| b.throttled)
    }

    /// Takes a token from `operation`'s bucket, if it has one.
    fn take_token(&self, operation: &'static str) -> Result<(), AwsError> {
        let mut buckets = self.0.buckets.lock().unwrap();
        let Some(b) = buckets.get_mut(operation) else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.per_second).min(b.size);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            b.throttled += 1;
            Err(AwsError::new(
                operation,
                "RequestLimitExceeded",
                "Request limit exceeded.",
            ))
        }
    }

    /// A copy of what the account holds now.
    pub fn state(&self) -> State {
        self.0.state.lock().unwrap().clone()
    }

    /// Changes what the account holds (e.g. an image gains a user mid-test).
    pub fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.0.state.lock().unwrap());
    }

    /// The calls that changed something, in order.
    pub fn log(&self) -> Vec<String> {
        self.0.log.lock().unwrap().clone()
    }

    /// The cleanup jobs handed to this account as a [`CleanupSink`], in order.
    pub fn queued(&self) -> Vec<CleanupJob> {
        self.0.queued.lock().unwrap().clone()
    }

    fn record(&self, entry: String) {
        self.0.log.lock().unwrap().push(entry);
    }

    /// The injected failure for this call, if any (and uses one of its times).
    fn fault(&self, operation: &'static str, id: &str) -> Result<(), AwsError> {
        self.take_token(operation)?;
        let mut faults = self.0.faults.lock().unwrap();
        let hit = faults.iter_mut().find(|f| {
            f.operation == operation
                && f.id.as_deref().is_none_or(|i| i == id)
                && f.times != Some(0)
        });
        match hit {
            Some(f) => {
                if let Some(t) = &mut f.times {
                    *t -= 1;
                }
                Err(f.error.clone())
            }
            None => Ok(()),
        }
    }

    fn snapshot_in_use(state: &State, snapshot_id: &str) -> bool {
        state
            .images
            .values()
            .any(|i| i.snapshots.iter().any(|s| s.id == snapshot_id))
    }
}

fn gone(operation: &'static str, code: &str, id: &str) -> AwsError {
    AwsError::new(operation, code, format!("{id} does not exist"))
}

impl crate::ports::MeteredListings for MemoryAccount {
    /// The same account, each listing (one page here) one call under `meter`, as the
    /// EC2 adapter's are.
    fn metered(&self, meter: Arc<dyn crate::ports::PageMeter>) -> Self {
        Self(self.0.clone(), Some(meter))
    }
}

impl MemoryAccount {
    /// A listing: under the meter when metered (a throttle is retried there).
    async fn listing<T: Send>(
        &self,
        operation: &'static str,
        read: impl Fn() -> Result<T, AwsError> + Send + Sync,
    ) -> Result<T, AwsError> {
        let read = &read;
        crate::ports::under_meter(self.1.as_deref(), operation, || async move { read() }).await
    }
}

impl ImageSource for MemoryAccount {
    async fn list_images(&self) -> Result<Vec<Image>, AwsError> {
        self.listing("DescribeImages", || {
            self.fault("DescribeImages", "")?;
            let state = self.0.state.lock().unwrap();
            Ok(state.images.values().cloned().collect())
        })
        .await
    }

    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<String>, AwsError> {
        self.fault("DescribeImageAttribute", image_id)?;
        let state = self.0.state.lock().unwrap();
        if !state.images.contains_key(image_id) {
            return Err(gone(
                "DescribeImageAttribute",
                "InvalidAMIID.NotFound",
                image_id,
            ));
        }
        Ok(state
            .launch_permissions
            .get(image_id)
            .cloned()
            .unwrap_or_default())
    }
}

impl UsageSource for MemoryAccount {
    async fn list_usage(&self, _rules: &UsageRules) -> Result<(Usage, Vec<String>), AwsError> {
        self.listing("DescribeInstances", || {
            self.fault("DescribeInstances", "")?;
            let state = self.0.state.lock().unwrap();
            let usage = if state.distortions.hide_template_snapshots {
                state.usage.clone()
            } else {
                state.usage_with_templates()
            };
            Ok((usage, Vec::new()))
        })
        .await
    }
}

impl ReferenceCheck for MemoryAccount {
    async fn image_references(
        &self,
        image_ids: &[String],
        _templates: bool,
    ) -> Result<Vec<(String, UsageRef)>, AwsError> {
        assert!(image_ids.len() <= crate::ports::REFERENCE_IDS_PER_CALL);
        self.fault("DescribeImageReferences", "")?;
        let state = self.0.state.lock().unwrap();
        Ok(image_ids
            .iter()
            .flat_map(|id| {
                let users = state.references.get(id).cloned().unwrap_or_default();
                users.into_iter().map(move |u| (id.clone(), u))
            })
            .collect())
    }

    async fn recipe_parents(&self) -> Result<Usage, AwsError> {
        self.fault("ListImageRecipes", "")?;
        Ok(self.0.state.lock().unwrap().recipes.clone())
    }

    async fn usage_report(
        &self,
        image_id: &str,
        _accounts: &[String],
    ) -> Option<BTreeMap<String, u64>> {
        self.0
            .state
            .lock()
            .unwrap()
            .usage_reports
            .get(image_id)
            .cloned()
    }
}

impl RecycleBinRules for MemoryAccount {
    async fn bin_rules(&self) -> Result<crate::recycle_bin::BinRules, AwsError> {
        self.fault("ListRules", "")?;
        Ok(self.0.state.lock().unwrap().bin_rules.clone())
    }
}

impl ImageRetirer for MemoryAccount {
    async fn retire(
        &self,
        image_id: &str,
        step: crate::retire::RetireStep,
        now: crate::model::Timestamp,
    ) -> Result<(), AwsError> {
        use crate::retire::RetireStep;
        let name = match step {
            RetireStep::Deprecate => "EnableImageDeprecation",
            RetireStep::Disable { .. } => "DisableImage",
            RetireStep::Enable { disabled: true, .. } => "EnableImage",
            RetireStep::Enable {
                deprecated: true, ..
            } => "DisableImageDeprecation",
            RetireStep::Enable { .. } => "DeleteTags",
        };
        self.fault(name, image_id)?;
        let mut state = self.0.state.lock().unwrap();
        let Some(img) = state.images.get_mut(image_id) else {
            return Err(gone(name, "InvalidAMIID.NotFound", image_id));
        };
        crate::retire::take_step(img, step, now);
        if matches!(step, RetireStep::Disable { .. }) {
            state.launch_permissions.remove(image_id);
        }
        drop(state);
        self.record(format!("{name} {image_id}"));
        Ok(())
    }
}

impl Deregistrar for MemoryAccount {
    async fn deregister(&self, image_id: &str) -> Result<(), AwsError> {
        self.fault("DeregisterImage", image_id)?;
        let mut state = self.0.state.lock().unwrap();
        let removed = state.images.remove(image_id);
        if let (Some(img), Some(now)) = (&removed, state.clock) {
            let kind = crate::recycle_bin::BinResource::Image;
            if let Some(days) = state.bin_rules.retention(kind, Some(&img.tags)) {
                let exit = crate::time::days_after(now, u64::from(days));
                state.recycle_bin.insert(image_id.to_string(), Some(exit));
            }
        }
        drop(state);
        match removed {
            Some(_) => {
                self.record(format!("DeregisterImage {image_id}"));
                Ok(())
            }
            None => Err(gone(
                "DeregisterImage",
                "InvalidAMIID.Unavailable",
                image_id,
            )),
        }
    }
}

impl SnapshotSource for MemoryAccount {
    async fn list_snapshots(&self) -> Result<Vec<Snapshot>, AwsError> {
        self.listing("DescribeSnapshots", || {
            self.fault("DescribeSnapshots", "")?;
            let state = self.0.state.lock().unwrap();
            Ok(state.snapshots.values().cloned().collect())
        })
        .await
    }
}

impl RecycleBin for MemoryAccount {
    async fn images_in_recycle_bin(
        &self,
        image_ids: &FxHashSet<String>,
    ) -> Result<FxHashMap<String, Option<crate::model::Timestamp>>, AwsError> {
        self.listing("ListImagesInRecycleBin", || {
            self.fault("ListImagesInRecycleBin", "")?;
            let state = self.0.state.lock().unwrap();
            Ok(state
                .recycle_bin
                .iter()
                .filter(|(i, exit)| {
                    image_ids.contains(*i)
                        && state.clock.is_none_or(|now| exit.is_none_or(|t| t > now))
                })
                .map(|(i, exit)| (i.clone(), *exit))
                .collect())
        })
        .await
    }
}

impl StorageMarker for MemoryAccount {
    async fn mark_snapshots(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        delete_after: Option<crate::model::Timestamp>,
    ) -> Result<(), AwsError> {
        self.fault("CreateTags", image_id)?;
        let mut state = self.0.state.lock().unwrap();
        let delete_after = match delete_after {
            Some(t) if state.distortions.one_delete_after_per_image => {
                let mut first = self.0.first_until.lock().unwrap();
                Some(*first.entry(image_id.to_string()).or_insert(t))
            }
            other => other,
        };
        if let Some(missing) = snapshot_ids
            .iter()
            .find(|s| !state.snapshots.contains_key(*s))
        {
            return Err(gone("CreateTags", "InvalidSnapshot.NotFound", missing));
        }
        for id in snapshot_ids {
            let snap = state.snapshots.get_mut(id).expect("checked above");
            snap.tags.insert(STORAGE_MARK, image_id);
            if let Some(t) = delete_after {
                snap.tags.insert(
                    crate::recycle_bin::DELETE_AFTER,
                    crate::time::format_instant(t),
                );
            }
        }
        drop(state);
        self.record(format!("CreateTags {}", snapshot_ids.join(",")));
        Ok(())
    }

    async fn defer_snapshots(
        &self,
        snapshot_ids: &[String],
        delete_after: crate::model::Timestamp,
    ) -> Result<(), AwsError> {
        self.fault("CreateTags", "")?;
        let mut state = self.0.state.lock().unwrap();
        for id in snapshot_ids {
            let Some(snap) = state.snapshots.get_mut(id) else {
                return Err(gone("CreateTags", "InvalidSnapshot.NotFound", id));
            };
            snap.tags.insert(
                crate::recycle_bin::DELETE_AFTER,
                crate::time::format_instant(delete_after),
            );
        }
        drop(state);
        self.record(format!(
            "CreateTags {} (delete-after)",
            snapshot_ids.join(",")
        ));
        Ok(())
    }
}

impl BundleInventory for MemoryAccount {
    async fn list_manifests(&self, bucket: &str) -> Result<Vec<Manifest>, AwsError> {
        self.fault("ListObjectsV2", bucket)?;
        let state = self.0.state.lock().unwrap();
        Ok(state
            .objects
            .keys()
            .filter(|(b, k)| b == bucket && k.ends_with(".manifest.xml"))
            .map(|(b, k)| Manifest {
                bucket: b.clone(),
                key: k.clone(),
                last_modified: state.modified.get(&(b.clone(), k.clone())).copied(),
                tags: Tags::new(),
            })
            .collect())
    }

    async fn object_tags(&self, bucket: &str, key: &str) -> Result<Tags, AwsError> {
        self.held("GetObjectTagging").await;
        self.fault("GetObjectTagging", key)?;
        let state = self.0.state.lock().unwrap();
        match state.objects.get(&(bucket.to_string(), key.to_string())) {
            Some((_, tags)) => Ok(tags.clone()),
            None => Err(gone("GetObjectTagging", "NoSuchKey", key)),
        }
    }

    async fn manifest_modified(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<crate::model::Timestamp>, AwsError> {
        self.fault("HeadObject", key)?;
        let state = self.0.state.lock().unwrap();
        Ok(state
            .modified
            .get(&(bucket.to_string(), key.to_string()))
            .copied())
    }

    async fn mark_manifest(&self, bucket: &str, key: &str, image_id: &str) -> Result<(), AwsError> {
        self.fault("PutObjectTagging", key)?;
        let mut state = self.0.state.lock().unwrap();
        match state
            .objects
            .get_mut(&(bucket.to_string(), key.to_string()))
        {
            Some((_, tags)) => tags.insert(STORAGE_MARK, image_id),
            None => return Err(gone("PutObjectTagging", "NoSuchKey", key)),
        }
        drop(state);
        self.record(format!("PutObjectTagging {bucket}/{key}"));
        Ok(())
    }
}

impl SnapshotDeleter for MemoryAccount {
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.fault("DeleteSnapshot", snapshot_id)?;
        let mut state = self.0.state.lock().unwrap();
        if Self::snapshot_in_use(&state, snapshot_id) {
            return Err(AwsError::new(
                "DeleteSnapshot",
                "InvalidSnapshot.InUse",
                format!("{snapshot_id} is in use by a registered image"),
            ));
        }
        if state.snapshots.remove(snapshot_id).is_none() {
            return Err(gone(
                "DeleteSnapshot",
                "InvalidSnapshot.NotFound",
                snapshot_id,
            ));
        }
        drop(state);
        self.record(format!("DeleteSnapshot {snapshot_id}"));
        Ok(())
    }
}

impl BundleStore for MemoryAccount {
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, AwsError> {
        self.fault("GetObject", key)?;
        let state = self.0.state.lock().unwrap();
        match state.objects.get(&(bucket.to_string(), key.to_string())) {
            Some((bytes, _)) => Ok(bytes.clone()),
            None => Err(gone("GetObject", "NoSuchKey", key)),
        }
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<(String, AwsError)>, AwsError> {
        self.held("DeleteObjects").await;
        self.fault("DeleteObjects", bucket)?;
        let mut failed = Vec::new();
        for key in keys {
            if let Err(e) = self.fault("DeleteObject", key) {
                failed.push((key.clone(), e));
                continue;
            }
            // S3 answers a missing key as deleted.
            self.0
                .state
                .lock()
                .unwrap()
                .objects
                .remove(&(bucket.to_string(), key.clone()));
            self.record(format!("DeleteObjects {bucket}/{key}"));
        }
        Ok(failed)
    }
}

impl JobFacts for MemoryAccount {
    async fn owned_snapshots(&self, snapshot_ids: &[String]) -> Result<Vec<Snapshot>, AwsError> {
        self.held("DescribeSnapshots").await;
        self.fault("DescribeSnapshots", "")?;
        let state = self.0.state.lock().unwrap();
        Ok(snapshot_ids
            .iter()
            .filter_map(|id| state.snapshots.get(id).cloned())
            .collect())
    }

    async fn registered_images(&self, image_ids: &[String]) -> Result<FxHashSet<String>, AwsError> {
        self.held("DescribeImages").await;
        self.fault("DescribeImages", "")?;
        let state = self.0.state.lock().unwrap();
        Ok(image_ids
            .iter()
            .filter(|id| state.images.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn images_using_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<Image>, AwsError> {
        self.held("DescribeImages").await;
        self.fault("DescribeImages", "block-device-mapping.snapshot-id")?;
        let state = self.0.state.lock().unwrap();
        Ok(state
            .images
            .values()
            .filter(|i| i.snapshots.iter().any(|s| snapshot_ids.contains(&s.id)))
            .cloned()
            .collect())
    }

    async fn template_snapshots(&self) -> Result<Usage, AwsError> {
        self.fault("DescribeLaunchTemplateVersions", "")?;
        let state = self.0.state.lock().unwrap();
        Ok(match state.distortions.hide_template_snapshots {
            true => state.usage.clone(),
            false => state.usage_with_templates(),
        })
    }
}

/// The account doubles as its own cleanup queue: jobs are kept, in order, for
/// [`MemoryAccount::queued`]; `Enqueue` faults refuse a whole batch.
impl CleanupSink for MemoryAccount {
    fn batch_size(&self) -> usize {
        10
    }

    async fn check(&self) -> Result<(), AwsError> {
        self.fault("GetQueueAttributes", "")
    }

    async fn enqueue(&self, jobs: Vec<CleanupJob>) -> Vec<(CleanupJob, AwsError)> {
        if let Err(e) = self.fault("SendMessageBatch", "") {
            return jobs.into_iter().map(|j| (j, e.clone())).collect();
        }
        self.record(format!("Enqueue {}", jobs.len()));
        self.0.queued.lock().unwrap().extend(jobs);
        Vec::new()
    }
}
