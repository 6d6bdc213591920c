//! The `build` section: how the commit's AMI is baked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::check::{self, Checked};
use super::duration::{DurationText, duration};
use super::shape::{
    Encryption, InstanceShape, RawMetadata, RawRootVolume, RawShape, default_instance_type,
};
use super::size::{SizeText, size};

/// `build` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "the `build` section (a mapping with base_image and provision)"
)]
#[schemars(rename = "BuildConfig")]
pub(super) struct RawBuild {
    /// The image the builder starts from.
    base_image: BaseImage,
    /// The builder's instance type.
    #[serde(default = "default_instance_type")]
    instance_type: String,
    /// The subnet the builder runs in; the account's default VPC if unset.
    #[serde(default)]
    subnet: Option<String>,
    /// Security groups for the builder.
    #[serde(default)]
    security_groups: Vec<String>,
    /// Instance profile (name) for the builder, if provisioning needs AWS access.
    #[serde(default)]
    instance_profile: Option<String>,
    /// EC2 key pair for the builder, for debugging a bake by hand.
    #[serde(default)]
    key_name: Option<String>,
    /// The builder's instance metadata service [default: IMDSv2 only, one hop].
    #[serde(default)]
    metadata: RawMetadata,
    /// The builder's root volume, and so the AMI's [default: gp3, the base image's size].
    #[serde(default)]
    root_volume: RawRootVolume,
    /// Encrypt the builder's root volume (with the account's default EBS
    /// key), so the AMI and its snapshots are encrypted.
    #[serde(default)]
    encrypt: bool,
    /// Encrypt with this KMS key instead (id, ARN or alias/...); implies `encrypt`.
    #[serde(default)]
    kms_key: Option<String>,
    /// The KMS key for each copy region (a key lives in one region) when
    /// the AMI is encrypted with `kms_key` [default: that region's default EBS key].
    #[serde(default)]
    copy_kms_keys: BTreeMap<String, String>,
    /// The commit's build: a file or directory (relative to the config file)
    /// the builder downloads and unpacks into `artifact_dir` before the
    /// provisioning script runs. `pipeline build --artifact` overrides it.
    #[serde(default)]
    artifact: Option<PathBuf>,
    /// Where the builder unpacks the artifact [default: /opt/<app>/release].
    #[serde(default)]
    artifact_dir: Option<String>,
    /// The largest artifact (packed) the build uploads [default: 2GiB].
    #[serde(default = "default_artifact_limit", deserialize_with = "size")]
    #[schemars(with = "SizeText")]
    artifact_limit: u64,
    /// The provisioning script, inline. Exactly one of `provision` and `provision_file`.
    #[serde(default)]
    provision: Option<String>,
    /// The provisioning script, as a path relative to the config file.
    #[serde(default)]
    provision_file: Option<PathBuf>,
    /// How long provisioning may take until the builder has powered off.
    #[serde(default = "default_build_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    timeout: Duration,
    /// How long CreateImage (and each copy) may take until the AMI is available.
    #[serde(default = "default_image_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    image_timeout: Duration,
    /// How often waits poll AWS.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    poll_interval: Duration,
    /// Other regions to copy the AMI to (tags carried).
    #[serde(default)]
    copy_to_regions: Vec<String>,
    /// AWS account ids granted launch permission on the AMI (and its copies).
    #[serde(default)]
    share_with: Vec<String>,
}

/// How the commit's AMI is baked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// What the builder boots, and so what the AMI is made on top of.
    pub base_image: BaseImage,
    /// The builder's shape: a bigger one bakes faster.
    pub shape: InstanceShape,
    /// Where the builder runs (it needs a way out to fetch packages);
    /// `None`: the default VPC.
    pub subnet: Option<String>,
    /// The provisioning script's text (read from `provision_file` if that
    /// is how it was given): what makes the base image the app's image.
    pub provision: String,
    /// How long the script may take to run and power the builder off.
    pub timeout: Duration,
    /// How long CreateImage, and each copy, may take.
    pub image_timeout: Duration,
    /// How often the bake's waits look again.
    pub poll_interval: Duration,
    /// Regions that launch the same AMI (environments there, disaster recovery).
    pub copy_to_regions: Vec<String>,
    /// Accounts that launch the same AMI (a production account apart from
    /// the build account).
    pub share_with: Vec<String>,
    /// The KMS key of each copy region, for an AMI encrypted with a key.
    pub copy_kms_keys: BTreeMap<String, String>,
    /// The commit's build, as configured (resolved against the config
    /// file's directory); `None`: the provisioning script fetches its own.
    pub artifact: Option<PathBuf>,
    /// Where the builder unpacks the artifact; `None`: `/opt/<app>/release`.
    pub artifact_dir: Option<String>,
    /// The largest artifact, packed, in bytes.
    pub artifact_limit: u64,
}

/// Where the builder's base image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(try_from = "RawBaseImage")]
pub enum BaseImage {
    /// A fixed AMI id.
    Id {
        /// The AMI id, `ami-...`.
        id: String,
    },
    /// The newest available image of `owner` whose name matches `name`.
    Lookup {
        /// An account id, `self`, or an alias such as `amazon`.
        owner: String,
        /// A name pattern; `*` and `?` are wildcards, as in DescribeImages.
        name: String,
    },
}

/// `base_image` as written: `id`, or `owner` and `name`.
#[derive(Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "`{ id: ami-... }`, or `{ owner: ..., name: ... }` to look up the newest match"
)]
struct RawBaseImage {
    id: Option<String>,
    owner: Option<String>,
    name: Option<String>,
}

