//! Adapters: the ports implemented with the AWS SDK, one file per service.
//! Clients are built once per region and shared by every call of a run.

pub mod autoscaling;
pub mod batch;
mod calls;
pub mod cloudformation;
pub mod ec2;
pub mod emr;
pub mod imagebuilder;
pub mod meter;
pub mod metered;
pub mod organizations;
pub mod rbin;
pub mod reference_objects;
pub mod s3;
pub mod sns;
pub mod sqs;
pub mod ssm;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use calls::ApiCalls;

/// The AWS configuration chain (credentials, region, `AWS_ENDPOINT_URL`), with up to
/// five attempts per call: throttling by an account bucket shared with other callers
/// usually clears within that, on top of the client-side limits.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
        .load()
        .await
}

/// Counts throttled attempts (EC2 `RequestLimitExceeded`, S3 `SlowDown`, ...) as the
/// SDK sees them, before its retry, so reports and metrics show how hard AWS pushed back.
/// It reads the response after deserialization: only then is a streamed body in memory.
#[derive(Debug)]
pub struct ThrottleCounter(pub Arc<ApiCalls>);

impl aws_sdk_ec2::config::Intercept for ThrottleCounter {
    fn name(&self) -> &'static str {
        "ThrottleCounter"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let response = context.response();
        let status = response.status().as_u16();
        if status == 429 || status == 503 || status == 400 {
            let body = response.body().bytes().unwrap_or_default();
            let text = String::from_utf8_lossy(body);
            if [
                "RequestLimitExceeded",
                "Throttling",
                "SlowDown",
                "TooManyRequests",
            ]
            .iter()
            .any(|code| text.contains(code))
            {
                self.0.record_throttle();
            }
        }
        Ok(())
    }
}

/// The partition of a region name (`aws-cn`, `aws-us-gov`, else `aws`).
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Every region's clients, built on first use and reused for the life of the process
/// (in Lambda: across invocations), with one call counter.
#[derive(Debug)]
pub struct Clients {
    base: aws_config::SdkConfig,
    calls: Arc<ApiCalls>,
    by_region: Mutex<BTreeMap<String, RegionClients>>,
    members: Mutex<BTreeMap<String, Arc<Clients>>>,
    sqs: aws_sdk_sqs::Client,
}

