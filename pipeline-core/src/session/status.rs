//! `pipeline status` and `history`: what runs where, and what ran when.
//! Both only read.

use std::fmt;

use serde::Serialize;

use super::{Report, Session};
use crate::error::Result;
use crate::ledger::Entry;
use crate::release::short_commit;
use crate::stages::promote;
use crate::stages::status::{self, EnvStatus};

/// What `status` reads besides the environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusOptions {
    /// How many of the newest ledger entries to read too (for the
    /// dashboard); zero reads none.
    pub recent: usize,
}

/// Every environment's state and the live slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// The public record (`None`: no `promote` section).
    pub record: Option<String>,
    /// The slot it points at (most of the traffic, mid-shift).
    pub live: Option<String>,
    /// The host it points at.
    pub target: Option<String>,
    /// Each slot's share in percent, mid-shift.
    pub weights: Option<[i64; 2]>,
    /// Each environment, in name order.
    pub environments: Vec<EnvStatus>,
    /// The app, for the dashboard's title.
    #[serde(skip)]
    pub app: String,
    /// The newest ledger entries, newest first, if asked for.
    #[serde(skip)]
    pub recent: Vec<Entry>,
    /// When it was read (RFC 3339, UTC): a dashboard shows its age.
    pub generated: String,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.record, &self.live) {
            (Some(record), Some(slot)) => writeln!(f, "live: {slot} ({record})")?,
            (Some(record), None) => writeln!(f, "live: none ({record} does not point at a slot)")?,
            (None, _) => writeln!(f, "live: no promote section in the config")?,
        }
        write!(
            f,
            "{:<12} {:<4} {:>8}  {:<26} {:<22} ARTIFACT",
            "ENV", "LIVE", "HEALTHY", "COMMIT", "AMI"
        )?;
        for e in &self.environments {
            let commits: Vec<String> = e
                .commits
                .iter()
                .map(|(c, n)| {
                    if e.commits.len() > 1 {
                        format!("{} ({n})", short_commit(c))
                    } else {
                        short_commit(c).to_string()
                    }
                })
                .collect();
            let images: Vec<&str> = e.images.iter().map(String::as_str).collect();
            let artifacts: Vec<&str> = e.artifacts.iter().map(|a| short_digest(a)).collect();
            write!(
                f,
                "\n{:<12} {:<4} {:>8}  {:<26} {:<22} {}",
                e.name,
                if e.live { "*" } else { "" },
                format!("{}/{}", e.healthy, e.instances),
                or_dash(&commits.join(", ")),
                or_dash(&images.join(", ")),
                or_dash(&artifacts.join(", "))
            )?;
        }
        Ok(())
    }
}

/// A digest's first 12 hex digits, as a commit's are shown.
fn short_digest(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

impl Report for StatusReport {}

/// What `history` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Only this environment's entries.
    pub env: Option<String>,
    /// How many entries, newest first.
    pub limit: usize,
}

/// Ledger entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryReport {
    /// The entries.
    pub entries: Vec<Entry>,
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("the ledger is empty");
        }
        write!(
            f,
            "{:<30}  {:<13} {:<9} {:<10} {:<12} {:<10} AMI, NOTE",
            "FINISHED", "STAGE", "ENV", "OUTCOME", "COMMIT", "BY"
        )?;
        for e in &self.entries {
            writeln!(f)?;
            write!(
                f,
                "{:<30}  {:<13} {:<9} {:<10} {:<12} {:<10} {}{}",
                e.finished,
                e.stage.as_str(),
                e.env.as_deref().unwrap_or("-"),
                e.outcome.as_str(),
                e.commit.as_deref().map(short_commit).unwrap_or("-"),
                e.actor.as_deref().unwrap_or("-"),
                e.ami.as_deref().unwrap_or(""),
                [
                    e.artifact.as_ref().map(|a| format!(
                        "artifact {} ({})",
                        short_digest(&a.sha256),
                        a.size
                            .map_or("size unknown".to_string(), crate::config::format_size)
                    )),
                    e.error.clone().or(e.note.clone()),
                ]
                .into_iter()
                .flatten()
                .map(|t| format!("  {t}"))
                .collect::<String>()
            )?;
        }
        Ok(())
    }
}

impl Report for HistoryReport {}

impl Session {
    /// Reads each environment's fleet and health, and where the record points.
    pub async fn status(&self, options: StatusOptions) -> Result<StatusReport> {
        let plan = self
            .config
            .promote
            .as_ref()
            .map(|_| self.promote_plan())
            .transpose()?;
        let live = match &plan {
            Some(plan) => Some(promote::live(plan, &self.adapters.promote(plan)).await?),
            None => None,
        };
        let live_slot = match (&plan, &live) {
            (Some(plan), Some(live)) => live.slot.map(|s| plan.slots[s].clone()),
            _ => None,
        };
        let environments: Vec<(&str, &dyn crate::ports::Balancer)> = self
            .config
            .environments
            .keys()
            .map(|name| (name.as_str(), self.adapters.balancer(name)))
            .collect();
        let envs = status::status(
            &self.config.app,
            &environments,
            self.adapters.instances(),
            live_slot.as_deref(),
        )
        .await?;
        let recent = if options.recent > 0 {
            self.tracking.ledger.history(None, options.recent).await?
        } else {
            Vec::new()
        };
        Ok(StatusReport {
            record: plan.map(|p| p.record),
            live: live_slot,
            target: live
                .as_ref()
                .and_then(|l| l.records.first())
                .map(|r| r.target.host()),
            weights: live.and_then(|l| l.weights),
            environments: envs,
            app: self.config.app.clone(),
            recent,
            generated: crate::ledger::rfc3339_now(),
        })
    }

    /// The ledger, newest first; an unknown environment is bad input.
    pub async fn history(&self, options: HistoryOptions) -> Result<HistoryReport> {
        if let Some(name) = &options.env {
            self.config.environment(name)?;
        }
        let entries = self
            .tracking
            .ledger
            .history(options.env.as_deref(), options.limit)
            .await?;
        Ok(HistoryReport { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn the_json_fields_are_the_contract() {
        let report = StatusReport {
            record: Some("www.example.com".into()),
            live: Some("prod1".into()),
            target: Some("prod1-lb".into()),
            weights: None,
            environments: vec![EnvStatus {
                name: "prod1".into(),
                balancer: "tg".into(),
                instances: 2,
                healthy: 2,
                commits: BTreeMap::from([("c".into(), 2)]),
                images: BTreeSet::from(["ami-1".into()]),
                artifacts: BTreeSet::from(["ab".repeat(32)]),
                live: true,
            }],
            app: "shop".into(),
            recent: vec![],
            generated: "2026-12-01T00:00:00Z".into(),
        };
        assert_eq!(
            keys(&report),
            [
                "environments",
                "generated",
                "live",
                "ok",
                "record",
                "target",
                "weights"
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&super::super::json(&report)).unwrap();
        let mut env_keys: Vec<&String> = json["environments"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        env_keys.sort();
        assert_eq!(
            env_keys,
            [
                "artifacts",
                "balancer",
                "commits",
                "healthy",
                "images",
                "instances",
                "live",
                "name"
            ]
        );
        assert!(
            report
                .to_string()
                .starts_with("live: prod1 (www.example.com)\nENV")
        );

        let history = HistoryReport { entries: vec![] };
        assert_eq!(keys(&history), ["entries", "ok"]);
        assert_eq!(history.to_string(), "the ledger is empty");
    }
}
