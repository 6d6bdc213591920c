//! The deploy's waits, one Describe per tick for the whole fleet: the new
//! fleet running, healthy without a break for `healthy_for`, and the old
//! fleet drained; and the best-effort removals a failure makes.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::swap::Swap;
use crate::error::{Error, Result};
use crate::ports::InstanceState;
use crate::wait::{self, Poll, Progress};

impl Swap<'_> {
    /// Polling at the plan's interval until `deadline`.
    fn poll_until(&self, deadline: Instant) -> Poll {
        Poll {
            interval: self.plan.health_poll.interval,
            deadline: deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// Waits until every one of `ids` runs; one that stops or terminates
    /// first fails the deploy.
    pub(super) async fn await_running(&self, ids: &[String], deadline: Instant) -> Result<()> {
        let what = format!("{}{} new instance(s) to run", self.label(), ids.len());
        wait::until(&what, self.poll_until(deadline), self.interrupt, || async {
            let statuses = self.instances.statuses(ids).await?;
            if let Some(dead) = statuses.iter().find(|s| s.state.is_down()) {
                return Err(Error::DeployFailed {
                    reason: format!(
                        "new instance {} is {} before it ran ({})",
                        dead.id,
                        dead.state,
                        dead.reason.as_deref().unwrap_or("no reason given")
                    ),
                });
            }
            let running = statuses
                .iter()
                .filter(|s| s.state == InstanceState::Running)
                .count();
            Ok(if running == ids.len() {
                Progress::Done(())
            } else {
                Progress::Pending(format!("{running}/{} running", ids.len()))
            })
        })
        .await
    }

    /// Registers `ids` (phase `register`) and waits until they have been
    /// healthy for `healthy_for` (phase `health`).
    pub(super) async fn register_healthy(
        &mut self,
        ids: &[String],
        deadline: Instant,
    ) -> Result<()> {
        self.balancer.register(ids).await?;
        self.phase("register");
        self.await_healthy(ids, self.poll_until(deadline)).await?;
        tracing::info!(
            "{}{} new instance(s) healthy in {}",
            self.label(),
            ids.len(),
            self.balancer.name()
        );
        self.phase("health");
        Ok(())
    }

    /// Waits until every new instance has been healthy, without a break,
    /// for `healthy_for`; one health call per tick for the whole fleet.
    async fn await_healthy(&self, ids: &[String], poll: Poll) -> Result<()> {
        let what = format!(
            "{}{} new instance(s) to be healthy in {} for {}s",
            self.label(),
            ids.len(),
            self.balancer.name(),
            self.plan.healthy_for.as_secs_f64()
        ) + &if self.plan.alarms.is_empty() {
            String::new()
        } else {
            format!(" with alarms {} quiet", self.plan.alarms.join(", "))
        };
        let wanted: BTreeSet<&String> = ids.iter().collect();
        // A Mutex, not a Cell: the deploy's future stays Send, so an
        // embedding program can spawn it.
        let healthy_since = std::sync::Mutex::new(None::<Instant>);
        wait::until(&what, poll, self.interrupt, || async {
            let health = self.balancer.registered().await?;
            let ours: Vec<_> = health.iter().filter(|h| wanted.contains(&h.id)).collect();
            let healthy = ours.iter().filter(|h| h.healthy).count();
            if healthy < ids.len() {
                if healthy_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .is_some()
                {
                    tracing::warn!(
                        "a new instance turned unhealthy; waiting for the fleet to recover"
                    );
                }
                // One not healthy yet may be one that went down: that
                // fails the deploy now, not at the deadline.
                let waiting: Vec<String> = ids
                    .iter()
                    .filter(|id| !ours.iter().any(|h| h.healthy && h.id == **id))
                    .cloned()
                    .collect();
                self.fail_if_down(&waiting).await?;
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
            let since = *healthy_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(Instant::now);
            self.fail_if_alarm().await?;
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
    pub(super) async fn drain(&self, old: &[String]) -> Result<()> {
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

    /// Fails the deploy if any of the plan's alarms is in ALARM (one
    /// DescribeAlarms call; none without alarms).
    async fn fail_if_alarm(&self) -> Result<()> {
        let (Some(metrics), false) = (self.metrics, self.plan.alarms.is_empty()) else {
            return Ok(());
        };
        let firing = metrics.firing(&self.plan.alarms).await?;
        if firing.is_empty() {
            return Ok(());
        }
        Err(Error::DeployFailed {
            reason: format!(
                "alarm {} is in ALARM while the new fleet held healthy in {}",
                firing.join(", "),
                self.balancer.name()
            ),
        })
    }

    /// Fails the deploy if any of `ids` stopped or terminated (one call),
    /// naming it and EC2's reason.
    async fn fail_if_down(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let statuses = self.instances.statuses(ids).await?;
        match statuses.iter().find(|s| s.state.is_down()) {
            Some(down) => Err(Error::DeployFailed {
                reason: format!(
                    "new instance {} is {} while the deploy waited for it to be healthy ({})",
                    down.id,
                    down.state,
                    down.reason.as_deref().unwrap_or("EC2 gives no reason")
                ),
            }),
            None => Ok(()),
        }
    }

    /// Deregisters `ids`, logging a failure (deregistering what is not
    /// registered is harmless).
    pub(super) async fn deregister_quietly(&self, ids: &[String]) {
        if let Err(e) = self.balancer.deregister(ids).await {
            tracing::error!("could not deregister {}: {e}", ids.join(", "));
        }
    }

    /// Terminates `ids`, logging a failure: they are out of the balancer,
    /// so the next deploy terminates them as leftovers.
    pub(super) async fn terminate_quietly(&self, ids: &[String]) {
        match self.instances.terminate(ids).await {
            Ok(()) => tracing::info!("terminated the new instances: {}", ids.join(", ")),
            Err(e) => tracing::error!(
                "could not terminate {}: {e}; the next deploy to {} will (they are not in the balancer)",
                ids.join(", "),
                self.plan.env
            ),
        }
    }
}
