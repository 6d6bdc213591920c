//! An instance's shape: what every instance the pipeline launches is made
//! of besides its image, written the same way for the builder, an
//! environment's instances and a task's. Hardened by default: the instance
//! metadata service answers only session-token (IMDSv2) requests one hop
//! away, and the root volume is `gp3`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::check::{self, Checked};

/// What an instance is made of, besides its image and user-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceShape {
    /// Its family and size: what it can do and what it costs.
    pub instance_type: String,
    /// The firewall rules it runs under (`sg-...` ids).
    pub security_groups: Vec<String>,
    /// The IAM role it acts as (an instance profile's name), for code on
    /// the instance that calls AWS.
    pub instance_profile: Option<String>,
    /// An EC2 key pair, so a human can log in when something needs a look.
    pub key_name: Option<String>,
    /// How the instance metadata service (and so the role's credentials)
    /// answers code on the instance.
    pub metadata: MetadataOptions,
    /// The root volume's size, type and encryption.
    pub root_volume: RootVolume,
}

/// The instance metadata service's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataOptions {
    /// `true` (the default): IMDSv2 only, every request needs a session
    /// token, which a server-side request forgery cannot get.
    pub tokens_required: bool,
    /// How many network hops a metadata answer travels: 1 (the default)
    /// keeps it on the instance; a container on a bridge network needs 2.
    pub hop_limit: u8,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        MetadataOptions {
            tokens_required: true,
            hop_limit: 1,
        }
    }
}

/// The root volume of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootVolume {
    /// Its size in GiB; `None`: the image's.
    pub size_gib: Option<u32>,
    /// Its EBS type (`gp3` unless set).
    pub volume_type: String,
    /// Whether it is encrypted beyond what its image says.
    pub encryption: Encryption,
}

impl Default for RootVolume {
    fn default() -> Self {
        RootVolume {
            size_gib: None,
            volume_type: default_volume_type(),
            encryption: Encryption::AsImage,
        }
    }
}

/// How a root volume is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// As its snapshot is (an instance of an encrypted AMI is encrypted).
    AsImage,
    /// With the account's default EBS key.
    DefaultKey,
    /// With this KMS key (id, ARN or `alias/...`).
    Key(String),
}

/// `metadata` as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "`{ tokens: required | optional, hop_limit: 1 }`"
)]
#[schemars(rename = "MetadataConfig")]
pub(super) struct RawMetadata {
    /// `required` (IMDSv2 only, the default) or `optional` (also IMDSv1).
    #[serde(default = "default_tokens")]
    tokens: String,
    /// How far a metadata answer travels, 1 to 64 hops [default: 1].
    #[serde(default = "default_hop_limit")]
    hop_limit: u8,
}

impl Default for RawMetadata {
    fn default() -> Self {
        RawMetadata {
            tokens: default_tokens(),
            hop_limit: default_hop_limit(),
        }
    }
}

/// `root_volume` as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "`{ size: GiB, type: gp3 }`")]
#[schemars(rename = "RootVolumeConfig")]
pub(super) struct RawRootVolume {
    /// Size in GiB [default: the image's].
    #[serde(default)]
    size: Option<u32>,
    /// EBS volume type: gp3, gp2 or standard [default: gp3].
    #[serde(default = "default_volume_type", rename = "type")]
    volume_type: String,
}

impl Default for RawRootVolume {
    fn default() -> Self {
        RawRootVolume {
            size: None,
            volume_type: default_volume_type(),
        }
    }
}

/// The shape's settings as written under one section.
pub(super) struct RawShape {
    pub(super) instance_type: String,
    pub(super) security_groups: Vec<String>,
    pub(super) instance_profile: Option<String>,
    pub(super) key_name: Option<String>,
    pub(super) metadata: RawMetadata,
    pub(super) root_volume: RawRootVolume,
}

/// The EBS types a root volume can have without more settings (st1 and
/// sc1 cannot boot; io1 and io2 need provisioned IOPS, which the config
/// does not take).
const VOLUME_TYPES: [&str; 3] = ["gp3", "gp2", "standard"];

impl InstanceShape {
    /// Checks the settings as written under `section` (e.g. `build`,
    /// `environments.prod1`).
    pub(super) fn check(section: &str, raw: RawShape) -> Checked<InstanceShape> {
        check::instance_type(&format!("{section}.instance_type"), &raw.instance_type)?;
        for sg in &raw.security_groups {
            check::prefixed(&format!("{section}.security_groups"), sg, "sg-")?;
        }
        let tokens_required = match raw.metadata.tokens.as_str() {
            "required" => true,
            "optional" => false,
            other => {
                return Err(format!(
                    "{section}.metadata.tokens: {other:?} is neither `required` (IMDSv2 only) nor `optional`"
                ));
            }
        };
        if !(1..=64).contains(&raw.metadata.hop_limit) {
            return Err(format!(
                "{section}.metadata.hop_limit: {} is not between 1 and 64",
                raw.metadata.hop_limit
            ));
        }
        let volume = raw.root_volume;
        if !VOLUME_TYPES.contains(&volume.volume_type.as_str()) {
            return Err(format!(
                "{section}.root_volume.type: {:?} is not an EBS volume type ({})",
                volume.volume_type,
                VOLUME_TYPES.join(", ")
            ));
        }
        if let Some(size) = volume.size
            && !(1..=16384).contains(&size)
        {
            return Err(format!(
                "{section}.root_volume.size: {size} GiB is not between 1 and 16384"
            ));
        }
        Ok(InstanceShape {
            instance_type: raw.instance_type,
            security_groups: raw.security_groups,
            instance_profile: raw.instance_profile,
            key_name: raw.key_name,
            metadata: MetadataOptions {
                tokens_required,
                hop_limit: raw.metadata.hop_limit,
            },
            root_volume: RootVolume {
                size_gib: volume.size,
                volume_type: volume.volume_type,
                encryption: Encryption::AsImage,
            },
        })
    }

    /// The same shape with another instance type (a task that needs a
    /// bigger machine than its environment's).
    pub fn with_type(&self, instance_type: &str) -> InstanceShape {
        InstanceShape {
            instance_type: instance_type.to_string(),
            ..self.clone()
        }
    }
}

pub(super) fn default_instance_type() -> String {
    "t3.micro".to_string()
}

fn default_tokens() -> String {
    "required".to_string()
}

fn default_hop_limit() -> u8 {
    1
}

fn default_volume_type() -> String {
    "gp3".to_string()
}
