//! Build: bake one AMI per commit.
//!
//! The commit's build (an [`Artifact`]) goes to the state bucket once, named
//! by its SHA-256. A builder instance boots the base image with the wrapped
//! provisioning script as user-data ([`provision`]): it downloads the
//! artifact through a presigned URL, checks its digest, unpacks it, runs the
//! script and powers the machine off; the stopped disk becomes the AMI
//! (CreateImage, tagged at creation, the artifact's digest included).
//! Idempotent: an AMI already tagged with the commit is reused (with a
//! warning when it was baked from another artifact), unless a rebake is
//! asked for. On any failure, timeout or interrupt the builder is terminated
//! and a half-made AMI deregistered.

use std::time::{Duration, Instant};

pub mod provision;

use crate::artifact::Artifact;
use crate::config::{BaseImage, Config, Encryption, InstanceShape, format_size};
use crate::error::{Error, Result};
use crate::ports::{
    ArtifactStore, Image, ImageState, Images, Instances, LaunchSpec, SecretUrl, ShutdownBehaviour,
    Tags, tag,
};
use crate::release::{Built, Commit, Release, RunId, Tested, utc_stamp};
use crate::wait::{self, Interrupt, Poll, Progress};
use provision::{ArtifactFetch, Bakes, PROVISION_FAILED_MARKER};

/// How much longer than the bake's deadline the artifact's URL stays good
/// (the builder boots before it downloads, and retries).
const URL_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Everything the build stage needs, checked and derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// Tagged on the builder and the AMI; the AMI's name starts with it.
    pub app: String,
    /// Where the builder runs and the AMI is made (copies go elsewhere).
    pub region: String,
    /// Where the base image comes from.
    pub base_image: BaseImage,
    /// What the builder is made of.
    pub shape: InstanceShape,
    /// Where the builder runs (`None`: the default VPC).
    pub subnet: Option<String>,
    /// The provisioning script (checked to fit the wrapper).
    pub provision: String,
    /// Where the builder unpacks the artifact.
    pub artifact_dir: String,
    /// The KMS key of each copy region, for an AMI encrypted with a key.
    pub copy_kms_keys: std::collections::BTreeMap<String, String>,
    /// Polling for the builder to power off.
    pub provision_poll: Poll,
    /// Polling for CreateImage / CopyImage to finish.
    pub image_poll: Poll,
    /// Regions to copy the AMI to.
    pub copy_to_regions: Vec<String>,
    /// Accounts to share the AMI with.
    pub share_with: Vec<String>,
}

impl BuildPlan {
    /// The plan for a loaded config; a provisioning script the wrapper
    /// cannot carry is bad input.
    pub fn new(config: &Config) -> Result<Self> {
        let b = &config.build;
        let artifact_dir = b
            .artifact_dir
            .clone()
            .unwrap_or_else(|| format!("/opt/{}/release", config.app));
        Ok(BuildPlan {
            app: config.app.clone(),
            region: config.region.clone(),
            base_image: b.base_image.clone(),
            shape: b.shape.clone(),
            subnet: b.subnet.clone(),
            provision: {
                provision::check(&b.provision, &config.app, Some(&artifact_dir))?;
                b.provision.clone()
            },
            artifact_dir,
            copy_kms_keys: b.copy_kms_keys.clone(),
            provision_poll: Poll {
                interval: b.poll_interval,
                deadline: b.timeout,
            },
            image_poll: Poll {
                interval: b.poll_interval,
                deadline: b.image_timeout,
            },
            copy_to_regions: b.copy_to_regions.clone(),
            share_with: b.share_with.clone(),
        })
    }
}

/// What a build bakes besides the provisioning script.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildInput<'a> {
    /// The commit's build, packed; `None`: the script fetches its own.
    pub artifact: Option<&'a Artifact>,
    /// Bake anew although the commit has an AMI (the old one is left to gc).
    pub rebake: bool,
}

