//! Maps each Lambda trigger's payload to a sweep request. Pure: no AWS calls, so an
//! unrecognised payload is rejected before anything touches the account.

use serde_json::Value;

use crate::policy::{Policy, PolicyError};

pub use crate::model::IMAGE_BUILDER_TAG;

/// What an invocation asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// EventBridge rule schedule: sweep with the configured policy.
    Schedule,
    /// Direct invoke or EventBridge Scheduler input: an inline policy, or the configured
    /// one; `dry_run` forces a dry run when true.
    Manual {
        /// An inline policy document.
        policy: Option<Value>,
        /// Force a dry run.
        dry_run: bool,
    },
    /// Image Builder finished an image: sweep that recipe's images as one lineage.
    ImageBuilder {
        /// `arn:aws:imagebuilder:<region>:<account>:image/<recipe>/`.
        recipe_prefix: String,
        /// The image's region, from the ARN.
        region: String,
        /// The image's account, from the ARN (the event's own `account` agrees).
        account: String,
    },
    /// An AMI became available: sweep the group (lineage) of that image.
    AmiAvailable {
        /// `ami-...`.
        image_id: String,
        /// The event's region, when given.
        region: Option<String>,
        /// The event's account, when given.
        account: Option<String>,
    },
    /// `{"approved_plan": "s3://bucket/key"}`: act on an approved plan (one report, or a
    /// prefix of an organization dry run's pair reports), read from the stack's report
    /// bucket only.
    Approved {
        /// The `s3://` location as given.
        location: String,
    },
    /// A trigger that asks for nothing (another status or state), with the reason.
    Ignored(String),
    /// A batch from the cleanup queue: (message id, body) pairs.
    Sqs(Vec<(String, String)>),
}

/// A payload that is not one of the triggers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised event: {0}; nothing was done")]
pub struct EventError(pub String);

fn describe(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let keys: Vec<&str> = m.keys().map(String::as_str).take(8).collect();
            format!("an object with keys [{}]", keys.join(", "))
        }
        Value::Array(_) => "a JSON array".into(),
        Value::String(_) => "a JSON string".into(),
        Value::Number(_) => "a JSON number".into(),
        Value::Bool(_) => "a JSON boolean".into(),
        Value::Null => "null".into(),
    }
}

/// A manual event (a direct invoke or EventBridge Scheduler input), as written: an unknown
/// key beside `policy` and `dry_run` is refused with its path, not taken for another shape.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manual {
    /// An inline policy document (parsed, strictly too, by [`inline_policy`]).
    #[serde(default)]
    policy: Option<Value>,
    /// Force a dry run.
    #[serde(default)]
    dry_run: Option<bool>,
}

/// An approved plan's event, as written: an unknown key beside `approved_plan` is refused
/// with its path.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovedEvent {
    /// `s3://bucket/key` (or `s3://bucket/prefix/`).
    approved_plan: String,
}

/// Recognises a payload by its shape.
pub fn parse_event(v: &Value) -> Result<Trigger, EventError> {
    let Value::Object(m) = v else {
        return Err(EventError(describe(v)));
    };
    if let Some(records) = m.get("Records") {
        return parse_sqs(records);
    }
    if let (Some(source), Some(detail_type)) = (
        m.get("source").and_then(Value::as_str),
        m.get("detail-type").and_then(Value::as_str),
    ) {
        return parse_eventbridge(source, detail_type, v);
    }
    if m.contains_key("approved_plan") {
        let ApprovedEvent { approved_plan } = crate::strict::from_value(v)
            .map_err(|e| EventError(format!("an approved-plan event that does not parse: {e}")))?;
        return Ok(Trigger::Approved {
            location: approved_plan,
        });
    }
    if m.contains_key("policy") || m.contains_key("dry_run") {
        let Manual { policy, dry_run } = crate::strict::from_value(v)
            .map_err(|e| EventError(format!("a manual event that does not parse: {e}")))?;
        let dry_run = dry_run.unwrap_or(false);
        if policy.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(EventError("policy must be a JSON object".into()));
        }
        if policy.is_none() && !dry_run {
            return Err(EventError(
                "{\"dry_run\": false} alone asks for nothing; send a policy or use the schedule"
                    .into(),
            ));
        }
        return Ok(Trigger::Manual { policy, dry_run });
    }
    Err(EventError(describe(v)))
}

