//! One function per subcommand: read and check the inputs, build the ports once, run, report.

use std::io::Write;
use std::time::Duration;

use crate::adapters::aws::{load_config, Clients};
use crate::adapters::awscli::{load_inventory, load_snapshots, InventoryFiles};
use crate::app::ratelimit::PaceConfig;
use crate::app::{notify, org, run, sweep};
use crate::edges::config::{bucket_set, Config, MAX_QUEUE_DELAY_SECONDS};
use crate::edges::{lambda, render};
use crate::verify::WorkerRules;
use crate::{orphans, plan, pricing};

use super::args::{CleanupArgs, Format, InvokeArgs, LintArgs, PlanArgs, ReportFormat, SweepArgs};
use super::{
    default_format, emit_report, emit_text, init_logs, parse_now, read_policy, runtime,
    stop_on_signals, terminal_progress, write_stdout, Failure, EXIT_BAD_INPUT, EXIT_FAILED,
    EXIT_STOPPED, LAMBDA_MAX_TIMEOUT, MIN_RATE,
};

/// `ami-sweeper sweep`.
pub(super) fn cmd_sweep(args: SweepArgs) -> Result<(), Failure> {
    let policy = read_policy(&args.policy)?;
    let now = parse_now(args.now.clone())?;
    check_pace(args.rate, args.describe_rate, args.queue_delay)?;
    let pace = crate::app::ratelimit::PaceConfig {
        rate: args.rate,
        describe_rate: args.describe_rate,
        ..Default::default()
    };
    let mut config = sweep_config(&args)?;
    config.local_retry.pace = pace;
    let approval = Approval::of(&args, &config)?;
    let exec = sweep::ExecConfig {
        pace,
        progress: terminal_progress(),
        ..Default::default()
    };
    init_logs();
    let rt = runtime()?;
    let report_bucket = args.report_bucket.clone().or(config.report_bucket.clone());
    if policy.accounts.is_some() {
        return rt.block_on(org_sweep(&args, &policy, config, exec, now, &approval));
    }
    let report = rt.block_on(async {
        let base = load_config().await;
        let regions = run::regions_for(&policy, &args.regions, base.region().map(|r| r.as_ref()))
            .map_err(Failure::input)?;
        let mut opts = config.sweep_options(regions, approval.dry_run, exec, now);
        let clients = Clients::new(base);
        let account = own_account(&clients, &config, approval.stamps.is_some()).await;
        let ctx = (&policy, account.as_deref(), None);
        let regions = approval.narrow(ctx, &mut opts)?;
        stop_on_signals(&opts.exec.stop);
        let mut report = run::run_sweep(&clients, &policy, &regions, &opts).await;
        let stamped = report.regions.iter().any(|r| r.approval.is_some());
        let account = account.or(own_account(&clients, &config, stamped).await);
        if let Some(a) = &account {
            report.stamp_account(a);
        }
        if opts.exec.progress.is_some() {
            eprintln!();
        }
        // The report object (with a report bucket) and the summaries (with a topic).
        let delivery = notify::Delivery {
            topic_arn: config.notify_topic_arn.as_deref(),
            report_bucket: report_bucket.as_deref(),
            account: config.account_id.as_deref(),
            lookahead_days: policy.notify.lookahead_days,
        };
        let (location, errors) = notify::after_sweep_at(&clients, &delivery, &report).await;
        for e in errors {
            eprintln!("ami-sweeper: warning: {e}");
        }
        Ok::<_, Failure>((report, location))
    })?;
    let (report, location) = report;
    match args.format.map(ReportFormat::common) {
        Some(None) => {
            let whole = match location {
                Some(l) => format!("The whole report: {l}"),
                None => JSON_HINT.to_string(),
            };
            let text = render::markdown::sweep(&report, &whole);
            emit_text(&text, report.totals.failures)?;
        }
        format => emit_report(
            format.flatten(),
            &report,
            render::sweep_table,
            report.totals.failures,
        )?,
    }
    match report.stopped {
        Some(why) => Err(Failure {
            status: EXIT_STOPPED,
            message: format!(
                "stopped early ({why:?}); marked storage is reconciled by the next sweep"
            ),
        }),
        None => Ok(()),
    }
}

/// The environment's configuration with the sweep's flags laid over it.
fn sweep_config(args: &SweepArgs) -> Result<Config, Failure> {
    let mut config = Config::from_env()
        .map_err(Failure::input)?
        .with_local_retry_delay(Duration::from_secs(args.retry_delay));
    config.queue_delay_seconds = args.queue_delay;
    config.queue_url = args.queue_url.clone().or(config.queue_url);
    if let Some(b) = &args.bundle_buckets {
        config.bundle_buckets = bucket_set(&b.join(","));
    }
    Ok(config)
}

