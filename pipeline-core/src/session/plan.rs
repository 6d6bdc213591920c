//! `pipeline config check`: the plan a valid config resolves to, offline.

use std::fmt;

use serde::Serialize;

use super::Report;
use std::time::Duration;

use crate::config::{
    Config, Encryption, MetadataOptions, Placement, TaskWhen, WebhookUrl, format_duration,
};
use crate::error::Result;
use crate::stages::build::BuildPlan;
use crate::stages::deploy::DeployPlan;
use crate::stages::promote::PromotePlan;

/// What each stage would do with this config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// The config file, as given.
    pub config: String,
    /// The app the pipeline is for.
    pub app: String,
    /// Where builds and environments live.
    pub region: String,
    /// Where locks, the ledger and test verdicts live.
    pub state: StateSummary,
    /// How the AMI is baked.
    pub build: BuildSummary,
    /// Each environment's deploy.
    pub environments: Vec<DeploySummary>,
    /// The flip, if configured.
    pub promote: Option<PromoteSummary>,
    /// The webhooks: which events go where (by host; a URL may be a secret).
    pub notify: Vec<String>,
    /// What is valid but likely a mistake (a plain setting named like a secret).
    pub warnings: Vec<String>,
}

/// The state bucket, in brief.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateSummary {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (`""`: none).
    pub prefix: String,
    /// How long a lock lives without its holder's heartbeat.
    pub lock_ttl: String,
}

/// The bake, in brief.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildSummary {
    /// The base image, or how it is looked up.
    pub base_image: String,
    /// The builder's instance type.
    pub instance_type: String,
    /// How long provisioning may take.
    pub timeout_secs: u64,
    /// The same, as written (`30m`).
    pub timeout: String,
    /// How long CreateImage may take.
    pub image_timeout: String,
    /// The builder's subnet (`None`: the default VPC's).
    pub subnet: Option<String>,
    /// Regions the AMI is copied to.
    pub copy_to_regions: Vec<String>,
    /// Accounts it is shared with.
    pub share_with: Vec<String>,
    /// The commit's build, as configured (`--artifact` may give another).
    pub artifact: Option<String>,
    /// Where the builder unpacks it.
    pub artifact_dir: String,
    /// How the AMI is encrypted: `as the base image`, `the default EBS key`, or the key.
    pub encryption: String,
    /// The builder's metadata service: `IMDSv2 only, hop limit 1`.
    pub metadata: String,
}

/// One environment's deploy, in brief.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploySummary {
    /// The environment.
    pub env: String,
    /// How many instances.
    pub count: u32,
    /// Their type.
    pub instance_type: String,
    /// The subnets (the instances', or in group mode the tasks').
    pub subnets: Vec<String>,
    /// The Auto Scaling group, in group mode.
    pub auto_scaling_group: Option<String>,
    /// How long a new fleet may take to be healthy.
    pub health_timeout_secs: u64,
    /// How long it must stay healthy.
    pub healthy_for_secs: f64,
    /// The longest drain.
    pub drain_cap_secs: u64,
    /// The balancer the instances serve behind.
    pub balancer: String,
    /// The names of its settings (their values may be secrets).
    pub settings: Vec<String>,
    /// Its secrets: `NAME from ssm:/path` (the values are never read here).
    pub secrets: Vec<String>,
    /// Its instances' metadata service.
    pub metadata: String,
    /// Its release tasks, in order: `name (when, timeout)`.
    pub tasks: Vec<String>,
    /// The durations above, as written: `health_timeout`, `healthy_for`, `drain_timeout`.
    pub waits: [String; 3],
}

/// The flip, in brief.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromoteSummary {
    /// The public record.
    pub record: String,
    /// Its hosted zone.
    pub hosted_zone: String,
    /// `cname` or `alias`.
    pub record_type: String,
    /// The two slots.
    pub slots: [String; 2],
    /// Healthy instances each slot needs before it takes traffic.
    pub needed_healthy: [u32; 2],
    /// The gradual shift's steps (empty: one flip).
    pub steps: Vec<u8>,
    /// How long each step holds.
    pub bake_secs: u64,
    /// A CNAME's TTL, as written.
    pub ttl: String,
}

