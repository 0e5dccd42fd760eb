//! Issue 20's bullets on the in-memory account, where the emulator cannot hold the estate
//! (moto holds neither multi-volume images nor snapshots shared between images, nor the
//! Recycle Bin): the bin-shared snapshot survives until the other AMI leaves the bin; two
//! snapshots of one image get their own dates; forged or premature snapshot and bundle
//! jobs are refused with the storage rules' reasons; a sibling account's Image Builder
//! recipe keeps a shared image.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::handle_batch;
use ami_sweeper::adapters::memory::{MemoryAccount, State};
use ami_sweeper::app::cleanup::Attempt;
use ami_sweeper::app::report::{Outcome, RegionReport};
use ami_sweeper::app::sweep::{sweep_region, ExecConfig};
use ami_sweeper::app::worker::Handled;
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::model::{
    Image, Snapshot, SnapshotRef, Tags, Timestamp, Usage, UsageKind, UsageRef,
};
use ami_sweeper::orphans::STORAGE_MARK;
use ami_sweeper::recycle_bin::{BinResource, BinRule, BinRules, TagMatch, DELETE_AFTER};
use ami_sweeper::time::{days_after, format_instant, parse_instant};
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::Policy;

const REGION: &str = "us-east-1";

fn now() -> Timestamp {
    parse_instant(crate::NOW).unwrap()
}

fn policy(extra: &str) -> Policy {
    Policy::from_json(&format!(
        r#"{{"dry_run": false, "retention": {{"min_age_days": 30}},
            "selection": {{"exclude_tags": {{"retain": "*"}}}}{extra}}}"#
    ))
    .unwrap()
}

fn image(id: &str, created: Timestamp, snaps: &[&str], tags: &[(&str, &str)]) -> Image {
    let mut i = Image::new(id, id, created);
    i.snapshots = snaps
        .iter()
        .map(|s| SnapshotRef {
            id: s.to_string(),
            size_gib: Some(8),
        })
        .collect();
    for (k, v) in tags {
        i.tags.insert(*k, *v);
    }
    i
}

fn snapshot(id: &str, description: &str, tags: &[(&str, &str)]) -> Snapshot {
    Snapshot {
        id: id.into(),
        description: description.into(),
        start_time: parse_instant("2025-01-01T00:00:00Z"),
        size_gib: Some(8),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        archived: false,
    }
}

/// Tag-level bin rules: `bin=short` 7 days, `bin=long` 30 days.
fn bin_rules() -> BinRules {
    let rule = |days: u32, value: &str| BinRule {
        id: format!("r-{days}"),
        resource: BinResource::Image,
        retention_days: days,
        resource_tags: vec![TagMatch {
            key: "bin".into(),
            value: Some(value.into()),
        }],
        exclude_tags: Vec::new(),
        locked: false,
    };
    BinRules(vec![rule(7, "short"), rule(30, "long")])
}

/// An account with these images, every snapshot they name (described for the first
/// image naming it), the bin rules, and its clock at `now`.
fn account(images: Vec<Image>) -> MemoryAccount {
    let mut state = State {
        clock: Some(now()),
        bin_rules: bin_rules(),
        ..State::default()
    };
    for i in images {
        for s in &i.snapshots {
            let desc = format!("Created by CreateImage(i-1) for {}", i.id);
            state
                .snapshots
                .entry(s.id.clone())
                .or_insert_with(|| snapshot(&s.id, &desc, &[]));
        }
        state.images.insert(i.id.clone(), i);
    }
    MemoryAccount::new(state)
}

/// The queue's worker on one message, the account at its clock.
async fn worker_once(a: &MemoryAccount, rules: &WorkerRules, body: &str) -> Vec<Handled> {
    handle_batch(|_, _| async { Ok(a.clone()) }, rules, &[body], now()).await
}

fn live() -> ExecConfig {
    ExecConfig {
        dry_run: false,
        ..ExecConfig::default()
    }
}

/// A sweep at `days` after [`now`] (the account's clock moved there), then the worker
/// drains what it queued.
async fn day(a: &MemoryAccount, p: &Policy, days: u64, drained: &mut usize) -> RegionReport {
    let at = days_after(now(), days);
    a.update(|s| s.clock = Some(at));
    let report = sweep_region(p, REGION, at, a, a, &live()).await;
    assert_eq!(report.error, None);
    let jobs = a.queued();
    let bodies: Vec<String> = jobs[*drained..].iter().map(CleanupJob::to_json).collect();
    *drained = jobs.len();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let rules = WorkerRules::new(p, Some(REGION), vec!["bundles".to_string()]);
    let a2 = a.clone();
    for h in handle_batch(|_, _| async { Ok(a2.clone()) }, &rules, &refs, at).await {
        assert!(!matches!(h, Handled::Rejected(..)), "{h:?}");
    }
    report
}

