//! `pipeline`: the CI binary of the immutable-AMI pipeline.
//!
//! A thin shell over pipeline-core: parse the command line, load and check
//! the config, build one `SdkConfig`, call one core function, print the
//! result and map it to an exit code. It makes no AWS call of its own.
//!
//! # Layout
//! - `cli`: the clap definitions (`pipeline --help`).
//! - `ci`: which CI system runs the step, who started it, the job URL.
//! - `commit`: which commit a step is about (flag, CI variables, git).
//! - `output`: results on stdout, errors on stderr, exit codes.
//! - `progress`: live progress on a terminal, plain log lines in CI.

mod ci;
mod cli;
mod commit;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;
use pipeline_core::aws::{self, autoscaling::AutoScalingGroups, ec2::Ec2, route53::Route53};
use pipeline_core::config::Config;
use pipeline_core::config::EventKind;
use pipeline_core::notify::Notifier;
use pipeline_core::ports::{AutoScaling, Balancer};
use pipeline_core::release::{Built, Commit, Release};
use pipeline_core::run::{Actor, Details, StageRun};
use pipeline_core::stages::build::{BuildPlan, BuildPorts};
use pipeline_core::stages::deploy::{DeployPlan, DeployPorts};
use pipeline_core::stages::promote::{self, Flip, PromotePlan, PromotePorts};
use pipeline_core::stages::status;
use pipeline_core::stages::task::{self, TaskPlan};
use pipeline_core::stages::test::{self, Output};
use pipeline_core::wait::Interrupt;
use pipeline_core::{Error, Result};