/// Where this run's artifact went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedArtifact {
    /// Its hex SHA-256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its key in the state bucket (under the key prefix).
    pub key: String,
    /// Whether this run uploaded it (`false`: it was there, or the AMI was reused).
    pub uploaded: bool,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The release, now built.
    pub release: Release<Built>,
    /// Whether an existing AMI was reused (nothing baked).
    pub reused: bool,
    /// The base image baked from (`None` when reused).
    pub base_image: Option<String>,
    /// The builder instance (`None` when reused).
    pub builder: Option<String>,
    /// The AMI's copies in other regions.
    pub copies: Vec<Image>,
    /// This run's artifact, if it had one.
    pub artifact: Option<StagedArtifact>,
    /// The artifact digest the AMI carries (`pipeline:artifact-sha256`).
    pub baked_from: Option<String>,
    /// The run id tagged on what this run created.
    pub run: RunId,
    /// Wall time of the stage.
    pub duration: Duration,
}

/// The ports the build stage uses.
pub struct BuildPorts<'a> {
    /// Finds the base image and a commit's AMI, makes, copies and shares it.
    pub images: &'a dyn Images,
    /// Runs the builder and watches it power off.
    pub instances: &'a dyn Instances,
    /// Keeps the artifact for the builder to fetch.
    pub artifacts: &'a dyn ArtifactStore,
}

impl Release<Tested> {
    /// Bakes (or reuses) this commit's AMI. See the [module docs](self).
    ///
    /// ```no_run
    /// # async fn example(sdk: aws_config::SdkConfig) -> pipeline_core::Result<()> {
    /// use pipeline_core::{artifact::Artifact, aws::{ec2::Ec2, s3::StateBucket}, config::Config,
    ///     release::{Release, RunId}, stages::build::{BuildInput, BuildPlan, BuildPorts},
    ///     wait::Interrupt};
    /// let config = Config::load("pipeline.yaml".as_ref())?;
    /// let ec2 = Ec2::new(&sdk, &config.region);
    /// let commit = "0123456789abcdef0123456789abcdef01234567".parse()?;
    /// let bucket = StateBucket::new(&sdk, &config.state.bucket, config.state.key_prefix.clone());
    /// let artifact = Artifact::pack("dist".as_ref(), "artifact", config.build.artifact_limit)?;
    /// let input = BuildInput { artifact: Some(&artifact), rebake: false };
    /// let ports = BuildPorts { images: &ec2, instances: &ec2, artifacts: &bucket };
    /// let built = Release::vouched(&config.app, commit)
    ///     .build(&BuildPlan::new(&config)?, ports, input, &RunId::new(), &Interrupt::on_signals())
    ///     .await?;
    /// println!("{}", built.release.image().id);
    /// # Ok(()) }
    /// ```
    pub async fn build(
        self,
        plan: &BuildPlan,
        ports: BuildPorts<'_>,
        input: BuildInput<'_>,
        run: &RunId,
        interrupt: &Interrupt,
    ) -> Result<BuildOutcome> {
        let started = Instant::now();
        let mut tags = release_tags(plan, &self, run);
        if let Some(artifact) = input.artifact {
            tags.insert(tag::ARTIFACT_SHA256.to_string(), artifact.sha256.clone());
        }
        let bake = Bake {
            plan,
            images: ports.images,
            instances: ports.instances,
            artifacts: ports.artifacts,
            run,
            interrupt,
            tags,
        };
        let existing = if input.rebake {
            tracing::info!(
                "baking anew (--rebake); an AMI baked earlier for this commit stays until gc removes it"
            );
            None
        } else {
            bake.reusable_image(&self).await?
        };
        let (image, reused, base_image, builder, staged) = match existing {
            Some(image) => {
                tracing::info!(
                    "reusing {} ({}), already baked for this commit",
                    image.id,
                    image.name
                );
                bake.warn_if_not_reproducible(&image, input.artifact);
                let staged = input.artifact.map(|a| StagedArtifact {
                    sha256: a.sha256.clone(),
                    size: a.size,
                    key: a.key(&plan.app, self.commit().as_str()),
                    uploaded: false,
                });
                (image, true, None, None, staged)
            }
            None => {
                let staged = match input.artifact {
                    Some(artifact) => Some(bake.stage(artifact, self.commit()).await?),
                    None => None,
                };
                let base = bake.resolve_base_image().await?;
                interrupt.check()?;
                let (image, builder) = bake.bake(&self, &base, staged.as_ref()).await?;
                (
                    image,
                    false,
                    Some(base.id),
                    Some(builder),
                    staged.map(|(staged, _)| staged),
                )
            }
        };
        let baked_from = image.tags.get(tag::ARTIFACT_SHA256).cloned();
        let copies = bake.copies(&image, self.commit()).await?;
        bake.share(&image, &copies).await?;
        Ok(BuildOutcome {
            release: self.into_built(image),
            reused,
            base_image,
            builder,
            copies,
            artifact: staged,
            baked_from,
            run: run.clone(),
            duration: started.elapsed(),
        })
    }
}

