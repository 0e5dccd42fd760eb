//! What the emulator cannot show about the new usage sources, with mocked SDK clients:
//! EMR instance fleets (moto lacks `ListInstanceFleets`; the response is a recorded one,
//! `tests/recorded/emr-list-instance-fleets.json`), pagination of `ListClusters` and
//! `DescribeStacks`, and a template's `{{resolve:ssm:…}}` resolved through SSM.

use ami_sweeper::adapters::aws::cloudformation::CloudFormation;
use ami_sweeper::adapters::aws::emr::Emr;
use ami_sweeper::adapters::aws::ssm::Ssm;
use ami_sweeper::app::report::Outcome;
use ami_sweeper::model::UsageKind;
use ami_sweeper::Policy;
use aws_smithy_mocks::{mock, Rule};

use crate::aws_mocks::{account, image, images_rule, outcome, policy, ssm, sweep};

const OLD: &str = "2025-01-01T00:00:00.000Z";

fn deregistered() -> Rule {
    mock!(aws_sdk_ec2::Client::deregister_image).then_output(|| {
        aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput::builder().build()
    })
}

fn estate() -> Rule {
    images_rule(vec![
        image("ami-1a2b3c4d", "fleet-image", OLD).build(),
        image("ami-1a2b3c4e", "stack-image", OLD).build(),
        image("ami-1a2b3c4f", "unused", OLD).build(),
    ])
}

fn recorded_fleets(custom_ami: Option<&str>) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/recorded/emr-list-instance-fleets.json"),
    )
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if let Some(id) = custom_ami {
        v["InstanceFleets"][0]["InstanceTypeSpecifications"][0]["CustomAmiId"] = id.into();
    }
    v.to_string()
}

/// Two pages of clusters (the first one's on fleets), each cluster described.
fn emr_rules(fleets_body: String) -> Vec<Rule> {
    use aws_sdk_emr::operation::{
        describe_cluster::DescribeClusterOutput, list_clusters::ListClustersOutput,
    };
    use aws_sdk_emr::types::{
        Cluster, ClusterState, ClusterStatus, ClusterSummary, InstanceCollectionType,
    };
    let summary = |id: &str| {
        ClusterSummary::builder()
            .id(id)
            .name("analytics")
            .status(
                ClusterStatus::builder()
                    .state(ClusterState::Waiting)
                    .build(),
            )
            .build()
    };
    let (first, second) = (summary("j-12ABCDEFGHI34JK"), summary("j-2SECONDPAGE"));
    vec![
        mock!(aws_sdk_emr::Client::list_clusters)
            .match_requests(|r| r.marker().is_none() && r.cluster_states().len() == 4)
            .then_output(move || {
                ListClustersOutput::builder()
                    .clusters(first.clone())
                    .marker("page-2")
                    .build()
            }),
        mock!(aws_sdk_emr::Client::list_clusters)
            .match_requests(|r| r.marker() == Some("page-2"))
            .then_output(move || {
                ListClustersOutput::builder()
                    .clusters(second.clone())
                    .build()
            }),
        mock!(aws_sdk_emr::Client::describe_cluster).then_output(|| {
            DescribeClusterOutput::builder()
                .cluster(
                    Cluster::builder()
                        .id("j-12ABCDEFGHI34JK")
                        .instance_collection_type(InstanceCollectionType::InstanceFleet)
                        .build(),
                )
                .build()
        }),
        mock!(aws_sdk_emr::Client::list_instance_fleets).then_http_response(move || {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(200).unwrap(),
                aws_smithy_types::body::SdkBody::from(fleets_body.clone()),
            )
        }),
    ]
}

/// Two pages of stacks; the second's template names its image through SSM.
fn stack_rules() -> Vec<Rule> {
    use aws_sdk_cloudformation::operation::{
        describe_stacks::DescribeStacksOutput, get_template::GetTemplateOutput,
    };
    use aws_sdk_cloudformation::types::{Stack, StackStatus};
    let stack = |name: &str, status: StackStatus| {
        Stack::builder()
            .stack_name(name)
            .stack_id(format!(
                "arn:aws:cloudformation:us-east-1:123456789012:stack/{name}/1"
            ))
            .stack_status(status)
            .build()
    };
    let gone = stack("old-web", StackStatus::DeleteComplete);
    let live = stack("web-prod", StackStatus::UpdateRollbackComplete);
    vec![
        mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(|r| r.next_token().is_none())
            .then_output(move || DescribeStacksOutput::builder().stacks(gone.clone()).next_token("page-2").build()),
        mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_output(move || DescribeStacksOutput::builder().stacks(live.clone()).build()),
        mock!(aws_sdk_cloudformation::Client::get_template)
            .match_requests(|r| {
                r.stack_name().is_some_and(|s| s.contains("/web-prod/"))
                    && r.template_stage() == Some(&aws_sdk_cloudformation::types::TemplateStage::Original)
            })
            .then_output(|| {
                GetTemplateOutput::builder()
                    .template_body("Resources:\n  Web:\n    Properties:\n      ImageId: '{{resolve:ssm:/golden/web}}'\n")
                    .build()
            }),
    ]
}