/// `sweep` of a policy with `accounts`: every (account, region) pair through the member
/// roles, one report per account.
async fn org_sweep(
    args: &SweepArgs,
    policy: &crate::Policy,
    config: Config,
    exec: sweep::ExecConfig,
    now: crate::model::Timestamp,
    approval: &Approval,
) -> Result<(), Failure> {
    let report_bucket = args.report_bucket.clone().or(config.report_bucket.clone());
    let base = load_config().await;
    let regions = run::regions_for(policy, &args.regions, base.region().map(|r| r.as_ref()))
        .map_err(Failure::input)?;
    let mut opts = config.sweep_options(regions, approval.dry_run, exec, now);
    let hub = Clients::new(base);
    stop_on_signals(&opts.exec.stop);
    let accounts = org::resolve_accounts(&hub, policy)
        .await
        .map_err(|e| Failure {
            status: EXIT_FAILED,
            message: format!("the policy's accounts could not be listed: {e}"),
        })?;
    let members: std::collections::BTreeSet<String> = accounts.iter().cloned().collect();
    let regions = approval.narrow((policy, None, Some(&members)), &mut opts)?;
    let pairs = accounts.len() * regions.len();
    let concurrency = args
        .account_concurrency
        .unwrap_or_else(|| org::default_concurrency(pairs, open_files_limit()));
    let report = org::run_org_sweep(
        &hub,
        policy,
        &accounts,
        &regions,
        &opts,
        concurrency,
        report_bucket.as_deref(),
    )
    .await;
    match args.format.map(ReportFormat::common) {
        Some(None) => {
            let whole = match &report_bucket {
                Some(b) => format!(
                    "The pairs' whole reports: s3://{b}/reports/{}/ (one per account and region)",
                    report.run
                ),
                None => JSON_HINT.to_string(),
            };
            emit_text(&render::markdown::org(&report, &whole), report.failures)
        }
        format => emit_report(
            format.flatten(),
            &report,
            render::org_table,
            report.failures,
        ),
    }
}

/// The account the CLI acts in, when `needed`: the configured one, else the credentials'
/// (`None` when neither can be had: a dry run's stamp then names none, and its approval
/// needs `--account`).
async fn own_account(clients: &Clients, config: &Config, needed: bool) -> Option<String> {
    match &config.account_id {
        Some(a) => Some(a.clone()),
        None if needed => clients.caller_account().await.ok(),
        None => None,
    }
}

/// What `--approved-plan` and approval-only mode ask of a sweep.
struct Approval {
    /// The approved plan's stamps, when one is given.
    stamps: Option<Vec<crate::approval::Stamp>>,
    /// `--account`.
    stated_account: Option<String>,
    /// How old the plan may be.
    max_age_days: u32,
    /// The run is a dry run: `--dry-run`, or approval-only without an approved plan.
    dry_run: bool,
}

/// The policy, the account the run acts in (its own) and the OU members (an
/// organization's), as an approved plan is checked against them.
type RunPlace<'a> = (
    &'a crate::Policy,
    Option<&'a str>,
    Option<&'a std::collections::BTreeSet<String>>,
);

impl Approval {
    /// Reads `--approved-plan` (strictly: an unknown key in a stamp is refused with its
    /// path) and the approval flags over the configuration.
    fn of(args: &SweepArgs, config: &Config) -> Result<Self, Failure> {
        let stamps = match &args.approved_plan {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure::input(format!("{}: cannot read: {e}", path.display())))?;
                let doc: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Failure::input(format!("{}: not JSON: {e}", path.display())))?;
                let stamps = crate::approval::stamps_in(&doc)
                    .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
                Some(stamps)
            }
        };
        let approval_only = args.approval_only || config.approval_only;
        Ok(Self {
            dry_run: args.dry_run || (approval_only && stamps.is_none()),
            stamps,
            stated_account: args.account.clone(),
            max_age_days: args
                .approved_plan_max_age_days
                .unwrap_or(config.approval_max_age_days),
        })
    }

    /// Narrows the run's mandate by the approved plan, if one is given (refused: status
    /// 2 with the reason, nothing changed); the regions the run sweeps.
    fn narrow(
        &self,
        (policy, account, members): RunPlace<'_>,
        opts: &mut run::SweepOptions,
    ) -> Result<Vec<String>, Failure> {
        let Some(stamps) = &self.stamps else {
            return Ok(opts.regions.clone());
        };
        let ceiling = run::mandate_of(policy, &opts.regions, opts);
        let check = crate::approval::Run {
            mandate: &ceiling,
            account,
            members,
            stated_account: self.stated_account.as_deref(),
            now: opts.now,
            max_age_days: self.max_age_days,
        };
        let ask = crate::approval::approve(stamps, &check).map_err(Failure::input)?;
        let mandate = ceiling.narrow(&ask);
        opts.regions = mandate.regions.iter().cloned().collect();
        opts.exec.mandate = Some(std::sync::Arc::new(mandate));
        Ok(opts.regions.clone())
    }
}

