//! The deployment's configuration, read once at the edge and passed inwards: the only
//! place that reads ami-sweeper's environment variables. The CLI lays its flags over it;
//! the Lambda handler takes it as it is. Both build their [`SweepOptions`] through
//! [`Config::sweep_options`], so a sweep behaves alike whichever edge started it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::app::cleanup::RetryPolicy;
use crate::app::run::{QueueMode, SweepOptions};
use crate::app::sweep::ExecConfig;
use crate::time::Timestamp;

/// `DelaySeconds` of queued cleanup jobs, so deregistrations settle first.
pub const QUEUE_DELAY_SECONDS: u32 = 60;

/// SQS's longest `DelaySeconds`.
pub const MAX_QUEUE_DELAY_SECONDS: u32 = 900;

/// Where the configured policy lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `AMI_SWEEPER_POLICY`: the JSON itself.
    Inline(String),
    /// `AMI_SWEEPER_POLICY_PARAMETER`: an SSM parameter holding the JSON.
    Parameter(String),
    /// Neither is set: only events carrying a policy can sweep.
    Missing,
}

/// Everything a deployment configures outside the policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// `AMI_SWEEPER_POLICY` / `AMI_SWEEPER_POLICY_PARAMETER`.
    pub policy_source: PolicySource,
    /// `CLEANUP_QUEUE_URL`: where cleanup jobs go; `None` runs them in process.
    pub queue_url: Option<String>,
    /// `CLEANUP_DLQ_URL`: where jobs that fail verification go, with the reason.
    pub dead_letter_url: Option<String>,
    /// Delay of queued cleanup jobs (at most [`MAX_QUEUE_DELAY_SECONDS`]).
    pub queue_delay_seconds: u32,
    /// Retries of in-process cleanup jobs (no queue).
    pub local_retry: RetryPolicy,
    /// `AMI_SWEEPER_DRY_RUN=true`: every sweep is a dry run.
    pub force_dry_run: bool,
    /// `AMI_SWEEPER_ALLOW_EVENT_POLICY=true`: a manual event may carry its own policy
    /// (still within the deployment's regions).
    pub allow_event_policy: bool,
    /// `AMI_SWEEPER_ACCOUNT_ID`: events of other accounts are ignored.
    pub account_id: Option<String>,
    /// `AMI_SWEEPER_BUNDLE_BUCKETS` (comma-separated): the buckets whose bundles may be
    /// deleted. Empty: bundle cleanup is off.
    pub bundle_buckets: BTreeSet<String>,
    /// `AWS_LAMBDA_RUNTIME_API` is set: running inside Lambda (metrics go to stdout).
    pub in_lambda: bool,
    /// `AMI_SWEEPER_REPORT_BUCKET`: where an organization sweep writes each pair's report.
    pub report_bucket: Option<String>,
    /// `SWEEP_QUEUE_URL`: where the scheduled dispatcher sends one message per
    /// (account, region) pair of an organization sweep.
    pub sweep_queue_url: Option<String>,
    /// `SWEEP_DLQ_URL`: where the pair sweeper sends refused sweep requests, with the reason.
    pub sweep_dead_letter_url: Option<String>,
    /// `AMI_SWEEPER_FUNCTION=worker`: this function only runs cleanup jobs (the cleanup
    /// worker); any other trigger is refused, so its role never sweeps.
    pub worker_only: bool,
    /// `AMI_SWEEPER_NOTIFY_TOPIC_ARN`: the SNS topic sweep summaries go to; none: no
    /// summary is sent.
    pub notify_topic_arn: Option<String>,
    /// `AMI_SWEEPER_APPROVAL_ONLY=true`: scheduled and event sweeps are dry runs whose
    /// reports are the plans to approve; only an approved plan acts.
    pub approval_only: bool,
    /// `AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS`: how old an approved plan may be (default 7).
    pub approval_max_age_days: u32,
}

