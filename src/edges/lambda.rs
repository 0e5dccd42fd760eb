//! The Lambda handler: one object built at init (SDK configuration, clients, policy
//! source), answering every trigger with the run's report. `ami-sweeper invoke` runs
//! exactly this code path on an event file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::adapters::aws::Clients;
use crate::app::cleanup::Attempt;
use crate::app::continuation;
use crate::app::org::{self, SweepRequest};
use crate::app::ratelimit::{PaceConfig, Pacers};
use crate::app::run::run_sweep;
use crate::app::stop::Stop;
use crate::app::sweep::ExecConfig;
use crate::app::worker::{handle_batch_locked, Handled, Pacing, Unlocked};
use crate::edges::config::{Config, PolicySource};
use crate::error::AwsError;
use crate::events::{inline_policy, parse_event, recipe_scope, EventError, Trigger};
use crate::mandate::{policy_digest, AccountRule, Ask, Mandate, Scope};
use crate::policy::{Policy, PolicyError};
use crate::verify::WorkerRules;

/// (account, region) pairs swept at once when one invocation runs a whole organization.
pub const ORG_CONCURRENCY: usize = 4;

/// When to stop starting deregistrations: [`DEADLINE_MARGIN`] before the deadline, or a
/// tenth of the time left when that is less (a short timeout still leaves room to work).
fn stop_before(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline
        .checked_sub(DEADLINE_MARGIN.min(left / 10))
        .unwrap_or(deadline)
}

/// Stop starting deregistrations this long before the invocation's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// Why an invocation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The payload is not a trigger we know.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The policy (configured or inline) is invalid.
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    /// No policy is configured and the event carries none.
    #[error("no policy: set AMI_SWEEPER_POLICY or AMI_SWEEPER_POLICY_PARAMETER")]
    NoPolicy,
    /// The policy parameter could not be read.
    #[error("reading the policy parameter failed: {0}")]
    Aws(#[from] AwsError),
    /// No region could be determined.
    #[error("{0}")]
    Region(String),
    /// An approved plan that may not act (another policy, account or region, too old,
    /// dated in the future, outside the report bucket, unreadable): nothing was done.
    #[error("{0}")]
    Refused(String),
    /// The sweep ran but a region failed, an image or a job failed, or cleanup could not
    /// be queued: the invocation must count as failed so that Lambda's `Errors` alarm
    /// fires. The report is carried along (`invoke` prints it; Lambda logs it).
    #[error("the sweep reported {failures} failures; see the report")]
    RunFailed {
        /// Failed regions, images and jobs.
        failures: usize,
        /// The whole report.
        report: Box<Value>,
    },
}

