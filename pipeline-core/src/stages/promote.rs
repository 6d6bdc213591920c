//! Promote and rollback: the blue/green flip between two production slots.
//!
//! The public record points at the live slot's balancer (a CNAME to its DNS
//! name, or an ALIAS A record). Promote points it at the other slot, after a
//! traffic guard: the target slot must run the expected commit on at least
//! its `count` (and `min_healthy`) of healthy instances. Rollback points it
//! back at the previously live slot, which is still running, under the same
//! guard on health. The flip is one Route53 change batch that deletes the
//! exact record read and creates the new one, so a concurrent change makes it
//! fail instead of being overwritten; then the change is polled until INSYNC.

use std::collections::BTreeSet;

use crate::config::{Config, RecordType};
use crate::error::{Error, Result};
use crate::ports::{Balancer, Dns, Endpoint, Instances, Record, Target};
use crate::release::Commit;
use crate::wait::{self, Interrupt, Poll, Progress};

/// Everything promote and rollback need, checked and derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotePlan {
    /// The app name.
    pub app: String,
    /// The hosted zone id.
    pub zone: String,
    /// The public record's name.
    pub record: String,
    /// CNAME or ALIAS.
    pub record_type: RecordType,
    /// TTL of a CNAME.
    pub ttl: i64,
    /// The two slots (environment names).
    pub slots: [String; 2],
    /// Healthy instances a slot needs before it takes traffic, per slot.
    pub needed: [u32; 2],
    /// Polling GetChange until INSYNC.
    pub poll: Poll,
}

impl PromotePlan {
    /// The plan of a loaded config; a config without `promote` is bad input.
    pub fn new(config: &Config) -> Result<Self> {
        let p = config.promote.as_ref().ok_or_else(|| {
            Error::Input(
                "the config has no `promote` section; add hosted_zone, record and slots (docs/configuration.md)".into(),
            )
        })?;
        let needed = |slot: &String| config.environments[slot].count.max(p.min_healthy);
        Ok(PromotePlan {
            app: config.app.clone(),
            zone: p.hosted_zone.trim_start_matches("/hostedzone/").to_string(),
            record: p.record.trim_end_matches('.').to_string(),
            record_type: p.record_type,
            ttl: p.ttl,
            slots: p.slots.clone(),
            needed: [needed(&p.slots[0]), needed(&p.slots[1])],
            poll: Poll {
                interval: p.poll_interval,
                deadline: p.timeout,
            },
        })
    }

    fn index(&self, slot: &str) -> Result<usize> {
        self.slots.iter().position(|s| s == slot).ok_or_else(|| {
            Error::Input(format!(
                "{slot:?} is not a slot; the slots are {} and {}",
                self.slots[0], self.slots[1]
            ))
        })
    }
}

/// The ports promote and rollback use.
pub struct PromotePorts<'a> {
    /// Instances (to check what a slot runs).
    pub instances: &'a dyn Instances,
    /// The zone.
    pub dns: &'a dyn Dns,
    /// Each slot's balancer, in the order of [`PromotePlan::slots`].
    pub balancers: [&'a dyn Balancer; 2],
}

/// What the record points at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The record as read (`None` if it does not exist yet).
    pub record: Option<Record>,
    /// Which slot it points at (`None`: no record, or pointing elsewhere).
    pub slot: Option<String>,
    /// Each slot's balancer endpoint, in slot order.
    pub endpoints: [Endpoint; 2],
}

/// Reads the record and the slots' endpoints, and tells which slot is live.
pub async fn live(plan: &PromotePlan, ports: &PromotePorts<'_>) -> Result<Live> {
    let record = ports.dns.record(&plan.zone, &plan.record).await?;
    let endpoints = [
        ports.balancers[0].endpoint().await?,
        ports.balancers[1].endpoint().await?,
    ];
    let slot = record.as_ref().and_then(|r| {
        let host = r.target.host();
        endpoints
            .iter()
            .position(|e| crate::ports::normalise_host(&e.dns_name) == host)
            .map(|i| plan.slots[i].clone())
    });
    Ok(Live {
        record,
        slot,
        endpoints,
    })
}

/// What a promote or rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// The record's name.
    pub record: String,
    /// The slot that was live before (if any).
    pub from: Option<String>,
    /// The slot live now.
    pub to: String,
    /// The host the record points at now.
    pub target: String,
    /// Whether the record was changed (false: the slot was live already).
    pub changed: bool,
    /// The Route53 change id, if changed.
    pub change_id: Option<String>,
    /// The commit the new live slot runs (its healthy instances' commit).
    pub commit: Option<String>,
    /// Healthy instances behind the new live slot.
    pub healthy: usize,
}