impl Default for Config {
    /// Nothing configured: no policy, no queue, in-process cleanup, no bundle buckets.
    fn default() -> Self {
        Self {
            policy_source: PolicySource::Missing,
            queue_url: None,
            dead_letter_url: None,
            queue_delay_seconds: QUEUE_DELAY_SECONDS,
            local_retry: RetryPolicy::default(),
            force_dry_run: false,
            allow_event_policy: false,
            account_id: None,
            bundle_buckets: BTreeSet::new(),
            in_lambda: false,
            report_bucket: None,
            sweep_queue_url: None,
            sweep_dead_letter_url: None,
            worker_only: false,
            notify_topic_arn: None,
            approval_only: false,
            approval_max_age_days: crate::approval::DEFAULT_MAX_AGE_DAYS,
        }
    }
}

/// An environment variable whose value this build does not read: refused at start-up
/// rather than guessed at (`AMI_SWEEPER_DRY_RUN=1` must not mean "act").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {why}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value, as set.
    pub value: String,
    /// What it may be instead.
    pub why: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `var` (the environment, or a map in tests).
    /// Blank values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let read = |k: &'static str, check: fn(&str) -> Result<(), &'static str>| {
            checked(k, set(k), check)
        };
        let policy_source = match (
            set("AMI_SWEEPER_POLICY"),
            set("AMI_SWEEPER_POLICY_PARAMETER"),
        ) {
            (Some(json), _) => PolicySource::Inline(json),
            (None, Some(name)) => PolicySource::Parameter(name),
            (None, None) => PolicySource::Missing,
        };
        let function = read("AMI_SWEEPER_FUNCTION", |v| match v {
            "worker" => Ok(()),
            _ => Err(
                "is not a function this build knows: `worker` (the cleanup worker), \
                      or unset (the sweeper)",
            ),
        })?;
        Ok(Self {
            policy_source,
            queue_url: read("CLEANUP_QUEUE_URL", queue_url)?,
            dead_letter_url: read("CLEANUP_DLQ_URL", queue_url)?,
            force_dry_run: switch("AMI_SWEEPER_DRY_RUN", set("AMI_SWEEPER_DRY_RUN"))?,
            allow_event_policy: switch(
                "AMI_SWEEPER_ALLOW_EVENT_POLICY",
                set("AMI_SWEEPER_ALLOW_EVENT_POLICY"),
            )?,
            account_id: read("AMI_SWEEPER_ACCOUNT_ID", account_id)?,
            bundle_buckets: bucket_set(set("AMI_SWEEPER_BUNDLE_BUCKETS").as_deref().unwrap_or("")),
            in_lambda: var("AWS_LAMBDA_RUNTIME_API").is_some(),
            report_bucket: set("AMI_SWEEPER_REPORT_BUCKET"),
            sweep_queue_url: read("SWEEP_QUEUE_URL", queue_url)?,
            sweep_dead_letter_url: read("SWEEP_DLQ_URL", queue_url)?,
            worker_only: function.is_some(),
            notify_topic_arn: read("AMI_SWEEPER_NOTIFY_TOPIC_ARN", topic_arn)?,
            approval_only: switch(
                "AMI_SWEEPER_APPROVAL_ONLY",
                set("AMI_SWEEPER_APPROVAL_ONLY"),
            )?,
            approval_max_age_days: read("AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS", days)?
                .map_or(crate::approval::DEFAULT_MAX_AGE_DAYS, |d| {
                    d.parse().expect("checked")
                }),
            ..Self::default()
        })
    }

    /// The options of one sweep: the queue (or in-process retries), the bundle buckets
    /// and the dry-run override (`force_dry_run` from the caller, or the deployment's).
    pub fn sweep_options(
        &self,
        regions: Vec<String>,
        force_dry_run: bool,
        mut exec: ExecConfig,
        now: Timestamp,
    ) -> SweepOptions {
        let queue = match &self.queue_url {
            Some(url) => QueueMode::Sqs {
                url: url.clone(),
                delay_seconds: self.queue_delay_seconds.min(MAX_QUEUE_DELAY_SECONDS),
            },
            None => QueueMode::Local(self.local_retry.clone()),
        };
        exec.bundle_buckets = self.bundle_buckets.clone();
        SweepOptions {
            regions,
            force_dry_run: force_dry_run || self.force_dry_run,
            queue,
            exec,
            now,
        }
    }

    /// How long in-process cleanup waits between attempts.
    pub fn with_local_retry_delay(mut self, delay: Duration) -> Self {
        self.local_retry.delay = delay;
        self
    }
}

