//! The ports: async traits the stages talk to, and the plain data they speak.
//!
//! The stages depend only on these traits. `aws/` implements them with the
//! aws-sdk-* clients; unit tests implement them with mockall mocks.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::config::{Encryption, InstanceShape, MetadataOptions};
use crate::error::Result;
use crate::release::Commit;

/// Tag keys the pipeline writes; the truth about what exists lives in them.
pub mod tag {
    /// The app a resource belongs to.
    pub const APP: &str = "pipeline:app";
    /// The full commit SHA a resource was made from.
    pub const COMMIT: &str = "pipeline:commit";
    /// What a resource is for: `builder`, `app` or `task`.
    pub const ROLE: &str = "pipeline:role";
    /// The environment an app instance serves.
    pub const ENV: &str = "pipeline:env";
    /// The run that created a resource.
    pub const RUN: &str = "pipeline:run";
    /// `pipeline:role` of a builder instance.
    pub const ROLE_BUILDER: &str = "builder";
    /// `pipeline:role` of an app image or app instance.
    pub const ROLE_APP: &str = "app";
    /// `pipeline:role` of a one-shot release task instance.
    pub const ROLE_TASK: &str = "task";
    /// On an AMI and its snapshots: the SHA-256 of the artifact it was
    /// baked from (its provenance).
    pub const ARTIFACT_SHA256: &str = "pipeline:artifact-sha256";
    /// The release task a task instance runs.
    pub const TASK: &str = "pipeline:task";
    /// On an Auto Scaling group: the maximum size a deploy in progress
    /// raised it from, and returns it to.
    pub const RESTING_MAX: &str = "pipeline:resting-max";
}

/// Tags as key -> value, ordered so requests are deterministic.
pub type Tags = BTreeMap<String, String>;

/// The lifecycle state of an AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// Being created or copied.
    Pending,
    /// Ready to launch from.
    Available,
    /// Anything else (`failed`, `invalid`, `error`, `deregistered`, ...).
    Other(String),
}

/// An AMI as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The AMI id.
    pub id: String,
    /// The region it lives in.
    pub region: String,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: ImageState,
    /// Creation time as AWS reports it (ISO 8601), used to pick the newest.
    pub created: String,
    /// Its tags.
    pub tags: Tags,
    /// The EBS snapshots behind it.
    pub snapshot_ids: Vec<String>,
    /// Its root volume, to set the root volume's size and type at launch.
    pub root_device: Option<RootDevice>,
}

/// An image's root device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// Its device name (`/dev/xvda`).
    pub name: String,
    /// Its size in GiB, as the image's snapshot has it.
    pub size_gib: Option<u32>,
}

/// An instance's lifecycle state, as EC2 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Booting.
    Pending,
    /// Up (which says nothing of the app on it).
    Running,
    /// Powering off, its disk kept.
    Stopping,
    /// Powered off, its disk kept (a builder whose script ended).
    Stopped,
    /// On its way to terminated.
    ShuttingDown,
    /// Gone; EC2 still lists it for a while.
    Terminated,
    /// A state this version does not know.
    Other(String),
}

impl InstanceState {
    /// Whether it went or is going down: it will never serve.
    pub fn is_down(&self) -> bool {
        matches!(
            self,
            InstanceState::Stopping
                | InstanceState::Stopped
                | InstanceState::ShuttingDown
                | InstanceState::Terminated
        )
    }

    /// EC2's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Other(name) => name,
        }
    }
}

impl From<&str> for InstanceState {
    /// Parses EC2's name of the state.
    fn from(name: &str) -> Self {
        match name {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            other => InstanceState::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// The instance id.
    pub id: String,
    /// Its state.
    pub state: InstanceState,
    /// Why it is in that state, if EC2 says (e.g. `Client.InstanceInitiatedShutdown`).
    pub reason: Option<String>,
    /// Its tags (a task instance reports its verdict in one).
    pub tags: Tags,
}

/// What the OS does when it powers itself off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownBehaviour {
    /// The instance stops and keeps its disk (builders: the disk becomes the AMI).
    Stop,
    /// The instance terminates.
    Terminate,
}

/// One RunInstances request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The AMI to launch.
    pub image_id: String,
    /// Type, security groups, profile and key pair.
    pub shape: InstanceShape,
    /// How many instances.
    pub count: u32,
    /// The subnet, or the default VPC's if `None`.
    pub subnet_id: Option<String>,
    /// User-data (plain text; the adapter encodes it).
    pub user_data: String,
    /// What an OS-initiated shutdown does.
    pub shutdown: ShutdownBehaviour,
    /// The image's root device (from [`Image::root_device`]): the shape's
    /// root volume settings apply to it; `None`: the image's own.
    pub root_device: Option<RootDevice>,
    /// Tags for the instances and their volumes, applied at creation.
    pub tags: Tags,
}

