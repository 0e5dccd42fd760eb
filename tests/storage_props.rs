//! The storage property (issue 20): over generated estates and orders of sweeps (the
//! planner and the reconciliation, their jobs run in process, verified as the sweep
//! verifies them, or queued), worker drains and the passing of time, on the in-memory account with its
//! Recycle Bin, no snapshot is ever deleted that the storage rules (docs/decisions.md) keep at that
//! instant. The oracle is a plain restatement of those rules over what the test knows
//! to be true (which images exist, which are in the bin and until when, what a launch
//! template maps): it never calls `storage::fate`. Two committed tests run the same
//! property against deliberately wrong variants of the account and assert it finds each.

use std::collections::BTreeSet;

use crate::handle_batch;
use ami_sweeper::adapters::memory::{Distortions, MemoryAccount, State};
use ami_sweeper::app::sweep::{sweep_region, ExecConfig};
use ami_sweeper::jobs::CleanupJob;
use ami_sweeper::model::{Image, Snapshot, SnapshotRef, Tags, TemplateVersion, Timestamp};
use ami_sweeper::recycle_bin::{BinResource, BinRule, BinRules, TagMatch};
use ami_sweeper::time::{days_after, days_before, parse_instant};
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::Policy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const REGION: &str = "us-east-1";

/// One image of a generated estate.
#[derive(Debug, Clone)]
struct GenImage {
    /// Age in days at the start.
    age: u64,
    /// Indexes of the snapshots its block device mappings reference.
    snaps: BTreeSet<usize>,
    /// 0: no bin rule retains it; 1: 7 days; 2: 30 days.
    bin: u8,
}

/// A generated estate and policy.
#[derive(Debug, Clone)]
struct Estate {
    images: Vec<GenImage>,
    /// Per snapshot: its age in days at the start, whether it carries the exclude tag,
    /// whether a launch template's default version maps it, which image (index) its
    /// description names (`None`: an image that is gone).
    snapshots: Vec<(u64, bool, bool, Option<usize>)>,
    /// `cleanup.orphans.min_age_days`, if on.
    orphans: Option<u64>,
    /// `cleanup.snapshots`.
    cleanup: bool,
}

/// What happens next.
#[derive(Debug, Clone)]
enum Op {
    /// A sweep; its jobs run at once in process (verified, as the sweep runs them) or stay
    /// queued.
    Sweep { in_process: bool },
    /// The worker drains the queue (verifying each job).
    Drain,
    /// Time passes.
    Advance(u64),
    /// Someone deregisters an image by hand (into the bin, if a rule retains it).
    ByHand(usize),
}

fn arb_estate() -> impl Strategy<Value = Estate> {
    let image = (
        prop_oneof![Just(5u64), Just(40), Just(100)],
        prop::collection::btree_set(0usize..5, 1..=3),
        0u8..3,
    )
        .prop_map(|(age, snaps, bin)| GenImage { age, snaps, bin });
    let snapshot = (
        prop_oneof![Just(2u64), Just(100)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.25),
        prop::option::of(0usize..4),
    );
    (
        prop::collection::vec(image, 2..=4),
        prop::collection::vec(snapshot, 5),
        prop::option::of(prop_oneof![Just(0u64), Just(10)]),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(images, snapshots, orphans, cleanup)| Estate {
            images,
            snapshots,
            orphans,
            cleanup,
        })
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => any::<bool>().prop_map(|in_process| Op::Sweep { in_process }),
        2 => Just(Op::Drain),
        3 => prop_oneof![Just(1u64), Just(8), Just(31)].prop_map(Op::Advance),
        1 => (0usize..4).prop_map(Op::ByHand),
    ];
    prop::collection::vec(op, 1..10)
}

fn start() -> Timestamp {
    parse_instant(crate::NOW).unwrap()
}

fn image_id(i: usize) -> String {
    format!("ami-{i:04}")
}

fn snapshot_id(s: usize) -> String {
    format!("snap-{s:04}")
}

