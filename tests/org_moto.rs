//! Organization scale end to end on the emulator (it switches accounts on `AssumeRole` and
//! emulates Organizations): three member accounts under an OU tree, two regions each, with
//! images, usage and cross-account shares; one `sweep` deletes exactly what each account's
//! rules condemn, keeps the shared image a sibling uses and deletes the shared one nobody
//! uses (`keep_if_used`), and a member whose role cannot be assumed fails alone.

use crate::moto::{bake, image_ids, member_config, public_ami, Moto, OrgBuilder};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::org::{resolve_accounts, run_org_sweep, OrgReport};
use ami_sweeper::app::run::{QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::model::UsageKind;
use ami_sweeper::Policy;
use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
use serde_json::json;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// The hub's view of the organization: root → `workloads` (a, c) → `team` (b); and `d`,
/// also under `workloads`, whose role cannot be assumed.
struct Org {
    ou: String,
    a: String,
    b: String,
    c: String,
    d: String,
}

async fn organization(hub: &aws_config::SdkConfig) -> Org {
    let org = OrgBuilder::create(hub).await;
    let workloads = org.ou(&org.root, "workloads").await;
    let team = org.ou(&workloads, "team").await;
    Org {
        a: org.account("a", &workloads).await,
        b: org.account("b", &team).await,
        c: org.account("c", &workloads).await,
        d: org.account("d", &workloads).await,
        ou: workloads,
    }
}

fn kept_by<'r>(report: &'r OrgReport, account: &str, region: &str, image: &str) -> &'r str {
    let pair = report
        .pairs
        .iter()
        .find(|p| p.account == account && p.region == region)
        .unwrap();
    let plan = pair.report.as_ref().unwrap().regions[0]
        .plan_detail
        .as_ref()
        .unwrap();
    plan.decisions
        .iter()
        .find(|d| d.image_id == image)
        .unwrap_or_else(|| panic!("{image} not in {account}/{region}"))
        .reasons[0]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweep_covers_the_organization_judges_shares_by_their_users_and_isolates_failures() {
    let moto = Moto::start_with_public_amis();
    let hub = moto.config().await;
    let base = public_ami(&hub).await;
    let org = organization(&hub).await;
    // The hub has an old, unused image of its own, which no member sweep may touch.
    let (hub_ids, _) = bake(&hub, &base, 1).await;
    // d's role cannot be assumed.
    moto.front().set_faults(json!([{
        "action": "AssumeRole", "id": org.d.clone(), "status": 403, "code": "AccessDenied",
        "message": "not authorized to perform sts:AssumeRole"
    }]));

    // In every member account and region: two builds; the stopped instance uses the base
    // image only, so both builds are unused... except as set up below.
    let mut built = std::collections::BTreeMap::new();
    for account in [&org.a, &org.b, &org.c] {
        for region in REGIONS {
            let config = member_config(&hub, account, region).await;
            let (ids, _) = bake(&config, &base, 2).await;
            built.insert((account.clone(), region), (config, ids));
        }
    }
    // In a/us-east-1: image 0 stays in use (a launch template names it); image 1 is
    // shared with b, whose launch template uses it; c/us-east-1's image 0 is shared with
    // a, which does not use it.
    let (a_config, a_ids) = &built[&(org.a.clone(), "us-east-1")];
    let (b_config, _) = &built[&(org.b.clone(), "us-east-1")];
    let (c_config, c_ids) = &built[&(org.c.clone(), "us-east-1")];
    let template = |config: &aws_config::SdkConfig, image: &str, name: &'static str| {
        let ec2 = aws_sdk_ec2::Client::new(config);
        let image = image.to_string();
        async move {
            ec2.create_launch_template()
                .launch_template_name(name)
                .launch_template_data(
                    aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                        .image_id(image)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    template(a_config, &a_ids[0], "own").await;
    template(b_config, &a_ids[1], "from-a").await;
    let share = |config: &aws_config::SdkConfig, image: &str, with: &str| {
        let ec2 = aws_sdk_ec2::Client::new(config);
        let (image, with) = (image.to_string(), with.to_string());
        async move {
            ec2.modify_image_attribute()
                .image_id(image)
                .launch_permission(
                    LaunchPermissionModifications::builder()
                        .add(LaunchPermission::builder().user_id(with).build())
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    share(a_config, &a_ids[1], &org.b).await;
    share(c_config, &c_ids[0], &org.a).await;
    // AWS's usage report (the cheaper first look) knows b's use of a's image; for c's
    // image it reports nothing, so a's own usage is read through its role.
    moto.front()
        .set_image_usage(json!({ a_ids[1].clone(): { org.b.clone(): 1 } }));

    let policy = Policy::from_json(
        &json!({
            "dry_run": false,
            "retention": {"min_age_days": 30},
            "protection": {"shared": "keep_if_used"},
            "recycle_bin": "ignore",
            "accounts": {"organization": {"ou_ids": [org.ou]}}
        })
        .to_string(),
    )
    .unwrap();
    let clients = Clients::new(hub.clone());
    let mut accounts = resolve_accounts(&clients, &policy).await.unwrap();
    accounts.sort();
    let mut want = vec![org.a.clone(), org.b.clone(), org.c.clone(), org.d.clone()];
    want.sort();
    assert_eq!(accounts, want, "child OUs included");

    let now = chrono::Utc::now() + chrono::TimeDelta::days(60);
    let regions: Vec<String> = REGIONS.iter().map(|r| r.to_string()).collect();
    let opts = SweepOptions {
        regions: regions.clone(),
        force_dry_run: false,
        queue: QueueMode::Local(Default::default()),
        exec: ExecConfig::default(),
        now,
    };
    let report = run_org_sweep(&clients, &policy, &accounts, &regions, &opts, 3, None).await;

    // d failed alone: both its pairs, with the reason; nobody else failed.
    assert_eq!(report.failures, 2, "{:#?}", report.accounts);
    let d = &report.accounts[&org.d];
    assert!(
        d.error.as_deref().unwrap().contains("AccessDenied"),
        "{d:?}"
    );
    for account in [&org.a, &org.b, &org.c] {
        assert_eq!(report.accounts[account].failures, 0, "{account}");
    }
    // Exactly what each account's rules condemn.
    assert_eq!(kept_by(&report, &org.a, "us-east-1", &a_ids[0]), "in_use");
    assert_eq!(kept_by(&report, &org.a, "us-east-1", &a_ids[1]), "in_use");
    let pair = report
        .pairs
        .iter()
        .find(|p| p.account == org.a && p.region == "us-east-1")
        .unwrap();
    let d1 = pair.report.as_ref().unwrap().regions[0]
        .plan_detail
        .as_ref()
        .unwrap()
        .decisions
        .iter()
        .find(|d| d.image_id == a_ids[1])
        .unwrap();
    assert_eq!(d1.used_by[0].kind, UsageKind::SharedAccount);
    assert!(d1.used_by[0].id.starts_with(&org.b), "{:?}", d1.used_by);
    assert!(
        d1.used_by[0].id.ends_with("(usage report)"),
        "{:?}",
        d1.used_by
    );
    let judged = |account: &str| {
        report
            .pairs
            .iter()
            .find(|p| p.account == account && p.region == "us-east-1")
            .unwrap()
            .report
            .as_ref()
            .unwrap()
            .regions[0]
            .shared_judged_by
            .clone()
    };
    assert_eq!(judged(&org.a), [("usage_report", 1)].into_iter().collect());
    assert_eq!(
        judged(&org.c),
        [("member_accounts", 1)].into_iter().collect()
    );
    assert_eq!(
        image_ids(a_config).await,
        a_ids.iter().cloned().collect(),
        "a/us-east-1 keeps both"
    );
    // c's image shared with a, which does not use it: gone, as is every other build.
    let c_left = image_ids(c_config).await;
    assert!(!c_left.contains(&c_ids[0]), "shared but unused goes");
    for ((account, region), (config, _)) in &built {
        if (account, *region) != (&org.a, "us-east-1") {
            assert!(
                image_ids(config).await.is_empty(),
                "{account}/{region} still has images"
            );
        }
    }
    // The hub's own old, unused image was never touched: only member credentials acted.
    assert_eq!(image_ids(&hub).await, hub_ids.into_iter().collect());
}

/// A stack naming `image` through its `ImageId` parameter, created with `config`.
async fn pin_with_stack(config: &aws_config::SdkConfig, name: &str, image: &str) {
    let template = r#"{"Parameters": {"ImageId": {"Type": "AWS::EC2::Image::Id"}},
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}"#;
    aws_sdk_cloudformation::Client::new(config)
        .create_stack()
        .stack_name(name)
        .template_body(template)
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("ImageId")
                .parameter_value(image)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// The users written down, across an organization: a's own stack keeps a's image 0 (read
/// in a with a's role: the hub has no such stack), and b's stack keeps a's image 1, shared
/// with b (`keep_if_used` reads b's stacks as it reads b's other sources); a's image 2,
/// named by nobody, goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_and_sibling_stacks_keep_the_images_they_name() {
    let moto = Moto::start_with_public_amis();
    let hub = moto.config().await;
    let base = public_ami(&hub).await;
    let org = OrgBuilder::create(&hub).await;
    let ou = org.ou(&org.root, "workloads").await;
    let (a, b) = (org.account("a", &ou).await, org.account("b", &ou).await);
    let a_config = member_config(&hub, &a, "us-east-1").await;
    let b_config = member_config(&hub, &b, "us-east-1").await;
    let (ids, instance) = bake(&a_config, &base, 3).await;
    aws_sdk_ec2::Client::new(&a_config)
        .terminate_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    pin_with_stack(&a_config, "web-prod", &ids[0]).await;
    aws_sdk_ec2::Client::new(&a_config)
        .modify_image_attribute()
        .image_id(&ids[1])
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(&b).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    pin_with_stack(&b_config, "consumer", &ids[1]).await;

    let policy = Policy::from_json(
        &json!({"dry_run": false, "retention": {"min_age_days": 30},
                "protection": {"shared": "keep_if_used"}, "recycle_bin": "ignore",
                "accounts": {"organization": {"ou_ids": [ou]}}})
        .to_string(),
    )
    .unwrap();
    let clients = Clients::new(hub.clone());
    let accounts = resolve_accounts(&clients, &policy).await.unwrap();
    let regions = vec!["us-east-1".to_string()];
    let opts = SweepOptions {
        regions: regions.clone(),
        force_dry_run: false,
        queue: QueueMode::Local(Default::default()),
        exec: ExecConfig::default(),
        now: chrono::Utc::now() + chrono::TimeDelta::days(60),
    };
    let report = run_org_sweep(&clients, &policy, &accounts, &regions, &opts, 2, None).await;
    assert_eq!(report.failures, 0, "{:#?}", report.accounts);
    let pair = report.pairs.iter().find(|p| p.account == a).unwrap();
    let plan = pair.report.as_ref().unwrap().regions[0]
        .plan_detail
        .as_ref()
        .unwrap();
    let used = |image: &str| -> Vec<(UsageKind, String)> {
        let d = plan.decisions.iter().find(|d| d.image_id == image).unwrap();
        d.used_by.iter().map(|u| (u.kind, u.id.clone())).collect()
    };
    assert_eq!(
        used(&ids[0]),
        [(
            UsageKind::CloudFormationStack,
            "stack web-prod: parameter ImageId".to_string()
        )]
    );
    let shared = used(&ids[1]);
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0].0, UsageKind::SharedAccount);
    assert!(
        shared[0].1.starts_with(&b) && shared[0].1.contains("stack consumer"),
        "{shared:?}"
    );
    assert_eq!(
        image_ids(&a_config).await,
        ids[..2].iter().cloned().collect(),
        "image 2, named by nobody, goes"
    );
}