/// An instance of one environment (an app instance, or a release task's
/// one-shot instance), as found through its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInstance {
    /// The instance id.
    pub id: String,
    /// Its `pipeline:role` tag: `app`, `task` (or `builder`, from
    /// [`Instances::instances_of_app`]).
    pub role: String,
    /// Its `pipeline:env` tag (empty for a builder).
    pub env: String,
    /// When it was launched, in Unix milliseconds.
    pub launched_ms: i64,
    /// Its EC2 state.
    pub state: InstanceState,
    /// Its `pipeline:commit` tag.
    pub commit: String,
    /// Its `pipeline:run` tag.
    pub run: String,
    /// The AMI it runs.
    pub image_id: String,
    /// Its `pipeline:artifact-sha256` tag (from its AMI's): the build it runs.
    pub artifact: String,
}

/// Where a balancer answers: what a DNS record points at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// The balancer's DNS name.
    pub dns_name: String,
    /// Its canonical hosted zone id (for ALIAS records).
    pub hosted_zone_id: String,
}

/// What a DNS record points at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// A CNAME to a DNS name.
    Cname(String),
    /// An ALIAS A record to a balancer.
    Alias(Endpoint),
}

impl Target {
    /// The DNS name pointed at, normalised (lowercase, no trailing dot, no
    /// `dualstack.` prefix) so it compares with a balancer's name.
    pub fn host(&self) -> String {
        let name = match self {
            Target::Cname(name) => name,
            Target::Alias(endpoint) => &endpoint.dns_name,
        };
        normalise_host(name)
    }
}

/// A host name, lowercased, without trailing dot or `dualstack.` prefix.
pub fn normalise_host(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.strip_prefix("dualstack.")
        .map(str::to_string)
        .unwrap_or(name)
}

/// One DNS record set: a name, what it points at, its TTL (CNAME only),
/// and for a weighted record its set identifier and weight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The record's name, e.g. `www.example.com`.
    pub name: String,
    /// What it points at.
    pub target: Target,
    /// TTL in seconds (not used by ALIAS records).
    pub ttl: Option<i64>,
    /// `(set identifier, weight)` of a weighted record; `None` for a simple one.
    pub weighted: Option<(String, i64)>,
}

/// A DNS zone (Route53).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Dns: Send + Sync {
    /// The CNAME or ALIAS A record sets at `name` in `zone` (one simple
    /// record, or weighted ones), in one call.
    async fn records(&self, zone: &str, name: &str) -> Result<Vec<Record>>;

    /// Replaces `old` (the exact record sets last read; empty if there were
    /// none) with `new` in ONE change batch: DELETE old + CREATE new. If
    /// someone changed the records since they were read, a DELETE does not
    /// match and the whole batch fails, so nothing is overwritten. Returns
    /// the change id.
    async fn replace(&self, zone: &str, old: &[Record], new: &[Record]) -> Result<String>;

    /// Whether a change has been applied everywhere (INSYNC).
    async fn in_sync(&self, change_id: &str) -> Result<bool>;
}

/// What a balancer says of one registered instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// The instance id.
    pub id: String,
    /// Whether the balancer sends it traffic (InService / healthy).
    pub healthy: bool,
    /// The balancer's own words: state, and reason if any.
    pub state: String,
}

/// A load balancer the instances of an environment serve behind: a Classic
/// ELB or an ALB/NLB target group.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Balancer: Send + Sync {
    /// What it is, for messages (e.g. `classic ELB shop-staging`).
    fn name(&self) -> String;

    /// Every registered instance and its health, in one call.
    async fn registered(&self) -> Result<Vec<TargetHealth>>;

    /// Registers instances, in one call.
    async fn register(&self, ids: &[String]) -> Result<()>;

    /// Deregisters instances, in one call.
    async fn deregister(&self, ids: &[String]) -> Result<()>;

    /// How long the balancer keeps sending in-flight requests to a
    /// deregistered instance (connection draining / deregistration delay).
    async fn draining_delay(&self) -> Result<std::time::Duration>;

    /// The balancer's DNS name and canonical hosted zone, in one or two calls.
    async fn endpoint(&self) -> Result<Endpoint>;

    /// Where its request metrics are on CloudWatch (a target group's need
    /// its load balancer: one call; a Classic ELB's none).
    async fn metric_source(&self) -> Result<MetricSource>;

    /// Whether [`Balancer::registered`] lists draining instances (target
    /// groups do), so a deploy can stop waiting once they are gone; if not
    /// (Classic ELB), the deploy waits out the draining delay.
    fn reports_draining(&self) -> bool;
}