impl Clients {
    /// Wraps the shared SDK configuration; no client is built yet.
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self::with_calls(base, Arc::new(ApiCalls::default()))
    }

    /// As [`Clients::new`], recording into an existing call counter (a member account's
    /// clients count into the hub's run).
    pub fn with_calls(base: aws_config::SdkConfig, calls: Arc<ApiCalls>) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(&base),
            base,
            calls,
            by_region: Mutex::new(BTreeMap::new()),
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// A member account's clients, assumed once and kept (see [`Clients::for_account`]).
    pub async fn member(
        &self,
        account: &str,
        role_name: &str,
    ) -> Result<Arc<Clients>, crate::error::AwsError> {
        if let Some(c) = self.members.lock().expect("member cache lock").get(account) {
            return Ok(c.clone());
        }
        // Assumed without holding the cache: pairs of other accounts need not wait. Two
        // pairs of one account may both assume; the first kept wins.
        let c = Arc::new(self.for_account(account, role_name).await?);
        let mut members = self.members.lock().expect("member cache lock");
        Ok(members.entry(account.to_string()).or_insert(c).clone())
    }

    /// The clients for a job's place: its member account's (through `role_name`) or, with
    /// no account, this deployment's own.
    pub async fn place(
        &self,
        account: Option<&str>,
        region: &str,
        role_name: &str,
    ) -> Result<RegionClients, String> {
        match account {
            None => Ok(self.region(region)),
            Some(a) => Ok(self
                .member(a, role_name)
                .await
                .map_err(|e| e.to_string())?
                .region(region)),
        }
    }

    /// A handle on the cleanup queue, in the configuration's own region (where the
    /// queue lives, whichever region is being swept).
    pub fn queue(&self, url: &str, delay_seconds: u32) -> sqs::SqsQueue {
        sqs::SqsQueue::new(self.sqs.clone(), url, delay_seconds, self.calls.clone())
    }

    /// The shared configuration (region, credentials, endpoint).
    pub fn base(&self) -> &aws_config::SdkConfig {
        &self.base
    }

    /// The call counter every client records into.
    pub fn calls(&self) -> &Arc<ApiCalls> {
        &self.calls
    }

    /// The Organizations adapter, on the configuration's own credentials (the hub's).
    pub fn organizations(&self) -> organizations::Organizations {
        organizations::Organizations::new(
            aws_sdk_organizations::Client::new(&self.base),
            self.calls.clone(),
        )
    }

    /// The account these clients act as (`GetCallerIdentity`): what an approved plan's
    /// account is checked against, and what a dry run's stamp names.
    pub async fn caller_account(&self) -> Result<String, crate::error::AwsError> {
        self.calls.record("GetCallerIdentity");
        let who = aws_sdk_sts::Client::new(&self.base)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("GetCallerIdentity", e))?;
        who.account().map(str::to_string).ok_or_else(|| {
            crate::error::AwsError::new("GetCallerIdentity", "NoAccount", "no account named")
        })
    }

    /// Clients acting as `account`, through its role `role_name` (assumed from these
    /// clients' credentials, refreshed as they expire). Before any use, `GetCallerIdentity`
    /// must name that very account: credentials of one account are never used for
    /// another's resources, whatever the role's trust says.
    pub async fn for_account(
        &self,
        account: &str,
        role_name: &str,
    ) -> Result<Clients, crate::error::AwsError> {
        let partition = self
            .base
            .region()
            .map(|r| r.as_ref())
            .map_or("aws", partition_of);
        let arn = format!("arn:{partition}:iam::{account}:role/{role_name}");
        let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
            .session_name("ami-sweeper")
            .configure(&self.base)
            .build()
            .await;
        let config = self
            .base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
        self.calls.record("AssumeRole");
        let who = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("AssumeRole", e))?;
        match who.account() {
            Some(a) if a == account => Ok(Clients::with_calls(config, self.calls.clone())),
            other => Err(crate::error::AwsError::new(
                "GetCallerIdentity",
                "WrongAccount",
                format!(
                    "the role for {account} acts as {}; nothing is done with it",
                    other.unwrap_or("no account")
                ),
            )),
        }
    }

    /// The region's clients (cheap clones of the cached ones).
    pub fn region(&self, region: &str) -> RegionClients {
        self.by_region
            .lock()
            .expect("client cache lock")
            .entry(region.to_string())
            .or_insert_with(|| RegionClients::new(&self.base, region, self.calls.clone()))
            .clone()
    }
}

/// The SDK clients of one region, plus the run's call counter.
#[derive(Clone, Debug)]
pub struct RegionClients {
    /// Region name.
    pub region: String,
    /// EC2: images, instances, launch templates, snapshots.
    pub ec2: ec2::Ec2,
    /// Auto Scaling: launch configurations.
    pub autoscaling: autoscaling::AutoScaling,
    /// SSM: `resolve:ssm:` launch template ids, parameters naming images.
    pub ssm: ssm::Ssm,
    /// AWS Batch: compute environments' images.
    pub batch: batch::Batch,
    /// EC2 Image Builder: recipes' parent images.
    pub imagebuilder: imagebuilder::ImageBuilder,
    /// Recycle Bin: retention rules.
    pub rbin: rbin::Rbin,
    /// S3: instance-store bundles.
    pub s3: s3::S3,
    /// CloudFormation: stacks naming images.
    pub cloudformation: cloudformation::CloudFormation,
    /// EMR: clusters launching custom images.
    pub emr: emr::Emr,
    /// S3 again: reference objects (`usage.reference_objects`).
    pub reference_objects: reference_objects::ReferenceObjects,
}

impl RegionClients {
    /// Builds the region's clients from a shared configuration.
    pub fn new(base: &aws_config::SdkConfig, region: &str, calls: Arc<ApiCalls>) -> Self {
        let config = base
            .to_builder()
            .region(aws_config::Region::new(region.to_string()))
            .build();
        let counter = || ThrottleCounter(calls.clone());
        // One SDK client per service on the region's config, each counting its throttles.
        macro_rules! client {
            ($sdk:ident) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(&config)
                        .interceptor(counter())
                        .build(),
                )
            };
        }
        let s3_client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .interceptor(counter())
                .build(),
        );
        Self {
            region: region.to_string(),
            ec2: ec2::Ec2::new(client!(aws_sdk_ec2), calls.clone()),
            autoscaling: autoscaling::AutoScaling::new(client!(aws_sdk_autoscaling), calls.clone()),
            ssm: ssm::Ssm::new(client!(aws_sdk_ssm), calls.clone()),
            batch: batch::Batch::new(client!(aws_sdk_batch), calls.clone()),
            imagebuilder: imagebuilder::ImageBuilder::new(
                client!(aws_sdk_imagebuilder),
                calls.clone(),
            ),
            rbin: rbin::Rbin::new(client!(aws_sdk_rbin), calls.clone()),
            s3: s3::S3::new(s3_client.clone(), calls.clone()),
            reference_objects: reference_objects::ReferenceObjects::new(s3_client, calls.clone()),
            cloudformation: cloudformation::CloudFormation::new(
                client!(aws_sdk_cloudformation),
                calls.clone(),
            ),
            emr: emr::Emr::new(client!(aws_sdk_emr), calls.clone()),
        }
    }
}