/// A value as set (trimmed; `None`: unset or blank), or the error naming the variable and
/// the value when `check` refuses it.
fn checked(
    var: &'static str,
    value: Option<String>,
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<Option<String>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    match check(value.trim()) {
        Ok(()) => Ok(Some(value.trim().to_string())),
        Err(why) => Err(ConfigError {
            var,
            value,
            why: why.to_string(),
        }),
    }
}

/// A switch: `true` or `false` in any case; unset (or blank) is off. Anything else is
/// refused: `1` or `yes` must not silently mean "off" (for the brake, "act").
fn switch(var: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    let on = checked(var, value, |v| {
        if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
            Ok(())
        } else {
            Err("is not true or false (any case); unset means false")
        }
    })?;
    Ok(on.is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

/// An SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or an
/// emulator's `http://` one).
fn queue_url(v: &str) -> Result<(), &'static str> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(r) if r.contains('/') => Ok(()),
        _ => Err("is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"),
    }
}

/// A whole number of days, 1 to 365.
fn days(v: &str) -> Result<(), &'static str> {
    match v.parse::<u32>() {
        Ok(1..=365) => Ok(()),
        _ => Err("is not a whole number of days from 1 to 365"),
    }
}

/// A 12-digit account id.
fn account_id(v: &str) -> Result<(), &'static str> {
    if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("is not a 12-digit account id")
    }
}

/// An SNS topic ARN (`arn:<partition>:sns:<region>:<account>:<name>`).
fn topic_arn(v: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sns", _, _, name] if !name.is_empty() => Ok(()),
        _ => Err("is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"),
    }
}

