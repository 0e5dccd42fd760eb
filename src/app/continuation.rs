//! One link of a pair's chain ([`crate::chain`]): take the pair's lease, sweep at the
//! chain's instant within what the chain has left, write the link's report, then start the
//! successor (a sweep-queue message carrying the same mandate) or end the chain (release
//! the lease; the one summary goes out with the chain's totals).

use std::time::Duration;

use crate::adapters::aws::s3::{Precondition, S3};
use crate::adapters::aws::Clients;
use crate::app::cleanup::RetryPolicy;
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
    /// The in-process retries of the pair's cleanup jobs: while the link holds its pair's
    /// lease it deletes the pair's storage itself, and queues only what is left.
    pub retry: &'a RetryPolicy,
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
    let (policy, mut opts) = for_link(policy, request.chain.as_ref(), opts);
    if lease.is_some() {
        // The pair is this link's alone: its storage is deleted here, at its own pacers,
        // right after its deregistrations; the cleanup queue takes only what is left.
        opts.queue = opts.queue.in_process_first(at.retry);
    }
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
        worker: false,
    };
    serde_json::to_vec(&lease).expect("leases serialize")
}

/// How long a pair sweeper waits at most for a cleanup worker's batch on its pair to end
/// (the worker function's timeout is 120 s): past this the pair is skipped, with a line.
pub const WORKER_WAIT_MAX: Duration = Duration::from_secs(180);

/// How often a waiting pair sweeper reads the pair's lease again.
const WORKER_WAIT_POLL: Duration = Duration::from_secs(1);

/// Takes (or renews) the pair's lease for this request: `Ok(Ok(etag))` when taken,
/// `Ok(Err(line))` when another run holds the pair, `Err` when S3 cannot be read. A
/// lease that cannot be parsed holds the pair (fail closed). A cleanup worker's lease is
/// waited out (its batch is short), for at most [`WORKER_WAIT_MAX`].
async fn take_lease(
    s3: &S3,
    bucket: &str,
    request: &SweepRequest,
    now: Timestamp,
) -> Result<Result<String, String>, AwsError> {
    let key = lease_key(&request.account, &request.region);
    let link = request.chain.as_ref().map_or(0, |c| c.link);
    let waited_from = tokio::time::Instant::now();
    let condition = loop {
        let held = s3.get_with_etag(bucket, &key).await?;
        let Some((body, etag)) = &held else {
            break Precondition::Absent;
        };
        let Ok(lease) = serde_json::from_slice::<Lease>(body) else {
            return Ok(Err(format!(
                "skipped: the pair's lease s3://{bucket}/{key} cannot be read; nothing was done"
            )));
        };
        match chain::claim(
            Some(&lease),
            &request.run,
            link,
            chrono::Utc::now().max(now),
        ) {
            Claim::Take => break Precondition::Unchanged(etag.clone()),
            Claim::Skip(line) => return Ok(Err(line)),
            // A cleanup worker's batch on the pair: it ends within its function's timeout.
            Claim::Wait(_) if waited_from.elapsed() < WORKER_WAIT_MAX => {
                tokio::time::sleep(WORKER_WAIT_POLL).await;
            }
            Claim::Wait(until) => {
                return Ok(Err(format!(
                    "skipped: cleanup worker {} still deletes this pair's storage after {} s \
                     (its lease holds until {}); nothing was done",
                    lease.run,
                    WORKER_WAIT_MAX.as_secs(),
                    crate::time::format_instant(until)
                )))
            }
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

/// The cleanup worker's hold on pairs, in the report bucket's leases (the chains'):
/// [`crate::chain::worker_claim`] decides, S3's conditional writes make one holder win,
/// and each lease lapses at the worker's invocation's end (`until`), so a worker killed
/// mid-batch holds its pair no longer than it could have lived.
pub struct WorkerLeases<'a> {
    s3: S3,
    bucket: &'a str,
    /// The deployment's own account: where jobs naming no account act.
    own_account: &'a str,
    /// This batch's id (the lease's `run`).
    id: String,
    until: Timestamp,
}

impl<'a> WorkerLeases<'a> {
    /// Leases for one batch, identified by `id`, lapsing at `until`.
    pub fn new(
        hub: &Clients,
        bucket: &'a str,
        own_account: &'a str,
        id: &str,
        until: Timestamp,
    ) -> Self {
        Self {
            s3: org::hub_s3(hub),
            bucket,
            own_account,
            id: id.to_string(),
            until,
        }
    }

    fn key(&self, place: &crate::app::worker::Place) -> String {
        lease_key(place.0.as_deref().unwrap_or(self.own_account), &place.1)
    }
}

impl crate::app::worker::PairLocks for WorkerLeases<'_> {
    async fn take(&self, place: &crate::app::worker::Place) -> Result<(), String> {
        let key = self.key(place);
        let unreadable = |e: &dyn std::fmt::Display| {
            format!(
                "the pair's lease s3://{}/{key} cannot be read: {e}",
                self.bucket
            )
        };
        let held = self
            .s3
            .get_with_etag(self.bucket, &key)
            .await
            .map_err(|e| unreadable(&e))?;
        let condition = match &held {
            None => Precondition::Absent,
            Some((body, etag)) => {
                let lease = serde_json::from_slice::<Lease>(body).map_err(|e| unreadable(&e))?;
                match chain::worker_claim(Some(&lease), chrono::Utc::now()) {
                    Claim::Take => Precondition::Unchanged(etag.clone()),
                    Claim::Skip(line) => return Err(line),
                    Claim::Wait(_) => return Err("left for later: the pair is held".into()),
                }
            }
        };
        let lease = Lease {
            run: self.id.clone(),
            link: 0,
            until: crate::time::format_instant(self.until),
            worker: true,
        };
        let body = serde_json::to_vec(&lease).expect("leases serialize");
        match self.s3.put_if(self.bucket, &key, body, &condition).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(
                "left for later: another holder took the pair's lease at the same moment".into(),
            ),
            Err(e) => Err(unreadable(&e)),
        }
    }

    async fn release(&self, place: &crate::app::worker::Place) {
        let key = self.key(place);
        // Only its own: a lease that lapsed and was taken since is the new holder's.
        let mine = match self.s3.get_with_etag(self.bucket, &key).await {
            Ok(Some((body, _))) => {
                serde_json::from_slice::<Lease>(&body).is_ok_and(|l| l.worker && l.run == self.id)
            }
            _ => false,
        };
        if mine {
            if let Err(e) = self.s3.delete_key(self.bucket, &key).await {
                tracing::warn!(error = %e, %key, "the worker's lease could not be released; it lapses");
            }
        }
    }
}

