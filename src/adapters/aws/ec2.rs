//! EC2: images, launch permissions, deregistration, usage by instances and launch
//! templates, snapshot deletion.

use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, ImageAttributeName, PermissionGroup, Tag};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::adapters::aws::meter::Meter;
use crate::adapters::aws::ApiCalls;
use crate::error::{from_sdk, AwsError};
use crate::fields::{
    fleet_is_live, instance_user, reference_user, spot_fleet_is_live, spot_request_user, user,
    RawImage, TemplateImage,
};
use crate::model::{Image, Snapshot, TemplateVersion, Usage, UsageKind, UsageRef};
use crate::orphans::STORAGE_MARK;
use crate::ports::{
    Deregistrar, ImageSource, JobFacts, RecycleBin, SnapshotDeleter, SnapshotSource, StorageMarker,
};
use crate::recycle_bin::DELETE_AFTER;

/// `ListImagesInRecycleBin`'s largest page.
const RECYCLE_BIN_PAGE: i32 = 1000;
/// `CreateTags` takes at most this many resources per request.
const TAG_RESOURCES_PER_CALL: usize = 1000;

/// The EC2 adapter.
#[derive(Clone, Debug)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    /// The same client without the SDK's retries, for the calls the application paces
    /// (`crate::app::ratelimit::Pacer`): the pacer retries them, and must see each
    /// throttle to slow down.
    paced: aws_sdk_ec2::Client,
    calls: Arc<ApiCalls>,
    /// Meters the listings' pages (the sweep's Describe pacer), when set.
    meter: Meter,
}

/// A launch template version whose image id is an SSM parameter, to resolve later.
#[derive(Debug, Clone)]
pub struct SsmRef {
    /// The parameter name (after `resolve:ssm:`).
    pub parameter: String,
    /// The launch template version that uses it.
    pub user: TemplateVersion,
}

/// EC2's tags as key-value pairs (a missing key or value is the empty string).
fn tags_of(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn raw_image(img: &aws_sdk_ec2::types::Image) -> RawImage {
    RawImage {
        image_id: img.image_id().unwrap_or_default().to_string(),
        name: img.name().map(str::to_string),
        creation_date: img.creation_date().map(str::to_string),
        state: img.state().map(|s| s.as_str().to_string()),
        tags: tags_of(img.tags()),
        public: img.public().unwrap_or(false),
        deregistration_protection: img.deregistration_protection().map(str::to_string),
        last_launched_time: img.last_launched_time().map(str::to_string),
        root_device_type: img.root_device_type().map(|d| d.as_str().to_string()),
        image_location: img.image_location().map(str::to_string),
        snapshots: img
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs())
            .filter_map(|e| {
                e.snapshot_id().map(|s| {
                    (
                        s.to_string(),
                        e.volume_size().and_then(|v| u64::try_from(v).ok()),
                    )
                })
            })
            .collect(),
        attributes: crate::model::ImageAttributes {
            description: img.description().map(str::to_string),
            architecture: img.architecture().map(|a| a.as_str().to_string()),
            platform: img.platform().map(|p| p.as_str().to_string()),
            virtualization: img.virtualization_type().map(|v| v.as_str().to_string()),
            boot_mode: img.boot_mode().map(|b| b.as_str().to_string()),
            image_type: img.image_type().map(|t| t.as_str().to_string()),
            source_image_id: img.source_image_id().map(str::to_string),
            source_region: img.source_image_region().map(str::to_string),
        },
    }
}

impl Ec2 {
    /// Wraps a client; every call is counted in `calls`.
    pub fn new(client: aws_sdk_ec2::Client, calls: Arc<ApiCalls>) -> Self {
        let once = aws_sdk_ec2::config::retry::RetryConfig::disabled();
        let paced =
            aws_sdk_ec2::Client::from_conf(client.config().to_builder().retry_config(once).build());
        Self {
            client,
            paced,
            calls,
            meter: Meter::default(),
        }
    }

