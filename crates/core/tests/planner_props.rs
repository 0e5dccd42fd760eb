//! Invariants of the planner over random estates and random policies.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, Usage, UsageKind, UsageRef};
use ami_sweeper_core::planner::{plan, Action, CleanupAction, Plan, Reason};
use ami_sweeper_core::Policy;
use proptest::prelude::*;

const STATES: &[&str] = &[
    "available",
    "available",
    "available",
    "disabled",
    "failed",
    "error",
    "pending",
    "deregistered",
];
const PROTECTIONS: &[&str] = &[
    "disabled",
    "disabled",
    "enabled",
    "enabled-with-cooldown",
    "disabled after 2026-11-26T06:00:00Z",
    "disabled after 2026-11-25T06:00:00Z",
];

prop_compose! {
    fn arb_image(i: usize)(
        lineage in 0..4usize,
        age_days in 0..120i64,
        age_secs in 0..86_400i64,
        state in 0..STATES.len(),
        protection in 0..PROTECTIONS.len(),
        app in prop::option::of(0..3usize),
        team in prop::option::of(0..2usize),
        retain in prop::bool::weighted(0.1),
        backup in prop::bool::weighted(0.1),
        public in prop::bool::weighted(0.1),
        launched in prop::option::of(0..60i64),
        snaps in prop::collection::vec(0..40usize, 0..3),
    ) -> Image {
        let mut b = img(
            &format!("ami-{i:04}"),
            &format!("{}-{}", ["web", "api", "batch", "AwsBackup_web"][lineage], 1000 - age_days),
            age_days,
        )
        .created(ago(age_days, age_secs))
        .state(STATES[state])
        .protection(PROTECTIONS[protection]);
        if let Some(a) = app { b = b.tag("app", ["web", "api", "batch"][a]); }
        if let Some(t) = team { b = b.tag("team", ["payments", "search"][t]); }
        if retain { b = b.tag("retain", "yes"); }
        if backup { b = b.tag("aws:backup:source-resource", "arn"); }
        if public { b = b.public(); }
        if let Some(l) = launched { b = b.launched(ago(l, 0)); }
        for s in snaps { b = b.snap(&format!("snap-{s:03}"), 8); }
        b.build()
    }
}

fn arb_estate() -> impl Strategy<Value = (Vec<Image>, Vec<(usize, usize)>)> {
    (0..40usize).prop_flat_map(|n| {
        let images: Vec<_> = (0..n).map(arb_image).collect();
        let users = prop::collection::vec((0..n.max(1), 0..3usize), 0..6);
        (images, users)
    })
}

