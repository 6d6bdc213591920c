//! `pipeline build`: bake the commit's AMI, with the commit's build in it,
//! or reuse it, behind the test gate.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{Report, Session, secs};
use crate::artifact::Artifact;
use crate::config::EventKind;
use crate::error::{Error, Result};
use crate::ledger::ArtifactRecord;
use crate::release::{Commit, Release};
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::stages::build::{BuildInput, BuildOutcome, BuildPlan};

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
    /// The commit's build (`--artifact`), instead of `build.artifact`.
    pub artifact: Option<PathBuf>,
    /// Bake anew although the commit has an AMI (`--rebake`).
    pub rebake: bool,
}

/// The artifact a build baked, or found baked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactReport {
    /// Its hex SHA-256.
    pub sha256: String,
    /// Its size in bytes, packed.
    pub size: u64,
    /// Its object: `s3://bucket/key`.
    pub object: String,
    /// Whether this run uploaded it.
    pub uploaded: bool,
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
    /// This run's artifact, if it had one.
    pub artifact: Option<ArtifactReport>,
    /// The artifact digest the AMI carries (`pipeline:artifact-sha256`):
    /// another than `artifact`'s when a reused AMI was baked from another build.
    pub artifact_sha256: Option<String>,
    /// The run tagged on what it created.
    pub run: String,
    /// The stage's wall time.
    pub duration_secs: f64,
}

impl BuildReport {
    fn new(out: &BuildOutcome, bucket: &str, key_prefix: &str) -> Self {
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
            artifact: out.artifact.as_ref().map(|a| ArtifactReport {
                sha256: a.sha256.clone(),
                size: a.size,
                object: format!("s3://{bucket}/{key_prefix}{}", a.key),
                uploaded: a.uploaded,
            }),
            artifact_sha256: out.baked_from.clone(),
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

/// What the ledger keeps of the AMI's artifact: the digest the AMI carries,
/// and this run's when that differs.
fn provenance(out: &BuildOutcome) -> Option<ArtifactRecord> {
    let ours = out.artifact.as_ref();
    let baked = out.baked_from.as_ref().or(ours.map(|a| &a.sha256))?;
    let same = ours.filter(|a| &a.sha256 == baked);
    Some(ArtifactRecord {
        sha256: baked.clone(),
        size: same.map(|a| a.size),
        this_run: ours
            .filter(|a| &a.sha256 != baked)
            .map(|a| a.sha256.clone()),
    })
}

impl Session {
    /// Bakes (or reuses) the commit's AMI: one build of a commit at a time,
    /// a commit `pipeline test` passed (unless the gate is skipped, which
    /// the ledger records), after cleaning up what a killed build left.
    pub async fn build(&self, options: BuildOptions) -> Result<BuildReport> {
        let plan = BuildPlan::new(&self.config)?;
        let artifact = self.pack_artifact(options.artifact).await?;
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
            let input = BuildInput {
                artifact: artifact.as_ref(),
                rebake: options.rebake,
            };
            if options.rebake {
                run.note("rebaked (--rebake)");
            }
            release
                .build(
                    &plan,
                    self.adapters.build(),
                    input,
                    run.id(),
                    &self.interrupt,
                )
                .await
        }
        .await;
        let outcome = run
            .finish(result, EventKind::Succeeded, |o| Details {
                ami: Some(o.release.image().id.clone()),
                artifact: provenance(o),
                ..Details::default()
            })
            .await?;
        let state = &self.config.state;
        Ok(BuildReport::new(&outcome, &state.bucket, &state.key_prefix))
    }

    /// Packs `--artifact`, else `build.artifact`, before any call: a missing
    /// or empty path, or one over the limit, is bad input.
    async fn pack_artifact(&self, flag: Option<PathBuf>) -> Result<Option<Artifact>> {
        let (path, what) = match flag {
            Some(path) => (path, "--artifact"),
            None => match &self.config.build.artifact {
                Some(path) => (path.clone(), "build.artifact"),
                None => return Ok(None),
            },
        };
        let limit = self.config.build.artifact_limit;
        let packed = tokio::task::spawn_blocking(move || Artifact::pack(&path, what, limit))
            .await
            .map_err(|e| Error::Input(format!("{what}: packing failed: {e}")))??;
        tracing::info!(
            "artifact {} packed from {} ({})",
            packed.sha256,
            packed.source.display(),
            crate::config::format_size(packed.size)
        );
        Ok(Some(packed))
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
            artifact: Some(ArtifactReport {
                sha256: "ab".into(),
                size: 3,
                object: "s3://b/artifacts/shop/c/ab.tar.gz".into(),
                uploaded: true,
            }),
            artifact_sha256: Some("ab".into()),
            run: "r".into(),
            duration_secs: 0.5,
        };
        assert_eq!(
            keys(&report),
            [
                "ami",
                "artifact",
                "artifact_sha256",
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