/// What reading the SSM parameters stacks name needs, for its errors.
const STACK_SSM_NEEDS: &str = "ssm:GetParameter on the parameters its SSM-typed parameters \
                               and {{resolve:ssm:…}} references name (in this deployment's own \
                               account, the template's ImageIdParameterPrefix)";

impl crate::ports::UsageSource for RegionClients {
    /// Instances (any state but terminated), every launch template version (with
    /// `resolve:ssm:` ids resolved), launch configurations, SSM parameters naming images,
    /// EC2 Fleets, Spot Fleet and Spot Instance requests, Auto Scaling groups' templates,
    /// Batch compute environments, CloudFormation stacks and EMR clusters, fetched
    /// concurrently. Any source that fails fails the whole listing.
    async fn list_usage(
        &self,
        rules: &crate::policy::UsageRules,
    ) -> Result<(crate::model::Usage, Vec<String>), crate::error::AwsError> {
        // Every source at once: none needs another's answer, and a pair's start waits for
        // the slowest. (On the heap: eleven sources' states at once are too big a future
        // for a test thread's stack in a debug build.)
        let (
            instances,
            templates,
            configs,
            parameters,
            fleets,
            spot,
            groups,
            batch,
            written,
            stacks,
            clusters,
        ) = Box::pin(async {
            tokio::join!(
                self.ec2.instance_usage(),
                self.ec2.launch_template_usage(),
                self.autoscaling.launch_configuration_usage(),
                self.ssm.image_parameters(&rules.ssm_paths),
                self.ec2.fleet_usage(),
                self.ec2.spot_fleet_usage(),
                self.autoscaling.group_template_references(),
                self.batch.compute_environment_usage(),
                self.ec2.spot_request_usage(),
                self.cloudformation
                    .stack_usage(rules.cloudformation_templates),
                self.emr.cluster_usage(),
            )
        })
        .await;
        let mut usage = instances?;
        let (template_usage, ssm_refs) = templates?;
        usage.extend(template_usage);
        for other in [
            configs, parameters, fleets, spot, groups, batch, written, clusters,
        ] {
            usage.extend(other?);
        }
        let (stack_usage, stack_refs) = stacks?;
        usage.extend(stack_usage);
        let (resolved, mut warnings) = self.ssm.resolve_image_ids(ssm_refs).await?;
        usage.extend(resolved);
        let (resolved, more) = self
            .ssm
            .resolve_references(stack_refs)
            .await
            .map_err(|e| meter::source_error("CloudFormation stacks", STACK_SSM_NEEDS, e))?;
        usage.extend(resolved);
        warnings.extend(more);
        Ok((usage, warnings))
    }
}

impl crate::ports::ReferenceCheck for RegionClients {
    async fn image_references(
        &self,
        image_ids: &[String],
        templates: bool,
    ) -> Result<Vec<(String, crate::model::UsageRef)>, crate::error::AwsError> {
        self.ec2.image_references(image_ids, templates).await
    }

    async fn recipe_parents(&self) -> Result<crate::model::Usage, crate::error::AwsError> {
        self.imagebuilder.recipe_parents().await
    }

    async fn usage_report(
        &self,
        image_id: &str,
        accounts: &[String],
    ) -> Option<BTreeMap<String, u64>> {
        self.ec2.usage_report(image_id, accounts).await
    }
}

impl crate::ports::MeteredListings for RegionClients {
    fn metered(&self, meter: std::sync::Arc<dyn crate::ports::PageMeter>) -> Self {
        Self {
            ec2: self.ec2.metered(meter),
            ..self.clone()
        }
    }

