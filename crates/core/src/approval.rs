//! Approved plans: the stamp a reviewable plan carries (a `plan --format json`, a dry
//! run's report, each pair's report of an organization's dry run), the checks an approved
//! plan passes before it may act, and the narrowing it asks for. Pure.
//!
//! An approved plan never widens a run: it becomes one more narrowing of the mandate
//! ([`Ask::approved`], through [`Mandate::narrow`]), and each image is decided again from
//! live facts; only images condemned both now and in the approved plan, with the same
//! action, are acted on ([`Mandate::restrict`]).

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mandate::{Approved, ApprovedImage, Ask, Mandate};
use crate::model::Timestamp;
use crate::planner::{Action, Decision};
use crate::strict::{self, FieldError};

/// How old an approved plan may be by default, in days.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 7;

/// The key under which plans and dry-run reports carry their [`Stamp`].
pub const STAMP_KEY: &str = "approval";

/// What a reviewable plan says about itself, for the check an approval needs: the policy
/// it was made under, where, when, and the (image, action)s it would act on. Written
/// under [`STAMP_KEY`]; read strictly (an unknown key is refused with its path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    /// [`crate::mandate::policy_digest`] of the configured policy.
    pub policy_digest: String,
    /// The account planned (`None`: not known, as in the offline `plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The regions planned.
    pub regions: BTreeSet<String>,
    /// The instant the plan was made at (RFC 3339).
    pub planned_at: String,
    /// Every image the plan would act on, with its action (kept images are not listed).
    pub images: Vec<StampedImage>,
}

/// One image a plan would act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StampedImage {
    /// The region.
    pub region: String,
    /// `ami-...`.
    pub image_id: String,
    /// The action planned (never `keep`).
    pub action: Action,
}

impl Stamp {
    /// The stamp of a plan of `regions` (`images` are (region, decision)s; kept ones are
    /// left out).
    pub fn new<'a>(
        policy_digest: &str,
        account: Option<&str>,
        regions: impl IntoIterator<Item = String>,
        planned_at: Timestamp,
        images: impl IntoIterator<Item = (&'a str, &'a str, Action)>,
    ) -> Self {
        Self {
            policy_digest: policy_digest.to_string(),
            account: account.map(str::to_string),
            regions: regions.into_iter().collect(),
            planned_at: crate::time::format_instant(planned_at),
            images: images
                .into_iter()
                .filter(|(_, _, a)| *a != Action::Keep)
                .map(|(region, image_id, action)| StampedImage {
                    region: region.to_string(),
                    image_id: image_id.to_string(),
                    action,
                })
                .collect(),
        }
    }

    /// The stamp of one region's plan.
    pub fn of_plan(
        policy_digest: &str,
        account: Option<&str>,
        region: &str,
        planned_at: Timestamp,
        decisions: &[Decision],
    ) -> Self {
        let images = decisions
            .iter()
            .map(|d| (region, d.image_id.as_str(), d.action));
        Self::new(
            policy_digest,
            account,
            [region.to_string()],
            planned_at,
            images,
        )
    }
}

/// The stamps of an approved plan's JSON: a plan's (`approval`), a dry run's report
/// (`regions[].approval`, one per region), a pair's report (`report.regions[].approval`) or
/// an organization's report (`pairs[].report.regions[].approval`; a pair or region that
/// did not run has none and approves nothing). Each stamp is read strictly; a document
/// with no stamp at all is refused (a live run's report carries none).
pub fn stamps_in(doc: &Value) -> Result<Vec<Stamp>, FieldError> {
    let out = stamps_found(doc)?;
    if out.is_empty() {
        return Err(FieldError::new(
            STAMP_KEY,
            "no approval stamp: only a plan (`plan --format json`) or a dry run's report \
             (`sweep --dry-run --format json`, or the pairs' reports of a dry run) can be \
             approved",
        ));
    }
    Ok(out)
}

/// As [`stamps_in`], but a document without a stamp has none (empty) rather than being
/// refused: one of the reports under an approved organization dry run's prefix, of a pair
/// that did not run (skipped, failed), approves nothing. A stamp that does not read is
/// still refused with its path.
pub fn stamps_found(doc: &Value) -> Result<Vec<Stamp>, FieldError> {
    if !doc.is_object() {
        return Err(FieldError::new("", "must be a JSON object"));
    }
    let mut out = Vec::new();
    collect(doc, "", &mut out)?;
    Ok(out)
}

/// The stamps at `v` (at `path`) and in the reports it holds.
fn collect(v: &Value, path: &str, out: &mut Vec<Stamp>) -> Result<(), FieldError> {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else if key.starts_with('[') {
            format!("{path}{key}")
        } else {
            format!("{path}.{key}")
        }
    };
    if let Some(s) = v.get(STAMP_KEY) {
        let where_ = at(STAMP_KEY);
        out.push(strict::from_value::<Stamp>(s).map_err(|e| e.under(&where_))?);
    }
    if let Some(Value::Array(regions)) = v.get("regions") {
        for (i, r) in regions.iter().enumerate() {
            if r.is_object() {
                collect(r, &at(&format!("regions[{i}]")), out)?;
            }
        }
    }
    if let Some(r) = v.get("report").filter(|r| r.is_object()) {
        collect(r, &at("report"), out)?;
    }
    if let Some(Value::Array(pairs)) = v.get("pairs") {
        for (i, p) in pairs.iter().enumerate() {
            if p.is_object() {
                collect(p, &at(&format!("pairs[{i}]")), out)?;
            }
        }
    }
    Ok(())
}

