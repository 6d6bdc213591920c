//! ALB / NLB target groups, through aws-sdk-elasticloadbalancingv2.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use super::sdk_error;
use crate::error::{Error, Result};
use crate::ports::{Balancer, Endpoint, MetricSource, TargetHealth};

/// An ALB or NLB target group, by ARN: [`Balancer`] for an environment.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    client: Client,
    arn: String,
}

impl TargetGroup {
    /// The target group `arn`, reached with `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig, arn: &str) -> Self {
        TargetGroup {
            client: Client::new(sdk),
            arn: arn.to_string(),
        }
    }
}

impl TargetGroup {
    /// The ARN of the load balancer the group is attached to. One
    /// DescribeTargetGroups.
    async fn load_balancer_arn(&self) -> Result<String> {
        let groups = self
            .client
            .describe_target_groups()
            .target_group_arns(&self.arn)
            .send()
            .await
            .map_err(sdk_error("DescribeTargetGroups", self.name()))?;
        groups
            .target_groups()
            .first()
            .and_then(|g| g.load_balancer_arns().first())
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "load balancer".into(),
                detail: format!("{} is not attached to a load balancer", self.name()),
            })
    }
}

fn targets(ids: &[String]) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription::builder().id(id).build())
        .collect()
}

#[async_trait]
impl Balancer for TargetGroup {
    fn name(&self) -> String {
        let short = self.arn.split(":targetgroup/").nth(1).unwrap_or(&self.arn);
        format!("target group {short}")
    }

    async fn registered(&self) -> Result<Vec<TargetHealth>> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(&self.arn)
            .send()
            .await
            .map_err(sdk_error("DescribeTargetHealth", self.name()))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let health = d.target_health();
                let state = health
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into());
                let reason = health
                    .and_then(|h| h.reason())
                    .map(|r| r.as_str().to_string());
                TargetHealth {
                    id: d
                        .target()
                        .and_then(|t| t.id())
                        .unwrap_or_default()
                        .to_string(),
                    healthy: state == "healthy",
                    state: match reason {
                        Some(reason) => format!("{state} ({reason})"),
                        None => state,
                    },
                }
            })
            .collect())
    }

    async fn register(&self, ids: &[String]) -> Result<()> {
        self.client
            .register_targets()
            .target_group_arn(&self.arn)
            .set_targets(Some(targets(ids)))
            .send()
            .await
            .map_err(sdk_error("RegisterTargets", self.name()))?;
        Ok(())
    }

    async fn deregister(&self, ids: &[String]) -> Result<()> {
        self.client
            .deregister_targets()
            .target_group_arn(&self.arn)
            .set_targets(Some(targets(ids)))
            .send()
            .await
            .map_err(sdk_error("DeregisterTargets", self.name()))?;
        Ok(())
    }

    async fn draining_delay(&self) -> Result<Duration> {
        let out = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(&self.arn)
            .send()
            .await
            .map_err(sdk_error("DescribeTargetGroupAttributes", self.name()))?;
        let seconds = out
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value()?.parse::<u64>().ok())
            .unwrap_or(300);
        Ok(Duration::from_secs(seconds))
    }

    async fn metric_source(&self) -> Result<MetricSource> {
        let lb_arn = self.load_balancer_arn().await?;
        // CloudWatch names them by the ARNs' ends: `targetgroup/NAME/ID`
        // and `app/NAME/ID`.
        let group = self
            .arn
            .rsplit_once(':')
            .map_or(self.arn.clone(), |(_, end)| end.to_string());
        let balancer = lb_arn
            .split_once(":loadbalancer/")
            .map_or(lb_arn.clone(), |(_, end)| end.to_string());
        Ok(MetricSource {
            namespace: "AWS/ApplicationELB".into(),
            dimensions: vec![
                ("TargetGroup".into(), group),
                ("LoadBalancer".into(), balancer),
            ],
            requests: "RequestCount".into(),
            errors_5xx: "HTTPCode_Target_5XX_Count".into(),
            latency: "TargetResponseTime".into(),
        })
    }

    async fn endpoint(&self) -> Result<Endpoint> {
        let lb_arn = self.load_balancer_arn().await?;
        let out = self
            .client
            .describe_load_balancers()
            .load_balancer_arns(&lb_arn)
            .send()
            .await
            .map_err(sdk_error("DescribeLoadBalancers", self.name()))?;
        let lb = out
            .load_balancers()
            .first()
            .ok_or_else(|| Error::NotFound {
                what: "load balancer".into(),
                detail: format!("no load balancer {lb_arn}"),
            })?;
        Ok(Endpoint {
            dns_name: lb.dns_name().unwrap_or_default().to_string(),
            hosted_zone_id: lb
                .canonical_hosted_zone_id()
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn reports_draining(&self) -> bool {
        true
    }
}
