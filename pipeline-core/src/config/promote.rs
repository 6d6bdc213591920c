//! The `promote` section: the public record and the two production slots
//! it flips between.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::check::Checked;
use super::duration::{DurationText, duration};
use super::environment::EnvironmentConfig;
use super::watch::{RawWatch, WatchConfig};

/// `promote` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "the `promote` section (a mapping with hosted_zone and record)"
)]
#[schemars(rename = "PromoteConfig")]
pub(super) struct RawPromote {
    /// The Route53 hosted zone id of the record (`Z...`).
    hosted_zone: String,
    /// The public record, e.g. `www.example.com`.
    record: String,
    /// How the record points at the live slot's balancer.
    #[serde(default)]
    record_type: RecordType,
    /// TTL of a CNAME record, in seconds.
    #[serde(default = "default_ttl")]
    ttl: i64,
    /// The two slots, each an environment with its own balancer.
    #[serde(default = "default_slots")]
    slots: [String; 2],
    /// At least this many healthy instances of the expected commit in the
    /// target slot (the slot's `count` if more).
    #[serde(default)]
    min_healthy: u32,
    /// How long Route53 may take to apply the change (INSYNC).
    #[serde(default = "default_promote_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    timeout: Duration,
    /// How often the change's status is polled.
    #[serde(default = "default_promote_poll", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    poll_interval: Duration,
    /// A gradual shift: the target slot's share of traffic at each step, in
    /// percent, rising to 100 (e.g. `[10, 50, 100]`), with weighted records.
    /// Empty: one flip.
    #[serde(default)]
    steps: Vec<u8>,
    /// How long each step below 100 % holds before the next (the target's
    /// health is re-checked before every step).
    #[serde(default = "default_bake", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    bake: Duration,
    /// What to watch on CloudWatch while traffic moves and after, rolling
    /// back by itself when it goes wrong.
    #[serde(default)]
    watch: Option<RawWatch>,
}

/// The blue/green flip, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteConfig {
    /// The hosted zone's bare id (`hosted_zone` may be written
    /// `/hostedzone/ID`, as Route53 prints it).
    pub zone: String,
    /// The name users reach the app at (no trailing dot).
    pub record: String,
    /// Whether the record is a CNAME or an ALIAS, as the zone has it.
    pub record_type: RecordType,
    /// A CNAME's TTL: how long resolvers keep sending users to the old slot.
    pub ttl: i64,
    /// The two environments traffic flips between.
    pub slots: [String; 2],
    /// A floor on the healthy instances a slot needs before it takes
    /// traffic, above its `count`.
    pub min_healthy: u32,
    /// How long Route53 may take to apply a change everywhere.
    pub timeout: Duration,
    /// How often a change's status is looked at.
    pub poll_interval: Duration,
    /// The new slot's share at each step of a gradual shift (empty: one flip).
    pub steps: Vec<u8>,
    /// How long each step below 100 % holds, so a bad release shows itself
    /// on a share of the traffic.
    pub bake: Duration,
    /// The CloudWatch watch, if configured.
    pub watch: Option<WatchConfig>,
}

/// How the public record points at a balancer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordType {
    /// A CNAME to the balancer's DNS name.
    #[default]
    Cname,
    /// An ALIAS A record to the balancer (with its canonical hosted zone id).
    Alias,
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordType::Cname => "cname",
            RecordType::Alias => "alias",
        })
    }
}

fn default_bake() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_ttl() -> i64 {
    60
}

fn default_slots() -> [String; 2] {
    ["prod1".to_string(), "prod2".to_string()]
}

fn default_promote_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_promote_poll() -> Duration {
    Duration::from_secs(2)
}

impl RawPromote {
    pub(super) fn check(
        self,
        environments: &BTreeMap<String, EnvironmentConfig>,
    ) -> Checked<PromoteConfig> {
        let zone = self.hosted_zone.trim_start_matches("/hostedzone/");
        if zone.is_empty() || zone.len() > 32 || !zone.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "promote.hosted_zone: {:?} is not a Route53 hosted zone id (such as Z0123456789ABCDEFGHIJ)",
                self.hosted_zone
            ));
        }
        let record = self.record.trim_end_matches('.');
        let ok = record.contains('.')
            && record.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(format!(
                "promote.record: {:?} is not a DNS name such as www.example.com",
                self.record
            ));
        }
        if self.slots[0] == self.slots[1] {
            return Err("promote.slots: name two different environments".into());
        }
        for slot in &self.slots {
            if !environments.contains_key(slot) {
                return Err(format!(
                    "promote.slots: {slot:?} is not an environment in this config"
                ));
            }
        }
        if !self.steps.is_empty() {
            let rising = self.steps.windows(2).all(|w| w[0] < w[1]);
            if !rising || self.steps[0] == 0 || self.steps.last() != Some(&100) {
                return Err(format!(
                    "promote.steps: {:?} must rise from above 0 to 100, e.g. [10, 50, 100]",
                    self.steps
                ));
            }
        }
        if !(0..=172_800).contains(&self.ttl) {
            return Err("promote.ttl: must be 0 to 172800 seconds".into());
        }
        if self.timeout.is_zero() || self.poll_interval.is_zero() {
            return Err("promote.timeout and promote.poll_interval: must be more than zero".into());
        }
        Ok(PromoteConfig {
            zone: zone.to_string(),
            record: record.to_string(),
            record_type: self.record_type,
            ttl: self.ttl,
            slots: self.slots,
            min_healthy: self.min_healthy,
            timeout: self.timeout,
            poll_interval: self.poll_interval,
            steps: self.steps,
            bake: self.bake,
            watch: self.watch.map(RawWatch::check).transpose()?,
        })
    }
}