#[tokio::test]
async fn a_snapshot_shared_with_an_ami_in_the_recycle_bin_survives_until_it_leaves() {
    // A and B share S; a tag-level rule retains B only. B goes first (A is younger).
    let a = account(vec![
        image(
            "ami-a",
            days_after(now(), 0) - chrono::TimeDelta::days(25),
            &["snap-a", "snap-s"],
            &[],
        ),
        image(
            "ami-b",
            parse_instant("2025-01-01T00:00:00Z").unwrap(),
            &["snap-s"],
            &[("bin", "short")],
        ),
    ]);
    let p = policy("");
    let mut drained = 0;
    let report = day(&a, &p, 0, &mut drained).await;
    assert_eq!(
        report
            .images
            .iter()
            .find(|i| i.image_id == "ami-b")
            .unwrap()
            .outcome,
        Some(Outcome::Deregistered)
    );
    // S stays (A uses it) and carries B's restore date.
    let s = &a.state().snapshots["snap-s"];
    assert_eq!(s.tags.get(DELETE_AFTER), Some("2026-12-03T00:00:00Z"));
    assert_eq!(s.tags.get(STORAGE_MARK), None);
    // Day 6: A is old enough and goes; B is still restorable: S waits, snap-a goes.
    day(&a, &p, 6, &mut drained).await;
    let state = a.state();
    assert!(!state.images.contains_key("ami-a"));
    assert!(
        state.snapshots.contains_key("snap-s"),
        "deleted while B is in the bin"
    );
    assert!(!state.snapshots.contains_key("snap-a"));
    // Day 7: B has left the bin: the reconciliation reclaims S (A marked it).
    day(&a, &p, 7, &mut drained).await;
    assert!(!a.state().snapshots.contains_key("snap-s"));
}

#[tokio::test]
async fn two_snapshots_of_one_image_get_their_own_dates() {
    let old = parse_instant("2025-01-01T00:00:00Z").unwrap();
    let a = account(vec![
        image(
            "ami-c",
            old,
            &["snap-own", "snap-long"],
            &[("bin", "short")],
        ),
        image("ami-d", old, &["snap-long"], &[("bin", "long")]),
    ]);
    let p = policy("");
    let mut drained = 0;
    day(&a, &p, 0, &mut drained).await;
    let state = a.state();
    let date = |s: &str| {
        state.snapshots[s]
            .tags
            .get(DELETE_AFTER)
            .map(str::to_string)
    };
    assert_eq!(date("snap-own"), Some(format_instant(days_after(now(), 7))));
    assert_eq!(
        date("snap-long"),
        Some(format_instant(days_after(now(), 30)))
    );
    // Day 8: C has left the bin, D has not: only snap-own goes.
    day(&a, &p, 8, &mut drained).await;
    let state = a.state();
    assert!(!state.snapshots.contains_key("snap-own"));
    assert!(state.snapshots.contains_key("snap-long"));
    day(&a, &p, 30, &mut drained).await;
    assert!(!a.state().snapshots.contains_key("snap-long"));
}

fn snapshot_job(snapshot_id: &str, image_id: &str) -> String {
    let target = JobTarget::DeleteSnapshot {
        snapshot_id: snapshot_id.into(),
    };
    CleanupJob::new(REGION, image_id, target).to_json()
}

fn bundle_job(key: &str, image_id: &str) -> String {
    let target = JobTarget::DeleteBundle {
        bucket: "bundles".into(),
        manifest_key: key.into(),
    };
    CleanupJob::new(REGION, image_id, target).to_json()
}

