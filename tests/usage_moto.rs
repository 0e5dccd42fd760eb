//! Every usage source end to end against the emulator: an estate where each source alone
//! keeps one image and every other image goes; AWS's reference check answered by the
//! emulator's front door (moto lacks it), missing, or denied; and each choice of
//! `usage.launch_template_versions` on templates with stale versions.

use std::collections::BTreeSet;

use crate::moto::{image_ids, seed_image, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::references::CheckStatus;
use ami_sweeper::app::report::{Outcome, RegionReport, SweepReport};
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::model::UsageKind;
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use aws_sdk_ec2::types::{
    FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, InstanceType, RequestLaunchTemplateData,
    SpotFleetLaunchSpecification, SpotFleetRequestConfigData, TargetCapacitySpecificationRequest,
};
use serde_json::json;

/// `ami-0000000000000000N`.
fn ami(n: u32) -> String {
    format!("ami-{n:017}")
}

/// Images 1 to `n`, all a year old, none used by anything yet.
fn seed(n: u32) -> serde_json::Value {
    json!((1..=n)
        .map(|i| seed_image(
            &ami(i),
            &format!("img-{i}"),
            "2025-01-01T00:00:00.000Z",
            json!({})
        ))
        .collect::<Vec<_>>())
}

fn policy(extra: serde_json::Value) -> Policy {
    let mut p = json!({"dry_run": false, "retention": {"min_age_days": 30}});
    p.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Policy::from_json(&p.to_string()).unwrap()
}

async fn sweep(moto: &Moto, policy: &Policy, dry_run: bool) -> SweepReport {
    let clients = Clients::new(moto.config().await);
    let opts = SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: dry_run,
        queue: QueueMode::Local(Default::default()),
        exec: ExecConfig::default(),
        now: parse_instant(crate::NOW).unwrap(),
    };
    run_sweep(&clients, policy, &opts.regions.clone(), &opts).await
}

fn region(report: &SweepReport) -> &RegionReport {
    &report.regions[0]
}

/// The kinds of user that keep `image`, or `None` when the image is not kept in use.
fn kept_by(report: &SweepReport, image: &str) -> Option<BTreeSet<UsageKind>> {
    let d = region(report)
        .plan_detail
        .as_ref()
        .unwrap()
        .decisions
        .iter()
        .find(|d| d.image_id == image)
        .unwrap_or_else(|| panic!("{image} not in the plan"));
    (d.reason().as_str() == "in_use").then(|| d.used_by.iter().map(|u| u.kind).collect())
}

fn outcome(report: &SweepReport, image: &str) -> Option<Outcome> {
    region(report)
        .images
        .iter()
        .find(|i| i.image_id == image)
        .and_then(|i| i.outcome)
}

