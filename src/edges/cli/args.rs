//! The command line's flags. Environment defaults are not read here: the deployment's
//! configuration comes from [`Config`](crate::edges::config::Config) and flags override it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::edges::config::QUEUE_DELAY_SECONDS;

#[derive(Parser)]
#[command(
    name = "ami-sweeper",
    version,
    about = "Keeps an AWS account's AMIs under control"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Show what a policy would deregister, from AWS CLI JSON files, with no AWS access.
    Plan(Box<PlanArgs>),
    /// Inventory EC2 and execute the policy (a dry run unless the policy says otherwise).
    Sweep(SweepArgs),
    /// Drain the cleanup queue once: what the SQS-triggered Lambda does per batch. Each
    /// job is verified against EC2 first (the policy's regions and exclude tags apply).
    Cleanup(CleanupArgs),
    /// Run the Lambda handler in process on an event file (the Docker-free
    /// `sam local invoke`), with the configuration Lambda would have.
    Invoke(InvokeArgs),
    /// Print the policy's JSON Schema (`--format markdown`: the reference in
    /// docs/policy.md, generated from it).
    Schema(SchemaArgs),
    /// Judge a policy's retention rules from the policy alone: rules that can never match
    /// (an earlier rule takes every image they could; exit status 1), and pairs of rules
    /// whose retentions cannot be compared (different `group_by`).
    Lint(LintArgs),
}

/// `ami-sweeper schema`.
#[derive(clap::Args)]
pub(crate) struct SchemaArgs {
    /// `json` (default): the JSON Schema; `markdown`: the policy reference made from it.
    #[arg(long, value_enum, default_value = "json")]
    pub(crate) format: SchemaFormat,
}

/// What `ami-sweeper schema` prints.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SchemaFormat {
    Json,
    Markdown,
}

/// `ami-sweeper lint`.
#[derive(clap::Args)]
pub(crate) struct LintArgs {
    /// The retention policy (JSON).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// Output format; default: table on a terminal, json otherwise.
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
}

