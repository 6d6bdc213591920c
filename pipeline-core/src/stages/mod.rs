//! The stages, each a step a CI job runs: `test`, `build`, `deploy`,
//! `promote` (and rollback), `status`, which only reads, and `task`, the
//! one-off release tasks a deploy runs (or `pipeline task` by hand).
//!
//! Stages talk to AWS only through [`crate::ports`]; each takes a validated
//! plan, the ports, and an [`crate::wait::Interrupt`], and cleans up what it
//! created when it fails.

pub mod build;
pub mod deploy;
pub mod gc;
pub mod promote;
pub mod settings;
pub mod status;
pub mod task;
pub mod test;

use crate::error::{Error, Result};
use crate::ports::{InstanceState, InstanceStatus, Instances};
use crate::wait::{self, Interrupt, Poll, Progress};

/// How many console lines a failed bake or task shows.
const CONSOLE_TAIL_LINES: usize = 30;

/// Waits until the one-shot instance `id` (a builder, a task) has powered
/// itself off, one DescribeInstances a tick, and returns its status. An
/// instance shutting down or terminated first is the error `gone` makes.
pub(crate) async fn await_stopped(
    instances: &dyn Instances,
    id: &str,
    what: &str,
    poll: Poll,
    interrupt: &Interrupt,
    gone: impl Fn(&InstanceStatus) -> Error,
) -> Result<InstanceStatus> {
    let ids = [id.to_string()];
    wait::until(what, poll, interrupt, || async {
        let status = instances
            .statuses(&ids)
            .await?
            .into_iter()
            .find(|s| s.id == id);
        let Some(status) = status else {
            return Ok(Progress::Pending("not yet visible".into()));
        };
        match status.state {
            InstanceState::Stopped => Ok(Progress::Done(status)),
            InstanceState::ShuttingDown | InstanceState::Terminated => Err(gone(&status)),
            ref state => Ok(Progress::Pending(state.to_string())),
        }
    })
    .await
}

/// Logs the last lines of instance `id`'s console, `whose` it is (e.g.
/// `builder`, `task migrate`): what a failed bake or task printed.
/// Best effort: a console that cannot be read is a warning.
pub(crate) async fn log_console_tail(instances: &dyn Instances, whose: &str, id: &str) {
    match instances.console_output(id).await {
        Ok(console) if !console.trim().is_empty() => {
            let lines: Vec<&str> = console.lines().collect();
            let tail = &lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..];
            tracing::error!(
                "last {} lines of {whose}'s console ({id}):\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        Ok(_) => tracing::warn!("{whose} ({id}) has no console output yet"),
        Err(e) => tracing::warn!("could not read the console of {whose} ({id}): {e}"),
    }
}