fn golden_parameter() -> Rule {
    mock!(aws_sdk_ssm::Client::get_parameter)
        .match_requests(|r| r.name() == Some("/golden/web"))
        .then_output(|| {
            aws_sdk_ssm::operation::get_parameter::GetParameterOutput::builder()
                .parameter(
                    aws_sdk_ssm::types::Parameter::builder()
                        .name("/golden/web")
                        .value("ami-1a2b3c4e")
                        .build(),
                )
                .build()
        })
}

fn with_templates() -> Policy {
    Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "usage": {"cloudformation_templates": true}}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn emr_fleets_and_stack_templates_keep_their_images_across_pages() {
    let (images, gone) = (estate(), deregistered());
    let (mut c, calls) = account(&[&images, &gone]);
    let emr = emr_rules(recorded_fleets(Some("ami-1a2b3c4d")));
    c.emr = Emr::new(
        crate::aws_mocks::emr(&emr.iter().collect::<Vec<_>>()),
        calls.clone(),
    );
    let stacks = stack_rules();
    c.cloudformation = CloudFormation::new(
        crate::aws_mocks::cloudformation(&stacks.iter().collect::<Vec<_>>()),
        calls.clone(),
    );
    let golden = golden_parameter();
    c.ssm = Ssm::new(ssm(&[&golden]), calls.clone());
    let (report, _) = sweep(&c, &with_templates()).await;
    assert_eq!(report.error, None);
    let used = |id: &str| -> Vec<(UsageKind, String)> {
        let plan = report.plan_detail.as_ref().unwrap();
        let d = plan.decisions.iter().find(|d| d.image_id == id).unwrap();
        d.used_by.iter().map(|u| (u.kind, u.id.clone())).collect()
    };
    // Both pages' clusters are read (the mock answers each with the same fleets).
    let fleet = |id: &str| {
        (
            UsageKind::EmrCluster,
            format!("EMR {id} (analytics): fleet CORE m3.xlarge"),
        )
    };
    assert_eq!(
        used("ami-1a2b3c4d"),
        [fleet("j-12ABCDEFGHI34JK"), fleet("j-2SECONDPAGE")]
    );
    assert_eq!(
        used("ami-1a2b3c4e"),
        [(
            UsageKind::CloudFormationStack,
            "stack web-prod: template resolve:ssm:/golden/web".into()
        )]
    );
    assert_eq!(
        outcome(&report, "ami-1a2b3c4f"),
        Some(Outcome::Deregistered)
    );
    let counted = calls.snapshot();
    assert_eq!(counted.get("ListClusters"), Some(&2), "{counted:?}");
    assert_eq!(counted.get("DescribeStacks"), Some(&2), "{counted:?}");
    // Only the live stack's template is read; each live cluster is described.
    assert_eq!(counted.get("GetTemplate"), Some(&1), "{counted:?}");
    assert_eq!(counted.get("DescribeCluster"), Some(&2), "{counted:?}");
}

#[tokio::test]
async fn the_recorded_fleets_verbatim_name_no_image_and_it_goes() {
    let (images, gone) = (estate(), deregistered());
    let (mut c, calls) = account(&[&images, &gone]);
    let emr = emr_rules(recorded_fleets(None));
    c.emr = Emr::new(
        crate::aws_mocks::emr(&emr.iter().collect::<Vec<_>>()),
        calls.clone(),
    );
    let (report, _) = sweep(&c, &policy()).await;
    assert_eq!(report.error, None);
    assert_eq!(
        outcome(&report, "ami-1a2b3c4d"),
        Some(Outcome::Deregistered)
    );
}

