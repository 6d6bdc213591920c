//! `pipeline deploy`: swap a release in behind an environment's balancer,
//! one deploy at a time per environment, the newest waiting one first.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Report, Session, secs};
use crate::config::EventKind;
use crate::error::Result;
use crate::release::ReleaseRef;
use crate::run::{Begun, Details, RunSpec, Stage, StageRun};
use crate::stages::deploy::{DeployOutcome, DeployPlan};
use crate::stages::task::TaskOutcome;

/// What to deploy where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    /// The environment.
    pub env: String,
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
                write!(
                    f,
                    "{}: {} ({}) on {}",
                    d.env,
                    d.commit,
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

impl Session {
    /// Deploys the release to the environment; see
    /// [`crate::stages::deploy`]. A deploy waiting for the environment's
    /// lock is superseded by a newer one queued behind it.
    pub async fn deploy(&self, options: DeployOptions) -> Result<DeployReport> {
        let plan = DeployPlan::new(&self.config, &options.env)?;
        let spec = RunSpec {
            env: Some(options.env.clone()),
            commit: options.release.commit().cloned(),
            scopes: vec![options.env.clone()],
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Deploy)
        };
        let run = match StageRun::begin_queued(&self.tracking, spec, &self.interrupt).await? {
            Begun::Running(run) => run,
            Begun::Superseded(newer) => {
                return Ok(DeployReport::Superseded(SupersededReport {
                    superseded: true,
                    env: options.env,
                    by: newer.describe(),
                    by_commit: newer.commit,
                }));
            }
        };
        let result = async {
            let release = options
                .release
                .resolve(
                    self.adapters.images(),
                    &self.config.region,
                    &self.config.app,
                )
                .await?;
            release
                .deploy(
                    &plan,
                    self.adapters.deploy(&options.env),
                    run.id(),
                    &self.interrupt,
                )
                .await
        }
        .await;
        let outcome = run
            .finish(result, EventKind::Succeeded, |o| Details {
                ami: Some(o.release.state().ami.clone()),
                commit: Some(o.release.commit().to_string()),
                instances: o.release.state().instances.clone(),
                ..Details::default()
            })
            .await?;
        Ok(DeployReport::Deployed(DeployedReport::from(&outcome)))
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
