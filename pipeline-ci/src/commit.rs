//! Which commit a step is about: `--commit`, else the CI's own variable,
//! else `git rev-parse HEAD`.
//!
//! The rule, the same for every command: a commit is given as its full
//! 40-hex SHA, or as an abbreviation (4 to 39 hex digits) that git resolves
//! in the working directory's checkout. It is recorded and printed in JSON
//! in full, and shown in text by its first 12 hex digits.

use pipeline_core::release::{Commit, ReleaseRef};
use pipeline_core::{Error, Result};

/// CI variables that carry the commit SHA, in the order they are tried:
/// CircleCI, Jenkins, GitHub Actions, GitLab CI.
pub const COMMIT_VARIABLES: [&str; 4] =
    ["CIRCLE_SHA1", "GIT_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA"];

/// Resolves the commit from the flag, the environment (`var`) or git.
pub fn resolve(flag: Option<&str>, var: impl Fn(&str) -> Option<String>) -> Result<Commit> {
    if let Some(sha) = flag {
        return sha.parse().or_else(|err| match abbreviation(sha) {
            Some(abbr) => expand(abbr),
            None => Err(err),
        });
    }
    for name in COMMIT_VARIABLES {
        if let Some(sha) = var(name).filter(|v| !v.trim().is_empty()) {
            return sha.parse().map_err(|_| {
                Error::Input(format!(
                    "${name} is {sha:?}, not a full 40-hex SHA; pass --commit"
                ))
            });
        }
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .map_err(|e| {
            Error::Input(format!(
                "no commit given and git could not be run ({e}); pass --commit"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Input(
            "no commit given: pass --commit SHA, set one of CIRCLE_SHA1, GIT_COMMIT, GITHUB_SHA, CI_COMMIT_SHA, or run inside a git checkout".into(),
        ));
    }
    String::from_utf8_lossy(&out.stdout).parse()
}

/// `sha` if it can be an abbreviated SHA (4 to 39 hex digits).
fn abbreviation(sha: &str) -> Option<&str> {
    let sha = sha.trim();
    ((4..40).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
}

/// The full SHA git resolves `abbr` to in the working directory's checkout.
fn expand(abbr: &str) -> Result<Commit> {
    let out = std::process::Command::new("git")
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{abbr}^{{commit}}"),
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).parse(),
        _ => Err(Error::Input(format!(
            "commit {abbr:?} is not a full 40-hex SHA, and git cannot resolve it here; pass the full SHA (`git rev-parse {abbr}` in the checkout)"
        ))),
    }
}

/// `--ami`, else `--commit` (default: the CI's commit, then git).
pub fn release(
    ami: Option<&str>,
    commit: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ReleaseRef> {
    match ami {
        Some(id) => ReleaseRef::ami(id),
        None => Ok(ReleaseRef::Commit(resolve(commit, env)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flag_wins_over_ci_variables() {
        let c = resolve(Some(A), env(&[("CIRCLE_SHA1", B)])).unwrap();
        assert_eq!(c.as_str(), A);
    }

    #[test]
    fn each_ci_variable_is_read() {
        for name in COMMIT_VARIABLES {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(name, B)]));
            assert_eq!(resolve(None, env(pairs)).unwrap().as_str(), B, "{name}");
        }
    }

    #[test]
    fn circleci_is_tried_before_github() {
        let c = resolve(None, env(&[("GITHUB_SHA", B), ("CIRCLE_SHA1", A)])).unwrap();
        assert_eq!(c.as_str(), A);
    }

    #[test]
    fn a_short_sha_in_ci_is_named() {
        let err = resolve(None, env(&[("GIT_COMMIT", "abc123")])).unwrap_err();
        assert!(err.to_string().contains("$GIT_COMMIT"), "{err}");
    }

    #[test]
    fn an_abbreviation_is_resolved_through_git() {
        // The test runs inside the project's own checkout.
        let head = resolve(None, env(&[])).unwrap();
        let short = &head.as_str()[..10];
        assert_eq!(resolve(Some(short), env(&[])).unwrap(), head);
        let err = resolve(Some("abc"), env(&[])).unwrap_err();
        assert!(err.to_string().contains("40-hex"), "{err}");
        let err = resolve(Some("ffffffffffffffffffff"), env(&[])).unwrap_err();
        assert!(err.to_string().contains("git cannot resolve it"), "{err}");
    }

    #[test]
    fn falls_back_to_git() {
        // The test runs inside the project's own checkout.
        let c = resolve(None, env(&[])).unwrap();
        assert_eq!(c.as_str().len(), 40);
    }
}
