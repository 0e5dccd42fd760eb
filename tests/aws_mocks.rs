//! What the emulator cannot show about the SDK adapters, with mocked SDK clients returning
//! AWS's real error codes and shapes: pagination, protection values, AWS Backup refusals,
//! throttling, snapshots still in use, launch permissions, `resolve:ssm:` ids, the Recycle
//! Bin listing, the mark's `CreateTags` request. The executor's own behaviour (ordering,
//! limits, deadlines, shared snapshots, bundles) is tested on the in-memory account
//! (`executor`).

use std::sync::Arc;
use std::time::Duration;

use ami_sweeper::adapters::aws::autoscaling::AutoScaling;
use ami_sweeper::adapters::aws::batch::Batch;
use ami_sweeper::adapters::aws::cloudformation::CloudFormation;
use ami_sweeper::adapters::aws::ec2::Ec2;
use ami_sweeper::adapters::aws::emr::Emr;
use ami_sweeper::adapters::aws::imagebuilder::ImageBuilder;
use ami_sweeper::adapters::aws::rbin::Rbin;
use ami_sweeper::adapters::aws::reference_objects::ReferenceObjects;
use ami_sweeper::adapters::aws::s3::S3;
use ami_sweeper::adapters::aws::ssm::Ssm;
use ami_sweeper::adapters::aws::ApiCalls;
use ami_sweeper::adapters::aws::{RegionClients, ThrottleCounter};
use ami_sweeper::app::cleanup::RetryPolicy;
use ami_sweeper::app::progress::{Progress, ProgressSink};
use ami_sweeper::app::report::{JobOutcome, Outcome, RegionReport};
use ami_sweeper::app::sweep::{sweep_region, ExecConfig};
use ami_sweeper::error::AwsError;
use ami_sweeper::jobs::{CleanupJob, JobTarget, JOB_VERSION};
use ami_sweeper::ports::{CleanupSink, ImageSource};
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::operation::describe_image_attribute::DescribeImageAttributeOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::list_images_in_recycle_bin::ListImagesInRecycleBinOutput;
use aws_sdk_ec2::types::ImageRecycleBinInfo;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageState, LaunchPermission, LaunchTemplate,
    LaunchTemplateVersion, PermissionGroup, ResponseLaunchTemplateData, Tag,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

pub(crate) fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
    )
}

fn retrying() -> aws_sdk_ec2::config::retry::RetryConfig {
    aws_sdk_ec2::config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
}

fn ec2(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    let quiet = quiet_ec2_sources();
    mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        rules.iter().copied().chain(quiet.iter()),
        |c| c.retry_config(retrying())
    )
}

/// The EC2 usage sources a test does not speak about, answering "nothing": fleets, Spot
/// Fleet requests, and AWS's reference check. Matched last, so a test's rules win.
fn quiet_ec2_sources() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_ec2::Client::describe_fleets)
            .then_output(|| aws_sdk_ec2::operation::describe_fleets::DescribeFleetsOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_spot_fleet_requests).then_output(|| {
            aws_sdk_ec2::operation::describe_spot_fleet_requests::DescribeSpotFleetRequestsOutput::builder().build()
        }),
        mock!(aws_sdk_ec2::Client::describe_image_references).then_output(|| {
            aws_sdk_ec2::operation::describe_image_references::DescribeImageReferencesOutput::builder().build()
        }),
        mock!(aws_sdk_ec2::Client::describe_spot_instance_requests).then_output(|| {
            aws_sdk_ec2::operation::describe_spot_instance_requests::DescribeSpotInstanceRequestsOutput::builder().build()
        }),
    ]
}

/// A CloudFormation client answering `rules`, and no stacks otherwise.
pub(crate) fn cloudformation(rules: &[&Rule]) -> aws_sdk_cloudformation::Client {
    let none = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_output(|| {
        aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput::builder().build()
    });
    mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        rules.iter().copied().chain([&none])
    )
}

/// An EMR client answering `rules`, and no clusters otherwise.
pub(crate) fn emr(rules: &[&Rule]) -> aws_sdk_emr::Client {
    let none = mock!(aws_sdk_emr::Client::list_clusters).then_output(|| {
        aws_sdk_emr::operation::list_clusters::ListClustersOutput::builder().build()
    });
    mock_client!(
        aws_sdk_emr,
        RuleMode::MatchAny,
        rules.iter().copied().chain([&none])
    )
}

/// An SSM client answering `rules`, and an empty parameter store listing otherwise.
pub(crate) fn ssm(rules: &[&Rule]) -> aws_sdk_ssm::Client {
    let listing = mock!(aws_sdk_ssm::Client::describe_parameters).then_output(|| {
        aws_sdk_ssm::operation::describe_parameters::DescribeParametersOutput::builder().build()
    });
    mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        rules.iter().copied().chain([&listing])
    )
}

pub(crate) fn image(
    id: &str,
    name: &str,
    created: &str,
) -> aws_sdk_ec2::types::builders::ImageBuilder {
    Image::builder()
        .image_id(id)
        .name(name)
        .creation_date(created)
        .state(ImageState::Available)
        .root_device_type(aws_sdk_ec2::types::DeviceType::Ebs)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(format!("snap-{}", &id[4..]))
                        .volume_size(8)
                        .build(),
                )
                .build(),
        )
}

pub(crate) fn images_rule(images: Vec<Image>) -> Rule {
    mock!(aws_sdk_ec2::Client::describe_images).then_output(move || {
        DescribeImagesOutput::builder()
            .set_images(Some(images.clone()))
            .build()
    })
}

/// Rules for an account where nothing uses any image, no storage is left over (the
/// snapshots listed are those of `image`'s images, untagged, with no description), and
/// marks are accepted.
fn no_usage() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_ec2::Client::describe_instances)
            .then_output(|| DescribeInstancesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_launch_templates)
            .then_output(|| DescribeLaunchTemplatesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(|| {
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(
                    (1..=5)
                        .map(|n| {
                            aws_sdk_ec2::types::Snapshot::builder()
                                .snapshot_id(format!("snap-{n}"))
                                .build()
                        })
                        .collect(),
                ))
                .build()
        }),
        mock!(aws_sdk_ec2::Client::create_tags).then_output(|| CreateTagsOutput::builder().build()),
    ]
}

fn unshared() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_image_attribute)
        .then_output(|| DescribeImageAttributeOutput::builder().build())
}

fn no_launch_configurations() -> aws_sdk_autoscaling::Client {
    let rule = mock!(aws_sdk_autoscaling::Client::describe_launch_configurations).then_output(
        || {
            aws_sdk_autoscaling::operation::describe_launch_configurations::DescribeLaunchConfigurationsOutput::builder()
                .set_launch_configurations(Some(vec![]))
                .build()
        },
    );
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
        aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput::builder()
            .set_auto_scaling_groups(Some(vec![]))
            .build()
    });
    mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&rule, &groups])
}

fn no_compute_environments() -> aws_sdk_batch::Client {
    let rule = mock!(aws_sdk_batch::Client::describe_compute_environments).then_output(|| {
        aws_sdk_batch::operation::describe_compute_environments::DescribeComputeEnvironmentsOutput::builder().build()
    });
    mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&rule])
}

fn no_bin_rules() -> aws_sdk_rbin::Client {
    let rule = mock!(aws_sdk_rbin::Client::list_rules)
        .then_output(|| aws_sdk_rbin::operation::list_rules::ListRulesOutput::builder().build());
    mock_client!(aws_sdk_rbin, RuleMode::MatchAny, [&rule])
}

fn no_recipes() -> aws_sdk_imagebuilder::Client {
    let rule = mock!(aws_sdk_imagebuilder::Client::list_image_recipes).then_output(|| {
        aws_sdk_imagebuilder::operation::list_image_recipes::ListImageRecipesOutput::builder()
            .build()
    });
    mock_client!(aws_sdk_imagebuilder, RuleMode::MatchAny, [&rule])
}

fn clients(ec2: aws_sdk_ec2::Client, ssm: aws_sdk_ssm::Client) -> (RegionClients, Arc<ApiCalls>) {
    clients_counting(ec2, ssm, Arc::new(ApiCalls::default()))
}

fn clients_counting(
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    calls: Arc<ApiCalls>,
) -> (RegionClients, Arc<ApiCalls>) {
    let s3_rule = mock!(aws_sdk_s3::Client::get_object).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        )
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&s3_rule]);
    (
        RegionClients {
            cloudformation: CloudFormation::new(cloudformation(&[]), calls.clone()),
            emr: Emr::new(emr(&[]), calls.clone()),
            reference_objects: ReferenceObjects::new(s3.clone(), calls.clone()),
            region: "us-east-1".into(),
            ec2: Ec2::new(ec2, calls.clone()),
            autoscaling: AutoScaling::new(no_launch_configurations(), calls.clone()),
            ssm: Ssm::new(ssm, calls.clone()),
            batch: Batch::new(no_compute_environments(), calls.clone()),
            imagebuilder: ImageBuilder::new(no_recipes(), calls.clone()),
            rbin: Rbin::new(no_bin_rules(), calls.clone()),
            s3: S3::new(s3, calls.clone()),
        },
        calls,
    )
}

