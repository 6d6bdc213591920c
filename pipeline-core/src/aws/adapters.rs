//! The one place that builds every stage's ports from an `SdkConfig`.
//!
//! Building the clients makes no network call; each adapter is made once
//! per session and lent to the stages as their ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::autoscaling::AutoScalingGroups;
use super::cloudwatch::CloudWatch;
use super::ec2::Ec2;
use super::route53::Route53;
use super::s3::StateBucket;
use crate::config::Config;
use crate::ports::{AutoScaling, Balancer, Images, Instances, StateStore};
use crate::stages::build::BuildPorts;
use crate::stages::deploy::DeployPorts;
use crate::stages::gc::GcPorts;
use crate::stages::promote::{PromotePlan, PromotePorts};

/// Every adapter a config's stages use.
pub struct Adapters {
    ec2: Ec2,
    dns: Route53,
    metrics: CloudWatch,
    groups: AutoScalingGroups,
    state: Arc<StateBucket>,
    /// Each environment's balancer, by environment name.
    balancers: BTreeMap<String, Box<dyn Balancer>>,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters")
            .field("environments", &self.balancers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Adapters {
    /// The adapters of `config`'s region, state bucket and environments.
    pub fn new(sdk: &aws_config::SdkConfig, config: &Config) -> Adapters {
        Adapters {
            ec2: Ec2::new(sdk, &config.region),
            dns: Route53::new(sdk),
            metrics: CloudWatch::new(sdk, &config.region),
            groups: AutoScalingGroups::new(sdk),
            state: Arc::new(StateBucket::new(
                sdk,
                &config.state.bucket,
                config.state.key_prefix.clone(),
            )),
            balancers: config
                .environments
                .iter()
                .map(|(name, e)| (name.clone(), super::balancer(sdk, &e.load_balancer)))
                .collect(),
        }
    }

    /// AMIs, in every region.
    pub fn images(&self) -> &dyn Images {
        &self.ec2
    }

    /// Instances in the home region.
    pub fn instances(&self) -> &dyn Instances {
        &self.ec2
    }

    /// The state bucket.
    pub fn state(&self) -> Arc<dyn StateStore> {
        self.state.clone()
    }

    /// Environment `env`'s balancer. The environment is one of the config's
    /// (plans check that before anything runs).
    pub fn balancer(&self, env: &str) -> &dyn Balancer {
        self.balancers[env].as_ref()
    }

    /// Auto Scaling groups.
    pub fn auto_scaling(&self) -> &dyn AutoScaling {
        &self.groups
    }

    /// What `build` talks to.
    pub fn build(&self) -> BuildPorts<'_> {
        BuildPorts {
            images: &self.ec2,
            instances: &self.ec2,
            artifacts: self.state.as_ref(),
        }
    }

    /// What a deploy to `env` talks to.
    pub fn deploy(&self, env: &str) -> DeployPorts<'_> {
        DeployPorts {
            instances: &self.ec2,
            balancer: self.balancer(env),
            auto_scaling: Some(&self.groups),
            metrics: Some(&self.metrics),
        }
    }

    /// What promote, rollback and the live-slot read talk to.
    pub fn promote(&self, plan: &PromotePlan) -> PromotePorts<'_> {
        PromotePorts {
            instances: &self.ec2,
            dns: &self.dns,
            balancers: [self.balancer(&plan.slots[0]), self.balancer(&plan.slots[1])],
            metrics: &self.metrics,
        }
    }

    /// What gc talks to.
    pub fn gc(&self) -> GcPorts<'_> {
        GcPorts {
            images: &self.ec2,
            instances: &self.ec2,
            auto_scaling: Some(&self.groups),
        }
    }
}