fn parse_sqs(records: &Value) -> Result<Trigger, EventError> {
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records }))
            .map_err(|e| EventError(format!("SQS records that do not parse: {e}")))?;
    let mut out = Vec::new();
    for (i, r) in event.records.into_iter().enumerate() {
        if r.event_source.as_deref() != Some("aws:sqs") {
            return Err(EventError(format!(
                "Records[{i}] has eventSource {:?}, not aws:sqs",
                r.event_source.unwrap_or_default()
            )));
        }
        let id = r
            .message_id
            .ok_or_else(|| EventError(format!("Records[{i}] has no messageId")))?;
        out.push((id, r.body.unwrap_or_default()));
    }
    Ok(Trigger::Sqs(out))
}

fn parse_eventbridge(source: &str, detail_type: &str, v: &Value) -> Result<Trigger, EventError> {
    let event: aws_lambda_events::event::eventbridge::EventBridgeEvent<Value> =
        serde_json::from_value(v.clone())
            .map_err(|e| EventError(format!("EventBridge event that does not parse: {e}")))?;
    let resources = event.resources.unwrap_or_default();
    match (source, detail_type) {
        ("aws.events", "Scheduled Event") => Ok(Trigger::Schedule),
        ("aws.imagebuilder", "EC2 Image Builder Image State Change") => {
            let status = event.detail["state"]["status"].as_str().unwrap_or_default();
            if status != "AVAILABLE" {
                return Ok(Trigger::Ignored(format!(
                    "Image Builder image state {status:?} (only AVAILABLE starts a sweep)"
                )));
            }
            let arn = resources
                .first()
                .ok_or_else(|| EventError("Image Builder event without a resource ARN".into()))?;
            let (recipe_prefix, region) = recipe_prefix(arn)?;
            let account = arn_account(arn);
            if let Some(from) = event.account.as_deref().filter(|a| *a != account) {
                return Ok(Trigger::Ignored(format!(
                    "Image Builder image of account {account} in an event from account {from}"
                )));
            }
            Ok(Trigger::ImageBuilder {
                recipe_prefix,
                region,
                account: account.to_string(),
            })
        }
        ("aws.ec2", "EC2 AMI State Change") => {
            let state = event.detail["State"].as_str().unwrap_or_default();
            if state != "available" {
                return Ok(Trigger::Ignored(format!(
                    "AMI state {state:?} (only available starts a sweep)"
                )));
            }
            let image_id = event.detail["ImageId"]
                .as_str()
                .filter(|id| id.starts_with("ami-"))
                .ok_or_else(|| EventError("AMI state change without an ImageId".into()))?;
            Ok(Trigger::AmiAvailable {
                image_id: image_id.to_string(),
                region: event.region,
                account: event.account,
            })
        }
        _ => Err(EventError(format!(
            "EventBridge event from {source:?} of type {detail_type:?}"
        ))),
    }
}

/// `s3://bucket/key` → (bucket, key); the key may be a prefix ending in `/`.
pub fn s3_location(location: &str) -> Result<(String, String), EventError> {
    let bad = || {
        EventError(format!(
            "approved_plan {location:?} is not an s3://bucket/key location"
        ))
    };
    let rest = location.strip_prefix("s3://").ok_or_else(bad)?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(bad()),
    }
}

