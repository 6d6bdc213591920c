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
//!
//! With `promote.steps` (e.g. `[10, 50, 100]`) the flip is gradual: weighted
//! records (one per slot, the slot's name as set identifier) give the target
//! that share of traffic, each step held for `promote.bake`; the target's
//! health is checked again before every step, and a failed check (or an
//! interrupt) puts all traffic back on the previous slot. At 100 % the
//! weighted records are replaced by one simple record again.

mod slot;
pub mod watch;

pub use slot::Slot;

use serde::Serialize;

use crate::config::{Config, RecordType, WatchConfig};
use crate::error::{Error, Result};
use crate::ports::{Balancer, Dns, Endpoint, Instances, Metrics, Record, Target, fleet_health};
use crate::release::{Commit, Deployed, Release};
use crate::wait::{self, Interrupt, Poll, Progress};

/// Everything promote and rollback need, checked and derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotePlan {
    /// Whose instances count as serving a slot (their `pipeline:app` tag).
    pub app: String,
    /// The hosted zone that holds the record.
    pub zone: String,
    /// The name users reach the app at.
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
    /// The target's share at each step of a gradual shift (empty: one flip).
    pub steps: Vec<u8>,
    /// How long each step below 100 % holds.
    pub bake: std::time::Duration,
    /// What to watch while traffic moves and after (`None`: nothing).
    pub watch: Option<WatchConfig>,
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
            zone: p.zone.clone(),
            record: p.record.clone(),
            record_type: p.record_type,
            ttl: p.ttl,
            slots: p.slots.clone(),
            needed: [needed(&p.slots[0]), needed(&p.slots[1])],
            poll: Poll {
                interval: p.poll_interval,
                deadline: p.timeout,
            },
            steps: p.steps.clone(),
            bake: p.bake,
            watch: p.watch.clone(),
        })
    }

    /// The slot named `name`; another name is bad input.
    pub fn slot(&self, name: &str) -> Result<Slot> {
        Slot::BOTH
            .into_iter()
            .find(|&s| self.slots[s] == name)
            .ok_or_else(|| {
                Error::Input(format!(
                    "{name:?} is not a slot; the slots are {} and {}",
                    self.slots[0], self.slots[1]
                ))
            })
    }
}

/// The ports promote and rollback use.
pub struct PromotePorts<'a> {
    /// Instances (to check what a slot runs).
    pub instances: &'a dyn Instances,
    /// Reads and replaces the record, and watches the change get INSYNC.
    pub dns: &'a dyn Dns,
    /// Each slot's balancer, in the order of [`PromotePlan::slots`].
    pub balancers: [&'a dyn Balancer; 2],
    /// CloudWatch, for `promote.watch`.
    pub metrics: &'a dyn Metrics,
}

/// What the record points at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The record sets as read (empty if there are none yet).
    pub records: Vec<Record>,
    /// Which slot takes (most of) the traffic (`None`: no record, or it
    /// points elsewhere).
    pub slot: Option<Slot>,
    /// Each slot's share in percent, when the records are weighted.
    pub weights: Option<[i64; 2]>,
    /// Each slot's balancer endpoint, in slot order.
    pub endpoints: [Endpoint; 2],
}

/// Reads the record sets and the slots' endpoints, and tells which slot is live.
pub async fn live(plan: &PromotePlan, ports: &PromotePorts<'_>) -> Result<Live> {
    let records = ports.dns.records(&plan.zone, &plan.record).await?;
    let endpoints = [
        ports.balancers[0].endpoint().await?,
        ports.balancers[1].endpoint().await?,
    ];
    let slot_of = |record: &Record| {
        let host = record.target.host();
        Slot::BOTH
            .into_iter()
            .find(|&s| crate::ports::normalise_host(&endpoints[s].dns_name) == host)
    };
    let weighted = records.iter().any(|r| r.weighted.is_some());
    let (slot, weights) = if weighted {
        let mut weights = [0i64; 2];
        for record in &records {
            if let (Some(s), Some((_, w))) = (slot_of(record), &record.weighted) {
                weights[s] += w;
            }
        }
        let total = (weights[0] + weights[1]).max(1);
        let shares = [weights[0] * 100 / total, weights[1] * 100 / total];
        let slot = match weights {
            [0, 0] => None,
            [a, b] if a >= b => Some(Slot::First),
            _ => Some(Slot::Second),
        };
        (slot, Some(shares))
    } else {
        (records.first().and_then(slot_of), None)
    };
    Ok(Live {
        records,
        slot,
        weights,
        endpoints,
    })
}