/// `ami-sweeper plan`.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// The retention policy (JSON).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// `aws ec2 describe-images --owners self --include-disabled` output.
    #[arg(long)]
    pub(crate) images: PathBuf,
    /// `aws ec2 describe-instances` output.
    #[arg(long)]
    pub(crate) instances: Option<PathBuf>,
    /// `aws ec2 describe-launch-template-versions` output (all versions).
    #[arg(long)]
    pub(crate) launch_templates: Option<PathBuf>,
    /// `aws autoscaling describe-launch-configurations` output.
    #[arg(long)]
    pub(crate) launch_configurations: Option<PathBuf>,
    /// `aws ec2 describe-image-references --image-ids ... --include-all-resource-types`
    /// output: AWS's own reference check.
    #[arg(long)]
    pub(crate) image_references: Option<PathBuf>,
    /// `aws ssm get-parameters-by-path --path / --recursive` (or `get-parameters`) output:
    /// `aws:ec2:image` parameters, `String` ones under `usage.ssm_paths`, and the values of
    /// `resolve:ssm:` launch template ids.
    #[arg(long)]
    pub(crate) ssm_parameters: Option<PathBuf>,
    /// `aws ec2 describe-fleets` output.
    #[arg(long)]
    pub(crate) fleets: Option<PathBuf>,
    /// `aws ec2 describe-spot-fleet-requests` output.
    #[arg(long)]
    pub(crate) spot_fleet_requests: Option<PathBuf>,
    /// `aws autoscaling describe-auto-scaling-groups` output (the template versions groups
    /// launch, for `usage.launch_template_versions: "referenced"`).
    #[arg(long)]
    pub(crate) auto_scaling_groups: Option<PathBuf>,
    /// `aws batch describe-compute-environments` output.
    #[arg(long)]
    pub(crate) batch_compute_environments: Option<PathBuf>,
    /// `aws imagebuilder list-image-recipes --owner Self` output.
    #[arg(long)]
    pub(crate) image_recipes: Option<PathBuf>,
    /// `aws cloudformation describe-stacks` output: stacks whose parameters name images.
    #[arg(long)]
    pub(crate) cloudformation_stacks: Option<PathBuf>,
    /// `aws emr describe-cluster` outputs, one per cluster (one after the other).
    #[arg(long)]
    pub(crate) emr_clusters: Option<PathBuf>,
    /// `aws ec2 describe-spot-instance-requests` output.
    #[arg(long)]
    pub(crate) spot_instance_requests: Option<PathBuf>,
    /// A local copy of a reference object (Terraform state, Packer manifest, released
    /// template): every AMI id in it keeps its image. Repeatable.
    #[arg(long = "reference-object")]
    pub(crate) reference_objects: Vec<PathBuf>,
    /// `aws rbin get-rule` outputs for the region's AMI and snapshot rules (a JSON array,
    /// or one after the other): the plan shows `restorable_until` and deferred snapshots.
    #[arg(long)]
    pub(crate) recycle_bin_rules: Option<PathBuf>,
    /// `aws ec2 describe-snapshots --owner-ids self` output: lists snapshots whose
    /// image is gone (lost cleanups and, with `cleanup.orphans`, foreign orphans).
    #[arg(long)]
    pub(crate) snapshots: Option<PathBuf>,
    /// The deployment's bundle buckets (comma-separated): bundles elsewhere are shown
    /// kept, as a sweep would keep them. Not given: bundles are planned by the policy alone.
    #[arg(long, value_delimiter = ',')]
    pub(crate) bundle_buckets: Option<Vec<String>>,
    /// The region whose prices the saving estimate uses; default: the policy's first
    /// region, else us-east-1.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// The instant ages are measured from (RFC 3339); default: now.
    #[arg(long)]
    pub(crate) now: Option<String>,
    /// Output format; default: table on a terminal, json otherwise. `markdown`: for a
    /// pull-request comment or a ticket, within GitHub's 65,536-character limit.
    #[arg(long, value_enum)]
    pub(crate) format: Option<ReportFormat>,
}

