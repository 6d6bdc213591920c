//! The release lock: one run at a time per environment, kept in the state
//! bucket, and the queue of runs waiting for it.
//!
//! Taking the lock is one PutObject of `locks/<app>/<scope>` with
//! `If-None-Match: *`; the object ([`Holder`]) says who holds it, since
//! when, from which job, and until when (`expires_ms`). The holder renews it
//! every `ttl / 4` with `If-Match` on the ETag it wrote last (the
//! heartbeat), so a run that was killed lets its lock expire within `ttl`.
//! An expired lock is taken over with `If-Match` on the ETag read, so two
//! runs cannot both take it over, and the takeover is reported for the
//! ledger. Releasing deletes the object if it is still ours.
//!
//! A run that waits (`--lock-timeout`) polls the lock every `poll`. A deploy
//! also queues: it writes `queue/<app>/<scope>/<stamp>_<run>` (renewed as
//! the lock is) and, if a newer entry appears behind it, gives way: it is
//! [`Acquired::Superseded`], so the newest commit wins and stale deploys do
//! not pile up.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::ports::{StateStore, Written};
use crate::release::short_commit;
use crate::run::Stage;
use crate::wait::Interrupt;

/// How locks are held and waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPlan {
    /// How long a lock lives without a heartbeat (`state.lock_ttl`).
    pub ttl: Duration,
    /// How long to wait for a held lock (`--lock-timeout`; zero: fail at once).
    pub wait: Duration,
    /// How often a waiting run looks again.
    pub poll: Duration,
}

impl LockPlan {
    /// Locks that live `ttl` without a heartbeat, waited for up to `wait`,
    /// looked at again every twelfth of `ttl` (within 250 ms to 5 s).
    pub fn new(ttl: Duration, wait: Duration) -> LockPlan {
        LockPlan {
            ttl,
            wait,
            poll: (ttl / 12).clamp(Duration::from_millis(250), Duration::from_secs(5)),
        }
    }

    /// The heartbeat interval: a quarter of the lifetime.
    pub fn heartbeat(&self) -> Duration {
        self.ttl / 4
    }
}

/// Who holds a lock (or waits in the queue): the lock object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The run that holds it: what release matches, and the run a takeover cleans up after.
    pub run: String,
    /// The stage it runs.
    pub stage: Stage,
    /// The commit, if the stage has one.
    pub commit: Option<String>,
    /// Who started it, so a waiting user knows whom to ask.
    pub actor: Option<String>,
    /// Its CI job.
    pub job_url: Option<String>,
    /// When it took the lock (RFC 3339, UTC).
    pub started_at: String,
    /// Until when the lock holds without a heartbeat (Unix milliseconds).
    pub expires_ms: i64,
}

impl Holder {
    /// The holder a lock or queue object records, if it is one.
    fn from_body(body: &[u8]) -> Option<Holder> {
        serde_json::from_slice(body).ok()
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        let mut text = format!("{} run {}", self.stage, self.run);
        if let Some(commit) = &self.commit {
            text.push_str(&format!(" of {}", short_commit(commit)));
        }
        text.push_str(&format!(
            " by {} since {}",
            self.actor.as_deref().unwrap_or("an unknown user"),
            self.started_at
        ));
        if let Some(url) = &self.job_url {
            text.push_str(&format!(" ({url})"));
        }
        text
    }

    /// Sets the expiry to `ttl` from now; returns the lock object's body.
    fn renewed(&mut self, ttl: Duration) -> Vec<u8> {
        self.expires_ms = now_ms() + ttl.as_millis() as i64;
        serde_json::to_vec(self).expect("a holder serializes")
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_ms <= now
    }
}

/// What [`Claim::acquire_queued`] got.
#[derive(Debug)]
pub enum Acquired {
    /// The lock is ours until [`Lock::release`].
    Held(Lock),
    /// A newer run queued behind this one: this one should stop, done.
    Superseded(Holder),
}

