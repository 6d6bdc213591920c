//! The deploy as a list of named steps, and what the steps share: the
//! plan, the ports, the run, and the record of phases and tasks.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::mode::Mode;
use super::{DeployOutcome, DeployPlan, DeployPorts, Phase};
use crate::config::TaskWhen;
use crate::error::Result;
use crate::ports::{AppInstance, AutoScaling, Balancer, Instances, Metrics, Tags, tag};
use crate::release::{Built, Release, RunId};
use crate::stages::task::{self, TaskOutcome};
use crate::wait::Interrupt;

/// One deploy in progress.
pub(super) struct Swap<'a> {
    pub(super) plan: &'a DeployPlan,
    pub(super) instances: &'a dyn Instances,
    pub(super) balancer: &'a dyn Balancer,
    pub(super) metrics: Option<&'a dyn Metrics>,
    pub(super) interrupt: &'a Interrupt,
    /// The batch in progress, in a deploy in batches: named in phases,
    /// waits and logs, so a reader sees how far the deploy got.
    pub(super) batch: Option<Batch>,
    run: &'a RunId,
    started: Instant,
    /// When the phase in progress began.
    phase_began: Instant,
    phases: Vec<Phase>,
    tasks: Vec<TaskOutcome>,
}

/// One batch of a deploy in batches: `batch 2/5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Batch {
    /// Counted from 1.
    pub(super) number: u32,
    /// How many batches the deploy has.
    pub(super) of: u32,
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch {}/{}", self.number, self.of)
    }
}

/// Who serves before the deploy, as the inspection found.
pub(super) struct Current {
    /// The serving fleet: in the balancer (or the group); in launched
    /// mode those the balancer reports unhealthy first, so a deploy in
    /// batches takes them out first.
    pub(super) old: Vec<String>,
    /// Instances of this environment a killed run left outside the balancer.
    pub(super) leftovers: Vec<String>,
}

