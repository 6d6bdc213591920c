//! `pipeline promote` and `rollback`: the blue/green flip and back, with
//! both slots locked.

use std::fmt;
use std::time::Duration;

use super::{Report, Session};
use crate::config::EventKind;
use crate::error::Result;
use crate::ledger::Outcome;
use crate::release::{Commit, short_commit};
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::stages::promote::{self, Flip, Foreign, PromotePlan, Watched};

/// Where to flip, and what must serve there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteOptions {
    /// The slot to make live (`None`: the one that is not live).
    pub to: Option<String>,
    /// The commit the slot must run on enough healthy instances.
    pub commit: Commit,
    /// Take over a record that points at neither slot (`--adopt`).
    pub adopt: bool,
    /// How long to wait for a run holding either slot's lock.
    pub lock_wait: Duration,
}

/// How to flip back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollbackOptions {
    /// How long to wait for a run holding either slot's lock.
    pub lock_wait: Duration,
}

impl fmt::Display for Flip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (true, None, Some(value)) = (self.changed, &self.commit, &self.adopted) {
            write!(
                f,
                "{} -> {value} again, as before {} took it over",
                self.record,
                self.from.as_deref().unwrap_or("a slot")
            )?;
        } else if self.changed {
            write!(
                f,
                "{} -> {} ({}), {} healthy instance(s) of {}; was {}",
                self.record,
                self.to,
                self.target,
                self.healthy,
                self.commit.as_deref().map(short_commit).unwrap_or("?"),
                self.from
                    .as_deref()
                    .or(self.adopted.as_deref())
                    .unwrap_or("nothing")
            )?;
        } else {
            write!(
                f,
                "{} is live already on {}: nothing changed",
                self.to, self.record
            )?;
        }
        if let Some(verdict) = &self.verdict {
            write!(f, "\nwatched: {verdict}")?;
        }
        Ok(())
    }
}

impl Report for Flip {}

/// What `pipeline watch` watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// How long (`None`: `promote.watch.for`).
    pub span: Option<std::time::Duration>,
    /// How long to wait for a promote or rollback holding the slots.
    pub lock_wait: std::time::Duration,
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} watched for {}s against {}: {}",
            self.live, self.secs, self.other, self.verdict
        )
    }
}

impl Report for Watched {}

impl Session {
    /// Points the public record at a slot once it runs the commit on
    /// enough healthy instances; see [`crate::stages::promote`].
    pub async fn promote(&self, options: PromoteOptions) -> Result<Flip> {
        let plan = self.promote_plan()?;
        let to = options
            .to
            .as_deref()
            .map(|name| plan.slot(name))
            .transpose()?;
        let spec = RunSpec {
            env: options.to.clone(),
            commit: Some(options.commit.clone()),
            scopes: plan.slots.to_vec(),
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Promote)
        };
        let run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let ports = self.adapters.promote(&plan);
        let foreign = if options.adopt {
            Foreign::Adopt
        } else {
            Foreign::Refuse
        };
        let result =
            promote::promote(&plan, &ports, to, &options.commit, foreign, &self.interrupt).await;
        run.finish(result, EventKind::Promoted, flip_details).await
    }

    /// Points the public record back at the other slot, which still runs
    /// the previous release.
    pub async fn rollback(&self, options: RollbackOptions) -> Result<Flip> {
        let plan = self.promote_plan()?;
        let spec = RunSpec {
            scopes: plan.slots.to_vec(),
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Rollback)
        };
        let run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let ports = self.adapters.promote(&plan);
        let result = async {
            // What the last promote took over, if it adopted a foreign record.
            let adopted = self
                .tracking
                .ledger
                .latest(Stage::Promote, Outcome::Promoted)
                .await?
                .map(|entry| entry.replaced)
                .filter(|replaced| !replaced.is_empty());
            promote::rollback(&plan, &ports, adopted, &self.interrupt).await
        }
        .await;
        run.finish(result, EventKind::RolledBack, flip_details)
            .await
    }

    /// Watches the live slot (`pipeline watch`): `promote.watch`'s checks
    /// for `span` (default its `for`), rolling back by itself on a failed
    /// one; see [`promote::watch_live`].
    pub async fn watch(&self, options: WatchOptions) -> Result<Watched> {
        let plan = self.promote_plan()?;
        let config = plan.watch.clone().ok_or_else(|| {
            crate::Error::Input(
                "the config has no promote.watch: give alarms or analysis to watch (docs/promote.md)".into(),
            )
        })?;
        let span = options.span.unwrap_or(config.window);
        if span.is_zero() {
            return Err(crate::Error::Input(
                "nothing to watch for: give --for, or promote.watch.for".into(),
            ));
        }
        let spec = RunSpec {
            scopes: plan.slots.to_vec(),
            lock_wait: options.lock_wait,
            ..RunSpec::new(Stage::Watch)
        };
        let run = StageRun::begin(&self.tracking, spec, &self.interrupt).await?;
        let ports = self.adapters.promote(&plan);
        let result = promote::watch_live(&plan, &ports, &config, span, &self.interrupt).await;
        run.finish(result, EventKind::Succeeded, |w| Details {
            env: Some(w.live.clone()),
            watch: Some(w.verdict.clone()),
            ..Details::default()
        })
        .await
    }

    pub(super) fn promote_plan(&self) -> Result<PromotePlan> {
        PromotePlan::new(&self.config)
    }
}

/// What a promote or rollback tells its ledger entry and webhooks.
fn flip_details(flip: &Flip) -> Details {
    Details {
        env: Some(flip.to.clone()),
        commit: flip.commit.clone(),
        // A slot that was live already: the ledger says nothing changed.
        outcome: (!flip.changed).then_some(Outcome::Unchanged),
        note: flip
            .adopted
            .as_ref()
            .map(|value| format!("the record pointed at {value}")),
        replaced: flip.replaced.clone(),
        watch: flip.verdict.clone(),
        ..Details::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    #[test]
    fn the_json_fields_are_the_contract() {
        let flip = Flip {
            record: "www.example.com".into(),
            from: Some("prod1".into()),
            to: "prod2".into(),
            target: "prod2-lb".into(),
            changed: true,
            change_ids: vec!["C1".into()],
            steps: vec![100],
            commit: Some("c".into()),
            healthy: 2,
            adopted: None,
            replaced: vec![],
            watch: None,
            verdict: None,
        };
        assert_eq!(
            keys(&flip),
            [
                "adopted",
                "change_ids",
                "changed",
                "commit",
                "from",
                "healthy",
                "ok",
                "record",
                "steps",
                "target",
                "to",
                "verdict",
                "watch"
            ]
        );
        assert_eq!(
            flip.to_string(),
            "www.example.com -> prod2 (prod2-lb), 2 healthy instance(s) of c; was prod1"
        );
    }
}
