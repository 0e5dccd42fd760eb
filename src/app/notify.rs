//! Summary messages for people: what a sweep deregistered, what storage it deleted or
//! deferred, what is retiring and what is coming, and what failed; one summary per
//! report, and one message per owner (by the policy's `notify.owner_tag`) that an SNS
//! subscription filter policy on the `owner` attribute delivers to that owner alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::app::report::{JobOutcome, Outcome, RegionReport, SweepReport};
use crate::inventory::Inventory;
use crate::time::format_instant;

/// SNS's limit on a message, in bytes (256 KiB); bodies stay well under it.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// A body is cut to this many bytes (the attributes and the subject count too).
const BODY_BUDGET: usize = MAX_MESSAGE_BYTES - 8_192;

/// At most this many images are listed per section; the rest are counted, and the full
/// report object has them all.
pub const MAX_LISTED: usize = 25;

/// The owners (values of the tag `tag`) of the images a summary names.
pub fn owners(inventory: &Inventory, tag: &str, report: &RegionReport) -> BTreeMap<String, String> {
    let named: rustc_hash::FxHashSet<&str> = named_images(report).collect();
    inventory
        .images()
        .iter()
        .filter(|i| named.contains(i.id.as_str()))
        .filter_map(|i| Some((i.id.clone(), i.tags.get(tag)?.to_string())))
        .collect()
}

/// Every image a summary may name: acted on, retiring, coming, failed or excepted (an
/// exception may lapse soon).
fn named_images(r: &RegionReport) -> impl Iterator<Item = &str> {
    let acted = r
        .images
        .iter()
        .filter(|i| i.outcome.is_some())
        .map(|i| i.image_id.as_str());
    let retiring = r
        .plan_detail
        .iter()
        .flat_map(|p| &p.decisions)
        .filter(|d| d.eligible_at.is_some() || d.exception.is_some())
        .map(|d| d.image_id.as_str());
    acted
        .chain(retiring)
        .chain(r.coming.iter().map(|c| c.image_id.as_str()))
}

/// One message for SNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// At most 100 ASCII characters (SNS's limit for email subjects).
    pub subject: String,
    /// The text.
    pub body: String,
    /// Message attributes (`kind`, `account`, `region`, `owner`), for filter policies.
    pub attributes: BTreeMap<String, String>,
}

/// Where a report came from and where its full text is.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// The account swept (organization pairs; the deployment's own when known).
    pub account: Option<&'a str>,
    /// `notify.lookahead_days`.
    pub lookahead_days: u64,
    /// `s3://bucket/key` of the full report object, when one was written.
    pub report_location: Option<String>,
}

/// The summary of `report`, then one message per owner named in its regions' `owners`.
pub fn messages(report: &SweepReport, ctx: &Context) -> Vec<Message> {
    let mut attributes = BTreeMap::from([("kind".to_string(), "summary".to_string())]);
    if let Some(a) = ctx.account {
        attributes.insert("account".into(), a.to_string());
    }
    if let [only] = report.regions.as_slice() {
        attributes.insert("region".into(), only.region.clone());
    }
    let mut out = vec![Message {
        subject: subject(report, ctx, None),
        body: body(report, ctx, None),
        attributes: attributes.clone(),
    }];
    let owners: std::collections::BTreeSet<&str> = report
        .regions
        .iter()
        .flat_map(|r| r.owners.values().map(String::as_str))
        .collect();
    for owner in owners {
        let mut attributes = attributes.clone();
        attributes.insert("kind".into(), "owner".into());
        attributes.insert("owner".into(), owner.to_string());
        out.push(Message {
            subject: subject(report, ctx, Some(owner)),
            body: body(report, ctx, Some(owner)),
            attributes,
        });
    }
    out
}

/// `ami-sweeper: 12 deregistered, 1 failure (111111111111 us-east-1)`, ASCII, ≤ 100.
fn subject(report: &SweepReport, ctx: &Context, owner: Option<&str>) -> String {
    let t = &report.totals;
    let n = |o| t.outcomes.get(&o).copied().unwrap_or(0);
    let acted = if report.dry_run {
        format!("dry run, {} to deregister", n(Outcome::Planned))
    } else {
        format!("{} deregistered", n(Outcome::Deregistered))
    };
    let mut where_ = ctx.account.unwrap_or("").to_string();
    if let [only] = report.regions.as_slice() {
        where_ = format!("{where_} {}", only.region).trim().to_string();
    }
    let mut s = format!("ami-sweeper: {acted}, {} failures", t.failures);
    if !where_.is_empty() {
        let _ = write!(s, " ({where_})");
    }
    if let Some(o) = owner {
        let _ = write!(s, " for {o}");
    }
    let ascii: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    ascii.chars().take(100).collect()
}