fn policy(e: &Estate) -> Policy {
    let orphans = e
        .orphans
        .map(|d| format!(r#", "orphans": {{"min_age_days": {d}}}"#))
        .unwrap_or_default();
    Policy::from_json(&format!(
        r#"{{"dry_run": false, "retention": {{"min_age_days": 30}},
            "selection": {{"exclude_tags": {{"retain": "*"}}}},
            "cleanup": {{"snapshots": {}{orphans}}}}}"#,
        e.cleanup
    ))
    .unwrap()
}

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

/// The account holding the estate, with its clock at the start.
fn seed(e: &Estate) -> MemoryAccount {
    let mut state = State {
        clock: Some(start()),
        bin_rules: bin_rules(),
        ..State::default()
    };
    for (n, g) in e.images.iter().enumerate() {
        let mut img = Image::new(
            image_id(n),
            format!("app-{n}"),
            days_before(start(), g.age).unwrap(),
        );
        img.snapshots = g
            .snaps
            .iter()
            .map(|s| SnapshotRef {
                id: snapshot_id(*s),
                size_gib: Some(8),
            })
            .collect();
        match g.bin {
            1 => img.tags.insert("bin", "short"),
            2 => img.tags.insert("bin", "long"),
            _ => {}
        }
        state.images.insert(img.id.clone(), img);
    }
    for (s, (age, excluded, templated, named)) in e.snapshots.iter().enumerate() {
        let named = named
            .filter(|i| *i < e.images.len())
            .map_or(format!("ami-gone{s}"), image_id);
        let mut tags = Tags::new();
        if *excluded {
            tags.insert("retain", "audit");
        }
        let snap = Snapshot {
            id: snapshot_id(s),
            description: format!("Created by CreateImage(i-1) for {named} from vol-1"),
            start_time: days_before(start(), *age),
            size_gib: Some(8),
            tags,
            archived: false,
        };
        state.snapshots.insert(snap.id.clone(), snap);
        if *templated {
            let v = TemplateVersion {
                template_id: "lt-1".into(),
                template_name: Some("web".into()),
                version: 1,
                is_default: true,
            };
            state.template_snapshots.push((snapshot_id(s), v));
        }
    }
    MemoryAccount::new(state)
}

/// The storage rules (docs/decisions.md), restated over the truth: may `snapshot` be deleted at
/// `now`? `by_sweeper`: the images ami-sweeper deregistered so far.
fn oracle_allows(
    e: &Estate,
    state: &State,
    before: &Snapshot,
    by_sweeper: &BTreeSet<String>,
    now: Timestamp,
) -> Result<(), String> {
    let s = before.id.as_str();
    let n: usize = s["snap-".len()..].parse().unwrap();
    let refs = |i: &usize| e.images[*i].snaps.contains(&n);
    let users: Vec<String> = (0..e.images.len()).filter(refs).map(image_id).collect();
    if let Some(u) = users.iter().find(|u| state.images.contains_key(*u)) {
        return Err(format!("{s}: the registered image {u} references it"));
    }
    if e.snapshots[n].2 {
        return Err(format!("{s}: a launch template's default version maps it"));
    }
    if e.snapshots[n].1 {
        return Err(format!("{s}: it carries the exclude tag"));
    }
    // An AMI in the bin needs it when ami-sweeper deregistered that AMI (and so dated
    // the snapshot) or when the snapshot's description names it: the links the rules
    // have, since the bin reports no block device mappings.
    let described = before
        .description
        .split_whitespace()
        .find(|w| w.starts_with("ami-"));
    for u in &users {
        if let Some(Some(exit)) = state.recycle_bin.get(u) {
            let linked = by_sweeper.contains(u) || described == Some(u.as_str());
            if *exit > now && linked {
                return Err(format!("{s}: {u} is in the Recycle Bin until {exit}"));
            }
        }
    }
    if !e.cleanup {
        return Err(format!("{s}: cleanup.snapshots is off"));
    }
    let foreign = !users.iter().any(|u| by_sweeper.contains(u));
    if foreign {
        let Some(days) = e.orphans else {
            return Err(format!("{s}: foreign, and orphans are off"));
        };
        let old_enough = days_before(now, days).is_some_and(|l| before.start_time.unwrap() <= l);
        if !old_enough {
            return Err(format!("{s}: foreign, and younger than {days} days"));
        }
    }
    Ok(())
}