use cli::{Cli, Command, ConfigAction, OutputFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let format = cli.output;
    let result = runtime.block_on(run(cli));
    progress::finish(matches!(result, Ok(ref code) if *code == ExitCode::SUCCESS));
    match result {
        Ok(code) => code,
        Err(err) => output::error(format, &err),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let context = ci::detect(env);
    let actor = Actor {
        name: context.actor.clone(),
        job_url: context.job_url.clone(),
    };
    if let Some(step) = cli.command.stage() {
        tracing::info!(
            "{step} started by {} on {}{}{}",
            context.actor.as_deref().unwrap_or("an unknown user"),
            context.system,
            context
                .branch
                .as_deref()
                .map(|b| format!(" (branch {b})"))
                .unwrap_or_default(),
            context
                .job_url
                .as_deref()
                .map(|u| format!(": {u}"))
                .unwrap_or_default()
        );
    }
    match &cli.command {
        Command::Test { commit, command } => {
            let commit = commit::resolve(commit.as_deref(), env)?;
            let stdout = match cli.output {
                OutputFormat::Text => Output::Stdout,
                OutputFormat::Json => Output::Stderr,
            };
            let outcome = test::run(commit, command, stdout, &Interrupt::on_signals()).await?;
            Ok(output::test(cli.output, &outcome))
        }
        Command::Deploy {
            env: name,
            commit,
            ami,
        } => {
            let config = Config::load(&cli.config)?;
            let plan = DeployPlan::new(&config, name)?;
            let source = Source::from_args(ami.as_deref(), commit.as_deref(), env)?;
            let notifier = Notifier::new(&config.notify, env)?;
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let stage = StageRun::begin(
                &notifier,
                &config.app,
                "deploy",
                Some(name),
                source.commit(),
                &actor,
            );
            let result = async {
                let release = source.release(&ec2, &config).await?;
                let environment = &config.environments[name];
                let balancer = aws::balancer(&sdk, &environment.load_balancer);
                let groups = environment
                    .auto_scaling_group
                    .as_ref()
                    .map(|_| AutoScalingGroups::new(&sdk));
                let ports = DeployPorts {
                    instances: &ec2,
                    balancer: balancer.as_ref(),
                    auto_scaling: groups.as_ref().map(|g| g as &dyn AutoScaling),
                };
                release
                    .deploy(&plan, ports, stage.id(), &Interrupt::on_signals())
                    .await
            }
            .await;
            let outcome = stage
                .finish(result, EventKind::Succeeded, |o| Details {
                    ami: Some(o.release.state().image.id.clone()),
                    commit: Some(o.release.commit().to_string()),
                    env: None,
                })
                .await?;
            Ok(output::deploy(cli.output, &outcome))
        }
        Command::Task {
            env: name,
            commit,
            ami,
            name: task_name,
        } => {
            let config = Config::load(&cli.config)?;
            let plan = TaskPlan::new(&config, name, task_name)?;
            let source = Source::from_args(ami.as_deref(), commit.as_deref(), env)?;
            let notifier = Notifier::new(&config.notify, env)?;
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let stage = StageRun::begin(
                &notifier,
                &config.app,
                "task",
                Some(name),
                source.commit(),
                &actor,
            );
            let result = async {
                let release = source.release(&ec2, &config).await?;
                let outcome = task::run(
                    &plan,
                    &ec2,
                    release.image(),
                    release.commit(),
                    stage.id(),
                    &Interrupt::on_signals(),
                )
                .await?;
                Ok((release, outcome))
            }
            .await;
            let (release, outcome) = stage
                .finish(result, EventKind::Succeeded, |(r, _)| Details {
                    ami: Some(r.image().id.clone()),
                    commit: Some(r.commit().to_string()),
                    env: None,
                })
                .await?;
            Ok(output::task(cli.output, name, &release, &outcome))
        }
        Command::Promote { to, commit } => {
            let config = Config::load(&cli.config)?;
            let plan = PromotePlan::new(&config)?;
            let commit = commit::resolve(commit.as_deref(), env)?;
            let notifier = Notifier::new(&config.notify, env)?;
            let sdk = sdk_config(&config).await;
            let (ec2, dns, balancers) = slot_adapters(&config, &plan, &sdk);
            let ports = promote_ports(&ec2, &dns, &balancers);
            let stage = StageRun::begin(
                &notifier,
                &config.app,
                "promote",
                to.as_deref(),
                Some(commit.as_str()),
                &actor,
            );
            let result = promote::promote(
                &plan,
                &ports,
                to.as_deref(),
                &commit,
                &Interrupt::on_signals(),
            )
            .await;
            let flip = stage
                .finish(result, EventKind::Promoted, flip_details)
                .await?;
            Ok(output::flip(cli.output, &flip))
        }
        Command::Rollback => {
            let config = Config::load(&cli.config)?;
            let plan = PromotePlan::new(&config)?;
            let notifier = Notifier::new(&config.notify, env)?;
            let sdk = sdk_config(&config).await;
            let (ec2, dns, balancers) = slot_adapters(&config, &plan, &sdk);
            let ports = promote_ports(&ec2, &dns, &balancers);
            let stage = StageRun::begin(&notifier, &config.app, "rollback", None, None, &actor);
            let result = promote::rollback(&plan, &ports, &Interrupt::on_signals()).await;
            let flip = stage
                .finish(result, EventKind::RolledBack, flip_details)
                .await?;
            Ok(output::flip(cli.output, &flip))
        }
        Command::Status => {
            let config = Config::load(&cli.config)?;
            let plan = config
                .promote
                .as_ref()
                .map(|_| PromotePlan::new(&config))
                .transpose()?;
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let live = match &plan {
                Some(plan) => {
                    let (_, dns, balancers) = slot_adapters(&config, plan, &sdk);
                    Some(promote::live(plan, &promote_ports(&ec2, &dns, &balancers)).await?)
                }
                None => None,
            };
            let balancers: Vec<(String, Box<dyn Balancer>)> = config
                .environments
                .iter()
                .map(|(name, e)| (name.clone(), aws::balancer(&sdk, &e.load_balancer)))
                .collect();
            let environments: Vec<(&str, &dyn Balancer)> = balancers
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_ref()))
                .collect();
            let live_slot = live.as_ref().and_then(|l| l.slot.as_deref());
            let envs = status::status(&config.app, &environments, &ec2, live_slot).await?;
            Ok(output::status(
                cli.output,
                plan.as_ref().map(|p| p.record.as_str()),
                live.as_ref(),
                &envs,
            ))
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let config = Config::load(&cli.config)?;
            let deploys = config
                .environments
                .keys()
                .map(|name| DeployPlan::new(&config, name))
                .collect::<Result<Vec<_>>>()?;
            let promote = config
                .promote
                .as_ref()
                .map(|_| PromotePlan::new(&config))
                .transpose()?;
            Ok(output::plan(
                cli.output,
                &cli.config,
                &BuildPlan::new(&config),
                &deploys,
                promote.as_ref(),
            ))
        }
        Command::Config {
            action: ConfigAction::Schema,
        } => {
            let schema = pipeline_core::config::schema();
            Ok(output::document(cli.output, &schema))
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "pipeline", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::IamPolicy => {
            let config = Config::load(&cli.config)?;
            let document = pipeline_core::iam::document(&pipeline_core::iam::policy(&config));
            Ok(output::document(cli.output, &document))
        }
        Command::Build { commit } => {
            let config = Config::load(&cli.config)?;
            let commit = commit::resolve(commit.as_deref(), env)?;
            let plan = BuildPlan::new(&config);
            let notifier = Notifier::new(&config.notify, env)?;
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let ports = BuildPorts {
                images: &ec2,
                instances: &ec2,
            };
            let stage = StageRun::begin(
                &notifier,
                &config.app,
                "build",
                None,
                Some(commit.as_str()),
                &actor,
            );
            let result = Release::tested(&config.app, commit)
                .build(&plan, ports, stage.id(), &Interrupt::on_signals())
                .await;
            let outcome = stage
                .finish(result, EventKind::Succeeded, |o| Details {
                    ami: Some(o.release.image().id.clone()),
                    ..Details::default()
                })
                .await?;
            Ok(output::build(cli.output, &outcome))
        }
    }
}