    /// The same adapter, its listings' pages metered by `meter`.
    pub fn metered(&self, meter: Arc<dyn crate::ports::PageMeter>) -> Self {
        Self {
            meter: Meter::on(meter),
            ..self.clone()
        }
    }

    /// The client a listing's pages go through: without the SDK's retries when metered
    /// (the meter retries the listing), with them otherwise.
    fn listing_client(&self) -> &aws_sdk_ec2::Client {
        if self.meter.is_set() {
            &self.paced
        } else {
            &self.client
        }
    }

    /// Images used by instances in any state but terminated (all pages).
    pub async fn instance_usage(&self) -> Result<Usage, AwsError> {
        self.meter
            .whole("DescribeInstances", || self.instance_pages())
            .await
    }

    async fn instance_pages(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .listing_client()
            .describe_instances()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeInstances");
            let resp = page.map_err(|e| from_sdk("DescribeInstances", e))?;
            self.meter
                .page("DescribeInstances", resp.next_token().is_some())
                .await?;
            for inst in resp.reservations().iter().flat_map(|r| r.instances()) {
                let state = inst
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default();
                if let (Some(image), Some(user)) = (
                    inst.image_id(),
                    instance_user(inst.instance_id().unwrap_or("instance"), &state),
                ) {
                    usage.add(image, user);
                }
            }
        }
        Ok(usage)
    }

    /// Images named by any version of any launch template; `resolve:ssm:` ids are
    /// returned for the SSM adapter to resolve.
    pub async fn launch_template_usage(&self) -> Result<(Usage, Vec<SsmRef>), AwsError> {
        self.meter
            .whole("DescribeLaunchTemplates", || {
                let client = self.listing_client();
                self.launch_template_pages(client, client)
            })
            .await
    }

    /// Every launch template's versions: the templates listed through `list`, each
    /// template's versions read through `versions`.
    async fn launch_template_pages(
        &self,
        list: &aws_sdk_ec2::Client,
        versions: &aws_sdk_ec2::Client,
    ) -> Result<(Usage, Vec<SsmRef>), AwsError> {
        let mut usage = Usage::new();
        let mut refs = Vec::new();
        let mut templates = Vec::new();
        let mut pages = list
            .describe_launch_templates()
            .max_results(200)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeLaunchTemplates");
            let resp = page.map_err(|e| from_sdk("DescribeLaunchTemplates", e))?;
            self.meter
                .page("DescribeLaunchTemplates", resp.next_token().is_some())
                .await?;
            templates.extend(
                resp.launch_templates()
                    .iter()
                    .filter_map(|t| t.launch_template_id().map(str::to_string)),
            );
        }
        for id in templates {
            let mut pages = versions
                .describe_launch_template_versions()
                .launch_template_id(&id)
                .max_results(200)
                .into_paginator()
                .send();
            self.meter
                .page("DescribeLaunchTemplateVersions", true)
                .await?;
            while let Some(page) = pages.next().await {
                self.calls.record("DescribeLaunchTemplateVersions");
                let resp = page.map_err(|e| from_sdk("DescribeLaunchTemplateVersions", e))?;
                self.meter
                    .page(
                        "DescribeLaunchTemplateVersions",
                        resp.next_token().is_some(),
                    )
                    .await?;
                for v in resp.launch_template_versions() {
                    let data = v.launch_template_data();
                    let user = TemplateVersion {
                        template_id: v.launch_template_id().unwrap_or(&id).to_string(),
                        template_name: v.launch_template_name().map(str::to_string),
                        version: v.version_number().unwrap_or_default(),
                        is_default: v.default_version().unwrap_or(false),
                    };
                    for m in data.map(|d| d.block_device_mappings()).unwrap_or_default() {
                        if let Some(snap) = m.ebs().and_then(|e| e.snapshot_id()) {
                            usage.add_snapshot_version(snap, user.clone());
                        }
                    }
                    let Some(image) = data.and_then(|d| d.image_id()) else {
                        continue;
                    };
                    match TemplateImage::parse(image) {
                        TemplateImage::Id(image) => usage.add_template_version(image, user),
                        TemplateImage::Ssm(parameter) => refs.push(SsmRef { parameter, user }),
                    }
                }
            }
        }
        Ok((usage, refs))
    }
}