/// Points the record at `to` (default: the slot that is not live), after
/// checking that `to` runs `commit` on enough healthy instances.
pub async fn promote(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    to: Option<&str>,
    commit: &Commit,
    interrupt: &Interrupt,
) -> Result<Flip> {
    let live = live(plan, ports).await?;
    let target = match (to, &live.slot) {
        (Some(slot), _) => plan.index(slot)?,
        (None, Some(current)) => 1 - plan.index(current)?,
        (None, None) => 0,
    };
    let slot = plan.slots[target].clone();
    if live.slot.as_deref() == Some(slot.as_str()) {
        tracing::info!("{slot} is live already: nothing to do");
        let (healthy, commit) = guard(plan, ports, target, None).await.unwrap_or((0, None));
        return Ok(Flip {
            record: plan.record.clone(),
            from: live.slot.clone(),
            to: slot,
            target: live.record.map(|r| r.target.host()).unwrap_or_default(),
            changed: false,
            change_id: None,
            commit,
            healthy,
        });
    }
    let (healthy, running) = guard(plan, ports, target, Some(commit)).await?;
    flip(plan, ports, live, target, healthy, running, interrupt).await
}

/// Points the record back at the slot that is not live, after checking it
/// is still healthy.
pub async fn rollback(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    interrupt: &Interrupt,
) -> Result<Flip> {
    let live = live(plan, ports).await?;
    let current = live.slot.clone().ok_or_else(|| {
        Error::Input(format!(
            "{} does not point at {} or {}: nothing to roll back from",
            plan.record, plan.slots[0], plan.slots[1]
        ))
    })?;
    let target = 1 - plan.index(&current)?;
    let (healthy, running) = guard(plan, ports, target, None).await?;
    flip(plan, ports, live, target, healthy, running, interrupt).await
}

/// The traffic guard: the slot's healthy instances (of `commit`, if given)
/// must be at least what the plan needs. Returns their number and commit.
async fn guard(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    slot: usize,
    commit: Option<&Commit>,
) -> Result<(usize, Option<String>)> {
    let name = &plan.slots[slot];
    let instances = ports.instances.app_instances(&plan.app, name).await?;
    let healthy: BTreeSet<String> = ports.balancers[slot]
        .registered()
        .await?
        .into_iter()
        .filter(|h| h.healthy)
        .map(|h| h.id)
        .collect();
    let serving: Vec<_> = instances
        .iter()
        .filter(|i| healthy.contains(&i.id))
        .collect();
    let matching = serving
        .iter()
        .filter(|i| commit.is_none_or(|c| i.commit == c.as_str()))
        .count();
    let running = commit
        .map(|c| c.to_string())
        .or_else(|| serving.first().map(|i| i.commit.clone()));
    let needed = plan.needed[slot] as usize;
    if matching < needed {
        let what = match commit {
            Some(c) => format!("healthy instances of {c}"),
            None => "healthy instances".to_string(),
        };
        return Err(Error::GuardFailed {
            reason: format!(
                "{name} has {matching} {what} behind {}, needs {needed}; deploy it first (pipeline deploy --env {name})",
                ports.balancers[slot].name()
            ),
        });
    }
    tracing::info!(
        "{name}: {matching} healthy instance(s) of {}",
        running.as_deref().unwrap_or("?")
    );
    Ok((matching, running))
}

async fn flip(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    live: Live,
    target: usize,
    healthy: usize,
    commit: Option<String>,
    interrupt: &Interrupt,
) -> Result<Flip> {
    let endpoint = live.endpoints[target].clone();
    let new = Record {
        name: plan.record.clone(),
        target: match plan.record_type {
            RecordType::Cname => Target::Cname(endpoint.dns_name.clone()),
            RecordType::Alias => Target::Alias(endpoint),
        },
        ttl: (plan.record_type == RecordType::Cname).then_some(plan.ttl),
    };
    if let Some(old) = &live.record
        && std::mem::discriminant(&old.target) != std::mem::discriminant(&new.target)
    {
        return Err(Error::Input(format!(
            "{} is a {} record but promote.record_type is {:?}; make them agree",
            plan.record,
            match old.target {
                Target::Cname(_) => "CNAME",
                Target::Alias(_) => "ALIAS",
            },
            plan.record_type
        )));
    }
    let slot = plan.slots[target].clone();
    let change_id = ports
        .dns
        .replace(&plan.zone, live.record.as_ref(), &new)
        .await
        .map_err(|e| match e {
            Error::Aws { code, message, .. } if code.starts_with("InvalidChangeBatch") || code == "InvalidInput" => {
                Error::GuardFailed {
                    reason: format!(
                        "{} changed since it was read ({code}: {message}); nothing was overwritten, run again",
                        plan.record
                    ),
                }
            }
            other => other,
        })?;
    tracing::info!(
        "{} -> {} ({slot}); change {change_id}",
        plan.record,
        new.target.host()
    );
    let what = format!("Route53 change {change_id} to be in sync");
    wait::until(&what, plan.poll, interrupt, || async {
        Ok(if ports.dns.in_sync(&change_id).await? {
            Progress::Done(())
        } else {
            Progress::Pending("PENDING".into())
        })
    })
    .await?;
    Ok(Flip {
        record: plan.record.clone(),
        from: live.slot,
        to: slot,
        target: new.target.host(),
        changed: true,
        change_id: Some(change_id),
        commit,
        healthy,
    })
}

#[cfg(test)]
mod tests;