impl PlanReport {
    /// The plan of `config`, read from `path`; a config no stage can plan
    /// from (a provisioning script too big for user-data) is bad input.
    pub fn new(config: &Config, path: &str) -> Result<PlanReport> {
        let build = BuildPlan::new(config)?;
        let environments = config
            .environments
            .keys()
            .map(|name| DeployPlan::new(config, name).map(|d| DeploySummary::from(&d)))
            .collect::<Result<Vec<_>>>()?;
        let promote = config
            .promote
            .as_ref()
            .map(|_| PromotePlan::new(config))
            .transpose()?;
        let environments = environments
            .into_iter()
            .map(|mut summary| {
                let e = &config.environments[&summary.env];
                summary.balancer = e.load_balancer.to_string();
                summary.settings = e.settings.keys().cloned().collect();
                summary.secrets = e
                    .secrets
                    .iter()
                    .map(|(name, reference)| format!("{name} from {reference}"))
                    .collect();
                summary.tasks = e
                    .tasks
                    .iter()
                    .map(|(name, t)| {
                        let when = match t.when {
                            TaskWhen::BeforeTraffic => "before traffic",
                            TaskWhen::BeforeLaunch => "before launch",
                            TaskWhen::Manual => "by hand",
                        };
                        format!("{name} ({when}, within {})", format_duration(t.timeout))
                    })
                    .collect();
                summary
            })
            .collect();
        Ok(PlanReport {
            config: path.to_string(),
            app: build.app.clone(),
            region: build.region.clone(),
            state: StateSummary {
                bucket: config.state.bucket.clone(),
                prefix: config.state.key_prefix.clone(),
                lock_ttl: format_duration(config.state.lock_ttl),
            },
            build: BuildSummary {
                base_image: build.base_image.to_string(),
                instance_type: build.shape.instance_type.clone(),
                timeout_secs: build.provision_poll.deadline.as_secs(),
                timeout: format_duration(build.provision_poll.deadline),
                image_timeout: format_duration(build.image_poll.deadline),
                subnet: build.subnet.clone(),
                copy_to_regions: build.copy_to_regions.clone(),
                share_with: build.share_with.clone(),
                artifact: config
                    .build
                    .artifact
                    .as_ref()
                    .map(|p| p.display().to_string()),
                artifact_dir: build.artifact_dir.clone(),
                encryption: match &build.shape.root_volume.encryption {
                    Encryption::AsImage => "as the base image".to_string(),
                    Encryption::DefaultKey => "the default EBS key".to_string(),
                    Encryption::Key(key) => format!("KMS key {key}"),
                },
                metadata: metadata(build.shape.metadata),
            },
            warnings: secret_looking_settings(config),
            environments,
            promote: promote.map(|p| PromoteSummary {
                record: p.record,
                hosted_zone: p.zone,
                record_type: p.record_type.to_string(),
                slots: p.slots,
                needed_healthy: p.needed,
                steps: p.steps,
                bake_secs: p.bake.as_secs(),
                ttl: format_duration(Duration::from_secs(p.ttl.max(0) as u64)),
            }),
            notify: config
                .notify
                .iter()
                .map(|hook| {
                    let to = match &hook.url {
                        WebhookUrl::Literal(url) => url
                            .split("://")
                            .nth(1)
                            .and_then(|rest| rest.split(['/', '?']).next())
                            .unwrap_or("?")
                            .to_string(),
                        WebhookUrl::FromEnv(var) => format!("the URL in ${var}"),
                    };
                    let events: Vec<&str> = hook.events.iter().map(|e| e.as_str()).collect();
                    format!("{} to {to}", events.join(", "))
                })
                .collect(),
        })
    }
}

/// `IMDSv2 only, hop limit 1`.
fn metadata(m: MetadataOptions) -> String {
    let tokens = if m.tokens_required {
        "IMDSv2 only"
    } else {
        "IMDSv1 allowed"
    };
    format!("{tokens}, hop limit {}", m.hop_limit)
}