/// An account whose EC2 answers `extra` first, then: nothing in use, nothing shared.
pub(crate) fn account(extra: &[&Rule]) -> (RegionClients, Arc<ApiCalls>) {
    let shared = unshared();
    let usage = no_usage();
    let quiet = quiet_ec2_sources();
    let mut rules: Vec<&Rule> = extra.to_vec();
    rules.push(&shared);
    rules.extend(usage.iter());
    rules.extend(quiet.iter());
    // As in production, a throttle counter sees every attempt before the SDK retries.
    let calls = Arc::new(ApiCalls::default());
    let counted = calls.clone();
    let ec2 = mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        rules.iter().copied(),
        move |c| c
            .retry_config(retrying())
            .interceptor(ThrottleCounter(counted.clone()))
    );
    clients_counting(ec2, no_ssm(), calls)
}

fn no_ssm() -> aws_sdk_ssm::Client {
    let rule = mock!(aws_sdk_ssm::Client::get_parameter).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        )
    });
    ssm(&[&rule])
}

pub(crate) fn policy() -> Policy {
    Policy::from_json(r#"{"dry_run": false, "retention": {"min_age_days": 30}}"#).unwrap()
}

/// A sink that keeps what it is given, in order; with a log, it also writes
/// `enqueue N` there for each call, N jobs at a time.
#[derive(Default)]
struct Collect {
    jobs: std::sync::Mutex<Vec<CleanupJob>>,
    batch: usize,
    log: Option<Log>,
}

type Log = Arc<std::sync::Mutex<Vec<String>>>;

impl Collect {
    fn take(&self) -> Vec<CleanupJob> {
        std::mem::take(&mut self.jobs.lock().unwrap())
    }
}

impl CleanupSink for Collect {
    fn batch_size(&self) -> usize {
        self.batch.max(1)
    }

    async fn enqueue(&self, jobs: Vec<CleanupJob>) -> Vec<(CleanupJob, AwsError)> {
        if let Some(log) = &self.log {
            log.lock().unwrap().push(format!("enqueue {}", jobs.len()));
        }
        self.jobs.lock().unwrap().extend(jobs);
        Vec::new()
    }
}

pub(crate) async fn sweep(c: &RegionClients, policy: &Policy) -> (RegionReport, Vec<CleanupJob>) {
    let queue = Collect::default();
    let cfg = ExecConfig {
        dry_run: policy.dry_run,
        ..Default::default()
    };
    let report = sweep_region(
        policy,
        "us-east-1",
        parse_instant(crate::NOW).unwrap(),
        c,
        &queue,
        &cfg,
    )
    .await;
    (report, queue.take())
}

pub(crate) fn outcome(r: &RegionReport, id: &str) -> Option<Outcome> {
    r.images.iter().find(|i| i.image_id == id).unwrap().outcome
}

#[tokio::test]
async fn describe_images_follows_every_page_with_the_right_filters() {
    let page1 = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| {
            r.next_token().is_none()
                && r.owners() == ["self"]
                && r.include_disabled() == Some(true)
                && r.max_results() == Some(1000)
        })
        .then_output(|| {
            DescribeImagesOutput::builder()
                .images(image("ami-1", "a", "2025-01-01T00:00:00.000Z").build())
                .next_token("page-2")
                .build()
        });
    let page2 = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            DescribeImagesOutput::builder()
                .images(image("ami-2", "b", "2025-01-02T00:00:00.000Z").build())
                .next_token("")
                .build()
        });
    let calls = Arc::new(ApiCalls::default());
    let ec2 = Ec2::new(ec2(&[&page1, &page2]), calls.clone());
    let images = ec2.list_images().await.unwrap();
    let ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["ami-1", "ami-2"]);
    assert_eq!(images[0].snapshots[0].id, "snap-1");
    assert_eq!(page1.num_calls(), 1);
    assert_eq!(page2.num_calls(), 1);
    assert_eq!(calls.snapshot()["DescribeImages"], 2);
}

/// What `selection.match` reads comes from DescribeImages as EC2 spells it; a Linux
/// image has no `Platform` and an old one no ancestry, and they stay absent.
#[tokio::test]
async fn describe_images_keeps_the_attributes_conditions_read() {
    use aws_sdk_ec2::types::{
        ArchitectureValues, BootModeValues, ImageTypeValues, PlatformValues, VirtualizationType,
    };
    let windows = image("ami-1", "win", "2025-01-01T00:00:00.000Z")
        .description("ERP host")
        .architecture(ArchitectureValues::X8664)
        .platform(PlatformValues::Windows)
        .virtualization_type(VirtualizationType::Hvm)
        .boot_mode(BootModeValues::Uefi)
        .image_type(ImageTypeValues::Machine)
        .source_image_id("ami-0source")
        .source_image_region("eu-west-1")
        .build();
    let linux = image("ami-2", "lin", "2025-01-02T00:00:00.000Z")
        .architecture(ArchitectureValues::Arm64)
        .build();
    let rule = images_rule(vec![windows, linux]);
    let ec2 = Ec2::new(ec2(&[&rule]), Arc::new(ApiCalls::default()));
    let images = ec2.list_images().await.unwrap();
    let w = &images[0].attributes;
    assert_eq!(w.description.as_deref(), Some("ERP host"));
    assert_eq!(w.architecture.as_deref(), Some("x86_64"));
    assert_eq!(w.platform.as_deref(), Some("windows"));
    assert_eq!(w.virtualization.as_deref(), Some("hvm"));
    assert_eq!(w.boot_mode.as_deref(), Some("uefi"));
    assert_eq!(w.image_type.as_deref(), Some("machine"));
    assert_eq!(w.source_image_id.as_deref(), Some("ami-0source"));
    assert_eq!(w.source_region.as_deref(), Some("eu-west-1"));
    let l = &images[1].attributes;
    assert_eq!(l.architecture.as_deref(), Some("arm64"));
    assert_eq!(
        (l.platform.as_ref(), l.source_image_id.as_ref()),
        (None, None)
    );
}

#[tokio::test]
async fn an_unusable_image_in_the_response_stops_the_region_before_any_change() {
    let bad = images_rule(vec![
        image("ami-1", "a", "2025-01-01T00:00:00.000Z").build(),
        image("ami-2", "b", "not a date").build(),
    ]);
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&bad, &dereg]);
    let (report, jobs) = sweep(&c, &policy()).await;
    let error = report.error.unwrap();
    assert!(error.contains("nothing was changed"), "{error}");
    assert!(
        error.contains("ami-2: CreationDate \"not a date\""),
        "{error}"
    );
    assert_eq!(dereg.num_calls(), 0);
    assert!(jobs.is_empty());
}

#[tokio::test]
async fn protection_values_are_honoured_and_cooldowns_expire() {
    let images = images_rule(vec![
        image("ami-1", "on", "2025-01-01T00:00:00.000Z")
            .deregistration_protection("enabled")
            .build(),
        image("ami-2", "cooldown", "2025-01-01T00:00:00.000Z")
            .deregistration_protection("enabled-with-cooldown")
            .build(),
        image("ami-3", "cooling", "2025-01-01T00:00:00.000Z")
            .deregistration_protection("disabled after 2026-11-26T12:00:00.000Z")
            .build(),
        image("ami-4", "cooled", "2025-01-01T00:00:00.000Z")
            .deregistration_protection("disabled after 2026-11-25T12:00:00.000Z")
            .build(),
        image("ami-5", "off", "2025-01-01T00:00:00.000Z")
            .deregistration_protection("disabled")
            .build(),
    ]);
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&images, &dereg]);
    let (report, jobs) = sweep(&c, &policy()).await;
    for id in ["ami-1", "ami-2", "ami-3"] {
        assert_eq!(outcome(&report, id), None, "{id} must not be touched");
    }
    assert_eq!(outcome(&report, "ami-4"), Some(Outcome::Deregistered));
    assert_eq!(outcome(&report, "ami-5"), Some(Outcome::Deregistered));
    assert_eq!(dereg.num_calls(), 2);
    assert_eq!(jobs.len(), 2);
}

#[tokio::test]
async fn aws_backup_refusals_are_skips_and_gone_images_are_done() {
    let images = images_rule(vec![
        image("ami-1", "backup-copy", "2025-01-01T00:00:00.000Z").build(),
        image("ami-2", "gone", "2025-01-01T00:00:00.000Z").build(),
        image("ami-3", "broken", "2025-01-01T00:00:00.000Z").build(),
        image("ami-4", "ok", "2025-01-01T00:00:00.000Z").build(),
    ]);
    let backup = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some("ami-1"))
        .sequence()
        .http_status(
            400,
            Some(ec2_error(
                "AuthFailure",
                "This image is managed by AWS Backup and cannot be deregistered.",
            )),
        )
        .build();
    let gone = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some("ami-2"))
        .sequence()
        .http_status(
            400,
            Some(ec2_error(
                "InvalidAMIID.Unavailable",
                "The image ID 'ami-2' is no longer available",
            )),
        )
        .build();
    let broken = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some("ami-3"))
        .sequence()
        .http_status(
            400,
            Some(ec2_error("UnauthorizedOperation", "You are not authorized")),
        )
        .build();
    let ok = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some("ami-4"))
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&images, &backup, &gone, &broken, &ok]);
    let (report, jobs) = sweep(&c, &policy()).await;
    assert_eq!(
        outcome(&report, "ami-1"),
        Some(Outcome::SkippedBackupManaged)
    );
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::AlreadyGone));
    assert_eq!(outcome(&report, "ami-3"), Some(Outcome::Failed));
    let err = report
        .images
        .iter()
        .find(|i| i.image_id == "ami-3")
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert_eq!(
        err,
        "DeregisterImage: UnauthorizedOperation: You are not authorized"
    );
    assert_eq!(outcome(&report, "ami-4"), Some(Outcome::Deregistered));
    // Gone is gone: the image found already gone frees its snapshot like the one this
    // run deregistered; the skipped and the failed ones keep theirs.
    let targets: Vec<String> = jobs.iter().map(|j| j.target_label()).collect();
    assert_eq!(targets, ["snap-2", "snap-4"]);
}