impl HandlerError {
    /// A stable name for Lambda's `errorType`, so failed invocations can be told apart
    /// (and alarmed on) without parsing messages.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Event(_) => "ami-sweeper.UnrecognisedEvent",
            Self::Policy(_) => "ami-sweeper.InvalidPolicy",
            Self::NoPolicy => "ami-sweeper.NoPolicy",
            Self::Aws(_) => "ami-sweeper.AwsError",
            Self::Region(_) => "ami-sweeper.NoRegion",
            Self::Refused(_) => "ami-sweeper.PlanRefused",
            Self::RunFailed { .. } => "ami-sweeper.SweepFailed",
        }
    }

    /// Whether the caller's input is at fault (as opposed to AWS or the run).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Aws(_) | Self::RunFailed { .. })
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        Self {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

/// Everything built once per execution environment.
pub struct Handler {
    clients: Clients,
    config: Config,
    /// The accounts under the policy's OUs, by policy digest, with when they were listed:
    /// reused for [`MEMBERS_TTL`] within a warm container.
    members: tokio::sync::Mutex<Option<MembersCache>>,
    /// The cleanup worker's pacers, one per (account, Region, EC2 bucket), kept from
    /// batch to batch within a warm container.
    pacers: Pacers,
}

/// OU members as listed: when, under which policy digest, and the accounts.
type MembersCache = (Instant, String, Option<BTreeSet<String>>);

/// How long a warm container reuses the OU members it listed.
const MEMBERS_TTL: Duration = Duration::from_secs(300);

/// What an event asks for, within the deployment's ceiling: the policy to plan with and
/// the mandate that bounds the run.
struct Request {
    policy: Policy,
    mandate: Mandate,
}

impl Handler {
    /// Builds the handler from the SDK configuration and the deployment's
    /// configuration ([`Config::from_env`] in Lambda and under `invoke`).
    pub fn new(base: aws_config::SdkConfig, config: Config) -> Self {
        Self {
            clients: Clients::new(base),
            config,
            members: tokio::sync::Mutex::new(None),
            pacers: Pacers::default(),
        }
    }

    /// The deployment's ceiling under its configured policy.
    fn ceiling(&self, configured: &Policy) -> Mandate {
        let own = self.clients.base().region().map(|r| r.to_string());
        Mandate::ceiling(configured, self.config.force_dry_run, own.as_deref())
    }

    /// The accounts under the ceiling's OUs (`None` for other account rules), listed once
    /// per [`MEMBERS_TTL`] in a warm container.
    async fn members(&self, ceiling: &Mandate) -> Result<Option<BTreeSet<String>>, AwsError> {
        if !ceiling.needs_members() {
            return Ok(None);
        }
        let mut cached = self.members.lock().await;
        if let Some((at, digest, m)) = cached.as_ref() {
            if at.elapsed() < MEMBERS_TTL && *digest == ceiling.policy_digest {
                return Ok(m.clone());
            }
        }
        let m = org::members(&self.clients, ceiling).await?;
        *cached = Some((Instant::now(), ceiling.policy_digest.clone(), m.clone()));
        Ok(m)
    }

    /// The regions the deployment may act in: the configured policy's, else the
    /// function's own region.
    fn allowed_regions(&self, configured: Option<&Policy>) -> Vec<String> {
        match configured.and_then(|p| p.regions.clone()) {
            Some(r) => r,
            None => self
                .clients
                .base()
                .region()
                .map(|r| vec![r.to_string()])
                .unwrap_or_default(),
        }
    }

    /// Maps a trigger to a request: the deployment's ceiling narrowed by what the event
    /// asks for (dry run, a region, an account, a recipe or a lineage), never loosened.
    /// `Ok(Err(why))` means the event is ignored, with the reason.
    async fn request(&self, trigger: Trigger) -> Result<Result<Request, String>, HandlerError> {
        let (ask, why_region) = match trigger {
            Trigger::Ignored(why) => return Ok(Err(why)),
            Trigger::Sqs(_) => unreachable!("SQS batches are answered before"),
            Trigger::Approved { location } => return self.approved(&location).await.map(Ok),
            Trigger::Manual {
                policy: Some(v),
                dry_run,
            } => return self.event_policy(&v, dry_run).await.map(Ok),
            Trigger::Schedule => (Ask::default(), None),
            Trigger::Manual {
                policy: None,
                dry_run,
            } => (
                Ask {
                    dry_run,
                    ..Ask::default()
                },
                None,
            ),
            Trigger::ImageBuilder {
                recipe_prefix,
                region,
                account,
            } => {
                if let Some(own) = self.config.account_id.as_deref().filter(|a| *a != account) {
                    let configured = self.configured_policy().await?;
                    if configured.accounts.is_none() {
                        return Ok(Err(format!(
                            "Image Builder image of account {account}; this deployment sweeps account {own}"
                        )));
                    }
                }
                let ask = Ask {
                    regions: Some([region.clone()].into()),
                    accounts: Some([account].into()),
                    scope: recipe_scope(&recipe_prefix),
                    ..Ask::default()
                };
                (
                    ask,
                    Some(format!("Image Builder event for region {region}")),
                )
            }
            Trigger::AmiAvailable {
                image_id,
                region,
                account,
            } => {
                let why = region
                    .as_ref()
                    .map(|r| format!("AMI state change for region {r}"));
                let ask = Ask {
                    regions: region.map(|r| [r].into()),
                    accounts: account.map(|a| [a].into()),
                    scope: Scope {
                        lineages: [image_id].into(),
                        ..Scope::default()
                    },
                    ..Ask::default()
                };
                (ask, why)
            }
        };
        let policy = self.configured_policy().await?;
        let mut ask = ask;
        ask.dry_run |= self.config.approval_only; // Approval only: the report is the plan.
        if matches!(self.ceiling(&policy).accounts, AccountRule::Own) {
            // The event's account is the deployment's own (checked above where it matters).
            ask.accounts = None;
        }
        let mandate = self.ceiling(&policy).narrow(&ask);
        if let (Some(why), true) = (why_region, mandate.regions.is_empty()) {
            return Ok(Err(format!("{why}, outside the policy's regions")));
        }
        Ok(Ok(Request { policy, mandate }))
    }

    /// A manual event's own policy: refused unless the deployment allows event policies,
    /// never beyond the deployment's regions, and never in organization mode (it is never
    /// dispatched to member accounts): it sweeps the deployment's own account in process.
    async fn event_policy(&self, v: &Value, dry_run: bool) -> Result<Request, HandlerError> {
        if !self.config.allow_event_policy {
            return Err(HandlerError::Event(EventError(
                "an event-supplied policy is refused: the deployment's policy is the \
                 ceiling (set the stack parameter AllowEventPolicy to true to allow one)"
                    .into(),
            )));
        }
        let policy = inline_policy(v)?;
        // A configured policy that cannot be read stops the run: its ceiling is unknown.
        let configured = match &self.config.policy_source {
            PolicySource::Missing => None,
            _ => Some(self.configured_policy().await?),
        };
        if policy.accounts.is_some() || configured.as_ref().is_some_and(|c| c.accounts.is_some()) {
            return Err(HandlerError::Event(EventError(
                "an event-supplied policy is refused in organization mode: it is never \
                 dispatched to member accounts, and the deployment's own account is not \
                 among the policy's"
                    .into(),
            )));
        }
        let allowed = self.allowed_regions(configured.as_ref());
        let asked = policy.regions.clone().unwrap_or_else(|| allowed.clone());
        if let Some(r) = asked.iter().find(|r| !within(&allowed, r)) {
            return Err(HandlerError::Event(EventError(format!(
                "the event's policy names region {r}, outside the deployment's regions [{}]",
                allowed.join(", ")
            ))));
        }
        let configured_dry_run = configured.as_ref().is_some_and(|c| c.dry_run);
        let mut mandate = Mandate::ceiling(
            &policy,
            self.config.force_dry_run || dry_run || configured_dry_run || self.config.approval_only,
            None,
        );
        mandate.regions = asked.into_iter().collect();
        // Its jobs are the deployment's: the worker checks them against the configured policy.
        if let Some(c) = &configured {
            mandate.policy_digest = policy_digest(c);
        }
        Ok(Request { policy, mandate })
    }

    /// An approved plan's request: the plan read from the stack's report bucket (one
    /// report, or every report under a run's prefix), checked against the deployment's
    /// ceiling ([`crate::approval::approve`]), and the ceiling narrowed by it.
    async fn approved(&self, location: &str) -> Result<Request, HandlerError> {
        let policy = self.configured_policy().await?;
        let ceiling = self.ceiling(&policy);
        let stamps = self.approved_stamps(location).await?;
        let members = self.members(&ceiling).await?;
        let run = crate::approval::Run {
            mandate: &ceiling,
            account: self.config.account_id.as_deref(),
            members: members.as_ref(),
            stated_account: None,
            now: chrono::Utc::now(),
            max_age_days: self.config.approval_max_age_days,
        };
        let ask = crate::approval::approve(&stamps, &run).map_err(HandlerError::Refused)?;
        tracing::info!(%location, images = ask.approved.as_ref().map_or(0, |a| a.len()), "approved plan");
        Ok(Request {
            mandate: ceiling.narrow(&ask),
            policy,
        })
    }

    /// The stamps of the approved plan at `location`, which must be in the stack's report
    /// bucket: one object, or every object under a prefix ending in `/`.
    async fn approved_stamps(
        &self,
        location: &str,
    ) -> Result<Vec<crate::approval::Stamp>, HandlerError> {
        let refused = |why: String| {
            HandlerError::Refused(format!(
                "the approved plan is refused: {why}; nothing was done"
            ))
        };
        let (bucket, key) = crate::events::s3_location(location).map_err(|e| refused(e.0))?;
        let ours = self.config.report_bucket.as_deref();
        if ours != Some(bucket.as_str()) {
            return Err(refused(format!(
                "approved plans are read from the stack's report bucket ({}) only, not {bucket}",
                ours.unwrap_or("none is configured")
            )));
        }
        let objects = org::hub_objects(&self.clients);
        let prefix = key.ends_with('/');
        let keys: Vec<String> = if prefix {
            let listed = objects.list(&bucket, &key).await;
            let listed = listed.map_err(|e| refused(e.to_string()))?;
            listed.into_iter().map(|(k, _)| k).collect()
        } else {
            vec![key]
        };
        let mut stamps = Vec::new();
        for k in keys {
            let at = format!("s3://{bucket}/{k}");
            let body = objects
                .get(&bucket, &k)
                .await
                .map_err(|e| refused(format!("{at} cannot be read: {e}")))?;
            let doc: Value = serde_json::from_slice(&body)
                .map_err(|e| refused(format!("{at} is not JSON: {e}")))?;
            // Under a prefix, a report without a stamp (a pair that did not run)
            // approves nothing; a single object must be a plan.
            let found = if prefix {
                crate::approval::stamps_found(&doc)
            } else {
                crate::approval::stamps_in(&doc)
            }
            .map_err(|e| refused(format!("{at}: {e}")))?;
            stamps.extend(found);
        }
        if stamps.is_empty() {
            return Err(refused(format!(
                "no plan (no approval stamp) is under {location}"
            )));
        }
        Ok(stamps)
    }

    async fn configured_policy(&self) -> Result<Policy, HandlerError> {
        match &self.config.policy_source {
            PolicySource::Inline(text) => Ok(Policy::from_json(text)?),
            PolicySource::Parameter(name) => {
                let region = self.clients.base().region().ok_or_else(|| {
                    HandlerError::Region("no region to read the policy parameter in".into())
                })?;
                let text = self
                    .clients
                    .region(region.as_ref())
                    .ssm
                    .parameter_value(name)
                    .await?;
                Ok(Policy::from_json(&text)?)
            }
            PolicySource::Missing => Err(HandlerError::NoPolicy),
        }
    }

    /// Answers one invocation, one line per kind of trigger. `deadline` is the
    /// invocation's end, if known.
    pub async fn handle(
        &self,
        event: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, HandlerError> {
        let trigger = parse_event(&event)?;
        tracing::info!(trigger = trigger_name(&trigger), "invocation");
        let stop = Stop::with_deadline(deadline.map(stop_before));
        match trigger {
            Trigger::Sqs(records) if self.config.worker_only => Ok(self
                .cleanup_batch(records, &stop, wall_clock(deadline))
                .await),
            other if self.config.worker_only => Err(worker_refuses(&other)),
            Trigger::Sqs(records) => Ok(self.queue_batch(records, stop, deadline).await),
            Trigger::Ignored(why) => Ok(ignored(why)),
            sweep => self.sweep(sweep, stop).await,
        }
    }

    /// An SQS batch for the sweep functions: sweep requests (and continuations) go to the
    /// pair sweeper; cleanup jobs to the worker. One event source per queue: a batch never
    /// mixes them. If one does, the pairs are redelivered alone.
    async fn queue_batch(
        &self,
        records: Vec<(String, String)>,
        stop: Stop,
        deadline: Option<Instant>,
    ) -> Value {
        let (pairs, jobs): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|(_, body)| SweepRequest::from_json(body).is_some());
        if jobs.is_empty() {
            return self.sweep_pairs(pairs, stop).await;
        }
        let mut v = self.cleanup_batch(jobs, &stop, wall_clock(deadline)).await;
        let failures = v["batchItemFailures"]
            .as_array_mut()
            .expect("a batch response");
        failures.extend(
            pairs
                .into_iter()
                .map(|(id, _)| json!({"itemIdentifier": id})),
        );
        v
    }

    /// A schedule, a manual invocation or an image event: the sweep it asks for, within the
    /// deployment's ceiling (an organization's is dispatched), or why it is ignored.
    async fn sweep(&self, trigger: Trigger, stop: Stop) -> Result<Value, HandlerError> {
        let Request { policy, mandate } = match self.request(trigger).await? {
            Ok(r) => r,
            Err(why) => return Ok(ignored(why)),
        };
        let regions: Vec<String> = mandate.regions.iter().cloned().collect();
        if regions.is_empty() {
            return Err(HandlerError::Region(crate::app::run::NoRegion.to_string()));
        }
        let dry_run = mandate.dry_run;
        let exec = ExecConfig {
            stop,
            mandate: Some(Arc::new(mandate)),
            ..Default::default()
        };
        let opts = self
            .config
            .sweep_options(regions.clone(), dry_run, exec, chrono::Utc::now());
        if policy.accounts.is_some() {
            return self.organization(&policy, &regions, &opts).await;
        }
        let mut report = run_sweep(&self.clients, &policy, &regions, &opts).await;
        if let Some(a) = &self.config.account_id {
            report.stamp_account(a);
        }
        let now_ms = epoch_ms();
        // Embedded Metric Format: in Lambda a raw JSON line on stdout becomes CloudWatch
        // metrics; under `invoke` stdout is the response, so the line goes to stderr.
        let lines =
            std::iter::once(report.emf_line(now_ms)).chain(report.emf_rule_lines(now_ms, &[]));
        self.emit(lines);
        // Boxed: their futures are large, and the runtime's thread stack is not.
        let continued = Box::pin(self.continue_own(&opts, &report)).await;
        Box::pin(self.notify_own(&policy, &report, &continued)).await;
        let failures = report.totals.failures;
        let value = serde_json::to_value(&report).expect("report serializes");
        if failures > 0 {
            return Err(HandlerError::RunFailed {
                failures,
                report: Box::new(value),
            });
        }
        Ok(value)
    }

    /// A single-account sweep stopped by its deadline with condemned images left: each
    /// such region's chain goes on as a continuation of its (own account, region) pair
    /// through the sweep queue, which the pair sweeper runs with the chain's mandate, lease
    /// and limits exactly as an organization pair's ([`continuation::continue_first_link`]).
    /// The regions continued.
    async fn continue_own(
        &self,
        opts: &crate::app::run::SweepOptions,
        report: &crate::app::report::SweepReport,
    ) -> BTreeSet<String> {
        let mut continued = BTreeSet::new();
        let (Some(own), Some(mandate)) = (&self.config.account_id, &opts.exec.mandate) else {
            return continued;
        };
        let at = continuation::Place {
            hub: &self.clients,
            bucket: self.config.report_bucket.as_deref(),
            queue: self.config.sweep_queue_url.as_deref(),
            retry: &self.config.local_retry,
        };
        for region in report.regions.iter().map(|r| r.region.clone()) {
            let end = continuation::link_end(Some(&continuation::region_only(report, &region)));
            if !end.stopped_by_deadline || end.left == 0 {
                continue;
            }
            let ask = Ask {
                regions: Some([region.clone()].into()),
                ..Ask::default()
            };
            let request = SweepRequest {
                account: own.clone(),
                region: region.clone(),
                run: crate::time::format_instant(opts.now),
                mandate: Some(mandate.narrow(&ask)),
                chain: None,
            };
            let first = own_report_key(&report.now, own);
            match continuation::continue_first_link(at, &request, &first, end, opts.now).await {
                Ok(key) => {
                    tracing::info!(%region, next = %key, "the sweep goes on as a continuation");
                    continued.insert(region);
                }
                Err(e) => {
                    tracing::warn!(%region, error = %e, "the images left wait for the next run")
                }
            }
        }
        continued
    }

    /// The single-account summary: as before when nothing continues; else the report is
    /// written, and the summary covers only the regions whose run ended here (each
    /// continued region's is sent once, when its chain ends, with the chain's totals).
    async fn notify_own(
        &self,
        policy: &Policy,
        report: &crate::app::report::SweepReport,
        continued: &BTreeSet<String>,
    ) {
        if continued.is_empty() {
            return self.notify(policy, None, report).await;
        }
        let d = crate::app::notify::Delivery {
            topic_arn: None,
            report_bucket: self.config.report_bucket.as_deref(),
            account: self.config.account_id.as_deref(),
            lookahead_days: policy.notify.lookahead_days,
        };
        let (location, errors) =
            crate::app::notify::after_sweep_at(&self.clients, &d, report).await;
        errors
            .iter()
            .for_each(|e| tracing::error!(error = %e, "notification"));
        let mut ended = report.clone();
        ended.regions.retain(|r| !continued.contains(&r.region));
        if !ended.regions.is_empty() {
            ended.total();
            let account = self.config.account_id.as_deref().unwrap_or("self");
            self.notify(policy, Some((account, location)), &ended).await;
        }
    }

    /// Writes metric lines where CloudWatch reads them: stdout in Lambda, stderr under
    /// `invoke` (whose stdout is the response).
    fn emit(&self, lines: impl Iterator<Item = String>) {
        for line in lines {
            if self.config.in_lambda {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    /// A policy naming `accounts`: with a sweep queue, one message per (account, region)
    /// pair the run's mandate admits, each carrying the mandate narrowed to its pair (the
    /// pairs' sweeps run as their own invocations); without, every pair here.
    async fn organization(
        &self,
        policy: &Policy,
        regions: &[String],
        opts: &crate::app::run::SweepOptions,
    ) -> Result<Value, HandlerError> {
        let accounts = org::resolve_accounts(&self.clients, policy).await?;
        let run = crate::time::format_instant(opts.now);
        let mandate = crate::app::run::mandate_of(policy, regions, opts);
        let members: Option<BTreeSet<String>> = mandate
            .needs_members()
            .then(|| accounts.iter().cloned().collect());
        let accounts: Vec<String> = accounts
            .into_iter()
            .filter(|a| mandate.admits_account(Some(a), members.as_ref()).is_ok())
            .collect();
        if let Some(url) = &self.config.sweep_queue_url {
            let bodies: Vec<String> =
                org::pair_requests(&mandate, &accounts, members.as_ref(), &run)
                    .iter()
                    .map(SweepRequest::to_json)
                    .collect();
            let sent = self.clients.queue(url, 0).send_all(&bodies).await?;
            tracing::info!(pairs = sent, accounts = accounts.len(), %run, dry_run = mandate.dry_run, "dispatched");
            return Ok(json!({
                "dispatched": sent, "accounts": accounts, "run": run, "dry_run": mandate.dry_run
            }));
        }
        let report = org::run_org_sweep(
            &self.clients,
            policy,
            &accounts,
            regions,
            opts,
            ORG_CONCURRENCY,
            self.config.report_bucket.as_deref(),
        )
        .await;
        self.emit_pairs(&report.pairs);
        for p in &report.pairs {
            let Some(r) = &p.report else { continue };
            let key = self.config.report_bucket.as_ref().map(|b| {
                let request = SweepRequest {
                    account: p.account.clone(),
                    region: p.region.clone(),
                    run: run.clone(),
                    mandate: None,
                    chain: None,
                };
                format!("s3://{b}/{}", request.report_key())
            });
            self.notify(policy, Some((&p.account, key)), r).await;
        }
        let value = serde_json::to_value(&report).expect("report serializes");
        if report.failures > 0 {
            return Err(HandlerError::RunFailed {
                failures: report.failures,
                report: Box::new(value),
            });
        }
        Ok(value)
    }

    /// Sweeps the (account, region) pairs of sweep-queue messages, each with exactly the
    /// mandate it carries, if that is within this deployment's ceiling (the same configured
    /// policy, no more accounts, regions or stages, its account under the policy's OUs). A
    /// pair that ran (even if it failed, say its role is missing) is done: its report says
    /// why. A refused message goes to the sweep queue's dead-letter queue with the reason
    /// (`SWEEP_DLQ_URL`), else it is redelivered until the redrive policy moves it there.
    /// A continuation is checked the same way, with its chain ([`crate::chain`]).
    async fn sweep_pairs(&self, records: Vec<(String, String)>, stop: Stop) -> Value {
        let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
        let checked = match self.configured_policy().await {
            Ok(p) => {
                let ceiling = self.ceiling(&p);
                self.members(&ceiling)
                    .await
                    .map(|m| (p, ceiling, m))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let (policy, ceiling, members) = match checked {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the deployment's ceiling cannot be read: no pair is swept");
                records
                    .into_iter()
                    .for_each(|(id, _)| response.add_failure(id));
                return serde_json::to_value(&response).expect("batch response serializes");
            }
        };
        let siblings = match policy.protection.shared {
            crate::policy::SharedRule::KeepIfUsed => org::resolve_accounts(&self.clients, &policy)
                .await
                .unwrap_or_default(),
            crate::policy::SharedRule::Keep => Vec::new(),
        };
        let checks = PairChecks {
            policy: &policy,
            ceiling: &ceiling,
            members: members.as_ref(),
            siblings: &siblings,
            own: self.config.account_id.as_deref(),
        };
        for (id, body) in records {
            if !self.sweep_request(&checks, &id, &body, &stop).await {
                response.add_failure(id);
            }
        }
        serde_json::to_value(&response).expect("batch response serializes")
    }

    /// One sweep-queue message: checked, then one link of its pair's chain; the chain's
    /// one summary when it ended. `false` when the message must be redelivered.
    async fn sweep_request(&self, c: &PairChecks<'_>, id: &str, body: &str, stop: &Stop) -> bool {
        let verdict = admit_pair(body, c.ceiling, c.members, c.own)
            .and_then(|r| chain_admitted(r.chain.as_ref()).map(|()| r))
            .and_then(|r| self.approval_admitted(&r).map(|()| r));
        let request = match verdict {
            Ok(r) => r,
            Err(why) => {
                tracing::error!(message_id = %id, reason = %why, "sweep request refused");
                let dlq = self.config.sweep_dead_letter_url.as_deref();
                return self.refuse(dlq, id, body, &why).await;
            }
        };
        let dry_run = request.mandate.as_ref().is_some_and(|m| m.dry_run);
        let exec = ExecConfig {
            stop: stop.clone(),
            ..Default::default()
        };
        let opts = self.config.sweep_options(
            vec![request.region.clone()],
            dry_run,
            exec,
            chrono::Utc::now(),
        );
        let bucket = self.config.report_bucket.as_deref();
        let at = continuation::Place {
            hub: &self.clients,
            bucket,
            queue: self.config.sweep_queue_url.as_deref(),
            retry: &self.config.local_retry,
        };
        let linked = continuation::run_link(at, c.policy, &request, c.siblings, &opts).await;
        let pair = &linked.pair;
        self.emit_pairs(std::slice::from_ref(pair));
        if let (Some(r), Some(_)) = (&pair.report, linked.ended) {
            let key = bucket.map(|b| format!("s3://{b}/{}", request.report_key()));
            let summary = continuation::with_chain_totals(r, request.chain.as_ref());
            self.notify(c.policy, Some((&pair.account, key)), &summary)
                .await;
        }
        !pair
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with(org::REPORT_NOT_WRITTEN))
    }

    /// Under approval only, a pair may act only on an approved plan: a request that
    /// would change anything without one is refused.
    fn approval_admitted(&self, request: &SweepRequest) -> Result<(), String> {
        let m = request.mandate.as_ref();
        if self.config.approval_only && m.is_some_and(|m| !m.dry_run && m.approved.is_none()) {
            return Err(
                "the sweep request acts without an approved plan where this deployment acts \
                 only on approval; nothing was done"
                    .into(),
            );
        }
        Ok(())
    }

    /// Sends a refused message to `dlq` with the reason; `true` when it is there (the
    /// message is then done), `false` when it must be redelivered.
    async fn refuse(&self, dlq: Option<&str>, id: &str, body: &str, why: &str) -> bool {
        let Some(url) = dlq else {
            tracing::error!(message_id = %id, reason = %why, "refused; left for the redrive policy");
            return false;
        };
        match self.clients.queue(url, 0).forward(body, why).await {
            Ok(()) => {
                tracing::error!(message_id = %id, reason = %why, "sent to the dead-letter queue");
                true
            }
            Err(e) => {
                tracing::error!(message_id = %id, reason = %why, error = %e, "could not reach the dead-letter queue");
                false
            }
        }
    }

    /// Sends a report's summary (and owners' messages) to the configured topic; a
    /// single-account run (`pair` none) first writes its report to the report bucket. What
    /// fails is logged: the sweep's outcome stands.
    async fn notify(
        &self,
        policy: &Policy,
        pair: Option<(&str, Option<String>)>,
        report: &crate::app::report::SweepReport,
    ) {
        use crate::app::notify;
        let d = notify::Delivery {
            topic_arn: self.config.notify_topic_arn.as_deref(),
            report_bucket: self.config.report_bucket.as_deref(),
            account: pair
                .as_ref()
                .map(|p| p.0)
                .or(self.config.account_id.as_deref()),
            lookahead_days: policy.notify.lookahead_days,
        };
        let errors = match pair {
            None => notify::after_sweep(&self.clients, &d, report).await,
            Some((_, location)) => notify::publish(&self.clients, &d, report, location).await,
        };
        for e in errors {
            tracing::error!(error = %e, "notification");
        }
    }

    /// One summary line per pair in the logs, and its metrics with `Account` and `Region`
    /// dimensions.
    fn emit_pairs(&self, pairs: &[org::PairReport]) {
        let now_ms = epoch_ms();
        for p in pairs {
            tracing::info!(account = %p.account, region = %p.region, failures = p.failures(), error = ?p.error, "pair");
            if let Some(r) = &p.report {
                let dims = [
                    ("Account", p.account.as_str()),
                    ("Region", p.region.as_str()),
                ];
                let lines = std::iter::once(r.emf_line_with(now_ms, &dims))
                    .chain(r.emf_rule_lines(now_ms, &dims));
                self.emit(lines);
            }
        }
    }

    /// Verifies and runs each job once; answers with the ids of the messages to
    /// redeliver. A job that fails verification (or a malformed message) goes to the
    /// dead-letter queue with the reason when `CLEANUP_DLQ_URL` is set, else it is
    /// redelivered until the redrive policy moves it there. Without a readable policy
    /// (its exclude tags) nothing runs: every message is redelivered. With a report
    /// bucket, each pair's jobs run only while this batch holds the pair's lease (until
    /// `until`, the invocation's end): a pair a chain or another worker holds has its
    /// jobs redelivered untouched.
    async fn cleanup_batch(
        &self,
        records: Vec<(String, String)>,
        stop: &Stop,
        until: crate::model::Timestamp,
    ) -> Value {
        let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
        let policy = match self.configured_policy().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "no policy: cannot verify cleanup jobs; nothing runs");
                for (id, _) in records {
                    response.add_failure(id);
                }
                return serde_json::to_value(&response).expect("batch response serializes");
            }
        };
        let mut rules = WorkerRules::new(
            &policy,
            self.clients.base().region().map(|r| r.as_ref()),
            self.config.bundle_buckets.iter().cloned(),
        );
        rules.ceiling.dry_run |= self.config.force_dry_run;
        rules.members = match self.members(&rules.ceiling).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "the policy's OU members cannot be listed: no job runs");
                for (id, _) in records {
                    response.add_failure(id);
                }
                return serde_json::to_value(&response).expect("batch response serializes");
            }
        };
        let bodies: Vec<&str> = records.iter().map(|(_, b)| b.as_str()).collect();
        let role = rules.member_role.clone();
        let pacing = Pacing {
            pacers: &self.pacers,
            pace: PaceConfig::default().with_share(policy.limits.api_share),
            stop,
        };
        let clients = |a: Option<String>, r: String| {
            let role = role.clone();
            async move { self.clients.place(a.as_deref(), &r, &role).await }
        };
        let now = chrono::Utc::now();
        let handled = match self.config.report_bucket.as_deref() {
            Some(bucket) => {
                let own = self.config.account_id.as_deref().unwrap_or("self");
                // An SQS event may carry no records: the batch still has an id.
                let first = records.first().map_or("none", |(id, _)| id.as_str());
                let id = format!("cleanup-{first}-{}", now.timestamp_micros());
                let locks = continuation::WorkerLeases::new(&self.clients, bucket, own, &id, until);
                handle_batch_locked(clients, &locks, &rules, pacing, &bodies, now).await
            }
            None => handle_batch_locked(clients, &Unlocked, &rules, pacing, &bodies, now).await,
        };
        for ((id, body), h) in records.iter().zip(handled) {
            let redeliver = match &h {
                Handled::Ran(job, Attempt::Done(outcome, deleted)) => {
                    tracing::info!(message_id = %id, target = %job.target_label(), ?outcome, deleted = deleted.len(), "job done");
                    false
                }
                Handled::Ran(job, Attempt::Retry(e)) => {
                    tracing::warn!(message_id = %id, target = %job.target_label(), error = %e, "job will be retried");
                    true
                }
                Handled::Ran(job, Attempt::Fail(e)) => {
                    tracing::error!(message_id = %id, target = %job.target_label(), error = %e, "job failed");
                    true
                }
                Handled::Rejected(_, why) | Handled::Malformed(why) => {
                    !self
                        .refuse(self.config.dead_letter_url.as_deref(), id, body, why)
                        .await
                }
            };
            if redeliver {
                response.add_failure(id.clone());
            }
        }
        serde_json::to_value(&response).expect("batch response serializes")
    }
}

