//! Organization scale: one sweep per (account, region) pair, each through the member
//! account's role, with bounded concurrency across pairs. One account that cannot be
//! entered (role missing, access denied) fails only its own pairs; nothing in any account
//! is touched with another's credentials. Used in process by the CLI, and one pair per
//! sweep-queue message by the Lambda function.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::adapters::aws::Clients;
use crate::app::report::SweepReport;
use crate::app::run::{run_sweep_in, SweepOptions};
use crate::chain::{Chain, ChainTotals};
use crate::error::AwsError;
use crate::mandate::{AccountRule, Ask, Mandate};
use crate::model::Usage;
use crate::policy::{Accounts, Policy, SharedRule};
use crate::ports::{ReferenceCheck, UsageSource};
use crate::strict::{self, FieldError};

/// One (account, region) pair to sweep: what a sweep-queue message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepRequest {
    /// The member account.
    pub account: String,
    /// The region.
    pub region: String,
    /// The run it belongs to (the dispatcher's instant), naming its reports.
    pub run: String,
    /// The run's mandate narrowed to this pair: the pair sweeper runs exactly it, if it is
    /// within its own ceiling. A request without one (an older dispatcher's) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandate: Option<Mandate>,
    /// Set on a continuation: the chain it carries on ([`crate::chain`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
}

impl SweepRequest {
    /// The message body: `{"sweep": {...}}`, told apart from cleanup jobs by its key.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "sweep": self }).to_string()
    }

    /// Reads a message body: `None` when it is not a sweep request (no JSON object with a
    /// `sweep` key), else the request or why it cannot be read, naming the field's path.
    pub fn from_json(body: &str) -> Option<Result<Self, FieldError>> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v.get("sweep")?;
        Some(strict::from_value::<Envelope>(&v).map(|e| e.sweep))
    }

    /// Where its report goes in the report bucket: one JSON per account, region and run,
    /// and one per further link of the run's chain (`<region>.link-<n>.json`).
    pub fn report_key(&self) -> String {
        match self.chain.as_ref().map_or(0, |c| c.link) {
            0 => format!("reports/{}/{}/{}.json", self.run, self.account, self.region),
            n => format!(
                "reports/{}/{}/{}.link-{n}.json",
                self.run, self.account, self.region
            ),
        }
    }
}

/// A sweep-queue message's body: `{"sweep": {...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    sweep: SweepRequest,
}

/// One pair's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    /// The member account.
    pub account: String,
    /// The region.
    pub region: String,
    /// Why the pair did not run (the account could not be entered), or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The sweep's report, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<SweepReport>,
    /// Why the pair was skipped, not swept: another run's chain holds it. Not a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Its place in its chain, when it continues one or is continued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainLine>,
}

/// A link's line about its chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainLine {
    /// This link's place (0: the chain's first run).
    pub link: u32,
    /// The report of the link this one continues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
    /// The report its continuation will write, when it started one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continued_by: Option<String>,
    /// How the chain ended, when it ended here without finishing (the chain limit, a
    /// continuation that could not be queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// The chain's totals, on its last link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<ChainTotals>,
}

impl PairReport {
    /// Failures in the pair: one when it could not run, none when skipped, else its
    /// report's.
    pub fn failures(&self) -> usize {
        match (&self.report, &self.skipped) {
            (Some(r), _) => r.totals.failures,
            (None, Some(_)) => 0,
            (None, None) => 1,
        }
    }
}

/// One account's line of the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountSummary {
    /// Images evaluated.
    pub images: usize,
    /// Images deregistered.
    pub deregistered: usize,
    /// Failures (pairs that could not run count one each).
    pub failures: usize,
    /// The first reason a pair of the account could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Estimated monthly saving (US dollars) over the account's pairs.
    pub monthly_saving: crate::pricing::Usd,
}

/// A whole organization sweep.
#[derive(Debug, Clone, Serialize)]
pub struct OrgReport {
    /// The run's name (its instant), as in the report bucket's keys.
    pub run: String,
    /// Every pair, by account then region.
    pub pairs: Vec<PairReport>,
    /// One line per account.
    pub accounts: BTreeMap<String, AccountSummary>,
    /// Failures over all pairs.
    pub failures: usize,
}