#[tokio::test]
async fn throttling_is_retried_by_the_pacer_alone_until_it_succeeds_and_counted() {
    let images = images_rule(vec![image("ami-1", "a", "2025-01-01T00:00:00.000Z").build()]);
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .sequence()
        .http_status(
            503,
            Some(ec2_error("RequestLimitExceeded", "Request limit exceeded.")),
        )
        .output(|| DeregisterImageOutput::builder().build())
        .build();
    let (c, calls) = account(&[&images, &dereg]);
    let (report, _) = sweep(&c, &policy()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    assert_eq!(dereg.num_calls(), 2);
    assert_eq!(calls.throttles(), 1);
    // The pacer, not the SDK, retried: it saw the throttle (and slowed down).
    assert_eq!(report.pacing["deregister_image"].throttles, 1);
    assert!(report.pacing["deregister_image"].end_per_second < 5.0);
    assert_eq!(calls.snapshot()["DeregisterImage"], 2, "two calls");
}

#[tokio::test]
async fn a_throttled_listing_is_retried_by_the_pacer_alone_past_the_sdks_attempts() {
    let one = vec![image("ami-1", "a", "2025-01-01T00:00:00.000Z").build()];
    let throttled = || {
        (
            503,
            Some(ec2_error("RequestLimitExceeded", "Request limit exceeded.")),
        )
    };
    // Four refusals in a row: the SDK here makes three attempts.
    let listing = mock!(aws_sdk_ec2::Client::describe_images)
        .sequence()
        .http_status(throttled().0, throttled().1)
        .times(4)
        .output(move || {
            DescribeImagesOutput::builder()
                .set_images(Some(one.clone()))
                .build()
        })
        .build();
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, calls) = account(&[&listing, &dereg]);
    let (report, _) = sweep(&c, &policy()).await;
    assert_eq!(report.error, None);
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Deregistered));
    // Five calls, each refusal seen by the Describe pacer: no SDK retries beneath it.
    assert_eq!(listing.num_calls(), 5);
    assert_eq!(report.pacing["describe"].throttles, 4);
    assert_eq!(calls.snapshot()["DescribeImages"], 5);
}

#[tokio::test]
async fn launch_permissions_to_other_accounts_keep_images() {
    let images = images_rule(vec![
        image("ami-1", "to-account", "2025-01-01T00:00:00.000Z").build(),
        image("ami-2", "to-org", "2025-01-01T00:00:00.000Z").build(),
        image("ami-3", "public", "2025-01-01T00:00:00.000Z").build(),
        image("ami-4", "private", "2025-01-01T00:00:00.000Z").build(),
        image("ami-5", "unknown", "2025-01-01T00:00:00.000Z").build(),
    ]);
    let perms = mock!(aws_sdk_ec2::Client::describe_image_attribute).then_compute_response(|r| {
        use aws_smithy_mocks::MockResponse;
        let grant = match r.image_id() {
            Some("ami-1") => Some(LaunchPermission::builder().user_id("111122223333").build()),
            Some("ami-2") => Some(
                LaunchPermission::builder()
                    .organization_arn("arn:aws:organizations::111122223333:organization/o-1")
                    .build(),
            ),
            Some("ami-3") => Some(
                LaunchPermission::builder()
                    .group(PermissionGroup::All)
                    .build(),
            ),
            Some("ami-5") => {
                return MockResponse::Http(aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                    aws_smithy_types::body::SdkBody::from(ec2_error(
                        "UnauthorizedOperation",
                        "not allowed",
                    )),
                ))
            }
            _ => None,
        };
        MockResponse::Output(
            DescribeImageAttributeOutput::builder()
                .set_launch_permissions(grant.map(|g| vec![g]))
                .build(),
        )
    });
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, calls) = account(&[&images, &perms, &dereg]);
    let (report, _) = sweep(&c, &policy()).await;
    for id in ["ami-1", "ami-2", "ami-3", "ami-5"] {
        let img = report.images.iter().find(|i| i.image_id == id).unwrap();
        assert_eq!(img.reasons[0].as_str(), "shared", "{id}");
        assert_eq!(img.outcome, None);
    }
    assert_eq!(outcome(&report, "ami-4"), Some(Outcome::Deregistered));
    assert_eq!(dereg.num_calls(), 1);
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("ami-5") && w.contains("kept as shared")));
    assert_eq!(calls.snapshot()["DescribeImageAttribute"], 5);
}

