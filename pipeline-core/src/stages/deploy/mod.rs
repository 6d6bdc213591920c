//! Deploy: swap fresh instances of the commit's AMI in behind the balancer.
//!
//! The order is what keeps the environment serving: launch the new fleet
//! (tagged at creation, spread over the subnets), wait until every instance
//! runs, register them all, wait until the balancer says every one is
//! healthy, and only then deregister the old fleet, wait out draining and
//! terminate it. If anything fails or is interrupted before the old fleet
//! leaves, the new instances are deregistered and terminated and the old
//! ones keep serving. Leftovers of a killed run (tagged for this environment
//! but not in the balancer) are terminated before the deploy starts.
//!
//! The new fleet comes up in one of two modes ([`Placement`]): instances the
//! pipeline launches itself over the environment's subnets, or an Auto
//! Scaling group raised by N on a new launch template version.
//!
//! # Batches (`max_surge`)
//! An account that cannot hold two whole fleets sets the environment's
//! `max_surge` ([`DeployPlan::max_surge`], subnet placement only). The new
//! fleet then comes up in batches of at most that many: each batch is
//! launched, booted, registered and held healthy for `healthy_for` (its own
//! `health_timeout` deadline, alarms checked as above), then as many old
//! instances as it added are deregistered, drained and terminated (the
//! last batch takes any old ones left), and only then does the next batch
//! launch. So the environment never has fewer than `count` healthy
//! instances serving (unless it had fewer to begin with), nor more than
//! `count + max_surge` alive. Old instances the balancer reports unhealthy
//! leave first. A failure in batch k removes that batch only: the batches
//! before it stay serving beside the old instances left, and the error
//! ([`Error::PartlyDeployed`]) counts both; a re-run treats every serving
//! instance as old and replaces them all.
//!
//! # Capacity
//! In launched mode a RunInstances that AWS answers
//! `InsufficientInstanceCapacity` (no capacity of the type in that AZ) is
//! tried again in the environment's other subnets, in order; a subnet that
//! answered it is skipped for the rest of the deploy. If every subnet
//! answered it, or the account's quota is reached (`InstanceLimitExceeded`,
//! `VcpuLimitExceeded`), the deploy fails the safe way with a message that
//! says what to change.
//!
//! The environment's release tasks ([`super::task`]) run on the way:
//! `before_launch` ones first, `before_traffic` ones once the new fleet (in
//! batches: the first batch) runs and before it is registered (in Auto
//! Scaling mode, where the group registers what it launches, before the
//! group is raised). A failed task fails the deploy the same safe way.
//!
//! # Layout
//! - `swap`: the deploy as a list of named steps, and what they share.
//! - `mode`: the two ways a new fleet comes up and the old one goes.
//! - `launched`: instances the pipeline launches over the subnets, in
//!   batches with `max_surge`.
//! - `group`: instances an Auto Scaling group launches.
//! - `health`: the waits: running, healthy for `healthy_for`, drained.

mod group;
mod health;
mod launched;
mod mode;
mod swap;

use std::time::Duration;

use crate::config::{Config, InstanceShape, Placement};
use crate::error::{Error, Result};
use crate::ports::{AutoScaling, Balancer, Instances, Metrics};
use crate::release::{Built, Deployed, Release, RunId};
use crate::stages::task::{TaskOutcome, TaskPlan};
use crate::wait::{Interrupt, Poll};

/// Everything a deploy to one environment needs, checked and derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    /// Tagged on every instance, with the environment.
    pub app: String,
    /// The environment deployed to.
    pub env: String,
    /// How many healthy instances it must end with (and never have fewer of).
    pub count: u32,
    /// What each new instance is made of.
    pub shape: InstanceShape,
    /// Who launches the new instances, and where.
    pub placement: Placement,
    /// At most this many new instances beside the old fleet at once: the
    /// new fleet comes up in batches of this size, for an account that
    /// cannot hold two fleets (`None`: all at once; subnet placement only).
    pub max_surge: Option<u32>,
    /// The environment's settings as user-data: what makes the one AMI
    /// run as this environment.
    pub user_data: String,
    /// Polling until the new fleet runs and is healthy (one deadline for
    /// both; in batches, each batch's own).
    pub health_poll: Poll,
    /// How long the new fleet must stay healthy before the old one leaves.
    pub healthy_for: Duration,
    /// CloudWatch alarms checked on every tick of the `healthy_for` hold:
    /// one in ALARM fails the deploy.
    pub alarms: Vec<String>,
    /// The longest wait for old instances to drain.
    pub drain_cap: Duration,
    /// The environment's release tasks, in order (`manual` ones included;
    /// a deploy skips them).
    pub tasks: Vec<TaskPlan>,
}

