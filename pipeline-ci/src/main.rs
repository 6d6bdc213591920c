//! `pipeline`: the CI binary of the immutable-AMI pipeline.
//!
//! A thin shell over pipeline-core's [`Session`]: parse the command line,
//! load the config, build the session, call one method, print its report
//! and exit with its code. Every lock, ledger entry, test gate and AWS call
//! happens in the library.
//!
//! # Layout
//! - `cli`: the clap definitions (`pipeline --help`).
//! - `ci`: which CI system runs the step, who started it, the job URL.
//! - `commit`: which commit a step is about (flag, CI variables, git).
//! - `output`: results on stdout, errors on stderr, exit codes.
//! - `dashboard`: `status --html`, a one-page static dashboard.
//! - `progress`: live progress on a terminal, plain log lines in CI.

mod ci;
mod cli;
mod commit;
mod dashboard;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;
use pipeline_core::config::Config;
use pipeline_core::session::{
    self, BuildOptions, DeployOptions, DeployTarget, GcOptions, HistoryOptions, PlanReport,
    PromoteOptions, RollbackOptions, Session, StatusOptions, TaskOptions, TestOptions,
    UnlockOptions, WatchOptions,
};
use pipeline_core::stages::test::Output;
use pipeline_core::wait::Interrupt;
use pipeline_core::{Error, Result};

use cli::{Cli, Command, ConfigAction, OutputFormat, PolicyRole};

/// How many ledger entries the dashboard shows.
const DASHBOARD_EVENTS: usize = 12;

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::init_for(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let format = cli.output;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => output::error(format, &err),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let format = cli.output;
    // Prints what a session method returns, in the chosen format.
    macro_rules! report {
        ($call:expr) => {
            Ok(output::report(format, &$call.await?))
        };
    }
    let env = |name: &str| std::env::var(name).ok();
    let shown = cli.config.display().to_string();
    let step = cli.command.stage();
    match cli.command {
        Command::Config {
            action: ConfigAction::Schema,
        } => Ok(output::document(format, &pipeline_core::config::schema())),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "pipeline", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::IamPolicy { role } => {
            let config = Config::load(&cli.config)?;
            let policy = match role {
                PolicyRole::Pipeline => pipeline_core::iam::policy(&config),
                PolicyRole::Instances => pipeline_core::iam::instance_policy(&config),
            };
            Ok(output::document(
                format,
                &pipeline_core::iam::document(&policy),
            ))
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let config = Config::load(&cli.config)?;
            Ok(output::report(format, &PlanReport::new(&config, &shown)?))
        }
        Command::Test {
            commit,
            no_record,
            command,
        } => {
            let options = TestOptions {
                commit: commit::resolve(commit.as_deref(), env)?,
                command,
                output: match format {
                    OutputFormat::Text => Output::Stdout,
                    OutputFormat::Json => Output::Stderr,
                },
            };
            if no_record {
                tracing::warn!(
                    "--no-record: the verdict is not recorded; `pipeline build` will refuse the commit"
                );
                let interrupt = Interrupt::on_signals();
                return report!(session::test_unrecorded(options, &interrupt));
            }
            if !cli.config.exists() {
                return Err(Error::NotRecorded {
                    commit: options.commit.to_string(),
                    reason: format!("there is no {shown} to find the state bucket in"),
                });
            }
            report!(open(&cli.config, step).await?.test(options))
        }
        Command::Build {
            commit,
            skip_test_gate,
            artifact,
            rebake,
            lock,
        } => {
            let options = BuildOptions {
                commit: commit::resolve(commit.as_deref(), env)?,
                skip_test_gate,
                lock_wait: lock.timeout,
                artifact,
                rebake,
            };
            report!(open(&cli.config, step).await?.build(options))
        }
        Command::Deploy {
            env: name,
            slot,
            allow_live,
            commit,
            ami,
            lock,
        } => {
            let options = DeployOptions {
                target: match (name, slot) {
                    (Some(name), _) => DeployTarget::Env(name),
                    (None, _) => DeployTarget::IdleSlot,
                },
                allow_live,
                release: commit::release(ami.as_deref(), commit.as_deref(), env)?,
                lock_wait: lock.timeout,
            };
            report!(open(&cli.config, step).await?.deploy(options))
        }
        Command::Task {
            env: name,
            commit,
            ami,
            name: task,
            lock,
        } => {
            let options = TaskOptions {
                env: name,
                task,
                release: commit::release(ami.as_deref(), commit.as_deref(), env)?,
                lock_wait: lock.timeout,
            };
            report!(open(&cli.config, step).await?.task(options))
        }
        Command::Promote {
            to,
            commit,
            adopt,
            lock,
        } => {
            let options = PromoteOptions {
                to,
                adopt,
                commit: commit::resolve(commit.as_deref(), env)?,
                lock_wait: lock.timeout,
            };
            report!(open(&cli.config, step).await?.promote(options))
        }
        Command::Rollback { lock } => {
            let options = RollbackOptions {
                lock_wait: lock.timeout,
            };
            report!(open(&cli.config, step).await?.rollback(options))
        }
        Command::Watch { span, lock } => {
            let options = WatchOptions {
                span,
                lock_wait: lock.timeout,
            };
            report!(open(&cli.config, step).await?.watch(options))
        }
        Command::Status { html } => {
            let recent = if html.is_some() { DASHBOARD_EVENTS } else { 0 };
            let status = open(&cli.config, step).await?;
            let report = status.status(StatusOptions { recent }).await?;
            if let Some(file) = html {
                dashboard::write(&file, &report)?;
            }
            Ok(output::report(format, &report))
        }
        Command::History { env: name, limit } => {
            let options = HistoryOptions { env: name, limit };
            report!(open(&cli.config, step).await?.history(options))
        }
        Command::Unlock { env: scope } => {
            let options = UnlockOptions { scope };
            report!(open(&cli.config, step).await?.unlock(options))
        }
        Command::Gc {
            keep,
            dry_run,
            lock,
        } => {
            let options = GcOptions {
                keep,
                dry_run,
                lock_wait: lock.timeout,
            };
            report!(open(&cli.config, step).await?.gc(options))
        }
    }
}

/// Loads the config at `path` and starts a session on it for `step`, run
/// by whoever the CI says started the job (logged for a `step` that
/// changes AWS).
async fn open(path: &std::path::Path, step: Option<&str>) -> Result<Session> {
    let config = Config::load(path)?;
    let actor = ci::actor(step);
    let sdk = pipeline_core::aws::sdk_config(&config.region).await;
    Session::new(config, &sdk, actor, |name| std::env::var(name).ok())
}