fn template_rules(image_ref: &'static str) -> Vec<Rule> {
    vec![
        mock!(aws_sdk_ec2::Client::create_tags).then_output(|| CreateTagsOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_snapshots)
            .then_output(|| DescribeSnapshotsOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_instances)
            .then_output(|| DescribeInstancesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_launch_templates).then_output(|| {
            DescribeLaunchTemplatesOutput::builder()
                .launch_templates(
                    LaunchTemplate::builder()
                        .launch_template_id("lt-1")
                        .launch_template_name("golden")
                        .build(),
                )
                .build()
        }),
        mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
            .match_requests(|r| r.launch_template_id() == Some("lt-1") && r.versions().is_empty())
            .then_output(move || {
                DescribeLaunchTemplateVersionsOutput::builder()
                    .launch_template_versions(
                        LaunchTemplateVersion::builder()
                            .launch_template_id("lt-1")
                            .version_number(1)
                            .launch_template_data(
                                ResponseLaunchTemplateData::builder()
                                    .image_id("ami-1")
                                    .build(),
                            )
                            .build(),
                    )
                    .launch_template_versions(
                        LaunchTemplateVersion::builder()
                            .launch_template_id("lt-1")
                            .version_number(2)
                            .launch_template_data(
                                ResponseLaunchTemplateData::builder()
                                    .image_id(image_ref)
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            }),
    ]
}

#[tokio::test]
async fn resolve_ssm_launch_template_ids_protect_the_image_they_name() {
    let images = images_rule(vec![
        image("ami-1", "v1", "2025-01-01T00:00:00.000Z").build(),
        image("ami-2", "via-ssm", "2025-01-01T00:00:00.000Z").build(),
        image("ami-3", "free", "2025-01-01T00:00:00.000Z").build(),
    ]);
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let shared = unshared();
    let templates = template_rules("resolve:ssm:/golden/web");
    let mut rules = vec![&images, &dereg, &shared];
    rules.extend(templates.iter());
    let param = mock!(aws_sdk_ssm::Client::get_parameter)
        .match_requests(|r| r.name() == Some("/golden/web"))
        .then_output(|| {
            aws_sdk_ssm::operation::get_parameter::GetParameterOutput::builder()
                .parameter(
                    aws_sdk_ssm::types::Parameter::builder()
                        .name("/golden/web")
                        .value("ami-2")
                        .build(),
                )
                .build()
        });
    let (c, _) = clients(ec2(&rules), ssm(&[&param]));
    let (report, _) = sweep(&c, &policy()).await;
    let reason = |id: &str| {
        report
            .images
            .iter()
            .find(|i| i.image_id == id)
            .unwrap()
            .reasons[0]
            .as_str()
    };
    assert_eq!(
        reason("ami-1"),
        "in_use",
        "an old template version still counts"
    );
    assert_eq!(reason("ami-2"), "in_use");
    assert_eq!(outcome(&report, "ami-3"), Some(Outcome::Deregistered));
    assert_eq!(param.num_calls(), 1);
}

#[tokio::test]
async fn an_unreadable_ssm_parameter_stops_the_region() {
    let images = images_rule(vec![
        image("ami-3", "free", "2025-01-01T00:00:00.000Z").build()
    ]);
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let templates = template_rules("resolve:ssm:/golden/web");
    let mut rules = vec![&images, &dereg];
    rules.extend(templates.iter());
    let denied = mock!(aws_sdk_ssm::Client::get_parameter)
        .sequence()
        .http_status(
            400,
            Some(
                r#"{"__type":"AccessDeniedException","message":"not authorized to perform ssm:GetParameter"}"#
                    .to_string(),
            ),
        )
        .build();
    let (c, _) = clients(ec2(&rules), ssm(&[&denied]));
    let (report, _) = sweep(&c, &policy()).await;
    let error = report.error.expect("region fails");
    assert!(
        error.contains("GetParameter: AccessDeniedException"),
        "{error}"
    );
    assert_eq!(dereg.num_calls(), 0);
}

/// A progress sink that records every step.
fn recorder() -> (ProgressSink, Arc<std::sync::Mutex<Vec<Progress>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    (
        ProgressSink::new(move |p| sink_seen.lock().unwrap().push(p.clone())),
        seen,
    )
}

fn snapshot_job(id: &str) -> CleanupJob {
    CleanupJob {
        version: JOB_VERSION,
        account: None,
        region: "us-east-1".into(),
        image_id: "ami-1".into(),
        target: JobTarget::DeleteSnapshot {
            snapshot_id: id.into(),
        },
        mandate: None,
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(5),
        ..Default::default()
    }
}

#[tokio::test]
async fn snapshots_in_use_are_retried_and_missing_ones_are_done() {
    let in_use_then_ok = mock!(aws_sdk_ec2::Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-1"))
        .sequence()
        .http_status(
            400,
            Some(ec2_error(
                "InvalidSnapshot.InUse",
                "The snapshot snap-1 is currently in use by ami-1",
            )),
        )
        .output(|| aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build())
        .build();
    let missing = mock!(aws_sdk_ec2::Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-2"))
        .sequence()
        .http_status(
            400,
            Some(ec2_error(
                "InvalidSnapshot.NotFound",
                "The snapshot 'snap-2' does not exist.",
            )),
        )
        .build();
    let stuck = mock!(aws_sdk_ec2::Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-3"))
        .sequence()
        .http_status(
            400,
            Some(ec2_error(
                "InvalidSnapshot.InUse",
                "The snapshot snap-3 is currently in use by ami-9",
            )),
        )
        .repeatedly()
        .build();
    // Verified first, as every job is: snap-1 and snap-3 carry ami-1's mark, and the
    // listing no longer has snap-2 (already gone); nothing else needs them.
    let listed = snapshots_rule(vec![
        marked_snapshot("snap-1", "ami-1"),
        marked_snapshot("snap-3", "ami-1"),
    ]);
    let none = images_rule(vec![]);
    let bin = mock!(aws_sdk_ec2::Client::list_images_in_recycle_bin)
        .then_output(|| ListImagesInRecycleBinOutput::builder().build());
    let (c, _) = account(&[&in_use_then_ok, &missing, &stuck, &listed, &none, &bin]);
    let (sink, seen) = recorder();
    let jobs = ["snap-1", "snap-2", "snap-3"].map(snapshot_job).to_vec();
    let now = parse_instant(crate::NOW).unwrap();
    let reports =
        crate::run_in_process(&c, &policy(), &[], &fast_retry(), Some(&sink), jobs, now).await;
    let steps: Vec<String> = seen.lock().unwrap().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        steps,
        [
            "us-east-1: cleanup jobs 1/3",
            "us-east-1: cleanup jobs 2/3",
            "us-east-1: cleanup jobs 3/3"
        ]
    );
    let by_target = |t: &str| reports.iter().find(|r| r.target == t).unwrap();
    assert_eq!(by_target("snap-1").outcome, JobOutcome::Deleted);
    assert_eq!(by_target("snap-1").attempts, 2);
    assert_eq!(by_target("snap-2").outcome, JobOutcome::AlreadyGone);
    assert_eq!(by_target("snap-3").outcome, JobOutcome::Failed);
    assert_eq!(by_target("snap-3").attempts, 3);
    assert!(by_target("snap-3")
        .error
        .as_deref()
        .unwrap()
        .contains("InvalidSnapshot.InUse"));
}

fn marked_snapshot(id: &str, image: &str) -> aws_sdk_ec2::types::Snapshot {
    aws_sdk_ec2::types::Snapshot::builder()
        .snapshot_id(id)
        .volume_size(8)
        .description(format!("Created by CreateImage(i-1) for {image}"))
        .tags(
            Tag::builder()
                .key(ami_sweeper::orphans::STORAGE_MARK)
                .value(image)
                .build(),
        )
        .build()
}

fn snapshots_rule(snapshots: Vec<aws_sdk_ec2::types::Snapshot>) -> Rule {
    mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(move || {
        DescribeSnapshotsOutput::builder()
            .set_snapshots(Some(snapshots.clone()))
            .build()
    })
}

#[tokio::test]
async fn marked_storage_of_an_ami_in_the_recycle_bin_waits_and_the_rest_is_reclaimed() {
    let images = images_rule(vec![]);
    let snapshots = snapshots_rule(vec![
        marked_snapshot("snap-a", "ami-1"),
        marked_snapshot("snap-b", "ami-inbin"),
    ]);
    // The whole bin, one page: it also holds an image of no interest here.
    let bin = mock!(aws_sdk_ec2::Client::list_images_in_recycle_bin)
        .match_requests(|r| r.image_ids().is_empty() && r.max_results() == Some(1000))
        .then_output(|| {
            ListImagesInRecycleBinOutput::builder()
                .images(ImageRecycleBinInfo::builder().image_id("ami-inbin").build())
                .images(ImageRecycleBinInfo::builder().image_id("ami-other").build())
                .build()
        });
    let (c, calls) = account(&[&images, &snapshots, &bin]);
    let (report, jobs) = sweep(&c, &policy()).await;
    assert_eq!(report.error, None);
    let targets: Vec<String> = jobs.iter().map(|j| j.target_label()).collect();
    assert_eq!(targets, ["snap-a"]);
    let held = report
        .reconciled
        .iter()
        .find(|d| d.snapshot_id == "snap-b")
        .unwrap();
    assert_eq!(
        held.reason,
        Some(ami_sweeper::orphans::Keep::ImageInRecycleBin)
    );
    assert_eq!(report.orphans.marked, 1);
    assert_eq!(report.orphans.marked_gib, 8);
    assert_eq!(calls.snapshot()["ListImagesInRecycleBin"], 1);
}

#[tokio::test]
async fn an_image_whose_storage_cannot_be_marked_is_not_deregistered() {
    let images = images_rule(vec![image("ami-1", "a", "2025-01-01T00:00:00.000Z").build()]);
    let refused = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|r| {
            r.resources() == ["snap-1"]
                && r.tags()[0].key() == Some(ami_sweeper::orphans::STORAGE_MARK)
                && r.tags()[0].value() == Some("ami-1")
        })
        .sequence()
        .http_status(
            403,
            Some(ec2_error("UnauthorizedOperation", "not authorized")),
        )
        .build();
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&images, &refused, &dereg]);
    let (report, jobs) = sweep(&c, &policy()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Failed));
    assert_eq!(refused.num_calls(), 1);
    assert_eq!(dereg.num_calls(), 0);
    assert!(jobs.is_empty());
}

#[tokio::test]
async fn an_image_that_vanishes_before_its_permission_lookup_is_gone_and_frees_its_storage() {
    let images = images_rule(vec![image("ami-1", "a", "2025-01-01T00:00:00.000Z").build()]);
    let vanished = mock!(aws_sdk_ec2::Client::describe_image_attribute)
        .sequence()
        .http_status(
            400,
            Some(ec2_error(
                "InvalidAMIID.Unavailable",
                "The image ID 'ami-1' is no longer available",
            )),
        )
        .build();
    let mark = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|r| r.resources() == ["snap-1"])
        .then_output(|| CreateTagsOutput::builder().build());
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&images, &vanished, &mark, &dereg]);
    let (report, jobs) = sweep(&c, &policy()).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::AlreadyGone));
    assert_eq!(dereg.num_calls(), 0, "nothing left to deregister");
    assert_eq!(
        mark.num_calls(),
        1,
        "its storage is marked before the job is queued"
    );
    let targets: Vec<String> = jobs.iter().map(|j| j.target_label()).collect();
    assert_eq!(targets, ["snap-1"]);
}

fn reference(image: &str, kind: &str, arn: &str) -> aws_sdk_ec2::types::ImageReference {
    aws_sdk_ec2::types::ImageReference::builder()
        .image_id(image)
        .resource_type(kind.into())
        .arn(arn)
        .build()
}