impl Ec2 {
    /// Images named by EC2 Fleets that can still launch (each override's `ImageId`), and
    /// the launch template versions they name (all pages).
    pub async fn fleet_usage(&self) -> Result<Usage, AwsError> {
        self.meter
            .whole("DescribeFleets", || self.fleet_pages())
            .await
    }

    async fn fleet_pages(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .listing_client()
            .describe_fleets()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeFleets");
            let resp = page.map_err(|e| from_sdk("DescribeFleets", e))?;
            self.meter
                .page("DescribeFleets", resp.next_token().is_some())
                .await?;
            for f in resp.fleets() {
                let state = f.fleet_state().map(|s| s.as_str()).unwrap_or_default();
                if !fleet_is_live(state) {
                    continue;
                }
                let id = f.fleet_id().unwrap_or("fleet");
                for c in f.launch_template_configs() {
                    if let Some(spec) = c.launch_template_specification() {
                        let t = spec.launch_template_id().or(spec.launch_template_name());
                        if let Some(t) = t {
                            usage.add_template_reference(t, spec.version());
                        }
                    }
                    for image in c.overrides().iter().filter_map(|o| o.image_id()) {
                        usage.add(image, user(UsageKind::Fleet, id));
                    }
                }
            }
        }
        Ok(usage)
    }

    /// Images named by Spot Fleet requests that can still launch (launch specifications),
    /// and the launch template versions they name (all pages).
    pub async fn spot_fleet_usage(&self) -> Result<Usage, AwsError> {
        self.meter
            .whole("DescribeSpotFleetRequests", || self.spot_fleet_pages())
            .await
    }

    async fn spot_fleet_pages(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .listing_client()
            .describe_spot_fleet_requests()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeSpotFleetRequests");
            let resp = page.map_err(|e| from_sdk("DescribeSpotFleetRequests", e))?;
            self.meter
                .page("DescribeSpotFleetRequests", resp.next_token().is_some())
                .await?;
            for r in resp.spot_fleet_request_configs() {
                let state = r
                    .spot_fleet_request_state()
                    .map(|s| s.as_str())
                    .unwrap_or_default();
                if !spot_fleet_is_live(state) {
                    continue;
                }
                let id = r.spot_fleet_request_id().unwrap_or("sfr");
                let Some(cfg) = r.spot_fleet_request_config() else {
                    continue;
                };
                for image in cfg
                    .launch_specifications()
                    .iter()
                    .filter_map(|l| l.image_id())
                {
                    usage.add(image, user(UsageKind::SpotFleet, id));
                }
                for spec in cfg
                    .launch_template_configs()
                    .iter()
                    .filter_map(|c| c.launch_template_specification())
                {
                    let t = spec.launch_template_id().or(spec.launch_template_name());
                    if let Some(t) = t {
                        usage.add_template_reference(t, spec.version());
                    }
                }
            }
        }
        Ok(usage)
    }

    /// Images named by Spot Instance requests that can launch again (`open`, `active`,
    /// `disabled`: persistent ones relaunch after an interruption) (all pages).
    pub async fn spot_request_usage(&self) -> Result<Usage, AwsError> {
        self.meter
            .whole("DescribeSpotInstanceRequests", || self.spot_request_pages())
            .await
            .map_err(|e| {
                let need = "ec2:DescribeSpotInstanceRequests";
                crate::adapters::aws::meter::source_error("Spot Instance requests", need, e)
            })
    }

    async fn spot_request_pages(&self) -> Result<Usage, AwsError> {
        let mut usage = Usage::new();
        let mut pages = self
            .listing_client()
            .describe_spot_instance_requests()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeSpotInstanceRequests");
            let resp = page.map_err(|e| from_sdk("DescribeSpotInstanceRequests", e))?;
            self.meter
                .page("DescribeSpotInstanceRequests", resp.next_token().is_some())
                .await?;
            for r in resp.spot_instance_requests() {
                let state = r.state().map(|s| s.as_str()).unwrap_or_default();
                let kind = r.r#type().map(|t| t.as_str()).unwrap_or("one-time");
                let id = r.spot_instance_request_id().unwrap_or("sir");
                let image = r.launch_specification().and_then(|l| l.image_id());
                if let (Some(image), Some(u)) = (image, spot_request_user(id, kind, state)) {
                    usage.add(image, u);
                }
            }
        }
        Ok(usage)
    }

    /// AWS's reference check for up to [`crate::ports::REFERENCE_IDS_PER_CALL`] images (all pages): the
    /// instances, launch templates (only with `templates`: their every version is ours to
    /// judge otherwise), SSM parameters and Image Builder recipes that reference them.
    pub async fn image_references(
        &self,
        image_ids: &[String],
        templates: bool,
    ) -> Result<Vec<(String, UsageRef)>, AwsError> {
        use aws_sdk_ec2::types::{ImageReferenceResourceType as T, ResourceTypeRequest};
        let mut req = self
            .paced
            .describe_image_references()
            .set_image_ids(Some(image_ids.to_vec()));
        req = if templates {
            req.include_all_resource_types(true)
        } else {
            [
                T::Ec2Instance,
                T::SsmParameter,
                T::ImageBuilderImageRecipe,
                T::ImageBuilderContainerRecipe,
            ]
            .into_iter()
            .fold(req, |r, t| {
                r.resource_types(ResourceTypeRequest::builder().resource_type(t).build())
            })
        };
        let mut out = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeImageReferences");
            let resp = page.map_err(|e| from_sdk("DescribeImageReferences", e))?;
            for r in resp.image_references() {
                let (Some(image), Some(arn)) = (r.image_id(), r.arn()) else {
                    continue;
                };
                let kind = r.resource_type().map(|t| t.as_str()).unwrap_or_default();
                out.push((image.to_string(), reference_user(kind, arn)));
            }
        }
        Ok(out)
    }
}