/// A held lock, renewed in the background until released.
pub struct Lock {
    store: Arc<dyn StateStore>,
    key: String,
    heartbeat: JoinHandle<()>,
    run: String,
    /// How long a release keeps trying through failed calls (a throttled
    /// or failing S3) before it leaves the lock to expire.
    patience: Duration,
    /// The expired holder this run took the lock over from, if any.
    pub took_over: Option<Holder>,
}

/// The longest a release retries; shorter for a lock that expires sooner.
const RELEASE_PATIENCE: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("key", &self.key)
            .field("took_over", &self.took_over)
            .finish_non_exhaustive()
    }
}

/// The key of the lock of `scope` (an environment's name, `gc`, ...).
pub fn lock_key(app: &str, scope: &str) -> String {
    format!("locks/{app}/{scope}")
}

fn queue_prefix(app: &str, scope: &str) -> String {
    format!("queue/{app}/{scope}/")
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// One run's claim on one lock: what it writes, where, and how long it waits.
pub struct Claim<'a> {
    store: Arc<dyn StateStore>,
    app: &'a str,
    scope: &'a str,
    key: String,
    me: &'a Holder,
    plan: &'a LockPlan,
}

/// What one attempt at a lock found.
enum Attempt {
    /// The lock is ours.
    Held(Lock),
    /// Another live run holds it.
    Busy(Holder),
    /// It changed between two calls (released, or taken over by a third
    /// run first): look again at once.
    Again,
}

/// This run's entry in a lock's queue, renewed like a lock.
struct QueueEntry {
    key: String,
    written: Instant,
}