/// The accounts a policy's `accounts` names: the list as given, or the active accounts
/// under its OUs (through the hub's Organizations access) without the excluded ones.
pub async fn resolve_accounts(hub: &Clients, policy: &Policy) -> Result<Vec<String>, AwsError> {
    match &policy.accounts {
        None => Ok(Vec::new()),
        Some(Accounts::List(ids)) => Ok(ids.clone()),
        Some(Accounts::Organization { organization }) => {
            hub.organizations()
                .accounts_under(&organization.ou_ids, &organization.exclude_accounts)
                .await
        }
    }
}

/// The accounts under the ceiling's OUs (child OUs included, the excluded ones left out),
/// when its account rule is an organization's: what a receiver checks a message's account
/// against. `None` for other rules, which need no lookup.
pub async fn members(
    hub: &Clients,
    ceiling: &Mandate,
) -> Result<Option<BTreeSet<String>>, AwsError> {
    match &ceiling.accounts {
        AccountRule::Organization { ou_ids, exclude } => {
            let ou_ids: Vec<String> = ou_ids.iter().cloned().collect();
            let exclude: Vec<String> = exclude.iter().cloned().collect();
            let found = hub
                .organizations()
                .accounts_under(&ou_ids, &exclude)
                .await?;
            Ok(Some(found.into_iter().collect()))
        }
        AccountRule::Own | AccountRule::List(_) => Ok(None),
    }
}

/// One request per (account, region) pair the mandate admits, each carrying the mandate
/// narrowed to its pair.
pub fn pair_requests(
    mandate: &Mandate,
    accounts: &[String],
    members: Option<&BTreeSet<String>>,
    run: &str,
) -> Vec<SweepRequest> {
    let mut out = Vec::new();
    for a in accounts {
        if mandate.admits_account(Some(a), members).is_err() {
            continue;
        }
        for r in &mandate.regions {
            out.push(SweepRequest {
                account: a.clone(),
                region: r.clone(),
                run: run.to_string(),
                mandate: Some(mandate.narrow(&Ask {
                    accounts: Some([a.clone()].into()),
                    regions: Some([r.clone()].into()),
                    ..Ask::default()
                })),
                chain: None,
            });
        }
    }
    out
}

/// Sweeps one pair in its member account: enters it (the identity checked), judges shared
/// images by the sibling accounts' usage when the policy says `keep_if_used`, and sweeps.
/// The report is the caller's to write ([`write_report`]).
pub async fn sweep_pair(
    hub: &Clients,
    policy: &Policy,
    request: &SweepRequest,
    siblings: &[String],
    opts: &SweepOptions,
) -> PairReport {
    let (account, region) = (request.account.as_str(), request.region.as_str());
    let fail = |error: String| PairReport {
        error: Some(error),
        ..PairReport::new(account, region)
    };
    // A single-account deployment's continuation (no `accounts` in the policy) sweeps
    // its own account with its own clients; an organization's pair enters the member.
    let own = policy.accounts.is_none();
    let entered;
    let member = if own {
        hub
    } else {
        entered = match hub.member(account, &policy.member_role_name).await {
            Ok(m) => m,
            Err(e) => return fail(format!("cannot enter account {account}: {e}")),
        };
        &entered
    };
    let mut opts = opts.clone();
    opts.regions = vec![region.to_string()];
    // Bundle buckets are the hub's: never listed or cleaned with a member's credentials.
    if !own {
        opts.exec.bundle_buckets.clear();
    }
    if let Some(m) = &request.mandate {
        opts.force_dry_run |= m.dry_run;
        opts.exec.mandate = Some(Arc::new(m.clone()));
    }
    if policy.protection.shared == SharedRule::KeepIfUsed {
        match sibling_usage(hub, policy, siblings, account, region).await {
            Ok(u) => opts.exec.siblings = Some(Arc::new(u)),
            Err(e) => return fail(format!("cannot read the sibling accounts' usage: {e}")),
        }
    }
    let regions = [region.to_string()];
    let jobs_account = (!own).then_some(account);
    let report = run_sweep_in(hub, member, jobs_account, policy, &regions, &opts).await;
    PairReport {
        report: Some(report),
        ..PairReport::new(account, region)
    }
}