/// `ami-sweeper sweep`.
#[derive(clap::Args)]
pub(crate) struct SweepArgs {
    /// The retention policy (JSON).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// Region to sweep (repeatable); default: the policy's regions, else the configured one.
    #[arg(long = "region")]
    pub(crate) regions: Vec<String>,
    /// Plan and report only, whatever the policy says.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Send cleanup jobs to this SQS queue instead of running them in process
    /// (default: `CLEANUP_QUEUE_URL`).
    #[arg(long)]
    pub(crate) queue_url: Option<String>,
    /// Delay of queued cleanup jobs, in seconds (at most 900).
    #[arg(long, default_value_t = QUEUE_DELAY_SECONDS)]
    pub(crate) queue_delay: u32,
    /// Deregistrations (and in-process snapshot deletions) per second after the burst;
    /// marks and retirement calls in proportion to their EC2 buckets. Overrides the
    /// policy's `limits.api_share`. Default: each pacer's share of EC2's bucket (5/s here).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Launch-permission lookups (and reference checks) per second after the burst.
    /// Overrides the policy's `limits.api_share`. Default: 15/s.
    #[arg(long)]
    pub(crate) describe_rate: Option<f64>,
    /// Seconds between in-process retries of cleanup jobs (e.g. snapshot still in use).
    #[arg(long, default_value_t = 15)]
    pub(crate) retry_delay: u64,
    /// Buckets holding instance-store bundles (comma-separated): bundles elsewhere are
    /// kept, and these are scanned for bundles whose image is gone. None: no bundle cleanup.
    /// Default: `AMI_SWEEPER_BUNDLE_BUCKETS`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) bundle_buckets: Option<Vec<String>>,
    /// Write the report to this bucket (default: `AMI_SWEEPER_REPORT_BUCKET`): with a policy
    /// naming `accounts`, each pair's as `reports/RUN/ACCOUNT/REGION.json`; otherwise the
    /// run's as `reports/RUN/ACCOUNT/report.json` (`self` without `AMI_SWEEPER_ACCOUNT_ID`).
    #[arg(long)]
    pub(crate) report_bucket: Option<String>,
    /// With a policy naming `accounts`: (account, region) pairs swept at once. Default:
    /// every pair of the run at once (each pair has its own EC2 buckets), up to the bound
    /// this machine sets: each pair holds its inventory in memory and its own connections,
    /// so one pair per 16 of three quarters of the open files the process may hold (48
    /// under the usual 1,024), and never more than 256.
    #[arg(long)]
    pub(crate) account_concurrency: Option<usize>,
    /// The instant ages are measured from (RFC 3339); default: now.
    #[arg(long)]
    pub(crate) now: Option<String>,
    /// Output format; default: table on a terminal, json otherwise. `markdown`: for a
    /// pull-request comment or a ticket, within GitHub's 65,536-character limit.
    #[arg(long, value_enum)]
    pub(crate) format: Option<ReportFormat>,
    /// Act only on this approved plan: the JSON `plan --format json` or a dry run's
    /// `sweep --format json` wrote (an organization's: its report). Each image is decided
    /// again; only images condemned now and in the plan, with the same action, are acted on.
    /// A plan of another policy, account or region, too old, or dated in the future is
    /// refused (status 2, nothing changed).
    #[arg(long)]
    pub(crate) approved_plan: Option<PathBuf>,
    /// The account an approved plan without one (the offline `plan`'s) was made for.
    #[arg(long, requires = "approved_plan")]
    pub(crate) account: Option<String>,
    /// How old an approved plan may be, in days (default: `AMI_SWEEPER_APPROVAL_MAX_AGE_DAYS`,
    /// else 7).
    #[arg(long, requires = "approved_plan", value_parser = clap::value_parser!(u32).range(1..=365))]
    pub(crate) approved_plan_max_age_days: Option<u32>,
    /// Act only on approval: without `--approved-plan` the sweep is a dry run whose report
    /// is the plan to approve (default: `AMI_SWEEPER_APPROVAL_ONLY`).
    #[arg(long)]
    pub(crate) approval_only: bool,
}

/// `ami-sweeper cleanup`.
#[derive(clap::Args)]
pub(crate) struct CleanupArgs {
    /// The cleanup queue (default: `CLEANUP_QUEUE_URL`).
    #[arg(long)]
    pub(crate) queue_url: Option<String>,
    /// The deployment's policy (its regions and exclude tags bound what may be deleted).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// Buckets whose instance-store bundles may be deleted (comma-separated); none:
    /// bundle cleanup is off. Default: `AMI_SWEEPER_BUNDLE_BUCKETS`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) bundle_buckets: Option<Vec<String>>,
    /// Send jobs that fail verification (and malformed messages) here, with the reason
    /// (default: `CLEANUP_DLQ_URL`).
    #[arg(long)]
    pub(crate) dead_letter_queue_url: Option<String>,
    /// The drain ends after this many seconds, whatever is left.
    #[arg(long, default_value_t = 300)]
    pub(crate) max_seconds: u64,
    /// Output format; default: table on a terminal, json otherwise.
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
}

/// `ami-sweeper invoke`.
#[derive(clap::Args)]
pub(crate) struct InvokeArgs {
    /// The event JSON (see events/).
    pub(crate) event: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// The formats of a plan or a sweep report: a table and JSON as every command has, and
/// markdown.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ReportFormat {
    Table,
    Json,
    Markdown,
}

impl ReportFormat {
    /// The common format, or `None` for markdown.
    pub(crate) fn common(self) -> Option<Format> {
        match self {
            Self::Table => Some(Format::Table),
            Self::Json => Some(Format::Json),
            Self::Markdown => None,
        }
    }
}