/// Words in a setting's name that say its value is a secret.
const SECRET_WORDS: [&str; 5] = ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// A warning for each plain setting whose name says it holds a secret: its
/// value would sit in user-data, readable by anyone who may describe the
/// instance.
fn secret_looking_settings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for (env, e) in &config.environments {
        for name in e.settings.keys() {
            let upper = name.to_ascii_uppercase();
            if SECRET_WORDS.iter().any(|w| upper.contains(w)) {
                warnings.push(format!(
                    "environments.{env}.settings.{name} looks like a secret: a setting's value is in the instances' user-data, which anyone allowed to describe them can read. Put it in SSM Parameter Store and give it under secrets: {{ {name}: ssm:/{}/{env}/{} }}",
                    config.app,
                    name.to_ascii_lowercase()
                ));
            }
        }
    }
    warnings
}

impl From<&DeployPlan> for DeploySummary {
    fn from(d: &DeployPlan) -> Self {
        let (subnets, group) = match &d.placement {
            Placement::Subnets(subnets) => (subnets.clone(), None),
            Placement::Group { name, subnets } => (subnets.clone(), Some(name.clone())),
        };
        DeploySummary {
            env: d.env.clone(),
            count: d.count,
            instance_type: d.shape.instance_type.clone(),
            subnets,
            auto_scaling_group: group,
            health_timeout_secs: d.health_poll.deadline.as_secs(),
            healthy_for_secs: d.healthy_for.as_secs_f64(),
            drain_cap_secs: d.drain_cap.as_secs(),
            balancer: String::new(),
            settings: Vec::new(),
            secrets: Vec::new(),
            metadata: metadata(d.shape.metadata),
            tasks: Vec::new(),
            waits: [
                format_duration(d.health_poll.deadline),
                format_duration(d.healthy_for),
                format_duration(d.drain_cap),
            ],
        }
    }
}

impl fmt::Display for PlanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_string()
            } else {
                items.join(", ")
            }
        };
        let (b, st) = (&self.build, &self.state);
        writeln!(f, "{}: valid", self.config)?;
        writeln!(f, "app {} in {}", self.app, self.region)?;
        writeln!(
            f,
            "state: s3://{}/{} (a lock lives {} without its holder's heartbeat)",
            st.bucket, st.prefix, st.lock_ttl
        )?;
        write!(
            f,
            "build: from {}, a {} builder in {} ({}); {}; provisioning within {}, the image within {}, encrypted {}; copies to {}; shared with {}",
            b.base_image,
            b.instance_type,
            b.subnet.as_deref().unwrap_or("the default VPC"),
            b.metadata,
            match &b.artifact {
                Some(path) => format!("artifact {path} unpacked into {}", b.artifact_dir),
                None => "no artifact (--artifact gives one)".to_string(),
            },
            b.timeout,
            b.image_timeout,
            b.encryption,
            list(&b.copy_to_regions),
            list(&b.share_with)
        )?;
        for d in &self.environments {
            let placement = match &d.auto_scaling_group {
                Some(group) => format!("through Auto Scaling group {group}"),
                None => format!("over {}", d.subnets.join(", ")),
            };
            write!(
                f,
                "\ndeploy {}: {} x {} {placement} ({}), behind {}; healthy within {}, for {}; old fleet drains up to {}; settings: {}; secrets: {}; tasks: {}",
                d.env,
                d.count,
                d.instance_type,
                d.metadata,
                d.balancer,
                d.waits[0],
                d.waits[1],
                d.waits[2],
                list(&d.settings),
                list(&d.secrets),
                list(&d.tasks)
            )?;
        }
        match &self.promote {
            Some(p) => {
                let ttl = if p.record_type == "cname" {
                    format!(", ttl {}", p.ttl)
                } else {
                    String::new()
                };
                let how = if p.steps.is_empty() {
                    "at once".to_string()
                } else {
                    let steps: Vec<String> = p.steps.iter().map(|s| format!("{s}%")).collect();
                    format!(
                        "gradually: {}, each held {}",
                        steps.join(", "),
                        format_duration(Duration::from_secs(p.bake_secs))
                    )
                };
                write!(
                    f,
                    "\npromote: {} ({}{ttl}) in hosted zone {}, between {} and {}, each needing {} and {} healthy; {how}",
                    p.record,
                    p.record_type,
                    p.hosted_zone,
                    p.slots[0],
                    p.slots[1],
                    p.needed_healthy[0],
                    p.needed_healthy[1],
                )?
            }
            None => write!(f, "\npromote: not configured")?,
        }
        write!(f, "\nnotify: {}", list(&self.notify))?;
        for warning in &self.warnings {
            write!(f, "\nwarning: {warning}")?;
        }
        Ok(())
    }
}