impl crate::ports::ImageRetirer for Ec2 {
    async fn retire(
        &self,
        image_id: &str,
        step: crate::retire::RetireStep,
        now: crate::model::Timestamp,
    ) -> Result<(), AwsError> {
        use crate::retire::{RetireStep, DEPRECATED_AT, DISABLED_AT, DISABLED_FROM};
        let stamp = crate::time::format_instant(now);
        let tag = |tags: Vec<(&'static str, String)>| async move {
            self.calls.record("CreateTags");
            let tags = tags
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build());
            self.paced
                .create_tags()
                .resources(image_id)
                .set_tags(Some(tags.collect()))
                .send()
                .await
                .map_err(|e| from_sdk("CreateTags", e))
                .map(|_| ())
        };
        match step {
            RetireStep::Deprecate => {
                // DeprecateAt must lie ahead: the next whole minute after the later of the
                // run's instant and the clock.
                let at = now.max(chrono::Utc::now()) + chrono::TimeDelta::minutes(1);
                let at = aws_smithy_types::DateTime::from_secs(at.timestamp() / 60 * 60);
                self.calls.record("EnableImageDeprecation");
                self.paced
                    .enable_image_deprecation()
                    .image_id(image_id)
                    .deprecate_at(at)
                    .send()
                    .await
                    .map_err(|e| from_sdk("EnableImageDeprecation", e))?;
                tag(vec![(DEPRECATED_AT, stamp.clone())]).await
            }
            RetireStep::Disable { from } => {
                // DisableImage makes the image private: the tag records what it was.
                tag(vec![
                    (DISABLED_AT, stamp.clone()),
                    (DISABLED_FROM, from.tag_value()),
                ])
                .await?;
                self.calls.record("DisableImage");
                let disabled = self
                    .paced
                    .disable_image()
                    .image_id(image_id)
                    .send()
                    .await
                    .map_err(|e| from_sdk("DisableImage", e))
                    .map(|_| ());
                if let Err(e) = &disabled {
                    // Refused for sure (an EC2 error code, not a throttle or a fault that
                    // may have taken effect): the image is still as it was, so the tags
                    // that would call a later disable by someone else ami-sweeper's own go
                    // again (best effort; the refusal is what the caller hears).
                    if refused_for_sure(e) {
                        self.calls.record("DeleteTags");
                        let keys =
                            [DISABLED_AT, DISABLED_FROM].map(|k| Tag::builder().key(k).build());
                        let untag = self
                            .paced
                            .delete_tags()
                            .resources(image_id)
                            .set_tags(Some(keys.to_vec()))
                            .send()
                            .await;
                        if let Err(u) = untag {
                            let u = from_sdk("DeleteTags", u);
                            tracing::warn!(image_id, error = %u, "the refused disable's tags stay");
                        }
                    }
                }
                disabled
            }
            RetireStep::Enable {
                disabled,
                deprecated,
            } => self.undo_retirement(image_id, disabled, deprecated).await,
        }
    }
}