/// The text: per region its sections; for an owner, only that owner's images.
fn body(report: &SweepReport, ctx: &Context, owner: Option<&str>) -> String {
    let mut out = format!(
        "ami-sweeper {} at {}{}\n",
        if report.dry_run { "dry run" } else { "sweep" },
        report.now,
        ctx.account
            .map(|a| format!(", account {a}"))
            .unwrap_or_default()
    );
    if let Some(o) = owner {
        let _ = writeln!(out, "images owned by {o}");
    }
    for r in &report.regions {
        region_body(&mut out, r, report.dry_run, ctx, owner);
    }
    if owner.is_none() {
        let _ = writeln!(
            out,
            "\nestimated saving: {}/month (EBS snapshot sizes are an upper bound: snapshots \
             are incremental)",
            report.totals.monthly_saving
        );
    }
    if let Some(loc) = &ctx.report_location {
        let _ = writeln!(out, "full report: {loc}");
    }
    cut(out)
}

/// Keeps a body within [`BODY_BUDGET`] bytes, cut at a line.
fn cut(mut body: String) -> String {
    if body.len() <= BODY_BUDGET {
        return body;
    }
    let mut at = BODY_BUDGET;
    while !body.is_char_boundary(at) {
        at -= 1;
    }
    let at = body[..at].rfind('\n').map_or(at, |i| i + 1);
    body.truncate(at);
    body.push_str("... (cut to SNS's size limit; the full report has the rest)\n");
    body
}

/// One region's sections.
fn region_body(out: &mut String, r: &RegionReport, dry: bool, ctx: &Context, owner: Option<&str>) {
    let mine = |id: &str| owner.is_none_or(|o| r.owners.get(id).map(String::as_str) == Some(o));
    let _ = writeln!(out, "\n== {}", r.region);
    if let Some(e) = &r.error {
        let _ = writeln!(out, "FAILED: {e}");
    }
    deregistered_lines(out, r, dry, &mine);
    if owner.is_none() {
        storage_lines(out, r, dry);
    }
    let retiring: Vec<String> = r
        .plan_detail
        .iter()
        .flat_map(|p| &p.decisions)
        .filter(|d| mine(&d.image_id))
        .filter_map(|d| {
            let t = format_instant(d.eligible_at?);
            Some(format!("{} {}: eligible_at {t}", d.image_id, d.name))
        })
        .collect();
    listed(out, "retiring", &retiring);
    listed(out, &lapsing_title(), &lapsing_lines(r, &mine));
    let coming: Vec<String> = r
        .coming
        .iter()
        .filter(|c| mine(&c.image_id))
        .map(|c| format!("{} {}: {} from {}", c.image_id, c.name, c.why, c.at))
        .collect();
    let title = format!("coming within {} days", ctx.lookahead_days);
    listed(out, &title, &coming);
    listed(out, "failures", &failure_lines(r, &mine));
}

fn lapsing_title() -> String {
    format!(
        "exceptions lapsing within {} days",
        crate::planner::LAPSING_WITHIN_DAYS
    )
}

/// The exceptions that lapse within [`crate::planner::LAPSING_WITHIN_DAYS`], soonest
/// first, each with its reason and its image's owner (by `notify.owner_tag`).
fn lapsing_lines(r: &RegionReport, mine: &dyn Fn(&str) -> bool) -> Vec<String> {
    r.plan_detail
        .iter()
        .flat_map(|p| p.lapsing(crate::planner::LAPSING_WITHIN_DAYS))
        .filter(|d| mine(&d.image_id))
        .map(|d| match r.owners.get(&d.image_id) {
            Some(o) => format!("{}, owner {o}", d.exception_line()),
            None => d.exception_line(),
        })
        .collect()
}

/// `deregistered: n images`, then per group the count and the first and last names.
fn deregistered_lines(out: &mut String, r: &RegionReport, dry: bool, mine: &dyn Fn(&str) -> bool) {
    let (gone, verb) = if dry {
        (Outcome::Planned, "to deregister")
    } else {
        (Outcome::Deregistered, "deregistered")
    };
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for i in r
        .images
        .iter()
        .filter(|i| i.outcome == Some(gone) && mine(&i.image_id))
    {
        by_group.entry(&i.group).or_default().push(&i.name);
    }
    let total: usize = by_group.values().map(Vec::len).sum();
    let _ = writeln!(out, "{verb}: {total} images");
    for (g, names) in by_group {
        let span = match names.as_slice() {
            [one] => one.to_string(),
            [first, .., last] => format!("{first} to {last}"),
            [] => String::new(),
        };
        let _ = writeln!(out, "  {g}: {} ({span})", names.len());
    }
}

