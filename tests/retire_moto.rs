//! Gentle retirement end to end on the emulator (its front door answers what moto lacks:
//! the Recycle Bin's `ListRules`/`GetRule`, `ListImagesInRecycleBin`, `DisableImage`,
//! `EnableImage`, `EnableImageDeprecation`, and shows disabled images as such): with an AMI
//! rule of 7 days, no snapshot of a deregistered image is deleted before day 7 and all are
//! deleted by the first sweep after it; staged retirement tags, waits, re-checks usage and
//! deregisters only what is still condemned when the wait is over.

use std::collections::BTreeSet;

use crate::moto::{image_ids, seed_image, snapshot_ids, snapshot_of, Moto};
use ami_sweeper::adapters::aws::Clients;
use ami_sweeper::app::report::{Outcome, SweepReport};
use ami_sweeper::app::run::{run_sweep, QueueMode, SweepOptions};
use ami_sweeper::app::sweep::ExecConfig;
use ami_sweeper::orphans::Keep;
use ami_sweeper::recycle_bin::DELETE_AFTER;
use ami_sweeper::time::{days_after, format_instant, parse_instant};
use ami_sweeper::Policy;
use serde_json::json;

fn rule(id: &str, kind: &str, days: u32, tags: serde_json::Value) -> serde_json::Value {
    json!({
        "Identifier": id, "ResourceType": kind,
        "RetentionPeriod": {"RetentionPeriodValue": days, "RetentionPeriodUnit": "DAYS"},
        "ResourceTags": tags, "ExcludeResourceTags": [],
        "Status": "available", "LockState": "unlocked",
        "RuleArn": format!("arn:aws:rbin:us-east-1:123456789012:rule/{id}")
    })
}

/// `ami-00000000000000001` and `-2`, a year old, untagged.
fn two_old_images() -> serde_json::Value {
    json!((1..=2)
        .map(|i| {
            seed_image(
                &format!("ami-{i:017}"),
                &format!("web-{i}"),
                "2025-01-01T00:00:00.000Z",
                json!({}),
            )
        })
        .collect::<Vec<_>>())
}

async fn sweep_on(moto: &Moto, policy: &Policy, day: u64) -> SweepReport {
    sweep_scoped(moto, policy, day, None).await
}

