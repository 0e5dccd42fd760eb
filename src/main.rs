//! The `ami-sweeper` command line: a thin shell over the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ami_sweeper::adapters::awscli::{load_inventory, load_snapshots, InventoryFiles};
use ami_sweeper::app::{cleanup, run, stop, sweep};
use ami_sweeper::edges::{lambda, render};
use ami_sweeper::verify::WorkerRules;
use ami_sweeper::{orphans, plan, time, Policy};
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: the planner allocates and frees hundreds of thousands of small strings, where
/// glibc's allocator spends more time than the planning itself.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ami-sweeper",
    version,
    about = "Keeps an AWS account's AMIs under control"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a policy would deregister, from AWS CLI JSON files, with no AWS access.
    Plan(PlanArgs),
    /// Inventory EC2 and execute the policy (a dry run unless the policy says otherwise).
    Sweep(SweepArgs),
    /// Drain the cleanup queue once: what the SQS-triggered Lambda does per batch. Each
    /// job is verified against EC2 first (the policy's regions and exclude tags apply).
    Cleanup(CleanupArgs),
    /// Run the Lambda handler in process on an event file (the Docker-free
    /// `sam local invoke`), with the configuration Lambda would have.
    Invoke(InvokeArgs),
    /// Print the policy's JSON Schema.
    Schema,
}

/// `ami-sweeper plan`.
#[derive(clap::Args)]
struct PlanArgs {
    /// The retention policy (JSON).
    #[arg(long)]
    policy: PathBuf,
    /// `aws ec2 describe-images --owners self --include-disabled` output.
    #[arg(long)]
    images: PathBuf,
    /// `aws ec2 describe-instances` output.
    #[arg(long)]
    instances: Option<PathBuf>,
    /// `aws ec2 describe-launch-template-versions` output (all versions).
    #[arg(long)]
    launch_templates: Option<PathBuf>,
    /// `aws autoscaling describe-launch-configurations` output.
    #[arg(long)]
    launch_configurations: Option<PathBuf>,
    /// `aws ec2 describe-snapshots --owner-ids self` output: lists snapshots whose
    /// image is gone (lost cleanups and, with `cleanup.orphans`, foreign orphans).
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// The deployment's bundle buckets (comma-separated): bundles elsewhere are shown
    /// kept, as a sweep would keep them. Not given: bundles are planned by the policy alone.
    #[arg(long, value_delimiter = ',')]
    bundle_buckets: Option<Vec<String>>,
    /// The instant ages are measured from (RFC 3339); default: now.
    #[arg(long)]
    now: Option<String>,
    /// Output format; default: table on a terminal, json otherwise.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// `ami-sweeper sweep`.
#[derive(clap::Args)]
struct SweepArgs {
    /// The retention policy (JSON).
    #[arg(long)]
    policy: PathBuf,
    /// Region to sweep (repeatable); default: the policy's regions, else the configured one.
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Plan and report only, whatever the policy says.
    #[arg(long)]
    dry_run: bool,
    /// Send cleanup jobs to this SQS queue instead of running them in process.
    #[arg(long, env = "CLEANUP_QUEUE_URL")]
    queue_url: Option<String>,
    /// Delay of queued cleanup jobs, in seconds (at most 900).
    #[arg(long, default_value_t = lambda::QUEUE_DELAY_SECONDS)]
    queue_delay: u32,
    /// Deregistrations (and in-process snapshot deletions) per second after the burst.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Launch-permission lookups per second after the burst.
    #[arg(long, default_value_t = 15.0)]
    describe_rate: f64,
    /// Seconds between in-process retries of cleanup jobs (e.g. snapshot still in use).
    #[arg(long, default_value_t = 15)]
    retry_delay: u64,
    /// Buckets holding instance-store bundles (comma-separated): bundles elsewhere are
    /// kept, and these are scanned for bundles whose image is gone. None: no bundle cleanup.
    #[arg(long, env = "AMI_SWEEPER_BUNDLE_BUCKETS", value_delimiter = ',')]
    bundle_buckets: Vec<String>,
    /// The instant ages are measured from (RFC 3339); default: now.
    #[arg(long)]
    now: Option<String>,
    /// Output format; default: table on a terminal, json otherwise.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// `ami-sweeper cleanup`.
#[derive(clap::Args)]
struct CleanupArgs {
    /// The cleanup queue.
    #[arg(long, env = "CLEANUP_QUEUE_URL")]
    queue_url: String,
    /// The deployment's policy (its regions and exclude tags bound what may be deleted).
    #[arg(long)]
    policy: PathBuf,
    /// Buckets whose instance-store bundles may be deleted (comma-separated); none:
    /// bundle cleanup is off.
    #[arg(long, env = "AMI_SWEEPER_BUNDLE_BUCKETS", value_delimiter = ',')]
    bundle_buckets: Vec<String>,
    /// Send jobs that fail verification (and malformed messages) here, with the reason.
    #[arg(long, env = "CLEANUP_DLQ_URL")]
    dead_letter_queue_url: Option<String>,
    /// The drain ends after this many seconds, whatever is left.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Output format; default: table on a terminal, json otherwise.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// `ami-sweeper invoke`.
#[derive(clap::Args)]
struct InvokeArgs {
    /// The event JSON (see events/).
    event: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// The slowest pace `--rate`/`--describe-rate` accept: one call every 100 s. Below it a
/// run could not finish, and the wait between calls would overflow a timer.
const MIN_RATE: f64 = 0.01;

/// A comma-separated list of bucket names as a set, blanks dropped.
fn buckets(names: Vec<String>) -> std::collections::BTreeSet<String> {
    names
        .into_iter()
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect()
}

/// Exit status of a sweep stopped by SIGTERM or Ctrl-C (after its report): 128 + SIGTERM.
const EXIT_STOPPED: u8 = 143;

/// On SIGTERM or Ctrl-C, asks the run to stop starting new work; it then reports.
fn stop_on_signals(stop: &stop::Stop) {
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!(
            "ami-sweeper: stopping: no new deregistrations; finishing what is in flight \
             (a second signal exits at once; marked storage is reconciled by the next sweep)"
        );
        stop.request();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("ami-sweeper: second signal: exiting now");
        std::process::exit(i32::from(EXIT_STOPPED));
    });
}

/// Exit status for unusable input (policy, input file, flags): nothing was done.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit status when anything failed (the report, if any, says what).
const EXIT_FAILED: u8 = 1;
/// Lambda's longest timeout: what `invoke` gives the handler as its deadline.
const LAMBDA_MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// A failure with its exit status: 2 for bad input (nothing was done), 1 otherwise.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn input(message: impl ToString) -> Self {
        Self {
            status: EXIT_BAD_INPUT,
            message: message.to_string(),
        }
    }
}

fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_main();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ami-sweeper: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

/// Inside Lambda: JSON logs honouring the Lambda log level, then the runtime loop.
fn lambda_main() -> ExitCode {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into())
        .to_lowercase();
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_current_span(false)
        .without_time()
        .with_target(false)
        .try_init();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(f) => {
            eprintln!("ami-sweeper: {}", f.message);
            return ExitCode::from(f.status);
        }
    };
    match rt.block_on(lambda::serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ami-sweeper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn default_format(format: Option<Format>) -> Format {
    format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    })
}

fn read_policy(path: &PathBuf) -> Result<Policy, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("{}: cannot read: {e}", path.display())))?;
    Policy::from_json(&text).map_err(Failure::input)
}

fn parse_now(now: Option<String>) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    match now {
        Some(s) => time::parse_instant(&s)
            .ok_or_else(|| Failure::input(format!("--now: {s:?} is not an RFC 3339 instant"))),
        None => Ok(chrono::Utc::now()),
    }
}

/// Progress on one rewritten stderr line, only when stderr is a terminal.
fn terminal_progress() -> Option<ami_sweeper::app::progress::ProgressSink> {
    std::io::stderr().is_terminal().then(|| {
        ami_sweeper::app::progress::ProgressSink::new(|p| {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{p}");
            let _ = err.flush();
        })
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            status: EXIT_FAILED,
            message: format!("cannot start the async runtime: {e}"),
        })
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AMI_SWEEPER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Sweep(args) => cmd_sweep(args),
        Command::Cleanup(args) => cmd_cleanup(args),
        Command::Plan(args) => cmd_plan(args),
        Command::Invoke(args) => cmd_invoke(args),
        Command::Schema => write_stdout(|out| {
            serde_json::to_writer_pretty(&mut *out, &Policy::json_schema())?;
            writeln!(out)
        }),
    }
}

