//! The `notify` section: webhooks told about stage events.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::check::{self, Checked};
use super::duration::{DurationText, duration};

/// One webhook as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a webhook (a mapping with url or url_env)"
)]
#[schemars(rename = "WebhookConfig")]
pub(super) struct RawWebhook {
    /// The URL (http or https). Give this or `url_env`.
    #[serde(default)]
    url: Option<String>,
    /// The name of an environment variable holding the URL, for URLs that
    /// are secrets (a Slack incoming webhook is).
    #[serde(default)]
    url_env: Option<String>,
    /// A header carrying a secret, its value read from an environment variable.
    #[serde(default)]
    secret_header: Option<SecretHeader>,
    /// Which events to send [default: all].
    #[serde(default = "all_events")]
    events: Vec<EventKind>,
    /// How long one delivery attempt may take.
    #[serde(default = "default_webhook_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    timeout: Duration,
    /// How many attempts before giving up with a warning.
    #[serde(default = "default_webhook_attempts")]
    attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    #[serde(default = "default_webhook_backoff", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    backoff: Duration,
}

/// One webhook, checked: where events are POSTed, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where the events go.
    pub url: WebhookUrl,
    /// A header the receiver checks, its secret kept out of the file.
    pub secret_header: Option<SecretHeader>,
    /// The events this receiver wants.
    pub events: Vec<EventKind>,
    /// How long one delivery may take, so a slow receiver cannot hold up a stage.
    pub timeout: Duration,
    /// How many tries a delivery gets.
    pub attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    pub backoff: Duration,
}

/// Where a webhook's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    /// Written in the config.
    Literal(String),
    /// Read from this environment variable (a CI secret), for URLs that
    /// are secrets themselves.
    FromEnv(String),
}

/// `secret_header`: a header whose value comes from the environment, so
/// the secret is never in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretHeader {
    /// The header's name, e.g. `X-Pipeline-Token`.
    pub name: String,
    /// The environment variable holding its value.
    pub env: String,
}

/// A stage event a webhook can be told about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    serde::Serialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A stage began.
    Started,
    /// A stage (test, build, deploy, task) finished its work.
    Succeeded,
    /// A stage failed (and left things safe).
    Failed,
    /// Promote moved traffic to a slot.
    Promoted,
    /// Rollback moved traffic back.
    RolledBack,
}

impl EventKind {
    /// Every event, in the order a run can emit them.
    pub const ALL: [EventKind; 5] = [
        EventKind::Started,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Promoted,
        EventKind::RolledBack,
    ];

    /// Its name in the config and in the JSON sent (`rolled_back`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack => "rolled_back",
        }
    }
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_webhook_attempts() -> u32 {
    3
}

fn default_webhook_backoff() -> Duration {
    Duration::from_secs(1)
}

impl RawWebhook {
    pub(super) fn check(self, key: &str) -> Checked<WebhookConfig> {
        let url = match (self.url, self.url_env) {
            (Some(url), None) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    // The URL may be a secret: name the key, not the value.
                    return Err(format!("{key}.url: must start with https:// or http://"));
                }
                WebhookUrl::Literal(url)
            }
            (None, Some(var)) => {
                check::env_name(&format!("{key}.url_env"), &var)?;
                WebhookUrl::FromEnv(var)
            }
            _ => {
                return Err(format!(
                    "{key}: give the webhook's `url`, or `url_env` naming the environment variable that holds it"
                ));
            }
        };
        if let Some(header) = &self.secret_header {
            let ok = !header.name.is_empty()
                && header
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!(
                    "{key}.secret_header.name: {:?} is not an HTTP header name",
                    header.name
                ));
            }
            check::env_name(&format!("{key}.secret_header.env"), &header.env)?;
        }
        if self.events.is_empty() {
            return Err(format!(
                "{key}.events: name at least one of started, succeeded, failed, promoted, rolled_back (or leave it out for all)"
            ));
        }
        if self.attempts == 0 || self.attempts > 10 {
            return Err(format!("{key}.attempts: must be 1 to 10"));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err(format!(
                "{key}.timeout: must be more than zero and at most 60s"
            ));
        }
        if self.backoff > Duration::from_secs(60) {
            return Err(format!("{key}.backoff: must be at most 60s"));
        }
        Ok(WebhookConfig {
            url,
            secret_header: self.secret_header,
            events: self.events,
            timeout: self.timeout,
            attempts: self.attempts,
            backoff: self.backoff,
        })
    }
}

/// One webhook from its YAML, checked (for tests of the notifier).
#[cfg(test)]
pub(crate) fn webhook(yaml: &str) -> WebhookConfig {
    serde_yaml::from_str::<RawWebhook>(yaml)
        .unwrap()
        .check("notify[0]")
        .unwrap()
}
