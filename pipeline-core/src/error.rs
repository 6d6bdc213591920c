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
    #[error("AWS {operation} on {resource} failed: {code}: {message}")]
    Aws {
        /// The API operation, e.g. `RunInstances`.
        operation: &'static str,
        /// What it acted on (`instance i-1`, `s3://bucket/key`), so the
        /// user knows where to look.
        resource: String,
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

    /// A deploy in batches (`max_surge`) stopped part-way: the batches
    /// already swapped in serve beside the old instances not yet taken
    /// out; what the batch in progress launched was removed. Re-running
    /// the deploy finishes it.
    #[error(
        "deploy to {env} stopped in batch {batch}/{batches}: {cause}. {env} now serves {new} instance(s) of the new release and {old} of the old one{}; re-run the deploy to finish it (it replaces every serving instance)",
        undone_text(*batch, *undone)
    )]
    PartlyDeployed {
        /// The environment, half on the new release.
        env: String,
        /// The batch that failed, counted from 1.
        batch: u32,
        /// How many batches the deploy had.
        batches: u32,
        /// How many new instances serve (the batches before `batch`).
        new: usize,
        /// How many old instances still serve.
        old: usize,
        /// How many new instances of the failed batch were removed.
        undone: usize,
        /// What stopped the batch.
        cause: Box<Error>,
    },

    /// Promote or rollback refused to move traffic: the target slot is not
    /// ready, or the record changed under it. Nothing was changed.
    #[error("not promoted: {reason}")]
    GuardFailed {
        /// What the slot lacks (healthy instances of the commit), or what Route53 said.
        reason: String,
    },

    /// The watch of a promote saw the release go wrong (an alarm, or the
    /// target slot's metrics against the other's) and put all traffic back
    /// on `to`, the slot that served before.
    #[error("rolled back to {to}: {reason}")]
    RolledBack {
        /// The slot the release went to, which no longer serves.
        from: String,
        /// The slot that serves again.
        to: String,
        /// Which alarm, or which metric with both slots' values.
        reason: String,
    },

    /// The watch of a promote failed and there was no slot to put the
    /// traffic back on (a first promote), so it stays where it is.
    #[error("the watch failed: {reason}; nothing to roll back to, the traffic stays")]
    WatchFailed {
        /// Which alarm, or which metric with both slots' values.
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

    /// A deploy into the slot that takes the traffic now: that is not
    /// blue/green. Nothing was changed.
    #[error(
        "{slot} is the live slot ({record} points at it): deploy to the idle slot with `--slot idle`, or pass --allow-live to swap the fleet that takes the traffic (recorded in the ledger)"
    )]
    LiveSlot {
        /// The live slot asked for.
        slot: String,
        /// The public record that points at it.
        record: String,
    },

    /// The public record points at neither slot (a team's old server, say):
    /// promote does not take it over unasked. Nothing was changed.
    #[error(
        "{record} points at {value}, which is neither {} nor {}: pass --adopt to take the record over (the ledger keeps its value, so rollback can return to it)",
        slots[0], slots[1]
    )]
    ForeignRecord {
        /// The record.
        record: String,
        /// What it points at now, as Route53 has it.
        value: String,
        /// The two slots.
        slots: [String; 2],
    },

    /// The test verdict could not be recorded, so `build` would refuse
    /// the commit.
    #[error(
        "the test verdict for {commit} cannot be recorded ({reason}), so `pipeline build` would refuse the commit; fix the credentials or state.bucket, or run with --no-record for a local run"
    )]
    NotRecorded {
        /// The commit tested.
        commit: String,
        /// Why the state bucket could not be written.
        reason: String,
    },
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

impl Error {
    /// The stable machine name of the error, `kind` in `--output json`
    /// (docs/ci.md lists them).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::Input(_) => "bad_argument",
            Error::NotFound { .. } => "not_found",
            Error::Aws { .. } => "aws",
            Error::Timeout { .. } => "timeout",
            Error::BakeFailed { .. } => "bake_failed",
            Error::NotBuilt { .. } => "never_built",
            Error::DeployFailed { .. } => "deploy_failed",
            Error::PartlyDeployed { .. } => "partly_deployed",
            Error::GuardFailed { .. } => "guard_refused",
            Error::RolledBack { .. } => "rolled_back",
            Error::WatchFailed { .. } => "watch_failed",
            Error::TaskFailed { .. } => "task_failed",
            Error::Locked { .. } => "lock_held",
            Error::Untested { .. } => "untested",
            Error::TestFailed(_) => "test_failed",
            Error::Interrupted => "interrupted",
            Error::LiveSlot { .. } => "live_slot",
            Error::ForeignRecord { .. } => "foreign_record",
            Error::NotRecorded { .. } => "not_recorded",
        }
    }
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
            Error::Config { .. }
            | Error::Input(_)
            | Error::NotFound { .. }
            | Error::LiveSlot { .. }
            | Error::ForeignRecord { .. }
            | Error::NotRecorded { .. } => ErrorKind::BadInput,
            Error::Aws { .. }
            | Error::Timeout { .. }
            | Error::BakeFailed { .. }
            | Error::NotBuilt { .. }
            | Error::DeployFailed { .. }
            | Error::PartlyDeployed { .. }
            | Error::GuardFailed { .. }
            | Error::RolledBack { .. }
            | Error::WatchFailed { .. }
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

    /// Whether this is an AWS error that a later try may not meet: a
    /// throttle, a fault on AWS's side, or a lost connection. The SDK has
    /// already retried the call; a wait takes it as "not yet" and looks
    /// again at its next check.
    pub fn is_transient(&self) -> bool {
        self.aws_code().is_some_and(is_transient_code)
    }
}

