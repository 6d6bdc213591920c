//! GC: deregister old AMIs of the app (and delete their snapshots) and
//! terminate orphaned builder and task instances.
//!
//! An AMI is kept if it is among the newest `keep` releases, or in use: an
//! instance of the app runs it (every environment, so both production
//! slots, and with them the release a rollback would go back to), or a
//! configured Auto Scaling group's launch template version launches it.
//! Everything else of this app (tagged `pipeline:app`, owned by this
//! account) is deregistered with its snapshots, in the home region and in
//! every `copy_to_regions` region (a copy goes with its release). A builder
//! older than the bake timeout, or a task instance older than the longest
//! task timeout, is an orphan of a killed run and is terminated. With
//! `dry_run` nothing is changed and the outcome lists what would be.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::ports::{AutoScaling, Image, Images, Instances, tag};

/// What gc works on, from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPlan {
    /// Whose AMIs and instances gc looks at (their `pipeline:app` tag).
    pub app: String,
    /// The home region, then every copy region.
    pub regions: Vec<String>,
    /// How many of the newest releases to keep besides those in use.
    pub keep: usize,
    /// A builder older than this is an orphan (the bake timeout).
    pub builder_age: Duration,
    /// A task instance older than this is an orphan (the longest task timeout).
    pub task_age: Duration,
    /// The configured Auto Scaling groups.
    pub groups: Vec<String>,
    /// Report what would go, and remove nothing (to look before a first gc).
    pub dry_run: bool,
}

impl GcPlan {
    /// The plan for `config`, keeping `keep` releases.
    pub fn new(config: &Config, keep: usize, dry_run: bool) -> GcPlan {
        let mut regions = vec![config.region.clone()];
        regions.extend(config.build.copy_to_regions.iter().cloned());
        let task_age = config
            .environments
            .values()
            .flat_map(|e| e.tasks.values().map(|t| t.timeout))
            .max()
            .unwrap_or(Duration::from_secs(30 * 60));
        GcPlan {
            app: config.app.clone(),
            regions,
            keep,
            builder_age: config.build.timeout + config.build.image_timeout,
            task_age,
            groups: config
                .environments
                .values()
                .filter_map(|e| e.placement.group().map(str::to_string))
                .collect(),
            dry_run,
        }
    }
}

/// An AMI gc removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// The AMI id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Its name.
    pub name: String,
    /// Its commit.
    pub commit: String,
    /// The snapshots that go with it.
    pub snapshots: Vec<String>,
}

/// An AMI gc kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    /// The AMI id.
    pub id: String,
    /// Its commit.
    pub commit: String,
    /// `in use by ...` or `among the newest N`.
    pub why: String,
}

/// What gc did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcOutcome {
    /// Kept images of the home region, newest first.
    pub kept: Vec<Kept>,
    /// Removed images, every region.
    pub removed: Vec<Removed>,
    /// Orphaned builder and task instances terminated.
    pub orphans: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The ports gc uses.
pub struct GcPorts<'a> {
    /// Lists the app's AMIs in every region and deregisters the old ones.
    pub images: &'a dyn Images,
    /// Tells which AMIs are in use, and terminates orphans.
    pub instances: &'a dyn Instances,
    /// Auto Scaling, when groups are configured.
    pub auto_scaling: Option<&'a dyn AutoScaling>,
}

/// Runs gc. See the [module docs](self).
pub async fn gc(plan: &GcPlan, ports: GcPorts<'_>, now_ms: i64) -> Result<GcOutcome> {
    let home = &plan.regions[0];
    // In use: what instances of the app run, and what groups launch.
    let instances = ports.instances.instances_of_app(&plan.app).await?;
    // Every user of each image: each environment once, with how many of
    // its instances run it; builders and task instances by id.
    let mut in_use: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for i in &instances {
        let by = if i.env.is_empty() {
            format!("{} {}", i.role, i.id)
        } else {
            i.env.clone()
        };
        *in_use
            .entry(i.image_id.clone())
            .or_default()
            .entry(by)
            .or_default() += 1;
    }
    if let Some(asg) = ports.auto_scaling {
        for name in &plan.groups {
            let group = asg.group(name).await?;
            if let Some(image) = asg
                .template_image(&group.template_id, &group.template_version)
                .await?
            {
                in_use
                    .entry(image)
                    .or_default()
                    .insert(format!("Auto Scaling group {name}'s launch template"), 0);
            }
        }
    }

    // Newest first; a commit is kept if its home image is kept.
    let mut images: Vec<Image> = ports
        .images
        .release_images(home, &plan.app)
        .await?
        .into_iter()
        .filter(|i| i.tags.get(tag::ROLE).map(String::as_str) == Some(tag::ROLE_APP))
        .collect();
    images.sort_by(|a, b| b.created.cmp(&a.created));
    let mut kept = Vec::new();
    let mut kept_commits = BTreeSet::new();
    let mut removed = Vec::new();
    for (rank, image) in images.iter().enumerate() {
        let commit = image.tags.get(tag::COMMIT).cloned().unwrap_or_default();
        let why = match in_use.get(&image.id) {
            Some(users) => {
                let users: Vec<String> = users
                    .iter()
                    .map(|(by, n)| match n {
                        0 | 1 => by.clone(),
                        n => format!("{by} ({n} instances)"),
                    })
                    .collect();
                Some(format!("in use by {}", users.join(", ")))
            }
            None if rank < plan.keep => Some(format!("among the newest {}", plan.keep)),
            None => None,
        };
        match why {
            Some(why) => {
                kept_commits.insert(commit.clone());
                kept.push(Kept {
                    id: image.id.clone(),
                    commit,
                    why,
                });
            }
            None => removed.push(removal(image, commit)),
        }
    }
    for region in &plan.regions[1..] {
        for copy in ports.images.release_images(region, &plan.app).await? {
            let commit = copy.tags.get(tag::COMMIT).cloned().unwrap_or_default();
            if !kept_commits.contains(&commit) {
                removed.push(removal(&copy, commit));
            }
        }
    }

    let orphans: Vec<String> = instances
        .iter()
        .filter(|i| {
            let age = Duration::from_millis((now_ms - i.launched_ms).max(0) as u64);
            (i.role == tag::ROLE_BUILDER && age > plan.builder_age)
                || (i.role == tag::ROLE_TASK && age > plan.task_age)
        })
        .map(|i| i.id.clone())
        .collect();

    if !plan.dry_run {
        if !orphans.is_empty() {
            ports.instances.terminate(&orphans).await?;
            tracing::info!("terminated orphaned instances: {}", orphans.join(", "));
        }
        for image in &removed {
            ports
                .images
                .deregister_image(&image.region, &image.id)
                .await?;
            tracing::info!(
                "deregistered {} ({}) in {} and its snapshots {}",
                image.id,
                image.name,
                image.region,
                image.snapshots.join(", ")
            );
        }
    }
    Ok(GcOutcome {
        kept,
        removed,
        orphans,
        dry_run: plan.dry_run,
    })
}

fn removal(image: &Image, commit: String) -> Removed {
    Removed {
        id: image.id.clone(),
        region: image.region.clone(),
        name: image.name.clone(),
        commit,
        snapshots: image.snapshot_ids.clone(),
    }
}