/// An EC2 error that says the call did not take effect: a code, and not a throttle or a
/// server-side fault (those may have taken effect, or are retried).
fn refused_for_sure(e: &AwsError) -> bool {
    e.code.is_some()
        && ![
            "RequestLimitExceeded",
            "Throttling",
            "InternalError",
            "InternalFailure",
            "ServiceUnavailable",
            "Unavailable",
        ]
        .iter()
        .any(|c| e.is(c))
}

impl Ec2 {
    /// Undoes ami-sweeper's retirement of an image: `EnableImage` if it disabled it,
    /// `DisableImageDeprecation` if it deprecated it, then its retirement tags go.
    async fn undo_retirement(
        &self,
        image_id: &str,
        disabled: bool,
        deprecated: bool,
    ) -> Result<(), AwsError> {
        if disabled {
            self.calls.record("EnableImage");
            self.paced
                .enable_image()
                .image_id(image_id)
                .send()
                .await
                .map_err(|e| from_sdk("EnableImage", e))?;
        }
        if deprecated {
            self.calls.record("DisableImageDeprecation");
            self.paced
                .disable_image_deprecation()
                .image_id(image_id)
                .send()
                .await
                .map_err(|e| from_sdk("DisableImageDeprecation", e))?;
        }
        // Last: until the tags are gone, every sweep that does not condemn the image tries
        // this step again.
        self.calls.record("DeleteTags");
        let keys = crate::retire::RETIREMENT_TAGS.map(|k| Tag::builder().key(k).build());
        self.paced
            .delete_tags()
            .resources(image_id)
            .set_tags(Some(keys.to_vec()))
            .send()
            .await
            .map_err(|e| from_sdk("DeleteTags", e))
            .map(|_| ())
    }
}

impl Ec2 {
    /// The account's own images (disabled included) matching `filter` for any of `values`,
    /// every page, at most [`IDS_PER_FILTER`] values a call: what the worker's checks read.
    async fn owned_images_by(
        &self,
        filter: &str,
        values: &[String],
    ) -> Result<Vec<aws_sdk_ec2::types::Image>, AwsError> {
        let mut out = Vec::new();
        for chunk in values.chunks(IDS_PER_FILTER) {
            let mut pages = self
                .paced
                .describe_images()
                .owners("self")
                .include_disabled(true)
                .filters(ids_filter(filter, chunk))
                .into_paginator()
                .send();
            self.meter.page("DescribeImages", true).await?;
            while let Some(page) = pages.next().await {
                self.calls.record("DescribeImages");
                let resp = page.map_err(|e| from_sdk("DescribeImages", e))?;
                self.meter
                    .page("DescribeImages", resp.next_token().is_some())
                    .await?;
                out.extend(resp.images().iter().cloned());
            }
        }
        Ok(out)
    }
}