#[tokio::test]
async fn image_references_follow_every_page_and_name_each_resource_type() {
    use ami_sweeper::model::UsageKind;
    use aws_sdk_ec2::operation::describe_image_references::DescribeImageReferencesOutput;
    use aws_sdk_ec2::types::ImageReferenceResourceType as T;
    let first = mock!(aws_sdk_ec2::Client::describe_image_references)
        .match_requests(|r| {
            r.next_token().is_none()
                && r.include_all_resource_types() == Some(true)
                && r.image_ids() == ["ami-1", "ami-2"]
        })
        .then_output(|| {
            DescribeImageReferencesOutput::builder()
                .image_references(reference(
                    "ami-1",
                    "ec2:Instance",
                    "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
                ))
                .image_references(reference(
                    "ami-1",
                    "ec2:LaunchTemplate",
                    "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1",
                ))
                .image_references(reference(
                    "ami-2",
                    "ssm:Parameter",
                    "arn:aws:ssm:us-east-1:123456789012:parameter/golden",
                ))
                .next_token("page-2")
                .build()
        });
    let second = mock!(aws_sdk_ec2::Client::describe_image_references)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            DescribeImageReferencesOutput::builder()
                .image_references(reference(
                    "ami-2",
                    "imagebuilder:ImageRecipe",
                    "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/r/1.0.0",
                ))
                .image_references(reference(
                    "ami-2",
                    "imagebuilder:ContainerRecipe",
                    "arn:aws:imagebuilder:us-east-1:123456789012:container-recipe/c/1.0.0",
                ))
                .image_references(reference(
                    "ami-2",
                    "ec2:SomethingNew",
                    "arn:aws:ec2:us-east-1:123456789012:new/x",
                ))
                .build()
        });
    let calls = Arc::new(ApiCalls::default());
    let adapter = Ec2::new(ec2(&[&first, &second]), calls.clone());
    let ids = ["ami-1".to_string(), "ami-2".to_string()];
    let found = adapter.image_references(&ids, true).await.unwrap();
    let kinds: Vec<(&str, UsageKind)> = found.iter().map(|(i, u)| (i.as_str(), u.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("ami-1", UsageKind::Instance),
            ("ami-1", UsageKind::LaunchTemplate),
            ("ami-2", UsageKind::SsmParameter),
            ("ami-2", UsageKind::ImageRecipe),
            ("ami-2", UsageKind::ContainerRecipe),
            ("ami-2", UsageKind::OtherReference),
        ]
    );
    assert!(found[0].1.id.ends_with("instance/i-1"));
    assert!(found[5].1.id.contains("(ec2:SomethingNew)"));
    assert_eq!(calls.snapshot()["DescribeImageReferences"], 2);

    // Without `templates`, launch templates are left to the policy: the request names
    // the other four types and not IncludeAllResourceTypes.
    let narrow = mock!(aws_sdk_ec2::Client::describe_image_references)
        .match_requests(|r| {
            let types: Vec<&T> = r
                .resource_types()
                .iter()
                .filter_map(|t| t.resource_type())
                .collect();
            r.include_all_resource_types().is_none()
                && types.len() == 4
                && !types.contains(&&T::Ec2LaunchTemplate)
        })
        .then_output(|| DescribeImageReferencesOutput::builder().build());
    let adapter = Ec2::new(ec2(&[&narrow]), Arc::new(ApiCalls::default()));
    assert!(adapter
        .image_references(&ids, false)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(narrow.num_calls(), 1);
}

#[tokio::test]
async fn a_reference_keeps_the_image_and_a_denied_check_stops_the_region() {
    use aws_sdk_ec2::operation::describe_image_references::DescribeImageReferencesOutput;
    let images = images_rule(vec![
        image("ami-1", "a", "2025-01-01T00:00:00.000Z").build(),
        image("ami-2", "b", "2025-01-02T00:00:00.000Z").build(),
    ]);
    let refs = mock!(aws_sdk_ec2::Client::describe_image_references)
        .match_requests(|r| r.image_ids().len() <= 10)
        .then_output(|| {
            DescribeImageReferencesOutput::builder()
                .image_references(reference(
                    "ami-1",
                    "ec2:Instance",
                    "arn:aws:ec2:us-east-1:123456789012:instance/i-9",
                ))
                .build()
        });
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&images, &refs, &dereg]);
    let (report, _) = sweep(&c, &policy()).await;
    let kept = report
        .images
        .iter()
        .find(|i| i.image_id == "ami-1")
        .unwrap();
    assert_eq!(kept.reasons[0].as_str(), "in_use");
    assert_eq!(outcome(&report, "ami-2"), Some(Outcome::Deregistered));
    assert_eq!(dereg.num_calls(), 1);

    let denied = mock!(aws_sdk_ec2::Client::describe_image_references)
        .sequence()
        .http_status(
            403,
            Some(ec2_error(
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
            )),
        )
        .build();
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (c, _) = account(&[&images, &denied, &dereg]);
    let (report, jobs) = sweep(&c, &policy()).await;
    let err = report.error.unwrap();
    assert!(
        err.contains("DescribeImageReferences: UnauthorizedOperation"),
        "{err}"
    );
    assert_eq!(dereg.num_calls(), 0);
    assert!(jobs.is_empty());
}

#[tokio::test]
async fn image_recipes_follow_every_page_and_count_only_ami_parents() {
    use aws_sdk_imagebuilder::operation::list_image_recipes::ListImageRecipesOutput;
    use aws_sdk_imagebuilder::types::ImageRecipeSummary;
    let recipe = |arn: &str, parent: &str| {
        ImageRecipeSummary::builder()
            .arn(arn)
            .name(arn)
            .parent_image(parent)
            .build()
    };
    let first = mock!(aws_sdk_imagebuilder::Client::list_image_recipes)
        .match_requests(|r| r.next_token().is_none())
        .then_output(move || {
            ListImageRecipesOutput::builder()
                .image_recipe_summary_list(recipe("arn:r1", "ami-0123456789abcdef0"))
                .image_recipe_summary_list(recipe(
                    "arn:r2",
                    "arn:aws:imagebuilder:us-east-1:aws:image/amazon-linux-2023-x86/x.x.x",
                ))
                .next_token("more")
                .build()
        });
    let second = mock!(aws_sdk_imagebuilder::Client::list_image_recipes)
        .match_requests(|r| r.next_token() == Some("more"))
        .then_output(move || {
            ListImageRecipesOutput::builder()
                .image_recipe_summary_list(recipe("arn:r3", "ami-11111111"))
                .build()
        });
    let client = mock_client!(aws_sdk_imagebuilder, RuleMode::MatchAny, [&first, &second]);
    let usage = ImageBuilder::new(client, Arc::new(ApiCalls::default()))
        .recipe_parents()
        .await
        .unwrap();
    assert_eq!(usage.users("ami-0123456789abcdef0")[0].id, "arn:r1");
    assert_eq!(usage.users("ami-11111111")[0].id, "arn:r3");
    assert_eq!(
        usage.image_count(),
        2,
        "an Image Builder image ARN is no AMI of ours"
    );
}

#[tokio::test]
async fn recycle_bin_rules_follow_pages_keep_tags_and_locks_and_skip_pending_ones() {
    use ami_sweeper::recycle_bin::{BinResource, TagMatch};
    use aws_sdk_rbin::operation::get_rule::GetRuleOutput;
    use aws_sdk_rbin::operation::list_rules::ListRulesOutput;
    use aws_sdk_rbin::types::{
        LockState, ResourceTag, ResourceType, RetentionPeriod, RetentionPeriodUnit, RuleStatus,
        RuleSummary,
    };
    let summary = |id: &str| RuleSummary::builder().identifier(id).build();
    let images_1 = mock!(aws_sdk_rbin::Client::list_rules)
        .match_requests(|r| {
            r.resource_type() == Some(&ResourceType::Ec2Image) && r.next_token().is_none()
        })
        .then_output(move || {
            ListRulesOutput::builder()
                .rules(summary("region-7d"))
                .rules(summary("prod-30d"))
                .next_token("more")
                .build()
        });
    let images_2 = mock!(aws_sdk_rbin::Client::list_rules)
        .match_requests(|r| r.next_token() == Some("more"))
        .then_output(move || {
            ListRulesOutput::builder()
                .rules(summary("new-pending"))
                .build()
        });
    let snapshots = mock!(aws_sdk_rbin::Client::list_rules)
        .match_requests(|r| r.resource_type() == Some(&ResourceType::EbsSnapshot))
        .then_output(move || {
            ListRulesOutput::builder()
                .rules(summary("snaps-14d"))
                .build()
        });
    let period = |d| {
        RetentionPeriod::builder()
            .retention_period_value(d)
            .retention_period_unit(RetentionPeriodUnit::Days)
            .build()
            .unwrap()
    };
    let tag = |k: &str, v: Option<&str>| {
        ResourceTag::builder()
            .resource_tag_key(k)
            .set_resource_tag_value(v.map(str::to_string))
            .build()
            .unwrap()
    };
    let get = |id: &'static str, kind: ResourceType, days: i32, status: RuleStatus| {
        let (period, tag) = (period(days), tag);
        mock!(aws_sdk_rbin::Client::get_rule)
            .match_requests(move |r| r.identifier() == Some(id))
            .then_output(move || {
                let mut b = GetRuleOutput::builder()
                    .identifier(id)
                    .resource_type(kind.clone())
                    .retention_period(period.clone())
                    .status(status.clone());
                b = match id {
                    "region-7d" => b
                        .exclude_resource_tags(tag("scratch", None))
                        .lock_state(LockState::Locked),
                    "prod-30d" => b.resource_tags(tag("env", Some("prod"))),
                    _ => b,
                };
                b.build()
            })
    };
    let rules = [
        get(
            "region-7d",
            ResourceType::Ec2Image,
            7,
            RuleStatus::Available,
        ),
        get(
            "prod-30d",
            ResourceType::Ec2Image,
            30,
            RuleStatus::Available,
        ),
        get(
            "new-pending",
            ResourceType::Ec2Image,
            365,
            RuleStatus::Pending,
        ),
        get(
            "snaps-14d",
            ResourceType::EbsSnapshot,
            14,
            RuleStatus::Available,
        ),
    ];
    let mut all: Vec<&Rule> = vec![&images_1, &images_2, &snapshots];
    all.extend(rules.iter());
    let client = mock_client!(aws_sdk_rbin, RuleMode::MatchAny, all);
    let calls = Arc::new(ApiCalls::default());
    let got = Rbin::new(client, calls.clone()).rules().await.unwrap();
    let ids: Vec<&str> = got.0.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["region-7d", "prod-30d", "snaps-14d"],
        "a pending rule retains nothing yet"
    );
    let region = &got.0[0];
    assert!(region.locked && region.resource_tags.is_empty());
    assert_eq!(
        region.exclude_tags,
        [TagMatch {
            key: "scratch".into(),
            value: None
        }]
    );
    assert_eq!(got.0[1].resource_tags[0].value.as_deref(), Some("prod"));
    assert_eq!(got.0[2].resource, BinResource::Snapshot);
    // The longest matching rule wins: 30 days for prod, 7 otherwise, none for scratch.
    let tags = |k: &str, v: &str| {
        let mut t = ami_sweeper::model::Tags::new();
        t.insert(k, v);
        t
    };
    assert_eq!(
        got.retention(BinResource::Image, Some(&tags("env", "prod"))),
        Some(30)
    );
    assert_eq!(
        got.retention(BinResource::Image, Some(&tags("env", "dev"))),
        Some(7)
    );
    assert_eq!(
        got.retention(BinResource::Image, Some(&tags("scratch", "y"))),
        None
    );
    let snap = calls.snapshot();
    assert_eq!((snap["ListRules"], snap["GetRule"]), (3, 4));
}

