//! The `state` section: the S3 bucket that holds what tags cannot, the
//! release locks and the audit ledger.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::check::{self, Checked};
use super::duration::{DurationText, duration};

/// `state` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "the `state` section (a mapping with bucket)"
)]
#[schemars(rename = "StateConfig")]
pub(super) struct RawState {
    /// The S3 bucket for locks and the audit ledger (one can serve many apps).
    bucket: String,
    /// An optional key prefix inside the bucket.
    #[serde(default)]
    prefix: Option<String>,
    /// How long a release lock lives without its holder's heartbeat (renewed
    /// every quarter of it): how soon a killed run's lock can be taken over.
    #[serde(default = "default_lock_ttl", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    lock_ttl: Duration,
}

/// Where the pipeline keeps its locks, ledger and test verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The S3 bucket: one per account or team, shared by apps.
    pub bucket: String,
    /// What every state key starts with (`""`, or a prefix and a `/`), so
    /// a bucket can hold other things too.
    pub key_prefix: String,
    /// How soon a killed run's lock may be taken over.
    pub lock_ttl: Duration,
}

fn default_lock_ttl() -> Duration {
    Duration::from_secs(60)
}

impl RawState {
    pub(super) fn check(self) -> Checked<StateConfig> {
        check::bucket(&self.bucket)?;
        if let Some(prefix) = &self.prefix
            && (prefix.starts_with('/') || prefix.contains("//"))
        {
            return Err(format!(
                "state.prefix: {prefix:?} must not start with / or contain //"
            ));
        }
        if self.lock_ttl < Duration::from_secs(1) || self.lock_ttl > Duration::from_secs(3600) {
            return Err("state.lock_ttl: must be 1s to 1h".into());
        }
        Ok(StateConfig {
            key_prefix: key_prefix(self.prefix.as_deref()),
            bucket: self.bucket,
            lock_ttl: self.lock_ttl,
        })
    }
}

/// The prefix and a `/`, or nothing when there is no prefix (or an empty one).
fn key_prefix(prefix: Option<&str>) -> String {
    match prefix.map(|p| p.trim_end_matches('/')) {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_start_with_the_prefix_and_one_slash() {
        assert_eq!(key_prefix(None), "");
        assert_eq!(key_prefix(Some("")), "");
        assert_eq!(key_prefix(Some("ci")), "ci/");
        assert_eq!(key_prefix(Some("ci/")), "ci/");
    }
}
