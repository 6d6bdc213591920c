//! Release identities and the typed release.
//!
//! A [`Commit`] is a full 40-hex SHA, a [`RunId`] names one run of one stage,
//! and [`Release<S>`] is a commit moving through the stages, each consuming
//! the state before it:
//!
//! - [`Tested`]: what `build` takes. Made by a passing `pipeline test`
//!   ([`crate::stages::test::TestOutcome::release`]), by the test gate
//!   (the ledger's passing verdict, [`crate::ledger::Ledger::test_gate`]),
//!   or by a caller who vouches for the commit ([`Release::vouched`]).
//! - [`Built`]: what `deploy` and `task` take; made by `build`, or found
//!   in AWS by its tags ([`Release::find`], [`Release::from_image`]).
//! - [`Deployed`]: what `promote` and `rollback` take: made by `deploy`, or
//!   found serving in a slot by the traffic guard
//!   ([`crate::stages::promote::serving`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::ports::Image;

/// A full git commit SHA: 40 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Commit(String);

impl Commit {
    /// The full SHA.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, used in names.
    pub fn short(&self) -> &str {
        short_commit(&self.0)
    }
}

/// The first 12 characters of a commit SHA read from a tag or the ledger
/// (all of it, if shorter), as [`Commit::short`] shows a parsed one.
pub fn short_commit(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

impl FromStr for Commit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let sha = s.trim().to_ascii_lowercase();
        if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Commit(sha))
        } else {
            Err(Error::Input(format!(
                "commit {s:?} is not a full 40-hex git SHA; pass --commit with the output of `git rev-parse HEAD`"
            )))
        }
    }
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one run of one stage: a UTC stamp and a random suffix, e.g.
/// `20261122T011616Z-3f9a1c`. Tagged on everything the run creates
/// (`pipeline:run`), so a later run can find a crashed run's leftovers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunId(String);

impl RunId {
    /// A fresh run id.
    pub fn new() -> Self {
        let now = time::OffsetDateTime::now_utc();
        let nanos = now.unix_timestamp_nanos() as u64;
        let suffix = (nanos ^ (u64::from(std::process::id()) << 20)) & 0xff_ffff;
        RunId(format!("{}-{suffix:06x}", utc_stamp(now)))
    }

    /// The id as tagged.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compact UTC timestamp, `YYYYMMDDTHHMMSSZ`, valid in AMI names.
pub fn utc_stamp(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// State: the commit passed its tests (or the caller vouches for it).
#[derive(Debug, Clone)]
pub struct Tested;

/// State: the commit's AMI exists and is available.
#[derive(Debug, Clone)]
pub struct Built {
    /// The AMI in the home region.
    pub image: Image,
}

/// State: the release runs in an environment.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The AMI it runs on.
    pub ami: String,
    /// The environment it serves in.
    pub env: String,
    /// The instances serving it.
    pub instances: Vec<String>,
}

/// A commit of an app on its way through the stages; `S` is how far it got.
#[derive(Debug, Clone)]
pub struct Release<S> {
    app: String,
    commit: Commit,
    state: S,
}

impl<S> Release<S> {
    /// The app the release belongs to.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The commit being released.
    pub fn commit(&self) -> &Commit {
        &self.commit
    }

    /// The state the release is in.
    pub fn state(&self) -> &S {
        &self.state
    }
}

impl Release<Tested> {
    /// A release of `commit` that may be built, on the caller's word that
    /// it passed its tests (a library user who ran them elsewhere, or
    /// `build --skip-test-gate`, which the ledger records).
    pub fn vouched(app: impl Into<String>, commit: Commit) -> Self {
        Release {
            app: app.into(),
            commit,
            state: Tested,
        }
    }

    /// The release with its image baked.
    pub(crate) fn into_built(self, image: Image) -> Release<Built> {
        Release {
            app: self.app,
            commit: self.commit,
            state: Built { image },
        }
    }
}

impl Release<Built> {
    /// The AMI the release runs on.
    pub fn image(&self) -> &Image {
        &self.state.image
    }

    /// The release deployed to `env` on `instances`.
    pub(crate) fn into_deployed(self, env: String, instances: Vec<String>) -> Release<Deployed> {
        Release {
            app: self.app,
            commit: self.commit,
            state: Deployed {
                ami: self.state.image.id,
                env,
                instances,
            },
        }
    }

