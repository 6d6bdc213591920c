//! The session: every command of the pipeline, with its safety, for the
//! `pipeline` binary and for programs that embed this crate alike.
//!
//! A [`Session`] is built once from a checked [`Config`], an `SdkConfig`
//! and the [`Actor`] (who runs it, from which CI job). It owns the AWS
//! adapters and the tracking (ledger, locks, webhooks), and has one async
//! method per command. Each method checks its options before its first
//! network call, then does what the CLI does, in the same order: the lock
//! (or the deploy queue), crash recovery after a takeover, the test gate,
//! the stage, the ledger entry and the events, and the lock's release on
//! every exit path. Each returns a typed report ([`Report`]): its JSON is
//! its `Serialize`, its text its `Display`.
//!
//! # Layout
//! - `report`: the [`Report`] trait and the `--output json` envelope.
//! - `test`, `build`, `deploy`, `task`, `promote` (and rollback), `status`
//!   (and history), `gc`, `unlock`: one command each, with its options
//!   and its report.
//! - `plan`: what `config check` prints, offline.

mod build;
mod deploy;
mod gc;
mod plan;
mod promote;
mod report;
mod status;
mod task;
mod test;
mod unlock;

pub use build::{BuildOptions, BuildReport};
pub use deploy::{
    DeployOptions, DeployReport, DeployTarget, DeployedReport, SupersededReport, TaskRun,
};
pub use gc::GcOptions;
pub use plan::PlanReport;
pub use promote::{PromoteOptions, RollbackOptions, WatchOptions};
pub use report::{Report, error_json, json};
pub use status::{HistoryOptions, HistoryReport, StatusOptions, StatusReport};
pub use task::{TaskOptions, TaskReport};
pub use test::{TestOptions, TestReport, test_unrecorded};
pub use unlock::{UnlockOptions, UnlockReport};

use crate::aws::Adapters;
use crate::config::Config;
use crate::error::Result;
use crate::ledger::Ledger;
use crate::notify::Notifier;
use crate::recovery;
use crate::release::{Built, Release, ReleaseRef};
use crate::run::{Actor, StageRun, Tracking};
use crate::wait::Interrupt;

/// One config's pipeline, ready to run commands.
#[derive(Debug)]
pub struct Session {
    config: Config,
    adapters: Adapters,
    tracking: Tracking,
    interrupt: Interrupt,
}

impl Session {
    /// A session for `config`, talking to AWS through `sdk`, run by
    /// `actor`; webhook secrets (`url_env`, `secret_header.env`) are read
    /// through `env`, and a missing one is bad input. Makes no network
    /// call. Ctrl-C and SIGTERM interrupt its commands (see
    /// [`Session::interrupted_by`]); call it inside a tokio runtime.
    pub fn new(
        config: Config,
        sdk: &aws_config::SdkConfig,
        actor: Actor,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Session> {
        let notifier = Notifier::new(&config.notify, env)?;
        let adapters = Adapters::new(sdk, &config);
        let tracking = Tracking {
            app: config.app.clone(),
            actor,
            notifier,
            ledger: Ledger::new(adapters.state(), &config.app),
            lock_ttl: config.state.lock_ttl,
        };
        Ok(Session {
            config,
            adapters,
            tracking,
            interrupt: Interrupt::on_signals(),
        })
    }

    /// The same session, its commands interrupted by `interrupt` instead
    /// of Ctrl-C and SIGTERM (an embedding program's own shutdown).
    pub fn interrupted_by(mut self, interrupt: Interrupt) -> Session {
        self.interrupt = interrupt;
        self
    }

    /// The config the session runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The built release `release` names, found by its tags.
    async fn built(&self, release: &ReleaseRef) -> Result<Release<Built>> {
        release
            .resolve(
                self.adapters.images(),
                &self.config.region,
                &self.config.app,
            )
            .await
    }

    /// Terminates the builder and task instances of the killed runs whose
    /// locks `run` took over, and notes it in the run's ledger entry.
    async fn recover(&self, run: &mut StageRun<'_>) -> Result<()> {
        let killed = run.taken_over();
        let cleaned =
            recovery::clean_up_after(self.adapters.instances(), &self.config.app, &killed).await?;
        if !cleaned.is_empty() {
            run.note(format!(
                "terminated {} left by the killed run {}",
                cleaned.join(", "),
                killed.join(", ")
            ));
        }
        Ok(())
    }
}

/// Seconds, to the millisecond, as the JSON reports them.
fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
