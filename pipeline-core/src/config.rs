//! `pipeline.yaml`: parsing and validation.
//!
//! [`Config::load`] reads the file, rejects unknown keys (serde names the key,
//! line and column), and validates every value before any AWS call is made.
//! A `Config` that loaded is safe to plan from: the stages never re-check it.
//! Every key is documented in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// The whole `pipeline.yaml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The application's name: tagged as `pipeline:app`, used in AMI names.
    pub app: String,
    /// The home AWS region: builds and environments live here.
    pub region: String,
    /// Where the pipeline keeps state that tags cannot hold.
    pub state: StateConfig,
    /// How to bake the AMI.
    pub build: BuildConfig,
    /// The environments deploys go to, by name.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// The blue/green flip between two production slots.
    #[serde(default)]
    pub promote: Option<PromoteConfig>,
    /// Webhooks told about stage events (started, succeeded, failed,
    /// promoted, rolled_back).
    #[serde(default)]
    pub notify: Vec<WebhookConfig>,
}

/// One webhook of the `notify` list: where events are POSTed, as JSON.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (http or https). Give this or `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// The name of an environment variable holding the URL, for URLs that
    /// are secrets (a Slack incoming webhook is).
    #[serde(default)]
    pub url_env: Option<String>,
    /// A header carrying a secret, its value read from an environment variable.
    #[serde(default)]
    pub secret_header: Option<SecretHeader>,
    /// Which events to send [default: all].
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    /// How long one delivery attempt may take.
    #[serde(default = "default_webhook_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// How many attempts before giving up with a warning.
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    #[serde(default = "default_webhook_backoff", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub backoff: Duration,
}

/// `secret_header`: a header whose value comes from the environment, so
/// the secret is never in the config file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretHeader {
    /// The header's name, e.g. `X-Pipeline-Token`.
    pub name: String,
    /// The environment variable holding its value.
    pub env: String,
}

/// A stage event a webhook can be told about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    serde::Serialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A stage began.
    Started,
    /// A stage (test, build, deploy, task) finished its work.
    Succeeded,
    /// A stage failed (and left things safe).
    Failed,
    /// Promote moved traffic to a slot.
    Promoted,
    /// Rollback moved traffic back.
    RolledBack,
}

impl EventKind {
    /// Every event, in the order a run can emit them.
    pub const ALL: [EventKind; 5] = [
        EventKind::Started,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Promoted,
        EventKind::RolledBack,
    ];

    /// Its name in the config and in the JSON sent (`rolled_back`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack => "rolled_back",
        }
    }
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_webhook_attempts() -> u32 {
    3
}

fn default_webhook_backoff() -> Duration {
    Duration::from_secs(1)
}

/// The `promote` section: the public record and the two slots it flips between.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteConfig {
    /// The Route53 hosted zone id of the record (`Z...`).
    pub hosted_zone: String,
    /// The public record, e.g. `www.example.com`.
    pub record: String,
    /// How the record points at the live slot's balancer.
    #[serde(default)]
    pub record_type: RecordType,
    /// TTL of a CNAME record, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: i64,
    /// The two slots, each an environment with its own balancer.
    #[serde(default = "default_slots")]
    pub slots: [String; 2],
    /// At least this many healthy instances of the expected commit in the
    /// target slot (the slot's `count` if more).
    #[serde(default)]
    pub min_healthy: u32,
    /// How long Route53 may take to apply the change (INSYNC).
    #[serde(default = "default_promote_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// How often the change's status is polled.
    #[serde(default = "default_promote_poll", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// A gradual shift: the target slot's share of traffic at each step, in
    /// percent, rising to 100 (e.g. `[10, 50, 100]`), with weighted records.
    /// Empty: one flip.
    #[serde(default)]
    pub steps: Vec<u8>,
    /// How long each step below 100 % holds before the next (the target's
    /// health is re-checked before every step).
    #[serde(default = "default_bake", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub bake: Duration,
}

fn default_bake() -> Duration {
    Duration::from_secs(5 * 60)
}

/// How the public record points at a balancer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordType {
    /// A CNAME to the balancer's DNS name.
    #[default]
    Cname,
    /// An ALIAS A record to the balancer (with its canonical hosted zone id).
    Alias,
}

fn default_ttl() -> i64 {
    60
}

fn default_slots() -> [String; 2] {
    ["prod1".to_string(), "prod2".to_string()]
}

fn default_promote_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_promote_poll() -> Duration {
    Duration::from_secs(2)
}

