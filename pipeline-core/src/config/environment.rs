//! One environment of the `environments` map (staging, prod1, ...): where
//! its instances run, how many, behind which balancer, with which settings
//! and release tasks.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::build::default_poll_interval;
use super::check::{self, Checked};
use super::duration::{DurationText, duration};
use super::shape::{InstanceShape, RawMetadata, RawRootVolume, RawShape, default_instance_type};
use super::surge::{RawSurge, SurgeText, max_surge};

/// An environment as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an environment (a mapping with count, subnets and load_balancer)"
)]
#[schemars(rename = "EnvironmentConfig")]
pub(super) struct RawEnvironment {
    /// How many instances the environment runs.
    count: u32,
    /// Instance type of the environment's instances.
    #[serde(default = "default_instance_type")]
    instance_type: String,
    /// Subnets to spread the instances over (one per AZ). Not used (and may
    /// be left out) with `auto_scaling_group`, which has its own; release
    /// tasks run in the first.
    #[serde(default)]
    subnets: Vec<String>,
    /// An Auto Scaling group (with a launch template) that owns the
    /// instances: deploy then brings new instances up through the group.
    #[serde(default)]
    auto_scaling_group: Option<String>,
    /// Security groups of the instances.
    #[serde(default)]
    security_groups: Vec<String>,
    /// Instance profile (name) of the instances.
    #[serde(default)]
    instance_profile: Option<String>,
    /// EC2 key pair of the instances.
    #[serde(default)]
    key_name: Option<String>,
    /// The instances' metadata service [default: IMDSv2 only, one hop].
    #[serde(default)]
    metadata: RawMetadata,
    /// The instances' root volume [default: gp3, the AMI's size].
    #[serde(default)]
    root_volume: RawRootVolume,
    /// Environment-specific settings, delivered to the instance as user-data.
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// Secrets by reference: `NAME: ssm:/path/to/parameter`. Only the
    /// parameter's name is in user-data; the instance reads the value at
    /// boot with its own role into /etc/pipeline/environment (mode 0600).
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// The load balancer the instances serve behind.
    load_balancer: LoadBalancer,
    /// At most this many new instances beside the old fleet at once (a
    /// number, or a percentage of count, rounded up): the new fleet comes
    /// up in batches, each swapped in for as many old instances before the
    /// next launches. Left out: the whole new fleet at once (blue/green).
    /// Subnet placement only.
    #[serde(default, deserialize_with = "max_surge")]
    #[schemars(with = "Option<SurgeText>")]
    max_surge: Option<RawSurge>,
    /// How long new instances may take to be running and healthy in the balancer.
    #[serde(default = "default_health_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    health_timeout: Duration,
    /// How long every new instance must stay healthy, without a break,
    /// before the old fleet leaves (catches an app that passes its first
    /// health checks and then crashes).
    #[serde(default = "default_healthy_for", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    healthy_for: Duration,
    /// The team's own CloudWatch alarms, checked while the new fleet holds
    /// healthy for `healthy_for`: any in ALARM fails the deploy (the new
    /// fleet leaves, the old one keeps serving).
    #[serde(default)]
    alarms: Vec<String>,
    /// The most a deploy waits for old instances to drain (the balancer's own
    /// draining delay, if shorter, wins).
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    drain_timeout: Duration,
    /// How often deploy waits poll AWS.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    poll_interval: Duration,
    /// One-off release tasks (database migrations, say), by name, run in
    /// the order written, each on a one-shot instance from the release's AMI.
    #[serde(default)]
    tasks: IndexMap<String, RawTask>,
}

/// One environment, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentConfig {
    /// How many instances serve: a deploy never leaves fewer healthy.
    pub count: u32,
    /// What each instance is made of.
    pub shape: InstanceShape,
    /// Who launches the instances, and where.
    pub placement: Placement,
    /// What tells one environment from another on the same AMI (written to
    /// `/etc/pipeline/environment` at boot).
    pub settings: BTreeMap<String, String>,
    /// Secrets the instance reads at boot: name -> SSM parameter.
    pub secrets: BTreeMap<String, SecretRef>,
    /// Where the traffic comes from; what "healthy" means.
    pub load_balancer: LoadBalancer,
    /// The most new instances a deploy runs beside the old fleet at once,
    /// in instances (a percentage resolved against `count`): the account
    /// may not hold two whole fleets. `None`: the whole new fleet at once.
    pub max_surge: Option<u32>,
    /// How long a new fleet may take to run and be healthy before the
    /// deploy gives up on it.
    pub health_timeout: Duration,
    /// How long a new fleet must stay healthy before the old one leaves
    /// (an app that crashes after its first health checks is caught).
    pub healthy_for: Duration,
    /// CloudWatch alarms that fail the deploy if in ALARM during `healthy_for`.
    pub alarms: Vec<String>,
    /// The longest a deploy lets the old fleet drain.
    pub drain_timeout: Duration,
    /// How often the deploy's waits look again.
    pub poll_interval: Duration,
    /// The release tasks, in the order a deploy runs them.
    pub tasks: IndexMap<String, TaskConfig>,
}

