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
//! The environment's release tasks ([`super::task`]) run on the way:
//! `before_launch` ones first, `before_traffic` ones once the new fleet runs
//! and before it is registered (in Auto Scaling mode, where the group
//! registers what it launches, before the group is raised). A failed task
//! fails the deploy the same safe way.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, TaskWhen};
use crate::error::{Error, Result};
use crate::ports::{
    AppInstance, AutoScaling, Balancer, GroupState, Image, Instances, LaunchSpec,
    ShutdownBehaviour, Tags, tag,
};
use crate::release::{Built, Deployed, Release, RunId};
use crate::stages::task::{self, TaskOutcome, TaskPlan};
use crate::wait::{self, Interrupt, Poll, Progress};

/// Everything a deploy to one environment needs, checked and derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    /// The app name.
    pub app: String,
    /// The environment's name.
    pub env: String,
    /// How many instances it runs.
    pub count: u32,
    /// Instance type.
    pub instance_type: String,
    /// Subnets to spread over.
    pub subnets: Vec<String>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// Instance profile name.
    pub instance_profile: Option<String>,
    /// Key pair name.
    pub key_name: Option<String>,
    /// The environment's settings as user-data.
    pub user_data: String,
    /// Polling until the new fleet runs and is healthy (one deadline for both).
    pub health_poll: Poll,
    /// How long the new fleet must stay healthy before the old one leaves.
    pub healthy_for: Duration,
    /// The longest wait for old instances to drain.
    pub drain_cap: Duration,
    /// The Auto Scaling group that owns the instances, if any.
    pub auto_scaling_group: Option<String>,
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
            instance_type: e.instance_type.clone(),
            subnets: e.subnets.clone(),
            security_groups: e.security_groups.clone(),
            instance_profile: e.instance_profile.clone(),
            key_name: e.key_name.clone(),
            user_data: e.user_data(&config.app, env),
            health_poll: Poll {
                interval: e.poll_interval,
                deadline: e.health_timeout,
            },
            healthy_for: e.healthy_for,
            drain_cap: e.drain_timeout,
            auto_scaling_group: e.auto_scaling_group.clone(),
            tasks: TaskPlan::all(config, env)?,
        })
    }
}

/// How long one phase of a deploy took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// `inspect`, `tasks`, `launch`, `boot`, `register`, `health`, `drain`
    /// or `terminate`.
    pub name: &'static str,
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
    /// Instances.
    pub instances: &'a dyn Instances,
    /// The environment's balancer.
    pub balancer: &'a dyn Balancer,
    /// Auto Scaling, for an environment with `auto_scaling_group`.
    pub auto_scaling: Option<&'a dyn AutoScaling>,
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
    ///     .deploy(&plan, DeployPorts { instances: &ec2, balancer: balancer.as_ref(), auto_scaling: None },
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
        let started = Instant::now();
        let group = match (&plan.auto_scaling_group, ports.auto_scaling) {
            (Some(name), Some(asg)) => Some((asg, name.as_str())),
            (Some(name), None) => {
                return Err(Error::Input(format!(
                    "environment {} names Auto Scaling group {name} but no Auto Scaling port was given",
                    plan.env
                )));
            }
            (None, _) => None,
        };
        let swap = Swap {
            plan,
            instances: ports.instances,
            balancer: ports.balancer,
            group,
            template_version: None,
            tagged_resting_max: false,
            interrupt,
            phases: Vec::new(),
            tasks: Vec::new(),
            run,
        };
        swap.run(self, started).await
    }
}

struct Swap<'a> {
    plan: &'a DeployPlan,
    instances: &'a dyn Instances,
    balancer: &'a dyn Balancer,
    /// The Auto Scaling group and its name, in group mode.
    group: Option<(&'a dyn AutoScaling, &'a str)>,
    /// The launch template version this deploy made, in group mode.
    template_version: Option<String>,
    /// Whether this deploy tagged the group with its resting maximum.
    tagged_resting_max: bool,
    interrupt: &'a Interrupt,
    phases: Vec<Phase>,
    /// The release tasks run so far.
    tasks: Vec<TaskOutcome>,
    run: &'a RunId,
}