/// moto's IAM, reached without an IAM client: the role and instance profile a Batch
/// compute environment must name.
fn iam_call(moto: &Moto, params: &str) {
    use std::io::{Read, Write};
    let addr = moto.upstream.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let body = format!("{params}&Version=2010-05-08");
    write!(
        conn,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20261126/us-east-1/iam/aws4_request, \
         SignedHeaders=host, Signature=x\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Puts one user of each own source on images 1 to 5 (and a red herring on image 7).
async fn furnish_sources(moto: &Moto) {
    let config = moto.config().await;
    let ssm = aws_sdk_ssm::Client::new(&config);
    let put = |name: &'static str, value: String, data_type: Option<&'static str>| {
        let ssm = ssm.clone();
        async move {
            let mut req = ssm
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::String);
            if let Some(t) = data_type {
                req = req.data_type(t);
            }
            req.send().await.unwrap();
        }
    };
    put("/app/golden", ami(1), Some("aws:ec2:image")).await;
    put("/golden/web/current", ami(2), None).await;
    // A String parameter outside usage.ssm_paths keeps nothing.
    put("/elsewhere/note", ami(7), None).await;

    let ec2 = aws_sdk_ec2::Client::new(&config);
    let template = ec2
        .create_launch_template()
        .launch_template_name("fleet-base")
        .launch_template_data(RequestLaunchTemplateData::builder().build())
        .send()
        .await
        .unwrap();
    let template_id = template
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap()
        .to_string();
    ec2.create_fleet()
        .launch_template_configs(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_id(&template_id)
                        .version("1")
                        .build(),
                )
                .overrides(
                    FleetLaunchTemplateOverridesRequest::builder()
                        .instance_type(InstanceType::T3Micro)
                        .image_id(ami(3))
                        .build(),
                )
                .build(),
        )
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(1)
                .default_target_capacity_type("on-demand".into())
                .build(),
        )
        .r#type("maintain".into())
        .send()
        .await
        .unwrap();
    ec2.request_spot_fleet()
        .spot_fleet_request_config(
            SpotFleetRequestConfigData::builder()
                .iam_fleet_role("arn:aws:iam::123456789012:role/fleet")
                .target_capacity(1)
                .allocation_strategy("lowestPrice".into())
                .launch_specifications(
                    SpotFleetLaunchSpecification::builder()
                        .image_id(ami(4))
                        .instance_type(InstanceType::T3Micro)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The fleets' instances would keep the images on their own: end them, so that the
    // fleets alone are what keeps images 3 and 4.
    let running: Vec<String> = ec2
        .describe_instances()
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert!(!running.is_empty(), "moto launches the fleets' instances");
    ec2.terminate_instances()
        .set_instance_ids(Some(running))
        .send()
        .await
        .unwrap();

    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap();
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block("10.0.0.0/24")
        .send()
        .await
        .unwrap();
    let sg = ec2
        .create_security_group()
        .group_name("batch")
        .description("batch")
        .vpc_id(vpc_id)
        .send()
        .await
        .unwrap();
    iam_call(
        moto,
        "Action=CreateRole&RoleName=batch&AssumeRolePolicyDocument=%7B%7D",
    );
    iam_call(
        moto,
        "Action=CreateInstanceProfile&InstanceProfileName=batch",
    );
    aws_sdk_batch::Client::new(&config)
        .create_compute_environment()
        .compute_environment_name("nightly")
        .r#type(aws_sdk_batch::types::CeType::Managed)
        .service_role("arn:aws:iam::123456789012:role/batch")
        .compute_resources(
            aws_sdk_batch::types::ComputeResource::builder()
                .r#type(aws_sdk_batch::types::CrType::Ec2)
                .minv_cpus(0)
                .maxv_cpus(2)
                .desiredv_cpus(0)
                .instance_types("optimal")
                .subnets(subnet.subnet().and_then(|s| s.subnet_id()).unwrap())
                .security_group_ids(sg.group_id().unwrap())
                .instance_role("arn:aws:iam::123456789012:instance-profile/batch")
                .ec2_configuration(
                    aws_sdk_batch::types::Ec2Configuration::builder()
                        .image_type("ECS_AL2")
                        .image_id_override(ami(5))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_alone_keeps_its_image_and_every_other_image_goes() {
    let moto = Moto::start(Some(seed(8)));
    furnish_sources(&moto).await;
    // AWS's reference check (answered by the front door) knows an Image Builder recipe.
    let recipe = "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/web/1.0.0";
    moto.front()
        .set_image_references(&[(&ami(6), "imagebuilder:ImageRecipe", recipe)]);
    let p = policy(json!({"usage": {"ssm_paths": ["/golden"]}}));
    let report = sweep(&moto, &p, false).await;
    assert_eq!(region(&report).error, None);

    let expect = [
        (1, UsageKind::SsmParameter),
        (2, UsageKind::SsmParameter),
        (3, UsageKind::Fleet),
        (4, UsageKind::SpotFleet),
        (5, UsageKind::BatchComputeEnvironment),
        (6, UsageKind::ImageRecipe),
    ];
    for (n, kind) in expect {
        let mut kinds: BTreeSet<UsageKind> = [kind].into_iter().collect();
        if kind == UsageKind::SpotFleet {
            // A Spot Fleet launches through Spot Instance requests (moto's as EC2's), and an
            // open or active request keeps its image too.
            kinds.insert(UsageKind::SpotRequest);
        }
        assert_eq!(kept_by(&report, &ami(n)), Some(kinds), "image {n}");
    }
    for n in [7, 8] {
        assert_eq!(
            outcome(&report, &ami(n)),
            Some(Outcome::Deregistered),
            "image {n}"
        );
    }
    let left = image_ids(&moto.config().await).await;
    let kept: BTreeSet<String> = (1..=6).map(ami).collect();
    assert_eq!(left, kept);
    let check = &region(&report).reference_check;
    assert_eq!(check.status, CheckStatus::Checked);
    // Only the condemned were asked about: 6, 7 and 8 at first, then (6 kept) none new.
    assert_eq!((check.images_checked, check.references_found), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_reference_check_recipes_stand_in_and_the_report_says_so_once() {
    let moto = Moto::start(Some(seed(3)));
    moto.front().set_faults(json!([{
        "action": "DescribeImageReferences", "status": 400, "code": "InvalidAction",
        "message": "The action DescribeImageReferences is not valid for this web service."
    }]));
    let recipe = "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/base/2.0.0";
    moto.front().set_image_recipes(&[(recipe, &ami(2))]);
    let report = sweep(&moto, &policy(json!({})), false).await;
    let r = region(&report);
    assert_eq!(r.error, None);
    assert_eq!(r.reference_check.status, CheckStatus::Unavailable);
    assert_eq!(
        kept_by(&report, &ami(2)),
        Some([UsageKind::ImageRecipe].into_iter().collect())
    );
    assert_eq!(outcome(&report, &ami(1)), Some(Outcome::Deregistered));
    assert_eq!(outcome(&report, &ami(3)), Some(Outcome::Deregistered));
    let said: Vec<&String> = r
        .warnings
        .iter()
        .filter(|w| w.contains("DescribeImageReferences"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", r.warnings);
    assert!(said[0].contains("not available"), "{}", said[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_reference_check_stops_the_region_unless_the_policy_makes_it_optional() {
    let moto = Moto::start(Some(seed(2)));
    moto.front().set_faults(json!([{
        "action": "DescribeImageReferences", "status": 403, "code": "UnauthorizedOperation",
        "message": "You are not authorized to perform this operation."
    }]));
    let report = sweep(&moto, &policy(json!({})), false).await;
    let err = region(&report).error.clone().unwrap();
    assert!(err.contains("reference check was denied"), "{err}");
    assert!(err.contains("UnauthorizedOperation"), "{err}");
    let all: BTreeSet<String> = (1..=2).map(ami).collect();
    assert_eq!(
        image_ids(&moto.config().await).await,
        all,
        "nothing deregistered"
    );
    assert!(report.totals.failures > 0, "the run reports the failure");

    let optional = policy(json!({"usage": {"aws_references": "optional"}}));
    let report = sweep(&moto, &optional, false).await;
    let r = region(&report);
    assert_eq!(r.error, None);
    assert_eq!(r.reference_check.status, CheckStatus::DeniedOptional);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("denied and is optional")));
    assert!(image_ids(&moto.config().await).await.is_empty());
}

/// Template `web`: v1 image 1 (`$Default`), v2 image 2 (named by an Auto Scaling group),
/// v3 image 3 (stale), v4 image 4 (`$Latest`). Image 5 is used by nothing.
async fn furnish_templates(moto: &Moto) {
    let config = moto.config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let data = |n| {
        RequestLaunchTemplateData::builder()
            .image_id(ami(n))
            .build()
    };
    ec2.create_launch_template()
        .launch_template_name("web")
        .launch_template_data(data(1))
        .send()
        .await
        .unwrap();
    for n in 2..=4 {
        ec2.create_launch_template_version()
            .launch_template_name("web")
            .launch_template_data(data(n))
            .send()
            .await
            .unwrap();
    }
    aws_sdk_autoscaling::Client::new(&config)
        .create_auto_scaling_group()
        .auto_scaling_group_name("web")
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name("web")
                .version("2")
                .build(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_choice_of_launch_template_versions_keeps_what_it_says() {
    let moto = Moto::start(Some(seed(5)));
    furnish_templates(&moto).await;
    let plan = |which: &str| {
        let p = policy(json!({"usage": {"launch_template_versions": which}}));
        let moto = &moto;
        async move { sweep(moto, &p, true).await }
    };
    let kept = |report: &SweepReport| -> BTreeSet<u32> {
        (1..=5)
            .filter(|n| kept_by(report, &ami(*n)).is_some())
            .collect()
    };

    let all = plan("all").await;
    assert_eq!(kept(&all), [1, 2, 3, 4].into_iter().collect());
    let summary = &region(&all).plan_detail.as_ref().unwrap().summary;
    // Images 2 and 3 are kept by versions that are neither $Default nor $Latest.
    assert_eq!(summary.kept_only_by_stale_versions, 2);
    let stale = |n: u32| {
        region(&all)
            .plan_detail
            .as_ref()
            .unwrap()
            .decisions
            .iter()
            .find(|d| d.image_id == ami(n))
            .unwrap()
            .stale_versions
            .iter()
            .map(|u| u.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(stale(3).len(), 1);
    assert!(stale(3)[0].ends_with("(web) v3"), "{:?}", stale(3));
    assert!(stale(1).is_empty() && stale(4).is_empty());

    let default_and_latest = plan("default_and_latest").await;
    assert_eq!(kept(&default_and_latest), [1, 4].into_iter().collect());

    let referenced = plan("referenced").await;
    assert_eq!(kept(&referenced), [1, 2, 4].into_iter().collect());
    // Dry runs: nothing changed.
    assert_eq!(image_ids(&moto.config().await).await.len(), 5);
}