/// The `state` section: the S3 bucket for locks and the audit ledger.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The bucket name.
    pub bucket: String,
    /// An optional key prefix inside the bucket.
    #[serde(default)]
    pub prefix: Option<String>,
    /// How long a release lock lives without its holder's heartbeat (renewed
    /// every quarter of it): how soon a killed run's lock can be taken over.
    #[serde(default = "default_lock_ttl", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub lock_ttl: Duration,
}

fn default_lock_ttl() -> Duration {
    Duration::from_secs(60)
}

impl StateConfig {
    /// What every state key starts with: the prefix and a `/`, or nothing
    /// when there is no prefix (or an empty one).
    pub fn key_prefix(&self) -> String {
        match self.prefix.as_deref().map(|p| p.trim_end_matches('/')) {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        }
    }

    /// The lock plan: this lifetime, waiting up to `wait` for a held lock.
    pub fn lock_plan(&self, wait: Duration) -> crate::lock::LockPlan {
        crate::lock::LockPlan {
            ttl: self.lock_ttl,
            wait,
            poll: (self.lock_ttl / 12).clamp(Duration::from_millis(250), Duration::from_secs(5)),
        }
    }
}

/// The `build` section: how the AMI is baked.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The image the builder starts from.
    pub base_image: BaseImage,
    /// The builder's instance type.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// The subnet the builder runs in; the account's default VPC if unset.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Security groups for the builder.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Instance profile (name) for the builder, if provisioning needs AWS access.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// EC2 key pair for the builder, for debugging a bake by hand.
    #[serde(default)]
    pub key_name: Option<String>,
    /// The provisioning script, inline. Exactly one of `provision` and `provision_file`.
    #[serde(default)]
    pub provision: Option<String>,
    /// The provisioning script, as a path relative to the config file.
    #[serde(default)]
    pub provision_file: Option<PathBuf>,
    /// How long provisioning may take until the builder has powered off.
    #[serde(default = "default_build_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// How long CreateImage (and each copy) may take until the AMI is available.
    #[serde(default = "default_image_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub image_timeout: Duration,
    /// How often waits poll AWS.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// Other regions to copy the AMI to (tags carried).
    #[serde(default)]
    pub copy_to_regions: Vec<String>,
    /// AWS account ids granted launch permission on the AMI (and its copies).
    #[serde(default)]
    pub share_with: Vec<String>,
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
#[serde(deny_unknown_fields)]
struct RawBaseImage {
    id: Option<String>,
    owner: Option<String>,
    name: Option<String>,
}

impl TryFrom<RawBaseImage> for BaseImage {
    type Error = String;

    fn try_from(raw: RawBaseImage) -> std::result::Result<Self, String> {
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

/// One environment (staging, prod1, ...). Read by `deploy` and `promote`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// How many instances the environment runs.
    pub count: u32,
    /// Instance type of the environment's instances.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Subnets to spread the instances over (one per AZ). Not used (and may
    /// be left out) with `auto_scaling_group`, which has its own.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// An Auto Scaling group (with a launch template) that owns the
    /// instances: deploy then brings new instances up through the group.
    #[serde(default)]
    pub auto_scaling_group: Option<String>,
    /// Security groups of the instances.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Instance profile (name) of the instances.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// EC2 key pair of the instances.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Environment-specific settings, delivered to the instance as user-data.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The load balancer the instances serve behind.
    pub load_balancer: LoadBalancer,
    /// How long new instances may take to be running and healthy in the balancer.
    #[serde(default = "default_health_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub health_timeout: Duration,
    /// How long every new instance must stay healthy, without a break,
    /// before the old fleet leaves (catches an app that passes its first
    /// health checks and then crashes).
    #[serde(default = "default_healthy_for", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub healthy_for: Duration,
    /// The most a deploy waits for old instances to drain (the balancer's own
    /// draining delay, if shorter, wins).
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub drain_timeout: Duration,
    /// How often deploy waits poll AWS.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// One-off release tasks (database migrations, say), by name, run in
    /// the order written, each on a one-shot instance from the release's AMI.
    #[serde(default)]
    pub tasks: IndexMap<String, TaskConfig>,
}

/// One release task: a command run once per release on its own instance.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The shell command, run with the environment's settings exported
    /// (e.g. `bin/rails db:migrate`).
    pub command: String,
    /// When a deploy runs it.
    #[serde(default)]
    pub when: TaskWhen,
    /// The deadline for the task instance to run the command and power off.
    #[serde(default = "default_task_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Instance type of the task instance [default: the environment's].
    #[serde(default)]
    pub instance_type: Option<String>,
}

