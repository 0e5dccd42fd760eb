//! Unknown keys are refused everywhere, with the key's path (issue 28, item 2): in the
//! policy, cleanup jobs and the mandates they carry, sweep-queue messages and manual
//! events. The cases are generated: each shape's JSON Schema (the one `ami-sweeper schema`
//! prints, for the policy) is walked alongside full examples, every object the schema
//! describes as a struct (inside `untagged`, `flatten` and one-key shapes too, never a
//! map of tag keys) gets one unknown key, and each mutated document must be refused
//! with that key's path. Every struct in the schema must be reached by an example, so a
//! new field or shape is covered as soon as it exists (the test says which to add).

use std::collections::BTreeSet;

use ami_sweeper::app::org::SweepRequest;
use ami_sweeper::events::{inline_policy, parse_event, Trigger};
use ami_sweeper::jobs::{CleanupJob, JobTarget};
use ami_sweeper::mandate::{AccountRule, Mandate, Scope, Stages};
use ami_sweeper::policy::Policy;
use serde_json::{json, Value};

const UNKNOWN: &str = "zz_unknown_key";

/// Follows `$ref`s to the schema they name.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut n = node;
    while let Some(r) = n.get("$ref").and_then(Value::as_str) {
        n = root
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}"));
    }
    n
}