#[tokio::test]
async fn unreadable_recycle_bin_rules_stop_the_region_before_any_change() {
    let images = images_rule(vec![image("ami-1", "a", "2025-01-01T00:00:00.000Z").build()]);
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let (mut c, _) = account(&[&images, &dereg]);
    let denied = mock!(aws_sdk_rbin::Client::list_rules)
        .sequence()
        .http_status(
            403,
            Some(r#"{"message":"User is not authorized to perform: rbin:ListRules"}"#.to_string()),
        )
        .build();
    c.rbin = Rbin::new(
        mock_client!(aws_sdk_rbin, RuleMode::MatchAny, [&denied]),
        Arc::new(ApiCalls::default()),
    );
    let (report, jobs) = sweep(&c, &policy()).await;
    let err = report.error.unwrap();
    assert!(
        err.starts_with("inventory failed, nothing was changed: ListRules"),
        "{err}"
    );
    assert_eq!(dereg.num_calls(), 0);
    assert!(jobs.is_empty());
    // With the bin ignored, the rules are not read and the sweep proceeds.
    let ignore = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "recycle_bin": "ignore"}"#,
    )
    .unwrap();
    let (report, _) = sweep(&c, &ignore).await;
    assert_eq!(report.error, None);
    assert_eq!(dereg.num_calls(), 1);
}

#[tokio::test]
async fn retirement_calls_have_ec2s_shapes_and_a_refused_disable_deregisters_nothing() {
    use ami_sweeper::ports::ImageRetirer;
    use ami_sweeper::retire::{RetireStep, DEPRECATED_AT, DISABLED_AT};
    use aws_sdk_ec2::operation::disable_image::DisableImageOutput;
    use aws_sdk_ec2::operation::enable_image_deprecation::EnableImageDeprecationOutput;
    let now = parse_instant(crate::NOW).unwrap();
    let floor = chrono::Utc::now().timestamp();
    let deprecate = mock!(aws_sdk_ec2::Client::enable_image_deprecation)
        .match_requests(move |r| {
            let at = r.deprecate_at().unwrap().secs();
            r.image_id() == Some("ami-1") && at > floor && at % 60 == 0
        })
        .then_output(|| {
            EnableImageDeprecationOutput::builder()
                .r#return(true)
                .build()
        });
    let tagged = |key: &'static str| {
        mock!(aws_sdk_ec2::Client::create_tags)
            .match_requests(move |r| {
                r.resources() == ["ami-1"]
                    && r.tags()[0].key() == Some(key)
                    && r.tags()[0].value() == Some("2026-11-26T00:00:00Z")
            })
            .then_output(|| CreateTagsOutput::builder().build())
    };
    let dep_tag = tagged(DEPRECATED_AT);
    // The disable's one CreateTags also records what the image was (public).
    let dis_tag = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|r| {
            let tags: Vec<_> = r.tags().iter().map(|t| (t.key(), t.value())).collect();
            r.resources() == ["ami-1"]
                && tags
                    == [
                        (Some(DISABLED_AT), Some("2026-11-26T00:00:00Z")),
                        (
                            Some(ami_sweeper::retire::DISABLED_FROM),
                            Some("available public"),
                        ),
                    ]
        })
        .then_output(|| CreateTagsOutput::builder().build());
    let disable = mock!(aws_sdk_ec2::Client::disable_image)
        .match_requests(|r| r.image_id() == Some("ami-1"))
        .then_output(|| DisableImageOutput::builder().r#return(true).build());
    let adapter = Ec2::new(
        ec2(&[&deprecate, &dep_tag, &dis_tag, &disable]),
        Arc::new(ApiCalls::default()),
    );
    adapter
        .retire("ami-1", RetireStep::Deprecate, now)
        .await
        .unwrap();
    adapter
        .retire(
            "ami-1",
            RetireStep::Disable {
                from: ami_sweeper::retire::Before {
                    state: ami_sweeper::retire::Settled::Available,
                    public: true,
                },
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!((deprecate.num_calls(), dep_tag.num_calls()), (1, 1));
    assert_eq!((dis_tag.num_calls(), disable.num_calls()), (1, 1));

    // A sweep whose DisableImage is refused: the image is reported failed, nothing else.
    let images = images_rule(vec![image("ami-1", "a", "2025-01-01T00:00:00.000Z").build()]);
    let refused = mock!(aws_sdk_ec2::Client::disable_image)
        .sequence()
        .http_status(
            403,
            Some(ec2_error("UnauthorizedOperation", "not authorized")),
        )
        .build();
    let image_tag = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|r| r.resources() == ["ami-1"])
        .then_output(|| CreateTagsOutput::builder().build());
    let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let untag = mock!(aws_sdk_ec2::Client::delete_tags)
        .match_requests(|r| r.resources() == ["ami-1"])
        .then_output(|| aws_sdk_ec2::operation::delete_tags::DeleteTagsOutput::builder().build());
    let (c, _) = account(&[&images, &refused, &image_tag, &dereg, &untag]);
    let staged = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "retire": {"disable_for_days": 7}}"#,
    )
    .unwrap();
    let (report, jobs) = sweep(&c, &staged).await;
    assert_eq!(outcome(&report, "ami-1"), Some(Outcome::Failed));
    let err = report.images[0].error.as_deref().unwrap();
    assert!(err.contains("DisableImage: UnauthorizedOperation"), "{err}");
    assert_eq!(image_tag.num_calls(), 1, "the tag is written first");
    assert_eq!(
        untag.num_calls(),
        1,
        "and taken back when EC2 refuses the disable"
    );
    assert_eq!(dereg.num_calls(), 0);
    assert!(jobs.is_empty());
}

/// A `DisableImage` EC2 refused leaves the image available: the `disabled-at`/`disabled-from`
/// tags written just before it must go again. Left behind, they make a later hand-disable
/// (incident response) read as ami-sweeper's own, and the next sweep that no longer
/// condemns the image calls `EnableImage` on it.
#[tokio::test]
async fn a_refused_disable_takes_its_tags_back() {
    use ami_sweeper::ports::ImageRetirer;
    use ami_sweeper::retire::{Before, RetireStep, Settled, DISABLED_AT, DISABLED_FROM};
    use aws_sdk_ec2::operation::delete_tags::DeleteTagsOutput;
    let now = parse_instant(crate::NOW).unwrap();
    let tag = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|r| r.resources() == ["ami-1"])
        .then_output(|| CreateTagsOutput::builder().build());
    let refused = mock!(aws_sdk_ec2::Client::disable_image)
        .sequence()
        .http_status(
            403,
            Some(ec2_error("UnauthorizedOperation", "not authorized")),
        )
        .build();
    let untag = mock!(aws_sdk_ec2::Client::delete_tags)
        .match_requests(|r| {
            let keys: Vec<_> = r.tags().iter().map(|t| t.key()).collect();
            r.resources() == ["ami-1"]
                && keys.contains(&Some(DISABLED_AT))
                && keys.contains(&Some(DISABLED_FROM))
        })
        .then_output(|| DeleteTagsOutput::builder().build());
    let adapter = Ec2::new(
        ec2(&[&tag, &refused, &untag]),
        Arc::new(ApiCalls::default()),
    );
    let from = Before {
        state: Settled::Available,
        public: false,
    };
    let err = adapter
        .retire("ami-1", RetireStep::Disable { from }, now)
        .await
        .unwrap_err();
    assert!(err.is("UnauthorizedOperation"), "{err}");
    assert_eq!(tag.num_calls(), 1);
    assert_eq!(
        untag.num_calls(),
        1,
        "the disable's tags were left on an available image"
    );
}

