//! The Lambda handler: one object built at init (SDK configuration, clients, policy
//! source), answering every trigger with the run's report. `ami-sweeper invoke` runs
//! exactly this code path on an event file.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::adapters::aws::Clients;
use crate::app::cleanup::Attempt;
use crate::app::org::{self, SweepRequest};
use crate::app::run::{regions_for, run_sweep};
use crate::app::stop::Stop;
use crate::app::sweep::ExecConfig;
use crate::app::worker::{handle_batch, Handled};
use crate::edges::config::{Config, PolicySource};
use crate::error::AwsError;
use crate::events::{inline_policy, parse_event, scope_to_recipe, EventError, Trigger};
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
}

/// What an event asks for, before the deployment's ceiling is applied.
struct Request {
    policy: Policy,
    force_dry_run: bool,
    regions: Vec<String>,
}

impl Handler {
    /// Builds the handler from the SDK configuration and the deployment's
    /// configuration ([`Config::from_env`] in Lambda and under `invoke`).
    pub fn new(base: aws_config::SdkConfig, config: Config) -> Self {
        Self {
            clients: Clients::new(base),
            config,
        }
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

    /// Maps a trigger to a request within the deployment's policy: an event may narrow a
    /// run (dry run, a region, a lineage) but never loosen it. `Ok(Err(why))` means the
    /// event is ignored, with the reason.
    async fn request(
        &self,
        trigger: Trigger,
        exec: &mut ExecConfig,
    ) -> Result<Result<Request, String>, HandlerError> {
        match trigger {
            Trigger::Ignored(why) => Ok(Err(why)),
            Trigger::Sqs(_) => unreachable!("SQS batches are answered before"),
            Trigger::Schedule => Ok(Ok(Request {
                policy: self.configured_policy().await?,
                force_dry_run: false,
                regions: Vec::new(),
            })),
            Trigger::Manual {
                policy: None,
                dry_run,
            } => Ok(Ok(Request {
                policy: self.configured_policy().await?,
                force_dry_run: dry_run,
                regions: Vec::new(),
            })),
            Trigger::Manual {
                policy: Some(v),
                dry_run,
            } => self.event_policy(&v, dry_run).await.map(Ok),
            Trigger::ImageBuilder {
                recipe_prefix,
                region,
                account,
            } => self.image_builder(&recipe_prefix, region, &account).await,
            Trigger::AmiAvailable { image_id, region } => {
                let configured = self.configured_policy().await?;
                if let Some(r) = region
                    .as_deref()
                    .filter(|r| !within(&self.allowed_regions(Some(&configured)), r))
                {
                    return Ok(Err(format!(
                        "AMI state change for region {r}, outside the policy's regions"
                    )));
                }
                exec.scope_group_of = Some(image_id);
                Ok(Ok(Request {
                    policy: configured,
                    force_dry_run: false,
                    regions: region.into_iter().collect(),
                }))
            }
        }
    }

    /// A manual event's own policy: refused unless the deployment allows event policies,
    /// and never beyond the deployment's regions.
    async fn event_policy(&self, v: &Value, dry_run: bool) -> Result<Request, HandlerError> {
        if !self.config.allow_event_policy {
            return Err(HandlerError::Event(EventError(
                "an event-supplied policy is refused: the deployment's policy is the \
                 ceiling (set the stack parameter AllowEventPolicy to true to allow one)"
                    .into(),
            )));
        }
        let policy = inline_policy(v)?;
        let configured = self.configured_policy().await.ok();
        let allowed = self.allowed_regions(configured.as_ref());
        let asked = policy.regions.clone().unwrap_or_else(|| allowed.clone());
        if let Some(r) = asked.iter().find(|r| !within(&allowed, r)) {
            return Err(HandlerError::Event(EventError(format!(
                "the event's policy names region {r}, outside the deployment's regions [{}]",
                allowed.join(", ")
            ))));
        }
        Ok(Request {
            policy,
            force_dry_run: dry_run,
            regions: asked,
        })
    }

    /// An Image Builder build finished: sweep its recipe's lineage, in its region, if the
    /// image is this deployment's account's and the region is the policy's.
    async fn image_builder(
        &self,
        recipe_prefix: &str,
        region: String,
        account: &str,
    ) -> Result<Result<Request, String>, HandlerError> {
        if let Some(own) = self.config.account_id.as_deref().filter(|a| *a != account) {
            return Ok(Err(format!(
                "Image Builder image of account {account}; this deployment sweeps account {own}"
            )));
        }
        let configured = self.configured_policy().await?;
        if !within(&self.allowed_regions(Some(&configured)), &region) {
            return Ok(Err(format!(
                "Image Builder event for region {region}, outside the policy's regions"
            )));
        }
        Ok(Ok(Request {
            policy: scope_to_recipe(&configured, recipe_prefix),
            force_dry_run: false,
            regions: vec![region],
        }))
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

    /// Answers one invocation. `deadline` is the invocation's end, if known.
    pub async fn handle(
        &self,
        event: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, HandlerError> {
        let trigger = parse_event(&event)?;
        tracing::info!(trigger = trigger_name(&trigger), "invocation");
        let mut exec = ExecConfig {
            stop: Stop::with_deadline(deadline.map(stop_before)),
            ..Default::default()
        };
        if let Trigger::Sqs(records) = trigger {
            let (pairs, jobs): (Vec<_>, Vec<_>) = records
                .into_iter()
                .partition(|(_, body)| SweepRequest::from_json(body).is_some());
            if jobs.is_empty() {
                return Ok(self.sweep_pairs(pairs, exec).await);
            }
            if !pairs.is_empty() {
                // One event source per queue: a batch never mixes them. If it does, the
                // pairs are redelivered alone.
                let mut v = self.cleanup_batch(jobs).await;
                let failures = v["batchItemFailures"]
                    .as_array_mut()
                    .expect("a batch response");
                failures.extend(
                    pairs
                        .into_iter()
                        .map(|(id, _)| json!({"itemIdentifier": id})),
                );
                return Ok(v);
            }
            return Ok(self.cleanup_batch(jobs).await);
        }
        let Request {
            policy,
            force_dry_run,
            regions,
        } = match self.request(trigger, &mut exec).await? {
            Ok(r) => r,
            Err(why) => {
                tracing::info!(reason = %why, "ignored");
                return Ok(serde_json::json!({"ignored": why}));
            }
        };
        let regions = regions_for(
            &policy,
            &regions,
            self.clients.base().region().map(|r| r.as_ref()),
        )
        .map_err(|e| HandlerError::Region(e.to_string()))?;
        let opts =
            self.config
                .sweep_options(regions.clone(), force_dry_run, exec, chrono::Utc::now());
        if policy.accounts.is_some() {
            return self.organization(&policy, &regions, &opts).await;
        }
        let report = run_sweep(&self.clients, &policy, &regions, &opts).await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Embedded Metric Format: in Lambda a raw JSON line on stdout becomes CloudWatch
        // metrics; under `invoke` stdout is the response, so the line goes to stderr.
        if self.config.in_lambda {
            println!("{}", report.emf_line(now_ms));
        } else {
            eprintln!("{}", report.emf_line(now_ms));
        }
        self.notify(&policy, None, &report).await;
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

    /// A policy naming `accounts`: with a sweep queue, one message per (account, region)
    /// pair (the pairs' sweeps run as their own invocations); without, every pair here.
    async fn organization(
        &self,
        policy: &Policy,
        regions: &[String],
        opts: &crate::app::run::SweepOptions,
    ) -> Result<Value, HandlerError> {
        let accounts = org::resolve_accounts(&self.clients, policy).await?;
        let run = crate::time::format_instant(opts.now);
        if let Some(url) = &self.config.sweep_queue_url {
            let bodies: Vec<String> = accounts
                .iter()
                .flat_map(|a| {
                    regions.iter().map(|r| {
                        SweepRequest {
                            account: a.clone(),
                            region: r.clone(),
                            run: run.clone(),
                        }
                        .to_json()
                    })
                })
                .collect();
            let sent = self.clients.queue(url, 0).send_all(&bodies).await?;
            tracing::info!(pairs = sent, accounts = accounts.len(), %run, "dispatched");
            return Ok(json!({"dispatched": sent, "accounts": accounts, "run": run}));
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

    /// Sweeps the (account, region) pairs of sweep-queue messages, each within the
    /// deployment's policy: a message may name only an account and a region the policy
    /// covers. A pair that ran (even if it failed, say its role is missing) is done: its
    /// report says why. A message that cannot be read or is refused is redelivered until
    /// the redrive policy moves it to the dead-letter queue.
    async fn sweep_pairs(&self, records: Vec<(String, String)>, exec: ExecConfig) -> Value {
        let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
        let policy = match self.configured_policy().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "no policy: no pair is swept");
                records
                    .into_iter()
                    .for_each(|(id, _)| response.add_failure(id));
                return serde_json::to_value(&response).expect("batch response serializes");
            }
        };
        let rules = WorkerRules::new(
            &policy,
            self.clients.base().region().map(|r| r.as_ref()),
            [],
        );
        let siblings = match policy.protection.shared {
            crate::policy::SharedRule::KeepIfUsed => org::resolve_accounts(&self.clients, &policy)
                .await
                .unwrap_or_default(),
            crate::policy::SharedRule::Keep => Vec::new(),
        };
        for (id, body) in records {
            let request = SweepRequest::from_json(&body).expect("partitioned on this");
            let allowed = policy.accounts.is_some()
                && rules.check_account(Some(&request.account)).is_ok()
                && rules.check_region(&request.region).is_ok();
            if !allowed {
                tracing::error!(message_id = %id, account = %request.account, region = %request.region, "sweep request outside the deployment's policy; refused");
                response.add_failure(id);
                continue;
            }
            let opts = self.config.sweep_options(
                vec![request.region.clone()],
                false,
                exec.clone(),
                chrono::Utc::now(),
            );
            let bucket = self.config.report_bucket.as_deref();
            let pair =
                org::sweep_pair(&self.clients, &policy, &request, &siblings, &opts, bucket).await;
            self.emit_pairs(std::slice::from_ref(&pair));
            if let Some(r) = &pair.report {
                let key = bucket.map(|b| format!("s3://{b}/{}", request.report_key()));
                self.notify(&policy, Some((&pair.account, key)), r).await;
            }
            if pair
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("the report could not be written"))
            {
                response.add_failure(id);
            }
        }
        serde_json::to_value(&response).expect("batch response serializes")
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
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for p in pairs {
            tracing::info!(account = %p.account, region = %p.region, failures = p.failures(), error = ?p.error, "pair");
            if let Some(r) = &p.report {
                let line =
                    r.emf_line_with(now_ms, &[("Account", &p.account), ("Region", &p.region)]);
                if self.config.in_lambda {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Verifies and runs each job once; answers with the ids of the messages to
    /// redeliver. A job that fails verification (or a malformed message) goes to the
    /// dead-letter queue with the reason when `CLEANUP_DLQ_URL` is set, else it is
    /// redelivered until the redrive policy moves it there. Without a readable policy
    /// (its exclude tags) nothing runs: every message is redelivered.
    async fn cleanup_batch(&self, records: Vec<(String, String)>) -> Value {
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
        let rules = WorkerRules::new(
            &policy,
            self.clients.base().region().map(|r| r.as_ref()),
            self.config.bundle_buckets.iter().cloned(),
        );
        let dlq = self
            .config
            .dead_letter_url
            .as_deref()
            .map(|u| self.clients.queue(u, 0));
        let bodies: Vec<&str> = records.iter().map(|(_, b)| b.as_str()).collect();
        let role = rules.member_role.clone();
        let handled = handle_batch(
            |a, r| {
                let role = role.clone();
                async move { self.clients.place(a.as_deref(), &r, &role).await }
            },
            &rules,
            &bodies,
            chrono::Utc::now(),
        )
        .await;
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
                Handled::Rejected(_, why) | Handled::Malformed(why) => match &dlq {
                    Some(dlq) => match dlq.forward(body, why).await {
                        Ok(()) => {
                            tracing::error!(message_id = %id, reason = %why, "sent to the dead-letter queue");
                            false
                        }
                        Err(e) => {
                            tracing::error!(message_id = %id, reason = %why, error = %e, "could not reach the dead-letter queue");
                            true
                        }
                    },
                    None => {
                        tracing::error!(message_id = %id, reason = %why, "refused; left for the redrive policy");
                        true
                    }
                },
            };
            if redeliver {
                response.add_failure(id.clone());
            }
        }
        serde_json::to_value(&response).expect("batch response serializes")
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
