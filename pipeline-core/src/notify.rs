//! Notifications: stage events POSTed as JSON to the webhooks under `notify`.
//!
//! Each event carries app, stage, env, commit, AMI, actor, CI job URL,
//! outcome and duration, plus a Slack-compatible `text`. Delivery never
//! blocks or fails a stage: [`Notifier::send`] hands the event to a
//! background task and returns at once; each webhook gets a bounded number
//! of attempts, each with a timeout and a doubling backoff between them
//! (retrying connection errors, timeouts, 429 and 5xx), and a warning when
//! it gives up. [`Notifier::flush`] waits for what is still in flight (at
//! most the webhooks' own bounds) before the process exits.
//!
//! Webhook URLs can be secrets (Slack's are): messages name only the host.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::config::{EventKind, WebhookConfig, WebhookUrl};
use crate::error::{Error, Result};
use crate::run::Stage;

/// One event of one stage run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// Which app's pipeline it is (one channel may hear several).
    pub app: String,
    /// The stage that ran.
    pub stage: Stage,
    /// The environment (or slot), if the stage has one.
    pub env: Option<String>,
    /// The full commit SHA, if known.
    pub commit: Option<String>,
    /// The AMI, if known.
    pub ami: Option<String>,
    /// Who started the run (the CI's user, else the OS user).
    pub actor: Option<String>,
    /// The CI job's URL.
    pub job_url: Option<String>,
    /// `started`, `succeeded`, `failed`, `promoted` or `rolled_back`.
    pub outcome: String,
    /// How long the stage ran, in seconds (not on `started`).
    pub duration_seconds: Option<f64>,
    /// The error, on `failed`.
    pub error: Option<String>,
    /// The run id.
    pub run: String,
}

impl Event {
    /// The one-line summary Slack (and most chat tools) show.
    pub fn text(&self) -> String {
        let mut text = format!("{}: {}", self.app, self.stage);
        if let Some(commit) = &self.commit {
            text.push_str(&format!(" of {}", crate::release::short_commit(commit)));
        }
        if let Some(ami) = &self.ami {
            text.push_str(&format!(" ({ami})"));
        }
        if let Some(env) = &self.env {
            let to = if self.stage == Stage::Task {
                "in"
            } else {
                "to"
            };
            text.push_str(&format!(" {to} {env}"));
        }
        text.push(' ');
        text.push_str(&self.outcome.replace('_', " "));
        if let Some(seconds) = self.duration_seconds {
            text.push_str(&format!(" in {seconds:.0}s"));
        }
        if let Some(actor) = &self.actor {
            text.push_str(&format!(" by {actor}"));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!(": {error}"));
        }
        if let Some(url) = &self.job_url {
            text.push_str(&format!(" <{url}|job>"));
        }
        text
    }

    /// The JSON body: every field, and `text`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = body.as_object_mut() {
            map.insert("text".into(), self.text().into());
        }
        body
    }
}

/// A webhook, its URL and secret resolved from the environment.
#[derive(Clone)]
struct Hook {
    url: String,
    host: String,
    header: Option<(String, String)>,
    events: Vec<EventKind>,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL's path or the header's value: they may be secrets.
        f.debug_struct("Hook")
            .field("host", &self.host)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// Sends events to the configured webhooks in the background.
#[derive(Debug)]
pub struct Notifier {
    hooks: Vec<Hook>,
    client: reqwest::Client,
    pending: std::sync::Mutex<JoinSet<()>>,
}

impl Notifier {
    /// Resolves the webhooks of `config` (`url_env`, `secret_header.env`
    /// from `env`); a variable that is not set is bad input. Makes no call.
    pub fn new(config: &[WebhookConfig], env: impl Fn(&str) -> Option<String>) -> Result<Notifier> {
        let mut hooks = Vec::with_capacity(config.len());
        for (i, hook) in config.iter().enumerate() {
            let var = |key: &str, name: &str| {
                env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                    Error::Input(format!(
                        "notify[{i}].{key}: the environment variable {name} is not set; set it (a CI secret) or remove the webhook"
                    ))
                })
            };
            let url = match &hook.url {
                WebhookUrl::Literal(url) => url.clone(),
                WebhookUrl::FromEnv(name) => var("url_env", name)?,
            };
            let parsed = reqwest::Url::parse(&url).map_err(|e| {
                Error::Input(format!("notify[{i}]: the webhook URL does not parse: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::Input(format!(
                    "notify[{i}]: the webhook URL must be http or https"
                )));
            }
            let host = match parsed.port() {
                Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or("?")),
                None => parsed.host_str().unwrap_or("?").to_string(),
            };
            let header = match &hook.secret_header {
                Some(h) => Some((h.name.clone(), var("secret_header.env", &h.env)?)),
                None => None,
            };
            hooks.push(Hook {
                url,
                host,
                header,
                events: hook.events.clone(),
                timeout: hook.timeout,
                attempts: hook.attempts,
                backoff: hook.backoff,
            });
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Input(format!("cannot set up the webhook client: {e}")))?;
        Ok(Notifier {
            hooks,
            client,
            pending: std::sync::Mutex::new(JoinSet::new()),
        })
    }

    /// Queues `event` for every webhook that wants it and returns at once.
    /// Must be called inside a tokio runtime.
    pub fn send(&self, event: &Event) {
        let body = event.body().to_string();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for hook in self
            .hooks
            .iter()
            .filter(|h| h.events.contains(&event.event))
        {
            let (client, hook, body) = (self.client.clone(), hook.clone(), body.clone());
            let kind = event.event;
            pending.spawn(async move {
                if let Err(why) = deliver(&client, &hook, body).await {
                    tracing::warn!(
                        "webhook {}: gave up on the {} event: {why}",
                        hook.host,
                        kind.as_str()
                    );
                }
            });
        }
    }

    /// Waits for every delivery still in flight; each is bounded by its
    /// webhook's attempts, timeout and backoff.
    pub async fn flush(&self) {
        let mut pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        while pending.join_next().await.is_some() {}
    }
}

/// POSTs `body` to `hook`, retrying what may succeed later.
async fn deliver(
    client: &reqwest::Client,
    hook: &Hook,
    body: String,
) -> std::result::Result<(), String> {
    let mut backoff = hook.backoff;
    let mut last = String::new();
    for attempt in 1..=hook.attempts {
        let mut request = client
            .post(&hook.url)
            .timeout(hook.timeout)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some((name, value)) = &hook.header {
            request = request.header(name.as_str(), value.as_str());
        }
        let retry = match request.send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!("webhook {}: delivered (attempt {attempt})", hook.host);
                return Ok(());
            }
            Ok(response) => {
                let status = response.status();
                last = format!("HTTP {status}");
                status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408
            }
            Err(e) => {
                // Without the URL: reqwest's Display would print it.
                last = if e.is_timeout() {
                    format!("no answer within {}s", hook.timeout.as_secs_f64())
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    "request failed".to_string()
                };
                true
            }
        };
        if !retry {
            return Err(format!("{last} (not retried)"));
        }
        if attempt < hook.attempts {
            tracing::debug!(
                "webhook {}: {last}; retrying in {}s",
                hook.host,
                backoff.as_secs_f64()
            );
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(format!("{last} after {} attempt(s)", hook.attempts))
}

#[cfg(test)]
mod tests;