/// When a deploy runs a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskWhen {
    /// Once the new instances run, before any of them takes traffic.
    #[default]
    BeforeTraffic,
    /// Before the new instances are launched.
    BeforeLaunch,
    /// Never by itself: only `pipeline task` runs it.
    Manual,
}

fn default_task_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// Which balancer an environment serves behind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(try_from = "RawLoadBalancer")]
pub enum LoadBalancer {
    /// A Classic ELB, by name.
    Classic(String),
    /// An ALB or NLB target group, by ARN.
    TargetGroup(String),
}

/// `load_balancer` as written: `classic: NAME` or `target_group: ARN`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawLoadBalancer {
    classic: Option<String>,
    target_group: Option<String>,
}

impl TryFrom<RawLoadBalancer> for LoadBalancer {
    type Error = String;

    fn try_from(raw: RawLoadBalancer) -> std::result::Result<Self, String> {
        match (raw.classic, raw.target_group) {
            (Some(name), None) => Ok(LoadBalancer::Classic(name)),
            (None, Some(arn)) => Ok(LoadBalancer::TargetGroup(arn)),
            _ => Err("load_balancer: give `classic: NAME` (a Classic ELB) or `target_group: ARN` (an ALB/NLB target group)".into()),
        }
    }
}

fn default_instance_type() -> String {
    "t3.micro".to_string()
}

fn default_build_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_image_timeout() -> Duration {
    Duration::from_secs(45 * 60)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_healthy_for() -> Duration {
    Duration::from_secs(10)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}

/// Deserializes `90s`, `30m`, `1h30m`, `500ms` or a bare number of seconds.
fn duration<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(de)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// The schema of a duration: `90s`, `30m`, `1h30m`, `500ms`, or seconds.
struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: 90s, 30m, 1h30m, 500ms, or a number of seconds",
            "anyOf": [
                { "type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// The JSON Schema of `pipeline.yaml`, for editors (YAML language servers
/// read JSON Schema). Unknown keys are not allowed, as in [`Config::load`].
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

/// Parses a duration such as `90s`, `30m`, `1h30m` or `250ms`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it like 90s, 30m, 1h30m or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let step = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += step;
        rest = &rest[unit..];
    }
    Ok(total)
}

/// The size EC2 accepts for user-data before base64 encoding.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(
                &shown,
                format!("cannot read it: {e}; pass --config with the path to your pipeline.yaml"),
            )
        })?;
        let mut config = Config::parse(&text, &shown)?;
        if let Some(file) = config.build.provision_file.take() {
            let file = path.parent().unwrap_or(Path::new(".")).join(file);
            let script = std::fs::read_to_string(&file).map_err(|e| {
                Error::config(
                    &shown,
                    format!("build.provision_file: cannot read {}: {e}", file.display()),
                )
            })?;
            config.build.provision = Some(script);
        }
        config.validate().map_err(|m| Error::config(&shown, m))?;
        Ok(config)
    }

    /// Parses config text; `origin` names it in errors. A `provision_file`
    /// is left for [`Config::load`] to read; this checks everything else.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let config: Config =
            serde_yaml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        let mut check = config.clone();
        if check.build.provision_file.is_some() && check.build.provision.is_none() {
            // The file is read by `load`; validate the rest with a stand-in.
            check.build.provision = Some("#!/bin/sh\n".into());
            check.build.provision_file = None;
        }
        check.validate().map_err(|m| Error::config(origin, m))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        check_name("app", &self.app, 32)?;
        check_region("region", &self.region)?;
        check_bucket(&self.state.bucket)?;
        if let Some(prefix) = &self.state.prefix
            && (prefix.starts_with('/') || prefix.contains("//"))
        {
            return Err(format!(
                "state.prefix: {prefix:?} must not start with / or contain //"
            ));
        }
        if self.state.lock_ttl < Duration::from_secs(1)
            || self.state.lock_ttl > Duration::from_secs(3600)
        {
            return Err("state.lock_ttl: must be 1s to 1h".into());
        }
        self.build.validate()?;
        for (name, env) in &self.environments {
            check_name("environments", name, 32)?;
            env.validate(name)?;
        }
        if let Some(promote) = &self.promote {
            promote.validate(&self.environments)?;
        }
        for (i, hook) in self.notify.iter().enumerate() {
            hook.validate(&format!("notify[{i}]"))?;
        }
        Ok(())
    }

    /// Environment `name`; an unknown one is bad input that lists the known.
    pub fn environment(&self, name: &str) -> Result<&EnvironmentConfig> {
        self.environments.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            Error::Input(format!(
                "no environment {name:?} in the config; known: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// The user-data the builder runs: the provisioning script wrapped so that
    /// it reports its exit status on the console and powers the machine off.
    pub fn builder_user_data(&self) -> String {
        wrap_provision_script(self.build.provision.as_deref().unwrap_or_default())
    }
}

impl BuildConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        match &self.base_image {
            BaseImage::Id { id } => check_prefixed("build.base_image.id", id, "ami-")?,
            BaseImage::Lookup { owner, name } => {
                if owner.trim().is_empty() || name.trim().is_empty() {
                    return Err(
                        "build.base_image: give `id: ami-...`, or `owner` and `name` to look it up"
                            .into(),
                    );
                }
            }
        }
        check_instance_type("build.instance_type", &self.instance_type)?;
        if let Some(subnet) = &self.subnet {
            check_prefixed("build.subnet", subnet, "subnet-")?;
        }
        for sg in &self.security_groups {
            check_prefixed("build.security_groups", sg, "sg-")?;
        }
        let script = match (&self.provision, &self.provision_file) {
            (Some(_), Some(_)) => {
                return Err("build: give either `provision` or `provision_file`, not both".into())
            }
            (None, None) => {
                return Err("build.provision: missing; give the provisioning script inline, or `provision_file`".into())
            }
            (Some(script), None) => script,
            (None, Some(_)) => return Ok(()),
        };
        if !script.starts_with("#!") {
            return Err(
                "build.provision: the script must start with a shebang line such as #!/bin/bash"
                    .into(),
            );
        }
        if script.lines().any(|l| l.trim() == PROVISION_DELIMITER) {
            return Err(format!(
                "build.provision: the script must not contain a line {PROVISION_DELIMITER}"
            ));
        }
        let size = wrap_provision_script(script).len();
        if size > USER_DATA_LIMIT {
            return Err(format!(
                "build.provision: the wrapped script is {size} bytes; EC2 user-data takes at most {USER_DATA_LIMIT}. Move the bulk into a file your script downloads."
            ));
        }
        for (key, value) in [
            ("build.timeout", self.timeout),
            ("build.image_timeout", self.image_timeout),
            ("build.poll_interval", self.poll_interval),
        ] {
            if value.is_zero() {
                return Err(format!("{key}: must be more than zero"));
            }
        }
        if self.poll_interval > self.timeout {
            return Err("build.poll_interval: must be shorter than build.timeout".into());
        }
        for region in &self.copy_to_regions {
            check_region("build.copy_to_regions", region)?;
        }
        for account in &self.share_with {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "build.share_with: {account:?} is not a 12-digit AWS account id"
                ));
            }
        }
        Ok(())
    }
}