/// The cleanup worker runs cleanup jobs and nothing else: a schedule, an event or a sweep
/// request sent to it is refused (a sweep request reads as a malformed job).
fn worker_refuses(trigger: &Trigger) -> HandlerError {
    HandlerError::Event(EventError(format!(
        "this function runs cleanup jobs only; a {} trigger is refused",
        trigger_name(trigger)
    )))
}

/// The answer to an event the deployment does not act on.
fn ignored(why: String) -> Value {
    tracing::info!(reason = %why, "ignored");
    json!({ "ignored": why })
}

/// Milliseconds since the epoch (metric lines' timestamps).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a pair sweeper checks each sweep-queue message against, read once per batch.
struct PairChecks<'a> {
    policy: &'a Policy,
    ceiling: &'a Mandate,
    members: Option<&'a BTreeSet<String>>,
    siblings: &'a [String],
    /// The deployment's own account: a single-account sweep's continuation names it.
    own: Option<&'a str>,
}

/// Where a single-account sweep's report is written (`notify::after_sweep_at`'s key): the
/// report a continuation of it names as the link it continues.
fn own_report_key(now: &str, account: &str) -> String {
    format!("reports/{now}/{account}/report.json")
}

/// A continuation's chain must be readable and within its bound; a first run has none.
fn chain_admitted(chain: Option<&crate::chain::Chain>) -> Result<(), String> {
    let Some(c) = chain else { return Ok(()) };
    if c.planned_at().is_none() {
        return Err(format!(
            "the continuation's chain instant {:?} cannot be read; nothing was done",
            c.planned_at
        ));
    }
    if c.link == 0 || c.link >= crate::chain::MAX_LINKS {
        return Err(format!(
            "the continuation's link {} is outside its chain's bound (1 to {}); nothing was done",
            c.link,
            crate::chain::MAX_LINKS - 1
        ));
    }
    Ok(())
}