/// A comma-separated list of bucket names as a set, blanks dropped.
pub fn bucket_set(names: &str) -> BTreeSet<String> {
    names
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        read(vars).unwrap()
    }

    /// The error for `var=value`, which must name both.
    fn refused(var: &str, value: &str) -> String {
        let e = match read(&[(var, value)]) {
            Ok(_) => panic!("{var}={value:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(var) && e.contains(&format!("{value:?}")),
            "{var}={value:?}: {e}"
        );
        e
    }

    #[test]
    fn switches_read_true_or_false_in_any_case_and_refuse_anything_else() {
        for var in ["AMI_SWEEPER_DRY_RUN", "AMI_SWEEPER_ALLOW_EVENT_POLICY"] {
            let on = |c: &Config| match var {
                "AMI_SWEEPER_DRY_RUN" => c.force_dry_run,
                _ => c.allow_event_policy,
            };
            for (value, expected) in [
                ("true", true),
                ("TRUE", true),
                (" True ", true),
                ("false", false),
                ("FALSE", false),
                ("", false),
            ] {
                assert_eq!(on(&config(&[(var, value)])), expected, "{var}={value:?}");
            }
            assert!(!on(&config(&[])), "{var} unset keeps its default: off");
            for value in ["1", "yes", "on", "0", "no", "off", "ture", "true false"] {
                let e = refused(var, value);
                assert!(e.contains("true or false"), "{e}");
            }
        }
    }

    #[test]
    fn an_unknown_function_name_is_refused() {
        assert!(config(&[("AMI_SWEEPER_FUNCTION", "worker")]).worker_only);
        assert!(!config(&[]).worker_only);
        for value in ["Worker", "WORKER", "sweeper", "workers", "cleanup"] {
            let e = refused("AMI_SWEEPER_FUNCTION", value);
            assert!(e.contains("`worker`"), "{e}");
        }
    }

    #[test]
    fn account_ids_topic_arns_and_queue_urls_are_checked() {
        let c = config(&[
            ("AMI_SWEEPER_ACCOUNT_ID", "111122223333"),
            (
                "AMI_SWEEPER_NOTIFY_TOPIC_ARN",
                "arn:aws:sns:us-east-1:111122223333:t",
            ),
            (
                "CLEANUP_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/1/q",
            ),
            ("SWEEP_QUEUE_URL", "http://127.0.0.1:5000/1/q"),
        ]);
        assert_eq!(c.account_id.as_deref(), Some("111122223333"));
        for (var, value) in [
            ("AMI_SWEEPER_ACCOUNT_ID", "11112222333"),
            ("AMI_SWEEPER_ACCOUNT_ID", "1111-2222-3333"),
            ("AMI_SWEEPER_NOTIFY_TOPIC_ARN", "my-topic"),
            (
                "AMI_SWEEPER_NOTIFY_TOPIC_ARN",
                "arn:aws:sqs:us-east-1:111122223333:q",
            ),
            ("CLEANUP_QUEUE_URL", "my-queue"),
            ("CLEANUP_DLQ_URL", "sqs.us-east-1.amazonaws.com/1/q"),
            ("SWEEP_QUEUE_URL", "q"),
            ("SWEEP_DLQ_URL", "q"),
        ] {
            refused(var, value);
        }
    }

    #[test]
    fn blank_values_are_unset_and_inline_policy_wins() {
        let c = config(&[
            ("AMI_SWEEPER_POLICY", "{}"),
            ("AMI_SWEEPER_POLICY_PARAMETER", "/p"),
            ("CLEANUP_QUEUE_URL", " "),
            ("AMI_SWEEPER_BUNDLE_BUCKETS", " a, ,b "),
            ("AMI_SWEEPER_DRY_RUN", "TRUE"),
        ]);
        assert_eq!(c.policy_source, PolicySource::Inline("{}".into()));
        assert_eq!(c.queue_url, None);
        assert_eq!(c.bundle_buckets, bucket_set("a,b"));
        assert!(c.force_dry_run);
        assert!(!c.allow_event_policy);
        assert_eq!(
            config(&[("AMI_SWEEPER_POLICY_PARAMETER", "/p")]).policy_source,
            PolicySource::Parameter("/p".into())
        );
    }

    #[test]
    fn sweep_options_pick_the_queue_and_keep_the_deployments_dry_run() {
        let now = crate::time::parse_instant("2026-11-26T00:00:00Z").unwrap();
        let mut c = config(&[
            ("CLEANUP_QUEUE_URL", "http://127.0.0.1:5000/123456789012/q"),
            ("AMI_SWEEPER_DRY_RUN", "true"),
        ]);
        c.queue_delay_seconds = 5_000;
        let o = c.sweep_options(vec!["r".into()], false, ExecConfig::default(), now);
        assert!(
            o.force_dry_run,
            "the deployment's dry run cannot be lifted by a caller"
        );
        match o.queue {
            QueueMode::Sqs { url, delay_seconds } => {
                assert_eq!(url, "http://127.0.0.1:5000/123456789012/q");
                assert_eq!(delay_seconds, MAX_QUEUE_DELAY_SECONDS);
            }
            QueueMode::Local(_) | QueueMode::InProcessFirst { .. } => {
                panic!("a queue URL means the queue")
            }
        }
        let o = Config::default().sweep_options(vec![], false, ExecConfig::default(), now);
        assert!(matches!(o.queue, QueueMode::Local(_)));
        assert!(!o.force_dry_run);
    }

    #[test]
    fn approval_only_and_the_approval_bound_are_read_and_checked() {
        let c = config(&[]);
        assert!(!c.approval_only);
        assert_eq!(c.approval_max_age_days, 7);
        let c = config(&[
            ("AMI_SWEEPER_APPROVAL_ONLY", "True"),
            ("AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS", "3"),
        ]);
        assert!(c.approval_only);
        assert_eq!(c.approval_max_age_days, 3);
        refused("AMI_SWEEPER_APPROVAL_ONLY", "1");
        refused("AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS", "0");
        refused("AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS", "a week");
    }
}