impl PromoteConfig {
    /// The hosted zone's bare id (`hosted_zone` may be given as
    /// `/hostedzone/ID`, as Route53 prints it).
    pub fn zone_id(&self) -> &str {
        self.hosted_zone.trim_start_matches("/hostedzone/")
    }

    fn validate(
        &self,
        environments: &BTreeMap<String, EnvironmentConfig>,
    ) -> std::result::Result<(), String> {
        let zone = self.zone_id();
        if zone.is_empty() || zone.len() > 32 || !zone.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "promote.hosted_zone: {:?} is not a Route53 hosted zone id (such as Z0123456789ABCDEFGHIJ)",
                self.hosted_zone
            ));
        }
        let record = self.record.trim_end_matches('.');
        let ok = record.contains('.')
            && record.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(format!(
                "promote.record: {:?} is not a DNS name such as www.example.com",
                self.record
            ));
        }
        if self.slots[0] == self.slots[1] {
            return Err("promote.slots: name two different environments".into());
        }
        for slot in &self.slots {
            if !environments.contains_key(slot) {
                return Err(format!(
                    "promote.slots: {slot:?} is not an environment in this config"
                ));
            }
        }
        if !self.steps.is_empty() {
            let rising = self.steps.windows(2).all(|w| w[0] < w[1]);
            if !rising || self.steps[0] == 0 || self.steps.last() != Some(&100) {
                return Err(format!(
                    "promote.steps: {:?} must rise from above 0 to 100, e.g. [10, 50, 100]",
                    self.steps
                ));
            }
        }
        if !(0..=172_800).contains(&self.ttl) {
            return Err("promote.ttl: must be 0 to 172800 seconds".into());
        }
        if self.timeout.is_zero() || self.poll_interval.is_zero() {
            return Err("promote.timeout and promote.poll_interval: must be more than zero".into());
        }
        Ok(())
    }
}