fn release_tags<S>(plan: &BuildPlan, release: &Release<S>, run: &RunId) -> Tags {
    Tags::from([
        (tag::APP.to_string(), plan.app.clone()),
        (tag::COMMIT.to_string(), release.commit().to_string()),
        (tag::RUN.to_string(), run.to_string()),
    ])
}

struct Bake<'a> {
    plan: &'a BuildPlan,
    images: &'a dyn Images,
    instances: &'a dyn Instances,
    artifacts: &'a dyn ArtifactStore,
    run: &'a RunId,
    interrupt: &'a Interrupt,
    /// app, commit, run: the tags shared by everything the bake creates.
    tags: Tags,
}

impl Bake<'_> {
    fn tagged(&self, role: &str, name: &str) -> Tags {
        let mut tags = self.tags.clone();
        tags.insert(tag::ROLE.to_string(), role.to_string());
        tags.insert("Name".to_string(), name.to_string());
        tags
    }

    /// Warns when the reused AMI was baked from another artifact than this
    /// build's: the commit's build is not reproducible (or changed).
    fn warn_if_not_reproducible(&self, image: &Image, artifact: Option<&Artifact>) {
        let baked = image.tags.get(tag::ARTIFACT_SHA256);
        let now = artifact.map(|a| &a.sha256);
        if baked == now {
            return;
        }
        let shown = |sha: Option<&String>| match sha {
            Some(sha) => format!("artifact {sha}"),
            None => "no artifact".to_string(),
        };
        tracing::warn!(
            "{} was baked from {}, this build has {}: the commit's build is not reproducible. \
             Reusing {}; `pipeline build --rebake` bakes it anew",
            image.id,
            shown(baked),
            shown(now),
            image.id
        );
    }

    /// Puts the artifact in the state bucket unless it is there (one
    /// HeadObject), and signs a URL for the builder that lasts the bake.
    async fn stage(
        &self,
        artifact: &Artifact,
        commit: &Commit,
    ) -> Result<(StagedArtifact, SecretUrl)> {
        let key = artifact.key(&self.plan.app, commit.as_str());
        let stored = self.artifacts.stored_size(&key).await?;
        let uploaded = if stored == Some(artifact.size) {
            tracing::info!(
                "artifact {} ({}) already in the state bucket",
                artifact.sha256,
                format_size(artifact.size)
            );
            false
        } else {
            tracing::info!(
                "uploading artifact {} ({}) from {}",
                artifact.sha256,
                format_size(artifact.size),
                artifact.source.display()
            );
            self.artifacts
                .upload(&key, artifact.path(), artifact.size)
                .await?;
            true
        };
        self.interrupt.check()?;
        let url = self
            .artifacts
            .presigned_get(&key, self.plan.provision_poll.deadline + URL_MARGIN)
            .await?;
        Ok((
            StagedArtifact {
                sha256: artifact.sha256.clone(),
                size: artifact.size,
                key,
                uploaded,
            },
            url,
        ))
    }

    /// Starts a copy of `image` to `region`; its id.
    async fn copy(&self, image: &Image, region: &str) -> Result<String> {
        let encryption = self.copy_encryption(region);
        let id = self
            .images
            .copy_image(image, region, &self.copy_tags(image), &encryption)
            .await?;
        tracing::info!("copying {} to {region} as {id}", image.id);
        Ok(id)
    }

    /// A copy's tags: this run's, with the image's own provenance (a
    /// reused image was baked from its artifact, not this run's).
    fn copy_tags(&self, image: &Image) -> Tags {
        let mut tags = self.tagged(tag::ROLE_APP, &image.name);
        match image.tags.get(tag::ARTIFACT_SHA256) {
            Some(sha) => tags.insert(tag::ARTIFACT_SHA256.to_string(), sha.clone()),
            None => tags.remove(tag::ARTIFACT_SHA256),
        };
        tags
    }

    /// How a copy to `region` is encrypted: as the AMI is, with the
    /// region's own key when the AMI has a key of its own.
    fn copy_encryption(&self, region: &str) -> Encryption {
        match &self.plan.shape.root_volume.encryption {
            Encryption::AsImage => Encryption::AsImage,
            Encryption::DefaultKey => Encryption::DefaultKey,
            Encryption::Key(_) => self
                .plan
                .copy_kms_keys
                .get(region)
                .map(|key| Encryption::Key(key.clone()))
                .unwrap_or(Encryption::DefaultKey),
        }
    }

    /// The commit's AMI if one exists: available, or pending (another run is
    /// baking it) and then awaited. A failed one is ignored.
    async fn reusable_image(&self, release: &Release<Tested>) -> Result<Option<Image>> {
        let region = &self.plan.region;
        let found = self
            .images
            .find_release_image(region, &self.plan.app, release.commit())
            .await?;
        match found {
            Some(image) if image.state == ImageState::Available => Ok(Some(image)),
            Some(image) if image.state == ImageState::Pending => {
                tracing::info!("{} is being baked by another run; waiting for it", image.id);
                self.await_available(region, &image.id).await.map(Some)
            }
            Some(image) => {
                tracing::warn!(
                    "ignoring {} in state {:?}; baking anew",
                    image.id,
                    image.state
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn resolve_base_image(&self) -> Result<Image> {
        let region = &self.plan.region;
        let found = match &self.plan.base_image {
            BaseImage::Id { id } => self.images.image(region, id).await?,
            BaseImage::Lookup { owner, name } => {
                self.images.newest_image(region, owner, name).await?
            }
        };
        match found {
            Some(image) if image.state == ImageState::Available => {
                tracing::info!("base image {} ({})", image.id, image.name);
                Ok(image)
            }
            Some(image) => Err(Error::NotFound {
                what: "base image".into(),
                detail: format!(
                    "{} is {:?}, not available; fix build.base_image",
                    image.id, image.state
                ),
            }),
            None => Err(Error::NotFound {
                what: "base image".into(),
                detail: match &self.plan.base_image {
                    BaseImage::Id { id } => {
                        format!("no image {id} in {region}; fix build.base_image.id")
                    }
                    BaseImage::Lookup { owner, name } => format!(
                        "no available image of owner {owner} named {name:?} in {region}; fix build.base_image"
                    ),
                },
            }),
        }
    }

    /// Launches the builder and turns it into an AMI; cleans up on failure.
    async fn bake(
        &self,
        release: &Release<Tested>,
        base: &Image,
        artifact: Option<&(StagedArtifact, SecretUrl)>,
    ) -> Result<(Image, String)> {
        let commit = release.commit().to_string();
        let user_data = provision::wrap(
            &self.plan.provision,
            &Bakes {
                app: &self.plan.app,
                commit: &commit,
                artifact: artifact.map(|(staged, url)| ArtifactFetch {
                    url,
                    sha256: &staged.sha256,
                    dir: &self.plan.artifact_dir,
                }),
            },
        )?;
        let name = format!(
            "{}-{}-{}",
            self.plan.app,
            release.commit().short(),
            utc_stamp(time::OffsetDateTime::now_utc())
        );
        let spec = LaunchSpec {
            image_id: base.id.clone(),
            shape: self.plan.shape.clone(),
            count: 1,
            subnet_id: self.plan.subnet.clone(),
            user_data,
            shutdown: ShutdownBehaviour::Stop,
            root_device: base.root_device.clone(),
            tags: self.tagged(tag::ROLE_BUILDER, &format!("{}-builder", name)),
        };
        let builder = self
            .instances
            .launch(&spec)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::BakeFailed {
                reason: "RunInstances returned no instance".into(),
            })?;
        tracing::info!("builder {builder} launched from {}; provisioning", base.id);

        // Each step that fails cleans up what the bake made so far.
        let began = Instant::now();
        if let Err(err) = self.provision(&builder, began).await {
            return Err(self.clean_up_failed_bake(&builder, None, err).await);
        }
        let image_id = match self.create_image(&builder, &name, &base.id).await {
            Ok(id) => id,
            Err(err) => return Err(self.clean_up_failed_bake(&builder, None, err).await),
        };
        let image = match self.await_available(&self.plan.region, &image_id).await {
            Ok(image) => image,
            Err(err) => {
                return Err(self
                    .clean_up_failed_bake(&builder, Some(&image_id), err)
                    .await);
            }
        };
        tracing::info!(
            "image {image_id} available after {}s",
            began.elapsed().as_secs()
        );
        self.instances
            .terminate(std::slice::from_ref(&builder))
            .await?;
        tracing::info!("builder {builder} terminated");
        Ok((image, builder))
    }

    /// Waits until the builder has run the provisioning script and powered
    /// off, and reads the script's verdict off the console.
    async fn provision(&self, builder: &str, began: Instant) -> Result<()> {
        self.await_power_off(builder).await?;
        tracing::info!(
            "builder {builder} powered off after {}s",
            began.elapsed().as_secs()
        );
        let console = self.instances.console_output(builder).await?;
        match console
            .lines()
            .rev()
            .find(|l| l.contains(PROVISION_FAILED_MARKER))
        {
            Some(line) => Err(Error::BakeFailed {
                reason: format!("the provisioning script failed ({})", line.trim()),
            }),
            None => Ok(()),
        }
    }

    /// CreateImage from the stopped builder, tagged at creation; the new AMI's id.
    async fn create_image(&self, builder: &str, name: &str, base_id: &str) -> Result<String> {
        let description = format!(
            "{} {} baked from {base_id} by pipeline run {}",
            self.plan.app,
            self.tags[tag::COMMIT],
            self.run
        );
        let tags = self.tagged(tag::ROLE_APP, name);
        let image_id = self
            .images
            .create_image(&self.plan.region, builder, name, &description, &tags)
            .await?;
        tracing::info!("creating image {image_id} ({name})");
        Ok(image_id)
    }

    async fn await_power_off(&self, builder: &str) -> Result<()> {
        let what = format!("builder {builder} to run the provisioning script and power off");
        super::await_stopped(
            self.instances,
            builder,
            &what,
            self.plan.provision_poll,
            self.interrupt,
            |status| Error::BakeFailed {
                reason: format!(
                    "builder {builder} is {} before it powered off ({})",
                    status.state,
                    status.reason.as_deref().unwrap_or_default()
                ),
            },
        )
        .await
        .map(|_| ())
    }

    async fn await_available(&self, region: &str, image_id: &str) -> Result<Image> {
        let what = format!("image {image_id} in {region} to become available");
        wait::until(&what, self.plan.image_poll, self.interrupt, || async {
            match self.images.image(region, image_id).await? {
                Some(image) => match &image.state {
                    ImageState::Available => Ok(Progress::Done(image)),
                    ImageState::Pending => Ok(Progress::Pending("pending".into())),
                    ImageState::Other(state) => Err(Error::BakeFailed {
                        reason: format!("image {image_id} in {region} ended in state {state}"),
                    }),
                },
                None => Ok(Progress::Pending("not yet visible".into())),
            }
        })
        .await
    }

    /// Best effort: every step is tried even if one fails, and failures are
    /// reported, since the original error is what the user needs first.
    /// Returns `cause`, for the caller to fail with.
    async fn clean_up_failed_bake(
        &self,
        builder: &str,
        image: Option<&str>,
        cause: Error,
    ) -> Error {
        tracing::error!("bake failed: {cause}; cleaning up");
        super::log_console_tail(self.instances, "builder", builder).await;
        if let Some(image) = image {
            match self.images.deregister_image(&self.plan.region, image).await {
                Ok(()) => tracing::info!("deregistered half-made image {image}"),
                Err(e) => tracing::error!(
                    "could not deregister half-made image {image}: {e}; deregister it by hand"
                ),
            }
        }
        match self.instances.terminate(&[builder.to_string()]).await {
            Ok(()) => tracing::info!("builder {builder} terminated"),
            Err(e) => {
                tracing::error!("could not terminate builder {builder}: {e}; terminate it by hand")
            }
        }
        cause
    }

    /// Makes sure the AMI exists in every `copy_to_regions` region: reuses a
    /// copy found by tags, else copies. Copies this run started and could not
    /// finish are deregistered.
    async fn copies(&self, image: &Image, commit: &Commit) -> Result<Vec<Image>> {
        let mut ready = Vec::new();
        let mut started = Vec::new();
        for region in &self.plan.copy_to_regions {
            match self
                .images
                .find_release_image(region, &self.plan.app, commit)
                .await?
            {
                // A copy older than the image is of an earlier bake of the
                // commit (before a --rebake): not a copy of this one.
                Some(copy) if copy.created < image.created => {
                    started.push((region.clone(), self.copy(image, region).await?, true))
                }
                Some(copy) if copy.state == ImageState::Available => ready.push(copy),
                Some(copy) if copy.state == ImageState::Pending => {
                    started.push((region.clone(), copy.id, false))
                }
                _ => started.push((region.clone(), self.copy(image, region).await?, true)),
            }
        }
        for (i, (region, id, _)) in started.iter().enumerate() {
            match self.await_available(region, id).await {
                Ok(copy) => ready.push(copy),
                Err(err) => {
                    for (region, id, _) in started[i..].iter().filter(|(_, _, ours)| *ours) {
                        if let Err(e) = self.images.deregister_image(region, id).await {
                            tracing::error!(
                                "could not deregister unfinished copy {id} in {region}: {e}"
                            );
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(ready)
    }

    /// Grants launch permission to `share_with` on the AMI and each copy,
    /// adding only what is missing.
    async fn share(&self, image: &Image, copies: &[Image]) -> Result<()> {
        if self.plan.share_with.is_empty() {
            return Ok(());
        }
        for target in std::iter::once(image).chain(copies) {
            let have = self
                .images
                .launch_permissions(&target.region, &target.id)
                .await?;
            let missing: Vec<String> = self
                .plan
                .share_with
                .iter()
                .filter(|a| !have.contains(a))
                .cloned()
                .collect();
            if !missing.is_empty() {
                self.images
                    .share_image(&target.region, &target.id, &missing)
                    .await?;
                tracing::info!(
                    "shared {} in {} with {}",
                    target.id,
                    target.region,
                    missing.join(", ")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