/// What a promote or rollback did (its `--output json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// The Route53 change ids, one per step.
    pub change_ids: Vec<String>,
    /// The target's share after each step, in percent.
    pub steps: Vec<u8>,
    /// The commit the new live slot runs (its healthy instances' commit).
    pub commit: Option<String>,
    /// Healthy instances behind the new live slot.
    pub healthy: usize,
    /// What the record pointed at before an adopting promote took it over
    /// (`--adopt`), or what a rollback returned it to.
    pub adopted: Option<String>,
    /// The record sets an adopting promote replaced, for the ledger (so a
    /// rollback can return to them).
    #[serde(skip)]
    pub replaced: Vec<Record>,
    /// What the watch saw last (`None`: no `promote.watch`, or no metrics).
    pub watch: Option<watch::Comparison>,
    /// The watch's verdict in words (`None`: no `promote.watch`).
    pub verdict: Option<String>,
}

/// How promote treats a record that points at neither slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Refuse ([`Error::ForeignRecord`]): never taken over unasked.
    Refuse,
    /// Take it over (`--adopt`); the flip keeps what it replaced.
    Adopt,
}

/// Points the record at `to` (default: the slot that is not live), after
/// checking that `to` runs `commit` on enough healthy instances; gradually
/// if `promote.steps` says so. Promoting the live slot changes nothing, if
/// it runs `commit`; a record that points at neither slot is taken over
/// only when `foreign` says so.
pub async fn promote(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    to: Option<Slot>,
    commit: &Commit,
    foreign: Foreign,
    interrupt: &Interrupt,
) -> Result<Flip> {
    let live = live(plan, ports).await?;
    let adopted = match (live.slot, live.records.first()) {
        (None, Some(_)) if foreign == Foreign::Refuse => {
            return Err(Error::ForeignRecord {
                record: plan.record.clone(),
                value: describe(&live.records),
                slots: plan.slots.clone(),
            });
        }
        (None, Some(_)) => Some(describe(&live.records)),
        _ => None,
    };
    let target = match (to, live.slot, live.weights) {
        (Some(slot), _, _) => slot,
        (None, Some(current), None) => current.other(),
        // A gradual shift left half-way: carry on towards the smaller share.
        (None, Some(_), Some(w)) => {
            if w[0] <= w[1] {
                Slot::First
            } else {
                Slot::Second
            }
        }
        (None, None, _) => Slot::First,
    };
    check_record_type(plan, &live)?;
    if live.slot == Some(target) && live.weights.is_none() {
        // The live slot is guarded too: it must run the commit.
        let serving = serving(plan, ports, target, Some(commit)).await?;
        tracing::info!(
            "{} is live already and runs {commit}: nothing to do",
            plan.slots[target]
        );
        return Ok(Flip {
            record: plan.record.clone(),
            from: Some(plan.slots[target].clone()),
            to: plan.slots[target].clone(),
            target: live
                .records
                .first()
                .map(|r| r.target.host())
                .unwrap_or_default(),
            changed: false,
            change_ids: vec![],
            steps: vec![],
            commit: Some(serving.commit().to_string()),
            healthy: serving.state().instances.len(),
            adopted: None,
            replaced: vec![],
            watch: None,
            verdict: None,
        });
    }
    let release = serving(plan, ports, target, Some(commit)).await?;
    let mut flip = shift(plan, ports, live.clone(), release, interrupt).await?;
    if adopted.is_some() {
        flip.adopted = adopted;
        flip.replaced = live.records;
    }
    Ok(flip)
}