/// Runs `ops` on the estate and checks every deletion against the oracle.
fn check(e: &Estate, ops: &[Op], distortions: Distortions) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let account = seed(e);
        account.update(|s| s.distortions = distortions);
        let policy = policy(e);
        let rules = WorkerRules::new(&policy, Some(REGION), Vec::<String>::new());
        let mut now = start();
        let mut taken = 0usize;
        let mut by_sweeper = BTreeSet::new();
        for op in ops {
            let before = account.state();
            match op {
                Op::Sweep { in_process } => {
                    let cfg = ExecConfig {
                        dry_run: false,
                        ..ExecConfig::default()
                    };
                    let r = sweep_region(&policy, REGION, now, &account, &account, &cfg).await;
                    prop_assert!(r.error.is_none(), "{:?}", r.error);
                    let jobs = account.queued();
                    if *in_process {
                        run_verified_in_process(&account, &policy, jobs[taken..].to_vec(), now)
                            .await;
                        taken = jobs.len();
                    }
                }
                Op::Drain => {
                    let jobs = account.queued();
                    let bodies: Vec<String> = jobs[taken..].iter().map(|j| j.to_json()).collect();
                    taken = jobs.len();
                    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
                    let a = account.clone();
                    handle_batch(|_, _| async { Ok(a.clone()) }, &rules, &refs, now).await;
                }
                Op::Advance(days) => {
                    now = days_after(now, *days);
                    account.update(|s| s.clock = Some(now));
                }
                Op::ByHand(i) => {
                    let id = image_id(*i);
                    account.update(|s| {
                        if let Some(img) = s.images.remove(&id) {
                            let kept = s.bin_rules.retention(BinResource::Image, Some(&img.tags));
                            if let Some(days) = kept {
                                s.recycle_bin
                                    .insert(id, Some(days_after(now, u64::from(days))));
                            }
                        }
                    });
                }
            }
            for entry in account.log() {
                if let Some(id) = entry.strip_prefix("DeregisterImage ") {
                    by_sweeper.insert(id.to_string());
                }
            }
            let after = account.state();
            for (id, snap) in &before.snapshots {
                if !after.snapshots.contains_key(id) {
                    if let Err(why) = oracle_allows(e, &after, snap, &by_sweeper, now) {
                        return Err(TestCaseError::fail(format!(
                            "deleted by {op:?} at {now} although {why}"
                        )));
                    }
                }
            }
        }
        Ok(())
    })
}

/// Runs `jobs` as a sweep runs them in process: one attempt each, verified first.
async fn run_verified_in_process(
    a: &MemoryAccount,
    policy: &Policy,
    jobs: Vec<CleanupJob>,
    now: Timestamp,
) {
    let once = ami_sweeper::app::cleanup::RetryPolicy {
        attempts: 1,
        ..Default::default()
    };
    crate::run_in_process(a, policy, &[], &once, None, jobs, now).await;
}

/// Runs the property with proptest's deterministic runner: `Err` names the first
/// counterexample found.
fn run(distortions: Distortions, cases: u32) -> Result<(), String> {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(&(arb_estate(), arb_ops()), |(e, ops)| {
            check(&e, &ops, distortions)
        })
        .map_err(|e| e.to_string())
}

#[test]
fn no_snapshot_is_deleted_that_the_storage_rules_keep() {
    if let Err(e) = run(Distortions::default(), 1000) {
        panic!("{e}");
    }
}

#[test]
fn the_property_finds_storage_rules_that_ignore_launch_templates() {
    let wrong = Distortions {
        hide_template_snapshots: true,
        ..Distortions::default()
    };
    let found = run(wrong, 300).expect_err("the property must catch it");
    assert!(found.contains("launch template"), "{found}");
}

#[test]
fn the_property_finds_one_delete_after_for_all_of_an_images_snapshots() {
    let wrong = Distortions {
        one_delete_after_per_image: true,
        ..Distortions::default()
    };
    let found = run(wrong, 3000).expect_err("the property must catch it");
    assert!(found.contains("Recycle Bin"), "{found}");
}