/// An STS answer: `AssumeRole` credentials, then `GetCallerIdentity` naming `account`.
fn sts_replay(account: &str) -> aws_smithy_http_client::test_util::StaticReplayClient {
    use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
    let response = |body: String| {
        http::Response::builder()
            .status(200)
            .header("content-type", "text/xml")
            .body(aws_smithy_types::body::SdkBody::from(body))
            .unwrap()
    };
    let request = || {
        http::Request::builder()
            .uri("https://sts.us-east-1.amazonaws.com/")
            .body(aws_smithy_types::body::SdkBody::empty())
            .unwrap()
    };
    let assumed = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
        <Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>secret</SecretAccessKey>
        <SessionToken>token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
        <AssumedRoleUser><AssumedRoleId>AROA:ami-sweeper</AssumedRoleId>
        <Arn>arn:aws:sts::111111111111:assumed-role/ami-sweeper-member/ami-sweeper</Arn></AssumedRoleUser>
        </AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"#;
    let identity = format!(
        r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>
        <Arn>arn:aws:sts::{account}:assumed-role/ami-sweeper-member/ami-sweeper</Arn><UserId>AROA:ami-sweeper</UserId>
        <Account>{account}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>2</RequestId></ResponseMetadata>
        </GetCallerIdentityResponse>"#
    );
    StaticReplayClient::new(vec![
        ReplayEvent::new(request(), response(assumed.to_string())),
        ReplayEvent::new(request(), response(identity)),
    ])
}

#[tokio::test]
async fn a_member_role_that_acts_as_another_account_is_never_used() {
    let base = |account: &str| {
        aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_sdk_ec2::config::Credentials::new("hub", "hub", None, None, "test"),
                ),
            )
            .http_client(sts_replay(account))
            .time_source(aws_smithy_async::time::SystemTimeSource::new())
            .sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep().unwrap())
            .build()
    };
    // The role of 111111111111 turns out to act as 999999999999: refused, nothing built.
    let hub = ami_sweeper::adapters::aws::Clients::new(base("999999999999"));
    let err = hub
        .for_account("111111111111", "ami-sweeper-member")
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("WrongAccount"));
    assert!(err.message.contains("acts as 999999999999"), "{err}");
    // The same role acting as its own account is accepted.
    let hub = ami_sweeper::adapters::aws::Clients::new(base("111111111111"));
    assert!(hub
        .for_account("111111111111", "ami-sweeper-member")
        .await
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_usage_report_is_waited_for_read_in_full_and_any_failure_is_no_report() {
    use aws_sdk_ec2::operation::create_image_usage_report::CreateImageUsageReportOutput;
    use aws_sdk_ec2::operation::describe_image_usage_report_entries::DescribeImageUsageReportEntriesOutput;
    use aws_sdk_ec2::operation::describe_image_usage_reports::DescribeImageUsageReportsOutput;
    use aws_sdk_ec2::types::{ImageUsageReport, ImageUsageReportEntry};
    let create = mock!(aws_sdk_ec2::Client::create_image_usage_report)
        .match_requests(|r| r.image_id() == Some("ami-1") && r.account_ids() == ["222222222222"])
        .then_output(|| {
            CreateImageUsageReportOutput::builder()
                .report_id("amiur-1")
                .build()
        });
    let state = |s: &'static str| {
        move || {
            DescribeImageUsageReportsOutput::builder()
                .image_usage_reports(
                    ImageUsageReport::builder()
                        .report_id("amiur-1")
                        .state(s)
                        .build(),
                )
                .build()
        }
    };
    let polls = mock!(aws_sdk_ec2::Client::describe_image_usage_reports)
        .sequence()
        .output(state("pending"))
        .output(state("available"))
        .build();
    let entry = |n| {
        ImageUsageReportEntry::builder()
            .account_id("222222222222")
            .usage_count(n)
            .build()
    };
    let first = mock!(aws_sdk_ec2::Client::describe_image_usage_report_entries)
        .match_requests(|r| r.next_token().is_none())
        .then_output(move || {
            DescribeImageUsageReportEntriesOutput::builder()
                .image_usage_report_entries(entry(2))
                .next_token("more")
                .build()
        });
    let second = mock!(aws_sdk_ec2::Client::describe_image_usage_report_entries)
        .match_requests(|r| r.next_token() == Some("more"))
        .then_output(move || {
            DescribeImageUsageReportEntriesOutput::builder()
                .image_usage_report_entries(entry(1))
                .build()
        });
    let adapter = Ec2::new(
        ec2(&[&create, &polls, &first, &second]),
        Arc::new(ApiCalls::default()),
    );
    let got = adapter
        .usage_report("ami-1", &["222222222222".to_string()])
        .await;
    assert_eq!(
        got,
        Some([("222222222222".to_string(), 3)].into_iter().collect())
    );
    assert_eq!(polls.num_calls(), 2, "waited while pending");

    // Where the API is missing, there is simply no report (the member accounts decide).
    let missing = mock!(aws_sdk_ec2::Client::create_image_usage_report)
        .sequence()
        .http_status(
            400,
            Some(ec2_error("InvalidAction", "not valid for this web service")),
        )
        .build();
    let adapter = Ec2::new(ec2(&[&missing]), Arc::new(ApiCalls::default()));
    assert_eq!(
        adapter
            .usage_report("ami-1", &["222222222222".to_string()])
            .await,
        None
    );
}

/// The worker's facts through the SDK: `DescribeImages` filtered by
/// `block-device-mapping.snapshot-id`, and `ListImagesInRecycleBin`'s exit time, which
/// defers a job for a snapshot whose AMI can still be restored (refused with the date).
#[tokio::test]
async fn the_worker_asks_images_by_snapshot_and_refuses_a_job_until_its_ami_leaves_the_bin() {
    use crate::handle_batch;
    use ami_sweeper::app::worker::Handled;
    let snapshots = snapshots_rule(vec![marked_snapshot("snap-a", "ami-inbin")]);
    let by_snapshot = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| {
            r.filters().iter().any(|f| {
                f.name() == Some("block-device-mapping.snapshot-id") && f.values() == ["snap-a"]
            })
        })
        .then_output(|| DescribeImagesOutput::builder().build());
    let by_id = images_rule(vec![]);
    let exit = aws_smithy_types::DateTime::from_secs(
        parse_instant("2026-12-03T00:00:00Z").unwrap().timestamp(),
    );
    let bin = mock!(aws_sdk_ec2::Client::list_images_in_recycle_bin).then_output(move || {
        ListImagesInRecycleBinOutput::builder()
            .images(
                ImageRecycleBinInfo::builder()
                    .image_id("ami-inbin")
                    .recycle_bin_exit_time(exit)
                    .build(),
            )
            .build()
    });
    let (c, calls) = account(&[&snapshots, &by_snapshot, &by_id, &bin]);
    let rules =
        ami_sweeper::verify::WorkerRules::new(&policy(), Some("us-east-1"), Vec::<String>::new());
    let job = CleanupJob::new(
        "us-east-1",
        "ami-inbin",
        JobTarget::DeleteSnapshot {
            snapshot_id: "snap-a".into(),
        },
    )
    .to_json();
    let now = parse_instant(crate::NOW).unwrap();
    let handled = handle_batch(|_, _| async { Ok(c.clone()) }, &rules, &[job.as_str()], now).await;
    match &handled[0] {
        Handled::Rejected(_, why) => assert!(
            why.starts_with("snap-a: image_in_recycle_bin: ")
                && why.contains("deferred until 2026-12-03T00:00:00Z"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(by_snapshot.num_calls(), 1);
    let made = calls.snapshot();
    assert_eq!(made["DescribeSnapshots"], 1);
    assert_eq!(made["DescribeImages"], 2);
    assert_eq!(made["ListImagesInRecycleBin"], 1);
    assert!(!made.contains_key("DeleteSnapshot"));
}

/// Review of the usage sources read in one `join!`: whichever source is refused (the ones
/// that used to be read in a second round among them), the listing fails as a whole and
/// the region stops with nothing deregistered, its error naming the refused call.
#[tokio::test]
async fn any_usage_source_refused_stops_the_region_before_any_change() {
    let json_denied = |op: &str| {
        Some(format!(
            r#"{{"__type":"AccessDeniedException","message":"not authorized to perform {op}"}}"#
        ))
    };
    let query_denied = |op: &str| {
        Some(format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not \
             authorized to perform {op}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        ))
    };
    let ec2_denied = |op: &str| Some(ec2_error("UnauthorizedOperation", op));
    let templates = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "usage": {"cloudformation_templates": true}}"#,
    )
    .unwrap();
    let sources = [
        "DescribeInstances",
        "DescribeFleets",
        "DescribeSpotInstanceRequests",
        "DescribeAutoScalingGroups",
        "DescribeComputeEnvironments",
        "DescribeStacks",
        "ListClusters",
        "DescribeParameters",
    ];
    for source in sources {
        let images = images_rule(vec![
            image("ami-3", "free", "2025-01-01T00:00:00.000Z").build()
        ]);
        let dereg = mock!(aws_sdk_ec2::Client::deregister_image)
            .then_output(|| DeregisterImageOutput::builder().build());
        let mut ec2_rules = vec![];
        let body = ec2_denied(source);
        let denied_ec2 = match source {
            "DescribeInstances" => Some(
                mock!(aws_sdk_ec2::Client::describe_instances)
                    .sequence()
                    .http_status(400, body)
                    .build(),
            ),
            "DescribeFleets" => Some(
                mock!(aws_sdk_ec2::Client::describe_fleets)
                    .sequence()
                    .http_status(400, body)
                    .build(),
            ),
            "DescribeSpotInstanceRequests" => Some(
                mock!(aws_sdk_ec2::Client::describe_spot_instance_requests)
                    .sequence()
                    .http_status(400, body)
                    .build(),
            ),
            _ => None,
        };
        ec2_rules.extend(denied_ec2.iter());
        let shared_with_none = unshared();
        ec2_rules.extend([&images, &dereg, &shared_with_none]);
        let usage = no_usage();
        ec2_rules.extend(usage.iter());
        let ssm_denied = mock!(aws_sdk_ssm::Client::describe_parameters)
            .sequence()
            .http_status(400, json_denied(source))
            .build();
        let ssm_rules: Vec<&Rule> = match source {
            "DescribeParameters" => vec![&ssm_denied],
            _ => vec![],
        };
        let (mut c, calls) = clients(ec2(&ec2_rules), ssm(&ssm_rules));
        match source {
            "DescribeAutoScalingGroups" => {
                let configs = mock!(aws_sdk_autoscaling::Client::describe_launch_configurations).then_output(|| {
                    aws_sdk_autoscaling::operation::describe_launch_configurations::DescribeLaunchConfigurationsOutput::builder().build()
                });
                let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
                    .sequence()
                    .http_status(403, query_denied(source))
                    .build();
                let client =
                    mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&groups, &configs]);
                c.autoscaling = AutoScaling::new(client, calls.clone());
            }
            "DescribeComputeEnvironments" => {
                let denied = mock!(aws_sdk_batch::Client::describe_compute_environments)
                    .sequence()
                    .http_status(400, json_denied(source))
                    .build();
                let client = mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&denied]);
                c.batch = Batch::new(client, calls.clone());
            }
            "DescribeStacks" => {
                let denied = mock!(aws_sdk_cloudformation::Client::describe_stacks)
                    .sequence()
                    .http_status(403, query_denied(source))
                    .build();
                c.cloudformation = CloudFormation::new(cloudformation(&[&denied]), calls.clone());
            }
            "ListClusters" => {
                let denied = mock!(aws_sdk_emr::Client::list_clusters)
                    .sequence()
                    .http_status(400, json_denied(source))
                    .build();
                c.emr = Emr::new(emr(&[&denied]), calls.clone());
            }
            _ => {}
        }
        let (report, jobs) = sweep(&c, &templates).await;
        let error = report
            .error
            .unwrap_or_else(|| panic!("{source} refused, the region went on"));
        assert!(error.contains(source), "{source}: {error}");
        assert_eq!(dereg.num_calls(), 0, "{source} refused, yet deregistered");
        assert!(jobs.is_empty(), "{source}");
    }
}