/// What record sets point at, for messages: `old-box.example.com (CNAME)`.
fn describe(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| {
            let kind = match r.target {
                Target::Cname(_) => "CNAME",
                Target::Alias(_) => "ALIAS",
            };
            format!("{} ({kind})", r.target.host())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Moves traffic to the slot `release` serves in, step by step, checking
/// the slot again before each step; a failed check puts all traffic back.
async fn shift(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    live: Live,
    release: Release<Deployed>,
    interrupt: &Interrupt,
) -> Result<Flip> {
    let target = plan.slot(&release.state().env)?;
    let name = &plan.slots[target];
    // A first promote has no slot to shift from: one step.
    let steps: Vec<u8> = if plan.steps.is_empty() || live.slot.is_none() {
        vec![100]
    } else {
        // A shift left half-way resumes past the share the target has.
        let has = live.weights.map_or(0, |w| w[target]);
        plan.steps
            .iter()
            .copied()
            .filter(|&step| i64::from(step) > has)
            .collect()
    };
    let mut healthy = release.state().instances.len();
    let mut current = live.records.clone();
    let mut change_ids = Vec::new();
    let back = target.other();
    let mut watcher = match &plan.watch {
        Some(config) => {
            let sources = [
                ports.balancers[target].metric_source().await?,
                ports.balancers[back].metric_source().await?,
            ];
            let names = [name.clone(), plan.slots[back].clone()];
            Some(watch::Watcher::new(config, ports.metrics, sources, names))
        }
        None => None,
    };
    for (i, share) in steps.iter().enumerate() {
        if i > 0 {
            tracing::info!(
                "holding {}% on {name} for {}s",
                steps[i - 1],
                plan.bake.as_secs()
            );
            let checked = async {
                match watcher.as_mut() {
                    Some(watcher) => watcher.hold(plan.bake, interrupt).await?,
                    None => wait::pause(plan.bake, interrupt).await?,
                }
                serving(plan, ports, target, Some(release.commit())).await
            };
            match checked.await {
                Ok(now) => healthy = now.state().instances.len(),
                Err(err) => {
                    put_back(plan, ports, &current, &live.endpoints, back, &err).await?;
                    return Err(rolled_back(err, &plan.slots[target], &plan.slots[back]));
                }
            }
        }
        let new = records_for(plan, &live.endpoints, target, *share);
        change_ids.push(change(plan, ports, &current, &new, interrupt).await?);
        tracing::info!("{}% of {} on {name}", share, plan.record);
        current = new;
    }
    if let (Some(watcher), Some(config)) = (watcher.as_mut(), &plan.watch) {
        tracing::info!(
            "watching {name} for {}s before the promote is done",
            config.window.as_secs()
        );
        match watcher.hold(config.window, interrupt).await {
            Ok(()) => {}
            Err(Error::Interrupted) => {
                tracing::warn!(
                    "interrupted while watching: all of {} stays on {name}; run `pipeline rollback` to go back",
                    plan.record
                );
                return Err(Error::Interrupted);
            }
            // A first promote has nothing to go back to.
            Err(err) if live.slot.is_none() => return Err(err),
            Err(err) => {
                put_back(plan, ports, &current, &live.endpoints, back, &err).await?;
                return Err(rolled_back(err, &plan.slots[target], &plan.slots[back]));
            }
        }
    }
    Ok(Flip {
        record: plan.record.clone(),
        from: live.slot.map(|s| plan.slots[s].clone()),
        to: name.clone(),
        target: current.first().map(|r| r.target.host()).unwrap_or_default(),
        changed: true,
        change_ids,
        steps,
        commit: Some(release.commit().to_string()),
        healthy,
        adopted: None,
        replaced: vec![],
        verdict: watcher.as_ref().map(|w| w.verdict()),
        watch: watcher.and_then(|w| w.last),
    })
}

/// Puts all traffic on `back` at once, in one change from `current`
/// (after `why` went wrong): not interruptible, since half a way back is
/// the worst place to stop.
async fn put_back(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    current: &[Record],
    endpoints: &[Endpoint; 2],
    back: Slot,
    why: &dyn std::fmt::Display,
) -> Result<()> {
    tracing::error!("{why}; putting all traffic back on {}", plan.slots[back]);
    let records = vec![simple(plan, &endpoints[back])];
    change(plan, ports, current, &records, &Interrupt::never()).await?;
    Ok(())
}

/// The error of a shift that put the traffic back on `to`: a failed watch
/// becomes [`Error::RolledBack`] with its reason (the ledger's
/// `rolled_back`); any other cause (a failed guard, an interrupt) stays
/// as it is.
fn rolled_back(err: Error, from: &str, to: &str) -> Error {
    match err {
        Error::WatchFailed { reason } => Error::RolledBack {
            from: from.to_string(),
            to: to.to_string(),
            reason,
        },
        other => other,
    }
}

/// Points the record back at the slot that is not live (all of the
/// traffic, at once), after checking it is still healthy. In the middle of
/// a gradual shift it puts all traffic back on the slot that had the larger
/// share (the one being shifted away from). When the other slot has
/// nothing to serve and the live slot took the record over from
/// `adopted` (the record sets an adopting promote replaced), the record
/// returns to those.
pub async fn rollback(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    adopted: Option<Vec<Record>>,
    interrupt: &Interrupt,
) -> Result<Flip> {
    let live = live(plan, ports).await?;
    let current = live.slot.ok_or_else(|| {
        Error::Input(format!(
            "{} does not point at {} or {}: nothing to roll back from",
            plan.record, plan.slots[0], plan.slots[1]
        ))
    })?;
    check_record_type(plan, &live)?;
    // Mid-shift the live slot (the larger share) is the one to go back to;
    // otherwise the other slot.
    let target = match live.weights {
        Some(_) => current,
        None => current.other(),
    };
    let release = match (serving(plan, ports, target, None).await, adopted) {
        (Ok(release), _) => release,
        (Err(Error::GuardFailed { reason }), Some(previous)) if live.weights.is_none() => {
            tracing::info!(
                "{reason}; returning {} to what it pointed at before {} took it over",
                plan.record,
                plan.slots[current]
            );
            let id = change(plan, ports, &live.records, &previous, interrupt).await?;
            return Ok(Flip {
                record: plan.record.clone(),
                from: Some(plan.slots[current].clone()),
                to: describe(&previous),
                target: previous
                    .first()
                    .map(|r| r.target.host())
                    .unwrap_or_default(),
                changed: true,
                change_ids: vec![id],
                steps: vec![100],
                commit: None,
                healthy: 0,
                adopted: Some(describe(&previous)),
                replaced: vec![],
                watch: None,
                verdict: None,
            });
        }
        (Err(err), _) => return Err(err),
    };
    let new = vec![simple(plan, &live.endpoints[target])];
    let id = change(plan, ports, &live.records, &new, interrupt).await?;
    Ok(Flip {
        record: plan.record.clone(),
        from: Some(plan.slots[target.other()].clone()),
        to: plan.slots[target].clone(),
        target: new[0].target.host(),
        changed: true,
        change_ids: vec![id],
        steps: vec![100],
        commit: Some(release.commit().to_string()),
        healthy: release.state().instances.len(),
        adopted: None,
        replaced: vec![],
        watch: None,
        verdict: None,
    })
}

/// What `pipeline watch` saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Watched {
    /// The live slot, watched.
    pub live: String,
    /// The slot it was compared with, which a failed check goes back to.
    pub other: String,
    /// How long it was watched, in seconds.
    pub secs: u64,
    /// How many checks ran.
    pub checks: usize,
    /// The last comparison (`None`: alarms only).
    pub last: Option<watch::Comparison>,
    /// The verdict in words.
    pub verdict: String,
}

/// Watches the live slot against the other for `span` with `config` (a
/// promote made earlier; `pipeline watch` as a CI step of its own). A
/// failed check puts all traffic back on the other slot, once the traffic
/// guard says it can serve ([`Error::RolledBack`]); if it cannot, the
/// traffic stays ([`Error::WatchFailed`]). An interrupt leaves it too.
pub async fn watch_live(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    config: &WatchConfig,
    span: std::time::Duration,
    interrupt: &Interrupt,
) -> Result<Watched> {
    let live = live(plan, ports).await?;
    let current = live.slot.ok_or_else(|| {
        Error::Input(format!(
            "{} does not point at {} or {}: nothing to watch",
            plan.record, plan.slots[0], plan.slots[1]
        ))
    })?;
    if live.weights.is_some() {
        return Err(Error::Input(format!(
            "{} is split between the slots (a gradual shift was left half-way): run `pipeline promote` to finish it, or `pipeline rollback`",
            plan.record
        )));
    }
    let other = current.other();
    let sources = [
        ports.balancers[current].metric_source().await?,
        ports.balancers[other].metric_source().await?,
    ];
    let names = [plan.slots[current].clone(), plan.slots[other].clone()];
    let mut watcher = watch::Watcher::new(config, ports.metrics, sources, names);
    tracing::info!(
        "watching {} for {}s against {}",
        plan.slots[current],
        span.as_secs(),
        plan.slots[other]
    );
    match watcher.hold(span, interrupt).await {
        Ok(()) => Ok(Watched {
            live: plan.slots[current].clone(),
            other: plan.slots[other].clone(),
            secs: span.as_secs(),
            checks: watcher.checks,
            verdict: watcher.verdict(),
            last: watcher.last,
        }),
        Err(Error::WatchFailed { reason }) => {
            if let Err(guard) = serving(plan, ports, other, None).await {
                return Err(Error::WatchFailed {
                    reason: format!(
                        "{reason}; {} cannot take the traffic back ({guard})",
                        plan.slots[other]
                    ),
                });
            }
            put_back(plan, ports, &live.records, &live.endpoints, other, &reason).await?;
            Err(Error::RolledBack {
                from: plan.slots[current].clone(),
                to: plan.slots[other].clone(),
                reason,
            })
        }
        Err(Error::Interrupted) => {
            tracing::warn!(
                "interrupted while watching: {} stays on {}",
                plan.record,
                plan.slots[current]
            );
            Err(Error::Interrupted)
        }
        Err(err) => Err(err),
    }
}

/// The traffic guard: the release `slot` serves, on its healthy instances
/// (of `commit`, if given), which must be at least what the plan needs.
/// Without `commit` the release is the commit of its first healthy instance.
pub async fn serving(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    slot: Slot,
    commit: Option<&Commit>,
) -> Result<Release<Deployed>> {
    let name = &plan.slots[slot];
    let balancer = ports.balancers[slot];
    let (instances, healthy) = fleet_health(ports.instances, &plan.app, name, balancer).await?;
    let serving: Vec<_> = instances
        .iter()
        .filter(|i| healthy.contains(&i.id))
        .filter(|i| commit.is_none_or(|c| i.commit == c.as_str()))
        .collect();
    let needed = plan.needed[slot] as usize;
    if serving.len() < needed {
        let what = match commit {
            Some(c) => format!("healthy instances of {c}"),
            None => "healthy instances".to_string(),
        };
        return Err(Error::GuardFailed {
            reason: format!(
                "{name} has {} {what} behind {}, needs {needed}; deploy it first (pipeline deploy --env {name})",
                serving.len(),
                balancer.name()
            ),
        });
    }
    let running: Commit = match commit {
        Some(c) => c.clone(),
        None => serving[0].commit.parse().map_err(|_| Error::GuardFailed {
            reason: format!(
                "{name}'s instance {} has no commit tag a pipeline deploy writes",
                serving[0].id
            ),
        })?,
    };
    tracing::info!("{name}: {} healthy instance(s) of {running}", serving.len());
    let ami = serving[0].image_id.clone();
    let ids = serving.iter().map(|i| i.id.clone()).collect();
    Ok(Release::serving(&plan.app, running, ami, name.clone(), ids))
}

fn target_for(plan: &PromotePlan, endpoint: &Endpoint) -> Target {
    match plan.record_type {
        RecordType::Cname => Target::Cname(endpoint.dns_name.clone()),
        RecordType::Alias => Target::Alias(endpoint.clone()),
    }
}

/// One simple record pointing at `endpoint`.
fn simple(plan: &PromotePlan, endpoint: &Endpoint) -> Record {
    Record {
        name: plan.record.clone(),
        target: target_for(plan, endpoint),
        ttl: (plan.record_type == RecordType::Cname).then_some(plan.ttl),
        weighted: None,
    }
}

/// The record sets that give `target` `share` percent of the traffic.
fn records_for(
    plan: &PromotePlan,
    endpoints: &[Endpoint; 2],
    target: Slot,
    share: u8,
) -> Vec<Record> {
    if share >= 100 {
        return vec![simple(plan, &endpoints[target])];
    }
    let other = target.other();
    [(other, 100 - i64::from(share)), (target, i64::from(share))]
        .into_iter()
        .map(|(slot, weight)| Record {
            weighted: Some((plan.slots[slot].clone(), weight)),
            ..simple(plan, &endpoints[slot])
        })
        .collect()
}

fn check_record_type(plan: &PromotePlan, live: &Live) -> Result<()> {
    let Some(old) = live.records.first() else {
        return Ok(());
    };
    let is_alias = matches!(old.target, Target::Alias(_));
    if is_alias != (plan.record_type == RecordType::Alias) {
        return Err(Error::Input(format!(
            "{} is a{} record but promote.record_type is {:?}; make them agree",
            plan.record,
            if is_alias { "n ALIAS" } else { " CNAME" },
            plan.record_type
        )));
    }
    Ok(())
}

/// Whether `found` points where `new` does: the same hosts (any case,
/// with or without the final dot) with the same weights.
fn same_targets(found: &[Record], new: &[Record]) -> bool {
    let key = |records: &[Record]| {
        let mut keys: Vec<_> = records
            .iter()
            .map(|r| {
                let host = r.target.host().trim_end_matches('.').to_ascii_lowercase();
                (host, r.weighted.clone())
            })
            .collect();
        keys.sort();
        keys
    };
    !new.is_empty() && key(found) == key(new)
}

/// Replaces `old` with `new` in one batch and waits until it is in sync.
async fn change(
    plan: &PromotePlan,
    ports: &PromotePorts<'_>,
    old: &[Record],
    new: &[Record],
    interrupt: &Interrupt,
) -> Result<String> {
    let change_id = match ports.dns.replace(&plan.zone, old, new).await {
        Ok(id) => id,
        Err(Error::Aws { code, message, .. })
            if code.starts_with("InvalidChangeBatch") || code == "InvalidInput" =>
        {
            // A batch whose answer was lost was applied, and the SDK's
            // retry met its own DELETE gone: the record already is `new`.
            // A second, same-valued batch gives a change to wait on (Route53
            // syncs a zone's changes in order).
            let now = ports.dns.records(&plan.zone, &plan.record).await?;
            if !same_targets(&now, new) {
                return Err(Error::GuardFailed {
                    reason: format!(
                        "Route53 rejected the change to {} ({code}: {message}); if someone changed the record since it was read, run again; nothing was overwritten",
                        plan.record
                    ),
                });
            }
            tracing::debug!(
                "the change to {} landed but its answer was lost",
                plan.record
            );
            ports.dns.replace(&plan.zone, &now, new).await?
        }
        Err(other) => return Err(other),
    };
    let what = format!("Route53 change {change_id} to be in sync");
    wait::until(&what, plan.poll, interrupt, || async {
        Ok(if ports.dns.in_sync(&change_id).await? {
            Progress::Done(())
        } else {
            Progress::Pending("PENDING".into())
        })
    })
    .await?;
    Ok(change_id)
}

#[cfg(test)]
mod tests;
