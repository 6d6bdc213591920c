//! `pipeline unlock`: a dead run's lock removed by hand, in the ledger.

use std::fmt;

use serde::Serialize;

use super::{Report, Session};
use crate::config::EventKind;
use crate::error::{Error, Result};
use crate::lock;
use crate::run::{Details, RunSpec, Stage, StageRun};
use crate::wait::Interrupt;

/// Which lock to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockOptions {
    /// Its scope: an environment, `gc`, or `build-<sha12>`.
    pub scope: String,
}

/// What `unlock` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnlockReport {
    /// The lock's scope.
    pub scope: String,
    /// The holder whose lock was removed, described (`None`: not locked).
    pub removed: Option<String>,
}

impl fmt::Display for UnlockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.removed {
            Some(holder) => write!(f, "{}: removed the lock of {holder}", self.scope),
            None => write!(f, "{}: not locked", self.scope),
        }
    }
}

impl Report for UnlockReport {}

impl Session {
    /// Removes the lock of `scope` whoever holds it; the ledger records
    /// whose it was.
    pub async fn unlock(&self, options: UnlockOptions) -> Result<UnlockReport> {
        let scope = &options.scope;
        let build = scope
            .strip_prefix("build-")
            .is_some_and(|sha| sha.len() == 12 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
        if !(build || scope == "gc" || self.config.environments.contains_key(scope)) {
            let known: Vec<&str> = self
                .config
                .environments
                .keys()
                .map(String::as_str)
                .collect();
            return Err(Error::Input(format!(
                "no lock {scope:?}: a lock belongs to an environment ({}), `gc`, or a build (`build-` and the commit's first 12 hex digits)",
                known.join(", ")
            )));
        }
        let spec = RunSpec {
            env: Some(options.scope.clone()),
            ..RunSpec::new(Stage::Unlock)
        };
        let mut run = StageRun::begin(&self.tracking, spec, &Interrupt::never()).await?;
        let removed = lock::unlock(
            &*self.tracking.ledger.store(),
            &self.config.app,
            &options.scope,
        )
        .await;
        if let Ok(Some(holder)) = &removed {
            run.note(format!("removed the lock of {}", holder.describe()));
        }
        let removed = run
            .finish(removed, EventKind::Succeeded, |_| Details::default())
            .await?;
        Ok(UnlockReport {
            scope: options.scope,
            removed: removed.map(|h| h.describe()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    #[test]
    fn the_json_fields_are_the_contract() {
        let report = UnlockReport {
            scope: "staging".into(),
            removed: None,
        };
        assert_eq!(keys(&report), ["ok", "removed", "scope"]);
        assert_eq!(report.to_string(), "staging: not locked");
    }
}