    fn service_metered(self, meters: &crate::ports::ServiceMeters) -> Self {
        Self {
            cloudformation: self
                .cloudformation
                .metered(meter::Meter::on(meters.cloudformation.clone())),
            emr: self.emr.metered(meter::Meter::on(meters.emr.clone())),
            ..self
        }
    }
}

impl crate::ports::ImageSource for RegionClients {
    async fn list_images(&self) -> Result<Vec<crate::model::Image>, crate::error::AwsError> {
        self.ec2.list_images().await
    }

    async fn launch_permissions(
        &self,
        image_id: &str,
    ) -> Result<Vec<String>, crate::error::AwsError> {
        self.ec2.launch_permissions(image_id).await
    }
}

impl crate::ports::Deregistrar for RegionClients {
    async fn deregister(&self, image_id: &str) -> Result<(), crate::error::AwsError> {
        self.ec2.deregister(image_id).await
    }
}

impl crate::ports::SnapshotSource for RegionClients {
    async fn list_snapshots(&self) -> Result<Vec<crate::model::Snapshot>, crate::error::AwsError> {
        self.ec2.list_snapshots().await
    }
}

impl crate::ports::RecycleBin for RegionClients {
    async fn images_in_recycle_bin(
        &self,
        image_ids: &rustc_hash::FxHashSet<String>,
    ) -> Result<
        rustc_hash::FxHashMap<String, Option<crate::model::Timestamp>>,
        crate::error::AwsError,
    > {
        self.ec2.images_in_recycle_bin(image_ids).await
    }
}

impl crate::ports::StorageMarker for RegionClients {
    async fn mark_snapshots(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        delete_after: Option<crate::model::Timestamp>,
    ) -> Result<(), crate::error::AwsError> {
        self.ec2
            .mark_snapshots(image_id, snapshot_ids, delete_after)
            .await
    }

    async fn defer_snapshots(
        &self,
        snapshot_ids: &[String],
        delete_after: crate::model::Timestamp,
    ) -> Result<(), crate::error::AwsError> {
        self.ec2.defer_snapshots(snapshot_ids, delete_after).await
    }
}

impl crate::ports::ImageRetirer for RegionClients {
    async fn retire(
        &self,
        image_id: &str,
        step: crate::retire::RetireStep,
        now: crate::model::Timestamp,
    ) -> Result<(), crate::error::AwsError> {
        self.ec2.retire(image_id, step, now).await
    }
}

impl crate::ports::RecycleBinRules for RegionClients {
    async fn bin_rules(&self) -> Result<crate::recycle_bin::BinRules, crate::error::AwsError> {
        self.rbin.rules().await
    }
}

impl crate::ports::BundleInventory for RegionClients {
    async fn list_manifests(
        &self,
        bucket: &str,
    ) -> Result<Vec<crate::model::Manifest>, crate::error::AwsError> {
        self.s3.list_manifests(bucket).await
    }

    async fn object_tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<crate::model::Tags, crate::error::AwsError> {
        self.s3.object_tags(bucket, key).await
    }

    async fn manifest_modified(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<crate::model::Timestamp>, crate::error::AwsError> {
        self.s3.manifest_modified(bucket, key).await
    }

    async fn mark_manifest(
        &self,
        bucket: &str,
        key: &str,
        image_id: &str,
    ) -> Result<(), crate::error::AwsError> {
        self.s3.mark_manifest(bucket, key, image_id).await
    }
}

impl crate::ports::JobFacts for RegionClients {
    async fn owned_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<crate::model::Snapshot>, crate::error::AwsError> {
        self.ec2.owned_snapshots(snapshot_ids).await
    }

    async fn registered_images(
        &self,
        image_ids: &[String],
    ) -> Result<rustc_hash::FxHashSet<String>, crate::error::AwsError> {
        self.ec2.registered_images(image_ids).await
    }

    async fn images_using_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<crate::model::Image>, crate::error::AwsError> {
        self.ec2.images_using_snapshots(snapshot_ids).await
    }

    async fn template_snapshots(&self) -> Result<crate::model::Usage, crate::error::AwsError> {
        self.ec2.template_snapshots().await
    }
}

impl crate::ports::SnapshotDeleter for RegionClients {
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), crate::error::AwsError> {
        self.ec2.delete_snapshot(snapshot_id).await
    }
}

impl crate::ports::BundleStore for RegionClients {
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, crate::error::AwsError> {
        self.s3.get_object(bucket, key).await
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<(String, crate::error::AwsError)>, crate::error::AwsError> {
        self.s3.delete_objects(bucket, keys).await
    }
}
