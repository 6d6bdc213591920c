//! `pipeline config check`: the plan a valid config resolves to, offline.

use std::fmt;

use serde::Serialize;

use super::Report;
use crate::config::{Config, Placement};
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
    /// How the AMI is baked.
    pub build: BuildSummary,
    /// Each environment's deploy.
    pub environments: Vec<DeploySummary>,
    /// The flip, if configured.
    pub promote: Option<PromoteSummary>,
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
    /// Regions the AMI is copied to.
    pub copy_to_regions: Vec<String>,
    /// Accounts it is shared with.
    pub share_with: Vec<String>,
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
        Ok(PlanReport {
            config: path.to_string(),
            app: build.app.clone(),
            region: build.region.clone(),
            build: BuildSummary {
                base_image: build.base_image.to_string(),
                instance_type: build.shape.instance_type.clone(),
                timeout_secs: build.provision_poll.deadline.as_secs(),
                copy_to_regions: build.copy_to_regions.clone(),
                share_with: build.share_with.clone(),
            },
            environments,
            promote: promote.map(|p| PromoteSummary {
                record: p.record,
                hosted_zone: p.zone,
                record_type: p.record_type.to_string(),
                slots: p.slots,
                needed_healthy: p.needed,
                steps: p.steps,
                bake_secs: p.bake.as_secs(),
            }),
        })
    }
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
        }
    }
}

impl fmt::Display for PlanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.build;
        writeln!(f, "{}: valid", self.config)?;
        writeln!(f, "app {} in {}", self.app, self.region)?;
        write!(
            f,
            "build: from {}, {} builder, provisioning within {}s, copies to [{}], shared with [{}]",
            b.base_image,
            b.instance_type,
            b.timeout_secs,
            b.copy_to_regions.join(", "),
            b.share_with.join(", ")
        )?;
        for d in &self.environments {
            let placement = match &d.auto_scaling_group {
                Some(group) => format!("through Auto Scaling group {group}"),
                None => format!("over {}", d.subnets.join(", ")),
            };
            write!(
                f,
                "\ndeploy {}: {} x {} {placement}; healthy within {}s, for {}s",
                d.env, d.count, d.instance_type, d.health_timeout_secs, d.healthy_for_secs
            )?;
        }
        match &self.promote {
            Some(p) => write!(
                f,
                "\npromote: {} ({}) between {} and {}{}",
                p.record,
                p.record_type,
                p.slots[0],
                p.slots[1],
                if p.steps.is_empty() {
                    String::new()
                } else {
                    format!(", gradually {:?} % every {}s", p.steps, p.bake_secs)
                }
            ),
            None => write!(f, "\npromote: not configured"),
        }
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
                "ok",
                "promote",
                "region"
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&super::super::json(&report)).unwrap();
        let sorted = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            sorted(&json["build"]),
            [
                "base_image",
                "copy_to_regions",
                "instance_type",
                "share_with",
                "timeout_secs"
            ]
        );
        assert_eq!(
            sorted(&json["environments"][0]),
            [
                "auto_scaling_group",
                "count",
                "drain_cap_secs",
                "env",
                "health_timeout_secs",
                "healthy_for_secs",
                "instance_type",
                "subnets"
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
                "steps"
            ]
        );
        assert_eq!(json["promote"]["record_type"], "cname");
        assert!(
            report
                .to_string()
                .contains("deploy prod1: 2 x t3.micro over subnet-0a")
        );
    }
}
