//! The users written down rather than running, end to end against the emulator: a
//! CloudFormation stack (parameter and, with `usage.cloudformation_templates`, template),
//! an EMR cluster and a Spot Instance request each alone keep one image, with a `used by`
//! line naming it; the same estate without them deregisters the images; and each source
//! refused (denied, or throttled until the run's deadline) stops the region unchanged.

use std::time::Duration;

use crate::moto::{image_ids, seed_image, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::report::{Outcome, RegionReport, SweepReport};
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::app::stop::Stop;
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::model::UsageKind;
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use serde_json::json;

fn ami(n: u32) -> String {
    format!("ami-{n:017}")
}

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

fn policy(templates: bool) -> Policy {
    let p = json!({"dry_run": false, "retention": {"min_age_days": 30},
                   "usage": {"cloudformation_templates": templates}});
    Policy::from_json(&p.to_string()).unwrap()
}

async fn sweep_until(moto: &Moto, policy: &Policy, stop: Stop) -> SweepReport {
    let clients = Clients::new(moto.config().await);
    let opts = SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: false,
        queue: QueueMode::Local(Default::default()),
        exec: ExecConfig {
            stop,
            ..Default::default()
        },
        now: parse_instant(crate::NOW).unwrap(),
    };
    run_sweep(&clients, policy, &opts.regions.clone(), &opts).await
}

async fn sweep(moto: &Moto, policy: &Policy) -> SweepReport {
    sweep_until(moto, policy, Stop::default()).await
}

fn region(report: &SweepReport) -> &RegionReport {
    &report.regions[0]
}

/// The `used by` lines of `image` when the plan keeps it in use, else `None`.
fn used_by(report: &SweepReport, image: &str) -> Option<Vec<(UsageKind, String)>> {
    let d = region(report)
        .plan_detail
        .as_ref()
        .unwrap()
        .decisions
        .iter()
        .find(|d| d.image_id == image)
        .unwrap_or_else(|| panic!("{image} not in the plan"));
    (d.reason().as_str() == "in_use")
        .then(|| d.used_by.iter().map(|u| (u.kind, u.id.clone())).collect())
}

fn outcome(report: &SweepReport, image: &str) -> Option<Outcome> {
    region(report)
        .images
        .iter()
        .find(|i| i.image_id == image)
        .and_then(|i| i.outcome)
}

const TEMPLATE: &str = r#"{
  "Parameters": {"ImageId": {"Type": "AWS::EC2::Image::Id"}},
  "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
  "Outputs": {"Golden": {"Value": "ami-00000000000000004"}}
}"#;

