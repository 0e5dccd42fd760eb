//! One link of a pair's chain ([`crate::chain`]): take the pair's lease, sweep at the
//! chain's instant within what the chain has left, write the link's report, then start the
//! successor (a sweep-queue message carrying the same mandate) or end the chain (release
//! the lease; the one summary goes out with the chain's totals).

use std::time::Duration;

use crate::adapters::aws::s3::{Precondition, S3};
use crate::adapters::aws::Clients;
use crate::app::org::{self, ChainLine, PairReport, SweepRequest};
use crate::app::report::{Outcome, SweepReport};
use crate::app::run::SweepOptions;
use crate::app::stop::StopReason;
use crate::chain::{self, Chain, ChainTotals, Claim, Lease, LinkEnd, Next};
use crate::error::AwsError;
use crate::model::Timestamp;
use crate::policy::Policy;

/// How long a pair's lease holds without renewal: one link (Lambda's 15 minutes at most)
/// and the wait of its continuation in the sweep queue. A holder that dies leaves the pair
/// free after this.
pub const LEASE_FOR: Duration = Duration::from_secs(30 * 60);

/// Where the pair's lease lives in the report bucket.
pub fn lease_key(account: &str, region: &str) -> String {
    format!("leases/{account}/{region}.json")
}

/// Where a link works: the hub's clients, the report bucket (reports and leases), and the
/// sweep queue its successor goes to. Without a bucket or a queue a chain does not go on.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    /// The hub's clients.
    pub hub: &'a Clients,
    /// The report bucket.
    pub bucket: Option<&'a str>,
    /// The sweep queue.
    pub queue: Option<&'a str>,
}

/// What a link did: the pair's report (written), and the chain's totals when the chain
/// ended with it (the caller sends the one summary then, never before).
pub struct Linked {
    /// The link's report.
    pub pair: PairReport,
    /// `Some` when the chain ended here.
    pub ended: Option<ChainTotals>,
}

/// Runs one link of the pair `request` names (a first run or a continuation).
pub async fn run_link(
    at: Place<'_>,
    policy: &Policy,
    request: &SweepRequest,
    siblings: &[String],
    opts: &SweepOptions,
) -> Linked {
    let (account, region) = (request.account.as_str(), request.region.as_str());
    let link = request.chain.as_ref().map_or(0, |c| c.link);
    let lease = match at.bucket {
        Some(b) => {
            let mut pair = PairReport::new(account, region);
            match take_lease(&org::hub_s3(at.hub), b, request, opts.now).await {
                Ok(Ok(etag)) => Some(etag),
                Ok(Err(skip)) => {
                    tracing::warn!(%account, %region, reason = %skip, "pair skipped");
                    pair.skipped = Some(skip);
                    org::write_report(at.hub, b, &request.report_key(), &mut pair).await;
                    return Linked { pair, ended: None };
                }
                Err(e) => {
                    let why = format!("the pair's lease could not be read, nothing was done: {e}");
                    pair.error = Some(why);
                    org::write_report(at.hub, b, &request.report_key(), &mut pair).await;
                    return Linked { pair, ended: None };
                }
            }
        }
        None => None,
    };
    let (policy, opts) = for_link(policy, request.chain.as_ref(), opts);
    let mut pair = org::sweep_pair(at.hub, &policy, request, siblings, &opts).await;
    let end = link_end(pair.report.as_ref());
    let next = chain::next(request.chain.as_ref(), opts.now, &request.report_key(), end);
    pair.chain = Some(ChainLine {
        link,
        continues: request.chain.as_ref().map(|c| c.continues.clone()),
        ..ChainLine::default()
    });
    let ended = settle(at, request, lease, next, &mut pair).await;
    if let Some(b) = at.bucket {
        org::write_report(at.hub, b, &request.report_key(), &mut pair).await;
    }
    Linked { pair, ended }
}

/// The policy and options of a link: a continuation plans at its chain's first instant,
/// holds what its chain advanced, and may deregister only what the chain has left of
/// `max_deregistrations`.
fn for_link(policy: &Policy, chain: Option<&Chain>, opts: &SweepOptions) -> (Policy, SweepOptions) {
    let mut policy = policy.clone();
    let mut opts = opts.clone();
    policy.limits.max_deregistrations =
        chain::remaining_limit(policy.limits.max_deregistrations, chain);
    if let Some(at) = chain.and_then(Chain::planned_at) {
        opts.now = at;
        opts.exec.chain_since = Some(at);
    }
    (policy, opts)
}

/// How a link ended, from its report: stopped by the deadline or not, the condemned
/// images it deferred, and what it did.
pub fn link_end(report: Option<&SweepReport>) -> LinkEnd {
    let Some(r) = report else {
        return LinkEnd {
            stopped_by_deadline: false,
            left: 0,
            totals: ChainTotals {
                failures: 1,
                ..ChainTotals::default()
            },
        };
    };
    let count = |o: Outcome| r.totals.outcomes.get(&o).copied().unwrap_or(0) as u64;
    LinkEnd {
        stopped_by_deadline: r.stopped == Some(StopReason::Deadline),
        left: count(Outcome::Deferred),
        totals: ChainTotals {
            deregistered: count(Outcome::Deregistered),
            retired: count(Outcome::Deprecated)
                + count(Outcome::Disabled)
                + count(Outcome::Enabled),
            failures: r.totals.failures as u64,
        },
    }
}