/// The reason name a refused job carries to the dead-letter queue (`None`: it ran).
fn reasons(h: &[Handled]) -> Vec<Option<String>> {
    h.iter()
        .map(|h| match h {
            Handled::Rejected(_, why) => Some(why.split(": ").nth(1).unwrap().to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn forged_or_premature_jobs_are_refused_with_the_storage_rules_reasons() {
    let a = account(vec![image("ami-live", now(), &["snap-live"], &[])]);
    let mark = |ami: &str| (STORAGE_MARK.to_string(), ami.to_string());
    a.update(|s| {
        let mut add = |id: &str, tags: &[(&str, &str)]| {
            let sn = snapshot(id, "", tags);
            s.snapshots.insert(id.into(), sn);
        };
        add("snap-bin", &[(STORAGE_MARK, "ami-inbin")]);
        add(
            "snap-dlm",
            &[
                (STORAGE_MARK, "ami-gone"),
                ("aws:dlm:lifecycle-policy-id", "p"),
            ],
        );
        add(
            "snap-early",
            &[
                (STORAGE_MARK, "ami-gone"),
                (DELETE_AFTER, "2026-12-01T00:00:00Z"),
            ],
        );
        add("snap-lt", &[(STORAGE_MARK, "ami-gone")]);
        add("snap-ok", &[(STORAGE_MARK, "ami-gone")]);
        s.snapshots.insert(
            "snap-foreign".into(),
            snapshot(
                "snap-foreign",
                "Created by CreateImage(i-1) for ami-gone",
                &[],
            ),
        );
        s.recycle_bin
            .insert("ami-inbin".into(), Some(days_after(now(), 3)));
        s.template_snapshots.push((
            "snap-lt".into(),
            ami_sweeper::model::TemplateVersion {
                template_id: "lt-1".into(),
                template_name: None,
                version: 1,
                is_default: true,
            },
        ));
        let object = |tags: Vec<(String, String)>| {
            (b"<manifest/>".to_vec(), tags.into_iter().collect::<Tags>())
        };
        s.objects.insert(
            ("bundles".into(), "mine.manifest.xml".into()),
            object(vec![mark("ami-gone")]),
        );
        s.objects.insert(
            ("bundles".into(), "new.manifest.xml".into()),
            object(vec![]),
        );
        s.objects.insert(
            ("bundles".into(), "kept.manifest.xml".into()),
            object(vec![mark("ami-gone"), ("retain".into(), "1".into())]),
        );
        s.objects.insert(
            ("bundles".into(), "live.manifest.xml".into()),
            object(vec![mark("ami-live")]),
        );
    });
    let bodies = [
        snapshot_job("snap-bin", "ami-inbin"),
        snapshot_job("snap-dlm", "ami-gone"),
        snapshot_job("snap-early", "ami-gone"),
        snapshot_job("snap-lt", "ami-gone"),
        snapshot_job("snap-foreign", "ami-gone"),
        snapshot_job("snap-live", "ami-gone"),
        // A bundle uploaded but not registered yet (orphans off), an excluded manifest,
        // and one whose image is still registered.
        bundle_job("new.manifest.xml", "unknown"),
        bundle_job("kept.manifest.xml", "ami-gone"),
        bundle_job("live.manifest.xml", "ami-live"),
    ];
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let p = policy("");
    let rules = WorkerRules::new(&p, Some(REGION), vec!["bundles".to_string()]);
    let handled = handle_batch(|_, _| async { Ok(a.clone()) }, &rules, &refs, now()).await;
    let want = [
        "image_in_recycle_bin",
        "dlm_managed",
        "deferred_for_recycle_bin",
        "named_by_launch_template",
        "orphans_off",
        "not_tied_to_image",
        "orphans_off",
        "excluded_by_tag",
        "image_registered",
    ];
    assert_eq!(
        reasons(&handled),
        want.iter().map(|w| Some(w.to_string())).collect::<Vec<_>>()
    );
    assert!(a.log().is_empty(), "nothing was deleted: {:?}", a.log());
    // cleanup.snapshots: false refuses even a job the sweep itself queued.
    let off = policy(r#", "cleanup": {"snapshots": false}"#);
    let rules = WorkerRules::new(&off, Some(REGION), Vec::<String>::new());
    let ok = snapshot_job("snap-ok", "ami-gone");
    let handled = worker_once(&a, &rules, &ok).await;
    assert_eq!(reasons(&handled), [Some("cleanup_disabled".to_string())]);
    // With the default policy the same job runs.
    let rules = WorkerRules::new(&p, Some(REGION), Vec::<String>::new());
    worker_once(&a, &rules, &ok).await;
    assert_eq!(a.log(), ["DeleteSnapshot snap-ok"]);
}

#[tokio::test]
async fn a_sibling_accounts_image_builder_recipe_keeps_a_shared_image() {
    let old = parse_instant("2025-01-01T00:00:00Z").unwrap();
    let home = account(vec![image("ami-shared", old, &["snap-1"], &[])]);
    home.update(|s| {
        s.launch_permissions
            .insert("ami-shared".into(), vec!["222233334444".into()]);
    });
    // The sibling uses it only as an Image Builder recipe's parent image.
    let sibling = MemoryAccount::new(State::default());
    sibling.update(|s| {
        let mut recipes = Usage::new();
        recipes.add(
            "ami-shared",
            UsageRef {
                kind: UsageKind::ImageRecipe,
                id: "arn:aws:imagebuilder:us-east-1:222233334444:image-recipe/web/1.0.0".into(),
            },
        );
        s.recipes = recipes;
    });
    let p = Policy::from_json(
        r#"{"dry_run": false, "retention": {"min_age_days": 30}, "protection": {"shared": "keep_if_used"}}"#,
    )
    .unwrap();
    let usage = ami_sweeper::app::org::account_usage(&sibling, &p)
        .await
        .unwrap()
        .expect("the recipes were read");
    let mut siblings = BTreeMap::new();
    siblings.insert("222233334444".to_string(), usage);
    let cfg = ExecConfig {
        siblings: Some(Arc::new(siblings)),
        ..live()
    };
    let report = sweep_region(&p, REGION, now(), &home, &home, &cfg).await;
    let d = report
        .images
        .iter()
        .find(|i| i.image_id == "ami-shared")
        .unwrap();
    assert_eq!(d.outcome, None, "{d:?}");
    assert!(home.state().images.contains_key("ami-shared"));
    // Recipes that cannot be read never make the image unused: the account is left out.
    sibling.fail("ListImageRecipes", None, "AccessDeniedException");
    assert!(ami_sweeper::app::org::account_usage(&sibling, &p)
        .await
        .unwrap()
        .is_none());
}

#[test]
fn the_docs_list_the_storage_rules_one_to_one_in_order() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/decisions.md")).unwrap();
    let section = page
        .split("### Storage rules")
        .nth(1)
        .expect("a Storage rules section")
        .split("\n#")
        .next()
        .unwrap();
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(". `")?;
            n.trim().parse::<u32>().ok()?;
            rest.split('`').next()
        })
        .collect();
    let reasons: Vec<&str> = ami_sweeper::storage::StorageReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(listed, reasons);
}

/// The worker's pacing at EC2's documented share (no operator rate), with `stop`.
fn at_share<'a>(
    pacers: &'a ami_sweeper::app::ratelimit::Pacers,
    stop: &'a ami_sweeper::app::stop::Stop,
) -> ami_sweeper::app::worker::Pacing<'a> {
    ami_sweeper::app::worker::Pacing {
        pacers,
        pace: ami_sweeper::app::ratelimit::PaceConfig::default(),
        stop,
    }
}

