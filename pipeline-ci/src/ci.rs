//! Where a step runs: which CI system, who started it, the job's URL and
//! the branch, from each system's own variables (the commit is `commit`'s).

/// What the CI environment says about this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiContext {
    /// `circleci`, `github-actions`, `gitlab-ci`, `jenkins`, or `local`.
    pub system: &'static str,
    /// Who started the job, else the OS user.
    pub actor: Option<String>,
    /// A link to the job.
    pub job_url: Option<String>,
    /// The branch being built.
    pub branch: Option<String>,
}

/// Reads the context from the environment (`var`).
pub fn detect(var: impl Fn(&str) -> Option<String>) -> CiContext {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let mut context = system_context(&get);
    // A CI that does not say who started the job (Jenkins without the
    // build-user-vars plugin, say): the OS user the step runs as.
    if context.actor.is_none() {
        context.actor = get("USER")
            .or_else(|| get("LOGNAME"))
            .or_else(|| get("USERNAME"));
    }
    context
}

/// Who runs this step, as the CI says (else the OS user); a step that
/// changes AWS logs it, with the CI system, branch and job.
pub fn actor(step: Option<&str>) -> pipeline_core::run::Actor {
    let context = detect(|name| std::env::var(name).ok());
    if let Some(step) = step {
        tracing::info!(
            "{step} started by {} on {}{}{}",
            context.actor.as_deref().unwrap_or("an unknown user"),
            context.system,
            context
                .branch
                .as_deref()
                .map(|b| format!(" (branch {b})"))
                .unwrap_or_default(),
            context
                .job_url
                .as_deref()
                .map(|u| format!(": {u}"))
                .unwrap_or_default()
        );
    }
    pipeline_core::run::Actor {
        name: context.actor,
        job_url: context.job_url,
    }
}

fn system_context(get: &impl Fn(&str) -> Option<String>) -> CiContext {
    if get("CIRCLECI").is_some() {
        CiContext {
            system: "circleci",
            actor: get("CIRCLE_USERNAME"),
            job_url: get("CIRCLE_BUILD_URL"),
            branch: get("CIRCLE_BRANCH"),
        }
    } else if get("GITHUB_ACTIONS").is_some() {
        let job_url = match (
            get("GITHUB_SERVER_URL"),
            get("GITHUB_REPOSITORY"),
            get("GITHUB_RUN_ID"),
        ) {
            (Some(server), Some(repo), Some(run)) => {
                Some(format!("{server}/{repo}/actions/runs/{run}"))
            }
            _ => None,
        };
        CiContext {
            system: "github-actions",
            actor: get("GITHUB_ACTOR"),
            job_url,
            branch: get("GITHUB_REF_NAME"),
        }
    } else if get("GITLAB_CI").is_some() {
        CiContext {
            system: "gitlab-ci",
            actor: get("GITLAB_USER_LOGIN"),
            job_url: get("CI_JOB_URL"),
            branch: get("CI_COMMIT_REF_NAME"),
        }
    } else if get("JENKINS_URL").is_some() {
        CiContext {
            system: "jenkins",
            actor: get("BUILD_USER_ID"),
            job_url: get("BUILD_URL"),
            branch: get("BRANCH_NAME").or_else(|| get("GIT_BRANCH")),
        }
    } else {
        CiContext {
            system: "local",
            actor: None,
            job_url: None,
            branch: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn circleci() {
        let ci = detect(env(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_USERNAME", "ada"),
            ("CIRCLE_BUILD_URL", "https://circleci.com/gh/shop/web/42"),
            ("CIRCLE_BRANCH", "main"),
        ]));
        assert_eq!(ci.system, "circleci");
        assert_eq!(ci.actor.as_deref(), Some("ada"));
        assert_eq!(
            ci.job_url.as_deref(),
            Some("https://circleci.com/gh/shop/web/42")
        );
        assert_eq!(ci.branch.as_deref(), Some("main"));
    }

    #[test]
    fn github_actions_builds_the_run_url() {
        let ci = detect(env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "grace"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "shop/web"),
            ("GITHUB_RUN_ID", "7"),
            ("GITHUB_REF_NAME", "release"),
        ]));
        assert_eq!(ci.system, "github-actions");
        assert_eq!(ci.actor.as_deref(), Some("grace"));
        assert_eq!(
            ci.job_url.as_deref(),
            Some("https://github.com/shop/web/actions/runs/7")
        );
        assert_eq!(ci.branch.as_deref(), Some("release"));
    }

    #[test]
    fn gitlab_ci() {
        let ci = detect(env(&[
            ("GITLAB_CI", "true"),
            ("GITLAB_USER_LOGIN", "linus"),
            ("CI_JOB_URL", "https://gitlab.com/shop/web/-/jobs/9"),
            ("CI_COMMIT_REF_NAME", "main"),
        ]));
        assert_eq!(
            (ci.system, ci.actor.as_deref()),
            ("gitlab-ci", Some("linus"))
        );
        assert_eq!(
            ci.job_url.as_deref(),
            Some("https://gitlab.com/shop/web/-/jobs/9")
        );
    }

    #[test]
    fn jenkins_prefers_branch_name() {
        let ci = detect(env(&[
            ("JENKINS_URL", "https://ci.example.com/"),
            ("BUILD_USER_ID", "margaret"),
            ("BUILD_URL", "https://ci.example.com/job/web/3/"),
            ("GIT_BRANCH", "origin/main"),
            ("BRANCH_NAME", "main"),
        ]));
        assert_eq!(
            (ci.system, ci.actor.as_deref()),
            ("jenkins", Some("margaret"))
        );
        assert_eq!(ci.branch.as_deref(), Some("main"));
    }

    #[test]
    fn locally_the_os_user() {
        let ci = detect(env(&[("USER", "dev")]));
        assert_eq!(ci.system, "local");
        assert_eq!(ci.actor.as_deref(), Some("dev"));
        assert_eq!(ci.job_url, None);
        let ci = detect(env(&[("LOGNAME", "cron")]));
        assert_eq!(ci.actor.as_deref(), Some("cron"));
    }

    #[test]
    fn a_ci_that_does_not_say_who_falls_back_to_the_os_user() {
        let ci = detect(env(&[
            ("JENKINS_URL", "https://ci.example.com/"),
            ("USER", "jenkins"),
        ]));
        assert_eq!(
            (ci.system, ci.actor.as_deref()),
            ("jenkins", Some("jenkins"))
        );
        let ci = detect(env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "grace"),
            ("USER", "runner"),
        ]));
        assert_eq!(ci.actor.as_deref(), Some("grace"), "the CI's word first");
    }
}