/// A stack's SSM-typed parameter (`AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`)
/// names the parameter; `ResolvedValue` is what it held at the stack's last update. The
/// next update launches what it holds now (here an older image, rolled back to): both keep.
#[tokio::test]
async fn a_stack_parameter_through_ssm_keeps_what_the_parameter_holds_now() {
    let (images, gone) = (estate(), deregistered());
    let (mut c, calls) = account(&[&images, &gone]);
    let stacks = ssm_typed_stack();
    c.cloudformation =
        CloudFormation::new(crate::aws_mocks::cloudformation(&[&stacks]), calls.clone());
    let golden = golden_parameter();
    c.ssm = Ssm::new(ssm(&[&golden]), calls.clone());
    let (report, _) = sweep(&c, &policy()).await;
    assert_eq!(report.error, None);
    let used = |id: &str| -> Vec<String> {
        let plan = report.plan_detail.as_ref().unwrap();
        let d = plan.decisions.iter().find(|d| d.image_id == id).unwrap();
        d.used_by.iter().map(|u| u.id.clone()).collect()
    };
    assert_eq!(used("ami-1a2b3c4d"), ["stack web-prod: parameter ImageId"]);
    assert_eq!(
        used("ami-1a2b3c4e"),
        ["stack web-prod: parameter ImageId resolve:ssm:/golden/web"]
    );
    assert_eq!(
        outcome(&report, "ami-1a2b3c4f"),
        Some(Outcome::Deregistered)
    );
}

/// A stack with an SSM-typed parameter, its template naming nothing.
fn ssm_typed_stack() -> Rule {
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::types::{Parameter, Stack, StackStatus};
    let stack = Stack::builder()
        .stack_name("web-prod")
        .stack_id("arn:aws:cloudformation:us-east-1:123456789012:stack/web-prod/1")
        .stack_status(StackStatus::UpdateComplete)
        .parameters(
            Parameter::builder()
                .parameter_key("ImageId")
                .parameter_value("/golden/web")
                .resolved_value("ami-1a2b3c4d")
                .build(),
        )
        .build();
    mock!(aws_sdk_cloudformation::Client::describe_stacks).then_output(move || {
        DescribeStacksOutput::builder()
            .stacks(stack.clone())
            .build()
    })
}

