//! `pipeline.yaml`: read once, from its raw form into checked types.
//!
//! [`Config::load`] reads the file; serde rejects unknown keys and wrong
//! types (naming the key, line and column); then each section is checked
//! and turned into its checked type, with every message naming the key to
//! fix. A `Config` that loaded is safe to plan from: the stages never
//! re-check it. Every key is documented in `docs/configuration.md`.
//!
//! # Layout
//! - `state`: the state bucket ([`StateConfig`]).
//! - `build`: how the AMI is baked ([`BuildConfig`], [`BaseImage`]).
//! - `environment`: one environment ([`EnvironmentConfig`], [`Placement`],
//!   [`LoadBalancer`], [`TaskConfig`]).
//! - `promote`: the public record and the slots ([`PromoteConfig`]).
//! - `notify`: the webhooks ([`WebhookConfig`], [`EventKind`]).
//! - `shape`: what an instance is made of ([`InstanceShape`]), shared by
//!   the builder, environments and tasks.
//! - `duration`: `90s`, `30m`, `1h30m`.
//! - `surge`: an environment's `max_surge`, `50` or `25%`.
//! - `check`: the value rules (names, regions, ids) the sections share.

mod build;
mod check;
mod duration;
mod environment;
mod notify;
mod promote;
mod shape;
mod size;
mod state;
mod surge;
mod watch;

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

pub use build::{BaseImage, BuildConfig};
pub use duration::{format_duration, parse_duration};
pub use environment::{
    EnvironmentConfig, LoadBalancer, Placement, SecretRef, TaskConfig, TaskWhen,
};
pub use notify::{EventKind, SecretHeader, WebhookConfig, WebhookUrl};
pub use promote::{PromoteConfig, RecordType};
pub use shape::{Encryption, InstanceShape, MetadataOptions, RootVolume};
pub use size::{format_size, parse_size};
pub use state::StateConfig;
pub use watch::{Analysis, Fraction, TooLittleTraffic, WatchConfig, parse_percent};

#[cfg(test)]
pub(crate) use notify::webhook;

use crate::error::{Error, Result};

/// The whole `pipeline.yaml` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a pipeline.yaml (a mapping with app, region, state and build)"
)]
#[schemars(rename = "Config")]
struct RawConfig {
    /// The application's name: tagged as `pipeline:app`, used in AMI names.
    app: String,
    /// The home AWS region: builds and environments live here.
    region: String,
    /// Where the pipeline keeps state that tags cannot hold.
    state: state::RawState,
    /// How to bake the AMI.
    build: build::RawBuild,
    /// The environments deploys go to, by name.
    #[serde(default)]
    environments: BTreeMap<String, environment::RawEnvironment>,
    /// The blue/green flip between two production slots.
    #[serde(default)]
    promote: Option<promote::RawPromote>,
    /// Webhooks told about stage events (started, succeeded, failed,
    /// promoted, rolled_back).
    #[serde(default)]
    notify: Vec<notify::RawWebhook>,
}

/// The whole `pipeline.yaml`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The app everything is tagged with (`pipeline:app`), so one account
    /// can hold several apps' pipelines.
    pub app: String,
    /// Where builds and environments live; copies go elsewhere.
    pub region: String,
    /// Where locks, the ledger and test verdicts live.
    pub state: StateConfig,
    /// How the commit's AMI is baked.
    pub build: BuildConfig,
    /// Where releases are deployed, by name.
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// The blue/green flip, if the app has two production slots.
    pub promote: Option<PromoteConfig>,
    /// Who hears about stage events.
    pub notify: Vec<WebhookConfig>,
}

impl Config {
    /// Reads, parses and checks the config file at `path`; a
    /// `provision_file` is read relative to it.
    pub fn load(path: &Path) -> Result<Config> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(
                &shown,
                format!("cannot read it: {e}; pass --config with the path to your pipeline.yaml"),
            )
        })?;
        Config::parse_in(&text, &shown, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and checks config text; `origin` names it in errors, and a
    /// `provision_file` is read relative to the working directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        Config::parse_in(text, origin, Path::new("."))
    }

    fn parse_in(text: &str, origin: &str, dir: &Path) -> Result<Config> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        raw.check(dir).map_err(|m| Error::config(origin, m))
    }

    /// Environment `name`; an unknown one is bad input that lists the known.
    pub fn environment(&self, name: &str) -> Result<&EnvironmentConfig> {
        self.environments.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            Error::Input(format!(
                "no environment {name:?} in the config; known: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

impl RawConfig {
    fn check(self, dir: &Path) -> check::Checked<Config> {
        check::name("app", &self.app, 32)?;
        check::region("region", &self.region)?;
        let state = self.state.check()?;
        let build = self.build.check(dir)?;
        let mut environments = BTreeMap::new();
        for (name, raw) in self.environments {
            check::name("environments", &name, 32)?;
            let checked = raw.check(&name)?;
            environments.insert(name, checked);
        }
        let promote = self.promote.map(|p| p.check(&environments)).transpose()?;
        let notify = self
            .notify
            .into_iter()
            .enumerate()
            .map(|(i, hook)| hook.check(&format!("notify[{i}]")))
            .collect::<check::Checked<Vec<_>>>()?;
        Ok(Config {
            app: self.app,
            region: self.region,
            state,
            build,
            environments,
            promote,
            notify,
        })
    }
}

/// The JSON Schema of `pipeline.yaml`, for editors (YAML language servers
/// read JSON Schema). Unknown keys are not allowed, as in [`Config::load`].
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
