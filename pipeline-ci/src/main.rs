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
//! - `dashboard`: `status --html`, a one-page static dashboard.
//! - `progress`: live progress on a terminal, plain log lines in CI.

mod ci;
mod cli;
mod commit;
mod dashboard;
mod output;
mod progress;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pipeline_core::aws::s3::StateBucket;
use pipeline_core::aws::{self, autoscaling::AutoScalingGroups, ec2::Ec2, route53::Route53};
use pipeline_core::config::Config;
use pipeline_core::config::EventKind;
use pipeline_core::ledger::Ledger;
use pipeline_core::lock;
use pipeline_core::notify::Notifier;
use pipeline_core::ports::{AutoScaling, Balancer, Instances};
use pipeline_core::recovery;
use pipeline_core::release::{Built, Commit, Release, short_commit};
use pipeline_core::run::{Actor, Begun, Details, StageRun, Tracking};
use pipeline_core::stages::build::{BuildPlan, BuildPorts};
use pipeline_core::stages::deploy::{DeployPlan, DeployPorts};
use pipeline_core::stages::gc::{self, GcPlan, GcPorts};
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
            // The verdict goes in the ledger when there is a config to
            // find the state bucket in.
            let tracked = if cli.config.exists() {
                let config = Config::load(&cli.config)?;
                let sdk = sdk_config(&config).await;
                Some(tracking(
                    &config,
                    &sdk,
                    actor.clone(),
                    env,
                    cli.lock_timeout,
                )?)
            } else {
                tracing::warn!(
                    "no {}: the verdict is not recorded, so `pipeline build` will not find it",
                    cli.config.display()
                );
                None
            };
            let interrupt = Interrupt::on_signals();
            let outcome = match &tracked {
                Some(tracking) => {
                    let stage = StageRun::begin(
                        tracking,
                        "test",
                        None,
                        Some(commit.as_str()),
                        &[],
                        &interrupt,
                    )
                    .await?;
                    let result = test::run(commit, command, stdout, &interrupt).await;
                    stage
                        .finish(result, EventKind::Succeeded, |o| Details {
                            outcome: Some(if o.passed { "passed" } else { "failed" }),
                            ..Details::default()
                        })
                        .await?
                }
                None => test::run(commit, command, stdout, &interrupt).await?,
            };
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
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let interrupt = Interrupt::on_signals();
            let scopes = [name.clone()];
            let Some(stage) = begin_queued(
                &tracking,
                "deploy",
                Some(name),
                source.commit(),
                &scopes,
                &interrupt,
                cli.output,
            )
            .await?
            else {
                return Ok(ExitCode::SUCCESS);
            };
            let result = async {
                let release = source.release(&ec2, &config).await?;
                let environment = &config.environments[name];
                let balancer = aws::balancer(&sdk, &environment.load_balancer);
                let groups = environment
                    .placement
                    .group()
                    .map(|_| AutoScalingGroups::new(&sdk));
                let ports = DeployPorts {
                    instances: &ec2,
                    balancer: balancer.as_ref(),
                    auto_scaling: groups.as_ref().map(|g| g as &dyn AutoScaling),
                };
                release.deploy(&plan, ports, stage.id(), &interrupt).await
            }
            .await;
            let outcome = stage
                .finish(result, EventKind::Succeeded, |o| Details {
                    ami: Some(o.release.state().image.id.clone()),
                    commit: Some(o.release.commit().to_string()),
                    instances: o.release.state().instances.clone(),
                    ..Details::default()
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
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let interrupt = Interrupt::on_signals();
            let scopes = [name.clone()];
            let mut stage = StageRun::begin(
                &tracking,
                "task",
                Some(name),
                source.commit(),
                &scopes,
                &interrupt,
            )
            .await?;
            let recovered = recover(&mut stage, &ec2, &config.app).await;
            let result = async {
                recovered?;
                let release = source.release(&ec2, &config).await?;
                let outcome = task::run(
                    &plan,
                    &ec2,
                    release.image(),
                    release.commit(),
                    stage.id(),
                    &interrupt,
                )
                .await?;
                Ok((release, outcome))
            }
            .await;
            let (release, outcome) = stage
                .finish(result, EventKind::Succeeded, |(r, o)| Details {
                    ami: Some(r.image().id.clone()),
                    commit: Some(r.commit().to_string()),
                    instances: vec![o.instance.clone()],
                    ..Details::default()
                })
                .await?;
            Ok(output::task(cli.output, name, &release, &outcome))
        }
        Command::Promote { to, commit } => {
            let config = Config::load(&cli.config)?;
            let plan = PromotePlan::new(&config)?;
            let commit = commit::resolve(commit.as_deref(), env)?;
            let sdk = sdk_config(&config).await;
            let (ec2, dns, balancers) = slot_adapters(&config, &plan, &sdk);
            let ports = promote_ports(&ec2, &dns, &balancers);
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let interrupt = Interrupt::on_signals();
            let stage = StageRun::begin(
                &tracking,
                "promote",
                to.as_deref(),
                Some(commit.as_str()),
                &plan.slots,
                &interrupt,
            )
            .await?;
            let result = promote::promote(&plan, &ports, to.as_deref(), &commit, &interrupt).await;
            let flip = stage
                .finish(result, EventKind::Promoted, flip_details)
                .await?;
            Ok(output::flip(cli.output, &flip))
        }
        Command::Rollback => {
            let config = Config::load(&cli.config)?;
            let plan = PromotePlan::new(&config)?;
            let sdk = sdk_config(&config).await;
            let (ec2, dns, balancers) = slot_adapters(&config, &plan, &sdk);
            let ports = promote_ports(&ec2, &dns, &balancers);
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let interrupt = Interrupt::on_signals();
            let stage =
                StageRun::begin(&tracking, "rollback", None, None, &plan.slots, &interrupt).await?;
            let result = promote::rollback(&plan, &ports, &interrupt).await;
            let flip = stage
                .finish(result, EventKind::RolledBack, flip_details)
                .await?;
            Ok(output::flip(cli.output, &flip))
        }
        Command::Status { html } => {
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
            if let Some(file) = html {
                let events = ledger(&config, &sdk).history(None, 12).await?;
                let page = dashboard::render(
                    &config.app,
                    plan.as_ref().map(|p| p.record.as_str()),
                    live.as_ref(),
                    &envs,
                    &events,
                );
                std::fs::write(file, page)
                    .map_err(|e| Error::Input(format!("cannot write {}: {e}", file.display())))?;
                tracing::info!("dashboard written to {}", file.display());
            }
            Ok(output::status(
                cli.output,
                plan.as_ref().map(|p| p.record.as_str()),
                live.as_ref(),
                &envs,
            ))
        }
        Command::History { env: name, limit } => {
            let config = Config::load(&cli.config)?;
            if let Some(name) = name {
                config.environment(name)?;
            }
            let sdk = sdk_config(&config).await;
            let entries = ledger(&config, &sdk)
                .history(name.as_deref(), *limit)
                .await?;
            Ok(output::history(cli.output, &entries))
        }
        Command::Unlock { env: scope } => {
            let config = Config::load(&cli.config)?;
            let sdk = sdk_config(&config).await;
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let mut stage = StageRun::begin(
                &tracking,
                "unlock",
                Some(scope),
                None,
                &[],
                &Interrupt::never(),
            )
            .await?;
            let removed = lock::unlock(&*tracking.ledger.store(), &config.app, scope).await;
            if let Ok(Some(holder)) = &removed {
                stage.note(format!("removed the lock of {}", holder.describe()));
            }
            let removed = stage
                .finish(removed, EventKind::Succeeded, |_| Details::default())
                .await?;
            Ok(output::unlock(cli.output, scope, removed.as_ref()))
        }
        Command::Gc { keep, dry_run } => {
            let config = Config::load(&cli.config)?;
            let plan = GcPlan::new(&config, *keep, *dry_run);
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let groups = (!plan.groups.is_empty()).then(|| AutoScalingGroups::new(&sdk));
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let interrupt = Interrupt::on_signals();
            let scopes = ["gc".to_string()];
            let stage = StageRun::begin(&tracking, "gc", None, None, &scopes, &interrupt).await?;
            let ports = GcPorts {
                images: &ec2,
                instances: &ec2,
                auto_scaling: groups.as_ref().map(|g| g as &dyn AutoScaling),
            };
            let result = gc::gc(&plan, ports, lock::now_ms()).await;
            let outcome = stage
                .finish(result, EventKind::Succeeded, |o| Details {
                    instances: o.orphans.clone(),
                    outcome: Some(if o.dry_run { "dry-run" } else { "succeeded" }),
                    note: (!o.removed.is_empty()).then(|| {
                        let amis: Vec<String> = o
                            .removed
                            .iter()
                            .map(|r| {
                                format!("{} ({}, {})", r.id, r.region, short_commit(&r.commit))
                            })
                            .collect();
                        let verb = if o.dry_run {
                            "would deregister"
                        } else {
                            "deregistered"
                        };
                        format!("{verb} {}", amis.join(", "))
                    }),
                    ..Details::default()
                })
                .await?;
            Ok(output::gc(cli.output, &outcome))
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
                &BuildPlan::new(&config)?,
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
        Command::Build {
            commit,
            skip_test_gate,
        } => {
            let config = Config::load(&cli.config)?;
            let commit = commit::resolve(commit.as_deref(), env)?;
            let plan = BuildPlan::new(&config)?;
            let sdk = sdk_config(&config).await;
            let ec2 = Ec2::new(&sdk, &config.region);
            let ports = BuildPorts {
                images: &ec2,
                instances: &ec2,
            };
            let tracking = tracking(&config, &sdk, actor, env, cli.lock_timeout)?;
            let interrupt = Interrupt::on_signals();
            // Two builds of one commit would bake it twice: one at a time.
            let scopes = [format!("build-{}", commit.short())];
            let mut stage = StageRun::begin(
                &tracking,
                "build",
                None,
                Some(commit.as_str()),
                &scopes,
                &interrupt,
            )
            .await?;
            let gate = if *skip_test_gate {
                tracing::warn!(
                    "the test gate is skipped (--skip-test-gate); the ledger records it"
                );
                stage.note("test gate skipped (--skip-test-gate)");
                Ok(())
            } else {
                tracking.ledger.test_gate(&commit).await.map(|passed| {
                    tracing::info!(
                        "test gate: {commit} passed its tests ({} run {})",
                        passed.actor.as_deref().unwrap_or("?"),
                        passed.run
                    );
                })
            };
            let result = match gate {
                Ok(()) => match recover(&mut stage, &ec2, &config.app).await {
                    Ok(()) => {
                        Release::tested(&config.app, commit)
                            .build(&plan, ports, stage.id(), &interrupt)
                            .await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
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

/// Terminates the builder and task instances of the killed runs whose
/// locks `stage` took over, and notes it in the run's ledger entry.
async fn recover(stage: &mut StageRun<'_>, instances: &dyn Instances, app: &str) -> Result<()> {
    let killed = stage.taken_over();
    let cleaned = recovery::clean_up_after(instances, app, &killed).await?;
    if !cleaned.is_empty() {
        stage.note(format!(
            "terminated {} left by the killed run {}",
            cleaned.join(", "),
            killed.join(", ")
        ));
    }
    Ok(())
}

/// What every tracked stage run of this config shares: the ledger and
/// locks in the state bucket, the webhooks, who runs it.
fn tracking(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    actor: Actor,
    env: impl Fn(&str) -> Option<String>,
    lock_timeout: std::time::Duration,
) -> Result<Tracking> {
    Ok(Tracking {
        app: config.app.clone(),
        actor,
        notifier: Notifier::new(&config.notify, env)?,
        ledger: ledger(config, sdk),
        lock: config.state.lock_plan(lock_timeout),
    })
}

/// The app's ledger in the config's state bucket.
fn ledger(config: &Config, sdk: &aws_config::SdkConfig) -> Ledger {
    let store = StateBucket::new(sdk, &config.state.bucket, config.state.key_prefix.clone());
    Ledger::new(Arc::new(store), &config.app)
}

/// Begins a deploy in the queue: `None` (after printing so) when a newer
/// run superseded it.
async fn begin_queued<'a>(
    tracking: &'a Tracking,
    stage: &'static str,
    env: Option<&str>,
    commit: Option<&str>,
    scopes: &[String],
    interrupt: &Interrupt,
    format: OutputFormat,
) -> Result<Option<StageRun<'a>>> {
    Ok(
        match StageRun::begin_queued(tracking, stage, env, commit, scopes, interrupt).await? {
            Begun::Running(run) => Some(run),
            Begun::Superseded(newer) => {
                output::superseded(format, stage, env, &newer);
                None
            }
        },
    )
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
        // A slot that was live already: the ledger says nothing changed.
        outcome: (!flip.changed).then_some("unchanged"),
        ..Details::default()
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
    let stage = cli.command.stage().is_some() || matches!(cli.command, Command::Status { .. });
    progress::init(&filter, stage);
}