/// Whether the value fits the schema (the keywords schemars emits; enough to pick the
/// branch of a `oneOf`/`anyOf` that an example takes).
fn admits(root: &Value, node: &Value, v: &Value) -> bool {
    let n = resolve(root, node);
    if let Value::Bool(b) = n {
        return *b;
    }
    if n.get("const").is_some_and(|c| c != v)
        || n["enum"].as_array().is_some_and(|e| !e.contains(v))
    {
        return false;
    }
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(x) if x.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_ok = |t: &Value| t == kind || (t == "number" && kind == "integer");
    let typed = match &n["type"] {
        Value::Null => true,
        Value::Array(ts) => ts.iter().any(type_ok),
        t => type_ok(t),
    };
    if !typed {
        return false;
    }
    if let Value::Object(m) = v {
        let required = n["required"].as_array().into_iter().flatten();
        if required
            .filter_map(Value::as_str)
            .any(|k| !m.contains_key(k))
        {
            return false;
        }
        for (k, x) in m {
            let fits = match (n["properties"].get(k), n.get("additionalProperties")) {
                (Some(s), _) => admits(root, s, x),
                (None, Some(Value::Bool(false))) => false,
                (None, Some(s @ Value::Object(_))) => admits(root, s, x),
                (None, _) => true,
            };
            if !fits {
                return false;
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, n.get("items")) {
        if !a.iter().all(|x| admits(root, items, x)) {
            return false;
        }
    }
    let all = n["allOf"].as_array().into_iter().flatten();
    let any = |key: &str| {
        n[key]
            .as_array()
            .is_none_or(|bs| bs.iter().any(|b| admits(root, b, v)))
    };
    all.into_iter().all(|s| admits(root, s, v)) && any("anyOf") && any("oneOf")
}

/// What the walk found: the objects of an example that the schema describes as structs
/// (display path, JSON pointer), and the struct schemas it reached.
#[derive(Default)]
struct Walk {
    sites: BTreeSet<(String, String)>,
    reached: BTreeSet<*const Value>,
}

fn below(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Walk {
    fn visit(&mut self, root: &Value, node: &Value, v: &Value, at: (&str, &str)) {
        let (path, pointer) = at;
        let n = resolve(root, node);
        for s in n["allOf"].as_array().into_iter().flatten() {
            self.visit(root, s, v, at);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = n[key].as_array() {
                let b = branches.iter().find(|b| admits(root, b, v));
                let b = b.unwrap_or_else(|| panic!("{path}: the example fits no branch: {v}"));
                self.visit(root, b, v, at);
            }
        }
        match v {
            Value::Object(m) => {
                let props = n["properties"].as_object();
                if props.is_some() {
                    self.reached.insert(n as *const Value);
                    self.sites.insert((path.to_string(), pointer.to_string()));
                }
                for (k, x) in m {
                    let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                    match (props.and_then(|p| p.get(k)), n.get("additionalProperties")) {
                        (Some(s), _) => self.visit(root, s, x, (&below(path, k), &p)),
                        (None, Some(s @ Value::Object(_))) => {
                            self.visit(root, s, x, (&below(path, k), &p))
                        }
                        _ => {}
                    }
                }
            }
            Value::Array(a) => {
                if let Some(items) = n.get("items") {
                    for (i, x) in a.iter().enumerate() {
                        let at = (
                            &format!("{path}[{i}]") as &str,
                            &format!("{pointer}/{i}") as &str,
                        );
                        self.visit(root, items, x, at);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every struct schema (a schema with `properties`) anywhere in `node`.
fn structs<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    let Value::Object(m) = node else { return };
    if m.get("properties").is_some_and(Value::is_object) {
        out.push(node);
    }
    for (k, v) in m {
        match (k.as_str(), v) {
            ("properties" | "$defs" | "definitions", Value::Object(children)) => {
                children.values().for_each(|c| structs(c, out))
            }
            ("allOf" | "anyOf" | "oneOf" | "prefixItems", Value::Array(children)) => {
                children.iter().for_each(|c| structs(c, out))
            }
            ("items" | "additionalProperties" | "not", _) => structs(v, out),
            _ => {}
        }
    }
}

/// Walks every example with the schema, checks that every struct of the schema is reached,
/// and puts an unknown key in each struct object of each example: `refused` must name
/// the key's path in its error (`None`: the mutated document was accepted).
fn every_unknown_key_is_refused(
    what: &str,
    schema: &Value,
    examples: &[Value],
    refused: impl Fn(&Value) -> Option<String>,
) -> usize {
    let mut walk = Walk::default();
    let mut cases = 0;
    let mut failures = Vec::new();
    for example in examples {
        assert_eq!(
            refused(example),
            None,
            "{what}: the example itself is refused"
        );
        walk.sites.clear();
        walk.visit(schema, schema, example, ("", ""));
        for (path, pointer) in &walk.sites {
            let mut bad = example.clone();
            let object = bad.pointer_mut(pointer).and_then(Value::as_object_mut);
            object
                .expect("a site is an object")
                .insert(UNKNOWN.into(), json!(true));
            let key = below(path, UNKNOWN);
            match refused(&bad) {
                None => failures.push(format!("`{key}` accepted")),
                Some(e) if !e.contains(&format!("{key}: ")) => {
                    failures.push(format!("`{key}` refused without its path: {e}"))
                }
                Some(_) => {}
            }
            cases += 1;
        }
    }
    assert!(failures.is_empty(), "{what}: {failures:#?}");
    let mut all = Vec::new();
    structs(schema, &mut all);
    let missed: Vec<String> = all
        .into_iter()
        .filter(|n| !walk.reached.contains(&(*n as *const Value)))
        .map(|n| {
            let keys: Vec<&String> = n["properties"].as_object().unwrap().keys().collect();
            format!("{keys:?}")
        })
        .collect();
    assert!(
        missed.is_empty(),
        "{what}: no example reaches these objects of the schema; add them to an example: {missed:?}"
    );
    cases
}

/// A policy of one top-level rule using every object the schema describes, every
/// condition included.
fn one_rule_policy() -> Value {
    json!({
        "dry_run": true,
        "regions": ["us-east-1"],
        "selection": {
            "names": ["web-*"],
            "tags": {"team": "web"},
            "exclude_tags": {"retain": "*"},
            "match": {"all": [
                {"any": [{"name": "web-*"}, {"description": "*"}]},
                {"not": {"public": true}},
                {"exists": "architecture"},
                {"tag": {"key": "env", "value": "prod"}},
                {"architecture": "x86_64"},
                {"platform": "windows"},
                {"virtualization": "hvm"},
                {"root_device_type": "ebs"},
                {"boot_mode": "uefi"},
                {"state": "available"},
                {"image_type": "machine"},
                {"source_image_id": "ami-*"},
                {"source_region": "us-*"},
                {"age_days": {"min": 1, "max": 90}},
                {"last_launched_days": {"min": 3}}
            ]}
        },
        "retention": {
            "min_age_days": 30,
            "keep_count": 2,
            "group_by": {"tags": ["app"], "name_regex": "^(.*)-[0-9]+$"},
            "launched_within_days": 14
        },
        "retire": {"deprecate": true, "disable_for_days": 14},
        "protection": {"skip_in_use": true, "skip_shared": true, "shared": "keep_if_used"},
        "cleanup": {"snapshots": true, "bundles": true, "orphans": {"min_age_days": 30}},
        "limits": {"max_deregistrations": 10, "api_share": 0.5, "max_exception_days": 365},
        "exceptions": [
            {"image_ids": ["ami-0123456789abcdef0"], "until": "2027-03-31", "reason": "OPS-1"},
            {"tags": {"retain": "audit-*"}, "until": "2027-03-31T12:00:00Z", "reason": "OPS-2"}
        ],
        "usage": {
            "aws_references": "optional",
            "ssm_paths": ["/golden"],
            "launch_template_versions": "referenced"
        },
        "accounts": {"organization": {
            "ou_ids": ["ou-ab12-cdefgh12"],
            "exclude_accounts": ["111122223333"]
        }},
        "member_role_name": "ami-sweeper-member",
        "recycle_bin": "respect",
        "acknowledge": ["no_minimum_age"],
        "notify": {"lookahead_days": 7, "owner_tag": "owner"},
        "cost": {"price_per_gib_month": {
            "snapshot_standard": 0.05,
            "snapshot_archive": 0.0125,
            "s3_standard": 0.023
        }}
    })
}

/// A policy of several rules, accounts listed; its first rule thins (a thinned rule's
/// lineage may not be chosen by `age_days`, which the one-rule policy's `match` tests).
fn rules_policy() -> Value {
    json!({
        "rules": [
            {"name": "ci", "selection": {"names": ["ci-*"]}, "retention": {"min_age_days": 3,
             "thin": [{"after_days": 14, "keep_one_per": "week"}]},
             "retire": {"deprecate": true}},
            {"name": "rest", "retention": {"min_age_days": 30}}
        ],
        "accounts": ["111122223333"]
    })
}

fn policy_error(v: &Value) -> Option<String> {
    Policy::from_json(&v.to_string())
        .err()
        .map(|e| e.to_string())
}

#[test]
fn every_object_of_the_policy_schema_refuses_an_unknown_key_with_its_path() {
    let schema = Policy::json_schema();
    let cases = every_unknown_key_is_refused(
        "policy",
        &schema,
        &[one_rule_policy(), rules_policy()],
        policy_error,
    );
    assert!(cases >= 40, "only {cases} cases");
}

#[test]
fn the_exclusion_written_one_level_too_high_is_refused() {
    let mut p = one_rule_policy();
    p["accounts"] = json!({"organization": {"ou_ids": ["ou-ab12-cdefgh12"]},
                           "exclude_accounts": ["111122223333"]});
    assert_eq!(
        policy_error(&p).as_deref(),
        Some("accounts.exclude_accounts: unknown field (known fields: `organization`)")
    );
}

/// A mandate using every account rule in turn, and a scope with every requirement.
fn mandate(accounts: AccountRule) -> Mandate {
    Mandate {
        dry_run: false,
        regions: ["us-east-1".to_string()].into(),
        accounts,
        only_accounts: Some(["111122223333".to_string()].into()),
        scope: Scope {
            recipes: ["arn:aws:imagebuilder:us-east-1:111122223333:image/web/".into()].into(),
            lineages: ["ami-1".to_string()].into(),
            images: Some(["ami-1".to_string()].into()),
        },
        stages: Stages::ALL,
        policy_digest: "00".repeat(32),
        approved: Some(
            [ami_sweeper::mandate::ApprovedImage {
                account: Some("111122223333".into()),
                region: "us-east-1".into(),
                image_id: "ami-1".into(),
                action: ami_sweeper::planner::Action::Deregister,
            }]
            .into(),
        ),
    }
}

fn mandates() -> Vec<Mandate> {
    let ids = |s: &str| [s.to_string()].into();
    vec![
        mandate(AccountRule::Own),
        mandate(AccountRule::List(ids("111122223333"))),
        mandate(AccountRule::Organization {
            ou_ids: ids("ou-ab12-cdefgh12"),
            exclude: ids("444455556666"),
        }),
    ]
}

/// Jobs of every kind, each with a mandate of every account rule.
fn jobs() -> Vec<Value> {
    let targets = [
        JobTarget::DeleteSnapshot {
            snapshot_id: "snap-1".into(),
        },
        JobTarget::DeleteBundle {
            bucket: "b".into(),
            manifest_key: "m.manifest.xml".into(),
        },
    ];
    let mut out = Vec::new();
    for target in targets {
        for m in mandates() {
            let mut job = CleanupJob::new("us-east-1", "ami-1", target.clone());
            job.account = Some("111122223333".into());
            job.mandate = Some(m);
            out.push(serde_json::from_str(&job.to_json()).unwrap());
        }
    }
    out
}

#[test]
fn every_object_of_a_cleanup_job_and_its_mandate_refuses_an_unknown_key_with_its_path() {
    let schema = serde_json::to_value(schemars::schema_for!(CleanupJob)).unwrap();
    let cases = every_unknown_key_is_refused("cleanup job", &schema, &jobs(), |v| {
        CleanupJob::from_json(&v.to_string())
            .err()
            .map(|e| e.to_string())
    });
    assert!(cases >= 12, "only {cases} cases");
}

#[test]
fn a_field_of_the_other_kind_of_job_is_refused_with_its_path() {
    let mut job = jobs().remove(0);
    job["bucket"] = json!("b");
    let e = CleanupJob::from_json(&job.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bucket: unknown field"), "{e}");
    let mut job = jobs().remove(0);
    job.as_object_mut().unwrap().remove("snapshot_id");
    let e = CleanupJob::from_json(&job.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("snapshot_id: missing required field"), "{e}");
}

/// The schema of a sweep-queue message: `{"sweep": <SweepRequest>}`.
fn sweep_message_schema() -> Value {
    let mut inner = serde_json::to_value(schemars::schema_for!(SweepRequest)).unwrap();
    let defs = inner.as_object_mut().unwrap().remove("$defs");
    json!({"$defs": defs, "type": "object", "properties": {"sweep": inner},
           "required": ["sweep"], "additionalProperties": false})
}

#[test]
fn every_object_of_a_sweep_queue_message_refuses_an_unknown_key_with_its_path() {
    let examples: Vec<Value> = mandates()
        .into_iter()
        .map(|m| {
            let r = SweepRequest {
                account: "111122223333".into(),
                region: "us-east-1".into(),
                run: "2026-11-26T00:00:00Z".into(),
                mandate: Some(m),
                // A continuation's chain, so that its objects are walked too.
                chain: Some(ami_sweeper::chain::Chain {
                    link: 1,
                    planned_at: "2026-11-26T00:00:00Z".into(),
                    continues: "reports/r/111122223333/us-east-1.json".into(),
                    totals: ami_sweeper::chain::ChainTotals::default(),
                }),
            };
            serde_json::from_str(&r.to_json()).unwrap()
        })
        .collect();
    let cases = every_unknown_key_is_refused(
        "sweep-queue message",
        &sweep_message_schema(),
        &examples,
        |v| match SweepRequest::from_json(&v.to_string()) {
            None => Some("not read as a sweep request at all".into()),
            Some(r) => r.err().map(|e| e.to_string()),
        },
    );
    assert!(cases >= 12, "only {cases} cases");
}

/// The schema of a manual event: `{"policy": <policy>, "dry_run": bool}`.
fn manual_event_schema() -> Value {
    let mut policy = Policy::json_schema();
    let defs = policy.as_object_mut().unwrap().remove("$defs");
    json!({"$defs": defs, "type": "object",
           "properties": {"policy": policy, "dry_run": {"type": "boolean"}},
           "additionalProperties": false})
}

#[test]
fn every_object_of_a_manual_event_refuses_an_unknown_key_with_its_path() {
    let examples = [
        json!({"dry_run": true, "policy": one_rule_policy()}),
        json!({"policy": rules_policy()}),
    ];
    let cases =
        every_unknown_key_is_refused("manual event", &manual_event_schema(), &examples, |v| {
            match parse_event(v) {
                Err(e) => Some(e.to_string()),
                Ok(Trigger::Manual {
                    policy: Some(p), ..
                }) => inline_policy(&p).err().map(|e| e.to_string()),
                Ok(other) => panic!("read as {other:?}"),
            }
        });
    assert!(cases >= 40, "only {cases} cases");
    let e = parse_event(&json!({"dry_run": true, "dryrun": false})).unwrap_err();
    assert!(e.to_string().contains("dryrun: unknown field"), "{e}");
}