impl Swap<'_> {
    fn phase(&mut self, name: &'static str, since: Instant) -> Instant {
        let now = Instant::now();
        self.phases.push(Phase {
            name,
            duration: now - since,
        });
        tracing::debug!("phase {name} took {:.1}s", (now - since).as_secs_f64());
        now
    }

    async fn run(mut self, release: Release<Built>, started: Instant) -> Result<DeployOutcome> {
        let plan = self.plan;
        let run = self.run;
        let image = release.image().clone();
        tracing::info!(
            "deploying {} ({}) to {}: {} instance(s) behind {}",
            release.commit(),
            image.id,
            plan.env,
            plan.count,
            self.balancer.name()
        );

        // inspect: who serves now, and what a killed run left behind.
        let mut t = Instant::now();
        let group_state = match self.group {
            Some((asg, name)) => Some(asg.group(name).await?),
            None => None,
        };
        let current = self.instances.app_instances(&plan.app, &plan.env).await?;
        let mut in_balancer: BTreeSet<String> = self
            .balancer
            .registered()
            .await?
            .into_iter()
            .filter(|h| !h.state.starts_with("draining"))
            .map(|h| h.id)
            .collect();
        // In group mode the group's members are the serving fleet too.
        in_balancer.extend(group_state.iter().flat_map(|g| g.instances.iter().cloned()));
        let (old, leftovers): (Vec<AppInstance>, Vec<AppInstance>) = current
            .into_iter()
            .partition(|i| in_balancer.contains(&i.id));
        let cleaned: Vec<String> = leftovers.iter().map(|i| i.id.clone()).collect();
        if !cleaned.is_empty() {
            tracing::warn!(
                "terminating {} instance(s) of {} that are not in the balancer (left by an earlier run): {}",
                cleaned.len(),
                plan.env,
                cleaned.join(", ")
            );
            self.instances.terminate(&cleaned).await?;
        }
        let old: Vec<String> = match &group_state {
            Some(group) => group.instances.clone(),
            None => old.into_iter().map(|i| i.id).collect(),
        };
        t = self.phase("inspect", t);
        self.interrupt.check()?;

        // Tasks before launch (and, in group mode, before traffic: the
        // group registers what it launches).
        let early: &[TaskWhen] = if group_state.is_some() {
            &[TaskWhen::BeforeLaunch, TaskWhen::BeforeTraffic]
        } else {
            &[TaskWhen::BeforeLaunch]
        };
        if self.has_tasks(early) {
            self.run_tasks(early, &release).await?;
            t = self.phase("tasks", t);
        }

        // launch .. health: on any failure the new fleet goes, the old stays.
        let mut new = Vec::new();
        let mut registered = false;
        let tags = self.instance_tags(&release, run);
        let result = match &group_state {
            Some(group) => {
                self.bring_up_in_group(&image, &tags, group, &mut new, &mut registered, t)
                    .await
            }
            None => {
                self.bring_up(&release, &tags, &mut new, &mut registered, t)
                    .await
            }
        };
        if let Err(err) = result {
            self.remove_new_fleet(&new, registered, group_state.as_ref(), &err)
                .await;
            return Err(err);
        }
        t = Instant::now();

        // drain and terminate the old fleet.
        if let Some((asg, name)) = self.group
            && !old.is_empty()
        {
            asg.detach(name, &old).await?;
            tracing::info!("detached the old fleet from {name}");
        }
        if !old.is_empty() {
            self.balancer.deregister(&old).await?;
            tracing::info!("deregistered the old fleet: {}", old.join(", "));
            self.drain(&old).await?;
            t = self.phase("drain", t);
            self.instances.terminate(&old).await?;
            tracing::info!("terminated the old fleet");
            self.phase("terminate", t);
        }
        if let (Some((asg, name)), Some(group)) = (self.group, &group_state) {
            // The group's maximum back as it was before any deploy raised
            // it (or N, if that is more).
            let version = self
                .template_version
                .as_deref()
                .unwrap_or(&group.template_version);
            asg.update(
                name,
                &group.template_id,
                version,
                plan.count,
                group.resting_max.unwrap_or(group.max).max(plan.count),
            )
            .await?;
            if group.resting_max.is_some() || self.tagged_resting_max {
                asg.clear_resting_max(name).await?;
            }
            asg.resume(name).await?;
        }

        let outcome = DeployOutcome {
            release: release.into_deployed(plan.env.clone(), new),
            cleaned,
            removed: old,
            run: run.clone(),
            tasks: self.tasks,
            phases: self.phases,
            duration: started.elapsed(),
        };
        tracing::info!(
            "{} now runs {} on {} instance(s), in {:.1}s",
            plan.env,
            outcome.release.commit(),
            plan.count,
            outcome.duration.as_secs_f64()
        );
        Ok(outcome)
    }

    fn instance_tags(&self, release: &Release<Built>, run: &RunId) -> Tags {
        let plan = self.plan;
        Tags::from([
            (tag::APP.to_string(), plan.app.clone()),
            (tag::ENV.to_string(), plan.env.clone()),
            (tag::COMMIT.to_string(), release.commit().to_string()),
            (tag::ROLE.to_string(), tag::ROLE_APP.to_string()),
            (tag::RUN.to_string(), run.to_string()),
            (
                "Name".to_string(),
                format!("{}-{}-{}", plan.app, plan.env, release.commit().short()),
            ),
        ])
    }

    fn has_tasks(&self, when: &[TaskWhen]) -> bool {
        self.plan.tasks.iter().any(|t| when.contains(&t.when))
    }

    /// Runs the plan's tasks whose `when` is in `when`, in order; the first
    /// failure stops the deploy.
    async fn run_tasks(&mut self, when: &[TaskWhen], release: &Release<Built>) -> Result<()> {
        for plan in self.plan.tasks.iter().filter(|t| when.contains(&t.when)) {
            self.interrupt.check()?;
            let outcome = task::run(
                plan,
                self.instances,
                release.image(),
                release.commit(),
                self.run,
                self.interrupt,
            )
            .await?;
            self.tasks.push(outcome);
        }
        Ok(())
    }

    async fn bring_up(
        &mut self,
        release: &Release<Built>,
        tags: &Tags,
        new: &mut Vec<String>,
        registered: &mut bool,
        t: Instant,
    ) -> Result<()> {
        let plan = self.plan;
        let image = release.image();
        let deadline = Instant::now() + plan.health_poll.deadline;
        for (subnet, count) in spread(plan.count, &plan.subnets) {
            let spec = LaunchSpec {
                image_id: image.id.clone(),
                instance_type: plan.instance_type.clone(),
                count,
                subnet_id: Some(subnet.clone()),
                security_group_ids: plan.security_groups.clone(),
                instance_profile: plan.instance_profile.clone(),
                key_name: plan.key_name.clone(),
                user_data: plan.user_data.clone(),
                shutdown: ShutdownBehaviour::Terminate,
                tags: tags.clone(),
            };
            new.extend(self.instances.launch(&spec).await?);
        }
        tracing::info!("launched {}", new.join(", "));
        let t = self.phase("launch", t);
        self.register_when_healthy(new, registered, deadline, Some(release), t)
            .await
    }

    /// Group mode: a launch template version with the AMI, scaling
    /// processes suspended, the group raised by N; its new members are
    /// the new fleet.
    async fn bring_up_in_group(
        &mut self,
        image: &Image,
        tags: &Tags,
        group: &GroupState,
        new: &mut Vec<String>,
        registered: &mut bool,
        t: Instant,
    ) -> Result<()> {
        let plan = self.plan;
        let (asg, name) = self.group.expect("group mode");
        let deadline = Instant::now() + plan.health_poll.deadline;
        let version = asg
            .new_template_version(
                &group.template_id,
                &group.template_version,
                &image.id,
                &plan.user_data,
                tags,
            )
            .await?;
        tracing::info!(
            "launch template {} version {version} launches {}",
            group.template_id,
            image.id
        );
        let desired = group.instances.len() as u32 + plan.count;
        // Raising the maximum: first note what to return to, on the group
        // itself, so a deploy killed from here on can be finished by the
        // next. A tag already there is a killed deploy's; it stays.
        if desired > group.max && group.resting_max.is_none() {
            asg.set_resting_max(name, group.max).await?;
            self.tagged_resting_max = true;
        }
        asg.suspend(name).await?;
        self.template_version = Some(version.clone());
        asg.update(
            name,
            &group.template_id,
            &version,
            desired,
            group.max.max(desired),
        )
        .await?;
        let old: BTreeSet<&String> = group.instances.iter().collect();
        let what = format!("{name} to launch {} new instance(s)", plan.count);
        let poll = Poll {
            interval: plan.health_poll.interval,
            deadline: deadline.saturating_duration_since(Instant::now()),
        };
        *new = wait::until(&what, poll, self.interrupt, || async {
            let now = asg.group(name).await?;
            let fresh: Vec<String> = now
                .instances
                .into_iter()
                .filter(|i| !old.contains(i))
                .collect();
            Ok(if fresh.len() >= plan.count as usize {
                Progress::Done(fresh)
            } else {
                Progress::Pending(format!("{}/{} launched", fresh.len(), plan.count))
            })
        })
        .await?;
        tracing::info!("{name} launched {}", new.join(", "));
        let t = self.phase("launch", t);
        self.register_when_healthy(new, registered, deadline, None, t)
            .await
    }

    /// Waits until `new` runs, runs the `before_traffic` tasks of `release`
    /// (given outside group mode), registers the fleet, waits until it is
    /// healthy.
    async fn register_when_healthy(
        &mut self,
        new: &[String],
        registered: &mut bool,
        mut deadline: Instant,
        tasks_of: Option<&Release<Built>>,
        mut t: Instant,
    ) -> Result<()> {
        let plan = self.plan;
        let poll = |deadline: Instant| Poll {
            interval: plan.health_poll.interval,
            deadline: deadline.saturating_duration_since(Instant::now()),
        };
        self.await_running(new, poll(deadline)).await?;
        t = self.phase("boot", t);

        if let Some(release) = tasks_of
            && self.has_tasks(&[TaskWhen::BeforeTraffic])
        {
            let began = Instant::now();
            self.run_tasks(&[TaskWhen::BeforeTraffic], release).await?;
            // Tasks have deadlines of their own; health keeps its budget.
            deadline += began.elapsed();
            t = self.phase("tasks", t);
        }

        self.balancer.register(new).await?;
        *registered = true;
        t = self.phase("register", t);

        self.await_healthy(new, poll(deadline)).await?;
        tracing::info!(
            "all {} new instance(s) healthy in {}",
            new.len(),
            self.balancer.name()
        );
        self.phase("health", t);
        Ok(())
    }

    async fn await_running(&self, ids: &[String], poll: Poll) -> Result<()> {
        let what = format!("{} new instance(s) to run", ids.len());
        wait::until(&what, poll, self.interrupt, || async {
            let statuses = self.instances.statuses(ids).await?;
            if let Some(dead) = statuses.iter().find(|s| {
                matches!(
                    s.state.as_str(),
                    "stopping" | "stopped" | "shutting-down" | "terminated"
                )
            }) {
                return Err(Error::DeployFailed {
                    reason: format!(
                        "new instance {} is {} before it ran ({})",
                        dead.id,
                        dead.state,
                        dead.reason.as_deref().unwrap_or("no reason given")
                    ),
                });
            }
            let running = statuses.iter().filter(|s| s.state == "running").count();
            Ok(if running == ids.len() {
                Progress::Done(())
            } else {
                Progress::Pending(format!("{running}/{} running", ids.len()))
            })
        })
        .await
    }

    /// Waits until every new instance has been healthy, without a break,
    /// for `healthy_for`; one health call per tick for the whole fleet.
    async fn await_healthy(&self, ids: &[String], poll: Poll) -> Result<()> {
        let what = format!(
            "{} new instance(s) to be healthy in {} for {}s",
            ids.len(),
            self.balancer.name(),
            self.plan.healthy_for.as_secs_f64()
        );
        let wanted: BTreeSet<&String> = ids.iter().collect();
        let healthy_since = std::cell::Cell::new(None::<Instant>);
        wait::until(&what, poll, self.interrupt, || async {
            let health = self.balancer.registered().await?;
            let ours: Vec<_> = health.iter().filter(|h| wanted.contains(&h.id)).collect();
            let healthy = ours.iter().filter(|h| h.healthy).count();
            if healthy < ids.len() {
                if healthy_since.take().is_some() {
                    tracing::warn!(
                        "a new instance turned unhealthy; waiting for the fleet to recover"
                    );
                }
                let sick: Vec<String> = ours
                    .iter()
                    .filter(|h| !h.healthy)
                    .map(|h| format!("{} {}", h.id, h.state))
                    .collect();
                return Ok(Progress::Pending(format!(
                    "{healthy}/{} healthy; {}",
                    ids.len(),
                    sick.join(", ")
                )));
            }
            let since = *healthy_since.get().get_or_insert_with(Instant::now);
            healthy_since.set(Some(since));
            let held = since.elapsed();
            Ok(if held >= self.plan.healthy_for {
                Progress::Done(())
            } else {
                Progress::Pending(format!(
                    "all {} healthy for {:.1}s of {:.1}s",
                    ids.len(),
                    held.as_secs_f64(),
                    self.plan.healthy_for.as_secs_f64()
                ))
            })
        })
        .await
    }

    /// Waits until the balancer has let go of `old`, at most the shorter of
    /// its draining delay and the plan's cap. The wait ending is not an
    /// error: draining ends by itself when the delay passes. An interrupt
    /// ends it early; the old fleet is out of service already.
    async fn drain(&self, old: &[String]) -> Result<()> {
        let delay = self
            .balancer
            .draining_delay()
            .await?
            .min(self.plan.drain_cap);
        if delay.is_zero() {
            return Ok(());
        }
        tracing::info!(
            "waiting up to {}s for connections to drain",
            delay.as_secs()
        );
        let poll = Poll {
            interval: self.plan.health_poll.interval,
            deadline: delay,
        };
        let waited = if self.balancer.reports_draining() {
            let what = format!("the old fleet to drain from {}", self.balancer.name());
            wait::until(&what, poll, self.interrupt, || async {
                let draining = self
                    .balancer
                    .registered()
                    .await?
                    .into_iter()
                    .filter(|h| old.contains(&h.id))
                    .count();
                Ok(if draining == 0 {
                    Progress::Done(())
                } else {
                    Progress::Pending(format!("{draining} draining"))
                })
            })
            .await
        } else {
            // The balancer cannot tell: wait out the delay.
            wait::pause(delay, self.interrupt).await
        };
        match waited {
            Ok(()) | Err(Error::Timeout { .. }) => Ok(()),
            Err(Error::Interrupted) => {
                tracing::warn!("interrupted while draining; terminating the old fleet now");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Best effort: every step is tried, failures are reported; the error
    /// that caused the rollback is what the user sees first.
    async fn remove_new_fleet(
        &self,
        new: &[String],
        registered: bool,
        group: Option<&GroupState>,
        cause: &Error,
    ) {
        tracing::error!(
            "deploy to {} failed: {cause}; removing the new instances, the old fleet keeps serving",
            self.plan.env
        );
        let mut new = new.to_vec();
        if let (Some((asg, name)), Some(group)) = (self.group, group) {
            // The group may have launched instances the wait never saw.
            match asg.group(name).await {
                Ok(now) => {
                    new = now
                        .instances
                        .into_iter()
                        .filter(|i| !group.instances.contains(i))
                        .collect()
                }
                Err(e) => tracing::error!("could not describe {name}: {e}"),
            }
            if !new.is_empty()
                && let Err(e) = asg.detach(name, &new).await
            {
                tracing::error!("could not detach {} from {name}: {e}", new.join(", "));
            }
        }
        if !new.is_empty() {
            // Deregistering what is not registered is harmless; the group
            // may have registered its new members by itself.
            if (registered || self.group.is_some())
                && let Err(e) = self.balancer.deregister(&new).await
            {
                tracing::error!("could not deregister {}: {e}", new.join(", "));
            }
            match self.instances.terminate(&new).await {
                Ok(()) => tracing::info!("terminated the new instances: {}", new.join(", ")),
                Err(e) => tracing::error!(
                    "could not terminate {}: {e}; the next deploy to {} will (they are not in the balancer)",
                    new.join(", "),
                    self.plan.env
                ),
            }
        }
        if let (Some((asg, name)), Some(group)) = (self.group, group) {
            let restored = asg
                .update(
                    name,
                    &group.template_id,
                    &group.template_version,
                    group.desired,
                    group.max,
                )
                .await;
            if let Err(e) = restored {
                tracing::error!("could not restore {name}'s launch template version and size: {e}");
            } else if self.tagged_resting_max
                && let Err(e) = asg.clear_resting_max(name).await
            {
                tracing::error!("could not remove {name}'s {} tag: {e}", tag::RESTING_MAX);
            }
            if let Err(e) = asg.resume(name).await {
                tracing::error!("could not resume {name}'s scaling processes: {e}");
            }
        }
    }
}

/// Splits `count` instances over `subnets` as evenly as possible, the first
/// subnets taking the remainder; subnets that get none are left out.
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