/// What an approved plan is checked against: the run it would narrow.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// The run's mandate before the approval (the deployment's ceiling, or the CLI's).
    pub mandate: &'a Mandate,
    /// The account the run acts in, when it sweeps its own (`None`: unknown, or an
    /// organization run, whose pairs' accounts the mandate admits).
    pub account: Option<&'a str>,
    /// The accounts under the policy's OUs, for an organization rule.
    pub members: Option<&'a BTreeSet<String>>,
    /// `--account`: the account a plan without one (the offline `plan`) was made for.
    pub stated_account: Option<&'a str>,
    /// Now.
    pub now: Timestamp,
    /// The longest age accepted, in days.
    pub max_age_days: u32,
}

/// Checks an approved plan's stamps against the run; the narrowing they ask for (their
/// regions, their accounts for an organization, their (image, action)s), or why the plan
/// is refused, in one line. Refused: another policy digest, a plan dated in the future or
/// older than the bound, another account or region, an account that cannot be checked.
pub fn approve(stamps: &[Stamp], run: &Run) -> Result<Ask, String> {
    let refuse = |why: String| {
        Err(format!(
            "the approved plan is refused: {why}; nothing was done"
        ))
    };
    let own = matches!(run.mandate.accounts, crate::mandate::AccountRule::Own);
    let mut approved = Approved::new();
    let mut regions = BTreeSet::new();
    let mut accounts = BTreeSet::new();
    if stamps.is_empty() {
        return refuse("it carries no plan".into());
    }
    for s in stamps {
        if let Err(why) = check_one(s, run, own) {
            return refuse(why);
        }
        let account = s.account.as_deref().or(run.stated_account);
        regions.extend(s.regions.iter().cloned());
        accounts.extend(account.map(str::to_string));
        approved.extend(s.images.iter().map(|i| ApprovedImage {
            account: (!own).then(|| account.map(str::to_string)).flatten(),
            region: i.region.clone(),
            image_id: i.image_id.clone(),
            action: i.action,
        }));
    }
    Ok(Ask {
        regions: Some(regions),
        accounts: (!own).then_some(accounts),
        approved: Some(approved),
        ..Ask::default()
    })
}