impl DeployPlan {
    /// The plan for environment `env` of a loaded config; an unknown
    /// environment is bad input.
    pub fn new(config: &Config, env: &str) -> Result<Self> {
        let e = config.environment(env)?;
        Ok(DeployPlan {
            app: config.app.clone(),
            env: env.to_string(),
            count: e.count,
            shape: e.shape.clone(),
            placement: e.placement.clone(),
            max_surge: e.max_surge,
            user_data: super::settings::of_environment(config, env, e, true),
            health_poll: Poll {
                interval: e.poll_interval,
                deadline: e.health_timeout,
            },
            healthy_for: e.healthy_for,
            alarms: e.alarms.clone(),
            drain_cap: e.drain_timeout,
            tasks: TaskPlan::all(config, env)?,
        })
    }
}

/// How long one phase of a deploy took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// `inspect`, `tasks`, `launch`, `boot`, `register`, `health`, `drain`
    /// or `terminate`; in a deploy in batches, prefixed with the batch
    /// (`batch 2/5 health`), so a reader sees how each batch went.
    pub name: String,
    /// Its wall time.
    pub duration: Duration,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    /// The release, now deployed.
    pub release: Release<Deployed>,
    /// Instances of a killed earlier run that were terminated first.
    pub cleaned: Vec<String>,
    /// The old fleet, deregistered and terminated.
    pub removed: Vec<String>,
    /// The run id tagged on the new instances.
    pub run: RunId,
    /// The release tasks that ran, in order.
    pub tasks: Vec<TaskOutcome>,
    /// Each phase's wall time, in order.
    pub phases: Vec<Phase>,
    /// Wall time of the stage.
    pub duration: Duration,
}

/// The ports the deploy stage uses.
pub struct DeployPorts<'a> {
    /// Launches, watches and terminates instances.
    pub instances: &'a dyn Instances,
    /// The environment's balancer: what says healthy, and what takes traffic.
    pub balancer: &'a dyn Balancer,
    /// Raises and lowers the group, for an environment placed in an Auto
    /// Scaling group (`None` otherwise).
    pub auto_scaling: Option<&'a dyn AutoScaling>,
    /// Reads the plan's alarms (`None`: the plan may have none).
    pub metrics: Option<&'a dyn Metrics>,
}

impl Release<Built> {
    /// Deploys this release to the plan's environment. See the [module docs](self).
    ///
    /// ```no_run
    /// # async fn example(sdk: aws_config::SdkConfig) -> pipeline_core::Result<()> {
    /// use pipeline_core::{aws, aws::ec2::Ec2, config::Config, release::{Built, Release, RunId},
    ///     stages::deploy::{DeployPlan, DeployPorts}, wait::Interrupt};
    /// let config = Config::load("pipeline.yaml".as_ref())?;
    /// let plan = DeployPlan::new(&config, "staging")?;
    /// let ec2 = Ec2::new(&sdk, &config.region);
    /// let commit = "0123456789abcdef0123456789abcdef01234567".parse()?;
    /// let built = Release::<Built>::find(&ec2, &config.region, &config.app, &commit).await?
    ///     .expect("built");
    /// let balancer = aws::balancer(&sdk, &config.environments["staging"].load_balancer);
    /// let out = built
    ///     .deploy(&plan, DeployPorts { instances: &ec2, balancer: balancer.as_ref(), auto_scaling: None, metrics: None },
    ///             &RunId::new(), &Interrupt::on_signals())
    ///     .await?;
    /// println!("{:?}", out.release.state().instances);
    /// # Ok(()) }
    /// ```
    pub async fn deploy(
        self,
        plan: &DeployPlan,
        ports: DeployPorts<'_>,
        run: &RunId,
        interrupt: &Interrupt,
    ) -> Result<DeployOutcome> {
        if !plan.alarms.is_empty() && ports.metrics.is_none() {
            return Err(Error::Input(format!(
                "environments.{}.alarms are set, but the deploy was given no CloudWatch to read them (DeployPorts::metrics)",
                plan.env
            )));
        }
        swap::Swap::new(plan, &ports, run, interrupt)
            .run(self, ports.auto_scaling)
            .await
    }
}

/// Splits `count` instances over `subnets` as evenly as possible, the first
/// subnets taking the remainder; subnets that get none are left out. (A
/// deploy in batches deals its batches out in turn, so the whole fleet
/// ends up spread the same way.)
pub fn spread(count: u32, subnets: &[String]) -> Vec<(String, u32)> {
    let n = subnets.len() as u32;
    subnets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), count / n + u32::from((i as u32) < count % n)))
        .filter(|(_, c)| *c > 0)
        .collect()
}

#[cfg(test)]
mod tests;