/// The error codes AWS services answer when they throttle (each service
/// spells it its own way) or fail on their side, and the codes
/// [`crate::aws`] gives a call whose answer never came.
pub const TRANSIENT_CODES: &[&str] = &[
    // Throttling: EC2, most query services, S3, Route53, JSON services.
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    // Faults on AWS's side.
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    // No answer.
    "NoConnection",
    "RequestTimeout",
    "BadResponse",
];

/// EC2's answer to a RunInstances when the subnet's availability zone has
/// no capacity of the instance type right now (an HTTP 500).
pub const NO_CAPACITY_CODE: &str = "InsufficientInstanceCapacity";

/// EC2's answers to a RunInstances that would exceed the account's quota.
pub const QUOTA_CODES: [&str; 2] = ["InstanceLimitExceeded", "VcpuLimitExceeded"];

/// Whether `code` is one of [`TRANSIENT_CODES`].
pub fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// What [`Error::PartlyDeployed`] says of the failed batch's instances.
fn undone_text(batch: u32, undone: usize) -> String {
    if undone == 0 {
        String::new()
    } else {
        format!(" (batch {batch}'s {undone} new instance(s) were removed)")
    }
}

/// The result type of pipeline-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> Error {
        Error::Aws {
            operation: "RunInstances",
            resource: "2 instance(s) of ami-1".into(),
            code: "InvalidParameterValue".into(),
            message: "bad".into(),
        }
    }

    /// One of every error, with the kind and exit code the CLI contract
    /// (docs/ci.md) gives it.
    fn every_error() -> Vec<(Error, &'static str, u8)> {
        let timeout = Error::Timeout {
            what: "x".into(),
            after: Duration::from_secs(1),
            last_seen: "y".into(),
        };
        let slots = ["prod1".to_string(), "prod2".to_string()];
        vec![
            (Error::config("p.yaml", "x"), "config", 2),
            (Error::Input("x".into()), "bad_argument", 2),
            (
                Error::NotFound {
                    what: "base image".into(),
                    detail: "x".into(),
                },
                "not_found",
                2,
            ),
            (aws(), "aws", 1),
            (timeout, "timeout", 1),
            (Error::BakeFailed { reason: "x".into() }, "bake_failed", 1),
            (Error::NotBuilt { commit: "c".into() }, "never_built", 1),
            (
                Error::DeployFailed { reason: "x".into() },
                "deploy_failed",
                1,
            ),
            (
                Error::PartlyDeployed {
                    env: "prod".into(),
                    batch: 2,
                    batches: 3,
                    new: 2,
                    old: 3,
                    undone: 2,
                    cause: Box::new(Error::Interrupted),
                },
                "partly_deployed",
                1,
            ),
            (
                Error::GuardFailed { reason: "x".into() },
                "guard_refused",
                1,
            ),
            (
                Error::RolledBack {
                    from: "prod2".into(),
                    to: "prod1".into(),
                    reason: "x".into(),
                },
                "rolled_back",
                1,
            ),
            (Error::WatchFailed { reason: "x".into() }, "watch_failed", 1),
            (
                Error::TaskFailed {
                    task: "t".into(),
                    reason: "x".into(),
                },
                "task_failed",
                1,
            ),
            (
                Error::Locked {
                    scope: "s".into(),
                    holder: "h".into(),
                    expires_in: Duration::ZERO,
                },
                "lock_held",
                3,
            ),
            (Error::Untested { commit: "c".into() }, "untested", 1),
            (Error::TestFailed("x".into()), "test_failed", 1),
            (Error::Interrupted, "interrupted", 1),
            (
                Error::LiveSlot {
                    slot: "prod2".into(),
                    record: "www".into(),
                },
                "live_slot",
                2,
            ),
            (
                Error::ForeignRecord {
                    record: "www".into(),
                    value: "old-box".into(),
                    slots,
                },
                "foreign_record",
                2,
            ),
            (
                Error::NotRecorded {
                    commit: "c".into(),
                    reason: "x".into(),
                },
                "not_recorded",
                2,
            ),
        ]
    }

    #[test]
    fn every_error_has_a_stable_kind_and_one_exit_code() {
        let all = every_error();
        for (err, kind, code) in &all {
            assert_eq!(err.kind_name(), *kind, "{err}");
            assert_eq!(err.kind().exit_code(), *code, "{err}");
        }
        let mut kinds: Vec<&str> = all.iter().map(|(_, k, _)| *k).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len(), "kinds are distinct");
        let documented = include_str!("../../docs/ci.md");
        for kind in kinds {
            assert!(
                documented.contains(&format!("`{kind}`")),
                "docs/ci.md names {kind}"
            );
        }
    }

    #[test]
    fn an_aws_error_names_the_call_and_the_resource() {
        let err = aws();
        assert_eq!(err.aws_code(), Some("InvalidParameterValue"));
        assert_eq!(
            err.to_string(),
            "AWS RunInstances on 2 instance(s) of ami-1 failed: InvalidParameterValue: bad"
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
