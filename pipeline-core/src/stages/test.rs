//! Test: run the project's test command for a commit and report the verdict.
//!
//! The command's output streams through as it runs. A commit whose command
//! exits 0 becomes a [`Release<Tested>`], the only kind that can be built.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::error::{Error, Result};
use crate::release::{Commit, Release, Tested};
use crate::wait::Interrupt;

/// Where the test command's standard output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To our standard output (text mode).
    Stdout,
    /// To our standard error, keeping stdout for the one JSON result.
    Stderr,
}

/// The verdict of one test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// The commit tested.
    pub commit: Commit,
    /// The command, as run.
    pub command: Vec<String>,
    /// Its exit code (`None` if a signal ended it).
    pub exit_code: Option<i32>,
    /// Whether it passed.
    pub passed: bool,
    /// How long it ran.
    pub duration: Duration,
}

impl TestOutcome {
    /// The release that may now be built, if the tests passed.
    pub fn release(&self, app: &str) -> Option<Release<Tested>> {
        self.passed
            .then(|| Release::vouched(app, self.commit.clone()))
    }
}

/// Runs `command` for `commit`, streaming its output, until it exits or
/// `interrupt` fires (then it is killed and [`Error::Interrupted`] returned).
/// A command that cannot be started is bad input.
pub async fn run(
    commit: Commit,
    command: &[String],
    output: Output,
    interrupt: &Interrupt,
) -> Result<TestOutcome> {
    let (program, args) = command.split_first().ok_or_else(|| {
        Error::Input("no test command; give it after --, e.g. `pipeline test -- make test`".into())
    })?;
    let stdout = match output {
        Output::Stdout => Stdio::inherit(),
        Output::Stderr => stderr_handle()?,
    };
    let started = Instant::now();
    tracing::info!("testing {commit}: {}", command.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Input(format!("cannot run test command `{program}`: {e}")))?;
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| Error::Input(format!("test command `{program}`: {e}")))?,
        _ = interrupt.fired_wait() => {
            let _ = child.kill().await;
            return Err(Error::Interrupted);
        }
    };
    let outcome = TestOutcome {
        commit,
        command: command.to_vec(),
        exit_code: status.code(),
        passed: status.success(),
        duration: started.elapsed(),
    };
    tracing::info!(
        "tests {} in {:.1}s",
        if outcome.passed { "passed" } else { "failed" },
        outcome.duration.as_secs_f64()
    );
    Ok(outcome)
}

#[cfg(unix)]
fn stderr_handle() -> Result<Stdio> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::Input(format!("cannot pass stderr to the test command: {e}")))?;
    Ok(Stdio::from(fd))
}

#[cfg(not(unix))]
fn stderr_handle() -> Result<Stdio> {
    Ok(Stdio::inherit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn passing_command_yields_a_tested_release() {
        let out = run(
            SHA.parse().unwrap(),
            &sh("exit 0"),
            Output::Stderr,
            &Interrupt::never(),
        )
        .await
        .unwrap();
        assert!(out.passed);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.release("shop").unwrap().commit().as_str(), SHA);
    }

    #[tokio::test]
    async fn failing_command_is_reported_not_built() {
        let out = run(
            SHA.parse().unwrap(),
            &sh("exit 7"),
            Output::Stderr,
            &Interrupt::never(),
        )
        .await
        .unwrap();
        assert!(!out.passed);
        assert_eq!(out.exit_code, Some(7));
        assert!(out.release("shop").is_none());
    }

    #[tokio::test]
    async fn missing_program_is_bad_input() {
        let cmd = vec!["/nonexistent/pipeline-test-cmd".to_string()];
        let err = run(
            SHA.parse().unwrap(),
            &cmd,
            Output::Stderr,
            &Interrupt::never(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::BadInput);
        let err = run(
            SHA.parse().unwrap(),
            &[],
            Output::Stderr,
            &Interrupt::never(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("pipeline test -- make test"));
    }

    #[tokio::test]
    async fn interrupt_kills_the_command() {
        let (trigger, interrupt) = Interrupt::manual();
        let started = Instant::now();
        let command = sh("sleep 30");
        let run = run(SHA.parse().unwrap(), &command, Output::Stderr, &interrupt);
        let fire = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.fire();
        };
        let (result, ()) = tokio::join!(run, fire);
        assert!(matches!(result.unwrap_err(), Error::Interrupted));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