impl Report for PlanReport {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::keys;

    const CONFIG: &str = r##"
app: shop
region: us-east-1
state: { bucket: shop-state }
build:
  base_image: { id: ami-0123abcd }
  provision: "#!/bin/sh\n"
environments:
  prod1: { count: 2, subnets: [subnet-0a], load_balancer: { classic: shop1 } }
  prod2: { count: 2, subnets: [subnet-0a], load_balancer: { classic: shop2 } }
promote: { hosted_zone: Z1, record: www.example.com }
"##;

    fn sorted(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn the_json_fields_are_the_contract() {
        let config = Config::parse(CONFIG, "p.yaml").unwrap();
        let report = PlanReport::new(&config, "p.yaml").unwrap();
        assert_eq!(
            keys(&report),
            [
                "app",
                "build",
                "config",
                "environments",
                "notify",
                "ok",
                "promote",
                "region",
                "state",
                "warnings"
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&super::super::json(&report)).unwrap();
        assert_eq!(
            sorted(&json["build"]),
            [
                "artifact",
                "artifact_dir",
                "base_image",
                "copy_to_regions",
                "encryption",
                "image_timeout",
                "instance_type",
                "metadata",
                "share_with",
                "subnet",
                "timeout",
                "timeout_secs"
            ]
        );
        assert_eq!(
            sorted(&json["environments"][0]),
            [
                "auto_scaling_group",
                "balancer",
                "count",
                "drain_cap_secs",
                "env",
                "health_timeout_secs",
                "healthy_for_secs",
                "instance_type",
                "metadata",
                "secrets",
                "settings",
                "subnets",
                "tasks",
                "waits"
            ]
        );
        assert_eq!(
            sorted(&json["promote"]),
            [
                "bake_secs",
                "hosted_zone",
                "needed_healthy",
                "record",
                "record_type",
                "slots",
                "steps",
                "ttl"
            ]
        );
        assert_eq!(sorted(&json["state"]), ["bucket", "lock_ttl", "prefix"]);
        assert_eq!(json["promote"]["record_type"], "cname");
    }

    #[test]
    fn the_text_is_the_whole_plan_in_plain_words() {
        let config = Config::parse(CONFIG, "p.yaml").unwrap();
        let text = PlanReport::new(&config, "p.yaml").unwrap().to_string();
        for part in [
            "deploy prod1: 2 x t3.micro over subnet-0a (IMDSv2 only, hop limit 1), behind classic ELB shop1; healthy within 10m, for 10s",
            "no artifact (--artifact gives one)",
            "state: s3://shop-state/ (a lock lives 1m",
            "www.example.com (cname, ttl 1m)",
            "provisioning within 30m, the image within 45m",
            "notify: none",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("1800s") && !text.contains("Cname"), "{text}");
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn secrets_show_by_name_and_secret_looking_settings_are_warned_of() {
        let config = CONFIG.replace(
            "load_balancer: { classic: shop1 } }",
            "load_balancer: { classic: shop1 }, settings: { STRIPE_API_KEY: sk_live_1, RAILS_ENV: production }, secrets: { DATABASE_URL: \"ssm:/shop/prod/db_url\" } }",
        );
        let config = Config::parse(&config, "p.yaml").unwrap();
        let report = PlanReport::new(&config, "p.yaml").unwrap();
        let text = report.to_string();
        assert!(
            text.contains("secrets: DATABASE_URL from ssm:/shop/prod/db_url"),
            "{text}"
        );
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(
            report.warnings[0]
                .starts_with("environments.prod1.settings.STRIPE_API_KEY looks like a secret"),
            "{}",
            report.warnings[0]
        );
        assert!(
            text.contains("secrets: { STRIPE_API_KEY: ssm:/shop/prod1/stripe_api_key }"),
            "{text}"
        );
        assert!(!text.contains("sk_live_1"), "{text}");
    }
}