/// How many times, a second apart, a usage report's state is asked before giving up on it.
const REPORT_POLLS: u32 = 10;

impl Ec2 {
    /// See [`crate::ports::ReferenceCheck::usage_report`]. Any failure (the API missing,
    /// denied, the report in error or not ready in time) is `None`, logged: the report is
    /// only a first look, the member accounts' own sources are the fallback.
    pub async fn usage_report(
        &self,
        image_id: &str,
        accounts: &[String],
    ) -> Option<std::collections::BTreeMap<String, u64>> {
        match self.try_usage_report(image_id, accounts).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(image_id, error = %e, "no usage report; the member accounts are asked");
                None
            }
        }
    }

    async fn try_usage_report(
        &self,
        image_id: &str,
        accounts: &[String],
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>, AwsError> {
        use aws_sdk_ec2::types::ImageUsageResourceTypeRequest;
        self.calls.record("CreateImageUsageReport");
        let created = self
            .client
            .create_image_usage_report()
            .image_id(image_id)
            .set_account_ids(Some(accounts.to_vec()))
            .resource_types(
                ImageUsageResourceTypeRequest::builder()
                    .resource_type("ec2:Instance")
                    .build(),
            )
            .resource_types(
                ImageUsageResourceTypeRequest::builder()
                    .resource_type("ec2:LaunchTemplate")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| from_sdk("CreateImageUsageReport", e))?;
        let Some(id) = created.report_id().map(str::to_string) else {
            return Ok(None);
        };
        let mut ready = false;
        for _ in 0..REPORT_POLLS {
            self.calls.record("DescribeImageUsageReports");
            let out = self
                .client
                .describe_image_usage_reports()
                .report_ids(&id)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeImageUsageReports", e))?;
            match out.image_usage_reports().first().and_then(|r| r.state()) {
                Some("available") => {
                    ready = true;
                    break;
                }
                Some("error") => return Ok(None),
                _ => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            }
        }
        if !ready {
            return Ok(None);
        }
        let mut users = std::collections::BTreeMap::new();
        let mut pages = self
            .client
            .describe_image_usage_report_entries()
            .report_ids(&id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeImageUsageReportEntries");
            let resp = page.map_err(|e| from_sdk("DescribeImageUsageReportEntries", e))?;
            for e in resp.image_usage_report_entries() {
                if let (Some(a), Some(n)) = (e.account_id(), e.usage_count()) {
                    *users.entry(a.to_string()).or_insert(0) += u64::try_from(n).unwrap_or(0);
                }
            }
        }
        Ok(Some(users))
    }
}

impl Ec2 {
    /// Every page of the account's own images, through the client without the SDK's
    /// retries: the listing is always made under a pacer (the sweep's meter, or the
    /// worker's `call_ahead` for its bundle jobs), which alone retries it.
    async fn image_pages(&self) -> Result<Vec<Image>, AwsError> {
        let mut images = Vec::new();
        let mut pages = self
            .paced
            .describe_images()
            .owners("self")
            .include_disabled(true)
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeImages");
            let resp = page.map_err(|e| from_sdk("DescribeImages", e))?;
            self.meter
                .page("DescribeImages", resp.next_token().is_some())
                .await?;
            for img in resp.images() {
                let image = raw_image(img).into_image().map_err(|m| AwsError {
                    operation: "DescribeImages",
                    code: None,
                    message: format!("unusable image in the response: {m}"),
                })?;
                images.push(image);
            }
        }
        Ok(images)
    }
}

