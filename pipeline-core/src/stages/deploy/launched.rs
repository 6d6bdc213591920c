//! Launched mode: the deploy launches the new fleet itself, spread over
//! the environment's subnets, and registers it with the balancer. With
//! `max_surge` the fleet comes up in batches, each swapped in for as many
//! old instances before the next is launched; without, in one batch.
//!
//! A subnet whose AZ has no capacity of the instance type hands its share
//! to the other subnets; a full account quota fails the deploy with what
//! to raise.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::DeployPlan;
use super::swap::{Batch, Swap};
use crate::config::TaskWhen;
use crate::error::{Error, NO_CAPACITY_CODE, QUOTA_CODES, Result};
use crate::ports::{LaunchSpec, ShutdownBehaviour, Tags};
use crate::release::{Built, Release};

/// The new fleet as launched so far.
pub(super) struct Launched {
    subnets: Vec<String>,
    /// How many new instances a batch launches: `max_surge`, or the
    /// whole count in one batch.
    batch_size: u32,
    /// The plan's `max_surge`, for the quota message's advice.
    max_surge: Option<u32>,
    /// Subnets that answered `InsufficientInstanceCapacity` during this
    /// deploy: their shares go to the others from then on.
    no_capacity: BTreeSet<String>,
    /// The new instances of the batches done: they serve.
    serving: Vec<String>,
    /// The batch in progress, which a failure removes.
    batch: Vec<String>,
    /// Whether the batch in progress was registered, so a failure
    /// deregisters it.
    registered: bool,
    /// How many old instances (from the front of the old fleet) this
    /// deploy took out of the balancer.
    retired: usize,
}

impl Launched {
    pub(super) fn new(plan: &DeployPlan, subnets: &[String]) -> Launched {
        Launched {
            subnets: subnets.to_vec(),
            batch_size: plan.max_surge.unwrap_or(plan.count).min(plan.count).max(1),
            max_surge: plan.max_surge,
            no_capacity: BTreeSet::new(),
            serving: Vec::new(),
            batch: Vec::new(),
            registered: false,
            retired: 0,
        }
    }

    /// Swaps the new fleet in for `old`, batch by batch: each batch is
    /// brought up and held healthy, then as many old instances as it added
    /// leave (the last batch takes the rest). A failure removes the batch
    /// in progress; the batches done keep serving.
    pub(super) async fn replace(
        &mut self,
        swap: &mut Swap<'_>,
        release: &Release<Built>,
        old: &[String],
    ) -> Result<()> {
        let count = swap.plan.count;
        let batches = count.div_ceil(self.batch_size);
        for number in 1..=batches {
            let first = (number - 1) * self.batch_size;
            let size = self.batch_size.min(count - first);
            if batches > 1 {
                swap.batch = Some(Batch {
                    number,
                    of: batches,
                });
                tracing::info!(
                    "{}launching {size} new instance(s); {} of {count} run the new release, {} old serve",
                    swap.label(),
                    self.serving.len(),
                    old.len() - self.retired
                );
            }
            if let Err(err) = self.bring_up(swap, release, first, size, number == 1).await {
                let undone = self.undo(swap, &err, old).await;
                return Err(self.stopped(swap, err, old, undone));
            }
            self.serving.append(&mut self.batch);
            self.registered = false;
            let left = &old[self.retired..];
            let leaving = if number == batches {
                left
            } else {
                &left[..left.len().min(size as usize)]
            };
            if let Err(err) = self.retire(swap, leaving).await {
                return Err(self.stopped(swap, err, old, 0));
            }
            if batches > 1 {
                tracing::info!(
                    "{}done: {} of {count} instance(s) run the new release, {} old serve",
                    swap.label(),
                    self.serving.len(),
                    old.len() - self.retired
                );
            }
        }
        swap.batch = None;
        Ok(())
    }

