//! Build: bake one AMI per commit.
//!
//! A builder instance boots the base image with the provisioning script as
//! user-data; the script powers the machine off; the stopped disk becomes the
//! AMI (CreateImage, tagged at creation). Idempotent: an AMI already tagged
//! with the commit is reused. On any failure, timeout or interrupt the
//! builder is terminated and a half-made AMI deregistered.

use std::time::{Duration, Instant};

pub mod provision;

use crate::config::{BaseImage, Config, InstanceShape};
use crate::error::{Error, Result};
use crate::ports::{
    Image, ImageState, Images, Instances, LaunchSpec, ShutdownBehaviour, Tags, tag,
};
use crate::release::{Built, Commit, Release, RunId, Tested, utc_stamp};
use crate::wait::{self, Interrupt, Poll, Progress};
use provision::PROVISION_FAILED_MARKER;

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
    /// The wrapped provisioning script.
    pub user_data: String,
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
        Ok(BuildPlan {
            app: config.app.clone(),
            region: config.region.clone(),
            base_image: b.base_image.clone(),
            shape: b.shape.clone(),
            subnet: b.subnet.clone(),
            user_data: provision::wrap(&b.provision)?,
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
}

impl Release<Tested> {
    /// Bakes (or reuses) this commit's AMI. See the [module docs](self).
    ///
    /// ```no_run
    /// # async fn example(sdk: aws_config::SdkConfig) -> pipeline_core::Result<()> {
    /// use pipeline_core::{aws::ec2::Ec2, config::Config, release::{Release, RunId},
    ///     stages::build::{BuildPlan, BuildPorts}, wait::Interrupt};
    /// let config = Config::load("pipeline.yaml".as_ref())?;
    /// let ec2 = Ec2::new(&sdk, &config.region);
    /// let commit = "0123456789abcdef0123456789abcdef01234567".parse()?;
    /// let built = Release::vouched(&config.app, commit)
    ///     .build(&BuildPlan::new(&config)?, BuildPorts { images: &ec2, instances: &ec2 },
    ///            &RunId::new(), &Interrupt::on_signals())
    ///     .await?;
    /// println!("{}", built.release.image().id);
    /// # Ok(()) }
    /// ```
    pub async fn build(
        self,
        plan: &BuildPlan,
        ports: BuildPorts<'_>,
        run: &RunId,
        interrupt: &Interrupt,
    ) -> Result<BuildOutcome> {
        let started = Instant::now();
        let bake = Bake {
            plan,
            images: ports.images,
            instances: ports.instances,
            run,
            interrupt,
            tags: release_tags(plan, &self, run),
        };
        let existing = bake.reusable_image(&self).await?;
        let (image, reused, base_image, builder) = match existing {
            Some(image) => {
                tracing::info!(
                    "reusing {} ({}), already baked for this commit",
                    image.id,
                    image.name
                );
                (image, true, None, None)
            }
            None => {
                let base = bake.resolve_base_image().await?;
                interrupt.check()?;
                let (image, builder) = bake.bake(&self, &base).await?;
                (image, false, Some(base.id), Some(builder))
            }
        };
        let copies = bake.copies(&image, self.commit()).await?;
        bake.share(&image, &copies).await?;
        Ok(BuildOutcome {
            release: self.into_built(image),
            reused,
            base_image,
            builder,
            copies,
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
    async fn bake(&self, release: &Release<Tested>, base: &Image) -> Result<(Image, String)> {
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
            user_data: self.plan.user_data.clone(),
            shutdown: ShutdownBehaviour::Stop,
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
                Some(copy) if copy.state == ImageState::Available => ready.push(copy),
                Some(copy) if copy.state == ImageState::Pending => {
                    started.push((region.clone(), copy.id, false))
                }
                _ => {
                    let tags = self.tagged(tag::ROLE_APP, &image.name);
                    let id = self.images.copy_image(image, region, &tags).await?;
                    tracing::info!("copying {} to {region} as {id}", image.id);
                    started.push((region.clone(), id, true));
                }
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