/// An account holding `ids`, each marked as the storage of the deregistered `ami-gone`,
/// a cleanup job for each, and the worker's rules under the default policy.
fn marked_snapshot_jobs(ids: &[String]) -> (MemoryAccount, Vec<String>, WorkerRules) {
    let a = account(vec![]);
    a.update(|s| {
        for id in ids {
            let sn = snapshot(id, "", &[(STORAGE_MARK, "ami-gone")]);
            s.snapshots.insert(id.clone(), sn);
        }
    });
    let bodies = ids.iter().map(|i| snapshot_job(i, "ami-gone")).collect();
    let rules = WorkerRules::new(&policy(""), Some(REGION), Vec::<String>::new());
    (a, bodies, rules)
}

/// Issue 21: the worker's EC2 calls go through its pacers. Behind `DeleteSnapshot` and
/// Describe buckets far smaller than EC2's, every job of a batch still runs (a throttle
/// is a signal to slow down, never a job's failure), and the pacers say what they met.
#[tokio::test(start_paused = true)]
async fn the_worker_rides_out_throttling_inside_its_batch() {
    use ami_sweeper::app::ratelimit::Pacers;
    use ami_sweeper::app::stop::Stop;
    let ids: Vec<String> = (0..30).map(|i| format!("snap-{i:02}")).collect();
    let (a, bodies, rules) = marked_snapshot_jobs(&ids);
    a.throttle("DeleteSnapshot", 5, 2.0);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let (pacers, stop) = (Pacers::default(), Stop::default());
    let pacing = at_share(&pacers, &stop);
    // Another caller took the Describe bucket's one token: the worker's first read is
    // refused.
    a.throttle("DescribeSnapshots", 1, 0.5);
    let taken = ami_sweeper::ports::JobFacts::owned_snapshots(&a, &ids[..1]).await;
    assert!(taken.is_ok());
    let worker = |_, _| async { Ok(a.clone()) };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &refs, now()).await;
    for h in &handled {
        assert!(
            matches!(h, Handled::Ran(_, Attempt::Done(..))),
            "every job ran: {h:?}"
        );
    }
    assert!(a.state().snapshots.is_empty(), "every snapshot was deleted");
    assert!(a.throttled("DeleteSnapshot") > 0 && a.throttled("DescribeSnapshots") > 0);
    let met: u64 = pacers.reports().iter().map(|(_, r)| r.throttles).sum();
    assert_eq!(
        met,
        a.throttled("DeleteSnapshot") + a.throttled("DescribeSnapshots"),
        "every throttle was met, and retried, by the worker's pacers"
    );
}

/// A deletion the worker cannot make within [`FACTS_FRESH_FOR`] of reading its facts (EC2
/// keeps throttling it) is not made later on those facts: the job goes back to the queue,
/// to be verified afresh, even when the batch itself has time left.
#[tokio::test(start_paused = true)]
async fn a_deletion_throttled_past_its_facts_freshness_goes_back_to_the_queue() {
    use ami_sweeper::app::ratelimit::Pacers;
    use ami_sweeper::app::stop::Stop;
    use ami_sweeper::app::worker::FACTS_FRESH_FOR;
    let ids: Vec<String> = ["snap-a", "snap-b", "snap-c"].map(String::from).into();
    let (a, bodies, rules) = marked_snapshot_jobs(&ids);
    // Another caller holds the DeleteSnapshot bucket empty.
    a.throttle("DeleteSnapshot", 0, 0.0);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let (pacers, stop) = (Pacers::default(), Stop::default());
    let pacing = at_share(&pacers, &stop);
    let started = tokio::time::Instant::now();
    let worker = |_, _| async { Ok(a.clone()) };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &refs, now()).await;
    let took = started.elapsed();
    for h in &handled {
        assert!(matches!(h, Handled::Ran(_, Attempt::Retry(_))), "{h:?}");
    }
    assert!(
        took >= FACTS_FRESH_FOR && took < FACTS_FRESH_FOR * 2,
        "{took:?}"
    );
    assert_eq!(a.state().snapshots.len(), 3, "nothing was deleted");
    assert!(a.throttled("DeleteSnapshot") > 1, "retried while fresh");
}