    /// Launches `size` instances (slots `first..first + size` of the
    /// fleet, dealt over the subnets in turn; one RunInstances per subnet,
    /// tagged at creation), waits until they run, runs the
    /// `before_traffic` tasks (in the `first_batch` only), registers them
    /// and waits until they are healthy. Task time does not eat the
    /// health deadline, which is the batch's own.
    async fn bring_up(
        &mut self,
        swap: &mut Swap<'_>,
        release: &Release<Built>,
        first: u32,
        size: u32,
        first_batch: bool,
    ) -> Result<()> {
        swap.interrupt.check()?;
        let mut deadline = Instant::now() + swap.plan.health_poll.deadline;
        let tags = swap.instance_tags(release);
        for (subnet, count) in self.shares(first, size) {
            self.launch_share(swap, release, &tags, subnet, count)
                .await?;
        }
        tracing::info!("{}launched {}", swap.label(), self.batch.join(", "));
        swap.phase("launch");

        swap.await_running(&self.batch, deadline).await?;
        swap.phase("boot");

        if first_batch {
            let began = Instant::now();
            swap.run_tasks(&[TaskWhen::BeforeTraffic], release).await?;
            deadline += began.elapsed();
        }

        self.registered = true;
        swap.register_healthy(&self.batch, deadline).await
    }

    /// Which subnet launches how many of the fleet's slots from `first`
    /// on (`size` of them): slot i goes to subnet i mod n, so batches
    /// taken in turn spread the fleet as [`super::spread`] does; a subnet
    /// without capacity hands its slots to the first one with.
    fn shares(&self, first: u32, size: u32) -> Vec<(String, u32)> {
        let n = self.subnets.len() as u32;
        let mut shares: Vec<(String, u32)> = Vec::new();
        for slot in first..first + size {
            let mut subnet = &self.subnets[(slot % n) as usize];
            if self.no_capacity.contains(subnet)
                && let Some(other) = self.with_capacity()
            {
                subnet = other;
            }
            match shares.iter_mut().find(|(s, _)| s == subnet) {
                Some((_, count)) => *count += 1,
                None => shares.push((subnet.clone(), 1)),
            }
        }
        shares
    }

    /// The first subnet, in the environment's order, that has not
    /// answered `InsufficientInstanceCapacity` during this deploy.
    fn with_capacity(&self) -> Option<&String> {
        self.subnets.iter().find(|s| !self.no_capacity.contains(*s))
    }

    /// Launches `count` instances in `subnet`, or, when its AZ has no
    /// capacity of the type, in the other subnets in order.
    async fn launch_share(
        &mut self,
        swap: &Swap<'_>,
        release: &Release<Built>,
        tags: &Tags,
        subnet: String,
        count: u32,
    ) -> Result<()> {
        let plan = swap.plan;
        let mut subnet = subnet;
        loop {
            if self.no_capacity.contains(&subnet) {
                let Some(other) = self.with_capacity() else {
                    return Err(self.no_capacity_anywhere(plan));
                };
                tracing::warn!(
                    "{}AWS has no {} capacity in {subnet} ({NO_CAPACITY_CODE}); launching its {count} instance(s) in {other}",
                    swap.label(),
                    plan.shape.instance_type
                );
                subnet = other.clone();
            }
            let spec = LaunchSpec {
                image_id: release.image().id.clone(),
                shape: plan.shape.clone(),
                count,
                subnet_id: Some(subnet.clone()),
                user_data: plan.user_data.clone(),
                shutdown: ShutdownBehaviour::Terminate,
                root_device: release.image().root_device.clone(),
                tags: tags.clone(),
            };
            match swap.instances.launch(&spec).await {
                Ok(ids) => {
                    self.batch.extend(ids);
                    return Ok(());
                }
                Err(err) if err.aws_code() == Some(NO_CAPACITY_CODE) => {
                    self.no_capacity.insert(subnet.clone());
                }
                Err(err) => match err.aws_code() {
                    Some(code) if QUOTA_CODES.contains(&code) => {
                        return Err(self.quota_reached(plan, release, code, count, &subnet));
                    }
                    _ => return Err(err),
                },
            }
        }
    }

