//! The `ami-sweeper` command line: a thin shell over the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ami_sweeper::awscli::{load_inventory, InventoryFiles};
use ami_sweeper::{plan, render, time, Policy};
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
    Plan {
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
        /// The instant ages are measured from (RFC 3339); default: now.
        #[arg(long)]
        now: Option<String>,
        /// Output format; default: table on a terminal, json otherwise.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Print the policy's JSON Schema.
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A failure with its exit status: 2 for bad input (nothing was done), 1 otherwise.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn input(message: impl ToString) -> Self {
        Self {
            status: 2,
            message: message.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ami-sweeper: {}", f.message);
            ExitCode::from(f.status)
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

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Plan {
            policy,
            images,
            instances,
            launch_templates,
            launch_configurations,
            now,
            format,
        } => {
            let policy = read_policy(&policy)?;
            let now = match now {
                Some(s) => time::parse_instant(&s).ok_or_else(|| {
                    Failure::input(format!("--now: {s:?} is not an RFC 3339 instant"))
                })?,
                None => chrono::Utc::now(),
            };
            let inventory = load_inventory(&InventoryFiles {
                images,
                instances,
                launch_templates,
                launch_configurations,
            })
            .map_err(Failure::input)?;
            let plan = plan(&policy, &inventory, now);
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
        Command::Schema => write_stdout(|out| {
            serde_json::to_writer_pretty(&mut *out, &Policy::json_schema())?;
            writeln!(out)
        }),
    }
}

type Out = std::io::BufWriter<std::io::StdoutLock<'static>>;

/// Streams output through a buffer; a closed pipe (`| head`) is the reader's choice.
fn write_stdout(body: impl FnOnce(&mut Out) -> std::io::Result<()>) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match body(&mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure {
            status: 1,
            message: format!("cannot write output: {e}"),
        }),
    }
}
