//! A stage run as the rest of the world sees it: who started it, from which
//! CI job, and the webhook events that bracket it.
//!
//! [`StageRun::begin`] sends `started` (in the background) and gives the run
//! its id; [`StageRun::finish`] sends `succeeded` (or `promoted`,
//! `rolled_back`) or `failed` with the duration and the error, then waits
//! for the deliveries still in flight, which are bounded by the webhooks'
//! own attempts and timeouts. Nothing here can fail a stage.

use tokio::time::Instant;

use crate::config::EventKind;
use crate::error::Result;
use crate::notify::{Event, Notifier};
use crate::release::RunId;

/// Who started a run, as the CI system tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The user (the CI's user variable, else the OS user).
    pub name: Option<String>,
    /// The CI job's URL.
    pub job_url: Option<String>,
}

/// One run of one stage, between its `started` and its last event.
#[derive(Debug)]
pub struct StageRun<'a> {
    notifier: &'a Notifier,
    app: String,
    stage: &'static str,
    env: Option<String>,
    commit: Option<String>,
    actor: Actor,
    id: RunId,
    started: Instant,
}

impl<'a> StageRun<'a> {
    /// Starts the run of `stage` and tells the webhooks (in the background).
    pub fn begin(
        notifier: &'a Notifier,
        app: &str,
        stage: &'static str,
        env: Option<&str>,
        commit: Option<&str>,
        actor: &Actor,
    ) -> Self {
        let run = StageRun {
            notifier,
            app: app.to_string(),
            stage,
            env: env.map(str::to_string),
            commit: commit.map(str::to_string),
            actor: actor.clone(),
            id: RunId::new(),
            started: Instant::now(),
        };
        notifier.send(&run.event(EventKind::Started, None, None));
        run
    }

    /// The run id, tagged on what the run creates.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// Ends the run with the stage's `result`: sends `success` (what a
    /// success is called: `succeeded`, `promoted`, `rolled_back`) with what
    /// `details` reads off the result (AMI, env, commit), or `failed` with
    /// the error; then waits for the deliveries in flight. Returns `result`.
    pub async fn finish<T>(
        mut self,
        result: Result<T>,
        success: EventKind,
        details: impl FnOnce(&T) -> Details,
    ) -> Result<T> {
        let event = match &result {
            Ok(value) => {
                let d = details(value);
                if d.env.is_some() {
                    self.env = d.env;
                }
                if d.commit.is_some() {
                    self.commit = d.commit;
                }
                self.event(success, d.ami, None)
            }
            Err(err) => self.event(EventKind::Failed, None, Some(err.to_string())),
        };
        self.notifier.send(&event);
        self.notifier.flush().await;
        result
    }

    fn event(&self, kind: EventKind, ami: Option<String>, error: Option<String>) -> Event {
        Event {
            event: kind,
            app: self.app.clone(),
            stage: self.stage.to_string(),
            env: self.env.clone(),
            commit: self.commit.clone(),
            ami,
            actor: self.actor.name.clone(),
            job_url: self.actor.job_url.clone(),
            outcome: kind.as_str().to_string(),
            duration_seconds: (kind != EventKind::Started)
                .then(|| self.started.elapsed().as_secs_f64()),
            error,
            run: self.id.to_string(),
        }
    }
}

/// What a finished stage tells about itself, for its last event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The AMI it built or deployed.
    pub ami: Option<String>,
    /// The environment or slot it acted on, if only known at the end.
    pub env: Option<String>,
    /// The commit, if only known at the end.
    pub commit: Option<String>,
}
