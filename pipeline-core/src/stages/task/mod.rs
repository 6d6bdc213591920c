//! Release tasks: a command run once per release (a database migration,
//! say) on a one-shot instance launched from the release's very AMI.
//!
//! The instance gets the environment's settings and a script that runs the
//! command with them exported, reports the exit status and powers off. The
//! verdict is read from the instance's `pipeline:task-exit` tag, which the
//! script sets on its own instance when it can (the aws CLI and
//! `ec2:CreateTags` on itself; see docs/iam.md), else from the console line
//! `pipeline-task: NAME exit N` the script prints. The task instance is
//! tagged `pipeline:role=task` at launch and terminated in every case, so a
//! killed run's leftover is found and terminated by the next deploy.
//!
//! A deploy runs its environment's tasks in the order written: `before_launch`
//! ones before the new fleet is launched, `before_traffic` ones once the new
//! fleet runs but before it is registered. `pipeline task` runs one by hand.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, InstanceShape, TaskWhen};
use crate::error::{Error, Result};
use crate::ports::{Image, Instances, LaunchSpec, ShutdownBehaviour, Tags, tag};
use crate::release::{Commit, RunId};
use crate::wait::{Interrupt, Poll};

/// The tag a task script sets on its own instance: the command's exit status.
pub const EXIT_TAG: &str = "pipeline:task-exit";
/// The console line a task script prints: `pipeline-task: NAME exit N`.
pub const CONSOLE_MARKER: &str = "pipeline-task:";
const SCRIPT_DELIMITER: &str = "PIPELINE_TASK_EOF";

/// One task of one environment, checked and derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    /// Tagged on the task instance, so a killed run's is found.
    pub app: String,
    /// The environment it runs for.
    pub env: String,
    /// The task's name.
    pub name: String,
    /// What the task does, run with the environment's settings exported.
    pub command: String,
    /// When a deploy runs it.
    pub when: TaskWhen,
    /// What the task instance is made of (the environment's shape, with
    /// the task's own instance type if it has one).
    pub shape: InstanceShape,
    /// The subnet to launch in (the environment's first), or the default VPC's.
    pub subnet: Option<String>,
    /// The environment's settings as user-data, which the task script follows.
    pub settings: String,
    /// Polling until the task instance powers off, with the task's deadline.
    pub poll: Poll,
}

impl TaskPlan {
    /// Every task of environment `env`, in the order the config lists them.
    /// An unknown environment is bad input.
    pub fn all(config: &Config, env: &str) -> Result<Vec<TaskPlan>> {
        let e = config.environment(env)?;
        Ok(e.tasks
            .iter()
            .map(|(name, t)| TaskPlan {
                app: config.app.clone(),
                env: env.to_string(),
                name: name.clone(),
                command: t.command.clone(),
                when: t.when,
                shape: t.shape.clone(),
                subnet: e.placement.task_subnet().map(str::to_string),
                settings: super::settings::of_environment(config, env, e, false),
                poll: Poll {
                    interval: e.poll_interval,
                    deadline: t.timeout,
                },
            })
            .collect())
    }