impl EnvironmentConfig {
    fn validate(&self, name: &str) -> std::result::Result<(), String> {
        let key = |k: &str| format!("environments.{name}.{k}");
        if self.count == 0 {
            return Err(format!("{}: must be at least 1", key("count")));
        }
        match &self.auto_scaling_group {
            None if self.subnets.is_empty() => {
                return Err(format!(
                    "{}: name at least one subnet (or an auto_scaling_group)",
                    key("subnets")
                ));
            }
            Some(group) if group.is_empty() || group.len() > 255 || group.contains(':') => {
                return Err(format!(
                    "{}: {group:?} is not an Auto Scaling group name",
                    key("auto_scaling_group")
                ));
            }
            _ => {}
        }
        for subnet in &self.subnets {
            check_prefixed(&key("subnets"), subnet, "subnet-")?;
        }
        for sg in &self.security_groups {
            check_prefixed(&key("security_groups"), sg, "sg-")?;
        }
        check_instance_type(&key("instance_type"), &self.instance_type)?;
        match &self.load_balancer {
            LoadBalancer::Classic(name) => {
                let ok = (1..=32).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-');
                if !ok {
                    return Err(format!(
                        "{}: {name:?} is not a Classic ELB name (1-32 letters, digits, dashes)",
                        key("load_balancer.classic")
                    ));
                }
            }
            LoadBalancer::TargetGroup(arn) => {
                if !(arn.starts_with("arn:aws") && arn.contains(":targetgroup/")) {
                    return Err(format!(
                        "{}: {arn:?} is not a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)",
                        key("load_balancer.target_group")
                    ));
                }
            }
        }
        if self.healthy_for >= self.health_timeout {
            return Err(format!(
                "{}: must be shorter than health_timeout",
                key("healthy_for")
            ));
        }
        // drain_timeout may be zero: no waiting for connections to drain.
        for (k, value) in [
            ("health_timeout", self.health_timeout),
            ("poll_interval", self.poll_interval),
        ] {
            if value.is_zero() {
                return Err(format!("{}: must be more than zero", key(k)));
            }
        }
        if let Some((setting, _)) = self.settings.iter().find(|(_, v)| v.contains('\n')) {
            return Err(format!(
                "{}: the value of {setting} spans lines; settings are single-line values",
                key("settings")
            ));
        }
        for (task, t) in &self.tasks {
            let k = key(&format!("tasks.{task}"));
            check_name(&key("tasks"), task, 32)?;
            if t.command.trim().is_empty() {
                return Err(format!("{k}.command: give the command to run"));
            }
            if t.timeout.is_zero() {
                return Err(format!("{k}.timeout: must be more than zero"));
            }
            if let Some(instance_type) = &t.instance_type {
                check_instance_type(&format!("{k}.instance_type"), instance_type)?;
            }
        }
        for setting in self.settings.keys() {
            check_env_name(&key("settings"), setting)?;
        }
        Ok(())
    }
}

impl EnvironmentConfig {
    /// The user-data of the environment's instances: the settings written to
    /// `/etc/pipeline/environment` (one `KEY='value'` a line, sourceable by a
    /// shell and readable by systemd's `EnvironmentFile=`), so one AMI runs
    /// in every environment.
    pub fn user_data(&self, app: &str, env: &str) -> String {
        let mut script = format!(
            "#!/bin/sh\n# pipeline: settings of {app} in {env}\nmkdir -p /etc/pipeline\ncat > /etc/pipeline/environment <<'{SETTINGS_DELIMITER}'\n"
        );
        script.push_str(&format!("PIPELINE_APP='{app}'\nPIPELINE_ENV='{env}'\n"));
        for (key, value) in &self.settings {
            script.push_str(&format!("{key}='{}'\n", value.replace('\'', "'\\''")));
        }
        script.push_str(SETTINGS_DELIMITER);
        script.push('\n');
        script
    }
}

