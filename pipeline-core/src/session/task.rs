//! `pipeline task`: one of an environment's release tasks, by hand.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Report, Session, secs};
use crate::config::EventKind;
use crate::error::Result;
use crate::release::{ReleaseRef, short_commit};
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::stages::task::{self, TaskPlan};

/// Which task to run, on which release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// The environment whose task it is (and whose lock it takes).
    pub env: String,
    /// The task's name.
    pub task: String,
    /// The release whose AMI runs it.
    pub release: ReleaseRef,
    /// How long to wait for a deploy or task in the environment.
    pub lock_wait: Duration,
}

/// A task that ran and succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    /// The task.
    pub name: String,
    /// The environment.
    pub env: String,
    /// The one-shot instance it ran on (terminated since).
    pub instance: String,
    /// The AMI it ran on.
    pub ami: String,
    /// That AMI's commit.
    pub commit: String,
    /// Its wall time.
    pub duration_secs: f64,
}

impl fmt::Display for TaskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} in {}: ok in {:.0}s ({} of {} on {})",
            self.name,
            self.env,
            self.duration_secs,
            self.ami,
            short_commit(&self.commit),
            self.instance
        )
    }
}

impl Report for TaskReport {}

impl Session {
    /// Runs the task on a one-shot instance from the release's AMI, after
    /// cleaning up what a killed run in the environment left.
    pub async fn task(&self, options: TaskOptions) -> Result<TaskReport> {
        let plan = TaskPlan::new(&self.config, &options.env, &options.task)?;
        let spec = RunSpec {
            env: Some(options.env.clone()),
            commit: options.release.commit().cloned(),
            scopes: vec![options.env.clone()],
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Task)
        };
        let mut run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let result = async {
            self.recover(&mut run).await?;
            let release = self.built(&options.release).await?;
            let outcome = task::run(
                &plan,
                self.adapters.instances(),
                release.image(),
                release.commit(),
                run.id(),
                &self.interrupt,
            )
            .await?;
            Ok(TaskReport {
                name: outcome.name,
                env: options.env.clone(),
                instance: outcome.instance,
                ami: release.image().id.clone(),
                commit: release.commit().to_string(),
                duration_secs: secs(outcome.duration),
            })
        }
        .await;
        run.finish(result, EventKind::Succeeded, |r| Details {
            ami: Some(r.ami.clone()),
            commit: Some(r.commit.clone()),
            instances: vec![r.instance.clone()],
            ..Details::default()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    #[test]
    fn the_json_fields_are_the_contract() {
        let report = TaskReport {
            name: "migrate".into(),
            env: "prod1".into(),
            instance: "i-1".into(),
            ami: "ami-1".into(),
            commit: "0123456789abcdef".into(),
            duration_secs: 12.0,
        };
        assert_eq!(
            keys(&report),
            [
                "ami",
                "commit",
                "duration_secs",
                "env",
                "instance",
                "name",
                "ok"
            ]
        );
        assert_eq!(
            report.to_string(),
            "task migrate in prod1: ok in 12s (ami-1 of 0123456789ab on i-1)"
        );
    }
}