    /// Every subnet answered `InsufficientInstanceCapacity`.
    fn no_capacity_anywhere(&self, plan: &DeployPlan) -> Error {
        Error::DeployFailed {
            reason: format!(
                "AWS has no {} capacity in any of {}'s subnets right now ({} each answered {NO_CAPACITY_CODE}); \
                 deploy with another instance_type, add subnets in other availability zones, or try again later",
                plan.shape.instance_type,
                plan.env,
                self.subnets.join(", ")
            ),
        }
    }

    /// The account's quota would be exceeded: say which one to raise.
    fn quota_reached(
        &self,
        plan: &DeployPlan,
        release: &Release<Built>,
        code: &str,
        count: u32,
        subnet: &str,
    ) -> Error {
        let instance_type = &plan.shape.instance_type;
        let region = &release.image().region;
        let smaller = match self.max_surge {
            Some(n) => {
                format!("or lower max_surge (now {n}) to bring the fleet up in smaller batches")
            }
            None => "or set max_surge to bring the fleet up in smaller batches".to_string(),
        };
        Error::DeployFailed {
            reason: format!(
                "the account's instance quota is reached ({code}: {count} more {instance_type} in {subnet} would exceed it); \
                 raise the account's Running On-Demand instances (vCPU) quota for {} instances in {region} via Service Quotas, {smaller}",
                quota_family(instance_type)
            ),
        }
    }

    /// After a failed batch: deregisters (if registered) and terminates
    /// what it launched; returns how many that was.
    async fn undo(&mut self, swap: &Swap<'_>, cause: &Error, old: &[String]) -> usize {
        if self.serving.is_empty() {
            tracing::error!(
                "deploy to {} failed: {cause}; removing the new instances, the old fleet keeps serving",
                swap.plan.env
            );
        } else {
            tracing::error!(
                "deploy to {} failed in {}: {cause}; removing that batch's {} new instance(s); {} new and {} old keep serving",
                swap.plan.env,
                swap.batch.map(|b| b.to_string()).unwrap_or_default(),
                self.batch.len(),
                self.serving.len(),
                old.len() - self.retired
            );
        }
        if self.batch.is_empty() {
            return 0;
        }
        if self.registered {
            swap.deregister_quietly(&self.batch).await;
        }
        swap.terminate_quietly(&self.batch).await;
        std::mem::take(&mut self.batch).len()
    }

    /// Takes the old instances a batch stands in for out.
    async fn retire(&mut self, swap: &mut Swap<'_>, leaving: &[String]) -> Result<()> {
        if leaving.is_empty() {
            return Ok(());
        }
        swap.deregister_old(leaving).await?;
        self.retired += leaving.len();
        swap.drain_and_terminate(leaving).await
    }

    /// The error a failure ends the deploy with: as it is when nothing of
    /// the new release serves (or the deploy had one batch); in a later
    /// batch, one that says how the environment was left.
    fn stopped(&self, swap: &Swap<'_>, cause: Error, old: &[String], undone: usize) -> Error {
        match swap.batch {
            Some(batch) if !self.serving.is_empty() => Error::PartlyDeployed {
                env: swap.plan.env.clone(),
                batch: batch.number,
                batches: batch.of,
                new: self.serving.len(),
                old: old.len() - self.retired,
                undone,
                cause: Box::new(cause),
            },
            _ => cause,
        }
    }

    pub(super) fn into_new_fleet(self) -> Vec<String> {
        self.serving
    }
}

/// The On-Demand quota an instance type counts against, as Service
/// Quotas names it ("Running On-Demand <this> instances").
pub(super) fn quota_family(instance_type: &str) -> &'static str {
    let family: String = instance_type
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    match family.as_str() {
        "f" => "F",
        "g" | "vt" => "G and VT",
        "inf" => "Inf",
        "p" => "P",
        "x" => "X",
        "dl" => "DL",
        "trn" => "Trn",
        "hpc" => "HPC",
        "u" => "High Memory",
        _ => "Standard (A, C, D, H, I, M, R, T, Z)",
    }
}