impl ImageSource for Ec2 {
    async fn list_images(&self) -> Result<Vec<Image>, AwsError> {
        self.meter
            .whole("DescribeImages", || self.image_pages())
            .await
    }

    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<String>, AwsError> {
        self.calls.record("DescribeImageAttribute");
        let resp = self
            .paced
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeImageAttribute", e))?;
        Ok(resp
            .launch_permissions()
            .iter()
            .filter_map(|p| {
                if p.group() == Some(&PermissionGroup::All) {
                    Some("all".to_string())
                } else {
                    p.user_id()
                        .or(p.organization_arn())
                        .or(p.organizational_unit_arn())
                        .map(str::to_string)
                }
            })
            .collect())
    }
}

impl Deregistrar for Ec2 {
    async fn deregister(&self, image_id: &str) -> Result<(), AwsError> {
        self.calls.record("DeregisterImage");
        self.paced
            .deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("DeregisterImage", e))
    }
}

impl SnapshotDeleter for Ec2 {
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.calls.record("DeleteSnapshot");
        self.paced
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("DeleteSnapshot", e))
    }
}

fn snapshot_of(s: &aws_sdk_ec2::types::Snapshot) -> Snapshot {
    Snapshot {
        id: s.snapshot_id().unwrap_or_default().to_string(),
        description: s.description().unwrap_or_default().to_string(),
        start_time: s
            .start_time()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
        size_gib: s.volume_size().and_then(|v| u64::try_from(v).ok()),
        tags: tags_of(s.tags()).into_iter().collect(),
        archived: s.storage_tier() == Some(&aws_sdk_ec2::types::StorageTier::Archive),
    }
}

impl SnapshotSource for Ec2 {
    async fn list_snapshots(&self) -> Result<Vec<Snapshot>, AwsError> {
        self.meter
            .whole("DescribeSnapshots", || self.snapshot_pages())
            .await
    }
}

impl Ec2 {
    async fn snapshot_pages(&self) -> Result<Vec<Snapshot>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .listing_client()
            .describe_snapshots()
            .owner_ids("self")
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("DescribeSnapshots");
            let resp = page.map_err(|e| from_sdk("DescribeSnapshots", e))?;
            self.meter
                .page("DescribeSnapshots", resp.next_token().is_some())
                .await?;
            out.extend(resp.snapshots().iter().map(snapshot_of));
        }
        if let Some(s) = out.iter().find(|s| s.id.is_empty()) {
            return Err(AwsError {
                operation: "DescribeSnapshots",
                code: None,
                message: format!("unusable snapshot in the response (no SnapshotId): {s:?}"),
            });
        }
        Ok(out)
    }
}

impl RecycleBin for Ec2 {
    /// Lists the whole bin (1,000 a page; a bin rarely holds more than a page) rather
    /// than asking about the ids 20 at a time: one call where 2,000 candidates would take
    /// a hundred.
    async fn images_in_recycle_bin(
        &self,
        image_ids: &FxHashSet<String>,
    ) -> Result<FxHashMap<String, Option<crate::model::Timestamp>>, AwsError> {
        self.meter
            .whole("ListImagesInRecycleBin", || self.bin_pages(image_ids))
            .await
    }
}

impl Ec2 {
    async fn bin_pages(
        &self,
        image_ids: &FxHashSet<String>,
    ) -> Result<FxHashMap<String, Option<crate::model::Timestamp>>, AwsError> {
        let mut found = FxHashMap::default();
        let mut pages = self
            .listing_client()
            .list_images_in_recycle_bin()
            .max_results(RECYCLE_BIN_PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.calls.record("ListImagesInRecycleBin");
            let resp = page.map_err(|e| from_sdk("ListImagesInRecycleBin", e))?;
            self.meter
                .page("ListImagesInRecycleBin", resp.next_token().is_some())
                .await?;
            for i in resp.images() {
                if let Some(id) = i.image_id().filter(|id| image_ids.contains(*id)) {
                    let exit = i
                        .recycle_bin_exit_time()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                    found.insert(id.to_string(), exit);
                }
            }
        }
        Ok(found)
    }
}

