//! `pipeline build`: bake the commit's AMI, or reuse it, behind the test gate.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Report, Session, secs};
use crate::config::EventKind;
use crate::error::Result;
use crate::release::{Commit, Release};
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::stages::build::{BuildOutcome, BuildPlan};

/// What to bake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The commit whose AMI it is.
    pub commit: Commit,
    /// Bake although the ledger has no passing test verdict for the
    /// commit (recorded in the ledger).
    pub skip_test_gate: bool,
    /// How long to wait for another build of the same commit.
    pub lock_wait: Duration,
}

/// The commit's AMI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildReport {
    /// The AMI in the home region.
    pub ami: String,
    /// Its name.
    pub name: String,
    /// The home region.
    pub region: String,
    /// The commit it was baked from.
    pub commit: String,
    /// Whether an AMI baked earlier was reused (nothing baked).
    pub reused: bool,
    /// The base image baked from (`None` when reused).
    pub base_image: Option<String>,
    /// The builder instance (`None` when reused).
    pub builder: Option<String>,
    /// Its copies: region -> AMI.
    pub copies: BTreeMap<String, String>,
    /// The run tagged on what it created.
    pub run: String,
    /// The stage's wall time.
    pub duration_secs: f64,
}

impl From<&BuildOutcome> for BuildReport {
    fn from(out: &BuildOutcome) -> Self {
        let image = out.release.image();
        BuildReport {
            ami: image.id.clone(),
            name: image.name.clone(),
            region: image.region.clone(),
            commit: out.release.commit().to_string(),
            reused: out.reused,
            base_image: out.base_image.clone(),
            builder: out.builder.clone(),
            copies: out
                .copies
                .iter()
                .map(|c| (c.region.clone(), c.id.clone()))
                .collect(),
            run: out.run.to_string(),
            duration_secs: secs(out.duration),
        }
    }
}

impl fmt::Display for BuildReport {
    /// Just the AMI id, for `AMI=$(pipeline build)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ami)
    }
}

impl Report for BuildReport {}

impl Session {
    /// Bakes (or reuses) the commit's AMI: one build of a commit at a time,
    /// a commit `pipeline test` passed (unless the gate is skipped, which
    /// the ledger records), after cleaning up what a killed build left.
    pub async fn build(&self, options: BuildOptions) -> Result<BuildReport> {
        let plan = BuildPlan::new(&self.config)?;
        let commit = options.commit;
        let spec = RunSpec {
            commit: Some(commit.clone()),
            // Two builds of one commit would bake it twice: one at a time.
            scopes: vec![format!("build-{}", commit.short())],
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Build)
        };
        let mut run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let result = async {
            let release = if options.skip_test_gate {
                tracing::warn!(
                    "the test gate is skipped (--skip-test-gate); the ledger records it"
                );
                run.note("test gate skipped (--skip-test-gate)");
                Release::vouched(&self.config.app, commit)
            } else {
                self.tracking.ledger.test_gate(commit).await?
            };
            self.recover(&mut run).await?;
            release
                .build(&plan, self.adapters.build(), run.id(), &self.interrupt)
                .await
        }
        .await;
        let outcome = run
            .finish(result, EventKind::Succeeded, |o| Details {
                ami: Some(o.release.image().id.clone()),
                ..Details::default()
            })
            .await?;
        Ok(BuildReport::from(&outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    #[test]
    fn the_json_fields_are_the_contract() {
        let report = BuildReport {
            ami: "ami-1".into(),
            name: "shop-0123".into(),
            region: "us-east-1".into(),
            commit: "c".into(),
            reused: true,
            base_image: None,
            builder: None,
            copies: BTreeMap::from([("eu-west-1".into(), "ami-2".into())]),
            run: "r".into(),
            duration_secs: 0.5,
        };
        assert_eq!(
            keys(&report),
            [
                "ami",
                "base_image",
                "builder",
                "commit",
                "copies",
                "duration_secs",
                "name",
                "ok",
                "region",
                "reused",
                "run"
            ]
        );
        assert_eq!(report.to_string(), "ami-1");
    }
}