/// Where a secret's value lives: an SSM Parameter Store parameter
/// (a `SecureString`, read decrypted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRef {
    /// The parameter's name, starting with `/`.
    pub parameter: String,
}

impl SecretRef {
    /// Reads `ssm:/path/to/parameter`.
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        let Some(parameter) = text.strip_prefix("ssm:") else {
            return Err(format!(
                "{text:?} is not a secret reference; write it as ssm:/path/to/parameter"
            ));
        };
        let ok = parameter.starts_with('/')
            && parameter.len() > 1
            && parameter.len() <= 2048
            && parameter
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b));
        if !ok {
            return Err(format!(
                "{parameter:?} is not an SSM parameter name (/path/to/name: letters, digits, / _ . -)"
            ));
        }
        Ok(SecretRef {
            parameter: parameter.to_string(),
        })
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssm:{}", self.parameter)
    }
}

/// Who launches an environment's instances, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The pipeline launches them itself, spread over these subnets (one per AZ).
    Subnets(Vec<String>),
    /// An Auto Scaling group (with a launch template) launches them.
    Group {
        /// The group's name.
        name: String,
        /// Subnets given beside the group: release tasks run in the first.
        subnets: Vec<String>,
    },
}

impl Placement {
    /// The Auto Scaling group, in group mode.
    pub fn group(&self) -> Option<&str> {
        match self {
            Placement::Subnets(_) => None,
            Placement::Group { name, .. } => Some(name),
        }
    }

    /// Where a one-shot task instance runs: the first subnet, or the
    /// default VPC's when none is given.
    pub fn task_subnet(&self) -> Option<&str> {
        match self {
            Placement::Subnets(subnets) | Placement::Group { subnets, .. } => {
                subnets.first().map(String::as_str)
            }
        }
    }
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
#[serde(
    deny_unknown_fields,
    expecting = "`{ classic: NAME }` (a Classic ELB) or `{ target_group: ARN }` (an ALB/NLB target group)"
)]
struct RawLoadBalancer {
    classic: Option<String>,
    target_group: Option<String>,
}

impl TryFrom<RawLoadBalancer> for LoadBalancer {
    type Error = String;

    fn try_from(raw: RawLoadBalancer) -> Result<Self, String> {
        match (raw.classic, raw.target_group) {
            (Some(name), None) => Ok(LoadBalancer::Classic(name)),
            (None, Some(arn)) => Ok(LoadBalancer::TargetGroup(arn)),
            _ => Err("load_balancer: give `classic: NAME` (a Classic ELB) or `target_group: ARN` (an ALB/NLB target group)".into()),
        }
    }
}

impl std::fmt::Display for LoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadBalancer::Classic(name) => write!(f, "classic ELB {name}"),
            LoadBalancer::TargetGroup(arn) => write!(f, "target group {arn}"),
        }
    }
}

/// A release task as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a release task (a mapping with command)"
)]
#[schemars(rename = "TaskConfig")]
struct RawTask {
    /// The shell command, run with the environment's settings exported
    /// (e.g. `bin/rails db:migrate`).
    command: String,
    /// When a deploy runs it.
    #[serde(default)]
    when: TaskWhen,
    /// The deadline for the task instance to run the command and power off.
    #[serde(default = "default_task_timeout", deserialize_with = "duration")]
    #[schemars(with = "DurationText")]
    timeout: Duration,
    /// Instance type of the task instance [default: the environment's].
    #[serde(default)]
    instance_type: Option<String>,
}

/// One release task: a command run once per release on its own instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    /// What the task does, run with the environment's settings exported.
    pub command: String,
    /// Where in a deploy it runs.
    pub when: TaskWhen,
    /// How long it may run before it counts as failed.
    pub timeout: Duration,
    /// Its instance: the environment's shape, with the task's own type if given.
    pub shape: InstanceShape,
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