/// A report of `report`'s one region `region` (its totals made again): what a
/// single-account sweep's region ended with, as one link.
pub fn region_only(report: &SweepReport, region: &str) -> SweepReport {
    let mut r = report.clone();
    r.regions.retain(|x| x.region == region);
    r.total();
    r
}

/// Starts the chain of a first link that ran outside the pair sweeper (a single-account
/// sweep, `end` its region's end, `report` where its report is): takes the pair's lease as
/// a first link does, then queues the continuation exactly as a pair's link would. The
/// continuation's report key; `Err` (the lease released) when the chain cannot go on.
pub async fn continue_first_link(
    at: Place<'_>,
    request: &SweepRequest,
    report: &str,
    end: LinkEnd,
    now: Timestamp,
) -> Result<String, String> {
    let Some(bucket) = at.bucket else {
        return Err("no report bucket (for the pair's lease)".into());
    };
    let etag = match take_lease(&org::hub_s3(at.hub), bucket, request, now).await {
        Ok(Ok(etag)) => etag,
        Ok(Err(skip)) => return Err(skip),
        Err(e) => return Err(format!("the pair's lease could not be read: {e}")),
    };
    let result = match chain::next(None, now, report, end) {
        Next::Continue(chain) => continue_chain(at, request, Some(&etag), chain).await,
        _ => Err("nothing is left to continue".into()),
    };
    if result.is_err() {
        let key = lease_key(&request.account, &request.region);
        if let Err(e) = org::hub_s3(at.hub).delete_key(bucket, &key).await {
            tracing::warn!(error = %e, %key, "the pair's lease could not be released; it lapses");
        }
    }
    result
}