impl WebhookConfig {
    fn validate(&self, key: &str) -> std::result::Result<(), String> {
        match (&self.url, &self.url_env) {
            (Some(url), None) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    // The URL may be a secret: name the key, not the value.
                    return Err(format!("{key}.url: must start with https:// or http://"));
                }
            }
            (None, Some(var)) => check_env_name(&format!("{key}.url_env"), var)?,
            _ => {
                return Err(format!(
                    "{key}: give the webhook's `url`, or `url_env` naming the environment variable that holds it"
                ));
            }
        }
        if let Some(header) = &self.secret_header {
            let ok = !header.name.is_empty()
                && header
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!(
                    "{key}.secret_header.name: {:?} is not an HTTP header name",
                    header.name
                ));
            }
            check_env_name(&format!("{key}.secret_header.env"), &header.env)?;
        }
        if self.events.is_empty() {
            return Err(format!(
                "{key}.events: name at least one of started, succeeded, failed, promoted, rolled_back (or leave it out for all)"
            ));
        }
        if self.attempts == 0 || self.attempts > 10 {
            return Err(format!("{key}.attempts: must be 1 to 10"));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err(format!(
                "{key}.timeout: must be more than zero and at most 60s"
            ));
        }
        if self.backoff > Duration::from_secs(60) {
            return Err(format!("{key}.backoff: must be at most 60s"));
        }
        Ok(())
    }
}

fn check_env_name(key: &str, name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {name:?} is not an environment variable name"
        ))
    }
}

const SETTINGS_DELIMITER: &str = "PIPELINE_SETTINGS_EOF";

const PROVISION_DELIMITER: &str = "PIPELINE_PROVISION_EOF";

/// The console line the wrapper prints when the provisioning script fails.
pub const PROVISION_FAILED_MARKER: &str = "pipeline-provision: FAILED";

fn wrap_provision_script(script: &str) -> String {
    format!(
        "#!/bin/sh
# pipeline builder: run the provisioning script, report, power off.
cat > /var/tmp/pipeline-provision <<'{PROVISION_DELIMITER}'
{script}
{PROVISION_DELIMITER}
chmod 0755 /var/tmp/pipeline-provision
/var/tmp/pipeline-provision
status=$?
if [ \"$status\" -eq 0 ]; then verdict='pipeline-provision: ok'; else verdict=\"{PROVISION_FAILED_MARKER} exit $status\"; fi
echo \"$verdict\"
echo \"$verdict\" > /dev/console 2>/dev/null || true
sync
poweroff || shutdown -h now
"
    )
}

fn check_name(key: &str, value: &str, max: usize) -> std::result::Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} must be 1-{max} lowercase letters, digits and inner dashes"
        ))
    }
}

fn check_region(key: &str, value: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} is not an AWS region name such as us-east-1"
        ))
    }
}

fn check_bucket(value: &str) -> std::result::Result<(), String> {
    let ok = (3..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "state.bucket: {value:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)"
        ))
    }
}

fn check_prefixed(key: &str, value: &str, prefix: &str) -> std::result::Result<(), String> {
    let rest = value.strip_prefix(prefix).unwrap_or_default();
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} is not an id of the form {prefix}..."
        ))
    }
}