prop_compose! {
    fn arb_policy()(
        names in prop::sample::select(vec![r#"[]"#, r#"["web-*"]"#, r#"["web-*", "api-?*"]"#, r#"["*"]"#]),
        tags in prop::sample::select(vec![r#"{}"#, r#"{"team": "payments"}"#, r#"{"app": "*"}"#]),
        min_age in 0..60u64,
        keep in 0..4u64,
        group in prop::sample::select(vec![
            "null",
            r#"{"tags": ["app"]}"#,
            r#"{"name_regex": "^(.*)-[0-9]+$"}"#,
            r#"{"tags": ["app", "team"], "name_regex": "^([a-z]+)"}"#,
        ]),
        launched in prop::option::of(0..30u64),
        skip_in_use in prop::bool::weighted(0.8),
        skip_shared in prop::bool::weighted(0.8),
        max in prop::option::of(0..10u64),
    ) -> (Policy, bool, bool) {
        let mut retention = format!(r#""min_age_days": {min_age}, "keep_count": {keep}"#);
        if group != "null" { retention.push_str(&format!(r#", "group_by": {group}"#)); }
        if let Some(l) = launched { retention.push_str(&format!(r#", "launched_within_days": {l}"#)); }
        let limits = max.map_or(String::from("{}"), |m| format!(r#"{{"max_deregistrations": {m}}}"#));
        let json = format!(
            r#"{{"selection": {{"names": {names}, "tags": {tags}, "exclude_tags": {{"retain": "*"}}}},
                 "retention": {{{retention}}},
                 "protection": {{"skip_in_use": {skip_in_use}, "skip_shared": {skip_shared}}},
                 "limits": {limits}, "acknowledge": ["no_minimum_age"]}}"#
        );
        (policy(&json), skip_in_use, skip_shared)
    }
}

fn usage_of(images: &[Image], users: &[(usize, usize)]) -> Usage {
    let mut usage = Usage::new();
    for &(i, kind) in users {
        if let Some(image) = images.get(i) {
            let kind = [
                UsageKind::Instance,
                UsageKind::LaunchTemplateVersion,
                UsageKind::LaunchConfiguration,
            ][kind];
            usage.add(
                image.id.clone(),
                UsageRef {
                    kind,
                    id: format!("user-{i}"),
                },
            );
        }
    }
    usage
}

fn deregistered(p: &Plan) -> BTreeSet<String> {
    p.decisions
        .iter()
        .filter(|d| d.action == Action::Deregister)
        .map(|d| d.image_id.clone())
        .collect()
}

/// The newest `keep` available, eligible images of each group, computed independently
/// of the planner from the decisions' own group keys.
fn newest_per_group(policy: &Policy, p: &Plan, images: &[Image]) -> BTreeSet<String> {
    let by_id: BTreeMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut groups: BTreeMap<&str, Vec<&Image>> = BTreeMap::new();
    for d in &p.decisions {
        let early = matches!(
            d.reasons[0].as_str(),
            "not_selected" | "excluded_by_tag" | "backup_managed" | "unsettled"
        );
        let image = by_id[d.image_id.as_str()];
        if !early && image.state.as_str() == "available" {
            groups.entry(d.group.as_str()).or_default().push(image);
        }
    }
    let mut out = BTreeSet::new();
    for members in groups.values_mut() {
        members.sort_by(|a, b| b.creation_date.cmp(&a.creation_date).then(a.id.cmp(&b.id)));
        for m in members
            .iter()
            .take(policy.rules[0].retention.keep_count as usize)
        {
            out.insert(m.id.clone());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn never_deregisters_a_protected_image(
        (images, users) in arb_estate(),
        (policy, skip_in_use, skip_shared) in arb_policy(),
    ) {
        let usage = usage_of(&images, &users);
        let inv = Inventory::new(images.clone(), usage.clone()).unwrap();
        let p = plan(&policy, &inv, now());
        prop_assert_eq!(p.decisions.len(), images.len());
        let gone = deregistered(&p);
        let min_age_cutoff = ami_sweeper_core::time::days_before(now(), policy.rules[0].retention.min_age_days);
        let kept_newest = newest_per_group(&policy, &p, &images);
        for image in &images {
            if !gone.contains(&image.id) { continue; }
            let sel = &policy.rules[0].selection;
            prop_assert!(sel.names.is_empty() || sel.names.iter().any(|g| g.matches(&image.name)),
                "{} unselected by name", image.id);
            prop_assert!(sel.tags.iter().all(|(k, g)| image.tags.get(k).is_some_and(|v| g.matches(v))),
                "{} unselected by tag", image.id);
            prop_assert!(!image.tags.contains_key("retain"), "{} excluded", image.id);
            prop_assert!(!image.is_backup_managed(), "{} backup-managed", image.id);
            prop_assert!(image.state.is_settled(), "{} unsettled", image.id);
            prop_assert!(!image.protection.is_protected_at(now()), "{} protected", image.id);
            prop_assert!(min_age_cutoff.is_some_and(|c| image.creation_date <= c), "{} too young", image.id);
            if skip_in_use { prop_assert!(!usage.is_used(&image.id), "{} in use", image.id); }
            if skip_shared { prop_assert!(!image.is_shared(), "{} shared", image.id); }
            if let Some(days) = policy.rules[0].retention.launched_within_days {
                let cutoff = ami_sweeper_core::time::days_before(now(), days);
                if let (Some(l), Some(c)) = (image.last_launched, cutoff) {
                    prop_assert!(l <= c, "{} recently launched", image.id);
                }
            }
            prop_assert!(!kept_newest.contains(&image.id), "{} among newest keep_count", image.id);
        }
        if let Some(max) = policy.limits.max_deregistrations {
            prop_assert!(gone.len() as u64 <= max);
        }
        // Every snapshot queued for deletion is referenced by deregistered images only.
        for d in &p.decisions {
            for s in &d.snapshots {
                if s.action == CleanupAction::Delete {
                    for other in &images {
                        if other.snapshots.iter().any(|x| x.id == s.snapshot_id) {
                            prop_assert!(gone.contains(&other.id),
                                "{} deleted while {} keeps it", s.snapshot_id, other.id);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(p.summary.deregister + p.summary.keep, images.len());
        prop_assert_eq!(p.summary.deregister, gone.len());
    }

    #[test]
    fn plan_is_deterministic_and_independent_of_input_order(
        (images, users) in arb_estate(),
        (policy, _, _) in arb_policy(),
        seed in any::<u64>(),
    ) {
        let usage = usage_of(&images, &users);
        let a = plan(&policy, &Inventory::new(images.clone(), usage.clone()).unwrap(), now());
        let again = plan(&policy, &Inventory::new(images.clone(), usage.clone()).unwrap(), now());
        prop_assert_eq!(&a, &again);
        let mut shuffled = images.clone();
        // Deterministic Fisher-Yates from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let b = plan(&policy, &Inventory::new(shuffled, usage).unwrap(), now());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_limit_spares_the_newest_candidates(
        (images, users) in arb_estate(),
        (policy, _, _) in arb_policy(),
    ) {
        let usage = usage_of(&images, &users);
        let p = plan(&policy, &Inventory::new(images, usage).unwrap(), now());
        let over: Vec<_> = p.decisions.iter().filter(|d| d.reasons[0].as_str() == "over_limit").collect();
        let gone: Vec<_> = p.decisions.iter().filter(|d| d.action == Action::Deregister).collect();
        for o in &over {
            for g in &gone {
                prop_assert!((g.creation_date, &g.image_id) < (o.creation_date, &o.image_id));
            }
        }
    }
}

/// Random Recycle Bin rules: AMI and snapshot rules, region-level or on the `app` tag,
/// some excluding `team`.
fn arb_bin_rules() -> impl Strategy<Value = Vec<ami_sweeper_core::recycle_bin::BinRule>> {
    use ami_sweeper_core::recycle_bin::{BinResource, BinRule, TagMatch};
    let rule = (
        prop::bool::ANY,
        1..60u32,
        prop::option::of(0..3usize),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(image, days, app, exclude)| BinRule {
            id: format!("r-{days}"),
            resource: if image {
                BinResource::Image
            } else {
                BinResource::Snapshot
            },
            retention_days: days,
            resource_tags: app
                .map(|a| TagMatch {
                    key: "app".into(),
                    value: Some(["web", "api", "batch"][a].into()),
                })
                .into_iter()
                .collect(),
            exclude_tags: if exclude {
                vec![TagMatch {
                    key: "team".into(),
                    value: None,
                }]
            } else {
                Vec::new()
            },
            locked: false,
        });
    prop::collection::vec(rule, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// With `recycle_bin: "respect"`, no plan deletes a snapshot before the bin retention of
    /// every image that used it ends: a snapshot of a condemned image a rule retains is
    /// either deferred past that image's `restorable_until`, or itself retained by a
    /// snapshot rule at least as long.
    #[test]
    fn no_snapshot_goes_before_the_bin_retention_of_its_images_ends(
        (images, users) in arb_estate(),
        policy in prop_oneof![
            arb_policy().prop_map(|(p, _, _)| p),
            // Half the time a policy that condemns nearly everything, so that images
            // sharing snapshots are condemned together often.
            Just(policy(r#"{"retention": {"min_age_days": 0}, "acknowledge": ["no_minimum_age"],
                "protection": {"skip_in_use": false, "skip_shared": false}}"#)),
        ],
        rules in arb_bin_rules(),
        snapshot_tagged in prop::bool::ANY,
    ) {
        use ami_sweeper_core::recycle_bin::{BinResource, BinRules};
        let mut inv = Inventory::new(images.clone(), usage_of(&images, &users)).unwrap();
        inv.recycle_bin = BinRules(rules);
        if snapshot_tagged {
            // Snapshot tags known (as in a sweep): every snapshot carries its image's tags.
            for i in &images {
                for s in &i.snapshots {
                    inv.snapshot_tags.insert(s.id.clone(), i.tags.clone());
                }
            }
        }
        let p = plan(&policy, &inv, now());
        let image_days = |id: &str| {
            let img = images.iter().find(|i| i.id == id).unwrap();
            inv.recycle_bin.retention(BinResource::Image, Some(&img.tags))
        };
        // Every condemned image using each snapshot, with its retention.
        let mut users_of: BTreeMap<&str, Vec<Option<u32>>> = BTreeMap::new();
        for d in p.decisions.iter().filter(|d| d.action == Action::Deregister) {
            for s in &d.snapshots {
                users_of.entry(s.snapshot_id.as_str()).or_default().push(image_days(&d.image_id));
            }
            if let (Some(days), Some(fate)) = (image_days(&d.image_id), &d.recycle_bin) {
                prop_assert_eq!(fate.restorable_until, ami_sweeper_core::time::days_after(now(), days.into()));
            }
            prop_assert_eq!(d.recycle_bin.is_some(), image_days(&d.image_id).is_some());
        }
        for d in p.decisions.iter().filter(|d| d.action == Action::Deregister) {
            for s in &d.snapshots {
                let Some(longest) = users_of[s.snapshot_id.as_str()].iter().flatten().max().copied() else {
                    continue;
                };
                let ends = ami_sweeper_core::time::days_after(now(), longest.into());
                match s.action {
                    CleanupAction::Delete => {
                        let kept = inv.recycle_bin.retention(
                            BinResource::Snapshot,
                            inv.snapshot_tags.get(&s.snapshot_id),
                        );
                        prop_assert!(kept.is_some_and(|k| k >= longest),
                            "{} deleted while an image using it is restorable for {longest} days", s.snapshot_id);
                    }
                    CleanupAction::Retain => {
                        if let Some(after) = s.delete_after {
                            prop_assert!(after >= ends, "{} deferred too briefly", s.snapshot_id);
                        }
                    }
                }
            }
        }
    }
}

// Several rules in one policy.

prop_compose! {
    /// One rule (as JSON) named `r<i>`: random names, tags, `match`, exclude tags and
    /// retention, so that rules overlap and some exclude what later ones select.
    fn arb_rule(i: usize)(
        names in prop::sample::select(vec![r#"[]"#, r#"["web-*"]"#, r#"["web-*", "api-?*"]"#, r#"["batch-*"]"#]),
        tags in prop::sample::select(vec![r#"{}"#, r#"{"team": "payments"}"#, r#"{"app": "*"}"#]),
        matches in prop::sample::select(vec![
            "",
            r#", "match": {"not": {"tag": {"key": "app"}}}"#,
            r#", "match": {"age_days": {"min": 20}}"#,
            r#", "match": {"any": [{"public": true}, {"name": "api-*"}, {"exists": "last_launched"}]}"#,
            r#", "match": {"all": [{"state": "available"}, {"last_launched_days": {"max": 30}}]}"#,
        ]),
        exclude in prop::sample::select(vec![r#"{}"#, r#"{"retain": "*"}"#, r#"{"team": "search"}"#]),
        min_age in 0..60u64,
        keep in 0..4u64,
        group in prop::sample::select(vec![
            "null",
            r#"{"tags": ["app"]}"#,
            r#"{"name_regex": "^(.*)-[0-9]+$"}"#,
        ]),
        launched in prop::option::of(0..30u64),
    ) -> String {
        let mut retention = format!(r#""min_age_days": {min_age}, "keep_count": {keep}"#);
        if group != "null" { retention.push_str(&format!(r#", "group_by": {group}"#)); }
        if let Some(l) = launched { retention.push_str(&format!(r#", "launched_within_days": {l}"#)); }
        format!(
            r#"{{"name": "r{i}", "selection": {{"names": {names}, "tags": {tags}, "exclude_tags": {exclude}{matches}}},
                 "retention": {{{retention}}}}}"#
        )
    }
}

fn arb_rules_policy() -> impl Strategy<Value = Policy> {
    (1..5usize)
        .prop_flat_map(|n| (0..n).map(arb_rule).collect::<Vec<_>>())
        .prop_map(|rules| {
            policy(&format!(
                r#"{{"rules": [{}], "acknowledge": ["no_minimum_age"]}}"#,
                rules.join(", ")
            ))
        })
}

/// The same policy written as a one-element `rules` list named `default`.
fn as_rules_list(p: &Policy) -> Policy {
    let mut doc = serde_json::to_value(p).unwrap();
    let o = doc.as_object_mut().unwrap();
    let mut rule = serde_json::Map::new();
    rule.insert("name".into(), "default".into());
    for field in ["selection", "retention", "retire"] {
        if let Some(v) = o.remove(field) {
            rule.insert(field.into(), v);
        }
    }
    o.insert("rules".into(), serde_json::Value::Array(vec![rule.into()]));
    Policy::from_json(&doc.to_string()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every image gets exactly one decision, from the first rule whose names, tags and
    /// `match` select it (first match wins); an image that rule excludes is kept by it
    /// and never falls through to a later rule.
    #[test]
    fn with_several_rules_the_first_that_selects_decides(
        (images, users) in arb_estate(),
        policy in arb_rules_policy(),
    ) {
        let usage = usage_of(&images, &users);
        let p = plan(&policy, &Inventory::new(images.clone(), usage).unwrap(), now());
        prop_assert_eq!(p.decisions.len(), images.len());
        let ids: BTreeSet<&str> = p.decisions.iter().map(|d| d.image_id.as_str()).collect();
        prop_assert_eq!(ids.len(), images.len());
        let by_id: BTreeMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
        for d in &p.decisions {
            let image = by_id[d.image_id.as_str()];
            let first = policy.rules.iter().find(|r| r.selects(image, now()));
            prop_assert_eq!(d.rule.as_deref(), first.map(|r| r.name.as_str()), "{}", &d.image_id);
            match first {
                None => prop_assert_eq!(&d.reasons, &vec![Reason::NotSelected]),
                Some(r) if r.excludes(image) => {
                    prop_assert_eq!(&d.reasons, &vec![Reason::ExcludedByTag]);
                    prop_assert_eq!(d.action, Action::Keep);
                }
                Some(_) => prop_assert!(d.reasons[0] != Reason::NotSelected),
            }
        }
        let counted: usize = p.summary.by_rule.values().map(|c| c.images).sum();
        prop_assert_eq!(counted, p.decisions.iter().filter(|d| d.rule.is_some()).count());
    }

    /// What a deregistered image passed, judged by the rule that decided it: old enough
    /// for its `min_age_days`, not among its rule's newest `keep_count` of its group.
    #[test]
    fn with_several_rules_each_condemned_image_passed_its_own_rules_retention(
        (images, users) in arb_estate(),
        policy in arb_rules_policy(),
    ) {
        let usage = usage_of(&images, &users);
        let p = plan(&policy, &Inventory::new(images.clone(), usage).unwrap(), now());
        let by_id: BTreeMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
        // Per (rule, group): the eligible available images, newest first.
        let mut groups: BTreeMap<(&str, &str), Vec<&Image>> = BTreeMap::new();
        for d in &p.decisions {
            let early = matches!(
                d.reasons[0],
                Reason::NotSelected | Reason::ExcludedByTag | Reason::BackupManaged | Reason::Unsettled
            );
            let image = by_id[d.image_id.as_str()];
            if let (false, Some(rule)) = (early, d.rule.as_deref()) {
                if image.state.as_str() == "available" {
                    groups.entry((rule, d.group.as_str())).or_default().push(image);
                }
            }
        }
        let mut newest = BTreeSet::new();
        for ((rule, _), members) in groups.iter_mut() {
            let keep = policy.rules.iter().find(|r| r.name == *rule).unwrap().retention.keep_count;
            members.sort_by(|a, b| b.creation_date.cmp(&a.creation_date).then(a.id.cmp(&b.id)));
            newest.extend(members.iter().take(keep as usize).map(|i| i.id.clone()));
        }
        for d in p.decisions.iter().filter(|d| d.action == Action::Deregister) {
            let image = by_id[d.image_id.as_str()];
            let rule = policy.rules.iter().find(|r| Some(r.name.as_str()) == d.rule.as_deref());
            prop_assert!(rule.is_some(), "{} condemned with no rule", &d.image_id);
            let rule = rule.unwrap();
            prop_assert!(rule.selects(image, now()) && !rule.excludes(image));
            let cutoff = ami_sweeper_core::time::days_before(now(), rule.retention.min_age_days);
            prop_assert!(cutoff.is_some_and(|c| image.creation_date <= c), "{} too young", &d.image_id);
            prop_assert!(!newest.contains(&d.image_id), "{} among its rule's newest", &d.image_id);
            prop_assert!(!image.protection.is_protected_at(now()));
        }
    }

    /// A policy of one top-level rule and the same rule as a one-element `rules` list
    /// named `default` decide exactly alike.
    #[test]
    fn a_single_rule_decides_alike_in_either_form(
        (images, users) in arb_estate(),
        (policy, _, _) in arb_policy(),
    ) {
        let usage = usage_of(&images, &users);
        let inv = Inventory::new(images, usage).unwrap();
        let listed = as_rules_list(&policy);
        prop_assert_eq!(plan(&policy, &inv, now()), plan(&listed, &inv, now()));
    }
}
