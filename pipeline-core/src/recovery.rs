//! Crash recovery: what a killed run left that no later stage would notice.
//!
//! A run killed with SIGKILL (a CI job cancelled hard, a runner lost)
//! cannot clean up. Its lock stops being renewed and expires; the next run
//! of the same scope takes it over ([`crate::lock`]) and learns the killed
//! run's id ([`crate::run::StageRun::taken_over`]). [`clean_up_after`] then
//! finds that run's builder and task instances by their `pipeline:run` tag
//! and terminates them: they never serve traffic, and with the lock now
//! ours nothing else is using them.
//!
//! The rest converges on its own. A killed deploy's app instances are
//! sorted by the next deploy through balancer membership (the killed run
//! may have left its new fleet serving, so its run tag alone says nothing).
//! An AMI the killed build had started is adopted by the next build, which
//! waits for a pending image of its commit.

use crate::error::Result;
use crate::ports::{Instances, tag};

/// Terminates the builder and task instances of `app` left by the killed
/// runs `runs`; returns their ids. Two calls when there is something to
/// clean up, one when there is not, none without runs.
pub async fn clean_up_after(
    instances: &dyn Instances,
    app: &str,
    runs: &[String],
) -> Result<Vec<String>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let left: Vec<String> = instances
        .instances_of_runs(app, runs)
        .await?
        .into_iter()
        .filter(|i| i.role == tag::ROLE_BUILDER || i.role == tag::ROLE_TASK)
        .map(|i| i.id)
        .collect();
    if !left.is_empty() {
        tracing::warn!(
            "terminating what the killed run {} left: {}",
            runs.join(", "),
            left.join(", ")
        );
        instances.terminate(&left).await?;
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{AppInstance, MockInstances};

    fn instance(id: &str, role: &str) -> AppInstance {
        AppInstance {
            id: id.into(),
            role: role.into(),
            env: String::new(),
            launched_ms: 0,
            state: "running".into(),
            commit: "c".into(),
            run: "killed".into(),
            image_id: "ami-1".into(),
            artifact: String::new(),
        }
    }

    #[tokio::test]
    async fn terminates_the_killed_runs_builders_and_tasks_only() {
        let mut m = MockInstances::new();
        m.expect_instances_of_runs()
            .withf(|app, runs| app == "shop" && runs == ["killed".to_string()])
            .times(1)
            .returning(|_, _| {
                Ok(vec![
                    instance("i-builder", "builder"),
                    instance("i-task", "task"),
                    instance("i-serving", "app"),
                ])
            });
        m.expect_terminate()
            .withf(|ids| ids == ["i-builder".to_string(), "i-task".to_string()])
            .times(1)
            .returning(|_| Ok(()));
        let cleaned = clean_up_after(&m, "shop", &["killed".into()])
            .await
            .unwrap();
        assert_eq!(cleaned, ["i-builder", "i-task"]);
    }

    #[tokio::test]
    async fn nothing_left_is_one_call_and_no_runs_none() {
        let mut m = MockInstances::new();
        m.expect_instances_of_runs()
            .times(1)
            .returning(|_, _| Ok(vec![instance("i-serving", "app")]));
        m.expect_terminate().never();
        assert!(
            clean_up_after(&m, "shop", &["killed".into()])
                .await
                .unwrap()
                .is_empty()
        );

        let mut m = MockInstances::new();
        m.expect_instances_of_runs().never();
        assert!(clean_up_after(&m, "shop", &[]).await.unwrap().is_empty());
    }
}