/// Starts the successor or ends the chain; the chain's totals when it ended.
async fn settle(
    at: Place<'_>,
    request: &SweepRequest,
    lease: Option<String>,
    next: Next,
    pair: &mut PairReport,
) -> Option<ChainTotals> {
    let line = pair.chain.as_mut().expect("set by the link");
    let (totals, why) = match next {
        Next::Continue(chain) => {
            let (totals, this) = (chain.totals, chain.link - 1);
            match continue_chain(at, request, lease.as_deref(), chain).await {
                Ok(key) => {
                    line.continued_by = Some(key);
                    return None;
                }
                Err(e) => (
                    totals,
                    Some(format!(
                        "the chain could not go on after link {this}: {e}; the images left \
                         wait for the next run"
                    )),
                ),
            }
        }
        Next::Done(totals) => (totals, None),
        Next::LimitReached { totals, left } => (
            totals,
            Some(format!(
                "the chain reached its limit of {} links with {left} condemned images left; \
                 the next run goes on with them",
                chain::MAX_LINKS
            )),
        ),
    };
    line.ended = why;
    line.totals = Some(totals);
    if let (Some(b), Some(_)) = (at.bucket, lease) {
        let key = lease_key(&request.account, &request.region);
        if let Err(e) = org::hub_s3(at.hub).delete_key(b, &key).await {
            tracing::warn!(error = %e, %key, "the pair's lease could not be released; it lapses");
        }
    }
    Some(totals)
}

/// Renews the lease for the next link, then sends the continuation: the same pair and
/// run, the link's mandate narrowed for a continuation, the chain. Its report's key.
async fn continue_chain(
    at: Place<'_>,
    request: &SweepRequest,
    lease: Option<&str>,
    chain: Chain,
) -> Result<String, String> {
    let (Some(bucket), Some(queue), Some(etag)) = (at.bucket, at.queue, lease) else {
        return Err("no report bucket (for the pair's lease) or no sweep queue".into());
    };
    let Some(mandate) = &request.mandate else {
        return Err("the request carries no mandate".into());
    };
    let successor = SweepRequest {
        mandate: Some(chain::continuation_mandate(mandate)),
        chain: Some(chain),
        ..request.clone()
    };
    let link = successor.chain.as_ref().map_or(0, |c| c.link);
    let s3 = org::hub_s3(at.hub);
    let key = lease_key(&request.account, &request.region);
    let body = lease_body(&request.run, link, chrono::Utc::now());
    match s3
        .put_if(bucket, &key, body, &Precondition::Unchanged(etag.into()))
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return Err("another run took the pair's lease".into()),
        Err(e) => return Err(format!("the pair's lease could not be renewed: {e}")),
    }
    at.hub
        .queue(queue, 0)
        .send_all(&[successor.to_json()])
        .await
        .map_err(|e| format!("the continuation could not be queued: {e}"))?;
    tracing::info!(account = %request.account, region = %request.region, link, "continuation queued");
    Ok(successor.report_key())
}

fn lease_body(run: &str, link: u32, now: Timestamp) -> Vec<u8> {
    let until = now + chrono::Duration::from_std(LEASE_FOR).expect("a short duration");
    let lease = Lease {
        run: run.to_string(),
        link,
        until: crate::time::format_instant(until),
    };
    serde_json::to_vec(&lease).expect("leases serialize")
}

/// Takes (or renews) the pair's lease for this request: `Ok(Ok(etag))` when taken,
/// `Ok(Err(line))` when another run holds the pair, `Err` when S3 cannot be read. A
/// lease that cannot be parsed holds the pair (fail closed).
async fn take_lease(
    s3: &S3,
    bucket: &str,
    request: &SweepRequest,
    now: Timestamp,
) -> Result<Result<String, String>, AwsError> {
    let key = lease_key(&request.account, &request.region);
    let link = request.chain.as_ref().map_or(0, |c| c.link);
    let held = s3.get_with_etag(bucket, &key).await?;
    let condition = match &held {
        None => Precondition::Absent,
        Some((body, etag)) => {
            let Ok(lease) = serde_json::from_slice::<Lease>(body) else {
                return Ok(Err(format!(
                    "skipped: the pair's lease s3://{bucket}/{key} cannot be read; nothing was done"
                )));
            };
            if let Claim::Skip(line) = chain::claim(Some(&lease), &request.run, link, now) {
                return Ok(Err(line));
            }
            Precondition::Unchanged(etag.clone())
        }
    };
    let body = lease_body(&request.run, link, now);
    Ok(match s3.put_if(bucket, &key, body, &condition).await? {
        Some(etag) => Ok(etag),
        None => Err(
            "skipped: another run took the pair's lease at the same moment; nothing was done"
                .into(),
        ),
    })
}

/// The one summary of a chain: the last link's report with the earlier links' counts
/// added (images deregistered and failures), so the summary people get is the chain's.
pub fn with_chain_totals(report: &SweepReport, chain: Option<&Chain>) -> SweepReport {
    let mut r = report.clone();
    if let Some(c) = chain {
        *r.totals.outcomes.entry(Outcome::Deregistered).or_default() +=
            c.totals.deregistered as usize;
        r.totals.failures += c.totals.failures as usize;
    }
    r
}