fn check_instance_type(key: &str, value: &str) -> std::result::Result<(), String> {
    let ok = value.split_once('.').is_some_and(|(family, size)| {
        !family.is_empty()
            && !size.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} is not an instance type such as t3.micro"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
app: shop
region: us-east-1
state:
  bucket: shop-pipeline-state
build:
  base_image: { owner: self, name: "debian-12-*" }
  subnet: subnet-0a1b2c
  provision: |
    #!/bin/bash
    apt-get install -y nginx
  timeout: 20m
  copy_to_regions: [eu-west-1]
  share_with: ["123456789012"]
environments:
  staging:
    count: 2
    subnets: [subnet-0a1b2c, subnet-0d4e5f]
    settings: { RAILS_ENV: staging }
    load_balancer: { classic: shop-staging }
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "pipeline.yaml")
    }

    #[test]
    fn the_documented_full_example_is_valid() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```yaml\n").expect("a yaml block") + 8;
        let end = start + doc[start..].find("```").expect("its end");
        let config = parse(&doc[start..end]).unwrap();
        let tasks = &config.environments["prod1"].tasks;
        assert_eq!(tasks["migrate"].when, TaskWhen::BeforeTraffic);
        assert_eq!(tasks["migrate"].timeout, Duration::from_secs(20 * 60));
        assert_eq!(config.notify.len(), 2);
        assert_eq!(config.notify[0].events.len(), 4);
        assert_eq!(config.notify[1].events, EventKind::ALL);
        assert_eq!(config.notify[1].attempts, 3);
    }

    #[test]
    fn tasks_and_webhooks_are_checked() {
        let with = |extra: &str| parse(&format!("{GOOD}{extra}"));
        let task = |body: &str| with(&format!("    tasks:\n      migrate:\n{body}"));
        assert!(task("        command: bin/migrate\n        when: before_launch\n").is_ok());
        let err = task("        command: \" \"\n").unwrap_err().to_string();
        assert!(
            err.contains("environments.staging.tasks.migrate.command"),
            "{err}"
        );
        let err = task("        command: x\n        when: later\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `later`"), "{err}");
        let err = with("    tasks:\n      Migrate: { command: x }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("environments.staging.tasks"), "{err}");

        let hook = |body: &str| with(&format!("notify:\n  - {body}\n"));
        assert!(hook("{ url: \"https://hooks.example.com/x\" }").is_ok());
        let err = hook("{ events: [failed] }").unwrap_err().to_string();
        assert!(err.contains("notify[0]: give the webhook's `url`"), "{err}");
        let err = hook("{ url: \"ftp://secret@host/path\" }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notify[0].url: must start with https://"),
            "{err}"
        );
        assert!(
            !err.contains("secret@host"),
            "the URL may be a secret: {err}"
        );
        let err = hook("{ url_env: \"1BAD\" }").unwrap_err().to_string();
        assert!(err.contains("notify[0].url_env"), "{err}");
        let err = hook("{ url_env: HOOK, attempts: 0 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("notify[0].attempts: must be 1 to 10"), "{err}");
        let err = hook("{ url_env: HOOK, events: [deployed] }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `deployed`"), "{err}");
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_full_config_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.app, "shop");
        assert_eq!(
            c.build.base_image,
            BaseImage::Lookup {
                owner: "self".into(),
                name: "debian-12-*".into()
            }
        );
        assert_eq!(c.build.timeout, Duration::from_secs(1200));
        assert_eq!(c.build.image_timeout, Duration::from_secs(45 * 60));
        assert_eq!(c.build.instance_type, "t3.micro");
        assert_eq!(c.environments["staging"].count, 2);
        let user_data = c.builder_user_data();
        assert!(user_data.contains("apt-get install -y nginx"));
        assert!(user_data.contains("poweroff"));
        assert!(user_data.contains(PROVISION_FAILED_MARKER));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = GOOD.replace("  timeout: 20m", "  timeout: 20m\n  timout: 5m");
        let m = message(&text);
        assert!(m.contains("unknown field `timout`"), "{m}");
        assert!(m.contains("line 13 column 3"), "{m}");
        assert!(m.starts_with("config pipeline.yaml:"), "{m}");
    }

    #[test]
    fn unknown_key_in_environment_is_rejected() {
        let m = message(&GOOD.replace("count: 2", "count: 2\n    cuont: 3"));
        assert!(m.contains("unknown field `cuont`"), "{m}");
    }

    #[test]
    fn missing_base_image_is_an_error() {
        let text = GOOD.replace("  base_image: { owner: self, name: \"debian-12-*\" }\n", "");
        assert!(message(&text).contains("missing field `base_image`"));
        let text = GOOD.replace("{ owner: self, name: \"debian-12-*\" }", "{ owner: self }");
        let m = message(&text);
        assert!(m.contains("both `owner` and `name`"), "{m}");
        assert!(m.contains("line 7"), "{m}");
        let text = GOOD.replace("{ owner: self, name: \"debian-12-*\" }", "{ id: ami-xyz }");
        assert!(message(&text).contains("build.base_image.id"));
    }

    #[test]
    fn values_are_validated() {
        let cases = [
            ("app: shop", "app: Shop!", "app:"),
            ("region: us-east-1", "region: useast", "region:"),
            ("bucket: shop-pipeline-state", "bucket: S", "state.bucket"),
            ("timeout: 20m", "timeout: 20x", "not a duration"),
            ("timeout: 20m", "timeout: 0s", "build.timeout: must be more"),
            ("subnet: subnet-0a1b2c", "subnet: sn-1", "build.subnet"),
            ("[eu-west-1]", "[europe]", "build.copy_to_regions"),
            ("[\"123456789012\"]", "[\"1234\"]", "12-digit"),
            ("#!/bin/bash\n", "set -e\n", "shebang"),
            ("count: 2", "count: 0", "environments.staging.count"),
            ("RAILS_ENV: staging", "RAILS-ENV: x", "environment variable"),
            (
                "{ classic: shop-staging }",
                "{ classic: shop_staging }",
                "Classic ELB name",
            ),
            (
                "{ classic: shop-staging }",
                "{ target_group: tg-1 }",
                "target group ARN",
            ),
            ("{ classic: shop-staging }", "{ }", "give `classic: NAME`"),
        ];
        for (from, to, expect) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let m = message(&text);
            assert!(m.contains(expect), "{to}: {m}");
        }
    }

    #[test]
    fn provision_and_provision_file_are_exclusive() {
        let text = GOOD.replace("  timeout: 20m", "  timeout: 20m\n  provision_file: p.sh");
        assert!(message(&text).contains("not both"));
        let without = GOOD.replace(
            "  provision: |\n    #!/bin/bash\n    apt-get install -y nginx\n",
            "",
        );
        assert!(message(&without).contains("build.provision: missing"));
    }

    #[test]
    fn oversized_user_data_is_rejected() {
        let big = format!("    echo {}\n", "x".repeat(USER_DATA_LIMIT));
        let text = GOOD.replace("    apt-get install -y nginx\n", &big);
        assert!(message(&text).contains("at most 16384"));
    }

    #[test]
    fn load_reads_provision_file_relative_to_config() {
        let dir = std::env::temp_dir().join(format!("pipeline-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bake.sh"), "#!/bin/sh\necho baked\n").unwrap();
        let text = GOOD.replace(
            "  provision: |\n    #!/bin/bash\n    apt-get install -y nginx\n",
            "  provision_file: bake.sh\n",
        );
        std::fs::write(dir.join("pipeline.yaml"), text).unwrap();
        let c = Config::load(&dir.join("pipeline.yaml")).unwrap();
        assert!(c.builder_user_data().contains("echo baked"));
        std::fs::write(dir.join("bake.sh"), "echo no shebang\n").unwrap();
        let m = Config::load(&dir.join("pipeline.yaml"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("shebang"), "{m}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_settings_become_user_data() {
        let c = parse(&GOOD.replace(
            "RAILS_ENV: staging",
            "RAILS_ENV: staging, GREETING: \"it's\"",
        ))
        .unwrap();
        let env = &c.environments["staging"];
        assert_eq!(
            env.load_balancer,
            LoadBalancer::Classic("shop-staging".into())
        );
        assert_eq!(env.health_timeout, Duration::from_secs(600));
        let data = env.user_data("shop", "staging");
        assert!(data.contains("PIPELINE_ENV='staging'\n"), "{data}");
        assert!(data.contains("RAILS_ENV='staging'\n"), "{data}");
        assert!(data.contains("GREETING='it'\\''s'\n"), "{data}");
        // The script is valid shell: run it with the file path rewritten.
        let dir = std::env::temp_dir().join(format!("pipeline-userdata-{}", std::process::id()));
        let script = data.replace("/etc/pipeline", dir.to_str().unwrap());
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}/environment; printf %s \"$GREETING/$RAILS_ENV\"",
                dir.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's/staging");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_schema_mirrors_the_config() {
        let schema = schema();
        let text = schema.to_string();
        assert_eq!(
            schema["additionalProperties"], false,
            "unknown keys are errors"
        );
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, ["app", "region", "state", "build"]);
        for key in ["environments", "promote", "build"] {
            assert!(schema["properties"][key].is_object(), "{key}");
        }
        let defs = &schema["$defs"];
        assert_eq!(defs["BuildConfig"]["additionalProperties"], false);
        assert!(
            defs["BuildConfig"]["properties"]["timeout"]
                .to_string()
                .contains("Duration")
        );
        assert!(defs["Duration"].to_string().contains("1h30m"));
        // base_image and load_balancer take the shape written in YAML.
        assert!(
            text.contains("\"owner\"") && text.contains("\"target_group\""),
            "{text}"
        );
        assert!(defs["RecordType"].to_string().contains("alias"));
        let env_required = defs["EnvironmentConfig"]["required"].to_string();
        assert!(env_required.contains("count") && env_required.contains("load_balancer"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m5").is_err());
    }

    #[test]
    fn state_keys_start_with_the_prefix_and_one_slash() {
        let state = |prefix: Option<&str>| StateConfig {
            bucket: "b".into(),
            prefix: prefix.map(str::to_string),
            lock_ttl: default_lock_ttl(),
        };
        assert_eq!(state(None).key_prefix(), "");
        assert_eq!(state(Some("")).key_prefix(), "");
        assert_eq!(state(Some("ci")).key_prefix(), "ci/");
        assert_eq!(state(Some("ci/")).key_prefix(), "ci/");
    }
}
