//! Launched mode: the deploy launches the new fleet itself, spread over
//! the environment's subnets, and registers it with the balancer.

use tokio::time::Instant;

use super::spread;
use super::swap::Swap;
use crate::config::TaskWhen;
use crate::error::Result;
use crate::ports::{LaunchSpec, ShutdownBehaviour};
use crate::release::{Built, Release};

/// The new fleet as launched so far.
pub(super) struct Launched {
    subnets: Vec<String>,
    /// Every instance this deploy launched, so a failure can remove them.
    new: Vec<String>,
    /// Whether the new fleet was registered, so a failure deregisters it.
    registered: bool,
}

impl Launched {
    pub(super) fn new(subnets: &[String]) -> Launched {
        Launched {
            subnets: subnets.to_vec(),
            new: Vec::new(),
            registered: false,
        }
    }

    /// Launches `count` instances over the subnets (one RunInstances per
    /// subnet, tagged at creation), waits until they run, runs the
    /// `before_traffic` tasks, registers them and waits until they are
    /// healthy. Task time does not eat the health deadline.
    pub(super) async fn bring_up(
        &mut self,
        swap: &mut Swap<'_>,
        release: &Release<Built>,
    ) -> Result<()> {
        let plan = swap.plan;
        let mut deadline = Instant::now() + plan.health_poll.deadline;
        let tags = swap.instance_tags(release);
        for (subnet, count) in spread(plan.count, &self.subnets) {
            let spec = LaunchSpec {
                image_id: release.image().id.clone(),
                shape: plan.shape.clone(),
                count,
                subnet_id: Some(subnet),
                user_data: plan.user_data.clone(),
                shutdown: ShutdownBehaviour::Terminate,
                root_device: release.image().root_device.clone(),
                tags: tags.clone(),
            };
            self.new.extend(swap.instances.launch(&spec).await?);
        }
        tracing::info!("launched {}", self.new.join(", "));
        swap.phase("launch");

        swap.await_running(&self.new, deadline).await?;
        swap.phase("boot");

        let began = Instant::now();
        swap.run_tasks(&[TaskWhen::BeforeTraffic], release).await?;
        deadline += began.elapsed();

        self.registered = true;
        swap.register_healthy(&self.new, deadline).await
    }

    /// Deregisters (if registered) and terminates what was launched.
    pub(super) async fn undo(&self, swap: &Swap<'_>) {
        if self.new.is_empty() {
            return;
        }
        if self.registered {
            swap.deregister_quietly(&self.new).await;
        }
        swap.terminate_quietly(&self.new).await;
    }

    pub(super) fn into_new_fleet(self) -> Vec<String> {
        self.new
    }
}