/// A member deployed before stacks were read through SSM lacks `ssm:GetParameter` for
/// the stack's parameter, or SSM throttles it past the SDK's retries: the region stops on
/// one line naming the source and the permission, nothing deregistered. The bodies are
/// the real shapes of SSM's answers.
#[tokio::test]
async fn a_stack_parameter_ssm_cannot_read_stops_the_region_naming_the_permission() {
    let refusals = [
        (
            "AccessDeniedException",
            r#"{"__type":"AccessDeniedException","Message":"User: arn:aws:sts::123456789012:assumed-role/ami-sweeper-member/ami-sweeper is not authorized to perform: ssm:GetParameter on resource: arn:aws:ssm:us-east-1:123456789012:parameter/golden/web because no identity-based policy allows the ssm:GetParameter action"}"#,
        ),
        (
            "ThrottlingException",
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
    ];
    for (code, body) in refusals {
        let (images, gone) = (estate(), deregistered());
        let (mut c, calls) = account(&[&images, &gone]);
        let stacks = ssm_typed_stack();
        c.cloudformation =
            CloudFormation::new(crate::aws_mocks::cloudformation(&[&stacks]), calls.clone());
        let refused = mock!(aws_sdk_ssm::Client::get_parameter)
            .sequence()
            .http_status(400, Some(body.to_string()))
            .times(5)
            .build();
        c.ssm = Ssm::new(ssm(&[&refused]), calls.clone());
        let (report, _) = sweep(&c, &policy()).await;
        let error = report.error.clone().expect("the region stops");
        assert_eq!(error.lines().count(), 1, "{error}");
        for part in [
            code,
            "usage source CloudFormation stacks",
            "ssm:GetParameter",
            "nothing was changed",
        ] {
            assert!(error.contains(part), "{part}: {error}");
        }
        assert_eq!(gone.num_calls(), 0, "nothing is deregistered");
    }
}

/// One estate, seen live (mocked SDK) and offline (the AWS CLI's output of the same
/// facts): a stack whose SSM-typed parameter resolved to image 4d and now holds 4e,
/// whose template (with a transform) names 4f as written and 50 once processed; 51 is
/// unused. Both sides decide every image alike, `used by` lines included.
#[tokio::test]
async fn the_offline_plan_and_the_live_sweep_read_stacks_alike() {
    use aws_sdk_cloudformation::operation::get_template::GetTemplateOutput;
    use aws_sdk_cloudformation::types::TemplateStage;
    let ids = [
        "ami-1a2b3c4d",
        "ami-1a2b3c4e",
        "ami-1a2b3c4f",
        "ami-1a2b3c50",
        "ami-1a2b3c51",
    ];
    let original = "Transform: AWS::Serverless-2016-10-31\nMappings:\n  Images:\n    us-east-1: {Fallback: ami-1a2b3c4f}\n";
    let processed = serde_json::json!({"Resources": {"Web": {"Type": "AWS::EC2::LaunchTemplate",
        "Properties": {"LaunchTemplateData": {"ImageId": "ami-1a2b3c50"}}}}});

    // Live.
    let images = images_rule(ids.iter().map(|id| image(id, id, OLD).build()).collect());
    let gone = deregistered();
    let (mut c, calls) = account(&[&images, &gone]);
    let stacks = ssm_typed_stack();
    let body = |stage: TemplateStage, text: String| {
        mock!(aws_sdk_cloudformation::Client::get_template)
            .match_requests(move |r| r.template_stage() == Some(&stage))
            .then_output(move || {
                GetTemplateOutput::builder()
                    .template_body(text.clone())
                    .build()
            })
    };
    let written = body(TemplateStage::Original, original.to_string());
    let after = body(TemplateStage::Processed, processed.to_string());
    c.cloudformation = CloudFormation::new(
        crate::aws_mocks::cloudformation(&[&stacks, &written, &after]),
        calls.clone(),
    );
    let golden = golden_parameter();
    c.ssm = Ssm::new(ssm(&[&golden]), calls.clone());
    let (report, _) = sweep(&c, &with_templates()).await;
    assert_eq!(report.error, None);
    let live = report.plan_detail.clone().unwrap();

    // Offline, from the CLI's output of the same account.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("offline-stacks");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let cli_images: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({"ImageId": id, "Name": id, "CreationDate": OLD,
                "State": "available", "RootDeviceType": "ebs",
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                    "Ebs": {"SnapshotId": format!("snap-{}", &id[4..]), "VolumeSize": 8}}]})
        })
        .collect();
    let write = |name: &str, v: serde_json::Value| {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let files = ami_sweeper::adapters::awscli::InventoryFiles {
        images: write("images.json", serde_json::json!({"Images": cli_images})),
        cloudformation_stacks: Some(write(
            "stacks.json",
            serde_json::json!({"Stacks": [{"StackName": "web-prod", "StackStatus": "UPDATE_COMPLETE",
                "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/web-prod/1",
                "Parameters": [{"ParameterKey": "ImageId", "ParameterValue": "/golden/web",
                    "ResolvedValue": "ami-1a2b3c4d"}]}]}),
        )),
        ssm_parameters: Some(write(
            "parameters.json",
            serde_json::json!({"Parameters": [{"Name": "/golden/web", "Type": "String",
                "Value": "ami-1a2b3c4e", "DataType": "text", "Version": 4}], "InvalidParameters": []}),
        )),
        cloudformation_templates: Some(templates.clone()),
        ..Default::default()
    };
    std::fs::write(
        templates.join("web-prod.json"),
        serde_json::json!({"TemplateBody": original, "StagesAvailable": ["Original", "Processed"]})
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        templates.join("web-prod.processed.json"),
        serde_json::json!({"TemplateBody": processed}).to_string(),
    )
    .unwrap();
    let policy = with_templates();
    let inventory = ami_sweeper::adapters::awscli::load_inventory(&files, &policy.usage).unwrap();
    let now = ami_sweeper::time::parse_instant(crate::NOW).unwrap();
    let offline = ami_sweeper::plan(&policy, &inventory, now);

    let decided = |plan: &ami_sweeper::Plan| -> Vec<serde_json::Value> {
        plan.decisions
            .iter()
            .map(|d| serde_json::json!([d.image_id, d.action, d.reasons, d.used_by]))
            .collect()
    };
    assert_eq!(decided(&offline), decided(&live));
    let used = |id: &str| -> Vec<String> {
        let d = live.decisions.iter().find(|d| d.image_id == id).unwrap();
        d.used_by.iter().map(|u| u.id.clone()).collect()
    };
    assert_eq!(used("ami-1a2b3c4d"), ["stack web-prod: parameter ImageId"]);
    assert_eq!(
        used("ami-1a2b3c4e"),
        ["stack web-prod: parameter ImageId resolve:ssm:/golden/web"]
    );
    assert_eq!(used("ami-1a2b3c4f"), ["stack web-prod: template"]);
    assert_eq!(used("ami-1a2b3c50"), ["stack web-prod: processed template"]);
    assert_eq!(
        outcome(&report, "ami-1a2b3c51"),
        Some(Outcome::Deregistered)
    );

    // Offline without a fact the sweep has: the plan stops, naming what to pass.
    let refused = |files: &ami_sweeper::adapters::awscli::InventoryFiles| {
        ami_sweeper::adapters::awscli::load_inventory(files, &policy.usage)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut without = files.clone();
    without.ssm_parameters = None;
    assert!(
        refused(&without).contains("aws ssm get-parameters --names /golden/web"),
        "{}",
        refused(&without)
    );
    let mut without = files.clone();
    without.cloudformation_templates = None;
    assert!(refused(&without).contains("--cloudformation-templates DIR"));
    std::fs::remove_file(templates.join("web-prod.processed.json")).unwrap();
    assert!(refused(&files).contains("--template-stage Processed"));
}