/// The adapters promote, rollback and status use for the two slots.
fn slot_adapters(
    config: &Config,
    plan: &PromotePlan,
    sdk: &aws_config::SdkConfig,
) -> (Ec2, Route53, [Box<dyn Balancer>; 2]) {
    let balancer = |slot: &String| aws::balancer(sdk, &config.environments[slot].load_balancer);
    (
        Ec2::new(sdk, &config.region),
        Route53::new(sdk),
        [balancer(&plan.slots[0]), balancer(&plan.slots[1])],
    )
}

fn promote_ports<'a>(
    ec2: &'a Ec2,
    dns: &'a Route53,
    balancers: &'a [Box<dyn Balancer>; 2],
) -> PromotePorts<'a> {
    PromotePorts {
        instances: ec2,
        dns,
        balancers: [balancers[0].as_ref(), balancers[1].as_ref()],
    }
}

/// What `deploy` and `task` run: a commit's AMI, or an AMI named by id.
enum Source {
    Commit(Commit),
    Ami(String),
}

impl Source {
    /// From `--ami` or `--commit` (default: the CI's commit, then git).
    fn from_args(
        ami: Option<&str>,
        commit: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Source> {
        match ami {
            Some(id) if id.starts_with("ami-") => Ok(Source::Ami(id.to_string())),
            Some(id) => Err(Error::Input(format!(
                "--ami {id:?} is not an AMI id (ami-...)"
            ))),
            None => Ok(Source::Commit(commit::resolve(commit, env)?)),
        }
    }

    fn commit(&self) -> Option<&str> {
        match self {
            Source::Commit(c) => Some(c.as_str()),
            Source::Ami(_) => None,
        }
    }

    /// The built release: the commit's AMI, or the named AMI's release.
    async fn release(&self, ec2: &Ec2, config: &Config) -> Result<Release<Built>> {
        match self {
            Source::Ami(id) => {
                Release::<Built>::from_image(ec2, &config.region, &config.app, id).await
            }
            Source::Commit(commit) => {
                Release::<Built>::find(ec2, &config.region, &config.app, commit)
                    .await?
                    .ok_or_else(|| Error::NotBuilt {
                        commit: commit.to_string(),
                    })
            }
        }
    }
}

/// What a promote or rollback tells its webhooks: the slot and its commit.
fn flip_details(flip: &Flip) -> Details {
    Details {
        ami: None,
        env: Some(flip.to.clone()),
        commit: flip.commit.clone(),
    }
}

/// The one SdkConfig: the standard credential chain, the config's region,
/// `AWS_ENDPOINT_URL` if set. Loading it makes no network call.
async fn sdk_config(config: &Config) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()));
    if let Ok(name) = aws_config::AppName::new("pipeline") {
        loader = loader.app_name(name);
    }
    loader.load().await
}

fn init_logging(cli: &Cli) {
    let ours = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = std::env::var("PIPELINE_LOG")
        .unwrap_or_else(|_| format!("warn,pipeline={ours},pipeline_core={ours}"));
    // `test` streams its command's output, which is its progress.
    let stage = cli.command.stage().is_some() || matches!(cli.command, Command::Status);
    progress::init(&filter, stage);
}