/// One stamp's checks: digest, instant, account, regions.
fn check_one(s: &Stamp, run: &Run, own: bool) -> Result<(), String> {
    if s.policy_digest != run.mandate.policy_digest {
        return Err(format!(
            "it was made under another policy (digest {}, this run's is {})",
            short(&s.policy_digest),
            short(&run.mandate.policy_digest)
        ));
    }
    let Some(at) = crate::time::parse_instant(&s.planned_at) else {
        return Err(format!(
            "its instant {:?} is not an RFC 3339 instant",
            s.planned_at
        ));
    };
    if at > run.now {
        return Err(format!(
            "it is dated in the future ({}, now {})",
            s.planned_at,
            crate::time::format_instant(run.now)
        ));
    }
    let age = run.now - at;
    if age > chrono::Duration::days(i64::from(run.max_age_days)) {
        return Err(format!(
            "it was made {} days ago ({}); an approval lasts {} days",
            age.num_days(),
            s.planned_at,
            run.max_age_days
        ));
    }
    let account = match (s.account.as_deref(), run.stated_account) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "it was made in account {a}, not {b} as --account says"
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err("it names no account (an offline plan): give --account".into());
        }
    };
    if own {
        match run.account {
            Some(here) if here == account => {}
            Some(here) => {
                return Err(format!(
                    "it was made in account {account}, this run acts in {here}"
                ))
            }
            None => {
                return Err(format!(
                    "it was made in account {account}, and this run's account is unknown \
                     (set AMI_SWEEPER_ACCOUNT_ID)"
                ))
            }
        }
    } else {
        run.mandate
            .admits_account(Some(account), run.members)
            .map_err(|e| format!("it was made in {e}"))?;
    }
    if let Some(r) = s.regions.difference(&run.mandate.regions).next() {
        return Err(format!(
            "it was made for region {r}; this run sweeps [{}]",
            run.mandate
                .regions
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(i) = s.images.iter().find(|i| !s.regions.contains(&i.region)) {
        return Err(format!(
            "it names {} in region {}, outside its own regions",
            i.image_id, i.region
        ));
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn at(s: &str) -> Timestamp {
        crate::time::parse_instant(s).unwrap()
    }

    fn ceiling() -> Mandate {
        let p = Policy::from_json(
            r#"{"dry_run": false, "regions": ["us-east-1", "eu-west-1"], "retention": {"min_age_days": 1}}"#,
        )
        .unwrap();
        Mandate::ceiling(&p, false, None)
    }

    fn stamp(m: &Mandate, account: Option<&str>, region: &str, planned: &str) -> Stamp {
        Stamp::new(
            &m.policy_digest,
            account,
            [region.to_string()],
            at(planned),
            [
                (region, "ami-1", Action::Deregister),
                (region, "ami-2", Action::Keep),
                (region, "ami-3", Action::Deprecate),
            ],
        )
    }

    fn run<'a>(m: &'a Mandate, account: Option<&'a str>) -> Run<'a> {
        Run {
            mandate: m,
            account,
            members: None,
            stated_account: None,
            now: at("2026-12-06T00:00:00Z"),
            max_age_days: DEFAULT_MAX_AGE_DAYS,
        }
    }

    #[test]
    fn a_fresh_plan_of_this_account_and_policy_narrows_to_its_images() {
        let m = ceiling();
        let s = stamp(
            &m,
            Some("111122223333"),
            "us-east-1",
            "2026-12-05T00:00:00Z",
        );
        let ask = approve(&[s], &run(&m, Some("111122223333"))).unwrap();
        let approved = ask.approved.unwrap();
        assert_eq!(approved.len(), 2, "kept images are not approved");
        assert!(approved
            .iter()
            .any(|a| a.image_id == "ami-3" && a.action == Action::Deprecate));
        assert_eq!(ask.regions, Some(["us-east-1".to_string()].into()));
    }

    #[test]
    fn each_refusal_says_why() {
        let m = ceiling();
        let good = || {
            stamp(
                &m,
                Some("111122223333"),
                "us-east-1",
                "2026-12-05T00:00:00Z",
            )
        };
        let why = |s: Stamp, r: Run| approve(&[s], &r).unwrap_err();
        let mut other = good();
        other.policy_digest = "ab".repeat(32);
        assert!(why(other, run(&m, Some("111122223333"))).contains("another policy"));
        assert!(
            why(good(), run(&m, Some("999999999999"))).contains("this run acts in 999999999999")
        );
        assert!(why(good(), run(&m, None)).contains("account is unknown"));
        let west = stamp(
            &m,
            Some("111122223333"),
            "ap-south-1",
            "2026-12-05T00:00:00Z",
        );
        assert!(why(west, run(&m, Some("111122223333"))).contains("region ap-south-1"));
        let old = stamp(
            &m,
            Some("111122223333"),
            "us-east-1",
            "2026-11-28T23:59:59Z",
        );
        assert!(why(old, run(&m, Some("111122223333"))).contains("7 days ago"));
        let edge = stamp(
            &m,
            Some("111122223333"),
            "us-east-1",
            "2026-11-29T00:00:00Z",
        );
        assert!(
            approve(&[edge], &run(&m, Some("111122223333"))).is_ok(),
            "exactly 7 days"
        );
        let future = stamp(
            &m,
            Some("111122223333"),
            "us-east-1",
            "2026-12-06T00:00:01Z",
        );
        assert!(why(future, run(&m, Some("111122223333"))).contains("future"));
        let offline = stamp(&m, None, "us-east-1", "2026-12-05T00:00:00Z");
        assert!(why(offline.clone(), run(&m, Some("111122223333"))).contains("give --account"));
        let mut stated = run(&m, Some("111122223333"));
        stated.stated_account = Some("111122223333");
        assert!(approve(&[offline], &stated).is_ok());
        assert!(why(good(), {
            let mut r = run(&m, Some("111122223333"));
            r.stated_account = Some("444455556666");
            r
        })
        .contains("as --account says"));
        assert!(approve(&[], &run(&m, Some("111122223333"))).is_err());
    }

    #[test]
    fn stamps_are_found_in_plans_reports_and_organization_reports_and_read_strictly() {
        let m = ceiling();
        let s = serde_json::to_value(stamp(&m, Some("1"), "us-east-1", "2026-12-05T00:00:00Z"))
            .unwrap();
        let plan = serde_json::json!({"decisions": [], "approval": s});
        assert_eq!(stamps_in(&plan).unwrap().len(), 1);
        let org = serde_json::json!({"pairs": [{"report": {"approval": s}}, {"error": "x"}, {"report": {"approval": s}}]});
        assert_eq!(stamps_in(&org).unwrap().len(), 2);
        let mut bad = s.clone();
        bad["images"][0]["zz"] = serde_json::json!(1);
        let org = serde_json::json!({"pairs": [{"report": {"approval": s}}, {"report": {"approval": bad}}]});
        let e = stamps_in(&org).unwrap_err().to_string();
        assert!(
            e.starts_with("pairs[1].report.approval.images[0].zz: unknown field"),
            "{e}"
        );
        let live = serde_json::json!({"dry_run": false, "regions": []});
        assert!(stamps_in(&live)
            .unwrap_err()
            .to_string()
            .contains("no approval stamp"));
    }
}
