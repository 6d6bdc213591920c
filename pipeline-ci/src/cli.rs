//! The command line: what `pipeline --help` shows.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

/// Immutable-AMI delivery for AWS: test a commit, bake its AMI, deploy it,
/// flip traffic between two production slots.
///
/// Exit codes: 0 done; 1 the stage failed and left things safe;
/// 2 bad input or config, nothing was changed.
/// AWS settings come from the standard chain (env, profiles, SSO, instance
/// role); AWS_ENDPOINT_URL is honoured.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, max_term_width = 100)]
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
        /// The test command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Bake the commit's AMI, or reuse the one already baked for it.
    Build {
        /// The commit to bake [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long)]
        commit: Option<String>,
    },
    /// Swap fresh instances of the commit's AMI in behind an environment's
    /// balancer; the old ones leave only once every new one is healthy.
    Deploy {
        /// The environment, as named under `environments` in the config.
        #[arg(long, value_name = "NAME")]
        env: String,
        /// The commit whose AMI to deploy [default: the CI's commit variable, then `git rev-parse HEAD`].
        #[arg(long, conflicts_with = "ami")]
        commit: Option<String>,
        /// Deploy this AMI (one `pipeline build` made) instead of looking it up by commit.
        #[arg(long, value_name = "ID")]
        ami: Option<String>,
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
    },
    /// Point the public record back at the other slot (it must still be healthy).
    Rollback,
    /// Show what each environment runs, how healthy it is, and which slot is live.
    Status,
    /// Print the least-privilege IAM policy the configured stages need
    /// (offline: reads only the config).
    IamPolicy,
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
            Command::Rollback => Some("rollback"),
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
