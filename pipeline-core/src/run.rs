//! A stage run as the rest of the world sees it: who started it, from which
//! CI job, the locks it holds, its ledger entry and its webhook events.
//!
//! [`StageRun::begin`] takes the run's locks ([`crate::lock`]; a takeover of
//! an expired one goes in the ledger), sends `started` (in the background)
//! and gives the run its id. [`StageRun::finish`] writes the ledger entry
//! ([`crate::ledger`]), releases the locks, sends `succeeded` (or
//! `promoted`, `rolled_back`, `passed`) or `failed`, and waits for the
//! deliveries in flight, which the webhooks' own attempts and timeouts
//! bound. Neither the ledger nor a webhook can fail a stage that did its
//! work: such a failure is a warning.

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::EventKind;
use crate::error::{Error, Result};
use crate::ledger::{Entry, Ledger, Outcome, rfc3339_now};
use crate::lock::{Acquired, Claim, Holder, Lock, LockPlan};
use crate::notify::{Event, Notifier};
use crate::release::{Commit, RunId};
use crate::wait::Interrupt;

/// A stage of the pipeline, as the ledger, the locks and the events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The project's tests, for a commit.
    Test,
    /// Baking the commit's AMI.
    Build,
    /// Swapping a release in behind an environment's balancer.
    Deploy,
    /// A release task, by hand.
    Task,
    /// The blue/green flip.
    Promote,
    /// The flip back.
    Rollback,
    /// Removing old AMIs and orphans.
    Gc,
    /// Removing a dead run's lock by hand.
    Unlock,
    /// Watching the live slot after a promote (`pipeline watch`).
    Watch,
}

impl Stage {
    /// Its name: `test`, `build`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Test => "test",
            Stage::Build => "build",
            Stage::Deploy => "deploy",
            Stage::Task => "task",
            Stage::Promote => "promote",
            Stage::Rollback => "rollback",
            Stage::Gc => "gc",
            Stage::Unlock => "unlock",
            Stage::Watch => "watch",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run is, before it starts: its stage, what it acts on, and the
/// locks it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The stage it runs.
    pub stage: Stage,
    /// The environment (or slot, or lock scope) it acts on, if known up front.
    pub env: Option<String>,
    /// The commit it is about, if known up front.
    pub commit: Option<Commit>,
    /// The locks it holds while it runs (environments, `gc`, `build-<sha12>`).
    pub scopes: Vec<String>,
    /// How long to wait for a lock another run holds (zero: fail at once).
    pub lock_wait: std::time::Duration,
}

impl RunSpec {
    /// A run of `stage` that holds no lock and names nothing yet.
    pub fn new(stage: Stage) -> RunSpec {
        RunSpec {
            stage,
            env: None,
            commit: None,
            scopes: Vec::new(),
            lock_wait: std::time::Duration::ZERO,
        }
    }
}

/// Who started a run, as the CI system tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The user (the CI's user variable, else the OS user).
    pub name: Option<String>,
    /// The CI job's URL.
    pub job_url: Option<String>,
}

/// What every tracked run of one app shares.
#[derive(Debug)]
pub struct Tracking {
    /// Named in every lock, entry and event.
    pub app: String,
    /// Who runs it: the audit's "who".
    pub actor: Actor,
    /// Who hears about the runs.
    pub notifier: Notifier,
    /// Where each run is recorded (and the state store the locks live in).
    pub ledger: Ledger,
    /// How long a lock lives without its holder's heartbeat.
    pub lock_ttl: std::time::Duration,
}

/// What [`StageRun::begin`] got to.
#[derive(Debug)]
pub enum Begun<'a> {
    /// The run holds its locks and may start.
    Running(StageRun<'a>),
    /// A newer run queued behind this one; this one stops, done.
    Superseded(Holder),
}

/// One run of one stage, between its `started` and its last event.
#[derive(Debug)]
pub struct StageRun<'a> {
    tracking: &'a Tracking,
    stage: Stage,
    env: Option<String>,
    commit: Option<String>,
    id: RunId,
    started: Instant,
    started_at: String,
    locks: Vec<Lock>,
    note: Option<String>,
}