/// Worker, FACTS_FRESH_FOR: the freshness window counts from the first fact read (the
/// snapshot's tags), not from the last. A Describe call throttled after the tags were read
/// (retried until the batch's stop) must not let the snapshot be deleted on 2-minute-old
/// tags: an exclude tag added meanwhile would not be seen. (It was, before `6bd4441`.)
#[tokio::test(start_paused = true)]
async fn facts_read_before_a_throttled_describe_are_not_older_than_the_freshness_rule() {
    use ami_sweeper::app::ratelimit::Pacers;
    use ami_sweeper::app::stop::Stop;
    use ami_sweeper::app::worker::FACTS_FRESH_FOR;
    use std::time::Duration;
    let a = account(vec![]);
    a.update(|s| {
        let sn = snapshot("snap-a", "", &[(STORAGE_MARK, "ami-gone")]);
        s.snapshots.insert("snap-a".into(), sn);
    });
    // Another caller just took the Describe bucket's only token for DescribeImages; it
    // comes back every 120 s.
    a.throttle("DescribeImages", 1, 1.0 / 120.0);
    let taken = ami_sweeper::ports::JobFacts::registered_images(&a, &[]).await;
    assert!(taken.is_ok());
    // 60 s into the batch, the operator tags the snapshot to keep it.
    let a2 = a.clone();
    let operator = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        a2.update(|s| {
            s.snapshots
                .get_mut("snap-a")
                .unwrap()
                .tags
                .insert("retain", "yes");
        });
    });
    let p = policy("");
    let rules = WorkerRules::new(&p, Some(REGION), Vec::<String>::new());
    let (pacers, stop) = (Pacers::default(), Stop::default());
    let pacing = at_share(&pacers, &stop);
    let body = snapshot_job("snap-a", "ami-gone");
    let started = tokio::time::Instant::now();
    let worker = |_, _| async { Ok(a.clone()) };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &[body.as_str()], now())
            .await;
    let took = started.elapsed();
    operator.await.unwrap();
    assert!(
        took > FACTS_FRESH_FOR * 2,
        "the Describe call was throttled: {took:?}"
    );
    assert!(
        a.state().snapshots.contains_key("snap-a"),
        "snap-a was deleted {took:?} after its tags were read (the exclude tag added at 60 s \
         was never seen): {handled:?}"
    );
    assert!(
        !matches!(handled[0], Handled::Ran(_, Attempt::Done(..))),
        "{handled:?}"
    );
}

/// Control for the freshness test: the same exclude tag, present when the facts are read,
/// keeps the snapshot (so the deletion above is only the stale facts' doing).
#[tokio::test(start_paused = true)]
async fn control_an_exclude_tag_seen_in_the_facts_keeps_the_snapshot() {
    let a = account(vec![]);
    a.update(|s| {
        let sn = snapshot(
            "snap-a",
            "",
            &[(STORAGE_MARK, "ami-gone"), ("retain", "yes")],
        );
        s.snapshots.insert("snap-a".into(), sn);
    });
    let p = policy("");
    let rules = WorkerRules::new(&p, Some(REGION), Vec::<String>::new());
    let body = snapshot_job("snap-a", "ami-gone");
    let worker = |_, _| async { Ok(a.clone()) };
    let handled = crate::handle_batch(worker, &rules, &[body.as_str()], now()).await;
    assert!(a.state().snapshots.contains_key("snap-a"), "{handled:?}");
    assert!(matches!(handled[0], Handled::Rejected(..)), "{handled:?}");
}

/// A marked bundle of the gone `ami-gone` in `bundles`, manifest and both parts.
fn marked_bundle() -> MemoryAccount {
    let a = account(vec![]);
    let manifest = br#"<manifest><image><parts count="2"><part><filename>app-1.part.0</filename></part><part><filename>app-1.part.1</filename></part></parts></image></manifest>"#;
    a.update(|s| {
        let mut tags = Tags::new();
        tags.insert(STORAGE_MARK, "ami-gone");
        let mut put = |k: &str, body: &[u8], tags: Tags| {
            s.objects
                .insert(("bundles".into(), k.into()), (body.to_vec(), tags));
        };
        put("app/app-1.manifest.xml", manifest, tags);
        put("app/app-1.part.0", b"0", Tags::new());
        put("app/app-1.part.1", b"1", Tags::new());
    });
    a
}

