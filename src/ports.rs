//! The narrow interfaces the sweep needs from AWS. The executor and the worker are
//! written against these; `crate::adapters::aws` implements them with the SDK,
//! `crate::adapters::memory` in memory for tests.

use std::future::Future;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::AwsError;
use crate::jobs::CleanupJob;
use crate::model::{Image, Manifest, Snapshot, Tags, Timestamp, Usage, UsageRef};
use crate::policy::UsageRules;
use crate::recycle_bin::BinRules;
use crate::retire::RetireStep;

/// Lists the account's own images in one region.
pub trait ImageSource: Sync {
    /// Every image the account owns, disabled ones included, across all pages.
    fn list_images(&self) -> impl Future<Output = Result<Vec<Image>, AwsError>> + Send;

    /// Launch-permission grantees other than the owner (accounts, organizations, OUs;
    /// `all` for public), for one image.
    fn launch_permissions(
        &self,
        image_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
}

/// Finds what uses images: instances, launch template versions, launch configurations,
/// SSM parameters, fleets, Auto Scaling groups, Batch compute environments.
pub trait UsageSource: Sync {
    /// Usage and warnings (e.g. a `resolve:ssm:` parameter that could not be read).
    fn list_usage(
        &self,
        rules: &UsageRules,
    ) -> impl Future<Output = Result<(Usage, Vec<String>), AwsError>> + Send;
}

/// `DescribeImageReferences` takes at most this many image ids per request.
pub const REFERENCE_IDS_PER_CALL: usize = 10;

/// AWS's own answer to "what references these images", asked for the condemned images
/// only, and the source that stands in for part of it where it is missing.
pub trait ReferenceCheck: Sync {
    /// The users of these images (at most ten ids; all pages). Launch templates are asked
    /// about only with `templates` (otherwise the policy judges their versions itself).
    fn image_references(
        &self,
        image_ids: &[String],
        templates: bool,
    ) -> impl Future<Output = Result<Vec<(String, UsageRef)>, AwsError>> + Send;

    /// Image Builder image recipes' parent images: used where the check is not available.
    fn recipe_parents(&self) -> impl Future<Output = Result<Usage, AwsError>> + Send;