impl StorageMarker for Ec2 {
    async fn mark_snapshots(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        delete_after: Option<crate::model::Timestamp>,
    ) -> Result<(), AwsError> {
        for chunk in snapshot_ids.chunks(TAG_RESOURCES_PER_CALL) {
            self.calls.record("CreateTags");
            let mut req = self
                .paced
                .create_tags()
                .set_resources(Some(chunk.to_vec()))
                .tags(Tag::builder().key(STORAGE_MARK).value(image_id).build());
            if let Some(t) = delete_after {
                let when = crate::time::format_instant(t);
                req = req.tags(Tag::builder().key(DELETE_AFTER).value(when).build());
            }
            req.send().await.map_err(|e| from_sdk("CreateTags", e))?;
        }
        Ok(())
    }

    async fn defer_snapshots(
        &self,
        snapshot_ids: &[String],
        delete_after: crate::model::Timestamp,
    ) -> Result<(), AwsError> {
        let when = crate::time::format_instant(delete_after);
        for chunk in snapshot_ids.chunks(TAG_RESOURCES_PER_CALL) {
            self.calls.record("CreateTags");
            self.paced
                .create_tags()
                .set_resources(Some(chunk.to_vec()))
                .tags(Tag::builder().key(DELETE_AFTER).value(&when).build())
                .send()
                .await
                .map_err(|e| from_sdk("CreateTags", e))?;
        }
        Ok(())
    }
}

/// Ids per filter value list: EC2 accepts up to 200 values in one filter.
const IDS_PER_FILTER: usize = 200;

/// A filter on ids (`snapshot-id`, `image-id`): unlike `SnapshotIds`/`ImageIds`, a missing
/// id does not fail the whole call.
fn ids_filter(name: &str, ids: &[String]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(ids.to_vec()))
        .build()
}

// The worker makes each of these reads under its pair's Describe pacer
// (`Pacer::call_ahead`): through the client without the SDK's retries, as every paced
// call is, so the pacer sees each refusal (and slows down) and alone retries it.
impl JobFacts for Ec2 {
    async fn owned_snapshots(&self, snapshot_ids: &[String]) -> Result<Vec<Snapshot>, AwsError> {
        let mut out = Vec::new();
        for chunk in snapshot_ids.chunks(IDS_PER_FILTER) {
            let mut pages = self
                .paced
                .describe_snapshots()
                .owner_ids("self")
                .filters(ids_filter("snapshot-id", chunk))
                .into_paginator()
                .send();
            self.meter.page("DescribeSnapshots", true).await?;
            while let Some(page) = pages.next().await {
                self.calls.record("DescribeSnapshots");
                let resp = page.map_err(|e| from_sdk("DescribeSnapshots", e))?;
                self.meter
                    .page("DescribeSnapshots", resp.next_token().is_some())
                    .await?;
                out.extend(resp.snapshots().iter().map(snapshot_of));
            }
        }
        Ok(out)
    }

    async fn registered_images(&self, image_ids: &[String]) -> Result<FxHashSet<String>, AwsError> {
        Ok(self
            .owned_images_by("image-id", image_ids)
            .await?
            .iter()
            .filter(|i| i.state().is_none_or(|s| s.as_str() != "deregistered"))
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect())
    }

    async fn images_using_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<Image>, AwsError> {
        let mut out = Vec::new();
        for img in self
            .owned_images_by("block-device-mapping.snapshot-id", snapshot_ids)
            .await?
        {
            let image = raw_image(&img).into_image().map_err(|m| AwsError {
                operation: "DescribeImages",
                code: None,
                message: format!("unusable image in the response: {m}"),
            })?;
            if image.state != crate::model::ImageState::Deregistered {
                out.push(image);
            }
        }
        Ok(out)
    }

    async fn template_snapshots(&self) -> Result<Usage, AwsError> {
        // The listing is the pacer's (its first call, usually the only one: no template);
        // each template's versions read retries on its own, with the SDK's retries, so
        // one refusal among many templates does not make the pacer read them all again.
        Ok(self
            .launch_template_pages(&self.paced, &self.client)
            .await?
            .0)
    }
}