/// The request of a message the batch's partition took for a sweep request, if it can be
/// read (unknown keys refused with their path) and carries a mandate within `ceiling`; else
/// why it is refused (a refused mandate is logged with its account and region).
fn admit_pair(
    body: &str,
    ceiling: &Mandate,
    members: Option<&BTreeSet<String>>,
    own: Option<&str>,
) -> Result<SweepRequest, String> {
    let request = SweepRequest::from_json(body)
        .expect("partitioned on this")
        .map_err(|e| format!("the sweep request cannot be read: {e}; nothing was done"))?;
    // A single-account deployment's continuation names its own account: the ceiling
    // admits it as the own account (no account), and no other.
    let account = match (&ceiling.accounts, own) {
        (AccountRule::Own, Some(o)) if o == request.account => None,
        _ => Some(request.account.as_str()),
    };
    let verdict = match &request.mandate {
        None => Err(String::from(
            "the sweep request carries no mandate (an older dispatcher's); nothing was done",
        )),
        Some(m) => ceiling.admits_message(Some(m), account, &request.region, members),
    };
    match verdict {
        Ok(()) => Ok(request),
        Err(why) => {
            tracing::error!(account = %request.account, region = %request.region, reason = %why, "sweep request outside the ceiling");
            Err(why)
        }
    }
}