/// Image 1: a stack's `ImageId` parameter; 2: an EMR cluster's `CustomAmiId`; 3: a
/// persistent Spot request (its instance terminated); 4: a literal in the stack's
/// template. Returns what undoes each: the stack, the cluster and the request.
async fn furnish(moto: &Moto) -> (String, String, String) {
    let config = moto.config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let stack = cfn
        .create_stack()
        .stack_name("web-prod")
        .template_body(TEMPLATE)
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("ImageId")
                .parameter_value(ami(1))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let emr = aws_sdk_emr::Client::new(&config);
    let cluster = emr
        .run_job_flow()
        .name("analytics")
        .release_label("emr-7.0.0")
        .custom_ami_id(ami(2))
        .instances(
            aws_sdk_emr::types::JobFlowInstancesConfig::builder()
                .master_instance_type("m5.xlarge")
                .slave_instance_type("m5.xlarge")
                .instance_count(1)
                .keep_job_flow_alive_when_no_steps(true)
                .build(),
        )
        .job_flow_role("EMR_EC2_DefaultRole")
        .service_role("EMR_DefaultRole")
        .send()
        .await
        .unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let spot = ec2
        .request_spot_instances()
        .r#type(aws_sdk_ec2::types::SpotInstanceType::Persistent)
        .instance_count(1)
        .launch_specification(
            aws_sdk_ec2::types::RequestSpotLaunchSpecification::builder()
                .image_id(ami(3))
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let request = spot.spot_instance_requests()[0]
        .spot_instance_request_id()
        .unwrap()
        .to_string();
    // The request's instance would keep image 3 on its own: end it (a persistent request
    // launches again after an interruption), so the request alone keeps the image.
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
    if !running.is_empty() {
        ec2.terminate_instances()
            .set_instance_ids(Some(running))
            .send()
            .await
            .unwrap();
    }
    (
        stack.stack_id().unwrap().to_string(),
        cluster.job_flow_id().unwrap().to_string(),
        request,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_clusters_and_spot_requests_keep_their_images_until_they_are_gone() {
    let moto = Moto::start(Some(seed(5)));
    let (stack, cluster, request) = furnish(&moto).await;
    let report = sweep(&moto, &policy(true)).await;
    assert_eq!(region(&report).error, None);
    let line = |n| used_by(&report, &ami(n)).unwrap_or_else(|| panic!("image {n} not kept"));
    assert_eq!(
        line(1),
        [(
            UsageKind::CloudFormationStack,
            "stack web-prod: parameter ImageId".into()
        )]
    );
    assert!(
        line(2).contains(&(
            UsageKind::EmrCluster,
            format!("EMR {cluster} (analytics): cluster")
        )),
        "{:?}",
        line(2)
    );
    assert_eq!(
        line(3),
        [(
            UsageKind::SpotRequest,
            format!("{request} (persistent, active)")
        )]
    );
    assert_eq!(
        line(4),
        [(
            UsageKind::CloudFormationStack,
            "stack web-prod: template".into()
        )]
    );
    assert_eq!(outcome(&report, &ami(5)), Some(Outcome::Deregistered));
    let calls = &report.api_calls;
    for op in [
        "DescribeStacks",
        "GetTemplate",
        "ListClusters",
        "DescribeCluster",
        "DescribeSpotInstanceRequests",
    ] {
        assert!(calls.contains_key(op), "{op} not called: {calls:?}");
    }

    // Without usage.cloudformation_templates, the template is not read: image 4 goes.
    let report = sweep(&moto, &policy(false)).await;
    assert_eq!(outcome(&report, &ami(4)), Some(Outcome::Deregistered));
    assert!(!report.api_calls.contains_key("GetTemplate"));

    // The same estate without its users: every image goes.
    let config = moto.config().await;
    aws_sdk_cloudformation::Client::new(&config)
        .delete_stack()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    aws_sdk_emr::Client::new(&config)
        .terminate_job_flows()
        .job_flow_ids(&cluster)
        .send()
        .await
        .unwrap();
    aws_sdk_ec2::Client::new(&config)
        .cancel_spot_instance_requests()
        .spot_instance_request_ids(&request)
        .send()
        .await
        .unwrap();
    let report = sweep(&moto, &policy(true)).await;
    assert_eq!(region(&report).error, None);
    for n in 1..=3 {
        assert_eq!(
            outcome(&report, &ami(n)),
            Some(Outcome::Deregistered),
            "image {n}"
        );
    }
    assert!(image_ids(&config).await.is_empty());
}

/// Each new source refused: the region stops, nothing is deregistered, and the error
/// names the source's call and the permission it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_source_stops_the_region_naming_the_permission() {
    let moto = Moto::start(Some(seed(2)));
    let refusals = [
        (
            json!({"action": "DescribeStacks", "status": 403, "code": "AccessDenied",
                "message": "User is not authorized to perform: cloudformation:DescribeStacks"}),
            "cloudformation:DescribeStacks",
        ),
        (
            json!({"action": "ListClusters", "status": 400, "code": "AccessDeniedException",
                "message": "User is not authorized to perform: elasticmapreduce:ListClusters"}),
            "elasticmapreduce:ListClusters",
        ),
        (
            json!({"action": "DescribeSpotInstanceRequests", "status": 403,
                "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."}),
            "ec2:DescribeSpotInstanceRequests",
        ),
    ];
    for (fault, permission) in refusals {
        moto.front().set_faults(json!([fault]));
        let report = sweep(&moto, &policy(false)).await;
        let err = region(&report).error.clone().unwrap_or_default();
        assert!(err.contains("nothing was changed"), "{err}");
        assert!(err.contains(permission), "{permission}: {err}");
        assert!(err.contains(fault["code"].as_str().unwrap()), "{err}");
        assert_eq!(
            image_ids(&moto.config().await).await.len(),
            2,
            "{permission}"
        );
    }
    moto.front().set_faults(json!([]));
    let report = sweep(&moto, &policy(false)).await;
    assert_eq!(region(&report).error, None);
    assert!(image_ids(&moto.config().await).await.is_empty());
}

/// Each service's own throttling answer, for ever: its pacer slows and retries until the
/// run's deadline, and the region stops unchanged with the call reported throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_throttled_until_the_deadline_stops_the_region_unchanged() {
    let moto = Moto::start(Some(seed(2)));
    let throttles = [
        json!({"action": "DescribeStacks", "status": 400, "code": "Throttling", "message": "Rate exceeded"}),
        json!({"action": "ListClusters", "status": 400, "code": "ThrottlingException", "message": "Rate exceeded"}),
        json!({"action": "DescribeSpotInstanceRequests", "status": 503, "code": "RequestLimitExceeded", "message": "Request limit exceeded."}),
    ];
    for fault in throttles {
        moto.front().set_faults(json!([fault]));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let report = sweep_until(&moto, &policy(false), Stop::with_deadline(Some(deadline))).await;
        let err = region(&report).error.clone().unwrap_or_default();
        assert!(
            err.contains("Throttled") && err.contains(fault["action"].as_str().unwrap()),
            "{err}"
        );
        assert_eq!(image_ids(&moto.config().await).await.len(), 2, "{fault}");
    }
}

fn referencing(places: &[&str]) -> Policy {
    let p = json!({"dry_run": false, "retention": {"min_age_days": 30},
                   "usage": {"reference_objects": places}});
    Policy::from_json(&p.to_string()).unwrap()
}

/// Terraform state and a Packer manifest under `s3://terraform-state/prod/` keep images 1
/// and 2 (with where each id was found); an object outside the prefix keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_objects_keep_the_images_they_name_and_fail_closed() {
    let moto = Moto::start(Some(seed(3)));
    let config = moto.config().await;
    let s3 = crate::moto::s3(&config);
    s3.create_bucket()
        .bucket("terraform-state")
        .send()
        .await
        .unwrap();
    let state = json!({"version": 4, "terraform_version": "1.9.5", "resources": [
        {"mode": "managed", "type": "aws_instance", "name": "web",
         "instances": [{"attributes": {"ami": ami(1)}}]}]});
    let manifest =
        json!({"builds": [{"name": "golden", "artifact_id": format!("us-east-1:{}", ami(2))}]});
    for (key, body) in [
        ("prod/app.tfstate", state.to_string()),
        ("prod/packer-manifest.json", manifest.to_string()),
        (
            "staging/app.tfstate",
            format!("{{\"ami\": \"{}\"}}", ami(3)),
        ),
    ] {
        s3.put_object()
            .bucket("terraform-state")
            .key(key)
            .body(body.into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    let policy = referencing(&["s3://terraform-state/prod/"]);

    // Refused (denied, then throttled until the deadline): every region stops unchanged.
    let refusals = [
        json!({"id": "app.tfstate", "status": 403, "code": "AccessDenied", "message": "Access Denied"}),
        json!({"id": "app.tfstate", "status": 503, "code": "SlowDown", "message": "Please reduce your request rate."}),
    ];
    for fault in refusals {
        moto.front().set_faults(json!([fault]));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let report = sweep_until(&moto, &policy, Stop::with_deadline(Some(deadline))).await;
        let err = region(&report).error.clone().unwrap_or_default();
        assert!(
            err.contains("s3://terraform-state/prod/") && err.contains("nothing was changed"),
            "{err}"
        );
        assert!(
            err.contains("s3:GetObject") || err.contains("Throttled"),
            "{err}"
        );
        assert_eq!(image_ids(&config).await.len(), 3, "{fault}");
    }
    moto.front().set_faults(json!([]));

    let report = sweep(&moto, &policy).await;
    assert_eq!(region(&report).error, None);
    assert_eq!(
        used_by(&report, &ami(1)).unwrap(),
        [(
            UsageKind::ReferenceObject,
            "s3://terraform-state/prod/app.tfstate (aws_instance.web)".into()
        )]
    );
    assert_eq!(
        used_by(&report, &ami(2)).unwrap(),
        [(
            UsageKind::ReferenceObject,
            "s3://terraform-state/prod/packer-manifest.json (packer build golden)".into()
        )]
    );
    assert_eq!(outcome(&report, &ami(3)), Some(Outcome::Deregistered));

    // A place that holds no object (a typo in the prefix, or a bucket emptied) is not
    // "nothing named": every region stops unchanged, naming the place.
    let report = sweep(&moto, &referencing(&["s3://terraform-state/prdo/"])).await;
    let err = region(&report).error.clone().unwrap_or_default();
    assert!(
        err.contains("s3://terraform-state/prdo/")
            && err.contains("no object")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(image_ids(&config).await.len(), 2, "images 1 and 2 stay");

    // The same estate with the objects naming no image any more: the images go.
    for key in ["prod/app.tfstate", "prod/packer-manifest.json"] {
        s3.put_object()
            .bucket("terraform-state")
            .key(key)
            .body(b"{}".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let report = sweep(&moto, &policy).await;
    assert_eq!(region(&report).error, None);
    assert!(image_ids(&config).await.is_empty());
}