/// 10 s into the job's facts (its manifest's tags take 35 s to read), someone registers
/// an image from the manifest.
fn register_from_the_manifest_in_the_window(a: &MemoryAccount) -> tokio::task::JoinHandle<()> {
    use std::time::Duration;
    a.hold("GetObjectTagging", Duration::from_secs(35), 1);
    let a2 = a.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        a2.update(|s| {
            let mut i = image("ami-new", now(), &[], &[]);
            i.root_device = ami_sweeper::model::RootDevice::InstanceStore;
            i.image_location = Some("bundles/app/app-1.manifest.xml".into());
            s.images.insert(i.id.clone(), i);
        });
    })
}

/// Issue 28 item 4, queue path, in memory where the window can be filled: facts read over
/// 35 s are stale before any `DeleteObjects`; the job goes back, and verified again it sees
/// the image registered in the window. (Before: deleted on the stale facts.)
#[tokio::test(start_paused = true)]
async fn a_bundle_registered_from_while_its_facts_were_read_is_not_deleted_by_the_worker() {
    let a = marked_bundle();
    let operator = register_from_the_manifest_in_the_window(&a);
    let p = policy("");
    let rules = WorkerRules::new(&p, Some(REGION), vec!["bundles".to_string()]);
    let body = bundle_job("app/app-1.manifest.xml", "ami-gone");
    let first = worker_once(&a, &rules, &body).await;
    operator.await.unwrap();
    assert!(
        matches!(&first[0], Handled::Ran(_, Attempt::Retry(_))),
        "{first:?}"
    );
    assert_eq!(a.state().objects.len(), 3, "{:?}", a.log());
    let again = worker_once(&a, &rules, &body).await;
    assert_eq!(reasons(&again), [Some("used_by_other_image".to_string())]);
    assert_eq!(a.state().objects.len(), 3);
}

/// The same, in process: the attempt on stale facts deletes nothing and the next one,
/// verified afresh, refuses the job.
#[tokio::test(start_paused = true)]
async fn a_bundle_registered_from_while_its_facts_were_read_is_not_deleted_in_process() {
    let a = marked_bundle();
    let operator = register_from_the_manifest_in_the_window(&a);
    let retry = ami_sweeper::app::cleanup::RetryPolicy::default();
    let job = CleanupJob::from_json(&bundle_job("app/app-1.manifest.xml", "ami-gone")).unwrap();
    let p = policy("");
    let reports = crate::run_in_process(&a, &p, &["bundles"], &retry, None, vec![job], now()).await;
    operator.await.unwrap();
    assert_eq!(a.state().objects.len(), 3, "{:?}", a.log());
    assert_eq!(reports[0].attempts, 2, "{reports:?}");
    let why = reports[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("used_by_other_image"), "{reports:?}");
}

/// A snapshot job names the image it was queued for (gone, not in the bin), but the
/// snapshot itself names another image, in the Recycle Bin (its `CreateImage` description):
/// restoring that image needs the snapshot, so it stays. The worker reads the bin for the
/// jobs' own images beside its first facts; an image only the facts name is read after
/// them, and must not be skipped.
#[tokio::test(start_paused = true)]
async fn a_snapshot_an_image_in_the_recycle_bin_was_made_from_survives_another_images_job() {
    let a = account(Vec::new());
    a.update(|s| {
        let desc = "Created by CreateImage(i-1) for ami-binned";
        s.snapshots.insert(
            "snap-s".into(),
            snapshot("snap-s", desc, &[(STORAGE_MARK, "ami-queued")]),
        );
        s.recycle_bin
            .insert("ami-binned".into(), Some(days_after(now(), 5)));
    });
    let job = CleanupJob {
        version: ami_sweeper::jobs::JOB_VERSION,
        account: None,
        region: REGION.into(),
        image_id: "ami-queued".into(),
        target: JobTarget::DeleteSnapshot {
            snapshot_id: "snap-s".into(),
        },
        mandate: None,
    };
    let retry = ami_sweeper::app::cleanup::RetryPolicy::default();
    let p = policy("");
    let reports = crate::run_in_process(&a, &p, &[], &retry, None, vec![job], now()).await;
    assert!(
        a.state().snapshots.contains_key("snap-s"),
        "deleted while the image it was made from is in the bin: {reports:?}"
    );
    assert_eq!(reports.len(), 1, "{reports:?}");
}

