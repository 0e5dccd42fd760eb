//! The `ami-sweeper` command line: flags in, one function per subcommand
//! ([`commands`]), reports out, and exit statuses that tell the truth (0 done, 1 something
//! failed, 2 unusable input, 143 stopped by a signal).

mod args;
mod commands;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::app::stop;
use crate::edges::config::Config;
use crate::edges::lambda;
use crate::{time, Policy};
use args::{Cli, Command, Format};
use commands::{cmd_cleanup, cmd_invoke, cmd_lint, cmd_plan, cmd_sweep};

/// The slowest pace `--rate`/`--describe-rate` accept: one call every 100 s. Below it a
/// run could not finish, and the wait between calls would overflow a timer.
pub(crate) const MIN_RATE: f64 = 0.01;

/// Exit status of a sweep stopped by SIGTERM or Ctrl-C (after its report): 128 + SIGTERM.
pub(crate) const EXIT_STOPPED: u8 = 143;

/// On SIGTERM or Ctrl-C, asks the run to stop starting new work; it then reports.
pub(crate) fn stop_on_signals(stop: &stop::Stop) {
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
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// Exit status when anything failed (the report, if any, says what).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Lambda's longest timeout: what `invoke` gives the handler as its deadline.
pub(crate) const LAMBDA_MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// A failure with its exit status: 2 for bad input (nothing was done), 1 otherwise.
pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn input(message: impl ToString) -> Self {
        Self {
            status: EXIT_BAD_INPUT,
            message: message.to_string(),
        }
    }
}

/// The binary's entry: the Lambda runtime loop inside Lambda, else the command line.
pub fn main() -> ExitCode {
    // A value the environment sets that this build cannot read stops here, before anything.
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ami-sweeper: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if config.in_lambda {
        return lambda_main(config);
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

/// Inside Lambda: JSON logs at Lambda's own log level (`AWS_LAMBDA_LOG_LEVEL`, read here
/// by the logging set-up, as `AMI_SWEEPER_LOG` is for the command line), then the loop.
fn lambda_main(config: Config) -> ExitCode {
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
    match rt.block_on(lambda::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ami-sweeper: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn default_format(format: Option<Format>) -> Format {
    format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    })
}

pub(crate) fn read_policy(path: &PathBuf) -> Result<Policy, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("{}: cannot read: {e}", path.display())))?;
    Policy::from_json(&text).map_err(Failure::input)
}

pub(crate) fn parse_now(now: Option<String>) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    match now {
        Some(s) => time::parse_instant(&s)
            .ok_or_else(|| Failure::input(format!("--now: {s:?} is not an RFC 3339 instant"))),
        None => Ok(chrono::Utc::now()),
    }
}

/// Progress on one rewritten stderr line, only when stderr is a terminal.
pub(crate) fn terminal_progress() -> Option<crate::app::progress::ProgressSink> {
    std::io::stderr().is_terminal().then(|| {
        crate::app::progress::ProgressSink::new(|p| {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{p}");
            let _ = err.flush();
        })
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            status: EXIT_FAILED,
            message: format!("cannot start the async runtime: {e}"),
        })
}

pub(crate) fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AMI_SWEEPER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// One function per subcommand.
fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Sweep(args) => cmd_sweep(args),
        Command::Cleanup(args) => cmd_cleanup(args),
        Command::Plan(args) => cmd_plan(*args),
        Command::Invoke(args) => cmd_invoke(args),
        Command::Schema => write_stdout(|out| {
            serde_json::to_writer_pretty(&mut *out, &Policy::json_schema())?;
            writeln!(out)
        }),
        Command::Lint(args) => cmd_lint(args),
    }
}

/// Prints a run's report as JSON or a table; any failure in it makes the exit status 1.
pub(crate) fn emit_report<T: serde::Serialize>(
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

pub(crate) type Out = std::io::BufWriter<std::io::StdoutLock<'static>>;

/// Streams output through a buffer; a closed pipe (`| head`) is the reader's choice.
pub(crate) fn write_stdout(
    body: impl FnOnce(&mut Out) -> std::io::Result<()>,
) -> Result<(), Failure> {
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