impl<'a> Swap<'a> {
    pub(super) fn new(
        plan: &'a DeployPlan,
        ports: &DeployPorts<'a>,
        run: &'a RunId,
        interrupt: &'a Interrupt,
    ) -> Self {
        let now = Instant::now();
        Swap {
            plan,
            instances: ports.instances,
            balancer: ports.balancer,
            metrics: ports.metrics,
            interrupt,
            batch: None,
            run,
            started: now,
            phase_began: now,
            phases: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The deploy, step by step.
    pub(super) async fn run(
        mut self,
        release: Release<Built>,
        auto_scaling: Option<&dyn AutoScaling>,
    ) -> Result<DeployOutcome> {
        self.announce(&release);
        let mut mode = Mode::inspect(self.plan, auto_scaling).await?;
        let current = self.inspect(&mode).await?;
        self.clean_up(&current.leftovers).await?;
        self.phase("inspect");
        self.interrupt.check()?;

        self.run_tasks(mode.early_tasks(), &release).await?;

        mode.replace(&mut self, &release, &current.old).await?;
        Ok(self.outcome(release, mode.into_new_fleet(), current))
    }

    fn announce(&self, release: &Release<Built>) {
        tracing::info!(
            "deploying {} ({}) to {}: {} instance(s) behind {}",
            release.commit(),
            release.image().id,
            self.plan.env,
            self.plan.count,
            self.balancer.name()
        );
    }

    /// Who serves now, and what a killed run left behind: the app's
    /// instances of this environment that are in the balancer (or the
    /// group) serve; the others are leftovers.
    async fn inspect(&self, mode: &Mode<'_>) -> Result<Current> {
        let plan = self.plan;
        let current = self.instances.app_instances(&plan.app, &plan.env).await?;
        let registered = self.balancer.registered().await?;
        let unhealthy: BTreeSet<&String> = registered
            .iter()
            .filter(|h| !h.healthy)
            .map(|h| &h.id)
            .collect();
        let mut serving: BTreeSet<String> = registered
            .iter()
            .filter(|h| !h.state.starts_with("draining"))
            .map(|h| h.id.clone())
            .collect();
        let members = mode.members();
        serving.extend(members.into_iter().flatten().cloned());
        let (old, leftovers): (Vec<AppInstance>, Vec<AppInstance>) =
            current.into_iter().partition(|i| serving.contains(&i.id));
        Ok(Current {
            old: match members {
                Some(members) => members.to_vec(),
                None => {
                    let mut old: Vec<String> = old.into_iter().map(|i| i.id).collect();
                    old.sort_by_key(|id| !unhealthy.contains(id));
                    old
                }
            },
            leftovers: leftovers.into_iter().map(|i| i.id).collect(),
        })
    }

    async fn clean_up(&self, leftovers: &[String]) -> Result<()> {
        if leftovers.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            "terminating {} instance(s) of {} that are not in the balancer (left by an earlier run): {}",
            leftovers.len(),
            self.plan.env,
            leftovers.join(", ")
        );
        self.instances.terminate(leftovers).await
    }

    /// Ends the phase in progress as `name` (prefixed with the batch in
    /// progress, if any); the next one begins now.
    pub(super) fn phase(&mut self, name: &'static str) {
        let now = Instant::now();
        let duration = now - self.phase_began;
        let name = match self.batch {
            Some(batch) => format!("{batch} {name}"),
            None => name.to_string(),
        };
        tracing::debug!("phase {name} took {:.1}s", duration.as_secs_f64());
        self.phases.push(Phase { name, duration });
        self.phase_began = now;
    }

    /// `batch 2/5: ` in a deploy in batches, to start a log line or a
    /// wait's description with; empty otherwise.
    pub(super) fn label(&self) -> String {
        self.batch.map(|b| format!("{b}: ")).unwrap_or_default()
    }

    /// The tags every new instance carries, at creation.
    pub(super) fn instance_tags(&self, release: &Release<Built>) -> Tags {
        let plan = self.plan;
        let mut tags = Tags::from([
            (tag::APP.to_string(), plan.app.clone()),
            (tag::ENV.to_string(), plan.env.clone()),
            (tag::COMMIT.to_string(), release.commit().to_string()),
            (tag::ROLE.to_string(), tag::ROLE_APP.to_string()),
            (tag::RUN.to_string(), self.run.to_string()),
            (
                "Name".to_string(),
                format!("{}-{}-{}", plan.app, plan.env, release.commit().short()),
            ),
        ]);
        // The build it runs, for `status` to read off the instances.
        if let Some(sha) = release.image().tags.get(tag::ARTIFACT_SHA256) {
            tags.insert(tag::ARTIFACT_SHA256.to_string(), sha.clone());
        }
        tags
    }

    /// Runs the plan's tasks whose `when` is in `when`, in order, as the
    /// phase `tasks`; the first failure stops the deploy.
    pub(super) async fn run_tasks(
        &mut self,
        when: &[TaskWhen],
        release: &Release<Built>,
    ) -> Result<()> {
        let plan = self.plan;
        let due: Vec<_> = plan
            .tasks
            .iter()
            .filter(|t| when.contains(&t.when))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for task in due {
            self.interrupt.check()?;
            let outcome = task::run(
                task,
                self.instances,
                release.image(),
                release.commit(),
                self.run,
                self.interrupt,
            )
            .await?;
            self.tasks.push(outcome);
        }
        self.phase("tasks");
        Ok(())
    }

    /// Takes the old fleet (or, in a deploy in batches, part of it) out:
    /// deregistered, drained, terminated.
    pub(super) async fn remove_old_fleet(&mut self, old: &[String]) -> Result<()> {
        if old.is_empty() {
            return Ok(());
        }
        self.deregister_old(old).await?;
        self.drain_and_terminate(old).await
    }

    /// Takes `old` out of the balancer: from here they serve no more.
    pub(super) async fn deregister_old(&self, old: &[String]) -> Result<()> {
        self.balancer.deregister(old).await?;
        tracing::info!(
            "{}deregistered {} old instance(s): {}",
            self.label(),
            old.len(),
            old.join(", ")
        );
        Ok(())
    }

    /// Waits until `old`, deregistered, has drained (phase `drain`), and
    /// terminates it (phase `terminate`).
    pub(super) async fn drain_and_terminate(&mut self, old: &[String]) -> Result<()> {
        self.drain(old).await?;
        self.phase("drain");
        self.instances.terminate(old).await?;
        tracing::info!("{}terminated {} old instance(s)", self.label(), old.len());
        self.phase("terminate");
        Ok(())
    }

    fn outcome(self, release: Release<Built>, new: Vec<String>, current: Current) -> DeployOutcome {
        let outcome = DeployOutcome {
            release: release.into_deployed(self.plan.env.clone(), new),
            cleaned: current.leftovers,
            removed: current.old,
            run: self.run.clone(),
            tasks: self.tasks,
            phases: self.phases,
            duration: self.started.elapsed(),
        };
        tracing::info!(
            "{} now runs {} on {} instance(s), in {:.1}s",
            self.plan.env,
            outcome.release.commit(),
            self.plan.count,
            outcome.duration.as_secs_f64()
        );
        outcome
    }
}
