//! Classic ELB, through aws-sdk-elasticloadbalancing.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancing::Client;
use aws_sdk_elasticloadbalancing::types::Instance;

use super::sdk_error;
use crate::error::{Error, Result};
use crate::ports::{Balancer, Endpoint, MetricSource, TargetHealth};

/// A Classic ELB, by name: [`Balancer`] for an environment.
#[derive(Debug, Clone)]
pub struct ClassicElb {
    client: Client,
    name: String,
}

impl ClassicElb {
    /// The balancer `name`, reached with `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig, name: &str) -> Self {
        ClassicElb {
            client: Client::new(sdk),
            name: name.to_string(),
        }
    }
}

fn instances(ids: &[String]) -> Vec<Instance> {
    ids.iter()
        .map(|id| Instance::builder().instance_id(id).build())
        .collect()
}

#[async_trait]
impl Balancer for ClassicElb {
    fn name(&self) -> String {
        format!("classic ELB {}", self.name)
    }

    async fn metric_source(&self) -> Result<MetricSource> {
        Ok(MetricSource {
            namespace: "AWS/ELB".into(),
            dimensions: vec![("LoadBalancerName".into(), self.name.clone())],
            requests: "RequestCount".into(),
            errors_5xx: "HTTPCode_Backend_5XX".into(),
            latency: "Latency".into(),
        })
    }

    async fn registered(&self) -> Result<Vec<TargetHealth>> {
        let out = self
            .client
            .describe_instance_health()
            .load_balancer_name(&self.name)
            .send()
            .await
            .map_err(sdk_error("DescribeInstanceHealth", self.name()))?;
        Ok(out
            .instance_states()
            .iter()
            .map(|s| {
                let state = s.state().unwrap_or("Unknown");
                TargetHealth {
                    id: s.instance_id().unwrap_or_default().to_string(),
                    healthy: state == "InService",
                    state: match s.reason_code().filter(|r| *r != "N/A") {
                        Some(reason) => format!("{state} ({reason})"),
                        None => state.to_string(),
                    },
                }
            })
            .collect())
    }

    async fn register(&self, ids: &[String]) -> Result<()> {
        self.client
            .register_instances_with_load_balancer()
            .load_balancer_name(&self.name)
            .set_instances(Some(instances(ids)))
            .send()
            .await
            .map_err(sdk_error("RegisterInstancesWithLoadBalancer", self.name()))?;
        Ok(())
    }

    async fn deregister(&self, ids: &[String]) -> Result<()> {
        self.client
            .deregister_instances_from_load_balancer()
            .load_balancer_name(&self.name)
            .set_instances(Some(instances(ids)))
            .send()
            .await
            .map_err(sdk_error(
                "DeregisterInstancesFromLoadBalancer",
                self.name(),
            ))?;
        Ok(())
    }

    async fn draining_delay(&self) -> Result<Duration> {
        let out = self
            .client
            .describe_load_balancer_attributes()
            .load_balancer_name(&self.name)
            .send()
            .await
            .map_err(sdk_error("DescribeLoadBalancerAttributes", self.name()))?;
        let draining = out
            .load_balancer_attributes()
            .and_then(|a| a.connection_draining());
        Ok(match draining {
            Some(d) if d.enabled() => Duration::from_secs(d.timeout().unwrap_or(300).max(0) as u64),
            _ => Duration::ZERO,
        })
    }

    async fn endpoint(&self) -> Result<Endpoint> {
        let out = self
            .client
            .describe_load_balancers()
            .load_balancer_names(&self.name)
            .send()
            .await
            .map_err(sdk_error("DescribeLoadBalancers", self.name()))?;
        let lb = out
            .load_balancer_descriptions()
            .first()
            .ok_or_else(|| Error::NotFound {
                what: "Classic ELB".into(),
                detail: format!("no load balancer {}", self.name),
            })?;
        Ok(Endpoint {
            dns_name: lb.dns_name().unwrap_or_default().to_string(),
            hosted_zone_id: lb
                .canonical_hosted_zone_name_id()
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn reports_draining(&self) -> bool {
        false
    }
}