impl<'a> StageRun<'a> {
    /// Starts the run `spec` describes: takes its locks (in sorted order,
    /// so two runs cannot deadlock), then tells the webhooks.
    pub async fn begin(
        tracking: &'a Tracking,
        spec: RunSpec,
        interrupt: &Interrupt,
    ) -> Result<StageRun<'a>> {
        match Self::start(tracking, spec, false, interrupt).await? {
            Begun::Running(run) => Ok(run),
            Begun::Superseded(_) => unreachable!("only a queued run is superseded"),
        }
    }

    /// [`StageRun::begin`], waiting in the queue of its scopes: a newer run
    /// queued behind this one supersedes it (recorded in the ledger).
    pub async fn begin_queued(
        tracking: &'a Tracking,
        spec: RunSpec,
        interrupt: &Interrupt,
    ) -> Result<Begun<'a>> {
        Self::start(tracking, spec, true, interrupt).await
    }

    async fn start(
        tracking: &'a Tracking,
        spec: RunSpec,
        queue: bool,
        interrupt: &Interrupt,
    ) -> Result<Begun<'a>> {
        let mut run = StageRun {
            tracking,
            stage: spec.stage,
            env: spec.env,
            commit: spec.commit.map(|c| c.to_string()),
            id: RunId::new(),
            started: Instant::now(),
            started_at: rfc3339_now(),
            locks: Vec::new(),
            note: None,
        };
        let me = Holder {
            run: run.id.to_string(),
            stage: run.stage,
            commit: run.commit.clone(),
            actor: tracking.actor.name.clone(),
            job_url: tracking.actor.job_url.clone(),
            started_at: run.started_at.clone(),
            expires_ms: 0,
        };
        let plan = LockPlan::new(tracking.lock_ttl, spec.lock_wait);
        let mut scopes = spec.scopes;
        scopes.sort();
        scopes.dedup();
        for scope in &scopes {
            let claim = Claim::new(tracking.ledger.store(), &tracking.app, scope, &me, &plan);
            let got = if queue {
                claim.acquire_queued(interrupt).await
            } else {
                claim.acquire(interrupt).await.map(Acquired::Held)
            };
            match got {
                Ok(Acquired::Held(held)) => {
                    if let Some(old) = &held.took_over {
                        let mut entry = run.entry(Outcome::LockTakeover, None);
                        entry.env = Some(scope.clone());
                        entry.note =
                            Some(format!("took over the expired lock of {}", old.describe()));
                        let _ = run.record(&entry).await;
                    }
                    run.locks.push(held);
                }
                Ok(Acquired::Superseded(newer)) => {
                    let mut entry = run.entry(Outcome::Superseded, None);
                    entry.note = Some(format!("superseded by {}", newer.describe()));
                    let _ = run.record(&entry).await;
                    run.release().await;
                    return Ok(Begun::Superseded(newer));
                }
                Err(err) => {
                    run.release().await;
                    return Err(err);
                }
            }
        }
        // The run starts its work once it holds its locks.
        run.started = Instant::now();
        run.started_at = rfc3339_now();
        tracking
            .notifier
            .send(&run.event(EventKind::Started, None, None));
        Ok(Begun::Running(run))
    }

    /// The run id, tagged on what the run creates.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The ids of the runs whose expired locks this run took over: runs
    /// that were killed, whose leftovers [`crate::recovery`] cleans up.
    pub fn taken_over(&self) -> Vec<String> {
        self.locks
            .iter()
            .filter_map(|l| l.took_over.as_ref())
            .map(|h| h.run.clone())
            .collect()
    }

    /// Adds a note to the run's ledger entry (after any earlier one).
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.note = Some(match self.note.take() {
            Some(earlier) => format!("{earlier}; {text}"),
            None => text,
        });
    }

    /// Ends the run with the stage's `result`: writes the ledger entry with
    /// what `details` reads off the result, releases the locks, sends
    /// `success` (`succeeded`, `promoted`, ...) or `failed`, and waits for
    /// the deliveries in flight. Returns `result`.
    pub async fn finish<T>(
        mut self,
        result: Result<T>,
        success: EventKind,
        details: impl FnOnce(&T) -> Details,
    ) -> Result<T> {
        let (event, entry) = match &result {
            Ok(value) => {
                let d = details(value);
                if d.env.is_some() {
                    self.env = d.env;
                }
                if d.commit.is_some() {
                    self.commit = d.commit;
                }
                if let Some(note) = d.note {
                    self.note(note);
                }
                let outcome = d.outcome.unwrap_or(match success {
                    EventKind::Promoted => Outcome::Promoted,
                    EventKind::RolledBack => Outcome::RolledBack,
                    _ => Outcome::Succeeded,
                });
                let mut entry = self.entry(outcome, None);
                entry.ami = d.ami.clone();
                entry.instances = d.instances;
                entry.replaced = d.replaced;
                entry.artifact = d.artifact;
                entry.watch = d.watch;
                // A stage that ran and reports failure (a failing test).
                let kind = if outcome == Outcome::Failed {
                    EventKind::Failed
                } else {
                    success
                };
                (self.event(kind, d.ami, None), entry)
            }
            Err(err) => {
                // The release went wrong and was put back by itself: the
                // ledger and the webhooks say so, with the reason.
                let (outcome, kind) = match err {
                    Error::RolledBack { from, .. } => {
                        // A promote learns its slot only on the way.
                        self.env.get_or_insert_with(|| from.clone());
                        (Outcome::RolledBack, EventKind::RolledBack)
                    }
                    _ => (Outcome::Failed, EventKind::Failed),
                };
                let text = err.to_string();
                let mut entry = self.entry(outcome, Some(text.clone()));
                // The watch's verdict, when the watch ended the run.
                if matches!(err, Error::RolledBack { .. } | Error::WatchFailed { .. }) {
                    entry.watch = Some(text.clone());
                }
                (self.event(kind, None, Some(text)), entry)
            }
        };
        let recorded = self.record(&entry).await;
        self.release().await;
        self.tracking.notifier.send(&event);
        self.tracking.notifier.flush().await;
        match (result, recorded) {
            // A test run is its verdict: unrecorded, `build` refuses the commit.
            (Ok(_), Err(e)) if self.stage == Stage::Test => Err(Error::NotRecorded {
                commit: self.commit.clone().unwrap_or_default(),
                reason: e.to_string(),
            }),
            (result, _) => result,
        }
    }

    /// Names the environment the run acts on, once it is known (a deploy
    /// to the idle slot learns it under its locks).
    pub fn about(&mut self, env: &str) {
        self.env = Some(env.to_string());
    }

    async fn release(&mut self) {
        for held in self.locks.drain(..) {
            held.release().await;
        }
    }

    /// Writes `entry`; a failure is a warning (and the error, for the
    /// caller that cannot do without the entry).
    async fn record(&self, entry: &Entry) -> Result<()> {
        let written = self.tracking.ledger.record(entry).await.map(|_| ());
        if let Err(e) = &written {
            tracing::warn!(
                "could not write the ledger entry of this {} run: {e}",
                self.stage
            );
        }
        written
    }

    fn entry(&self, outcome: Outcome, error: Option<String>) -> Entry {
        Entry {
            stage: self.stage,
            env: self.env.clone(),
            commit: self.commit.clone(),
            ami: None,
            instances: Vec::new(),
            actor: self.tracking.actor.name.clone(),
            job_url: self.tracking.actor.job_url.clone(),
            started: self.started_at.clone(),
            finished: rfc3339_now(),
            outcome,
            error,
            run: self.id.to_string(),
            note: self.note.clone(),
            replaced: Vec::new(),
            artifact: None,
            watch: None,
        }
    }

    fn event(&self, kind: EventKind, ami: Option<String>, error: Option<String>) -> Event {
        Event {
            event: kind,
            app: self.tracking.app.clone(),
            stage: self.stage,
            env: self.env.clone(),
            commit: self.commit.clone(),
            ami,
            actor: self.tracking.actor.name.clone(),
            job_url: self.tracking.actor.job_url.clone(),
            outcome: kind.as_str().to_string(),
            duration_seconds: (kind != EventKind::Started)
                .then(|| self.started.elapsed().as_secs_f64()),
            error,
            run: self.id.to_string(),
        }
    }
}

/// What a finished stage tells about itself, for its ledger entry and last event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The AMI it built or deployed.
    pub ami: Option<String>,
    /// The environment or slot it acted on, if only known at the end.
    pub env: Option<String>,
    /// The commit, if only known at the end.
    pub commit: Option<String>,
    /// The instances it launched (or removed).
    pub instances: Vec<String>,
    /// The ledger outcome, if not the success event's (`passed`).
    pub outcome: Option<Outcome>,
    /// A note for the ledger entry, after any the run already has.
    pub note: Option<String>,
    /// The record sets a promote replaced that pointed at neither slot
    /// (`--adopt`), kept so rollback can return to them.
    pub replaced: Vec<crate::ports::Record>,
    /// The artifact a build baked.
    pub artifact: Option<crate::ledger::ArtifactRecord>,
    /// The watch's verdict, if the stage watched.
    pub watch: Option<String>,
}
