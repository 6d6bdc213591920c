//! The one error type of pipeline-core.
//!
//! Every variant says what went wrong and what to do next. [`Error::kind`]
//! sorts them into the three outcomes the CLI contract maps to exit codes:
//! bad input (nothing was changed), a stage that failed safely, and a lock
//! held by another run.

use std::time::Duration;

/// Everything that can go wrong in a stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read or parsed, or a value in it is invalid.
    #[error("config {path}: {message}")]
    Config {
        /// The config file the problem is in.
        path: String,
        /// What is wrong and how to fix it; parse errors include line and column.
        message: String,
    },

    /// A command-line argument or a value derived from the CI environment is invalid.
    #[error("{0}")]
    Input(String),

    /// A value the config names does not exist in AWS (a base image, a subnet).
    /// Found before anything was created, so nothing was changed.
    #[error("{what} not found: {detail}")]
    NotFound {
        /// What was looked for, e.g. `base image`.
        what: String,
        /// What was searched and what to check.
        detail: String,
    },

    /// An AWS API call failed. Keeps the service's own error code and message.
    #[error("AWS {operation} failed: {code}: {message}")]
    Aws {
        /// The API operation, e.g. `RunInstances`.
        operation: &'static str,
        /// The service's error code, e.g. `InvalidAMIID.NotFound`.
        code: String,
        /// The service's error message.
        message: String,
    },

    /// A bounded wait ran out before the condition held.
    #[error("timed out after {}s waiting for {what}; last seen: {last_seen}", after.as_secs())]
    Timeout {
        /// What was awaited, e.g. `builder i-123 to power off`.
        what: String,
        /// The deadline that passed.
        after: Duration,
        /// The last observed state.
        last_seen: String,
    },

    /// The bake did not produce an image: the provisioning script failed or the
    /// builder ended in a state it should not.
    #[error("bake failed: {reason}")]
    BakeFailed {
        /// Why the bake failed.
        reason: String,
    },

    /// The commit has no AMI yet.
    #[error("commit {commit} was never built: run `pipeline build --commit {commit}` first")]
    NotBuilt {
        /// The commit that has no AMI, to build.
        commit: String,
    },

    /// A deploy could not bring the new fleet up; the old fleet still serves.
    #[error("deploy failed: {reason}")]
    DeployFailed {
        /// What went wrong with the new fleet (which instance, in which state).
        reason: String,
    },

    /// Promote or rollback refused to move traffic: the target slot is not
    /// ready, or the record changed under it. Nothing was changed.
    #[error("not promoted: {reason}")]
    GuardFailed {
        /// What the slot lacks (healthy instances of the commit), or what Route53 said.
        reason: String,
    },

    /// A release task ran and failed (or never reported how it ended). A
    /// deploy it belonged to was rolled back; the old fleet still serves.
    #[error("task {task} failed: {reason}")]
    TaskFailed {
        /// The task's name.
        task: String,
        /// Its exit status, or why there is none.
        reason: String,
    },

    /// Another run holds the lock this run needs; nothing was changed.
    #[error("{scope} is locked by {holder}; its lock expires in {}s unless renewed. Wait for it with --lock-timeout, or if that run is dead, `pipeline unlock --env {scope}`", expires_in.as_secs())]
    Locked {
        /// What is locked (an environment, `gc`, ...).
        scope: String,
        /// Who holds it, since when, from which job.
        holder: String,
        /// How long until the lock expires if its holder stops renewing it.
        expires_in: Duration,
    },

    /// The commit has no passing test record in the ledger (the test gate).
    #[error(
        "commit {commit} has no passing test record: run `pipeline test --commit {commit} -- <your test command>` first, or build with --skip-test-gate (which is recorded)"
    )]
    Untested {
        /// The commit that has no passing verdict, to test.
        commit: String,
    },

    /// The user's test command ran and failed.
    #[error("test command failed: {0}")]
    TestFailed(String),

    /// The run was interrupted (Ctrl-C or SIGTERM) and cleaned up after itself.
    #[error("interrupted; what this run created was cleaned up")]
    Interrupted,
}

/// Which exit the CLI takes for an error (see the CLI contract in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input or config; nothing was changed. Exit code 2.
    BadInput,
    /// The stage failed and left things safe. Exit code 1.
    Failed,
    /// Another run holds the lock. Exit code 3.
    Locked,
}

impl ErrorKind {
    /// The exit code the CLI contract gives it: 2 bad input, 1 failed
    /// safely, 3 locked.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadInput => 2,
            ErrorKind::Failed => 1,
            ErrorKind::Locked => 3,
        }
    }
}

impl Error {
    /// Sorts the error into an [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::Input(_) | Error::NotFound { .. } => ErrorKind::BadInput,
            Error::Aws { .. }
            | Error::Timeout { .. }
            | Error::BakeFailed { .. }
            | Error::NotBuilt { .. }
            | Error::DeployFailed { .. }
            | Error::GuardFailed { .. }
            | Error::TaskFailed { .. }
            | Error::Untested { .. }
            | Error::TestFailed(_)
            | Error::Interrupted => ErrorKind::Failed,
            Error::Locked { .. } => ErrorKind::Locked,
        }
    }

    /// A config error for `path`.
    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The AWS error code, if this is an AWS error.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The result type of pipeline-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_cli_contract() {
        assert_eq!(Error::config("p.yaml", "x").kind(), ErrorKind::BadInput);
        assert_eq!(Error::Input("x".into()).kind(), ErrorKind::BadInput);
        assert_eq!(Error::Interrupted.kind(), ErrorKind::Failed);
        let aws = Error::Aws {
            operation: "RunInstances",
            code: "InvalidParameterValue".into(),
            message: "bad".into(),
        };
        assert_eq!(aws.kind(), ErrorKind::Failed);
        assert_eq!(aws.aws_code(), Some("InvalidParameterValue"));
        assert_eq!(
            aws.to_string(),
            "AWS RunInstances failed: InvalidParameterValue: bad"
        );
    }

    #[test]
    fn timeout_says_what_it_waited_for() {
        let e = Error::Timeout {
            what: "builder i-1 to power off".into(),
            after: Duration::from_secs(90),
            last_seen: "running".into(),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 90s waiting for builder i-1 to power off; last seen: running"
        );
    }
}