impl TryFrom<RawBaseImage> for BaseImage {
    type Error = String;

    fn try_from(raw: RawBaseImage) -> Result<Self, String> {
        match raw {
            RawBaseImage {
                id: Some(id),
                owner: None,
                name: None,
            } => Ok(BaseImage::Id { id }),
            RawBaseImage {
                id: None,
                owner: Some(owner),
                name: Some(name),
            } => Ok(BaseImage::Lookup { owner, name }),
            _ => Err("base_image: give `id: ami-...`, or both `owner` and `name` to look up the newest match".into()),
        }
    }
}

impl std::fmt::Display for BaseImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseImage::Id { id } => f.write_str(id),
            BaseImage::Lookup { owner, name } => write!(f, "newest of {owner} named {name}"),
        }
    }
}

fn default_build_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_image_timeout() -> Duration {
    Duration::from_secs(45 * 60)
}

fn default_artifact_limit() -> u64 {
    2 << 30
}

pub(super) fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}

impl RawBuild {
    /// Checks the section; a `provision_file` is read relative to `dir`.
    pub(super) fn check(self, dir: &Path) -> Checked<BuildConfig> {
        match &self.base_image {
            BaseImage::Id { id } => check::prefixed("build.base_image.id", id, "ami-")?,
            BaseImage::Lookup { owner, name } => {
                if owner.trim().is_empty() || name.trim().is_empty() {
                    return Err(
                        "build.base_image: give `id: ami-...`, or `owner` and `name` to look it up"
                            .into(),
                    );
                }
            }
        }
        let mut shape = InstanceShape::check(
            "build",
            RawShape {
                instance_type: self.instance_type,
                security_groups: self.security_groups,
                instance_profile: self.instance_profile,
                key_name: self.key_name,
                metadata: self.metadata,
                root_volume: self.root_volume,
            },
        )?;
        shape.root_volume.encryption = match self.kms_key {
            Some(key) if key.trim().is_empty() => {
                return Err("build.kms_key: empty; give a key id, ARN or alias/...".into());
            }
            Some(key) => Encryption::Key(key),
            None if self.encrypt => Encryption::DefaultKey,
            None => Encryption::AsImage,
        };
        for region in self.copy_kms_keys.keys() {
            if !self.copy_to_regions.contains(region) {
                return Err(format!(
                    "build.copy_kms_keys: {region} is not in build.copy_to_regions"
                ));
            }
        }
        if !self.copy_kms_keys.is_empty()
            && !matches!(shape.root_volume.encryption, Encryption::Key(_))
        {
            return Err("build.copy_kms_keys: only with build.kms_key (an AMI encrypted with the default key is copied with each region's default key)".into());
        }
        if let Some(dir) = &self.artifact_dir
            && (!dir.starts_with('/') || dir.contains('\'') || dir.trim() == "/")
        {
            return Err(format!(
                "build.artifact_dir: {dir:?} must be an absolute directory (not /) without quotes"
            ));
        }
        if shape.root_volume.encryption == Encryption::DefaultKey && !self.share_with.is_empty() {
            return Err("build.encrypt: an AMI under the default EBS key (aws/ebs) cannot be shared with other accounts; give a kms_key they may use, or drop share_with".into());
        }
        // The artifact's URL is presigned for the bake's deadline, and a
        // presigned URL lives at most 7 days.
        if self.timeout > Duration::from_secs(7 * 24 * 3600 - 600) {
            return Err("build.timeout: at most 7 days less 10 minutes (the artifact's presigned URL must outlive it)".into());
        }
        if self.artifact_limit == 0 {
            return Err("build.artifact_limit: must be more than 0".into());
        }
        if let Some(subnet) = &self.subnet {
            check::prefixed("build.subnet", subnet, "subnet-")?;
        }
        let provision = match (self.provision, self.provision_file) {
            (Some(_), Some(_)) => {
                return Err("build: give either `provision` or `provision_file`, not both".into());
            }
            (None, None) => {
                return Err("build.provision: missing; give the provisioning script inline, or `provision_file`".into());
            }
            (Some(script), None) => script,
            (None, Some(file)) => {
                let file = dir.join(file);
                std::fs::read_to_string(&file).map_err(|e| {
                    format!("build.provision_file: cannot read {}: {e}", file.display())
                })?
            }
        };
        if !provision.starts_with("#!") {
            return Err(
                "build.provision: the script must start with a shebang line such as #!/bin/bash"
                    .into(),
            );
        }
        for (key, value) in [
            ("build.timeout", self.timeout),
            ("build.image_timeout", self.image_timeout),
            ("build.poll_interval", self.poll_interval),
        ] {
            check::positive(key, value)?;
        }
        if self.poll_interval > self.timeout {
            return Err("build.poll_interval: must be shorter than build.timeout".into());
        }
        for region in &self.copy_to_regions {
            check::region("build.copy_to_regions", region)?;
        }
        for account in &self.share_with {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "build.share_with: {account:?} is not a 12-digit AWS account id"
                ));
            }
        }
        Ok(BuildConfig {
            base_image: self.base_image,
            shape,
            subnet: self.subnet,
            provision,
            timeout: self.timeout,
            image_timeout: self.image_timeout,
            poll_interval: self.poll_interval,
            copy_to_regions: self.copy_to_regions,
            share_with: self.share_with,
            copy_kms_keys: self.copy_kms_keys,
            artifact: self.artifact.map(|path| dir.join(path)),
            artifact_dir: self.artifact_dir,
            artifact_limit: self.artifact_limit,
        })
    }
}