/// Failed images and failed or refused cleanup jobs, with their errors.
fn failure_lines(r: &RegionReport, mine: &dyn Fn(&str) -> bool) -> Vec<String> {
    let why = |e: &Option<String>| e.clone().unwrap_or_else(|| "failed".into());
    let images = r
        .images
        .iter()
        .filter(|i| i.outcome == Some(Outcome::Failed) && mine(&i.image_id))
        .map(|i| format!("{} {}: {}", i.image_id, i.name, why(&i.error)));
    let jobs = r
        .jobs
        .iter()
        .filter(|j| matches!(j.outcome, JobOutcome::Failed | JobOutcome::Rejected))
        .filter(|j| mine(&j.image_id))
        .map(|j| format!("{} {}: {}", j.kind, j.target, why(&j.error)));
    images.chain(jobs).collect()
}

/// Storage deleted (or to delete) and deferred.
fn storage_lines(out: &mut String, r: &RegionReport, dry: bool) {
    let deleted = r
        .jobs
        .iter()
        .filter(|j| matches!(j.outcome, JobOutcome::Deleted | JobOutcome::Queued))
        .count();
    let (to_delete, deferred) = r.plan.as_ref().map_or((0, 0), |p| {
        (
            p.snapshots_to_delete + p.bundles_to_delete,
            p.snapshots_deferred,
        )
    });
    let _ =
        writeln!(
        out,
        "storage: {} {}; {deferred} snapshots deferred until their images leave the Recycle Bin",
        if dry { to_delete } else { deleted },
        if dry { "to delete" } else { "deleted or queued for deletion" },
    );
}

/// `title: n` then at most [`MAX_LISTED`] lines, and how many more.
fn listed(out: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}: {}", lines.len());
    for l in lines.iter().take(MAX_LISTED) {
        let _ = writeln!(out, "  {l}");
    }
    if lines.len() > MAX_LISTED {
        let _ = writeln!(
            out,
            "  ... and {} more (see the full report)",
            lines.len() - MAX_LISTED
        );
    }
}

/// Where summaries go and where full reports are kept.
#[derive(Debug, Clone, Default)]
pub struct Delivery<'a> {
    /// The SNS topic; none: no message is sent.
    pub topic_arn: Option<&'a str>,
    /// The report bucket; single-account runs write their report there too.
    pub report_bucket: Option<&'a str>,
    /// The account swept, for the messages' attributes.
    pub account: Option<&'a str>,
    /// `notify.lookahead_days`.
    pub lookahead_days: u64,
}

/// After a single-account run: writes the full report to the report bucket (when one is
/// configured) under `reports/<run>/<account>/report.json`, then publishes the summary
/// and the owners' messages. Returns what could not be done, one line each (the sweep's
/// own outcome stands either way).
pub async fn after_sweep(
    clients: &crate::adapters::aws::Clients,
    d: &Delivery<'_>,
    report: &SweepReport,
) -> Vec<String> {
    after_sweep_at(clients, d, report).await.1
}

/// As [`after_sweep`], also returning the report object's `s3://` address when it was
/// written (a markdown summary points there for what it cannot show).
pub async fn after_sweep_at(
    clients: &crate::adapters::aws::Clients,
    d: &Delivery<'_>,
    report: &SweepReport,
) -> (Option<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut location = None;
    if let Some(bucket) = d.report_bucket {
        let key = format!(
            "reports/{}/{}/report.json",
            report.now,
            d.account.unwrap_or("self")
        );
        let body = serde_json::to_vec_pretty(report).expect("reports serialize");
        let region = clients
            .base()
            .region()
            .map_or("us-east-1".into(), |r| r.to_string());
        match clients
            .region(&region)
            .s3
            .put_report(bucket, &key, body)
            .await
        {
            Ok(()) => location = Some(format!("s3://{bucket}/{key}")),
            Err(e) => errors.push(format!("the report could not be written: {e}")),
        }
    }
    errors.extend(publish(clients, d, report, location.clone()).await);
    (location, errors)
}