/// Where the whole report is when nothing was written to a bucket.
const JSON_HINT: &str = "The whole report: the same command with `--format json`.";

/// The soft limit on open files this process may hold (`/proc/self/limits`), `None` where
/// it cannot be read: the machine's bound on pairs swept at once.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The pace flags: calls per second at least [`MIN_RATE`], a queue delay SQS accepts.
fn check_pace(
    rate: Option<f64>,
    describe_rate: Option<f64>,
    queue_delay: u32,
) -> Result<(), Failure> {
    for (flag, value) in [("--rate", rate), ("--describe-rate", describe_rate)] {
        let Some(value) = value else { continue };
        if !(value.is_finite() && value >= MIN_RATE) {
            return Err(Failure::input(format!(
                "{flag}: must be a number of calls per second, at least {MIN_RATE}"
            )));
        }
    }
    if queue_delay > MAX_QUEUE_DELAY_SECONDS {
        return Err(Failure::input(format!(
            "--queue-delay: at most {MAX_QUEUE_DELAY_SECONDS} seconds (SQS's longest delay)"
        )));
    }
    Ok(())
}

/// `ami-sweeper cleanup`.
pub(super) fn cmd_cleanup(args: CleanupArgs) -> Result<(), Failure> {
    let CleanupArgs {
        queue_url,
        policy,
        bundle_buckets,
        dead_letter_queue_url,
        max_seconds,
        format,
    } = args;
    let policy = read_policy(&policy)?;
    let config = Config::from_env().map_err(Failure::input)?;
    let force_dry_run = config.force_dry_run;
    let queue_url = queue_url.or(config.queue_url).ok_or_else(|| {
        Failure::input("--queue-url (or CLEANUP_QUEUE_URL): the cleanup queue to drain")
    })?;
    let buckets = match bundle_buckets {
        Some(b) => bucket_set(&b.join(",")),
        None => config.bundle_buckets,
    };
    let dlq = dead_letter_queue_url.or(config.dead_letter_url);
    init_logs();
    let rt = runtime()?;
    let limits = run::DrainLimits {
        max_time: Duration::from_secs(max_seconds),
        pace: PaceConfig::default().with_share(policy.limits.api_share),
        ..Default::default()
    };
    let report = rt
        .block_on(async {
            let base = load_config().await;
            let mut rules = WorkerRules::new(&policy, base.region().map(|r| r.as_ref()), buckets);
            rules.ceiling.dry_run |= force_dry_run;
            let clients = Clients::new(base);
            rules.members = crate::app::org::members(&clients, &rules.ceiling).await?;
            run::drain_queue(&clients, &queue_url, &rules, dlq.as_deref(), limits).await
        })
        .map_err(|e| Failure {
            status: EXIT_FAILED,
            message: e.to_string(),
        })?;
    emit_report(format, &report, render::cleanup_table, report.failures())
}