fn default_health_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_healthy_for() -> Duration {
    Duration::from_secs(10)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

impl RawEnvironment {
    pub(super) fn check(self, name: &str) -> Checked<EnvironmentConfig> {
        let section = format!("environments.{name}");
        let key = |k: &str| format!("{section}.{k}");
        if self.count == 0 {
            return Err(format!("{}: must be at least 1", key("count")));
        }
        for subnet in &self.subnets {
            check::prefixed(&key("subnets"), subnet, "subnet-")?;
        }
        let placement = match self.auto_scaling_group {
            None if self.subnets.is_empty() => {
                return Err(format!(
                    "{}: name at least one subnet (or an auto_scaling_group)",
                    key("subnets")
                ));
            }
            None => Placement::Subnets(self.subnets),
            Some(group) if group.is_empty() || group.len() > 255 || group.contains(':') => {
                return Err(format!(
                    "{}: {group:?} is not an Auto Scaling group name",
                    key("auto_scaling_group")
                ));
            }
            Some(group) => Placement::Group {
                name: group,
                subnets: self.subnets,
            },
        };
        let shape = InstanceShape::check(
            &section,
            RawShape {
                instance_type: self.instance_type,
                security_groups: self.security_groups,
                instance_profile: self.instance_profile,
                key_name: self.key_name,
                metadata: self.metadata,
                root_volume: self.root_volume,
            },
        )?;
        check_balancer(&key("load_balancer"), &self.load_balancer)?;
        let max_surge = match (self.max_surge, &placement) {
            (None, _) => None,
            (Some(_), Placement::Group { .. }) => {
                return Err(format!(
                    "{}: applies to subnet placement only (instances the pipeline launches over `subnets`); \
                     an auto_scaling_group brings the whole new fleet up at once. Drop max_surge, or replace \
                     the group's instances in smaller batches with the group's own instance refresh, outside the pipeline",
                    key("max_surge")
                ));
            }
            (Some(raw), Placement::Subnets(_)) => Some(raw.resolve(&key("max_surge"), self.count)?),
        };
        if self.healthy_for >= self.health_timeout {
            return Err(format!(
                "{}: must be shorter than health_timeout",
                key("healthy_for")
            ));
        }
        for alarm in &self.alarms {
            check::alarm_name(&key("alarms"), alarm)?;
        }
        // drain_timeout may be zero: no waiting for connections to drain.
        check::positive(&key("health_timeout"), self.health_timeout)?;
        check::positive(&key("poll_interval"), self.poll_interval)?;
        if let Some((setting, _)) = self.settings.iter().find(|(_, v)| v.contains('\n')) {
            return Err(format!(
                "{}: the value of {setting} spans lines; settings are single-line values",
                key("settings")
            ));
        }
        let mut tasks = IndexMap::with_capacity(self.tasks.len());
        for (task, raw) in self.tasks {
            check::name(&key("tasks"), &task, 32)?;
            let checked = raw.check(&key(&format!("tasks.{task}")), &shape)?;
            tasks.insert(task, checked);
        }
        for setting in self.settings.keys() {
            check::env_name(&key("settings"), setting)?;
        }
        let mut secrets = BTreeMap::new();
        for (name, reference) in self.secrets {
            check::env_name(&key("secrets"), &name)?;
            if self.settings.contains_key(&name) {
                return Err(format!(
                    "{}: {name} is also in settings; give it in one of the two",
                    key("secrets")
                ));
            }
            let parsed = SecretRef::parse(&reference)
                .map_err(|m| format!("{}.{name}: {m}", key("secrets")))?;
            secrets.insert(name, parsed);
        }
        Ok(EnvironmentConfig {
            count: self.count,
            shape,
            placement,
            settings: self.settings,
            secrets,
            load_balancer: self.load_balancer,
            max_surge,
            health_timeout: self.health_timeout,
            healthy_for: self.healthy_for,
            alarms: self.alarms,
            drain_timeout: self.drain_timeout,
            poll_interval: self.poll_interval,
            tasks,
        })
    }
}

fn check_balancer(key: &str, balancer: &LoadBalancer) -> Checked {
    match balancer {
        LoadBalancer::Classic(name) => {
            let ok = (1..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !ok {
                return Err(format!(
                    "{key}.classic: {name:?} is not a Classic ELB name (1-32 letters, digits, dashes)"
                ));
            }
        }
        LoadBalancer::TargetGroup(arn) => {
            if !(arn.starts_with("arn:aws") && arn.contains(":targetgroup/")) {
                return Err(format!(
                    "{key}.target_group: {arn:?} is not a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
                ));
            }
        }
    }
    Ok(())
}

impl RawTask {
    fn check(self, key: &str, env_shape: &InstanceShape) -> Checked<TaskConfig> {
        if self.command.trim().is_empty() {
            return Err(format!("{key}.command: give the command to run"));
        }
        check::positive(&format!("{key}.timeout"), self.timeout)?;
        let shape = match &self.instance_type {
            Some(instance_type) => {
                check::instance_type(&format!("{key}.instance_type"), instance_type)?;
                env_shape.with_type(instance_type)
            }
            None => env_shape.clone(),
        };
        Ok(TaskConfig {
            command: self.command,
            when: self.when,
            timeout: self.timeout,
            shape,
        })
    }
}