/// Whether `region` is one of `regions`.
fn within(regions: &[String], region: &str) -> bool {
    regions.iter().any(|r| r == region)
}

fn trigger_name(t: &Trigger) -> &'static str {
    match t {
        Trigger::Schedule => "schedule",
        Trigger::Manual { .. } => "manual",
        Trigger::ImageBuilder { .. } => "image_builder",
        Trigger::AmiAvailable { .. } => "ami_state_change",
        Trigger::Ignored(_) => "ignored",
        Trigger::Sqs(_) => "sqs",
        Trigger::Approved { .. } => "approved_plan",
    }
}

/// Runs the Lambda runtime loop: clients built once, then one `handle` per event.
pub async fn serve(config: Config) -> Result<(), lambda_runtime::Error> {
    let base = crate::adapters::aws::load_config().await;
    let handler = Arc::new(Handler::new(base, config));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let handler = handler.clone();
            async move {
                let deadline = deadline_instant(event.context.deadline);
                handler.handle(event.payload, deadline).await.map_err(|e| {
                    if let HandlerError::RunFailed { report, .. } = &e {
                        tracing::error!(report = %report, "sweep report");
                    }
                    tracing::error!(error = %e, "invocation failed");
                    lambda_runtime::Diagnostic::from(e)
                })
            }
        },
    ))
    .await
}

/// The wall-clock instant of a monotonic deadline (a cleanup worker's lease lapses then);
/// without one, Lambda's longest timeout from now.
fn wall_clock(deadline: Option<Instant>) -> crate::model::Timestamp {
    let left = deadline.map_or(crate::edges::cli::LAMBDA_MAX_TIMEOUT, |d| {
        d.saturating_duration_since(Instant::now())
    });
    chrono::Utc::now()
        + chrono::Duration::from_std(left).unwrap_or_else(|_| chrono::Duration::minutes(15))
}

/// Converts Lambda's deadline (milliseconds since the epoch) to a monotonic instant.
/// `None` when the deadline has already passed on arrival: a runtime that sends no usable
/// deadline (a local emulator) gets none, rather than a run that stops before it starts.
/// Work cut short by the real timeout is safe: storage is marked before deregistration.
fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if deadline_ms <= now_ms {
        tracing::warn!(
            deadline_ms,
            now_ms,
            "the invocation's deadline has passed on arrival; ignored"
        );
        return None;
    }
    Some(Instant::now() + Duration::from_millis(deadline_ms - now_ms))
}
