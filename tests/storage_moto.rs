//! Issue 20's launch template bullet against the emulator (moto holds images with one
//! snapshot and launch templates that map snapshots): an image whose root snapshot a
//! launch template's default version also maps as an extra volume is deregistered, and the
//! snapshot survives it, kept `named_by_launch_template`; the next sweep's reconciliation
//! keeps it for the same reason.

use crate::moto::{seed_image, snapshot_ids, snapshot_of, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::report::{Outcome, SweepReport};
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::planner::{CleanupAction, RetainReason};
use ami_sweeper::time::parse_instant;
use ami_sweeper::Policy;
use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    RequestLaunchTemplateData,
};
use serde_json::json;

const IMAGE: &str = "ami-00000000000000001";
const FREE: &str = "ami-00000000000000002";

async fn sweep(moto: &Moto) -> SweepReport {
    let clients = Clients::new(moto.config().await);
    let policy =
        Policy::from_json(r#"{"dry_run": false, "retention": {"min_age_days": 30}}"#).unwrap();
    let opts = SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: false,
        queue: QueueMode::Local(Default::default()),
        exec: ExecConfig::default(),
        now: parse_instant(crate::NOW).unwrap(),
    };
    run_sweep(&clients, &policy, &opts.regions.clone(), &opts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_a_launch_template_maps_survives_its_image() {
    let old = "2025-01-01T00:00:00.000Z";
    // Snapshots described as CreateImage writes it: the reconciliation sees them.
    let seeded = |id: &str, name: &str| {
        let mut s = seed_image(id, name, old, json!({}));
        s["snapshot_description"] = json!(format!("Created by CreateImage(i-1) for {id}"));
        s
    };
    let moto = Moto::start(Some(json!([seeded(IMAGE, "mapped"), seeded(FREE, "free")])));
    let config = moto.config().await;
    let mapped = snapshot_of(&config, IMAGE).await;
    let free = snapshot_of(&config, FREE).await;
    // The template launches another image and maps IMAGE's snapshot as /dev/sdf.
    aws_sdk_ec2::Client::new(&config)
        .create_launch_template()
        .launch_template_name("web")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-0fffffffffffffff0")
                .block_device_mappings(
                    LaunchTemplateBlockDeviceMappingRequest::builder()
                        .device_name("/dev/sdf")
                        .ebs(
                            LaunchTemplateEbsBlockDeviceRequest::builder()
                                .snapshot_id(&mapped)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let report = sweep(&moto).await;
    let region = &report.regions[0];
    assert!(region.error.is_none(), "{:?}", region.error);
    let outcome = |id: &str| {
        region
            .images
            .iter()
            .find(|i| i.image_id == id)
            .and_then(|i| i.outcome)
    };
    assert_eq!(outcome(IMAGE), Some(Outcome::Deregistered));
    assert_eq!(outcome(FREE), Some(Outcome::Deregistered));
    let plan = region.plan_detail.as_ref().unwrap();
    let kept = plan
        .decisions
        .iter()
        .flat_map(|d| &d.snapshots)
        .find(|s| s.snapshot_id == mapped)
        .unwrap();
    assert_eq!(kept.action, CleanupAction::Retain);
    assert_eq!(kept.reason, Some(RetainReason::NamedByLaunchTemplate));
    let left = snapshot_ids(&config).await;
    assert!(left.contains(&mapped), "the mapped snapshot was deleted");
    assert!(!left.contains(&free), "the free snapshot is reclaimed");
    // The next sweep finds it with its image gone, and keeps it for the same reason.
    let again = sweep(&moto).await;
    let held = again.regions[0]
        .reconciled
        .iter()
        .find(|d| d.snapshot_id == mapped)
        .unwrap();
    assert_eq!(held.reason, Some(RetainReason::NamedByLaunchTemplate));
    assert!(snapshot_ids(&config).await.contains(&mapped));
    // It was marked before its image went: once the template lets go, the next sweep
    // reclaims it as ami-sweeper's own (no orphan policy needed), never losing track.
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let tags = ec2
        .describe_snapshots()
        .snapshot_ids(&mapped)
        .send()
        .await
        .unwrap()
        .snapshots()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect::<Vec<_>>();
    assert!(
        tags.contains(&(
            ami_sweeper::orphans::STORAGE_MARK.to_string(),
            IMAGE.to_string()
        )),
        "{tags:?}"
    );
    ec2.delete_launch_template()
        .launch_template_name("web")
        .send()
        .await
        .unwrap();
    sweep(&moto).await;
    assert!(!snapshot_ids(&config).await.contains(&mapped));
}