/// What serves environment `env` of `app`: its app instances (role `app`,
/// not terminated) and the ids its `balancer` reports healthy. Two calls.
pub async fn fleet_health(
    instances: &dyn Instances,
    app: &str,
    env: &str,
    balancer: &dyn Balancer,
) -> Result<(Vec<AppInstance>, std::collections::BTreeSet<String>)> {
    let mut members = instances.app_instances(app, env).await?;
    members.retain(|i| i.role == tag::ROLE_APP);
    let healthy = balancer
        .registered()
        .await?
        .into_iter()
        .filter(|h| h.healthy)
        .map(|h| h.id)
        .collect();
    Ok((members, healthy))
}

/// An Auto Scaling group as a deploy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The instances in the group.
    pub instances: Vec<String>,
    /// Its desired capacity.
    pub desired: u32,
    /// Its maximum size.
    pub max: u32,
    /// Its launch template's id.
    pub template_id: String,
    /// The launch template version it launches (a number, `$Latest` or `$Default`).
    pub template_version: String,
    /// Its [`tag::RESTING_MAX`] tag: the maximum size a deploy raised it
    /// from. Present while a deploy runs, so after a killed one.
    pub resting_max: Option<u32>,
}

/// An Auto Scaling group with a launch template (and the EC2 calls on
/// launch templates that go with it).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AutoScaling: Send + Sync {
    /// The group's state, in one call.
    async fn group(&self, name: &str) -> Result<GroupState>;

    /// A new launch template version from `source_version`, with the AMI,
    /// the user-data, the metadata options and the instance tags replaced.
    /// Returns its number.
    async fn new_template_version(
        &self,
        template_id: &str,
        source_version: &str,
        image_id: &str,
        user_data: &str,
        metadata: MetadataOptions,
        tags: &Tags,
    ) -> Result<String>;

    /// Points the group at a launch template version and sets its desired
    /// capacity and maximum size, in one call.
    async fn update(
        &self,
        name: &str,
        template_id: &str,
        template_version: &str,
        desired: u32,
        max: u32,
    ) -> Result<()>;

    /// Suspends the processes that would fight a deploy (AZRebalance,
    /// AlarmNotification, ScheduledActions, ReplaceUnhealthy, HealthCheck).
    async fn suspend(&self, name: &str) -> Result<()>;

    /// Resumes what [`AutoScaling::suspend`] suspended.
    async fn resume(&self, name: &str) -> Result<()>;

    /// The AMI a launch template version launches, if it names one.
    async fn template_image(&self, template_id: &str, version: &str) -> Result<Option<String>>;

    /// Takes instances out of the group, lowering its desired capacity.
    async fn detach(&self, name: &str, ids: &[String]) -> Result<()>;

    /// Tags the group with the maximum size to return to
    /// ([`tag::RESTING_MAX`]), in one call.
    async fn set_resting_max(&self, name: &str, max: u32) -> Result<()>;

    /// Removes the [`tag::RESTING_MAX`] tag, in one call.
    async fn clear_resting_max(&self, name: &str) -> Result<()>;
}

/// AMIs: find, create, copy, share, remove.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Images: Send + Sync {
    /// The image of this app and commit owned by this account in `region`, if
    /// any (the newest, if a race made two).
    async fn find_release_image(
        &self,
        region: &str,
        app: &str,
        commit: &Commit,
    ) -> Result<Option<Image>>;

    /// An image by id in `region`, or `None` if it does not exist.
    async fn image(&self, region: &str, image_id: &str) -> Result<Option<Image>>;

    /// The newest available image of `owner` whose name matches `name_pattern`.
    async fn newest_image(
        &self,
        region: &str,
        owner: &str,
        name_pattern: &str,
    ) -> Result<Option<Image>>;

    /// CreateImage from a (stopped) instance, tagging the image and its
    /// snapshots at creation. Returns the new AMI id.
    async fn create_image(
        &self,
        region: &str,
        instance_id: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<String>;

    /// CopyImage of `source` into `to_region`, tagging the copy and its
    /// snapshots at creation. Returns the copy's AMI id.
    async fn copy_image(
        &self,
        source: &Image,
        to_region: &str,
        tags: &Tags,
        encryption: &Encryption,
    ) -> Result<String>;

    /// Grants launch permission on an image to the given account ids.
    async fn share_image(&self, region: &str, image_id: &str, accounts: &[String]) -> Result<()>;

    /// The account ids that have launch permission on an image.
    async fn launch_permissions(&self, region: &str, image_id: &str) -> Result<Vec<String>>;

    /// Every image of `app` this account owns in `region`, in one call.
    async fn release_images(&self, region: &str, app: &str) -> Result<Vec<Image>>;

    /// Deregisters an image and deletes its snapshots.
    async fn deregister_image(&self, region: &str, image_id: &str) -> Result<()>;
}