/// `ami-sweeper sweep`.
fn cmd_sweep(args: SweepArgs) -> Result<(), Failure> {
    let SweepArgs {
        policy,
        regions,
        dry_run,
        queue_url,
        queue_delay,
        rate,
        describe_rate,
        retry_delay,
        bundle_buckets,
        now,
        format,
    } = args;
    let policy = read_policy(&policy)?;
    let now = parse_now(now)?;
    for (flag, value) in [("--rate", rate), ("--describe-rate", describe_rate)] {
        if !(value.is_finite() && value >= MIN_RATE) {
            return Err(Failure::input(format!(
                "{flag}: must be a number of calls per second, at least {MIN_RATE}"
            )));
        }
    }
    init_logs();
    let rt = runtime()?;
    let report = rt.block_on(async {
        let base = ami_sweeper::adapters::aws::load_config().await;
        let regions = run::regions_for(&policy, &regions, base.region().map(|r| r.as_ref()))
            .map_err(Failure::input)?;
        let queue = match queue_url {
            Some(url) => run::QueueMode::Sqs {
                url,
                delay_seconds: queue_delay,
            },
            None => run::QueueMode::Local(cleanup::RetryPolicy {
                delay: std::time::Duration::from_secs(retry_delay),
                per_second: rate,
                ..Default::default()
            }),
        };
        let opts = run::SweepOptions {
            regions: regions.clone(),
            force_dry_run: dry_run,
            queue,
            exec: sweep::ExecConfig {
                deregister_per_second: rate,
                describe_per_second: describe_rate,
                progress: terminal_progress(),
                bundle_buckets: buckets(bundle_buckets),
                ..Default::default()
            },
            now,
        };
        let clients = ami_sweeper::adapters::aws::Clients::new(base);
        stop_on_signals(&opts.exec.stop);
        let report = run::run_sweep(&clients, &policy, &regions, &opts).await;
        if opts.exec.progress.is_some() {
            eprintln!();
        }
        Ok::<_, Failure>(report)
    })?;
    emit_report(format, &report, render::sweep_table, report.totals.failures)?;
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

/// `ami-sweeper cleanup`.
fn cmd_cleanup(args: CleanupArgs) -> Result<(), Failure> {
    let CleanupArgs {
        queue_url,
        policy,
        bundle_buckets,
        dead_letter_queue_url,
        max_seconds,
        format,
    } = args;
    let policy = read_policy(&policy)?;
    init_logs();
    let rt = runtime()?;
    let limits = run::DrainLimits {
        max_time: std::time::Duration::from_secs(max_seconds),
        ..Default::default()
    };
    let report = rt
        .block_on(async {
            let base = ami_sweeper::adapters::aws::load_config().await;
            let rules =
                WorkerRules::new(&policy, base.region().map(|r| r.as_ref()), bundle_buckets);
            let clients = ami_sweeper::adapters::aws::Clients::new(base);
            let dlq = dead_letter_queue_url.as_deref();
            run::drain_queue(&clients, &queue_url, &rules, dlq, limits).await
        })
        .map_err(|e| Failure {
            status: EXIT_FAILED,
            message: e.to_string(),
        })?;
    emit_report(format, &report, render::cleanup_table, report.failures())
}

/// `ami-sweeper plan`.
fn cmd_plan(args: PlanArgs) -> Result<(), Failure> {
    let PlanArgs {
        policy,
        images,
        instances,
        launch_templates,
        launch_configurations,
        snapshots,
        bundle_buckets,
        now,
        format,
    } = args;
    let policy = read_policy(&policy)?;
    let now = parse_now(now)?;
    let inventory = load_inventory(&InventoryFiles {
        images,
        instances,
        launch_templates,
        launch_configurations,
    })
    .map_err(Failure::input)?;
    let mut plan = plan(&policy, &inventory, now);
    if let Some(b) = bundle_buckets {
        plan.retain_bundles_outside(&buckets(b));
    }
    if let Some(path) = snapshots {
        let found = load_snapshots(&path).map_err(Failure::input)?;
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
    drop(inventory);
    let format = default_format(format);
    write_stdout(|out| match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &plan)?;
            writeln!(out)
        }
        Format::Table => render::write_plan_table(&plan, out),
    })
}

/// `ami-sweeper invoke`.
fn cmd_invoke(args: InvokeArgs) -> Result<(), Failure> {
    let InvokeArgs { event } = args;
    let text = std::fs::read_to_string(&event)
        .map_err(|e| Failure::input(format!("{}: cannot read: {e}", event.display())))?;
    let payload: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::input(format!("{}: not JSON: {e}", event.display())))?;
    init_logs();
    let rt = runtime()?;
    let response = rt.block_on(async {
        let base = ami_sweeper::adapters::aws::load_config().await;
        let handler = lambda::Handler::new(base);
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

/// Prints a run's report as JSON or a table; any failure in it makes the exit status 1.
fn emit_report<T: serde::Serialize>(
    format: Option<Format>,
    report: &T,
    table: fn(&T) -> String,
    failures: usize,
) -> Result<(), Failure> {
    let format = default_format(format);
    write_stdout(|out| match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        Format::Table => out.write_all(table(report).as_bytes()),
    })?;
    if failures > 0 {
        return Err(Failure {
            status: EXIT_FAILED,
            message: format!("{failures} failures; see the report"),
        });
    }
    Ok(())
}

type Out = std::io::BufWriter<std::io::StdoutLock<'static>>;

/// Streams output through a buffer; a closed pipe (`| head`) is the reader's choice.
fn write_stdout(body: impl FnOnce(&mut Out) -> std::io::Result<()>) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match body(&mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure {
            status: EXIT_FAILED,
            message: format!("cannot write output: {e}"),
        }),
    }
}
