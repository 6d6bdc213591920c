//! `pipeline deploy`: swap a release in behind an environment's balancer,
//! one deploy at a time per environment, the newest waiting one first.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Report, Session, secs};
use crate::config::EventKind;
use crate::error::{Error, Result};
use crate::release::{ReleaseRef, short_commit};
use crate::run::{Begun, Details, RunSpec, Stage, StageRun};
use crate::stages::deploy::{DeployOutcome, DeployPlan};
use crate::stages::promote::{self, PromotePlan, Slot};
use crate::stages::task::TaskOutcome;

/// Where a deploy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployTarget {
    /// An environment by name (a production slot is checked not to be live).
    Env(String),
    /// The production slot the public record does not point at (`--slot
    /// idle`), chosen under both slots' locks.
    IdleSlot,
}

/// What to deploy where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    /// The environment, or the idle slot.
    pub target: DeployTarget,
    /// Deploy into the slot that takes the traffic now (`--allow-live`),
    /// which is not blue/green; the ledger records it.
    pub allow_live: bool,
    /// The release: a commit's AMI, or an AMI by id.
    pub release: ReleaseRef,
    /// How long to wait in the environment's queue for a deploy in
    /// progress (a newer one queued behind supersedes this one).
    pub lock_wait: Duration,
}

/// What a deploy did: deployed, or gave way to a newer one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DeployReport {
    /// The release serves in the environment.
    Deployed(DeployedReport),
    /// A newer deploy queued behind this one, which did nothing.
    Superseded(SupersededReport),
}

/// A release that now serves in an environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployedReport {
    /// The environment.
    pub env: String,
    /// For a production slot: `idle`, or `live` (with `--allow-live`).
    pub slot: Option<&'static str>,
    /// The commit it runs.
    pub commit: String,
    /// The AMI it runs.
    pub ami: String,
    /// The new fleet.
    pub new: Vec<String>,
    /// The old fleet, deregistered and terminated.
    pub removed: Vec<String>,
    /// What a killed earlier run left, terminated first.
    pub cleaned: Vec<String>,
    /// The release tasks that ran, in order.
    pub tasks: Vec<TaskRun>,
    /// The run tagged on the new instances.
    pub run: String,
    /// Each phase's wall time in seconds, by name.
    pub phases: BTreeMap<String, f64>,
    /// The stage's wall time.
    pub duration_secs: f64,
}

/// One release task a deploy ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRun {
    /// The task.
    pub name: String,
    /// The one-shot instance it ran on.
    pub instance: String,
    /// Its wall time.
    pub duration_secs: f64,
}

impl From<&TaskOutcome> for TaskRun {
    fn from(task: &TaskOutcome) -> Self {
        TaskRun {
            name: task.name.clone(),
            instance: task.instance.clone(),
            duration_secs: secs(task.duration),
        }
    }
}

/// A deploy that gave way to a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupersededReport {
    /// Always true: tells this report from [`DeployedReport`] in JSON.
    pub superseded: bool,
    /// The environment.
    pub env: String,
    /// The newer run, described.
    pub by: String,
    /// The newer run's commit.
    pub by_commit: Option<String>,
}

impl From<&DeployOutcome> for DeployedReport {
    fn from(out: &DeployOutcome) -> Self {
        let state = out.release.state();
        DeployedReport {
            env: state.env.clone(),
            slot: None,
            commit: out.release.commit().to_string(),
            ami: state.ami.clone(),
            new: state.instances.clone(),
            removed: out.removed.clone(),
            cleaned: out.cleaned.clone(),
            tasks: out.tasks.iter().map(TaskRun::from).collect(),
            run: out.run.to_string(),
            phases: out
                .phases
                .iter()
                .map(|p| (p.name.to_string(), secs(p.duration)))
                .collect(),
            duration_secs: secs(out.duration),
        }
    }
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployReport::Deployed(d) => {
                let slot = d
                    .slot
                    .map(|s| format!(" (the {s} slot)"))
                    .unwrap_or_default();
                write!(
                    f,
                    "{}{slot}: {} ({}) on {}",
                    d.env,
                    short_commit(&d.commit),
                    d.ami,
                    d.new.join(", ")
                )?;
                for task in &d.tasks {
                    write!(
                        f,
                        "\ntask {}: ok in {:.0}s on {}",
                        task.name, task.duration_secs, task.instance
                    )?;
                }
                if !d.removed.is_empty() {
                    write!(f, "\nremoved: {}", d.removed.join(", "))?;
                }
                Ok(())
            }
            DeployReport::Superseded(s) => {
                write!(
                    f,
                    "deploy to {} superseded by {}: nothing done",
                    s.env, s.by
                )
            }
        }
    }
}

impl Report for DeployReport {}

/// A production slot's part when a deploy into it starts.
enum SlotUse {
    /// Not a production slot.
    None,
    /// The slot the record does not point at.
    Idle,
    /// The slot that takes the traffic, allowed by `--allow-live`.
    Live,
}