/// EC2 instances in the home region.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Instances: Send + Sync {
    /// RunInstances; returns the new instance ids.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<String>>;

    /// The states of the given instances, in one call.
    async fn statuses(&self, ids: &[String]) -> Result<Vec<InstanceStatus>>;

    /// Terminates the given instances, in one call.
    async fn terminate(&self, ids: &[String]) -> Result<()>;

    /// The instance's console output (decoded), empty if there is none yet.
    async fn console_output(&self, id: &str) -> Result<String>;

    /// The instances of `app` in `env` (roles `app` and `task`) that are
    /// not terminated, in one call.
    async fn app_instances(&self, app: &str, env: &str) -> Result<Vec<AppInstance>>;

    /// Every instance of `app` (any role, any environment) that is not
    /// terminated, in one call.
    async fn instances_of_app(&self, app: &str) -> Result<Vec<AppInstance>>;

    /// The instances of `app` tagged with any of the run ids `runs` (any
    /// role) that are not terminated, in one call.
    async fn instances_of_runs(&self, app: &str, runs: &[String]) -> Result<Vec<AppInstance>>;
}

/// What a conditional write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The object was written; its new ETag.
    Done(String),
    /// The condition did not hold (the object exists, or changed since read).
    Refused,
}

/// An object read from the state store, with the ETag to write it back
/// conditionally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The object's bytes.
    pub body: Vec<u8>,
    /// Its ETag.
    pub etag: String,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key, relative to the prefix.
    pub key: String,
    /// When it was last written, in Unix milliseconds.
    pub modified_ms: i64,
}

/// The state store: the S3 bucket (and prefix) under `state` in the config.
/// Keys are relative to the prefix.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The object at `key`, or `None` if there is none. One GetObject.
    async fn get(&self, key: &str) -> Result<Option<Stored>>;

    /// Writes `key` only if it does not exist (`If-None-Match: *`).
    async fn put_new(&self, key: &str, body: &[u8]) -> Result<Written>;

    /// Writes `key` only if its ETag is still `etag` (`If-Match`).
    async fn put_if(&self, key: &str, body: &[u8], etag: &str) -> Result<Written>;

    /// Writes `key` unconditionally.
    async fn put(&self, key: &str, body: &[u8]) -> Result<()>;

    /// Deletes `key` (no error if it is gone).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Every object under `prefix`, keys ascending (ListObjectsV2, paged).
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;
}

/// A URL that grants whoever holds it access: a bearer secret. It never
/// shows itself in `Debug` or `Display`; only [`SecretUrl::expose`] gives
/// the text, for the one place that must carry it (the builder's user-data).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL that must not be shown.
    pub fn new(url: String) -> Self {
        SecretUrl(url)
    }

    /// The URL itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretUrl(<redacted>)")
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<presigned URL>")
    }
}

/// Where a build's artifact waits for the builder: the state bucket, under
/// its key prefix.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// The size of the object at `key`, if there is one. One HeadObject.
    async fn stored_size(&self, key: &str) -> Result<Option<u64>>;

    /// Uploads the file at `path` (`size` bytes) to `key`: one PutObject,
    /// or a multipart upload for a large file (aborted if a part fails),
    /// reporting progress as it goes.
    async fn upload(&self, key: &str, path: &std::path::Path, size: u64) -> Result<()>;

    /// A GET URL for `key` that works without credentials for `expires_in`.
    /// Signing is local: no call.
    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<SecretUrl>;
}

/// Where a balancer's request metrics are on CloudWatch: the namespace,
/// the dimensions that pick this balancer, and the metric names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSource {
    /// `AWS/ApplicationELB` or `AWS/ELB`.
    pub namespace: String,
    /// The dimensions, as CloudWatch names them.
    pub dimensions: Vec<(String, String)>,
    /// Requests served (a Sum).
    pub requests: String,
    /// Responses with a 5xx status from the instances (a Sum).
    pub errors_5xx: String,
    /// Time to answer, in seconds (an Average).
    pub latency: String,
}

/// One slot's traffic over a check's period.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Requests served.
    pub requests: f64,
    /// Of those, 5xx responses.
    pub errors_5xx: f64,
    /// Mean time to answer in seconds (`None`: no datapoint).
    pub latency_secs: Option<f64>,
}

/// CloudWatch: the team's alarms and the slots' balancer metrics.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Metrics: Send + Sync {
    /// Those of `alarms` in state ALARM. One DescribeAlarms call.
    async fn firing(&self, alarms: &[String]) -> Result<Vec<String>>;

    /// Both slots' traffic over the last `period`. One GetMetricData call.
    async fn samples(
        &self,
        sources: [MetricSource; 2],
        period: std::time::Duration,
    ) -> Result<[Sample; 2]>;
}