async fn tags_of(moto: &Moto, snapshot: &str) -> Vec<(String, String)> {
    aws_sdk_ec2::Client::new(&moto.config().await)
        .describe_snapshots()
        .snapshot_ids(snapshot)
        .send()
        .await
        .unwrap()
        .snapshots()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_seven_day_ami_rule_no_snapshot_goes_before_day_seven_and_all_go_after() {
    let moto = Moto::start(Some(two_old_images()));
    moto.front()
        .set_recycle_bin_rules(json!([rule("ami-7d", "EC2_IMAGE", 7, json!([]))]));
    let config = moto.config().await;
    let images: Vec<String> = (1..=2).map(|i| format!("ami-{i:017}")).collect();
    let mut snaps = BTreeSet::new();
    for id in &images {
        snaps.insert(snapshot_of(&config, id).await);
    }
    let policy =
        Policy::from_json(r#"{"dry_run": false, "retention": {"min_age_days": 30}}"#).unwrap();

    // Day 0: both images are deregistered and enter the bin; their snapshots stay, marked.
    let report = sweep_on(&moto, &policy, 0).await;
    let region = &report.regions[0];
    assert_eq!(region.error, None);
    for id in &images {
        let i = region.images.iter().find(|i| &i.image_id == id).unwrap();
        assert_eq!(i.outcome, Some(Outcome::Deregistered));
    }
    assert!(image_ids(&config).await.is_empty());
    assert_eq!(snapshot_ids(&config).await, snaps);
    let due = format_instant(days_after(parse_instant(crate::NOW).unwrap(), 7));
    let plan = region.plan_detail.as_ref().unwrap();
    for d in &plan.decisions {
        let fate = d
            .recycle_bin
            .as_ref()
            .expect("the rule retains every image");
        assert_eq!(format_instant(fate.restorable_until), due);
    }
    assert_eq!(plan.summary.snapshots_deferred, 2);
    for s in &snaps {
        let tags = tags_of(&moto, s).await;
        assert!(
            tags.contains(&(DELETE_AFTER.to_string(), due.clone())),
            "{tags:?}"
        );
    }
    assert!(
        region.jobs.is_empty(),
        "nothing is queued for deferred snapshots"
    );

    // Day 1, the images in the bin: kept (the bin is not even asked: nothing is due).
    moto.front()
        .set_recycle_bin(&images.iter().map(String::as_str).collect::<Vec<_>>());
    let report = sweep_on(&moto, &policy, 1).await;
    let held = &report.regions[0].reconciled;
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|d| d.reason.is_some()), "{held:?}");
    assert_eq!(snapshot_ids(&config).await, snaps);

    // Day 6, even with the bin saying nothing: the date alone holds them.
    moto.front().set_recycle_bin(&[]);
    let report = sweep_on(&moto, &policy, 6).await;
    let held = &report.regions[0].reconciled;
    assert_eq!(held.len(), 2);
    assert!(held
        .iter()
        .all(|d| d.reason == Some(Keep::DeferredForRecycleBin)));
    assert_eq!(snapshot_ids(&config).await, snaps);

    // Day 8, one image still listed in the bin (its rule was lengthened): its snapshot
    // waits on; the other's goes.
    moto.front().set_recycle_bin(&[images[0].as_str()]);
    let report = sweep_on(&moto, &policy, 8).await;
    let kept: Vec<_> = report.regions[0]
        .reconciled
        .iter()
        .filter(|d| d.reason.is_some())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].reason, Some(Keep::ImageInRecycleBin));
    assert_eq!(kept[0].image_id, images[0]);
    assert_eq!(snapshot_ids(&config).await.len(), 1);

    // Day 9, out of the bin: the first sweep after the retention deletes the rest.
    moto.front().set_recycle_bin(&[]);
    let report = sweep_on(&moto, &policy, 9).await;
    assert_eq!(report.regions[0].error, None);
    assert!(snapshot_ids(&config).await.is_empty());
    assert_eq!(report.totals.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_rule_as_long_lets_snapshots_go_now_and_require_keeps_what_no_rule_covers() {
    let seed = vec![
        seed_image(
            "ami-00000000000000001",
            "web-1",
            "2025-01-01T00:00:00.000Z",
            json!({"env": "prod"}),
        ),
        seed_image(
            "ami-00000000000000002",
            "web-2",
            "2025-01-02T00:00:00.000Z",
            json!({"env": "dev"}),
        ),
    ];
    let moto = Moto::start(Some(json!(seed)));
    // Only prod images enter the bin (30 days); every snapshot is kept 30 days too.
    moto.front().set_recycle_bin_rules(json!([
        rule(
            "prod-amis",
            "EC2_IMAGE",
            30,
            json!([{"ResourceTagKey": "env", "ResourceTagValue": "prod"}])
        ),
        rule("snapshots", "EBS_SNAPSHOT", 30, json!([])),
    ]));
    let config = moto.config().await;
    let require = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "recycle_bin": "require"}"#,
    )
    .unwrap();
    let report = sweep_on(&moto, &require, 0).await;
    let region = &report.regions[0];
    let reason = |id: &str| {
        region
            .plan_detail
            .as_ref()
            .unwrap()
            .decisions
            .iter()
            .find(|d| d.image_id == id)
            .unwrap()
            .reasons[0]
            .as_str()
    };
    assert_eq!(reason("ami-00000000000000001"), "expired");
    assert_eq!(reason("ami-00000000000000002"), "no_recycle_bin_rule");
    let left = image_ids(&config).await;
    assert_eq!(
        left,
        ["ami-00000000000000002".to_string()].into_iter().collect()
    );
    // The snapshot rule keeps the prod image's snapshot as long as the image: deleted now.
    let d = region
        .plan_detail
        .as_ref()
        .unwrap()
        .decisions
        .iter()
        .find(|d| d.image_id == "ami-00000000000000001")
        .unwrap();
    assert_eq!(
        d.recycle_bin.as_ref().unwrap().snapshots,
        ami_sweeper::recycle_bin::SnapshotWait::RetainedBySnapshotRule
    );
    assert_eq!(
        snapshot_ids(&config).await.len(),
        1,
        "only web-2's snapshot is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_retirement_tags_waits_re_checks_and_deregisters_only_what_is_still_condemned() {
    use ami_sweeper::retire::{DEPRECATED_AT, DISABLED_AT};
    let moto = Moto::start(Some(two_old_images()));
    let config = moto.config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let (one, two) = ("ami-00000000000000001", "ami-00000000000000002");
    let staged = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30},
            "retire": {"deprecate": true, "disable_for_days": 3}, "recycle_bin": "ignore"}"#,
    )
    .unwrap();
    let image_tags = |id: &'static str| {
        let ec2 = ec2.clone();
        async move {
            let out = ec2
                .describe_images()
                .image_ids(id)
                .include_disabled(true)
                .send()
                .await
                .unwrap();
            let img = &out.images()[0];
            let tags: std::collections::BTreeMap<String, String> = img
                .tags()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                .collect();
            (
                img.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                tags,
            )
        }
    };
    let outcome = |r: &SweepReport, id: &str| {
        r.regions[0]
            .images
            .iter()
            .find(|i| i.image_id == id)
            .unwrap()
            .outcome
    };

    // Day 0: deprecated (tagged); day 1: disabled (tagged, shown disabled).
    let r = sweep_on(&moto, &staged, 0).await;
    assert_eq!(outcome(&r, one), Some(Outcome::Deprecated));
    assert!(image_tags(one).await.1.contains_key(DEPRECATED_AT));
    let r = sweep_on(&moto, &staged, 1).await;
    assert_eq!(outcome(&r, one), Some(Outcome::Disabled));
    let (state, tags) = image_tags(one).await;
    assert_eq!(state, "disabled");
    assert_eq!(
        tags[DISABLED_AT],
        format_instant(days_after(parse_instant(crate::NOW).unwrap(), 1))
    );

    // Day 2: image two gains a user (a launch template) while disabled: enabled again.
    ec2.create_launch_template()
        .launch_template_name("web")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(two)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let r = sweep_on(&moto, &staged, 2).await;
    assert_eq!(outcome(&r, two), Some(Outcome::Enabled));
    assert_eq!(image_tags(two).await.0, "available");
    let d1 = r.regions[0]
        .images
        .iter()
        .find(|i| i.image_id == one)
        .unwrap();
    assert_eq!(d1.reasons[0].as_str(), "retiring");
    assert_eq!(
        image_ids(&config).await.len(),
        2,
        "nothing deregistered during the wait"
    );

    // Day 4: one's wait (3 days from day 1) is over and it is still condemned.
    let r = sweep_on(&moto, &staged, 4).await;
    assert_eq!(outcome(&r, one), Some(Outcome::Deregistered));
    assert_eq!(
        image_ids(&config).await,
        [two.to_string()].into_iter().collect()
    );
    assert_eq!(r.totals.failures, 0);
}

