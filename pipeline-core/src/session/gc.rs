//! `pipeline gc`: old AMIs and orphaned instances out, one gc at a time.

use std::fmt;
use std::time::Duration;

use super::{Report, Session};
use crate::config::EventKind;
use crate::error::Result;
use crate::ledger::Outcome;
use crate::lock::now_ms;
use crate::release::short_commit;
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::stages::gc::{self, GcOutcome, GcPlan};

/// What gc keeps, and whether it only reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// How many of the newest AMIs to keep besides those in use.
    pub keep: usize,
    /// Only list what would be removed.
    pub dry_run: bool,
    /// How long to wait for another gc.
    pub lock_wait: Duration,
}

impl fmt::Display for GcOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Vec::new();
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for k in &self.kept {
            lines.push(format!(
                "keep   {} {}  {}",
                k.id,
                short_commit(&k.commit),
                k.why
            ));
        }
        for r in &self.removed {
            lines.push(format!(
                "{verb} {} {} in {} with {}",
                r.id,
                short_commit(&r.commit),
                r.region,
                if r.snapshots.is_empty() {
                    "no snapshot".to_string()
                } else {
                    r.snapshots.join(", ")
                }
            ));
        }
        for o in &self.orphans {
            lines.push(format!(
                "{} orphan {o}",
                if self.dry_run {
                    "would terminate"
                } else {
                    "terminated"
                }
            ));
        }
        if lines.is_empty() {
            lines.push("nothing to keep or remove".into());
        }
        f.write_str(&lines.join("\n"))
    }
}

impl Report for GcOutcome {}

impl Session {
    /// Deregisters the app's AMIs beyond the newest `keep` that nothing
    /// uses, and terminates orphaned builders and task instances; see
    /// [`crate::stages::gc`].
    pub async fn gc(&self, options: GcOptions) -> Result<GcOutcome> {
        let plan = GcPlan::new(&self.config, options.keep, options.dry_run);
        let spec = RunSpec {
            scopes: vec!["gc".to_string()],
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Gc)
        };
        let run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let result = gc::gc(&plan, self.adapters.gc(), now_ms()).await;
        run.finish(result, EventKind::Succeeded, |o| Details {
            instances: o.orphans.clone(),
            outcome: Some(if o.dry_run {
                Outcome::DryRun
            } else {
                Outcome::Succeeded
            }),
            note: (!o.removed.is_empty()).then(|| {
                let amis: Vec<String> = o
                    .removed
                    .iter()
                    .map(|r| format!("{} ({}, {})", r.id, r.region, short_commit(&r.commit)))
                    .collect();
                let verb = if o.dry_run {
                    "would deregister"
                } else {
                    "deregistered"
                };
                format!("{verb} {}", amis.join(", "))
            }),
            ..Details::default()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;
    use crate::stages::gc::{Kept, Removed};

    #[test]
    fn the_json_fields_are_the_contract() {
        let out = GcOutcome {
            kept: vec![Kept {
                id: "ami-1".into(),
                commit: "c1".into(),
                why: "in use by prod1 (i-1)".into(),
            }],
            removed: vec![Removed {
                id: "ami-0".into(),
                region: "us-east-1".into(),
                name: "shop-0".into(),
                commit: "c0".into(),
                snapshots: vec!["snap-0".into()],
            }],
            orphans: vec![],
            dry_run: true,
        };
        assert_eq!(keys(&out), ["dry_run", "kept", "ok", "orphans", "removed"]);
        let json: serde_json::Value = serde_json::from_str(&super::super::json(&out)).unwrap();
        for key in ["id", "region", "commit", "snapshots"] {
            assert!(json["removed"][0].get(key).is_some(), "{key}");
        }
        for key in ["id", "commit", "why"] {
            assert!(json["kept"][0].get(key).is_some(), "{key}");
        }
        assert!(
            out.to_string()
                .contains("would remove ami-0 c0 in us-east-1 with snap-0")
        );
    }
}
