//! The audit ledger: one JSON object per stage run in the state bucket, and
//! the test verdicts the build's test gate reads.
//!
//! An entry lives at `ledger/<app>/<finished>_<stage>_<env>_<run>.json`
//! (`<finished>` is `YYYYMMDDTHHMMSS.mmmZ`, so keys sort by time and
//! `history` filters by environment from the keys alone). It says what
//! stage ran where, for which commit and AMI, on which instances, who
//! started it from which CI job, when, and how it ended; never a credential.
//! `pipeline test` also writes `tests/<app>/<commit>.json`, the commit's
//! latest verdict: one GetObject answers the test gate.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ports::StateStore;
use crate::release::{Commit, Release, Tested};
use crate::run::Stage;

/// How a stage run ended, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A build, deploy, task, gc or unlock did its work.
    #[serde(rename = "succeeded")]
    Succeeded,
    /// The run failed, and left things safe.
    #[serde(rename = "failed")]
    Failed,
    /// The tests passed: the commit may be built.
    #[serde(rename = "passed")]
    Passed,
    /// A newer deploy queued behind this one, which gave way.
    #[serde(rename = "superseded")]
    Superseded,
    /// Promote moved traffic.
    #[serde(rename = "promoted")]
    Promoted,
    /// Rollback moved traffic back.
    #[serde(rename = "rolled_back")]
    RolledBack,
    /// Promote found the slot live already: nothing changed.
    #[serde(rename = "unchanged")]
    Unchanged,
    /// gc with `--dry-run`: nothing removed.
    #[serde(rename = "dry-run")]
    DryRun,
    /// The run took over an expired lock (`env` names it, `note` its dead holder).
    #[serde(rename = "lock-takeover")]
    LockTakeover,
}

impl Outcome {
    /// Its name in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Passed => "passed",
            Outcome::Superseded => "superseded",
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            Outcome::Unchanged => "unchanged",
            Outcome::DryRun => "dry-run",
            Outcome::LockTakeover => "lock-takeover",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The stage that ran.
    pub stage: Stage,
    /// The environment (or slot, or lock scope), if any.
    pub env: Option<String>,
    /// The full commit SHA, if any.
    pub commit: Option<String>,
    /// The AMI, if any.
    pub ami: Option<String>,
    /// The instances the run launched (or, for gc, what it removed).
    #[serde(default)]
    pub instances: Vec<String>,
    /// Who started it (the CI's user variable, else the OS user): the
    /// audit's "who".
    pub actor: Option<String>,
    /// The CI job, for its logs.
    pub job_url: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// When it finished (RFC 3339, UTC).
    pub finished: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The run id.
    pub run: String,
    /// Anything else worth keeping (a skipped test gate, a lock taken over).
    pub note: Option<String>,
    /// The record sets an adopting promote replaced (they pointed at
    /// neither slot), for rollback to return to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<crate::ports::Record>,
    /// The artifact a build baked (or found baked): its provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRecord>,
    /// The watch's verdict in words, if the run watched a slot: healthy
    /// (with the last comparison), or why it rolled back or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
}

/// An artifact as the ledger keeps it: what the AMI was baked from, not
/// where to get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The AMI's `pipeline:artifact-sha256`.
    pub sha256: String,
    /// Its size in bytes, packed (`None`: a reused AMI baked from another
    /// artifact than this run's, whose size this run does not know).
    pub size: Option<u64>,
    /// This run's artifact, when the reused AMI was baked from another
    /// (the build is not reproducible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub this_run: Option<String>,
}

/// The ledger of one app in the state bucket.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn StateStore>,
    app: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("app", &self.app).finish()
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` of Unix milliseconds: sortable, valid in S3 keys.
pub fn stamp_ms(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// RFC 3339 (UTC) of now.
pub fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Ledger {
    /// The ledger of `app` in `store`.
    pub fn new(store: Arc<dyn StateStore>, app: &str) -> Ledger {
        Ledger {
            store,
            app: app.to_string(),
        }
    }

    /// The store it writes to.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    /// Writes `entry` (one PutObject); returns its key.
    pub async fn record(&self, entry: &Entry) -> Result<String> {
        let key = format!(
            "ledger/{}/{}_{}_{}_{}.json",
            self.app,
            stamp_ms(crate::lock::now_ms()),
            entry.stage,
            entry.env.as_deref().unwrap_or("-"),
            entry.run
        );
        let body = serde_json::to_vec_pretty(entry).expect("an entry serializes");
        self.store.put(&key, &body).await?;
        if entry.stage == Stage::Test
            && let Some(commit) = &entry.commit
        {
            let verdict = format!("tests/{}/{commit}.json", self.app);
            self.store.put(&verdict, &body).await?;
        }
        Ok(key)
    }

    /// The newest `limit` entries (of environment `env`, if given), newest
    /// first: one listing, then one GetObject per entry shown.
    pub async fn history(&self, env: Option<&str>, limit: usize) -> Result<Vec<Entry>> {
        let keys = self.store.list(&format!("ledger/{}/", self.app)).await?;
        let mut out = Vec::new();
        for listed in keys.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let name = listed.key.rsplit('/').next().unwrap_or_default();
            let fields: Vec<&str> = name.splitn(4, '_').collect();
            if let Some(env) = env
                && fields.get(2) != Some(&env)
            {
                continue;
            }
            if let Some(stored) = self.store.get(&listed.key).await?
                && let Ok(entry) = serde_json::from_slice::<Entry>(&stored.body)
            {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The newest entry of `stage` that ended `outcome`: one listing (the
    /// keys name the stage), then one GetObject per such entry, newest
    /// first, until one matches.
    pub async fn latest(&self, stage: Stage, outcome: Outcome) -> Result<Option<Entry>> {
        let keys = self.store.list(&format!("ledger/{}/", self.app)).await?;
        for listed in keys.iter().rev() {
            let name = listed.key.rsplit('/').next().unwrap_or_default();
            if name.split('_').nth(1) != Some(stage.as_str()) {
                continue;
            }
            if let Some(stored) = self.store.get(&listed.key).await?
                && let Ok(entry) = serde_json::from_slice::<Entry>(&stored.body)
                && entry.outcome == outcome
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// The commit's latest test verdict, if any (one GetObject): also how
    /// `pipeline test` finds out, before it runs, whether it can record one.
    pub async fn verdict(&self, commit: &Commit) -> Result<Option<Entry>> {
        let key = format!("tests/{}/{commit}.json", self.app);
        Ok(self
            .store
            .get(&key)
            .await?
            .and_then(|s| serde_json::from_slice::<Entry>(&s.body).ok()))
    }

    /// The test gate: the commit's latest test verdict must be `passed`;
    /// then the commit is a release that may be built.
    pub async fn test_gate(&self, commit: Commit) -> Result<Release<Tested>> {
        match self.verdict(&commit).await? {
            Some(entry) if entry.outcome == Outcome::Passed => {
                tracing::info!(
                    "test gate: {commit} passed its tests ({} run {})",
                    entry.actor.as_deref().unwrap_or("?"),
                    entry.run
                );
                Ok(Release::vouched(&self.app, commit))
            }
            _ => Err(Error::Untested {
                commit: commit.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_by_time() {
        assert_eq!(stamp_ms(0), "19700101T000000.000Z");
        // 2026-11-18 11:06:40.123 UTC (Python's datetime agrees).
        assert_eq!(stamp_ms(1_795_000_000_123), "20261118T110640.123Z");
        assert!(stamp_ms(1_000) < stamp_ms(10_000));
    }
}