impl Session {
    /// Deploys the release to the environment (or the idle slot); see
    /// [`crate::stages::deploy`]. A deploy waiting for the environment's
    /// lock is superseded by a newer one queued behind it. A deploy into a
    /// production slot takes both slots' locks (as promote does), so it
    /// never races a promote, and refuses the live slot unless allowed.
    pub async fn deploy(&self, options: DeployOptions) -> Result<DeployReport> {
        // Checked before any lock: the target, and a named environment's plan.
        let promote = match &options.target {
            DeployTarget::IdleSlot => Some(self.promote_plan().map_err(|_| {
                Error::Input(
                    "--slot idle needs a `promote` section naming the two slots; deploy with --env NAME".into(),
                )
            })?),
            DeployTarget::Env(name) => {
                DeployPlan::new(&self.config, name)?;
                match &self.config.promote {
                    Some(p) if p.slots.contains(name) => Some(self.promote_plan()?),
                    _ => None,
                }
            }
        };
        let (env, scopes) = match (&promote, &options.target) {
            (Some(p), DeployTarget::Env(name)) => (Some(name.clone()), p.slots.to_vec()),
            (Some(p), DeployTarget::IdleSlot) => (None, p.slots.to_vec()),
            (None, DeployTarget::Env(name)) => (Some(name.clone()), vec![name.clone()]),
            (None, DeployTarget::IdleSlot) => unreachable!("the idle slot has a promote plan"),
        };
        let spec = RunSpec {
            env: env.clone(),
            commit: options.release.commit().cloned(),
            scopes,
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Deploy)
        };
        let mut run = match StageRun::begin_queued(&self.tracking, spec, &self.interrupt).await? {
            Begun::Running(run) => run,
            Begun::Superseded(newer) => {
                return Ok(DeployReport::Superseded(SupersededReport {
                    superseded: true,
                    env: env.unwrap_or_else(|| "the idle slot".into()),
                    by: newer.describe(),
                    by_commit: newer.commit,
                }));
            }
        };
        let result = async {
            let (env, slot) = match (&promote, env) {
                (Some(plan), _) => self.choose_slot(plan, &options, &mut run).await?,
                (None, Some(name)) => (name, SlotUse::None),
                (None, None) => unreachable!("the idle slot has a promote plan"),
            };
            let plan = DeployPlan::new(&self.config, &env)?;
            let release = self.built(&options.release).await?;
            let outcome = release
                .deploy(&plan, self.adapters.deploy(&env), run.id(), &self.interrupt)
                .await?;
            Ok((outcome, slot))
        }
        .await;
        let (outcome, slot) = run
            .finish(result, EventKind::Succeeded, |(o, _)| Details {
                ami: Some(o.release.state().ami.clone()),
                env: Some(o.release.state().env.clone()),
                commit: Some(o.release.commit().to_string()),
                instances: o.release.state().instances.clone(),
                ..Details::default()
            })
            .await?;
        let mut report = DeployedReport::from(&outcome);
        report.slot = match slot {
            SlotUse::None => None,
            SlotUse::Idle => Some("idle"),
            SlotUse::Live => Some("live"),
        };
        Ok(DeployReport::Deployed(report))
    }

    /// Under both slots' locks: which slot the deploy goes to (one read of
    /// the record), and whether that is allowed. The live slot (or, mid
    /// shift, either) is refused unless `allow_live`, which the ledger notes.
    async fn choose_slot(
        &self,
        plan: &PromotePlan,
        options: &DeployOptions,
        run: &mut StageRun<'_>,
    ) -> Result<(String, SlotUse)> {
        let live = promote::live(plan, &self.adapters.promote(plan)).await?;
        let slot = match &options.target {
            DeployTarget::IdleSlot => live.slot.map_or(Slot::First, Slot::other),
            DeployTarget::Env(name) => plan.slot(name)?,
        };
        let name = plan.slots[slot].clone();
        run.about(&name);
        let takes_traffic = live.slot == Some(slot) || live.weights.is_some();
        if !takes_traffic {
            tracing::info!(
                "deploying to {name}, the idle slot ({})",
                match live.slot {
                    Some(s) => format!("{} points at {}", plan.record, plan.slots[s]),
                    None => format!("{} points at neither slot", plan.record),
                }
            );
            return Ok((name, SlotUse::Idle));
        }
        if !options.allow_live {
            return Err(Error::LiveSlot {
                slot: name,
                record: plan.record.clone(),
            });
        }
        tracing::warn!("deploying into {name}, which takes traffic now (--allow-live)");
        run.note(format!("deployed into the live slot {name} (--allow-live)"));
        Ok((name, SlotUse::Live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    #[test]
    fn the_json_fields_are_the_contract() {
        let deployed = DeployReport::Deployed(DeployedReport {
            env: "staging".into(),
            slot: None,
            commit: "c".into(),
            ami: "ami-1".into(),
            new: vec!["i-new".into()],
            removed: vec!["i-old".into()],
            cleaned: vec![],
            tasks: vec![TaskRun {
                name: "migrate".into(),
                instance: "i-task".into(),
                duration_secs: 3.0,
            }],
            run: "r".into(),
            phases: BTreeMap::from([("launch".into(), 1.0)]),
            duration_secs: 9.0,
        });
        assert_eq!(
            keys(&deployed),
            [
                "ami",
                "cleaned",
                "commit",
                "duration_secs",
                "env",
                "new",
                "ok",
                "phases",
                "removed",
                "run",
                "slot",
                "tasks"
            ]
        );
        assert_eq!(
            deployed.to_string(),
            "staging: c (ami-1) on i-new\ntask migrate: ok in 3s on i-task\nremoved: i-old"
        );
        let superseded = DeployReport::Superseded(SupersededReport {
            superseded: true,
            env: "staging".into(),
            by: "deploy run x".into(),
            by_commit: None,
        });
        assert_eq!(
            keys(&superseded),
            ["by", "by_commit", "env", "ok", "superseded"]
        );
    }
}