    /// AWS's usage report for a shared image (`CreateImageUsageReport`, then its entries):
    /// how many instances and launch templates each of `accounts` has using it. `None`
    /// when no report could be had in time (or at all): the caller looks for itself.
    fn usage_report(
        &self,
        image_id: &str,
        accounts: &[String],
    ) -> impl Future<Output = Option<std::collections::BTreeMap<String, u64>>> + Send;
}

/// Deregisters images.
pub trait Deregistrar: Sync {
    /// Deregisters one image (never its snapshots: the queue deletes those).
    fn deregister(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Accepts cleanup jobs for later execution. The sweep hands jobs over while it
/// deregisters, in batches of up to `batch_size`, so a local worker can start at once.
pub trait CleanupSink: Sync {
    /// Jobs worth collecting before one `enqueue` call (SQS takes 10 per request).
    fn batch_size(&self) -> usize {
        1
    }

    /// Checks that jobs can be queued at all, before anything is deregistered: a sweep
    /// must never deregister what it cannot then clean up.
    fn check(&self) -> impl Future<Output = Result<(), AwsError>> + Send {
        async { Ok(()) }
    }

    /// Queues the jobs; returns the ones that could not be queued, with the error.
    fn enqueue(
        &self,
        jobs: Vec<CleanupJob>,
    ) -> impl Future<Output = Vec<(CleanupJob, AwsError)>> + Send;
}

/// Deletes EBS snapshots.
pub trait SnapshotDeleter: Sync {
    /// Deletes one snapshot.
    fn delete_snapshot(
        &self,
        snapshot_id: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Reads and deletes S3 objects of instance-store bundles.
pub trait BundleStore: Sync {
    /// The object's bytes.
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Vec<u8>, AwsError>> + Send;

    /// Deletes exactly these keys; returns the keys that failed, with their errors.
    fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<(String, AwsError)>, AwsError>> + Send;
}

/// Lists the account's snapshots: what reconciliation looks at.
pub trait SnapshotSource: Sync {
    /// Every snapshot the account owns, across all pages (one pass per region).
    fn list_snapshots(&self) -> impl Future<Output = Result<Vec<Snapshot>, AwsError>> + Send;
}

/// Asks the Recycle Bin which images it holds.
pub trait RecycleBin: Sync {
    /// Those of `image_ids` that are in the Recycle Bin (restorable), with the instant each
    /// leaves it (`None`: not reported).
    fn images_in_recycle_bin(
        &self,
        image_ids: &FxHashSet<String>,
    ) -> impl Future<Output = Result<FxHashMap<String, Option<Timestamp>>, AwsError>> + Send;
}

/// Writes the write-ahead mark on an image's storage before the image is deregistered.
pub trait StorageMarker: Sync {
    /// Tags the snapshots with [`crate::orphans::STORAGE_MARK`] = `image_id` and, for
    /// snapshots that must wait for the image to leave the Recycle Bin,
    /// [`crate::recycle_bin::DELETE_AFTER`] = `delete_after`, in one request.
    fn mark_snapshots(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        delete_after: Option<Timestamp>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Tags snapshots another image keeps with [`crate::recycle_bin::DELETE_AFTER`] only:
    /// the instant a restore of the image entering the Recycle Bin no longer needs them.
    fn defer_snapshots(
        &self,
        snapshot_ids: &[String],
        delete_after: Timestamp,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Takes an image through the retirement stages.
pub trait ImageRetirer: Sync {
    /// Deprecates, disables (tag first) or enables the image; `now` is what the tags record.
    fn retire(
        &self,
        image_id: &str,
        step: RetireStep,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Reads the region's Recycle Bin retention rules.
pub trait RecycleBinRules: Sync {
    /// Every available rule for AMIs and snapshots, with its tags (all pages).
    fn bin_rules(&self) -> impl Future<Output = Result<BinRules, AwsError>> + Send;
}

/// What the cleanup worker asks AWS before it deletes (one call each per message batch).
pub trait JobFacts: Sync {
    /// Those of `snapshot_ids` that exist and the account owns.
    fn owned_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> impl Future<Output = Result<Vec<Snapshot>, AwsError>> + Send;

    /// Those of `image_ids` that are registered (in any state but `deregistered`).
    fn registered_images(
        &self,
        image_ids: &[String],
    ) -> impl Future<Output = Result<FxHashSet<String>, AwsError>> + Send;

    /// The registered images (any state but `deregistered`, disabled included) whose block
    /// device mappings reference any of `snapshot_ids` (`DescribeImages` filtered by
    /// `block-device-mapping.snapshot-id`).
    fn images_using_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> impl Future<Output = Result<Vec<Image>, AwsError>> + Send;

    /// The snapshots launch template versions map, with the versions (every template,
    /// every version).
    fn template_snapshots(&self) -> impl Future<Output = Result<Usage, AwsError>> + Send;
}

/// Instance-store bundle manifests in the deployment's bundle buckets: listed for
/// reconciliation, and marked before their image is deregistered.
pub trait BundleInventory: Sync {
    /// Every `*.manifest.xml` object of the bucket (all pages), without tags.
    fn list_manifests(
        &self,
        bucket: &str,
    ) -> impl Future<Output = Result<Vec<Manifest>, AwsError>> + Send;

    /// One object's tags.
    fn object_tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Tags, AwsError>> + Send;

    /// When the object was last written (`HeadObject`): a foreign manifest's age.
    fn manifest_modified(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Timestamp>, AwsError>> + Send;

    /// Adds [`crate::orphans::STORAGE_MARK`] = `image_id` to the manifest's tags (keeping
    /// the others).
    fn mark_manifest(
        &self,
        bucket: &str,
        key: &str,
        image_id: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Meters the pages of the inventory's EC2 listings on the Describe bucket: the
/// (account, Region)'s pacer (`crate::app::ratelimit::Pacer`), so that listings, lookups
/// and reference checks draw on one share of the bucket.
pub trait PageMeter: Send + Sync + std::fmt::Debug {
    /// Waits for the token of one page of `operation`; `Err` (code `Stopped`) when the
    /// run stops first, and the listing is then incomplete.
    fn page(
        &self,
        operation: &'static str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send + '_>>;

    /// Makes `attempt` (a whole listing) as the pacer makes its own calls: a token first;
    /// a throttled attempt slows the meter and is made again after a jittered delay,
    /// until the run stops (then code `Throttled`). See [`under_meter`].
    fn call<'a>(
        &'a self,
        operation: &'static str,
        attempt: MeteredAttempt<'a>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send + 'a>>;
}

/// One attempt at a metered listing; its answer is kept by the caller ([`under_meter`]).
pub type MeteredAttempt<'a> = Box<
    dyn FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send + 'a>>
        + Send
        + 'a,
>;

/// A whole listing, under `meter` when there is one (its retries, not the SDK's: an
/// adapter lists through a client without them then), else made once as it is.
pub async fn under_meter<'a, T, F, Fut>(
    meter: Option<&'a dyn PageMeter>,
    operation: &'static str,
    list: F,
) -> Result<T, AwsError>
where
    F: Fn() -> Fut + Send + Sync + 'a,
    Fut: Future<Output = Result<T, AwsError>> + Send + 'a,
    T: Send + 'a,
{
    let Some(meter) = meter else {
        return list().await;
    };
    let answer = std::sync::Mutex::new(None);
    let (slot, list) = (&answer, &list);
    let attempt: MeteredAttempt<'_> = Box::new(move || {
        Box::pin(async move {
            let v = list().await?;
            *slot.lock().expect("listing answer lock") = Some(v);
            Ok(())
        })
    });
    meter.call(operation, attempt).await?;
    let answer = answer.into_inner().expect("listing answer lock");
    Ok(answer.expect("a listing that succeeded left its answer"))
}

/// Listings that can be metered page by page.
pub trait MeteredListings: Sized {
    /// The same account, its EC2 listings metered by `meter`.
    fn metered(&self, meter: std::sync::Arc<dyn PageMeter>) -> Self;

    /// The same account, the reads of its other services' usage sources metered each by
    /// its own (account, Region, service) pacer. An account without such sources (the
    /// in-memory one) is unchanged.
    fn service_metered(self, _meters: &ServiceMeters) -> Self {
        self
    }
}

/// The pacers of the usage sources other than EC2, one per service, for one
/// (account, Region): each starts conservative and slows on its service's throttling.
#[derive(Clone, Debug)]
pub struct ServiceMeters {
    /// CloudFormation's (`DescribeStacks`, `GetTemplate`).
    pub cloudformation: std::sync::Arc<dyn PageMeter>,
    /// EMR's (`ListClusters`, `DescribeCluster`, groups, fleets).
    pub emr: std::sync::Arc<dyn PageMeter>,
}

/// Everything a sweep of one region needs from the account, as one value (the SDK's
/// region clients, or a test's fake).
pub trait Account:
    MeteredListings
    + ImageSource
    + UsageSource
    + ReferenceCheck
    + Deregistrar
    + SnapshotSource
    + RecycleBin
    + RecycleBinRules
    + ImageRetirer
    + StorageMarker
    + BundleInventory
{
}

impl<T> Account for T where
    T: MeteredListings
        + ImageSource
        + UsageSource
        + ReferenceCheck
        + Deregistrar
        + SnapshotSource
        + RecycleBin
        + RecycleBinRules
        + ImageRetirer
        + StorageMarker
        + BundleInventory
{
}

/// What the cleanup worker needs in one region: the facts it verifies each job against
/// (images, snapshots, the Recycle Bin and its rules, launch templates, manifests' tags)
/// and the deleters that run it.
pub trait Cleaner:
    ImageSource
    + JobFacts
    + SnapshotDeleter
    + BundleStore
    + RecycleBin
    + RecycleBinRules
    + BundleInventory
{
}

impl<T> Cleaner for T where
    T: ImageSource
        + JobFacts
        + SnapshotDeleter
        + BundleStore
        + RecycleBin
        + RecycleBinRules
        + BundleInventory
{
}