/// The worker's fact reads are made under the pair's Describe pacer with the SDK's retries
/// off, as every paced call is: a refusal is the pacer's to see (it slows the pair's reads
/// and retries the read first, on its own lane). Retried beneath the pacer with the SDK's
/// backoff, a round's reads took seconds (bench-fanout row (a): 4.5 s) while the pacer,
/// seeing no refusal, kept the pair's reads above EC2's rate.
#[tokio::test]
async fn the_workers_refused_fact_reads_are_retried_by_the_pacer_alone() {
    let refused = || {
        (
            503,
            Some(ec2_error("RequestLimitExceeded", "Request limit exceeded.")),
        )
    };
    // Each read refused twice (within the SDK's three attempts here), then answered.
    let snapshots = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .sequence()
        .http_status(refused().0, refused().1)
        .times(2)
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(marked_snapshot("snap-a", "ami-1"))
                .build()
        })
        .build();
    let images = mock!(aws_sdk_ec2::Client::describe_images)
        .sequence()
        .http_status(refused().0, refused().1)
        .times(4)
        .output(|| DescribeImagesOutput::builder().build())
        .repeatedly()
        .build();
    let templates = mock!(aws_sdk_ec2::Client::describe_launch_templates)
        .sequence()
        .http_status(refused().0, refused().1)
        .times(2)
        .output(|| DescribeLaunchTemplatesOutput::builder().build())
        .build();
    let bin = mock!(aws_sdk_ec2::Client::list_images_in_recycle_bin)
        .then_output(|| ListImagesInRecycleBinOutput::builder().build());
    let deleted = mock!(aws_sdk_ec2::Client::delete_snapshot).then_output(|| {
        aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build()
    });
    let (c, calls) = account(&[&snapshots, &images, &templates, &bin, &deleted]);
    let describe = snap_a_deleted_by_the_worker(&c).await;
    // Eight refusals, each seen by the pacer (no SDK retry beneath it), each read made
    // three times, the snapshot deleted once.
    assert_eq!(describe.throttles, 8);
    assert_eq!(calls.throttles(), 8);
    assert_eq!(snapshots.num_calls(), 3);
    assert_eq!(templates.num_calls(), 3);
    assert_eq!(images.num_calls(), 6);
    assert_eq!(deleted.num_calls(), 1);
}

/// Review (rev6): the worker's launch-template read is one call ahead at the pair's
/// Describe pacer (one token) that makes a `DescribeLaunchTemplates` and one
/// `DescribeLaunchTemplateVersions` per template. With every call of it through the client
/// without the SDK's retries (51d63e3), one refusal of the last template's versions made
/// the pacer read every template again; an account whose templates outnumber the bucket's
/// spare tokens would be refused on every attempt and never verify a job. The listing is
/// the pacer's; each template's versions read retries on its own.
#[tokio::test]
async fn a_refused_template_version_read_repeats_only_itself() {
    let refused = || {
        (
            503,
            Some(ec2_error("RequestLimitExceeded", "Request limit exceeded.")),
        )
    };
    let snapshots = mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder()
            .snapshots(marked_snapshot("snap-a", "ami-1"))
            .build()
    });
    let images = mock!(aws_sdk_ec2::Client::describe_images)
        .then_output(|| DescribeImagesOutput::builder().build());
    let templates = mock!(aws_sdk_ec2::Client::describe_launch_templates).then_output(|| {
        let t = |id: &str| LaunchTemplate::builder().launch_template_id(id).build();
        DescribeLaunchTemplatesOutput::builder()
            .launch_templates(t("lt-1"))
            .launch_templates(t("lt-2"))
            .launch_templates(t("lt-3"))
            .build()
    });
    let versions = |id: &'static str| {
        mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
            .match_requests(move |r| r.launch_template_id() == Some(id))
            .then_output(|| DescribeLaunchTemplateVersionsOutput::builder().build())
    };
    let (v1, v2) = (versions("lt-1"), versions("lt-2"));
    // The last template's versions: refused once, then answered.
    let v3 = mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
        .match_requests(|r| r.launch_template_id() == Some("lt-3"))
        .sequence()
        .http_status(refused().0, refused().1)
        .output(|| DescribeLaunchTemplateVersionsOutput::builder().build())
        .build();
    let bin = mock!(aws_sdk_ec2::Client::list_images_in_recycle_bin)
        .then_output(|| ListImagesInRecycleBinOutput::builder().build());
    let deleted = mock!(aws_sdk_ec2::Client::delete_snapshot).then_output(|| {
        aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build()
    });
    let rules_in = [
        &snapshots, &images, &templates, &v1, &v2, &v3, &bin, &deleted,
    ];
    let (c, _calls) = account(&rules_in);
    snap_a_deleted_by_the_worker(&c).await;
    // The refused call is made again; the calls that were answered are not.
    assert_eq!(v3.num_calls(), 2);
    assert_eq!(
        (templates.num_calls(), v1.num_calls(), v2.num_calls()),
        (1, 1, 1),
        "one refusal re-read every template"
    );
}

/// The job for `snap-a` (ami-1's) through the queue worker's batch with fresh pacers:
/// asserts it was deleted; what the pair's Describe pacer did.
async fn snap_a_deleted_by_the_worker(
    c: &RegionClients,
) -> ami_sweeper::app::ratelimit::PacerReport {
    use ami_sweeper::app::cleanup::Attempt;
    use ami_sweeper::app::worker::Handled;
    let rules =
        ami_sweeper::verify::WorkerRules::new(&policy(), Some("us-east-1"), Vec::<String>::new());
    let job = snapshot_job("snap-a").to_json();
    let pacers = ami_sweeper::app::ratelimit::Pacers::default();
    let now = parse_instant(crate::NOW).unwrap();
    let clients = |_, _| async { Ok(c.clone()) };
    let handled = crate::handle_batch_at(&pacers, clients, &rules, &[job.as_str()], now).await;
    assert!(
        matches!(
            &handled[0],
            Handled::Ran(_, Attempt::Done(JobOutcome::Deleted, _))
        ),
        "{:?}",
        handled[0]
    );
    pacers
        .reports()
        .into_iter()
        .find(|((_, region, bucket), _)| region == "us-east-1" && *bucket == "describe")
        .map(|(_, r)| r)
        .expect("the pair's Describe pacer")
}
