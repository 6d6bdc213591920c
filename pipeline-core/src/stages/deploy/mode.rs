//! The two ways a new fleet comes up and the old one goes, as one type:
//! instances the pipeline launches itself, or an Auto Scaling group's.
//! Each mode owns what it learned and changed, and knows how to undo it.

use super::DeployPlan;
use super::group::Group;
use super::launched::Launched;
use super::swap::Swap;
use crate::config::{Placement, TaskWhen};
use crate::error::{Error, Result};
use crate::ports::AutoScaling;
use crate::release::{Built, Release};

/// How this deploy brings its fleet up.
pub(super) enum Mode<'a> {
    /// Launched over the environment's subnets, registered by the deploy.
    Launched(Launched),
    /// Launched by the environment's Auto Scaling group.
    Group(Group<'a>),
}

impl<'a> Mode<'a> {
    /// The plan's mode, with what it needs to know of AWS before it
    /// changes anything (in group mode: the group, one call).
    pub(super) async fn inspect(
        plan: &DeployPlan,
        auto_scaling: Option<&'a dyn AutoScaling>,
    ) -> Result<Mode<'a>> {
        match (&plan.placement, auto_scaling) {
            (Placement::Subnets(subnets), _) => Ok(Mode::Launched(Launched::new(plan, subnets))),
            (Placement::Group { name, .. }, Some(asg)) => {
                Ok(Mode::Group(Group::inspect(asg, name).await?))
            }
            (Placement::Group { name, .. }, None) => Err(Error::Input(format!(
                "environment {} names Auto Scaling group {name} but no Auto Scaling port was given",
                plan.env
            ))),
        }
    }

    /// The group's members, which serve as the old fleet (group mode only).
    pub(super) fn members(&self) -> Option<&[String]> {
        match self {
            Mode::Launched(_) => None,
            Mode::Group(group) => Some(group.members()),
        }
    }

    /// The tasks that run before the new fleet is launched. A group
    /// registers what it launches, so its `before_traffic` tasks run
    /// before it is raised; [`Launched`] runs them between boot and
    /// register (of the first batch, in batches).
    pub(super) fn early_tasks(&self) -> &'static [TaskWhen] {
        match self {
            Mode::Launched(_) => &[TaskWhen::BeforeLaunch],
            Mode::Group(_) => &[TaskWhen::BeforeLaunch, TaskWhen::BeforeTraffic],
        }
    }

    /// Brings the new fleet up and takes the old one (`old`) out. A
    /// failure before the old fleet leaves removes the new instances and
    /// puts back what the mode changed, best effort; the old fleet keeps
    /// serving. (In batches, only the batch in progress is removed: see
    /// [`Launched::replace`].)
    pub(super) async fn replace(
        &mut self,
        swap: &mut Swap<'_>,
        release: &Release<Built>,
        old: &[String],
    ) -> Result<()> {
        match self {
            Mode::Launched(launched) => launched.replace(swap, release, old).await,
            Mode::Group(group) => {
                if let Err(err) = group.bring_up(swap, release).await {
                    tracing::error!(
                        "deploy to {} failed: {err}; removing the new instances, the old fleet keeps serving",
                        swap.plan.env
                    );
                    group.undo(swap).await;
                    return Err(err);
                }
                group.retire(swap, old).await
            }
        }
    }

    /// The new fleet's instances.
    pub(super) fn into_new_fleet(self) -> Vec<String> {
        match self {
            Mode::Launched(launched) => launched.into_new_fleet(),
            Mode::Group(group) => group.into_new_fleet(),
        }
    }
}