/// `arn:aws:imagebuilder:us-east-1:123456789012:image/web/1.0.0/3` →
/// (`arn:aws:imagebuilder:us-east-1:123456789012:image/web/`, `us-east-1`).
pub fn recipe_prefix(arn: &str) -> Result<(String, String), EventError> {
    let bad = || EventError(format!("{arn:?} is not an Image Builder image ARN"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "imagebuilder" {
        return Err(bad());
    }
    let resource: Vec<&str> = parts[5].split('/').collect();
    if resource.len() < 2 || resource[0] != "image" || resource[1].is_empty() {
        return Err(bad());
    }
    if resource[1].contains(['*', '?']) {
        return Err(bad());
    }
    let prefix = format!("{}:image/{}/", parts[..5].join(":"), resource[1]);
    Ok((prefix, parts[3].to_string()))
}

/// The account field of an ARN (`arn:aws:imagebuilder:<region>:<account>:...`).
fn arn_account(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

/// The scope of an Image Builder event: images whose `Ec2ImageBuilderArn` names an image
/// of that recipe. A requirement added next to the configured selection (the mandate
/// intersects), never a replacement of it, and the policy's groups stay as they are.
pub fn recipe_scope(recipe_prefix: &str) -> crate::mandate::Scope {
    crate::mandate::Scope {
        recipes: [recipe_prefix.to_string()].into(),
        ..Default::default()
    }
}

/// Parses an inline policy from an event; an error's path starts at the event's `policy`.
pub fn inline_policy(v: &Value) -> Result<Policy, PolicyError> {
    Policy::from_json(&v.to_string()).map_err(|mut e| {
        e.path = if e.path.is_empty() {
            "policy".to_string()
        } else {
            format!("policy.{}", e.path)
        };
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipe_prefix_keeps_the_recipe_and_drops_version_and_build() {
        assert_eq!(
            recipe_prefix("arn:aws:imagebuilder:eu-west-1:123456789012:image/web-golden/1.2.0/4")
                .unwrap(),
            (
                "arn:aws:imagebuilder:eu-west-1:123456789012:image/web-golden/".to_string(),
                "eu-west-1".to_string()
            )
        );
        for bad in [
            "arn:aws:ec2:us-east-1::image/ami-1",
            "arn:aws:imagebuilder:us-east-1:1:pipeline/x",
            "arn:aws:imagebuilder:us-east-1:1:image/*/1",
            "nonsense",
        ] {
            assert!(recipe_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_map_to_triggers() {
        assert_eq!(
            parse_event(&json!({"source": "aws.events", "detail-type": "Scheduled Event",
                                 "resources": ["arn:aws:events:us-east-1:1:rule/nightly"], "detail": {}}))
            .unwrap(),
            Trigger::Schedule
        );
        assert_eq!(
            parse_event(&json!({"dry_run": true})).unwrap(),
            Trigger::Manual {
                policy: None,
                dry_run: true
            }
        );
        assert!(matches!(
            parse_event(
                &json!({"source": "aws.ec2", "detail-type": "EC2 AMI State Change",
                                 "detail": {"ImageId": "ami-1", "State": "failed"}})
            )
            .unwrap(),
            Trigger::Ignored(_)
        ));
        let err = parse_event(&json!({"hello": "world"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unrecognised event: an object with keys [hello]; nothing was done"
        );
        assert!(parse_event(&json!({})).is_err());
        assert!(parse_event(&json!({"dry_run": false})).is_err());
        assert!(parse_event(&json!({"dry_run": "yes"})).is_err());
        assert!(parse_event(&json!([1])).is_err());
        assert!(parse_event(
            &json!({"source": "aws.s3", "detail-type": "Object Created", "detail": {}})
        )
        .is_err());
        assert!(parse_event(
            &json!({"Records": [{"messageId": "1", "eventSource": "aws:sns", "body": "{}"}]})
        )
        .is_err());
    }

    #[test]
    fn a_recipe_scope_is_one_requirement_and_the_ami_event_keeps_its_account() {
        let scope = recipe_scope("arn:aws:imagebuilder:us-east-1:1:image/web/");
        assert_eq!(scope.recipes.len(), 1);
        assert!(scope.lineages.is_empty() && scope.images.is_none());
        let t = parse_event(
            &json!({"source": "aws.ec2", "detail-type": "EC2 AMI State Change",
            "account": "123456789012", "region": "us-east-1",
            "detail": {"ImageId": "ami-1", "State": "available"}}),
        )
        .unwrap();
        assert_eq!(
            t,
            Trigger::AmiAvailable {
                image_id: "ami-1".into(),
                region: Some("us-east-1".into()),
                account: Some("123456789012".into())
            }
        );
    }

    #[test]
    fn an_approved_plan_event_names_an_s3_location_and_nothing_else() {
        let t = parse_event(&serde_json::json!({"approved_plan": "s3://b/reports/r/"})).unwrap();
        assert_eq!(
            t,
            Trigger::Approved {
                location: "s3://b/reports/r/".into()
            }
        );
        let e = parse_event(&serde_json::json!({"approved_plan": "s3://b/k", "dry_run": true}))
            .unwrap_err();
        assert!(e.to_string().contains("dry_run: unknown field"), "{e}");
        assert_eq!(
            s3_location("s3://b/reports/r/").unwrap(),
            ("b".into(), "reports/r/".into())
        );
        for bad in ["b/k", "s3://b", "s3:///k", "s3://b/"] {
            assert!(s3_location(bad).is_err(), "{bad}");
        }
    }
}