async fn sweep_scoped(
    moto: &Moto,
    policy: &Policy,
    day: u64,
    mandate: Option<ami_sweeper::mandate::Mandate>,
) -> SweepReport {
    let clients = Clients::new(moto.config().await);
    let now = days_after(parse_instant(crate::NOW).unwrap(), day);
    let opts = SweepOptions {
        regions: vec!["us-east-1".into()],
        force_dry_run: false,
        queue: QueueMode::Local(ami_sweeper::app::cleanup::RetryPolicy {
            delay: std::time::Duration::from_millis(100),
            ..Default::default()
        }),
        exec: ExecConfig {
            mandate: mandate.map(std::sync::Arc::new),
            ..ExecConfig::default()
        },
        now,
    };
    run_sweep(&clients, policy, &opts.regions.clone(), &opts).await
}

async fn state_and_tags(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
) -> (String, std::collections::BTreeMap<String, String>) {
    let out = ec2
        .describe_images()
        .image_ids(id)
        .include_disabled(true)
        .send()
        .await
        .unwrap();
    let img = &out.images()[0];
    let tags = img
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    let state = img
        .state()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    (state, tags)
}

async fn tag_image(ec2: &aws_sdk_ec2::Client, id: &str, key: &str, value: Option<&str>) {
    let tag = aws_sdk_ec2::types::Tag::builder().key(key);
    match value {
        Some(v) => {
            ec2.create_tags()
                .resources(id)
                .tags(tag.value(v).build())
                .send()
                .await
                .unwrap();
        }
        None => {
            ec2.delete_tags()
                .resources(id)
                .tags(tag.build())
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_sweep_enables_nothing_and_the_nightly_sweep_does() {
    use ami_sweeper::mandate::{Ask, Mandate, Scope};
    let moto = Moto::start(Some(two_old_images()));
    let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
    let (one, two) = ("ami-00000000000000001", "ami-00000000000000002");
    let policy = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "recycle_bin": "ignore",
            "selection": {"exclude_tags": {"keep": "*"}}, "retire": {"disable_for_days": 7}}"#,
    )
    .unwrap();
    // Day 0: both disabled by the nightly sweep.
    let r = sweep_scoped(&moto, &policy, 0, None).await;
    assert_eq!(r.totals.failures, 0);
    assert_eq!(state_and_tags(&ec2, two).await.0, "disabled");
    // Day 1: two is excluded now. A sweep scoped to image one (an event's) may not
    // re-enable two, outside its scope; nor anything inside it.
    tag_image(&ec2, two, "keep", Some("yes")).await;
    let scoped = Mandate::ceiling(&policy, false, Some("us-east-1")).narrow(&Ask {
        scope: Scope {
            images: Some([one.to_string()].into()),
            ..Scope::default()
        },
        ..Ask::default()
    });
    let r = sweep_scoped(&moto, &policy, 1, Some(scoped)).await;
    assert_eq!(r.totals.failures, 0);
    assert_eq!(r.regions[0].images.len(), 1, "only image one is in scope");
    assert_eq!(state_and_tags(&ec2, two).await.0, "disabled");
    assert_eq!(state_and_tags(&ec2, one).await.0, "disabled");
    // The nightly sweep of the same day does re-enable it.
    let r = sweep_scoped(&moto, &policy, 1, None).await;
    let enabled: Vec<_> = r.regions[0]
        .images
        .iter()
        .filter(|i| i.outcome == Some(Outcome::Enabled))
        .map(|i| i.image_id.as_str())
        .collect();
    assert_eq!(enabled, [two]);
    assert_eq!(state_and_tags(&ec2, two).await.0, "available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enabled_then_disabled_by_hand_an_image_condemned_again_waits_the_full_period() {
    use ami_sweeper::retire::DISABLED_AT;
    let moto = Moto::start(Some(two_old_images()));
    let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
    let one = "ami-00000000000000001";
    let policy = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "recycle_bin": "ignore",
            "selection": {"exclude_tags": {"keep": "*"}}, "retire": {"disable_for_days": 7}}"#,
    )
    .unwrap();
    // Day 0: disabled by the sweep. Day 1: excluded, so enabled again, and the sweeper's
    // tag goes with it.
    sweep_scoped(&moto, &policy, 0, None).await;
    assert!(state_and_tags(&ec2, one).await.1.contains_key(DISABLED_AT));
    tag_image(&ec2, one, "keep", Some("yes")).await;
    let r = sweep_scoped(&moto, &policy, 1, None).await;
    assert_eq!(r.totals.failures, 0, "{:?}", r.regions[0].images);
    let (state, tags) = state_and_tags(&ec2, one).await;
    assert_eq!(state, "available");
    assert!(!tags.contains_key(DISABLED_AT), "{tags:?}");
    // Day 2: someone disables it by hand (incident response). Day 10: no longer excluded,
    // condemned again: the wait starts now, from the sweeper's own disable.
    ec2.disable_image().image_id(one).send().await.unwrap();
    tag_image(&ec2, one, "keep", None).await;
    let r = sweep_scoped(&moto, &policy, 10, None).await;
    let i = r.regions[0]
        .images
        .iter()
        .find(|i| i.image_id == one)
        .unwrap();
    assert_eq!(i.outcome, Some(Outcome::Disabled), "{i:?}");
    assert!(image_ids(&moto.config().await).await.contains(one));
    assert_eq!(
        state_and_tags(&ec2, one).await.1[DISABLED_AT],
        format_instant(days_after(parse_instant(crate::NOW).unwrap(), 10))
    );
    // Day 16 it still waits; day 17 it goes.
    sweep_scoped(&moto, &policy, 16, None).await;
    assert!(image_ids(&moto.config().await).await.contains(one));
    sweep_scoped(&moto, &policy, 17, None).await;
    assert!(!image_ids(&moto.config().await).await.contains(one));
}
