//! The command line: what `pipeline --help` shows.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use pipeline_core::config::parse_duration;

/// `pipeline --version`: the version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PIPELINE_BUILD_COMMIT"),
    ")"
);

/// Immutable-AMI delivery for AWS: test a commit, bake its AMI, deploy it,
/// flip traffic between two production slots.
///
/// Exit codes: 0 done; 1 the stage failed and left things safe;
/// 2 bad input or config, nothing was changed; 3 another run holds the
/// environment's lock.
/// AWS settings come from the standard chain (env, profiles, SSO, instance
/// role); AWS_ENDPOINT_URL is honoured.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version = VERSION, max_term_width = 100)]
pub struct Cli {
    /// The pipeline config file.
    #[arg(
        long,
        global = true,
        default_value = "pipeline.yaml",
        env = "PIPELINE_CONFIG"
    )]
    pub config: PathBuf,

    /// How to print the result on stdout; progress always goes to stderr.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// More progress detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--lock-timeout`, on the commands that take a lock.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LockWait {
    /// How long to wait for a lock another run holds (e.g. 10m); 0 fails at
    /// once with exit code 3. A waiting deploy is superseded (exit 0) when
    /// a newer one queues behind it.
    #[arg(long = "lock-timeout", value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// Which production slot `deploy --slot` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlotChoice {
    /// The slot the public record does not point at (with none live, the first).
    Idle,
}

/// The result format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human line (for `build`, just the AMI id).
    Text,
    /// Exactly one JSON object.
    Json,
}

/// The stages.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the project's test command for a commit; exit 0 if it passes, 1 if not.
    Test {
        /// The commit under test [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long)]
        commit: Option<String>,
        /// Run the tests without recording the verdict (no config, no AWS):
        /// `pipeline build` will refuse the commit.
        #[arg(long)]
        no_record: bool,
        /// The test command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Bake the commit's AMI, or reuse the one already baked for it.
    Build {
        /// The commit to bake [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long)]
        commit: Option<String>,
        /// Bake even though `pipeline test` recorded no pass for the commit (recorded in the ledger).
        #[arg(long)]
        skip_test_gate: bool,
        /// The commit's build to bake in (a directory, a tarball or a file),
        /// instead of `build.artifact`.
        #[arg(long, value_name = "PATH")]
        artifact: Option<std::path::PathBuf>,
        /// Bake anew although the commit has an AMI (the old one is left to gc).
        #[arg(long)]
        rebake: bool,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Swap fresh instances of the commit's AMI in behind an environment's
    /// balancer; the old ones leave only once every new one is healthy.
    #[command(group = clap::ArgGroup::new("target").required(true).args(["env", "slot"]))]
    Deploy {
        /// The environment, as named under `environments` in the config.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        /// `idle`: the production slot the public record does not point at.
        #[arg(long, value_enum)]
        slot: Option<SlotChoice>,
        /// Deploy into the slot that takes the traffic now (not blue/green;
        /// recorded in the ledger).
        #[arg(long)]
        allow_live: bool,
        /// The commit whose AMI to deploy [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long, conflicts_with = "ami")]
        commit: Option<String>,
        /// Deploy this AMI (one `pipeline build` made) instead of looking it up by commit.
        #[arg(long, value_name = "ID")]
        ami: Option<String>,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Run one of an environment's release tasks by hand, on a one-shot
    /// instance from the commit's AMI with the environment's settings.
    Task {
        /// The environment whose task it is.
        #[arg(long, value_name = "NAME")]
        env: String,
        /// The commit whose AMI runs the task [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long, conflicts_with = "ami")]
        commit: Option<String>,
        /// Run it on this AMI (one `pipeline build` made) instead.
        #[arg(long, value_name = "ID")]
        ami: Option<String>,
        /// The task, as named under `environments.NAME.tasks`.
        name: String,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Point the public record at a production slot, once it runs the commit
    /// on enough healthy instances (one atomic Route53 change).
    Promote {
        /// The slot to make live [default: the one that is not live].
        #[arg(long, value_name = "SLOT")]
        to: Option<String>,
        /// The commit the slot must run [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long)]
        commit: Option<String>,
        /// Take over a record that points at neither slot (an old server);
        /// the ledger keeps its value, so rollback can return to it.
        #[arg(long)]
        adopt: bool,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Point the public record back at the other slot (it must still be healthy).
    Rollback {
        #[command(flatten)]
        lock: LockWait,
    },
    /// Watch the live slot against the other on CloudWatch (`promote.watch`)
    /// after an earlier promote; a failed check rolls back by itself.
    Watch {
        /// How long [default: promote.watch.for].
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        span: Option<std::time::Duration>,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Show what each environment runs, how healthy it is, and which slot is live.
    Status {
        /// Also write a one-page HTML dashboard (with the last ledger events) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
    },
    /// Print the audit ledger: who ran which stage, where, when, how it ended.
    History {
        /// Only this environment's entries.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        /// How many entries, newest first.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// Remove an environment's lock by hand (when its holder is dead); recorded in the ledger.
    Unlock {
        /// The environment (or `gc`, `build-<sha12>`) whose lock to remove.
        #[arg(long, value_name = "NAME")]
        env: String,
    },
    /// Deregister old AMIs of this app (and their snapshots) beyond the newest N,
    /// never one in use; terminate orphaned builder and task instances.
    Gc {
        /// How many of the newest AMIs to keep, besides those in use.
        #[arg(long, value_name = "N", default_value_t = 5)]
        keep: usize,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Print the least-privilege IAM policy the configured stages need
    /// (offline: reads only the config).
    IamPolicy {
        /// `instances`: the policy of the instances' own role instead (the
        /// secrets they read at boot, the verdict a task tags itself with).
        #[arg(long, value_enum, default_value = "pipeline")]
        role: PolicyRole,
    },
    /// Work with the config file offline.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a shell completion script, e.g. `pipeline completions bash > /etc/bash_completion.d/pipeline`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The stage a command runs, for the commands that change AWS.
    pub fn stage(&self) -> Option<&'static str> {
        match self {
            Command::Build { .. } => Some("build"),
            Command::Deploy { .. } => Some("deploy"),
            Command::Task { .. } => Some("task"),
            Command::Promote { .. } => Some("promote"),
            Command::Rollback { .. } => Some("rollback"),
            Command::Watch { .. } => Some("watch"),
            Command::Gc { .. } => Some("gc"),
            Command::Unlock { .. } => Some("unlock"),
            _ => None,
        }
    }
}

/// `pipeline config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the config without touching AWS and print the plan it resolves to
    /// (exit 0 if valid, 2 with what to fix if not).
    Check,
    /// Print the JSON Schema of pipeline.yaml, for editors (e.g. the YAML
    /// language server's `# yaml-language-server: $schema=...`).
    Schema,
}

/// Whose IAM policy `iam-policy` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyRole {
    /// The role CI runs `pipeline` with.
    Pipeline,
    /// The instance profile's role of the app and task instances.
    Instances,
}