impl<'a> Claim<'a> {
    /// `me`'s claim on the lock of `scope` (an environment's name, `gc`, ...).
    pub fn new(
        store: Arc<dyn StateStore>,
        app: &'a str,
        scope: &'a str,
        me: &'a Holder,
        plan: &'a LockPlan,
    ) -> Claim<'a> {
        Claim {
            store,
            app,
            scope,
            key: lock_key(app, scope),
            me,
            plan,
        }
    }

    /// Takes the lock, waiting up to the plan's `wait` for its holder; a
    /// lock still held then is [`Error::Locked`].
    pub async fn acquire(self, interrupt: &Interrupt) -> Result<Lock> {
        match self.wait(None, interrupt).await? {
            Acquired::Held(lock) => Ok(lock),
            Acquired::Superseded(_) => unreachable!("only a queued claim is superseded"),
        }
    }

    /// [`Claim::acquire`], waiting in the lock's queue: a newer run queued
    /// behind this one supersedes it. With no wait there is no queue.
    pub async fn acquire_queued(self, interrupt: &Interrupt) -> Result<Acquired> {
        if self.plan.wait.is_zero() {
            return self.wait(None, interrupt).await;
        }
        let mut entry = None;
        let result = self.wait(Some(&mut entry), interrupt).await;
        if let Some(entry) = entry
            && let Err(e) = self.store.delete(&entry.key).await
        {
            tracing::warn!("could not remove queue entry {}: {e}", entry.key);
        }
        result
    }

    async fn wait(
        &self,
        mut queue: Option<&mut Option<QueueEntry>>,
        interrupt: &Interrupt,
    ) -> Result<Acquired> {
        let deadline = Instant::now() + self.plan.wait;
        let mut last_holder: Option<String> = None;
        loop {
            interrupt.check()?;
            let holder = match self.take().await? {
                Attempt::Held(lock) => return Ok(Acquired::Held(lock)),
                Attempt::Again => continue,
                Attempt::Busy(holder) => holder,
            };
            if let Some(entry) = queue.as_deref_mut()
                && let Some(newer) = self.queue_tick(entry).await?
            {
                return Ok(Acquired::Superseded(newer));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Locked {
                    scope: self.scope.to_string(),
                    holder: holder.describe(),
                    expires_in: Duration::from_millis((holder.expires_ms - now_ms()).max(0) as u64),
                });
            }
            if last_holder.as_deref() != Some(holder.run.as_str()) {
                tracing::info!(
                    "{} is locked by {}; waiting up to {}s",
                    self.scope,
                    holder.describe(),
                    (deadline - now).as_secs()
                );
                last_holder = Some(holder.run.clone());
            }
            let nap = self.plan.poll.min(deadline - now);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = interrupt.fired_wait() => {}
            }
        }
    }

    /// One attempt: a new lock (`If-None-Match: *`), else the holder, whose
    /// lock is taken over if it expired.
    async fn take(&self) -> Result<Attempt> {
        let mut record = self.me.clone();
        let body = record.renewed(self.plan.ttl);
        if let Written::Done(etag) = self.store.put_new(&self.key, &body).await? {
            return Ok(Attempt::Held(self.hold(etag, record, None)));
        }
        let Some(current) = self.store.get(&self.key).await? else {
            return Ok(Attempt::Again);
        };
        let holder = Holder::from_body(&current.body).ok_or_else(|| {
            Error::Input(format!(
                "the lock {} in the state bucket is not a pipeline lock; remove it with `pipeline unlock --env {}`",
                self.key, self.scope
            ))
        })?;
        if holder.run == record.run {
            // Our own write, whose answer was lost (the SDK's retry met the
            // object the first try made): the lock is ours.
            return Ok(Attempt::Held(self.hold(current.etag, record, None)));
        }
        if !holder.expired(now_ms()) {
            return Ok(Attempt::Busy(holder));
        }
        self.take_over(&current.etag, holder, record, &body).await
    }

    /// Takes over the expired lock of `holder` with `If-Match` on the ETag
    /// read, so of two runs trying only one succeeds.
    async fn take_over(
        &self,
        etag: &str,
        holder: Holder,
        record: Holder,
        body: &[u8],
    ) -> Result<Attempt> {
        match self.store.put_if(&self.key, body, etag).await? {
            Written::Done(etag) => {
                tracing::warn!(
                    "took over the expired lock of {} from {}",
                    self.scope,
                    holder.describe()
                );
                Ok(Attempt::Held(self.hold(etag, record, Some(holder))))
            }
            Written::Refused => Ok(Attempt::Again),
        }
    }

    /// Writes (or renews, every heartbeat) this run's queue entry, then
    /// returns the newest live entry queued after it, if any.
    async fn queue_tick(&self, entry: &mut Option<QueueEntry>) -> Result<Option<Holder>> {
        let due = entry
            .as_ref()
            .is_none_or(|e| e.written.elapsed() >= self.plan.heartbeat());
        if due {
            let key = match entry.take() {
                Some(e) => e.key,
                None => format!(
                    "{}{}_{}",
                    queue_prefix(self.app, self.scope),
                    crate::ledger::stamp_ms(now_ms()),
                    self.me.run
                ),
            };
            let mut record = self.me.clone();
            self.store.put(&key, &record.renewed(self.plan.ttl)).await?;
            *entry = Some(QueueEntry {
                key,
                written: Instant::now(),
            });
        }
        let Some(mine) = entry.as_ref().map(|e| e.key.as_str()) else {
            return Ok(None);
        };
        let alive_since = now_ms() - self.plan.ttl.as_millis() as i64;
        let newest = self
            .store
            .list(&queue_prefix(self.app, self.scope))
            .await?
            .into_iter()
            .rfind(|e| e.key.as_str() > mine && e.modified_ms >= alive_since);
        let Some(newer) = newest else {
            return Ok(None);
        };
        Ok(self
            .store
            .get(&newer.key)
            .await?
            .and_then(|stored| Holder::from_body(&stored.body)))
    }

    fn hold(&self, etag: String, record: Holder, took_over: Option<Holder>) -> Lock {
        Lock::start(
            self.store.clone(),
            self.key.clone(),
            etag,
            record,
            took_over,
            self.plan,
        )
    }
}

