//! Group mode: the environment's Auto Scaling group launches the new
//! fleet. The deploy makes a launch template version with the new AMI,
//! suspends the processes that would fight it, raises the group by N and
//! takes the group's new members as the new fleet; the old members are
//! detached and retired; the group ends at N on the new version, with its
//! maximum as it was.
//!
//! Raising the maximum is noted on the group itself first (the
//! `pipeline:resting-max` tag), so a deploy killed half-way is finished
//! by the next one, which returns the group to that maximum.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::swap::Swap;
use crate::error::Result;
use crate::ports::{AutoScaling, GroupState, tag};
use crate::release::{Built, Release};
use crate::wait::{self, Poll, Progress};

/// The group, as found and as this deploy changed it.
pub(super) struct Group<'a> {
    asg: &'a dyn AutoScaling,
    name: String,
    /// The group as the deploy found it: what a failure restores.
    before: GroupState,
    /// The launch template version this deploy made, once it made one.
    version: Option<String>,
    /// Whether this deploy tagged the group with its resting maximum (and
    /// so must remove the tag, whichever way the deploy ends).
    tagged_resting_max: bool,
    /// The group's new members.
    new: Vec<String>,
}

impl<'a> Group<'a> {
    /// The group `name` as it is now (one call).
    pub(super) async fn inspect(asg: &'a dyn AutoScaling, name: &str) -> Result<Group<'a>> {
        Ok(Group {
            asg,
            name: name.to_string(),
            before: asg.group(name).await?,
            version: None,
            tagged_resting_max: false,
            new: Vec::new(),
        })
    }

    /// Its members before the deploy: the serving fleet.
    pub(super) fn members(&self) -> &[String] {
        &self.before.instances
    }

    /// A launch template version with the AMI, scaling processes
    /// suspended, the group raised by N; then its new members are awaited,
    /// registered and awaited healthy.
    pub(super) async fn bring_up(
        &mut self,
        swap: &mut Swap<'_>,
        release: &Release<Built>,
    ) -> Result<()> {
        let plan = swap.plan;
        let (asg, name, before) = (self.asg, self.name.as_str(), &self.before);
        let deadline = Instant::now() + plan.health_poll.deadline;
        let image = &release.image().id;
        let version = asg
            .new_template_version(
                &before.template_id,
                &before.template_version,
                image,
                &plan.user_data,
                plan.shape.metadata,
                &swap.instance_tags(release),
            )
            .await?;
        tracing::info!(
            "launch template {} version {version} launches {image}",
            before.template_id
        );
        let desired = before.instances.len() as u32 + plan.count;
        // A tag already there is a killed deploy's; it stays.
        if desired > before.max && before.resting_max.is_none() {
            asg.set_resting_max(name, before.max).await?;
            self.tagged_resting_max = true;
        }
        asg.suspend(name).await?;
        self.version = Some(version.clone());
        asg.update(
            name,
            &before.template_id,
            &version,
            desired,
            before.max.max(desired),
        )
        .await?;
        let old: BTreeSet<&String> = before.instances.iter().collect();
        let what = format!("{name} to launch {} new instance(s)", plan.count);
        let poll = Poll {
            interval: plan.health_poll.interval,
            deadline: deadline.saturating_duration_since(Instant::now()),
        };
        self.new = wait::until(&what, poll, swap.interrupt, || async {
            let fresh: Vec<String> = asg
                .group(name)
                .await?
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
        tracing::info!("{name} launched {}", self.new.join(", "));
        swap.phase("launch");

        swap.await_running(&self.new, deadline).await?;
        swap.phase("boot");
        // The group registers its members by itself; registering them
        // again is harmless and covers a group without the balancer.
        swap.register_healthy(&self.new, deadline).await
    }

    /// Detaches the old members, retires them, and settles the group at N
    /// on the new version with its resting maximum.
    pub(super) async fn retire(&mut self, swap: &mut Swap<'_>, old: &[String]) -> Result<()> {
        let (asg, name, before) = (self.asg, self.name.as_str(), &self.before);
        if !old.is_empty() {
            asg.detach(name, old).await?;
            tracing::info!("detached the old fleet from {name}");
        }
        swap.remove_old_fleet(old).await?;
        let count = swap.plan.count;
        let version = self.version.as_deref().unwrap_or(&before.template_version);
        asg.update(
            name,
            &before.template_id,
            version,
            count,
            before.resting_max.unwrap_or(before.max).max(count),
        )
        .await?;
        if before.resting_max.is_some() || self.tagged_resting_max {
            asg.clear_resting_max(name).await?;
        }
        asg.resume(name).await
    }

    /// Best effort: the group's new members (some the wait may not have
    /// seen) detached and removed, the group back on its version, size and
    /// maximum, its processes resumed.
    pub(super) async fn undo(&mut self, swap: &Swap<'_>) {
        let (asg, name, before) = (self.asg, self.name.as_str(), &self.before);
        match asg.group(name).await {
            Ok(now) => {
                self.new = now
                    .instances
                    .into_iter()
                    .filter(|i| !before.instances.contains(i))
                    .collect();
            }
            Err(e) => tracing::error!("could not describe {name}: {e}"),
        }
        if !self.new.is_empty() {
            if let Err(e) = asg.detach(name, &self.new).await {
                tracing::error!("could not detach {} from {name}: {e}", self.new.join(", "));
            }
            // The group may have registered its new members by itself.
            swap.deregister_quietly(&self.new).await;
            swap.terminate_quietly(&self.new).await;
        }
        let restored = asg
            .update(
                name,
                &before.template_id,
                &before.template_version,
                before.desired,
                before.max,
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

    pub(super) fn into_new_fleet(self) -> Vec<String> {
        self.new
    }
}