    /// Task `name` of environment `env`; an unknown one is bad input.
    pub fn new(config: &Config, env: &str, name: &str) -> Result<TaskPlan> {
        let mut all = TaskPlan::all(config, env)?;
        match all.iter().position(|t| t.name == name) {
            Some(i) => Ok(all.swap_remove(i)),
            None => Err(Error::Input(format!(
                "environment {env} has no task {name:?}; known: {}",
                if all.is_empty() {
                    "none (add one under environments.{env}.tasks)".to_string()
                } else {
                    all.iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))),
        }
    }

    /// The task instance's user-data: the settings file, then a script that
    /// runs the command with the settings exported, reports and powers off.
    pub fn user_data(&self) -> String {
        let name = &self.name;
        format!(
            "{settings}
# pipeline task {name}: run the command, report its exit status, power off.
cat > /var/tmp/pipeline-task <<'{SCRIPT_DELIMITER}'
#!/bin/sh
set -a
. /etc/pipeline/environment
set +a
{command}
{SCRIPT_DELIMITER}
chmod 0755 /var/tmp/pipeline-task
if [ -z \"$settings_failed\" ]; then /var/tmp/pipeline-task; status=$?; else status=78; fi
verdict=\"{CONSOLE_MARKER} {name} exit $status\"
echo \"$verdict\"
echo \"$verdict\" > /dev/console 2>/dev/null || true
# Also tag this instance with the verdict: faster to read than the console.
imds=http://169.254.169.254/latest
token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' $imds/api/token) &&
  id=$(curl -sf -H \"X-aws-ec2-metadata-token: $token\" $imds/meta-data/instance-id) &&
  region=$(curl -sf -H \"X-aws-ec2-metadata-token: $token\" $imds/meta-data/placement/region) &&
  aws ec2 create-tags --region \"$region\" --resources \"$id\" --tags \"Key={EXIT_TAG},Value=$status\" >/dev/null 2>&1 || true
sync
poweroff || shutdown -h now
",
            settings = self.settings.trim_end(),
            command = self.command,
        )
    }
}

/// What one task run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task's name.
    pub name: String,
    /// The one-shot instance it ran on (terminated since).
    pub instance: String,
    /// Its wall time.
    pub duration: Duration,
}

/// Runs one task on a one-shot instance from `image`, waits for it under the
/// task's deadline, reads the verdict, and terminates the instance in every
/// case. A failed task, a task that never reports, a timeout or an
/// interrupt is an error; the console's tail is logged.
pub async fn run(
    plan: &TaskPlan,
    instances: &dyn Instances,
    image: &Image,
    commit: &Commit,
    run: &RunId,
    interrupt: &Interrupt,
) -> Result<TaskOutcome> {
    let started = Instant::now();
    let tags = Tags::from([
        (tag::APP.to_string(), plan.app.clone()),
        (tag::ENV.to_string(), plan.env.clone()),
        (tag::COMMIT.to_string(), commit.to_string()),
        (tag::ROLE.to_string(), tag::ROLE_TASK.to_string()),
        (tag::RUN.to_string(), run.to_string()),
        (tag::TASK.to_string(), plan.name.clone()),
        (
            "Name".to_string(),
            format!("{}-{}-task-{}", plan.app, plan.env, plan.name),
        ),
    ]);
    let spec = LaunchSpec {
        image_id: image.id.clone(),
        shape: plan.shape.clone(),
        count: 1,
        subnet_id: plan.subnet.clone(),
        user_data: plan.user_data(),
        shutdown: ShutdownBehaviour::Stop,
        root_device: image.root_device.clone(),
        tags,
    };
    let id = instances
        .launch(&spec)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::TaskFailed {
            task: plan.name.clone(),
            reason: "RunInstances returned no instance".into(),
        })?;
    tracing::info!(
        "task {} running on {id} ({}): {}",
        plan.name,
        image.id,
        plan.command
    );
    let result = verdict(plan, instances, &id, interrupt).await;
    if let Err(err) = &result {
        tracing::error!("task {} failed: {err}", plan.name);
        super::log_console_tail(instances, &format!("task {}", plan.name), &id).await;
    }
    match instances.terminate(std::slice::from_ref(&id)).await {
        Ok(()) => tracing::info!("task instance {id} terminated"),
        Err(e) => tracing::error!(
            "could not terminate task instance {id}: {e}; the next deploy to {} will",
            plan.env
        ),
    }
    result?;
    let outcome = TaskOutcome {
        name: plan.name.clone(),
        instance: id,
        duration: started.elapsed(),
    };
    tracing::info!(
        "task {} succeeded in {:.1}s",
        plan.name,
        outcome.duration.as_secs_f64()
    );
    Ok(outcome)
}

/// Waits until the task instance powers off (one DescribeInstances a tick),
/// then reads its exit status: the tag, else the console.
async fn verdict(
    plan: &TaskPlan,
    instances: &dyn Instances,
    id: &str,
    interrupt: &Interrupt,
) -> Result<()> {
    let what = format!("task {} on {id} to run and power off", plan.name);
    let tags = super::await_stopped(instances, id, &what, plan.poll, interrupt, |status| {
        Error::TaskFailed {
            task: plan.name.clone(),
            reason: format!(
                "its instance {id} went away before reporting ({})",
                status.reason.as_deref().unwrap_or("no reason given")
            ),
        }
    })
    .await?
    .tags;
    let exit = match tags.get(EXIT_TAG) {
        Some(value) => Some(value.clone()),
        None => console_exit(&plan.name, &instances.console_output(id).await?),
    };
    match exit.as_deref() {
        Some("0") => Ok(()),
        Some(status) => Err(Error::TaskFailed {
            task: plan.name.clone(),
            reason: format!("`{}` exited with status {status}", plan.command),
        }),
        None => Err(Error::TaskFailed {
            task: plan.name.clone(),
            reason: format!(
                "its instance {id} powered off without reporting an exit status (no {EXIT_TAG} tag, no \"{CONSOLE_MARKER} {} exit N\" line on the console)",
                plan.name
            ),
        }),
    }
}

/// The exit status in the last `pipeline-task: NAME exit N` console line.
pub fn console_exit(name: &str, console: &str) -> Option<String> {
    let prefix = format!("{CONSOLE_MARKER} {name} exit ");
    console.lines().rev().find_map(|line| {
        let status = line.trim().strip_prefix(&prefix)?.trim();
        (!status.is_empty() && status.bytes().all(|b| b.is_ascii_digit()))
            .then(|| status.to_string())
    })
}

#[cfg(test)]
mod tests;