/// A job's image is deregistered into the Recycle Bin (one `DeregisterImage`, under a
/// retention rule) while the worker reads its facts: the bin must be read after
/// `DescribeImages` has answered, or the image is in neither answer (registered when the
/// bin was read, gone when the images were) and the snapshot it needs to be restored is
/// deleted. Here the `DescribeImages` and `DescribeSnapshots` calls are slow (2 s) and the
/// image moves to the bin 1 s into them.
#[tokio::test(start_paused = true)]
async fn a_snapshot_whose_image_goes_to_the_recycle_bin_while_its_facts_are_read_survives() {
    use ami_sweeper::ports::Deregistrar;
    use std::time::Duration;
    let created = parse_instant("2025-01-01T00:00:00Z").unwrap();
    let a = account(vec![image(
        "ami-a",
        created,
        &["snap-a"],
        &[("bin", "long")],
    )]);
    a.update(|s| {
        let sn = s.snapshots.get_mut("snap-a").unwrap();
        sn.tags.insert(STORAGE_MARK, "ami-a");
    });
    a.hold("DescribeImages", Duration::from_secs(2), 2);
    a.hold("DescribeSnapshots", Duration::from_secs(2), 1);
    let operator = {
        let a = a.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            a.deregister("ami-a").await.unwrap();
        })
    };
    let p = policy("");
    let rules = WorkerRules::new(&p, Some(REGION), Vec::new());
    let body = snapshot_job("snap-a", "ami-a");
    let handled = worker_once(&a, &rules, &body).await;
    operator.await.unwrap();
    assert!(a.state().recycle_bin.contains_key("ami-a"), "{:?}", a.log());
    assert!(
        a.state().snapshots.contains_key("snap-a"),
        "deleted while its image is in the bin: {handled:?} {:?}",
        a.log()
    );
}

/// Review of a round's deletions made at once: the same bundle named by two jobs of one
/// batch (a job redelivered, or sent again by a later sweep's reconciliation, beside the
/// first) is deleted once and reported once. S3's `DeleteObjects` takes a moment to answer:
/// the second job must not read the manifest while the first is deleting its parts, and
/// report the same objects deleted again.
#[tokio::test(start_paused = true)]
async fn one_bundle_named_twice_in_a_round_is_deleted_and_reported_once() {
    let a = marked_bundle();
    a.hold("DeleteObjects", std::time::Duration::from_millis(50), 2);
    let p = policy("");
    let rules = WorkerRules::new(&p, Some(REGION), vec!["bundles".to_string()]);
    let body = bundle_job("app/app-1.manifest.xml", "ami-gone");
    let worker = |_, _| async { Ok(a.clone()) };
    let handled = handle_batch(worker, &rules, &[body.as_str(), body.as_str()], now()).await;
    assert!(a.state().objects.is_empty(), "{:?}", a.log());
    let deleted: Vec<_> = handled
        .iter()
        .filter(|h| matches!(h, Handled::Ran(_, Attempt::Done(o, _)) if *o == ami_sweeper::app::report::JobOutcome::Deleted))
        .collect();
    assert_eq!(deleted.len(), 1, "{handled:?}");
    let log = a.log();
    let manifest_deletions = log
        .iter()
        .filter(|l| l.ends_with("app/app-1.manifest.xml"))
        .count();
    assert_eq!(manifest_deletions, 1, "{log:?}");
}