/// Writes a pair's report to `bucket` under `key`; a failure is recorded as the pair's
/// error (the message is then redelivered).
pub async fn write_report(hub: &Clients, bucket: &str, key: &str, pair: &mut PairReport) {
    let body = serde_json::to_vec_pretty(&*pair).expect("reports serialize");
    if let Err(e) = hub_s3(hub).put_report(bucket, key, body).await {
        pair.error = Some(format!("{REPORT_NOT_WRITTEN}: {e}"));
    }
}

/// How a pair's error begins when its report could not be written.
pub const REPORT_NOT_WRITTEN: &str = "the report could not be written";

impl PairReport {
    /// A pair that has not run yet.
    pub fn new(account: &str, region: &str) -> Self {
        Self {
            account: account.to_string(),
            region: region.to_string(),
            error: None,
            report: None,
            skipped: None,
            chain: None,
        }
    }
}

/// The hub's S3 client, in the hub's region (the report bucket's).
pub fn hub_s3(hub: &Clients) -> crate::adapters::aws::s3::S3 {
    hub.region(&hub_region(hub)).s3
}

/// The hub's object reader, in the hub's region: what reads approved plans back from the
/// report bucket.
pub fn hub_objects(hub: &Clients) -> crate::adapters::aws::reference_objects::ReferenceObjects {
    hub.region(&hub_region(hub)).reference_objects
}

/// The usage, in `region`, of every other account the sweep can enter: what
/// `keep_if_used` judges a shared image by, read from the same sources as the home sweep's
/// ([`account_usage`]). An account that cannot be entered, or whose recipes cannot be
/// read, is left out (an image shared with it stays `shared`).
async fn sibling_usage(
    hub: &Clients,
    policy: &Policy,
    siblings: &[String],
    own: &str,
    region: &str,
) -> Result<BTreeMap<String, Usage>, AwsError> {
    let mut out = BTreeMap::new();
    for a in siblings.iter().filter(|a| *a != own) {
        let Ok(member) = hub.member(a, &policy.member_role_name).await else {
            continue;
        };
        if let Some(usage) = account_usage(&member.region(region), policy).await? {
            out.insert(a.clone(), usage);
        }
    }
    Ok(out)
}

/// One account's usage in one region for `keep_if_used`: every source the home sweep
/// reads (instances, launch templates, launch configurations, SSM parameters, fleets,
/// Batch, and Image Builder recipes, which at home stand in where AWS's reference check is
/// missing; the reference check itself sees only the caller's own images). `Err` stops the
/// pair, as a failed usage listing does; `Ok(None)` when the recipes cannot be read: the
/// account is left out, so an image shared with it is kept `shared`, never judged unused.
pub async fn account_usage<R: UsageSource + ReferenceCheck>(
    region: &R,
    policy: &Policy,
) -> Result<Option<Usage>, AwsError> {
    let (mut usage, _) = region.list_usage(&policy.usage).await?;
    match region.recipe_parents().await {
        Ok(recipes) => usage.extend(recipes),
        Err(e) => {
            tracing::warn!(error = %e, "a sibling account's Image Builder recipes could not be read; images shared with it stay shared");
            return Ok(None);
        }
    }
    Ok(Some(usage))
}

fn hub_region(hub: &Clients) -> String {
    hub.base()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into())
}

/// Open files one pair may hold while it sweeps: its member clients' connections (EC2's
/// pool, S3, SQS, STS) and the SDK's, with room to spare.
pub const FDS_PER_PAIR: u64 = 16;

/// Never more pairs at once than this, whatever the machine allows: a pair holds its
/// inventory in memory (about 10 MB at 10,000 images), so 256 pairs stay within a few GB.
pub const MAX_PAIRS_AT_ONCE: usize = 256;

