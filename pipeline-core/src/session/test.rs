//! `pipeline test`: run the project's tests for a commit; the verdict goes
//! in the ledger, where `build`'s test gate reads it.

use std::fmt;

use serde::Serialize;

use super::{Report, Session, secs};
use crate::config::EventKind;
use crate::error::{Error, Result};
use crate::ledger::Outcome;
use crate::release::{Commit, short_commit};
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::stages::test::{self, Output, TestOutcome};
use crate::wait::Interrupt;

/// What to test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOptions {
    /// The commit the verdict is recorded for.
    pub commit: Commit,
    /// The test command and its arguments.
    pub command: Vec<String>,
    /// Where the command's standard output goes (stderr keeps stdout for
    /// one JSON object).
    pub output: Output,
}

/// A test run's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestReport {
    /// The commit tested.
    pub commit: String,
    /// The command, as run.
    pub command: Vec<String>,
    /// Whether it passed (exit 0).
    pub passed: bool,
    /// Its exit code (`None`: a signal ended it).
    pub exit_code: Option<i32>,
    /// How long it ran.
    pub duration_secs: f64,
}

impl From<&TestOutcome> for TestReport {
    fn from(out: &TestOutcome) -> Self {
        TestReport {
            commit: out.commit.to_string(),
            command: out.command.clone(),
            passed: out.passed,
            exit_code: out.exit_code,
            duration_secs: secs(out.duration),
        }
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self
            .exit_code
            .map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}"));
        write!(
            f,
            "tests {} for {} in {:.1}s ({code})",
            if self.passed { "passed" } else { "failed" },
            short_commit(&self.commit),
            self.duration_secs
        )
    }
}

impl Report for TestReport {
    fn exit_code(&self) -> u8 {
        if self.passed { 0 } else { 1 }
    }
}

impl Session {
    /// Runs the tests and records the verdict (`passed` or `failed`) in
    /// the ledger, where `build`'s test gate reads it. A verdict that
    /// cannot be recorded is [`Error::NotRecorded`]: the state bucket is
    /// read first (one call), so that shows before the tests run.
    pub async fn test(&self, options: TestOptions) -> Result<TestReport> {
        if let Err(e) = self.tracking.ledger.verdict(&options.commit).await {
            return Err(Error::NotRecorded {
                commit: options.commit.to_string(),
                reason: e.to_string(),
            });
        }
        let spec = RunSpec {
            commit: Some(options.commit.clone()),
            ..RunSpec::new(Stage::Test)
        };
        let run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let result = test::run(
            options.commit,
            &options.command,
            options.output,
            &self.interrupt,
        )
        .await;
        let outcome = run
            .finish(result, EventKind::Succeeded, |o| Details {
                outcome: Some(if o.passed {
                    Outcome::Passed
                } else {
                    Outcome::Failed
                }),
                ..Details::default()
            })
            .await?;
        Ok(TestReport::from(&outcome))
    }
}

/// Runs the tests with no config to record the verdict in: `build` will
/// not find it.
pub async fn test_unrecorded(options: TestOptions, interrupt: &Interrupt) -> Result<TestReport> {
    let outcome = test::run(options.commit, &options.command, options.output, interrupt).await?;
    Ok(TestReport::from(&outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    #[test]
    fn the_json_fields_are_the_contract() {
        let report = TestReport {
            commit: "c".into(),
            command: vec!["make".into(), "test".into()],
            passed: false,
            exit_code: Some(2),
            duration_secs: 1.5,
        };
        assert_eq!(
            keys(&report),
            [
                "command",
                "commit",
                "duration_secs",
                "exit_code",
                "ok",
                "passed"
            ]
        );
        assert_eq!(report.exit_code(), 1);
        assert!(super::super::json(&report).contains("\"ok\":false"));
    }
}