impl Lock {
    fn start(
        store: Arc<dyn StateStore>,
        key: String,
        etag: String,
        record: Holder,
        took_over: Option<Holder>,
        plan: &LockPlan,
    ) -> Lock {
        let run = record.run.clone();
        let heartbeat = tokio::spawn(heartbeat(store.clone(), key.clone(), etag, record, *plan));
        Lock {
            store,
            key,
            heartbeat,
            run,
            patience: plan.ttl.min(RELEASE_PATIENCE),
            took_over,
        }
    }

    /// Stops the heartbeat and deletes the lock if it is still ours (its
    /// holder is this run: a heartbeat cut short may have renewed it without
    /// this run seeing the new ETag). A failed read or delete (S3
    /// throttling, a 500) is tried again, backing off from 250 ms to 4 s,
    /// for up to 30 s (or the lock's ttl, if shorter), so a storm of
    /// errors does not leave the lock for the next run to wait out. Never
    /// fails: a lock left behind expires by itself.
    pub async fn release(mut self) {
        self.heartbeat.abort();
        // Wait until the heartbeat is gone, so no renewal lands after this.
        let _ = (&mut self.heartbeat).await;
        let ours = |body: &[u8]| Holder::from_body(body).is_some_and(|h| h.run == self.run);
        let give_up = Instant::now() + self.patience;
        let mut backoff = Duration::from_millis(250);
        loop {
            let tried = match self.store.get(&self.key).await {
                Ok(Some(current)) if ours(&current.body) => self
                    .store
                    .delete(&self.key)
                    .await
                    .map_err(|e| format!("could not release the lock {}: {e}", self.key)),
                Ok(Some(_)) => {
                    tracing::warn!(
                        "the lock {} was taken over while this run held it; leaving it to its new holder",
                        self.key
                    );
                    Ok(())
                }
                Ok(None) => {
                    tracing::warn!("the lock {} was removed while this run held it", self.key);
                    Ok(())
                }
                Err(e) => Err(format!(
                    "could not read the lock {} to release it: {e}",
                    self.key
                )),
            };
            let Err(why) = tried else { return };
            if Instant::now() + backoff > give_up {
                tracing::warn!("{why}; it expires by itself");
                return;
            }
            tracing::warn!("{why}; trying again in {} ms", backoff.as_millis());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }
}

/// Renews the lock every `ttl / 4` (one PutObject), writing only over our
/// own last ETag.
async fn heartbeat(
    store: Arc<dyn StateStore>,
    key: String,
    mut etag: String,
    mut record: Holder,
    plan: LockPlan,
) {
    let mut ticks = tokio::time::interval(plan.heartbeat());
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let body = record.renewed(plan.ttl);
        match store.put_if(&key, &body, &etag).await {
            Ok(Written::Done(new)) => etag = new,
            Ok(Written::Refused) => match store.get(&key).await {
                // The renewal landed but its answer was lost, and the SDK's
                // retry met our own new ETag: the lock is still ours.
                Ok(Some(now))
                    if Holder::from_body(&now.body).is_some_and(|h| h.run == record.run) =>
                {
                    etag = now.etag;
                }
                Err(e) => tracing::warn!("could not read the lock {key} back: {e}; retrying"),
                Ok(_) => {
                    tracing::error!(
                        "lost the lock {key}: another run took it over (this run's heartbeat was late)"
                    );
                    return;
                }
            },
            Err(e) => tracing::warn!("could not renew the lock {key}: {e}; retrying"),
        }
    }
}

/// Removes the lock of `scope` whoever holds it (`pipeline unlock`);
/// returns the holder it removed.
pub async fn unlock(store: &dyn StateStore, app: &str, scope: &str) -> Result<Option<Holder>> {
    let key = lock_key(app, scope);
    let Some(current) = store.get(&key).await? else {
        return Ok(None);
    };
    store.delete(&key).await?;
    Ok(Holder::from_body(&current.body))
}

#[cfg(test)]
mod tests;