    /// A built release from an AMI id (`pipeline deploy --ami`): the image
    /// must exist, be available, and carry this app's tags; its commit comes
    /// from its `pipeline:commit` tag.
    pub async fn from_image(
        images: &dyn crate::ports::Images,
        region: &str,
        app: &str,
        image_id: &str,
    ) -> Result<Self> {
        use crate::ports::{ImageState, tag};
        let image = images
            .image(region, image_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "image".into(),
                detail: format!("no image {image_id} in {region}; check --ami"),
            })?;
        if image.tags.get(tag::APP).map(String::as_str) != Some(app) {
            return Err(Error::Input(format!(
                "image {image_id} is not an image of {app} (its {} tag is {:?}); deploy an AMI that `pipeline build` made",
                tag::APP,
                image.tags.get(tag::APP)
            )));
        }
        if image.state != ImageState::Available {
            return Err(Error::Input(format!(
                "image {image_id} is {:?}, not available",
                image.state
            )));
        }
        let commit: Commit = image
            .tags
            .get(tag::COMMIT)
            .cloned()
            .unwrap_or_default()
            .parse()?;
        Ok(Release::vouched(app, commit).into_built(image))
    }

    /// Recovers a built release from AWS: the available AMI tagged with the
    /// app and commit, or `None` if the commit was never baked. This is how a
    /// stage in another process picks up where `build` left off.
    pub async fn find(
        images: &dyn crate::ports::Images,
        region: &str,
        app: &str,
        commit: &Commit,
    ) -> Result<Option<Self>> {
        let found = images.find_release_image(region, app, commit).await?;
        Ok(found
            .filter(|image| image.state == crate::ports::ImageState::Available)
            .map(|image| Release::vouched(app, commit.clone()).into_built(image)))
    }
}

impl Release<Deployed> {
    /// A release found serving: `commit` of `app` on `instances` of `env`,
    /// running `ami` (the traffic guard's finding).
    pub(crate) fn serving(
        app: &str,
        commit: Commit,
        ami: String,
        env: String,
        instances: Vec<String>,
    ) -> Self {
        Release {
            app: app.to_string(),
            commit,
            state: Deployed {
                ami,
                env,
                instances,
            },
        }
    }
}

/// What `deploy` and `task` run: the AMI baked for a commit, or an AMI
/// named by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseRef {
    /// The commit's AMI, found by its tags.
    Commit(Commit),
    /// An AMI `pipeline build` made, by id (its commit read from its tags).
    Ami(String),
}

impl ReleaseRef {
    /// The AMI `id`; an id that is not `ami-...` is bad input.
    pub fn ami(id: &str) -> Result<ReleaseRef> {
        if id.starts_with("ami-") {
            Ok(ReleaseRef::Ami(id.to_string()))
        } else {
            Err(Error::Input(format!(
                "--ami {id:?} is not an AMI id (ami-...)"
            )))
        }
    }

    /// The commit, when it is known before any AWS call.
    pub fn commit(&self) -> Option<&Commit> {
        match self {
            ReleaseRef::Commit(c) => Some(c),
            ReleaseRef::Ami(_) => None,
        }
    }

    /// The built release it names: the commit's AMI (never built is
    /// [`Error::NotBuilt`]), or the named AMI's.
    pub async fn resolve(
        &self,
        images: &dyn crate::ports::Images,
        region: &str,
        app: &str,
    ) -> Result<Release<Built>> {
        match self {
            ReleaseRef::Ami(id) => Release::<Built>::from_image(images, region, app, id).await,
            ReleaseRef::Commit(commit) => Release::<Built>::find(images, region, app, commit)
                .await?
                .ok_or_else(|| Error::NotBuilt {
                    commit: commit.to_string(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_accepts_full_sha_only() {
        let sha = "0123456789ABCDEF0123456789abcdef01234567";
        let commit: Commit = sha.parse().unwrap();
        assert_eq!(commit.as_str(), sha.to_ascii_lowercase());
        assert_eq!(commit.short(), "0123456789ab");
        for bad in [
            "",
            "0123456",
            "g123456789abcdef0123456789abcdef01234567",
            &sha[1..],
        ] {
            let err = bad.parse::<Commit>().unwrap_err();
            assert!(err.to_string().contains("40-hex"), "{err}");
        }
    }

    #[test]
    fn run_ids_are_stamped_and_distinct() {
        let a = RunId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RunId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), "20261122T011616Z-3f9a1c".len());
        assert!(a.as_str().starts_with("20"));
    }

    #[test]
    fn stamp_is_ami_name_safe() {
        let at = time::macros::datetime!(2026-11-22 01:16:16 UTC);
        assert_eq!(utc_stamp(at), "20261122T011616Z");
    }
}
