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
    /// The heartbeat interval: a quarter of the lifetime.
    pub fn heartbeat(&self) -> Duration {
        self.ttl / 4
    }
}

/// Who holds a lock (or waits in the queue): the lock object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The run id.
    pub run: String,
    /// The stage it runs.
    pub stage: String,
    /// The commit, if the stage has one.
    pub commit: Option<String>,
    /// Who started it.
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

/// What [`acquire`] got.
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
    /// The expired holder this run took the lock over from, if any.
    pub took_over: Option<Holder>,
}

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

/// Takes the lock of `scope` for `me` (whose `expires_ms` is set here),
/// waiting up to `plan.wait`; with `queue`, a newer queued run supersedes
/// this one. A lock still held when the wait ends is [`Error::Locked`].
pub async fn acquire(
    store: Arc<dyn StateStore>,
    app: &str,
    scope: &str,
    me: &Holder,
    plan: &LockPlan,
    queue: bool,
    interrupt: &Interrupt,
) -> Result<Acquired> {
    let key = lock_key(app, scope);
    let deadline = Instant::now() + plan.wait;
    let mut queued: Option<(String, Instant)> = None;
    let result = loop {
        if let Err(e) = interrupt.check() {
            break Err(e);
        }
        let mut record = me.clone();
        let body = record.renewed(plan.ttl);
        if let Written::Done(etag) = store.put_new(&key, &body).await? {
            break Ok(Acquired::Held(Lock::start(
                store.clone(),
                key,
                etag,
                record,
                None,
                plan,
            )));
        }
        let Some(current) = store.get(&key).await? else {
            continue; // released between the two calls: try again at once
        };
        let holder: Holder = serde_json::from_slice(&current.body).map_err(|e| {
            Error::Input(format!(
                "the lock {key} in the state bucket is not a pipeline lock ({e}); remove it with `pipeline unlock`"
            ))
        })?;
        if holder.expired(now_ms()) {
            match store.put_if(&key, &body, &current.etag).await? {
                Written::Done(etag) => {
                    tracing::warn!(
                        "took over the expired lock of {scope} from {}",
                        holder.describe()
                    );
                    break Ok(Acquired::Held(Lock::start(
                        store.clone(),
                        key,
                        etag,
                        record,
                        Some(holder),
                        plan,
                    )));
                }
                Written::Refused => continue, // another run took it over first
            }
        }
        if queue && !plan.wait.is_zero() {
            let renew = queued
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= plan.heartbeat());
            if renew {
                let entry = match &queued {
                    Some((entry, _)) => entry.clone(),
                    None => format!(
                        "{}{}_{}",
                        queue_prefix(app, scope),
                        crate::ledger::stamp_ms(now_ms()),
                        me.run
                    ),
                };
                store.put(&entry, &body).await?;
                queued = Some((entry, Instant::now()));
            }
            if let Some((mine, _)) = &queued
                && let Some(newer) = newer_in_queue(&*store, app, scope, mine, plan).await?
            {
                break Ok(Acquired::Superseded(newer));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(Error::Locked {
                scope: scope.to_string(),
                holder: holder.describe(),
                expires_in: Duration::from_millis((holder.expires_ms - now_ms()).max(0) as u64),
            });
        }
        if queued.is_none() {
            tracing::info!("{scope} is locked by {}; waiting", holder.describe());
        }
        let nap = plan.poll.min(deadline - now);
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = interrupt.fired_wait() => {}
        }
    };
    if let Some((entry, _)) = queued
        && let Err(e) = store.delete(&entry).await
    {
        tracing::warn!("could not remove queue entry {entry}: {e}");
    }
    result
}

/// The newest live entry queued after `mine`, if any.
async fn newer_in_queue(
    store: &dyn StateStore,
    app: &str,
    scope: &str,
    mine: &str,
    plan: &LockPlan,
) -> Result<Option<Holder>> {
    let alive_since = now_ms() - plan.ttl.as_millis() as i64;
    let newest = store
        .list(&queue_prefix(app, scope))
        .await?
        .into_iter()
        .rfind(|e| e.key.as_str() > mine && e.modified_ms >= alive_since);
    let Some(entry) = newest else {
        return Ok(None);
    };
    Ok(store
        .get(&entry.key)
        .await?
        .and_then(|stored| Holder::from_body(&stored.body)))
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
            took_over,
        }
    }

    /// Stops the heartbeat and deletes the lock if it is still ours (its
    /// holder is this run: a heartbeat cut short may have renewed it without
    /// this run seeing the new ETag). Never fails: a lock left behind
    /// expires by itself.
    pub async fn release(mut self) {
        self.heartbeat.abort();
        // Wait until the heartbeat is gone, so no renewal lands after this.
        let _ = (&mut self.heartbeat).await;
        let ours = |body: &[u8]| Holder::from_body(body).is_some_and(|h| h.run == self.run);
        match self.store.get(&self.key).await {
            Ok(Some(current)) if ours(&current.body) => {
                if let Err(e) = self.store.delete(&self.key).await {
                    tracing::warn!(
                        "could not release the lock {}: {e}; it expires by itself",
                        self.key
                    );
                }
            }
            Ok(Some(_)) => tracing::warn!(
                "the lock {} was taken over while this run held it; leaving it to its new holder",
                self.key
            ),
            Ok(None) => tracing::warn!("the lock {} was removed while this run held it", self.key),
            Err(e) => tracing::warn!("could not read the lock {} to release it: {e}", self.key),
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
            Ok(Written::Refused) => {
                tracing::error!(
                    "lost the lock {key}: another run took it over (this run's heartbeat was late)"
                );
                return;
            }
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