/// When no limit on open files is known, assume the usual soft limit.
const DEFAULT_OPEN_FILES: u64 = 1024;

/// How many of a run's `pairs` to sweep at once by default: all of them, since each pair
/// has its own EC2 buckets and its sweep time does not grow with the others, up to the
/// bound the machine sets (one pair per [`FDS_PER_PAIR`] of `open_files`, the process's
/// soft limit, keeping a quarter for everything else; at most [`MAX_PAIRS_AT_ONCE`]).
pub fn default_concurrency(pairs: usize, open_files: Option<u64>) -> usize {
    let files = open_files.unwrap_or(DEFAULT_OPEN_FILES);
    let by_files =
        usize::try_from(files.saturating_mul(3) / 4 / FDS_PER_PAIR).unwrap_or(usize::MAX);
    pairs.min(by_files).clamp(1, MAX_PAIRS_AT_ONCE)
}

/// Sweeps every (account, region) pair the run's mandate admits, at most `concurrency` at
/// once, and sums up per account. `accounts` are the policy's, resolved; for an
/// organization rule they are also the members the mandate checks accounts against.
pub async fn run_org_sweep(
    hub: &Clients,
    policy: &Policy,
    accounts: &[String],
    regions: &[String],
    opts: &SweepOptions,
    concurrency: usize,
    report_bucket: Option<&str>,
) -> OrgReport {
    let run = crate::time::format_instant(opts.now);
    let mandate = crate::app::run::mandate_of(policy, regions, opts);
    let members: BTreeSet<String> = accounts.iter().cloned().collect();
    let requests = pair_requests(&mandate, accounts, Some(&members), &run);
    // Reference objects are the hub's: read once, with its role, for every pair.
    let mut opts = opts.clone();
    opts.exec.reference_usage = crate::app::written::reference_usage(hub, policy, &opts.exec).await;
    let opts = &opts;
    let mut pairs: Vec<PairReport> = stream::iter(&requests)
        .map(|r| async move {
            let mut pair = sweep_pair(hub, policy, r, accounts, opts).await;
            if let Some(bucket) = report_bucket {
                write_report(hub, bucket, &r.report_key(), &mut pair).await;
            }
            pair
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    pairs.sort_by(|a, b| (&a.account, &a.region).cmp(&(&b.account, &b.region)));
    summarize(run, pairs)
}

/// The per-account lines and the total of failures.
pub fn summarize(run: String, pairs: Vec<PairReport>) -> OrgReport {
    let mut accounts: BTreeMap<String, AccountSummary> = BTreeMap::new();
    for p in &pairs {
        let line = accounts.entry(p.account.clone()).or_default();
        line.failures += p.failures();
        if let Some(r) = &p.report {
            line.images += r.totals.images;
            line.monthly_saving += r.totals.monthly_saving;
            line.deregistered += r
                .totals
                .outcomes
                .get(&crate::app::report::Outcome::Deregistered)
                .copied()
                .unwrap_or(0);
        }
        if line.error.is_none() {
            line.error.clone_from(&p.error);
        }
        tracing::info!(account = %p.account, region = %p.region, failures = p.failures(), error = ?p.error, "pair swept");
    }
    let failures = pairs.iter().map(PairReport::failures).sum();
    OrgReport {
        run,
        pairs,
        accounts,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_at_once_up_to_the_machines_bound() {
        // Six pairs on a usual machine: all six at once (the old default was 4).
        assert_eq!(default_concurrency(6, Some(1024)), 6);
        // 400 pairs under 1,024 open files: 48 at once (768 files / 16 per pair).
        assert_eq!(default_concurrency(400, Some(1024)), 48);
        assert_eq!(default_concurrency(400, None), 48);
        // A generous limit: the memory bound.
        assert_eq!(default_concurrency(1000, Some(1 << 20)), MAX_PAIRS_AT_ONCE);
        // A starved process still sweeps, one pair at a time.
        assert_eq!(default_concurrency(10, Some(8)), 1);
        assert_eq!(default_concurrency(0, Some(1024)), 1);
    }
}