/// Publishes a report's summary and owner messages to `d.topic_arn` (nothing without
/// one); `location` is the full report object's `s3://` address, when written.
pub async fn publish(
    clients: &crate::adapters::aws::Clients,
    d: &Delivery<'_>,
    report: &SweepReport,
    location: Option<String>,
) -> Vec<String> {
    let Some(topic) = d.topic_arn else {
        return Vec::new();
    };
    let ctx = Context {
        account: d.account,
        lookahead_days: d.lookahead_days,
        report_location: location,
    };
    let sns =
        crate::adapters::aws::sns::Sns::for_topic(clients.base(), topic, clients.calls().clone());
    let mut errors = Vec::new();
    for m in messages(report, &ctx) {
        if let Err(e) = sns.publish(topic, &m.subject, &m.body, &m.attributes).await {
            errors.push(format!("a summary could not be sent: {e}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::report::{ImageReport, JobReport};
    use crate::coming::coming;
    use crate::model::{Image, SnapshotRef};
    use crate::planner::Action;

    /// Three old images (two owned), one failing, one young enough to be coming.
    fn report() -> SweepReport {
        report_with(
            r#"{"retention": {"min_age_days": 30}, "notify": {"owner_tag": "owner"}}"#,
            |_| {},
        )
    }

    /// [`report`]'s images, changed by `edit`, under `policy`.
    fn report_with(policy: &str, edit: impl FnOnce(&mut Vec<Image>)) -> SweepReport {
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let mut images = Vec::new();
        for (i, days) in [(1, 400), (2, 300), (3, 200), (4, 25)] {
            let mut img = Image::new(
                format!("ami-{i}"),
                format!("web-{i}"),
                now - chrono::TimeDelta::days(days),
            );
            img.snapshots.push(SnapshotRef {
                id: format!("snap-{i}"),
                size_gib: Some(100),
            });
            if i <= 2 {
                img.tags
                    .insert("owner", if i == 1 { "team-a" } else { "team-b" });
            }
            images.push(img);
        }
        edit(&mut images);
        let policy = crate::Policy::from_json(policy).unwrap();
        let inventory = Inventory::new(images, crate::Usage::new()).unwrap();
        let plan = crate::plan(&policy, &inventory, now);
        let later = crate::plan(&policy, &inventory, now + chrono::TimeDelta::days(7));
        let mut r = RegionReport::new("us-east-1");
        r.images = plan
            .decisions
            .iter()
            .map(|d| ImageReport {
                image_id: d.image_id.clone(),
                name: d.name.clone(),
                rule: d.rule.clone(),
                group: d.group.clone(),
                action: d.action,
                reasons: d.reasons.clone(),
                outcome: match d.image_id.as_str() {
                    "ami-3" => Some(Outcome::Failed),
                    _ if d.action == Action::Keep => None,
                    _ => Some(Outcome::Deregistered),
                },
                error: (d.image_id == "ami-3")
                    .then(|| "DeregisterImage: UnauthorizedOperation: denied".to_string()),
                thinning: None,
                exception: None,
            })
            .collect();
        r.jobs = ["snap-1", "snap-2"]
            .iter()
            .enumerate()
            .map(|(i, s)| JobReport {
                image_id: format!("ami-{}", i + 1),
                kind: crate::jobs::JobKind::DeleteSnapshot,
                target: s.to_string(),
                outcome: JobOutcome::Deleted,
                attempts: 1,
                deleted_objects: vec![],
                error: None,
            })
            .collect();
        r.plan = Some(plan.summary.clone());
        r.coming = coming(&plan, &later, now + chrono::TimeDelta::days(7));
        r.plan_detail = Some(plan);
        r.owners = owners(&inventory, "owner", &r);
        r.price(&Default::default());
        let mut report = SweepReport {
            dry_run: false,
            now: "2026-11-26T00:00:00Z".into(),
            regions: vec![r],
            totals: Default::default(),
            api_calls: Default::default(),
            throttles: 0,
            elapsed_ms: 1,
            stopped: None,
        };
        report.total();
        report
    }

    fn ctx() -> Context<'static> {
        Context {
            account: Some("123456789012"),
            lookahead_days: 7,
            report_location: Some("s3://reports/reports/run/123456789012/report.json".into()),
        }
    }

    #[test]
    fn the_summary_says_what_went_what_failed_and_what_is_coming() {
        let m = messages(&report(), &ctx());
        assert_eq!(m.len(), 3, "the summary and one message per owner");
        assert_eq!(
            m[0].subject,
            "ami-sweeper: 2 deregistered, 1 failures (123456789012 us-east-1)"
        );
        assert_eq!(
            m[0].body,
            "ami-sweeper sweep at 2026-11-26T00:00:00Z, account 123456789012

== us-east-1
deregistered: 2 images
  *: 2 (web-2 to web-1)
storage: 2 deleted or queued for deletion; 0 snapshots deferred until their images leave the Recycle Bin
coming within 7 days: 1
  ami-4 web-4: condemned from 2026-12-03T00:00:00Z
failures: 1
  ami-3 web-3: DeregisterImage: UnauthorizedOperation: denied

estimated saving: $10.00/month (EBS snapshot sizes are an upper bound: snapshots are incremental)
full report: s3://reports/reports/run/123456789012/report.json
"
        );
        assert_eq!(
            m[0].attributes,
            BTreeMap::from([
                ("account".to_string(), "123456789012".to_string()),
                ("kind".to_string(), "summary".to_string()),
                ("region".to_string(), "us-east-1".to_string()),
            ])
        );
    }

    #[test]
    fn each_owner_gets_only_their_images_with_an_owner_attribute() {
        let m = messages(&report(), &ctx());
        let a = m
            .iter()
            .find(|m| m.attributes.get("owner").map(String::as_str) == Some("team-a"))
            .unwrap();
        assert_eq!(a.attributes["kind"], "owner");
        assert!(a.body.contains("images owned by team-a"));
        assert!(a.body.contains("deregistered: 1 images\n  *: 1 (web-1)"));
        assert!(!a.body.contains("web-2") && !a.body.contains("web-3"));
        assert!(!a.body.contains("estimated saving"));
        assert!(a.subject.ends_with(" for team-a"));
    }

    #[test]
    fn summaries_list_the_exceptions_lapsing_within_fourteen_days_with_reasons_and_owners() {
        let policy = r#"{"retention": {"min_age_days": 30}, "notify": {"owner_tag": "owner"},
            "exceptions": [{"image_ids": ["ami-6"], "until": "2026-11-28",
                            "reason": "OPS-8 rebuild"}]}"#;
        let r = report_with(policy, |images| {
            let at = images[0].creation_date;
            for (id, until, owner) in [
                ("ami-5", Some("2026-12-05"), Some("team-a")),
                ("ami-6", None, Some("team-b")),
                ("ami-7", Some("2027-01-31"), Some("team-a")),
            ] {
                let mut img = Image::new(id, id.replace("ami", "web"), at);
                if let Some(u) = until {
                    img.tags.insert("ami-sweeper:keep-until", u);
                    img.tags.insert("ami-sweeper:keep-reason", "OPS-7 audit");
                }
                if let Some(o) = owner {
                    img.tags.insert("owner", o);
                }
                images.push(img);
            }
        });
        let m = messages(&r, &ctx());
        let section = "exceptions lapsing within 14 days: 2
  ami-6 web-6: excepted until 2026-11-29T00:00:00Z (exceptions[0]: OPS-8 rebuild), owner team-b
  ami-5 web-5: excepted until 2026-12-06T00:00:00Z (tag: OPS-7 audit), owner team-a
";
        assert!(m[0].body.contains(section), "{}", m[0].body);
        assert!(
            !m[0].body.contains("ami-7"),
            "not lapsing yet: {}",
            m[0].body
        );
        let owner = |o: &str| {
            m.iter()
                .find(|m| m.attributes.get("owner").map(String::as_str) == Some(o))
                .unwrap()
                .body
                .clone()
        };
        let a = owner("team-a");
        assert!(
            a.contains("exceptions lapsing within 14 days: 1\n  ami-5 web-5: excepted until"),
            "{a}"
        );
        assert!(!a.contains("ami-6"), "{a}");
        assert!(owner("team-b").contains("ami-6 web-6: excepted until 2026-11-29"));
    }

    #[test]
    fn messages_stay_within_sns_limits() {
        let mut r = report();
        let many: Vec<ImageReport> = (0..20_000)
            .map(|i| ImageReport {
                image_id: format!("ami-x{i}"),
                name: format!("{}-{i}", "n".repeat(40)),
                rule: None,
                group: format!("group-{i}"),
                action: Action::Deregister,
                reasons: vec![crate::planner::Reason::Expired],
                outcome: Some(Outcome::Deregistered),
                error: None,
                thinning: None,
                exception: None,
            })
            .collect();
        r.regions[0].images.extend(many);
        let m = messages(&r, &ctx());
        assert!(m[0].body.len() <= BODY_BUDGET + 100, "{}", m[0].body.len());
        assert!(m[0].body.ends_with("the full report has the rest)\n"));
        assert!(m
            .iter()
            .all(|m| m.subject.len() <= 100 && m.subject.is_ascii()));
    }
}