/// `ami-sweeper plan`.
pub(super) fn cmd_plan(args: PlanArgs) -> Result<(), Failure> {
    let policy = read_policy(&args.policy)?;
    let now = parse_now(args.now)?;
    let files = InventoryFiles {
        images: args.images,
        instances: args.instances,
        launch_templates: args.launch_templates,
        launch_configurations: args.launch_configurations,
        image_references: args.image_references,
        ssm_parameters: args.ssm_parameters,
        fleets: args.fleets,
        spot_fleet_requests: args.spot_fleet_requests,
        auto_scaling_groups: args.auto_scaling_groups,
        batch_compute_environments: args.batch_compute_environments,
        image_recipes: args.image_recipes,
        recycle_bin_rules: args.recycle_bin_rules,
        cloudformation_stacks: args.cloudformation_stacks,
        emr_clusters: args.emr_clusters,
        spot_instance_requests: args.spot_instance_requests,
        reference_objects: args.reference_objects,
    };
    let mut inventory = load_inventory(&files, &policy.usage).map_err(Failure::input)?;
    // The snapshots' tags decide which snapshot rules retain them; read before planning.
    let found = match &args.snapshots {
        Some(path) => Some(load_snapshots(path).map_err(Failure::input)?),
        None => None,
    };
    if let Some(found) = &found {
        inventory.snapshot_tags = found
            .iter()
            .map(|s| (s.id.clone(), s.tags.clone()))
            .collect();
        inventory.snapshots_listed = true;
        inventory.archived_snapshots = found
            .iter()
            .filter(|s| s.archived)
            .map(|s| s.id.clone())
            .collect();
    }
    let (bundle_buckets, format) = (args.bundle_buckets, args.format);
    let region = args
        .region
        .or_else(|| policy.regions.as_ref().and_then(|r| r.first().cloned()))
        .unwrap_or_else(|| "us-east-1".into());
    let mut plan = plan(&policy, &inventory, now);
    if let Some(b) = bundle_buckets {
        plan.retain_bundles_outside(&bucket_set(&b.join(",")));
    }
    if let Some(found) = found {
        // Offline, the Recycle Bin cannot be asked: say so rather than guess.
        let rec = orphans::reconcile(&policy, &inventory, &found, &Default::default(), now);
        if rec.to_delete().next().is_some() {
            plan.warnings.push(
                "offline: the Recycle Bin was not asked; a live sweep keeps snapshots whose AMI it holds"
                    .into(),
            );
        }
        plan.orphans = Some(rec);
    }
    let archived = std::mem::take(&mut inventory.archived_snapshots);
    drop(inventory);
    let prices = pricing::Prices::for_region(&region, &policy.cost.price_per_gib_month);
    let savings = pricing::estimate(&plan, &prices, &|id| archived.contains(id));
    let digest = crate::mandate::policy_digest(&policy);
    let approval = crate::approval::Stamp::of_plan(&digest, None, &region, now, &plan.decisions);
    if let Some(ReportFormat::Markdown) = format {
        let text = render::markdown::plan(&plan, Some(&savings), JSON_HINT);
        return emit_text(&text, 0);
    }
    write_stdout(
        |out| match default_format(format.and_then(ReportFormat::common)) {
            Format::Json => {
                let with = PlanWithSavings {
                    plan: &plan,
                    savings: &savings,
                    approval: &approval,
                };
                serde_json::to_writer_pretty(&mut *out, &with)?;
                writeln!(out)
            }
            Format::Table => render::write_plan_table(&plan, Some(&savings), out),
        },
    )
}

/// The plan's JSON with the saving estimate added beside its own fields.
#[derive(serde::Serialize)]
struct PlanWithSavings<'a> {
    #[serde(flatten)]
    plan: &'a crate::Plan,
    savings: &'a pricing::Savings,
    /// What an approval of this plan checks and approves (no account: offline, the
    /// approving sweep names it with `--account`).
    approval: &'a crate::approval::Stamp,
}

/// `ami-sweeper invoke`.
/// `ami-sweeper lint`: the rules in the order they are tried, then each finding; a rule
/// that can never match fails the command (status 1), a note does not.
pub(super) fn cmd_lint(args: LintArgs) -> Result<(), Failure> {
    let policy = read_policy(&args.policy)?;
    let findings = crate::policy::lint(&policy);
    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    write_stdout(|out| match default_format(args.format) {
        Format::Json => {
            let doc = serde_json::json!({"rules": names, "findings": findings});
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)
        }
        Format::Table => {
            writeln!(out, "rules, first match wins: {}", names.join(", "))?;
            if findings.is_empty() {
                writeln!(out, "no findings")?;
            }
            for f in &findings {
                let level = if f.is_error() { "error" } else { "note" };
                let text = render::wrap(&format!("{level}: {}", f.message()), 2);
                writeln!(out, "{text}")?;
            }
            Ok(())
        }
    })?;
    let errors = findings.iter().filter(|f| f.is_error()).count();
    if errors > 0 {
        return Err(Failure {
            status: EXIT_FAILED,
            message: format!(
                "{errors} rule{} can never match",
                if errors == 1 { "" } else { "s" }
            ),
        });
    }
    Ok(())
}

pub(super) fn cmd_invoke(args: InvokeArgs) -> Result<(), Failure> {
    let InvokeArgs { event } = args;
    let text = std::fs::read_to_string(&event)
        .map_err(|e| Failure::input(format!("{}: cannot read: {e}", event.display())))?;
    let payload: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::input(format!("{}: not JSON: {e}", event.display())))?;
    let config = Config::from_env().map_err(Failure::input)?;
    init_logs();
    let rt = runtime()?;
    let response = rt.block_on(async {
        let base = load_config().await;
        let handler = lambda::Handler::new(base, config);
        let deadline = tokio::time::Instant::now() + LAMBDA_MAX_TIMEOUT;
        handler.handle(payload, Some(deadline)).await
    });
    let print = |v: &serde_json::Value| {
        write_stdout(|out| {
            serde_json::to_writer_pretty(&mut *out, v)?;
            writeln!(out)
        })
    };
    match response {
        Ok(v) => print(&v),
        Err(lambda::HandlerError::RunFailed { failures, report }) => {
            print(&report)?;
            Err(Failure {
                status: EXIT_FAILED,
                message: format!("{failures} failures; see the report"),
            })
        }
        Err(e) => Err(Failure {
            status: if e.is_bad_input() {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILED
            },
            message: e.to_string(),
        }),
    }
}