/// Review of a round's deletions made at once: a signal while they wait at a slow
/// `DeleteSnapshot` pacer ends every wait, no deletion starts after it, and each job's
/// answer is its own (deleted: gone; retried: still there).
#[tokio::test(start_paused = true)]
async fn a_signal_while_a_rounds_deletions_wait_at_the_pacer_starts_none_after_it() {
    use ami_sweeper::app::ratelimit::{PaceConfig, Pacers};
    use ami_sweeper::app::report::JobOutcome;
    use ami_sweeper::app::stop::Stop;
    use ami_sweeper::app::worker::Pacing;
    use std::time::Duration;
    let ids: Vec<String> = (0..10).map(|i| format!("snap-{i:02}")).collect();
    let (a, bodies, rules) = marked_snapshot_jobs(&ids);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let (pacers, stop) = (Pacers::default(), Stop::default());
    // A fiftieth of EC2's buckets: `DeleteSnapshot` one call at once, then one per 10 s.
    let pacing = Pacing {
        pacers: &pacers,
        pace: PaceConfig::default().with_share(0.02),
        stop: &stop,
    };
    let (a2, stop2) = (a.clone(), stop.clone());
    let signal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        stop2.request();
        a2.log().len()
    });
    let worker = |_, _| async { Ok(a.clone()) };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &refs, now()).await;
    let at_signal = signal.await.unwrap();
    let log = a.log();
    assert_eq!(log.len(), at_signal, "deletions after the signal: {log:?}");
    let left = a.state().snapshots;
    let mut deleted = 0;
    for h in &handled {
        let Handled::Ran(job, attempt) = h else {
            panic!("{h:?}")
        };
        let JobTarget::DeleteSnapshot { snapshot_id } = &job.target else {
            panic!("{job:?}")
        };
        match attempt {
            Attempt::Done(JobOutcome::Deleted, _) => {
                deleted += 1;
                assert!(!left.contains_key(snapshot_id), "{h:?}");
            }
            Attempt::Retry(_) => assert!(left.contains_key(snapshot_id), "{h:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert!((1..10).contains(&deleted), "{handled:?}");
    assert_eq!(deleted + left.len(), 10);
}

/// Review of the pacer's retry lane (a throttled deletion's first retry takes the next
/// token): a round of deletions behind a `DeleteSnapshot` bucket far smaller than the
/// pacer's share, so that most are throttled and retried on the lane, makes and attempts
/// none after its facts' freshness, and deletions go on all through it (the lane stalls
/// nobody).
#[tokio::test(start_paused = true)]
async fn deletions_retried_on_the_retry_lane_stop_at_their_facts_freshness() {
    use ami_sweeper::app::ratelimit::Pacers;
    use ami_sweeper::app::report::JobOutcome;
    use ami_sweeper::app::stop::Stop;
    use ami_sweeper::app::worker::FACTS_FRESH_FOR;
    use std::time::Duration;
    let ids: Vec<String> = (0..60).map(|i| format!("snap-{i:02}")).collect();
    let (a, bodies, rules) = marked_snapshot_jobs(&ids);
    a.throttle("DeleteSnapshot", 3, 1.0);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let (pacers, stop) = (Pacers::default(), Stop::default());
    let pacing = at_share(&pacers, &stop);
    let deletions = |a: &MemoryAccount| {
        let log = a.log();
        log.iter()
            .filter(|l| l.starts_with("DeleteSnapshot"))
            .count()
    };
    // The facts are read at once (nothing holds the reads): stale from FACTS_FRESH_FOR on.
    // Three seconds before, another caller takes the bucket for good: every attempt from
    // then on is throttled, and the retries of the last ones wait past the freshness.
    let (a2, at_half) = (a.clone(), FACTS_FRESH_FOR / 2);
    let drained = FACTS_FRESH_FOR - Duration::from_secs(3);
    let watch = tokio::spawn(async move {
        tokio::time::sleep(at_half).await;
        let half = deletions(&a2);
        tokio::time::sleep(drained - at_half).await;
        a2.throttle("DeleteSnapshot", 0, 0.0);
        tokio::time::sleep(FACTS_FRESH_FOR - drained + Duration::from_millis(1)).await;
        (half, deletions(&a2), a2.throttled("DeleteSnapshot"))
    });
    let worker = |_, _| async { Ok(a.clone()) };
    let handled =
        ami_sweeper::app::worker::handle_batch(worker, &rules, pacing, &refs, now()).await;
    let (at_half, at_stale, throttled_at_stale) = watch.await.unwrap();
    let made = deletions(&a);
    assert_eq!(
        made,
        at_stale,
        "deletions made on stale facts: {:?}",
        a.log()
    );
    // Nor attempted: a throttled attempt is a call made, refused or not.
    let throttled = a.throttled("DeleteSnapshot");
    assert_eq!(
        throttled, throttled_at_stale,
        "deletions attempted on stale facts"
    );
    assert!(throttled > 0, "nothing was throttled");
    assert!(
        at_half > 3 && made > at_half,
        "deletions stalled: {at_half} by half the freshness, {made} in all"
    );
    let left = a.state().snapshots;
    for h in &handled {
        let Handled::Ran(job, attempt) = h else {
            panic!("{h:?}")
        };
        let JobTarget::DeleteSnapshot { snapshot_id } = &job.target else {
            panic!("{job:?}")
        };
        match attempt {
            Attempt::Done(JobOutcome::Deleted, _) => assert!(!left.contains_key(snapshot_id)),
            Attempt::Retry(_) => assert!(left.contains_key(snapshot_id), "{h:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(made + left.len(), 60);
}

/// Issue 29: a sweep's first deregistrations come in a burst, and its in-process worker
/// gets their jobs one by one. A round takes its jobs only once no other round is
/// reading: the jobs that came while the first round read share the second round (one
/// round of reads, their deletions at once). Before, the second round took the one job
/// there was and the rest waited for a third (bench-fanout row (a): the pair's
/// `DeleteSnapshot` bucket sat full for seconds after its first deregistration).
#[tokio::test(start_paused = true)]
async fn jobs_that_come_while_a_round_reads_share_the_next_round() {
    use futures_util::StreamExt;
    use std::time::Duration;
    let ids: Vec<String> = (0..6).map(|i| format!("snap-{i}")).collect();
    let (a, bodies, _) = marked_snapshot_jobs(&ids);
    a.hold("DescribeSnapshots", Duration::from_secs(1), 10);
    let jobs: Vec<CleanupJob> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    // The first at once, the other five a tenth of a second apart: all while the first
    // round reads.
    let arriving =
        futures_util::stream::iter(jobs.into_iter().enumerate()).then(|(i, job)| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            job
        });
    let retry = ami_sweeper::app::cleanup::RetryPolicy::default();
    let reports =
        crate::run_in_process_from(&a, &policy(""), &[], &retry, None, arriving, now()).await;
    assert_eq!(reports.len(), 6);
    assert!(a.state().snapshots.is_empty(), "every snapshot was deleted");
    assert_eq!(
        a.calls("DescribeSnapshots"),
        2,
        "one round for the first job, one for the five that came while it read"
    );
}
